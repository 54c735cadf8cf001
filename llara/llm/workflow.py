"""The fine-tuning workflow, one for both adapters: the DVC stage ``finetune@<variant>`` (tasks/finetune.py, settings
from params.yaml) and ``llara finetune`` (settings from the command line and the library's recipes/profiles).

Reads the item titles, the frozen recommender export and the training rows, builds the model of the variant under a
recipe and a profile, and trains it into a run directory (resuming from its checkpoints).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Callable

import torch

from llara.code_key import code_digest
from llara.errors import require_config
from llara.fingerprint import json_digest, model_digest, tree_digest
from llara.llm.data import read_examples, read_titles
from llara.llm.distributed import is_main_process
from llara.llm.model import ModelConfig
from llara.llm.recipes import DEFAULT_PROMPTS, DEFAULT_SEED, VARIANT_SCHEDULES, VARIANTS, LLMSettings, Profile, Recipe
from llara.llm.runs import build, check_embedding_rows, eval_item_mode, load_recommender_dir
from llara.llm.selection import Selection
from llara.llm.training import TrainConfig, train


def variant_configs(variant: str, recipe: Recipe, profile: Profile, seed: int = DEFAULT_SEED):
    """(TrainConfig, ModelConfig) of a variant under a recipe and profile."""
    require_config(variant in VARIANT_SCHEDULES, "variant", f"unknown {variant!r} (one of {list(VARIANTS)})")
    values = {**asdict(recipe), **asdict(profile), "seed": seed, "schedule": VARIANT_SCHEDULES[variant]}
    train_cfg = TrainConfig(**{f.name: values[f.name] for f in fields(TrainConfig) if f.name in values})
    model_cfg = ModelConfig(**{f.name: values[f.name] for f in fields(ModelConfig) if f.name in values})
    if variant == "zero-shot":
        train_cfg = replace(train_cfg, steps=0, head_weight=0.0)
        model_cfg = replace(model_cfg, score_head=False)
    return train_cfg, model_cfg


@dataclass(frozen=True)
class FinetuneJob:
    """Everything one fine-tuning run depends on."""

    variant: str
    train: Path  # split parquet (user, history, target, candidates)
    recommender: Path  # recommender export directory
    items: Path  # item table with titles
    out: Path  # run directory
    val: Path | None = None  # validation rows for the checkpoint choice (profile.select_every)
    recipe: Recipe = field(default_factory=Recipe)
    profile: Profile = field(default_factory=Profile)
    llm: LLMSettings = field(default_factory=LLMSettings)
    prompts: str = DEFAULT_PROMPTS
    seed: int = DEFAULT_SEED
    labels: dict = field(default_factory=dict)  # names recorded in run.json (protocol, recipe, profile, ...)


def input_digests(job: FinetuneJob, llm: LLMSettings, templates: list) -> dict[str, str]:
    """The content of everything a run learns from, for the checkpoint key (a checkpoint of other inputs is discarded,
    naming which changed; paths and names are not keyed): train rows, recommender export, base LLM and how it is
    loaded (dtype, trust_remote_code), item table, prompt templates, the training code
    (this workflow and every llara module it imports: an edit of serving or reporting code keeps the checkpoints)
    and, when the checkpoint is chosen on validation, the validation rows. Files are hashed once per process."""
    digests = {"train rows": tree_digest(job.train), "recommender": tree_digest(job.recommender),
               "base LLM": model_digest(llm.model), "items": tree_digest(job.items),
               "prompts": json_digest([t.text for t in templates]), "training code": code_digest(__name__),
               "LLM settings": json_digest({"dtype": llm.dtype, "trust_remote_code": llm.trust_remote_code})}
    if job.val is not None and job.profile.select_every > 0:
        digests["validation rows"] = json_digest([tree_digest(job.val), job.profile.select_every, job.profile.select_rows])
    return digests


def finetune(job: FinetuneJob, log: Callable[[str], None] = print) -> list[dict]:
    """Train ``job.variant`` into ``job.out``; returns the per-step log rows (see :func:`llara.llm.training.train`)."""
    llm = replace(job.llm, model=job.profile.llm) if job.profile.llm else job.llm
    titles = read_titles(job.items)
    recommender = load_recommender_dir(job.recommender)
    check_embedding_rows(recommender, titles, job.recommender)
    examples = read_examples(job.train)
    train_cfg, model_cfg = variant_configs(job.variant, job.recipe, job.profile, job.seed)
    info = {"llm": {"model": llm.model, "dtype": llm.dtype, "trust_remote_code": llm.trust_remote_code},
            "recommender": str(job.recommender), "items": str(job.items), "prompts": job.prompts,
            "variant": job.variant, **job.labels}
    torch.manual_seed(job.seed)
    model, encoder = build(llm, recommender, titles, job.prompts, model_cfg)
    info["inputs"] = input_digests(job, llm, encoder.templates)
    if is_main_process():
        log(f"finetune {job.variant}: {train_cfg.steps} steps x {train_cfg.batch_size} examples of {job.train} "
            f"({', '.join(f'{k} {v}' for k, v in job.labels.items())})")
    selection = None
    if job.val is not None and job.profile.select_every > 0 and train_cfg.steps > 0:
        rows = read_examples(job.val)[: job.profile.select_rows or None]
        selection = Selection(job.out, rows, job.profile.select_every, train_cfg.steps,
                              item_mode=eval_item_mode(job.variant), seed=job.seed).bind(model, encoder)
    log_rows = train(model, encoder, examples, train_cfg, Path(job.out), info, log=log, on_step=selection)
    if selection is not None and is_main_process():
        best = selection.finish()
        log(f"final/ holds step {best['step']} of {train_cfg.steps} (validation HR@1 {best['hr@1']:.3f} "
            f"on {best['n']} rows, every {job.profile.select_every} steps)")
    return log_rows
