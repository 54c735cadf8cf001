"""Sequential recommenders on a tiny synthetic split: models, training, checkpoints and resume (export and public API:
test_recommender_export.py)."""

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
import pytest
import torch

from llara.errors import InputError
from llara.recommenders import FAMILIES, build_model
from llara.recommenders.config import TrainConfig
from llara.recommenders.evaluation import evaluate_rows
from llara.recommenders.io import load_tensors
from llara.recommenders.training import batch_loss, train

from _recommender_helpers import FAST, N_ITEMS, load_data, tiny_config


# ------------------------------------------------------------------ models


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("loss", ["ce", "bce"])
def test_model_learns_and_has_the_right_shapes(family, loss, recommender_split):
    index, data = load_data(*recommender_split, "train")
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


def test_training_is_deterministic_and_keeps_the_best_epoch(recommender_split):
    _, train_data = load_data(*recommender_split, "train")
    _, val_data = load_data(*recommender_split, "val")
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


def test_early_stopping_stops_after_patience(recommender_split):
    _, train_data = load_data(*recommender_split, "train")
    _, val_data = load_data(*recommender_split, "val")
    model_config = build_model("gru4rec", tiny_config("gru4rec")).config
    config = TrainConfig(**{**FAST, "epochs": 40, "lr": 0.05, "patience": 2})
    result = train("gru4rec", model_config, train_data, val_data, config, progress=False)
    assert result.epochs_run < 40
    assert result.epochs_run == result.best_epoch + 2


def test_stale_checkpoint_is_ignored(recommender_split, tmp_path):
    _, train_data = load_data(*recommender_split, "train")
    _, val_data = load_data(*recommender_split, "val")
    model_config = build_model("caser", tiny_config("caser")).config
    ckpt = tmp_path / "ckpt"
    first = train("caser", model_config, train_data, val_data, TrainConfig(**{**FAST, "epochs": 2}), checkpoint_dir=ckpt, progress=False)
    assert first.resumed_from == 0 and (ckpt / "state.json").is_file()
    same = train("caser", model_config, train_data, val_data, TrainConfig(**{**FAST, "epochs": 2}), checkpoint_dir=ckpt, progress=False)
    assert same.resumed_from == 2 and same.history == first.history  # finished checkpoint: nothing retrained
    other = train("caser", model_config, train_data, val_data, TrainConfig(**{**FAST, "epochs": 2, "lr": 0.02}), checkpoint_dir=ckpt, progress=False)
    assert other.resumed_from == 0 and other.history != first.history


def test_same_count_changed_rows_discard_the_checkpoint_saying_why(recommender_split, tmp_path, caplog):
    """The key is the rows' content: as many train rows, other targets -> the checkpoint is discarded, with why."""
    import dataclasses
    import logging

    _, train_data = load_data(*recommender_split, "train")
    _, val_data = load_data(*recommender_split, "val")
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
    from _recommender_helpers import FAST, WINDOW, load_data, tiny_config
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


def test_sigkill_mid_training_then_rerun_matches_uninterrupted(recommender_split, tmp_path, subprocess_env):
    items, split = recommender_split
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
