"""bench/bench_gpu.py runs on CPU with the tiny model: a bundle written the way `prepare` writes it (a real SASRec,
both recipes' configs), then `run` and `curve` with random weights of the bundle's shapes, in processes where polars,
pydantic, prefect and DVC cannot be imported (the GPU machine has none of them); bench/gpu_session.sh's first call
(stash and smoke test) the same way; `weights` joins the real GGUF's parts and converts them."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from _llm_helpers import fake_examples, fake_titles

ROOT = Path(__file__).resolve().parents[1]
BLOCKED = ("polars", "pydantic", "prefect", "dvc")


def tiny_bundle(tmp_path: Path, tiny_llm_dir: Path) -> Path:
    from gpu_bundle import read_recommender, read_rows, read_titles, write_bundle

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
    return bundle


def device_env(tmp_path: Path) -> dict:
    """The environment of a process on the GPU machine: the pipeline's packages cannot be imported."""
    shims = tmp_path / "shims"
    shims.mkdir(exist_ok=True)
    for name in BLOCKED:
        (shims / f"{name}.py").write_text(f"raise ImportError('{name} is not on the GPU machine')\n")
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"  # python3: this environment's
    return {**os.environ, "PYTHONPATH": str(shims), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PATH": path}


def test_bench_gpu_runs_without_the_pipeline_packages(tmp_path, tiny_llm_dir):
    bundle = tiny_bundle(tmp_path, tiny_llm_dir)
    env = device_env(tmp_path)
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


def test_gpu_session_first_call_stashes_the_bundle_and_runs_the_smoke_test(tmp_path, tiny_llm_dir):
    """The first device call of bench/gpu_session.sh, as written, on CPU: the bundle and the weight part land in the
    stash folder the second call reads, and both smoke runs (random weights) finish with their outputs."""
    bundle = tiny_bundle(tmp_path, tiny_llm_dir)
    part = tmp_path / "part-0"
    part.write_bytes(b"first part of the weights")
    stash, out = tmp_path / "stash", tmp_path / "out"
    env = {**device_env(tmp_path), "GPU_BUNDLE": str(bundle), "LLARA_GPU_DIR": str(stash), "OUT": str(out),
           "DEVICE": "cpu", "SMOKE_EXAMPLES": "16", "SMOKE_ROWS": "3", "PROFILE_COMPILED": "0"}
    script = ROOT / "bench" / "gpu_session.sh"
    done = subprocess.run(["bash", str(script), "stash", str(part)], env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "smoke: run rc=0 curve rc=0 profile rc=0" in done.stdout and "cuda False" in done.stdout
    assert (stash / "part-0").read_bytes() == part.read_bytes()
    assert read_bytes_of(stash / "bundle") == read_bytes_of(bundle)
    result = json.loads((out / "smoke" / "bench_gpu.json").read_text())
    assert result["weights"] == "random" and result["test_rows"] == 3 and result["batch_size"] == 128
    with (out / "smoke" / "curve-ours.csv").open() as fh:
        assert [int(r["examples"]) for r in csv.DictReader(fh)] == [0, 16]  # before training and at the end
    profile = (out / "smoke" / "profile-ours.txt").read_text()  # on CPU: host time only, no kernels
    assert "batch 8 on cpu" in profile and "training.py" in profile and "self cpu" in profile.lower()
    assert profile.strip().splitlines()[-1] == "ours_gpu_busy_share=0.000"
    assert re.search(r"^ours_step_s=\d+\.\d{4}$", profile, re.MULTILINE)  # what --compare reads
    assert not (stash / "compile-pays").exists()  # no compiled profile: the second call's curves run eagerly
    # anything but a mode prints the usage and runs nothing
    done = subprocess.run(["bash", str(script)], env={**env, "OUT": str(tmp_path / "none")}, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2 and "call 2, carry" in done.stdout and not (tmp_path / "none").exists()
    done = subprocess.run(["bash", str(script), "--help"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.startswith("The GPU run of issue 12")


def read_bytes_of(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_weights_joins_the_gguf_parts_and_converts_them(tmp_path):
    """`weights` on the real GGUF cut into parts (as `prepare --weights gguf` cuts it): the joined file is the
    original byte for byte, and the bf16 folder it writes is SmolLM2 (it completes a fact)."""
    from gpu_bundle import split_file

    from llara.llm.loading import find_smollm2_gguf, load_llm

    gguf = find_smollm2_gguf()
    parts = split_file(gguf, tmp_path, 40 * 2 ** 20)
    assert len(parts) == 3 and max(p.stat().st_size for p in parts) == 40 * 2 ** 20
    joined = hashlib.sha256(b"".join(p.read_bytes() for p in parts)).hexdigest()
    assert joined == hashlib.sha256(gguf.read_bytes()).hexdigest()
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_gpu.py"), "weights", "--bundle",
                           str(tmp_path / "no-bundle"), "--gguf-parts", *map(str, parts), "--out",
                           str(tmp_path / "base")], env=device_env(tmp_path), capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((tmp_path / "base" / "config.json").read_text())["dtype"] == "bfloat16"
    llm = load_llm(str(tmp_path / "base"), dtype="float32", device="cpu")
    ids = llm.tokenizer("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        gen = llm.model.generate(ids, max_new_tokens=4, do_sample=False)
    assert "Paris" in llm.tokenizer.decode(gen[0, ids.shape[1]:])


@pytest.mark.parametrize("eager, compiled, code", [(1.0, 0.8, 0), (1.0, 0.81, 1), (1.0, None, 2)])
def test_compile_decision_reads_the_step_lines(tmp_path, eager, compiled, code):
    """gpu_session.sh trains the curves compiled when ``gpu_profile.py --compare`` exits 0: the compiled step took at
    most 80% of the eager one; a report without its step line (a failed profile) decides nothing."""
    reports = []
    for name, value in (("eager", eager), ("compiled", compiled)):
        path = tmp_path / f"{name}.txt"
        path.write_text(f"ours, batch 8 ...\n\nours_step_s={value:.4f}\nours_gpu_busy_share=0.100\n" if value else "")
        reports.append(str(path))
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_profile.py"), "--compare", *reports],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == code, done.stdout + done.stderr
    assert ("curves compiled" in done.stdout) is (code == 0)
