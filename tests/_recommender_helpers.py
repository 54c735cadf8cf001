"""The tiny synthetic split the recommender tests share: learnable 'next id' chains over dataset ids 101..130."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl

from llara.data.schema import SPLIT_SCHEMA
from llara.recommenders.base import ItemIndex
from llara.recommenders.evaluation import sequence_data

N_ITEMS = 30
WINDOW = 5
ITEM_IDS = list(range(101, 101 + N_ITEMS))  # dataset ids deliberately not 1..N


def _sequence(rng: np.random.Generator, length: int) -> list[int]:
    """Mostly 'next id' chains (learnable), with some noise."""
    pos = int(rng.integers(N_ITEMS))
    out = []
    for _ in range(length):
        out.append(ITEM_IDS[pos])
        pos = (pos + 1) % N_ITEMS if rng.random() < 0.85 else int(rng.integers(N_ITEMS))
    return out


def make_fixture(root: Path, n_users: int = 48, seed: int = 0) -> tuple[Path, Path]:
    """items.parquet + a split directory (train/val/test.parquet, meta.json) with 5 stored candidates per row."""
    rng = np.random.default_rng(seed)
    items = pl.DataFrame({"item": ITEM_IDS, "title": [f"Item {i}" for i in ITEM_IDS], "raw_title": [f"Item {i}" for i in ITEM_IDS]})
    items_path = root / "items.parquet"
    root.mkdir(parents=True, exist_ok=True)
    items.write_parquet(items_path)
    parts: dict[str, list] = {"train": [], "val": [], "test": []}
    for user in range(1, n_users + 1):
        seq = _sequence(rng, 12)
        part = "train" if user <= n_users - 12 else ("val" if user <= n_users - 6 else "test")
        positions = range(2, len(seq)) if part == "train" else [len(seq) - 1]
        for t in positions:
            target = seq[t]
            negatives = [i for i in rng.permutation(ITEM_IDS).tolist() if i not in seq][:4]
            candidates = [target, *negatives]
            parts[part].append((user, seq[max(0, t - WINDOW) : t], target, [candidates[i] for i in rng.permutation(5)]))
    split = root / "split"
    split.mkdir()
    for part, rows in parts.items():
        pl.DataFrame(
            {"user": [r[0] for r in rows], "history": [r[1] for r in rows], "target": [r[2] for r in rows],
             "candidates": [r[3] for r in rows]},
            schema=SPLIT_SCHEMA,
        ).write_parquet(split / f"{part}.parquet")
    (split / "meta.json").write_text(json.dumps({"protocol": "synthetic"}))
    return items_path, split


def tiny_config(family: str, **overrides) -> dict:
    return {"n_items": N_ITEMS, "hidden": 16, "window": WINDOW, "dropout": 0.1, **overrides}


def load_data(items_path: Path, split: Path, part: str):
    index = ItemIndex.from_items_table(pl.read_parquet(items_path), items_path)
    return index, sequence_data(pl.read_parquet(split / f"{part}.parquet"), index, WINDOW, part)


FAST = dict(epochs=6, batch_size=32, lr=0.01, patience=10, num_threads=1)
