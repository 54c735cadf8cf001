"""The inbox (llara.data.inbox) on real files: any format into any dataset format, validation before anything is
stored, quarantine beside good files, exact duplicates dropped, exactly-once merging (ledger) also across a SIGKILL,
new items, the completion marker; ingest then reads the merged parts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from llara.data.inbox import GenericDataset, merge_inbox, read_ledger
from llara.data.ingest import read_generic
from llara.data.tables import Columns

from conftest import sigkill_when, write_csv

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = Columns(user="user_id", item="track", timestamp="ts", title="name")


def make_dataset(root: Path) -> GenericDataset:
    """A CSV dataset with text user ids and integer item ids, no ratings."""
    raw = root / "raw"
    write_csv(raw / "interactions.csv", [{"user_id": f"u{u}", "track": i, "ts": 1000 + 10 * u + i}
                                         for u in range(1, 5) for i in range(1, 6)])
    write_csv(raw / "items.csv", [{"track": i, "name": f"Song {i}"} for i in range(1, 8)])
    return GenericDataset(raw, columns=COLUMNS)


def deliver(inbox: Path, name: str, rows: list[dict] | None = None, *, frame: pl.DataFrame | None = None,
            marker: bool = True) -> Path:
    inbox.mkdir(parents=True, exist_ok=True)
    path = inbox / name
    if frame is not None:
        frame.write_parquet(path)
    elif name.endswith(".tsv"):
        path.write_text("\t".join(rows[0]) + "\n" + "".join("\t".join(str(v) for v in r.values()) + "\n" for r in rows))
    else:
        write_csv(path, rows)
    if marker:
        (inbox / (name + ".done")).touch()
    return path


def dataset_rows(data: GenericDataset) -> list[tuple]:
    """The accumulated interactions as ingest reads them, in original ids."""
    ds = read_generic(data.input_dir / data.interactions_file, data.input_dir / data.items_file, data.columns)
    back = ds.ids.with_originals(ds.interactions, {"user": "user", "item": "item"})
    return back.select("original_user", "original_item", "timestamp").rows()


def snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_parquet_and_tsv_merge_into_a_csv_dataset_without_touching_its_files(tmp_path):
    data = make_dataset(tmp_path)
    before = {name: (data.input_dir / name).read_bytes() for name in ("interactions.csv", "items.csv")}
    inbox = tmp_path / "inbox"
    deliver(inbox, "day1.parquet", frame=pl.DataFrame({"user_id": ["u9", "u9"], "track": [3, 4], "ts": [5000, 5001]}))
    deliver(inbox, "day2.tsv", [{"user_id": "u8", "track": 6, "ts": "2001-09-09T01:46:40"}])
    report = merge_inbox(data, inbox, log=lambda m: None)
    assert [(m["file"], m["added"]) for m in report.merged] == [("day1.parquet", 2), ("day2.tsv", 1)]
    assert {name: (data.input_dir / name).read_bytes() for name in before} == before  # no raw bytes appended
    rows = dataset_rows(data)
    assert rows[-3:] == [("u9", 3, 5000), ("u9", 4, 5001), ("u8", 6, 1_000_000_000)]
    assert len(rows) == 23
    assert sorted(p.name for p in (inbox / "merged").iterdir()) == ["day1.parquet", "day2.tsv"]
    assert not list(inbox.glob("*.done"))


def test_duplicate_delivery_and_renamed_copy_add_rows_once_and_exact_duplicates_drop(tmp_path):
    data = make_dataset(tmp_path)
    inbox = tmp_path / "inbox"
    rows = [{"user_id": "u9", "track": 1, "ts": 7000}, {"user_id": "u9", "track": 1, "ts": 7000},  # twice in the file
            {"user_id": "u1", "track": 1, "ts": 1011},  # already in the dataset
            {"user_id": "u9", "track": 2, "ts": 7001}]
    deliver(inbox, "batch.csv", rows)
    first = merge_inbox(data, inbox, log=lambda m: None)
    assert first.merged == [{"file": "batch.csv", "kind": "interactions", "rows": 4, "added": 2, "duplicates": 2,
                             "set_aside": 0}]
    after_first = snapshot(data.input_dir)
    deliver(inbox, "batch.csv", rows)  # delivered again
    deliver(inbox, "batch-copy.csv", rows)  # the same bytes under another name
    again = merge_inbox(data, inbox, log=lambda m: None)
    assert again.merged == [] and sorted(again.already_merged) == ["batch-copy.csv", "batch.csv"]
    assert snapshot(data.input_dir) == after_first
    # the same rows in another format (other bytes): every row is an exact duplicate, nothing is added
    deliver(inbox, "batch.parquet", frame=pl.DataFrame(rows))
    third = merge_inbox(data, inbox, log=lambda m: None)
    assert third.merged[0]["added"] == 0 and third.merged[0]["duplicates"] == 4
    assert len(dataset_rows(data)) == 22
    assert sorted(p.name for p in (inbox / "merged").iterdir())[:2] == ["batch-copy.csv", "batch.csv"]


BAD_FILES = {
    "a-missing-column.csv": ([{"user_id": "u9", "ts": 5}], "missing column(s) ['track']"),
    "b-empty-user.csv": ([{"user_id": "u9", "track": 1, "ts": 5}, {"user_id": "", "track": 2, "ts": 6}],
                         "row 3: column 'user_id' is empty"),
    "c-bad-time.csv": ([{"user_id": "u9", "track": 1, "ts": "soon"}], "row 2: column 'ts' is neither"),
    "d-unknown-item.csv": ([{"user_id": "u9", "track": 99, "ts": 5}], "row 2: item 99 has no title"),
    "e-text-item.csv": ([{"user_id": "u9", "track": "x7", "ts": 5}], "row 2: column 'track' holds the text id 'x7'"),
    "f-huge-id.parquet": (pl.DataFrame({"user_id": ["u9"], "track": pl.Series([2 ** 63], dtype=pl.UInt64), "ts": [5]}),
                          "column 'track' is outside the 64-bit integer range: 9223372036854775808"),
    "g-not-parquet.parquet": (b"PAR1 this is no parquet file", "cannot read (ComputeError"),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_a_malformed_file_is_quarantined_next_to_two_good_ones(tmp_path, name):
    data = make_dataset(tmp_path)
    inbox = tmp_path / "inbox"
    deliver(inbox, "1-good.csv", [{"user_id": "u9", "track": 1, "ts": 9000}])
    rows, reason = BAD_FILES[name]
    if isinstance(rows, bytes):
        (inbox / name).write_bytes(rows)
        (inbox / (name + ".done")).touch()
    else:
        deliver(inbox, name, None if isinstance(rows, pl.DataFrame) else rows,
                frame=rows if isinstance(rows, pl.DataFrame) else None)
    deliver(inbox, "3-good.parquet", frame=pl.DataFrame({"user_id": ["u10"], "track": [2], "ts": [9001]}))
    report = merge_inbox(data, inbox, log=lambda m: None)
    assert [m["file"] for m in report.merged] == ["1-good.csv", "3-good.parquet"]
    assert [q[0] for q in report.quarantined] == [name] and reason in report.quarantined[0][1]
    assert (inbox / "quarantine" / name).is_file()
    line = (inbox / "quarantine" / f"{name}.reason").read_text()
    assert line.count("\n") == 1 and reason in line and name in line
    assert dataset_rows(data)[-2:] == [("u9", 1, 9000), ("u10", 2, 9001)]
    assert not any(name in e["file"] for e in read_ledger(data.input_dir))
    # the next night is not blocked: a new good file merges, the quarantined one stays where it is
    deliver(inbox, "4-good.csv", [{"user_id": "u9", "track": 3, "ts": 9002}])
    assert [m["file"] for m in merge_inbox(data, inbox, log=lambda m: None).merged] == ["4-good.csv"]


def test_an_unexpected_failure_on_one_file_quarantines_it_and_blocks_no_night(tmp_path, monkeypatch):
    """Any error a file causes while it is validated (here one no check foresaw) quarantines that file with the
    error's type and message, instead of failing every night on it."""
    import llara.data.inbox as inbox_module

    validate = inbox_module._Dataset.validate

    def fragile(self, path, *args):
        if path.name == "2-odd.csv":
            raise ValueError("an unforeseen\nfault")
        return validate(self, path, *args)
    monkeypatch.setattr(inbox_module._Dataset, "validate", fragile)
    data = make_dataset(tmp_path)
    inbox = tmp_path / "inbox"
    for name, ts in (("1-good.csv", 9000), ("2-odd.csv", 9001), ("3-good.csv", 9002)):
        deliver(inbox, name, [{"user_id": "u9", "track": 1, "ts": ts}])
    report = merge_inbox(data, inbox, log=lambda m: None)
    assert [m["file"] for m in report.merged] == ["1-good.csv", "3-good.csv"]
    line = (inbox / "quarantine" / "2-odd.csv.reason").read_text()
    assert line.count("\n") == 1 and "2-odd.csv: unreadable (ValueError: an unforeseen fault)" in line


