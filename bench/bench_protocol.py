"""The headline comparison on another split protocol in one command (default `leave-one-out`: all 943 MovieLens test
users, CIs about +-0.03 instead of +-0.10 on the 95 `paper` users).

Trains params.yaml's `finetune.variants` with its recipe and profile on that protocol's train rows (the pipeline's
workflow and stage code, resumable from data/runs/<protocol>/<variant>/), evaluates them on its test rows exactly as
stage `evaluate` does (evaluate.modes, the recommender alone, paired differences) and writes
metrics/llara_<protocol>.json (the report shows it when params.yaml's report.metrics names it). On CPU it takes the
pipeline's fine-tuning slot (it waits while a `finetune@` stage or another CPU run of it trains). Needs the pipeline's
split and recommender for the protocol (`dvc repro export@<protocol>-<backbone>`). Last line: the first variant's
HR@1 in the first mode evaluated (generate by default), ``<mode>_hr1=<value>``.
"""

from __future__ import annotations

import argparse
import os
import time

from benchlib import ROOT, record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--protocol", default="leave-one-out")
    parser.add_argument("--variants", nargs="+", default=None, help="default: finetune.variants")
    parser.add_argument("--max-rows", type=int, default=None, help="evaluate the first N test rows only (quick checks)")
    parser.add_argument("--modes", nargs="+", default=None,
                        help="evaluation modes (default: evaluate.modes; rank_llm is ~2/3 of the evaluation time)")
    args = parser.parse_args()
    os.chdir(ROOT)  # the stages' paths are relative to the repository root
    from llara.llm.loading import resolve_device
    from llara.llm.workflow import finetune
    from tasks.common import cpu_slot, get_logger
    from tasks.evaluate import evaluate_variants
    from tasks.finetune import finetune_job
    from tasks.params import load_params

    params = load_params()
    fparams = params.finetune.model_copy(update={"protocol": args.protocol})
    eparams = params.evaluate.model_copy(update={"splits": ["test"], "max_rows": args.max_rows,
                                                   **({"modes": args.modes} if args.modes else {})})
    variants = args.variants or list(fparams.variants)
    log = get_logger("bench_protocol")
    out = ROOT / "metrics" / f"llara_{args.protocol}.json"
    # the pipeline's CPU slot: beside its fine-tuning (or another run of this) both would run several times slower
    with cpu_slot("cpu-finetune", resolve_device(params.llm.device).type, log.info):
        t0 = time.time()
        for variant in variants:
            finetune(finetune_job(fparams, params.llm, variant), log=log.info)
        t_train = time.time() - t0
        results = evaluate_variants(fparams, eparams, params.llm, variants, metrics_path=out,
                                    eval_root=ROOT / "data" / "eval")[args.protocol]
    first = results[variants[0]]
    fmt = lambda m: f"{m['value']:.3f} [{m['ci95'][0]:.3f}, {m['ci95'][1]:.3f}]"  # noqa: E731
    summary = "; ".join(f"{v}: " + ", ".join(
        [f"{m} {fmt(r[m]['hr@1'])}" + (f" (valid {r[m]['valid_ratio']['value']:.3f})" if m.startswith("generate") else "")
         for m in eparams.modes] + [f"recommender {fmt(r['recommender']['hr@1'])}"]
        + [f"paired {m} {fmt(r['paired_vs_recommender'][m]['hr@1'])}" for m in eparams.modes]) for v, r in results.items())
    print(summary)
    record(f"bench_protocol {args.protocol} ({fparams.recipe} recipe, {fparams.profile} profile, n="
           f"{first['recommender']['hr@1']['n']}, training {t_train / 60:.0f} min, total {(time.time() - t0) / 60:.0f} min): "
           f"{summary}; written to {out.relative_to(ROOT)}")
    print(f"{eparams.modes[0]}_hr1={first[eparams.modes[0]]['hr@1']['value']:.3f}")


if __name__ == "__main__":
    main()
