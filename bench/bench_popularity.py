"""Where generation loses: HR@1 by how popular the target is.

Reads one evaluation's predictions (``data/eval/<protocol>/<split>/<variant>.parquet``, written by `evaluate` or
`bench_protocol.py`), the split's stored candidates (``data/split/<protocol>/<split>.parquet``) and its training rows
(``train.parquet`` beside it). An item's popularity is how often it is the target of a training row (its training
interactions, less the first of each user's sequence). Users are grouped by their target's popularity (``--groups``
quantile groups, ties kept together), and for each group the table gives HR@1 of every LLM-alone mode the
predictions hold (`generate`, `rank_llm` and their two-order forms) and of the recommender alone, with 95% bootstrap
CIs, and each mode minus the recommender on the same users (paired bootstrap CI). Then how popular the answers are:
the mean popularity rank among the 20 candidates (1: the most popular) of what each generate mode named, against the
targets', and how often it named the most popular candidate (the targets: how often the most popular candidate is
right), and the same for the recommender's own top candidate (``data/recommenders/<protocol>/<backbone>``, scored
here: the one model this runs, seconds). A model that leans on popularity names more popular items than the targets
are; an accurate one does too, so the recommender's picks are the yardstick. Last, the users where exactly one of a
generate mode and the recommender is right: how popular the wrong pick and the target are, and where the recommender
ranked the LLM's wrong answer. Seconds. Table to stdout; last line ``generate_minus_recommender_least_popular=<value>``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import polars as pl

from benchlib import ROOT, add_run_arguments, predictions_file, record
from bench_position import ci_cell, row_hits, rows_in_order

from llara.llm.recipes import EVAL_MODES
from llara.metrics import paired_difference, summarize

RESIDUAL_MODES = ("rank",)  # the recommender's score is inside these: not the LLM alone


def target_counts(train: pl.DataFrame) -> dict[int, int]:
    """Item -> how many training rows have it as their target."""
    return dict(train.group_by("target").len().rows())


def popularity_groups(counts: np.ndarray, groups: int) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Each row's quantile group of ``counts`` (0: the least popular; equal counts share a group) and each group's
    (lowest, highest) count."""
    edges = np.quantile(counts, np.linspace(0, 1, groups + 1)[1:-1])
    group = np.searchsorted(edges, counts, side="right")
    return group, [(int(counts[group == g].min()), int(counts[group == g].max())) if (group == g).any() else (0, 0)
                   for g in range(groups)]


def popularity_ranks(candidates: list[list[int]], items: list, counts: dict[int, int]) -> np.ndarray:
    """1-based popularity rank of each row's ``items`` entry among its candidates (ties: the best rank of the tie);
    NaN where it names no candidate."""
    ranks = []
    for cands, item in zip(candidates, items):
        if item not in cands:
            ranks.append(np.nan)
            continue
        ranks.append(1 + sum(counts.get(c, 0) > counts.get(item, 0) for c in cands))
    return np.array(ranks, dtype=float)


def disagreements(candidates: list[list[int]], targets: list[int], answers: list, scores: np.ndarray,
                  picks: list[int], counts: dict[int, int]) -> dict:
    """Where exactly one of an LLM mode and the recommender (``scores``, its top candidates ``picks``) is right.
    ``recommender_only``: how many, the mean popularity rank of the LLM's answer and of the target, and the median
    rank the recommender gave the LLM's answer; ``llm_only``: how many, the mean popularity rank of the recommender's
    pick and of the target."""
    rec_right = np.array([p == t for p, t in zip(picks, targets)])
    llm_right = np.array([a == t for a, t in zip(answers, targets)])
    rec_only = [i for i in np.flatnonzero(rec_right & ~llm_right) if answers[i] in candidates[i]]
    llm_only = np.flatnonzero(llm_right & ~rec_right)
    pop = lambda rows, items: float(np.mean(popularity_ranks([candidates[i] for i in rows],  # noqa: E731
                                                             [items[i] for i in rows], counts))) if len(rows) else None
    rec_rank = [1 + int((scores[i] > scores[i][candidates[i].index(answers[i])]).sum()) for i in rec_only]
    return {"recommender_only": {"n": int((rec_right & ~llm_right).sum()), "answer_popularity": pop(rec_only, answers),
                                 "target_popularity": pop(rec_only, targets),
                                 "recommender_rank_of_answer": float(np.median(rec_rank)) if rec_rank else None},
            "llm_only": {"n": int(llm_only.size), "recommender_pick_popularity": pop(llm_only, picks),
                         "target_popularity": pop(llm_only, targets)}}


