import sys

from llara.cli import main

sys.exit(main())
