"""Prompts, injection, label masking, curriculum, generation and rank mode on a tiny random Llama."""

from __future__ import annotations

import pytest
import torch

from llara.llm.curriculum import example_modes, hybrid_probability
from llara.llm.data import IGNORE, collate, step_indices
from llara.llm.generation import greedy_generate, match_answer, match_answer_authors, tied_mean
from llara.llm.model import ModelConfig
from llara.llm.prompts import load_templates
from llara.llm.scoring import naive_scores, rank_scores
from _llm_helpers import build_tiny, fake_examples


@pytest.fixture(scope="module")
def tiny(tiny_llm_dir):
    torch.manual_seed(0)
    return build_tiny(tiny_llm_dir, config=ModelConfig(lora_r=4, lora_dropout=0.0, score_head=True,
                                                       candidate_features="affinity"))


def test_templates_are_data_with_real_candidate_count():
    for domain in ("movie", "game", "artist", "item"):
        templates = load_templates(domain)
        assert len(templates) == 3
        assert all("10" not in t.text for t in templates)
    assert "20 movie titles" in "".join(load_templates("movie")[0].parts(20))


def test_prompt_modes(tiny):
    model, enc, titles, _ = tiny
    e = fake_examples(1, 30)[0]
    hid, cid = model.loaded.history_token_id, model.loaded.candidate_token_id
    text = enc.encode(e.history, e.candidates, "text", 0)
    assert hid not in text.input_ids and cid not in text.input_ids
    assert titles[e.candidates[0]] in enc.render(text)
    hybrid = enc.encode(e.history, e.candidates, "hybrid", 0)
    assert hybrid.input_ids.count(hid) == len(e.history) and hybrid.input_ids.count(cid) == len(e.candidates)
    assert [hybrid.input_ids[a] for a in hybrid.anchors] == [cid] * len(e.candidates)
    ids_only = enc.encode(e.history, e.candidates, "id", 0)
    assert titles[e.candidates[0]] not in enc.render(ids_only)
    assert ids_only.input_ids.count(cid) == len(e.candidates)


def test_injection_replaces_exactly_the_placeholders(tiny):
    model, enc, _, rec = tiny
    ex = fake_examples(3, 30)
    batch = collate(enc, ex, ["hybrid", "text", "hybrid"], [0, 1, 2], False, model.loaded.pad_token_id)
    plain = model.causal_lm.get_input_embeddings()(batch.input_ids)
    embeds, z, has = model.input_embeds(batch)
    hist_mask = batch.input_ids == model.loaded.history_token_id
    cand_mask = batch.input_ids == model.loaded.candidate_token_id
    other = ~(hist_mask | cand_mask)
    assert torch.equal(embeds[other], plain[other])
    expected_hist = model.history_projector(rec.item_embeddings([i for r in (0, 2) for i in ex[r].history]))
    assert torch.allclose(embeds[hist_mask], expected_hist)
    feats, _ = model.features.candidates([ex[0].history, ex[2].history], [ex[0].candidates, ex[2].candidates])
    assert torch.allclose(embeds[cand_mask], model.candidate_projector(feats.flatten(0, 1)))
    assert has.tolist() == [1.0, 0.0, 1.0] and torch.all(z[1] == 0)


def test_labels_cover_only_answer_and_end_marker(tiny):
    model, enc, titles, _ = tiny
    ex = fake_examples(2, 30)
    batch = collate(enc, ex, ["hybrid", "text"], [0, 0], True, model.loaded.pad_token_id)
    for i, e in enumerate(ex):
        kept = batch.labels[i][batch.labels[i] != IGNORE].tolist()
        assert kept == enc.answer_ids(e.target)
        assert kept[-1] == model.loaded.eos_token_id
        assert enc.tokenizer.decode(kept[:-1]).strip() == titles[e.target]


