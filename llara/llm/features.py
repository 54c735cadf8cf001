"""Recommender-derived features of items (frozen recommender; see ``llara.recommenders.load_recommender``).

- history items: the recommender's item embedding (the paper's [HistoryEmb]).
- candidates, ``item`` features: the item embedding (the paper's [CansEmb]).
- candidates, ``affinity`` features: [item embedding, user representation * item embedding, standardized score]: the
  user-specific evidence the recommender ranks with, made visible to the LLM.

Candidate scores are standardized per row (mean 0, std 1 over the candidates). Optional Gaussian noise on the training
scores de-biases them: the recommender fits its own training rows better than unseen users.
"""

from __future__ import annotations

from typing import Protocol, Sequence

import torch

from llara.errors import require
from llara.llm.recipes import CANDIDATE_FEATURES


class Recommender(Protocol):  # the interface of llara.recommenders (frozen, eval mode)
    name: str
    dim: int

    def item_embeddings(self, items: Sequence[int]) -> torch.Tensor: ...
    def encode(self, histories: Sequence[Sequence[int]]) -> torch.Tensor: ...
    def score(self, histories: Sequence[Sequence[int]], candidates: Sequence[Sequence[int]]) -> torch.Tensor: ...


def standardize(scores: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    mean = scores.mean(dim=-1, keepdim=True)
    std = scores.std(dim=-1, keepdim=True, unbiased=False)
    return (scores - mean) / (std + eps)


class ItemFeatures:
    def __init__(self, recommender: Recommender, candidate_features: str = "item"):
        require(candidate_features in CANDIDATE_FEATURES, "candidate_features",
                f"unknown {candidate_features!r} (one of {CANDIDATE_FEATURES})")
        self.recommender = recommender
        self.kind = candidate_features
        self.dim = int(recommender.dim)

    @property
    def candidate_dim(self) -> int:
        return self.dim if self.kind == "item" else 2 * self.dim + 1

    @torch.no_grad()
    def history(self, items: Sequence[int]) -> torch.Tensor:
        if len(items) == 0:
            return torch.zeros(0, self.dim)
        return self.recommender.item_embeddings(list(items)).float()

    @torch.no_grad()
    def candidates(self, histories: Sequence[Sequence[int]], candidates: Sequence[Sequence[int]],
                   noise: float = 0.0, generator: torch.Generator | Sequence[torch.Generator] | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """(features (B, C, F), standardized scores (B, C)) for each row's candidates.

        ``generator``: one for the whole batch, or one per row (the row's noise then does not depend on its batch).
        """
        b, c = len(candidates), len(candidates[0])
        flat = [int(i) for row in candidates for i in row]
        emb = self.recommender.item_embeddings(flat).float().view(b, c, self.dim)
        z = standardize(self.recommender.score(histories, candidates).float())
        if noise > 0:
            if isinstance(generator, (list, tuple)):
                eps = torch.stack([torch.randn(z.shape[1:], generator=g) for g in generator])
            else:
                eps = torch.randn(z.shape, generator=generator)
            z = z + noise * eps
        if self.kind == "item":
            return emb, z
        user = self.recommender.encode(histories).float()
        return torch.cat([emb, user[:, None, :] * emb, z[..., None]], dim=-1), z
