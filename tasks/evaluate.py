"""Stage ``evaluate``: every trained variant of ``finetune.protocol`` on ``evaluate.splits``, both modes.

Writes ``metrics/llara.json`` ({protocol: {variant: {mode: {metric: {value, ci95, n}}}}} for the test rows; validation
rows, when evaluated, under the key ``<protocol>/val``), the DVC plot ``metrics/llara_hr1.csv`` (HR@1 per variant and
mode with its 95% CI) and per-example predictions ``data/eval/<protocol>/<split>/<variant>.parquet``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from llara.atomic import atomic_path, write_json, write_parquet
from llara.data.idmap import predictions_with_originals
from llara.entrypoint import exit_with
from llara.llm.data import read_examples
from llara.llm.evaluation import evaluate
from llara.llm.runs import eval_item_mode, load_run, read_run_info
from tasks.common import get_logger
from tasks.finetune import run_dir
from tasks.params import EvaluateParams, FinetuneParams, LLMParams, load_params
from tasks.paths import EVAL_ROOT, METRICS_ROOT, SPLIT_ROOT

METRICS = METRICS_ROOT / "llara.json"
HR1_PLOT = METRICS_ROOT / "llara_hr1.csv"


def metrics_key(protocol: str, split: str) -> str:
    """Top-level key of metrics/llara.json: the protocol for test rows (the contract), ``<protocol>/val`` else."""
    return protocol if split == "test" else f"{protocol}/{split}"


def write_hr1_plot(results: dict, target: Path = HR1_PLOT) -> None:
    """One row per (split key, variant, mode): HR@1 with its CI, for `dvc plots show` (a bar per variant)."""
    lines = ["split,variant,mode,hr1,ci_low,ci_high,n"]
    for key, variants in sorted(results.items()):
        for variant, modes in sorted(variants.items()):
            for mode, metrics in sorted(modes.items()):
                if "hr@1" in metrics:
                    m = metrics["hr@1"]
                    lines.append(f"{key},{variant},{mode},{m['value']:.6f},{m['ci95'][0]:.6f},{m['ci95'][1]:.6f},{m['n']}")
    with atomic_path(target) as tmp:
        tmp.write_text("\n".join(lines) + "\n")


def evaluate_variants(fparams: FinetuneParams, eparams: EvaluateParams, llm_params: LLMParams,
                      variants: list[str] | None = None, metrics_path: Path = METRICS,
                      eval_root: Path = EVAL_ROOT) -> dict:
    log = get_logger("llara.evaluate")
    variants = variants or list(fparams.variants)
    results: dict = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    for variant in variants:
        directory = run_dir(fparams.protocol, variant)
        read_run_info(directory)
        model, encoder, info = load_run(directory, device=llm_params.device)
        for split in eparams.splits:
            examples = read_examples(SPLIT_ROOT / fparams.protocol / f"{split}.parquet")
            if eparams.max_rows:
                examples = examples[: eparams.max_rows]
            metrics, predictions = evaluate(model, encoder, examples, item_mode=eval_item_mode(variant),
                                            modes=eparams.modes, seed=fparams.seed, batch_size=eparams.batch_size,
                                            length_norm=info["train"]["length_norm"])
            write_parquet(predictions_with_originals(predictions, info["items"]),
                          eval_root / fparams.protocol / split / f"{variant}.parquet")
            results.setdefault(metrics_key(fparams.protocol, split), {})[variant] = metrics
            log.info("%s %s: HR@1 %s", split, variant, {m: round(d["hr@1"]["value"], 4)
                                                        for m, d in metrics.items() if "hr@1" in d})
        del model
    write_json(results, metrics_path)
    write_hr1_plot(results, metrics_path.with_name(f"{metrics_path.stem}_hr1.csv"))  # metrics/llara_hr1.csv
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description="Evaluate trained LLaRA variants (settings from params.yaml).")
    parser.add_argument("variants", nargs="*", help="variants to evaluate (default: finetune.variants)")
    args = parser.parse_args()
    params = load_params()
    evaluate_variants(params.finetune, params.evaluate, params.llm, args.variants or None)


if __name__ == "__main__":
    exit_with(main)
