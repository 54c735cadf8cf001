"""Learning-curve tables in markdown, rendered from the committed CSVs so the numbers live only there.

A markdown file holds a generated table between two comments; the opening one names the curves as
``recipe=path`` pairs (paths relative to the repository root, recipes as in params.yaml)::

    <!-- learning-table ours=metrics/learning/ours-loo-val200.csv paper=metrics/learning/paper-loo-val200.csv -->
    | step | examples | ... |
    <!-- end learning-table -->

One row per step of any curve; a recipe's cells: generate HR@1 [95% CI], generate minus the recommender on the same
users [paired 95% CI] (– for points recorded before the CSV kept it), ValidRatio, rank_llm HR@1 [95% CI], its score
head's HR@1 when the recipe has one (``score_head`` in params.yaml), and training CPU-minutes. A
``learning-chart`` block (same arguments, closed by ``<!-- end learning-chart -->``) is the same curves drawn: a
Mermaid ``xychart-beta`` line chart of generate HR@1 against examples seen, one line per recipe and one for the
recommender alone on the same users, with a caption naming each line's colour (GitHub and most markdown viewers draw
it; elsewhere it reads as data).

``--update FILE`` re-renders every block from its CSVs; ``--check FILE`` exits 1 (naming the block) when a block
differs from what its CSVs give. Without either, the curves given as arguments are printed as a table.

Last line (with ``--check``): ``learning_tables_stale=<count>`` (tables and charts).
"""

from __future__ import annotations

import argparse
import csv
import math
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"(<!-- learning-(?P<kind>table|chart) (?P<args>[^>]*?) -->\n)(?P<body>.*?)"
                   r"(<!-- end learning-(?P=kind) -->)", re.S)
# line colours of the chart: one per recipe in order, then the recommender's (grey)
PALETTE = [("blue", "#1f77b4"), ("orange", "#ff7f0e"), ("green", "#2ca02c"), ("red", "#d62728"), ("purple", "#9467bd")]
RECOMMENDER = ("grey", "#8c8c8c")


def parse_curves(items: list[str]) -> dict[str, Path]:
    """``recipe=path`` pairs, in order."""
    curves = {}
    for item in items:
        recipe, sep, path = item.partition("=")
        if not sep or not recipe or not path:
            raise SystemExit(f"error: {item!r}: expected recipe=path/to/curve.csv")
        curves[recipe] = Path(path)
    return curves


def read_rows(path: Path) -> dict[int, dict]:
    """A curve's rows by step."""
    try:
        with (path if path.is_absolute() else ROOT / path).open() as fh:
            return {int(r["step"]): r for r in csv.DictReader(fh)}
    except (OSError, KeyError, ValueError) as exc:
        raise SystemExit(f"error: {path}: not a learning-curve CSV ({exc})") from exc


def first_row(rows: dict[str, dict[int, dict]], step: int) -> dict:
    """The row at ``step`` of the first curve that has one (examples seen and the recommender are the same in all)."""
    return next(r[step] for r in rows.values() if step in r)


def has_head(recipe: str, params: Path = ROOT / "params.yaml") -> bool:
    recipes = yaml.safe_load(params.read_text())["finetune"]["recipes"]
    if recipe not in recipes:
        raise SystemExit(f"error: recipe {recipe!r} is not in {params.name} finetune.recipes ({sorted(recipes)})")
    return bool(recipes[recipe].get("score_head"))


def _ci(row: dict, key: str) -> str:
    return f"{float(row[f'{key}_hr1']):.3f} [{float(row[f'{key}_lo']):.3f}, {float(row[f'{key}_hi']):.3f}]"


def _paired(row: dict, mode: str) -> str:
    key = f"{mode}_vs_recommender"
    if not row.get(key):
        return "–"
    return f"{float(row[key]):+.3f} [{float(row[f'{key}_lo']):+.3f}, {float(row[f'{key}_hi']):+.3f}]"


def _cells(row: dict | None, head: bool) -> list[str]:
    if row is None:
        return ["–"] * (6 if head else 5)
    cells = [_ci(row, "generate"), _paired(row, "generate"), f"{float(row['valid_ratio']):.3f}", _ci(row, "rank_llm")]
    if head:
        cells.append(f"{float(row['rank_hr1']):.3f}")
    return cells + [f"{float(row['cpu_min']):.1f}"]


