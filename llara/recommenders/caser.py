"""Caser (Tang & Wang, 2018): horizontal and vertical convolutions over the (window x hidden) embedding image.

The user embedding of the original is left out: held-out users have no trained user vector, and the sequence
representation alone is what LLaRA consumes.
"""

from __future__ import annotations

import torch
from torch import nn

from llara.recommenders.base import SequentialRecommender
from llara.recommenders.config import CaserConfig


class Caser(SequentialRecommender):
    def __init__(self, config: CaserConfig):
        super().__init__(config)
        window, hidden = config.window, config.hidden
        # Convolutions written as linear maps (same parameters as Conv2d, much faster on CPU):
        # vertical filter f: sum over the window rows; horizontal filters of height h: over h consecutive rows.
        self.vertical = nn.Linear(window, config.n_v)
        self.horizontal = nn.ModuleList(nn.Linear(h * hidden, config.n_h) for h in range(1, window + 1))
        self.dropout = nn.Dropout(config.dropout)
        self.fc = nn.Linear(config.n_v * hidden + config.n_h * window, hidden)

    def encode(self, seqs: torch.Tensor) -> torch.Tensor:
        image = self.item_emb(seqs)  # (B, window, hidden)
        b, window, hidden = image.shape
        vertical = self.vertical(image.transpose(1, 2)).transpose(1, 2).reshape(b, -1)  # (B, n_v * hidden)
        horizontal = []
        for h, conv in enumerate(self.horizontal, start=1):
            patches = image.unfold(1, h, 1).transpose(2, 3).reshape(b, window - h + 1, h * hidden)
            horizontal.append(torch.relu(conv(patches)).amax(dim=1))  # (B, n_h): max over time
        features = self.dropout(torch.cat([vertical, *horizontal], dim=1))
        return torch.relu(self.fc(features))
