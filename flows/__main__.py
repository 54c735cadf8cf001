"""``python -m flows``: see :mod:`flows.cli`."""

import sys

from flows.cli import main

sys.exit(main())
