"""Plumbing shared by every entry point (the ``llara`` CLI, the DVC stages in ``tasks/``, ``python -m flows``).

Exit codes: 0 success, 2 bad input or arguments (one line ``error: <file>: <what is wrong>`` on stderr), 1 internal
failure, 130 interrupted. ``--verbose`` or ``LLARA_VERBOSE=1`` prints the traceback as well.
"""

from __future__ import annotations

import argparse
import inspect
import os
import sys
import traceback
from typing import Callable, NoReturn

from llara.errors import LlaraError

RUNTIME_DEFAULTS = {
    # oneDNN (CPU bf16 matmuls) keeps a compiled kernel per matmul shape, up to 1024; fine-tuning's varying sequence
    # lengths fill it, +1-2 GiB RSS over 60 steps (bench/bench_memory.py). 128 keeps the recent shapes.
    "ONEDNN_PRIMITIVE_CACHE_CAPACITY": "128",
}


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line ``error: <prog>: <message>`` and exit 2 (argparse's default
    prints the usage first)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {self.prog}: {message}\n")


def keyword_defaults(function: Callable) -> dict:
    """The defaults of a library function's keyword-only options (a command line's defaults, not a copy)."""
    return {name: p.default for name, p in inspect.signature(function).parameters.items()
            if p.kind is inspect.Parameter.KEYWORD_ONLY}


def apply_runtime_defaults() -> None:
    """Process settings of the entry points; the environment wins."""
    for key, value in RUNTIME_DEFAULTS.items():
        os.environ.setdefault(key, value)


def is_verbose(flag: bool = False) -> bool:
    """Whether to print tracebacks: a ``--verbose`` flag or ``LLARA_VERBOSE=1``."""
    return flag or os.environ.get("LLARA_VERBOSE") == "1"


def run_reporting_errors(fn: Callable[[], object], verbose: bool = False) -> int:
    """Run ``fn`` (after :func:`apply_runtime_defaults`) and return its exit code: :class:`LlaraError` becomes its
    ``exit_code`` with a one-line message on stderr, any other exception 1."""
    apply_runtime_defaults()
    try:
        result = fn()
    except LlaraError as exc:
        if verbose:
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # internal failure: one line, traceback on --verbose
        if verbose:
            traceback.print_exc()
        first = str(exc).splitlines()[0] if str(exc) else ""
        print(f"error: internal error: {type(exc).__name__}: {first} (rerun with --verbose for the traceback)",
              file=sys.stderr)
        return 1
    return int(result or 0)


def exit_with(fn: Callable[[], object]) -> NoReturn:
    """A program's ``__main__``: run ``fn`` and exit with its code (verbose with ``--verbose`` in argv or
    ``LLARA_VERBOSE=1``)."""
    sys.exit(run_reporting_errors(fn, is_verbose("--verbose" in sys.argv)))
