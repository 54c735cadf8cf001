"""The frozen, CPU recommender the LLM stage consumes (:func:`load_recommender`)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from llara.errors import require
from llara.recommenders.base import ItemIndex, SequentialRecommender, pad_histories
from llara.recommenders.io import EMBEDDINGS_FILE, read_embeddings, read_model_dir

Items = Sequence[int] | torch.Tensor


def _as_lists(rows: Sequence[Sequence[int]] | torch.Tensor) -> list[list[int]]:
    if isinstance(rows, torch.Tensor):
        return rows.tolist()
    return [list(r.tolist() if isinstance(r, torch.Tensor) else r) for r in rows]


class Recommender:
    """A trained sequential recommender addressed by DATASET item ids (not embedding rows).

    Histories are oldest first; only the last ``window`` items are used. All outputs are plain float32 CPU tensors
    computed without gradients (usable as inputs of a trainable projector).
    """

    def __init__(self, model: SequentialRecommender, index: ItemIndex, where: str | Path = "recommender"):
        self.model = model.eval().requires_grad_(False)
        self.index = index
        self.where = str(where)

    @property
    def name(self) -> str:
        return self.model.family

    @property
    def dim(self) -> int:
        return self.model.config.hidden

    @property
    def window(self) -> int:
        return self.model.config.window

    @property
    def items(self) -> torch.Tensor:
        """Dataset ids of all items, in the column order of :meth:`score_all`."""
        return torch.from_numpy(self.index.ids.copy())

    def _rows(self, items: Items) -> torch.Tensor:
        return torch.from_numpy(self.index.to_rows(items, self.where))

    def _histories(self, histories: Sequence[Sequence[int]] | torch.Tensor) -> torch.Tensor:
        return pad_histories(_as_lists(histories), self.index, self.window, self.where)

    @torch.no_grad()
    def item_embeddings(self, items: Items) -> torch.Tensor:
        """(n, dim) embeddings of dataset item ids (the rows the model scores with)."""
        return self.model.item_emb.weight[self._rows(items)].clone()

    @torch.no_grad()
    def encode(self, histories: Sequence[Sequence[int]] | torch.Tensor) -> torch.Tensor:
        """(B, dim) sequence representations."""
        return self.model.encode(self._histories(histories))

    @torch.no_grad()
    def score(self, histories: Sequence[Sequence[int]] | torch.Tensor, candidates: Sequence[Sequence[int]] | torch.Tensor) -> torch.Tensor:
        """(B, C) scores of each row's candidates (higher = more likely next)."""
        histories, candidates = _as_lists(histories), _as_lists(candidates)
        require(len(histories) == len(candidates), self.where, f"{len(histories)} histories but {len(candidates)} candidate lists")
        width = {len(c) for c in candidates}
        require(len(width) <= 1, self.where, f"candidate lists differ in length ({sorted(width)})")
        rows = self._rows([i for c in candidates for i in c]).view(len(candidates), -1)
        return self.model.score(self._histories(histories), rows)

    @torch.no_grad()
    def score_all(self, histories: Sequence[Sequence[int]] | torch.Tensor) -> torch.Tensor:
        """(B, n_items) scores of every item, columns ordered as :attr:`items`."""
        return self.model.score_all(self._histories(histories))[:, 1:]


def score_rows(recommender, histories: Sequence[Sequence[int]], candidates: Sequence[Sequence[int]],
               batch: int = 256) -> np.ndarray:
    """(N, C) float32 array of ``recommender.score`` over many rows, ``batch`` rows at a time (memory stays bounded).
    Any object with the :meth:`Recommender.score` interface will do; its scores may live on any device."""
    require(len(histories) == len(candidates), getattr(recommender, "where", "recommender"),
            f"{len(histories)} histories but {len(candidates)} candidate lists")
    if not len(histories):
        return np.zeros((0, 0), dtype=np.float32)
    with torch.no_grad():
        return np.concatenate([recommender.score(histories[lo:lo + batch], candidates[lo:lo + batch]).float().cpu().numpy()
                               for lo in range(0, len(histories), batch)])


def load_recommender(directory: str | Path) -> Recommender:
    """Load an export directory (``llara export`` / stage ``export``): eval mode, frozen, CPU.

    Raises :class:`~llara.errors.InputError` naming the file when the directory is incomplete or inconsistent
    (e.g. embedding rows that do not match the item map).
    """
    directory = Path(directory)
    model, index, _ = read_model_dir(directory)
    table = read_embeddings(directory, index, model.config.hidden)
    weights = model.item_emb.weight.detach()
    require(
        torch.equal(table[1:], weights[1:]),
        directory / EMBEDDINGS_FILE,
        "rows differ from the item embeddings in model.safetensors",
    )
    return Recommender(model, index, directory)
