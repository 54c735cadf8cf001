"""SASRec (Kang & McAuley, 2018): causal self-attention over the item sequence."""

from __future__ import annotations

import math

import torch
from torch import nn

from llara.recommenders.base import PAD, SequentialRecommender
from llara.recommenders.config import SASRecConfig


class CausalSelfAttention(nn.Module):
    def __init__(self, hidden: int, n_heads: int, dropout: float):
        super().__init__()
        self.n_heads = n_heads
        self.q = nn.Linear(hidden, hidden)
        self.kv = nn.Linear(hidden, 2 * hidden)
        self.out = nn.Linear(hidden, hidden)
        self.dropout = nn.Dropout(dropout)

    def forward(self, query: torch.Tensor, context: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        b, length, hidden = query.shape
        head = hidden // self.n_heads
        q = self.q(query).view(b, length, self.n_heads, head).transpose(1, 2)
        k, v = self.kv(context).view(b, context.shape[1], 2, self.n_heads, head).permute(2, 0, 3, 1, 4)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(head)
        scores = scores.masked_fill(~allowed[:, None], float("-inf"))
        weights = self.dropout(torch.softmax(scores, dim=-1))
        return self.out((weights @ v).transpose(1, 2).reshape(b, length, hidden))


class SASRecBlock(nn.Module):
    """Pre-norm attention + point-wise feed-forward, as in the reference implementation."""

    def __init__(self, hidden: int, n_heads: int, dropout: float):
        super().__init__()
        self.attn_norm = nn.LayerNorm(hidden, eps=1e-8)
        self.attn = CausalSelfAttention(hidden, n_heads, dropout)
        self.ffn_norm = nn.LayerNorm(hidden, eps=1e-8)
        self.ffn = nn.Sequential(
            nn.Linear(hidden, hidden), nn.Dropout(dropout), nn.ReLU(), nn.Linear(hidden, hidden), nn.Dropout(dropout)
        )

    def forward(self, x: torch.Tensor, allowed: torch.Tensor, keep: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """``last_only``: compute only the last position's output (all the model reads from its last block)."""
        q = self.attn_norm(x)
        if last_only:
            q, allowed, keep = q[:, -1:], allowed[:, -1:], keep[:, -1:]
        x = q + self.attn(q, x, allowed)
        x = self.ffn_norm(x)
        x = x + self.ffn(x)
        return x * keep


class SASRec(SequentialRecommender):
    def __init__(self, config: SASRecConfig):
        super().__init__(config)
        self.pos_emb = nn.Embedding(config.window, config.hidden)
        self.emb_dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(
            SASRecBlock(config.hidden, config.n_heads, config.dropout) for _ in range(config.n_blocks)
        )
        self.final_norm = nn.LayerNorm(config.hidden, eps=1e-8)

    def encode(self, seqs: torch.Tensor) -> torch.Tensor:
        b, length = seqs.shape
        keep = (seqs != PAD).unsqueeze(-1).to(self.item_emb.weight.dtype)
        positions = torch.arange(length, device=seqs.device)
        x = self.item_emb(seqs) * math.sqrt(self.config.hidden) + self.pos_emb(positions)[None]
        x = self.emb_dropout(x) * keep
        # A query may see earlier real items and itself (so padded rows never attend to nothing).
        causal = torch.ones(length, length, dtype=torch.bool, device=seqs.device).tril()
        allowed = causal[None] & ((seqs != PAD)[:, None, :] | torch.eye(length, dtype=torch.bool, device=seqs.device)[None])
        for i, block in enumerate(self.blocks):
            x = block(x, allowed, keep, last_only=i == len(self.blocks) - 1)
        return self.final_norm(x[:, -1])
