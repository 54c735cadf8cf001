"""Data-parallel fine-tuning over processes started by ``torchrun`` / ``accelerate launch`` (no code changes).

A launch is detected from the environment those launchers set (``WORLD_SIZE`` > 1, ``RANK``, ``LOCAL_RANK``). Every
rank holds the whole model; at each optimizer step rank r takes its contiguous slice of the step's global batch, and
after its backward passes the trainable parameters' gradients are summed over the ranks in one all-reduce per bucket.
The loss is normalized by the *global* batch (examples, answer tokens), so that sum is exactly the single-process
full-batch gradient; no DDP wrapper is needed (the model is driven through several methods, not one ``forward``).
Rank 0 alone writes files. Collectives move tensors only (no pickled objects).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.distributed as dist

from llara.errors import InputError, require

BUCKET_ELEMENTS = 1 << 25  # gradients are summed in float32 buckets of at most this many elements (128 MiB)


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False  # this module initialised the process group (and destroys it in teardown)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launch_env() -> tuple[int, int, int]:
    """(rank, world size, local rank) from the launcher's environment; (0, 1, 0) for a plain process."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise InputError("WORLD_SIZE/RANK/LOCAL_RANK", "environment variables must be integers") from None
    require(world >= 1 and 0 <= rank < world and local >= 0, "WORLD_SIZE/RANK/LOCAL_RANK",
            f"inconsistent launch environment (RANK={rank}, WORLD_SIZE={world}, LOCAL_RANK={local})")
    return rank, world, local


def is_main_process() -> bool:
    """Whether this process should write files and logs (rank 0, or not a distributed launch)."""
    return launch_env()[0] == 0


def launched_device() -> torch.device | None:
    """``cuda:LOCAL_RANK`` under a multi-process launch on a CUDA machine (one GPU per process), else None."""
    _, world, local = launch_env()
    if world > 1 and torch.cuda.is_available():
        return torch.device("cuda", local % torch.cuda.device_count())
    return None


def setup(device: torch.device) -> Dist:
    """Join the launch's process group (``nccl`` on CUDA, ``gloo`` on CPU), initialising it when needed."""
    rank, world, local = launch_env()
    if world <= 1:
        return Dist()
    owns = False
    if not dist.is_initialized():
        kwargs = {}
        if device.type == "cuda":
            torch.cuda.set_device(device)
            kwargs["device_id"] = device
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo", **kwargs)
        owns = True
    require(dist.get_world_size() == world and dist.get_rank() == rank, "WORLD_SIZE/RANK",
            f"the process group (rank {dist.get_rank()} of {dist.get_world_size()}) does not match the environment")
    return Dist(rank, world, local, owns)


def teardown(d: Dist) -> None:
    """Wait for every rank (rank 0 may still be writing), then leave the group if this module created it."""
    if not d.enabled:
        return
    dist.barrier()
    if d.owns_group:
        dist.destroy_process_group()


def shard(d: Dist, n: int, what: str = "batch_size") -> tuple[int, int]:
    """This rank's contiguous slice [lo, hi) of ``n`` items; ``n`` must split evenly over the ranks."""
    require(n % d.world_size == 0, what,
            f"{n} examples per optimizer step cannot be split evenly over {d.world_size} processes (WORLD_SIZE): "
            f"use a multiple of {d.world_size}")
    per = n // d.world_size
    return d.rank * per, (d.rank + 1) * per


def all_reduce_sum(values: Sequence[float], d: Dist, device: torch.device) -> list[float]:
    """Sum a few scalars over the ranks (identity in a single process)."""
    if not d.enabled or not values:
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return [float(v) for v in t.tolist()]


def broadcast_int(value: int, d: Dist, device: torch.device) -> int:
    """Rank 0's ``value`` on every rank."""
    if not d.enabled:
        return int(value)
    t = torch.tensor([int(value)], dtype=torch.long, device=device)
    dist.broadcast(t, src=0)
    return int(t.item())


def broadcast_parameters(params: Sequence[torch.Tensor], d: Dist) -> None:
    """Copy rank 0's values of ``params`` to every rank (guards against any divergence at start)."""
    if not d.enabled:
        return
    with torch.no_grad():
        for p in params:
            dist.broadcast(p.data, src=0)


def all_reduce_gradients(params: Sequence[torch.nn.Parameter], d: Dist) -> None:
    """Sum the gradients of ``params`` over the ranks, in place.

    A parameter without a gradient on every rank keeps ``grad=None`` (the optimizer then skips it, as a single process
    would); one with a gradient on some rank only gets zeros elsewhere before the sum.
    """
    if not d.enabled or not params:
        return
    device = params[0].device
    has = torch.tensor([float(p.grad is not None) for p in params], device=device)
    dist.all_reduce(has)
    used = [p for p, h in zip(params, has.tolist()) if h > 0]
    for bucket in _buckets(used):
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).float().flatten() for p in bucket])
        dist.all_reduce(flat)
        offset = 0
        for p in bucket:
            chunk = flat[offset:offset + p.numel()].view_as(p).to(p.dtype)
            offset += p.numel()
            if p.grad is None:
                p.grad = chunk.clone()
            else:
                p.grad.copy_(chunk)


def _buckets(params: Sequence[torch.nn.Parameter]) -> list[list[torch.nn.Parameter]]:
    out: list[list[torch.nn.Parameter]] = []
    size = 0
    for p in params:
        if not out or size + p.numel() > BUCKET_ELEMENTS:
            out.append([])
            size = 0
        out[-1].append(p)
        size += p.numel()
    return out
