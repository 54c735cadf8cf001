"""File-level steps shared by the CLI and the DVC stages: pretrain a split, export a model, evaluate exports."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import torch

from llara.atomic import atomic_dir, atomic_path, write_json
from llara.data.schema import ITEMS_SCHEMA, SPLIT_SCHEMA, read_parquet_checked
from llara.data.split_files import read_split
from llara.errors import require
from llara.recommenders.api import load_recommender
from llara.recommenders.base import ItemIndex
from llara.recommenders.checkpoint import clear_checkpoint
from llara.recommenders.config import CURVE_COLUMNS, BackboneConfig, TrainConfig
from llara.recommenders.evaluation import evaluate_rows, report, sequence_data
from llara.recommenders.io import read_json, read_model_dir, write_export, write_model_dir
from llara.recommenders.training import TrainResult, train

TRAINING_FILE = "training.json"


def read_item_index(items_path: str | Path) -> ItemIndex:
    """All items of ``items.parquet`` (the ingest artifact), sorted by id -> rows 1..N."""
    return ItemIndex.from_items_table(read_parquet_checked(items_path, ITEMS_SCHEMA), items_path)


def write_curve(history: list[dict], target: str | Path) -> None:
    """Per-epoch training curve as CSV (a DVC plot)."""
    with atomic_path(target) as tmp:
        with tmp.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=CURVE_COLUMNS, extrasaction="ignore")
            writer.writeheader()
            for row in history:
                writer.writerow({k: (f"{row[k]:.6f}" if isinstance(row.get(k), float) else row.get(k)) for k in CURVE_COLUMNS})


def pretrain(
    family: str,
    model_config: BackboneConfig,
    train_config: TrainConfig,
    split_dir: str | Path,
    items_path: str | Path,
    out_dir: str | Path,
    *,
    checkpoint_dir: str | Path | None = None,
    curve_path: str | Path | None = None,
    progress: bool = True,
    log: logging.Logger | None = None,
) -> TrainResult:
    """Train on ``split_dir``'s train rows (early stopping on its val rows) and write a model directory.

    ``model_config.n_items`` is replaced by the size of the item table. Writes ``out_dir`` atomically
    (model.safetensors, config.json, item_map.parquet, training.json) and the curve CSV; then drops the checkpoint.
    """
    split_dir = Path(split_dir)
    split = read_split(split_dir)
    index = read_item_index(items_path)
    window = model_config.window
    train_data = sequence_data(split.train, index, window, split_dir / "train.parquet")
    val_data = sequence_data(split.val, index, window, split_dir / "val.parquet")
    model_config = type(model_config)(**{**model_config.to_dict(), "n_items": len(index)})
    result = train(
        family, model_config, train_data, val_data, train_config,
        checkpoint_dir=checkpoint_dir, progress=progress, log=log,
    )
    best = result.history[result.best_epoch - 1] if result.best_epoch else {}
    summary = {
        "family": family,
        "split": str(split_dir),
        "rows": {"train": len(train_data), "val": len(val_data)},
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "early_stopped": result.epochs_run < train_config.epochs,
        "best": best,
        "train_config": train_config.__dict__,
    }
    with atomic_dir(out_dir) as tmp:
        write_model_dir(result.model, index, tmp)
        write_json(summary, tmp / TRAINING_FILE)
    if curve_path is not None:
        write_curve(result.history, curve_path)
    if checkpoint_dir is not None:
        clear_checkpoint(Path(checkpoint_dir))
    return result


def export(model_dir: str | Path, out_dir: str | Path) -> Path:
    """Pretrain output -> export directory (adds item_embeddings.safetensors); verified by reloading it."""
    model_dir = Path(model_dir)
    model, index, _ = read_model_dir(model_dir)
    training = read_json(model_dir / TRAINING_FILE) if (model_dir / TRAINING_FILE).is_file() else {}
    extra = {"name": model.family, "training": {k: training[k] for k in ("best_epoch", "best", "split") if k in training}}
    with atomic_dir(out_dir) as tmp:
        write_export(model, index, tmp, extra)
        reloaded = load_recommender(tmp).model.state_dict()
        same = all(torch.equal(value, reloaded[key]) for key, value in model.state_dict().items())
        require(same, tmp, "exported weights differ from the source model (export is not faithful)")
    return Path(out_dir)


def evaluate_export(export_dir: str | Path, split_dir: str | Path, part: str = "test", seed: int = 0) -> dict:
    """``{hr@1, hr@5, ndcg@5, full_hr@10, full_ndcg@10}`` of an export on a split part, each {value, ci95, n}."""
    rec = load_recommender(export_dir)
    path = Path(split_dir) / f"{part}.parquet"
    data = sequence_data(read_parquet_checked(path, SPLIT_SCHEMA), rec.index, rec.window, path)
    return report(evaluate_rows(rec.model, data), seed=seed)
