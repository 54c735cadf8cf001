"""Rank mode: score every candidate by the log-likelihood of its answer (title + end marker) given the prompt.

The prompt is encoded once; the C continuations of each row are then scored in one pass over its KV cache, packed
into one sequence under a block mask. ``length_norm`` averages the token log-probabilities (summed log-likelihood
favours short titles). :func:`prompt_scores` reads every rank mode's scores off one prompt pass (evaluation, serving
and the benchmarks share it).
"""

from __future__ import annotations

import copy
from types import SimpleNamespace
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


def pack_answers(cont_ids: torch.Tensor, cont_mask: torch.Tensor, pad_id: int) -> tuple[torch.Tensor, ...]:
    """Each row's candidate answers (all but their last token: the inputs that predict the rest) packed into one
    sequence: (ids (B, W), owner (B, W): the candidate of each position, -1 for padding, offset (B, W): its index
    within that answer)."""
    cont_ids = cont_ids.cpu()
    b, c, t = cont_ids.shape
    steps = (cont_mask.cpu().sum(-1) - 1).clamp(min=0)  # (B, C): the inputs each answer contributes
    width = max(1, int(steps.sum(-1).max()))
    k = torch.arange(t).expand(b, c, t)
    keep = k < steps[..., None]
    row = torch.arange(b)[:, None, None].expand(b, c, t)[keep]
    pos = ((steps.cumsum(-1) - steps)[..., None] + k)[keep]  # each answer starts where the previous ones end
    ids = torch.full((b, width), pad_id, dtype=torch.long)
    owner = torch.full((b, width), -1, dtype=torch.long)
    offset = torch.zeros((b, width), dtype=torch.long)
    ids[row, pos] = cont_ids[keep]
    owner[row, pos] = torch.arange(c)[None, :, None].expand(b, c, t)[keep]
    offset[row, pos] = k[keep]
    return ids, owner, offset


