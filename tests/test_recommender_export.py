"""Recommender export: the round trip, the public API, mismatched exports, the pretrain / export / evaluate stages."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
import yaml

from llara.errors import InputError
from llara.recommenders import FAMILIES, load_recommender, score_rows
from llara.recommenders.io import EMBEDDINGS_FILE, load_tensors, save_tensors

from _recommender_helpers import ITEM_IDS, N_ITEMS, WINDOW, load_data


@pytest.fixture(scope="module")
def exported(recommender_split, tmp_path_factory) -> dict[str, Path]:
    """One CLI pretrain + export per family."""
    from llara.cli import main

    items, split = recommender_split
    root = tmp_path_factory.mktemp("exports")
    out = {}
    for family in sorted(FAMILIES):
        args = ["pretrain", "--split", split, "--items", items, "--backbone", family, "--out", root / f"{family}-model",
                "--window", WINDOW, "--hidden", 16, "--epochs", 3, "--batch-size", 32, "--lr", 0.01, "--threads", 1,
                "--no-progress", "--curve", root / f"{family}.csv", "--checkpoint-dir", root / f"{family}-ckpt"]
        assert main([str(a) for a in args]) == 0
        assert not (root / f"{family}-ckpt").exists(), "checkpoint must be removed after success"
        assert main(["export", str(root / f"{family}-model"), "--out", str(root / family)]) == 0
        out[family] = root / family
    return out


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_export_round_trip_gives_the_same_scores(family, exported, recommender_split):
    from llara.recommenders.io import read_model_dir

    directory = exported[family]
    assert sorted(p.name for p in directory.iterdir()) == [
        "config.json", "item_embeddings.safetensors", "item_map.parquet", "model.safetensors"]
    model, index, meta = read_model_dir(directory.parent / f"{family}-model")
    rec = load_recommender(directory)
    table = load_tensors(directory / EMBEDDINGS_FILE)["item_embeddings"]
    assert table.dtype == torch.float32 and table.shape == (N_ITEMS + 1, 16)
    assert torch.all(table[0] == 0)
    item_map = pl.read_parquet(directory / "item_map.parquet")
    assert item_map.schema == {"item": pl.Int64, "index": pl.Int64}
    assert item_map["item"].to_list() == ITEM_IDS and item_map["index"].to_list() == list(range(1, N_ITEMS + 1))
    assert json.loads((directory / "config.json").read_text())["config"]["n_items"] == N_ITEMS

    _, test = load_data(*recommender_split, "test")
    with torch.no_grad():
        expected = model.score(test.seqs, test.candidates)
    histories = pl.read_parquet(recommender_split[1] / "test.parquet")
    got = rec.score(histories["history"].to_list(), histories["candidates"].to_list())
    # identical weights; BLAS may pick another kernel for other buffer alignment, hence float tolerance
    assert all(torch.equal(v, rec.model.state_dict()[k]) for k, v in model.state_dict().items())
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert torch.equal(rec.item_embeddings([ITEM_IDS[3]])[0], table[4])


def test_public_api(exported):
    rec = load_recommender(exported["sasrec"])
    assert rec.name == "sasrec" and rec.dim == 16
    assert not rec.model.training and not any(p.requires_grad for p in rec.model.parameters())
    emb = rec.item_embeddings(torch.tensor([101, 130]))
    assert emb.shape == (2, 16) and emb.dtype == torch.float32
    hist = [[101, 102, 103], [110]]
    enc = rec.encode(hist)
    assert enc.shape == (2, 16) and enc.dtype == torch.float32 and not enc.requires_grad
    scores = rec.score(hist, [[104, 120, 101], [111, 112, 113]])
    assert scores.shape == (2, 3)
    assert torch.allclose(scores[0], enc[0] @ rec.item_embeddings([104, 120, 101]).T, atol=1e-5)
    # many rows in batches: the same numbers as one call, whatever the batch size
    rows = score_rows(rec, hist * 3, [[104, 120, 101], [111, 112, 113]] * 3, batch=4)
    assert rows.shape == (6, 3) and rows.dtype == np.float32
    assert np.allclose(rows, np.tile(scores.numpy(), (3, 1)), atol=1e-6)
    with pytest.raises(InputError, match="2 histories but 1 candidate lists"):
        score_rows(rec, hist, [[104, 120, 101]])
    # only the last `window` items count; outputs can feed a trainable layer
    long = list(range(101, 121))
    assert torch.equal(rec.encode([long]), rec.encode([long[-WINDOW:]]))
    torch.nn.Linear(16, 4)(enc).sum().backward()
    assert rec.score_all(hist).shape == (2, N_ITEMS)
    with pytest.raises(InputError, match="unknown item id 999"):
        rec.item_embeddings([101, 999])
    with pytest.raises(InputError, match="unknown item id 7"):
        rec.encode([[101, 7]])
    with pytest.raises(InputError, match="unknown item id 5"):
        rec.score([[101]], [[5, 101]])
    with pytest.raises(InputError, match="empty"):
        rec.encode([[]])


ACCELERATORS = [d for d, ok in (("cuda", torch.cuda.is_available()), ("mps", torch.backends.mps.is_available())) if ok]


@pytest.mark.parametrize("device", ["cpu"] + ACCELERATORS)
def test_score_rows_takes_scores_in_any_dtype_on_any_device(exported, device):
    """A recommender whose scores come back in bf16, or on an accelerator (tested where one exists), still gives
    score_rows' float32 numpy array."""
    rec = load_recommender(exported["sasrec"])

    class Moved:
        def score(self, histories, candidates):
            return rec.score(histories, candidates).to(device=device, dtype=torch.bfloat16)

    hist, cands = [[101, 102, 103], [110]] * 2, [[104, 120, 101], [111, 112, 113]] * 2
    rows = score_rows(Moved(), hist, cands, batch=3)
    assert rows.dtype == np.float32 and rows.shape == (4, 3)
    assert np.array_equal(rows, rec.score(hist, cands).to(torch.bfloat16).float().numpy())


