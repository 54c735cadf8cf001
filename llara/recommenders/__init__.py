"""Sequential recommenders (SASRec, GRU4Rec, Caser): training, safe export, loading.

Public API used by the LLM stage::

    from llara.recommenders import load_recommender, score_rows
    rec = load_recommender("data/recommenders/paper/sasrec")   # frozen, eval mode, CPU
    rec.name, rec.dim                                          # "sasrec", 64
    rec.item_embeddings([1, 50])                               # (2, dim), dataset item ids
    rec.encode([[1, 2, 3]])                                    # (1, dim), histories oldest first
    rec.score([[1, 2, 3]], [[4, 5]])                           # (1, 2)
    score_rows(rec, histories, candidates)                     # (N, C) numpy, many rows in batches

Names are imported lazily so that ``llara --help`` does not load torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "Recommender": "llara.recommenders.api",
    "load_recommender": "llara.recommenders.api",
    "score_rows": "llara.recommenders.api",
    "BackboneConfig": "llara.recommenders.config",
    "ItemIndex": "llara.recommenders.base",
    "SequentialRecommender": "llara.recommenders.base",
    "FAMILIES": "llara.recommenders.registry",
    "build_model": "llara.recommenders.registry",
    "config_from_dict": "llara.recommenders.registry",
    "TrainConfig": "llara.recommenders.config",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'llara.recommenders' has no attribute {name!r}")
