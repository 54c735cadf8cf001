"""The HTML report: tables from metrics JSON (missing files shown as "not run"), ablation chart, curves, examples;
and that it renders in headless Chromium. Synthetic data only."""

from __future__ import annotations

import json
import re
from pathlib import Path

import polars as pl
import pytest

from llara.cli import main as llara_main
from llara.errors import InputError
from llara.metrics_files import load_metrics, metric_rows, metrics_markdown
from llara.report import ReportConfig, ablation_png, build_report, curve_png, expand_globs, load_examples, render_html

from _browser import CHROMIUM, chromium


def _summary(value: float, lo: float, hi: float, n: int) -> dict:
    return {"value": value, "ci95": [lo, hi], "n": n}


@pytest.fixture()
def outputs(tmp_path: Path) -> Path:
    """A workspace-shaped folder with recommender + LLaRA metrics, two curve files and one predictions parquet."""
    (tmp_path / "metrics/finetune/paper/hybrid").mkdir(parents=True)
    (tmp_path / "metrics/recommenders.json").write_text(json.dumps({"paper": {
        "sasrec": {"hr@1": _summary(0.3444, 0.25, 0.44, 95), "ndcg@5": _summary(0.51, 0.45, 0.58, 95)},
        "gru4rec": {"hr@1": _summary(0.3750, 0.28, 0.47, 95)},
    }}))
    (tmp_path / "metrics/llara.json").write_text(json.dumps({"paper": {
        "hybrid": {"generate": {"hr@1": _summary(0.4421, 0.34, 0.54, 95), "valid_ratio": _summary(0.97, 0.93, 1.0, 95)},
                   "rank": {"hr@1": _summary(0.4632, 0.36, 0.56, 95)}},
    }}))
    (tmp_path / "metrics/llara_leave-one-out.json").write_text(json.dumps({"leave-one-out": {
        "hybrid": {"generate": {"hr@1": _summary(0.41, 0.38, 0.44, 943)}}}}))
    curve = tmp_path / "metrics/finetune/paper/hybrid/loss.csv"
    curve.write_text("step,loss\n" + "".join(f"{s},{2.0 / (s + 1):.4f}\n" for s in range(20)))
    (tmp_path / "metrics/finetune/paper/hybrid/empty.csv").write_text("step,note\n")
    (tmp_path / "metrics/llara_hr1.csv").write_text(  # a table (no step column, rows named by text), not a curve
        "split,variant,mode,hr1,n\npaper,hybrid,generate,0.442105,95\npaper,hybrid,rank<&>,0.463158,95\n")
    items = pl.DataFrame({"item": list(range(1, 31)), "title": [f"Film <{i}> & co" for i in range(1, 31)]})
    (tmp_path / "data/ingested").mkdir(parents=True)
    items.write_parquet(tmp_path / "data/ingested/items.parquet")
    split = pl.DataFrame({
        "user": [7, 3, 9], "history": [[1, 2, 3], [4, 5], [6]], "target": [10, 11, 12],
        "candidates": [[10, 20, 21], [22, 11, 23], [24, 25, 12]],
    })
    (tmp_path / "data/split/paper").mkdir(parents=True)
    split.write_parquet(tmp_path / "data/split/paper/test.parquet")
    (tmp_path / "data/eval/paper/test").mkdir(parents=True)
    pl.DataFrame({"row": [0, 1, 2], "user": [7, 3, 9], "target": [10, 11, 12],
                  "scores": [[0.9, 0.1, 0.0], [0.5, 0.2, 0.9], [0.1, 0.2, 0.3]]}).write_parquet(
        tmp_path / "data/eval/paper/test/hybrid.parquet")
    return tmp_path


def _config(root: Path, **kw) -> ReportConfig:
    return ReportConfig(
        out=root / "reports/index.html",
        metrics={"Recommenders": root / "metrics/recommenders.json", "LLaRA": root / "metrics/llara.json",
                 "Missing": root / "metrics/absent.json"},
        plots=expand_globs(["metrics/**/*.csv"], root), predictions=expand_globs(["data/eval/*/test/*.parquet"], root),
        items=root / "data/ingested/items.parquet", split_file=str(root / "data/split/{protocol}/{split}.parquet"),
        n_examples=2, top_k=2, **kw,
    )


def test_metric_rows_flatten_nested_modes(outputs: Path):
    rows = metric_rows(load_metrics(outputs / "metrics/llara.json"))
    assert {(r.model, r.metric) for r in rows} == {("hybrid", "generate/hr@1"), ("hybrid", "generate/valid_ratio"),
                                                   ("hybrid", "rank/hr@1")}
    hr = next(r for r in rows if r.metric == "rank/hr@1")
    assert (hr.value, hr.ci95, hr.n) == (0.4632, (0.36, 0.56), 95)


