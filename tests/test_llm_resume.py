"""A fine-tuning run killed with SIGKILL resumes from its last checkpoint and ends exactly like an uninterrupted run."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from _flow_helpers import child_env

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """
import sys, time, torch
sys.path[:0] = [{root!r}, {root!r} + '/tests']  # llara, and the tests' helpers by name
from pathlib import Path
import llara.llm.training as training
from llara.llm.model import ModelConfig
from llara.llm.training import TrainConfig, train
from _llm_helpers import build_tiny, fake_examples

pause_after = int(sys.argv[2])
original = training.save_checkpoint
def save_then_pause(root, model, optimizer, step, state, keep=2):
    out = original(root, model, optimizer, step, state, keep)
    if step == pause_after:
        time.sleep(120)  # the parent kills us here
    return out
training.save_checkpoint = save_then_pause
torch.manual_seed(0)
model, enc, _, _ = build_tiny(Path({llm!r}), config=ModelConfig(lora_r=4, lora_dropout=0.2, score_head=True,
                              candidate_features="affinity"))
cfg = TrainConfig(steps=5, batch_size=4, micro_batch=2, checkpoint_every=1, autocast=False, head_weight=1.0, compile=False,
                  score_noise=0.5, warmup_steps=1)
train(model, enc, fake_examples(12, 30), cfg, Path(sys.argv[1]), {{"test": True}}, log=lambda m: None)
"""


def run(script: Path, out: Path, pause_after: int = -1) -> subprocess.Popen:
    env = child_env(PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, str(script), str(out), str(pause_after)], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def final_tensors(out: Path) -> dict[str, torch.Tensor]:
    tensors = load_file(out / "final" / "modules.safetensors")
    tensors.update({f"adapter.{k}": v for k, v in load_file(out / "final" / "adapter" / "adapter_model.safetensors").items()})
    return tensors


def test_sigkill_then_resume_equals_uninterrupted(tmp_path, tiny_llm_dir):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT.format(root=str(ROOT), llm=str(tiny_llm_dir)))

    full = run(script, tmp_path / "full")
    _, err = full.communicate(timeout=300)
    assert full.returncode == 0, err

    killed = run(script, tmp_path / "killed", pause_after=2)
    marker = tmp_path / "killed" / "checkpoints" / "step-000002" / "state.json"
    deadline = time.time() + 300
    while not marker.exists():
        assert killed.poll() is None, killed.stderr.read()
        assert time.time() < deadline
        time.sleep(0.2)
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=30)
    assert not (tmp_path / "killed" / "final").exists()

    resumed = run(script, tmp_path / "killed")
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err

    a, b = final_tensors(tmp_path / "full"), final_tensors(tmp_path / "killed")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    log_a = (tmp_path / "full" / "train_log.jsonl").read_text().splitlines()
    log_b = (tmp_path / "killed" / "train_log.jsonl").read_text().splitlines()
    assert log_a == log_b
    probabilities = [json.loads(line)["hybrid_probability"] for line in log_b]
    assert probabilities == [0.2, 0.4, 0.6, 0.8, 1.0]  # the curriculum clock survived the kill