def test_new_items_arrive_through_an_items_file_and_untitled_items_are_quarantined(tmp_path):
    data = make_dataset(tmp_path)
    inbox = tmp_path / "inbox"
    deliver(inbox, "plays.csv", [{"user_id": "u1", "track": 20, "ts": 9000}, {"user_id": "u2", "track": 21, "ts": 9001}])
    deliver(inbox, "items-new.csv", [{"track": 20, "name": "Song 20"}, {"track": 21, "name": "Song 21"},
                                     {"track": 1, "name": "Song 1"}])  # item 1 is known with this title: dropped
    deliver(inbox, "orphans.csv", [{"user_id": "u1", "track": 30, "ts": 9002}])
    deliver(inbox, "items-clash.csv", [{"track": 2, "name": "Not Song 2"}])
    report = merge_inbox(data, inbox, log=lambda m: None)
    assert [(m["file"], m["added"], m["duplicates"]) for m in report.merged] == [
        ("items-new.csv", 2, 1), ("plays.csv", 2, 0)]  # item files first: the plays of items 20, 21 are known
    assert dict(report.quarantined).keys() == {"orphans.csv", "items-clash.csv"}
    assert "item 30 has no title" in dict(report.quarantined)["orphans.csv"]
    assert "'Not Song 2' but the dataset has it as 'Song 2'" in dict(report.quarantined)["items-clash.csv"]
    ds = read_generic(data.input_dir / "interactions.csv", data.input_dir / "items.csv", COLUMNS)
    titles = dict(zip(ds.ids.items.to_original(ds.items["item"]).to_list(), ds.items["title"].to_list()))
    assert titles[20] == "Song 20" and titles[21] == "Song 21" and len(titles) == 9


