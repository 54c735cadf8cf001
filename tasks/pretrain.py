"""Stage ``pretrain@<protocol>-<backbone>``: train one sequential recommender on a split.

``data/split/<protocol>`` + ``data/ingested/items.parquet`` -> ``data/pretrain/<protocol>/<backbone>/`` (model
directory + training.json) and the curve ``metrics/pretrain/<protocol>/<backbone>/curve.csv``. Checkpoints live in
``data/checkpoints/pretrain/<protocol>/<backbone>/`` (outside DVC's outputs) so a killed run resumes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from llara.entrypoint import exit_with
from llara.errors import require
from llara.recommenders.base import BackboneConfig
from llara.recommenders.registry import config_from_dict
from llara.recommenders.training import TrainConfig, TrainResult
from llara.recommenders.workflow import pretrain as pretrain_model
from tasks.common import get_logger
from tasks.params import BACKBONES, PretrainParams, load_params

ITEMS = Path("data/ingested/items.parquet")
SPLIT_ROOT = Path("data/split")
PRETRAIN_ROOT = Path("data/pretrain")
CHECKPOINT_ROOT = Path("data/checkpoints/pretrain")
CURVE_ROOT = Path("metrics/pretrain")


def _backbone(params: PretrainParams, backbone: str):
    require(backbone in BACKBONES, "backbone", f"unknown backbone {backbone!r}; use one of {list(BACKBONES)}")
    return getattr(params, backbone)


def train_config(params: PretrainParams, backbone: str) -> TrainConfig:
    """Training options; ``pretrain.<backbone>.lr`` overrides ``pretrain.lr``."""
    keys = ("seed", "epochs", "batch_size", "lr", "weight_decay", "patience", "monitor", "loss", "n_negatives",
            "num_threads", "checkpoint_every")
    values = {k: getattr(params, k) for k in keys}
    lr = _backbone(params, backbone).lr
    return TrainConfig(**{**values, "lr": lr if lr is not None else params.lr})


def model_config(params: PretrainParams, backbone: str, n_items: int = 1) -> BackboneConfig:
    sizes = _backbone(params, backbone).model_dump(exclude={"lr"})
    return config_from_dict(backbone, {"n_items": n_items, "window": params.window, **sizes}, f"pretrain.{backbone}")


def pretrain(params: PretrainParams, protocol: str, backbone: str, *, split_root: Path = SPLIT_ROOT,
             items: Path = ITEMS, out_root: Path = PRETRAIN_ROOT, checkpoint_root: Path = CHECKPOINT_ROOT,
             curve_root: Path = CURVE_ROOT) -> TrainResult:
    log = get_logger("llara.pretrain")
    out = out_root / protocol / backbone
    result = pretrain_model(
        backbone, model_config(params, backbone), train_config(params, backbone), split_root / protocol, items, out,
        checkpoint_dir=checkpoint_root / protocol / backbone, curve_path=curve_root / protocol / backbone / "curve.csv",
        log=log,
    )
    best = result.history[result.best_epoch - 1]
    log.info("pretrain %s on %s: best epoch %d of %d (val_loss %.4f, val_full_ndcg@10 %.4f) -> %s", backbone, protocol,
             result.best_epoch, result.epochs_run, best["val_loss"], best["val_full_ndcg@10"], out)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description="Pretrain one recommender on one split (values from params.yaml).")
    parser.add_argument("protocol", help="split protocol: paper | paper-files | leave-one-out")
    parser.add_argument("backbone", help="sasrec | gru4rec | caser")
    args = parser.parse_args()
    pretrain(load_params().pretrain, args.protocol, args.backbone)


if __name__ == "__main__":
    exit_with(main)
