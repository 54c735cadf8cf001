"""The inbox: new interaction and item files merged into a generic dataset, validated first, exactly once.

Contract (docs/operations.md, "The inbox"):
- Ready rule: ``<name>`` is picked up once its completion marker ``<name>.done`` exists (write the data, then the
  marker). Without a marker a file waits, whatever its age; hidden files and subfolders are ignored.
- Formats: ``.csv`` (the dataset's separator and encoding), ``.tsv``, ``.parquet``: each read by its own reader.
  A file whose name starts with ``items`` holds items (the dataset's item and title columns); any other file
  holds interactions (the dataset's user, item, timestamp and, when it has one, rating columns).
- Validation before anything is stored: the checks of ingest (columns, types, ids, timestamps, ratings) and, against
  the dataset: the same id types, text ids spelled as before, every item with a title (in the item table, a merged
  item file or an item file of the same run: item files merge first), one title per item.
- A bad file moves to ``<inbox>/quarantine/<name>`` with a one-line ``<name>.reason`` beside it; the other files
  still merge. When only some rows fail their checks (a value, an id, an unknown item) and they are at most
  ``max_bad_rows`` of the file's rows (default 1%), only they are quarantined, as read, into
  ``<inbox>/quarantine/<name>.rows-<sha>.parquet`` with a ``.reason`` naming each check and its rows, and the rest
  merges; fixed, that file goes back into the inbox like any other. A fault of the whole file (a missing column, an
  unreadable file, a title that clashes with the dataset's) quarantines the file.
- Exact duplicate interactions (same user, item, timestamp, rating), within a file or with the dataset, and items
  already known with the same title are dropped.
- Storage: each merged file's new rows become one parquet part ``<input_dir>/parts/<kind>/part-<sha>.parquet``
  (original ids, unix seconds), written atomically; the raw files are never edited. Ingest reads the dataset's files
  plus the parts listed in the ledger, in ledger order.
- Ledger ``<input_dir>/parts/ledger.jsonl``: one line per merged file (sha256 of its bytes, name, kind, part, rows,
  added, duplicates, set_aside), rewritten atomically after the part and the quarantined rows: it is the commit
  point. A file whose sha256 is in the ledger adds nothing (delivered twice, renamed, or re-run after a crash); a
  part the ledger does not list (a crash between part and ledger) is removed, and its file, still in the inbox,
  merges again. Merged files move to ``<inbox>/merged/`` last.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import polars as pl

from llara.atomic import atomic_path, remove_path, write_parquet
from llara.data.ingest import read_generic
from llara.data.parts import KINDS, LEDGER_FILE, parts_root, read_ledger
from llara.data.tables import (SUFFIXES, Columns, IdKinds, check_known_items, read_table, validate_interactions,
                               validate_items)
from llara.errors import InputError, RowError, require, require_range
from llara.fingerprint import file_digest

MARKER = ".done"
MAX_BAD_ROWS_LIMIT = 0.5  # the largest share of a file's rows that may be quarantined while the rest merges
KEY = ["user", "item", "timestamp", "rating"]  # an interaction; rows equal in all four are duplicates


@dataclass(frozen=True)
class GenericDataset:
    """Where a generic dataset lives and how its files read (``ingest`` params)."""

    input_dir: Path
    interactions_file: str = "interactions.csv"
    items_file: str = "items.csv"
    columns: Columns = Columns()
    separator: str = ","
    encoding: str = "utf8"


@dataclass
class InboxReport:
    merged: list[dict] = field(default_factory=list)  # file, kind, rows, added, duplicates
    already_merged: list[str] = field(default_factory=list)
    quarantined: list[tuple[str, str]] = field(default_factory=list)  # file, reason
    rows_quarantined: list[tuple[str, str]] = field(default_factory=list)  # rows file, reason (the rest merged)
    waiting: list[str] = field(default_factory=list)  # no completion marker yet

    @property
    def added(self) -> int:
        return sum(m["added"] for m in self.merged if m["kind"] == "interactions")

    def lines(self) -> list[str]:
        out = [f"merged {m['file']}: {m['added']} new {m['kind']} ({m['duplicates']} duplicates dropped"
               + (f", {m['set_aside']} rows quarantined)" if m["set_aside"] else ")") for m in self.merged]
        out += [f"quarantined {reason} (as {name})" for name, reason in self.rows_quarantined]
        out += [f"already merged (same content in the ledger): {name}" for name in self.already_merged]
        out += [f"quarantined {name}: {reason}" for name, reason in self.quarantined]
        out += [f"waiting for its completion marker {name}{MARKER}: {name}" for name in self.waiting]
        return out


def ready_files(inbox: Path) -> tuple[list[Path], list[str]]:
    """Inbox files with a completion marker (item files first, then by name) and the names still waiting."""
    if not inbox.is_dir():
        return [], []
    ready, waiting = [], []
    for path in sorted(inbox.iterdir()):
        if not path.is_file() or path.name.startswith(".") or path.name.endswith(MARKER):
            continue
        (ready if path.with_name(path.name + MARKER).is_file() else waiting).append(path)
    ready.sort(key=lambda p: (file_kind(p) != "items", p.name))
    return ready, [p.name for p in waiting]


def file_kind(path: Path) -> str:
    return "items" if path.name.lower().startswith("items") else "interactions"


@dataclass
class Checked:
    """An inbox file after validation: its kind, new rows, duplicates dropped, and the raw rows set aside (with
    why)."""

    kind: str
    rows: pl.DataFrame
    duplicates: int
    set_aside: pl.DataFrame
    reasons: str


def _row_list(rows: np.ndarray, shown: int = 5) -> str:
    more = f" and {len(rows) - shown} more" if len(rows) > shown else ""
    return ", ".join(str(r) for r in rows[:shown]) + more


class _Dataset:
    """The dataset as it grows during one merge: originals of users and items, titles and interaction keys."""

    def __init__(self, data: GenericDataset):
        self.data = data
        dataset = read_generic(data.input_dir / data.interactions_file, data.input_dir / data.items_file, data.columns,
                               separator=data.separator, encoding=data.encoding)
        maps = dataset.ids
        self.has_rating = data.columns.rating is not None
        self.items = pl.DataFrame({"item": maps.items.to_original(dataset.items["item"]),
                                   "title": dataset.items["raw_title"]})
        inter = dataset.interactions
        self.keys = pl.DataFrame({"user": maps.users.to_original(inter["user"]),
                                  "item": maps.items.to_original(inter["item"]),
                                  "timestamp": inter["timestamp"], "rating": inter["rating"]}).unique()
        self.ledger = read_ledger(data.input_dir)

    def kinds(self) -> IdKinds:
        def kind(values: pl.Series) -> str:
            return "text" if values.dtype == pl.String else "integer"

        users, items = self.keys["user"], self.items["item"]
        return IdKinds(kind(users), kind(items), users if users.dtype == pl.String else None,
                       items if items.dtype == pl.String else None)

    def validate(self, path: Path, max_bad_rows: float = 0.0) -> Checked:
        """The file's new rows (duplicates dropped) and the rows set aside, or :class:`InputError`. Rows that fail
        a check (:class:`RowError`) are set aside while they are at most ``max_bad_rows`` of the file's rows."""
        kind = file_kind(path)
        raw, offset = read_table(path, separator=self.data.separator, encoding=self.data.encoding)
        lines = np.arange(raw.height) + offset  # the file's row number of each row still checked
        checked, faults = raw, []
        while True:
            try:
                rows, duplicates = self._check(kind, checked, path, offset)
                break
            except RowError as exc:
                faults.append((lines[exc.rows], exc.detail))
                bad = sum(len(r) for r, _ in faults)
                if bad > max_bad_rows * raw.height:
                    if max_bad_rows == 0:
                        raise
                    raise InputError(path, f"row {lines[exc.rows[0]]}: {exc.detail} ({bad} of {raw.height} rows "
                                           f"fail their checks, more than the {max_bad_rows:.1%} that may be set "
                                           "aside)") from None
                keep = np.ones(checked.height, dtype=bool)
                keep[exc.rows] = False
                checked, lines = checked.filter(pl.Series(keep)), lines[keep]
        set_aside = np.sort(np.concatenate([r for r, _ in faults])) - offset if faults else np.array([], np.int64)
        reasons = "; ".join(f"{detail} (row{'s' if len(r) > 1 else ''} {_row_list(r)})" for r, detail in faults)
        return Checked(kind, rows, duplicates, raw.select(pl.all().gather(set_aside)), reasons)

    def _check(self, kind: str, raw: pl.DataFrame, path: Path, offset: int) -> tuple[pl.DataFrame, int]:
        """(new rows, duplicates dropped) of a raw frame, or :class:`InputError`."""
        if kind == "items":
            rows = validate_items(raw, self.data.columns, path, offset, kinds=self.kinds())
            titles = rows.select("item", "title").unique("item", keep="first", maintain_order=True)
            known = titles.join(self.items, on="item", how="inner", suffix="_known")
            clash = known.filter(pl.col("title") != pl.col("title_known"))
            if clash.height:
                item, title, old = clash.row(0)
                raise InputError(path, f"item {item!r} is titled {title!r} but the dataset has it as {old!r}")
            new = titles.join(self.items, on="item", how="anti")
            return new, rows.height - new.height
        rows = validate_interactions(raw, self.data.columns, path, offset, kinds=self.kinds())
        check_known_items(rows, self.items["item"], path, offset,
                          "the item table, its merged item files or this run's item files")
        new = rows.unique(maintain_order=True).join(self.keys, on=KEY, how="anti", nulls_equal=True,
                                                     maintain_order="left")
        return new, rows.height - new.height

    def add(self, kind: str, rows: pl.DataFrame) -> None:
        if kind == "items":
            self.items = pl.concat([self.items, rows.select(self.items.columns)])
        else:
            self.keys = pl.concat([self.keys, rows.select(KEY)])


