"""Quality per CPU-minute (benchmark 7): rank-mode HR@1 on the `paper` test users after a budget of training CPU time,
for the paper recipe and ours (params.yaml `finetune.recipes`), variant hybrid-curriculum, one table.

Each recipe trains in its own process with `--threads` torch threads (default: both recipes at once, 1 thread each,
so the two share the machine evenly). Budgets are CPU-minutes of the training process (all its threads; evaluation
excluded), so a busy machine stretches the wall time but not the measurement. The curriculum and the learning-rate
schedule are planned for the largest budget: 3 calibration steps measure CPU seconds per step, T = budget / that, and
the model is evaluated when the training CPU time crosses each budget (HR@1 with n and a 95% bootstrap CI).
Last line: hr1_ratio_vs_paper_recipe=<ours / paper at the largest budget> (floor: 2).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from benchlib import ROOT, finetune_setup, record

CALIBRATION_STEPS = 3


def snapshot(model, encoder, test, cfg, seed: int) -> dict:
    from llara.llm.evaluation import evaluate

    metrics, _ = evaluate(model, encoder, test, modes=["rank"], seed=seed, batch_size=8, length_norm=cfg.length_norm)
    return metrics["rank"]["hr@1"]


def worker(recipe: str, budgets: list[float], threads: int, users: int | None, out: Path, calibration: int) -> None:
    import torch

    from llara.llm.training import train

    torch.set_num_threads(threads)
    quiet = lambda message: None  # noqa: E731
    inputs = finetune_setup("hybrid-curriculum", recipe)
    model, encoder = inputs.build()
    examples, test, cfg = inputs.examples("train"), inputs.examples("test"), inputs.train_cfg
    test = test[:users] if users else test
    with tempfile.TemporaryDirectory() as tmp:  # calibration: CPU seconds per optimizer step (first step excluded)
        marks: list[float] = []
        train(model, encoder, examples, replace(cfg, steps=calibration, checkpoint_every=10**6), Path(tmp),
              {}, quiet, on_step=lambda row: marks.append(time.process_time()) and False)
    per_step = (marks[-1] - marks[0]) / (len(marks) - 1)
    del model
    model, encoder = inputs.build()  # fresh weights for the measured run
    steps = max(cfg.warmup_steps + 1, math.ceil(max(budgets) * 60 / per_step))
    cfg = replace(cfg, steps=steps, checkpoint_every=10**6)
    points: list[dict] = []
    state = {"cpu": 0.0, "mark": time.process_time(), "examples": 0, "step": 0}
    pending = sorted(budgets)

    def evaluate_due(final: bool) -> None:
        while pending and (final or state["cpu"] >= pending[0] * 60):
            hr1 = snapshot(model, encoder, test, cfg, cfg.seed)
            points.append({"budget_min": pending.pop(0), "cpu_min": state["cpu"] / 60, "step": state["step"],
                           "examples": state["examples"], "hr@1": hr1})
            print(f"[{recipe}] {points[-1]}", flush=True)

    def on_step(row: dict) -> bool:
        state["cpu"] += time.process_time() - state["mark"]
        state["step"], state["examples"] = row["step"], row["examples"]
        evaluate_due(final=False)
        state["mark"] = time.process_time()
        return not pending

    evaluate_due(final=False)  # budget 0: the untrained model
    with tempfile.TemporaryDirectory() as tmp:
        state["mark"] = time.process_time()
        train(model, encoder, examples, cfg, Path(tmp), {}, quiet, on_step=on_step)
    evaluate_due(final=True)  # the schedule ended before the last budget (calibration overestimated a step)
    out.write_text(json.dumps({"recipe": recipe, "threads": threads, "planned_steps": steps,
                               "cpu_s_per_step": per_step, "batch_size": cfg.batch_size, "points": points}))


def fmt(m: dict) -> str:
    return f"{m['value']:.3f} [{m['ci95'][0]:.3f}, {m['ci95'][1]:.3f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="budgets 0, 1, 2 CPU-minutes, 16 test users, 2 calibration steps")
    parser.add_argument("--budgets", type=float, nargs="+", default=[0, 5, 15, 45], help="CPU-minutes")
    parser.add_argument("--recipes", nargs="+", default=["paper", "ours"])
    parser.add_argument("--threads", type=int, default=1, help="torch threads per recipe process")
    parser.add_argument("--sequential", action="store_true", help="one recipe after the other (default: together)")
    parser.add_argument("--users", type=int, default=None, help="first N test users (default: all 95)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    budgets, users = (([0, 1, 2], args.users or 16) if args.quick else (args.budgets, args.users))
    if args.worker:
        worker(args.worker, budgets, args.threads, users, args.out, 2 if args.quick else CALIBRATION_STEPS)
        return
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        outs = {r: Path(tmp) / f"{r}.json" for r in args.recipes}
        cmd = [sys.executable, __file__, "--threads", str(args.threads), "--budgets", *map(str, budgets)]
        cmd += (["--users", str(users)] if users else []) + (["--quick"] if args.quick else [])
        procs = []
        for recipe in args.recipes:
            p = subprocess.Popen([*cmd, "--worker", recipe, "--out", str(outs[recipe])], cwd=ROOT, env=os.environ)
            if args.sequential:
                p.wait()
            procs.append(p)
        if any(p.wait() != 0 for p in procs):
            sys.exit("a recipe worker failed")
        results = {r: json.loads(outs[r].read_text()) for r in args.recipes}
    print(f"\n{'recipe':8s} {'budget':>7s} {'cpu-min':>8s} {'steps':>6s} {'examples':>8s}  HR@1 [95% CI] (n)")
    for recipe, res in results.items():
        for p in res["points"]:
            print(f"{recipe:8s} {p['budget_min']:7.1f} {p['cpu_min']:8.2f} {p['step']:6d} {p['examples']:8d}  "
                  f"{fmt(p['hr@1'])} ({p['hr@1']['n']})")
    last = {r: res["points"][-1]["hr@1"]["value"] for r, res in results.items()}
    ratio = last.get("ours", float("nan")) / last["paper"] if last.get("paper") else float("inf")
    summary = "; ".join(
        f"{r}: {res['cpu_s_per_step']:.1f} CPU-s/step, T={res['planned_steps']}, "
        + ", ".join(f"{p['budget_min']:g} min {fmt(p['hr@1'])} @{p['examples']} ex" for p in res["points"])
        for r, res in results.items())
    record(f"bench_quality ({args.threads} thread(s) per recipe, {'sequential' if args.sequential else 'together'}, "
           f"n={users or 95}, wall {time.time() - t0:.0f} s): {summary}; hr1_ratio_vs_paper_recipe={ratio:.2f}",
           threads=args.threads)
    print(f"hr1_ratio_vs_paper_recipe={ratio:.2f}")


if __name__ == "__main__":
    main()