def test_a_file_without_its_completion_marker_waits(tmp_path):
    data = make_dataset(tmp_path)
    inbox = tmp_path / "inbox"
    deliver(inbox, "late.csv", [{"user_id": "u9", "track": 1, "ts": 9000}], marker=False)
    report = merge_inbox(data, inbox, log=lambda m: None)
    assert report.merged == [] and report.waiting == ["late.csv"] and (inbox / "late.csv").is_file()
    assert read_ledger(data.input_dir) == []
    (inbox / "late.csv.done").touch()
    assert [m["file"] for m in merge_inbox(data, inbox, log=lambda m: None).merged] == ["late.csv"]


KILL_SCRIPT = """
import json, sys, time
sys.path.insert(0, {root!r})
from pathlib import Path
import llara.data.inbox as inbox
from llara.data.tables import Columns
point = sys.argv[3]
original = getattr(inbox, point)
def pause(*args, **kwargs):
    out = original(*args, **kwargs)
    Path(sys.argv[4]).write_text("paused")
    time.sleep(120)  # the parent kills us here
    return out
setattr(inbox, point, pause)
data = inbox.GenericDataset(Path(sys.argv[1]), columns=Columns(**json.loads(sys.argv[5])))
inbox.merge_inbox(data, Path(sys.argv[2]), log=lambda m: None)
"""


