"""Sequence splitting with fixed, stored candidate sets.

Protocols:
- ``paper``: the LLaRA MovieLens protocol. Keep rating >= ``min_rating``, order each user's items by time (stable on
  ties), held-out users (the paper's 94 val + 95 test by default, or a seeded 8:1:1 user split) get one row each with
  their final item as target; every position of a train user with >= ``min_history`` history items is a train row.
- ``paper-files``: val/test rows read from the authors' split files, train rebuilt from raw for all other users.
- ``leave-one-out``: each user's last item is test, second-last validation, the rest trains.

Every row stores ``candidates``: the target plus ``n_candidates - 1`` items drawn uniformly from items outside the
user's full interaction history, in a seeded shuffled order (:mod:`llara.data.candidates`).

Memory: rows are planned from a light table (user, position, index into one array of all items in sequence order);
histories and candidates are built and written ``STREAM_ROWS`` rows at a time (:func:`split_to_dir`), so the derived
rows (~400 bytes each) never sit in memory together. The output does not depend on the chunk size.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import polars as pl
import pyarrow as pa

from llara.data.candidates import DRAW_CHUNK, HistoryIndex, draw_candidates
from llara.data.heldout import read_heldout, read_paper_files
from llara.data.idmap import IdMaps
from llara.data.ingest import Dataset, check_references
from llara.data.schema import SPLIT_SCHEMA, check_schema
from llara.data.split_files import PARTS, Split, write_parts
from llara.errors import InputError, require, require_config, require_range

PROTOCOLS = ("paper", "paper-files", "leave-one-out")


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

    def validate(self) -> None:
        """Range checks; a :class:`~llara.errors.ConfigError` names the field."""
        require_config(self.protocol in PROTOCOLS, "protocol", f"unknown protocol {self.protocol!r}; use one of {PROTOCOLS}")
        require_range("seed", self.seed, 0)
        require_range("history_len", self.history_len, 1, 200)
        require_range("min_history", self.min_history, 1, self.history_len)
        require_range("n_candidates", self.n_candidates, 2, 1000)
        require_range("val_fraction", self.val_fraction, 0, 0.5, low_open=True, high_open=True)
        require_range("test_fraction", self.test_fraction, 0, 0.5, low_open=True, high_open=True)
        if self.protocol == "paper-files":
            require_config(self.paper_files_dir is not None, "paper_files_dir", "must be set for 'paper-files'")
            require_config(self.heldout_users is not None, "heldout_users", "must be set for 'paper-files'")


ROW_COLUMNS = ["user", "history", "target"]
PLAN_COLUMNS = ["user", "g", "pos", "target"]  # a planned row: its target is items[g], its history items[g-k:g]
STREAM_ROWS = 5 * DRAW_CHUNK  # rows built and written at a time (a multiple of DRAW_CHUNK: same draws as one pass)


@dataclass(frozen=True)
class Sequences:
    """Every user's time-ordered items in one array, and one row per position: user, pos (0-based), n (sequence
    length), g (the position's index into ``items``) and target (``items[g]``)."""

    items: np.ndarray
    positions: pl.DataFrame

    def histories(self, rows: pl.DataFrame, history_len: int) -> pl.Series:
        """The up to ``history_len`` items before each planned row's target, oldest first."""
        g, pos = rows["g"].to_numpy(), rows["pos"].to_numpy()
        k = np.minimum(pos, history_len)
        offsets = np.zeros(len(k) + 1, dtype=np.int64)
        np.cumsum(k, out=offsets[1:])
        within = np.arange(offsets[-1]) - np.repeat(offsets[:-1], k)
        values = self.items[np.repeat(g - k, k) + within]
        lists = pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(values, pa.int64()))
        return pl.Series("history", lists, dtype=pl.List(pl.Int64))


def user_sequences(interactions: pl.DataFrame, min_rating: float | None) -> Sequences:
    """Keep rating >= ``min_rating``; order each user's items by time (ties keep the source order)."""
    lf = interactions.lazy().with_row_index("_row")
    if min_rating is not None:
        lf = lf.filter(pl.col("rating") >= min_rating)
    ordered = lf.sort(["user", "timestamp", "_row"]).select("user", "item").collect()
    positions = ordered.with_columns(
        g=pl.int_range(pl.len(), dtype=pl.Int64), pos=pl.int_range(pl.len()).over("user"), n=pl.len().over("user")
    ).select("user", "pos", "n", "g", pl.col("item").alias("target"))
    return Sequences(ordered["item"].to_numpy(), positions)


def sequence_positions(interactions: pl.DataFrame, min_rating: float | None, history_len: int) -> pl.DataFrame:
    """One row per position of each user's sequence with its history (all in memory: for inspection and tests)."""
    seqs = user_sequences(interactions, min_rating)
    return seqs.positions.with_columns(seqs.histories(seqs.positions, history_len)).select(
        "user", "pos", "n", "history", "target")


