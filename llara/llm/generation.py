"""Generate mode (the paper's evaluation): batched greedy decoding, parsing the answer against the candidates.

Prompts are LEFT-padded (position ids from the attention mask) so every row's next token follows its own prompt; a
row stops at the end marker (EOS) or a newline; decoding stops when all rows have stopped or after ``max_new_tokens``.
"""

from __future__ import annotations

import re
from typing import Callable, Sequence

import torch

from llara.llm.data import Batch
from llara.llm.model import LlaraModel


def newline_token_ids(tokenizer) -> list[int]:
    """Vocabulary entries whose text contains a newline (a row stops there, as the authors cut at the first line)."""
    vocab = tokenizer.get_vocab()
    return sorted(i for tok, i in vocab.items() if "\n" in tokenizer.convert_tokens_to_string([tok]))


@torch.no_grad()
def greedy_generate(model: LlaraModel, batch: Batch, max_new_tokens: int, stop_ids: Sequence[int],
                    early_stop: bool = True, on_prompt: Callable | None = None,
                    tied: torch.Tensor | None = None) -> list[list[int]]:
    """Greedy token ids generated after each (left-padded) prompt, up to and excluding the first stop token.

    ``tied`` (B,) groups rows that decode as one: each step every row of a group takes the argmax of the mean of the
    group's log-probabilities (an ensemble of prompts, e.g. one user's candidates listed in two orders), so the rows
    of a group generate the same answer.

    ``on_prompt(out, z, has)`` receives the prompt pass's output (``last_hidden_state`` and the KV ``cache``, which
    generation goes on extending: copy it to use it elsewhere) and the recommender scores of
    :meth:`LlaraModel.input_embeds`, e.g. to read the rank scores off the same pass."""
    device = model.device
    embeds, z, has = model.input_embeds(batch)
    mask = batch.attention_mask.to(device)
    positions = batch.position_ids.to(device)
    banned = model.loaded.placeholder_ids
    stop = torch.tensor(sorted(set(stop_ids)), device=device)
    b = embeds.shape[0]
    out = model.decoder(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, use_cache=True)
    if on_prompt is not None:
        on_prompt(out, z, has)
    cache, hidden = out.cache, out.last_hidden_state[:, -1]
    next_pos = positions[:, -1] + 1
    done = torch.zeros(b, dtype=torch.bool, device=device)
    tokens: list[torch.Tensor] = []
    for _ in range(max_new_tokens):
        logits = model.lm_head(hidden).float()
        logits[:, banned] = float("-inf")
        if tied is not None:
            logits = tied_mean(logits.log_softmax(dim=-1), tied)
        nxt = logits.argmax(dim=-1)
        tokens.append(torch.where(done, torch.full_like(nxt, -1), nxt))
        done = done | torch.isin(nxt, stop)
        if early_stop and bool(done.all()):
            break
        mask = torch.cat([mask, torch.ones(b, 1, dtype=mask.dtype, device=device)], dim=1)
        out = model.decoder(inputs_embeds=model.causal_lm.get_input_embeddings()(nxt[:, None]), attention_mask=mask,
                            position_ids=next_pos[:, None], cache=cache, use_cache=True)
        cache, hidden = out.cache, out.last_hidden_state[:, -1]
        next_pos = next_pos + 1
    result = []
    table = torch.stack(tokens, dim=1).tolist() if tokens else [[] for _ in range(b)]
    stop_set = set(int(s) for s in stop.tolist())
    for row in table:
        ids = []
        for t in row:
            if t == -1 or t in stop_set:
                break
            ids.append(t)
        result.append(ids)
    return result


def tied_mean(logprobs: torch.Tensor, tied: torch.Tensor) -> torch.Tensor:
    """Each row replaced by the mean of the rows with its ``tied`` id."""
    tied = tied.to(logprobs.device)
    total = torch.zeros((int(tied.max()) + 1, logprobs.shape[1]), dtype=logprobs.dtype, device=logprobs.device)
    total.index_add_(0, tied, logprobs)
    count = torch.bincount(tied, minlength=total.shape[0]).to(logprobs.dtype)
    return (total / count[:, None])[tied]


def normalize_title(text: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[^\w\s]", " ", text.lower())).strip()


_TITLE_BREAK = re.compile(r"\s*[,:;(\[]")  # where a title has an inner separator ("Paris, France", "Alien: ...")


def leading_parts(title: str) -> set[str]:
    """Normalized parts of a title before each inner separator: "Steal Big, Steal Little" -> {"steal big"}."""
    return {p for p in (normalize_title(title[:m.start()]) for m in _TITLE_BREAK.finditer(title)) if p}


def match_answer(answer: str, titles: Sequence[str]) -> int | None:
    """Index of the one candidate the answer names, else None. In order: exact normalized match; the one title
    contained in the answer (whole words); the one title the answer is a leading part of, cut at the title's own inner
    separator (the paper's prompts list candidates separated by commas, so "Niagara, Niagara" can come back as
    "Niagara")."""
    norm = normalize_title(answer.split("\n")[0])
    if not norm:
        return None
    cands = [normalize_title(t) for t in titles]
    for matches in ([i for i, t in enumerate(cands) if t == norm],
                    [i for i, t in enumerate(cands) if t and re.search(rf"(^| ){re.escape(t)}( |$)", norm)],
                    [i for i, t in enumerate(titles) if norm in leading_parts(t)]):
        if matches:
            return matches[0] if len(matches) == 1 else None
    return None


def match_answer_authors(answer: str, titles: Sequence[str]) -> int | None:
    """The authors' parser (for comparison with the paper): valid when exactly one lower-cased candidate title is a
    substring of the answer's lower-cased first line."""
    text = answer.split("\n")[0].strip().lower()
    found = [i for i, t in enumerate(titles) if t.strip().lower() in text]
    return found[0] if len(found) == 1 else None
