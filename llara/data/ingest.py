"""Ingest: raw MovieLens-100K or a generic interactions + items pair -> normalized parquet.

Outputs (see :mod:`llara.data.schema`): ``interactions.parquet`` (user, item, timestamp, rating) in source order,
``items.parquet`` (item, unique display title, raw title) and ``meta.json``.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from llara.atomic import atomic_dir, write_json
from llara.data.schema import INTERACTIONS_SCHEMA, ITEMS_SCHEMA, MAX_TIMESTAMP, check_schema
from llara.data.sources import verify_checksums
from llara.errors import ConfigError, InputError, require


@dataclass(frozen=True)
class Dataset:
    """Normalized interactions and items."""

    interactions: pl.DataFrame
    items: pl.DataFrame
    source: str


@dataclass(frozen=True)
class Columns:
    """Column names of a generic dataset."""

    user: str = "user"
    item: str = "item"
    timestamp: str = "timestamp"
    rating: str | None = None
    title: str = "title"


_YEAR = re.compile(r"\s*\((\d{4})\)\s*$")
_ARTICLE = re.compile(r"^(?P<body>.*?), (?P<article>The|A|An)(?P<alt>\s*\(.*\))?$")


def clean_movielens_title(raw: str) -> tuple[str, str | None]:
    """Paper cleaning: drop the trailing ``(year)`` and move a trailing ", The/A/An" to the front.

    >>> clean_movielens_title("Usual Suspects, The (1995)")
    ('The Usual Suspects', '1995')
    """
    text = raw.strip()
    year = None
    match = _YEAR.search(text)
    if match:
        year = match.group(1)
        text = text[: match.start()].rstrip()
    article = _ARTICLE.match(text)
    if article:
        text = f"{article['article']} {article['body']}{article['alt'] or ''}"
    return text, year


def make_titles_unique(items: pl.DataFrame, years: list[str | None] | None = None) -> pl.DataFrame:
    """Suffix duplicate display titles with the year (when it separates them) or the item id."""
    titles = items["title"].to_list()
    ids = items["item"].to_list()
    years = years or [None] * len(titles)
    counts: dict[str, int] = {}
    for title in titles:
        counts[title.casefold()] = counts.get(title.casefold(), 0) + 1
    dup_years: dict[tuple[str, str | None], int] = {}
    for title, year in zip(titles, years):
        if counts[title.casefold()] > 1:
            key = (title.casefold(), year)
            dup_years[key] = dup_years.get(key, 0) + 1
    unique = []
    for title, year, item in zip(titles, years, ids):
        if counts[title.casefold()] > 1:
            if year is not None and dup_years[(title.casefold(), year)] == 1:
                title = f"{title} ({year})"
            else:
                title = f"{title} [item {item}]"
        unique.append(title)
    return items.with_columns(pl.Series("title", _resolve_collisions(unique, ids), dtype=pl.String))


def _resolve_collisions(titles: list[str], ids: list[int]) -> list[str]:
    """A suffixed title can still collide with another title: give every colliding one its item id (and a counter)."""
    counts: dict[str, int] = {}
    for title in titles:
        counts[title.casefold()] = counts.get(title.casefold(), 0) + 1
    used = {t.casefold() for t in titles if counts[t.casefold()] == 1}
    out = []
    for title, item in zip(titles, ids):
        if counts[title.casefold()] > 1:
            candidate, k = f"{title} [item {item}]", 2
            while candidate.casefold() in used:
                candidate, k = f"{title} [item {item}] #{k}", k + 1
            title = candidate
            used.add(title.casefold())
        out.append(title)
    return out


def _int_column(df: pl.DataFrame, column: str, path: Path, *, line_offset: int, nonnegative: bool) -> pl.Series:
    """Cast a column to Int64, naming the first row that is not a whole number."""
    raw = df[column]
    as_text = raw.cast(pl.String)
    null_at = as_text.is_null() | (as_text.str.strip_chars() == "")
    if null_at.any():
        row = int(null_at.arg_true()[0])
        raise InputError(path, f"row {row + line_offset}: column '{column}' is empty")
    numeric = as_text.str.strip_chars().cast(pl.Float64, strict=False)
    bad = numeric.is_null() | numeric.is_nan() | (numeric != numeric.floor()) | (numeric.abs() > 2**62)
    if bad.any():
        row = int(bad.arg_true()[0])
        raise InputError(path, f"row {row + line_offset}: column '{column}' is not an integer: {as_text[row]!r}")
    values = numeric.cast(pl.Int64)
    if nonnegative and (values < 0).any():
        row = int((values < 0).arg_true()[0])
        raise InputError(path, f"row {row + line_offset}: column '{column}' is negative: {values[row]}")
    return values


def _timestamp_column(df: pl.DataFrame, column: str, path: Path, *, line_offset: int) -> pl.Series:
    """Unix seconds from integers or ISO-8601 datetimes, range-checked."""
    raw = df[column]
    if isinstance(raw.dtype, (pl.Date, pl.Datetime)):
        values = raw.cast(pl.Datetime("us")).dt.epoch("s")
    elif raw.dtype.is_temporal():
        raise InputError(path, f"column '{column}' has type {raw.dtype}; expected unix seconds or datetimes")
    else:
        text = raw.cast(pl.String).str.strip_chars()
        numeric = text.cast(pl.Float64, strict=False)
        if numeric.is_not_null().any() or text.is_null().any() or (text == "").any():
            # unix seconds (a non-number among numbers, or an empty cell, is reported by row)
            values = _int_column(df, column, path, line_offset=line_offset, nonnegative=False)
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
                raise InputError(path, f"row {row + line_offset}: column '{column}' is not a timestamp: {text[row]!r}")
            values = parsed.dt.epoch("s")
    out_of_range = (values < 0) | (values > MAX_TIMESTAMP)
    if out_of_range.any():
        row = int(out_of_range.arg_true()[0])
        raise InputError(
            path, f"row {row + line_offset}: column '{column}' is out of range (0..{MAX_TIMESTAMP} unix seconds): {values[row]}"
        )
    return values.cast(pl.Int64)


def read_table(path: str | Path, *, separator: str = ",", encoding: str = "utf8") -> tuple[pl.DataFrame, int]:
    """Read CSV/TSV (all columns as text) or parquet by extension. Returns the frame and the line offset of row 0."""
    path = Path(path)
    require(path.exists(), path, "file not found")
    require(path.is_file(), path, "not a file")
    require(path.stat().st_size > 0, path, "file is empty")
    suffix = path.suffix.lower()
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise ConfigError("ingest.encoding", f"unknown text encoding {encoding!r}") from None
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


def _require_columns(df: pl.DataFrame, wanted: list[str], path: Path) -> None:
    missing = [c for c in wanted if c not in df.columns]
    require(not missing, path, f"missing column(s) {missing}; found {df.columns}")
    require(df.height > 0, path, "no rows")
    for column in wanted:
        dtype = df.schema[column]
        require(
            not (dtype.is_nested() or dtype in (pl.Binary, pl.Object)),
            path, f"column '{column}' has type {dtype}; expected plain numbers or text",
        )


def normalize_interactions(df: pl.DataFrame, columns: Columns, path: Path, line_offset: int) -> pl.DataFrame:
    """Validate and cast raw interaction columns to the normalized schema."""
    wanted = [columns.user, columns.item, columns.timestamp] + ([columns.rating] if columns.rating else [])
    _require_columns(df, wanted, path)
    rating = pl.Series("rating", [None] * df.height, dtype=pl.Float64)
    if columns.rating:
        text = df[columns.rating].cast(pl.String).str.strip_chars()
        rating = text.cast(pl.Float64, strict=False)
        bad = rating.is_null() | rating.is_nan()
        if bad.any():
            row = int(bad.arg_true()[0])
            raise InputError(path, f"row {row + line_offset}: column '{columns.rating}' is not a number: {text[row]!r}")
    out = pl.DataFrame(
        {
            "user": _int_column(df, columns.user, path, line_offset=line_offset, nonnegative=True),
            "item": _int_column(df, columns.item, path, line_offset=line_offset, nonnegative=True),
            "timestamp": _timestamp_column(df, columns.timestamp, path, line_offset=line_offset),
            "rating": rating.alias("rating"),
        }
    )
    return check_schema(out, INTERACTIONS_SCHEMA, path)


def normalize_items(
    df: pl.DataFrame,
    columns: Columns,
    path: Path,
    line_offset: int,
    years: list[str | None] | None = None,
    raw_titles: list[str] | None = None,
) -> pl.DataFrame:
    """Validate the item table: integer ids, non-empty titles, no id with two different titles."""
    _require_columns(df, [columns.item, columns.title], path)
    ids = _int_column(df, columns.item, path, line_offset=line_offset, nonnegative=True)
    titles = df[columns.title].cast(pl.String).str.strip_chars()
    empty = titles.is_null() | (titles == "") | (titles.str.to_lowercase() == "nan")
    if empty.any():
        row = int(empty.arg_true()[0])
        raise InputError(path, f"row {row + line_offset}: item {ids[row]} has an empty title")
    raw = pl.Series("raw_title", raw_titles, dtype=pl.String) if raw_titles is not None else titles
    items = pl.DataFrame({"item": ids, "title": titles, "raw_title": raw})
    if years is not None:
        items = items.with_columns(pl.Series("_year", years, dtype=pl.String))
    items = items.with_row_index("_row")
    conflicts = items.group_by("item").agg(pl.col("title").n_unique().alias("n"), pl.col("_row").min()).filter(
        pl.col("n") > 1
    )
    if conflicts.height:
        first = conflicts.sort("_row").row(0, named=True)
        raise InputError(path, f"row {first['_row'] + line_offset}: item {first['item']} appears with different titles")
    items = items.unique("item", keep="first", maintain_order=True).sort("item")
    year_list = items["_year"].to_list() if years is not None else None
    return make_titles_unique(items.select(list(ITEMS_SCHEMA)), year_list)


def check_references(interactions: pl.DataFrame, items: pl.DataFrame, items_path: Path) -> None:
    """Every interacted item must have a row in the item table."""
    unknown = interactions.join(items.select("item"), on="item", how="anti")
    require(
        unknown.height == 0,
        items_path,
        f"{unknown['item'].n_unique()} item id(s) used by interactions have no title, e.g. {unknown['item'][0] if unknown.height else ''}",
    )


def read_generic(
    interactions_path: str | Path,
    items_path: str | Path,
    columns: Columns = Columns(),
    *,
    separator: str = ",",
    encoding: str = "utf8",
    min_rating: float | None = None,
) -> Dataset:
    """Read a user-supplied interactions file and item table (CSV, TSV or parquet)."""
    interactions_path, items_path = Path(interactions_path), Path(items_path)
    raw, offset = read_table(interactions_path, separator=separator, encoding=encoding)
    interactions = normalize_interactions(raw, columns, interactions_path, offset)
    raw_items, item_offset = read_table(items_path, separator=separator, encoding=encoding)
    items = normalize_items(raw_items, columns, items_path, item_offset)
    check_references(interactions, items, items_path)
    interactions = _filter_rating(interactions, min_rating, interactions_path)
    return Dataset(interactions, items, source=f"generic:{interactions_path.name}+{items_path.name}")


def _filter_rating(interactions: pl.DataFrame, min_rating: float | None, path: Path) -> pl.DataFrame:
    if min_rating is None:
        return interactions
    require(interactions["rating"].null_count() == 0, path, "min_rating is set but the data has no rating column")
    kept = interactions.filter(pl.col("rating") >= min_rating)
    require(kept.height > 0, path, f"no interaction has rating >= {min_rating}")
    return kept


def read_movielens(directory: str | Path, *, verify: bool = True, min_rating: float | None = None) -> Dataset:
    """Read raw MovieLens-100K (``u.data`` tab-separated, ``u.item`` pipe-separated ISO-8859-1)."""
    directory = Path(directory)
    if verify:
        verify_checksums(directory)
    data_path, item_path = directory / "u.data", directory / "u.item"
    for path in (data_path, item_path):
        require(path.is_file(), path, "file not found")
    try:
        raw = pl.read_csv(
            data_path, separator="\t", has_header=False, new_columns=["user", "item", "rating", "timestamp"],
            infer_schema=False,
        )
    except Exception as exc:
        raise InputError(data_path, f"cannot read ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None
    interactions = normalize_interactions(raw, Columns(rating="rating"), data_path, line_offset=1)
    lines = item_path.read_bytes().decode("iso-8859-1").splitlines()
    ids, raw_titles = [], []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        fields = line.split("|")
        require(len(fields) >= 2, item_path, f"row {number}: expected '|'-separated fields, got {line[:60]!r}")
        ids.append(fields[0])
        raw_titles.append(fields[1])
    cleaned = [clean_movielens_title(t) for t in raw_titles]
    table = pl.DataFrame({"item": ids, "title": [c[0] for c in cleaned]})
    items = normalize_items(
        table, Columns(), item_path, line_offset=1, years=[c[1] for c in cleaned], raw_titles=[t.strip() for t in raw_titles]
    )
    check_references(interactions, items, item_path)
    interactions = _filter_rating(interactions, min_rating, data_path)
    return Dataset(interactions, items, source=f"movielens-100k:{directory}")


DATASET_FILES = ("interactions.parquet", "items.parquet", "meta.json")


def write_dataset(dataset: Dataset, out_dir: str | Path) -> Path:
    """Write the normalized dataset atomically (the whole directory appears at once)."""
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        dataset.interactions.write_parquet(tmp / "interactions.parquet", compression="zstd", statistics=False)
        dataset.items.write_parquet(tmp / "items.parquet", compression="zstd", statistics=False)
        write_json(
            {
                "source": dataset.source,
                "n_interactions": dataset.interactions.height,
                "n_users": dataset.interactions["user"].n_unique(),
                "n_items": dataset.items.height,
            },
            tmp / "meta.json",
        )
    return out_dir


def read_dataset(directory: str | Path) -> Dataset:
    """Read an ingest artifact back, checking its schema."""
    from llara.data.schema import read_parquet_checked

    directory = Path(directory)
    interactions = read_parquet_checked(directory / "interactions.parquet", INTERACTIONS_SCHEMA)
    items = read_parquet_checked(directory / "items.parquet", ITEMS_SCHEMA)
    require(items["title"].n_unique() == items.height, directory / "items.parquet", "display titles are not unique")
    require(items["item"].n_unique() == items.height, directory / "items.parquet", "item ids are not unique")
    check_references(interactions, items, directory / "items.parquet")
    return Dataset(interactions, items, source=str(directory))
