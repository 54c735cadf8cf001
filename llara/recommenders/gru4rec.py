"""GRU4Rec (Hidasi et al., 2016) for next-item prediction: a GRU over the item sequence, last hidden state."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from llara.recommenders.base import SequentialRecommender
from llara.recommenders.config import GRU4RecConfig


def right_align(seqs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Left-padded rows -> the same items at the start of each row (what packing expects)."""
    window = seqs.shape[1]
    idx = (torch.arange(window, device=seqs.device)[None] + (window - lengths)[:, None]) % window
    return torch.gather(seqs, 1, idx)


class GRU4Rec(SequentialRecommender):
    def __init__(self, config: GRU4RecConfig):
        super().__init__(config)
        self.emb_dropout = nn.Dropout(config.dropout)
        self.gru = nn.GRU(
            config.hidden, config.hidden, num_layers=config.n_layers, batch_first=True,
            dropout=config.dropout if config.n_layers > 1 else 0.0,
        )
        self.out = nn.Linear(config.hidden, config.hidden)

    def encode(self, seqs: torch.Tensor) -> torch.Tensor:
        lengths = self.lengths(seqs).clamp(min=1)  # the padding row is zero: an empty history reads one zero step
        x = self.emb_dropout(self.item_emb(right_align(seqs, lengths)))
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, h_n = self.gru(packed)
        return self.out(h_n[-1])
