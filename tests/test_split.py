"""Split protocols on tiny synthetic data (rows, candidates, user splits, paper files) and on the real MovieLens-100K."""

from __future__ import annotations

import json

import polars as pl
import pyarrow.parquet as pq
import pytest

from llara.data.ingest import Dataset, read_movielens
from llara.data.schema import INTERACTIONS_SCHEMA, ITEMS_SCHEMA, SPLIT_SCHEMA
from llara.data.split import SplitConfig, make_split, sequence_positions, split_to_dir
from llara.data.split_files import read_split, write_split
from llara.errors import InputError

from conftest import synthetic_tables, write_csv


def dataset(interactions: list[dict], n_items: int | None = None) -> Dataset:
    n_items = n_items or max(r["item"] for r in interactions)
    inter = pl.DataFrame(
        [{**r, "rating": float(r.get("rating", 5))} for r in interactions], schema=INTERACTIONS_SCHEMA, orient="row"
    )
    items = pl.DataFrame(
        {"item": range(1, n_items + 1), "title": [f"t{i}" for i in range(1, n_items + 1)]}
    ).with_columns(pl.col("title").alias("raw_title"))
    return Dataset(inter, items.cast(ITEMS_SCHEMA), source="synthetic")


def sequences_dataset(seqs: dict[int, list[int]], n_items: int = 60, ratings: dict | None = None) -> Dataset:
    """Users with the given item sequences (timestamps increasing in list order)."""
    rows = [
        {"user": u, "item": i, "timestamp": 100 + t, "rating": (ratings or {}).get((u, i), 5)}
        for u, seq in seqs.items()
        for t, i in enumerate(seq)
    ]
    return dataset(rows, n_items)


@pytest.fixture(scope="module")
def synthetic() -> Dataset:
    interactions, _ = synthetic_tables(n_users=50, n_items=80, seed=5, per_user=(2, 25))
    return dataset(interactions, 80)


def heldout_csv(path, val: list[int], test: list[int]):
    rows = [{"user_id": u, "split": "val", "row_index": k} for k, u in enumerate(val)]
    rows += [{"user_id": u, "split": "test", "row_index": k} for k, u in enumerate(test)]
    return str(write_csv(path, rows))


# ---------------------------------------------------------------- sequences


def test_ties_keep_source_order_and_min_rating_filters():
    rows = [
        {"user": 1, "item": 5, "timestamp": 10},
        {"user": 2, "item": 9, "timestamp": 1},
        {"user": 1, "item": 3, "timestamp": 10},
        {"user": 1, "item": 7, "timestamp": 10},
        {"user": 1, "item": 8, "timestamp": 5, "rating": 2},
        {"user": 1, "item": 2, "timestamp": 10},
    ]
    ds = dataset(rows)
    assert user_sequences(ds.interactions, None) == {1: [8, 5, 3, 7, 2], 2: [9]}
    assert user_sequences(ds.interactions, 3.0) == {1: [5, 3, 7, 2], 2: [9]}
    positions = sequence_positions(ds.interactions, None, history_len=2)
    assert positions.filter(pl.col("user") == 1)["history"].to_list() == [[], [8], [8, 5], [5, 3], [3, 7]]
    assert positions.filter(pl.col("user") == 1)["n"].unique().to_list() == [5]


def user_sequences(interactions, min_rating):
    """{user: items in sequence order} read back from :func:`sequence_positions`."""
    positions = sequence_positions(interactions, min_rating, history_len=1).sort(["user", "pos"])
    grouped = positions.group_by("user", maintain_order=True).agg("target")
    return dict(zip(grouped["user"].to_list(), grouped["target"].to_list()))


# ---------------------------------------------------------------- paper protocol


