"""``python -m flows run|serve|retrain``: the command line behind ``llara run`` / ``llara serve``.

Prefect is imported only by the subcommands that need it (``run --no-prefect`` is plain ``dvc repro``). Errors are one
line ``error: ...`` (exit 2 for bad input, 1 otherwise); ``--verbose`` (or LLARA_VERBOSE=1) shows tracebacks.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from flows.workspace import apply_env_defaults
from llara.cli import OneLineParser
from llara.cli.pipeline import add_run_arguments, add_serve_arguments


def _run(args: argparse.Namespace) -> int:
    if args.no_prefect:
        from flows.dvc_stages import StageFailed, failed_stage, failure_message, load_stage_graph, run_dvc
        from flows.workspace import params_overrides, resolve_root, workspace_lock

        root = resolve_root(args.root)
        load_stage_graph(root, args.stages)  # unknown stages: one-line error, exit 2

        def say(line: str) -> None:
            print(line, flush=True)

        with workspace_lock(root, say), params_overrides(root, args.overrides, say):
            code, lines = run_dvc(root, ["--wait-for-lock", "repro", *args.stages] + (["--force"] if args.force else []), say)
        if code != 0:
            error, stage_code = failure_message(lines)
            raise StageFailed(failed_stage(lines) or "dvc repro", stage_code if stage_code is not None else code, error)
        return 0
    from flows.pipeline import pipeline

    statuses = pipeline(repo_root=args.root, targets=args.stages or None, overrides=args.overrides or None, force=args.force)
    ran = [s for s, v in statuses.items() if v in ("ran", "restored")]
    print(f"done: {len(ran)} of {len(statuses)} stages reproduced" + (f" ({', '.join(ran)})" if ran else ", all up to date"))
    return 0


def _serve(args: argparse.Namespace) -> int:
    from flows.serve import serve_all

    serve_all(root=args.root, cron=args.cron, timezone=args.timezone, inbox=args.inbox, paused=args.paused, limit=args.limit)
    return 0


def _retrain(args: argparse.Namespace) -> int:
    from flows.retrain import retrain

    statuses = retrain(repo_root=args.root, new_interactions=args.new or None, inbox=args.inbox,
                       targets=args.targets or None)
    print("done: " + ", ".join(f"{s} {v}" for s, v in statuses.items()))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m flows", description="Run or serve the LLaRA pipeline's Prefect flows.")
    parser.add_argument("--verbose", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    run = sub.add_parser("run", help="reproduce the pipeline (or some stages) through Prefect",
                         description="Reproduce the DVC pipeline stage by stage as a Prefect flow.")
    add_run_arguments(run)
    run.set_defaults(func=_run)
    serve = sub.add_parser("serve", help="serve the deployments (manual pipeline + nightly retraining)",
                           description="Register and serve the deployments until interrupted (Ctrl-C).")
    add_serve_arguments(serve)
    serve.set_defaults(func=_serve)
    retrain = sub.add_parser("retrain", help="merge new interactions and rerun what they affect",
                             description="Append new interaction files to the generic dataset and reproduce.")
    retrain.add_argument("new", nargs="*", metavar="FILE", help="interaction files with the dataset's columns")
    retrain.add_argument("--inbox", default=None, help="also merge every file in this folder (then moved to <inbox>/merged)")
    retrain.add_argument("--root", default=".", help="repository root (default: current directory)")
    retrain.add_argument("--target", dest="targets", action="append", default=[], metavar="STAGE",
                         help="reproduce only this stage and what it needs (repeatable; default: all)")
    retrain.set_defaults(func=_retrain)
    return parser


def _quiet_prefect_tracebacks() -> None:
    """Without --verbose a failure is one line: drop the tracebacks Prefect's console handler would print (and the
    temporary API's goodbye, which would otherwise follow the error line)."""

    class _NoTraceback(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            record.exc_info = None
            record.exc_text = None
            return not (record.name == "prefect" and str(record.msg).startswith("Stopping temporary server"))

    for name in ("", "prefect", "prefect.flow_runs", "prefect.task_runs"):
        for handler in logging.getLogger(name).handlers:
            handler.addFilter(_NoTraceback())


def main(argv: list[str] | None = None) -> int:
    apply_env_defaults()
    args = build_parser().parse_args(argv)
    verbose = args.verbose or os.environ.get("LLARA_VERBOSE") == "1"
    if verbose:
        os.environ["LLARA_VERBOSE"] = "1"  # stages print tracebacks too
    elif not getattr(args, "no_prefect", False):
        from prefect.logging.configuration import setup_logging

        setup_logging()  # later calls are incremental and keep these handlers (and the filter added next)
        _quiet_prefect_tracebacks()
    from llara.cli import run_reporting_errors

    from flows.dvc_stages import StageFailed

    def call() -> int:
        try:
            return args.func(args)
        except StageFailed as exc:
            from llara.errors import InputError, LlaraError

            if exc.bad_input:
                raise InputError(f"stage '{exc.stage}'", exc.error) from None
            raise LlaraError(str(exc)) from None

    return run_reporting_errors(call, verbose)


if __name__ == "__main__":
    sys.exit(main())