def block_mask(prompt_mask: torch.Tensor, owner: torch.Tensor, offset: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Additive 4D mask (B, 1, W, P + W): a packed position sees the real prompt tokens and the earlier positions of
    its own answer, nothing of the other candidates' (padding positions see the prompt only)."""
    same = (owner[:, :, None] == owner[:, None, :]) & (owner[:, None, :] >= 0)
    causal = offset[:, None, :] <= offset[:, :, None]
    allowed = torch.cat([prompt_mask.bool()[:, None, :].expand(-1, owner.shape[1], -1), same & causal], dim=2)
    mask = torch.zeros(allowed.shape, dtype=dtype)
    return mask.masked_fill_(~allowed, torch.finfo(dtype).min)[:, None]


def prompt_pass(model: LlaraModel, batch: Batch, use_cache: bool = True):
    """The prompt's forward pass (``last_hidden_state``, and its KV ``cache`` when ``use_cache``)."""
    embeds, _, _ = model.input_embeds(batch)
    return model.hidden_states(batch, embeds, use_cache=use_cache)


def candidate_logprobs(model: LlaraModel, batch: Batch, prompt_out, cont_ids: torch.Tensor,
                       cont_mask: torch.Tensor) -> torch.Tensor:
    """Per-token log-probabilities (B, C, T) of each candidate's continuation (0 where masked), given the prompt's
    pass ``prompt_out`` (its ``cache`` is extended).

    The first token is read off the prompt's last position; the rest in one pass over the prompt's cache, the C
    answers of a row packed into one sequence under a block mask (:func:`block_mask`): each answer token is computed
    once, without padding to the longest answer and without copying the prompt's cache C times."""
    device = model.device
    b, c, t = cont_ids.shape
    cont_ids, cont_mask = cont_ids.to(device), cont_mask.to(device)
    hidden = prompt_out.last_hidden_state
    first = torch.log_softmax(model.lm_head(hidden[:, -1]).float(), dim=-1)  # left padding: last position is real
    lp = torch.zeros((b, c, t), dtype=torch.float32, device=device)
    lp[:, :, 0] = torch.gather(first, 1, cont_ids[:, :, 0])
    if t > 1:
        ids, owner, offset = pack_answers(cont_ids, cont_mask, model.loaded.pad_token_id)
        mask = block_mask(batch.attention_mask, owner, offset, hidden.dtype)
        start = batch.position_ids[:, -1:] + 1
        out = model.decoder(inputs_embeds=model.causal_lm.get_input_embeddings()(ids.to(device)),
                            attention_mask=mask.to(device), position_ids=(start + offset).to(device),
                            cache=prompt_out.cache, use_cache=True)
        rows, cols = torch.nonzero(owner >= 0, as_tuple=True)
        j, k = owner[rows, cols].to(device), offset[rows, cols].to(device) + 1  # each position predicts token k
        rows = rows.to(device)
        logits = model.lm_head(out.last_hidden_state[rows, cols.to(device)]).float()
        lp[rows, j, k] = torch.log_softmax(logits, dim=-1).gather(1, cont_ids[rows, j, k][:, None]).squeeze(1)
    return lp * cont_mask


@torch.no_grad()
def answer_logprobs(model: LlaraModel, encoder: PromptEncoder, batch: Batch,
                    prompt_out=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(log-probabilities (B, C, T), mask (B, C, T)) of each candidate's answer tokens given the prompt; reuses the
    prompt's cached pass (``last_hidden_state`` and ``cache``, which it extends) when given, else makes one."""
    if prompt_out is None:
        prompt_out = prompt_pass(model, batch)
    ids, mask = continuation_ids(encoder, batch, model.loaded.pad_token_id)
    return candidate_logprobs(model, batch, prompt_out, ids, mask), mask


def reduce_scores(logprobs: torch.Tensor, mask: torch.Tensor, length_norm: bool = True) -> torch.Tensor:
    total = logprobs.sum(dim=-1)
    if not length_norm:
        return total
    return total / mask.to(total.device).sum(dim=-1).clamp(min=1)


def prompt_scores(model: LlaraModel, encoder: PromptEncoder, batch: Batch, out, modes: Sequence[str],
                  use_head: bool, length_norm: bool, copy_cache: bool = False) -> dict[str, torch.Tensor]:
    """The rank modes' (B, C) scores off one prompt pass ``out``: ``rank`` from the score head when ``use_head`` (and
    the model has one), else from the answer log-likelihood reduced as ``length_norm`` says; ``rank_llm`` from the same
    log-likelihood, summed. The answers are scored on a copy of the prompt's cache when ``copy_cache`` (generation
    goes on with it)."""
    use_head = use_head and model.head is not None
    scores = {"rank": model.head_scores(out.last_hidden_state, batch)} if use_head and "rank" in modes else {}
    likelihood = [m for m in modes if m not in scores]
    if likelihood:
        prompt = SimpleNamespace(last_hidden_state=out.last_hidden_state,
                                 cache=copy.deepcopy(out.cache)) if copy_cache else out
        lp, mask = answer_logprobs(model, encoder, batch, prompt_out=prompt)
        for m in likelihood:
            scores[m] = reduce_scores(lp, mask, length_norm=length_norm and m == "rank")
    return scores


@torch.no_grad()
def mode_scores(model: LlaraModel, encoder: PromptEncoder, batch: Batch, modes: Sequence[str],
                use_head: bool, length_norm: bool) -> dict[str, torch.Tensor]:
    """:func:`prompt_scores` off a prompt pass of their own (with no KV cache when the head alone is asked for)."""
    head_only = use_head and model.head is not None and list(modes) == ["rank"]
    return prompt_scores(model, encoder, batch, prompt_pass(model, batch, use_cache=not head_only), modes, use_head,
                         length_norm)


def rank_scores(model: LlaraModel, encoder: PromptEncoder, batch: Batch, length_norm: bool = True,
                use_head: bool = False) -> torch.Tensor:
    """(B, C) candidate scores: the score head's when ``use_head`` (and present), else the answer log-likelihood."""
    return mode_scores(model, encoder, batch, ["rank"], use_head, length_norm)["rank"].float().cpu()


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