def test_missing_metrics_is_none_and_bad_json_names_file(tmp_path: Path):
    assert load_metrics(tmp_path / "nope.json") is None
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InputError, match="bad.json: not valid JSON"):
        load_metrics(bad)


def test_markdown_tables_and_not_run(outputs: Path):
    text = metrics_markdown({"Recommenders": outputs / "metrics/recommenders.json", "X": outputs / "metrics/x.json"})
    assert "| sasrec | 0.3444 [0.2500, 0.4400] n=95 | 0.5100 [0.4500, 0.5800] n=95 |" in text
    assert "| gru4rec | 0.3750 [0.2800, 0.4700] n=95 |  |" in text
    assert "### X" in text and "_not run_" in text


def test_charts_are_pngs_or_none(outputs: Path):
    rows = metric_rows(load_metrics(outputs / "metrics/recommenders.json"))
    png = ablation_png(rows, "paper", "hr@1")
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 2000
    assert ablation_png(rows, "paper", "mrr") is None
    assert curve_png(outputs / "metrics/finetune/paper/hybrid/loss.csv")[:4] == b"\x89PNG"
    assert curve_png(outputs / "metrics/finetune/paper/hybrid/empty.csv") is None


def test_examples_rank_by_scores_and_mark_target(outputs: Path):
    examples = load_examples(outputs / "data/eval/paper/test/hybrid.parquet", outputs / "data/ingested/items.parquet",
                             outputs / "data/split/paper/test.parquet", n=2)
    assert [e.user for e in examples] == [3, 7]  # sorted by user, first n
    user3 = examples[0]
    assert user3.history == ["Film <4> & co", "Film <5> & co"]
    assert [t for t, _ in user3.ranked] == ["Film <23> & co", "Film <22> & co", "Film <11> & co"]
    assert user3.target_rank == 3 and [hit for _, hit in user3.ranked] == [False, False, True]
    assert examples[1].target_rank == 1


def test_examples_of_a_generate_only_evaluation_show_its_answer_alone(outputs: Path):
    """Predictions without scores (generate mode only): the answer is the one ranked candidate; the target has a rank
    only when it was the answer, never a position in the stored list."""
    path = outputs / "data/eval/paper/test/generated.parquet"
    pl.DataFrame({"row": [0, 1], "user": [7, 3], "target": [10, 11], "generated_item": [10, 23]}).write_parquet(path)
    examples = load_examples(path, outputs / "data/ingested/items.parquet", outputs / "data/split/paper/test.parquet", 2)
    hit, miss = examples[1], examples[0]  # sorted by user: 3, then 7
    assert (hit.user, hit.ranked, hit.target_rank) == (7, [("Film <10> & co", True)], 1)
    assert (miss.user, miss.ranked, miss.target_rank) == (3, [("Film <23> & co", False)], None)
    html_text = render_html(_config(outputs))
    assert "Film &lt;11&gt; &amp; co (not the model&#x27;s answer)" in html_text


def test_report_html_content_is_escaped_and_deterministic(outputs: Path):
    config = _config(outputs)
    html_text = render_html(config)
    assert html_text == render_html(config)
    assert html_text.count('<table class="metrics"') == 2
    assert "0.4421 [0.3400, 0.5400] n=95" in html_text
    assert re.search(r"Missing.*?not run", html_text, re.S)
    assert "Film &lt;4&gt; &amp; co" in html_text and "Film <4>" not in html_text
    assert html_text.count("data:image/png;base64,") == 2  # one ablation chart (paper) + one curve
    table = re.search(r'<h2>Tables</h2>\s*<table class="plot-table">(.*?)</table>', html_text, re.S)  # not a line chart
    assert table and "<th>mode</th>" in table.group(1) and "<td>rank&lt;&amp;&gt;</td><td>0.463</td><td>95</td>" in table.group(1)
    assert "rank 3" in html_text


def test_report_without_any_outputs(tmp_path: Path):
    config = ReportConfig(out="r.html", metrics={"LLaRA": "metrics/llara.json"})  # default globs, under tmp_path
    text = build_report(config, tmp_path).read_text()
    assert "not run" in text and "no training curves found" in text and "no predictions found" in text


def test_cli_report_writes_file(outputs: Path, monkeypatch, capsys):
    monkeypatch.chdir(outputs)
    assert llara_main(["report", "--out", "out/r.html", "--examples", "1"]) == 0
    text = (outputs / "out/r.html").read_text()
    assert "not run" not in text and "Film &lt;" in text
    assert llara_main(["report", "--metrics", "oops"]) == 2
    assert "error: --metrics: expected LABEL=PATH" in capsys.readouterr().err
    assert llara_main(["report", "--examples", "-1"]) == 2  # the library's range check, under the option's name
    assert "error: --examples: must be in [0, 100], got -1" in capsys.readouterr().err
    assert not (outputs / "reports/index.html").exists()


