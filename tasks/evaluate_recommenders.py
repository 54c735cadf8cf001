"""Stage ``evaluate_recommenders``: every export on its split's test rows -> ``metrics/recommenders.json``.

``{"<protocol>": {"<backbone>": {"hr@1", "hr@5", "ndcg@5", "full_hr@10", "full_ndcg@10"}}}``, each metric
``{"value", "ci95", "n"}`` (docs/recommenders.md defines them).
"""

from __future__ import annotations

from pathlib import Path

from llara.atomic import write_json
from llara.entrypoint import exit_with
from llara.recommenders.workflow import evaluate_export
from tasks.common import get_logger, stage_args
from tasks.params import load_params
from tasks.paths import EXPORT_ROOT, METRICS_ROOT, SPLIT_ROOT

METRICS_FILE = METRICS_ROOT / "recommenders.json"


def evaluate_recommenders(protocols: list[str], backbones: list[str], *, export_root: Path = EXPORT_ROOT,
                          split_root: Path = SPLIT_ROOT, out: Path = METRICS_FILE) -> dict:
    log = get_logger("llara.evaluate_recommenders")
    results: dict[str, dict] = {}
    for protocol in protocols:
        for backbone in backbones:
            metrics = evaluate_export(export_root / protocol / backbone, split_root / protocol, "test")
            results.setdefault(protocol, {})[backbone] = metrics
            log.info("%s %s: %s", protocol, backbone,
                     ", ".join(f"{k} {v['value']:.4f}" for k, v in metrics.items()))
    write_json(results, out)
    return results


def main() -> None:
    stage_args("tasks.evaluate_recommenders",
               "Evaluate every exported recommender (protocols x backbones of params.yaml).")
    params = load_params()
    evaluate_recommenders(list(params.split.protocols), list(params.pretrain.backbones))


if __name__ == "__main__":
    exit_with(main)
