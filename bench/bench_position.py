"""Where generation loses: HR@1 by where the target is listed among the candidates.

Reads one evaluation's predictions (``data/eval/<protocol>/<split>/<variant>.parquet``, written by `evaluate` or
`bench_protocol.py`) and the split's stored candidates (``data/split/<protocol>/<split>.parquet``), groups the users by
the target's position in the prompt's candidate list (``--groups`` equal slices of it) and reports for each group HR@1
of `generate`, `rank_llm` and the recommender alone with 95% bootstrap CIs, the last group minus the first (a
two-sample bootstrap CI: different users), and how many generated answers name a candidate listed in each group. A
model that reads the list without position bias has flat rows, as the recommender does (it never sees the order).
No model runs: a few seconds. Table to stdout; last line ``generate_last_minus_first=<value>``.

``--reversed`` then tests the cause on the same users: it generates again with the trained run
(``data/runs/<protocol>/<variant>``) and each user's candidate list reversed (the same templates and seed as
`evaluate`), and reports per group the paired difference reversed minus original. Position, not the items listed
there, is the cause when the first group gains and the last loses. Minutes (one generate pass over the split).

``--two-orders`` tests the remedy at inference on the same users: evaluate's two-order modes (every user's prompt
with its candidates as listed and reversed, read as one: ``generate_two_orders``, ``rank_llm_two_orders``), against
the single order, paired, and their HR@1 per group. Twice a generate pass, or none when the predictions read already
hold them.

``--run`` and ``--predictions`` read any trained run and its ``llara evaluate --predictions`` file (e.g. an A/B arm)
instead of the pipeline's.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import polars as pl

from benchlib import ROOT, add_run_arguments, predictions_file, record

from llara.champion import per_user_hits, valid_column
from llara.metrics import DEFAULT_BOOTSTRAP, paired_difference, summarize


def last_minus_first(last: np.ndarray, first: np.ndarray, seed: int = 0) -> dict:
    """Mean of ``last`` minus mean of ``first`` (two groups of users) with a percentile bootstrap 95% CI."""
    rng = np.random.default_rng(seed)
    boot = (last[rng.integers(0, last.size, (DEFAULT_BOOTSTRAP, last.size))].mean(axis=1)
            - first[rng.integers(0, first.size, (DEFAULT_BOOTSTRAP, first.size))].mean(axis=1))
    return {"value": float(last.mean() - first.mean()), "ci95": [float(v) for v in np.quantile(boot, [0.025, 0.975])]}


def ci_cell(m: dict) -> str:
    """A summary or paired difference as ``value [low, high]``."""
    return f"{m['value']:.3f} [{m['ci95'][0]:.3f}, {m['ci95'][1]:.3f}]"


def rows_in_order(predictions: pl.DataFrame, split: pl.DataFrame) -> pl.DataFrame:
    """The predictions sorted by split row; exits naming the counts unless they are one evaluation of the split."""
    rows = predictions.sort("row")
    if rows["row"].to_list() != list(range(split.height)):
        raise SystemExit(f"predictions cover rows {rows.height} of the split's {split.height}: "
                         "not one evaluation of it")
    return rows


def row_hits(predictions: pl.DataFrame, mode: str) -> np.ndarray:
    """0/1 HR@1 per row of an evaluation mode (or ``recommender_rank``), in row order."""
    return per_user_hits(predictions.sort("row"), mode)


def position_table(predictions: pl.DataFrame, split: pl.DataFrame, groups: int) -> dict:
    """Per mode: per-group HR@1 summaries and the last-minus-first difference; ``chosen``: answers per group."""
    rows = rows_in_order(predictions, split)
    candidates = split["candidates"].to_list()
    n_cand = len(candidates[0])
    group = target_groups(split, groups)
    hits = {"generate": row_hits(rows, "generate"), "rank_llm": row_hits(rows, "rank_llm"),
            "recommender": row_hits(rows, "recommender_rank")}
    table = {mode: {"groups": [summarize(h[group == g]) for g in range(groups)],
                    "last_minus_first": last_minus_first(h[group == groups - 1], h[group == 0])}
             for mode, h in hits.items()}
    chosen = [c.index(g) * groups // n_cand for c, g in zip(candidates, rows["generated_item"].to_list()) if g in c]
    table["chosen"] = np.bincount(np.array(chosen, dtype=np.int64), minlength=groups).tolist()
    return table


def target_groups(split: pl.DataFrame, groups: int) -> np.ndarray:
    """Each row's group: the target's slot in the stored candidate list, in ``groups`` equal slices."""
    candidates = split["candidates"].to_list()
    return np.array([c.index(t) for c, t in zip(candidates, split["target"].to_list())]) * groups // len(candidates[0])


def paired_by_group(reversed_hits: np.ndarray, original_hits: np.ndarray, group: np.ndarray) -> list[dict]:
    """Per group (and last, all users): reversed minus original HR@1 on the same users, paired bootstrap CI."""
    parts = [paired_difference(reversed_hits[group == g], original_hits[group == g]) for g in range(group.max() + 1)]
    return parts + [paired_difference(reversed_hits, original_hits)]


def generate_reversed(run: Path, split_path: Path, variant: str, seed: int, batch_size: int) -> np.ndarray:
    """0/1 generate hits of the trained run with every candidate list reversed, in row order."""
    from llara.llm.data import read_examples
    from llara.llm.evaluation import evaluate, reversed_candidates
    from llara.llm.runs import eval_item_mode, load_run

    model, encoder, info = load_run(run)
    _, predictions = evaluate(model, encoder, reversed_candidates(read_examples(split_path)),
                              item_mode=eval_item_mode(variant), modes=["generate"], seed=seed,
                              batch_size=batch_size, length_norm=info["train"]["length_norm"])
    return row_hits(predictions, "generate")


def evaluated_two_orders(predictions: pl.DataFrame) -> dict[str, np.ndarray]:
    """:func:`two_order_hits` as an evaluation with the two-order modes already wrote them (row order)."""
    return {"generate": row_hits(predictions, "generate_two_orders"),
            "rank_llm": row_hits(predictions, "rank_llm_two_orders"),
            "valid": predictions.sort("row")[valid_column("generate_two_orders")].cast(pl.Float64).to_numpy()}


def two_order_hits(run: Path, split_path: Path, variant: str, seed: int, batch_size: int) -> dict[str, np.ndarray]:
    """0/1 hits per row (row order) of the two-order modes (evaluate's ``generate_two_orders``,
    ``rank_llm_two_orders``) of the trained run; ``valid``: the two-order answer names one candidate."""
    from llara.llm.data import read_examples
    from llara.llm.evaluation import evaluate
    from llara.llm.runs import eval_item_mode, load_run

    model, encoder, info = load_run(run)
    _, pred = evaluate(model, encoder, read_examples(split_path), item_mode=eval_item_mode(variant),
                       modes=["generate_two_orders", "rank_llm_two_orders"], seed=seed, batch_size=batch_size,
                       length_norm=info["train"]["length_norm"])
    return evaluated_two_orders(pred)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_arguments(parser)
    parser.add_argument("--groups", type=int, default=4, help="equal slices of the candidate list")
    parser.add_argument("--reversed", action="store_true",
                        help="also generate with each candidate list reversed (the trained run; minutes)")
    parser.add_argument("--two-orders", action="store_true",
                        help="also decode each user's two orders as one ensemble (the trained run; twice minutes)")
    parser.add_argument("--seed", type=int, default=0, help="template seed, as finetune.seed (evaluate uses it)")
    parser.add_argument("--run", type=Path, default=None,
                        help="a trained run to read instead of the pipeline's (data/runs/<protocol>/<variant>)")
    parser.add_argument("--predictions", type=Path, default=None,
                        help="its `llara evaluate --predictions` file instead of the pipeline's; with the two-order "
                             "modes in it, --two-orders reads them instead of decoding again")
    args = parser.parse_args()
    pred_path = args.predictions or predictions_file(args)
    run = args.run or ROOT / "data/runs" / args.protocol / args.variant
    label = f"{args.protocol}/{args.split}/{args.variant}" + (f" ({args.predictions})" if args.predictions else "")
    split_path = ROOT / "data/split" / args.protocol / f"{args.split}.parquet"
    for path in (pred_path, split_path):
        if not Path(path).is_file():
            raise SystemExit(f"{path}: not found (run the evaluation first)")
    predictions, split = pl.read_parquet(pred_path), pl.read_parquet(split_path)
    table = position_table(predictions, split, args.groups)
    heads = [f"group {g + 1} (n={m['n']})" for g, m in enumerate(table["generate"]["groups"])]
    print(f"{'mode':12s} " + " ".join(f"{h:>24s}" for h in heads) + f" {'last - first':>24s}")
    for mode in ("generate", "rank_llm", "recommender"):
        print(f"{mode:12s} " + " ".join(f"{ci_cell(m):>24s}" for m in table[mode]["groups"])
              + f" {ci_cell(table[mode]['last_minus_first']):>24s}")
    print(f"generated answers per group: {table['chosen']}")
    gen = table["generate"]["last_minus_first"]
    if args.reversed:
        diffs = paired_by_group(generate_reversed(run, split_path,
                                                  args.variant, args.seed, 16), row_hits(predictions, "generate"),
                                target_groups(split, args.groups))
        names = [f"group {g + 1}" for g in range(args.groups)] + ["all users"]
        for name, d in zip(names, diffs):
            print(f"reversed lists, {name} (n={d['n']}): {d['baseline']:.3f} -> {d['model']:.3f}, paired {ci_cell(d)}")
        record(f"bench_position --reversed {label}: generate HR@1 reversed minus "
               f"original per group of the original order (paired): {'; '.join(ci_cell(d) for d in diffs[:-1])}; "
               f"all users {ci_cell(diffs[-1])}")
    if args.two_orders:
        ens = (evaluated_two_orders(predictions) if "correct_two_orders" in predictions.columns
               else two_order_hits(run, split_path, args.variant, args.seed, 16))
        single = {mode: row_hits(predictions, mode) for mode in ("generate", "rank_llm")}
        group = target_groups(split, args.groups)
        parts = []
        for mode in ("generate", "rank_llm"):
            d = paired_difference(ens[mode], single[mode])
            spread = last_minus_first(ens[mode][group == args.groups - 1], ens[mode][group == 0])
            print(f"two orders, {mode} (n={d['n']}): {d['baseline']:.3f} -> {d['model']:.3f}, paired {ci_cell(d)}; "
                  f"by group {[round(float(ens[mode][group == g].mean()), 3) for g in range(args.groups)]}, "
                  f"last - first {ci_cell(spread)}")
            parts.append(f"{mode} {d['baseline']:.3f} -> {d['model']:.3f}, paired {ci_cell(d)}, "
                         f"last-first {ci_cell(spread)}")
        print(f"two orders, ValidRatio {ens['valid'].mean():.3f}")
        record(f"bench_position --two-orders {label} (two candidate orders decoded "
               f"as one, n={len(group)}): {'; '.join(parts)}; ValidRatio {ens['valid'].mean():.3f}")
    groups = table["generate"]["groups"]
    record(f"bench_position {label} (n={sum(m['n'] for m in groups)}, "
           f"{args.groups} groups): generate HR@1 by group {[round(m['value'], 3) for m in groups]}, "
           f"last-first {ci_cell(gen)}; recommender last-first {ci_cell(table['recommender']['last_minus_first'])}; "
           f"answers per group {table['chosen']}")
    print(f"generate_last_minus_first={gen['value']:.3f}")


if __name__ == "__main__":
    main()
