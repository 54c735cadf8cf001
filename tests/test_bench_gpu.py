"""bench/bench_gpu.py runs on CPU with the tiny model: a bundle written the way `prepare` writes it, then `run` with
random weights of the bundle's shapes, in a process where polars, pydantic, prefect and DVC cannot be imported (the
GPU machine has none of them)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.test_llm_support import StandInRecommender, fake_examples, fake_titles, tiny_llm_dir, tokenizer_dir  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
BLOCKED = ("polars", "pydantic", "prefect", "dvc")


def test_bench_gpu_runs_without_the_pipeline_packages(tmp_path, tiny_llm_dir):
    sys.path.insert(0, str(ROOT / "bench"))
    from bench_gpu import read_rows, read_titles, write_bundle

    rows = {"train": fake_examples(16, 30), "val": fake_examples(4, 30, seed=1), "test": fake_examples(6, 30, seed=2)}
    titles = fake_titles(30)
    bundle = write_bundle(tmp_path / "bundle", rows, titles, StandInRecommender(30).table, tiny_llm_dir)
    assert read_rows(bundle, "test") == rows["test"] and read_titles(bundle) == titles
    assert not (bundle / "llm" / "model.safetensors").exists()  # the weights never travel in the bundle
    shims = tmp_path / "shims"
    shims.mkdir()
    for name in BLOCKED:
        (shims / f"{name}.py").write_text(f"raise ImportError('{name} is not on the GPU machine')\n")
    env = {**os.environ, "PYTHONPATH": str(shims), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_gpu.py"), "run", "--bundle", str(bundle),
                           "--device", "cpu", "--quick", "--minutes", "0.05", "--measure-steps", "1",
                           "--eval-batch", "4", "--out", str(out)], env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((out / "bench_gpu.json").read_text())
    assert result["weights"] == "random" and result["device"] == "cpu"
    assert result["examples_per_s"] > 0 and 0 < result["mfu_bf16"] and result["planned_steps"] >= 2
    assert result["generate_hr1"]["n"] == result["test_rows"] == 6
    assert 0 <= result["valid_ratio"]["value"] <= 1 and result["rank_llm_hr1"]["n"] == 6
    assert done.stdout.strip().splitlines()[-1].startswith("gpu_examples_per_s=")
