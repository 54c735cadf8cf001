"""Stage ``report``: metrics, curves and example recommendations -> one self-contained ``reports/index.html``."""

from __future__ import annotations

from pathlib import Path

from llara.entrypoint import exit_with
from llara.report import ReportConfig, build_report, expand_globs
from tasks.common import get_logger
from tasks.params import ReportParams, load_params


def report(params: ReportParams, root: Path = Path(".")) -> Path:
    log = get_logger("llara.report")
    config = ReportConfig(
        out=root / params.out,
        metrics={label: root / path for label, path in params.metrics.items()},
        plots=expand_globs(params.plots, root),
        predictions=expand_globs(params.predictions, root),
        items=root / params.items,
        split_file=str(root / params.split_file),
        chart_metric=params.chart_metric,
        n_examples=params.n_examples,
        top_k=params.top_k,
    )
    out = build_report(config)
    log.info("report -> %s (%d curve files, %d prediction files)", out, len(config.plots), len(config.predictions))
    return out


def main() -> None:
    report(load_params().report)


if __name__ == "__main__":
    exit_with(main)
