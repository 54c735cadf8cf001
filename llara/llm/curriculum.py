"""Curriculum prompt tuning: which item representation each training example gets.

``curriculum`` (the paper's): at optimizer step tau of T (1-based), an example is hybrid with probability tau / T,
otherwise text-only; with ``ramp`` r < 1 the probability reaches 1 at step r T instead (tau / (r T), then 1).
``direct``: always hybrid. ``two-stage``: text-only for the first half of the steps, then hybrid.
``text-only`` / ``id-only``: always that representation.

Every draw is a pure function of (seed, step, example slot), so it is the same across data-loader workers, epochs
and resumes; there is no counter to lose.
"""

from __future__ import annotations

import numpy as np

SCHEDULES = ("curriculum", "direct", "two-stage", "text-only", "id-only")


def hybrid_probability(schedule: str, step: int, total_steps: int, ramp: float = 1.0) -> float:
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r} (one of {SCHEDULES})")
    if schedule == "curriculum":
        return min(1.0, max(0.0, step / (ramp * total_steps)))
    if schedule == "direct":
        return 1.0
    if schedule == "two-stage":
        return 1.0 if step > total_steps // 2 else 0.0
    return 0.0


def example_modes(schedule: str, p: float, seed: int, step: int, n: int) -> list[str]:
    """Item modes of the ``n`` examples of optimizer step ``step``: each hybrid with probability ``p`` (the step's
    :func:`hybrid_probability`), otherwise text-only; ``id-only`` gives every example its ID token alone."""
    if schedule == "id-only":
        return ["id"] * n
    draws = np.random.default_rng([seed, 15485863, step]).random(n)
    return ["hybrid" if u < p else "text" for u in draws]


def template_draws(n_templates: int, seed: int, key: int, n: int) -> list[int]:
    """Seeded template choice for ``n`` examples (key: the step in training, the row in evaluation)."""
    return [int(x) for x in np.random.default_rng([seed, 32452843, key]).integers(0, n_templates, n)]
