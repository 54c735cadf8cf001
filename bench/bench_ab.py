"""A/B of fine-tuning settings on one protocol's test users, paired: does a setting help the LLM choose?

Each ``--arm`` is ``NAME`` or ``NAME:KEY=VALUE[,KEY=VALUE...]``: params.yaml's fine-tuning (``finetune.recipe``,
``profile``, ``seed`` and the first of ``finetune.variants``) with those settings changed (a recipe or profile setting,
as ``llara finetune --set`` takes them, or ``variant`` / ``seed``). The first arm is the baseline. Every arm trains on
the protocol's train rows into ``data/bench/ab/<protocol>/<arm>/run`` (resumable: a rerun with the same inputs trains
nothing) and is evaluated on all the protocol's test rows in ``--modes``; its predictions lie beside the run, reused
while the run's weights, the rows, the modes and the evaluation code are the same. One arm trains at a time, in the
pipeline's CPU slot (it waits while a ``finetune@`` stage trains).

The table, per arm and mode: HR@1 with its 95% bootstrap CI (generate: and ValidRatio), the paired difference from
the baseline arm and from the recommender alone on the same users (paired bootstrap CIs over users). Also written to
``--csv`` (default ``bench/results/ab_<protocol>.csv``, replaced; outside ``metrics/``, which the ``report`` stage reads,
so an experiment the report does not show leaves ``dvc.lock`` current). Last line: the first mode's best arm minus
the baseline, ``<mode>_best_minus_base=<value>``.

The paired CIs hold the users' sampling, not the training run's: two runs differing in their seed alone differ by a few
hundredths on 943 users (docs/llara.md, *Loss weights, and how much one training run varies*). Add a seed-only arm
(``--arm seed1:seed=1``) as the yardstick, and compare settings over several seeds.

``--group NAME=ARM,ARM,...`` (repeat; the first group is the baseline group) compares settings over several seeds: a
group's row reads each user's hit as the mean over its arms (the arms' HR@1 averaged), paired with the first group on
the same users, and its ``seed_spread`` is the largest HR@1 difference between two of its own arms. A group difference
no larger than the groups' seed spreads is not shown to come from the setting.

``--compare NAME=FILE ...`` (instead of ``--arm``) makes the same table from evaluations already made on the same rows
(``llara evaluate --predictions FILE``, the ``evaluate`` stage's ``data/eval/...``), the first one the baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from dataclasses import replace
from pathlib import Path

from benchlib import ROOT, record

from llara.entrypoint import exit_with
from llara.errors import InputError, require

ARM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
JOB_KEYS = ("variant", "seed")  # settings of the job itself; every other key is a recipe or profile setting
DEFAULT_MODES = ("generate", "rank_llm", "rank")
COLUMNS = ["protocol", "arm", "settings", "mode", "n", "hr1", "ci_low", "ci_high", "valid_ratio", "minus_base",
           "minus_base_low", "minus_base_high", "minus_recommender", "minus_recommender_low", "minus_recommender_high",
           "seed_spread"]


def parse_arm(text: str) -> tuple[str, dict]:
    """``NAME[:KEY=VALUE,...]`` -> (name, settings); values are YAML (numbers, true/false)."""
    from llara.cli.llm import parse_setting

    name, _, rest = text.partition(":")
    if not ARM_NAME.match(name):
        raise InputError("--arm", f"{text!r}: a name of letters, digits, '_', '.', '-' first, then ':KEY=VALUE,...'")
    settings = dict(parse_setting(part) for part in rest.split(",") if part.strip())
    return name, settings


def arm_job(base_job, name: str, settings: dict, root: Path):
    """The fine-tuning job of one arm: the pipeline's job with its settings changed, into its own directory."""
    from llara.llm.recipes import with_settings

    job_changes = {k: settings[k] for k in JOB_KEYS if k in settings}
    recipe, profile = with_settings(base_job.recipe, base_job.profile,
                                    {k: v for k, v in settings.items() if k not in JOB_KEYS})
    return replace(base_job, recipe=recipe, profile=profile, out=root / name / "run", **job_changes)


