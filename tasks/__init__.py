"""DVC stage adapters: each module is a pure stage function plus a thin ``main()`` reading ``params.yaml``."""
