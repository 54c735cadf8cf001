"""Stage ``finetune@<variant>``: train one LLaRA variant on ``finetune.protocol``'s train rows.

Variants map to curriculum schedules: hybrid-curriculum (the paper's), hybrid-direct, hybrid-two-stage, text-only,
id-only; ``zero-shot`` trains nothing (0 steps, no score head) so the untrained LLM is evaluated the same way.
Outputs ``data/runs/<protocol>/<variant>/`` (final/ weights + run.json, checkpoints/ for resume, train_log.jsonl) and
the plot data ``metrics/finetune/<protocol>/<variant>/{loss,curriculum}.csv``. Runs unchanged under
``torchrun --nproc_per_node N -m tasks.finetune VARIANT`` (data parallel; rank 0 writes).
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import torch

from llara.atomic import atomic_path
from llara.entrypoint import exit_with
from llara.llm.data import read_examples, read_titles
from llara.llm.distributed import is_main_process
from llara.llm.loading import resolve_device
from llara.llm.model import ModelConfig
from llara.llm.runs import LLMSettings, build, check_embedding_rows, load_recommender_dir
from llara.llm.recipes import VARIANT_SCHEDULES, variant_configs
from llara.llm.training import LOG_FIELDS, TrainConfig, train
from tasks.common import cpu_slot, get_logger
from tasks.params import FinetuneParams, LLMParams, load_params

ITEMS = Path("data/ingested/items.parquet")


def run_dir(protocol: str, variant: str) -> Path:
    return Path("data/runs") / protocol / variant


def plot_dir(protocol: str, variant: str) -> Path:
    """DVC plots: ``loss.csv`` (step, loss and its parts, lr) and ``curriculum.csv`` (step, hybrid probability)."""
    return Path("metrics/finetune") / protocol / variant


def recommender_dir(params: FinetuneParams) -> Path:
    return Path("data/recommenders") / params.protocol / params.backbone


def configs(params: FinetuneParams, variant: str) -> tuple[TrainConfig, ModelConfig]:
    profile, recipe = params.profiles[params.profile], params.recipes[params.recipe]
    return variant_configs(variant, {**profile.model_dump(), **recipe.model_dump(), "seed": params.seed})


def write_csv(rows: list[dict], columns: list[str], target: Path) -> None:
    with atomic_path(target) as tmp:
        with tmp.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns)
            writer.writeheader()
            for row in rows:
                writer.writerow({k: row.get(k) for k in columns})


def write_plots(rows: list[dict], directory: Path) -> None:
    write_csv(rows, [f for f in LOG_FIELDS if f not in ("hybrid_probability", "hybrid_share")], directory / "loss.csv")
    write_csv(rows, ["step", "hybrid_probability", "hybrid_share"], directory / "curriculum.csv")


def finetune(params: FinetuneParams, llm_params: LLMParams, variant: str, items: Path = ITEMS,
             out: Path | None = None) -> Path:
    log = get_logger("llara.finetune")
    out = out or run_dir(params.protocol, variant)
    profile = params.profiles[params.profile]
    settings = LLMSettings(profile.llm or llm_params.base_dir, llm_params.dtype, llm_params.device,
                           llm_params.trust_remote_code)
    titles = read_titles(items)
    rec_dir = recommender_dir(params)
    recommender = load_recommender_dir(rec_dir)
    check_embedding_rows(recommender, titles, rec_dir)
    examples = read_examples(Path("data/split") / params.protocol / "train.parquet")
    train_cfg, model_cfg = configs(params, variant)
    info = {"llm": {"model": settings.model, "dtype": settings.dtype, "trust_remote_code": settings.trust_remote_code},
            "recommender": str(rec_dir), "items": str(items), "prompts": params.prompts, "variant": variant,
            "protocol": params.protocol, "profile": params.profile, "recipe": params.recipe}
    main_process = is_main_process()  # under torchrun / accelerate launch only rank 0 logs and writes
    with cpu_slot("cpu-finetune", resolve_device(settings.device).type, log.info):
        torch.manual_seed(params.seed)
        model, encoder = build(settings, recommender, titles, params.prompts, model_cfg)
        if main_process:
            log.info("finetune %s on %s: %d steps x %d examples (%s recipe, %s profile)", variant, params.protocol,
                     train_cfg.steps, train_cfg.batch_size, params.recipe, params.profile)
        rows = train(model, encoder, examples, train_cfg, out, info, log=log.info)
    if main_process:
        write_plots(rows, plot_dir(params.protocol, variant))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description="Fine-tune one LLaRA variant (settings from params.yaml).")
    parser.add_argument("variant", choices=sorted(VARIANT_SCHEDULES))
    args = parser.parse_args()
    params = load_params()
    finetune(params.finetune, params.llm, args.variant)


if __name__ == "__main__":
    exit_with(main)