def render(curves: dict[str, Path]) -> str:
    """The markdown table of the given curves, one row per step."""
    rows = {recipe: read_rows(path) for recipe, path in curves.items()}
    heads = {recipe: has_head(recipe) for recipe in curves}
    header, align = ["step", "examples"], ["---:", "---:"]
    for recipe in curves:
        names = [f"`{recipe}` generate", "− recommender (paired)", "ValidRatio", "rank_llm"] + \
            (["head"] if heads[recipe] else []) + ["CPU-min"]
        header += names
        align += ["---" if n.endswith(("generate", "rank_llm", "(paired)")) else "---:" for n in names]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    for step in sorted(set().union(*rows.values())):
        cells = [str(step), f"{int(first_row(rows, step)['examples']):,}"]
        for recipe in curves:
            cells += _cells(rows[recipe].get(step), heads[recipe])
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def render_chart(curves: dict[str, Path]) -> str:
    """A Mermaid line chart of the curves' generate HR@1 by examples seen (thousands), plus the recommender alone."""
    if len(curves) > len(PALETTE):
        raise SystemExit(f"error: a chart draws at most {len(PALETTE)} curves, got {len(curves)}")
    rows = {recipe: read_rows(path) for recipe, path in curves.items()}
    steps = sorted(set().union(*rows.values()))
    firsts = [first_row(rows, step) for step in steps]
    for (recipe, path), r in zip(curves.items(), rows.values()):  # Mermaid places a line's values left to right
        if sorted(r) != steps[:len(r)]:
            gap = next(s for s in steps[:len(r)] if s not in r)
            raise SystemExit(f"error: {path}: no point at step {gap}, which another curve of the chart has: "
                             f"`{recipe}` would be drawn at the wrong examples (chart curves must share their steps)")
    series = [[float(r[s]["generate_hr1"]) for s in steps if s in r] for r in rows.values()]
    series.append([float(row["recommender_hr1"]) for row in firsts])  # the recommender alone
    top = max(0.1, math.ceil(max(max(v) for v in series if v) * 10) / 10)
    colours = PALETTE[:len(curves)] + [RECOMMENDER]
    users = {int(r[s]["n"]) for r in rows.values() for s in r}
    lines = ["```mermaid",
             '%%{init: {"themeVariables": {"xyChart": {"plotColorPalette": "' + ", ".join(c for _, c in colours)
             + '"}}}}%%',
             "xychart-beta",
             f'    title "generate HR@1, n = {"/".join(map(str, sorted(users)))} users"',
             '    x-axis "examples seen (thousands)" [' + ", ".join(f"{int(r['examples']) / 1000:g}" for r in firsts)
             + "]",
             f'    y-axis "HR@1" 0 --> {top:g}']
    lines += ["    line [" + ", ".join(f"{v:.3f}" for v in values) + "]" for values in series]
    names = [f"{name}: `{recipe}` generate" for (name, _), recipe in zip(colours, curves)]
    lines += ["```", "",
              "Lines: " + "; ".join(names) + f"; {RECOMMENDER[0]}: the recommender alone on the same users.",
              "CIs, ValidRatio and rank_llm: the table of the same CSVs."]
    return "\n".join(lines) + "\n"


def refresh(text: str) -> tuple[str, list[str]]:
    """The text with every block re-rendered, and the opening lines of the blocks that changed."""
    stale = []

    def redo(match: re.Match) -> str:
        draw = render_chart if match["kind"] == "chart" else render
        body = draw(parse_curves(match["args"].split()))
        if body != match["body"]:
            stale.append(match.group(1).strip())
        return match.group(1) + body + match.group(5)

    return BLOCK.sub(redo, text), stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("curves", nargs="*", metavar="RECIPE=CSV", help="curves to print as one table")
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--update", type=Path, metavar="FILE", help="re-render the file's learning-table/-chart blocks")
    action.add_argument("--check", type=Path, metavar="FILE", help="exit 1 when a block is out of date")
    args = parser.parse_args(argv)
    if not (args.update or args.check):
        if not args.curves:
            parser.error("give RECIPE=CSV pairs, --update FILE or --check FILE")
        sys.stdout.write(render(parse_curves(args.curves)))
        return 0
    path = args.update or args.check
    text = path.read_text()
    if not BLOCK.search(text):
        raise SystemExit(f"error: {path}: no '<!-- learning-table ... -->' or '<!-- learning-chart ... -->' block")
    new, stale = refresh(text)
    if args.update:
        if new != text:
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(new)
            tmp.replace(path)
        print(f"{path}: {len(stale)} block(s) re-rendered")
        return 0
    for opening in stale:
        print(f"{path}: out of date, run `python bench/learning_table.py --update {path}`: {opening}")
    print(f"learning_tables_stale={len(stale)}")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
