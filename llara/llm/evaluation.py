"""Evaluate a model on split rows in ``generate`` mode (the paper's), ``rank`` and ``rank_llm`` modes.

- generate: greedy answer; valid when it names exactly one candidate (:func:`match_answer`); HR@1 = correct / all,
  ValidRatio = valid / all; also both under the authors' parser (``*_authors_parser``: exactly one candidate title is a
  substring of the answer), for comparison with the paper.
- rank: candidates ordered by the run's scores: the score head's when the recipe has one, else the answer
  log-likelihood, length-normalized when the recipe says so (``length_norm``, as in serving). HR@1, HR@5, NDCG@5.
- rank_llm: candidates ordered by the log-probability of their whole answer (title + end marker, summed over its
  tokens): what the language model itself prefers, the ranking that greedy generation approximates, whatever the
  recipe. Summed, not length-normalized: the mean favours long titles, whose later tokens are nearly certain once
  the first is chosen (validation HR@1, docs/llara.md#rank_llm-the-answers-probability).
- generate_two_orders, rank_llm_two_orders: the same two modes with position bias removed at inference: every user's
  prompt is read with its candidates as listed and reversed (the same template), so each candidate sits on average
  mid-list. Generation decodes the two prompts as one (each token the argmax of their mean log-probability; still
  free text over the whole vocabulary), rank_llm averages each candidate's answer log-likelihood over the two. Twice
  the prompts of one pass (docs/llara.md#position-bias-and-two-orders).
No recommender score is added in any mode.
- recommender: the frozen recommender alone on the same rows and candidates, and ``paired_vs_recommender``: per mode,
  the per-user paired difference of HR@1 (model - recommender) with a paired bootstrap CI.
Returns the metrics (llara.metrics.summarize dicts) and one prediction row per example.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator, Sequence

import numpy as np
import torch
from tqdm import tqdm

from llara.llm.curriculum import template_draws
from llara.llm.data import Batch, Example, collate
from llara.llm.generation import greedy_generate, match_answer, match_answer_authors, newline_token_ids
from llara.llm.model import LlaraModel
from llara.llm.prompts import PromptEncoder
from llara.llm.recipes import EVAL_BATCH_SIZE, EVAL_MODES, check_modes
from llara.llm.scoring import mode_scores, prompt_scores
from llara.metrics import hit_at_k, paired_difference, ranking_metrics, summarize, target_ranks
from llara.recommenders.api import score_rows

RANK_MODES = ("rank", "rank_llm")
TWO_ORDERS = "_two_orders"  # the suffix of the modes that read each prompt in two candidate orders
SINGLE_ORDER_MODES = tuple(m for m in EVAL_MODES if not m.endswith(TWO_ORDERS))  # evaluate's default
RECOMMENDER_BATCH = 256


def eval_templates(encoder: PromptEncoder, examples: Sequence[Example], seed: int) -> list[int]:
    return [template_draws(len(encoder.templates), seed, e.row, 1)[0] for e in examples]


def length_order(encoder: PromptEncoder, examples: Sequence[Example], item_mode: str, templates: Sequence[int]) -> list[int]:
    """Example indices by prompt length (stable): batches of similar lengths waste little compute on padding."""
    lengths = [len(encoder.encode(e.history, e.candidates, item_mode, t).input_ids) for e, t in zip(examples, templates)]
    return sorted(range(len(examples)), key=lambda i: lengths[i])


def eval_batches(model: LlaraModel, encoder: PromptEncoder, examples: Sequence[Example], item_mode: str,
                 templates: Sequence[int], batch_size: int) -> Iterator[tuple[list[int], Batch]]:
    """(example indices, batch) in evaluation order: batches of prompts of similar length, each row with its template."""
    order = length_order(encoder, examples, item_mode, templates)
    for lo in range(0, len(examples), batch_size):
        idx = order[lo:lo + batch_size]
        yield idx, collate(encoder, [examples[i] for i in idx], [item_mode] * len(idx), [templates[i] for i in idx],
                           False, model.loaded.pad_token_id)


def reversed_candidates(examples: Sequence[Example]) -> list[Example]:
    """The same examples with each candidate list in reverse order."""
    return [dataclasses.replace(e, candidates=type(e.candidates)(reversed(e.candidates))) for e in examples]


@torch.no_grad()
def two_order_pass(model: LlaraModel, encoder: PromptEncoder, examples: Sequence[Example], item_mode: str,
                   templates: Sequence[int], batch_size: int, stop_ids: Sequence[int], generate: bool, rank: bool,
                   length_norm: bool, max_new_tokens: int | None = None) -> tuple[list, list]:
    """(answers, rank_llm scores (C,) in the listed order) per example, each user's two candidate orders read as one:
    greedy decoding tied across the two prompts, answer log-likelihoods averaged (``generate``/``rank`` say which
    are computed; the other list holds None). ``batch_size`` users make a batch of twice as many prompts."""
    flipped = reversed_candidates(examples)
    answers: list = [None] * len(examples)
    scores: list = [None] * len(examples)
    order = length_order(encoder, examples, item_mode, templates)
    users = max(1, batch_size // 2)
    for lo in tqdm(range(0, len(order), users), desc="evaluate, two orders", mininterval=5):
        idx = order[lo:lo + users]
        k = len(idx)
        rows = [examples[i] for i in idx] + [flipped[i] for i in idx]
        batch = collate(encoder, rows, [item_mode] * 2 * k, [templates[i] for i in idx] * 2, False,
                        model.loaded.pad_token_id)
        got: dict[str, torch.Tensor] = {}
        if generate:
            hook = (lambda out, z, has: got.update(prompt_scores(
                model, encoder, batch, out, ["rank_llm"], False, length_norm, copy_cache=True))) if rank else None
            limit = max_new_tokens or max(len(encoder.answer_ids(c)) for e in rows for c in e.candidates)
            ids = greedy_generate(model, batch, limit, stop_ids, on_prompt=hook, tied=torch.arange(k).repeat(2))
            for j, i in enumerate(idx):
                answers[i] = encoder.tokenizer.decode(ids[j], skip_special_tokens=True).strip()
        elif rank:
            got = mode_scores(model, encoder, batch, ["rank_llm"], False, length_norm)
        if rank:
            both = got["rank_llm"].float().cpu()
            for j, i in enumerate(idx):
                scores[i] = (both[j] + both[k + j].flip(-1)) / 2  # the reversed prompt's scores back in listed order
    return answers, scores


def recommender_scores(model: LlaraModel, examples: Sequence[Example]) -> np.ndarray:
    """(N, C) scores of the frozen recommender alone on each row's candidates."""
    return score_rows(model.features.recommender, [e.history for e in examples], [e.candidates for e in examples],
                      RECOMMENDER_BATCH)


