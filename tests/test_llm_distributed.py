"""Data-parallel fine-tuning: a real 2-process ``torch.distributed.run`` launch (gloo, CPU) sees the same examples and
curriculum draws at every step as a single process, sums its gradients to the full-batch gradient and ends with the
same weights; only rank 0 writes. Gradient checkpointing and compiled layers change neither the loss nor the
gradients."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file, save_file

from llara.errors import InputError
from llara.llm.training import cpp_compiler_found
from llara.llm.distributed import Dist, shard
from _flow_helpers import child_env
from _llm_helpers import build_tiny, fake_examples

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """
import os, sys
sys.path[:0] = [{root!r}, {root!r} + '/tests']  # llara, and the tests' helpers by name
from pathlib import Path
from test_llm_distributed import tiny_run
tiny_run(Path({llm!r}), Path(sys.argv[1]), Path(sys.argv[2]) / f"rank{{os.environ['RANK']}}")
"""


def tiny_run(llm_dir: Path, out: Path, record: Path, **overrides) -> list[dict]:
    """Train the tiny model 3 steps (batch 4, curriculum, score noise, dropout off); record under ``record``: the
    (step, row, mode, template) of every example this process trained on (``calls.json``), the step-1 gradients
    (``grads.safetensors``), whether the LLM's layers were checkpointing (``checkpointing.json``) and compiled
    (``compiled.json``: while training, and after)."""
    import llara.llm.training as training
    from llara.llm.model import ModelConfig

    calls: list[list] = []
    grads: dict[str, torch.Tensor] = {}
    current: dict[str, int] = {}
    checkpointing: set[bool] = set()
    compiled: set[bool] = set()
    originals = training.step_indices, training.batch_loss, training.make_optimizer

    def step_indices(n, seed, step, batch_size):
        current["step"] = step
        return originals[0](n, seed, step, batch_size)

    def batch_loss(model, encoder, examples, modes, templates, *args, **kwargs):
        calls.extend([current["step"], e.row, m, t] for e, m, t in zip(examples, modes, templates))
        checkpointing.add(model.training and any(getattr(m, "gradient_checkpointing", False) is True
                                                 for m in model.modules()))
        compiled.add(any(getattr(m, "_compiled_call_impl", None) is not None for m in model.modules()))
        return originals[1](model, encoder, examples, modes, templates, *args, **kwargs)

    def make_optimizer(model, cfg):
        optimizer = originals[2](model, cfg)
        names = [n for n, p in model.named_parameters() if p.requires_grad]
        params = model.trainable_parameters()

        def keep_first_gradients(opt, args, kwargs):
            if not grads:
                grads.update({n: p.grad.detach().clone() for n, p in zip(names, params) if p.grad is not None})
        optimizer.register_step_pre_hook(keep_first_gradients)
        return optimizer

    training.step_indices, training.batch_loss, training.make_optimizer = step_indices, batch_loss, make_optimizer
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # like the torchrun workers; tiny ops with 2 threads crawl on a busy 2-core box
    try:
        torch.manual_seed(0)
        model, enc, _, _ = build_tiny(llm_dir, config=ModelConfig(lora_r=4, lora_dropout=0.0, score_head=True,
                                                                  candidate_features="affinity"))
        settings = dict(steps=3, batch_size=4, micro_batch=1, checkpoint_every=1, autocast=False, head_weight=1.0,
                        score_noise=0.5, warmup_steps=1, grad_clip=0.0, seed=1, compile=False)
        cfg = training.TrainConfig(**{**settings, **overrides})
        rows = training.train(model, enc, fake_examples(12, 30), cfg, out, {"test": True}, log=lambda m: None)
    finally:
        training.step_indices, training.batch_loss, training.make_optimizer = originals
        torch.set_num_threads(threads)
    record.mkdir(parents=True, exist_ok=True)
    (record / "calls.json").write_text(json.dumps(calls))
    (record / "checkpointing.json").write_text(json.dumps(sorted(checkpointing)))
    (record / "compiled.json").write_text(json.dumps({"during": sorted(compiled), "after": any(
        getattr(m, "_compiled_call_impl", None) is not None for m in model.modules())}))
    save_file(grads, record / "grads.safetensors")
    return rows


def final_tensors(out: Path) -> dict[str, torch.Tensor]:
    tensors = load_file(out / "final" / "modules.safetensors")
    tensors.update({f"adapter.{k}": v for k, v in load_file(out / "final" / "adapter" / "adapter_model.safetensors").items()})
    return tensors


def assert_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], rtol=1e-4, atol=atol), (key, float((a[key] - b[key]).abs().max()))


def by_step(calls: list[list]) -> dict[int, list[list]]:
    out: dict[int, list[list]] = {}
    for call in calls:
        out.setdefault(call[0], []).append(call)
    return out


@pytest.fixture(scope="module")
def single(tiny_llm_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("single")
    rows = tiny_run(tiny_llm_dir, root / "out", root / "record")
    return root, rows


def torchrun(llm_dir: Path, out: Path, record: Path) -> None:
    """``tiny_run`` in 2 processes on CPU (gloo), as ``torchrun --standalone --nproc_per_node 2`` starts them."""
    script = record / "train.py"
    record.mkdir(parents=True, exist_ok=True)
    script.write_text(SCRIPT.format(root=str(ROOT), llm=str(llm_dir)))
    env = child_env(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    if Path("/sys/class/net/lo").exists():
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
           str(out), str(record)]
    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]


def test_two_processes_match_one(tmp_path, tiny_llm_dir, single):
    ref, ref_rows = single
    torchrun(tiny_llm_dir, tmp_path / "out", tmp_path)

    # the same global batch and curriculum/template draws at every step, rank 0 taking the first half
    single_calls = by_step(json.loads((ref / "record" / "calls.json").read_text()))
    ranks = [by_step(json.loads((tmp_path / f"rank{r}" / "calls.json").read_text())) for r in (0, 1)]
    assert sorted(single_calls) == [1, 2, 3]
    for step, calls in single_calls.items():
        assert ranks[0][step] == calls[:2] and ranks[1][step] == calls[2:], step
    # a step where one rank has only text-only examples: its projector gradients are absent, the other's are not
    modes = {(r, s): {c[2] for c in ranks[r][s]} for r in (0, 1) for s in (1, 2, 3)}
    assert any(modes[(r, s)] == {"text"} and "hybrid" in modes[(1 - r, s)] for r in (0, 1) for s in (1, 2, 3)), modes

    # summed gradients = the full-batch gradient (the loss is normalized by the global batch), then equal weights
    assert_close(load_file(tmp_path / "rank0" / "grads.safetensors"),
                 load_file(ref / "record" / "grads.safetensors"), atol=1e-5)
    assert_close(load_file(tmp_path / "rank1" / "grads.safetensors"),
                 load_file(ref / "record" / "grads.safetensors"), atol=1e-5)
    assert_close(final_tensors(tmp_path / "out"), final_tensors(ref / "out"), atol=1e-5)

    log = [json.loads(line) for line in (tmp_path / "out" / "train_log.jsonl").read_text().splitlines()]
    assert [r["hybrid_share"] for r in log] == [r["hybrid_share"] for r in ref_rows]
    for mine, theirs in zip(log, ref_rows):
        for key in ("loss", "generative", "head"):
            assert mine[key] == pytest.approx(theirs[key], rel=1e-5), key
    # only rank 0 wrote: the same files as the single-process run
    listing = lambda out: sorted(str(p.relative_to(out)) for p in out.rglob("*"))  # noqa: E731
    assert listing(tmp_path / "out") == listing(ref / "out")
    run = json.loads((tmp_path / "out" / "final" / "run.json").read_text())
    assert run["world_size"] == 2


def test_two_processes_resume_a_single_process_checkpoint(tmp_path, tiny_llm_dir, single):
    ref, ref_rows = single
    shutil.copytree(ref / "out", tmp_path / "out")
    for name in ("final", "checkpoints/step-000003"):
        shutil.rmtree(tmp_path / "out" / name)
    torchrun(tiny_llm_dir, tmp_path / "out", tmp_path)
    assert {c[0] for r in (0, 1) for c in json.loads((tmp_path / f"rank{r}" / "calls.json").read_text())} == {3}
    assert_close(final_tensors(tmp_path / "out"), final_tensors(ref / "out"), atol=1e-5)
    log = [json.loads(line) for line in (tmp_path / "out" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3] and log[2]["loss"] == pytest.approx(ref_rows[2]["loss"], rel=1e-5)


def test_gradient_checkpointing_changes_nothing(tmp_path, tiny_llm_dir, single):
    ref, ref_rows = single
    rows = tiny_run(tiny_llm_dir, tmp_path / "out", tmp_path / "record", gradient_checkpointing=True)
    assert json.loads((tmp_path / "record" / "checkpointing.json").read_text()) == [True]
    assert json.loads((ref / "record" / "checkpointing.json").read_text()) == [False]
    assert rows[0]["loss"] == pytest.approx(ref_rows[0]["loss"], rel=1e-5)
    assert_close(load_file(tmp_path / "record" / "grads.safetensors"),
                 load_file(ref / "record" / "grads.safetensors"), atol=1e-5)
    assert_close(final_tensors(tmp_path / "out"), final_tensors(ref / "out"), atol=1e-5)


@pytest.mark.skipif(not cpp_compiler_found(), reason="torch.compile on CPU needs a C++ compiler")
def test_compiled_layers_train_like_eager(tmp_path, tiny_llm_dir, single):
    ref, ref_rows = single
    rows = tiny_run(tiny_llm_dir, tmp_path / "out", tmp_path / "record", compile=True)
    assert json.loads((tmp_path / "record" / "compiled.json").read_text()) == {"during": [True], "after": False}
    assert json.loads((ref / "record" / "compiled.json").read_text()) == {"during": [False], "after": False}
    assert [r["loss"] for r in rows] == pytest.approx([r["loss"] for r in ref_rows], rel=1e-4)
    assert_close(load_file(tmp_path / "record" / "grads.safetensors"),
                 load_file(ref / "record" / "grads.safetensors"), atol=1e-5)
    assert_close(final_tensors(tmp_path / "out"), final_tensors(ref / "out"), atol=1e-5)


def test_compile_auto_needs_cpu_and_a_compiler(monkeypatch):
    import llara.llm.training as training

    from llara.llm.model import ModelConfig

    def model(device: str = "cpu", **config) -> SimpleNamespace:
        return SimpleNamespace(device=torch.device(device), config=ModelConfig(**{"lora_dropout": 0.0, **config}))

    cpu = model()
    auto = training.TrainConfig(compile="auto")
    monkeypatch.setattr(training.shutil, "which", lambda name: f"/usr/bin/{name}")
    assert training.training_compile(auto, cpu)
    assert training.training_compile(auto, model(lora=False, lora_dropout=0.1))
    assert not training.training_compile(auto, model(lora_dropout=0.1))  # compiled dropout is slower on CPU
    assert not training.training_compile(replace(auto, gradient_checkpointing=True), cpu)
    assert not training.training_compile(auto, model("cuda"))
    assert training.training_compile(replace(auto, compile=True), model("cuda", lora_dropout=0.1))
    monkeypatch.setattr(training.shutil, "which", lambda name: None)
    assert not training.training_compile(auto, cpu)
    assert not training.training_compile(replace(auto, compile=False), cpu)


def test_micro_batch_does_not_change_the_gradient(tmp_path, tiny_llm_dir, single):
    ref, ref_rows = single
    rows = tiny_run(tiny_llm_dir, tmp_path / "out", tmp_path / "record", micro_batch=4)
    assert rows[0]["loss"] == pytest.approx(ref_rows[0]["loss"], rel=1e-5)
    assert_close(load_file(tmp_path / "record" / "grads.safetensors"),
                 load_file(ref / "record" / "grads.safetensors"), atol=1e-5)


def test_batch_must_split_evenly_over_processes():
    assert shard(Dist(rank=1, world_size=4), 8) == (2, 4)
    with pytest.raises(InputError, match="split evenly over 3 processes"):
        shard(Dist(rank=0, world_size=3), 8)
