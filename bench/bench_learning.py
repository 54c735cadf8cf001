"""Learning curves: what a night of CPU buys. Validation HR@1 of one recipe every N optimizer steps.

Trains one LLaRA variant (default hybrid-curriculum) with params.yaml's recipe and profile settings (any setting
overridable with ``-S key=value``, e.g. ``-S lr=8e-4``), planned for ``--steps`` optimizer steps, and evaluates it on a
fixed subset of validation users every ``--eval-every`` steps (and before training): ``generate`` HR@1 and ValidRatio,
``rank_llm`` HR@1 (the LLM's own ranking, no recommender score added), each with a 95% bootstrap CI, the
recommender alone on the same users, and each mode minus the recommender per user with its paired-bootstrap 95% CI
(``*_vs_recommender``; empty in rows recorded before 2026-12-04). Each point records examples seen, training
CPU-minutes (the process's CPU time, all threads, evaluation excluded) and wall minutes. Rows go to
``<out>/curve.csv`` as they come.

Resumable: the run directory keeps a checkpoint every ``--checkpoint-every`` steps (with the time totals so far in
``clock.json``); rerunning the same command continues from the last one (the CSV's later rows are dropped and
recomputed), so a long run can be stopped, losing at most that many steps, and continued later. Checkpoints and curve
are keyed on the content of their inputs (settings, train and evaluation rows, recommender export, base LLM, items,
prompts; ``key`` in ``settings.json``): with any of them changed the run starts over, and a curve measured for other
inputs is set aside as ``curve.<its key>.csv``, never mixed with the new points. The
learning-rate schedule and the curriculum are planned for ``--steps``: a point at step s is the model after s steps of
that plan, not a run planned to end at s.

Last line: ``<recipe>_best_generate_hr1=<value>``.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import time
from pathlib import Path

import yaml

from benchlib import ROOT, finetune_setup, record

PAIRED = ("generate", "rank_llm")  # modes with the paired HR@1 difference against the recommender (its CI) in the CSV
COLUMNS = ["step", "examples", "cpu_min", "wall_min", "generate_hr1", "generate_lo", "generate_hi", "valid_ratio",
           "rank_llm_hr1", "rank_llm_lo", "rank_llm_hi", "rank_hr1", "recommender_hr1",
           *(f"{m}_vs_recommender{end}" for m in PAIRED for end in ("", "_lo", "_hi")), "n"]


def parse_overrides(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"error: -S {item!r}: expected key=value")
        parsed = yaml.safe_load(value)
        if isinstance(parsed, str):  # YAML reads 8e-4 (no dot) as text
            try:
                parsed = float(parsed)
            except ValueError:
                pass
        out[key.strip()] = parsed
    return out


def apply_overrides(train_cfg, model_cfg, overrides: dict):
    """Overrides by field name onto the train and model configs (unknown names are an error)."""
    train_fields = {f.name for f in dataclasses.fields(train_cfg)}
    model_fields = {f.name for f in dataclasses.fields(model_cfg)}
    unknown = sorted(set(overrides) - train_fields - model_fields)
    if unknown:
        raise SystemExit(f"error: -S: unknown setting(s) {unknown}")
    train_cfg = dataclasses.replace(train_cfg, **{k: v for k, v in overrides.items() if k in train_fields})
    model_cfg = dataclasses.replace(model_cfg, **{k: v for k, v in overrides.items() if k in model_fields})
    return train_cfg, model_cfg


def point_row(step: int, examples: int, cpu_s: float, wall_s: float, metrics: dict) -> dict:
    """One CSV row; rates and bounds to 6 decimals (a bootstrap percentile can carry float noise in the last digits)."""
    gen, own = metrics["generate"], metrics["rank_llm"]
    rates = {"generate_hr1": gen["hr@1"]["value"], "generate_lo": gen["hr@1"]["ci95"][0],
             "generate_hi": gen["hr@1"]["ci95"][1], "valid_ratio": gen["valid_ratio"]["value"],
             "rank_llm_hr1": own["hr@1"]["value"], "rank_llm_lo": own["hr@1"]["ci95"][0],
             "rank_llm_hi": own["hr@1"]["ci95"][1], "rank_hr1": metrics["rank"]["hr@1"]["value"],
             "recommender_hr1": metrics["recommender"]["hr@1"]["value"]}
    for mode in PAIRED:  # the same users: model minus recommender, paired bootstrap CI
        diff = metrics["paired_vs_recommender"][mode]["hr@1"]
        rates.update({f"{mode}_vs_recommender": diff["value"], f"{mode}_vs_recommender_lo": diff["ci95"][0],
                      f"{mode}_vs_recommender_hi": diff["ci95"][1]})
    return {"step": step, "examples": examples, "cpu_min": round(cpu_s / 60, 3), "wall_min": round(wall_s / 60, 3),
            **{k: round(v, 6) for k, v in rates.items()}, "n": gen["hr@1"]["n"]}


def key_curve(out: Path, settings: dict, key: str, log=print) -> None:
    """Write ``settings.json`` with the run's content key; a curve (and its clock) measured under another key is
    moved aside to ``curve.<old key>.csv`` first (``unkeyed`` for runs recorded before keys)."""
    previous = out / "settings.json"
    old = json.loads(previous.read_text()).get("key") if previous.is_file() else None
    curve = out / "curve.csv"
    if old != key and curve.is_file():
        aside, n = out / f"curve.{(old or 'unkeyed')[:16]}.csv", 1
        while aside.exists():  # the same inputs set aside before: keep both
            aside, n = out / f"curve.{(old or 'unkeyed')[:16]}.{n}.csv", n + 1
        curve.replace(aside)
        (out / "clock.json").unlink(missing_ok=True)
        log(f"{curve} was measured for other inputs (key {old or 'none'}, now {key[:16]}): moved to {aside.name}; "
            "the curve starts over")
    tmp = previous.with_suffix(".tmp")
    tmp.write_text(json.dumps({**settings, "key": key}, indent=2, sort_keys=True) + "\n")
    tmp.replace(previous)


def read_curve(path: Path, upto: int) -> list[dict]:
    """Rows already measured up to step ``upto`` (a resumed run recomputes the later ones)."""
    if not path.is_file():
        return []
    with path.open() as fh:
        return [r for r in csv.DictReader(fh) if int(r["step"]) <= upto]


def write_curve(path: Path, rows: list[dict]) -> None:
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)


def read_clock(path: Path) -> dict[int, list[float]]:
    """``clock.json``: the time totals [CPU-s, wall-s] at each checkpoint's step (empty when there is none)."""
    return {int(k): v for k, v in json.loads(path.read_text()).items()} if path.is_file() else {}