def predictions_key(run: Path, split: Path, modes: list[str], seed: int, batch_size: int) -> str:
    """What an arm's predictions depend on: the trained weights, the rows, the modes, the evaluation seed (each row's
    prompt template), the batch and the code."""
    from llara.champion import run_digest
    from llara.code_key import code_digest
    from llara.fingerprint import json_digest, tree_digest

    return json_digest([run_digest(run / "final"), tree_digest(split), modes, seed, batch_size,
                        code_digest("llara.llm.evaluation")])


def arm_predictions(job, split: Path, modes: list[str], seed: int, batch_size: int, device: str, log):
    """The arm's predictions on ``split``: read back when their key matches, else evaluated and stored. ``seed`` draws
    each row's template: the baseline's for every arm, so that all arms read the same prompts."""
    import polars as pl

    from llara.atomic import write_json, write_parquet
    from llara.llm.data import read_examples
    from llara.llm.evaluation import evaluate
    from llara.llm.runs import eval_item_mode, load_run

    directory = job.out.parent
    key = predictions_key(job.out, split, modes, seed, batch_size)
    stored = directory / "predictions.json"
    if stored.is_file() and json.loads(stored.read_text()).get("key") == key:
        log(f"{directory.name}: predictions unchanged, read back")
        return pl.read_parquet(directory / "predictions.parquet")
    model, encoder, info = load_run(job.out, device=device)
    _, predictions = evaluate(model, encoder, read_examples(split), item_mode=eval_item_mode(job.variant), modes=modes,
                              seed=seed, batch_size=batch_size, length_norm=info["train"]["length_norm"])
    write_parquet(predictions, directory / "predictions.parquet")
    write_json({"key": key}, stored)
    return predictions


def ab_rows(protocol: str, arms: list[tuple[str, dict]], predictions: dict, modes: list[str],
            groups: list[tuple[str, list[str]]] = ()) -> list[dict]:
    """One row per arm and mode, then one per group and mode (see the module doc); the first of each is the baseline."""
    from llara.champion import per_user_hits, valid_column

    ordered = {name: frame.sort("row") for name, frame in predictions.items()}
    base_name = arms[0][0]
    rows_of = {name: frame["row"].to_list() for name, frame in ordered.items()}
    for name, rows in rows_of.items():
        require(rows == rows_of[base_name], "predictions", f"{name}: other rows than {base_name}'s")
    hits = {(name, mode): per_user_hits(ordered[name], mode) for name, _ in arms for mode in modes}
    valid = {(name, mode): float(ordered[name][valid_column(mode)].cast(float).mean())
             for name, _ in arms for mode in modes if valid_column(mode)}
    recommender = per_user_hits(ordered[base_name], "recommender_rank")  # the same candidates and recommender in all
    out = [table_row(protocol, name, json.dumps(settings, sort_keys=True), mode, hits[name, mode],
                     hits[base_name, mode], recommender, valid.get((name, mode)))
           for name, settings in arms for mode in modes]
    group_hits = {(name, mode): sum(hits[m, mode] for m in members) / len(members)
                  for name, members in groups for mode in modes}
    for name, members in groups:
        for mode in modes:
            arm_hr1 = [float(hits[m, mode].mean()) for m in members]
            group_valid = sum(valid[m, mode] for m in members) / len(members) if valid_column(mode) else None
            out.append(table_row(protocol, f"group:{name}", json.dumps(members), mode, group_hits[name, mode],
                                 group_hits[groups[0][0], mode], recommender, group_valid,
                                 seed_spread=max(arm_hr1) - min(arm_hr1)))
    return out


