"""The evaluate stage's output contract: metrics/llara.json keyed by protocol, and the HR@1-per-variant DVC plot."""

from __future__ import annotations

import csv

from tasks.evaluate import metrics_key, write_hr1_plot


def metric(value: float) -> dict:
    return {"value": value, "ci95": [value - 0.1, value + 0.1], "n": 95}


def test_test_rows_are_keyed_by_protocol_and_val_rows_apart():
    assert metrics_key("paper", "test") == "paper"
    assert metrics_key("leave-one-out", "val") == "leave-one-out/val"


def test_hr1_plot_has_one_row_per_variant_and_mode_with_its_ci(tmp_path):
    results = {
        "paper": {
            "hybrid-curriculum": {"generate": {"hr@1": metric(0.4), "valid_ratio": metric(0.9)},
                                  "rank": {"hr@1": metric(0.5), "hr@5": metric(0.8)}},
            "text-only": {"rank": {"hr@1": metric(0.2)}},
        }
    }
    target = tmp_path / "hr1.csv"
    write_hr1_plot(results, target)
    rows = list(csv.DictReader(target.open()))
    assert [(r["variant"], r["mode"]) for r in rows] == [
        ("hybrid-curriculum", "generate"), ("hybrid-curriculum", "rank"), ("text-only", "rank")]
    rank = rows[1]
    assert float(rank["hr1"]) == 0.5 and float(rank["ci_low"]) == 0.4 and float(rank["ci_high"]) == 0.6
    assert rank["n"] == "95" and rank["split"] == "paper"
