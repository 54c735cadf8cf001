"""Shared plumbing for stage entry points: logging, error reporting, exit codes."""

from __future__ import annotations

import logging
import os
import sys
from typing import Callable

from llara.cli import run_reporting_errors


def get_logger(name: str) -> logging.Logger:
    """Prefect's run logger inside a flow/task run, else a plain stderr logger."""
    try:  # Prefect is an optional runtime here: stages also run under plain `dvc repro`
        from prefect.context import TaskRunContext, FlowRunContext

        if TaskRunContext.get() or FlowRunContext.get():
            from prefect.logging import get_run_logger

            return get_run_logger()  # type: ignore[return-value]
    except Exception:
        pass
    logger = logging.getLogger(name)
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    return logger


def stage_main(fn: Callable[[], object]) -> None:
    """Run a stage's main and exit with the CLI's exit codes (2 bad input, 1 internal failure)."""
    verbose = os.environ.get("LLARA_VERBOSE") == "1" or "--verbose" in sys.argv
    sys.exit(run_reporting_errors(fn, verbose))
