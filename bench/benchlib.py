"""Helpers shared by the bench scripts (run as `python bench/<script>.py` from anywhere)."""

from __future__ import annotations

import datetime
import os
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from llara.llm.data import Batch  # noqa: E402


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
    """Host, cores and the torch threads the measurement used (default: this process's)."""
    return f"{platform.node()} ({os.cpu_count()} cpus, {threads or torch.get_num_threads()} torch threads)"


def record(line: str, threads: int | None = None) -> None:
    """Append one result line (dated) to bench/RESULTS.md; ``threads``: those of the measured (child) process."""
    with open(ROOT / "bench" / "RESULTS.md", "a") as fh:
        fh.write(f"- {datetime.date.today()} {machine(threads)}: {line}\n")


def make_clock(kind: str, threads: int):
    """``wall``: time.perf_counter; ``cpu``: the process's CPU seconds / torch threads, which is what an idle
    machine's wall time would be, and is robust to other jobs sharing the cores."""
    if kind == "cpu":
        return lambda: time.process_time() / threads
    return time.perf_counter


def add_clock_argument(parser) -> None:
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="cpu: process CPU seconds / threads, for a machine other jobs share")
