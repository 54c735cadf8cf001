"""Safe (de)serialization of recommenders: safetensors for tensors, JSON for configs, parquet for the item map.

Never pickle. A model directory (pretrain output and export) holds ``model.safetensors`` (the full state dict),
``config.json`` (``family`` + ``config``, everything needed to rebuild) and ``item_map.parquet``; an export adds
``item_embeddings.safetensors`` (key ``item_embeddings``, float32, (n_items + 1, hidden), row 0 = padding).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from llara.atomic import atomic_path, write_json, write_parquet
from llara.errors import InputError, require
from llara.recommenders.base import ItemIndex, SequentialRecommender
from llara.recommenders.registry import build_model

FORMAT = "llara-recommender"
FORMAT_VERSION = 1
MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
ITEM_MAP_FILE = "item_map.parquet"
EMBEDDINGS_FILE = "item_embeddings.safetensors"
EMBEDDINGS_KEY = "item_embeddings"


def save_tensors(tensors: dict[str, torch.Tensor], path: str | Path) -> None:
    """Write a safetensors file atomically (tensors copied to contiguous CPU memory)."""
    data = save({k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()})
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    require(path.is_file(), path, "file not found")
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise InputError(path, f"not a readable safetensors file ({str(exc).splitlines()[0]})") from None


def read_json(path: str | Path) -> dict:
    path = Path(path)
    require(path.is_file(), path, "file not found")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(path, f"not valid JSON ({exc})") from None
    require(isinstance(data, dict), path, "top level must be an object")
    return data


def load_state(model: torch.nn.Module, tensors: dict[str, torch.Tensor], where: str | Path) -> None:
    """Load a state dict strictly: every key present, no extra key, same shapes and dtypes."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    require(not missing, where, f"missing tensor(s) {missing[:5]}")
    require(not extra, where, f"unexpected tensor(s) {extra[:5]}")
    for key, value in expected.items():
        got = tensors[key]
        require(got.shape == value.shape, where, f"tensor '{key}' has shape {tuple(got.shape)}, expected {tuple(value.shape)}")
        require(got.dtype == value.dtype, where, f"tensor '{key}' has dtype {got.dtype}, expected {value.dtype}")
    model.load_state_dict(tensors, strict=True)


def read_item_map(path: str | Path) -> ItemIndex:
    path = Path(path)
    require(path.is_file(), path, "file not found")
    import polars as pl  # here only: the rest of this module loads without it (bench_gpu's device)

    try:
        df = pl.read_parquet(path)
    except Exception as exc:
        raise InputError(path, f"cannot read parquet ({type(exc).__name__})") from None
    return ItemIndex.from_frame(df, path)


def write_model_dir(model: SequentialRecommender, index: ItemIndex, directory: Path, extra: dict | None = None) -> None:
    """Write model.safetensors + config.json + item_map.parquet into ``directory`` (an atomic_dir temp)."""
    require(len(index) == model.config.n_items, directory, f"item map has {len(index)} items, model {model.config.n_items}")
    save_tensors(model.state_dict(), directory / MODEL_FILE)
    write_parquet(index.frame(), directory / ITEM_MAP_FILE)
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "family": model.family, "config": model.config.to_dict()}
    write_json(meta | (extra or {}), directory / CONFIG_FILE)


def read_model_dir(directory: str | Path) -> tuple[SequentialRecommender, ItemIndex, dict]:
    """Rebuild a model from a model directory (weights loaded strictly, eval mode, CPU)."""
    directory = Path(directory)
    require(directory.is_dir(), directory, "directory not found")
    config_path = directory / CONFIG_FILE
    meta = read_json(config_path)
    require(meta.get("format") == FORMAT, config_path, f"'format' must be {FORMAT!r}")
    require(meta.get("format_version") == FORMAT_VERSION, config_path, f"unsupported format_version {meta.get('format_version')!r}")
    require(isinstance(meta.get("family"), str), config_path, "missing 'family'")
    require(isinstance(meta.get("config"), dict), config_path, "missing 'config' object")
    model = build_model(meta["family"], meta["config"], config_path)
    index = read_item_map(directory / ITEM_MAP_FILE)
    require(
        len(index) == model.config.n_items,
        directory / ITEM_MAP_FILE,
        f"{len(index)} items but {CONFIG_FILE} says n_items={model.config.n_items}",
    )
    load_state(model, load_tensors(directory / MODEL_FILE), directory / MODEL_FILE)
    model.eval()
    return model, index, meta


def write_export(model: SequentialRecommender, index: ItemIndex, directory: Path, extra: dict | None = None) -> None:
    """A model directory plus ``item_embeddings.safetensors`` (row 0 = padding, rows 1..N as in item_map)."""
    write_model_dir(model, index, directory, extra)
    embeddings = model.item_emb.weight.detach().to(torch.float32).clone()
    embeddings[0] = 0.0
    save_tensors({EMBEDDINGS_KEY: embeddings}, directory / EMBEDDINGS_FILE)


def read_embeddings(directory: Path, index: ItemIndex, hidden: int) -> torch.Tensor:
    """The exported embedding table, checked against the item map (one row per item + the padding row)."""
    path = directory / EMBEDDINGS_FILE
    tensors = load_tensors(path)
    require(EMBEDDINGS_KEY in tensors, path, f"missing tensor '{EMBEDDINGS_KEY}'")
    table = tensors[EMBEDDINGS_KEY]
    require(table.dtype == torch.float32, path, f"'{EMBEDDINGS_KEY}' has dtype {table.dtype}, expected float32")
    require(
        table.ndim == 2 and table.shape[0] == len(index) + 1,
        path,
        f"'{EMBEDDINGS_KEY}' has shape {tuple(table.shape)} but {ITEM_MAP_FILE} has {len(index)} items "
        f"(expected {len(index) + 1} rows incl. padding row 0)",
    )
    require(table.shape[1] == hidden, path, f"'{EMBEDDINGS_KEY}' has {table.shape[1]} columns, model hidden is {hidden}")
    require(bool(torch.all(table[0] == 0)), path, "row 0 (padding) must be zero")
    return table
