"""Stage ``pretrain@<protocol>-<backbone>``: train one sequential recommender on a split.

``data/split/<protocol>`` + ``data/ingested/items.parquet`` -> ``data/pretrain/<protocol>/<backbone>/`` (model
directory + training.json) and the curve ``metrics/pretrain/<protocol>/<backbone>/curve.csv``. Checkpoints live in
``data/checkpoints/pretrain/<protocol>/<backbone>/`` (outside DVC's outputs) so a killed run resumes.
"""

from __future__ import annotations

from pathlib import Path

from llara.entrypoint import exit_with
from llara.errors import require
from llara.recommenders.registry import FAMILIES
from llara.recommenders.training import TrainResult
from llara.recommenders.workflow import pretrain as pretrain_model
from tasks.common import get_logger, stage_args
from tasks.params import PretrainParams, load_params
from tasks.paths import CHECKPOINT_ROOT, ITEMS, METRICS_ROOT, PRETRAIN_ROOT, SPLIT_ROOT


def pretrain(params: PretrainParams, protocol: str, backbone: str, *, split_root: Path = SPLIT_ROOT,
             items: Path = ITEMS, out_root: Path = PRETRAIN_ROOT, checkpoint_root: Path = CHECKPOINT_ROOT / "pretrain",
             curve_root: Path = METRICS_ROOT / "pretrain") -> TrainResult:
    log = get_logger("llara.pretrain")
    require(backbone in FAMILIES, "backbone", f"unknown backbone {backbone!r}; use one of {list(FAMILIES)}")
    out = out_root / protocol / backbone
    result = pretrain_model(
        backbone, params.model_config_for(backbone), params.train_config(backbone), split_root / protocol, items,
        out, checkpoint_dir=checkpoint_root / protocol / backbone,
        curve_path=curve_root / protocol / backbone / "curve.csv", log=log,
    )
    best = result.history[result.best_epoch - 1]
    log.info("pretrain %s on %s: best epoch %d of %d (val_loss %.4f, val_full_ndcg@10 %.4f) -> %s", backbone, protocol,
             result.best_epoch, result.epochs_run, best["val_loss"], best["val_full_ndcg@10"], out)
    return result


def main() -> None:
    args = stage_args("tasks.pretrain", "Pretrain one recommender on one split (values from params.yaml).",
                      split=True, backbone=(FAMILIES, "recommender family"))
    pretrain(load_params().pretrain, args.protocol, args.backbone)


if __name__ == "__main__":
    exit_with(main)
