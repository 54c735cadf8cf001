"""Which dtype this machine should compute the LLM in: matmul FLOP/s of float32 and bfloat16 at the model's GEMM
shapes (benchlib.GEMM_SHAPES), and what ``llm.dtype: auto`` picks here (llara.llm.loading.resolve_dtype).

On CPUs without oneDNN's bf16 kernels (AVX2-only) torch multiplies bf16 in a reference loop: there ``auto`` must pick
float32. Last line: ``auto_dtype=<float32|bfloat16>``.
"""

from __future__ import annotations

import argparse

import torch

from benchlib import make_clock, matmul_rate, record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: per-core rates)")
    parser.add_argument("--seconds", type=float, default=2.0, help="timing per dtype (default 2)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    from llara.llm.loading import fast_bf16, resolve_dtype

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    clock = make_clock("cpu", args.threads, device)
    rates = {name: matmul_rate(dtype, device, clock, args.seconds)
             for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16))}
    auto = str(resolve_dtype("auto", device)).removeprefix("torch.")
    print(f"{'dtype':10s} {'GFLOP/s':>9s}")
    for name, rate in rates.items():
        print(f"{name:10s} {rate / 1e9:9.1f}")
    print(f"native bf16 (oneDNN / CUDA): {fast_bf16(device)}; llm.dtype auto -> {auto}")
    record(f"bench_dtype ({args.threads} thread(s), {device}): float32 {rates['float32'] / 1e9:.1f} GFLOP/s, bfloat16 "
           f"{rates['bfloat16'] / 1e9:.1f} GFLOP/s, native bf16 {fast_bf16(device)}, auto -> {auto}", args.threads)
    print(f"auto_dtype={auto}")


if __name__ == "__main__":
    main()
