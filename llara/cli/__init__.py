"""The ``llara`` command line: thin adapters over library functions.

Each command family lives in its own module exposing ``register(subparsers)``. Exit codes: 0 success,
2 bad input or arguments (one line ``error: <file>: <what is wrong>`` on stderr), 1 internal failure.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from llara.entrypoint import OneLineParser, is_verbose, run_reporting_errors
from llara.errors import ConfigError, InputError

# Modules that contribute subcommands, in --help order.
COMMAND_MODULES = ["llara.cli.data", "llara.cli.recommenders", "llara.cli.llm", "llara.cli.champion", "llara.cli.pipeline"]


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="llara", description="LLaRA: sequential recommendation with an LLM, as a pipeline.")
    parser.add_argument("--verbose", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
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
    args, rest = parser.parse_known_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    if getattr(args, "forwards_argv", False):  # `llara run|serve`: the rest goes to `python -m flows` as it is
        args.argv = rest
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    return run_reporting_errors(lambda: _as_options(args), is_verbose(args.verbose))


def _as_options(args: argparse.Namespace) -> int:
    """Run the command; a library :class:`ConfigError` is reported under the option's name (``n_candidates`` ->
    ``--n-candidates``; a command's ``option_names`` where they differ)."""
    try:
        return args.func(args)
    except ConfigError as exc:
        option = getattr(args, "option_names", {}).get(exc.key, "--" + exc.key.replace("_", "-"))
        raise InputError(option, exc.what) from None


if __name__ == "__main__":
    sys.exit(main())
