"""End-to-end default pipeline from a clean clone (benchmark 6): `git clone` of this repository's HEAD into a
temporary folder with `../shared` beside it (the MovieLens files the default params read), then quick-start command
1 (`bash scripts/pipeline.sh`) split into its two parts: `scripts/setup.sh` (virtualenv + pinned packages) and
`llara run` (every DVC stage from scratch). Floor: the pipeline in under 45 minutes on 2 cores.

`--quick` runs the same commands with a tiny training/evaluation budget (2 fine-tuning steps, 8 test users, 2
recommender epochs). Uncommitted changes are not part of a clone. Last line: e2e_pipeline_min=<llara run minutes>.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import ROOT, record

QUICK = ["-S", "finetune.profiles.default.steps=2", "-S", "finetune.profiles.default.warmup_steps=1",
         "-S", "evaluate.max_rows=8", "-S", "pretrain.epochs=2"]


def timed(cmd: list[str], cwd: Path, log: Path) -> float:
    start = time.perf_counter()
    with log.open("a") as fh:
        fh.write(f"$ {' '.join(cmd)}\n")
        fh.flush()
        subprocess.run(cmd, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT, check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny budgets (same commands)")
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared", help="the data folder put beside the clone")
    parser.add_argument("--keep", action="store_true", help="keep the clone (its path is printed)")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="llara-e2e-"))
    repo, log = tmp / "repo", tmp / "e2e.log"
    if args.shared.is_dir():
        (tmp / "shared").symlink_to(args.shared.resolve())
    env_note = "" if args.shared.is_dir() else " (no ../shared: MovieLens is downloaded)"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(repo)], check=True)
    print(f"clone: {repo}{env_note}; log: {log}", flush=True)
    try:
        setup_s = timed(["bash", "scripts/setup.sh"], repo, log)
        env = "source scripts/env.sh && export PATH=$PWD/.venv/bin:$PATH && "
        run_cmd = ["bash", "-c", env + "llara run " + " ".join(QUICK if args.quick else [])]
        pipeline_s = timed(run_cmd, repo, log)
    except subprocess.CalledProcessError:
        sys.exit(f"the pipeline failed; see {log}")
    print(f"{'phase':32s} {'minutes':>8s}")
    print(f"{'setup (scripts/setup.sh)':32s} {setup_s / 60:8.1f}")
    print(f"{'pipeline (llara run)':32s} {pipeline_s / 60:8.1f}")
    record(f"bench_e2e{' --quick' if args.quick else ''} (clean clone of {head(repo)}{env_note}): setup "
           f"{setup_s / 60:.1f} min, pipeline {pipeline_s / 60:.1f} min; e2e_pipeline_min={pipeline_s / 60:.1f}")
    if not args.keep:
        subprocess.run(["rm", "-rf", str(tmp)], check=False)
    print(f"e2e_pipeline_min={pipeline_s / 60:.1f}")


def head(repo: Path) -> str:
    """The commit the clone holds (this checkout may have moved on while the pipeline ran)."""
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True,
                          env=os.environ).stdout.strip()


if __name__ == "__main__":
    main()
