"""Embedding injection: placeholder tokens' input embeddings are replaced by projected recommender vectors."""

from __future__ import annotations

import torch


def inject(embeds: torch.Tensor, input_ids: torch.Tensor, token_id: int, vectors: torch.Tensor) -> torch.Tensor:
    """Return ``embeds`` with the k-th occurrence (row-major) of ``token_id`` replaced by ``vectors[k]``.

    Everything else is left untouched; gradients flow into ``vectors``.
    """
    mask = input_ids == token_id
    n = int(mask.sum())
    if n != vectors.shape[0]:
        raise ValueError(f"{n} placeholder tokens but {vectors.shape[0]} vectors")
    if n == 0:
        return embeds
    return embeds.masked_scatter(mask.unsqueeze(-1), vectors.to(embeds.dtype))
