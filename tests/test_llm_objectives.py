"""The recipes on a tiny Llama with the real tokenizer: every recipe's loss falls on a small learnable task (the answer
is always the first candidate); the validation-based checkpoint choice puts the best step's weights into final/."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file

from llara.llm import selection as selection_module
from llara.llm.data import Example
from llara.llm.recipes import PROFILES, RECIPES
from llara.llm.selection import Selection
from llara.llm.training import TrainConfig, train
from llara.llm.workflow import variant_configs
from _llm_helpers import build_tiny, fake_examples, make_tiny_llm


@pytest.fixture(scope="module")
def learnable_llm_dir(tokenizer_dir, tmp_path_factory):
    """The tiny Llama with embeddings large enough for confident answers (see make_tiny_llm)."""
    return make_tiny_llm(tokenizer_dir, tmp_path_factory.mktemp("learnable-llm"), initializer_range=0.5)


def first_candidate_task(n_rows: int, n_items: int = 30) -> list[Example]:
    """Rows whose answer is always their first candidate: learnable from the prompt alone."""
    return [Example(e.row, e.user, e.history, e.candidates[0], e.candidates) for e in fake_examples(n_rows, n_items)]


@pytest.mark.parametrize("name,settings", [
    ("paper", {}),  # next-token loss on the answer, item-embedding tokens, Adam
    ("ours", {}),  # + affinity features, score head
    ("ours", {"token_first": False, "text_placeholder": False}),  # the paper's item layout under our objectives
])
def test_each_recipe_learns_a_learnable_task(learnable_llm_dir, tmp_path, name, settings):
    recipe = replace(RECIPES[name], lr=1e-2, warmup_start_lr=1e-3, lora_dropout=0.0, **settings)
    profile = replace(PROFILES["default"], steps=30, batch_size=4, micro_batch=4, warmup_steps=2, checkpoint_every=100,
                      compile=False)
    train_cfg, model_cfg = variant_configs("hybrid-direct", recipe, profile, seed=0)
    train_cfg = replace(train_cfg, autocast=False, score_noise=0.0)
    torch.manual_seed(0)
    model, enc, _, _ = build_tiny(learnable_llm_dir, config=replace(model_cfg, lora_r=8))
    rows = train(model, enc, first_candidate_task(8), train_cfg, tmp_path, {}, log=lambda m: None)
    first, last = (sum(r["loss"] for r in part) / len(part) for part in (rows[:5], rows[-5:]))
    assert last < 0.6 * first, (first, last)


def test_selection_puts_the_best_steps_weights_into_final(tiny_llm_dir, tmp_path, monkeypatch):
    model, enc, _, _ = build_tiny(tiny_llm_dir)
    scripted = [0.5, 0.25, 0.5, 0.0]  # at steps 2, 4, 6, 7: 2 and 6 tie (the later wins), 4 and 7 are worse
    calls = []

    def fake_evaluate(model_, encoder, examples, **kwargs):
        value = {"value": scripted[len(calls)], "ci95": [0, 1], "n": len(examples)}
        calls.append(kwargs["modes"])
        return {"generate": {"hr@1": value, "valid_ratio": value}}, None

    monkeypatch.setattr(selection_module, "evaluate", fake_evaluate)
    cfg = TrainConfig(steps=7, batch_size=2, micro_batch=2, warmup_steps=1, checkpoint_every=100, compile=False)
    chooser = Selection(tmp_path, fake_examples(4, 30), every=2, total_steps=7, item_mode="hybrid").bind(model, enc)
    train(model, enc, fake_examples(8, 30), cfg, tmp_path, {}, lambda m: None, on_step=chooser)
    assert calls == [["generate"]] * 4  # every 2 steps and the last one
    points = [json.loads(line) for line in (tmp_path / "validation.jsonl").read_text().splitlines()]
    assert [p["step"] for p in points] == [2, 4, 6, 7]
    last = load_file(tmp_path / "final" / "modules.safetensors")
    best = chooser.finish()
    assert best["step"] == 6
    chosen = load_file(tmp_path / "final" / "modules.safetensors")
    assert chosen.keys() == last.keys() and any(not torch.equal(chosen[k], last[k]) for k in chosen)
    assert all(torch.equal(chosen[k], v) for k, v in load_file(tmp_path / "selected" / "modules.safetensors").items())
    assert json.loads((tmp_path / "final" / "run.json").read_text())["selected"]["step"] == 6

    # killed after its last checkpoint, before final/ got the chosen weights: the rerun trains no step, and the
    # choice is made from the recorded points (no step is evaluated again)
    (tmp_path / "final" / "run.json").unlink()
    again = Selection(tmp_path, fake_examples(4, 30), every=2, total_steps=7, item_mode="hybrid").bind(model, enc)
    logged = []
    train(model, enc, fake_examples(8, 30), cfg, tmp_path, {}, logged.append, on_step=again)
    assert any("(step 7/7)" in m for m in logged) and len(calls) == 4
    assert again.finish()["step"] == 6
    assert all(torch.equal(chosen[k], v) for k, v in load_file(tmp_path / "final" / "modules.safetensors").items())

    # other inputs (here the train rows' digest), stopped at step 1 before any evaluation: the old run's points and weights
    # are gone, so they can never be chosen for the new run
    fresh = Selection(tmp_path, fake_examples(4, 30), every=2, total_steps=7, item_mode="hybrid").bind(model, enc)
    train(model, enc, fake_examples(8, 30), cfg, tmp_path, {"inputs": {"train rows": "other"}}, lambda m: None,
          on_step=lambda row: fresh(row) or True)
    assert (tmp_path / "validation.jsonl").read_text() == "" and not (tmp_path / "selected").exists()
    assert fresh.finish() is None and len(calls) == 4


def test_changed_training_code_trains_again_instead_of_resuming(tiny_llm_dir, tmp_path, monkeypatch):
    """A finished run rerun unchanged resumes (nothing trains), also after an edit of code training never runs
    (serving); after an edit of a module it runs (a copy of the llara package here) the rerun trains from step 0,
    saying why, as DVC's rerun of the stage then expects."""
    import shutil

    from llara import code_key

    code = tmp_path / "code" / "llara"
    shutil.copytree(code_key.PACKAGE_DIR, code, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(code_key, "PACKAGE_DIR", code)
    model, enc, _, _ = build_tiny(tiny_llm_dir)
    cfg = TrainConfig(steps=2, batch_size=2, micro_batch=2, warmup_steps=1, checkpoint_every=100, compile=False)

    def run() -> list[str]:
        logged = []
        train(model, enc, fake_examples(8, 30), cfg, tmp_path / "run", {}, logged.append)
        return logged

    run()
    assert any("resuming from" in m and "(step 2/2)" in m for m in run())
    for module in ("llm/recommend.py", "batch_recommend.py", "errors.py"):  # not run by training, or plumbing
        with (code / module).open("a") as fh:
            fh.write("\n# a serving fix\n")
    assert any("resuming from" in m and "(step 2/2)" in m for m in run())
    with (code / "llm" / "data.py").open("a") as fh:
        fh.write("\n# a fix\n")
    logged = run()
    assert any("training code changed; training from scratch" in m for m in logged)
    assert not any("resuming from" in m for m in logged)


def test_checkpoint_key_has_the_dtype_not_the_memory_settings(tiny_llm_dir):
    """The dtype the LLM computes in is part of what a checkpoint is valid for (``auto`` resolves per machine, so a
    run moved between machines must not resume another dtype's weights); micro-batch, checkpoint cadence, kernels and
    compilation are not (the gradient is the same, up to float rounding)."""
    from llara.llm.training import run_fingerprint

    model, _, _, _ = build_tiny(tiny_llm_dir)
    examples = fake_examples(4, 30)
    cfg = TrainConfig(steps=2, batch_size=4, micro_batch=2, compile=False)
    key = run_fingerprint(cfg, model, {}, examples)
    neutral = replace(cfg, micro_batch=4, checkpoint_every=1, keep_checkpoints=5, attention="sdpa", compile=True,
                      gradient_checkpointing=True)
    assert run_fingerprint(neutral, model, {}, examples).digest == key.digest
    assert run_fingerprint(replace(cfg, lr=1e-3), model, {}, examples).changed(key.parts) == ["settings"]
    model.causal_lm.to(torch.bfloat16)
    assert run_fingerprint(cfg, model, {}, examples).changed(key.parts) == ["dtype"]
