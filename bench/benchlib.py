"""Helpers shared by the bench scripts (run as `python bench/<script>.py` from anywhere)."""

from __future__ import annotations

import datetime
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from llara.llm.curriculum import template_draws  # noqa: E402
from llara.llm.data import Batch, read_examples, read_titles, step_indices  # noqa: E402

GEMM_SHAPES = [(2048, 576, 1536), (2048, 1536, 576), (2048, 2048, 2048)]
CUDA_GEMM_SHAPES = [(8192, 8192, 8192)]  # a GPU's peak needs a large square GEMM besides the model's shapes


def matmul_rate(dtype: torch.dtype, device: torch.device, clock, seconds: float = 1.0) -> float:
    """Best FLOP/s of a plain matmul over GEMM_SHAPES (the model's MLP shapes and a square one; on CUDA also a large
    square one) on ``device``, timed with ``clock``."""
    best = 0.0
    shapes = GEMM_SHAPES + (CUDA_GEMM_SHAPES if device.type == "cuda" else [])
    for m, k, n in shapes:
        a, b = torch.randn(m, k, dtype=dtype, device=device), torch.randn(k, n, dtype=dtype, device=device)
        a @ b
        reps, t = 0, clock()
        while clock() - t < seconds / len(shapes):
            a @ b
            reps += 1
        best = max(best, 2 * m * k * n * reps / (clock() - t))
    return best


def flop_counter(model):
    """Training FLOPs of one example from its real prompt and answer lengths: per token 2 x the frozen linear weights
    forward and once more for the activation gradients (no weight gradients); LoRA 3x (forward, input and weight
    gradients); causal attention 2 * L^2 * d per layer forward, 3x in all; the LM head 2 * V * d per answer token, 2x
    in all; padding and logits nobody uses are not counted."""
    from torch import nn

    decoder, cfg = model.decoder, model.causal_lm.config
    base = sum(m.weight.numel() for name, m in decoder.named_modules()
               if isinstance(m, nn.Linear) and "lora_" not in name)
    lora = sum(p.numel() for name, p in decoder.named_parameters() if "lora_" in name)
    d, layers, vocab = cfg.hidden_size, cfg.num_hidden_layers, cfg.vocab_size

    def count(length: int, answer: int) -> float:
        return (2 * 2 * base * length + 3 * 2 * lora * length + 3 * 2 * layers * length ** 2 * d
                + 2 * 2 * vocab * d * answer)
    return count


def step_work(enc, examples, cfg, step: int, count, mode: str = "hybrid") -> tuple[list, list[int], int, float]:
    """An optimizer step's examples, their templates, real tokens and counted FLOPs."""
    chosen = [examples[i] for i in step_indices(len(examples), cfg.seed, step, cfg.batch_size)]
    templates = template_draws(len(enc.templates), cfg.seed, step, len(chosen))
    tokens = flops = 0
    for e, t in zip(chosen, templates):
        length = len(enc.encode(e.history, e.candidates, mode, t).input_ids) + len(enc.answer_ids(e.target))
        tokens += length
        flops += count(length, len(enc.answer_ids(e.target)))
    return chosen, templates, tokens, flops


def right_padded(batch: Batch, pad: int) -> Batch:
    """The same sequences padded on the right (the authors' tokenizer setting); labels move with their tokens."""
    lengths = batch.attention_mask.sum(1).tolist()
    ids = torch.full_like(batch.input_ids, pad)
    mask = torch.zeros_like(batch.attention_mask)
    labels = None if batch.labels is None else torch.full_like(batch.labels, -100)
    for i, n in enumerate(lengths):
        ids[i, :n] = batch.input_ids[i, -n:]
        mask[i, :n] = 1
        if labels is not None:
            labels[i, :n] = batch.labels[i, -n:]
    positions = torch.arange(ids.shape[1])[None].expand_as(ids).clone()
    return Batch(ids, mask, positions, batch.anchors, batch.target_index, labels, batch.prompts, batch.examples)


def machine(threads: int | None = None) -> str:
    """Host, cores, the CPU's vector capability (AVX2 / AVX512: machines of one name differ, and bf16 speed with them),
    the torch threads the measurement used (default: this process's) and a GPU when present."""
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return (f"{platform.node()} ({os.cpu_count()} cpus, {torch.backends.cpu.get_cpu_capability()}, "
            f"{threads or torch.get_num_threads()} torch threads{gpu})")


def record(line: str, threads: int | None = None) -> None:
    """Append one result line (dated) to bench/RESULTS.md; ``threads``: those of the measured (child) process."""
    with open(ROOT / "bench" / "RESULTS.md", "a") as fh:
        fh.write(f"- {datetime.date.today()} {machine(threads)}: {line}\n")


