"""Ingest on tiny synthetic data: title cleaning, unique display titles, normalization; plus the real MovieLens counts."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from llara.data.ingest import (
    Columns,
    clean_movielens_title,
    make_titles_unique,
    read_dataset,
    read_generic,
    read_movielens,
    write_dataset,
)
from llara.data.idmap import predictions_with_originals
from llara.data.schema import INTERACTIONS_SCHEMA, ITEMS_SCHEMA
from llara.errors import InputError

from conftest import synthetic_tables, write_csv


# Synthetic titles in MovieLens' raw format (no real MovieLens titles in the repository).
@pytest.mark.parametrize(
    "raw, title, year",
    [
        ("Quiet Harbor, The (1971)", "The Quiet Harbor", "1971"),
        ("Long Winter, A (1984)", "A Long Winter", "1984"),
        ("Orchard in Spring, An (1950)", "An Orchard in Spring", "1950"),
        ("Glass River, The (Rivière de verre, La) (1996)", "The Glass River (Rivière de verre, La)", "1996"),
        ("Night Train, A (Nachtzug) (1961)", "A Night Train (Nachtzug)", "1961"),
        ("Good, The Odd and The Lost, The (1966)", "The Good, The Odd and The Lost", "1966"),
        ("Paper Moons (1995)", "Paper Moons", "1995"),
        ("  Paper Moons (1995)  ", "Paper Moons", "1995"),
        ("Signal, The", "The Signal", None),
        ("Theory of Rain", "Theory of Rain", None),
        ("Castle, Then (1990)", "Castle, Then", "1990"),  # not an article
        ("Apollo, Anno (1990)", "Apollo, Anno", "1990"),
        ("2048 (1999)", "2048", "1999"),
        ("Year (2001) Remake (2003)", "Year (2001) Remake", "2003"),  # only the trailing year goes
        ("unknown", "unknown", None),
    ],
)
def test_clean_movielens_title(raw, title, year):
    assert clean_movielens_title(raw) == (title, year)


def _unique(titles, years=None, ids=None):
    ids = ids or list(range(1, len(titles) + 1))
    items = pl.DataFrame({"item": ids, "title": titles, "raw_title": titles}, schema=ITEMS_SCHEMA)
    return make_titles_unique(items, years)["title"].to_list()


def test_duplicate_titles_get_the_year_when_it_separates_them():
    assert _unique(["Hamlet", "Hamlet", "Other"], ["1948", "1996", "2000"]) == ["Hamlet (1948)", "Hamlet (1996)", "Other"]


def test_duplicate_titles_with_the_same_year_get_the_item_id():
    got = _unique(["Crash", "Crash", "Crash"], ["1996", "1996", "2004"], ids=[7, 9, 11])
    assert got == ["Crash [item 7]", "Crash [item 9]", "Crash (2004)"]


def test_duplicates_are_case_insensitive_and_without_years_use_ids():
    assert _unique(["Ran", "RAN"]) == ["Ran [item 1]", "RAN [item 2]"]


def test_suffix_colliding_with_an_existing_title_falls_back_to_ids():
    got = _unique(["X", "X", "X (1990)"], ["1990", "1991", None])
    assert len({t.casefold() for t in got}) == 3
    assert got[2] != "X (1990)" or got[0] != "X (1990)"


def test_display_titles_are_always_unique_on_adversarial_titles():
    rng = np.random.default_rng(3)
    bases = ["A", "a", "A (1990)", "A [item 2]", "A (1990) [item 1]", "B", "b [item 5]"]
    for _ in range(200):
        n = int(rng.integers(2, 9))
        titles = [bases[i] for i in rng.integers(0, len(bases), n)]
        years = [None if y == 0 else str(1989 + y) for y in rng.integers(0, 3, n)]
        got = _unique(titles, years)
        assert len({t.casefold() for t in got}) == n, (titles, years, got)


def test_generic_ingest_normalizes_and_keeps_source_order(tmp_path):
    rows = [
        {"uid": 3, "iid": 20, "ts": "2001-09-09T01:46:40", "r": 4.5},
        {"uid": 1, "iid": 10, "ts": "2001-09-09T01:46:40", "r": 2},
        {"uid": 3, "iid": 10, "ts": "2001-09-09T01:46:41", "r": "5"},
    ]
    inter = write_csv(tmp_path / "i.csv", rows)
    items = write_csv(tmp_path / "t.csv", [{"iid": 20, "name": " Twenty "}, {"iid": 10, "name": "Ten, The (1990)"}])
    ds = read_generic(inter, items, Columns("uid", "iid", "ts", "r", "name"))
    assert ds.interactions.schema == pl.Schema(INTERACTIONS_SCHEMA)
    # dense internal ids in the order of the original ids (users 1, 3 -> 1, 2; items 10, 20 -> 1, 2)
    assert ds.interactions.rows() == [(2, 2, 1_000_000_000, 4.5), (1, 1, 1_000_000_000, 2.0), (2, 1, 1_000_000_001, 5.0)]
    assert ds.ids.users.frame.rows() == [(1, 1), (2, 3)] and ds.ids.items.frame.rows() == [(1, 10), (2, 20)]
    # generic titles are only stripped (MovieLens cleaning is for MovieLens) and items are sorted by id
    assert ds.items.rows() == [(1, "Ten, The (1990)", "Ten, The (1990)"), (2, "Twenty", "Twenty")]


def test_generic_ingest_min_rating_tsv_and_parquet_inputs(tmp_path):
    interactions, items = synthetic_tables(5, 12, seed=1)
    pl.DataFrame(interactions).write_csv(tmp_path / "inter.tsv", separator="\t")
    pl.DataFrame(items).write_parquet(tmp_path / "items.parquet")
    ds = read_generic(tmp_path / "inter.tsv", tmp_path / "items.parquet", Columns(rating="rating"), min_rating=3)
    assert ds.interactions.height == sum(r["rating"] >= 3 for r in interactions)
    assert ds.interactions["rating"].min() >= 3
    assert ds.items.height == 12


def test_utf8_bom_is_accepted(tmp_path):
    interactions, items = synthetic_tables(4, 10, seed=2)
    inter = write_csv(tmp_path / "i.csv", interactions, encoding="utf-8-sig")
    ds = read_generic(inter, write_csv(tmp_path / "t.csv", items, encoding="utf-8-sig"))
    assert ds.interactions.height == len(interactions)


def test_latin1_with_the_encoding_set(tmp_path):
    interactions, _ = synthetic_tables(4, 3, seed=2)
    items = [{"item": 1, "title": "Café"}, {"item": 2, "title": "Über"}, {"item": 3, "title": "Straße"}]
    ds = read_generic(
        write_csv(tmp_path / "i.csv", interactions),
        write_csv(tmp_path / "t.csv", items, encoding="latin-1"),
        encoding="latin-1",
    )
    assert ds.items["title"].to_list() == ["Café", "Über", "Straße"]


def test_duplicate_item_rows_with_the_same_title_are_merged(tmp_path):
    interactions, items = synthetic_tables(3, 5, seed=4)
    ds = read_generic(write_csv(tmp_path / "i.csv", interactions), write_csv(tmp_path / "t.csv", items + items[:2]))
    assert ds.items["item"].to_list() == [1, 2, 3, 4, 5]


def test_write_and_read_back(tmp_path, synthetic_csv):
    inter, items = synthetic_csv(n_users=6, n_items=15)
    ds = read_generic(inter, items)
    out = write_dataset(ds, tmp_path / "out")
    back = read_dataset(out)
    assert back.interactions.equals(ds.interactions) and back.items.equals(ds.items)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["n_interactions"] == ds.interactions.height and meta["n_items"] == 15
    assert sorted(p.name for p in out.iterdir()) == ["interactions.parquet", "item_ids.parquet", "items.parquet",
                                                      "meta.json", "user_ids.parquet"]
    assert back.ids.users.frame.equals(ds.ids.users.frame) and back.ids.items.frame.equals(ds.ids.items.frame)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_movielens_format_without_checksum(tmp_path):
    """The raw MovieLens layout (tab-separated u.data, '|'-separated latin-1 u.item) on synthetic rows."""
    (tmp_path / "u.data").write_text("2\t1\t4\t881250949\n1\t2\t2\t881250950\n2\t3\t5\t881250949\n")
    (tmp_path / "u.item").write_bytes(
        "1|Quiet Harbor, The (1971)|01-Jan-1971||http://x|0|1\n"
        "2|Hamlet (1948)|01-Jan-1948||http://x|0|1\n"
        "3|Hamlet (1996)|01-Jan-1996||http://x|0|1\n\n".encode("iso-8859-1")
    )
    ds = read_movielens(tmp_path, verify=False)
    assert ds.interactions.rows() == [(2, 1, 881250949, 4.0), (1, 2, 881250950, 2.0), (2, 3, 881250949, 5.0)]
    assert ds.items["title"].to_list() == ["The Quiet Harbor", "Hamlet (1948)", "Hamlet (1996)"]
    assert ds.items["raw_title"].to_list() == ["Quiet Harbor, The (1971)", "Hamlet (1948)", "Hamlet (1996)"]
    with pytest.raises(InputError, match="u.data"):
        read_movielens(tmp_path)  # checksums are verified by default


def test_real_movielens_counts(shared_data):
    ds = read_movielens(shared_data / "ml-100k")
    inter, items = ds.interactions, ds.items
    assert inter.height == 100_000
    assert inter.filter(pl.col("rating") >= 3).height == 82_520
    assert inter["user"].n_unique() == 943
    assert items.height == 1682 and inter["item"].n_unique() == 1682
    # GroupLens ids are already 1..N: the maps are the identity, so splits and metrics keep their ids
    assert ds.ids.users.frame["original"].to_list() == ds.ids.users.frame["id"].to_list() == list(range(1, 944))
    assert ds.ids.items.frame["original"].to_list() == list(range(1, 1683))
    titles = items["title"].to_list()
    assert len({t.casefold() for t in titles}) == len(titles)
    assert not any(t.endswith((", The", ", A", ", An")) for t in titles)
    # cleaning moved articles of many titles and dropped (almost) every year
    moved = sum(t.startswith(("The ", "A ", "An ")) and not r.startswith(("The ", "A ", "An ")) for t, r in zip(titles, items["raw_title"]))
    assert moved > 100
    assert read_movielens(shared_data / "ml-100k", min_rating=3).interactions.height == 82_520


def test_text_ids_map_to_dense_ids_and_back(tmp_path):
    """String user ids, ASIN-like item ids, no rating column: dense internal ids in sorted order, maps beside the
    tables, and every internal id translates back to the original."""
    rows = [{"user": "u0042", "item": "B00X", "ts": 30}, {"user": "alice", "item": "A1", "ts": 10},
            {"user": " u0042 ", "item": "A1", "ts": 40}, {"user": "alice", "item": "C9", "ts": 20}]
    items = [{"item": "C9", "title": "Gamma"}, {"item": "A1", "title": "Alpha"}, {"item": "B00X", "title": "Beta"},
             {"item": "Z0", "title": "Never played"}]
    inter = write_csv(tmp_path / "raw" / "i.csv", rows)
    ds = read_generic(inter, write_csv(tmp_path / "raw" / "t.csv", items), Columns(timestamp="ts"))
    assert ds.ids.users.frame.rows() == [(1, "alice"), (2, "u0042")]  # surrounding whitespace is not part of an id
    assert ds.ids.items.frame.rows() == [(1, "A1"), (2, "B00X"), (3, "C9"), (4, "Z0")]
    assert ds.interactions.select("user", "item").rows() == [(2, 2), (1, 1), (2, 1), (1, 3)]
    assert ds.items["title"].to_list() == ["Alpha", "Beta", "Gamma", "Never played"]
    out = write_dataset(ds, tmp_path / "out")
    back = read_dataset(out)
    originals = back.ids.with_originals(back.interactions, {"user": "user", "item": "item"})
    assert originals.select("original_user", "original_item").rows() == [
        ("u0042", "B00X"), ("alice", "A1"), ("u0042", "A1"), ("alice", "C9")]
    assert back.ids.users.lookup("u0042") == 2 and back.ids.items.lookup("nope") is None
    # every item column of an evaluation's predictions comes back, each generate mode's answer included
    predictions = pl.DataFrame({"user": [1, 2], "target": [3, 1], "top_item": [3, 2], "generated_item": [None, 4],
                                "generated_item_two_orders": [3, None]}, schema_overrides={"generated_item": pl.Int64})
    mapped = predictions_with_originals(predictions, out / "items.parquet")
    assert mapped.select(pl.selectors.starts_with("original_")).rows(named=True) == [
        {"original_user": "alice", "original_target": "C9", "original_top_item": "C9", "original_generated_item": None,
         "original_generated_item_two_orders": "C9"},
        {"original_user": "u0042", "original_target": "A1", "original_top_item": "B00X",
         "original_generated_item": "Z0", "original_generated_item_two_orders": None}]


def test_integer_ids_in_a_parquet_item_table_match_text_interactions(tmp_path):
    """Items as an int64 parquet column, interactions as CSV text: the same ids; sparse integers become 1..N."""
    pl.DataFrame({"item": [700, 5, 31], "title": ["a", "b", "c"]}).write_parquet(tmp_path / "items.parquet")
    inter = write_csv(tmp_path / "i.csv", [{"user": 9, "item": 31, "timestamp": 1}, {"user": -3, "item": 700, "timestamp": 2}])
    ds = read_generic(inter, tmp_path / "items.parquet")
    assert ds.ids.items.frame.rows() == [(1, 5), (2, 31), (3, 700)] and ds.ids.users.frame.rows() == [(1, -3), (2, 9)]
    assert ds.interactions.select("user", "item").rows() == [(2, 2), (1, 3)]


@pytest.mark.parametrize("users, fault", [
    (["u1", "", "u2"], "row 3: column 'user' is empty"),
    (["u1", "   ", "u2"], "row 3: column 'user' is whitespace only"),
    (["u1", "NaN", "u2"], "row 3: column 'user' is null ('NaN')"),
    (["u1", "7", "007"], "row 4: column 'user' mixes integer and text ids: '007' and '7' (row 3)"),
    (["4", "4.0", "x"], "row 3: column 'user' mixes integer and text ids: '4.0' and '4' (row 2)"),
])
def test_bad_ids_name_the_file_row_and_fault(tmp_path, users, fault):
    rows = [{"user": u, "item": 1, "timestamp": i} for i, u in enumerate(users)]
    inter = write_csv(tmp_path / "i.csv", rows)
    with pytest.raises(InputError) as err:
        read_generic(inter, write_csv(tmp_path / "t.csv", [{"item": 1, "title": "One"}]))
    assert str(err.value) == f"{inter}: {fault}" + ("" if "mixes" not in fault else
                                                    " spell the same integer; use one spelling per id")


def test_an_interaction_with_an_item_without_title_names_its_row(tmp_path):
    inter = write_csv(tmp_path / "i.csv", [{"user": "a", "item": "x", "timestamp": 1}, {"user": "a", "item": "y", "timestamp": 2}])
    with pytest.raises(InputError, match=r"i.csv: row 3: item 'y' has no title in .*t.csv"):
        read_generic(inter, write_csv(tmp_path / "t.csv", [{"item": "x", "title": "X"}]))