def test_curriculum_probability_and_draws():
    assert hybrid_probability("curriculum", 1, 100) == pytest.approx(0.01)
    assert hybrid_probability("curriculum", 50, 100) == pytest.approx(0.5)
    assert hybrid_probability("curriculum", 100, 100) == 1.0
    assert hybrid_probability("two-stage", 50, 100) == 0.0 and hybrid_probability("two-stage", 51, 100) == 1.0
    assert hybrid_probability("direct", 1, 100) == 1.0 and hybrid_probability("text-only", 99, 100) == 0.0
    # a shorter ramp: every example is hybrid from step ramp * T on, the same draws before it at the scaled rate
    assert hybrid_probability("curriculum", 10, 100, ramp=0.25) == pytest.approx(0.4)
    assert hybrid_probability("curriculum", 25, 100, ramp=0.25) == 1.0 == hybrid_probability("curriculum", 26, 100, 0.25)
    def modes(step, ramp=1.0, seed=0, n=32):
        return example_modes("curriculum", hybrid_probability("curriculum", step, 100, ramp), seed, step, n)

    assert modes(30, ramp=0.25) == ["hybrid"] * 32
    ramped = sum(m == "hybrid" for s in range(1, 26) for m in modes(s, ramp=0.25))
    assert 330 < ramped < 500  # mean probability over the ramp ~0.52 of 800 draws
    late = sum(m == "hybrid" for s in range(91, 101) for m in modes(s))
    early = sum(m == "hybrid" for s in range(1, 11) for m in modes(s))
    assert late > 280 and early < 40
    assert modes(37, seed=3, n=8) == modes(37, seed=3, n=8) != modes(37, seed=4, n=8)
    assert example_modes("id-only", hybrid_probability("id-only", 5, 10), 0, 5, 2) == ["id", "id"]
    # data order: steps cover each epoch once, and are a pure function of (seed, step)
    seen = sorted(i for s in range(1, 6) for i in step_indices(10, 0, s, 2))
    assert seen == list(range(10)) and step_indices(10, 0, 7, 4) == step_indices(10, 0, 7, 4)


def test_left_padded_batch_generation_equals_one_by_one(tiny):
    model, enc, _, _ = tiny
    ex = fake_examples(4, 30)
    modes, templates = ["hybrid", "text", "hybrid", "id"], [0, 1, 2, 0]
    stop = [model.loaded.eos_token_id]
    batched = greedy_generate(model, collate(enc, ex, modes, templates, False, model.loaded.pad_token_id), 6, stop)
    singles = [greedy_generate(model, collate(enc, [e], [m], [t], False, model.loaded.pad_token_id), 6, stop)[0]
               for e, m, t in zip(ex, modes, templates)]
    assert batched == singles
    assert len({len(enc.encode(e.history, e.candidates, m, t).input_ids) for e, m, t in zip(ex, modes, templates)}) > 1


def test_tied_rows_decode_as_one(tiny, monkeypatch):
    model, enc, _, _ = tiny
    torch.manual_seed(0)  # an output layer that reads the hidden state sharply, so different prompts answer apart
    head = torch.nn.Linear(model.causal_lm.config.hidden_size, model.causal_lm.config.vocab_size, bias=False)
    head.weight.data.mul_(200)
    monkeypatch.setattr(model.causal_lm, "get_output_embeddings", lambda: head)
    ex = fake_examples(3, 30)
    batch = collate(enc, ex + ex[:1], ["hybrid"] * 4, [0, 1, 2, 0], False, model.loaded.pad_token_id)
    stop = [model.loaded.eos_token_id]
    free = greedy_generate(model, batch, 6, stop)
    assert free[0] == free[3] and len(set(map(tuple, free[:3]))) == 3
    assert greedy_generate(model, batch, 6, stop, tied=torch.arange(4)) == free  # groups of one: plain greedy
    assert greedy_generate(model, batch, 6, stop, tied=torch.tensor([0, 1, 2, 0])) == free  # a prompt tied to itself
    paired = greedy_generate(model, batch, 6, stop, tied=torch.tensor([0, 0, 1, 1]))
    assert paired[0] == paired[1] and paired[2] == paired[3] and paired[0] != free[0]  # the tie moved row 0
    with torch.no_grad():  # reference without the KV cache: each token the argmax of the two prompts' mean
        embeds, _, _ = model.input_embeds(batch)
        for t, token in enumerate(paired[0]):
            prefix = model.causal_lm.get_input_embeddings()(torch.tensor([paired[0][:t]] * 4, dtype=torch.long))
            mask = torch.cat([batch.attention_mask, torch.ones(4, t, dtype=batch.attention_mask.dtype)], 1)
            positions = torch.cat([batch.position_ids, batch.position_ids[:, -1:] + torch.arange(1, t + 1)], 1)
            hidden = model.decoder(inputs_embeds=torch.cat([embeds, prefix], 1), attention_mask=mask,
                                   position_ids=positions).last_hidden_state[:2, -1]
            logits = head(hidden).float()
            logits[:, model.loaded.placeholder_ids] = float("-inf")
            assert token == int(logits.log_softmax(-1).mean(0).argmax())
    mean = tied_mean(torch.tensor([[0.0, -1.0, -9.0], [-4.0, -1.0, 0.0], [-1.0, -2.0, -3.0]]), torch.tensor([1, 1, 0]))
    assert torch.equal(mean, torch.tensor([[-2.0, -1.0, -4.5], [-2.0, -1.0, -4.5], [-1.0, -2.0, -3.0]]))


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_rank_scores_equal_naive_computation(tiny, attention):
    """The packed answers under a block mask score each candidate as its own prompt + answer sequence would."""
    model, enc, _, _ = tiny
    ex = fake_examples(3, 30)
    assert len({len(enc.answer_ids(c)) for e in ex for c in e.candidates}) > 2  # answers of several lengths
    batch = collate(enc, ex, ["hybrid", "text", "id"], [0, 1, 2], False, model.loaded.pad_token_id)
    before = model.attention
    model.set_attention(attention)
    try:
        for norm in (True, False):
            assert torch.allclose(rank_scores(model, enc, batch, length_norm=norm),
                                  naive_scores(model, enc, batch, length_norm=norm), atol=1e-4)
    finally:
        model.set_attention(before)