def table_row(protocol: str, arm: str, settings: str, mode: str, hits, base_hits, recommender, valid,
              seed_spread: float | None = None) -> dict:
    """HR@1 of per-user hits with its CI, paired with the baseline's and the recommender's hits on the same users."""
    from llara.metrics import paired_difference, summarize

    hr1 = summarize(hits)
    vs_base, vs_rec = paired_difference(hits, base_hits), paired_difference(hits, recommender)
    return {"protocol": protocol, "arm": arm, "settings": settings, "mode": mode, "n": hr1["n"], "hr1": hr1["value"],
            "ci_low": hr1["ci95"][0], "ci_high": hr1["ci95"][1], "valid_ratio": valid, "minus_base": vs_base["value"],
            "minus_base_low": vs_base["ci95"][0], "minus_base_high": vs_base["ci95"][1],
            "minus_recommender": vs_rec["value"], "minus_recommender_low": vs_rec["ci95"][0],
            "minus_recommender_high": vs_rec["ci95"][1], "seed_spread": seed_spread}


def write_table(rows: list[dict], path: Path) -> None:
    from tasks.finetune import write_csv

    write_csv([{k: (round(v, 6) if isinstance(v, float) else v) for k, v in row.items()} for row in rows], COLUMNS, path)


def print_table(rows: list[dict]) -> None:
    cell = lambda r, k: f"{r[k]:+.3f} [{r[k + '_low']:+.3f}, {r[k + '_high']:+.3f}]"  # noqa: E731
    print("| arm | mode | HR@1 | minus the baseline (paired) | minus the recommender (paired) | ValidRatio "
          "| seed spread |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        valid = "" if r["valid_ratio"] is None else f"{r['valid_ratio']:.3f}"
        spread = "" if r["seed_spread"] is None else f"{r['seed_spread']:.3f}"
        print(f"| {r['arm']} | {r['mode']} | {r['hr1']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}] | "
              f"{cell(r, 'minus_base')} | {cell(r, 'minus_recommender')} | {valid} | {spread} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--protocol", default="leave-one-out",
                        help="the split protocol trained and evaluated (default: %(default)s; with --compare a label)")
    given = parser.add_mutually_exclusive_group(required=True)
    given.add_argument("--arm", dest="arms", action="append", metavar="NAME[:KEY=VALUE,...]",
                       help="an arm to train and evaluate (repeat; the first is the baseline), e.g. --arm base "
                            "--arm hw4:head_weight=4")
    given.add_argument("--compare", nargs="+", metavar="NAME=FILE",
                       help="compare evaluations already made (prediction parquet files) instead; the first is the "
                            "baseline")
    parser.add_argument("--modes", nargs="+", default=list(DEFAULT_MODES), help="evaluation modes (default: %(default)s)")
    parser.add_argument("--group", dest="groups", action="append", default=[], metavar="NAME=ARM,ARM,...",
                        help="arms read as one setting over several seeds (repeat; the first group is the baseline "
                             "group), e.g. --group curriculum=base,seed1 --group direct=direct0,direct1")
    parser.add_argument("--csv", type=Path, default=None, help="default: bench/results/ab_<protocol>.csv")
    args = parser.parse_args()
    os.chdir(ROOT)  # the stages' paths are relative to the repository root
    from llara.llm.loading import resolve_device
    from llara.llm.recipes import check_modes
    from llara.llm.workflow import finetune
    from tasks.common import cpu_slot, get_logger
    from tasks.finetune import finetune_job
    from tasks.params import load_params
    from tasks.paths import SPLIT_ROOT

    check_modes(args.modes)
    given_names = [p.partition("=")[0] for p in args.compare] if args.compare else [parse_arm(a)[0] for a in args.arms]
    args.groups = parse_groups(args.groups, given_names)  # checked before anything trains
    if args.compare:
        arms, predictions = compared_files(args.compare)
        finish(args, arms, predictions, ", ".join(args.compare))
        return
    arms = [parse_arm(a) for a in args.arms]
    names = [n for n, _ in arms]
    require(len(set(names)) == len(names), "--arm", f"arm names repeat: {names}")
    params = load_params()
    fparams = params.finetune.model_copy(update={"protocol": args.protocol})
    base_job = finetune_job(fparams, params.llm, fparams.variants[0])
    root = ROOT / "data" / "bench" / "ab" / args.protocol
    jobs = {name: arm_job(base_job, name, settings, root) for name, settings in arms}  # every arm checked first
    split = SPLIT_ROOT / args.protocol / "test.parquet"
    log = get_logger("bench_ab").info
    predictions = {}
    with cpu_slot("cpu-finetune", resolve_device(params.llm.device).type, log):
        for name, job in jobs.items():
            finetune(job, log=log)
            predictions[name] = arm_predictions(job, split, list(args.modes), base_job.seed,
                                                params.evaluate.batch_size, params.llm.device, log)
    finish(args, arms, predictions, ", ".join(args.arms))


def parse_groups(texts: list[str], arm_names: list[str]) -> list[tuple[str, list[str]]]:
    """``NAME=ARM,ARM,...`` -> (name, arms), each arm one of ``arm_names``."""
    groups = []
    for text in texts:
        name, sep, rest = text.partition("=")
        members = [m.strip() for m in rest.split(",") if m.strip()]
        require(sep and ARM_NAME.match(name) and members and name not in {g for g, _ in groups}, "--group",
                f"{text!r}: expected NAME=ARM,ARM,... with a new name of letters, digits, '_', '.', '-'")
        unknown = [m for m in members if m not in arm_names]
        require(not unknown and len(set(members)) == len(members), "--group",
                f"{text!r}: {'unknown arm(s) ' + str(unknown) if unknown else 'an arm repeats'} (arms: {arm_names})")
        groups.append((name, members))
    return groups


def compared_files(pairs: list[str]) -> tuple[list[tuple[str, dict]], dict]:
    """``NAME=FILE`` pairs -> (arms, predictions by name), each file read and checked to hold predictions."""
    import polars as pl

    arms, predictions = [], {}
    for pair in pairs:
        name, sep, file = pair.partition("=")
        require(sep and ARM_NAME.match(name) and name not in predictions, "--compare",
                f"{pair!r}: expected NAME=FILE with a new name of letters, digits, '_', '.', '-'")
        require(Path(file).is_file(), "--compare", f"{file}: no such file")
        frame = pl.read_parquet(file)
        require({"row", "recommender_rank"} <= set(frame.columns), "--compare",
                f"{file}: not an evaluation's predictions (no row / recommender_rank column)")
        arms.append((name, {"predictions": file}))
        predictions[name] = frame
    return arms, predictions


def finish(args, arms: list[tuple[str, dict]], predictions: dict, described: str) -> None:
    """The table: printed, written to the CSV, a line in bench/RESULTS.md, the last line ``name=value``."""
    from llara.champion import hit_column

    for name, frame in predictions.items():
        missing = [m for m in args.modes if hit_column(m) not in frame.columns]
        require(not missing, "--modes", f"{name}: its predictions lack mode(s) {missing}")
    rows = ab_rows(args.protocol, arms, predictions, list(args.modes), args.groups)
    write_table(rows, args.csv or ROOT / "bench" / "results" / f"ab_{args.protocol}.csv")
    print_table(rows)
    names = {name for name, _ in arms}  # the arms' rows, not the groups'
    first = [r for r in rows if r["mode"] == args.modes[0] and r["arm"] in names]
    best = max(first[1:], key=lambda r: r["minus_base"], default=first[0])
    record(f"bench_ab {args.protocol} ({described}): {args.modes[0]} best {best['arm']} "
           f"{best['minus_base']:+.3f} [{best['minus_base_low']:+.3f}, {best['minus_base_high']:+.3f}] vs {arms[0][0]}")
    print(f"{args.modes[0]}_best_minus_base={best['minus_base']:.4f}")


if __name__ == "__main__":
    exit_with(main)
