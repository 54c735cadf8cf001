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

from llara.llm.data import Batch, read_examples, read_titles  # noqa: E402


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
    """Host, cores, the torch threads the measurement used (default: this process's) and a GPU when present."""
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return f"{platform.node()} ({os.cpu_count()} cpus, {threads or torch.get_num_threads()} torch threads{gpu})"


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


@dataclass
class FinetuneSetup:
    """params.yaml's fine-tuning inputs for one variant and recipe, as the `finetune` stage reads them."""

    fparams: object  # tasks.params.FinetuneParams, with the chosen recipe
    train_cfg: object  # llara.llm.training.TrainConfig
    model_cfg: object  # llara.llm.model.ModelConfig
    settings: object  # llara.llm.runs.LLMSettings
    recommender: object
    titles: dict

    def examples(self, part: str = "train") -> list:
        return read_examples(ROOT / "data/split" / self.fparams.protocol / f"{part}.parquet")

    def build(self):
        """A fresh (model, prompt encoder), seeded by finetune.seed."""
        from llara.llm.runs import build

        torch.manual_seed(self.fparams.seed)
        return build(self.settings, self.recommender, self.titles, self.fparams.prompts, self.model_cfg)


def finetune_setup(variant: str | None = None, recipe: str | None = None, dtype: str | None = None,
                   device: str = "cpu") -> FinetuneSetup:
    """Defaults: the first of finetune.variants, finetune.recipe, llm.dtype; on CPU."""
    from llara.llm.recipes import LLMSettings
    from llara.llm.workflow import variant_configs
    from llara.llm.runs import load_recommender_dir
    from tasks.finetune import ITEMS, recommender_dir
    from tasks.params import load_params

    params = load_params(ROOT / "params.yaml")
    fparams = params.finetune.model_copy(update={"recipe": recipe or params.finetune.recipe})
    train_cfg, model_cfg = variant_configs(variant or fparams.variants[0], fparams.chosen_recipe,
                                           fparams.chosen_profile, fparams.seed)
    settings = LLMSettings(str(ROOT / params.llm.base_dir), dtype or params.llm.dtype, device)
    return FinetuneSetup(fparams, train_cfg, model_cfg, settings, load_recommender_dir(ROOT / recommender_dir(fparams)),
                         read_titles(ROOT / ITEMS))