def kill_merge_at(point: str, data: GenericDataset, inbox: Path, tmp: Path) -> None:
    """Run the inbox merge in a child process, SIGKILL it right after ``point`` (a function of llara.data.inbox)."""
    script, flag = tmp / "merge.py", tmp / "paused"
    flag.unlink(missing_ok=True)
    script.write_text(KILL_SCRIPT.format(root=str(ROOT)))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    columns = json.dumps(data.columns.__dict__)
    child = subprocess.Popen([sys.executable, str(script), str(data.input_dir), str(inbox), point, str(flag), columns],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    sigkill_when(child, flag.exists, timeout=120)


@pytest.mark.parametrize("point", ["write_parquet", "_write_ledger", "_move"])
def test_sigkill_at_any_point_adds_the_rows_exactly_once(tmp_path, point):
    """Killed after the part is written (before the ledger), after the ledger (before the file moves) or after the
    move: the next run ends with the rows exactly once and the file out of the inbox."""
    data = make_dataset(tmp_path)
    inbox = tmp_path / "inbox"
    deliver(inbox, "day.csv", [{"user_id": "u9", "track": 1, "ts": 9000}, {"user_id": "u9", "track": 2, "ts": 9001}])
    kill_merge_at(point, data, inbox, tmp_path)
    merge_inbox(data, inbox, log=lambda m: None)
    rows = dataset_rows(data)
    assert rows.count(("u9", 1, 9000)) == 1 and rows.count(("u9", 2, 9001)) == 1 and len(rows) == 22
    assert [e["file"] for e in read_ledger(data.input_dir)] == ["day.csv"]
    assert not (inbox / "day.csv").exists() and (inbox / "merged" / "day.csv").is_file()
    parts = sorted(p.name for p in (data.input_dir / "parts" / "interactions").iterdir())
    assert len(parts) == 1 and parts[0].startswith("part-")
    assert json.loads((data.input_dir / "parts" / "ledger.jsonl").read_text())["added"] == 2


def plays(n: int, start: int = 20_000) -> list[dict]:
    """``n`` good interactions of known items (tracks 1-7), distinct timestamps."""
    return [{"user_id": f"u{100 + k % 9}", "track": 1 + k % 7, "ts": start + k} for k in range(n)]


def test_a_few_bad_rows_are_quarantined_the_rest_merges_and_the_fixed_rows_merge_later(tmp_path):
    """200 rows, 2 of them bad (1% may be set aside): 198 merge; the 2 go to quarantine as read, with each check and
    its file rows; fixed (the missing item's title delivered, the timestamp corrected) they merge like any file."""
    data = make_dataset(tmp_path)
    inbox = tmp_path / "inbox"
    rows = plays(200)
    rows[10] = {"user_id": "u7", "track": 30, "ts": 30_000}  # item 30 has no title yet
    rows[150] = {"user_id": "u8", "track": 2, "ts": "soon"}
    deliver(inbox, "day.csv", rows)
    before = len(dataset_rows(data))
    report = merge_inbox(data, inbox, log=lambda m: None)
    assert report.merged == [{"file": "day.csv", "kind": "interactions", "rows": 200, "added": 198, "duplicates": 0,
                              "set_aside": 2}]
    assert report.quarantined == []
    merged = dataset_rows(data)
    assert len(merged) == before + 198 and ("u7", 30, 30_000) not in merged
    [(name, reason)] = report.rows_quarantined
    aside = inbox / "quarantine" / name
    assert name.startswith("day.csv.rows-") and aside.suffix == ".parquet"
    kept = pl.read_parquet(aside)
    assert kept.columns == ["user_id", "track", "ts"] and kept.height == 2
    assert kept["user_id"].to_list() == ["u7", "u8"] and kept["ts"].to_list() == ["30000", "soon"]
    line = (inbox / "quarantine" / f"{name}.reason").read_text()
    assert line.count("\n") == 1
    assert "column 'ts' is not an integer: 'soon' (row 152)" in line  # the file's rows: header is row 1
    assert "item 30 has no title" in line and "(row 12)" in line
    assert any("2 rows quarantined" in x for x in report.lines())
    assert read_ledger(data.input_dir)[0]["set_aside"] == 2
    # the fix: the item's title arrives, the timestamp is corrected, the rows go back into the inbox
    deliver(inbox, "items-late.csv", [{"track": 30, "name": "Song 30"}])
    deliver(inbox, "fixed.parquet", frame=kept.with_columns(pl.Series("ts", [30_000, 30_001])))
    again = merge_inbox(data, inbox, log=lambda m: None)
    assert [(m["file"], m["added"], m["set_aside"]) for m in again.merged] == [("items-late.csv", 1, 0),
                                                                             ("fixed.parquet", 2, 0)]
    final = dataset_rows(data)
    assert len(final) == before + 200 and final[-2:] == [("u7", 30, 30_000), ("u8", 2, 30_001)]


@pytest.mark.parametrize("max_bad_rows, bad", [(0.01, 3), (0.0, 1)])
def test_more_bad_rows_than_allowed_quarantine_the_whole_file(tmp_path, max_bad_rows, bad):
    data = make_dataset(tmp_path)
    inbox = tmp_path / "inbox"
    rows = plays(200)
    for k in range(bad):
        rows[50 + k] = {"user_id": "", "track": 1, "ts": 40_000 + k}
    deliver(inbox, "day.csv", rows)
    before = snapshot(data.input_dir)
    report = merge_inbox(data, inbox, max_bad_rows=max_bad_rows, log=lambda m: None)
    assert report.merged == [] and report.rows_quarantined == []
    [(name, reason)] = report.quarantined
    assert name == "day.csv" and "row 52: column 'user_id' is empty" in reason
    assert (f"{bad} of 200 rows fail their checks, more than the 1.0% that may be set aside" in reason) == (bad == 3)
    assert (inbox / "quarantine" / "day.csv").is_file() and snapshot(data.input_dir) == before


def test_a_fault_of_the_whole_file_is_not_set_aside_row_by_row(tmp_path):
    """A title clash with the dataset is the file's fault (no row to set aside): the whole file is quarantined."""
    data = make_dataset(tmp_path)
    inbox = tmp_path / "inbox"
    deliver(inbox, "items-new.csv", [{"track": 40 + k, "name": f"Song {40 + k}"} for k in range(199)]
            + [{"track": 2, "name": "Not Song 2"}])
    report = merge_inbox(data, inbox, max_bad_rows=0.5, log=lambda m: None)
    assert [q[0] for q in report.quarantined] == ["items-new.csv"] and report.merged == []


def test_a_crash_after_the_rows_are_quarantined_merges_the_rest_once(tmp_path):
    data = make_dataset(tmp_path)
    inbox = tmp_path / "inbox"
    rows = plays(150)
    rows[3] = {"user_id": "u7", "track": 31, "ts": 30_000}
    deliver(inbox, "day.csv", rows)
    before = len(dataset_rows(data))
    kill_merge_at("quarantine_rows", data, inbox, tmp_path)
    assert read_ledger(data.input_dir) == [] and (inbox / "day.csv").is_file()
    report = merge_inbox(data, inbox, log=lambda m: None)
    assert [(m["added"], m["set_aside"]) for m in report.merged] == [(149, 1)]
    assert len(dataset_rows(data)) == before + 149
    assert len(list((inbox / "quarantine").glob("day.csv.rows-*.parquet"))) == 1
