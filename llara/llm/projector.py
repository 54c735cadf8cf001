"""Projector: recommender vectors -> LLM input embeddings (the paper's 2-layer MLP with GELU, or linear)."""

from __future__ import annotations

from torch import nn

PROJECTORS = ("mlp", "linear")


def make_projector(in_dim: int, out_dim: int, kind: str = "mlp") -> nn.Module:
    if kind == "mlp":
        return nn.Sequential(nn.Linear(in_dim, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))
    if kind == "linear":
        return nn.Linear(in_dim, out_dim)
    raise ValueError(f"unknown projector {kind!r} (one of {PROJECTORS})")
