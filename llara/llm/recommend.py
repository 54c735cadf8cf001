"""Recommend with a trained run: rank candidate items for one history (the dataset's original item ids, or titles)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import polars as pl

from llara.data.idmap import IdMap, id_maps_beside
from llara.errors import InputError, require
from llara.llm.curriculum import template_draws
from llara.llm.data import Example, collate
from llara.llm.runs import eval_item_mode, load_run
from llara.llm.scoring import rank_scores


def resolve_items(values: Sequence[int | str], titles: dict[int, str], where: str, items: IdMap | None = None
                  ) -> list[int]:
    """Internal item ids from original ids (``items``: the dataset's item map; without it ids are internal) or, for
    a value that is no item id, its exact (case-insensitive) title."""
    items = items or IdMap.identity()
    by_title = {t.lower(): i for i, t in titles.items()}
    out = []
    for v in values:
        item = items.lookup(v)  # an id of the dataset first, else a title
        if item is None or item not in titles:
            item = by_title.get(str(v).strip().lower())
        if item is None:
            raise InputError(where, f"unknown item {v!r} (neither an item id of the dataset nor a title)")
        out.append(item)
    return out


def recommend(run_dir: str | Path, history: Sequence[int | str], candidates: Sequence[int | str] | None = None, *,
              k: int = 10, n_candidates: int = 20, seed: int = 0, device: str = "auto", model_bundle=None) -> list[dict]:
    """Top-``k`` items for ``history`` (oldest first) from ``candidates`` (default: all unseen items, scored in
    groups of ``n_candidates``, the size the model was trained with); items as original ids or titles. Returns dicts
    item (the original id), title, score."""
    model, encoder, info = model_bundle or load_run(run_dir, device=device)
    titles = encoder.titles
    items = id_maps_beside(info["items"]).items
    hist = resolve_items(history, titles, "history", items)
    require(len(hist) > 0, "history", "empty history")
    if candidates is None:
        seen = set(hist)
        pool = [i for i in sorted(titles) if i not in seen]
    else:
        pool = resolve_items(candidates, titles, "candidates", items)
    require(len(pool) > 0, "candidates", "no candidates")
    mode = eval_item_mode(info.get("variant", "hybrid-curriculum"))
    template = template_draws(len(encoder.templates), seed, 0, 1)[0]
    scored: list[tuple[float, int]] = []
    groups = [pool[i:i + n_candidates] for i in range(0, len(pool), n_candidates)]
    for lo in range(0, len(groups), 8):
        chunk = groups[lo:lo + 8]
        width = max(len(g) for g in chunk)
        # pad short groups by repeating their first item so the batch is rectangular; duplicates are dropped below
        padded = [g + [g[0]] * (width - len(g)) for g in chunk]
        examples = [Example(0, 0, tuple(hist), g[0], tuple(g)) for g in padded]
        batch = collate(encoder, examples, [mode] * len(examples), [template] * len(examples), False,
                        model.loaded.pad_token_id)
        scores = rank_scores(model, encoder, batch, length_norm=info["train"]["length_norm"], use_head=True)
        for g, row in zip(chunk, scores):
            scored.extend((float(s), item) for s, item in zip(row[:len(g)].tolist(), g))
    scored.sort(key=lambda x: -x[0])
    top = scored[:k]
    originals = items.to_original(pl.Series([item for _, item in top], dtype=pl.Int64)).to_list()
    return [{"item": original, "title": titles[item], "score": score} for (score, item), original in zip(top, originals)]
