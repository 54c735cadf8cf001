"""The parts the inbox merged into a generic dataset, as ingest reads them (:mod:`llara.data.inbox` writes them).

``<input_dir>/parts/ledger.jsonl`` lists one merged file per line (sha256, file, kind, part, rows, added,
duplicates); ``part`` names ``<kind>/part-<sha>.parquet`` (None when the file added nothing). Interaction parts hold
``user, item`` (original ids), ``timestamp`` (unix seconds), ``rating``; item parts ``item, title``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from llara.data.idmap import stack
from llara.data.schema import read_parquet_file
from llara.errors import InputError, require

PARTS_DIR = "parts"
LEDGER_FILE = "ledger.jsonl"
KINDS = ("items", "interactions")
PART_COLUMNS = {"interactions": ["user", "item", "timestamp", "rating"], "items": ["item", "title"]}


@dataclass(frozen=True)
class MergedParts:
    """The parts of the ledger, concatenated (None for a kind with none)."""

    interactions: pl.DataFrame | None
    items: pl.DataFrame | None
    where: str


def parts_root(input_dir: str | Path) -> Path:
    return Path(input_dir) / PARTS_DIR


def read_ledger(input_dir: str | Path) -> list[dict]:
    path = parts_root(input_dir) / LEDGER_FILE
    if not path.is_file():
        return []
    entries = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            raise InputError(path, f"row {number}: not a JSON object") from None
        require(isinstance(entry, dict) and {"sha256", "kind", "part"} <= set(entry), path,
                f"row {number}: needs sha256, kind and part")
        entries.append(entry)
    return entries


def _read_part(path: Path, kind: str) -> pl.DataFrame:
    df = read_parquet_file(path, "part listed in the ledger is missing")
    require(df.columns == PART_COLUMNS[kind], path, f"columns must be {PART_COLUMNS[kind]}, got {df.columns}")
    return df


def read_merged_parts(input_dir: str | Path) -> MergedParts:
    """Every part the ledger lists, per kind, in ledger order (items get ``raw_title`` and ``_row`` like
    :func:`~llara.data.tables.validate_items`)."""
    root = parts_root(input_dir)
    frames: dict[str, list[pl.DataFrame]] = {kind: [] for kind in KINDS}
    for entry in read_ledger(input_dir):
        if entry["part"]:
            frames[entry["kind"]].append(_read_part(root / entry["part"], entry["kind"]))
    items = None
    if frames["items"]:
        items = stack(frames["items"], ["item"]).select(
            pl.lit(None, pl.UInt32).alias("_row"), "item", "title", pl.col("title").alias("raw_title"))
    interactions = stack(frames["interactions"], ["user", "item"]) if frames["interactions"] else None
    return MergedParts(interactions, items, str(root / "interactions"))


