"""Where a training step's time goes on the device: a recipe of a bench_gpu bundle trained for a few steps at the
default profile's batch (8, one forward pass), the steps after the warm-up profiled twice:

- ``torch.profiler`` (CPU and CUDA activities): the step's wall time against the time the GPU spent in kernels, and
  the operators that took the most host time;
- ``cProfile``: the Python functions that took the most host time (cumulative), ours and the libraries'.

``--compile`` profiles the same steps with the decoder layers compiled (fewer, fused kernels; the warm-up steps hold
the compilation). Writes ``<out>/profile-<recipe>[-compiled].txt``.

The first GPU run (bench/RESULTS.md, *GPU run*) was host-bound at 1.4% MFU; this names what to make faster. Runs on
CPU too (``--device cpu``: no kernel time then). Weights as ``bench_gpu.py run`` takes them (``--llm``, else random
with the bundle's shapes: the same speed). Last lines ``<recipe>_step_s=<wall seconds per step>`` and
``<recipe>_gpu_busy_share=<kernel time / wall time>``.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_gpu import ROOT, base_llm, recipe_configs  # noqa: E402
from gpu_bundle import read_configs, read_recommender, read_rows, read_titles  # noqa: E402


COMPILE_PAYS = 0.8  # the curves compile when the compiled step takes at most this share of the eager one


def step_seconds(report: str) -> float:
    """The ``<recipe>_step_s=`` value of a report."""
    match = re.search(r"^\w+_step_s=([0-9.]+)$", report, re.MULTILINE)
    if match is None:
        raise ValueError("no <recipe>_step_s= line")
    return float(match[1])


def compile_pays(eager: Path, compiled: Path) -> bool:
    """Whether compiling paid in these two reports (the same recipe and steps, eager and compiled); prints why."""
    eager_s, compiled_s = step_seconds(eager.read_text()), step_seconds(compiled.read_text())
    pays = compiled_s <= COMPILE_PAYS * eager_s
    print(f"compiled step {compiled_s:.3f} s against eager {eager_s:.3f} s: curves {'compiled' if pays else 'eager'}")
    return pays


def profile(args: argparse.Namespace) -> str:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    from llara.llm.loading import resolve_device
    from llara.llm.recipes import LLMSettings
    from llara.llm.runs import build
    from llara.llm.training import train

    device = resolve_device(args.device)
    bundle = Path(args.bundle)
    configs = read_configs(bundle)
    work = Path(tempfile.mkdtemp(prefix="llara-gpu-profile-"))
    settings = LLMSettings(str(base_llm(args, work)), configs["dtype"], str(device))
    batch = configs["recipes"][args.recipe]["train"]["batch_size"]
    train_cfg, model_cfg = recipe_configs(configs, args.recipe, steps=args.warmup + args.steps, micro_batch=batch,
                                          compile=args.compile, warmup_steps=1)
    torch.manual_seed(train_cfg.seed)
    model, enc = build(settings, read_recommender(bundle), read_titles(bundle), configs["prompts"], model_cfg)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    tracer, python = torch_profile(activities=activities), cProfile.Profile()
    marks: list[float] = []

    def on_step(row: dict) -> bool:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        marks.append(time.perf_counter())
        if row["step"] == args.warmup:  # profile the steps after the warm-up
            tracer.start()
            python.enable()
        return False

    train(model, enc, read_rows(bundle, "train"), train_cfg, work / "run", {}, log=lambda m: None, on_step=on_step)
    python.disable()
    tracer.stop()
    shutil.rmtree(work, ignore_errors=True)  # the random weights base_llm wrote, and the run's final save
    wall = (marks[-1] - marks[args.warmup - 1]) / args.steps
    events = tracer.key_averages()
    kernel_us = sum(e.self_device_time_total for e in events if getattr(e, "device_type", None) is not None
                    and str(e.device_type).endswith("CUDA"))
    busy = kernel_us / 1e6 / args.steps / wall
    compiled = ", decoder layers compiled" if args.compile else ""
    lines = [f"{args.recipe}, batch {train_cfg.batch_size} on {device}{compiled}: {wall:.3f} s/step (wall, "
             f"{args.steps} steps after {args.warmup}), GPU kernels {kernel_us / 1e6 / args.steps:.3f} s/step: "
             f"busy {busy:.1%}", "",
             events.table(sort_by="self_cpu_time_total", row_limit=args.rows)]
    text = io.StringIO()
    pstats.Stats(python, stream=text).sort_stats("cumulative").print_stats(args.rows)
    lines.append(text.getvalue())
    lines.append(f"{args.recipe}_step_s={wall:.4f}")  # read by gpu_session.sh (does compiling pay?)
    lines.append(f"{args.recipe}_gpu_busy_share={busy:.3f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", default=str(ROOT / ".gpu" / "bundle"))
    parser.add_argument("--llm", default=None, help="an HF folder with weights (default: random, the bundle's shapes)")
    parser.add_argument("--recipe", default="ours", help="a recipe of the bundle's configs.json (default ours)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--warmup", type=int, default=3, help="steps before profiling (default 3)")
    parser.add_argument("--steps", type=int, default=5, help="steps profiled (default 5)")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the decoder layers (the pipeline's `compile`; off on GPU by default)")
    parser.add_argument("--rows", type=int, default=25, help="rows of each table (default 25)")
    parser.add_argument("--out", default=os.environ.get("OUT", "."), help="where the report goes (default $OUT)")
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("EAGER", "COMPILED"),
                        help=f"profile nothing: exit 0 when the COMPILED report's step took at most {COMPILE_PAYS * 100:.0f}%% "
                             "of the EAGER one's, else 1 (2: a report missing or without its step_s line)")
    args = parser.parse_args()
    if args.compare:
        try:
            sys.exit(0 if compile_pays(*args.compare) else 1)
        except (OSError, ValueError) as exc:
            print(f"cannot compare: {exc}")
            sys.exit(2)
    args.gguf_parts = None  # base_llm's arguments: given weights or random ones
    report = profile(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"profile-{args.recipe}{'-compiled' if args.compile else ''}.txt").write_text(report + "\n")
    print(report)


if __name__ == "__main__":
    main()