@pytest.mark.integration
@pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium absent (apt-get install -y chromium)")
def test_report_renders_in_headless_chromium(outputs: Path, tmp_path: Path):
    out = build_report(_config(outputs))
    dom = chromium("--dump-dom", out.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert dom.stdout.count('<table class="metrics"') == 2 and 'class="examples"' in dom.stdout
    assert "0.3750 [0.2800, 0.4700] n=95" in dom.stdout
    shot = tmp_path / "shot.png"
    result = chromium(f"--screenshot={shot}", "--window-size=1200,1600", "--hide-scrollbars", out.as_uri())
    assert shot.is_file(), result.stderr[-2000:]
    from matplotlib.image import imread

    pixels = imread(shot)
    assert pixels.shape[0] >= 1000 and pixels.shape[1] >= 1000
    assert float(pixels[..., :3].std()) > 0.05  # not a blank page: text, tables and charts drawn


def test_series_of_very_different_scales_get_their_own_panels():
    from llara.report import scale_groups

    groups = scale_groups({"loss": [5.0, 3.0], "head": [2.0, 1.0], "lr": [1e-4, 5e-4], "examples": [8.0, 480.0]})
    assert groups == [["examples"], ["loss", "head"], ["lr"]]
    assert scale_groups({"a": [float("nan"), 1.0]}) == [["a"]]


def test_contribution_table_and_learning_curves(outputs: Path):
    from llara.contribution import contribution_markdown, contribution_rows

    paired = lambda v, lo, hi: {"hr@1": {"value": v, "ci95": [lo, hi], "n": 95}}  # noqa: E731
    (outputs / "metrics/llara.json").write_text(json.dumps({"paper": {"hybrid": {
        "generate": {"hr@1": _summary(0.40, 0.30, 0.50, 95), "valid_ratio": _summary(0.99, 0.97, 1.0, 95)},
        "rank": {"hr@1": _summary(0.52, 0.42, 0.62, 95)}, "rank_llm": {"hr@1": _summary(0.45, 0.35, 0.55, 95)},
        "recommender": {"hr@1": _summary(0.50, 0.40, 0.60, 95)},
        "paired_vs_recommender": {"generate": paired(-0.10, -0.18, -0.02), "rank": paired(0.02, -0.05, 0.09),
                                  "rank_llm": paired(-0.05, -0.12, 0.02)}}}}))
    header, rows = contribution_rows(json.loads((outputs / "metrics/llara.json").read_text()))["paper"]
    assert header == ["variant", "generate HR@1", "ValidRatio", "rank HR@1", "rank_llm HR@1", "recommender HR@1",
                      "Δ generate", "Δ rank", "Δ rank_llm"]  # the modes evaluated, no column for the others
    assert rows[0][:2] == ["hybrid", "0.400 [0.300, 0.500]"]
    assert rows[0][6] == "-0.100 [-0.180, -0.020] (−)"  # the CI excludes 0: marked
    assert rows[0][7] == "+0.020 [-0.050, +0.090]"  # it does not: unmarked
    assert "| hybrid | 0.400" in contribution_markdown(json.loads((outputs / "metrics/llara.json").read_text()))
    learning = outputs / "metrics/learning"
    learning.mkdir()
    for recipe, slope in (("ours", 0.1), ("paper", 0.02)):
        lines = ["step,examples,cpu_min,wall_min,generate_hr1,generate_lo,generate_hi,valid_ratio,rank_llm_hr1,"
                 "rank_llm_lo,rank_llm_hi,rank_hr1,recommender_hr1,n"]
        lines += [f"{s},{s * 8},{s},{s},{min(1, slope * s):.3f},0,1,0.9,{min(1, slope * s):.3f},0,1,0.5,0.5,200"
                  for s in range(0, 6)]
        (learning / f"{recipe}.csv").write_text("\n".join(lines) + "\n")
    # a curve on other users (94, another recommender level) gets its own chart
    (learning / "ours-94.csv").write_text(lines[0] + "\n0,0,0,0,0.01,0,0.03,0.2,0.0,0,0,0,0.511,94\n")
    html_text = render_html(_config(outputs))
    assert 'class="metrics contribution"' in html_text and "(−)" in html_text
    assert 'alt="learning curves, n=200 users, recommender alone 0.500"' in html_text
    assert 'alt="learning curves, n=94 users, recommender alone 0.511"' in html_text
    assert "no learning curves" not in html_text
    # the learning CSVs are drawn in the learning chart, not as generic training curves
    assert 'alt="' + str(learning / "ours.csv") + '"' not in html_text
    # ablation chart: HR@1s only, not the paired differences
    assert html_text.count("data:image/png;base64,") == 4  # ablation + loss curve + two learning charts
