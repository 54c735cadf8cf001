"""Fine-tuning loop: curriculum prompt tuning with LoRA + projectors, resumable from checkpoints.

Objectives (weights in :class:`TrainConfig`, combinable):
- ``generative`` (the paper's): next-token cross-entropy on the answer (title + end marker), prompt masked;
- ``listwise``: softmax cross-entropy over the C candidates scored by their answer log-likelihood (prompt KV cache
  shared by the C continuations); with it, the generative loss is read off the target's continuation;
- ``head``: softmax cross-entropy over the score head's candidate scores (recommender residual included).

Everything random is a function of (seed, step): example order, curriculum draws, templates, score noise; the torch
RNG (dropout) is checkpointed. A resumed run therefore reproduces the uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from tqdm import tqdm

from llara.atomic import atomic_dir, atomic_path
from llara.llm.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint, save_weights
from llara.llm.curriculum import example_modes, hybrid_probability, template_draws
from llara.llm.data import Example, collate, step_indices
from llara.llm.model import LlaraModel
from llara.llm.prompts import PromptEncoder
from llara.llm.scoring import candidate_logprobs, continuation_ids, reduce_scores

LOG_FIELDS = ["step", "loss", "generative", "listwise", "head", "lr", "hybrid_probability", "hybrid_share", "examples"]


@dataclass
class TrainConfig:
    schedule: str = "curriculum"
    steps: int = 100
    batch_size: int = 8  # examples per optimizer step
    micro_batch: int = 4  # examples per forward pass (gradient accumulation)
    lr: float = 2e-4
    warmup_steps: int = 5
    warmup_start_lr: float = 2e-6
    min_lr: float = 2e-6
    weight_decay: float = 0.0
    optimizer: str = "adamw"  # adamw | adam
    grad_clip: float = 1.0
    generative_weight: float = 1.0
    listwise_weight: float = 0.0
    head_weight: float = 0.0
    length_norm: bool = True
    score_noise: float = 0.0
    seed: int = 0
    checkpoint_every: int = 10
    keep_checkpoints: int = 2
    autocast: bool = True

    def to_dict(self) -> dict:
        return asdict(self)


def lr_at(cfg: TrainConfig, step: int) -> float:
    """Linear warm-up from ``warmup_start_lr`` then cosine decay to ``min_lr`` (step is 1-based)."""
    if step <= cfg.warmup_steps:
        return cfg.warmup_start_lr + (cfg.lr - cfg.warmup_start_lr) * step / max(1, cfg.warmup_steps)
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * min(1.0, progress)))


def make_optimizer(model: LlaraModel, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = model.trainable_parameters()
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def fingerprint(*parts: dict) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def autocast_context(model: LlaraModel, enabled: bool):
    device = model.device.type
    return torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=enabled)


def batch_loss(model: LlaraModel, encoder: PromptEncoder, examples: list[Example], modes: list[str],
               templates: list[int], cfg: TrainConfig, generator: torch.Generator) -> tuple[torch.Tensor, dict]:
    listwise = cfg.listwise_weight > 0
    batch = collate(encoder, examples, modes, templates, with_answer=not listwise and cfg.generative_weight > 0,
                    pad_id=model.loaded.pad_token_id)
    parts: dict[str, torch.Tensor] = {}
    with autocast_context(model, cfg.autocast):
        embeds, z, has = model.input_embeds(batch, cfg.score_noise, generator)
        out = model.hidden_states(batch, embeds, use_cache=listwise)
        target = batch.target_index.to(model.device)
        if cfg.head_weight > 0:
            parts["head"] = nn.functional.cross_entropy(model.head_scores(out.last_hidden_state, batch, z, has), target)
        if listwise:
            ids, mask = continuation_ids(encoder, batch, model.loaded.pad_token_id)
            lp = candidate_logprobs(model, batch, embeds, ids, mask, prompt_out=out)
            parts["listwise"] = nn.functional.cross_entropy(reduce_scores(lp, mask, cfg.length_norm), target)
            if cfg.generative_weight > 0:
                rows = torch.arange(len(examples), device=model.device)
                n_tok = mask.to(model.device)[rows, target].sum()
                parts["generative"] = -lp[rows, target].sum() / n_tok
        elif cfg.generative_weight > 0:
            parts["generative"] = model.answer_loss(out.last_hidden_state, batch.labels)
    weights = {"generative": cfg.generative_weight, "listwise": cfg.listwise_weight, "head": cfg.head_weight}
    loss = sum(weights[k] * v for k, v in parts.items())
    return loss, {k: float(v.detach()) for k, v in parts.items()}


def train(model: LlaraModel, encoder: PromptEncoder, examples: list[Example], cfg: TrainConfig, out_dir: Path,
          run_info: dict, log: Callable[[str], None] = print) -> list[dict]:
    """Train for ``cfg.steps`` optimizer steps, resuming from the newest matching checkpoint in ``out_dir``.

    Writes ``out_dir/{adapter/, modules.safetensors, run.json, train_log.jsonl}``; returns the per-step log rows.
    """
    out_dir = Path(out_dir)
    ckpt_root = out_dir / "checkpoints"
    key = fingerprint(cfg.to_dict(), model.config.to_dict(), run_info, len(examples))
    torch.manual_seed(cfg.seed)
    optimizer = make_optimizer(model, cfg)
    rows: list[dict] = []
    start = 0
    checkpoints = list_checkpoints(ckpt_root)
    if checkpoints:
        meta = json.loads((checkpoints[-1] / "state.json").read_text())
        if meta.get("fingerprint") == key:
            state = load_checkpoint(checkpoints[-1], model, optimizer)
            start, rows = int(state["step"]), list(state["log"])
            log(f"resuming from {checkpoints[-1]} (step {start}/{cfg.steps})")
        else:
            log(f"ignoring checkpoints in {ckpt_root}: they belong to other settings")
            for path in checkpoints:
                import shutil

                shutil.rmtree(path, ignore_errors=True)
    model.train()
    n_templates = len(encoder.templates)
    t0, seen = time.time(), 0
    progress = tqdm(range(start + 1, cfg.steps + 1), desc="finetune", initial=start, total=cfg.steps, mininterval=5)
    for step in progress:
        lr = lr_at(cfg, step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        chosen = [examples[i] for i in step_indices(len(examples), cfg.seed, step, cfg.batch_size)]
        modes = example_modes(cfg.schedule, step, cfg.steps, cfg.seed, len(chosen))
        templates = template_draws(n_templates, cfg.seed, step, len(chosen))
        generator = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        optimizer.zero_grad(set_to_none=True)
        totals: dict[str, float] = {}
        loss_sum = 0.0
        for lo in range(0, len(chosen), cfg.micro_batch):
            hi = min(len(chosen), lo + cfg.micro_batch)
            loss, parts = batch_loss(model, encoder, chosen[lo:hi], modes[lo:hi], templates[lo:hi], cfg, generator)
            share = (hi - lo) / len(chosen)
            (loss * share).backward()
            loss_sum += float(loss) * share
            for k, v in parts.items():
                totals[k] = totals.get(k, 0.0) + v * share
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.trainable_parameters(), cfg.grad_clip)
        optimizer.step()
        seen += len(chosen)
        row = {"step": step, "loss": loss_sum, "lr": lr, "examples": step * cfg.batch_size,
               "hybrid_probability": hybrid_probability(cfg.schedule, step, cfg.steps) if cfg.schedule != "id-only" else 0.0,
               "hybrid_share": sum(m != "text" for m in modes) / len(modes)}
        row.update({k: totals.get(k, float("nan")) for k in ("generative", "listwise", "head")})
        rows.append(row)
        progress.set_postfix(loss=f"{loss_sum:.3f}", ex_s=f"{seen / max(1e-9, time.time() - t0):.2f}")
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            save_checkpoint(ckpt_root, model, optimizer, step, {"fingerprint": key, "log": rows}, cfg.keep_checkpoints)
    model.eval()
    write_run(model, out_dir, {**run_info, "train": cfg.to_dict(), "model": model.config.to_dict(), "fingerprint": key},
              rows)
    elapsed = time.time() - t0
    log(f"trained {cfg.steps} steps ({seen} examples this session in {elapsed:.0f}s) -> {out_dir}")
    return rows


def write_run(model: LlaraModel, out_dir: Path, info: dict, rows: list[dict]) -> None:
    """Final artifacts of a run: weights (atomically, in ``final/``), ``run.json`` and the training log."""
    with atomic_dir(out_dir / "final") as tmp:
        save_weights(model, tmp)
        (tmp / "run.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    with atomic_path(out_dir / "train_log.jsonl") as tmp:
        tmp.write_text("".join(json.dumps({k: r.get(k) for k in LOG_FIELDS}) + "\n" for r in rows))
