"""``python -m flows run|serve|retrain``: the command line of the flows; ``llara run`` / ``llara serve`` forward their
arguments here (as ``LLARA_PROG=llara``, so usage lines read ``llara run``).

Prefect is imported only by the subcommands that need it (``run --no-prefect`` is plain ``dvc repro``). Errors are one
line ``error: ...`` (exit 2 for bad input, 1 otherwise); ``--verbose`` (or LLARA_VERBOSE=1) shows tracebacks.
"""

from __future__ import annotations

import argparse
import logging
import os

from flows.serve import DEFAULT_INBOX, NIGHTLY_CRON
from flows.env import apply_env_defaults
from llara.entrypoint import OneLineParser, is_verbose, run_reporting_errors
from llara.errors import InputError, LlaraError


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``run`` (``llara run``)."""
    p.add_argument("stages", nargs="*", metavar="STAGE",
                   help="stages to reproduce with what they depend on (default: all), e.g. ingest, split, split@paper")
    p.add_argument("-S", "--set-param", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a param for this run only, `dvc exp run -S` syntax (repeatable; allow-listed keys, "
                        "docs/operations.md); params.yaml is never written: the run happens in a scratch copy whose "
                        "dvc.lock and outputs the workspace adopts when it succeeds")
    p.add_argument("--root", default=".", help="repository root (default: current directory)")
    p.add_argument("--force", action="store_true", help="reproduce even stages that are up to date")
    p.add_argument("--no-prefect", action="store_true", help="run plain `dvc repro` instead of the Prefect flow")


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``serve`` (``llara serve``)."""
    p.add_argument("--root", default=".", help="repository root the runs use (default: current directory)")
    p.add_argument("--cron", default=NIGHTLY_CRON,
                   help=f"nightly retraining schedule, cron syntax (default: {NIGHTLY_CRON!r})")
    p.add_argument("--timezone", default=os.environ.get("LLARA_TIMEZONE", "UTC"),
                   help="IANA timezone of the cron schedule (default: $LLARA_TIMEZONE or UTC)")
    p.add_argument("--inbox", default=DEFAULT_INBOX,
                   help=f"folder whose new interaction files the nightly run merges (default: {DEFAULT_INBOX})")
    p.add_argument("--paused", action="store_true", help="register the nightly schedule paused")
    p.add_argument("--limit", type=int, default=None, help="at most this many concurrent flow runs")
    p.add_argument("--notify", default=None, metavar="BLOCK",
                   help="Prefect notification block (type/name, e.g. slack-webhook/ops) that an automation messages "
                        "for every failed, crashed or timed-out run (default: none; docs/operations.md)")


def _run(args: argparse.Namespace) -> int:
    if args.no_prefect:
        from flows.dvc_stages import StageFailed, failed_stage, failure_message, load_stage_graph, run_dvc
        from flows.workspace import params_overrides, resolve_root, workspace_lock

        root = resolve_root(args.root)
        load_stage_graph(root, args.stages)  # unknown stages: one-line error, exit 2

        def say(line: str) -> None:
            print(line, flush=True)

        with workspace_lock(root, say), params_overrides(root, args.overrides, say) as workdir:
            code, lines = run_dvc(workdir, ["--wait-for-lock", "repro", *args.stages] + (["--force"] if args.force else []), say)
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

    serve_all(root=args.root, cron=args.cron, timezone=args.timezone, inbox=args.inbox, paused=args.paused,
              limit=args.limit, notify=args.notify)
    return 0


def _retrain(args: argparse.Namespace) -> int:
    from flows.retrain import retrain

    statuses = retrain(repo_root=args.root, new_interactions=args.new or None, inbox=args.inbox,
                       targets=args.targets or None)
    print("done: " + ", ".join(f"{s} {v}" for s, v in statuses.items()))
    return 0


def build_parser() -> argparse.ArgumentParser:
    prog = os.environ.pop("LLARA_PROG", "python -m flows")
    parser = OneLineParser(prog=prog, description="Run or serve the LLaRA pipeline's Prefect flows.")
    parser.add_argument("--verbose", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    run = sub.add_parser(
        "run", help="reproduce the pipeline (or some stages) through Prefect",
        description="Reproduce the DVC pipeline stage by stage as a Prefect flow: one task run per stage, DVC skips "
                    "what is up to date. Params can be overridden for this run only with -S (params.yaml is "
                    "never written).",
    )
    add_run_arguments(run)
    run.set_defaults(func=_run)
    serve = sub.add_parser(
        "serve", help="serve the deployments (manual pipeline, nightly retraining, experiments)",
        description="Register the deployments with the Prefect API (PREFECT_API_URL, e.g. a local `prefect server "
                    "start`) and execute their runs in this workspace until interrupted (Ctrl-C).",
    )
    add_serve_arguments(serve)
    serve.set_defaults(func=_serve)
    retrain = sub.add_parser("retrain", help="merge new interactions and rerun what they affect",
                             description="Append new interaction files to the generic dataset and reproduce.")
    retrain.add_argument("new", nargs="*", metavar="FILE",
                         help="interaction files (items-* files: new items) with the dataset's columns, as .csv, .tsv "
                              "or .parquet; validated before anything is stored, merged exactly once; a bad one "
                              "stops the run (exit 2)")
    retrain.add_argument("--inbox", default=None,
                         help="also merge the ready files of this folder: <name> once <name>.done exists; merged "
                              "ones move to <inbox>/merged, bad ones to <inbox>/quarantine with a .reason file, "
                              "or only their bad rows while at most ingest.inbox_max_bad_rows of the file (the run "
                              "goes on; docs/operations.md, The inbox)")
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
    verbose = is_verbose(args.verbose)
    if verbose:
        os.environ["LLARA_VERBOSE"] = "1"  # stages print tracebacks too
    elif not getattr(args, "no_prefect", False):
        from prefect.logging.configuration import setup_logging

        setup_logging()  # later calls are incremental and keep these handlers (and the filter added next)
        _quiet_prefect_tracebacks()
    from flows.dvc_stages import StageFailed

    def call() -> int:
        try:
            return args.func(args)
        except StageFailed as exc:
            if exc.bad_input:
                raise InputError(f"stage '{exc.stage}'", exc.error) from None
            raise LlaraError(str(exc)) from None

    return run_reporting_errors(call, verbose)
