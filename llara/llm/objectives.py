"""Answer targets for the generative loss: the true next item, or a distribution over the candidates (distillation).

The generative loss is next-token cross-entropy on the answer (title + end marker) given the prompt. With a *teacher*
distribution ``q`` over the row's candidates (the recommender's softmax mixed with the true target), the target at
answer position k is no longer the target's token alone: it is the distribution of the next token over the candidates
whose answers start with the same k tokens as the target's, each weighted by ``q``. At the first position that is every
candidate's first token (the choice itself); once the target's prefix is unique it is the target's token alone. With
``q`` one-hot on the target this is exactly the plain generative loss. It costs nothing extra: the logits at the answer
positions are computed for the plain loss anyway.
"""

from __future__ import annotations

from typing import Sequence

import torch

from llara.llm.data import IGNORE, Example
from llara.llm.prompts import PromptEncoder


def teacher_distribution(target_index: torch.Tensor, scores: torch.Tensor, has_scores: torch.Tensor, mix: float,
                         temperature: float) -> torch.Tensor:
    """(B, C) teacher over each row's candidates: ``(1 - mix) * onehot(target) + mix * softmax(scores / T)`` on rows
    with recommender scores (``has_scores`` 1), the one-hot target elsewhere."""
    onehot = torch.nn.functional.one_hot(target_index.to(scores.device), scores.shape[1]).float()
    if mix <= 0:
        return onehot
    soft = torch.softmax(scores.float() / temperature, dim=-1)
    weight = mix * has_scores.float()[:, None]
    return (1.0 - weight) * onehot + weight * soft


def answer_targets(encoder: PromptEncoder, examples: Sequence[Example], teacher: torch.Tensor
                   ) -> tuple[list[int], list[int], list[float]]:
    """Sparse soft targets at every answer position of the micro-batch, flattened row by row (the order of the
    answer positions in :func:`soft_answer_loss`): (position index, token id, weight); weights sum to 1 per position."""
    positions, tokens, weights = [], [], []
    q = teacher.detach().cpu().tolist()
    m = 0
    for row, example in enumerate(examples):
        answers = [encoder.answer_ids(c) for c in example.candidates]
        target = encoder.answer_ids(example.target)
        alive = [c for c, a in enumerate(answers) if q[row][c] > 0]
        for k in range(len(target)):
            alive = [c for c in alive if len(answers[c]) > k and answers[c][:k] == target[:k]]
            total = sum(q[row][c] for c in alive)
            mass: dict[int, float] = {}
            for c in alive:
                mass[answers[c][k]] = mass.get(answers[c][k], 0.0) + q[row][c] / total
            for token, w in mass.items():
                positions.append(m)
                tokens.append(token)
                weights.append(w)
            m += 1
    return positions, tokens, weights


def soft_answer_loss(model, hidden: torch.Tensor, labels: torch.Tensor,
                     targets: tuple[list[int], list[int], list[float]]) -> torch.Tensor:
    """Summed cross-entropy between the model's next-token distribution at each answer position and the soft targets
    of :func:`answer_targets` (prompt and padding masked, as in the plain loss)."""
    labels = labels.to(hidden.device)
    sel = labels[:, 1:] != IGNORE
    logits = model.lm_head(hidden[:, :-1][sel]).float()
    positions, tokens, weights = (torch.tensor(v, device=hidden.device) for v in targets)
    picked = logits[positions, tokens]
    return torch.logsumexp(logits, dim=-1).sum() - (weights.float() * picked).sum()
