"""Held-out users and the LLaRA authors' val/test files, read and checked row by row."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from llara.data.idmap import IdMap, IdMaps, parse_ids
from llara.errors import InputError, require


def read_heldout_table(path: str | Path, users: IdMap | None = None) -> pl.DataFrame:
    """A held-out users CSV: user_id (original ids), split (val/test)[, row_index (int)], checked row by row. With
    ``users`` the ids become internal ids (an id the dataset does not have is an error naming its row)."""
    path = Path(path)
    require(path.is_file(), path, "file not found")
    try:
        df = pl.read_csv(path, infer_schema=False)
    except Exception as exc:
        raise InputError(path, f"cannot read CSV ({type(exc).__name__})") from None
    for col in ("user_id", "split"):
        require(col in df.columns, path, f"missing column '{col}'")
    df = df.with_columns(parse_ids(df["user_id"], path, "user_id", 2))
    if "row_index" in df.columns:
        values = df["row_index"].str.strip_chars().cast(pl.Int64, strict=False)
        if values.null_count():
            raise InputError(path, f"row {int(values.is_null().arg_true()[0]) + 2}: row_index is not an integer")
        df = df.with_columns(values.alias("row_index"))
    bad = ~df["split"].is_in(["val", "test"])
    if bad.any():
        raise InputError(path, f"row {int(bad.arg_true()[0]) + 2}: split must be 'val' or 'test'")
    require(df["user_id"].n_unique() == df.height, path, "a user is listed twice")
    if users is not None:
        internal = users.to_internal(df["user_id"])
        if internal.null_count():
            row = int(internal.is_null().arg_true()[0])
            raise InputError(path, f"row {row + 2}: user {df['user_id'][row]} (user_id) is not in the dataset")
        df = df.with_columns(internal.alias("user_id"))
    return df


def read_heldout(path: str | Path, users: IdMap | None = None) -> dict[int, str]:
    """Read a held-out users CSV (columns user_id, split with values val/test) as {user: part} (internal ids with
    ``users``)."""
    df = read_heldout_table(path, users)
    return dict(zip(df["user_id"].to_list(), df["split"].to_list()))


def read_paper_files(
    directory: str | Path, heldout_csv: str | Path, *, history_len: int, id_offset: int, ids: IdMaps | None = None
) -> dict[str, list[tuple]]:
    """Val/test rows ``(user, history, target)`` from the authors' files (columns history, next_item, len_seq),
    users from ``heldout_csv`` (row_index maps file rows to users); original item id = file id + ``id_offset``.
    With ``ids`` the rows hold internal ids."""
    directory = Path(directory)
    require(directory.is_dir(), directory, "directory not found (split.paper_files_dir)")
    heldout = read_heldout_table(heldout_csv, ids.users if ids is not None else None)
    require("row_index" in heldout.columns, heldout_csv, "missing column 'row_index' (needed to map file rows to users)")
    parts: dict[str, list[tuple]] = {}
    for part, name in (("val", "Val_data.parquet"), ("test", "Test_data.parquet")):
        path = directory / name
        df = read_parquet_any(path, ["history", "next_item", "len_seq"])
        _check_paper_file(df, path)
        users = heldout.filter(pl.col("split") == part).sort("row_index")
        require(users.height == df.height, heldout_csv, f"{users.height} {part} users listed but {path} has {df.height} rows")
        require(
            users["row_index"].to_list() == list(range(df.height)), heldout_csv,
            f"{part} row_index values must be 0..{df.height - 1}, each once",
        )
        rows = []
        for user, (history, target, length) in zip(
            users["user_id"].to_list(), df.select("history", "next_item", "len_seq").iter_rows()
        ):
            items = [int(i) + id_offset for i in history[: int(length)]]
            rows.append((user, items[-history_len :], int(target) + id_offset))
        parts[part] = rows if ids is None else [_internal_row(row, ids.items, path, n) for n, row in enumerate(rows)]
    return parts


def _internal_row(row: tuple, items: IdMap, path: Path, number: int) -> tuple:
    user, history, target = row
    internal = items.to_internal(pl.Series([*history, target], dtype=pl.Int64)).to_list()
    if None in internal:
        missing = [*history, target][internal.index(None)]
        raise InputError(path, f"row {number}: item {missing} (file id + offset) is not in the item table")
    return user, internal[:-1], internal[-1]


def _check_paper_file(df: pl.DataFrame, path: Path) -> None:
    """history: list of integer ids, next_item and len_seq integers, 1 <= len_seq <= len(history), no nulls."""
    require(isinstance(df.schema["history"], pl.List) and df.schema["history"].inner.is_integer(), path,
            f"column 'history' must be a list of integer ids, got {df.schema['history']}")
    for col in ("next_item", "len_seq"):
        require(df.schema[col].is_integer(), path, f"column '{col}' must be integer, got {df.schema[col]}")
    bad = (
        pl.col("history").is_null() | pl.col("next_item").is_null() | pl.col("len_seq").is_null()
        | (pl.col("len_seq") < 1) | (pl.col("len_seq") > pl.col("history").list.len())
        | pl.col("history").list.eval(pl.element().is_null()).list.any()
    )
    rows = df.with_row_index("_row").filter(bad)
    if rows.height:
        raise InputError(path, f"row {rows['_row'][0]}: null values or len_seq outside 1..len(history)")


def read_parquet_any(path: Path, columns: list[str]) -> pl.DataFrame:
    require(path.is_file(), path, "file not found")
    try:
        df = pl.read_parquet(path)
    except Exception as exc:
        raise InputError(path, f"cannot read parquet ({type(exc).__name__})") from None
    missing = [c for c in columns if c not in df.columns]
    require(not missing, path, f"missing column(s) {missing}")
    return df
