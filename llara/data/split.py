"""Sequence splitting with fixed, stored candidate sets.

Protocols:
- ``paper``: the LLaRA MovieLens protocol. Keep rating >= ``min_rating``, order each user's items by time (stable on
  ties), held-out users (the paper's 94 val + 95 test by default, or a seeded 8:1:1 user split) get one row each with
  their final item as target; every position of a train user with >= ``min_history`` history items is a train row.
- ``paper-files``: val/test rows read from the authors' split files, train rebuilt from raw for all other users.
- ``leave-one-out``: each user's last item is test, second-last validation, the rest trains.

Every row stores ``candidates``: the target plus ``n_candidates - 1`` items drawn uniformly from items outside the
user's full interaction history, in a seeded shuffled order.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from llara.atomic import atomic_dir, write_json
from llara.data.ingest import Dataset
from llara.data.schema import SPLIT_SCHEMA, check_schema, read_parquet_checked
from llara.errors import InputError, require

PROTOCOLS = ("paper", "paper-files", "leave-one-out")
PARTS = ("train", "val", "test")


@dataclass(frozen=True)
class SplitConfig:
    """Parameters of a split (all protocols)."""

    protocol: str = "paper"
    seed: int = 42
    history_len: int = 10
    min_history: int = 3
    min_rating: float | None = 3.0
    n_candidates: int = 20
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    heldout_users: str | None = None  # CSV with user_id, split (val/test[, row_index])
    paper_files_dir: str | None = None  # directory with Val_data.parquet / Test_data.parquet
    paper_files_id_offset: int = 1  # dataset item id = file id + offset


@dataclass(frozen=True)
class Split:
    """Train/val/test rows: user, history (oldest first), target, candidates."""

    train: pl.DataFrame
    val: pl.DataFrame
    test: pl.DataFrame
    meta: dict

    def part(self, name: str) -> pl.DataFrame:
        return {"train": self.train, "val": self.val, "test": self.test}[name]


def user_sequences(interactions: pl.DataFrame, min_rating: float | None) -> dict[int, list[int]]:
    """Each user's items ordered by timestamp; ties keep the source order."""
    df = interactions.with_row_index("_row")
    if min_rating is not None:
        df = df.filter(pl.col("rating") >= min_rating)
    grouped = (
        df.sort(["user", "timestamp", "_row"])
        .group_by("user", maintain_order=True)
        .agg(pl.col("item"))
    )
    return dict(zip(grouped["user"].to_list(), grouped["item"].to_list()))


def _rows(user: int, seq: list[int], positions, history_len: int, min_history: int) -> list[tuple]:
    out = []
    for t in positions:
        history = seq[max(0, t - history_len) : t]
        if len(history) >= min_history:
            out.append((user, history, seq[t]))
    return out


def read_heldout(path: str | Path) -> dict[int, str]:
    """Read a held-out users CSV (columns user_id, split with values val/test)."""
    path = Path(path)
    require(path.is_file(), path, "file not found")
    try:
        df = pl.read_csv(path, infer_schema=False)
    except Exception as exc:
        raise InputError(path, f"cannot read CSV ({type(exc).__name__})") from None
    for col in ("user_id", "split"):
        require(col in df.columns, path, f"missing column '{col}'")
    users = df["user_id"].cast(pl.Int64, strict=False)
    if users.null_count():
        raise InputError(path, f"row {int(users.is_null().arg_true()[0]) + 2}: user_id is not an integer")
    bad = ~df["split"].is_in(["val", "test"])
    if bad.any():
        raise InputError(path, f"row {int(bad.arg_true()[0]) + 2}: split must be 'val' or 'test'")
    require(users.n_unique() == users.len(), path, "a user is listed twice")
    return dict(zip(users.to_list(), df["split"].to_list()))


def seeded_user_split(users: list[int], config: SplitConfig) -> dict[int, str]:
    """Seeded val/test user assignment (default 8:1:1)."""
    rng = np.random.default_rng([config.seed, 7])
    order = [users[i] for i in rng.permutation(len(users))]
    n_val = max(1, round(config.val_fraction * len(users)))
    n_test = max(1, round(config.test_fraction * len(users)))
    require(n_val + n_test < len(users), "split", f"only {len(users)} users: too few for a train/val/test user split")
    return {u: "val" for u in order[:n_val]} | {u: "test" for u in order[n_val : n_val + n_test]}


