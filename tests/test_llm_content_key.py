"""Fine-tuning resumes only what is still valid: checkpoints are keyed on the content of every input (train rows,
recommender export, base LLM, items, prompts) and the settings, never on paths or counts. Through the real
``llara finetune`` (the fine-tuning workflow) with a tiny random Llama, the real tokenizer and real SASRec exports."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import torch
from safetensors.torch import load_file

from conftest import REPO, sigkill_when, write_csv

TINY = ["--steps", "3", "--batch-size", "2", "--set", "micro_batch=2", "--set", "checkpoint_every=1",
        "--set", "warmup_steps=1", "--set", "compile=false", "--dtype", "float32", "--device", "cpu"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """A tiny dataset (ingest, split) and two SASRec exports of it that differ only by their training seed."""
    from llara.cli import main

    root = tmp_path_factory.mktemp("key")
    rows = [{"user": f"u{u}", "item": f"i{(u * 7 + k * 3) % 30}", "timestamp": k} for u in range(12) for k in range(8)]
    items = [{"item": f"i{i}", "title": f"Item number {i}"} for i in range(30)]
    assert main(["ingest", "--interactions", str(write_csv(root / "raw" / "i.csv", rows)), "--items",
                 str(write_csv(root / "raw" / "t.csv", items)), "--out", str(root / "data")]) == 0
    assert main(["split", "--data", str(root / "data"), "--protocol", "leave-one-out", "--out", str(root / "split")]) == 0
    for seed in (1, 2):
        assert main(["pretrain", "--split", str(root / "split"), "--items", str(root / "data" / "items.parquet"),
                     "--backbone", "sasrec", "--epochs", "1", "--hidden", "16", "--seed", str(seed), "--no-progress",
                     "--out", str(root / f"pretrain-{seed}")]) == 0
        assert main(["export", str(root / f"pretrain-{seed}"), "--out", str(root / f"export-{seed}")]) == 0
    return root


def finetune_argv(inputs: Path, llm: Path, out: Path, train: Path, recommender: Path) -> list[str]:
    return ["finetune", "hybrid-curriculum", "--llm", str(llm), "--recommender", str(recommender), "--items",
            str(inputs / "data" / "items.parquet"), "--train", str(train), "--out", str(out), *TINY]


def final_weights(run: Path) -> dict[str, torch.Tensor]:
    tensors = load_file(run / "final" / "modules.safetensors")
    tensors.update({f"adapter.{k}": v for k, v in load_file(run / "final" / "adapter" / "adapter_model.safetensors").items()})
    return tensors


def same_weights(a: Path, b: Path) -> bool:
    x, y = final_weights(a), final_weights(b)
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def test_same_count_changed_rows_train_from_scratch(inputs, tiny_llm_dir, tmp_path, cli):
    train = tmp_path / "train.parquet"
    shutil.copy(inputs / "split" / "train.parquet", train)
    run = tmp_path / "run"
    argv = finetune_argv(inputs, tiny_llm_dir, run, train, inputs / "export-1")
    code, out, err = cli(*argv)
    assert code == 0, err
    code, out, err = cli(*argv)  # unchanged inputs: the finished checkpoint is resumed, nothing trains
    assert code == 0 and "resuming from" in out and "(step 3/3)" in out, out + err
    rows = pl.read_parquet(train)
    changed = rows.with_columns(pl.col("history").reverse(), pl.col("user").reverse())  # same count, other rows
    changed.write_parquet(train)
    code, out, err = cli(*argv)
    assert code == 0, err
    assert "train rows changed; training from scratch" in out and "resuming" not in out, out
    fresh = tmp_path / "fresh"
    assert cli(*finetune_argv(inputs, tiny_llm_dir, fresh, train, inputs / "export-1"))[0] == 0
    assert same_weights(run, fresh), "the retrained run must equal a run that never saw the old checkpoints"


def test_a_changed_recommender_at_the_same_path_trains_from_scratch(inputs, tiny_llm_dir, tmp_path, cli):
    recommender = tmp_path / "recommender"
    shutil.copytree(inputs / "export-1", recommender)
    run = tmp_path / "run"
    argv = finetune_argv(inputs, tiny_llm_dir, run, inputs / "split" / "train.parquet", recommender)
    assert cli(*argv)[0] == 0
    shutil.rmtree(recommender)
    shutil.copytree(inputs / "export-2", recommender)  # retrained: same path, same item count, other weights
    code, out, err = cli(*argv)
    assert code == 0, err
    assert "recommender changed; training from scratch" in out and "resuming" not in out, out
    state = json.loads(sorted((run / "checkpoints").iterdir())[-1].joinpath("state.json").read_text())
    assert set(state["inputs"]) >= {"train rows", "recommender", "base LLM", "items", "prompts", "settings"}



def test_the_same_content_under_other_paths_resumes(inputs, tiny_llm_dir, tmp_path, cli):
    """Moved inputs (train rows, recommender export, items, base LLM) and a moved run directory: nothing changed that
    the weights learn from, so the finished checkpoint is resumed and nothing trains (a path or a name in the key
    would retrain it)."""
    run = tmp_path / "run"
    assert cli(*finetune_argv(inputs, tiny_llm_dir, run, inputs / "split" / "train.parquet", inputs / "export-1"))[0] == 0
    moved = tmp_path / "moved"
    shutil.copytree(inputs / "data", moved / "data")
    shutil.copytree(inputs / "export-1", moved / "recommender")
    shutil.copytree(tiny_llm_dir, moved / "llm")
    shutil.copy(inputs / "split" / "train.parquet", moved / "rows.parquet")
    shutil.copytree(run, moved / "run")
    argv = finetune_argv(moved, moved / "llm", moved / "run", moved / "rows.parquet", moved / "recommender")
    code, out, err = cli(*argv)
    assert code == 0, err
    assert "resuming from" in out and "(step 3/3)" in out and "changed" not in out, out + err
    state = json.loads(sorted((moved / "run" / "checkpoints").iterdir())[-1].joinpath("state.json").read_text())
    assert not any(str(tmp_path) in str(v) for v in state["inputs"].values()), state["inputs"]
    assert same_weights(run, moved / "run")


def test_a_run_loads_only_with_the_inputs_it_was_trained_on(inputs, tiny_llm_dir, tmp_path, cli):
    """run.json names its recommender and items by path; what lies there must still be what the run learned from. A
    recommender retrained or an item table rewritten at the same path is one clear error when the run is loaded (it
    would pair the adapter with embeddings or titles it never saw); restored, the run loads again; the same content
    elsewhere (a champion bundle's copies) loads too."""
    from llara.champion import make_bundle
    from llara.fingerprint import tree_digest
    from llara.llm.runs import load_run

    recommender, items = tmp_path / "recommender", tmp_path / "items.parquet"
    shutil.copytree(inputs / "export-1", recommender)
    shutil.copy(inputs / "data" / "items.parquet", items)
    run = tmp_path / "run"
    argv = finetune_argv(inputs, tiny_llm_dir, run, inputs / "split" / "train.parquet", recommender)
    argv[argv.index("--items") + 1] = str(items)
    assert cli(*argv)[0] == 0
    evaluate = ["evaluate", str(run), "--split", str(inputs / "split" / "test.parquet"), "--modes", "rank",
                "--max-rows", "2", "--device", "cpu"]
    assert cli(*evaluate)[0] == 0
    shutil.rmtree(recommender)
    shutil.copytree(inputs / "export-2", recommender)  # retrained in place: same item count, other weights
    code, out, err = cli(*evaluate)
    assert code != 0 and len(err.strip().splitlines()) == 1, err
    assert str(recommender) in err and "not the recommender run" in err, err
    shutil.rmtree(recommender)
    shutil.copytree(inputs / "export-1", recommender)
    titles = pl.read_parquet(items)
    titles.with_columns(pl.col("title").str.to_uppercase()).write_parquet(items)  # same ids, other titles
    code, out, err = cli(*evaluate)
    assert code != 0 and str(items) in err and "not the items run" in err, err
    shutil.copy(inputs / "data" / "items.parquet", items)
    assert cli(*evaluate)[0] == 0
    # a champion bundle copies what run.json names (not what params.yaml says now) and loads without the originals
    bundle = tmp_path / "bundle"
    make_bundle(run, bundle, version="v0001", run_hash="h", comparison=None)
    meta = json.loads((bundle / "bundle.json").read_text())
    assert meta["llm_dir"] == str(tiny_llm_dir) and meta["llm_hash"] == tree_digest(tiny_llm_dir)
    assert tree_digest(bundle / "recommender") == tree_digest(recommender)
    shutil.rmtree(recommender)
    items.unlink()
    model, encoder, info = load_run(bundle / "run", recommender=bundle / "recommender", items=bundle / "items.parquet",
                                    llm_model=meta["llm_dir"], device="cpu")
    assert info["recommender"] == str(recommender) and not model.training


KILL_SCRIPT = """
import sys, time
sys.path.insert(0, {root!r})
import llara.llm.training as training
original = training.save_checkpoint
def save_then_pause(root, model, optimizer, step, state, keep=2):
    out = original(root, model, optimizer, step, state, keep)
    if step == 2:
        time.sleep(120)  # the parent kills us here
    return out
training.save_checkpoint = save_then_pause
from llara.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_unchanged_inputs_after_sigkill_resume_across_processes(inputs, tiny_llm_dir, tmp_path, subprocess_env):
    """The content key is stable across processes: killed after step 2, the rerun resumes there and ends equal to an
    uninterrupted run."""
    script = tmp_path / "finetune.py"
    script.write_text(KILL_SCRIPT.format(root=str(REPO)))
    env = {**subprocess_env, "PYTHONPATH": str(REPO)}
    train, rec = inputs / "split" / "train.parquet", inputs / "export-1"
    full = subprocess.run([sys.executable, "-m", "llara", *finetune_argv(inputs, tiny_llm_dir, tmp_path / "full", train, rec)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert full.returncode == 0, full.stderr
    killed = tmp_path / "killed"
    child = subprocess.Popen([sys.executable, str(script), *finetune_argv(inputs, tiny_llm_dir, killed, train, rec)],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    sigkill_when(child, (killed / "checkpoints" / "step-000002" / "state.json").exists)
    assert not (killed / "final").exists()
    resumed = subprocess.run([sys.executable, "-m", "llara", *finetune_argv(inputs, tiny_llm_dir, killed, train, rec)],
                             env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from" in resumed.stdout and "(step 2/3)" in resumed.stdout, resumed.stdout
    assert same_weights(tmp_path / "full", killed)
    assert (tmp_path / "full" / "train_log.jsonl").read_text() == (killed / "train_log.jsonl").read_text()