@torch.no_grad()
def evaluate(model: LlaraModel, encoder: PromptEncoder, examples: Sequence[Example], *, item_mode: str = "hybrid",
             modes: Sequence[str] = SINGLE_ORDER_MODES, seed: int = 0, batch_size: int = EVAL_BATCH_SIZE,
             length_norm: bool = True, use_head: bool = True, max_new_tokens: int | None = None, frame: bool = True):
    """Metrics of the requested modes, the recommender alone and the paired differences, and one prediction row per
    example (in the input order): a polars DataFrame, or with ``frame=False`` its columns as a dict (no polars
    needed, e.g. on a GPU machine that lacks it). ``length_norm`` (the run's recipe) applies to ``rank`` without a
    head only; ``rank_llm`` always sums.

    Batches hold prompts of similar length; every mode reads its scores off one forward pass per prompt (with
    generation, the generation's: :func:`llara.llm.scoring.prompt_scores`), and ``rank`` without a head and
    ``rank_llm`` share one scoring of the answers."""
    model.eval()
    examples = list(examples)
    n = len(examples)
    templates = eval_templates(encoder, examples, seed)
    stop_ids = [model.loaded.eos_token_id] + newline_token_ids(model.loaded.tokenizer)
    check_modes(modes)
    generate = "generate" in modes
    ranked = [m for m in RANK_MODES if m in modes]
    answers: dict[str, list] = {"": [None] * n}
    score_rows: dict[str, list] = {m: [None] * n for m in ranked}
    batches = eval_batches(model, encoder, examples, item_mode, templates, batch_size) if generate or ranked else []
    for idx, batch in tqdm(batches, total=-(-n // batch_size), desc="evaluate", mininterval=5):
        chunk = [examples[i] for i in idx]
        scores: dict[str, torch.Tensor] = {}
        if generate:
            limit = max_new_tokens or max(len(encoder.answer_ids(c)) for e in chunk for c in e.candidates)
            on_prompt = (lambda out, z, has: scores.update(prompt_scores(
                model, encoder, batch, out, ranked, use_head, length_norm, copy_cache=True))) if ranked else None
            for i, ids in zip(idx, greedy_generate(model, batch, limit, stop_ids, on_prompt=on_prompt)):
                answers[""][i] = encoder.tokenizer.decode(ids, skip_special_tokens=True).strip()
        elif ranked:
            scores = mode_scores(model, encoder, batch, ranked, use_head, length_norm)
        for m in ranked:
            for i, row in zip(idx, scores[m].float().cpu()):
                score_rows[m][i] = row
    two_generate, two_rank = "generate" + TWO_ORDERS in modes, "rank_llm" + TWO_ORDERS in modes
    if two_generate or two_rank:
        answers[TWO_ORDERS], score_rows["rank_llm" + TWO_ORDERS] = two_order_pass(
            model, encoder, examples, item_mode, templates, batch_size, stop_ids, two_generate, two_rank, length_norm,
            max_new_tokens)
        ranked += ["rank_llm" + TWO_ORDERS] if two_rank else []
    pred: dict[str, list] = {"row": [e.row for e in examples], "user": [e.user for e in examples],
                             "target": [e.target for e in examples], "template": templates}
    metrics: dict[str, dict] = {}
    hits: dict[str, np.ndarray] = {}
    targets = [e.target_index for e in examples]
    for suffix in ("", TWO_ORDERS):
        if "generate" + suffix in modes:
            metrics["generate" + suffix] = generate_metrics(encoder, examples, answers[suffix], seed, pred, suffix)
            hits["generate" + suffix] = np.asarray(pred["correct" + suffix], dtype=float)
    for m in ranked:
        table = torch.stack(score_rows[m]).numpy()
        ranks = target_ranks(table, targets)
        metrics[m] = ranking_metrics(ranks, ks=(1, 5), ndcg_ks=(5,), seed=seed)
        hits[m] = hit_at_k(ranks, 1)
        pred[m] = ranks
        if m == "rank":
            pred.update(top_item=[e.candidates[int(np.argmax(s))] for e, s in zip(examples, table)],
                        scores=[list(map(float, s)) for s in table])
    baseline = target_ranks(recommender_scores(model, examples), targets)
    metrics["recommender"] = ranking_metrics(baseline, ks=(1, 5), ndcg_ks=(5,), seed=seed)
    pred["recommender_rank"] = baseline
    metrics["paired_vs_recommender"] = {m: {"hr@1": paired_difference(h, hit_at_k(baseline, 1), seed=seed)}
                                        for m, h in hits.items()}
    if not frame:
        return metrics, pred
    import polars as pl

    return metrics, pl.DataFrame(pred, strict=False)


def parse_answers(parser, examples: Sequence[Example], answers: Sequence[str], names: Sequence[Sequence[str]]
                  ) -> tuple[list, np.ndarray, np.ndarray]:
    """(item each answer names or None, valid 0/1, correct 0/1) under an answer parser."""
    picked = []
    for e, text, titles in zip(examples, answers, names):
        k = parser(text, titles)
        picked.append(None if k is None else e.candidates[k])
    valid = np.array([p is not None for p in picked], dtype=float)
    correct = np.array([p == e.target for p, e in zip(picked, examples)], dtype=float)
    return picked, valid, correct


def generate_metrics(encoder: PromptEncoder, examples: Sequence[Example], answers: Sequence[str], seed: int,
                     pred: dict, suffix: str = "") -> dict:
    """HR@1 and ValidRatio of the answers under our parser and the authors'; adds the prediction columns (ours, their
    names ending in ``suffix``)."""
    names = [[encoder.title(c) for c in e.candidates] for e in examples]
    picked, valid, correct = parse_answers(match_answer, examples, answers, names)
    _, a_valid, a_correct = parse_answers(match_answer_authors, examples, answers, names)
    columns = {"generated": list(answers), "generated_item": picked, "valid": valid.astype(bool),
               "correct": correct.astype(bool)}
    pred.update({name + suffix: values for name, values in columns.items()})
    return {"hr@1": summarize(correct, seed=seed), "valid_ratio": summarize(valid, seed=seed),
            "hr@1_authors_parser": summarize(a_correct, seed=seed),
            "valid_ratio_authors_parser": summarize(a_valid, seed=seed)}