def _heldout_rows(seqs: dict[int, list[int]], heldout: dict[int, str], config: SplitConfig, source: str):
    parts: dict[str, list[tuple]] = {"val": [], "test": []}
    for user, part in sorted(heldout.items(), key=lambda kv: kv[0]):
        seq = seqs.get(user)
        require(seq is not None, source, f"held-out user {user} has no interactions with rating >= {config.min_rating}")
        require(len(seq) >= 2, source, f"held-out user {user} has fewer than 2 interactions")
        parts[part] += _rows(user, seq, [len(seq) - 1], config.history_len, 1)
    return parts


def split_paper(seqs: dict[int, list[int]], config: SplitConfig) -> tuple[dict[str, list[tuple]], dict]:
    if config.heldout_users:
        heldout = read_heldout(config.heldout_users)
        how = f"held-out users from {config.heldout_users}"
    else:
        heldout = seeded_user_split(sorted(seqs), config)
        how = "seeded user split"
    parts = _heldout_rows(seqs, heldout, config, config.heldout_users or "split")
    parts["train"] = [
        row
        for user in sorted(seqs)
        if user not in heldout
        for row in _rows(user, seqs[user], range(len(seqs[user])), config.history_len, config.min_history)
    ]
    return parts, {"heldout": how}


def read_paper_files(directory: str | Path, heldout_csv: str | Path, config: SplitConfig) -> dict[str, list[tuple]]:
    """Val/test rows from the authors' files (columns history, next_item, len_seq), users from ``heldout_csv``."""
    directory = Path(directory)
    heldout = pl.read_csv(heldout_csv, infer_schema=False)
    require("row_index" in heldout.columns, heldout_csv, "missing column 'row_index' (needed to map file rows to users)")
    parts: dict[str, list[tuple]] = {}
    for part, name in (("val", "Val_data.parquet"), ("test", "Test_data.parquet")):
        path = directory / name
        df = read_parquet_any(path, ["history", "next_item", "len_seq"])
        users = heldout.filter(pl.col("split") == part).with_columns(pl.col("row_index").cast(pl.Int64)).sort("row_index")
        require(users.height == df.height, heldout_csv, f"{users.height} {part} users listed but {path} has {df.height} rows")
        rows = []
        for user, (history, target, length) in zip(
            users["user_id"].cast(pl.Int64).to_list(), df.select("history", "next_item", "len_seq").iter_rows()
        ):
            items = [int(i) + config.paper_files_id_offset for i in history[: int(length)]]
            rows.append((user, items[-config.history_len :], int(target) + config.paper_files_id_offset))
        parts[part] = rows
    return parts


def read_parquet_any(path: Path, columns: list[str]) -> pl.DataFrame:
    require(path.is_file(), path, "file not found")
    try:
        df = pl.read_parquet(path)
    except Exception as exc:
        raise InputError(path, f"cannot read parquet ({type(exc).__name__})") from None
    missing = [c for c in columns if c not in df.columns]
    require(not missing, path, f"missing column(s) {missing}")
    return df


def split_paper_files(seqs: dict[int, list[int]], config: SplitConfig) -> tuple[dict[str, list[tuple]], dict]:
    require(config.paper_files_dir is not None, "params.yaml", "split.paper_files_dir must be set for 'paper-files'")
    require(config.heldout_users is not None, "params.yaml", "split.heldout_users must be set for 'paper-files'")
    parts = read_paper_files(config.paper_files_dir, config.heldout_users, config)
    heldout = {row[0] for part in parts.values() for row in part}
    parts["train"] = [
        row
        for user in sorted(seqs)
        if user not in heldout
        for row in _rows(user, seqs[user], range(len(seqs[user])), config.history_len, config.min_history)
    ]
    return parts, {"heldout": f"rows from {config.paper_files_dir}"}


def split_leave_one_out(seqs: dict[int, list[int]], config: SplitConfig) -> tuple[dict[str, list[tuple]], dict]:
    parts: dict[str, list[tuple]] = {"train": [], "val": [], "test": []}
    dropped = 0
    for user in sorted(seqs):
        seq = seqs[user]
        if len(seq) < 3:
            dropped += 1
            continue
        n = len(seq)
        parts["test"] += _rows(user, seq, [n - 1], config.history_len, 1)
        parts["val"] += _rows(user, seq, [n - 2], config.history_len, 1)
        parts["train"] += _rows(user, seq, range(n - 2), config.history_len, config.min_history)
    return parts, {"users_dropped_fewer_than_3": dropped}


