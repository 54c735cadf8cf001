"""``llara run``, ``llara serve`` (the Prefect flows: their arguments are forwarded as they are to
``python -m flows run|serve`` with this interpreter, which defines them; the library never imports Prefect or
``flows``) and ``llara report`` (renders the HTML report directly)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from llara.entrypoint import is_verbose
from llara.errors import InputError

FLOW_COMMANDS = {
    "run": ("reproduce the pipeline through the Prefect flow (or plain dvc repro)",
            "Reproduce the DVC pipeline stage by stage as a Prefect flow."),
    "serve": ("serve the Prefect deployments (manual pipeline, nightly retraining, experiments)",
              "Register the Prefect deployments and execute their runs in this workspace until interrupted."),
}


def register(sub: argparse._SubParsersAction) -> None:
    for name, (summary, description) in FLOW_COMMANDS.items():
        flow_command = sub.add_parser(
            name, help=summary, add_help=False,
            description=f"{description} Options are those of `python -m flows {name}` (`llara {name} --help`).",
        )
        flow_command.set_defaults(func=_flows, forwards_argv=True)

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


def _root(argv: list[str]) -> Path:
    """The workspace named by ``--root`` in the forwarded arguments (default: the current directory)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--root", default=".")
    root = Path(parser.parse_known_args(argv)[0].root).resolve()
    if not (root / "dvc.yaml").is_file():
        raise InputError(root, "not a pipeline workspace (no dvc.yaml here); pass --root")
    return root


def _flows(args: argparse.Namespace) -> int:
    """Run ``python -m flows <command> <argv>`` in the workspace with this interpreter (its bin dir first on PATH;
    the workspace on PYTHONPATH, where ``flows`` and ``tasks`` live)."""
    root = _root(args.argv)
    env = dict(os.environ, LLARA_PROG="llara")  # usage and errors read `llara run ...`
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH", "")]))
    verbose = ["--verbose"] if is_verbose(args.verbose) else []
    cmd = [sys.executable, "-m", "flows", *verbose, args.command, *args.argv, "--root", str(root)]
    try:
        return subprocess.run(cmd, cwd=root, env=env).returncode
    except KeyboardInterrupt:
        return 130


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