def newest_checkpoint(root: Path) -> tuple[Path | None, dict]:
    """The newest checkpoint training would resume from in ``root`` and its ``state.json`` (None, {} when none)."""
    from llara.llm.checkpoint import list_checkpoints  # torch: imported only when needed

    newest = list_checkpoints(root)[-1:]
    return (newest[0], json.loads((newest[0] / "state.json").read_text())) if newest else (None, {})


def status(out: Path) -> str:
    """Where the run in ``out`` stands, one line: newest checkpoint of its plan, last point, recent seconds per step
    (wall clock, from ``clock.json``) and the training time left at that rate (evaluation points not counted). As the
    last start keyed it: inputs changed since then (code, data, settings) restart the run at its next start."""
    settings = out / "settings.json"
    if not settings.is_file():
        return f"{out}: no run yet"
    recorded = json.loads(settings.read_text())
    planned = recorded["train"]["steps"]
    _, newest = newest_checkpoint(out / "run" / "checkpoints")
    if newest and newest.get("fingerprint") != recorded.get("key"):
        return f"{out}: its checkpoints belong to other inputs than its settings.json (the next start discards them)"
    step = newest.get("step", 0)
    rows = read_curve(out / "curve.csv", planned)
    point = (f"last point step {rows[-1]['step']}: generate {float(rows[-1]['generate_hr1']):.3f}, "
             f"rank_llm {float(rows[-1]['rank_llm_hr1']):.3f}" if rows else "no point yet")
    marks = sorted((step, wall) for step, (_, wall) in read_clock(out / "clock.json").items())
    if len(marks) >= 2:
        rate = (marks[-1][1] - marks[-2][1]) / (marks[-1][0] - marks[-2][0])
        pace = f"{rate:.1f} s/step, ~{(planned - step) * rate / 3600:.1f} h of training left"
    else:
        pace = "pace not measured yet"
    return f"{out}: checkpoint step {step} of {planned} ({step * 100 // planned}%); {point}; {pace}"


