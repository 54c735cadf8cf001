"""A corpus of malformed inputs, each run through a real entry point (``llara ...`` or ``python -m tasks.<stage>``).

Every case must: exit 2, print exactly one ``error:`` line naming the file (and row/key) and the fault, print no
traceback, and leave no output of the stage behind (no output directory, no temp files).

Decision on sparse users: users with too few interactions are dropped and counted in meta.json
(``train_users_without_rows``, ``users_dropped_fewer_than_3``); it is an error only when a split part or the user
split becomes empty, or when a listed held-out user cannot have a row.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import polars as pl
import pytest
import yaml

from llara.data.ingest import Columns, read_generic, write_dataset

from conftest import synthetic_tables, write_csv


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def assert_clean_failure(code, err: str, root: Path, before: set[str], names: tuple[str, ...], *, exact_one_line=True):
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert code == 2, f"exit {code}, stderr:\n{err}"
    assert "Traceback" not in err, err
    assert len(errors) == 1, err
    if exact_one_line:
        assert len(lines) == 1, err
    for fragment in names:
        assert fragment in errors[0], f"{fragment!r} not in {errors[0]!r}"
    assert tree(root) == before, f"left behind: {sorted(tree(root) - before)}"


# ------------------------------------------------------------------ inputs


def generic_inputs(root: Path, inter_rows=None, item_rows=None, sub: str = "in") -> tuple[Path, Path]:
    interactions, items = synthetic_tables(n_users=12, n_items=40, seed=11)
    return (
        write_csv(root / sub / "interactions.csv", inter_rows if inter_rows is not None else interactions),
        write_csv(root / sub / "items.csv", item_rows if item_rows is not None else items),
    )


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


def ingested(root: Path, n_users=12, n_items=40, seed=11, per_user=(6, 15)) -> Path:
    interactions, items = synthetic_tables(n_users=n_users, n_items=n_items, seed=seed, per_user=per_user)
    raw = root / "raw"
    ds = read_generic(write_csv(raw / "i.csv", interactions), write_csv(raw / "t.csv", items), Columns(rating="rating"))
    return write_dataset(ds, root / "in" / "data")


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


@dataclass(frozen=True)
class Case:
    id: str
    argv: Callable[[Path], list[str]]
    names: tuple[str, ...]


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
    assert len(CLI_CASES) + len(STAGE_CASES) >= 30


# ------------------------------------------------------------------ stage entry points (python -m tasks.<stage>)


def stage_copy(root: Path, repo_root: Path, params_change: Callable[[dict], None]) -> Path:
    """A working copy holding params.yaml (the repo's, edited), data/reference and a tiny generic dataset."""
    params = yaml.safe_load((repo_root / "params.yaml").read_text())
    params["ingest"].update(source="generic", input_dir="data/raw/mine", movielens_local_dir=None,
                            columns={"user": "user", "item": "item", "timestamp": "timestamp", "rating": "rating", "title": "title"})
    params["split"].update(heldout_users=None, protocols=["leave-one-out"])
    params_change(params)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    inter, items = generic_inputs(root / "data" / "raw" / "mine", sub=".")
    write_dataset(read_generic(inter, items, Columns(rating="rating")), root / "data" / "ingested")
    return root


def run_stage(root: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    env = {**env, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", *args], cwd=root, env=env, capture_output=True, text=True, timeout=120)


def set_key(dotted: str, value):
    def change(params: dict):
        *path, last = dotted.split(".")
        node = params
        for key in path:
            node = node.setdefault(key, {})
        node[last] = value

    return change


def bad_zip(root: Path) -> str:
    archive = root / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ml-100k/u.data", "1\t1\t5\t881250949\n")
        zf.writestr("../escaped.txt", "gotcha")
    return archive.as_uri()


def wrong_checksum_zip(root: Path) -> str:
    archive = root / "ml.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ml-100k/u.data", "1\t1\t5\t881250949\n")
        zf.writestr("ml-100k/u.item", "1|A (1990)|x\n")
    return archive.as_uri()


def movielens_download(make_zip: Callable[[Path], str]):
    def change_with_root(root: Path):
        def change(params: dict):
            params["ingest"].update(source="movielens", input_dir="data/raw/ml", movielens_local_dir=None,
                                    movielens_url=make_zip(root))

        return change

    return change_with_root


@dataclass(frozen=True)
class StageCase:
    id: str
    stage: tuple[str, ...]
    change: Callable  # params change, or a factory of one taking the working copy root when ``needs_root``
    names: tuple[str, ...]
    needs_root: bool = False
    prepare: Callable[[Path], None] | None = None


def _corrupt_local_copy(root: Path) -> None:
    local = root / "local-ml"
    local.mkdir()
    (local / "u.data").write_text("1\t1\t5\t881250949\n")
    (local / "u.item").write_text("1|A (1990)|x\n")


STAGE_CASES = [
    StageCase("params-unknown-key", ("tasks.split", "leave-one-out"), set_key("split.bogus", 1), ("params.yaml", "split.bogus", "unknown key")),
    StageCase("params-unknown-section", ("tasks.ingest",), set_key("splt.seed", 1), ("params.yaml", "splt", "unknown key")),
    StageCase("params-unknown-nested-key", ("tasks.ingest",), set_key("ingest.columns.genre", "g"), ("params.yaml", "ingest.columns.genre", "unknown key")),
    StageCase("params-zero-candidates", ("tasks.split", "leave-one-out"), set_key("split.n_candidates", 0), ("params.yaml", "split.n_candidates")),
    StageCase("params-more-candidates-than-items", ("tasks.split", "leave-one-out"), set_key("split.n_candidates", 500), ("params.yaml", "split.n_candidates", "only 40 items")),
    StageCase("params-negative-seed", ("tasks.split", "leave-one-out"), set_key("split.seed", -1), ("params.yaml", "split.seed")),
    StageCase("params-history-window", ("tasks.split", "leave-one-out"), set_key("split.min_history", 12), ("params.yaml", "split", "min_history")),
    StageCase("params-fraction", ("tasks.split", "paper"), set_key("split.val_fraction", 0.7), ("params.yaml", "split.val_fraction")),
    StageCase("params-protocol-twice", ("tasks.split", "paper"), set_key("split.protocols", ["paper", "paper"]), ("params.yaml", "split.protocols")),
    StageCase("params-encoding", ("tasks.ingest",), set_key("ingest.encoding", "klingon"), ("params.yaml", "ingest.encoding", "klingon")),
    StageCase("params-url-scheme", ("tasks.fetch",), set_key("ingest.movielens_url", "ftp://example.org/x.zip"), ("params.yaml", "ingest.movielens_url")),
    StageCase("params-wrong-type", ("tasks.ingest",), set_key("ingest.min_rating", "high"), ("params.yaml", "ingest.min_rating")),
    StageCase("split-protocol-argument", ("tasks.split", "random"), lambda p: None, ("tasks.split", "invalid choice")),
    StageCase("fetch-generic-dir-missing", ("tasks.fetch",), set_key("ingest.input_dir", "data/raw/absent"), ("params.yaml", "ingest.input_dir", "does not exist")),
    StageCase("fetch-local-copy-checksum", ("tasks.fetch",), lambda p: p["ingest"].update(source="movielens", input_dir="data/raw/ml", movielens_local_dir="local-ml"), ("local-ml/u.data", "sha256 mismatch"), prepare=_corrupt_local_copy),
    StageCase("fetch-zip-path-traversal", ("tasks.fetch",), movielens_download(bad_zip), ("evil.zip", "'../escaped.txt'", "outside the target directory"), needs_root=True),
    StageCase("fetch-url-missing-file", ("tasks.fetch",), movielens_download(lambda root: (root / "absent.zip").as_uri()), ("absent.zip", "No such file"), needs_root=True),
    StageCase("fetch-zip-wrong-checksum", ("tasks.fetch",), movielens_download(wrong_checksum_zip), ("u.data", "sha256 mismatch"), needs_root=True),
]


@pytest.mark.parametrize("case", STAGE_CASES, ids=[c.id for c in STAGE_CASES])
def test_stage_rejects_bad_input_cleanly(case, tmp_path, repo_root, subprocess_env):
    root = tmp_path / "copy"
    root.mkdir()
    change = case.change(root) if case.needs_root else case.change
    stage_copy(root, repo_root, change)
    if case.prepare:
        case.prepare(root)
    before = tree(tmp_path)
    result = run_stage(root, subprocess_env, *case.stage)
    # stages may log progress before failing: exactly one error line, no traceback
    assert_clean_failure(result.returncode, result.stderr, tmp_path, before, case.names, exact_one_line=False)


def test_missing_params_file_names_it(tmp_path, subprocess_env):
    result = run_stage(tmp_path, subprocess_env, "tasks.ingest")
    assert_clean_failure(result.returncode, result.stderr, tmp_path, set(), ("params.yaml", "not found"))


def test_stage_outputs_of_a_good_copy_appear(tmp_path, repo_root, subprocess_env):
    """The working copy used above is valid: the same stages succeed on it (so the failures are the cases')."""
    root = stage_copy(tmp_path, repo_root, lambda p: None)
    for stage in (("tasks.fetch",), ("tasks.ingest",), ("tasks.split", "leave-one-out")):
        result = run_stage(root, subprocess_env, *stage)
        assert result.returncode == 0, result.stderr
    assert (root / "data" / "split" / "leave-one-out" / "test.parquet").is_file()


# ------------------------------------------------------------------ every stage validates params.yaml first

PROBE = r"""
import contextlib, io, json, runpy, sys
results = []
for module, args in json.loads(sys.argv[1]):
    sys.argv = [module, *args]
    err = io.StringIO()
    code = 0
    with contextlib.redirect_stderr(err):
        try:
            runpy.run_module(module, run_name="__main__", alter_sys=True)
        except SystemExit as exc:
            code = exc.code
    results.append({"module": module, "code": code, "stderr": err.getvalue()})
print(json.dumps(results))
"""


def stage_commands(repo_root: Path) -> list[tuple[str, list[str]]]:
    """(module, args) of every stage in dvc.yaml, foreach/matrix stages with their first item, ${...} resolved."""
    import re

    params = yaml.safe_load((repo_root / "params.yaml").read_text())

    def lookup(dotted: str, item=None, key=None):
        if dotted == "item":
            return item
        if dotted == "key":
            return key
        node = item if dotted.startswith("item.") else params
        for part in (dotted.removeprefix("item.") if dotted.startswith("item.") else dotted).split("."):
            node = node[part]
        return node

    commands = []
    for stage in yaml.safe_load((repo_root / "dvc.yaml").read_text())["stages"].values():
        item = key = None
        if "matrix" in stage:  # the first combination
            item = {}
            for name, values in stage["matrix"].items():
                values = lookup(values.strip("${}")) if isinstance(values, str) else values
                item[name] = values[0]
        elif "foreach" in stage:
            items = stage["foreach"]
            if isinstance(items, str):
                items = lookup(items.strip("${}"))
            if isinstance(items, dict):
                key, item = next(iter(items.items()))
            else:
                item = items[0]
            stage = stage["do"]
        cmd = re.sub(r"\$\{([^}]+)\}", lambda m: str(lookup(m.group(1), item, key)), stage["cmd"]).split()
        # a stage is a tasks/ module; `recommend` is itself a Prefect flow (its shards run on a Dask task runner)
        assert cmd[:2] == ["python", "-m"] and cmd[2].startswith(("tasks.", "flows.")), f"stage command {stage['cmd']!r}"
        commands.append((cmd[2], cmd[3:]))
    return commands


def test_every_stage_validates_params_before_doing_anything(tmp_path, repo_root, subprocess_env):
    """Each dvc.yaml stage, run by its own command on a params.yaml with an unknown key, stops with exit 2 naming
    params.yaml and the key, before writing anything."""
    import json

    commands = stage_commands(repo_root)
    assert {"tasks.fetch", "tasks.ingest", "tasks.split"} <= {m for m, _ in commands}
    params = yaml.safe_load((repo_root / "params.yaml").read_text())
    params["split"]["bogus_key"] = 1
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**subprocess_env, "PYTHONPATH": str(repo_root)}
    result = subprocess.run([sys.executable, "-c", PROBE, json.dumps(commands)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    for run in json.loads(result.stdout.splitlines()[-1]):
        errors = [line for line in run["stderr"].splitlines() if line.startswith("error:")]
        assert run["code"] == 2 and len(errors) == 1, run
        assert "params.yaml" in errors[0] and "split.bogus_key" in errors[0], run
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


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


# ------------------------------------------------------------------ later stages (recommenders, LLM) through their CLIs


@pytest.fixture(scope="module")
def later_stage_inputs(tmp_path_factory):
    """A tiny ingest + split, a 1-epoch SASRec export (the recommenders' own CLI) and an LLM folder whose tokenizer
    has no EOS token; skipped while those commands do not exist."""
    from llara.cli import build_parser, main

    commands = build_parser()._subparsers._group_actions[0].choices
    if not {"pretrain", "export", "finetune"} <= set(commands):
        pytest.skip("the recommenders / LLM commands are not installed in this build")
    root = tmp_path_factory.mktemp("later")
    data = ingested(root)
    assert main(["split", "--data", str(data), "--protocol", "leave-one-out", "--min-rating", "-1", "--out", str(root / "split")]) == 0
    assert main(["pretrain", "--split", str(root / "split"), "--items", str(data / "items.parquet"), "--backbone", "sasrec",
                 "--epochs", "1", "--no-progress", "--out", str(root / "pretrain")]) == 0
    assert main(["export", str(root / "pretrain"), "--out", str(root / "export")]) == 0
    pl.read_parquet(data / "items.parquet").head(30).write_parquet(root / "items30.parquet")

    from transformers import AutoTokenizer, LlamaConfig

    from llara.llm.loading import find_smollm2_gguf

    gguf = find_smollm2_gguf()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tokenizer.eos_token = None
    tokenizer.save_pretrained(root / "llm-no-eos")
    LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                num_attention_heads=2, num_key_value_heads=1).save_pretrained(root / "llm-no-eos")
    return root


def finetune_argv(root: Path, out: Path, *, items: str = "in/data/items.parquet", llm: str = "llm-no-eos") -> list:
    return ["finetune", "hybrid-curriculum", "--items", root / items, "--recommender", root / "export",
            "--train", root / "split" / "train.parquet", "--llm", root / llm, "--out", out]


LATER_CASES = [
    Case("llm-path-missing", lambda r, o: finetune_argv(r, o, llm="nowhere/model"), ("nowhere/model", "does not exist")),
    Case("tokenizer-without-eos", lambda r, o: finetune_argv(r, o), ("llm-no-eos", "no EOS token")),
    Case("embeddings-rows-mismatch", lambda r, o: finetune_argv(r, o, items="items30.parquet"), ("export", "40 item embeddings", "30 items")),
    Case("pretrain-negative-lr", lambda r, o: ["pretrain", "--split", r / "split", "--items", r / "in/data/items.parquet",
                                               "--backbone", "sasrec", "--lr", "-1", "--out", o], ("--lr", "must be in (0, 1]")),
    Case("pretrain-split-missing", lambda r, o: ["pretrain", "--split", r / "nosplit", "--backbone", "sasrec", "--out", o], ("nosplit", "not found")),
    Case("export-model-missing", lambda r, o: ["export", r / "nomodel", "--out", o], ("nomodel",)),
]


@pytest.mark.parametrize("case", LATER_CASES, ids=[c.id for c in LATER_CASES])
def test_later_stages_reject_bad_input_cleanly(case, later_stage_inputs, tmp_path, cli):
    before = tree(tmp_path)
    code, _out, err = cli(*case.argv(later_stage_inputs, tmp_path / "out"))
    assert_clean_failure(code, err, tmp_path, before, case.names)


LATER_STAGE_CASES = [
    StageCase("params-negative-finetune-lr", ("tasks.finetune", "hybrid-curriculum"), set_key("finetune.recipes.ours.lr", -0.1), ("params.yaml", "finetune.recipes.ours.lr")),
    StageCase("params-negative-pretrain-lr", ("tasks.pretrain", "leave-one-out", "sasrec"), set_key("pretrain.lr", -1), ("params.yaml", "pretrain.lr")),
    StageCase("params-llm-path-missing", ("tasks.llm",), set_key("llm.model", "/nonexistent/llara-llm"), ("/nonexistent/llara-llm", "does not exist")),
]


@pytest.mark.parametrize("case", LATER_STAGE_CASES, ids=[c.id for c in LATER_STAGE_CASES])
def test_later_stage_entry_points_reject_bad_params(case, tmp_path, repo_root, subprocess_env):
    if not (repo_root / "tasks" / f"{case.stage[0].split('.')[1]}.py").is_file():
        pytest.skip(f"{case.stage[0]} does not exist yet")
    test_stage_rejects_bad_input_cleanly(case, tmp_path, repo_root, subprocess_env)