def _write_ledger(input_dir: Path, entries: list[dict]) -> None:
    with atomic_path(parts_root(input_dir) / LEDGER_FILE) as tmp:
        tmp.write_text("".join(json.dumps(e, sort_keys=True) + "\n" for e in entries))


def remove_orphan_parts(input_dir: Path, ledger: list[dict]) -> list[Path]:
    """Parts the ledger does not list (a crash between writing a part and recording it): their file is still in the
    inbox and merges again."""
    listed = {e["part"] for e in ledger if e["part"]}
    orphans = [p for kind in KINDS for p in sorted((parts_root(input_dir) / kind).glob("part-*.parquet"))
               if p.relative_to(parts_root(input_dir)).as_posix() not in listed]
    for path in orphans:
        remove_path(path)
    return orphans


def _move(path: Path, folder: Path, digest: str) -> Path:
    """Move ``path`` (and its marker) into ``folder``; a different file of the same name there keeps its name."""
    folder.mkdir(exist_ok=True)
    target = folder / path.name
    if target.exists() and file_digest(target) != digest:
        target = folder / f"{path.stem}-{digest[:12]}{path.suffix}"
    os.replace(path, target)
    marker = path.with_name(path.name + MARKER)
    if marker.exists():
        marker.unlink()
    return target