def test_loading_a_mismatched_export_names_the_file(exported, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(exported["gru4rec"], broken)
    table = load_tensors(broken / EMBEDDINGS_FILE)["item_embeddings"]
    save_tensors({"item_embeddings": table[:-1]}, broken / EMBEDDINGS_FILE)
    with pytest.raises(InputError) as err:
        load_recommender(broken)
    assert EMBEDDINGS_FILE in err.value.where and "item_map" in err.value.what

    save_tensors({"item_embeddings": table + 1.0}, broken / EMBEDDINGS_FILE)
    with pytest.raises(InputError, match="row 0"):
        load_recommender(broken)
    table2 = table.clone()
    table2[5] += 1.0
    save_tensors({"item_embeddings": table2}, broken / EMBEDDINGS_FILE)
    with pytest.raises(InputError, match="differ"):
        load_recommender(broken)

    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(InputError) as err:
        load_recommender(broken)
    assert "model.safetensors" in err.value.where


def test_evaluate_stage_writes_the_metrics_file(exported, recommender_split, tmp_path):
    from tasks.evaluate_recommenders import evaluate_recommenders

    root = tmp_path / "recs"
    for family, directory in exported.items():
        (root / "synthetic").mkdir(parents=True, exist_ok=True)
        os.symlink(directory, root / "synthetic" / family)
    split_root = tmp_path / "splits"
    split_root.mkdir()
    os.symlink(recommender_split[1], split_root / "synthetic")
    out = tmp_path / "metrics.json"
    evaluate_recommenders(["synthetic"], sorted(FAMILIES), export_root=root, split_root=split_root, out=out)
    data = json.loads(out.read_text())
    assert set(data["synthetic"]) == set(FAMILIES)
    for family_metrics in data["synthetic"].values():
        assert set(family_metrics) == {"hr@1", "hr@5", "ndcg@5", "full_hr@10", "full_ndcg@10"}
        for m in family_metrics.values():
            assert set(m) == {"value", "ci95", "n"} and m["n"] == 6 and 0 <= m["value"] <= 1
        assert family_metrics["hr@5"]["value"] == 1.0  # 5 candidates: every target is within the top 5


def test_full_ranking_excludes_history_but_never_the_target():
    from llara.recommenders.evaluation import history_mask

    seqs = torch.tensor([[0, 2, 3], [0, 0, 4]])
    mask = history_mask(seqs, torch.tensor([3, 1]), 6)
    assert mask.tolist() == [[True, False, True, False, False, False], [True, False, False, False, True, False]]


def test_params_reject_a_bare_backbone_string():
    from tasks.params import parse_params

    params = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    with pytest.raises(InputError, match="pretrain.backbones"):
        parse_params({**params, "pretrain": {**params["pretrain"], "backbones": "sasrec"}})
    assert parse_params({**params, "pretrain": {**params["pretrain"], "backbones": ["caser"]}}).pretrain.backbones == ["caser"]


def test_pretrain_and_export_stages_write_their_outputs(recommender_split, tmp_path):
    from tasks.export import export
    from tasks.params import PretrainParams
    from tasks.pretrain import pretrain

    items, split = recommender_split
    (tmp_path / "split").mkdir()
    os.symlink(split, tmp_path / "split" / "synthetic")
    params = PretrainParams(backbones=["caser"], epochs=2, window=WINDOW, batch_size=32,
                            caser={"hidden": 16, "n_h": 2, "n_v": 2, "lr": 0.02})
    roots = dict(split_root=tmp_path / "split", items=items, out_root=tmp_path / "pretrain",
                 checkpoint_root=tmp_path / "ckpt", curve_root=tmp_path / "curves")
    result = pretrain(params, "synthetic", "caser", **roots)
    assert result.epochs_run == 2
    out = tmp_path / "pretrain" / "synthetic" / "caser"
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "item_map.parquet", "model.safetensors", "training.json"]
    training = json.loads((out / "training.json").read_text())
    assert training["train_config"]["lr"] == 0.02 and training["best_epoch"] in (1, 2)
    curve = pl.read_csv(tmp_path / "curves" / "synthetic" / "caser" / "curve.csv")
    assert curve["epoch"].to_list() == [1, 2] and "val_loss" in curve.columns
    assert not (tmp_path / "ckpt" / "synthetic" / "caser").exists()
    export("synthetic", "caser", pretrain_root=tmp_path / "pretrain", out_root=tmp_path / "recs")
    assert load_recommender(tmp_path / "recs" / "synthetic" / "caser").dim == 16
    with pytest.raises(InputError, match="unknown backbone"):
        pretrain(params, "synthetic", "bert4rec", **roots)


@pytest.mark.parametrize("command", ["pretrain", "export", "evaluate-recommenders"])
def test_cli_help(command, cli):
    code, out, _ = cli(command, "--help")
    assert code == 0 and "usage: llara " + command in out
