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


def read_examples(path: str | Path) -> list[Example]:
    """Rows of a split parquet (user, history, target, candidates); the target must be among the candidates."""
    import polars as pl

    path = Path(path)
    require(path.is_file(), path, "split file not found (run `dvc repro split`)")
    df = pl.read_parquet(path)
    for col in ("user", "history", "target", "candidates"):
        require(col in df.columns, path, f"missing column '{col}'")
    out = []
    for i, (user, history, target, cands) in enumerate(df.select("user", "history", "target", "candidates").iter_rows()):
        require(len(history) > 0, path, f"row {i}: empty history")
        if target not in cands:
            raise InputError(path, f"row {i}: target {target} is not among the candidates")
        out.append(Example(i, int(user), tuple(history), int(target), tuple(cands)))
    require(len(out) > 0, path, "no rows")
    return out


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