def merge_files(data: GenericDataset, files: list[Path], *, inbox: Path | None = None, max_bad_rows: float = 0.0,
                log: Callable[[str], None] = print) -> InboxReport:
    """Merge ``files`` into ``data``, each exactly once (sha256 in the ledger). With ``inbox`` a bad file is
    quarantined there, or only its bad rows while they are at most ``max_bad_rows`` of its rows (the rest merges),
    and merged files move to ``<inbox>/merged/``; without it (files named by the caller) the first bad file raises
    :class:`InputError` (the files before it stay merged, each whole)."""
    report = InboxReport()
    if not files:
        return report
    for orphan in remove_orphan_parts(data.input_dir, read_ledger(data.input_dir)):
        log(f"removed {orphan}: written by an interrupted merge and not in the ledger; its file merges again")
    state = _Dataset(data)
    for path in files:
        digest = file_digest(path)
        if any(e["sha256"] == digest for e in state.ledger):
            report.already_merged.append(path.name)
            log(f"{path.name}: already merged (same content in the ledger), nothing added")
            if inbox is not None:
                _move(path, inbox / "merged", digest)
            continue
        try:
            require(path.suffix.lower() in SUFFIXES, path, f"unsupported file type '{path.suffix}' (use .csv, .tsv "
                                                           "or .parquet)")
            checked = state.validate(path, max_bad_rows if inbox is not None else 0.0)
        except MemoryError:
            raise  # the machine's fault, not the file's
        except Exception as exc:  # noqa: BLE001 - any file that cannot be read must not block the nights after it
            if inbox is None:
                raise
            reason = str(exc) if isinstance(exc, InputError) else \
                f"{path}: unreadable ({type(exc).__name__}: {' '.join(str(exc).split())[:300]})"
            quarantine(path, reason, inbox, digest)
            report.quarantined.append((path.name, reason))
            log(f"quarantined {path.name}: {reason}")
            continue
        kind, rows, duplicates, set_aside = checked.kind, checked.rows, checked.duplicates, checked.set_aside.height
        part = f"{kind}/part-{digest[:16]}.parquet" if rows.height else None
        if part:
            write_parquet(rows, parts_root(data.input_dir) / part)
        if set_aside:  # before the ledger commits the file: a crash between the two merges it (and sets aside) again
            aside = quarantine_rows(path, checked, inbox, digest)
            report.rows_quarantined.append((aside.name, f"{set_aside} rows of {path.name}: {checked.reasons}"))
            log(f"quarantined {set_aside} rows of {path.name} as {aside.name}: {checked.reasons}")
        entry = {"sha256": digest, "file": path.name, "kind": kind, "part": part,
                 "rows": rows.height + duplicates + set_aside, "added": rows.height, "duplicates": duplicates,
                 "set_aside": set_aside}
        state.ledger.append(entry)
        _write_ledger(data.input_dir, state.ledger)
        state.add(kind, rows)
        report.merged.append({k: entry[k] for k in ("file", "kind", "rows", "added", "duplicates", "set_aside")})
        log(f"merged {path.name}: {rows.height} new {kind}, {duplicates} duplicates dropped")
        if inbox is not None:
            _move(path, inbox / "merged", digest)
    return report


