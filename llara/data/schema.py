"""Schemas of the normalized artifacts and their checks."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from llara.errors import InputError, require

INTERACTIONS_SCHEMA = {"user": pl.Int64, "item": pl.Int64, "timestamp": pl.Int64, "rating": pl.Float64}
ITEMS_SCHEMA = {"item": pl.Int64, "title": pl.String, "raw_title": pl.String}
SPLIT_SCHEMA = {
    "user": pl.Int64,
    "history": pl.List(pl.Int64),
    "target": pl.Int64,
    "candidates": pl.List(pl.Int64),
}
# Largest timestamp we accept: 2100-01-01 in unix seconds (anything later is a unit or parsing error).
MAX_TIMESTAMP = 4_102_444_800


def check_schema(df: pl.DataFrame, schema: dict[str, pl.DataType], where: str | Path) -> pl.DataFrame:
    """Check that ``df`` has exactly the columns and dtypes of ``schema`` (in that order)."""
    missing = [c for c in schema if c not in df.columns]
    require(not missing, where, f"missing column(s) {missing}; expected {list(schema)}")
    extra = [c for c in df.columns if c not in schema]
    require(not extra, where, f"unexpected column(s) {extra}; expected {list(schema)}")
    for name, dtype in schema.items():
        require(df.schema[name] == dtype, where, f"column '{name}' has type {df.schema[name]}, expected {dtype}")
    return df.select(list(schema))


def read_parquet_file(path: str | Path, missing: str = "file not found") -> pl.DataFrame:
    """Read a parquet file, turning a missing or unreadable file into :class:`InputError`."""
    path = Path(path)
    require(path.is_file(), path, missing)
    try:
        return pl.read_parquet(path)
    except Exception as exc:  # polars raises several types for corrupt files
        raise InputError(path, f"cannot read parquet ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None


def read_parquet_checked(path: str | Path, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """Read a parquet artifact, turning unreadable files into :class:`InputError`."""
    return check_schema(read_parquet_file(path), schema, path)