def test_paper_rows_window_and_heldout_targets(tmp_path):
    seqs = {u: [((u * 7 + k * 3) % 60) + 1 for k in range(n)] for u, n in zip(range(1, 9), [15, 4, 3, 12, 2, 6, 11, 5])}
    assert all(len(set(s)) == len(s) for s in seqs.values())
    ds = sequences_dataset(seqs)
    config = SplitConfig(heldout_users=heldout_csv(tmp_path / "h.csv", val=[4, 5], test=[7, 1]))
    split = make_split(ds, config)
    # train: every position with >= 3 history items, history = the previous (up to) 10 items
    expected = [
        (u, seq[max(0, t - 10) : t], seq[t]) for u in (2, 3, 6, 8) for seq in [seqs[u]] for t in range(3, len(seq))
    ]
    assert list(zip(*split.train.select("user", "history", "target").to_dict(as_series=False).values())) == expected
    # val/test: one row per held-out user; the final item is the target, history the last <= 10 before it
    assert split.val.select("user", "history", "target").rows() == [(4, seqs[4][1:11], seqs[4][11]), (5, seqs[5][:1], seqs[5][1])]
    assert split.test.select("user", "history", "target").rows() == [(1, seqs[1][4:14], seqs[1][14]), (7, seqs[7][:10], seqs[7][10])]
    assert split.meta["users"] == {"train": 3, "val": 2, "test": 2}  # user 3 has 3 items: no row with 3 history items
    assert split.meta["train_users_without_rows"] == 1


def test_candidates_contract(synthetic):
    split = make_split(synthetic, SplitConfig(n_candidates=20, min_rating=None))
    history = synthetic.interactions.group_by("user").agg(pl.col("item"))
    full = {u: set(i) for u, i in history.iter_rows()}
    positions = []
    for part in ("train", "val", "test"):
        frame = split.part(part)
        assert frame.schema == pl.Schema(SPLIT_SCHEMA)
        for user, hist, target, cands in frame.iter_rows():
            assert 1 <= len(hist) <= 10
            assert len(cands) == 20 and len(set(cands)) == 20
            assert cands.count(target) == 1
            assert not (set(cands) - {target}) & full[user], "a negative comes from the user's full history"
            assert all(1 <= c <= 80 for c in cands)
            positions.append(cands.index(target))
    assert len(set(positions)) > 10  # shuffled: the target is not at a fixed position


def test_negatives_avoid_low_rated_history_items_too():
    """Candidates exclude everything the user interacted with, not only the rating-filtered sequence."""
    seqs = {u: list(range(1 + u, 8 + u)) for u in range(1, 13)}
    ratings = {(u, i): 1 for u, s in seqs.items() for i in s[:3]}
    ds = sequences_dataset(seqs, n_items=30, ratings=ratings)
    split = make_split(ds, SplitConfig(min_rating=3, n_candidates=20, min_history=1))
    for frame in (split.train, split.val, split.test):
        for user, _h, target, cands in frame.iter_rows():
            assert not (set(cands) - {target}) & set(seqs[user])


def test_seeded_user_split_is_8_1_1_and_reproducible(synthetic):
    a = make_split(synthetic, SplitConfig(heldout_users=None, min_rating=None, seed=1))
    b = make_split(synthetic, SplitConfig(heldout_users=None, min_rating=None, seed=1))
    c = make_split(synthetic, SplitConfig(heldout_users=None, min_rating=None, seed=2))
    assert a.meta["users"]["val"] == 5 and a.meta["users"]["test"] == 5
    users = lambda s, p: set(s.part(p)["user"].to_list())  # noqa: E731
    assert not users(a, "val") & users(a, "test") and not users(a, "train") & (users(a, "val") | users(a, "test"))
    assert users(a, "val") == users(b, "val") and users(a, "test") == users(b, "test")
    assert (users(a, "val"), users(a, "test")) != (users(c, "val"), users(c, "test"))
    for part in ("train", "val", "test"):
        assert a.part(part).equals(b.part(part))
    assert a.test["candidates"].to_list() != c.test["candidates"].to_list() or users(a, "test") != users(c, "test")


# ---------------------------------------------------------------- leave-one-out


def test_leave_one_out_last_is_test_second_last_is_val():
    seqs = {1: list(range(1, 15)), 2: [20, 21, 22], 3: [30, 31], 4: [40, 41, 42, 43, 44, 45]}
    split = make_split(sequences_dataset(seqs), SplitConfig(protocol="leave-one-out"))
    assert split.test.select("user", "history", "target").rows() == [
        (1, list(range(4, 14)), 14), (2, [20, 21], 22), (4, [40, 41, 42, 43, 44], 45)
    ]
    assert split.val.select("user", "history", "target").rows() == [
        (1, list(range(3, 13)), 13), (2, [20], 21), (4, [40, 41, 42, 43], 44)
    ]
    # train rows: positions before the val item with >= 3 history items
    assert split.train.select("user", "target").rows() == [(1, t) for t in range(4, 13)] + [(4, 43)]
    assert split.meta["users_dropped_fewer_than_3"] == 1


