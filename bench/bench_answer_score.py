"""How `rank_llm` should reduce an answer's token log-probabilities to one score: measured on a trained run.

For the first N rows of a split it scores each of the 20 candidates' answers (title + end marker) with the run's
model, exactly as evaluation does (same batches, templates and item mode), keeps the per-token log-probabilities
(data/answer_scores/, keyed on the content of the run, the split file and the settings, so a second call only
re-reads them) and compares the reductions: `sum` (the answer's log-probability, today's `rank_llm`), `mean` (the
length-normalized mean, `rank_llm` before 2026-12-03) and `first` (the first token alone). Each gets HR@1 with its 95%
bootstrap CI and paired differences against `mean` and against the recommender alone on the same rows. Choose on
`--split val`; `--split test --update-metrics F` then writes the `sum` ranking into F's `rank_llm` entry (and its
paired difference), for a metrics file evaluated before the change, without re-running the whole evaluation.
Table to stdout and metrics/answer_score/<protocol>-<split>.csv; last line ``rank_llm_hr1=<sum's HR@1>``.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from benchlib import ROOT, add_run_arguments, record

REDUCTIONS = ("sum", "mean", "first")


def reduce(lp: np.ndarray, mask: np.ndarray, how: str) -> np.ndarray:
    """(rows, candidates) scores from per-token log-probabilities (rows, candidates, tokens), 0 where masked: the
    first token's, or llara.llm.scoring's reduction (sum, or the mean over the answer's tokens)."""
    if how == "first":
        return lp[:, :, 0]
    import torch

    from llara.llm.scoring import reduce_scores

    return reduce_scores(torch.from_numpy(lp), torch.from_numpy(mask), length_norm=how == "mean").numpy()


def answer_logprobs(model, encoder, examples, item_mode: str, seed: int, batch_size: int) -> tuple[np.ndarray, ...]:
    """(log-probs (N, C, T), mask (N, C, T)) in the input order, in llara.llm.evaluation's batches."""
    from llara.llm.evaluation import eval_batches, eval_templates
    from llara.llm.scoring import answer_logprobs as batch_logprobs

    templates = eval_templates(encoder, examples, seed)
    parts: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    t0 = time.time()
    for idx, batch in eval_batches(model, encoder, examples, item_mode, templates, batch_size):
        lp, mask = batch_logprobs(model, encoder, batch)
        for k, i in enumerate(idx):
            parts[i] = lp[k].float().cpu().numpy(), mask[k].numpy()
        print(f"rows {len(parts)}/{len(examples)} ({time.time() - t0:.0f} s)", flush=True)
    width = max(p[0].shape[-1] for p in parts.values())
    lp = np.zeros((len(examples), len(examples[0].candidates), width), np.float32)
    mask = np.zeros(lp.shape, np.int8)
    for i, (row_lp, row_mask) in parts.items():
        lp[i, :, :row_lp.shape[-1]], mask[i, :, :row_mask.shape[-1]] = row_lp, row_mask
    return lp, mask


def cache_path(protocol: str, split: str, variant: str, run, split_file, rows: int, seed: int, batch_size: int):
    """Where the log-probabilities of these rows under this run are kept: named by the content of its inputs (the
    run's weights, the recommender export, item table and base LLM it loads, the split file, the settings and the
    code that builds the model and prompts, draws the templates and scores)."""
    import json

    from llara.code_key import code_digest
    from llara.fingerprint import ContentKey, file_digest, model_digest, tree_digest

    info = json.loads((run / "final" / "run.json").read_text())
    key = ContentKey().add("run", tree_digest(run / "final")).add("split", file_digest(split_file))
    key.add("recommender", tree_digest(info["recommender"])).add("items", tree_digest(info["items"]))
    key.add("base LLM", model_digest(info["llm"]["model"]))
    key.add("code", code_digest("llara.llm.evaluation", "llara.llm.runs"))
    key.value("settings", {"rows": rows, "seed": seed, "batch_size": batch_size})
    return ROOT / "data" / "answer_scores" / f"{protocol}-{split}-{variant}-{key.digest[:16]}.npz"


def update_metrics(path, protocol: str, variant: str, ranks: np.ndarray, recommender_hits: np.ndarray,
                   seed: int) -> None:
    """``rank_llm`` of ``path`` (a metrics/llara*.json evaluated on the same rows) rewritten from ``ranks``."""
    from llara.atomic import write_json
    from llara.errors import require
    from llara.metrics import hit_at_k, paired_difference, ranking_metrics
    from tasks.evaluate import write_hr1_plot

    results = json.loads(path.read_text())
    entry = results.get(protocol, {}).get(variant)
    require(entry is not None, path, f"no {protocol}/{variant} entry to update")
    n = entry["recommender"]["hr@1"]["n"]
    require(n == len(ranks), path, f"{protocol}/{variant} was evaluated on {n} rows, these scores cover {len(ranks)}")
    recorded, here = entry["recommender"]["hr@1"]["value"], float(recommender_hits.mean())
    require(abs(recorded - here) < 1e-9, path, f"{protocol}/{variant}: its recommender HR@1 is {recorded:.4f}, on these "
            f"rows and this run's recommender {here:.4f} (another split or recommender)")
    entry["rank_llm"] = ranking_metrics(ranks, ks=(1, 5), ndcg_ks=(5,), seed=seed)
    entry["paired_vs_recommender"]["rank_llm"] = {"hr@1": paired_difference(hit_at_k(ranks, 1), recommender_hits,
                                                                            seed=seed)}
    write_json(results, path)
    write_hr1_plot(results, path.with_name(f"{path.stem}_hr1.csv"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_arguments(parser, split="val")
    parser.add_argument("--users", type=int, default=None, help="the split's first N rows (default: all)")
    parser.add_argument("--update-metrics", default=None, metavar="FILE",
                        help="write the sum ranking into FILE's rank_llm (test split only; FILE must hold this run's evaluation "
                             "of the same rows: the row count and the recommender's HR@1 on them are checked, the "
                             "LLM run is not)")
    args = parser.parse_args()
    if args.update_metrics and args.split != "test":
        parser.error("--update-metrics needs --split test (metrics files hold test rows)")
    os.chdir(ROOT)  # the run's recommender and items are named relative to the repository root
    from llara.atomic import atomic_path
    from llara.llm.data import read_examples
    from llara.llm.evaluation import recommender_scores
    from llara.llm.runs import eval_item_mode, load_run
    from llara.metrics import hit_at_k, paired_difference, summarize, target_ranks
    from tasks.finetune import run_dir
    from tasks.params import load_params
    from tasks.paths import SPLIT_ROOT

    params = load_params()
    seed, batch_size = params.finetune.seed, params.evaluate.batch_size
    directory = run_dir(args.protocol, args.variant)
    split_file = SPLIT_ROOT / args.protocol / f"{args.split}.parquet"
    examples = read_examples(split_file)
    examples = examples[: args.users or len(examples)]
    cache = cache_path(args.protocol, args.split, args.variant, directory, split_file, len(examples), seed, batch_size)
    model, encoder, _ = load_run(directory, device=params.llm.device)
    if cache.is_file():
        print(f"reusing the answer log-probabilities of {cache.relative_to(ROOT)}")
        with np.load(cache) as saved:
            lp, mask = saved["lp"], saved["mask"]
    else:
        lp, mask = answer_logprobs(model, encoder, examples, eval_item_mode(args.variant), seed, batch_size)
        with atomic_path(cache) as tmp, open(tmp, "wb") as fh:  # a file object: savez would append .npz to a name
            np.savez_compressed(fh, lp=lp, mask=mask)
    targets = [e.target_index for e in examples]
    recommender_hits = hit_at_k(target_ranks(recommender_scores(model, examples), targets), 1)
    ranks = {how: target_ranks(reduce(lp, mask, how), targets) for how in REDUCTIONS}
    hits = {how: hit_at_k(r, 1) for how, r in ranks.items()}
    fmt = lambda d: f"{d['value']:.3f} [{d['ci95'][0]:.3f}, {d['ci95'][1]:.3f}]"  # noqa: E731
    rows = ["reduction,hr1,hr1_lo,hr1_hi,delta_vs_mean,delta_vs_mean_lo,delta_vs_mean_hi,delta_vs_recommender,"
            "delta_vs_recommender_lo,delta_vs_recommender_hi,n"]
    print(f"{args.protocol} {args.split}, {len(examples)} rows, {args.variant}: HR@1 [95% CI] | paired vs mean | "
          f"paired vs recommender ({float(recommender_hits.mean()):.3f})")
    for how in REDUCTIONS:
        own = summarize(hits[how], seed=seed)
        vs_mean = paired_difference(hits[how], hits["mean"], seed=seed)
        vs_rec = paired_difference(hits[how], recommender_hits, seed=seed)
        print(f"  {how:5s} {fmt(own)} | {fmt(vs_mean)} | {fmt(vs_rec)}")
        rows.append(",".join(f"{v:.6f}" if isinstance(v, float) else str(v) for v in [
            how, own["value"], *own["ci95"], vs_mean["value"], *vs_mean["ci95"], vs_rec["value"], *vs_rec["ci95"],
            len(examples)]))
    out = ROOT / "metrics" / "answer_score" / f"{args.protocol}-{args.split}.csv"
    with atomic_path(out) as tmp:
        tmp.write_text("\n".join(rows) + "\n")
    if args.update_metrics:
        update_metrics(ROOT / args.update_metrics, args.protocol, args.variant, ranks["sum"], recommender_hits, seed)
        print(f"rank_llm of {args.update_metrics} rewritten (summed answer log-likelihood)")
    summary = ", ".join(f"{how} {hits[how].mean():.3f}" for how in REDUCTIONS)
    record(f"bench_answer_score {args.protocol} {args.split} ({args.variant}, n={len(examples)}): rank_llm HR@1 by "
           f"reduction: {summary}; recommender {recommender_hits.mean():.3f}")
    print(f"rank_llm_hr1={hits['sum'].mean():.4f}")


if __name__ == "__main__":
    from llara.entrypoint import exit_with

    exit_with(main)
