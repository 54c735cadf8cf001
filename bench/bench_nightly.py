"""Benchmark: the nightly loop at scale, stage by stage (wall time and peak RSS).

A synthetic generic dataset (string ids ``u0000042``/``i00042``, titles, timestamps; each user walks through nearby
items) in a workspace copy of this repository: night 0 builds everything (`dvc repro promote recommend`); night 1
drops a delta of new interactions (``--delta`` of the dataset, 10% of them from new users) with its completion
marker into the inbox and runs the nightly loop one step at a time, each in its own process: merge (the inbox,
validated, into ledger parts + `dvc commit fetch`), ingest, split, pretrain, export, fine-tune (default profile),
evaluate, promote, recommend (``users: active``; night 0 writes the recommender's top-k for every user, night 1
re-scores the active users, with the champion LLM when ``--rerank``, everyone when the champion changed, and carries
the others over); night 2 drops another delta and, with the champion kept (no training), runs merge, ingest and
`recommend`, which re-scores only the users active since night 1. Peak RSS is the step's process tree (``wait4``'s
ru_maxrss).
Resumable: the workspace (``--work``) keeps DVC's state and finished steps, so a rerun continues where it stopped;
keyed on content: a rerun with other settings or other code (the repository files it copies) starts over.

    python bench/bench_nightly.py            # 1M interactions, 100k users, 20k items, 1% delta
    python bench/bench_nightly.py --quick    # CI size: 5k interactions, 300 users, 200 items, 2 fine-tuning steps
    python bench/bench_nightly.py --finetune-steps 30   # 1M, fine-tuning shortened (a step costs the same at any
                                                        # data size: bench_e2e.py / bench_finetune.py give its rate)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import ROOT, record  # noqa: E402

STAGES = ["ingest", "split@paper", "pretrain@paper-sasrec", "export@paper-sasrec", "finetune@hybrid-curriculum",
          "evaluate", "promote", "recommend"]
MERGE = r"""
import sys
from pathlib import Path
from llara.data.inbox import GenericDataset, merge_inbox
from llara.data.ingest import Columns
report = merge_inbox(GenericDataset(Path("data/raw/synth"), "interactions.parquet", "items.parquet",
                                    Columns(user="user", item="item", timestamp="timestamp", rating=None, title="title")),
                     "data/inbox", log=lambda line: None)
