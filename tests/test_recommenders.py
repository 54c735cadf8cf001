"""Sequential recommenders on a tiny synthetic split: models, training, checkpoints/resume, export, public API."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
import yaml

from llara.data.schema import SPLIT_SCHEMA
from llara.errors import InputError
from llara.recommenders import FAMILIES, build_model, load_recommender
from llara.recommenders.base import ItemIndex
from llara.recommenders.config import TrainConfig
from llara.recommenders.evaluation import evaluate_rows, sequence_data
from llara.recommenders.io import EMBEDDINGS_FILE, load_tensors, save_tensors
from llara.recommenders.training import batch_loss, train

N_ITEMS = 30
WINDOW = 5
ITEM_IDS = list(range(101, 101 + N_ITEMS))  # dataset ids deliberately not 1..N


def _sequence(rng: np.random.Generator, length: int) -> list[int]:
    """Mostly 'next id' chains (learnable), with some noise."""
    pos = int(rng.integers(N_ITEMS))
    out = []
    for _ in range(length):
        out.append(ITEM_IDS[pos])
        pos = (pos + 1) % N_ITEMS if rng.random() < 0.85 else int(rng.integers(N_ITEMS))
    return out


def make_fixture(root: Path, n_users: int = 48, seed: int = 0) -> tuple[Path, Path]:
    """items.parquet + a split directory (train/val/test.parquet, meta.json) with 5 stored candidates per row."""
    rng = np.random.default_rng(seed)
    items = pl.DataFrame({"item": ITEM_IDS, "title": [f"Item {i}" for i in ITEM_IDS], "raw_title": [f"Item {i}" for i in ITEM_IDS]})
    items_path = root / "items.parquet"
    root.mkdir(parents=True, exist_ok=True)
    items.write_parquet(items_path)
    parts: dict[str, list] = {"train": [], "val": [], "test": []}
    for user in range(1, n_users + 1):
        seq = _sequence(rng, 12)
        part = "train" if user <= n_users - 12 else ("val" if user <= n_users - 6 else "test")
        positions = range(2, len(seq)) if part == "train" else [len(seq) - 1]
        for t in positions:
            target = seq[t]
            negatives = [i for i in rng.permutation(ITEM_IDS).tolist() if i not in seq][:4]
            candidates = [target, *negatives]
            parts[part].append((user, seq[max(0, t - WINDOW) : t], target, [candidates[i] for i in rng.permutation(5)]))
    split = root / "split"
    split.mkdir()
    for part, rows in parts.items():
        pl.DataFrame(
            {"user": [r[0] for r in rows], "history": [r[1] for r in rows], "target": [r[2] for r in rows],
             "candidates": [r[3] for r in rows]},
            schema=SPLIT_SCHEMA,
        ).write_parquet(split / f"{part}.parquet")
    (split / "meta.json").write_text(json.dumps({"protocol": "synthetic"}))
    return items_path, split


@pytest.fixture(scope="module")
def fixture_dir(tmp_path_factory) -> tuple[Path, Path]:
    return make_fixture(tmp_path_factory.mktemp("recfix"))


def tiny_config(family: str, **overrides) -> dict:
    return {"n_items": N_ITEMS, "hidden": 16, "window": WINDOW, "dropout": 0.1, **overrides}


def load_data(items_path: Path, split: Path, part: str):
    index = ItemIndex.from_items_table(pl.read_parquet(items_path), items_path)
    return index, sequence_data(pl.read_parquet(split / f"{part}.parquet"), index, WINDOW, part)


FAST = dict(epochs=6, batch_size=32, lr=0.01, patience=10, num_threads=1)


# ------------------------------------------------------------------ models


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("loss", ["ce", "bce"])
def test_model_learns_and_has_the_right_shapes(family, loss, fixture_dir):
    index, data = load_data(*fixture_dir, "train")
    torch.manual_seed(0)
    model = build_model(family, tiny_config(family))
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
    config = TrainConfig(loss=loss, n_negatives=4)
    seqs, targets = data.seqs[:128], data.targets[:128]
    losses = []
    for _ in range(30):
        value = batch_loss(model, seqs, targets, config)
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
        losses.append(float(value.detach()))
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:3]), losses
    model.eval()
    assert model.encode(seqs[:7]).shape == (7, 16)
    assert model.score_all(seqs[:7]).shape == (7, N_ITEMS + 1)
    assert model.score(seqs[:7], data.targets[:7, None].repeat(1, 3)).shape == (7, 3)
    assert torch.all(model.item_emb.weight[0] == 0), "padding row must stay zero"


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_rows_are_independent_and_history_matters(family):
    """A padded row encodes the same alone or next to a full row; different histories differ (eval mode)."""
    torch.manual_seed(0)
    model = build_model(family, tiny_config(family)).eval()
    short = torch.tensor([[0, 0, 3, 4, 5]])
    other_pad = torch.tensor([[0, 0, 3, 4, 5], [1, 2, 3, 4, 5]])
    with torch.no_grad():
        assert torch.allclose(model.encode(short)[0], model.encode(other_pad)[0], atol=1e-6)
        assert not torch.allclose(model.encode(other_pad)[0], model.encode(other_pad)[1], atol=1e-4)


def test_config_errors_name_the_key():
    with pytest.raises(InputError, match="n_heads"):
        build_model("sasrec", tiny_config("sasrec", n_heads=3))
    with pytest.raises(InputError, match="unknown key"):
        build_model("gru4rec", tiny_config("gru4rec", n_blocks=2))
    with pytest.raises(InputError, match="unknown model family"):
        build_model("bert4rec", tiny_config("sasrec"))


# ------------------------------------------------------------------ training


def test_training_is_deterministic_and_keeps_the_best_epoch(fixture_dir):
    _, train_data = load_data(*fixture_dir, "train")
    _, val_data = load_data(*fixture_dir, "val")
    config = TrainConfig(**FAST)
    model_config = build_model("sasrec", tiny_config("sasrec")).config
    a = train("sasrec", model_config, train_data, val_data, config, progress=False)
    b = train("sasrec", model_config, train_data, val_data, config, progress=False)
    assert a.history == b.history
    assert all(torch.equal(x, y) for x, y in zip(a.model.state_dict().values(), b.model.state_dict().values()))
    assert a.history[-1]["train_loss"] < a.history[0]["train_loss"]
    best = min(a.history, key=lambda r: r["val_loss"])
    assert a.best_epoch == best["epoch"]
    assert evaluate_rows(a.model, val_data).loss.mean() == pytest.approx(best["val_loss"], rel=1e-5)


def test_early_stopping_stops_after_patience(fixture_dir):
    _, train_data = load_data(*fixture_dir, "train")
    _, val_data = load_data(*fixture_dir, "val")
    model_config = build_model("gru4rec", tiny_config("gru4rec")).config
    config = TrainConfig(**{**FAST, "epochs": 40, "lr": 0.05, "patience": 2})
    result = train("gru4rec", model_config, train_data, val_data, config, progress=False)
    assert result.epochs_run < 40
    assert result.epochs_run == result.best_epoch + 2


def test_stale_checkpoint_is_ignored(fixture_dir, tmp_path):
    _, train_data = load_data(*fixture_dir, "train")
    _, val_data = load_data(*fixture_dir, "val")
    model_config = build_model("caser", tiny_config("caser")).config
    ckpt = tmp_path / "ckpt"
    first = train("caser", model_config, train_data, val_data, TrainConfig(**{**FAST, "epochs": 2}), checkpoint_dir=ckpt, progress=False)
    assert first.resumed_from == 0 and (ckpt / "state.json").is_file()
    same = train("caser", model_config, train_data, val_data, TrainConfig(**{**FAST, "epochs": 2}), checkpoint_dir=ckpt, progress=False)
    assert same.resumed_from == 2 and same.history == first.history  # finished checkpoint: nothing retrained
    other = train("caser", model_config, train_data, val_data, TrainConfig(**{**FAST, "epochs": 2, "lr": 0.02}), checkpoint_dir=ckpt, progress=False)
    assert other.resumed_from == 0 and other.history != first.history


def test_same_count_changed_rows_discard_the_checkpoint_saying_why(fixture_dir, tmp_path, caplog):
    """The key is the rows' content: as many train rows, other targets -> the checkpoint is discarded, with why."""
    import dataclasses
    import logging

    _, train_data = load_data(*fixture_dir, "train")
    _, val_data = load_data(*fixture_dir, "val")
    model_config = build_model("sasrec", tiny_config("sasrec")).config
    config, ckpt = TrainConfig(**{**FAST, "epochs": 2}), tmp_path / "ckpt"
    first = train("sasrec", model_config, train_data, val_data, config, checkpoint_dir=ckpt, progress=False)
    changed = dataclasses.replace(train_data, targets=train_data.targets.flip(0))
    assert len(changed) == len(train_data) and not torch.equal(changed.targets, train_data.targets)
    with caplog.at_level(logging.INFO, logger="llara.recommenders"):
        again = train("sasrec", model_config, changed, val_data, config, checkpoint_dir=ckpt, progress=False)
    assert again.resumed_from == 0 and again.history != first.history
    assert "train rows changed; training from scratch" in caplog.text
    fresh = train("sasrec", model_config, changed, val_data, config, progress=False)
    assert fresh.history == again.history  # exactly a run without any checkpoint


