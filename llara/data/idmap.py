"""Original user/item ids (integers or text) <-> dense internal ids 1..N.

Ingest parses each id column (:func:`parse_ids`), builds one map per kind (:class:`IdMap`: users from the
interactions, items from the item table) and writes them beside the ingested tables as ``user_ids.parquet`` and
``item_ids.parquet`` (columns ``id`` Int64 1..N and ``original`` Int64 or String). Every later artifact (splits,
recommenders, runs) holds internal ids; user-facing outputs translate back with :func:`read_id_maps` +
:meth:`IdMaps.with_originals` (or a join on ``id``).

Rules (also in README "Bring your own dataset"):
- A column is an *integer* column when every value is a whole number (an integer parquet column, whole floats, or
  text such as ``42``/``42.0``); otherwise it is a *text* column and each value's text, stripped of surrounding
  whitespace, is the id (``u0042``, UUIDs, ASINs).
- Empty, null (``NaN``/``null``/``None`` text too) and whitespace-only values are errors naming the row.
- A text column whose integer-looking values spell one integer two ways (``7`` and ``07``) is ambiguous: an error
  naming both rows.
- Internal ids are ranks in sorted order of the originals (numeric for integers, by code point for text), so a map
  is a pure function of the set of ids, and integer ids that already are 1..N (MovieLens) map to themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import polars as pl

from llara.atomic import write_parquet
from llara.data.schema import read_parquet_file
from llara.errors import InputError, RowError, require

USER_IDS_FILE = "user_ids.parquet"
ITEM_IDS_FILE = "item_ids.parquet"
NULL_WORDS = ("nan", "null", "none")  # text a dataframe export writes for a missing value
_EXACT_FLOAT = 2**53  # whole floats beyond this are not exact integers


def _first(mask: pl.Series) -> int:
    return int(mask.arg_true()[0])


def parse_ids(values: pl.Series, where: str | Path, column: str, line_offset: int = 0, *, kind: str = "auto",
              known: pl.Series | None = None) -> pl.Series:
    """Original ids of one column: Int64 when every value is a whole number, else String (stripped text).

    ``kind`` ``"integer"`` or ``"text"`` fixes the type (new rows for an existing dataset; ``known``: its text ids,
    checked for ambiguity with the new ones). Raises :class:`~llara.errors.RowError` naming the row (``row +
    line_offset``) for empty, null, whitespace-only and ambiguous values, and for text ids where integers are
    required."""
    dtype = values.dtype
    if kind == "text" and dtype != pl.String:
        values = values.cast(pl.String)
        dtype = pl.String
    name = values.name
    if dtype.is_integer():
        if values.null_count():
            raise RowError(where, values.is_null(), line_offset, f"column '{column}' is empty")
        wide = values.cast(pl.Int64, strict=False)
        if wide.null_count():  # an unsigned id past 2^63 - 1
            row = _first(wide.is_null())
            raise RowError(where, wide.is_null(), line_offset,
                           f"column '{column}' is outside the 64-bit integer range: {values[row]}")
        return wide.alias(name)
    if dtype.is_float():
        bad = values.is_null() | values.is_nan()
        if bad.any():
            raise RowError(where, bad, line_offset, f"column '{column}' is empty (null or NaN)")
        whole = (values == values.floor()) & (values.abs() < _EXACT_FLOAT)
        if not whole.all():
            row = _first(~whole)
            raise RowError(where, ~whole, line_offset, f"column '{column}' is not a whole number: {values[row]}")
        return values.cast(pl.Int64).alias(name)
    if isinstance(dtype, (pl.Categorical, pl.Enum)):
        values = values.cast(pl.String)
    elif dtype != pl.String:
        raise InputError(where, f"column '{column}' has type {dtype}; expected integer or text ids")
    text = values.str.strip_chars()
    missing = values.is_null() | (values == "")
    if missing.any():
        raise RowError(where, missing, line_offset, f"column '{column}' is empty")
    blank = text == ""
    if blank.any():
        raise RowError(where, blank, line_offset, f"column '{column}' is whitespace only")
    null_word = text.str.to_lowercase().is_in(list(NULL_WORDS))
    if null_word.any():
        row = _first(null_word)
        raise RowError(where, null_word, line_offset, f"column '{column}' is null ({text[row]!r})")
    as_int = integer_values(text)
    if kind == "integer" and as_int.null_count():
        row = _first(as_int.is_null())
        raise RowError(where, as_int.is_null(), line_offset, f"column '{column}' holds the text id {text[row]!r} but "
                                                             "the dataset's ids are integers")
    if as_int.null_count() == 0 and kind != "text":
        return as_int.alias(name)
    check_unambiguous(text, as_int, where, column, line_offset, known)
    return text.alias(name)


def integer_values(text: pl.Series) -> pl.Series:
    """The integer each text value spells exactly (``42``, ``+42``, ``42.0``, ``4.2e1``), null where none."""
    number = text.cast(pl.Float64, strict=False)
    whole = number.is_not_null() & number.is_finite() & (number == number.floor()) & (number.abs() < _EXACT_FLOAT)
    from_float = number.set(~whole.fill_null(False), None).cast(pl.Int64)
    return text.cast(pl.Int64, strict=False).fill_null(from_float)


def check_unambiguous(text: pl.Series, as_int: pl.Series, where: str | Path, column: str, line_offset: int = 0,
                      known: pl.Series | None = None) -> None:
    """A text id column must not spell one integer two ways (``7`` and ``07``): which id is meant is ambiguous.
    ``known``: text ids already in the dataset (a new spelling of one of their integers is reported too)."""
    frame = pl.DataFrame({"text": text, "int": as_int}).with_row_index("_row").with_columns(pl.col("_row").cast(pl.Int64))
    if known is not None and known.len():
        known = known.cast(pl.String).unique().sort()
        old = pl.DataFrame({"_row": pl.Series([-1] * known.len(), dtype=pl.Int64), "text": known,
                            "int": integer_values(known)})
        frame = pl.concat([old, frame.select(old.columns)])
    spellings = frame.filter(pl.col("int").is_not_null()).unique(["int", "text"], keep="first", maintain_order=True)
    nth = spellings.with_columns(pl.int_range(pl.len()).over("int").alias("nth"))
    clash = nth.filter((pl.col("nth") > 0) & (pl.col("_row") >= 0)).sort("_row")
    if clash.height:
        row_b, b, value, _ = clash.row(0)
        row_a, a = nth.filter((pl.col("int") == value) & (pl.col("nth") == 0)).select("_row", "text").row(0)
        other = "already in the dataset" if row_a < 0 else f"row {row_a + line_offset}"
        raise RowError(where, clash["_row"], line_offset, f"column '{column}' mixes integer and text ids: {b!r} "
                                                          f"and {a!r} ({other}) spell the same integer; use one "
                                                          "spelling per id")


def common_dtype(*columns: pl.Series) -> pl.DataType:
    """Int64 when every column holds integer ids, else String (integers then compare by their decimal text)."""
    return pl.Int64 if all(c.dtype == pl.Int64 for c in columns) else pl.String


def stack(frames: list[pl.DataFrame], id_columns: list[str]) -> pl.DataFrame:
    """Frames stacked; each id column gets one type (:func:`common_dtype`)."""
    for column in id_columns:
        dtype = common_dtype(*(f[column] for f in frames))
        frames = [f.with_columns(pl.col(column).cast(dtype)) for f in frames]
    return pl.concat(frames)


@dataclass(frozen=True)
class IdMap:
    """One kind's map: ``frame`` has ``id`` (Int64, 1..N) and ``original`` (Int64 or String), sorted by both.
    ``passthrough``: no map at all (tables made without ingest): every id is its own original."""

    frame: pl.DataFrame
    passthrough: bool = False

    @classmethod
    def build(cls, originals: pl.Series) -> "IdMap":
        unique = originals.unique().sort()
        return cls(pl.DataFrame({"id": pl.int_range(1, unique.len() + 1, dtype=pl.Int64, eager=True),
                                 "original": unique}))

    @classmethod
    def identity(cls, ids: pl.Series | Iterable[int] | None = None) -> "IdMap":
        """The map of data whose internal ids are its original ids (tables made without ingest); without ``ids``
        a passthrough map that accepts any integer id."""
        values = ids if isinstance(ids, pl.Series) else pl.Series(list(ids or []), dtype=pl.Int64)
        unique = values.cast(pl.Int64).alias("original").unique().sort()
        return cls(pl.DataFrame({"id": unique, "original": unique}), passthrough=ids is None)

    def __len__(self) -> int:
        return self.frame.height

    @property
    def dtype(self) -> pl.DataType:
        return self.frame.schema["original"]

    def _as_original(self, values: pl.Series) -> pl.Series:
        if values.dtype == self.dtype:
            return values
        return values.cast(pl.String) if self.dtype == pl.String else values.cast(pl.Int64, strict=False)

    def to_internal(self, originals: pl.Series) -> pl.Series:
        """Internal ids of original ids (null where unknown)."""
        values = self._as_original(originals)
        if self.passthrough:
            return values.alias(originals.name)
        joined = pl.DataFrame({"original": values}).join(self.frame, on="original", how="left", maintain_order="left")
        return joined["id"].alias(originals.name)

    def to_original(self, ids: pl.Series) -> pl.Series:
        """Original ids of internal ids (null where unknown)."""
        if self.passthrough:
            return ids.cast(pl.Int64).alias(ids.name)
        joined = pl.DataFrame({"id": ids.cast(pl.Int64)}).join(self.frame, on="id", how="left", maintain_order="left")
        return joined["original"].alias(ids.name)

    def lookup(self, value: object) -> int | None:
        """The internal id of one original id given as a value or its text (``"42"`` finds integer id 42)."""
        if self.dtype == pl.Int64:
            try:
                key: object = int(str(value).strip())
            except ValueError:
                return None
        else:
            key = str(value).strip()
        if self.passthrough:
            return int(key)
        hit = self.frame.filter(pl.col("original") == key)
        return int(hit["id"][0]) if hit.height else None

    def write(self, path: str | Path) -> None:
        write_parquet(self.frame, path)

    @classmethod
    def read(cls, path: str | Path) -> "IdMap":
        frame = read_parquet_file(path, "id map not found")
        require(frame.columns == ["id", "original"], path, f"columns must be ['id', 'original'], got {frame.columns}")
        require(frame.schema["id"] == pl.Int64 and frame.schema["original"] in (pl.Int64, pl.String), path,
                f"unexpected types {dict(frame.schema)}")
        require(frame["id"].n_unique() == frame.height and frame["original"].n_unique() == frame.height, path,
                "ids are not unique")
        return cls(frame)


@dataclass(frozen=True)
class IdMaps:
    """The user and item maps of one dataset."""

    users: IdMap
    items: IdMap

    def write(self, directory: str | Path) -> None:
        self.users.write(Path(directory) / USER_IDS_FILE)
        self.items.write(Path(directory) / ITEM_IDS_FILE)

    def with_originals(self, frame: pl.DataFrame, columns: dict[str, str], prefix: str = "original_") -> pl.DataFrame:
        """``frame`` plus ``<prefix><column>`` holding the original ids of each listed column (``{column: 'user' or
        'item'}``; list columns such as histories and candidates are translated element-wise)."""
        extra = []
        for column, kind in columns.items():
            if column not in frame.columns:
                continue
            id_map = self.users if kind == "user" else self.items
            values = frame[column]
            if isinstance(values.dtype, pl.List):
                rows = pl.DataFrame({"_row": pl.int_range(0, frame.height, eager=True), "v": values}).explode("v")
                rows = rows.with_columns(id_map.to_original(rows["v"]).alias("o"))
                out = rows.group_by("_row", maintain_order=True).agg(pl.col("o").filter(pl.col("v").is_not_null()))
                out = out["o"].cast(pl.List(id_map.dtype)).alias(prefix + column)
            else:
                out = id_map.to_original(values).alias(prefix + column)
            extra.append(out)
        return frame.with_columns(extra) if extra else frame


def read_id_maps(directory: str | Path, interactions: pl.DataFrame | None = None,
                 items: pl.DataFrame | None = None) -> IdMaps:
    """The maps written by ingest into ``directory``; without them (tables not made by ingest) the identity maps of
    ``interactions``/``items`` (passthrough maps where those are not given)."""
    directory = Path(directory)
    if (directory / USER_IDS_FILE).is_file() and (directory / ITEM_IDS_FILE).is_file():
        return IdMaps(IdMap.read(directory / USER_IDS_FILE), IdMap.read(directory / ITEM_IDS_FILE))
    return IdMaps(IdMap.identity(interactions["user"] if interactions is not None else None),
                  IdMap.identity(items["item"] if items is not None else None))


def id_maps_beside(items_path: str | Path) -> IdMaps:
    """The maps of the dataset whose item table is ``items_path`` (``data/ingested/items.parquet``)."""
    return read_id_maps(Path(items_path).parent)


PREDICTION_IDS = {"user": "user", "target": "item", "top_item": "item", "generated_item": "item"}


def prediction_id_columns(columns: Sequence[str]) -> dict[str, str]:
    """The id columns of a predictions table: :data:`PREDICTION_IDS` plus each generate mode's own
    ``generated_item_<suffix>`` (``generated_item_two_orders``)."""
    return PREDICTION_IDS | {c: "item" for c in columns if c.startswith("generated_item_")}


def predictions_with_originals(predictions: pl.DataFrame, items_path: str | Path) -> pl.DataFrame:
    """Evaluation predictions plus ``original_user``, ``original_target``, ``original_top_item`` and
    ``original_generated_item`` (and ``original_generated_item_two_orders`` when that mode ran): the dataset's own
    ids, from the maps beside ``items_path``."""
    return id_maps_beside(items_path).with_originals(predictions, prediction_id_columns(predictions.columns))
