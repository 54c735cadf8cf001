"""llara.metrics against hand-computed cases (ties, NaN, bootstrap CIs)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from llara import metrics


def test_ranks_are_one_based_and_pessimistic_on_ties():
    scores = np.array(
        [
            [0.9, 0.1, 0.5],  # target 0 is the best            -> rank 1
            [0.9, 0.1, 0.5],  # target 2: one higher              -> rank 2
            [0.5, 0.5, 0.5],  # all equal: worst rank, no lucky hit -> rank 3
            [0.7, 0.7, 0.1],  # tie with one other                -> rank 2
            [0.2, 0.3, 0.3],  # target 1 ties with 2, none lower than it above -> rank 2
        ]
    )
    assert metrics.target_ranks(scores, [0, 2, 1, 0, 1]).tolist() == [1, 2, 3, 2, 2]


def test_nan_scores_count_against_the_target():
    scores = np.array([[np.nan, 0.2, 0.1], [0.9, np.nan, 0.1], [-np.inf, -np.inf, 0.0]])
    # NaN target -> worst rank; NaN competitor -> a tie; -inf target tied with -inf -> below both others
    assert metrics.target_ranks(scores, [0, 0, 0]).tolist() == [3, 2, 3]


def test_ranks_reject_mismatched_or_out_of_range_targets():
    with pytest.raises(ValueError):
        metrics.target_ranks(np.zeros((2, 3)), [0])
    with pytest.raises(ValueError):
        metrics.target_ranks(np.zeros((1, 3)), [3])
    with pytest.raises(ValueError):
        metrics.target_ranks(np.zeros((1, 3)), [-1])


def test_hit_and_ndcg_by_hand():
    ranks = np.array([1, 2, 3, 6, 20])
    assert metrics.hit_at_k(ranks, 1).tolist() == [1, 0, 0, 0, 0]
    assert metrics.hit_at_k(ranks, 5).tolist() == [1, 1, 1, 0, 0]
    expected = [1.0, 1 / math.log2(3), 0.5, 0.0, 0.0]  # 1/log2(rank+1) within k=5
    assert np.allclose(metrics.ndcg_at_k(ranks, 5), expected)
    assert np.allclose(metrics.ndcg_at_k(ranks, 10), [1.0, 1 / math.log2(3), 0.5, 1 / math.log2(7), 0.0])


def test_hit_ratio_counts_every_user():
    # 2 correct answers among 5 users (3 invalid answers scored as NaN) -> 0.4, not 2/2
    scores = np.array([[1.0, 0.0], [1.0, 0.0], [np.nan, 0.0], [np.nan, 0.0], [np.nan, 0.0]])
    summary = metrics.summarize(metrics.hit_at_k(metrics.target_ranks(scores, [0] * 5), 1))
    assert summary["value"] == pytest.approx(0.4) and summary["n"] == 5


def test_bootstrap_ci_is_seeded_and_brackets_the_mean():
    values = np.array([0, 1] * 50, dtype=float)
    low, high = metrics.bootstrap_ci(values, seed=3)
    assert (low, high) == metrics.bootstrap_ci(values, seed=3)
    assert low < 0.5 < high
    assert 0.35 < low and high < 0.65  # ~ 0.5 +- 1.96 * sqrt(0.25 / 100)
    assert metrics.bootstrap_ci(np.ones(7)) == (1.0, 1.0)
    assert all(math.isnan(x) for x in metrics.bootstrap_ci([]))


def test_summarize_and_ranking_metrics_format():
    summary = metrics.summarize([1.0, 0.0, 0.0, 1.0])
    assert set(summary) == {"value", "ci95", "n"}
    assert summary["value"] == 0.5 and summary["n"] == 4 and len(summary["ci95"]) == 2
    out = metrics.ranking_metrics(np.array([1, 3, 7]), ks=(1, 5), ndcg_ks=(5,))
    assert set(out) == {"hr@1", "hr@5", "ndcg@5"}
    assert out["hr@1"]["value"] == pytest.approx(1 / 3)
    assert out["hr@5"]["value"] == pytest.approx(2 / 3)
    assert out["ndcg@5"]["value"] == pytest.approx((1 + 0.5) / 3)


def test_paired_difference_is_tighter_than_unpaired_and_names_both_means():
    rng = np.random.default_rng(0)
    base = (rng.random(400) < 0.5).astype(float)
    model = base.copy()
    model[np.flatnonzero(base == 0)[:30]] = 1.0  # the model wins on 30 users the baseline misses
    model[np.flatnonzero(base == 1)[:10]] = 0.0  # and loses on 10 it hits
    paired = metrics.paired_difference(model, base, seed=1)
    assert paired["n"] == 400
    assert paired["value"] == pytest.approx(model.mean() - base.mean())
    assert paired["model"] == pytest.approx(model.mean()) and paired["baseline"] == pytest.approx(base.mean())
    low, high = paired["ci95"]
    assert low <= paired["value"] <= high
    # the unpaired CIs of the two means overlap; the paired CI of their difference excludes 0
    m_low, _ = metrics.bootstrap_ci(model, seed=1)
    _, b_high = metrics.bootstrap_ci(base, seed=1)
    assert m_low < b_high and low > 0
    assert metrics.paired_difference(model, base, seed=1) == paired  # seeded
    identical = metrics.paired_difference(base, base)
    assert identical["value"] == 0.0 and identical["ci95"] == [0.0, 0.0]
    with pytest.raises(ValueError, match="same users"):
        metrics.paired_difference(model, base[:-1])