print(f"merged {report.added} interactions, quarantined {len(report.quarantined)}")
"""


def make_data(directory: Path, n: int, n_users: int, n_items: int, seed: int = 0) -> None:
    """``n`` interactions of ``n_users`` users over ``n_items`` items (each user walks from a random item through
    nearby ones, so a recommender can learn), string ids, one timestamp per step."""
    import numpy as np
    import polars as pl

    rng = np.random.default_rng(seed)
    users = np.sort(rng.integers(0, n_users, n))
    users[:n_users] = np.arange(n_users)  # every user at least once
    users.sort()
    start = rng.integers(0, n_items, n_users)
    step = np.arange(n) - np.searchsorted(users, users)  # position within the user
    items = (start[users] + step + rng.integers(0, 3, n)) % n_items
    directory.mkdir(parents=True, exist_ok=True)
    pl.DataFrame({"user": [f"u{u:07d}" for u in users], "item": [f"i{i:05d}" for i in items],
                  "timestamp": 1_600_000_000 + step * 60 + users % 60}).write_parquet(directory / "interactions.parquet")
    pl.DataFrame({"item": [f"i{i:05d}" for i in range(n_items)],
                  "title": [f"Synthetic title {i}" for i in range(n_items)]}).write_parquet(directory / "items.parquet")


def make_delta(path: Path, data: Path, fraction: float, seed: int = 1, after: int = 0) -> int:
    """New interactions (after every existing timestamp, and ``after`` more) for random existing users and 10% new
    users."""
    import numpy as np
    import polars as pl

    old = pl.read_parquet(data / "interactions.parquet")
    n_items = pl.read_parquet(data / "items.parquet").height
    rng = np.random.default_rng(seed)
    n = max(10, int(old.height * fraction))
    known = old["user"].unique().sort().to_list()
    users = [known[i] for i in rng.integers(0, len(known), n - n // 10)]
    users += [f"n{u:07d}" for u in rng.integers(0, max(1, n // 40), n // 10)]
    items = rng.integers(0, n_items, n)
    t0 = int(old["timestamp"].max()) + 1 + after
    path.parent.mkdir(parents=True, exist_ok=True)
    pl.DataFrame({"user": users, "item": [f"i{i:05d}" for i in items],
                  "timestamp": t0 + np.arange(n)}).write_parquet(path)
    path.with_name(path.name + ".done").touch()
    return n


def workspace_files() -> list[str]:
    """The repository files a workspace copies (tracked and untracked, not ignored; no tests, benchmarks, metrics)."""
    names = subprocess.run(["git", "ls-files", "-z", "-c", "-o", "--exclude-standard"], cwd=ROOT, check=True,
                           capture_output=True).stdout.decode().split("\0")
    return [n for n in filter(None, names)
            if not n.startswith(("tests/", "bench/", "metrics/")) and (ROOT / n).is_file()]


def copy_workspace(dest: Path) -> None:
    for name in workspace_files():
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, dest / name)
    (dest / "dvc.lock").unlink(missing_ok=True)


def run_key(args: argparse.Namespace) -> str:
    """What a resumed benchmark must share with the run it continues: the settings and the code it copies."""
    from llara.fingerprint import file_digest, json_digest

    settings = {k: v for k, v in vars(args).items() if k != "work"}
    return json_digest([settings, {name: file_digest(ROOT / name) for name in workspace_files()}])


def configure(work: Path, quick: bool, eval_users: int, finetune_steps: int | None) -> None:
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["ingest"].update(source="generic", input_dir="data/raw/synth", movielens_local_dir=None,
                            interactions_file="interactions.parquet", items_file="items.parquet",
                            columns={"user": "user", "item": "item", "timestamp": "timestamp", "rating": None,
                                     "title": "title"})
    params["split"].update(protocols=["paper"], heldout_users=None, min_rating=None)
    params["pretrain"].update(backbones=["sasrec"])
    params["finetune"]["variants"] = ["hybrid-curriculum"]
    params["evaluate"].update(max_rows=eval_users)
    params["champion"].update(max_users=eval_users)
    params["recommend"].update(users="active", rerank=False)  # night 0: the recommender alone for everyone
    params["pretrain"].update(epochs=3)  # the cost of an epoch is the point; early stopping would need ~20 at 1M
    if quick:
        params["finetune"]["profiles"]["default"].update(steps=2, compile=False)
    if finetune_steps is not None:  # a step costs the same at any data size (fixed batch); start-up is what grows
        params["finetune"]["profiles"]["default"].update(steps=finetune_steps)
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def set_rerank(work: Path) -> None:
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["recommend"]["rerank"] = True
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def timed(cmd: list[str], cwd: Path, log: Path) -> dict:
    """Run ``cmd``; wall seconds and the peak RSS of its process tree (the largest process: wait4's ru_maxrss)."""
    env = {**os.environ, "PYTHONPATH": str(cwd), "LLARA_DVC_REMOTE": str(cwd.parent / "bench-remote")}
    start = time.perf_counter()
    with open(log, "a") as out:
        out.write(f"\n$ {' '.join(cmd)}\n")
        out.flush()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        sys.exit(f"{' '.join(cmd)} failed (exit {proc.returncode}); see {log}")
    return {"seconds": round(time.perf_counter() - start, 1), "peak_gib": round(usage.ru_maxrss / 2**20, 3)}


def dvc(*args: str) -> list[str]:
    return [sys.executable, "-m", "dvc", *args]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CI size (5k interactions, 300 users, 200 items)")
    parser.add_argument("--work", default=None, help="workspace (kept, resumable; default /tmp/llara-bench-nightly*)")
    parser.add_argument("--delta", type=float, default=0.01, help="new interactions, as a share of the dataset")
    parser.add_argument("--eval-users", type=int, default=None, help="evaluate/promote on this many users")
    parser.add_argument("--rerank", action=argparse.BooleanOptionalAction, default=None,
                        help="night 1 re-ranks with the LLM (default: on with --quick; off at 1M, where a new champion "
                             "means re-ranking 100k users, hours on 2 cores: bench_recommend.py gives that cost)")
    parser.add_argument("--finetune-steps", type=int, default=None,
                        help="fine-tuning steps (default: the default profile's; --quick: 2). A step's cost does not "
                             "depend on the data size, so a shorter run measures what grows (start-up, data) sooner")
    args = parser.parse_args()
    n, n_users, n_items = (5_000, 300, 200) if args.quick else (1_000_000, 100_000, 20_000)
    eval_users = args.eval_users or (16 if args.quick else 200)
    args.rerank = args.quick if args.rerank is None else args.rerank
    work = Path(args.work or f"/tmp/llara-bench-nightly{'-quick' if args.quick else ''}").resolve()
    state_path, log = work.parent / f"{work.name}.state.json", work.parent / f"{work.name}.log"
    state = json.loads(state_path.read_text()) if state_path.is_file() else {}
    key = run_key(args)
    if state.get("key") != key:  # keyed on content: steps measured with other settings or code are not reused
        if state or work.exists():
            print(f"{work}: made with other settings or code; starting over", file=sys.stderr)
            shutil.rmtree(work, ignore_errors=True)
        state = {"key": key}
        state_path.write_text(json.dumps(state, indent=1))

    def step(name: str, cmd: list[str]) -> dict:
        if name not in state:
            state[name] = timed(cmd, work, log)
            state_path.write_text(json.dumps(state, indent=1))
        print(f"  {name}: {state[name]}", file=sys.stderr)
        return state[name]

    if not (work / "dvc.yaml").is_file():
        work.mkdir(parents=True, exist_ok=True)
        copy_workspace(work)
        make_data(work / "data/raw/synth", n, n_users, n_items)
        configure(work, args.quick, eval_users, args.finetune_steps)
        subprocess.run(dvc("config", "--local", "core.no_scm", "true"), cwd=work, check=True, capture_output=True)
    step("night 0: dvc repro promote recommend", dvc("repro", "promote", "recommend"))
    if "delta" not in state:
        state["delta"] = make_delta(work / "data/inbox/delta.parquet", work / "data/raw/synth", args.delta)
        if args.rerank:
            set_rerank(work)  # night 1: the champion LLM re-ranks the active users' candidates
    step("merge", [sys.executable, "-c", MERGE])
    step("dvc commit fetch", dvc("commit", "--force", "fetch"))
    for stage in STAGES:
        step(stage, dvc("repro", "--single-item", stage))
    steps = ["merge", "dvc commit fetch", *STAGES]
    # night 2: another delta, the champion kept (no training): `recommend` re-scores only the users active since
    # night 1
    if "delta 2" not in state:
        state["delta 2"] = make_delta(work / "data/inbox/delta-2.parquet", work / "data/raw/synth", args.delta, seed=2,
                                      after=state["delta"])
    step("night 2: merge", [sys.executable, "-c", MERGE])
    step("night 2: dvc commit fetch", dvc("commit", "--force", "fetch"))
    step("night 2: ingest", dvc("repro", "--single-item", "ingest"))
    step("night 2: recommend (active users)", dvc("repro", "--single-item", "recommend"))
    night2 = ["night 2: merge", "night 2: dvc commit fetch", "night 2: ingest", "night 2: recommend (active users)"]
    ft_steps = yaml.safe_load((work / "params.yaml").read_text())["finetune"]["profiles"]["default"]["steps"]
    print(f"nightly loop: {n:,} interactions, {n_users:,} users, {n_items:,} items, delta {state['delta']:,} "
          f"interactions; evaluate/promote on {eval_users} users; {ft_steps} fine-tuning steps")
    print(f"{'step':<36}{'seconds':>10}{'peak GiB':>10}")
    for name in ["night 0: dvc repro promote recommend", *steps, *night2]:
        print(f"{name:<36}{state[name]['seconds']:>10.1f}{state[name]['peak_gib']:>10.2f}")
    total = sum(state[s]["seconds"] for s in steps)
    line = (f"bench_nightly ({n:,} interactions, {n_users:,} users, {n_items:,} items, delta {state['delta']:,}, "
            f"{ft_steps} fine-tuning steps): "
            + ", ".join(f"{s} {state[s]['seconds']:.0f} s / {state[s]['peak_gib']:.2f} GiB" for s in steps)
            + f"; night 1 total {total:.0f} s (night 0: {state['night 0: dvc repro promote recommend']['seconds']:.0f} s); "
            + "night 2, champion kept: " + ", ".join(f"{s.removeprefix('night 2: ')} {state[s]['seconds']:.0f} s" for s in night2))
    if not args.quick:
        record(line)
    print(f"nightly_total_s={total:.0f}")


if __name__ == "__main__":
    main()
