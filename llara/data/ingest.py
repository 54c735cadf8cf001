"""Ingest: raw MovieLens-100K or a generic interactions + items pair -> normalized parquet.

Outputs (see :mod:`llara.data.schema`): ``interactions.parquet`` (user, item, timestamp, rating; internal ids) in
source order, ``items.parquet`` (item, unique display title, raw title), the id maps ``user_ids.parquet`` and
``item_ids.parquet`` (internal id <-> original id, :mod:`llara.data.idmap`) and ``meta.json``. A generic dataset is
its interactions and item files plus the parts the inbox merged into it (:mod:`llara.data.inbox`), in ledger order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from llara.atomic import atomic_dir, write_json
from llara.data.idmap import (ITEM_IDS_FILE, USER_IDS_FILE, IdMap, IdMaps, check_unambiguous, integer_values,
                              read_id_maps, stack)
from llara.data.parts import read_merged_parts
from llara.data.schema import INTERACTIONS_SCHEMA, ITEMS_SCHEMA, check_schema
from llara.data.sources import verify_checksums
from llara.data.tables import Columns, check_known_items, check_one_title, read_table, validate_interactions, validate_items
from llara.errors import InputError, require

__all__ = ["Columns", "Dataset", "read_table", "read_generic", "read_movielens", "read_dataset", "write_dataset"]


@dataclass(frozen=True)
class Dataset:
    """Normalized interactions and items (internal ids) and the maps back to the original ids."""

    interactions: pl.DataFrame
    items: pl.DataFrame
    source: str
    ids: IdMaps | None = field(default=None, compare=False)

    def __post_init__(self):
        if self.ids is None:  # tables made without ingest: their ids are the original ids
            object.__setattr__(self, "ids", IdMaps(IdMap.identity(self.interactions["user"]),
                                                   IdMap.identity(self.items["item"])))


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


def unique_items(validated: pl.DataFrame, path: Path | str, years: list[str | None] | None = None) -> pl.DataFrame:
    """One row per item (validated rows: item, title, raw_title, _row), sorted by original id, unique display
    titles (suffixed with the year or the original id)."""
    items = validated
    if years is not None:
        items = items.with_columns(pl.Series("_year", years, dtype=pl.String))
    items = items.unique("item", keep="first", maintain_order=True).sort("item")
    year_list = items["_year"].to_list() if years is not None else None
    return make_titles_unique(items.select(list(ITEMS_SCHEMA)), year_list)


def encode(interactions: pl.DataFrame, items: pl.DataFrame, where: str | Path) -> tuple[pl.DataFrame, pl.DataFrame, IdMaps]:
    """Original ids -> dense internal ids (items from the item table, users from the interactions); the item
    references must already be checked (:func:`~llara.data.tables.check_known_items`)."""
    users = interactions["user"]
    if users.dtype == pl.String:
        check_unambiguous(users, integer_values(users), where, "user")
    maps = IdMaps(IdMap.build(users), IdMap.build(items["item"]))
    interactions = interactions.with_columns(maps.users.to_internal(users), maps.items.to_internal(interactions["item"]))
    items = items.with_columns(maps.items.to_internal(items["item"]))
    return (check_schema(interactions, INTERACTIONS_SCHEMA, where), check_schema(items, ITEMS_SCHEMA, where), maps)


def check_references(interactions: pl.DataFrame, items: pl.DataFrame, where: str | Path) -> None:
    """Every interacted item (internal ids) has a row in the item table."""
    unknown = interactions.join(items.select("item"), on="item", how="anti")
    require(unknown.height == 0, where, f"{unknown['item'].n_unique()} item id(s) used by interactions have no title, "
                                        f"e.g. {unknown['item'][0] if unknown.height else ''}")


def read_generic(
    interactions_path: str | Path,
    items_path: str | Path,
    columns: Columns = Columns(),
    *,
    separator: str = ",",
    encoding: str = "utf8",
    min_rating: float | None = None,
) -> Dataset:
    """Read a user-supplied interactions file and item table (CSV, TSV or parquet) plus the parts the inbox merged
    beside them (:mod:`llara.data.inbox`). Ids may be integers or text (:mod:`llara.data.idmap`)."""
    interactions_path, items_path = Path(interactions_path), Path(items_path)
    raw, offset = read_table(interactions_path, separator=separator, encoding=encoding)
    interactions = validate_interactions(raw, columns, interactions_path, offset)
    raw_items, item_offset = read_table(items_path, separator=separator, encoding=encoding)
    items = validate_items(raw_items, columns, items_path, item_offset)
    parts = read_merged_parts(interactions_path.parent)
    if parts.items is not None:
        items = stack([items, parts.items.select(items.columns)], ["item"])
        check_one_title(items, items_path, item_offset)
    check_known_items(interactions, items["item"], interactions_path, offset, str(items_path))
    if parts.interactions is not None:
        check_known_items(parts.interactions, items["item"], parts.where, 0, str(items_path))
        interactions = stack([interactions, parts.interactions.select(interactions.columns)], ["user", "item"])
    interactions, items, maps = encode(interactions, unique_items(items, items_path), interactions_path)
    interactions = _filter_rating(interactions, min_rating, interactions_path)
    return Dataset(interactions, items, source=f"generic:{interactions_path.name}+{items_path.name}", ids=maps)


def _filter_rating(interactions: pl.DataFrame, min_rating: float | None, path: Path) -> pl.DataFrame:
    """Keep ratings >= ``min_rating`` (asked for explicitly: an error when the data has no ratings)."""
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
    interactions = validate_interactions(raw, Columns(rating="rating"), data_path, line_offset=1)
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
    validated = validate_items(table, Columns(), item_path, line_offset=1, raw_titles=[t.strip() for t in raw_titles])
    check_known_items(interactions, validated["item"], data_path, 1, str(item_path))
    interactions, items, maps = encode(interactions, unique_items(validated, item_path, [c[1] for c in cleaned]), data_path)
    interactions = _filter_rating(interactions, min_rating, data_path)
    return Dataset(interactions, items, source=f"movielens-100k:{directory}", ids=maps)


DATASET_FILES = ("interactions.parquet", "items.parquet", USER_IDS_FILE, ITEM_IDS_FILE, "meta.json")


def write_dataset(dataset: Dataset, out_dir: str | Path) -> Path:
    """Write the normalized dataset atomically (the whole directory appears at once)."""
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        dataset.interactions.write_parquet(tmp / "interactions.parquet", compression="zstd", statistics=False)
        dataset.items.write_parquet(tmp / "items.parquet", compression="zstd", statistics=False)
        dataset.ids.write(tmp)
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
    return Dataset(interactions, items, source=str(directory), ids=read_id_maps(directory, interactions, items))
