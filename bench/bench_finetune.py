"""Fine-tuning throughput (benchmark 2): examples/s, real tokens/s and achieved FLOP/s against this machine's matmul
rates measured in the same run, for our training path and a paper-style configuration.

- our path: `llara.llm.training.train` as the pipeline runs it (params.yaml's default profile, every example hybrid):
  weights in `llm.dtype` (`auto`: bf16 + autocast where the CPU multiplies bf16 natively, else float32),
  left-padded micro-batches, the LM head applied only at answer positions, decoder layers
  compiled when the profile's `compile` resolves to on (the first step, which compiles, is timed apart); measured with
  the default recipe (`ours`: no LoRA dropout, score head + generative loss) and with the paper recipe;
- paper-style path: the paper recipe with fp32 weights, right-padded micro-batches and logits at every position (the
  HF `labels=` loss); same examples, LoRA and projector.

FLOPs are counted from the real (unpadded) shapes: per token 2 x the frozen linear weights forward and once more for
the activation gradients (no weight gradients); LoRA 3x (forward, input and weight gradients); causal attention
2 * L^2 * d per layer forward, 3x in all; the LM head 2 * V * d per answer token, 2x in all; padding and logits nobody
uses are not counted. MFU = counted FLOP/s / the best matmul rate measured here (several GEMM shapes) in the dtype
our path computes in (also shown against float32's rate when that differs).
Floors: the default recipe on our path >= 50% MFU and >= 2x the examples/s of the paper-style path.
Last line: mfu=<default recipe, our path, against its compute dtype's matmul rate>.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

import benchlib
from benchlib import (ROOT, add_clock_argument, finetune_setup, flop_counter, machine, make_clock, record,
                      right_padded, step_work)
from llara.llm.data import collate
from llara.llm.loading import resolve_device, resolve_dtype
from llara.llm.training import make_optimizer, train, training_compile
from tasks.params import load_params

CLOCK = {"fn": time.perf_counter}
DEVICE = {"name": "cpu"}


def clock() -> float:
    """Seconds on the clock chosen by `--clock` (benchlib.make_clock)."""
    return CLOCK["fn"]()


def matmul_rate(dtype: torch.dtype, seconds: float = 1.0) -> float:
    return benchlib.matmul_rate(dtype, torch.device(DEVICE["name"]), clock, seconds)


def setup(dtype: str | None, recipe: str | None = None):
    """Model, encoder, train rows and train config of a recipe (default: params.yaml's), every example hybrid; weights
    in ``dtype`` (default: params.yaml's llm.dtype)."""
    inputs = finetune_setup("hybrid-direct", recipe, dtype, DEVICE["name"])
    model, enc = inputs.build()
    return model, enc, inputs.examples(), inputs.train_cfg


def run_ours(steps: int, micro: int, recipe: str | None, compile_layers: bool | None = None) -> dict:
    model, enc, examples, cfg = setup(None, recipe)  # llm.dtype, as the pipeline trains
    cfg = replace(cfg, steps=steps + 1, micro_batch=micro, checkpoint_every=10 ** 6)
    if compile_layers is not None:
        cfg = replace(cfg, compile=compile_layers)
    count = flop_counter(model)
    marks: list[float] = [clock()]
    with tempfile.TemporaryDirectory() as tmp:
        train(model, enc, examples, cfg, Path(tmp), {}, lambda m: None,
              on_step=lambda row: marks.append(clock()) and False)
    work = [step_work(enc, examples, cfg, s, count) for s in range(2, steps + 2)]  # step 1 is the warm-up
    name = f"{recipe or 'default'} recipe, our path"
    return {**summarize(name, marks[-1] - marks[1], work, cfg.batch_size), "first_step_s": marks[1] - marks[0],
            "compiled": training_compile(cfg, model)}


def run_paper_style(steps: int, micro: int) -> dict:
    model, enc, examples, cfg = setup("float32", "paper")
    count = flop_counter(model)
    optimizer = make_optimizer(model, cfg)
    pad = model.loaded.pad_token_id
    model.train()
    elapsed, work = 0.0, []
    for step in range(1, steps + 2):
        chosen, templates, tokens, flops = step_work(enc, examples, cfg, step, count)
        t = clock()
        optimizer.zero_grad(set_to_none=True)
        for a in range(0, len(chosen), micro):
            batch = right_padded(collate(enc, chosen[a:a + micro], ["hybrid"] * len(chosen[a:a + micro]),
                                         templates[a:a + micro], True, pad), pad)
            embeds, _, _ = model.input_embeds(batch)
            hidden = model.hidden_states(batch, embeds).last_hidden_state
            logits = model.lm_head(hidden).float()  # every position, as LlamaForCausalLM(labels=...) does
            loss = nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1),
                                               batch.labels[:, 1:].flatten().to(logits.device), ignore_index=-100)
            (loss * len(batch.examples) / len(chosen)).backward()
        torch.nn.utils.clip_grad_norm_(model.trainable_parameters(), cfg.grad_clip)
        optimizer.step()
        if step > 1:
            elapsed += clock() - t
            work.append((chosen, templates, tokens, flops))
    return {**summarize("paper recipe, paper-style path", elapsed, work, cfg.batch_size), "compiled": False}


