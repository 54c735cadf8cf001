"""Shared pieces of the sequential recommenders: the item id map, model configs, the model base class.

Conventions:
- Item row 0 is padding; the dataset's item ids map to rows 1..N in ascending id order (:class:`ItemIndex`).
- A history is a left-padded row of ``window`` item rows, oldest first: the most recent item is always in the last
  column. Longer histories keep their last ``window`` items.
- Every model maps a padded history to a ``hidden``-sized vector (:meth:`SequentialRecommender.encode`) and scores an
  item by the dot product of that vector with the item's input embedding (shared input/output embeddings), so the
  exported ``item_embeddings`` are exactly the vectors the model ranks with.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np
import torch
from torch import nn

from llara.errors import InputError, require
from llara.recommenders.config import BackboneConfig

if TYPE_CHECKING:  # polars is imported where used: the models and the padding load without it (bench_gpu's device)
    import polars as pl

PAD = 0


class ItemIndex:
    """Bijection between dataset item ids and embedding rows 1..N (row 0 = padding)."""

    def __init__(self, item_ids: Iterable[int], where: str | Path = "item map"):
        ids = np.asarray(list(item_ids), dtype=np.int64)
        require(ids.size > 0, where, "no items")
        require(bool(np.all(np.diff(ids) > 0)), where, "item ids must be unique and sorted ascending")
        self.ids = ids
        self.where = str(where)

    def __len__(self) -> int:
        return int(self.ids.size)

    @classmethod
    def from_items_table(cls, items: pl.DataFrame, where: str | Path) -> "ItemIndex":
        """All items of the item table, sorted by id."""
        import polars as pl

        require("item" in items.columns, where, "missing column 'item'")
        ids = items["item"].cast(pl.Int64)
        require(ids.n_unique() == ids.len(), where, "duplicate item ids")
        return cls(sorted(ids.to_list()), where)

    def to_rows(self, items: Sequence[int] | np.ndarray | torch.Tensor, where: str | Path | None = None) -> np.ndarray:
        """Embedding rows of dataset item ids; an unknown id raises :class:`InputError` naming it."""
        if isinstance(items, torch.Tensor):
            items = items.detach().cpu().numpy()
        arr = np.asarray(items, dtype=np.int64).reshape(-1)
        pos = np.searchsorted(self.ids, arr)
        pos_clipped = np.minimum(pos, self.ids.size - 1)
        unknown = self.ids[pos_clipped] != arr
        if unknown.any():
            raise InputError(where or self.where, f"unknown item id {int(arr[unknown.argmax()])} (not in the item map)")
        return pos + 1

    def frame(self) -> pl.DataFrame:
        """The map as written to ``item_map.parquet``: item (dataset id), index (embedding row)."""
        import polars as pl

        return pl.DataFrame(
            {"item": self.ids, "index": np.arange(1, self.ids.size + 1, dtype=np.int64)},
            schema={"item": pl.Int64, "index": pl.Int64},
        )

    @classmethod
    def from_frame(cls, df: pl.DataFrame, where: str | Path) -> "ItemIndex":
        import polars as pl

        for col in ("item", "index"):
            require(col in df.columns, where, f"missing column '{col}'")
            require(df.schema[col] == pl.Int64, where, f"column '{col}' has type {df.schema[col]}, expected Int64")
        df = df.sort("index")
        expected = np.arange(1, df.height + 1)
        require(bool(np.array_equal(df["index"].to_numpy(), expected)), where, "index must be exactly 1..N (0 is padding)")
        return cls(df["item"].to_list(), where)


def pad_history_column(histories: pl.Series, index: ItemIndex, window: int, where: str | Path) -> torch.Tensor:
    """A list column of dataset-id histories (oldest first) -> left-padded (B, window) LongTensor of embedding rows,
    vectorized (no Python list per row: those took several GiB for the train rows of a 10M-interaction split)."""
    tails = histories.list.tail(window)
    lengths = _nonempty(tails.list.len().fill_null(0).to_numpy().astype(np.int64), where)
    flat = tails.explode()  # no empty list left, so a null is a missing item
    require(flat.null_count() == 0, where, "a history has a missing item")
    return _pad_tails(lengths, flat.to_numpy(), index, window, where)


def pad_histories(histories: Sequence[Sequence[int]], index: ItemIndex, window: int, where: str | Path) -> torch.Tensor:
    """:func:`pad_history_column` of histories given as Python sequences (no polars needed)."""
    tails = [list(h)[-window:] if window else [] for h in histories]
    lengths = np.fromiter((len(t) for t in tails), dtype=np.int64, count=len(tails))
    _nonempty(lengths, where)
    try:
        flat = np.fromiter((i for t in tails for i in t), dtype=np.int64, count=int(lengths.sum()))
    except TypeError:  # None
        raise InputError(where, "a history has a missing item") from None
    return _pad_tails(lengths, flat, index, window, where)


def _nonempty(lengths: np.ndarray, where: str | Path) -> np.ndarray:
    empty = np.flatnonzero(lengths == 0)
    if len(empty):
        raise InputError(where, f"history {empty[0]} is empty (a recommender needs at least one item)")
    return lengths


def _pad_tails(lengths: np.ndarray, flat: np.ndarray, index: ItemIndex, window: int, where: str | Path) -> torch.Tensor:
    """Histories' last ``window`` items, concatenated (``flat``) with their non-zero ``lengths`` -> left-padded rows."""
    rows = index.to_rows(flat, where)
    row_of = np.repeat(np.arange(len(lengths)), lengths)
    starts = np.cumsum(lengths) - lengths
    column = window - lengths[row_of] + (np.arange(len(rows)) - starts[row_of])
    out = np.zeros((len(lengths), window), dtype=np.int64)
    out[row_of, column] = rows
    return torch.from_numpy(out)


class SequentialRecommender(nn.Module):
    """Base class: item embeddings with an explicit zero padding row, dot-product scoring."""

    family: str = ""  # its name in the registry (set by :func:`llara.recommenders.registry.build_model`)

    def __init__(self, config: BackboneConfig):
        super().__init__()
        config.validate()
        self.config = config
        self.item_emb = nn.Embedding(config.n_items + 1, config.hidden, padding_idx=PAD)
        nn.init.normal_(self.item_emb.weight, std=config.hidden**-0.5)
        with torch.no_grad():
            self.item_emb.weight[PAD].zero_()

    def encode(self, seqs: torch.Tensor) -> torch.Tensor:
        """(B, window) left-padded item rows -> (B, hidden) sequence representation."""
        raise NotImplementedError

    def lengths(self, seqs: torch.Tensor) -> torch.Tensor:
        return (seqs != PAD).sum(dim=1)

    def score_all(self, seqs: torch.Tensor) -> torch.Tensor:
        """(B, n_items + 1) scores of every embedding row; column 0 (padding) is meaningless."""
        return self.encode(seqs) @ self.item_emb.weight.T

    def score(self, seqs: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """(B, C) scores of candidate rows."""
        return torch.einsum("bh,bch->bc", self.encode(seqs), self.item_emb(candidates))
