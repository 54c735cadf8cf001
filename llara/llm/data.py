"""Examples (split rows) and their collation into left-padded token batches."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from llara.errors import InputError, require
from llara.llm.prompts import EncodedPrompt, PromptEncoder

IGNORE = -100


@dataclass(frozen=True)
class Example:
    row: int
    user: int
    history: tuple[int, ...]
    target: int
    candidates: tuple[int, ...]

    @property
    def target_index(self) -> int:
        return self.candidates.index(self.target)


class ExampleTable(Sequence[Example]):
    """Split rows held as flat int64 arrays; an :class:`Example` is built when a row is read (``table[i]``; a slice
    gives a list). As Python tuples the train rows of a 10M-interaction split would take several GB and a minute to
    build, while fine-tuning reads only ``steps x batch_size`` of them."""

    def __init__(self, users: np.ndarray, targets: np.ndarray, history: tuple[np.ndarray, np.ndarray],
                 candidates: tuple[np.ndarray, np.ndarray]):
        self.users, self.targets = users, targets
        (self._history, self._history_at), (self._candidates, self._candidates_at) = history, candidates

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        i = index % len(self)
        history = self._history[self._history_at[i]:self._history_at[i + 1]]
        candidates = self._candidates[self._candidates_at[i]:self._candidates_at[i + 1]]
        return Example(i, int(self.users[i]), tuple(history.tolist()), int(self.targets[i]),
                       tuple(candidates.tolist()))


def _int_lists(column, path: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(values, offsets) of a list-of-integers column; a missing list or element is an input error."""
    import pyarrow as pa
    import pyarrow.compute as pc

    array = column.to_arrow()
    array = array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array
    if array.null_count:
        raise InputError(path, f"row {pc.index(array.is_null(), True).as_py()}: missing {name}")
    lengths = pc.list_value_length(array).to_numpy(zero_copy_only=False).astype(np.int64)
    values = pc.list_flatten(array)
    if values.null_count:
        at = int(np.searchsorted(np.cumsum(lengths), pc.index(values.is_null(), True).as_py(), side="right"))
        raise InputError(path, f"row {at}: missing item in {name}")
    return np.asarray(values.to_numpy(zero_copy_only=False), dtype=np.int64), np.concatenate([[0], np.cumsum(lengths)])


def read_examples(path: str | Path) -> ExampleTable:
    """Rows of a split parquet (user, history, target, candidates), checked at once: a non-empty history, the target
    among the candidates."""
    import polars as pl

    path = Path(path)
    require(path.is_file(), path, "split file not found (run `dvc repro split`)")
    columns = ["user", "history", "target", "candidates"]
    present = pl.read_parquet_schema(path)
    for col in columns:
        require(col in present, path, f"missing column '{col}'")
    df = pl.read_parquet(path, columns=columns)
    require(df.height > 0, path, "no rows")
    for col in ("user", "target"):
        if df[col].null_count():
            raise InputError(path, f"row {df[col].is_null().arg_max()}: missing {col}")
    history, history_at = _int_lists(df["history"], path, "history")
    empty = np.flatnonzero(np.diff(history_at) == 0)
    if len(empty):
        raise InputError(path, f"row {empty[0]}: empty history")
    candidates, candidates_at = _int_lists(df["candidates"], path, "candidates")
    targets = np.asarray(df["target"].to_numpy(), dtype=np.int64)
    widths = np.diff(candidates_at)
    if widths[0] > 0 and (widths == widths[0]).all():  # the usual case: as many candidates in every row
        found = (candidates.reshape(df.height, -1) == targets[:, None]).any(axis=1)
    else:
        row_of = np.repeat(np.arange(df.height), widths)
        found = np.zeros(df.height, dtype=bool)
        found[row_of[candidates == targets[row_of]]] = True
    if not found.all():
        i = int(np.flatnonzero(~found)[0])
        raise InputError(path, f"row {i}: target {targets[i]} is not among the candidates")
    return ExampleTable(np.asarray(df["user"].to_numpy(), dtype=np.int64), targets, (history, history_at),
                        (candidates, candidates_at))


def read_titles(items_path: str | Path) -> dict[int, str]:
    import polars as pl  # here, not at import: the model code runs where polars is not installed (bench_gpu)

    path = Path(items_path)
    require(path.is_file(), path, "item table not found (run `dvc repro ingest`)")
    df = pl.read_parquet(path)
    for col in ("item", "title"):
        require(col in df.columns, path, f"missing column '{col}'")
    return dict(zip(df["item"].to_list(), df["title"].to_list()))


@dataclass
class Batch:
    input_ids: torch.Tensor  # (B, L) left-padded
    attention_mask: torch.Tensor  # (B, L)
    position_ids: torch.Tensor  # (B, L)
    anchors: torch.Tensor  # (B, C) position of each candidate's last prompt token
    target_index: torch.Tensor  # (B,)
    labels: torch.Tensor | None  # (B, L): answer tokens, IGNORE elsewhere
    prompts: list[EncodedPrompt]
    examples: list[Example]

    @property
    def placeholder_rows(self) -> list[int]:
        return [i for i, p in enumerate(self.prompts) if p.mode != "text"]

    @property
    def history_items(self) -> list[int]:
        return [item for p in self.prompts for item in p.history_items]


def left_pad(seqs: Sequence[Sequence[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[int]]:
    """(ids, attention mask, position ids, left offsets) of left-padded sequences."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    offsets = []
    for i, s in enumerate(seqs):
        off = width - len(s)
        ids[i, off:] = torch.tensor(list(s), dtype=torch.long)
        mask[i, off:] = 1
        offsets.append(off)
    positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
    return ids, mask, positions, offsets


def collate(encoder: PromptEncoder, examples: Sequence[Example], modes: Sequence[str], templates: Sequence[int],
            with_answer: bool, pad_id: int) -> Batch:
    prompts = [encoder.encode(e.history, e.candidates, m, t) for e, m, t in zip(examples, modes, templates)]
    seqs, answers = [], []
    for e, p in zip(examples, prompts):
        answer = encoder.answer_ids(e.target) if with_answer else []
        seqs.append(p.input_ids + answer)
        answers.append(len(answer))
    ids, mask, positions, offsets = left_pad(seqs, pad_id)
    anchors = torch.tensor([[a + off for a in p.anchors] for p, off in zip(prompts, offsets)], dtype=torch.long)
    labels = None
    if with_answer:
        labels = torch.full_like(ids, IGNORE)
        for i, n in enumerate(answers):
            labels[i, ids.shape[1] - n:] = ids[i, ids.shape[1] - n:]
    target_index = torch.tensor([e.target_index for e in examples], dtype=torch.long)
    return Batch(ids, mask, positions, anchors, target_index, labels, prompts, list(examples))


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The seeded permutation of examples for one epoch (a pure function: no state to carry across resumes)."""
    return np.random.default_rng([seed, 104729, epoch]).permutation(n)


def step_indices(n: int, seed: int, step: int, batch_size: int) -> list[int]:
    """Example indices of optimizer step ``step`` (1-based): consecutive slices of per-epoch permutations."""
    start = (step - 1) * batch_size
    out = []
    while len(out) < batch_size:
        pos = start + len(out)
        epoch, offset = divmod(pos, n)
        order = epoch_order(n, seed, epoch)
        take = min(batch_size - len(out), n - offset)
        out.extend(int(i) for i in order[offset:offset + take])
    return out