class CurveRecorder:
    """One learning curve: training time between points (evaluation excluded) and a CSV row per point, rewritten
    as each comes. ``evaluate_point()`` returns the metrics of the model as it is now. With a ``clock`` file, the
    time totals at each checkpoint are kept there, so a run resumed between two points continues them."""

    def __init__(self, path: Path, evaluate_point, label: str = "", clock: Path | None = None):
        self.path, self.evaluate_point, self.label, self.clock = path, evaluate_point, label, clock
        self.rows: list[dict] = []
        self.cpu = self.wall = 0.0
        self.saved: dict[str, list[float]] = {}
        self.restart_clock()

    def restart_clock(self) -> None:
        self.mark = (time.process_time(), time.time())

    def tick(self) -> None:
        now = (time.process_time(), time.time())
        self.cpu += now[0] - self.mark[0]
        self.wall += now[1] - self.mark[1]
        self.mark = now

    def resume(self, upto: int) -> None:
        """Keep the CSV's rows up to step ``upto`` and continue the time totals of that step's checkpoint (of the
        last row when the clock file lacks it)."""
        self.rows = read_curve(self.path, upto)
        if self.rows:
            self.cpu, self.wall = (float(self.rows[-1][k]) * 60 for k in ("cpu_min", "wall_min"))
        if self.clock is not None and self.clock.is_file():
            self.saved = {str(k): v for k, v in read_clock(self.clock).items() if k <= upto}
            last = max(map(int, self.saved), default=-1)
            if last >= (int(self.rows[-1]["step"]) if self.rows else 0):
                self.cpu, self.wall = self.saved[str(last)]

    def checkpoint(self, step: int) -> None:
        """Record the time totals at a checkpoint's step."""
        self.tick()
        self.saved[str(step)] = [self.cpu, self.wall]
        tmp = self.clock.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.saved, sort_keys=True) + "\n")
        tmp.replace(self.clock)

    def point(self, step: int, examples: int) -> dict:
        self.tick()
        self.rows.append(point_row(step, examples, self.cpu, self.wall, self.evaluate_point()))
        write_curve(self.path, self.rows)
        r = self.rows[-1]
        print(f"{self.label}step {step}: generate {r['generate_hr1']:.3f} valid {r['valid_ratio']:.3f} rank_llm "
              f"{r['rank_llm_hr1']:.3f} (recommender {r['recommender_hr1']:.3f}) cpu {r['cpu_min']:.1f} min, wall "
              f"{r['wall_min']:.1f} min", flush=True)
        self.restart_clock()
        return r


