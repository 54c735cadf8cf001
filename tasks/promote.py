"""Stage ``promote``: champion/challenger. The fine-tuned ``champion.variant`` of ``finetune.protocol`` (the
challenger) and the current champion are evaluated on the same validation users and candidates; the challenger
becomes the champion (a new version in ``data/champion``) only when its HR@1 in ``champion.metric`` mode is not
lower by more than ``champion.margin``, counting what the champion's line has lost since its best. Writes
``metrics/champion.json``: the last decision (both models' HR@1 with CIs and the paired difference per mode) and the
promotion history. See llara/champion.py.
"""

from __future__ import annotations

from pathlib import Path

from llara import champion as registry
from llara.atomic import write_json
from llara.entrypoint import OneLineParser, exit_with
from llara.llm.data import read_examples
from tasks.common import get_logger
from tasks.finetune import ITEMS, run_dir
from tasks.params import Params, load_params
from tasks.paths import SPLIT_ROOT

CHAMPION_DIR = Path("data/champion")
METRICS = Path("metrics/champion.json")


def promote(params: Params, champion_dir: Path = CHAMPION_DIR, metrics_path: Path = METRICS) -> dict:
    log = get_logger("llara.promote")
    cfg = params.champion
    examples = read_examples(SPLIT_ROOT / params.finetune.protocol / "val.parquet")[: cfg.max_users]
    decision, entry = registry.challenge(
        champion_dir, run_dir(params.finetune.protocol, cfg.variant), examples,
        id_maps_dir=ITEMS.parent, modes=cfg.modes, mode=cfg.metric, margin=cfg.margin, batch_size=cfg.batch_size,
        seed=params.finetune.seed, device=params.llm.device, log=log.info)
    log.info("%s: %s", "promoted " + entry["version"] if decision.promote else "champion stays", decision.reason)
    write_json(registry.summary(champion_dir, entry), metrics_path)
    return entry


def main() -> None:
    parser = OneLineParser(prog="tasks.promote", description="Champion/challenger (settings from params.yaml).")
    parser.add_argument("--verbose", action="store_true", help="full tracebacks on errors")
    parser.parse_args()
    promote(load_params())


if __name__ == "__main__":
    exit_with(main)
