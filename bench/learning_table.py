"""Learning-curve tables in markdown, rendered from the committed CSVs so the numbers live only there.

A markdown file holds a generated table between two comments; the opening one names the curves as
``recipe=path`` pairs (paths relative to the repository root, recipes as in params.yaml)::

    <!-- learning-table ours=metrics/learning/ours-loo-val200.csv paper=metrics/learning/paper-loo-val200.csv -->
    | step | examples | ... |
    <!-- end learning-table -->

``--update FILE`` re-renders every such block from its CSVs; ``--check FILE`` exits 1 (naming the block) when a block
differs from what its CSVs give. Without either, the curves given as arguments are printed. One row per step of any
curve; a recipe's cells: generate HR@1 [95% CI], ValidRatio, rank_llm HR@1 [95% CI], its score head's HR@1 when the
recipe has one (``score_head`` in params.yaml), and training CPU-minutes.

Last line (with ``--check``): ``learning_tables_stale=<count>``.
"""

from __future__ import annotations

import argparse
import csv
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"(<!-- learning-table (?P<args>[^>]*?) -->\n)(?P<body>.*?)(<!-- end learning-table -->)", re.S)


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


def has_head(recipe: str, params: Path = ROOT / "params.yaml") -> bool:
    recipes = yaml.safe_load(params.read_text())["finetune"]["recipes"]
    if recipe not in recipes:
        raise SystemExit(f"error: recipe {recipe!r} is not in {params.name} finetune.recipes ({sorted(recipes)})")
    return bool(recipes[recipe].get("score_head"))


def _ci(row: dict, key: str) -> str:
    return f"{float(row[f'{key}_hr1']):.3f} [{float(row[f'{key}_lo']):.3f}, {float(row[f'{key}_hi']):.3f}]"


def _cells(row: dict | None, head: bool) -> list[str]:
    if row is None:
        return ["–"] * (5 if head else 4)
    cells = [_ci(row, "generate"), f"{float(row['valid_ratio']):.3f}", _ci(row, "rank_llm")]
    if head:
        cells.append(f"{float(row['rank_hr1']):.3f}")
    return cells + [f"{float(row['cpu_min']):.1f}"]


def render(curves: dict[str, Path]) -> str:
    """The markdown table of the given curves, one row per step."""
    rows = {recipe: read_rows(path) for recipe, path in curves.items()}
    heads = {recipe: has_head(recipe) for recipe in curves}
    header, align = ["step", "examples"], ["---:", "---:"]
    for recipe in curves:
        names = [f"`{recipe}` generate", "ValidRatio", "rank_llm"] + (["head"] if heads[recipe] else []) + ["CPU-min"]
        header += names
        align += ["---" if n.endswith(("generate", "rank_llm")) else "---:" for n in names]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    for step in sorted(set().union(*rows.values())):
        examples = next(r[step]["examples"] for r in rows.values() if step in r)
        cells = [str(step), f"{int(examples):,}"]
        for recipe in curves:
            cells += _cells(rows[recipe].get(step), heads[recipe])
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def refresh(text: str) -> tuple[str, list[str]]:
    """The text with every block re-rendered, and the opening lines of the blocks that changed."""
    stale = []

    def redo(match: re.Match) -> str:
        body = render(parse_curves(match["args"].split()))
        if body != match["body"]:
            stale.append(match.group(1).strip())
        return match.group(1) + body + match.group(4)

    return BLOCK.sub(redo, text), stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("curves", nargs="*", metavar="RECIPE=CSV", help="curves to print as one table")
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--update", type=Path, metavar="FILE", help="re-render the file's learning-table blocks")
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
        raise SystemExit(f"error: {path}: no '<!-- learning-table ... -->' block")
    new, stale = refresh(text)
    if args.update:
        if new != text:
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(new)
            tmp.replace(path)
        print(f"{path}: {len(stale)} table(s) re-rendered")
        return 0
    for opening in stale:
        print(f"{path}: out of date, run `python bench/learning_table.py --update {path}`: {opening}")
    print(f"learning_tables_stale={len(stale)}")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
