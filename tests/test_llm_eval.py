"""Evaluation batching (length order, one prompt pass for both modes), LoRA merging, early stopping of training and
the attention kernel while training, on a tiny random Llama (adapter and score head moved off their zero start)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from llara.errors import ConfigError
from llara.llm.data import collate
from llara.llm.evaluation import evaluate, eval_templates, length_order
from llara.llm.model import ModelConfig
from llara.llm.scoring import rank_scores
from llara.llm.training import TrainConfig, train
from _llm_helpers import build_tiny, fake_examples


def perturbed(tiny_llm_dir):
    """A tiny hybrid model with non-zero LoRA B matrices and score head (as after training)."""
    torch.manual_seed(1)
    model, enc, _, _ = build_tiny(tiny_llm_dir, config=ModelConfig(lora_r=4, lora_dropout=0.0, score_head=True,
                                                                   candidate_features="affinity"))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name or name.startswith("head."):
                p.normal_(0, 0.5)
    model.eval()
    return model, enc


@pytest.fixture(scope="module")
def tiny(tiny_llm_dir):
    return perturbed(tiny_llm_dir)


def scores(pred) -> np.ndarray:
    return np.array(pred["scores"].to_list())


def test_length_ordered_batches_report_in_input_order(tiny):
    model, enc = tiny
    ex = fake_examples(7, 30)
    assert length_order(enc, ex, "hybrid", eval_templates(enc, ex, 0)) != list(range(7))  # batches are reordered
    m3, p3 = evaluate(model, enc, ex, batch_size=3, max_new_tokens=4)
    m1, p1 = evaluate(model, enc, ex, batch_size=1, max_new_tokens=4)
    assert p3["row"].to_list() == [e.row for e in ex]
    assert p3["generated"].to_list() == p1["generated"].to_list()
    assert np.allclose(scores(p3), scores(p1), atol=1e-4)
    assert m3["rank"]["hr@1"]["value"] == m1["rank"]["hr@1"]["value"]


def test_both_modes_read_the_head_off_the_generation_pass(tiny):
    model, enc = tiny
    ex = fake_examples(5, 30)
    _, both = evaluate(model, enc, ex, modes=["generate", "rank"], batch_size=2, max_new_tokens=3)
    _, rank_only = evaluate(model, enc, ex, modes=["rank"], batch_size=2)
    assert np.allclose(scores(both), scores(rank_only), atol=1e-5)
    assert np.ptp(scores(both)) > 0.1  # the head is not at its zero start: the test compares real scores


def test_merged_lora_scores_like_the_adapter(tiny_llm_dir):
    model, enc = perturbed(tiny_llm_dir)
    ex = fake_examples(3, 30)
    batch = collate(enc, ex, ["hybrid", "text", "id"], [0, 1, 2], False, model.loaded.pad_token_id)
    with_adapter = rank_scores(model, enc, batch, use_head=False)
    model.merge_lora()
    assert not any("lora_" in name for name, _ in model.named_parameters())
    assert torch.allclose(rank_scores(model, enc, batch, use_head=False), with_adapter, atol=1e-4)
    model.merge_lora()  # no adapter left: a no-op


def test_on_step_stops_training_early(tmp_path, tiny_llm_dir):
    model, enc, _, _ = build_tiny(tiny_llm_dir)
    seen, kernels, own = [], set(), model.attention
    cfg = TrainConfig(steps=6, batch_size=2, micro_batch=2, warmup_steps=1, checkpoint_every=100, compile=False)

    def on_step(row):
        seen.append(row["step"])
        kernels.add(model.attention)
        return row["step"] == 2

    rows = train(model, enc, fake_examples(8, 30), cfg, tmp_path, {}, lambda m: None, on_step=on_step)
    assert seen == [1, 2] and [r["step"] for r in rows] == [1, 2]
    assert kernels == {"eager"} and model.attention == own == "sdpa"  # eager while training on CPU, then restored
    assert json.loads((tmp_path / "final" / "run.json").read_text())["steps_done"] == 2
    assert len((tmp_path / "train_log.jsonl").read_text().splitlines()) == 2
    assert model.training is False
    adapter = load_file(tmp_path / "final" / "adapter" / "adapter_model.safetensors")
    assert adapter and all("lora_" in key for key in adapter)  # no frozen embedding matrices in the adapter


def test_entry_points_cap_the_onednn_kernel_cache(monkeypatch):
    import os

    from llara.entrypoint import run_reporting_errors

    monkeypatch.delenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", raising=False)
    assert run_reporting_errors(lambda: None) == 0
    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == "128"
    monkeypatch.setenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "7")  # the user's environment wins
    run_reporting_errors(lambda: None)
    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == "7"


def test_rank_llm_sums_the_answer_log_likelihood_while_rank_follows_the_recipe(tiny_llm_dir):
    """rank_llm ranks by the whole answer's log-probability (summed), whatever the recipe; a head-less run's `rank`
    keeps the recipe's length normalization (as serving does)."""
    from llara.metrics import target_ranks

    model, enc, _, _ = build_tiny(tiny_llm_dir, config=ModelConfig(lora_r=4, lora_dropout=0.0))
    ex = fake_examples(12, 30)
    templates = eval_templates(enc, ex, 0)

    def table(norm: bool) -> np.ndarray:
        rows = [rank_scores(model, enc, collate(enc, [e], ["hybrid"], [t], False, model.loaded.pad_token_id),
                            length_norm=norm)[0].numpy() for e, t in zip(ex, templates)]
        return target_ranks(np.stack(rows), [e.target_index for e in ex])

    summed, mean = table(False), table(True)
    assert not np.array_equal(summed, mean), "the two reductions must rank differently here for the test to bite"
    for norm, expected_rank in ((True, mean), (False, summed)):
        _, pred = evaluate(model, enc, ex, modes=["rank", "rank_llm"], batch_size=4, length_norm=norm)
        assert pred["rank_llm"].to_list() == summed.tolist()
        assert pred["rank"].to_list() == expected_rank.tolist()


