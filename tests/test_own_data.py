"""A user's own dataset end to end with default flags: text user and item ids, no rating column, through the real
``llara`` commands: ingest -> split (both protocols) -> pretrain -> export -> a tiny fine-tune (tiny random Llama,
real tokenizer) -> evaluate -> recommend, and the report's examples. Every output is read back in the original ids,
and the test targets are the true next items of the raw data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from llara.data.idmap import read_id_maps
from llara.report import load_examples

from conftest import write_csv

N_USERS, N_ITEMS = 24, 45


def listening_history(root: Path) -> tuple[Path, Path, dict[str, list[str]]]:
    """Plays of artists by users with text ids (``u0042``, ``ART-0007``), ISO timestamps, no ratings; returns the
    files and each user's artists in time order."""
    rng = np.random.default_rng(7)
    rows, order = [], {}
    for u in rng.permutation(N_USERS):  # rows not grouped by user, ids not in row order
        user = f"u{u * 37 + 5:04d}"
        artists = [f"ART-{a:04d}" for a in rng.choice(N_ITEMS, size=int(rng.integers(6, 12)), replace=False)]
        order[user] = artists
        rows += [{"user_id": user, "artist_id": a, "ts": f"2009-05-{1 + k:02d}T12:00:00"} for k, a in enumerate(artists)]
    rows = [rows[i] for i in rng.permutation(len(rows))]
    names = [{"artist_id": f"ART-{a:04d}", "name": f"Artist number {a}"} for a in range(N_ITEMS)]
    return write_csv(root / "raw" / "plays.csv", rows), write_csv(root / "raw" / "artists.csv", names), order


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, tiny_llm_dir):
    """Every step through the CLI, in-process, with default flags (only paths, column names and tiny sizes)."""
    from llara.cli import main

    root = tmp_path_factory.mktemp("own")
    plays, artists, order = listening_history(root)

    def run(*argv) -> None:
        assert main([str(a) for a in argv]) == 0, argv

    run("ingest", "--interactions", plays, "--items", artists, "--user-col", "user_id", "--item-col", "artist_id",
        "--time-col", "ts", "--title-col", "name", "--out", root / "data")
    for protocol in ("leave-one-out", "paper"):
        run("split", "--data", root / "data", "--protocol", protocol, "--out", root / "split" / protocol)
    run("pretrain", "--split", root / "split" / "leave-one-out", "--items", root / "data" / "items.parquet",
        "--backbone", "sasrec", "--epochs", "1", "--hidden", "16", "--no-progress", "--out", root / "pretrain")
    run("export", root / "pretrain", "--out", root / "export")
    run("finetune", "hybrid-curriculum", "--llm", tiny_llm_dir, "--recommender", root / "export", "--items",
        root / "data" / "items.parquet", "--train", root / "split" / "leave-one-out" / "train.parquet",
        "--out", root / "run", "--steps", "2", "--batch-size", "2", "--dtype", "float32", "--device", "cpu",
        "--set", "compile=false")
    run("evaluate", root / "run", "--split", root / "split" / "leave-one-out" / "test.parquet", "--device", "cpu",
        "--predictions", root / "predictions.parquet")
    return root, order


def test_ingest_and_both_splits_keep_every_interaction_and_map_back(pipeline):
    root, order = pipeline
    maps = read_id_maps(root / "data")
    assert maps.users.dtype == pl.String and sorted(maps.users.frame["original"]) == sorted(order)
    assert maps.items.frame["original"].to_list() == [f"ART-{a:04d}" for a in range(N_ITEMS)]
    n_plays = sum(len(v) for v in order.values())
    assert pl.read_parquet(root / "data" / "interactions.parquet").height == n_plays  # no rating filter without ratings
    test = maps.with_originals(pl.read_parquet(root / "split" / "leave-one-out" / "test.parquet"),
                               {"user": "user", "target": "item", "history": "item"})
    assert {u: t for u, t in test.select("original_user", "original_target").rows()} == {u: a[-1] for u, a in order.items()}
    assert all(h == order[u][:-1][-10:] for u, h in test.select("original_user", "original_history").rows())
    paper = pl.read_parquet(root / "split" / "paper" / "test.parquet")
    back = maps.with_originals(paper, {"user": "user", "target": "item"})
    assert back.height > 0 and all(order[u][-1] == t for u, t in back.select("original_user", "original_target").rows())


def test_evaluation_predictions_and_report_examples_carry_the_original_ids(pipeline):
    root, order = pipeline
    predictions = pl.read_parquet(root / "predictions.parquet")
    truth = {u: a[-1] for u, a in order.items()}
    assert predictions.height == len(order)
    assert {u: t for u, t in predictions.select("original_user", "original_target").rows()} == truth
    assert set(predictions["original_top_item"]) <= {f"ART-{a:04d}" for a in range(N_ITEMS)}
    # `llara evaluate` without --modes reports every one-order mode, the LLM's own ranking (rank_llm) included
    assert {"generated_item", "rank", "rank_llm", "recommender_rank"} <= set(predictions.columns)
    assert "generated_item_two_orders" not in predictions.columns
    examples = load_examples(root / "predictions.parquet", root / "data" / "items.parquet",
                             root / "split" / "leave-one-out" / "test.parquet", 3)
    assert [e.user for e in examples] == sorted(order)[:3]  # internal ids follow the sorted originals
    assert all(e.target == f"Artist number {int(truth[e.user][4:])}" for e in examples)


def test_recommend_takes_and_returns_original_ids(pipeline, cli):
    root, order = pipeline
    user = sorted(order)[0]
    history = order[user][:4]
    code, out, err = cli("recommend", root / "run", "--history", *history, "-k", "5", "--device", "cpu")
    assert code == 0, err
    lines = [line.split("\t") for line in out.strip().splitlines()]
    assert len(lines) == 5
    assert all(item.startswith("ART-") and item not in history for item, _, _ in lines)
    assert all(title == f"Artist number {int(item[4:])}" for item, _, title in lines)
    code, _, err = cli("recommend", root / "run", "--history", "ART-9999", "--device", "cpu")
    assert code == 2 and "unknown item 'ART-9999'" in err
    # a title works as well as the id
    code, out_by_title, _ = cli("recommend", root / "run", "--history", *[f"Artist number {int(a[4:])}" for a in history],
                                "-k", "5", "--device", "cpu")
    assert code == 0 and out_by_title == out
