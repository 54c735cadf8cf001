"""Raw tables (CSV, TSV, parquet) and the row checks that ingest and the inbox share.

:func:`read_table` reads any supported file by its extension; :func:`validate_interactions` and
:func:`validate_items` check a raw frame row by row and return it in the normalized column names with *original*
ids (see :mod:`llara.data.idmap`): interactions ``user, item, timestamp, rating`` and items ``item, title, raw_title``.
Every fault is an :class:`~llara.errors.InputError` naming the file and the row; a fault of some rows is a
:class:`~llara.errors.RowError` that lists them all (the inbox sets such rows aside).
"""

from __future__ import annotations

import codecs
import csv
import io
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from llara.data.idmap import parse_ids
from llara.data.schema import MAX_TIMESTAMP
from llara.errors import ConfigError, InputError, RowError, require, require_config

SUFFIXES = (".csv", ".tsv", ".txt", ".parquet", ".pq")


@dataclass(frozen=True)
class Columns:
    """Column names of a generic dataset."""

    __pydantic_config__ = {"extra": "forbid"}  # params.yaml (ingest.columns): an unknown key is an error

    user: str = "user"
    item: str = "item"
    timestamp: str = "timestamp"
    rating: str | None = None
    title: str = "title"


def check_text_options(separator: str, encoding: str) -> None:
    """A one-character CSV separator and a known text encoding; a :class:`ConfigError` names the option."""
    require_config(len(separator) == 1, "separator", f"must be one character, got {separator!r}")
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise ConfigError("encoding", f"unknown text encoding {encoding!r}") from None


