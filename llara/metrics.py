"""Ranking metrics with bootstrap confidence intervals.

Conventions (used by every metrics file of the project):
- ``rank`` of the target is 1-based and pessimistic on ties: rank = 1 + #(other scores >= target score). A model that
  scores every candidate equally gets rank C, never a lucky hit. NaN scores count against the target: a NaN target
  gets rank C, a NaN score of another candidate counts as a tie.
- HitRatio@k = share of users whose target has rank <= k, over ALL users given (invalid answers count as misses).
- NDCG@k with one relevant item = 1 / log2(rank + 1) when rank <= k, else 0.
- Each metric is reported as ``{"value": mean, "ci95": [low, high], "n": users}``; the CI is the 2.5/97.5 percentile
  of ``n_boot`` bootstrap resamples of the per-user values (seeded, so reproducible).
- Two models on the SAME users are compared with a paired bootstrap (:func:`paired_difference`): the users are
  resampled once per replicate and both models' per-user values are read off the same resample, so the CI is that of
  the mean per-user difference (much tighter than comparing two independent CIs).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

DEFAULT_BOOTSTRAP = 2000


def target_ranks(scores: np.ndarray, target_index: Sequence[int]) -> np.ndarray:
    """1-based pessimistic rank of the target in each row of ``scores`` (shape users x candidates)."""
    scores = np.asarray(scores, dtype=np.float64)
    target_index = np.asarray(target_index, dtype=np.int64)
    if scores.ndim != 2 or scores.shape[0] != target_index.shape[0]:
        raise ValueError(f"scores {scores.shape} and targets {target_index.shape} do not match")
    if np.any((target_index < 0) | (target_index >= scores.shape[1])):
        raise ValueError(f"target index outside 0..{scores.shape[1] - 1}")
    rows = np.arange(scores.shape[0])
    target = scores[rows, target_index][:, None]
    not_lower = (scores >= target) | np.isnan(scores)  # a NaN score of another candidate counts as a tie
    not_lower[rows, target_index] = False  # the target itself
    ranks = 1 + not_lower.sum(axis=1)
    ranks[np.isnan(target[:, 0])] = scores.shape[1]  # a NaN target score is a miss at the worst rank
    return ranks.astype(np.int64)


def hit_at_k(ranks: np.ndarray, k: int) -> np.ndarray:
    """Per-user 0/1 hits."""
    return (np.asarray(ranks) <= k).astype(np.float64)


def ndcg_at_k(ranks: np.ndarray, k: int) -> np.ndarray:
    """Per-user NDCG@k for a single relevant item."""
    ranks = np.asarray(ranks, dtype=np.float64)
    return np.where(ranks <= k, 1.0 / np.log2(ranks + 1.0), 0.0)


def bootstrap_ci(
    values: Sequence[float], *, n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of ``values``."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, values.size, size=(n_boot, values.size))
    means = values[idx].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return (float(low), float(high))


def summarize(values: Sequence[float], *, n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0) -> dict:
    """``{"value": mean, "ci95": [low, high], "n": n}`` for per-user values."""
    values = np.asarray(values, dtype=np.float64)
    low, high = bootstrap_ci(values, n_boot=n_boot, seed=seed)
    return {"value": float(values.mean()) if values.size else float("nan"), "ci95": [low, high], "n": int(values.size)}


def ranking_metrics(ranks: np.ndarray, ks: Sequence[int] = (1, 5), *, ndcg_ks: Sequence[int] = (5,), seed: int = 0) -> dict:
    """HR@k for ``ks`` and NDCG@k for ``ndcg_ks`` as summarized metrics keyed ``hr@k`` / ``ndcg@k``."""
    out = {f"hr@{k}": summarize(hit_at_k(ranks, k), seed=seed) for k in ks}
    out.update({f"ndcg@{k}": summarize(ndcg_at_k(ranks, k), seed=seed) for k in ndcg_ks})
    return out


def paired_difference(values: Sequence[float], baseline: Sequence[float], *, n_boot: int = DEFAULT_BOOTSTRAP,
                      seed: int = 0, level: float = 0.95) -> dict:
    """Paired comparison of two models' per-user values on the same users (e.g. 0/1 hits of a model and of its
    recommender). ``{"value": mean(values - baseline), "ci95": [low, high], "n": users, "model": mean(values),
    "baseline": mean(baseline)}``; the CI is a percentile bootstrap over users (each resample takes the same users
    for both models). A CI that excludes 0 is a difference the data shows at that level."""
    values = np.asarray(values, dtype=np.float64)
    baseline = np.asarray(baseline, dtype=np.float64)
    if values.shape != baseline.shape or values.ndim != 1:
        raise ValueError(f"paired values need the same users: shapes {values.shape} and {baseline.shape}")
    diff = values - baseline
    low, high = bootstrap_ci(diff, n_boot=n_boot, seed=seed, level=level)
    mean = (lambda v: float(v.mean()) if v.size else float("nan"))
    return {"value": mean(diff), "ci95": [low, high], "n": int(diff.size), "model": mean(values),
            "baseline": mean(baseline)}
