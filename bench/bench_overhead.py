"""Orchestration overhead when nothing changed: (a) ``dvc repro`` (limit 2 s) and (b) the all-cached Prefect
pipeline flow (limit 15 s, in-process against a warm local API), plus (c) ``llara run`` end to end (new process,
temporary API server; reported, no limit).

By default it builds a throwaway copy of the repo with a tiny synthetic dataset and reproduces the data stages
(fetch, ingest, split@*) once; ``--root`` measures an existing workspace instead (it must be up to date: the bench
refuses to run stages). Prints a table, appends a line to bench/RESULTS.md; last line ``noop_dvc_repro_s=<median>``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from flows.env import apply_env_defaults, subprocess_env  # noqa: E402

LIMITS = {"(a) dvc repro, nothing changed": 2.0, "(b) Prefect flow, all cached": 15.0}


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run(cmd: list[str], cwd: Path) -> str:
    result = subprocess.run(cmd, cwd=cwd, env=subprocess_env(), capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"error: {' '.join(cmd[2:])} failed in {cwd}: {(result.stderr or result.stdout).strip()[-500:]}")
    return result.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 repeats, no end-to-end run (well under a minute)")
    parser.add_argument("--repeats", type=int, default=5, help="repeats per measurement (default 5)")
    parser.add_argument("--root", type=Path, default=None, help="measure this up-to-date workspace instead")
    parser.add_argument("targets", nargs="*", default=None, help="stages (default: split, or all with --root)")
    args = parser.parse_args()
    apply_env_defaults()
    repeats = 2 if args.quick else args.repeats
    dvc = [sys.executable, "-m", "dvc"]
    with tempfile.TemporaryDirectory(prefix="bench-overhead-") as tmp:
        if args.root is None:
            from _flow_helpers import make_workspace

            root = make_workspace(Path(tmp) / "ws")
            targets = args.targets or ["split"]
            print(f"building a synthetic workspace in {root} ...", flush=True)
            run(dvc + ["repro", *targets], root)
        else:
            root, targets = args.root.resolve(), args.targets or []
        status = run(dvc + ["status", *targets], root)
        if "up to date" not in status:
            sys.exit(f"error: {root} is not up to date for {targets or 'all stages'} (dvc status); run it first")

        results: dict[str, list[float]] = {}
        results["(a) dvc repro, nothing changed"] = [timed(lambda: run(dvc + ["repro", *targets], root))
                                                     for _ in range(repeats)]
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")  # before Prefect configures its logging
        from prefect.testing.utilities import prefect_test_harness

        from flows.pipeline import pipeline

        with prefect_test_harness(server_startup_timeout=90):
            pipeline(repo_root=str(root), targets=targets or None)  # warm-up: imports, API, DVC index
            flow_times = []
            for _ in range(repeats):
                flow_times.append(timed(lambda: pipeline(repo_root=str(root), targets=targets or None)))
            results["(b) Prefect flow, all cached"] = flow_times
        if not args.quick:
            llara = [sys.executable, "-m", "llara", "run", *targets]
            results["(c) llara run, new process"] = [timed(lambda: run(llara, root))]

    print(f"{'measurement':34s} {'median s':>9s} {'min s':>7s} {'max s':>7s} {'limit s':>8s}  ok")
    for name, values in results.items():
        limit = LIMITS.get(name)
        median = statistics.median(values)
        ok = "-" if limit is None else ("yes" if median <= limit else "NO")
        print(f"{name:34s} {median:9.2f} {min(values):7.2f} {max(values):7.2f} {limit or '-':>8}  {ok}")
    noop = statistics.median(results["(a) dvc repro, nothing changed"])
    flow = statistics.median(results["(b) Prefect flow, all cached"])
    load = os.getloadavg()[0]
    line = (f"- {datetime.date.today()} {platform.node()} ({os.cpu_count()} cpus, load {load:.1f}, "
            f"{'synthetic workspace' if args.root is None else root}, targets {targets or 'all'}, {repeats} repeats): "
            + ", ".join(f"{k} {statistics.median(v):.2f} s" for k, v in results.items())
            + f"; noop_dvc_repro_s={noop:.2f} (limit 2), cached_flow_s={flow:.2f} (limit 15)\n")
    results_file = ROOT / "bench" / "RESULTS.md"
    if not results_file.exists():
        results_file.write_text("# Benchmark results\n\nOne line per run: date, machine, measurements.\n\n")
    with open(results_file, "a") as fh:
        fh.write(line)
    print(f"noop_dvc_repro_s={noop:.2f}")


if __name__ == "__main__":
    main()
