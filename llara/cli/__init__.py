"""The ``llara`` command line: thin adapters over library functions.

Each command family lives in its own module exposing ``register(subparsers)``. Exit codes: 0 success,
2 bad input or arguments (one line ``error: <file>: <what is wrong>`` on stderr), 1 internal failure.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback

from llara.errors import LlaraError

# Modules that contribute subcommands, in --help order.
COMMAND_MODULES = ["llara.cli.data", "llara.cli.recommenders", "llara.cli.llm", "llara.cli.pipeline"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's default prints usage; keep it to one line + exit 2
        self.exit(2, f"error: {self.prog}: {message}\n")


OneLineParser = _Parser  # public name for the stage adapters' argument parsers


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="llara", description="LLaRA: sequential recommendation with an LLM, as a pipeline.")
    parser.add_argument("--verbose", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue  # command family not installed in this build
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    verbose = args.verbose or os.environ.get("LLARA_VERBOSE") == "1"
    return run_reporting_errors(lambda: args.func(args), verbose)


RUNTIME_DEFAULTS = {
    # oneDNN (CPU bf16 matmuls) keeps a compiled kernel per matmul shape, up to 1024; fine-tuning's varying sequence
    # lengths fill it, +1-2 GiB RSS over 60 steps (bench/bench_memory.py). 128 keeps the recent shapes.
    "ONEDNN_PRIMITIVE_CACHE_CAPACITY": "128",
}


def apply_runtime_defaults() -> None:
    """Process settings of the entry points (the ``llara`` CLI and the DVC stages); the environment wins."""
    for key, value in RUNTIME_DEFAULTS.items():
        os.environ.setdefault(key, value)


def run_reporting_errors(fn, verbose: bool = False) -> int:
    """Run ``fn`` (after :func:`apply_runtime_defaults`); map :class:`LlaraError` to its exit code with a one-line
    message on stderr."""
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
        print(f"error: internal error: {type(exc).__name__}: {first} (rerun with --verbose for the traceback)", file=sys.stderr)
        return 1
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