def seeded_user_split(users: list[int], config: SplitConfig, where: str = "split") -> dict[int, str]:
    """Seeded val/test user assignment (default 8:1:1)."""
    rng = np.random.default_rng([config.seed, 7])
    order = [users[i] for i in rng.permutation(len(users))]
    n_val = max(1, round(config.val_fraction * len(users)))
    n_test = max(1, round(config.test_fraction * len(users)))
    require(
        n_val + n_test < len(users), where, f"only {len(users)} users with >= 2 interactions: too few for a user split"
    )
    return {u: "val" for u in order[:n_val]} | {u: "test" for u in order[n_val : n_val + n_test]}


def _train_rows(positions: pl.DataFrame, heldout: list[int], config: SplitConfig) -> tuple[pl.DataFrame, int]:
    """Rows of every non-held-out user with >= min_history history items, and how many such users have none."""
    candidates = positions.filter(~pl.col("user").is_in(heldout))
    train = candidates.filter(pl.col("pos") >= config.min_history)
    return train.select(PLAN_COLUMNS), candidates["user"].n_unique() - train["user"].n_unique()


def split_paper(positions: pl.DataFrame, config: SplitConfig, where: str = "split", ids: IdMaps | None = None
                ) -> tuple[dict[str, pl.DataFrame], dict]:
    lengths = positions.group_by("user").agg(pl.col("n").first())
    if config.heldout_users:
        heldout = read_heldout(config.heldout_users, ids.users if ids is not None else None)
        how = f"held-out users from {config.heldout_users}"
    else:
        eligible = lengths.filter(pl.col("n") >= 2)["user"].sort().to_list()  # a held-out row needs a history
        heldout = seeded_user_split(eligible, config, where)
        how = "seeded user split"
    source = config.heldout_users or where
    held = pl.DataFrame({"user": list(heldout), "part": list(heldout.values())}, schema={"user": pl.Int64, "part": pl.String})
    held = held.join(lengths, on="user", how="left").sort("user")
    missing = held.filter(pl.col("n").is_null())
    require(missing.height == 0, source, f"held-out user {missing['user'][0] if missing.height else ''} has no interactions with rating >= {config.min_rating}")
    short = held.filter(pl.col("n") < 2)
    require(short.height == 0, source, f"held-out user {short['user'][0] if short.height else ''} has fewer than 2 interactions")
    last = positions.filter(pl.col("pos") == pl.col("n") - 1).join(held.select("user", "part"), on="user").sort("user")
    parts = {p: last.filter(pl.col("part") == p).select(PLAN_COLUMNS) for p in ("val", "test")}
    parts["train"], without = _train_rows(positions, list(heldout), config)
    return parts, {"heldout": how, "train_users_without_rows": without}


def _rows_frame(rows: list[tuple]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema={"user": pl.Int64, "history": pl.List(pl.Int64), "target": pl.Int64}, orient="row")


def split_paper_files(
    positions: pl.DataFrame, config: SplitConfig, where: str = "split", ids: IdMaps | None = None
) -> tuple[dict[str, pl.DataFrame], dict]:
    rows = read_paper_files(
        config.paper_files_dir, config.heldout_users, history_len=config.history_len,
        id_offset=config.paper_files_id_offset, ids=ids,
    )
    parts = {part: _rows_frame(part_rows) for part, part_rows in rows.items()}
    heldout = [row[0] for part_rows in rows.values() for row in part_rows]
    parts["train"], without = _train_rows(positions, heldout, config)
    return parts, {"heldout": f"rows from {config.paper_files_dir}", "train_users_without_rows": without}


def split_leave_one_out(
    positions: pl.DataFrame, config: SplitConfig, where: str = "split", ids: IdMaps | None = None
) -> tuple[dict[str, pl.DataFrame], dict]:
    eligible = positions.filter(pl.col("n") >= 3)
    parts = {
        "train": eligible.filter((pl.col("pos") < pl.col("n") - 2) & (pl.col("pos") >= config.min_history)),
        "val": eligible.filter(pl.col("pos") == pl.col("n") - 2),
        "test": eligible.filter(pl.col("pos") == pl.col("n") - 1),
    }
    dropped = positions["user"].n_unique() - eligible["user"].n_unique()
    return {p: df.select(PLAN_COLUMNS) for p, df in parts.items()}, {"users_dropped_fewer_than_3": dropped}


def _frame(rows: pl.DataFrame, candidates: np.ndarray) -> pl.DataFrame:
    column = pl.Series("candidates", candidates).cast(pl.List(pl.Int64)) if len(rows) else pl.Series(
        "candidates", [], dtype=pl.List(pl.Int64)
    )
    return check_schema(rows.select(ROW_COLUMNS).with_columns(column), SPLIT_SCHEMA, "split")


