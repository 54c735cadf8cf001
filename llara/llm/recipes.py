"""Named recipes (library defaults; params.yaml holds the pipeline's copy) and the variant -> schedule map."""

from __future__ import annotations

from dataclasses import fields, replace

from llara.llm.model import ModelConfig
from llara.llm.training import TrainConfig

VARIANT_SCHEDULES = {"hybrid-curriculum": "curriculum", "hybrid-direct": "direct", "hybrid-two-stage": "two-stage",
                     "text-only": "text-only", "id-only": "id-only", "zero-shot": "text-only"}

RECIPES = {
    # the paper's: item-embedding tokens, next-token loss on the answer, Adam lr 2e-4
    "paper": dict(candidate_features="item", score_head=False, residual=0.0, generative_weight=1.0, head_weight=0.0,
                  listwise_weight=0.0, optimizer="adam", lr=2e-4),
    # ours: affinity features, score head with recommender residual, generative loss kept for generate mode
    "ours": dict(candidate_features="affinity", score_head=True, residual=1.0, generative_weight=1.0, head_weight=1.0,
                 listwise_weight=0.0, score_noise=0.5, optimizer="adamw", lr=5e-4, lora_dropout=0.0),
}


def variant_configs(variant: str, values: dict) -> tuple[TrainConfig, ModelConfig]:
    """Train/model configs of a variant from flat settings (recipe + profile values)."""
    if variant not in VARIANT_SCHEDULES:
        raise ValueError(f"unknown variant {variant!r} (one of {sorted(VARIANT_SCHEDULES)})")
    values = {**values, "schedule": VARIANT_SCHEDULES[variant]}
    train_cfg = TrainConfig(**{f.name: values[f.name] for f in fields(TrainConfig) if f.name in values})
    model_cfg = ModelConfig(**{f.name: values[f.name] for f in fields(ModelConfig) if f.name in values})
    if variant == "zero-shot":
        train_cfg = replace(train_cfg, steps=0, head_weight=0.0)
        model_cfg = replace(model_cfg, score_head=False)
    return train_cfg, model_cfg