def read_table(path: str | Path, *, separator: str = ",", encoding: str = "utf8") -> tuple[pl.DataFrame, int]:
    """Read CSV/TSV (all columns as text) or parquet by extension. Returns the frame and the line offset of row 0."""
    path = Path(path)
    require(path.exists(), path, "file not found")
    require(path.is_file(), path, "not a file")
    require(path.stat().st_size > 0, path, "file is empty")
    suffix = path.suffix.lower()
    check_text_options(separator, encoding)
    text = None
    try:
        if suffix in {".parquet", ".pq"}:
            return pl.read_parquet(path), 0
        if suffix in {".csv", ".tsv", ".txt"}:
            sep = "\t" if suffix == ".tsv" else separator
            text = path.read_bytes().decode(encoding)
            return pl.read_csv(text.encode(), separator=sep, infer_schema=False), 2
    except UnicodeDecodeError as exc:
        raise InputError(path, f"not valid {encoding} text (byte {exc.start}); set the encoding") from None
    except Exception as exc:
        detail = _first_ragged_row(text, sep) if text is not None else ""
        raise InputError(path, detail or f"cannot read ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None
    raise InputError(path, f"unsupported file type '{suffix}' (use .csv, .tsv or .parquet)")


def _first_ragged_row(text: str, separator: str) -> str:
    """Name the first CSV row whose field count differs from the header's (polars' own error names no row)."""
    reader = csv.reader(io.StringIO(text), delimiter=separator)
    header = next(reader, [])
    try:
        for row in reader:
            if row and len(row) != len(header):
                return f"row {reader.line_num}: {len(row)} fields but the header has {len(header)}"
    except csv.Error as exc:
        return f"row {reader.line_num}: malformed CSV ({exc})"
    return ""


def require_columns(df: pl.DataFrame, wanted: list[str], path: Path) -> None:
    missing = [c for c in wanted if c not in df.columns]
    require(not missing, path, f"missing column(s) {missing}; found {df.columns}")
    require(df.height > 0, path, "no rows")
    for column in wanted:
        dtype = df.schema[column]
        require(
            not (dtype.is_nested() or dtype in (pl.Binary, pl.Object)),
            path, f"column '{column}' has type {dtype}; expected plain numbers or text",
        )


def int_column(df: pl.DataFrame, column: str, path: Path, *, line_offset: int) -> pl.Series:
    """Cast a column to Int64, naming the first row that is empty or not a whole number."""
    as_text = df[column].cast(pl.String)
    null_at = as_text.is_null() | (as_text.str.strip_chars() == "")
    if null_at.any():
        raise RowError(path, null_at, line_offset, f"column '{column}' is empty")
    numeric = as_text.str.strip_chars().cast(pl.Float64, strict=False)
    bad = numeric.is_null() | numeric.is_nan() | (numeric != numeric.floor()) | (numeric.abs() > 2**62)
    if bad.any():
        row = int(bad.arg_true()[0])
        raise RowError(path, bad, line_offset, f"column '{column}' is not an integer: {as_text[row]!r}")
    return numeric.cast(pl.Int64)


def timestamp_column(df: pl.DataFrame, column: str, path: Path, *, line_offset: int) -> pl.Series:
    """Unix seconds from integers or ISO-8601 datetimes, range-checked."""
    raw = df[column]
    if isinstance(raw.dtype, (pl.Date, pl.Datetime)):
        values = raw.cast(pl.Datetime("us")).dt.epoch("s")
        if values.null_count():
            raise RowError(path, values.is_null(), line_offset, f"column '{column}' is empty")
    elif raw.dtype.is_temporal():
        raise InputError(path, f"column '{column}' has type {raw.dtype}; expected unix seconds or datetimes")
    else:
        text = raw.cast(pl.String).str.strip_chars()
        numeric = text.cast(pl.Float64, strict=False)
        if numeric.is_not_null().any() or text.is_null().any() or (text == "").any():
            # unix seconds (a non-number among numbers, or an empty cell, is reported by row)
            values = int_column(df, column, path, line_offset=line_offset)
        else:
            try:
                parsed = text.str.to_datetime(strict=False, time_unit="us")
            except Exception:  # polars cannot infer a datetime format from the values
                raise InputError(
                    path, f"row {line_offset}: column '{column}' is neither unix seconds nor ISO-8601: {text[0]!r}"
                ) from None
            bad = parsed.is_null()
            if bad.any():
                row = int(bad.arg_true()[0])
                raise RowError(path, bad, line_offset, f"column '{column}' is not a timestamp: {text[row]!r}")
            values = parsed.dt.epoch("s")
    out_of_range = (values < 0) | (values > MAX_TIMESTAMP)
    if out_of_range.any():
        row = int(out_of_range.arg_true()[0])
        raise RowError(path, out_of_range, line_offset,
                       f"column '{column}' is out of range (0..{MAX_TIMESTAMP} unix seconds): {values[row]}")
    return values.cast(pl.Int64)


def rating_column(df: pl.DataFrame, column: str | None, path: Path, *, line_offset: int) -> pl.Series:
    """Ratings as Float64 (all null when the dataset has no rating column)."""
    if not column:
        return pl.Series("rating", [None] * df.height, dtype=pl.Float64)
    text = df[column].cast(pl.String).str.strip_chars()
    rating = text.cast(pl.Float64, strict=False)
    bad = rating.is_null() | rating.is_nan()
    if bad.any():
        row = int(bad.arg_true()[0])
        raise RowError(path, bad, line_offset, f"column '{column}' is not a number: {text[row]!r}")
    return rating.alias("rating")


@dataclass(frozen=True)
class IdKinds:
    """The id types new rows must have to join an existing dataset (``auto``: a new dataset, any type) and the
    dataset's text ids (``known_*``), against which new spellings are checked (:func:`~llara.data.idmap.parse_ids`)."""

    user: str = "auto"
    item: str = "auto"
    known_users: pl.Series | None = None
    known_items: pl.Series | None = None


def _ids(df: pl.DataFrame, column: str, path: Path, line_offset: int, kind: str, known: pl.Series | None,
         name: str) -> pl.Series:
    return parse_ids(df[column], path, column, line_offset, kind=kind, known=known).alias(name)


def validate_interactions(df: pl.DataFrame, columns: Columns, path: Path, line_offset: int,
                          kinds: IdKinds = IdKinds()) -> pl.DataFrame:
    """Check every row; return ``user, item`` (original ids), ``timestamp`` (unix s), ``rating`` (Float64)."""
    wanted = [columns.user, columns.item, columns.timestamp] + ([columns.rating] if columns.rating else [])
    require_columns(df, wanted, path)
    return pl.DataFrame({
        "user": _ids(df, columns.user, path, line_offset, kinds.user, kinds.known_users, "user"),
        "item": _ids(df, columns.item, path, line_offset, kinds.item, kinds.known_items, "item"),
        "timestamp": timestamp_column(df, columns.timestamp, path, line_offset=line_offset),
        "rating": rating_column(df, columns.rating, path, line_offset=line_offset),
    })


def validate_items(df: pl.DataFrame, columns: Columns, path: Path, line_offset: int,
                   raw_titles: list[str] | None = None, kinds: IdKinds = IdKinds()) -> pl.DataFrame:
    """Check every row: ids, non-empty titles, no id with two different titles. Returns ``item`` (original ids),
    ``title`` (stripped), ``raw_title`` and ``_row`` (the source row), one row per source row."""
    require_columns(df, [columns.item, columns.title], path)
    ids = _ids(df, columns.item, path, line_offset, kinds.item, kinds.known_items, "item")
    titles = df[columns.title].cast(pl.String).str.strip_chars()
    empty = titles.is_null() | (titles == "") | (titles.str.to_lowercase() == "nan")
    if empty.any():
        row = int(empty.arg_true()[0])
        raise RowError(path, empty, line_offset, f"item {ids[row]} has an empty title")
    raw = pl.Series("raw_title", raw_titles, dtype=pl.String) if raw_titles is not None else titles
    items = pl.DataFrame({"item": ids, "title": titles, "raw_title": raw}).with_row_index("_row")
    check_one_title(items, path, line_offset)
    return items


def check_one_title(items: pl.DataFrame, path: Path | str, line_offset: int = 0) -> None:
    """No item id with two different titles (``items``: item, title, _row)."""
    conflicts = items.group_by("item").agg(pl.col("title").n_unique().alias("n"), pl.col("_row").min()).filter(
        pl.col("n") > 1
    )
    if conflicts.height:
        first = conflicts.sort("_row").row(0, named=True)
        rows = items.join(conflicts.select("item"), on="item", how="semi")["_row"].sort()
        raise RowError(path, rows, line_offset, f"item {first['item']} appears with different titles")


def check_known_items(interactions: pl.DataFrame, item_ids: pl.Series, path: Path | str, line_offset: int,
                      items_where: str) -> None:
    """Every interacted item (original ids) has a row in the item table: else name the first row that has none."""
    known = pl.DataFrame({"item": item_ids.unique()})
    values = interactions.select(pl.col("item").cast(known.schema["item"], strict=False).alias("item"),
                                 pl.col("item").alias("_raw"))
    unknown = values.with_row_index("_row").join(known, on="item", how="anti").sort("_row")
    if unknown.height:
        raise RowError(path, unknown["_row"], line_offset, f"item {unknown['_raw'][0]!r} has no title in {items_where} "
                                                           f"({unknown['_raw'].n_unique()} unknown item id(s))")
