"""Identical inputs give byte-identical DVC-tracked outputs: a real tiny DVC repo (tiny fine-tune + evaluation through
the ``llara`` commands) reproduced again from scratch and once more over its persisted run leaves dvc.lock unchanged.
Each reproduction runs under another PYTHONHASHSEED, as separate processes do (peft's set-ordered adapter config
once made the run directory's hash differ, so ``evaluate`` reran)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO, write_csv

pytestmark = pytest.mark.integration

DVC_YAML = """
stages:
  finetune:
    cmd: python -m tasks.finetune hybrid-curriculum
    deps: [data/llm, data/recommenders, data/ingested/items.parquet, data/split/leave-one-out/train.parquet]
    params: [llm, finetune]
    outs:
      - data/runs/leave-one-out/hybrid-curriculum:
          persist: true
  evaluate:
    cmd: python -m tasks.evaluate
    deps: [data/runs/leave-one-out, data/split/leave-one-out/test.parquet]
    params: [evaluate]
    outs: [data/eval/leave-one-out]
    metrics:
      - metrics/llara.json:
          cache: false
"""


def make_repo(root: Path, llm: Path) -> Path:
    """The pipeline's own stage commands (tasks.finetune, tasks.evaluate) in a DVC repo laid out like the
    workspace, over inputs made by the real commands: ingest, split, a 1-epoch SASRec export; a tiny LLM."""
    from llara.cli import main

    rows = [{"user": f"u{u}", "item": f"i{(u * 7 + k * 3) % 30}", "timestamp": k} for u in range(12) for k in range(8)]
    items = [{"item": f"i{i}", "title": f"Item number {i}"} for i in range(30)]
    raw, data = root.parent / "raw", root / "data"
    assert main(["ingest", "--interactions", str(write_csv(raw / "i.csv", rows)), "--items",
                 str(write_csv(raw / "t.csv", items)), "--out", str(data / "ingested")]) == 0
    split = data / "split" / "leave-one-out"
    assert main(["split", "--data", str(data / "ingested"), "--protocol", "leave-one-out", "--out", str(split)]) == 0
    assert main(["pretrain", "--split", str(split), "--items", str(data / "ingested" / "items.parquet"),
                 "--backbone", "sasrec", "--epochs", "1", "--hidden", "16", "--no-progress", "--out",
                 str(root.parent / "pretrain")]) == 0
    assert main(["export", str(root.parent / "pretrain"), "--out", str(data / "recommenders" / "leave-one-out" / "sasrec")]) == 0
    shutil.copytree(llm, data / "llm")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["llm"].update(base_dir="data/llm", dtype="float32", device="cpu")
    params["finetune"].update(protocol="leave-one-out", variants=["hybrid-curriculum"])
    params["finetune"]["profiles"]["default"].update(steps=2, batch_size=2, micro_batch=2, warmup_steps=1,
                                                     checkpoint_every=1, compile=False)
    params["evaluate"].update(max_rows=4)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (root / "dvc.yaml").write_text(DVC_YAML)
    for cmd in (["git", "init", "-q"], [sys.executable, "-m", "dvc", "init", "-q"]):
        subprocess.run(cmd, cwd=root, check=True, capture_output=True)
    return root


def repro(root: Path, env: dict, seed: int, *args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "dvc", "repro", *args], cwd=root, capture_output=True, text=True,
                            env={**env, "PYTHONHASHSEED": str(seed)}, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def test_identical_inputs_leave_dvc_lock_unchanged(tmp_path, tiny_llm_dir, subprocess_env):
    root = make_repo(tmp_path / "repo", tiny_llm_dir)
    env = {**subprocess_env, "PYTHONPATH": str(REPO)}
    repro(root, env, 1)
    lock = (root / "dvc.lock").read_text()
    assert "data/runs/leave-one-out/hybrid-curriculum" in lock and "data/eval/leave-one-out" in lock

    shutil.rmtree(root / "data" / "runs")  # train again from scratch, in processes with other hash seeds
    shutil.rmtree(root / "data" / "eval")
    out = repro(root, env, 2, "--force", "--no-run-cache")
    assert "Running stage 'finetune'" in out
    assert (root / "dvc.lock").read_text() == lock, "a fresh run of identical inputs changed a tracked output"

    out = repro(root, env, 3, "--force", "--no-run-cache")  # over the persisted run: it resumes at its last step
    assert "Running stage 'evaluate'" in out
    assert (root / "dvc.lock").read_text() == lock, "a resumed run of identical inputs changed a tracked output"
    status = subprocess.run([sys.executable, "-m", "dvc", "status"], cwd=root, capture_output=True, text=True, env=env)
    assert "up to date" in status.stdout
