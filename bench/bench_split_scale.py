"""Benchmark: ingest + split of a large synthetic dataset (time and peak memory per phase).

Generates N interactions (power-law-ish users and items) as parquet, then runs the generic ingest, the `paper`
protocol with a seeded user split and the `leave-one-out` protocol, each in a fresh subprocess so its peak RSS is its
own. Prints a table; the last line is ``split_peak_gib=<worst phase peak>``.

    python bench/bench_split_scale.py            # 10M interactions
    python bench/bench_split_scale.py --quick    # 1M interactions
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PHASE = r"""
import json, resource, sys, time
from pathlib import Path
phase, work = sys.argv[1], Path(sys.argv[2])
start = time.perf_counter()
if phase == "ingest":
    from llara.data.ingest import Columns, read_generic, write_dataset
    ds = read_generic(work / "interactions.parquet", work / "items.parquet", Columns(rating="rating"))
    write_dataset(ds, work / "ingested")
    rows = ds.interactions.height
else:
    from llara.data.ingest import read_dataset
    from llara.data.split import SplitConfig, split_to_dir
    meta = split_to_dir(read_dataset(work / "ingested"), SplitConfig(protocol=phase, heldout_users=None), work / phase)
    rows = sum(meta["rows"].values())
print(json.dumps({"phase": phase, "seconds": time.perf_counter() - start, "rows": rows,
                  "peak_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}))
"""


def make_data(work: Path, n: int, seed: int = 0) -> None:
    import numpy as np
    import polars as pl

    rng = np.random.default_rng(seed)
    n_users, n_items = max(1000, n // 100), max(2000, n // 200)
    users = (rng.pareto(1.5, n) * n_users / 20).astype(np.int64) % n_users
    items = (rng.pareto(1.2, n) * n_items / 50).astype(np.int64) % n_items
    pl.DataFrame(
        {
            "user": users,
            "item": items,
            "timestamp": rng.integers(1_000_000_000, 1_700_000_000, n),
            "rating": rng.integers(1, 6, n).astype(np.float64),
        }
    ).write_parquet(work / "interactions.parquet")
    pl.DataFrame({"item": np.arange(n_items), "title": [f"Item {i}" for i in range(n_items)]}).write_parquet(
        work / "items.parquet"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1M interactions instead of 10M")
    parser.add_argument("-n", type=int, default=None, help="number of interactions")
    args = parser.parse_args()
    n = args.n or (1_000_000 if args.quick else 10_000_000)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        start = time.perf_counter()
        make_data(work, n)
        print(f"generated {n:,} interactions in {time.perf_counter() - start:.1f} s", file=sys.stderr)
        for phase in ("ingest", "paper", "leave-one-out"):
            out = subprocess.run([sys.executable, "-c", PHASE, phase, str(work)], capture_output=True, text=True)
            if out.returncode:
                sys.exit(f"phase {phase} failed:\n{out.stderr}")
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"{'phase':<15}{'interactions':>14}{'rows out':>12}{'seconds':>10}{'peak GiB':>10}")
    for r in results:
        print(f"{r['phase']:<15}{n:>14,}{r['rows']:>12,}{r['seconds']:>10.1f}{r['peak_gib']:>10.2f}")
    print(f"split_peak_gib={max(r['peak_gib'] for r in results):.2f}")


if __name__ == "__main__":
    main()
