"""Stage ``evaluate``: every trained variant of ``finetune.protocol`` on ``evaluate.splits``, both modes.

Writes ``metrics/llara.json`` ({split: {variant: {mode: {metric: {value, ci95, n}}}}}) and per-example predictions
``data/eval/<protocol>/<split>/<variant>.parquet`` for error analysis.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from llara.atomic import write_json, write_parquet
from llara.llm.data import read_examples
from llara.llm.evaluation import evaluate
from llara.llm.runs import eval_item_mode, load_run, read_run_info
from tasks.common import get_logger, stage_main
from tasks.finetune import run_dir
from tasks.params import EvaluateParams, FinetuneParams, LLMParams, load_params

METRICS = Path("metrics/llara.json")


def evaluate_variants(fparams: FinetuneParams, eparams: EvaluateParams, llm_params: LLMParams,
                      variants: list[str] | None = None, metrics_path: Path = METRICS,
                      eval_root: Path = Path("data/eval")) -> dict:
    log = get_logger("llara.evaluate")
    variants = variants or list(fparams.variants)
    results: dict = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    for variant in variants:
        directory = run_dir(fparams.protocol, variant)
        read_run_info(directory)
        model, encoder, info = load_run(directory, device=llm_params.device)
        for split in eparams.splits:
            examples = read_examples(Path("data/split") / fparams.protocol / f"{split}.parquet")
            if eparams.max_rows:
                examples = examples[: eparams.max_rows]
            metrics, predictions = evaluate(model, encoder, examples, item_mode=eval_item_mode(variant),
                                            modes=eparams.modes, seed=fparams.seed, batch_size=eparams.batch_size,
                                            length_norm=info["train"]["length_norm"])
            write_parquet(predictions, eval_root / fparams.protocol / split / f"{variant}.parquet")
            results.setdefault(split, {})[variant] = metrics
            log.info("%s %s: %s", split, variant, {m: {k: round(v["value"], 4) for k, v in d.items()}
                                                  for m, d in metrics.items()})
        del model
    write_json(results, metrics_path)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description="Evaluate trained LLaRA variants (settings from params.yaml).")
    parser.add_argument("variants", nargs="*", help="variants to evaluate (default: finetune.variants)")
    args = parser.parse_args()
    params = load_params()
    evaluate_variants(params.finetune, params.evaluate, params.llm, args.variants or None)


if __name__ == "__main__":
    stage_main(main)
