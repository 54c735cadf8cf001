"""The split artifact: ``train.parquet``, ``val.parquet``, ``test.parquet`` (user, history, target, candidates) and
``meta.json`` in one directory, written atomically and read back with their schema checked. What the recommenders and
the LLM stages read; how a split is made is :mod:`llara.data.split`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import polars as pl
import pyarrow.parquet as pq

from llara.atomic import atomic_dir, write_json
from llara.data.schema import SPLIT_SCHEMA, read_parquet_checked
from llara.errors import require

PARTS = ("train", "val", "test")
SPLIT_FILES = tuple(f"{part}.parquet" for part in PARTS) + ("meta.json",)


@dataclass(frozen=True)
class Split:
    """Train/val/test rows: user, history (oldest first), target, candidates."""

    train: pl.DataFrame
    val: pl.DataFrame
    test: pl.DataFrame
    meta: dict

    def part(self, name: str) -> pl.DataFrame:
        return {"train": self.train, "val": self.val, "test": self.test}[name]


def write_parts(frames: dict[str, Iterator[pl.DataFrame]], meta: dict, out_dir: str | Path) -> Path:
    """Write each part's frames (in order) as one parquet file, and meta.json, atomically."""
    with atomic_dir(out_dir) as tmp:
        for part in PARTS:
            writer = None
            try:
                for frame in frames[part]:
                    table = frame.to_arrow()
                    if writer is None:
                        writer = pq.ParquetWriter(tmp / f"{part}.parquet", table.schema, compression="zstd",
                                                  write_statistics=False)
                    writer.write_table(table)
            finally:
                if writer is not None:
                    writer.close()
        write_json(meta, tmp / "meta.json")
    return Path(out_dir)


def write_split(split: Split, out_dir: str | Path) -> Path:
    """Write train/val/test parquet and meta.json atomically."""
    return write_parts({part: iter([split.part(part)]) for part in PARTS}, split.meta, out_dir)


def read_split(directory: str | Path) -> Split:
    """Read a split artifact, checking schemas."""
    directory = Path(directory)
    frames = {p: read_parquet_checked(directory / f"{p}.parquet", SPLIT_SCHEMA) for p in PARTS}
    meta_path = directory / "meta.json"
    require(meta_path.is_file(), meta_path, "file not found")
    return Split(frames["train"], frames["val"], frames["test"], json.loads(meta_path.read_text()))