# ---------------------------------------------------------------- paper-files


def test_paper_files_reads_the_authors_rows(tmp_path):
    seqs = {u: [((u * 5 + k * 7) % 50) + 1 for k in range(8)] for u in range(1, 11)}
    ds = sequences_dataset(seqs, n_items=60)
    pad = 99
    files = tmp_path / "paper"
    files.mkdir()
    # the authors' layout: 0-based ids, history right-padded to 10, len_seq = real length
    for name, users in (("Val_data.parquet", [3, 8]), ("Test_data.parquet", [5])):
        rows = [
            {"history": [i - 1 for i in seqs[u][:-1][-10:]] + [pad] * (10 - min(10, len(seqs[u]) - 1)),
             "next_item": seqs[u][-1] - 1, "len_seq": min(10, len(seqs[u]) - 1)}
            for u in users
        ]
        pl.DataFrame(rows).write_parquet(files / name)
    config = SplitConfig(protocol="paper-files", heldout_users=heldout_csv(tmp_path / "h.csv", [3, 8], [5]), paper_files_dir=str(files))
    split = make_split(ds, config)
    assert split.val.select("user", "history", "target").rows() == [(u, seqs[u][:-1], seqs[u][-1]) for u in (3, 8)]
    assert split.test.select("user", "history", "target").rows() == [(5, seqs[5][:-1], seqs[5][-1])]
    assert set(split.train["user"].to_list()) == set(seqs) - {3, 5, 8}


# ---------------------------------------------------------------- artifacts


def test_write_read_round_trip(tmp_path, synthetic):
    split = make_split(synthetic, SplitConfig(heldout_users=None, min_rating=None))
    out = write_split(split, tmp_path / "split")
    back = read_split(out)
    for part in ("train", "val", "test"):
        assert back.part(part).equals(split.part(part))
    assert json.loads((out / "meta.json").read_text()) == back.meta
    assert back.meta["rows"]["train"] == split.train.height
    assert sorted(p.name for p in tmp_path.iterdir()) == ["split"]


