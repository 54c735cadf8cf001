"""Evaluate a model on split rows in ``generate`` mode (the paper's) and ``rank`` mode.

- generate: greedy answer; valid when it names exactly one candidate; HR@1 = correct / all, ValidRatio = valid / all.
- rank: candidates ordered by answer log-likelihood (or by the score head when the run has one): HR@1, HR@5, NDCG@5.
Returns the metrics (llara.metrics.summarize dicts) and one prediction row per example.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import polars as pl
import torch
from tqdm import tqdm

from llara.llm.curriculum import template_draws
from llara.llm.data import Example, collate
from llara.llm.generation import greedy_generate, match_answer, newline_token_ids
from llara.llm.model import LlaraModel
from llara.llm.prompts import PromptEncoder
from llara.llm.scoring import rank_scores
from llara.metrics import hit_at_k, ranking_metrics, summarize, target_ranks

EVAL_MODES = ("generate", "rank")


def eval_templates(encoder: PromptEncoder, examples: Sequence[Example], seed: int) -> list[int]:
    return [template_draws(len(encoder.templates), seed, e.row, 1)[0] for e in examples]


def evaluate(model: LlaraModel, encoder: PromptEncoder, examples: Sequence[Example], *, item_mode: str = "hybrid",
             modes: Sequence[str] = EVAL_MODES, seed: int = 0, batch_size: int = 8, length_norm: bool = True,
             use_head: bool = True, max_new_tokens: int | None = None) -> tuple[dict, pl.DataFrame]:
    model.eval()
    examples = list(examples)
    templates = eval_templates(encoder, examples, seed)
    stop_ids = [model.loaded.eos_token_id] + newline_token_ids(model.loaded.tokenizer)
    pred: dict[str, list] = {"row": [e.row for e in examples], "user": [e.user for e in examples],
                             "target": [e.target for e in examples], "template": templates}
    metrics: dict[str, dict] = {}
    if "generate" in modes:
        answers, picked = [], []
        for lo in tqdm(range(0, len(examples), batch_size), desc="generate", mininterval=5):
            chunk = examples[lo:lo + batch_size]
            batch = collate(encoder, chunk, [item_mode] * len(chunk), templates[lo:lo + batch_size], False,
                            model.loaded.pad_token_id)
            limit = max_new_tokens or max(len(encoder.answer_ids(c)) for e in chunk for c in e.candidates)
            for e, ids in zip(chunk, greedy_generate(model, batch, limit, stop_ids)):
                text = encoder.tokenizer.decode(ids, skip_special_tokens=True).strip()
                k = match_answer(text, [encoder.title(c) for c in e.candidates])
                answers.append(text)
                picked.append(None if k is None else e.candidates[k])
        valid = np.array([p is not None for p in picked], dtype=float)
        correct = np.array([p == e.target for p, e in zip(picked, examples)], dtype=float)
        metrics["generate"] = {"hr@1": summarize(correct, seed=seed), "valid_ratio": summarize(valid, seed=seed)}
        pred.update(generated=answers, generated_item=picked, valid=valid.astype(bool), correct=correct.astype(bool))
    if "rank" in modes:
        scores = []
        for lo in tqdm(range(0, len(examples), batch_size), desc="rank", mininterval=5):
            chunk = examples[lo:lo + batch_size]
            batch = collate(encoder, chunk, [item_mode] * len(chunk), templates[lo:lo + batch_size], False,
                            model.loaded.pad_token_id)
            scores.append(rank_scores(model, encoder, batch, length_norm=length_norm, use_head=use_head))
        table = torch.cat(scores).numpy()
        ranks = target_ranks(table, [e.target_index for e in examples])
        metrics["rank"] = ranking_metrics(ranks, ks=(1, 5), ndcg_ks=(5,), seed=seed)
        pred.update(rank=ranks, top_item=[e.candidates[int(np.argmax(s))] for e, s in zip(examples, table)],
                    scores=[list(map(float, s)) for s in table])
    return metrics, pl.DataFrame(pred, strict=False)


def hit_rate(ranks: np.ndarray) -> float:
    return float(hit_at_k(ranks, 1).mean())
