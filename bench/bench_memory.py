"""Peak memory of fine-tuning (benchmark 5): peak RSS of a process that trains the default variant with params.yaml's
default profile and recipe (as `dvc repro` does, checkpoints included, into a temporary folder).

The training runs in a child process; the table shows its peak RSS after loading the data, after building the model,
after the first optimizer step and at the end. Last line: finetune_peak_gib=<peak> (floor: 4 GiB).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from benchlib import ROOT, finetune_setup, record


def peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # KiB on Linux


def worker(steps: int | None, threads: int) -> None:
    import torch

    from llara.entrypoint import apply_runtime_defaults
    from llara.llm.training import train

    apply_runtime_defaults()  # as the `llara` CLI and the DVC stages do
    torch.set_num_threads(threads)
    phases = {"start": peak_gib()}
    inputs = finetune_setup()
    fparams, variant = inputs.fparams, inputs.fparams.variants[0]
    cfg = replace(inputs.train_cfg, steps=steps or inputs.train_cfg.steps)
    examples = inputs.examples()
    phases["data loaded"] = peak_gib()
    model, encoder = inputs.build()
    phases["model built"] = peak_gib()

    def on_step(row: dict) -> bool:
        if row["step"] == 1:
            phases["after step 1"] = peak_gib()
        return False

    with tempfile.TemporaryDirectory() as tmp:
        train(model, encoder, examples, cfg, Path(tmp), {}, lambda m: None, on_step=on_step)
    phases[f"end ({cfg.steps} steps)"] = peak_gib()
    print(json.dumps({"phases": phases, "variant": variant, "recipe": fparams.recipe, "profile": fparams.profile,
                      "steps": cfg.steps, "micro_batch": cfg.micro_batch}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="6 steps (default: the profile's steps)")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    steps = 6 if args.quick else args.steps
    if args.worker:
        worker(steps, args.threads)
        return
    cmd = [sys.executable, __file__, "--worker", "--threads", str(args.threads)] + (["--steps", str(steps)] if steps else [])
    with tempfile.TemporaryFile("w+") as out:
        subprocess.run(cmd, cwd=ROOT, stdout=out, check=True)
        out.seek(0)
        result = json.loads(out.read().strip().splitlines()[-1])
    print(f"{'phase':24s} {'peak RSS GiB':>12s}   ({result['variant']}, {result['recipe']} recipe, "
          f"{result['profile']} profile, micro-batch {result['micro_batch']})")
    for phase, gib in result["phases"].items():
        print(f"{phase:24s} {gib:12.2f}")
    peak = max(result["phases"].values())
    record(f"bench_memory ({result['variant']}, {result['recipe']} recipe, {result['steps']} steps, micro-batch "
           f"{result['micro_batch']}): " + ", ".join(f"{k} {v:.2f}" for k, v in result["phases"].items())
           + f" GiB; finetune_peak_gib={peak:.2f}", threads=args.threads)
    print(f"finetune_peak_gib={peak:.2f}")


if __name__ == "__main__":
    main()
