"""Fine-tuning loop: curriculum prompt tuning with LoRA + projectors, resumable from checkpoints.

Objectives (weights in :class:`TrainConfig`, combinable):
- ``generative`` (the paper's): next-token cross-entropy on the answer (title + end marker), prompt masked;
- ``head``: softmax cross-entropy over the score head's candidate scores.

Everything random is a function of (seed, step): example order, curriculum draws, templates, score noise (per global
example), and the torch RNG (dropout), re-seeded from (seed, step, rank) at each step. A resumed run therefore
reproduces the uninterrupted one. Each loss is normalized by the whole optimizer step (its examples, its answer
tokens), so the gradient does not depend on ``micro_batch`` or on the number of processes.

Under ``torchrun`` / ``accelerate launch`` (see :mod:`llara.llm.distributed`) rank r trains on its slice of each
step's global batch and gradients are summed over the ranks: with dropout off, the weights match a single-process run.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from llara.atomic import atomic_dir, atomic_path
from llara.errors import InputError
from llara.code_key import code_digest
from llara.fingerprint import ContentKey, array_digest
from llara.llm import distributed
from llara.llm.checkpoint import checkpoint_path, list_checkpoints, load_checkpoint, save_checkpoint, save_weights
from llara.llm.curriculum import example_modes, hybrid_probability, template_draws
from llara.llm.data import Example, collate, step_indices
from llara.llm.loading import fast_bf16
from llara.llm.model import LlaraModel
from llara.llm.prompts import PromptEncoder

LOG_FIELDS = ["step", "loss", "generative", "head", "lr", "hybrid_probability", "hybrid_share", "examples"]


@dataclass
class TrainConfig:
    schedule: str = "curriculum"
    curriculum_ramp: float = 1.0  # share of the steps over which the curriculum's hybrid probability reaches 1
    steps: int = 300
    batch_size: int = 8  # examples per optimizer step
    micro_batch: int = 4  # examples per forward pass (gradient accumulation)
    lr: float = 8e-4
    warmup_steps: int = 5
    warmup_start_lr: float = 8e-6
    min_lr: float = 8e-6
    weight_decay: float = 1e-5
    optimizer: str = "adam"  # adam | adamw
    grad_clip: float = 1.0
    generative_weight: float = 1.0
    head_weight: float = 0.0
    length_norm: bool = True
    score_noise: float = 0.0
    seed: int = 0
    checkpoint_every: int = 10
    keep_checkpoints: int = 2
    autocast: bool = True  # bf16 autocast where the device multiplies bf16 natively (loading.fast_bf16)
    gradient_checkpointing: bool = False  # recompute activations in backward: less memory, same results
    attention: str = "auto"  # attention kernel while training: auto (eager on CPU: ~14% faster steps), eager, sdpa
    compile: bool | str = "auto"  # torch.compile the decoder layers while training: True, False or "auto" (see below)

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


# memory, speed and bookkeeping only (results equal up to float rounding): a run may resume with them changed
NEUTRAL_SETTINGS = ("micro_batch", "checkpoint_every", "keep_checkpoints", "gradient_checkpointing", "attention",
                    "compile")
LOSS_NORMALIZATION = "per-step"  # fingerprinted: checkpoints of the earlier per-micro-batch means are not resumed


def run_fingerprint(cfg: TrainConfig, model: LlaraModel, inputs: dict[str, str], examples: list[Example]) -> ContentKey:
    """What a checkpoint is valid for, all of it content: settings, model config, the dtypes it computes in (the
    LLM's as loaded and whether bf16 autocast is on: ``auto`` and ``autocast`` resolve per machine), the training
    code and the digest of every input. The caller names input digests in ``inputs`` (the workflow: train rows,
    recommender, base LLM, items, prompts, LLM loading settings, and its own code with all it imports); without a
    ``train rows`` digest the examples themselves are hashed, without a ``training code`` one this module's code and
    all it imports (an edit there trains anew instead of resuming, or reusing, the old code's weights; an edit
    elsewhere keeps them). Paths and names (protocol, recipe, profile, where a file lies) are not part of it: the same
    content under another path or name resumes."""
    settings = {k: v for k, v in cfg.to_dict().items() if k not in NEUTRAL_SETTINGS}
    key = ContentKey().value("settings", [settings, {"loss": LOSS_NORMALIZATION}])
    key.value("model", model.config.to_dict())
    key.value("dtype", {"weights": str(model.causal_lm.get_input_embeddings().weight.dtype),
                        "bf16 autocast": cfg.autocast and fast_bf16(model.device)})
    for name, digest in inputs.items():
        key.add(name, digest)
    if "training code" not in key.parts:
        key.add("training code", code_digest(__name__))
    if "train rows" not in key.parts:
        key.add("train rows", array_digest(*examples_arrays(examples)))
    return key


def examples_arrays(examples: list[Example]) -> tuple[np.ndarray, ...]:
    """Examples as flat arrays (users and targets, history lengths and items, candidates) for hashing."""
    return (np.array([(e.user, e.target, len(e.history)) for e in examples], dtype=np.int64).reshape(-1, 3),
            np.fromiter((i for e in examples for i in e.history), dtype=np.int64),
            np.fromiter((i for e in examples for i in e.candidates), dtype=np.int64))


def training_attention(cfg: TrainConfig, model: LlaraModel) -> str | None:
    """The attention kernel to train with (None: keep the model's). On CPU the eager kernel's matmuls beat SDPA's
    flash kernel in the backward pass (measured: ~14% less CPU time per step for SmolLM2); evaluation keeps SDPA."""
    if cfg.attention != "auto":
        return cfg.attention
    return "eager" if model.device.type == "cpu" else None


def training_compile(cfg: TrainConfig, model: LlaraModel) -> bool:
    """Whether to train with compiled decoder layers. ``auto``: on CPU when Inductor finds a C++ compiler, activations
    are not recomputed and LoRA dropout is off (measured with SmolLM2 on 1 core, bench_finetune: ~20% less time per
    step without dropout after a one-off compile of 15-70 s, but ~20% more with the paper recipe's dropout 0.1);
    off on GPU (not measured here) and without a compiler."""
    if cfg.compile != "auto":
        return bool(cfg.compile)
    dropout = model.config.lora and model.config.lora_dropout > 0
    return model.device.type == "cpu" and not cfg.gradient_checkpointing and not dropout and cpp_compiler_found()


def cpp_compiler_found() -> bool:
    """A C++ compiler Inductor would use ($CXX, else its configured names) is on PATH."""
    try:
        from torch._inductor import config as inductor_config
        names = [os.environ.get("CXX"), *inductor_config.cpp.cxx]
    except Exception:  # noqa: BLE001 - a torch without Inductor: no compiling
        return False
    return any(name and shutil.which(name) for name in names)


def autocast_context(model: LlaraModel, enabled: bool):
    """bf16 autocast where the device multiplies bf16 natively (``fast_bf16``); elsewhere it would only slow down."""
    enabled = enabled and fast_bf16(model.device)
    return torch.autocast(device_type=model.device.type, dtype=torch.bfloat16, enabled=enabled)


@dataclass(frozen=True)
class LossScale:
    """Denominators of an optimizer step's losses: its examples and its answer tokens (over all ranks)."""

    examples: int
    answer_tokens: int

    @classmethod
    def of(cls, encoder: PromptEncoder, examples: list[Example]) -> "LossScale":
        return cls(len(examples), sum(len(encoder.answer_ids(e.target)) for e in examples))


def _libc_trim():
    name = ctypes.util.find_library("c")
    try:
        return getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None
    except OSError:
        return None


_MALLOC_TRIM = _libc_trim()


def trim_heap() -> None:
    """Hand freed heap memory back to the OS (glibc). Without it the peak RSS of CPU fine-tuning grows step after
    step with fragmentation (3 GiB after 3 steps, ~5.8 GiB after 60 in the default profile)."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def step_seed(seed: int, step: int, rank: int) -> int:
    """Seed of the torch RNG (dropout) at an optimizer step on a rank: no RNG state to carry across resumes."""
    return int(np.random.SeedSequence([seed, 49979687, step, rank]).generate_state(1)[0])


def noise_generators(seed: int, step: int, lo: int, hi: int) -> list[torch.Generator]:
    """Score-noise generators of the step's examples lo..hi-1 (global positions: the same on any rank/micro-batch)."""
    return [torch.Generator().manual_seed(int(np.random.SeedSequence([seed, 86028121, step, i]).generate_state(1)[0]))
            for i in range(lo, hi)]


def batch_loss(model: LlaraModel, encoder: PromptEncoder, examples: list[Example], modes: list[str],
               templates: list[int], cfg: TrainConfig, generator, scale: LossScale | None = None
               ) -> tuple[torch.Tensor, dict]:
    """A micro-batch's share of the step's loss: per-example losses summed and divided by ``scale.examples``, token
    losses by ``scale.answer_tokens`` (default: this batch's own counts, i.e. plain means)."""
    scale = scale or LossScale.of(encoder, examples)
    batch = collate(encoder, examples, modes, templates, with_answer=cfg.generative_weight > 0,
                    pad_id=model.loaded.pad_token_id)
    parts: dict[str, torch.Tensor] = {}
    with autocast_context(model, cfg.autocast):
        embeds, z, has = model.input_embeds(batch, cfg.score_noise, generator)
        out = model.hidden_states(batch, embeds)
        target = batch.target_index.to(model.device)
        if cfg.head_weight > 0:
            scores = model.head_scores(out.last_hidden_state, batch)
            parts["head"] = nn.functional.cross_entropy(scores, target, reduction="sum") / scale.examples
        if cfg.generative_weight > 0:
            parts["generative"] = model.answer_loss(out.last_hidden_state, batch.labels, "sum") / scale.answer_tokens
    weights = {"generative": cfg.generative_weight, "head": cfg.head_weight}
    loss = sum(weights[k] * v for k, v in parts.items())
    return loss, {k: float(v.detach()) for k, v in parts.items()}


def resume_step(ckpt_root: Path, key: ContentKey, log: Callable[[str], None]) -> int:
    """Step of the newest checkpoint made for this content key (0: none); checkpoints of other inputs are removed,
    with a log line naming what changed."""
    checkpoints = list_checkpoints(ckpt_root)
    if not checkpoints:
        return 0
    meta = json.loads((checkpoints[-1] / "state.json").read_text())
    if meta.get("fingerprint") == key.digest:
        return int(meta["step"])
    log(f"discarding the checkpoints in {ckpt_root}: {key.explain(meta.get('inputs'))}; training from scratch")
    for path in checkpoints:
        shutil.rmtree(path, ignore_errors=True)
    return 0


def train(model: LlaraModel, encoder: PromptEncoder, examples: list[Example], cfg: TrainConfig, out_dir: Path,
          run_info: dict, log: Callable[[str], None] = print,
          on_step: Callable[[dict], bool] | None = None) -> list[dict]:
    """Train for ``cfg.steps`` optimizer steps, resuming from the newest matching checkpoint in ``out_dir``.

    ``on_step(row)`` runs on rank 0 after each optimizer step (the model may be evaluated there: it is put back in
    training mode afterwards); when it returns True training stops early and the run is saved at that step.

    Writes ``out_dir/{final/, checkpoints/, train_log.jsonl}`` (rank 0 only under a distributed launch); returns the
    per-step log rows (the losses averaged over the ranks).
    """
    out_dir = Path(out_dir)
    ckpt_root = out_dir / "checkpoints"
    d = distributed.setup(model.device)
    lo, hi = distributed.shard(d, cfg.batch_size)
    if not d.is_main:
        log = lambda message: None  # noqa: E731
    key = run_fingerprint(cfg, model, run_info.get("inputs", {}), examples)
    torch.manual_seed(cfg.seed)
    optimizer = make_optimizer(model, cfg)
    rows: list[dict] = []
    start = distributed.broadcast_int(resume_step(ckpt_root, key, log) if d.is_main else 0, d, model.device)
    if start > 0:
        path = checkpoint_path(ckpt_root, start)
        if not (path / "state.json").is_file():
            raise InputError(path, f"rank {d.rank} cannot see the checkpoint rank 0 resumes from: "
                                   "the run directory must be on a filesystem shared by all nodes")
        rows = list(load_checkpoint(path, model, optimizer)["log"])
        log(f"resuming from {path} (step {start}/{cfg.steps})")
    params = model.trainable_parameters()
    distributed.broadcast_parameters(params, d)
    if d.enabled:
        log(f"data parallel over {d.world_size} processes: {hi - lo} of {cfg.batch_size} examples per step each")
    if cfg.gradient_checkpointing:
        model.set_gradient_checkpointing(True)
    attention, eval_attention = training_attention(cfg, model), model.attention
    if attention:
        model.set_attention(attention)
    compiled = training_compile(cfg, model) and model.set_compiled(True)
    if compiled:
        torch._dynamo.config.suppress_errors = cfg.compile == "auto"  # auto: fall back to eager if compiling fails
        log("decoder layers compiled (torch.compile): the first step includes the compilation")
    model.train()
    n_templates = len(encoder.templates)
    parts = [k for k in ("generative", "head") if getattr(cfg, f"{k}_weight") > 0]
    t0, seen = time.time(), 0
    progress = tqdm(range(start + 1, cfg.steps + 1), desc="finetune", initial=start, total=cfg.steps, mininterval=5,
                    disable=not d.is_main)
    for step in progress:
        lr = lr_at(cfg, step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        # the step's global batch and its draws; this rank trains on chosen[lo:hi]
        chosen = [examples[i] for i in step_indices(len(examples), cfg.seed, step, cfg.batch_size)]
        hybrid = hybrid_probability(cfg.schedule, step, cfg.steps, cfg.curriculum_ramp)
        modes = example_modes(cfg.schedule, hybrid, cfg.seed, step, len(chosen))
        templates = template_draws(n_templates, cfg.seed, step, len(chosen))
        scale = LossScale.of(encoder, chosen)
        torch.manual_seed(step_seed(cfg.seed, step, d.rank))
        optimizer.zero_grad(set_to_none=True)
        sums = [0.0] * (1 + len(parts))  # loss, then its parts (each already this rank's share of the step's)
        for a in range(lo, hi, cfg.micro_batch):
            b = min(hi, a + cfg.micro_batch)
            generators = noise_generators(cfg.seed, step, a, b) if cfg.score_noise > 0 else None
            loss, values = batch_loss(model, encoder, chosen[a:b], modes[a:b], templates[a:b], cfg, generators, scale)
            loss.backward()
            sums[0] += float(loss.detach())
            for j, name in enumerate(parts):
                sums[1 + j] += values[name]
        distributed.all_reduce_gradients(params, d)
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        optimizer.step()
        trim_heap()
        sums = distributed.all_reduce_sum(sums, d, model.device)
        seen += len(chosen)
        row = {"step": step, "loss": sums[0], "lr": lr, "examples": step * cfg.batch_size, "hybrid_probability": hybrid,
               "hybrid_share": sum(m != "text" for m in modes) / len(modes)}
        row.update({k: float("nan") for k in ("generative", "head")})
        row.update(dict(zip(parts, sums[1:])))
        rows.append(row)
        progress.set_postfix(loss=f"{sums[0]:.3f}", ex_s=f"{seen / max(1e-9, time.time() - t0):.2f}")
        if d.is_main and (step % cfg.checkpoint_every == 0 or step == cfg.steps):
            save_checkpoint(ckpt_root, model, optimizer, step, {"fingerprint": key.digest, "inputs": key.parts,
                                                                 "log": rows}, cfg.keep_checkpoints)
        if on_step is not None:
            if compiled:  # the callback may evaluate: eagerly, as evaluation runs
                model.set_compiled(False)
            stop = distributed.broadcast_int(int(bool(on_step(row))) if d.is_main else 0, d, model.device)
            if compiled:
                model.set_compiled(True)
            model.train()
            if stop:
                log(f"stopped early at step {step}/{cfg.steps}")
                break
    model.eval()
    if compiled:
        model.set_compiled(False)
    if attention:
        model.set_attention(eval_attention)
    if cfg.gradient_checkpointing:
        model.set_gradient_checkpointing(False)
    if d.is_main:
        write_run(model, out_dir, {**run_info, "train": cfg.to_dict(), "model": model.config.to_dict(),
                                   "fingerprint": key.digest, "world_size": d.world_size,
                                   "steps_done": rows[-1]["step"] if rows else 0}, rows)
    distributed.teardown(d)
    elapsed = time.time() - t0
    last = rows[-1]["step"] if rows else 0
    log(f"trained {last} steps ({seen} examples this session in {elapsed:.0f}s) -> {out_dir}")
    return rows


def write_run(model: LlaraModel, out_dir: Path, info: dict, rows: list[dict]) -> None:
    """Final artifacts of a run: weights (atomically, in ``final/``), ``run.json`` and the training log."""
    with atomic_dir(out_dir / "final") as tmp:
        save_weights(model, tmp)
        (tmp / "run.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    with atomic_path(out_dir / "train_log.jsonl") as tmp:
        tmp.write_text("".join(json.dumps({k: r.get(k) for k in LOG_FIELDS}) + "\n" for r in rows))
