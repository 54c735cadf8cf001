"""A corpus of malformed inputs, each run through a real entry point (``llara ...`` or ``python -m tasks.<stage>``).

Every case must: exit 2, print exactly one ``error:`` line naming the file (and row/key) and the fault, print no
traceback, and leave no output of the stage behind (no output directory, no temp files).

Decision on sparse users: users with too few interactions are dropped and counted in meta.json
(``train_users_without_rows``, ``users_dropped_fewer_than_3``); it is an error only when a split part or the user
split becomes empty, or when a listed held-out user cannot have a row.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import polars as pl
import pytest

from _bad_input_helpers import Case, assert_clean_failure, generic_inputs, ingested, tree
from conftest import synthetic_tables


# ------------------------------------------------------------------ inputs


def edit_rows(which: str, index: int, **changes):
    """Inputs where row ``index`` of the interactions (``which='i'``) or items (``'t'``) table is changed."""

    def build(root: Path):
        interactions, items = synthetic_tables(n_users=12, n_items=40, seed=11)
        rows = interactions if which == "i" else items
        rows[index] = {**rows[index], **changes}
        return generic_inputs(root, interactions, items)

    return build


def ingest_argv(build: Callable, *extra: str) -> Callable[[Path], list[str]]:
    def argv(root: Path) -> list[str]:
        inter, items = build(root)
        return ["ingest", "--interactions", inter, "--items", items, "--out", root / "out", *extra]

    return argv


def raw_file(name: str, content: bytes, table: str = "i"):
    """Replace the interactions (``i``) or items (``t``) file by ``name`` holding ``content``."""

    def build(root: Path):
        inter, items = generic_inputs(root)
        path = root / "in" / name
        if table == "i":
            inter.unlink()
        else:
            items.unlink()
        path.write_bytes(content)
        return (path, items) if table == "i" else (inter, path)

    return build


def parquet_interactions(frame: pl.DataFrame, truncate: bool = False):
    def build(root: Path):
        inter, items = generic_inputs(root)
        path = root / "in" / "interactions.parquet"
        frame.write_parquet(path)
        if truncate:
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        return path, items

    return build


def header_only(root: Path):
    inter, items = generic_inputs(root)
    inter.write_text("user,item,timestamp\n")
    return inter, items


def interactions_dir(root: Path):
    inter, items = generic_inputs(root)
    inter.unlink()
    inter.mkdir()
    return inter, items


def missing_titles(root: Path):
    interactions, items = synthetic_tables(n_users=12, n_items=40, seed=11)
    return generic_inputs(root, interactions, [r for r in items if r["item"] != interactions[4]["item"]])


def item_conflict(root: Path):
    interactions, items = synthetic_tables(n_users=12, n_items=40, seed=11)
    return generic_inputs(root, interactions, items + [{"item": 3, "title": "Another Title"}])


def movielens_dir(root: Path, data: str, item: bytes | None = b"1|Quiet Harbor, The (1971)|x\n") -> Path:
    directory = root / "in" / "ml"
    directory.mkdir(parents=True)
    (directory / "u.data").write_text(data)
    if item is not None:
        (directory / "u.item").write_bytes(item)
    return directory


# data dirs for `llara split`

def split_argv(prepare: Callable[[Path], None] | None = None, *extra: str, protocol: str = "leave-one-out", **kw):
    def argv(root: Path) -> list[str]:
        data = ingested(root, **kw)
        if prepare:
            prepare(data)
        return ["split", "--data", data, "--protocol", protocol, "--min-rating", "-1", "--out", root / "out", *extra]

    return argv


def rewrite(name: str, change: Callable[[pl.DataFrame], pl.DataFrame]):
    def prepare(data: Path):
        path = data / name
        change(pl.read_parquet(path)).write_parquet(path)

    return prepare


def drop_first_used_item(data: Path):
    used = pl.read_parquet(data / "interactions.parquet")["item"][0]
    rewrite("items.parquet", lambda d: d.filter(pl.col("item") != used))(data)


def truncate(name: str):
    def prepare(data: Path):
        path = data / name
        path.write_bytes(path.read_bytes()[:100])

    return prepare


def heldout(rows: str):
    def argv(root: Path) -> list[str]:
        data = ingested(root)
        csv = root / "in" / "heldout.csv"
        csv.write_text("user_id,split,row_index\n" + rows)
        return ["split", "--data", data, "--protocol", "paper", "--heldout-users", csv, "--min-rating", "-1", "--out", root / "out"]

    return argv


def paper_files(mutate: Callable[[pl.DataFrame], pl.DataFrame] = lambda d: d, heldout_rows="1,val,0\n2,test,0\n"):
    def argv(root: Path) -> list[str]:
        data = ingested(root)
        inter = pl.read_parquet(data / "interactions.parquet")
        files = root / "in" / "paper"
        files.mkdir()
        for name, user in (("Val_data.parquet", 1), ("Test_data.parquet", 2)):
            seq = inter.filter(pl.col("user") == user)["item"].to_list()
            frame = pl.DataFrame({"history": [[i - 1 for i in seq[:-1][-10:]]], "next_item": [seq[-1] - 1],
                                  "len_seq": [min(10, len(seq) - 1)]})
            mutate(frame).write_parquet(files / name)
        csv = root / "in" / "heldout.csv"
        csv.write_text("user_id,split,row_index\n" + heldout_rows)
        return ["split", "--data", data, "--protocol", "paper-files", "--paper-files", files, "--heldout-users", csv,
                "--min-rating", "-1", "--out", root / "out"]

    return argv


CLI_CASES = [
    # ---- columns
    Case("missing-column", ingest_argv(lambda r: generic_inputs(r, [{"user": 1, "item": 2}]), ), ("interactions.csv", "missing column", "timestamp")),
    Case("misnamed-column", ingest_argv(generic_inputs, "--user-col", "uid"), ("interactions.csv", "missing column", "uid")),
    Case("extra-field-in-a-row", ingest_argv(raw_file("interactions.csv", b"user,item,timestamp\n1,2,3\n1,3,4,9\n")), ("interactions.csv", "row 3", "4 fields")),
    Case("unbalanced-quote", ingest_argv(raw_file("interactions.csv", b'user,item,timestamp\n1,2,3\n"1,3,4\n')), ("interactions.csv", "row 3")),
    Case("items-missing-title-column", ingest_argv(raw_file("items.csv", b"item,name\n1,a\n", "t")), ("items.csv", "missing column", "title")),
    # ---- types and ranges
    Case("id-text-without-title", ingest_argv(edit_rows("i", 3, item="abc")), ("interactions.csv", "row 5", "item 'abc'", "no title")),
    Case("id-whitespace-only", ingest_argv(edit_rows("i", 0, user="   ")), ("interactions.csv", "row 2", "'user'", "whitespace only")),
    Case("id-two-spellings", ingest_argv(lambda r: generic_inputs(r, [{"user": u, "item": 1, "timestamp": 1} for u in ("u1", "7", "07")])),
         ("interactions.csv", "row 4", "'user'", "mixes integer and text ids", "'07'", "'7'")),
    Case("id-fractional-in-parquet", ingest_argv(parquet_interactions(pl.DataFrame({"user": [1.0, 2.5], "item": [1, 2], "timestamp": [5, 6]}))), ("interactions.parquet", "row 1", "not a whole number")),
    Case("id-empty", ingest_argv(edit_rows("i", 2, user=None)), ("interactions.csv", "row 4", "'user'", "empty")),
    Case("id-nan", ingest_argv(edit_rows("i", 2, item="NaN")), ("interactions.csv", "row 4", "'item'", "null")),
    Case("rating-not-a-number", ingest_argv(edit_rows("i", 1, rating="five"), "--rating-col", "rating"), ("interactions.csv", "row 3", "'rating'", "not a number")),
    Case("timestamp-not-a-time", ingest_argv(edit_rows("i", 5, timestamp="yesterday")), ("interactions.csv", "row 7", "'timestamp'")),
    Case("timestamp-negative", ingest_argv(edit_rows("i", 5, timestamp=-10)), ("interactions.csv", "row 7", "out of range")),
    Case("timestamp-milliseconds", ingest_argv(edit_rows("i", 0, timestamp=1_700_000_000_000)), ("interactions.csv", "row 2", "out of range")),
    Case("timestamp-year-2200", ingest_argv(lambda r: generic_inputs(r, [{"user": 1, "item": 1, "timestamp": "2200-01-01T00:00:00"}]), ), ("interactions.csv", "row 2", "out of range")),
    Case("timestamp-list-in-parquet", ingest_argv(parquet_interactions(pl.DataFrame({"user": [[1]], "item": [1], "timestamp": [5]}))), ("interactions.parquet", "'user'", "List")),
    Case("parquet-null-id", ingest_argv(parquet_interactions(pl.DataFrame({"user": [1.0, None], "item": [1, 2], "timestamp": [5, 6]}))), ("interactions.parquet", "row 1", "empty")),
    # ---- titles and the item table
    Case("title-empty", ingest_argv(edit_rows("t", 4, title="")), ("items.csv", "row 6", "item 5", "empty title")),
    Case("title-nan", ingest_argv(edit_rows("t", 0, title="NaN")), ("items.csv", "row 2", "empty title")),
    Case("item-two-titles", ingest_argv(item_conflict), ("items.csv", "item 3", "different titles")),
    Case("item-table-misses-items", ingest_argv(missing_titles), ("interactions.csv", "has no title in", "items.csv")),
    # ---- files
    Case("file-empty", ingest_argv(raw_file("interactions.csv", b"")), ("interactions.csv", "empty")),
    Case("file-header-only", ingest_argv(header_only), ("interactions.csv", "no rows")),
    Case("file-not-found", lambda r: ["ingest", "--interactions", r / "nope.csv", "--items", r / "nope2.csv", "--out", r / "out"], ("nope.csv", "not found")),
    Case("file-is-a-directory", ingest_argv(interactions_dir), ("interactions.csv", "not a file")),
    Case("file-type-unsupported", ingest_argv(raw_file("interactions.xlsx", b"PK\x03\x04junk")), ("interactions.xlsx", "unsupported")),
    Case("parquet-truncated", ingest_argv(parquet_interactions(pl.DataFrame({"user": [1], "item": [1], "timestamp": [5]}), truncate=True)), ("interactions.parquet", "cannot read")),
    Case("encoding-latin1-read-as-utf8", ingest_argv(raw_file("items.csv", "item,title\n1,Café\n".encode("latin-1"), "t")), ("items.csv", "not valid utf8", "encoding")),
    Case("binary-garbage", ingest_argv(raw_file("interactions.csv", bytes(range(256)) * 4)), ("interactions.csv", "not valid utf8")),
    Case("encoding-unknown", ingest_argv(generic_inputs, "--encoding", "klingon"), ("--encoding", "klingon")),
    Case("items-flag-missing", lambda r: ["ingest", "--interactions", generic_inputs(r)[0], "--out", r / "out"], ("--items", "required")),
    Case("out-is-the-input-directory", lambda r: ["ingest", "--interactions", generic_inputs(r)[0], "--items", r / "in" / "items.csv", "--out", r / "in"], ("--out", "holds other files", "interactions.csv")),
    Case("out-is-a-file", lambda r: ["split", "--data", ingested(r), "--protocol", "paper", "--out", r / "in" / "data" / "meta.json"], ("--out", "not a directory")),
    Case("min-rating-without-ratings", ingest_argv(generic_inputs, "--min-rating", "3"), ("interactions.csv", "no rating column")),
    Case("min-rating-drops-everything", ingest_argv(generic_inputs, "--rating-col", "rating", "--min-rating", "9"), ("interactions.csv", "rating >= 9")),
    # ---- MovieLens layout
    Case("movielens-checksum", lambda r: ["ingest", "--movielens", movielens_dir(r, "1\t1\t5\t881250949\n"), "--out", r / "out"], ("u.data", "sha256 mismatch")),
    Case("movielens-missing-u-item", lambda r: ["ingest", "--no-verify", "--movielens", movielens_dir(r, "1\t1\t5\t881250949\n", None), "--out", r / "out"], ("u.item", "not found")),
    Case("movielens-short-row", lambda r: ["ingest", "--no-verify", "--movielens", movielens_dir(r, "1\t1\t5\t881250949\n1\t1\n"), "--out", r / "out"], ("u.data", "row 2")),
    Case("movielens-item-row", lambda r: ["ingest", "--no-verify", "--movielens", movielens_dir(r, "1\t1\t5\t881250949\n", b"1|A (1990)|x\nno separator\n"), "--out", r / "out"], ("u.item", "row 2")),
    # ---- split: the ingested artifact
    Case("split-data-missing", lambda r: ["split", "--data", r / "nothing", "--protocol", "paper", "--out", r / "out"], ("nothing", "not found")),
    Case("split-parquet-truncated", split_argv(truncate("interactions.parquet")), ("interactions.parquet", "cannot read parquet")),
    Case("split-extra-column", split_argv(rewrite("items.parquet", lambda d: d.with_columns(pl.lit(1).alias("genre")))), ("items.parquet", "unexpected column", "genre")),
    Case("split-missing-column", split_argv(rewrite("items.parquet", lambda d: d.drop("raw_title"))), ("items.parquet", "missing column", "raw_title")),
    Case("split-wrong-dtype", split_argv(rewrite("interactions.parquet", lambda d: d.with_columns(pl.col("user").cast(pl.String)))), ("interactions.parquet", "'user'", "String")),
    Case("split-unknown-item", split_argv(drop_first_used_item), ("items.parquet", "no title")),
    Case("split-duplicate-titles", split_argv(rewrite("items.parquet", lambda d: d.with_columns(pl.lit("Same").alias("title")))), ("items.parquet", "not unique")),
    # ---- split: parameters
    Case("split-zero-candidates", split_argv(None, "--n-candidates", "0"), ("--n-candidates", "must be in [2, 1000]")),
    Case("split-more-candidates-than-items", split_argv(None, "--n-candidates", "500"), ("--n-candidates", "only 40 items")),
    Case("split-history-len-zero", split_argv(None, "--history-len", "0"), ("--history-len",)),
    Case("split-min-history-zero", split_argv(None, "--min-history", "0"), ("--min-history",)),
    Case("split-unknown-protocol", split_argv(None, protocol="random"), ("--protocol", "invalid choice")),
    Case("split-seed-not-int", split_argv(None, "--seed", "abc"), ("--seed", "invalid int")),
    # ---- split: data too small / sparse users
    Case("split-too-few-users", split_argv(None, n_users=2), ("interactions.parquet", "too few")),
    Case("split-users-with-one-interaction", split_argv(None, per_user=(1, 1)), ("interactions.parquet", "part is empty")),
    Case("split-paper-too-few-users", split_argv(None, protocol="paper", n_users=5, per_user=(1, 1)), ("interactions.parquet", "too few for a user split")),
    Case("split-too-few-unseen-items", split_argv(None, n_items=21, per_user=(19, 20)), ("interactions.parquet", "unseen items")),
    # ---- split: held-out users file
    Case("heldout-unknown-user", heldout("1,val,0\n999,test,0\n"), ("heldout.csv", "user 999")),
    Case("heldout-bad-part", heldout("1,val,0\n2,train,0\n"), ("heldout.csv", "row 3", "'val' or 'test'")),
    Case("heldout-twice", heldout("1,val,0\n1,test,0\n"), ("heldout.csv", "twice")),
    Case("heldout-not-int", heldout("x1,val,0\n2,test,0\n"), ("heldout.csv", "row 2", "user_id")),
    # ---- split: the authors' files
    Case("paper-files-missing-dir", lambda r: ["split", "--data", ingested(r), "--protocol", "paper-files", "--paper-files", r / "none", "--heldout-users", r / "h.csv", "--min-rating", "-1", "--out", r / "out"], ("none", "not found")),
    Case("paper-files-row-count", paper_files(heldout_rows="1,val,0\n3,val,1\n2,test,0\n"), ("heldout.csv", "2 val users", "1 rows")),
    Case("paper-files-wrong-offset", paper_files(lambda d: d.with_columns(pl.col("next_item") + 100)), ("paper", "not in the item table")),
    Case("paper-files-bad-len", paper_files(lambda d: d.with_columns(pl.lit(50).alias("len_seq"))), ("Val_data.parquet", "row 0", "len_seq")),
    Case("paper-files-float-history", paper_files(lambda d: d.with_columns(pl.col("history").cast(pl.List(pl.Float64)))), ("Val_data.parquet", "history")),
    # ---- evaluate: checked before any model is loaded
    Case("evaluate-unknown-mode", lambda r: ["evaluate", r / "run", "--split", r / "test.parquet", "--modes", "generate,rank_llm,beam"], ("--modes", "unknown mode", "beam")),
    Case("evaluate-empty-modes", lambda r: ["evaluate", r / "run", "--split", r / "test.parquet", "--modes", " , "], ("--modes", "empty")),
]


@pytest.mark.parametrize("case", CLI_CASES, ids=[c.id for c in CLI_CASES])
def test_cli_rejects_bad_input_cleanly(case, tmp_path, cli):
    argv = case.argv(tmp_path)
    before = tree(tmp_path)
    code, _out, err = cli(*argv)
    assert_clean_failure(code, err, tmp_path, before, case.names)


@pytest.mark.parametrize("out", [".", "..", "~"])
def test_outputs_never_replace_the_working_directory_its_parents_or_home(tmp_path, cli, monkeypatch, out):
    work = tmp_path / "home" / "work"
    inter, items = generic_inputs(work)
    monkeypatch.chdir(work)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    before = tree(tmp_path)
    code, _out, err = cli("ingest", "--interactions", inter, "--items", items, "--out", Path(out).expanduser())
    assert_clean_failure(code, err, tmp_path, before, ("refusing to replace",))


def test_corpus_is_large_enough():
    assert len(CLI_CASES) >= 30


# ------------------------------------------------------------------ fuzzed files: bad input, never an internal error


def _mutate(data: bytes, rng) -> bytes:
    b = bytearray(data)
    for _ in range(int(rng.integers(1, 5))):
        if not b:
            break
        i = int(rng.integers(0, len(b)))
        op = int(rng.integers(0, 4))
        if op == 0:
            b[i] = b",|\t\n\"'-.0123456789aN \r\x00\xff"[int(rng.integers(0, 24))]
        elif op == 1:
            del b[i : i + int(rng.integers(1, 10))]
        elif op == 2:
            b[i:i] = [b",", b"\n", b'"', b"-1", b"1e9", b"\xc3", b"||", b"NaN", b"1.5", b", The (1999)"][int(rng.integers(0, 10))]
        else:
            del b[i:]
    return bytes(b)


def test_fuzzed_inputs_fail_cleanly_or_succeed(tmp_path, cli):
    """120 randomly corrupted CSV, parquet and MovieLens files: every run exits 0 or 2 with one line, never 1."""
    import numpy as np

    rng = np.random.default_rng(2024)
    inter, items = generic_inputs(tmp_path / "good")
    frames = {"i": pl.read_csv(inter), "t": pl.read_csv(items)}
    ml_data = "".join(f"{u}\t{i}\t{(u * i) % 5 + 1}\t{881250949 + u * 7 + i}\n" for u in range(1, 9) for i in range(1, 15))
    ml_item = "".join(f"{i}|Film {i}, The (19{50 + i})|01-Jan-1995||http://x|0|1\n" for i in range(1, 15))
    outcomes = []
    for k in range(120):
        case = tmp_path / str(k)
        case.mkdir()
        kind = ["csv-i", "csv-t", "parquet-i", "parquet-t", "movielens"][k % 5]
        if kind == "movielens":
            (case / "u.data").write_bytes(_mutate(ml_data.encode(), rng) if rng.random() < 0.5 else ml_data.encode())
            (case / "u.item").write_bytes(_mutate(ml_item.encode("latin-1"), rng))
            argv = ["ingest", "--no-verify", "--movielens", case]
        else:
            paths = {}
            for which, source in (("i", inter), ("t", items)):
                if kind.endswith(which) and kind.startswith("parquet"):
                    paths[which] = case / f"{which}.parquet"
                    frames[which].write_parquet(paths[which])
                else:
                    paths[which] = case / f"{which}.csv"
                    paths[which].write_bytes(source.read_bytes())
                if kind.endswith(which):
                    paths[which].write_bytes(_mutate(paths[which].read_bytes(), rng))
            argv = ["ingest", "--interactions", paths["i"], "--items", paths["t"], "--rating-col", "rating"]
        code, _out, err = cli(*argv, "--out", case / "out")
        assert code in (0, 2) and len(err.strip().splitlines()) == (code == 2), (k, kind, code, err)
        if code == 0:
            code, _out, err = cli("split", "--data", case / "out", "--protocol", "leave-one-out", "--n-candidates", "5",
                                  "--min-rating", "-1", "--out", case / "split")
            assert code in (0, 2) and len(err.strip().splitlines()) == (code == 2), (k, kind, "split", code, err)
        else:
            assert not (case / "out").exists()
        outcomes.append(code)
    assert 0 in outcomes and 2 in outcomes
