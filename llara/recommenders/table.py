"""A frozen recommender reduced to its item-embedding table: what a hybrid prompt's item tokens carry.

``encode`` is the mean embedding of a history and ``score`` its dot product with each candidate's embedding. Used where
only the table travels (``bench/bench_gpu.py``'s device bundle) and as the tests' stand-in recommender; it imports
nothing but torch.
"""

from __future__ import annotations

import torch


class TableRecommender:
    name = "table"

    def __init__(self, table: torch.Tensor):
        self.table = table.float()
        self.dim = table.shape[1]
        self.n_items = table.shape[0] - 1  # row 0 is padding

    def item_embeddings(self, items):
        return self.table[torch.as_tensor(list(items), dtype=torch.long)]

    def encode(self, histories):
        return torch.stack([self.item_embeddings(h).mean(0) for h in histories])

    def score(self, histories, candidates):
        user = self.encode(histories)
        return (user[:, None, :] * torch.stack([self.item_embeddings(c) for c in candidates])).sum(-1)