KILL_DRIVER = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    import polars as pl
    sys.path.insert(0, {tests!r})
    from test_recommenders import FAST, WINDOW, load_data, tiny_config
    from llara.recommenders import build_model
    from llara.recommenders.config import TrainConfig
    from llara.recommenders.io import save_tensors
    from llara.recommenders.training import train

    items, split, ckpt, out = (Path(a) for a in sys.argv[1:5])
    _, tr = load_data(items, split, "train")
    _, va = load_data(items, split, "val")
    config = TrainConfig(**{{**FAST, "epochs": 8, "checkpoint_every": 1}})
    result = train("sasrec", build_model("sasrec", tiny_config("sasrec")).config, tr, va, config,
                   checkpoint_dir=ckpt, progress=False, on_epoch_end=lambda row: time.sleep(0.4))
    save_tensors(result.model.state_dict(), out / "final.safetensors")
    (out / "result.json").write_text(json.dumps({{"history": result.history, "resumed_from": result.resumed_from}}))
    """
)


def test_sigkill_mid_training_then_rerun_matches_uninterrupted(fixture_dir, tmp_path, subprocess_env):
    items, split = fixture_dir
    driver = tmp_path / "driver.py"
    driver.write_text(KILL_DRIVER.format(tests=str(Path(__file__).parent)))

    def start(name: str) -> tuple[subprocess.Popen, Path, Path]:
        out, ckpt = tmp_path / name, tmp_path / f"{name}-ckpt"
        out.mkdir()
        proc = subprocess.Popen([sys.executable, str(driver), str(items), str(split), str(ckpt), str(out)],
                                env=subprocess_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        return proc, out, ckpt

    reference, ref_out, _ = start("reference")
    assert reference.wait(timeout=120) == 0, reference.stdout.read().decode()

    victim, out, ckpt = start("resumed")
    deadline = time.time() + 120
    killed_at = None
    while time.time() < deadline and victim.poll() is None:
        try:
            epoch = json.loads((ckpt / "state.json").read_text())["epoch"]
        except (FileNotFoundError, json.JSONDecodeError):  # not written yet, or being swapped in
            epoch = 0
        if epoch >= 2:
            os.kill(victim.pid, signal.SIGKILL)
            killed_at = epoch
            break
        time.sleep(0.02)
    victim.wait(timeout=30)
    assert killed_at is not None and victim.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (out / "final.safetensors").exists()
    assert json.loads((ckpt / "state.json").read_text())["epoch"] < 8

    rerun = subprocess.run([sys.executable, str(driver), str(items), str(split), str(ckpt), str(out)],
                           env=subprocess_env, capture_output=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr.decode()
    resumed = json.loads((out / "result.json").read_text())
    expected = json.loads((ref_out / "result.json").read_text())
    assert resumed["resumed_from"] >= 2
    assert resumed["history"] == expected["history"]
    final, ref = load_tensors(out / "final.safetensors"), load_tensors(ref_out / "final.safetensors")
    assert final.keys() == ref.keys() and all(torch.equal(final[k], ref[k]) for k in ref)


# ------------------------------------------------------------------ export + public API


@pytest.fixture(scope="module")
def exported(fixture_dir, tmp_path_factory) -> dict[str, Path]:
    """One CLI pretrain + export per family."""
    from llara.cli import main

    items, split = fixture_dir
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
def test_export_round_trip_gives_the_same_scores(family, exported, fixture_dir):
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

    _, test = load_data(*fixture_dir, "test")
    with torch.no_grad():
        expected = model.score(test.seqs, test.candidates)
    histories = pl.read_parquet(fixture_dir[1] / "test.parquet")
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


def test_evaluate_stage_writes_the_metrics_file(exported, fixture_dir, tmp_path):
    from tasks.evaluate_recommenders import evaluate_recommenders

    root = tmp_path / "recs"
    for family, directory in exported.items():
        (root / "synthetic").mkdir(parents=True, exist_ok=True)
        os.symlink(directory, root / "synthetic" / family)
    split_root = tmp_path / "splits"
    split_root.mkdir()
    os.symlink(fixture_dir[1], split_root / "synthetic")
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


def test_pretrain_and_export_stages_write_their_outputs(fixture_dir, tmp_path):
    from tasks.export import export
    from tasks.params import PretrainParams
    from tasks.pretrain import pretrain

    items, split = fixture_dir
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
