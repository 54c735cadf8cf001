"""What the LLM itself contributes, as tables and charts (the HTML report; the markdown form for README/docs).

- The contribution table: per split and variant of metrics/llara.json, HR@1 of each mode evaluated (generate with
  its ValidRatio, rank, rank_llm, the two-order modes; no recommender score is added in any mode), the recommender
  alone on the same rows, and the paired HR@1 difference against it (``paired_vs_recommender``) with its
  paired-bootstrap 95% CI. A difference whose CI excludes 0 is marked: that is what a claim may rest on.
- Learning curves: validation HR@1 (generate, rank_llm) against examples seen, one line per recipe, from the CSVs
  ``bench/bench_learning.py`` writes (recognized by their columns).
"""

from __future__ import annotations

from typing import Sequence

from llara.llm.recipes import EVAL_MODES as MODES

LEARNING_COLUMNS = {"examples", "generate_hr1", "generate_lo", "generate_hi", "rank_llm_hr1", "valid_ratio"}


def _cell(metric: dict | None) -> str:
    if not metric:
        return "–"
    low, high = metric.get("ci95") or (None, None)
    return f"{metric['value']:.3f}" + (f" [{low:.3f}, {high:.3f}]" if low is not None else "")


def _delta(metric: dict | None) -> str:
    if not metric:
        return "–"
    low, high = metric["ci95"]
    sign = " (+)" if low > 0 else (" (−)" if high < 0 else "")
    return f"{metric['value']:+.3f} [{low:+.3f}, {high:+.3f}]{sign}"


LABELS = {"generate_two_orders": "generate (two orders)", "rank_llm_two_orders": "rank_llm (two orders)"}


def table_modes(variants: dict) -> list[str]:
    """The modes (in :data:`MODES` order) that some variant of one split (those with ``paired_vs_recommender``)
    compares with the recommender."""
    have = {m for v in variants.values() for m in v["paired_vs_recommender"]}
    return [m for m in MODES if m in have]


def table_columns(modes: Sequence[str]) -> list[str]:
    """The table's header: HR@1 per mode (each generate mode followed by its ValidRatio), the recommender's, then
    the paired difference per mode."""
    out = ["variant"]
    for m in modes:
        out += [f"{LABELS.get(m, m)} HR@1"] + (["ValidRatio"] if m.startswith("generate") else [])
    return out + ["recommender HR@1"] + [f"Δ {LABELS.get(m, m)}" for m in modes]


def contribution_rows(metrics: dict) -> dict[str, tuple[list[str], list[list[str]]]]:
    """split key -> (header, table rows) for the variants that have ``paired_vs_recommender``."""
    out: dict[str, tuple[list[str], list[list[str]]]] = {}
    for split, variants in metrics.items():
        variants = {k: v for k, v in (variants or {}).items() if isinstance(v, dict) and "paired_vs_recommender" in v}
        if not variants:
            continue
        modes = table_modes(variants)
        rows = []
        for variant, entry in variants.items():
            cells = [variant]
            for m in modes:
                cells += [_cell((entry.get(m) or {}).get("hr@1"))]
                cells += [_cell((entry.get(m) or {}).get("valid_ratio"))] if m.startswith("generate") else []
            cells += [_cell((entry.get("recommender") or {}).get("hr@1"))]
            rows.append(cells + [_delta((entry["paired_vs_recommender"].get(m) or {}).get("hr@1")) for m in modes])
        out[split] = (table_columns(modes), rows)
    return out


def contribution_markdown(metrics: dict) -> str:
    """The contribution tables as markdown (one per split key)."""
    parts = []
    for split, (columns, rows) in contribution_rows(metrics).items():
        n = next((m["generate"]["hr@1"].get("n") for m in metrics[split].values()
                  if isinstance(m, dict) and "hr@1" in (m.get("generate") or {})), None)
        parts.append(f"**{split}**" + (f" (n = {n})" if n else ""))
        parts.append("| " + " | ".join(columns) + " |\n|" + "---|" * len(columns))
        parts += ["| " + " | ".join(row) + " |" for row in rows]
        parts.append("")
    return "\n".join(parts)


def contribution_html(metrics: dict, escape) -> str:
    out = ["<p>Value [95% CI]; Δ = the variant minus the recommender alone on the same users and candidates (paired "
           "bootstrap CI); (+)/(−): the CI excludes 0. No recommender score is added to the LLM's in any mode. Two "
           "orders: each prompt read with its candidates as listed and reversed, as one (position bias removed).</p>"]
    for split, (columns, rows) in contribution_rows(metrics).items():
        out.append(f'<table class="metrics contribution" data-split="{escape(split)}"><caption>{escape(split)}</caption>'
                   "<tr>" + "".join(f"<th>{escape(c)}</th>" for c in columns) + "</tr>")
        out += ["<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in rows]
        out.append("</table>")
    return "\n".join(out)


def is_learning_curve(columns) -> bool:
    return LEARNING_COLUMNS <= set(columns)


def learning_groups(curves: dict[str, object]) -> dict[str, dict[str, object]]:
    """Curves grouped by the users they were evaluated on (their row count n and the recommender's HR@1 there): one
    chart per group, so curves on different users never share an axis or a recommender line."""
    groups: dict[str, dict[str, object]] = {}
    for label, df in sorted(curves.items()):
        key = "users unknown"
        if {"n", "recommender_hr1"} <= set(df.columns) and len(df):
            key = f"n={int(df['n'][0])} users, recommender alone {float(df['recommender_hr1'][0]):.3f}"
        groups.setdefault(key, {})[label] = df
    return groups


def learning_png(curves: dict[str, object], figure, to_png, users: str = "") -> bytes | None:
    """One chart: validation HR@1 against examples seen for each curve (label -> polars frame of a
    bench_learning CSV, all on the same users): generate (solid, with its CI band) and rank_llm (dashed)."""
    if not curves:
        return None
    fig = figure(10.0, 4.4)
    ax = fig.add_subplot()
    fig.subplots_adjust(right=0.68)  # the legend beside the axes: a curve's later points are never under it
    for label, df in sorted(curves.items()):
        x = df["examples"].to_list()
        line, = ax.plot(x, df["generate_hr1"].to_list(), label=f"{label}: generate", linewidth=1.6, marker=".")
        ax.fill_between(x, df["generate_lo"].to_list(), df["generate_hi"].to_list(), color=line.get_color(), alpha=0.15)
        ax.plot(x, df["rank_llm_hr1"].to_list(), "--", color=line.get_color(), label=f"{label}: rank_llm", linewidth=1.2)
    if "recommender_hr1" in next(iter(curves.values())).columns:
        ax.axhline(float(next(iter(curves.values()))["recommender_hr1"][0]), color="#444444", linewidth=0.8,
                   linestyle=":", label="recommender alone")
    ax.set_xlabel("training examples seen")
    ax.set_ylabel("validation HR@1 (95% CI band: generate)")
    ax.set_title("Learning curves (bench/bench_learning.py)" + (f": {users}" if users else ""))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    return to_png(fig)

