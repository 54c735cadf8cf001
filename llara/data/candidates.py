"""Candidate sets: the target plus items drawn uniformly from the item pool outside the user's full interaction
history, in a seeded shuffled order. Vectorized (rejection sampling over chunks of rows); the draws depend only on the
rows, the seed and :data:`DRAW_CHUNK`, never on how the caller batches its rows beyond that."""

from __future__ import annotations

import numpy as np
import polars as pl

from llara.errors import InputError

DRAW_CHUNK = 100_000  # rows per vectorized candidate draw (bounds memory; fixed so results never depend on it)


class HistoryIndex:
    """Each user's full interaction history as sorted ``user_code * n_pool + item_code`` keys (vectorized lookups)."""

    def __init__(self, interactions: pl.DataFrame, pool: np.ndarray):
        self.pool = pool
        self.users = np.unique(interactions["user"].to_numpy())
        items = interactions["item"].to_numpy()
        item_codes = np.searchsorted(pool, items).clip(0, len(pool) - 1)
        in_pool = pool[item_codes] == items
        user_codes = np.searchsorted(self.users, interactions["user"].to_numpy())
        self.keys = np.unique(user_codes[in_pool] * len(pool) + item_codes[in_pool])
        self.unseen = len(pool) - np.bincount(self.keys // len(pool), minlength=len(self.users))

    def codes(self, users: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.users, users)

    def seen(self, user_codes: np.ndarray, item_codes: np.ndarray) -> np.ndarray:
        keys = user_codes * len(self.pool) + item_codes
        at = np.searchsorted(self.keys, keys).clip(0, max(len(self.keys) - 1, 0))
        return self.keys[at] == keys if len(self.keys) else np.zeros(keys.shape, dtype=bool)


def _first_occurrences(values: np.ndarray) -> np.ndarray:
    """Per row, True where a value appears for the first time in that row."""
    order = np.argsort(values, axis=1, kind="stable")
    ordered = np.take_along_axis(values, order, axis=1)
    repeat = np.zeros(values.shape, dtype=bool)
    repeat[:, 1:] = ordered[:, 1:] == ordered[:, :-1]
    first = np.empty_like(repeat)
    np.put_along_axis(first, order, ~repeat, axis=1)
    return first


def draw_candidates(
    rows: pl.DataFrame, index: HistoryIndex, n_candidates: int, rng: np.random.Generator, where: str = "split"
) -> np.ndarray:
    """Target + (n-1) uniform draws from the item pool outside the user's full history, shuffled (rows x n)."""
    users, targets = rows["user"].to_numpy(), rows["target"].to_numpy()
    codes = index.codes(users)
    short = index.unseen[codes] < n_candidates - 1
    if short.any():
        at = int(np.argmax(short))
        raise InputError(
            where, f"user {users[at]}: only {index.unseen[codes[at]]} unseen items, need {n_candidates - 1} negatives"
        )
    pool, need = index.pool, n_candidates - 1
    out = np.empty((len(rows), n_candidates), dtype=np.int64)
    for start in range(0, len(rows), DRAW_CHUNK):
        u, t = codes[start : start + DRAW_CHUNK], targets[start : start + DRAW_CHUNK]
        negatives = np.empty((len(u), need), dtype=np.int64)
        todo = np.arange(len(u))
        while todo.size:  # rejection sampling; rows short of valid draws redraw (rare: heavy users)
            draws = rng.integers(0, len(pool), size=(todo.size, 3 * n_candidates))
            ok = ~index.seen(u[todo, None], draws) & (pool[draws] != t[todo, None]) & _first_occurrences(draws)
            filled = ok.sum(axis=1) >= need
            rows_ok, picks = todo[filled], ok[filled] & (np.cumsum(ok[filled], axis=1) <= need)
            negatives[rows_ok] = pool[draws[filled][picks]].reshape(-1, need)
            todo = todo[~filled]
        candidates = np.concatenate([t[:, None], negatives], axis=1)
        order = np.argsort(rng.random(candidates.shape), axis=1)
        out[start : start + len(u)] = np.take_along_axis(candidates, order, axis=1)
    return out