def popularity_table(predictions: pl.DataFrame, split: pl.DataFrame, counts: dict[int, int], groups: int,
                     scores: np.ndarray | None = None) -> dict:
    """Per mode: per-group HR@1 and paired difference against the recommender; ``groups``: each group's count range;
    ``answers``: per generate mode (``target``, and ``recommender`` given its scores) the mean popularity rank and the
    share ranked first; ``disagreements`` (given the scores): per generate mode, :func:`disagreements`."""
    rows = rows_in_order(predictions, split)
    target_count = np.array([counts.get(t, 0) for t in split["target"].to_list()])
    group, ranges = popularity_groups(target_count, groups)
    recommender = row_hits(rows, "recommender_rank")
    modes = [m for m in EVAL_MODES if m not in RESIDUAL_MODES
             and (m.replace("generate", "correct") if m.startswith("generate") else m) in rows.columns]
    table = {"groups": ranges, "modes": {}}
    for mode in modes + ["recommender"]:
        hits = recommender if mode == "recommender" else row_hits(rows, mode)
        table["modes"][mode] = {
            "groups": [summarize(hits[group == g]) for g in range(groups)],
            "vs_recommender": None if mode == "recommender" else
            [paired_difference(hits[group == g], recommender[group == g]) for g in range(groups)]}
    candidates = split["candidates"].to_list()
    answers = {m: rows[m.replace("generate", "generated_item")].to_list() for m in modes if m.startswith("generate")}
    answers["target"] = split["target"].to_list()
    if scores is not None:
        answers["recommender"] = [c[int(np.argmax(row))] for c, row in zip(candidates, scores)]
        table["disagreements"] = {m: disagreements(candidates, answers["target"], answers[m], scores,
                                                   answers["recommender"], counts)
                                  for m in answers if m.startswith("generate")}
    table["answers"] = {}
    for name, items in answers.items():
        ranks = popularity_ranks(candidates, items, counts)
        named = ranks[~np.isnan(ranks)]
        table["answers"][name] = {"mean_rank": float(named.mean()), "first": float((named == 1).mean()),
                                  "n": int(named.size)}
    return table


def main() -> None:
    from llara.recommenders.api import load_recommender, score_rows

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_arguments(parser)
    parser.add_argument("--groups", type=int, default=4, help="quantile groups of the target's popularity")
    parser.add_argument("--backbone", default="sasrec",
                        help="the recommender whose picks are compared (default sasrec)")
    args = parser.parse_args()
    pred_path = predictions_file(args)
    split_dir = ROOT / "data/split" / args.protocol
    for path in (pred_path, split_dir / f"{args.split}.parquet", split_dir / "train.parquet"):
        if not Path(path).is_file():
            raise SystemExit(f"{path}: not found (run the split and the evaluation first)")
    counts = target_counts(pl.read_parquet(split_dir / "train.parquet"))
    split = pl.read_parquet(split_dir / f"{args.split}.parquet")
    recommender_dir = ROOT / "data/recommenders" / args.protocol / args.backbone
    scores = (score_rows(load_recommender(recommender_dir), split["history"].to_list(), split["candidates"].to_list())
              if recommender_dir.is_dir() else None)
    table = popularity_table(pl.read_parquet(pred_path), split, counts, args.groups, scores)
    first = table["modes"]["recommender"]["groups"]
    heads = [f"pop {lo}-{hi} (n={m['n']})" for (lo, hi), m in zip(table["groups"], first)]
    print(f"{'mode':28s} " + " ".join(f"{h:>24s}" for h in heads))
    for mode, entry in table["modes"].items():
        print(f"{mode:28s} " + " ".join(f"{ci_cell(m):>24s}" for m in entry["groups"]))
        if entry["vs_recommender"]:
            print(f"{'  - recommender (paired)':28s} "
                  + " ".join(f"{ci_cell(m):>24s}" for m in entry["vs_recommender"]))
    for name, a in table["answers"].items():
        print(f"popularity rank among the candidates, {name}: mean {a['mean_rank']:.2f}, "
              f"the most popular {a['first']:.3f} (n={a['n']})")
    for mode, d in table.get("disagreements", {}).items():
        a, b = d["recommender_only"], d["llm_only"]
        print(f"{mode} wrong where the recommender is right: {a['n']} users; the answer's popularity rank "
              f"{a['answer_popularity']:.2f}, the target's {a['target_popularity']:.2f}; the recommender ranked the "
              f"answer {a['recommender_rank_of_answer']:g} (median)")
        print(f"{mode} right where the recommender is wrong: {b['n']} users; the recommender's pick's popularity rank "
              f"{b['recommender_pick_popularity']:.2f}, the target's {b['target_popularity']:.2f}")
    gen = table["modes"].get("generate")
    summary = "; ".join(
        f"{mode} by group {[round(m['value'], 3) for m in e['groups']]}"
        + (f", minus recommender {[round(d['value'], 3) for d in e['vs_recommender']]}" if e["vs_recommender"] else "")
        for mode, e in table["modes"].items())
    record(f"bench_popularity {args.protocol}/{args.split}/{args.variant} (n={sum(m['n'] for m in first)}, groups by "
           f"training count {table['groups']}): {summary}; least popular group: "
           + "; ".join(f"{mode} - recommender {ci_cell(e['vs_recommender'][0])}" for mode, e in table["modes"].items()
                       if e["vs_recommender"])
           + "; answers' mean popularity rank "
           + ", ".join(f"{n} {a['mean_rank']:.2f}" for n, a in table["answers"].items())
           + "".join(f"; {m} wrong where the recommender is right {d['recommender_only']}, right where it is wrong "
                     f"{d['llm_only']}" for m, d in table.get("disagreements", {}).items()))
    if gen:
        print(f"generate_minus_recommender_least_popular={gen['vs_recommender'][0]['value']:.3f}")


if __name__ == "__main__":
    main()