@pytest.mark.parametrize("protocol", ["paper", "leave-one-out"])
def test_streamed_split_equals_one_pass(tmp_path, synthetic, monkeypatch, protocol):
    """split_to_dir builds and writes STREAM_ROWS rows at a time: the files hold exactly the in-memory split."""
    import llara.data.candidates as candidates_module
    import llara.data.split as split_module

    config = SplitConfig(protocol=protocol, heldout_users=None, min_rating=None)
    monkeypatch.setattr(candidates_module, "DRAW_CHUNK", 7)
    monkeypatch.setattr(split_module, "STREAM_ROWS", 10 ** 9)
    one_pass = make_split(synthetic, config)
    monkeypatch.setattr(split_module, "STREAM_ROWS", 14)
    meta = split_to_dir(synthetic, config, tmp_path / "split")
    assert one_pass.train.height > 3 * 14
    back = read_split(tmp_path / "split")
    for part in ("train", "val", "test"):
        assert back.part(part).equals(one_pass.part(part)), part
    assert meta == one_pass.meta == back.meta
    assert pq.ParquetFile(tmp_path / "split" / "train.parquet").num_row_groups == -(-one_pass.train.height // 14)


def test_too_few_unseen_items_for_candidates_names_the_user():
    seqs = {u: list(range(1, 19 + (u % 2))) for u in range(1, 8)}
    with pytest.raises(InputError, match=r"user \d+: only \d+ unseen items"):
        make_split(sequences_dataset(seqs, n_items=21), SplitConfig(heldout_users=None, min_rating=None))


# ---------------------------------------------------------------- the real MovieLens-100K


@pytest.fixture(scope="module")
def movielens(shared_data):
    return read_movielens(shared_data / "ml-100k")


def _reference(repo_root):
    ref = pl.read_csv(repo_root / "data" / "reference" / "paper_heldout_users.csv")
    return {p: ref.filter(pl.col("split") == p).sort("row_index")["user_id"].to_list() for p in ("val", "test")}


def test_real_paper_split_matches_the_papers_heldout_users(movielens, repo_root):
    heldout = str(repo_root / "data" / "reference" / "paper_heldout_users.csv")
    split = make_split(movielens, SplitConfig(protocol="paper", heldout_users=heldout))
    assert split.meta["users"] == {"train": 754, "val": 94, "test": 95}
    assert split.meta["rows"]["train"] == 66_127
    ref = _reference(repo_root)
    assert sorted(split.val["user"].to_list()) == sorted(ref["val"])
    assert sorted(split.test["user"].to_list()) == sorted(ref["test"])


def test_real_leave_one_out(movielens):
    split = make_split(movielens, SplitConfig(protocol="leave-one-out"))
    assert split.meta["users"]["test"] == 943 and split.meta["rows"]["train"] == 77_805


def test_real_paper_files_gives_the_authors_test_targets(movielens, repo_root, shared_data):
    files = shared_data / "movielens"
    if not (files / "Test_data.parquet").is_file():
        pytest.skip(f"the authors' split files are not at {files}")
    heldout = str(repo_root / "data" / "reference" / "paper_heldout_users.csv")
    split = make_split(movielens, SplitConfig(protocol="paper-files", heldout_users=heldout, paper_files_dir=str(files)))
    authors = pl.read_parquet(files / "Test_data.parquet")
    by_user = dict(zip(split.test["user"].to_list(), split.test["target"].to_list()))
    assert [by_user[u] for u in _reference(repo_root)["test"]] == [t + 1 for t in authors["next_item"].to_list()]
    assert split.meta["users"] == {"train": 754, "val": 94, "test": 95}


def test_text_ids_without_ratings_split_with_default_config(tmp_path):
    """Implicit feedback with text ids: the default min_rating (3) does not apply to data without ratings, every
    interaction is kept, held-out users are listed by their original ids, and rows translate back to them."""
    from llara.data.ingest import read_generic

    interactions, items = synthetic_tables(n_users=20, n_items=40, seed=3)
    rows = [{"user": f"user-{r['user']:03d}", "item": f"sku{r['item']}", "timestamp": r["timestamp"]} for r in interactions]
    titled = [{"item": f"sku{r['item']}", "title": r["title"]} for r in items]
    ds = read_generic(write_csv(tmp_path / "i.csv", rows), write_csv(tmp_path / "t.csv", titled))
    assert ds.interactions["rating"].null_count() == ds.interactions.height
    loo = make_split(ds, SplitConfig(protocol="leave-one-out"))
    assert loo.meta["min_rating_applied"] is False
    assert loo.test.height + loo.val.height + loo.train.height > 0
    last = {}
    for r in rows:
        last[r["user"]] = r["item"]  # timestamps increase per user: the last row is the test target
    back = ds.ids.with_originals(loo.test, {"user": "user", "target": "item", "candidates": "item"})
    assert {u: t for u, t in back.select("original_user", "original_target").rows()} == {u: last[u] for u in back["original_user"]}
    assert all(t in c for t, c in back.select("original_target", "original_candidates").rows())
    csv = str(write_csv(tmp_path / "h.csv", [{"user_id": "user-003", "split": "val"}, {"user_id": "user-007", "split": "test"}]))
    paper = make_split(ds, SplitConfig(protocol="paper", heldout_users=csv))
    assert ds.ids.users.to_original(paper.test["user"]).to_list() == ["user-007"]
    assert ds.ids.users.to_original(paper.val["user"]).to_list() == ["user-003"]
    assert paper.test["target"].to_list() == [ds.ids.items.lookup(last["user-007"])]
    write_csv(tmp_path / "h.csv", [{"user_id": "user-999", "split": "val"}])
    with pytest.raises(InputError, match=r"h.csv: row 2: user user-999 \(user_id\) is not in the dataset"):
        make_split(ds, SplitConfig(protocol="paper", heldout_users=csv))