def catch_up(recorder: CurveRecorder, model, checkpoints: Path, key: str, is_point, train_cfg) -> None:
    """Measure the point of the step training resumes from when the curve lacks it. A checkpoint is saved before its
    step's point is measured, so a run stopped during that evaluation (minutes) resumes past the point, and the
    last step's point would never come: evaluate the checkpoint's weights, as the point would have (with training's
    attention kernel, as points during training are)."""
    from llara.llm.checkpoint import load_weights
    from llara.llm.training import training_attention

    newest, state = newest_checkpoint(checkpoints)
    step = int(state.get("step", 0))
    if state.get("fingerprint") != key or step == 0 or not is_point(step):
        return  # no checkpoint of these inputs (training starts over), or its step has no point
    if any(int(r["step"]) == step for r in read_curve(recorder.path, step)):
        return
    load_weights(model, newest)  # train() restores the same checkpoint (with optimizer and RNG) next
    recorder.resume(step)
    recorder.restart_clock()
    print(f"step {step}: its point was not measured before the run stopped; measuring it now", flush=True)
    attention, before = training_attention(train_cfg, model), model.attention
    if attention:
        model.set_attention(attention)
    recorder.point(step, step * train_cfg.batch_size)
    if attention:
        model.set_attention(before)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default=None, help="params.yaml recipe (default: finetune.recipe)")
    parser.add_argument("--variant", default="hybrid-curriculum")
    parser.add_argument("--protocol", default=None, help="split protocol (default: finetune.protocol)")
    parser.add_argument("--steps", type=int, default=2500, help="optimizer steps planned (default 2500 = 20k examples)")
    parser.add_argument("--eval-every", type=int, default=125, help="steps between evaluations")
    parser.add_argument("--checkpoint-every", type=int, default=25,
                        help="steps between resumable checkpoints (default 25: a stopped run loses at most 25 steps)")
    parser.add_argument("--split", default="val", help="split part evaluated (default: val)")
    parser.add_argument("--users", type=int, default=200, help="first N rows of that part (default 200)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("-S", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe/profile setting (TrainConfig or ModelConfig field), repeatable")
    parser.add_argument("--out", type=Path, required=True, help="run directory (resumed when it exists)")
    parser.add_argument("--quick", action="store_true", help="4 steps, evaluated every 2, 8 users (a smoke run)")
    parser.add_argument("--status", action="store_true", help="print where the run in --out stands, then exit")
    args = parser.parse_args()
    if args.status:
        print(status(args.out))
        return
    if args.quick:
        args.steps, args.eval_every, args.users = 4, 2, 8
    import torch

    from llara.fingerprint import array_digest
    from llara.llm.evaluation import evaluate
    from llara.llm.runs import eval_item_mode
    from llara.llm.training import NEUTRAL_SETTINGS, examples_arrays, run_fingerprint, train

    if args.threads:
        torch.set_num_threads(args.threads)
    setup = finetune_setup(args.variant, args.recipe, protocol=args.protocol)
    overrides = parse_overrides(args.overrides)
    train_cfg, model_cfg = apply_overrides(setup.train_cfg, setup.model_cfg, overrides)
    train_cfg = dataclasses.replace(train_cfg, steps=args.steps, checkpoint_every=args.checkpoint_every,
                                    warmup_steps=min(train_cfg.warmup_steps, max(0, args.steps - 1)))
    setup.model_cfg = model_cfg
    model, encoder = setup.build()
    examples, held = setup.examples("train"), setup.examples(args.split)[: args.users]
    args.out.mkdir(parents=True, exist_ok=True)
    settings = {"recipe": setup.fparams.recipe, "variant": args.variant, "protocol": setup.fparams.protocol,
                "split": args.split, "users": len(held), "overrides": overrides,
                "train": {k: v for k, v in train_cfg.to_dict().items() if k not in NEUTRAL_SETTINGS},
                "model": model_cfg.to_dict()}
    settings["inputs"] = {**setup.input_digests(encoder), "evaluation rows": array_digest(*examples_arrays(held))}
    key = run_fingerprint(train_cfg, model, settings["inputs"], examples).digest
    key_curve(args.out, settings, key)
    curve = args.out / "curve.csv"
    mode = eval_item_mode(args.variant)
    recorder = CurveRecorder(curve, lambda: evaluate(model, encoder, held, item_mode=mode, seed=train_cfg.seed,
                                                     batch_size=16, length_norm=train_cfg.length_norm)[0],
                             clock=args.out / "clock.json")
    resumed = {"done": False}

    def is_point(step: int) -> bool:
        return step % args.eval_every == 0 or step == args.steps

    def on_step(row: dict) -> bool:
        if not resumed["done"]:  # first step of this session: the resumed step is row["step"] - 1
            recorder.resume(row["step"] - 1)
            resumed["done"] = True
        if row["step"] % args.checkpoint_every == 0 or row["step"] == args.steps:  # train() saved one at this step
            recorder.checkpoint(row["step"])
        if is_point(row["step"]):
            recorder.point(row["step"], row["step"] * train_cfg.batch_size)
        return False

    if not read_curve(curve, 0):
        recorder.point(0, 0)
    catch_up(recorder, model, args.out / "run" / "checkpoints", key, is_point, train_cfg)
    recorder.restart_clock()
    train(model, encoder, examples, train_cfg, args.out / "run", settings, log=print, on_step=on_step)
    rows = read_curve(curve, args.steps)
    best = max(rows, key=lambda r: float(r["generate_hr1"]))
    print(f"\n{'step':>6s} {'examples':>8s} {'cpu-min':>8s}  generate HR@1 [95% CI]   valid  rank_llm HR@1 [95% CI]")
    for r in rows:
        print(f"{int(r['step']):6d} {int(r['examples']):8d} {float(r['cpu_min']):8.1f}  {float(r['generate_hr1']):.3f} "
              f"[{float(r['generate_lo']):.3f}, {float(r['generate_hi']):.3f}]  {float(r['valid_ratio']):.3f}  "
              f"{float(r['rank_llm_hr1']):.3f} [{float(r['rank_llm_lo']):.3f}, {float(r['rank_llm_hi']):.3f}]")
    if not args.quick:
        record(f"bench_learning {settings['recipe']} {args.variant} on {settings['protocol']} {args.split} "
               f"(n={len(held)}, {args.steps} steps planned, overrides {overrides}): best generate HR@1 "
               f"{float(best['generate_hr1']):.3f} at step {best['step']}; curve {curve.relative_to(ROOT) if curve.is_relative_to(ROOT) else curve}")
    print(f"{settings['recipe']}_best_generate_hr1={float(best['generate_hr1']):.3f}")


if __name__ == "__main__":
    main()
