"""Resumable training checkpoints without pickle.

A checkpoint directory holds ``model.safetensors`` (current weights), ``best.safetensors`` (weights of the best
epoch so far), ``optimizer.safetensors`` (per-parameter optimizer tensors) and ``state.json`` (epoch, early-stopping
state, curve so far, optimizer hyper-parameters, and the content key: digests of the model config, the training
config and the train/validation rows, :class:`llara.fingerprint.ContentKey`).
The RNG needs no saved state: every epoch re-seeds from ``(seed, epoch)``. The directory is replaced atomically, so a
``kill -9`` leaves the previous complete checkpoint.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from llara.atomic import atomic_dir, remove_path, write_json
from llara.errors import InputError
from llara.fingerprint import ContentKey
from llara.recommenders.io import load_state, load_tensors, read_json, save_tensors

STATE_FILE = "state.json"


@dataclass
class TrainState:
    """What resuming needs besides tensors."""

    fingerprint: str
    inputs: dict[str, str] = field(default_factory=dict)  # the content key's parts (which input changed)
    epoch: int = 0  # last completed epoch
    best_value: float | None = None
    best_epoch: int = 0
    bad_epochs: int = 0
    finished: bool = False
    history: list[dict] = field(default_factory=list)


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict]]:
    sd = optimizer.state_dict()
    tensors = {}
    for pid, state in sd["state"].items():
        for name, value in state.items():
            value = value if isinstance(value, torch.Tensor) else torch.tensor(value)
            tensors[f"{pid}.{name}"] = value
    return tensors, sd["param_groups"]


def _optimizer_state_dict(tensors: dict[str, torch.Tensor], param_groups: list[dict]) -> dict:
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    return {"state": state, "param_groups": param_groups}


def save_checkpoint(
    directory: Path, model: torch.nn.Module, best: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer, state: TrainState
) -> None:
    opt_tensors, param_groups = _optimizer_tensors(optimizer)
    with atomic_dir(directory) as tmp:
        save_tensors(model.state_dict(), tmp / "model.safetensors")
        save_tensors(best, tmp / "best.safetensors")
        save_tensors(opt_tensors, tmp / "optimizer.safetensors")
        write_json({**state.__dict__, "optimizer_param_groups": param_groups}, tmp / STATE_FILE)


def load_checkpoint(
    directory: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, key: ContentKey,
    log: logging.Logger | None = None,
) -> tuple[TrainState, dict[str, torch.Tensor]] | None:
    """Restore model + optimizer; returns (state, best weights), or None when absent. A checkpoint made for other
    inputs (another key) is deleted, with a log line naming what changed."""
    if not (directory / STATE_FILE).is_file():
        return None
    raw = read_json(directory / STATE_FILE)
    if raw.get("fingerprint") != key.digest:
        (log or logging.getLogger("llara.recommenders")).info(
            "discarding the checkpoint in %s: %s; training from scratch", directory, key.explain(raw.get("inputs")))
        clear_checkpoint(directory)
        return None
    try:
        param_groups = raw.pop("optimizer_param_groups")
        state = TrainState(**raw)
    except (KeyError, TypeError) as exc:
        raise InputError(directory / STATE_FILE, f"malformed checkpoint state ({exc}); delete the directory") from None
    load_state(model, load_tensors(directory / "model.safetensors"), directory / "model.safetensors")
    best = load_tensors(directory / "best.safetensors")
    optimizer.load_state_dict(_optimizer_state_dict(load_tensors(directory / "optimizer.safetensors"), param_groups))
    return state, best


def clear_checkpoint(directory: Path) -> None:
    remove_path(directory)
