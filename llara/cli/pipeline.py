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

    from llara.report import ReportConfig

    d = ReportConfig()
    report = sub.add_parser(
        "report", help="render the HTML report (metrics, ablation chart, curves, examples)",
        description="Write one self-contained HTML file from whatever the pipeline has produced so far; missing "
                    "metrics files are shown as 'not run'. (`dvc repro report` does the same with params.yaml's "
                    "report section.)",
    )
    report.add_argument("--out", default=d.out, help=f"output HTML file (default: {d.out})")
    report.add_argument("--metrics", action="append", metavar="LABEL=PATH", default=None,
                        help="metrics JSON to tabulate (repeatable; default: "
                             + ", ".join(f"{k}={v}" for k, v in d.metrics.items()) + ")")
    report.add_argument("--plots", action="append", metavar="GLOB", default=None,
                        help=f"training-curve files (repeatable; default: {' '.join(d.plots)})")
    report.add_argument("--predictions", action="append", metavar="GLOB", default=None,
                        help=f"prediction parquets for examples (repeatable; default: {' '.join(d.predictions)})")
    report.add_argument("--items", default=d.items, help=f"item titles (default: {d.items})")
    report.add_argument("--split-file", default=d.split_file,
                        help="split parquet with history/candidates; {split} and {protocol} are the predictions "
                             f"file's folders (default: {d.split_file})")
    report.add_argument("--examples", dest="n_examples", type=int, default=d.n_examples,
                        help=f"test users shown (default: {d.n_examples})")
    report.add_argument("--top-k", type=int, default=d.top_k, help=f"candidates shown per user (default: {d.top_k})")
    report.add_argument("--chart-metric", default=d.chart_metric,
                        help=f"metric of the ablation chart (default: {d.chart_metric})")
    report.set_defaults(func=_report, option_names={"n_examples": "--examples"})


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
    from llara.report import ReportConfig, build_report

    d = ReportConfig()
    metrics = d.metrics
    if args.metrics:
        metrics = {}
        for spec in args.metrics:
            label, sep, path = spec.partition("=")
            if not sep or not label or not path:
                raise InputError("--metrics", f"expected LABEL=PATH, got {spec!r}")
            metrics[label] = path
    config = ReportConfig(
        out=args.out, metrics=metrics, plots=args.plots or d.plots, predictions=args.predictions or d.predictions,
        items=args.items, split_file=args.split_file, chart_metric=args.chart_metric, n_examples=args.n_examples,
        top_k=args.top_k,
    )
    print(f"report: {build_report(config)}")
    return 0
