"""Stage ``finetune@<variant>``: train one LLaRA variant on ``finetune.protocol``'s train rows.

Variants map to curriculum schedules: hybrid-curriculum (the paper's), hybrid-direct, hybrid-two-stage, text-only,
id-only; ``zero-shot`` trains nothing (0 steps, no score head) so the untrained LLM is evaluated the same way.
Outputs ``data/runs/<protocol>/<variant>/`` (final/ weights + run.json, checkpoints/ for resume, train_log.jsonl) and
the plot data ``metrics/finetune/<protocol>/<variant>/{loss,curriculum}.csv``. Runs unchanged under
``torchrun --nproc_per_node N -m tasks.finetune VARIANT`` (data parallel; rank 0 writes).
"""

from __future__ import annotations

import csv
from pathlib import Path

from llara.atomic import atomic_path
from llara.entrypoint import exit_with
from llara.llm.distributed import is_main_process
from llara.llm.loading import resolve_device
from llara.llm.recipes import VARIANTS, LLMSettings
from llara.llm.training import LOG_FIELDS
from llara.llm.workflow import FinetuneJob, finetune
from tasks.common import cpu_slot, get_logger, stage_args
from tasks.params import FinetuneParams, LLMParams, load_params
from tasks.paths import EXPORT_ROOT, ITEMS, METRICS_ROOT, RUNS_ROOT, SPLIT_ROOT


def run_dir(protocol: str, variant: str) -> Path:
    return RUNS_ROOT / protocol / variant


def plot_dir(protocol: str, variant: str) -> Path:
    """DVC plots: ``loss.csv`` (step, loss and its parts, lr) and ``curriculum.csv`` (step, hybrid probability)."""
    return METRICS_ROOT / "finetune" / protocol / variant


def recommender_dir(params: FinetuneParams) -> Path:
    return EXPORT_ROOT / params.protocol / params.backbone


def finetune_job(params: FinetuneParams, llm_params: LLMParams, variant: str, items: Path = ITEMS,
                 out: Path | None = None) -> FinetuneJob:
    """The library job of stage ``finetune@<variant>`` from params.yaml."""
    return FinetuneJob(
        variant=variant, train=SPLIT_ROOT / params.protocol / "train.parquet", recommender=recommender_dir(params),
        val=SPLIT_ROOT / params.protocol / "val.parquet",
        items=items, out=out or run_dir(params.protocol, variant), recipe=params.chosen_recipe,
        profile=params.chosen_profile, prompts=params.prompts, seed=params.seed,
        llm=LLMSettings(llm_params.base_dir, llm_params.dtype, llm_params.device, llm_params.trust_remote_code),
        labels={"protocol": params.protocol, "profile": params.profile, "recipe": params.recipe})


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


def run_stage(params: FinetuneParams, llm_params: LLMParams, variant: str) -> Path:
    """Train the variant (one CPU fine-tuning at a time on this machine) and write its DVC plot files."""
    log = get_logger("llara.finetune")
    job = finetune_job(params, llm_params, variant)
    with cpu_slot("cpu-finetune", resolve_device(llm_params.device).type, log.info):
        rows = finetune(job, log=log.info)
    if is_main_process():  # under torchrun / accelerate launch only rank 0 writes
        write_plots(rows, plot_dir(params.protocol, variant))
    return job.out


def main() -> None:
    args = stage_args("tasks.finetune", "Fine-tune one LLaRA variant (settings from params.yaml).",
                      variant=(VARIANTS, "the variant to train"))
    params = load_params()
    run_stage(params.finetune, params.llm, args.variant)


if __name__ == "__main__":
    exit_with(main)
