"""Rank mode: score every candidate by the log-likelihood of its answer (title + end marker) given the prompt.

The prompt is encoded once; its KV cache is expanded to the C continuations of each row, which are scored in one
batched pass. ``length_norm`` averages the token log-probabilities (summed log-likelihood favours short titles).
"""

from __future__ import annotations

from typing import Sequence

import torch

from llara.llm.data import Batch
from llara.llm.model import LlaraModel
from llara.llm.prompts import PromptEncoder


def continuation_ids(encoder: PromptEncoder, batch: Batch, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids (B, C, T), mask (B, C, T)): each candidate's answer tokens, right-padded."""
    answers = [[encoder.answer_ids(c) for c in e.candidates] for e in batch.examples]
    width = max(len(a) for row in answers for a in row)
    ids = torch.full((len(answers), len(answers[0]), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, row in enumerate(answers):
        for j, a in enumerate(row):
            ids[i, j, :len(a)] = torch.tensor(a)
            mask[i, j, :len(a)] = 1
    return ids, mask


def candidate_logprobs(model: LlaraModel, batch: Batch, embeds: torch.Tensor, cont_ids: torch.Tensor,
                       cont_mask: torch.Tensor, prompt_out=None) -> torch.Tensor:
    """Per-token log-probabilities (B, C, T) of each candidate's continuation (0 where masked)."""
    device = model.device
    b, c, t = cont_ids.shape
    cont_ids, cont_mask = cont_ids.to(device), cont_mask.to(device)
    if prompt_out is None:
        prompt_out = model.hidden_states(batch, embeds, use_cache=True)
    hidden = prompt_out.last_hidden_state
    first = torch.log_softmax(model.lm_head(hidden[:, -1]).float(), dim=-1)  # left padding: last position is real
    lp_first = torch.gather(first, 1, cont_ids[:, :, 0])  # (B, C)
    if t == 1:
        return (lp_first * cont_mask[:, :, 0])[..., None]
    cache = prompt_out.cache
    cache.batch_repeat_interleave(c)
    inputs = cont_ids[:, :, :-1].reshape(b * c, t - 1)
    prompt_mask = batch.attention_mask.to(device).repeat_interleave(c, dim=0)
    step_mask = cont_mask[:, :, :-1].reshape(b * c, t - 1)
    start = batch.position_ids[:, -1].to(device).repeat_interleave(c)[:, None] + 1
    out = model.decoder(inputs_embeds=model.causal_lm.get_input_embeddings()(inputs),
                        attention_mask=torch.cat([prompt_mask, step_mask], dim=1),
                        position_ids=start + torch.arange(t - 1, device=device)[None, :],
                        cache=cache, use_cache=True)
    logits = model.lm_head(out.last_hidden_state).float()  # (B*C, T-1, V)
    rest = torch.gather(torch.log_softmax(logits, dim=-1), 2, cont_ids[:, :, 1:].reshape(b * c, t - 1, 1))
    lp = torch.cat([lp_first[..., None], rest.view(b, c, t - 1)], dim=2)
    return lp * cont_mask


@torch.no_grad()
def answer_logprobs(model: LlaraModel, encoder: PromptEncoder, batch: Batch, embeds: torch.Tensor | None = None,
                    prompt_out=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(log-probabilities (B, C, T), mask (B, C, T)) of each candidate's answer tokens given the prompt; reuses the
    prompt's input embeddings and cached pass when given."""
    if embeds is None:
        embeds, _, _ = model.input_embeds(batch)
    ids, mask = continuation_ids(encoder, batch, model.loaded.pad_token_id)
    return candidate_logprobs(model, batch, embeds, ids, mask, prompt_out=prompt_out), mask


def reduce_scores(logprobs: torch.Tensor, mask: torch.Tensor, length_norm: bool = True) -> torch.Tensor:
    total = logprobs.sum(dim=-1)
    if not length_norm:
        return total
    return total / mask.to(total.device).sum(dim=-1).clamp(min=1)


@torch.no_grad()
def rank_scores(model: LlaraModel, encoder: PromptEncoder, batch: Batch, length_norm: bool = True,
                use_head: bool = False) -> torch.Tensor:
    """(B, C) candidate scores: the score head's when ``use_head`` (and present), else the answer log-likelihood."""
    embeds, _, _ = model.input_embeds(batch)
    use_head = use_head and model.head is not None
    out = model.hidden_states(batch, embeds, use_cache=not use_head)
    if use_head:
        return model.head_scores(out.last_hidden_state, batch).float().cpu()
    lp, mask = answer_logprobs(model, encoder, batch, embeds, prompt_out=out)
    return reduce_scores(lp, mask, length_norm).float().cpu()


@torch.no_grad()
def naive_scores(model: LlaraModel, encoder: PromptEncoder, batch: Batch, length_norm: bool = True) -> torch.Tensor:
    """Reference: each candidate scored by its own full forward pass (prompt + answer), one sequence at a time."""
    embeds, _, _ = model.input_embeds(batch)
    device = model.device
    out = torch.zeros(batch.anchors.shape)
    for i, example in enumerate(batch.examples):
        real = batch.attention_mask[i].bool()
        prompt = embeds[i, real.to(device)]
        for j, cand in enumerate(example.candidates):
            answer = torch.tensor(encoder.answer_ids(cand), device=device)
            seq = torch.cat([prompt, model.causal_lm.get_input_embeddings()(answer)], dim=0)[None]
            hidden = model.decoder(inputs_embeds=seq, use_cache=False).last_hidden_state[0]
            logits = model.lm_head(hidden[prompt.shape[0] - 1:-1]).float()
            lp = torch.log_softmax(logits, dim=-1).gather(1, answer[:, None]).squeeze(1)
            out[i, j] = lp.mean() if length_norm else lp.sum()
    return out


def scores_to_ranking(scores: Sequence[float], candidates: Sequence[int]) -> list[int]:
    order = sorted(range(len(candidates)), key=lambda k: -float(scores[k]))
    return [int(candidates[k]) for k in order]
