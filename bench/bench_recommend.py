"""Benchmark: batch recommendation throughput from the champion (users/s), recommender-only vs LLM re-rank.

In-process, one torch thread (what one Dask worker of stage `recommend` uses): the champion loaded once, then the
first ``--users`` users with a history scored (a) by the recommender alone (top-k over the catalogue minus seen
items), (b) re-ranked by the LLM with N = 10, 20, 40 candidates; then (c) the whole Prefect + Dask path
(`flows.recommend.recommend_users`, users="all") with 1 and 2 workers on the same users, including start-up. Prints a
table; the last line is ``recommend_rerank_users_per_s=<N=20, 1 worker>``.

    python bench/bench_recommend.py            # 200 users, needs data/champion and data/ingested (dvc repro promote)
    python bench/bench_recommend.py --quick    # 40 users
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import record  # noqa: E402


def main() -> None:
    import polars as pl
    import torch

    from llara.batch_recommend import Scorer, Settings, user_histories
    from llara.data.ingest import read_dataset

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="40 users")
    parser.add_argument("--users", type=int, default=None)
    parser.add_argument("--champion", default="data/champion")
    parser.add_argument("--ingested", default="data/ingested")
    args = parser.parse_args()
    n_users = args.users or (40 if args.quick else 200)
    torch.set_num_threads(1)
    dataset = read_dataset(args.ingested)
    table = user_histories(dataset.interactions, dataset.ids)
    n_items = dataset.items.height
    table = table.head(n_users)
    users, histories = table["user"].to_list(), table["history"].to_list()
    start = time.perf_counter()
    scorer = Scorer(args.champion, device="cpu")
    load_s = time.perf_counter() - start
    rows = []

    def measure(label: str, settings: Settings) -> float:
        start = time.perf_counter()
        out = scorer.recommend(users, histories, settings)
        seconds = time.perf_counter() - start
        rows.append((label, len(users), seconds, len(users) / seconds, out.height))
        return len(users) / seconds

    measure("recommender only, k=10", Settings(k=10, n_candidates=10, rerank=False))
    rates = {n: measure(f"LLM re-rank, N={n}, k=10", Settings(k=10, n_candidates=n)) for n in (10, 20, 40)}

    from flows.recommend import recommend_users, task_runner

    with tempfile.TemporaryDirectory() as tmp:
        ingested = Path(tmp) / "ingested"
        shutil.copytree(args.ingested, ingested)
        keep = dataset.ids.users.to_internal(pl.Series(users)).to_list()
        (dataset.interactions.filter(pl.col("user").is_in(keep))
         .write_parquet(ingested / "interactions.parquet"))
        for workers in (1, 2):
            start = time.perf_counter()
            result = recommend_users.with_options(task_runner=task_runner(workers, None))(
                users="all", shard_size=max(1, len(users) // 4), ingested=str(ingested),
                out_dir=str(Path(tmp) / f"out-{workers}"), champion_dir=args.champion)
            seconds = time.perf_counter() - start
            rows.append((f"stage path (Prefect + Dask), {workers} worker(s), N=20", result["scored"], seconds,
                         result["scored"] / seconds, result["users"] * 10))
    print(f"champion loaded in {load_s:.1f} s; catalogue {n_items:,} items")
    print(f"{'path':<48}{'users':>7}{'seconds':>9}{'users/s':>9}")
    for label, n, seconds, rate, _ in rows:
        print(f"{label:<48}{n:>7}{seconds:>9.1f}{rate:>9.2f}")
    record("bench_recommend (" + f"{len(users)} users, {n_items} items, 1 torch thread per worker): "
           + "; ".join(f"{label} {rate:.2f} users/s" for label, _, _, rate, _ in rows))
    print(f"recommend_rerank_users_per_s={rates[20]:.2f}")


if __name__ == "__main__":
    main()