def test_generation_shares_its_prompt_pass_with_the_likelihood_modes(tiny):
    """With generation, the rank modes are scored off the generation's prompt pass (`rank_llm` on a copy of its
    cache): the same scores as a pass of their own, and the same answers as generation alone."""
    model, enc = tiny
    ex = fake_examples(6, 30)
    _, every = evaluate(model, enc, ex, batch_size=3, max_new_tokens=6)
    _, generated = evaluate(model, enc, ex, modes=["generate"], batch_size=3, max_new_tokens=6)
    _, ranked = evaluate(model, enc, ex, modes=["rank", "rank_llm"], batch_size=3)
    answers = generated["generated"].to_list()
    assert len({a[1:] for a in answers}) > 1  # answers that differ past the first token: the cache's use is tested
    assert every["generated"].to_list() == answers
    assert np.allclose(scores(every), scores(ranked), atol=1e-5)
    assert every["rank_llm"].to_list() == ranked["rank_llm"].to_list()


def test_two_order_modes_read_both_orders_as_one(tiny):
    """generate_two_orders / rank_llm_two_orders do not depend on the order the candidates are listed in (each prompt
    is read as listed and reversed, as one), the likelihoods are the two orders' mean, and both modes are compared with
    the recommender."""
    from llara.llm.evaluation import reversed_candidates
    from llara.llm.scoring import mode_scores
    from llara.metrics import target_ranks

    model, enc = tiny
    ex = fake_examples(6, 30)
    modes = ["generate", "rank_llm", "generate_two_orders", "rank_llm_two_orders"]
    metrics, pred = evaluate(model, enc, ex, modes=modes, batch_size=4, max_new_tokens=6)
    _, flipped = evaluate(model, enc, reversed_candidates(ex), modes=modes[2:], batch_size=4, max_new_tokens=6)
    assert flipped["generated_two_orders"].to_list() == pred["generated_two_orders"].to_list()
    assert flipped["rank_llm_two_orders"].to_list() == pred["rank_llm_two_orders"].to_list()
    assert pred["generated_two_orders"].to_list() != pred["generated"].to_list()  # the second order changes answers
    templates = eval_templates(enc, ex, 0)
    both = [mode_scores(model, enc, collate(enc, rows, ["hybrid"] * 6, templates, False, model.loaded.pad_token_id),
                        ["rank_llm"], False, True)["rank_llm"].float().numpy() for rows in (ex, reversed_candidates(ex))]
    mean = (both[0] + both[1][:, ::-1]) / 2
    assert pred["rank_llm_two_orders"].to_list() == target_ranks(mean, [e.target_index for e in ex]).tolist()
    assert pred["rank_llm_two_orders"].to_list() != pred["rank_llm"].to_list()
    assert set(metrics["paired_vs_recommender"]) == set(modes)
    assert metrics["generate_two_orders"]["valid_ratio"]["n"] == 6
    with pytest.raises(ConfigError, match="unknown mode.*generate_three_orders") as bad:
        evaluate(model, enc, ex, modes=["generate_three_orders"])
    assert bad.value.key == "modes"