def make_clock(kind: str, threads: int, device: torch.device = torch.device("cpu")):
    """``wall``: time.perf_counter; ``cpu``: the process's CPU seconds / torch threads, which is what an idle
    machine's wall time would be, and is robust to other jobs sharing the cores. On CUDA: wall time after the
    queued kernels finished (the CPU clock does not see GPU work)."""
    if device.type == "cuda":
        def cuda_clock() -> float:
            torch.cuda.synchronize(device)
            return time.perf_counter()
        return cuda_clock
    if kind == "cpu":
        return lambda: time.process_time() / threads
    return time.perf_counter


def add_clock_argument(parser) -> None:
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="cpu: process CPU seconds / threads, for a machine other jobs share (CUDA: always wall)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present, else CPU) | cpu | cuda")


def add_run_arguments(parser, split: str = "test") -> None:
    """``--protocol``, ``--split`` and ``--variant``: which of the pipeline's runs and evaluations a script reads."""
    from llara.data.split import PROTOCOLS
    from llara.llm.recipes import VARIANTS

    parser.add_argument("--protocol", choices=PROTOCOLS, default="leave-one-out",
                        help="the split protocol of the pipeline run read (default leave-one-out)")
    parser.add_argument("--split", choices=["val", "test"], default=split, help=f"the users scored (default {split})")
    parser.add_argument("--variant", choices=VARIANTS, default="hybrid-curriculum",
                        help="the fine-tuned variant read (default hybrid-curriculum)")


def predictions_file(args) -> Path:
    """The `evaluate` stage's per-user answers for ``add_run_arguments``' choice."""
    return ROOT / "data/eval" / args.protocol / args.split / f"{args.variant}.parquet"


@dataclass
class FinetuneSetup:
    """params.yaml's fine-tuning inputs for one variant and recipe, as the `finetune` stage reads them."""

    fparams: object  # tasks.params.FinetuneParams, with the chosen recipe
    train_cfg: object  # llara.llm.training.TrainConfig
    model_cfg: object  # llara.llm.model.ModelConfig
    settings: object  # llara.llm.runs.LLMSettings
    recommender: object
    titles: dict

    def split_file(self, part: str = "train") -> Path:
        return ROOT / "data/split" / self.fparams.protocol / f"{part}.parquet"

    def examples(self, part: str = "train") -> list:
        return read_examples(self.split_file(part))

    def input_digests(self, encoder) -> dict[str, str]:
        """The content of what a run learns from (train rows, recommender export, base LLM, items, prompts), as the
        `finetune` stage keys its checkpoints: a run resumed with other inputs starts over, naming what changed."""
        from llara.llm.workflow import FinetuneJob, input_digests
        from tasks.finetune import ITEMS, recommender_dir

        job = FinetuneJob(variant="", train=self.split_file("train"), recommender=ROOT / recommender_dir(self.fparams),
                          items=ROOT / ITEMS, out=ROOT)
        return input_digests(job, self.settings, encoder.templates)

    def build(self):
        """A fresh (model, prompt encoder), seeded by finetune.seed."""
        from llara.llm.runs import build

        torch.manual_seed(self.fparams.seed)
        return build(self.settings, self.recommender, self.titles, self.fparams.prompts, self.model_cfg)


def finetune_setup(variant: str | None = None, recipe: str | None = None, dtype: str | None = None,
                   device: str = "cpu", protocol: str | None = None) -> FinetuneSetup:
    """Defaults: the first of finetune.variants, finetune.recipe, finetune.protocol, llm.dtype; on CPU."""
    from llara.llm.recipes import LLMSettings
    from llara.llm.workflow import variant_configs
    from llara.llm.runs import load_recommender_dir
    from tasks.finetune import ITEMS, recommender_dir
    from tasks.params import load_params

    params = load_params(ROOT / "params.yaml")
    fparams = params.finetune.model_copy(update={"recipe": recipe or params.finetune.recipe,
                                                 "protocol": protocol or params.finetune.protocol})
    train_cfg, model_cfg = variant_configs(variant or fparams.variants[0], fparams.chosen_recipe,
                                           fparams.chosen_profile, fparams.seed)
    settings = LLMSettings(str(ROOT / params.llm.base_dir), dtype or params.llm.dtype, device)
    return FinetuneSetup(fparams, train_cfg, model_cfg, settings, load_recommender_dir(ROOT / recommender_dir(fparams)),
                         read_titles(ROOT / ITEMS))
