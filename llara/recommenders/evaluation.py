"""Evaluation of a recommender on split rows: per-row ranks on the stored candidates and in the full item ranking.

Full ranking scores every item except padding and the items of the row's own (visible) history, which a next-item
recommender should not re-recommend; the target itself is never excluded. Ranks follow :mod:`llara.metrics`
(1-based, pessimistic on ties).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch
import torch.nn.functional as F

from llara import metrics
from llara.errors import require
from llara.recommenders.base import PAD, ItemIndex, SequentialRecommender, pad_history_column

EVAL_BATCH = 1024


@dataclass(frozen=True)
class SequenceData:
    """Split rows as embedding-row tensors: left-padded histories, targets, optional stored candidates."""

    seqs: torch.Tensor  # (n, window) int64
    targets: torch.Tensor  # (n,) int64
    candidates: torch.Tensor | None = None  # (n, C) int64

    def __len__(self) -> int:
        return int(self.targets.shape[0])


def sequence_data(df: pl.DataFrame, index: ItemIndex, window: int, where: str | Path) -> SequenceData:
    """Split rows (user, history, target[, candidates]) -> :class:`SequenceData` (ids checked against ``index``)."""
    require(df.height > 0, where, "no rows")
    for col in ("history", "target"):
        require(col in df.columns, where, f"missing column '{col}'")
    seqs = pad_history_column(df["history"], index, window, where)
    targets = torch.from_numpy(index.to_rows(df["target"].to_numpy(), where))
    candidates = None
    if "candidates" in df.columns:
        width = df["candidates"].list.len().unique().sort().to_list()
        require(len(width) == 1, where, f"candidate lists differ in length ({width})")
        flat = df["candidates"].explode()
        require(flat.null_count() == 0, where, "a candidate list has a missing item")
        rows = index.to_rows(flat.to_numpy(), where).reshape(df.height, -1)
        require(bool(np.all((rows == targets.numpy()[:, None]).sum(axis=1) == 1)), where, "a target is not exactly once among its candidates")
        candidates = torch.from_numpy(rows)
    return SequenceData(seqs, targets, candidates)


@dataclass(frozen=True)
class RowResults:
    """Per-row outcomes: cross-entropy over all items, full-ranking rank, rank among the stored candidates."""

    loss: np.ndarray
    full_rank: np.ndarray
    candidate_rank: np.ndarray | None


def history_mask(seqs: torch.Tensor, targets: torch.Tensor, n_columns: int) -> torch.Tensor:
    """(B, n_columns) True where a column is padding or in the row's history (the target is never masked)."""
    mask = torch.zeros(seqs.shape[0], n_columns, dtype=torch.bool)
    mask.scatter_(1, seqs, True)
    mask[:, PAD] = True
    mask[torch.arange(seqs.shape[0]), targets] = False
    return mask


@torch.no_grad()
def evaluate_rows(model: SequentialRecommender, data: SequenceData, batch_size: int = EVAL_BATCH) -> RowResults:
    was_training = model.training
    model.eval()
    losses, full, cand = [], [], []
    for start in range(0, len(data), batch_size):
        seqs = data.seqs[start : start + batch_size]
        targets = data.targets[start : start + batch_size]
        scores = model.score_all(seqs)
        losses.append(F.cross_entropy(scores[:, 1:], targets - 1, reduction="none").numpy())
        masked = scores.masked_fill(history_mask(seqs, targets, scores.shape[1]), float("-inf"))
        full.append(metrics.target_ranks(masked.numpy(), targets.numpy()))
        if data.candidates is not None:
            cands = data.candidates[start : start + batch_size]
            cand_scores = torch.gather(scores, 1, cands)
            position = (cands == targets[:, None]).to(torch.int64).argmax(dim=1)
            cand.append(metrics.target_ranks(cand_scores.numpy(), position.numpy()))
    model.train(was_training)
    return RowResults(
        np.concatenate(losses), np.concatenate(full), np.concatenate(cand) if data.candidates is not None else None
    )


def summary_values(results: RowResults) -> dict[str, float]:
    """Plain means used for training curves and early stopping."""
    out = {
        "loss": float(results.loss.mean()),
        "full_hr@10": float(metrics.hit_at_k(results.full_rank, 10).mean()),
        "full_ndcg@10": float(metrics.ndcg_at_k(results.full_rank, 10).mean()),
    }
    if results.candidate_rank is not None:
        out["hr@1"] = float(metrics.hit_at_k(results.candidate_rank, 1).mean())
    return out


def report(results: RowResults, seed: int = 0) -> dict[str, dict]:
    """The metrics file entry: hr@1, hr@5, ndcg@5 on the candidates; full_hr@10, full_ndcg@10; each {value, ci95, n}."""
    require(results.candidate_rank is not None, "evaluation", "rows have no stored candidates")
    out = metrics.ranking_metrics(results.candidate_rank, ks=(1, 5), ndcg_ks=(5,), seed=seed)
    out["full_hr@10"] = metrics.summarize(metrics.hit_at_k(results.full_rank, 10), seed=seed)
    out["full_ndcg@10"] = metrics.summarize(metrics.ndcg_at_k(results.full_rank, 10), seed=seed)
    return out
