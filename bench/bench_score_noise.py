"""How much to trust the recommender's score: `score_noise` against held-out rows.

The `ours` recipe shows the LLM each candidate's standardized recommender score z (affinity features) and adds
Gaussian noise of σ = ``score_noise`` to it while training, because the recommender fits its own training rows better
than unseen users: without noise the LLM would learn to trust z more than z deserves at test time. This measures that
trust directly: the recommender's HR@1 (argmax of z) on a sample of training rows with noise σ added, for each σ of
``--sigmas``, against its HR@1 on the validation and test rows without noise. The σ at which the noisy training
scores are as reliable as the validation scores is the one that matches training to test; on your own data (another
recommender, another overfit) it tells what to set ``finetune.recipes.ours.score_noise`` to. Only the recommender
runs (seconds). Table to stdout; last line ``matched_score_noise=<σ>`` (the σ of ``--sigmas`` whose training HR@1
is closest to validation's).
"""

from __future__ import annotations

import argparse

import numpy as np
import polars as pl
import torch

from benchlib import ROOT, record

from llara.llm.features import standardize
from llara.recommenders.api import score_rows


def standardized_scores(recommender, split: pl.DataFrame, batch: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """(rows, candidates) standardized recommender scores and each row's target index among its candidates."""
    candidates = split["candidates"].to_list()
    z = standardize(torch.from_numpy(score_rows(recommender, split["history"].to_list(), candidates, batch))).numpy()
    targets = np.array([c.index(t) for c, t in zip(candidates, split["target"].to_list())])
    return z, targets


def noisy_hr1(z: np.ndarray, targets: np.ndarray, sigma: float, seed: int = 0) -> float:
    """HR@1 of argmax(z + N(0, sigma^2)) per row (one draw per score, as training draws it)."""
    noisy = z + sigma * np.random.default_rng(seed).standard_normal(z.shape) if sigma > 0 else z
    return float((noisy.argmax(axis=1) == targets).mean())


def matched_sigma(train_hr1: dict[float, float], held_out: float) -> float:
    """The σ whose noisy training HR@1 is closest to the held-out HR@1."""
    return min(train_hr1, key=lambda s: abs(train_hr1[s] - held_out))


def main() -> None:
    from llara.recommenders.api import load_recommender

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--protocol", default="leave-one-out")
    parser.add_argument("--backbone", default="sasrec")
    parser.add_argument("--train-rows", type=int, default=8000, help="training rows sampled (default 8000)")
    parser.add_argument("--sigmas", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    split_dir = ROOT / "data/split" / args.protocol
    recommender_dir = ROOT / "data/recommenders" / args.protocol / args.backbone
    for path in (split_dir / "train.parquet", split_dir / "val.parquet", recommender_dir):
        if not path.exists():
            raise SystemExit(f"{path}: not found (run the split and the recommender's pretraining first)")
    recommender = load_recommender(recommender_dir)
    train = pl.read_parquet(split_dir / "train.parquet")
    train = train.sample(n=min(args.train_rows, train.height), seed=args.seed)
    z, targets = standardized_scores(recommender, train)
    train_hr1 = {s: noisy_hr1(z, targets, s, args.seed) for s in args.sigmas}
    held = {}
    for part in ("val", "test"):
        if (split_dir / f"{part}.parquet").is_file():
            held[part] = noisy_hr1(*standardized_scores(recommender, pl.read_parquet(split_dir / f"{part}.parquet")), 0)
    print(f"{'score_noise':>12s} {'train HR@1':>11s}   (n={len(targets)} training rows)")
    for s, v in train_hr1.items():
        print(f"{s:12.2f} {v:11.3f}")
    for part, v in held.items():
        print(f"{part + ' HR@1':>12s} {v:11.3f}   (no noise)")
    best = matched_sigma(train_hr1, held["val"])
    record(f"bench_score_noise {args.protocol}/{args.backbone} (n={len(targets)} training rows): training HR@1 by "
           f"score_noise {', '.join(f'{s:g}: {v:.3f}' for s, v in train_hr1.items())}; "
           + ", ".join(f"{p} {v:.3f}" for p, v in held.items()) + f"; matched {best:g}")
    print(f"matched_score_noise={best:g}")


if __name__ == "__main__":
    main()
