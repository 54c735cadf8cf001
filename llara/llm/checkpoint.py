"""Training checkpoints without pickle: LoRA adapter (peft ``save_pretrained``), projector/head and optimizer tensors
as safetensors, everything else (step, param groups, log, config fingerprint) as JSON. Each checkpoint directory is
written atomically, so a killed run leaves only complete checkpoints behind.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from llara.atomic import atomic_dir, write_json
from llara.llm.model import LlaraModel

_NAME = re.compile(r"^step-(\d{6})$")


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for idx, entry in state["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{idx}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{idx}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict] = {}
    for name, value in list(tensors.items()) + list(meta["scalars"].items()):
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_weights(model: LlaraModel, directory: Path) -> None:
    """The trained parts of a model: ``adapter/`` (when LoRA) and ``modules.safetensors``.

    The adapter leaves out the embedding matrices: they are frozen, and the placeholder rows the vocabulary resize
    adds are zero at every load (``llara.llm.loading.prepare_model``), so saving them (peft's default after a
    resize) would only add ~100 MB per checkpoint for SmolLM2."""
    if model.config.lora:
        model.llm.save_pretrained(directory / "adapter", save_embedding_layers=False)
        canonical_adapter_config(directory / "adapter" / "adapter_config.json")
    save_file(model.module_state(), directory / "modules.safetensors")


SET_VALUED = ("target_modules", "exclude_modules")  # peft keeps these as sets


def canonical_adapter_config(path: Path) -> None:
    """Rewrite peft's adapter_config.json with sorted keys and sorted set-valued lists. peft writes
    ``target_modules`` in the iteration order of a Python set, which follows the per-process string hash seed:
    identical runs wrote different bytes, so DVC saw a changed run directory and reran ``evaluate``."""
    config = json.loads(path.read_text())
    for key in SET_VALUED:
        if isinstance(config.get(key), list):
            config[key] = sorted(config[key])
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def load_weights(model: LlaraModel, directory: Path) -> None:
    from peft import set_peft_model_state_dict

    if model.config.lora:
        adapter = load_file(directory / "adapter" / "adapter_model.safetensors")
        set_peft_model_state_dict(model.llm, adapter)
    model.load_module_state(load_file(directory / "modules.safetensors"))


def save_checkpoint(root: Path, model: LlaraModel, optimizer: torch.optim.Optimizer, step: int, state: dict,
                    keep: int = 2) -> Path:
    target = checkpoint_path(root, step)
    with atomic_dir(target) as tmp:
        save_weights(model, tmp)
        tensors, meta = optimizer_tensors(optimizer)
        save_file(tensors, tmp / "optimizer.safetensors")
        save_file({"torch": torch.get_rng_state()}, tmp / "rng.safetensors")
        write_json({**state, "step": step, "optimizer": meta}, tmp / "state.json")
    for old in list_checkpoints(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return target


def checkpoint_path(root: Path, step: int) -> Path:
    return Path(root) / f"step-{step:06d}"


def list_checkpoints(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and _NAME.match(p.name) and (p / "state.json").is_file())


def load_checkpoint(path: Path, model: LlaraModel, optimizer: torch.optim.Optimizer) -> dict:
    """Restore weights, optimizer and RNG from a checkpoint; return its JSON state."""
    state = json.loads((path / "state.json").read_text())
    load_weights(model, path)
    restore_optimizer(optimizer, load_file(path / "optimizer.safetensors"), state["optimizer"])
    torch.set_rng_state(load_file(path / "rng.safetensors")["torch"])
    return state