def summarize(name: str, seconds: float, work: list, batch_size: int) -> dict:
    tokens = sum(w[2] for w in work)
    flops = sum(w[3] for w in work)
    n = len(work) * batch_size
    return {"name": name, "s_per_step": seconds / len(work), "examples_s": n / seconds, "tokens_s": tokens / seconds,
            "flop_s": flops / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 measured steps per configuration (default 6)")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--micro-batch", type=int, default=None, help="default: the profile's micro_batch")
    parser.add_argument("--compile", choices=["profile", "true", "false"], default="profile",
                        help="compile the decoder layers on our path (default: as the profile's `compile` says)")
    add_clock_argument(parser)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    DEVICE["name"] = device.type
    CLOCK["fn"] = make_clock(args.clock, args.threads, device)
    steps = 2 if args.quick else args.steps
    params = load_params(ROOT / "params.yaml")
    micro = args.micro_batch or params.finetune.profiles["default"].micro_batch
    compute = resolve_dtype(params.llm.dtype, device)  # what our path multiplies in (MFU's reference)
    dtypes = list(dict.fromkeys([compute, torch.float32]))  # no bf16 rate on a CPU that only emulates it (minutes)
    names = {d: str(d).removeprefix("torch.") for d in dtypes}
    rates = {d: matmul_rate(d) for d in dtypes}
    compile_layers = {"true": True, "false": False}.get(args.compile)
    results = [run_ours(steps, micro, None, compile_layers), run_ours(steps, micro, "paper", compile_layers),
               run_paper_style(steps, micro)]
    rates = {d: max(r, matmul_rate(d)) for d, r in rates.items()}  # best of before/after: conservative MFU
    rate_text = ", ".join(f"{names[d]} {r / 1e9:.0f} GFLOP/s" for d, r in rates.items())
    print(f"matmul rates: {rate_text} ({machine()}, {steps} measured steps of 8 examples, "
          f"micro-batch {micro}, {args.clock} clock); our path computes in {names[compute]}")
    print(f"{'configuration':32s} {'s/step':>7s} {'ex/s':>6s} {'tok/s':>7s} {'GFLOP/s':>8s}"
          + "".join(f" {'MFU ' + names[d]:>13s}" for d in dtypes))
    for r in results:
        print(f"{r['name']:32s} {r['s_per_step']:7.2f} {r['examples_s']:6.2f} {r['tokens_s']:7.0f} "
              f"{r['flop_s'] / 1e9:8.1f}" + "".join(f" {r['flop_s'] / rates[d]:13.1%}" for d in dtypes))
    for r in results:
        if "first_step_s" in r:
            print(f"{r['name']}: layers {'compiled' if r['compiled'] else 'eager'}, first step (not measured above, "
                  f"includes any compilation) {r['first_step_s']:.1f} s")
    ours, paper = results[0], results[-1]
    speedup = ours["examples_s"] / paper["examples_s"]
    mfu = ours["flop_s"] / rates[compute]
    print(f"default recipe (our path) vs paper-style: {speedup:.2f}x examples/s (floor 2x); MFU {mfu:.1%} of the "
          f"{names[compute]} matmul rate (floor 50%)")
    record(f"bench_finetune ({steps} steps, micro-batch {micro}, {args.clock} clock, load "
           f"{os.getloadavg()[0]:.1f}, our path in {names[compute]}): matmul {rate_text}; " + "; ".join(
               f"{r['name']}{' (compiled)' if r['compiled'] else ''}: {r['s_per_step']:.2f} s/step, "
               f"{r['examples_s']:.2f} ex/s, {r['tokens_s']:.0f} tok/s, {r['flop_s'] / 1e9:.1f} GFLOP/s"
               + (f", first step {r['first_step_s']:.0f} s" if "first_step_s" in r else "") for r in results)
           + f"; speedup_vs_paper_style={speedup:.2f}, mfu={mfu:.3f}")
    print(f"mfu={mfu:.3f}")


if __name__ == "__main__":
    main()