def draw_candidates(
    rows: list[tuple], full_history: dict[int, set[int]], pool: np.ndarray, n_candidates: int, rng: np.random.Generator
) -> list[list[int]]:
    """Target + (n-1) uniform draws from ``pool`` outside the user's full history, shuffled."""
    pool_set = set(pool.tolist())
    out = []
    for user, _history, target in rows:
        seen = full_history[user]
        available = len(pool_set - seen)
        if available < n_candidates - 1:
            raise InputError("split", f"user {user}: only {available} unseen items, need {n_candidates - 1} negatives")
        negatives: list[int] = []
        chosen: set[int] = set()
        while len(negatives) < n_candidates - 1:
            for item in pool[rng.integers(0, len(pool), size=2 * n_candidates)].tolist():
                if item not in seen and item not in chosen and item != target:
                    chosen.add(item)
                    negatives.append(item)
                    if len(negatives) == n_candidates - 1:
                        break
        candidates = [target] + negatives
        out.append([candidates[i] for i in rng.permutation(n_candidates)])
    return out


def _frame(rows: list[tuple], candidates: list[list[int]]) -> pl.DataFrame:
    df = pl.DataFrame(
        {
            "user": [r[0] for r in rows],
            "history": [list(r[1]) for r in rows],
            "target": [r[2] for r in rows],
            "candidates": candidates,
        },
        schema=SPLIT_SCHEMA,
    )
    return check_schema(df, SPLIT_SCHEMA, "split")


def validate_config(config: SplitConfig) -> None:
    require(config.protocol in PROTOCOLS, "split.protocol", f"unknown protocol {config.protocol!r}; use one of {PROTOCOLS}")
    require(config.n_candidates >= 2, "split.n_candidates", f"must be >= 2, got {config.n_candidates}")
    require(config.history_len >= 1, "split.history_len", f"must be >= 1, got {config.history_len}")
    require(config.min_history >= 1, "split.min_history", f"must be >= 1, got {config.min_history}")


def make_split(dataset: Dataset, config: SplitConfig) -> Split:
    """Split a normalized dataset by ``config.protocol`` and draw the stored candidate sets."""
    validate_config(config)
    n_items = dataset.items.height
    require(
        config.n_candidates <= n_items,
        "split.n_candidates",
        f"{config.n_candidates} candidates but the item table has only {n_items} items",
    )
    seqs = user_sequences(dataset.interactions, config.min_rating)
    require(len(seqs) >= 3, "split", f"only {len(seqs)} users left after filtering: too few to split")
    splitter = {"paper": split_paper, "paper-files": split_paper_files, "leave-one-out": split_leave_one_out}
    parts, info = splitter[config.protocol](seqs, config)
    for part in PARTS:
        require(len(parts[part]) > 0, "split", f"the '{part}' part is empty: dataset too small for this protocol")
    full = dataset.interactions.group_by("user").agg(pl.col("item"))
    full_history = {u: set(items) for u, items in zip(full["user"].to_list(), full["item"].to_list())}
    pool = np.asarray(sorted(dataset.items["item"].to_list()), dtype=np.int64)
    frames = {}
    for index, part in enumerate(PARTS):
        rng = np.random.default_rng([config.seed, index])
        frames[part] = _frame(parts[part], draw_candidates(parts[part], full_history, pool, config.n_candidates, rng))
    meta = {
        "protocol": config.protocol,
        "config": {k: v for k, v in config.__dict__.items()},
        "rows": {p: frames[p].height for p in PARTS},
        "users": {p: frames[p]["user"].n_unique() for p in PARTS},
        "n_items": n_items,
        **info,
    }
    return Split(frames["train"], frames["val"], frames["test"], meta)


def write_split(split: Split, out_dir: str | Path) -> Path:
    """Write train/val/test parquet and meta.json atomically."""
    with atomic_dir(out_dir) as tmp:
        for part in PARTS:
            split.part(part).write_parquet(tmp / f"{part}.parquet", compression="zstd", statistics=False)
        write_json(split.meta, tmp / "meta.json")
    return Path(out_dir)


def read_split(directory: str | Path) -> Split:
    """Read a split artifact, checking schemas."""
    import json

    directory = Path(directory)
    frames = {p: read_parquet_checked(directory / f"{p}.parquet", SPLIT_SCHEMA) for p in PARTS}
    meta_path = directory / "meta.json"
    require(meta_path.is_file(), meta_path, "file not found")
    return Split(frames["train"], frames["val"], frames["test"], json.loads(meta_path.read_text()))
