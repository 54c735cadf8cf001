"""`bench/learning_table.py`: the learning-curve tables in markdown are rendered from the committed CSVs."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
from learning_table import ROOT, main, render, render_chart

COMMITTED = ROOT / "metrics" / "learning"


@pytest.mark.parametrize("doc", [COMMITTED / "README.md", ROOT / "docs" / "llara.md"], ids=["table", "chart"])
def test_the_committed_tables_and_charts_match_their_csvs(doc, capsys):
    assert main(["--check", str(doc)]) == 0, capsys.readouterr().out
    assert capsys.readouterr().out.strip().endswith("learning_tables_stale=0")


def copy_curve(tmp: Path, name: str) -> Path:
    return Path(shutil.copy(COMMITTED / f"{name}-loo-val200-run1.csv", tmp / f"{name}.csv"))


def edit_row(path: Path, step: int, **values) -> None:
    with path.open() as fh:
        rows = list(csv.DictReader(fh))
    columns = list(rows[0])
    for row in rows:
        if int(row["step"]) == step:
            row.update({k: str(v) for k, v in values.items()})
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def test_a_changed_curve_makes_the_table_stale_until_updated(tmp_path, capsys):
    ours, paper = copy_curve(tmp_path, "ours"), copy_curve(tmp_path, "paper")
    doc = tmp_path / "doc.md"
    doc.write_text(f"intro\n\n<!-- learning-table ours={ours} paper={paper} -->\n{render({'ours': ours, 'paper': paper})}"
                   "<!-- end learning-table -->\n\nafter\n")
    assert main(["--check", str(doc)]) == 0
    edit_row(ours, 250, generate_hr1=0.6125, generate_lo=0.5, generate_hi=0.7)
    capsys.readouterr()
    assert main(["--check", str(doc)]) == 1
    out = capsys.readouterr().out
    assert "out of date" in out and str(ours) in out and out.strip().endswith("learning_tables_stale=1")
    before = doc.read_text()
    assert main(["--update", str(doc)]) == 0
    after = doc.read_text()
    assert "| 250 | 2,000 | 0.613 [0.500, 0.700] |" in after and "0.613" not in before
    assert after.startswith("intro\n\n") and after.endswith("<!-- end learning-table -->\n\nafter\n")
    assert main(["--check", str(doc)]) == 0


def test_columns_follow_the_recipe_and_missing_points_show_a_dash(tmp_path):
    ours, paper = copy_curve(tmp_path, "ours"), copy_curve(tmp_path, "paper")
    with ours.open("a") as fh:  # a point only `ours` has reached
        fh.write("1000,8000,340.0,380.0,0.41,0.34,0.48,0.99,0.4,0.33,0.47,0.55,0.575,200\n")
    lines = render({"ours": ours, "paper": paper}).splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header.count("head") == 1 and header.index("head") < header.index("`paper` generate")  # paper has no head
    last = [c.strip() for c in lines[-1].strip("|").split("|")]
    assert last[:3] == ["1000", "8,000", "0.410 [0.340, 0.480]"] and last[-4:] == ["–"] * 4
    assert len(lines) == 2 + len({0, 250, 500, 750, 1000})


@pytest.mark.parametrize("argv, fault", [(["ours"], "expected recipe=path"),
                                         (["nosuch=metrics/learning/ours-loo-val200.csv"], "not in params.yaml"),
                                         (["ours=params.yaml"], "not a learning-curve CSV")])
def test_bad_arguments_name_the_fault(argv, fault):
    with pytest.raises(SystemExit, match=fault):
        main(argv)


def test_curve_rows_round_away_bootstrap_float_noise():
    from bench_learning import COLUMNS, point_row

    def mode(value: float, lo: float, hi: float) -> dict:
        return {"hr@1": {"value": value, "ci95": [lo, hi], "n": 200}, "valid_ratio": {"value": 0.98}}

    metrics = {"generate": mode(0.345, 0.2848750000000002, 0.41), "rank_llm": mode(0.37, 0.305, 0.44),
               "rank": mode(0.535, 0.4, 0.6), "recommender": mode(0.575, 0.5, 0.64),
               "paired_vs_recommender": {"generate": mode(-0.23, -0.29500000000000004, -0.165),
                                         "rank_llm": mode(-0.205, -0.27, -0.14)}}
    row = point_row(750, 6000, 15270.54, 17494.5, metrics)
    assert list(row) == COLUMNS
    assert row["generate_lo"] == 0.284875 and row["generate_hi"] == 0.41 and row["cpu_min"] == 254.509
    assert row["n"] == 200 and row["valid_ratio"] == 0.98
    assert (row["generate_vs_recommender"], row["generate_vs_recommender_lo"]) == (-0.23, -0.295)
    assert row["rank_llm_vs_recommender_hi"] == -0.14


def test_points_with_the_paired_difference_join_a_curve_recorded_without_it(tmp_path):
    """A curve begun before the CSV kept each mode's paired difference against the recommender: its old rows are
    rewritten with those cells empty and shown as –, a new point shows the difference with its paired CI."""
    from bench_learning import COLUMNS, read_curve, write_curve

    curve = copy_curve(tmp_path, "ours")
    old = read_curve(curve, 10 ** 6)
    assert "generate_vs_recommender" not in old[0]
    new = dict(old[-1], step="1000", examples="8000", generate_vs_recommender="-0.105",
               generate_vs_recommender_lo="-0.17", generate_vs_recommender_hi="-0.04")
    write_curve(curve, old + [new])
    rows = list(csv.DictReader(curve.open()))
    assert list(rows[0]) == COLUMNS and rows[0]["generate_vs_recommender"] == ""
    table = render({"ours": curve}).splitlines()
    assert "− recommender (paired)" in table[0]
    assert table[2].split(" | ")[3] == "–" and table[-1].split(" | ")[3] == "-0.105 [-0.170, -0.040]"


def test_the_chart_draws_each_recipe_and_the_recommender_and_follows_its_csvs(tmp_path, capsys):
    ours, paper = copy_curve(tmp_path, "ours"), copy_curve(tmp_path, "paper")
    with ours.open("a") as fh:  # a point only `ours` has reached: its line is one value longer
        fh.write("1000,8000,340.0,380.0,0.41,0.34,0.48,0.99,0.4,0.33,0.47,0.55,0.575,200\n")
    chart = render_chart({"ours": ours, "paper": paper})
    lines = [line.strip() for line in chart.splitlines()]
    steps = sorted(int(r["step"]) for r in csv.DictReader(ours.open()))
    x_axis = next(line for line in lines if line.startswith("x-axis"))
    assert x_axis.endswith("[" + ", ".join(f"{s * 8 / 1000:g}" for s in steps) + "]")
    series = [line for line in lines if line.startswith("line [")]
    generate = {n: [f"{float(r['generate_hr1']):.3f}" for r in csv.DictReader(p.open())] for n, p in
                (("ours", ours), ("paper", paper))}
    assert series[0] == "line [" + ", ".join(generate["ours"]) + "]" and series[0].endswith("0.410]")
    assert series[1] == "line [" + ", ".join(generate["paper"]) + "]" and len(generate["paper"]) == len(steps) - 1
    assert series[2] == "line [" + ", ".join(["0.575"] * len(steps)) + "]"  # the recommender alone
    assert lines[0] == "```mermaid" and "xychart-beta" in lines and 'y-axis "HR@1" 0 --> 0.6' in lines
    assert "blue: `ours` generate; orange: `paper` generate; grey: the recommender alone" in chart

    doc = tmp_path / "doc.md"
    doc.write_text(f"<!-- learning-chart ours={ours} paper={paper} -->\n{chart}<!-- end learning-chart -->\n")
    assert main(["--check", str(doc)]) == 0
    edit_row(paper, 500, generate_hr1=0.2125)
    capsys.readouterr()
    assert main(["--check", str(doc)]) == 1 and "learning-chart" in capsys.readouterr().out
    assert main(["--update", str(doc)]) == 0 and "0.212" in doc.read_text() and main(["--check", str(doc)]) == 0


def test_the_chart_refuses_a_curve_with_a_gap(tmp_path):
    """Mermaid places a line's values left to right on the shared x-axis: a curve missing a step that another curve
    has would be drawn at the wrong examples, so the chart names the file and the step instead."""
    ours, paper = copy_curve(tmp_path, "ours"), copy_curve(tmp_path, "paper")
    for path, steps in ((ours, (1000, 1250)), (paper, (1250,))):
        with path.open("a") as fh:
            for step in steps:
                fh.write(f"{step},{step * 8},340.0,380.0,0.41,0.34,0.48,0.99,0.4,0.33,0.47,0.55,0.575,200\n")
    with pytest.raises(SystemExit, match=f"{paper}: no point at step 1000"):
        render_chart({"ours": ours, "paper": paper})
    assert "| 1000 |" in render({"ours": ours, "paper": paper})  # the table shows the gap as a dash instead
