"""Stage ``export@<protocol>-<backbone>``: ``data/pretrain/<p>/<b>`` -> ``data/recommenders/<p>/<b>``.

The export directory is what the LLM stage loads (:func:`llara.recommenders.load_recommender`):
item_embeddings.safetensors, item_map.parquet, model.safetensors, config.json.
"""

from __future__ import annotations

from pathlib import Path

from llara.entrypoint import exit_with
from llara.recommenders.registry import FAMILIES
from llara.recommenders.workflow import export as export_model
from tasks.common import get_logger, stage_args
from tasks.params import load_params
from tasks.paths import EXPORT_ROOT, PRETRAIN_ROOT


def export(protocol: str, backbone: str, pretrain_root: Path = PRETRAIN_ROOT, out_root: Path = EXPORT_ROOT) -> Path:
    out = export_model(pretrain_root / protocol / backbone, out_root / protocol / backbone)
    get_logger("llara.export").info("exported %s/%s -> %s", protocol, backbone, out)
    return out


def main() -> None:
    args = stage_args("tasks.export", "Export one pretrained recommender for the LLM stage.",
                      split=True, backbone=(FAMILIES, "recommender family"))
    load_params()  # validates params.yaml like every stage
    export(args.protocol, args.backbone)


if __name__ == "__main__":
    exit_with(main)
