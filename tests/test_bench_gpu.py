"""bench/bench_gpu.py runs on CPU with the tiny model: a bundle written the way `prepare` writes it (a real SASRec,
both recipes' configs), then `run` and `curve` with random weights of the bundle's shapes, in processes where polars,
pydantic, prefect and DVC cannot be imported (the GPU machine has none of them)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import csv

import torch

from tests.test_llm_support import fake_examples, fake_titles, tiny_llm_dir, tokenizer_dir  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
BLOCKED = ("polars", "pydantic", "prefect", "dvc")


def test_bench_gpu_runs_without_the_pipeline_packages(tmp_path, tiny_llm_dir):
    from bench_gpu import read_recommender, read_rows, read_titles, write_bundle

    from llara.llm.recipes import PROFILES, RECIPES
    from llara.llm.workflow import variant_configs
    from llara.recommenders.api import Recommender
    from llara.recommenders.base import ItemIndex
    from llara.recommenders.registry import build_model

    rows = {"train": fake_examples(16, 30), "val": fake_examples(4, 30, seed=1), "test": fake_examples(6, 30, seed=2)}
    titles = fake_titles(30)
    torch.manual_seed(0)
    sasrec = Recommender(build_model("sasrec", {"n_items": 30, "hidden": 16, "window": 5, "dropout": 0.1}),
                         ItemIndex(range(1, 31)))
    configs = {"prompts": "movie", "dtype": "float32", "variant": "hybrid-curriculum", "recipes": {}}
    for name in ("ours", "paper"):
        train_cfg, model_cfg = variant_configs("hybrid-curriculum", RECIPES[name], PROFILES["default"])
        configs["recipes"][name] = {"train": train_cfg.to_dict(), "model": model_cfg.to_dict()}
    bundle = write_bundle(tmp_path / "bundle", rows, titles, sasrec, tiny_llm_dir, configs)
    assert read_rows(bundle, "test") == rows["test"] and read_titles(bundle) == titles
    assert not (bundle / "llm" / "model.safetensors").exists()  # the weights never travel in the bundle
    history, cands = [list(r.history) for r in rows["test"]], [list(r.candidates) for r in rows["test"]]
    assert torch.equal(read_recommender(bundle).score(history, cands), sasrec.score(history, cands))
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
    assert result["weights"] == "random" and result["device"] == "cpu" and result["dtype"] == "float32"
    assert result["examples_per_s"] > 0 and 0 < result["mfu"] and result["planned_steps"] >= 2
    assert result["generate_hr1"]["n"] == result["test_rows"] == 6
    assert 0 <= result["valid_ratio"]["value"] <= 1 and result["rank_llm_hr1"]["n"] == 6
    assert done.stdout.strip().splitlines()[-1].startswith("gpu_examples_per_s=")
    # the learning curves: both recipes, evaluated before training and after each step
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_gpu.py"), "curve", "--bundle", str(bundle),
                           "--device", "cpu", "--examples", "16", "--eval-every", "1", "--users", "3",
                           "--eval-batch", "4", "--out", str(out)], env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    for name in ("ours", "paper"):
        with (out / f"curve-{name}.csv").open() as fh:
            curve = list(csv.DictReader(fh))
        assert [int(r["step"]) for r in curve] == [0, 1, 2] and [int(r["examples"]) for r in curve] == [0, 8, 16]
        assert all(int(r["n"]) == 3 and 0 <= float(r["generate_hr1"]) <= 1 for r in curve)
        assert float(curve[-1]["wall_min"]) > float(curve[0]["wall_min"])
    assert done.stdout.strip().splitlines()[-1].startswith("paper_best_generate_hr1=")
