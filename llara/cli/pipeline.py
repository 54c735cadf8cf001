"""``llara run``, ``llara serve`` (the Prefect flows, started as ``python -m flows ...`` with this interpreter: the
library never imports Prefect) and ``llara report`` (renders the HTML report directly)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from llara.errors import InputError

_FLOWS_HINT = "the `flows` package is not importable here: run from the repository root or pass --root"


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``llara run`` (also ``python -m flows run``, which gets them forwarded)."""
    p.add_argument("stages", nargs="*", metavar="STAGE",
                   help="stages to reproduce with what they depend on (default: all), e.g. ingest, split, split@paper")
    p.add_argument("-S", "--set-param", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a param for this run only, `dvc exp run -S` syntax (repeatable); params.yaml is "
                        "restored afterwards")
    p.add_argument("--root", default=".", help="repository root (default: current directory)")
    p.add_argument("--force", action="store_true", help="reproduce even stages that are up to date")
    p.add_argument("--no-prefect", action="store_true", help="run plain `dvc repro` instead of the Prefect flow")


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``llara serve`` (also ``python -m flows serve``)."""
    p.add_argument("--root", default=".", help="repository root the runs use (default: current directory)")
    p.add_argument("--cron", default="0 3 * * *", help="nightly retraining schedule, cron syntax (default: 03:00)")
    p.add_argument("--timezone", default=os.environ.get("LLARA_TIMEZONE", "UTC"),
                   help="IANA timezone of the cron schedule (default: $LLARA_TIMEZONE or UTC)")
    p.add_argument("--inbox", default="data/inbox",
                   help="folder whose new interaction files the nightly run merges (default: data/inbox)")
    p.add_argument("--paused", action="store_true", help="register the nightly schedule paused")
    p.add_argument("--limit", type=int, default=None, help="at most this many concurrent flow runs")


def register(sub: argparse._SubParsersAction) -> None:
    run = sub.add_parser(
        "run", help="reproduce the pipeline through the Prefect flow (or plain dvc repro)",
        description="Reproduce the DVC pipeline stage by stage as a Prefect flow: one task run per stage, DVC skips "
                    "what is up to date. Params can be overridden for this run only with -S (params.yaml is "
                    "restored afterwards).",
    )
    add_run_arguments(run)
    run.set_defaults(func=_run)

    serve = sub.add_parser(
        "serve", help="serve the Prefect deployments (manual pipeline, nightly retraining, experiments)",
        description="Register the deployments with the Prefect API (PREFECT_API_URL, e.g. a local `prefect server "
                    "start`) and execute their runs in this workspace until interrupted.",
    )
    add_serve_arguments(serve)
    serve.set_defaults(func=_serve)

    from llara.report import DEFAULT_ITEMS, DEFAULT_METRICS, DEFAULT_PLOTS, DEFAULT_PREDICTIONS, DEFAULT_SPLIT_FILE

    report = sub.add_parser(
        "report", help="render the HTML report (metrics, ablation chart, curves, examples)",
        description="Write one self-contained HTML file from whatever the pipeline has produced so far; missing "
                    "metrics files are shown as 'not run'. (`dvc repro report` does the same with params.yaml's "
                    "report section.)",
    )
    report.add_argument("--out", default="reports/index.html", help="output HTML file (default: reports/index.html)")
    report.add_argument("--metrics", action="append", metavar="LABEL=PATH", default=None,
                        help="metrics JSON to tabulate (repeatable; default: "
                             + ", ".join(f"{k}={v}" for k, v in DEFAULT_METRICS.items()) + ")")
    report.add_argument("--plots", action="append", metavar="GLOB", default=None,
                        help=f"training-curve files (repeatable; default: {' '.join(DEFAULT_PLOTS)})")
    report.add_argument("--predictions", action="append", metavar="GLOB", default=None,
                        help=f"prediction parquets for examples (repeatable; default: {' '.join(DEFAULT_PREDICTIONS)})")
    report.add_argument("--items", default=DEFAULT_ITEMS, help=f"item titles (default: {DEFAULT_ITEMS})")
    report.add_argument("--split-file", default=DEFAULT_SPLIT_FILE,
                        help="split parquet with history/candidates; {split} and {protocol} are the predictions "
                             f"file's folders (default: {DEFAULT_SPLIT_FILE})")
    report.add_argument("--examples", type=int, default=5, help="test users shown (default: 5)")
    report.add_argument("--top-k", type=int, default=5, help="candidates shown per user (default: 5)")
    report.add_argument("--chart-metric", default="hr@1", help="metric of the ablation chart (default: hr@1)")
    report.set_defaults(func=_report)


def _flows(root: str, argv: list[str], verbose: bool) -> int:
    """Run ``python -m flows <argv>`` in ``root`` with this interpreter (its bin dir first on PATH)."""
    root_path = Path(root).resolve()
    if not (root_path / "dvc.yaml").is_file():
        raise InputError(root_path, "not a pipeline workspace (no dvc.yaml here); pass --root")
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root_path), env.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-m", "flows"] + (["--verbose"] if verbose else []) + argv
    try:
        return subprocess.run(cmd, cwd=root_path, env=env).returncode
    except KeyboardInterrupt:
        return 130


def _verbose(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "verbose", False)) or os.environ.get("LLARA_VERBOSE") == "1"


def _run(args: argparse.Namespace) -> int:
    argv = ["run", "--root", ".", *args.stages]
    for override in args.overrides:
        argv += ["-S", override]
    argv += (["--force"] if args.force else []) + (["--no-prefect"] if args.no_prefect else [])
    return _flows(args.root, argv, _verbose(args))


def _serve(args: argparse.Namespace) -> int:
    argv = ["serve", "--root", ".", "--cron", args.cron, "--inbox", args.inbox, "--timezone", args.timezone]
    argv += ["--paused"] if args.paused else []
    argv += ["--limit", str(args.limit)] if args.limit else []
    return _flows(args.root, argv, _verbose(args))


def _report(args: argparse.Namespace) -> int:
    from llara.report import DEFAULT_METRICS, DEFAULT_PLOTS, DEFAULT_PREDICTIONS, ReportConfig, build_report, expand_globs

    metrics = DEFAULT_METRICS
    if args.metrics:
        metrics = {}
        for spec in args.metrics:
            label, sep, path = spec.partition("=")
            if not sep or not label or not path:
                raise InputError("--metrics", f"expected LABEL=PATH, got {spec!r}")
            metrics[label] = path
    if args.examples < 0 or args.top_k < 1:
        raise InputError("--examples/--top-k", "need --examples >= 0 and --top-k >= 1")
    config = ReportConfig(
        out=Path(args.out), metrics={k: Path(v) for k, v in metrics.items()},
        plots=expand_globs(args.plots or DEFAULT_PLOTS), predictions=expand_globs(args.predictions or DEFAULT_PREDICTIONS),
        items=Path(args.items), split_file=args.split_file, chart_metric=args.chart_metric,
        n_examples=args.examples, top_k=args.top_k,
    )
    out = build_report(config)
    print(f"report: {out} ({len(config.plots)} curve files, {len(config.predictions)} prediction files)")
    return 0