def data_location(dataset: Dataset) -> str:
    """The file to name in errors about the data itself."""
    path = Path(dataset.source)
    return str(path / "interactions.parquet") if path.is_dir() else dataset.source


def _check_rows(parts: dict[str, pl.DataFrame], index: HistoryIndex, where: str) -> None:
    """Rows read from files: every row's user has interactions and every history item and target is in the item
    table. (Rows derived from the interactions need only ingest's ``check_references``.)"""
    for part, df in parts.items():
        no_user = df.filter(~pl.col("user").is_in(index.users))
        require(no_user.height == 0, where, f"{part} user {no_user['user'][0] if no_user.height else ''} has no interactions in the dataset")
        items = df.select("user", pl.concat_list("history", "target").alias("item")).explode("item")
        unknown = items.filter(~pl.col("item").is_in(index.pool))
        if unknown.height:
            raise InputError(where, f"{part} row of user {unknown['user'][0]}: item {unknown['item'][0]} is not in the item table")


@dataclass(frozen=True)
class SplitPlan:
    """Each part's planned rows (``PLAN_COLUMNS``; rows read from files: ``ROW_COLUMNS``), ready to be built."""

    config: SplitConfig
    sequences: Sequences
    parts: dict[str, pl.DataFrame]
    index: HistoryIndex
    meta: dict
    where: str

    def frames(self, part: str) -> Iterator[pl.DataFrame]:
        """The part's finished rows (with history and candidates) in order, ``STREAM_ROWS`` at a time."""
        rows = self.parts[part]
        rng = np.random.default_rng([self.config.seed, PARTS.index(part)])
        for start in range(0, max(rows.height, 1), STREAM_ROWS):
            chunk = rows.slice(start, STREAM_ROWS)
            if "history" not in chunk.columns:
                chunk = chunk.with_columns(self.sequences.histories(chunk, self.config.history_len))
            yield _frame(chunk, draw_candidates(chunk, self.index, self.config.n_candidates, rng, self.where))


def plan_split(dataset: Dataset, config: SplitConfig) -> SplitPlan:
    """Validate, split ``dataset`` by ``config.protocol`` and plan every part's rows (nothing built yet)."""
    config.validate()
    where = data_location(dataset)
    n_items = dataset.items.height
    require_config(
        config.n_candidates <= n_items,
        "n_candidates",
        f"{config.n_candidates} candidates but the item table has only {n_items} items",
    )
    has_ratings = dataset.interactions["rating"].null_count() < dataset.interactions.height
    min_rating = config.min_rating if has_ratings else None  # the rating filter applies only to data with ratings
    sequences = user_sequences(dataset.interactions, min_rating)
    positions = sequences.positions
    n_users = positions["user"].n_unique()
    require(n_users >= 3, where, f"only {n_users} users left after filtering (min_rating {min_rating}): too few to split")
    splitter = {"paper": split_paper, "paper-files": split_paper_files, "leave-one-out": split_leave_one_out}
    parts, info = splitter[config.protocol](positions, config, where, dataset.ids)
    if not has_ratings and config.min_rating is not None:
        info["min_rating_applied"] = False  # no ratings in the data: every interaction kept
    for part in PARTS:
        require(
            parts[part].height > 0, where,
            f"the '{part}' part is empty: too few interactions per user for protocol '{config.protocol}' "
            f"(min_history {config.min_history})",
        )
    pool = np.unique(dataset.items["item"].to_numpy()).astype(np.int64)
    index = HistoryIndex(dataset.interactions, pool)
    check_references(dataset.interactions, dataset.items, where)  # then every row derived from them is valid too
    if config.protocol == "paper-files":
        _check_rows({p: parts[p] for p in ("val", "test")}, index, str(config.paper_files_dir))
    meta = {
        "protocol": config.protocol,
        "config": {k: v for k, v in config.__dict__.items()},
        "rows": {p: parts[p].height for p in PARTS},
        "users": {p: parts[p]["user"].n_unique() for p in PARTS},
        "n_items": n_items,
        **info,
    }
    return SplitPlan(config, sequences, parts, index, meta, where)


def make_split(dataset: Dataset, config: SplitConfig) -> Split:
    """Split a normalized dataset by ``config.protocol`` and draw the stored candidate sets, all in memory."""
    plan = plan_split(dataset, config)
    frames = {part: pl.concat(list(plan.frames(part))) for part in PARTS}
    return Split(frames["train"], frames["val"], frames["test"], plan.meta)


def split_to_dir(dataset: Dataset, config: SplitConfig, out_dir: str | Path) -> dict:
    """:func:`make_split` + :func:`~llara.data.split_files.write_split` in bounded memory: each part built and written chunk by chunk.
    Returns the split's meta."""
    plan = plan_split(dataset, config)
    write_parts({part: plan.frames(part) for part in PARTS}, plan.meta, out_dir)
    return plan.meta