def quarantine_rows(path: Path, checked: Checked, inbox: Path, digest: str) -> Path:
    """The rows of ``path`` that failed their checks, as they were read, into
    ``<inbox>/quarantine/<name>.rows-<sha>.parquet`` with a one-line ``.reason`` beside it: fixed, the file goes back
    into the inbox (with its marker) and merges like any other."""
    folder = inbox / "quarantine"
    folder.mkdir(exist_ok=True)
    target = folder / f"{path.name}.rows-{digest[:12]}.parquet"
    write_parquet(checked.set_aside, target)
    return _with_reason(target, f"{path}: {checked.reasons}")


def quarantine(path: Path, reason: str, inbox: Path, digest: str) -> Path:
    """Move a bad file to ``<inbox>/quarantine/`` with ``<name>.reason`` (one line) beside it."""
    return _with_reason(_move(path, inbox / "quarantine", digest), reason)


def _with_reason(target: Path, reason: str) -> Path:
    """``target``, with ``<name>.reason`` beside it: the reason on one line (whitespace collapsed)."""
    with atomic_path(target.with_name(target.name + ".reason")) as tmp:
        tmp.write_text(" ".join(reason.split()) + "\n")
    return target


def merge_inbox(data: GenericDataset, inbox: str | Path | None, files: list[str | Path] = (), *,
                max_bad_rows: float = 0.01, log: Callable[[str], None] = print) -> InboxReport:
    """Merge the caller's ``files`` (a bad one raises) and then the ready files of ``inbox`` (a bad one is
    quarantined; up to ``max_bad_rows`` of a file's rows may be quarantined instead while the rest merges, 0: any
    bad row quarantines the whole file). Reads the dataset only when there is something to merge."""
    require_range("max_bad_rows", max_bad_rows, 0, MAX_BAD_ROWS_LIMIT)
    explicit = merge_files(data, [Path(f) for f in files], log=log)
    if inbox is None:
        return explicit
    inbox = Path(inbox)
    ready, waiting = ready_files(inbox)
    report = merge_files(data, ready, inbox=inbox, max_bad_rows=max_bad_rows, log=log)
    for name in waiting:
        log(f"{name}: waiting for its completion marker {name}{MARKER}")
    report.waiting = waiting
    report.merged = explicit.merged + report.merged
    report.already_merged = explicit.already_merged + report.already_merged
    return report
