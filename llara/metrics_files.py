"""The pipeline's metrics files as rows and tables, for the report, the flows' artifacts and the experiments' table.

A metrics file is JSON ``{split: {model: {metric: {"value", "ci95", "n"}}}}``, possibly nested one level deeper as
``{model: {"generate": {...}, "rank": {...}}}``; a missing file means its stage has not run.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from llara.errors import InputError


@dataclass(frozen=True)
class MetricRow:
    split: str
    model: str
    metric: str  # leaf name, prefixed by a nesting level when there is one ("generate/hr@1")
    value: float
    ci95: tuple[float, float] | None
    n: int | None


def load_metrics(path: str | Path) -> dict | None:
    """A metrics JSON file, or None when it does not exist (the stage has not run)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(path, f"not valid JSON ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise InputError(path, "top level must be a mapping {split: {model: {metric: ...}}}")
    return data


def _leaves(node, prefix: str = ""):
    if isinstance(node, dict) and "value" in node:
        yield prefix, node
    elif isinstance(node, dict):
        for key, child in node.items():
            yield from _leaves(child, f"{prefix}/{key}" if prefix else str(key))
    elif isinstance(node, (int, float)) and not isinstance(node, bool):
        yield prefix, {"value": node}


def metric_rows(data: dict) -> list[MetricRow]:
    """Flatten ``{split: {model: {...metric leaves...}}}`` into rows (input order kept)."""
    rows = []
    for split, models in data.items():
        if not isinstance(models, dict):
            continue
        for model, metrics in models.items():
            for name, leaf in _leaves(metrics):
                ci = leaf.get("ci95")
                ci = (float(ci[0]), float(ci[1])) if isinstance(ci, (list, tuple)) and len(ci) == 2 else None
                n = leaf.get("n")
                rows.append(MetricRow(str(split), str(model), name or "value", float(leaf["value"]), ci,
                                      int(n) if isinstance(n, (int, float)) else None))
    return rows


def _num(x: float) -> str:
    return "nan" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4f}"


def format_summary(row: MetricRow) -> str:
    """``0.4421 [0.3474, 0.5474] n=95``."""
    text = _num(row.value)
    if row.ci95:
        text += f" [{_num(row.ci95[0])}, {_num(row.ci95[1])}]"
    if row.n is not None:
        text += f" n={row.n}"
    return text


def grouped(rows: list[MetricRow]) -> dict[str, tuple[list[str], dict[str, dict[str, MetricRow]]]]:
    """split -> (metric names in order, model -> metric -> row)."""
    out: dict[str, tuple[list[str], dict[str, dict[str, MetricRow]]]] = {}
    for row in rows:
        names, models = out.setdefault(row.split, ([], {}))
        if row.metric not in names:
            names.append(row.metric)
        models.setdefault(row.model, {})[row.metric] = row
    return out


def metrics_markdown(files: dict[str, Path]) -> str:
    """Markdown tables of every metrics file (used for the Prefect artifact); missing files are "not run"."""
    parts = []
    for label, path in files.items():
        data = load_metrics(path)
        parts.append(f"### {label} (`{path}`)")
        if data is None:
            parts.append("_not run_")
            continue
        for split, (names, models) in grouped(metric_rows(data)).items():
            parts.append(f"**{split}**\n")
            parts.append("| model | " + " | ".join(names) + " |")
            parts.append("|---" * (len(names) + 1) + "|")
            for model, cells in models.items():
                parts.append(f"| {model} | " + " | ".join(format_summary(cells[n]) if n in cells else "" for n in names) + " |")
            parts.append("")
    return "\n".join(parts) + "\n"
