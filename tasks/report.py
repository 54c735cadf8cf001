"""Stage ``report``: metrics, curves and example recommendations -> one self-contained HTML file (``report.out``)."""

from __future__ import annotations

from pathlib import Path

from llara.entrypoint import exit_with
from llara.report import ReportConfig, build_report
from tasks.common import get_logger
from tasks.params import load_params


def report(config: ReportConfig, root: Path = Path(".")) -> Path:
    out = build_report(config, root)
    get_logger("llara.report").info("report -> %s", out)
    return out


def main() -> None:
    report(load_params().report)


if __name__ == "__main__":
    exit_with(main)