def test_answer_matching():
    titles = ["Night River", "Night", "Golden Storm"]
    assert match_answer("Golden Storm", titles) == 2
    assert match_answer("  night  ", titles) == 1  # exact normalized match wins over containment
    assert match_answer("I pick Golden Storm!", titles) == 2
    assert match_answer("Night River or Golden Storm", titles) is None  # names two candidates
    assert match_answer("something else", titles) is None
    assert match_answer("", titles) is None


def test_answer_cut_at_a_titles_inner_separator_names_it():
    titles = ["Niagara, Niagara", "Steal Big, Steal Little", "Alien: Resurrection", "Alien", "Paris Is Burning"]
    assert match_answer("Niagara", titles) == 0
    assert match_answer("Steal Big", titles) == 1
    assert match_answer("Alien", titles) == 3  # an exact title wins over a leading part of another
    assert match_answer("Paris", titles) is None  # not cut at a separator of "Paris Is Burning"
    assert match_answer("Steal", titles) is None  # not a whole leading part
    assert match_answer("Niagara", titles + ["Niagara: The Falls"]) is None  # leading part of two titles


def test_authors_parser_counts_substrings():
    titles = ["Night River", "Night", "Golden Storm"]
    assert match_answer_authors("Golden Storm", titles) == 2
    assert match_answer_authors("Night River", titles) is None  # "night" is a substring too: two candidates
    assert match_answer_authors("Niagara", ["Niagara, Niagara"]) is None


def test_rank_without_head_uses_loglik(tiny_llm_dir):
    model, enc, _, _ = build_tiny(tiny_llm_dir, config=ModelConfig(lora_r=4, lora_dropout=0.0))
    batch = collate(enc, fake_examples(2, 30), ["hybrid", "text"], [0, 1], False, model.loaded.pad_token_id)
    assert torch.equal(rank_scores(model, enc, batch, use_head=True), rank_scores(model, enc, batch, use_head=False))


@pytest.mark.parametrize("native", [True, False])
def test_auto_dtype_uses_bf16_only_where_the_cpu_multiplies_it_natively(tiny_llm_dir, monkeypatch, native):
    """On AVX2-only CPUs bf16 matmuls run a reference loop (75x slower than float32): `auto` loads float32 there and
    training's bf16 autocast is off; where oneDNN has bf16 kernels both are bf16."""
    from llara.llm.loading import load_llm, resolve_dtype
    from llara.llm.training import autocast_context

    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: native)
    want = torch.bfloat16 if native else torch.float32
    assert resolve_dtype("auto", "cpu") == want and resolve_dtype("float32", "cpu") == torch.float32
    llm = load_llm(str(tiny_llm_dir), dtype="auto", device="cpu")
    assert next(llm.model.parameters()).dtype == want

    class OnCpu:
        device = torch.device("cpu")

    with autocast_context(OnCpu(), enabled=True):
        product = torch.ones(2, 2) @ torch.ones(2, 2)
    assert product.dtype == want
    with pytest.raises(Exception, match="llm.dtype.*unknown dtype 'bf16'"):
        resolve_dtype("bf16")
