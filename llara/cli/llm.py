"""``llara finetune``, ``llara evaluate``, ``llara recommend``: the LLaRA model from the command line."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    from llara.llm.recipes import (DEFAULT_PROFILE, DEFAULT_PROMPTS, DEFAULT_RECIPE, DEFAULT_SEED, DTYPE_NAMES,
                                   EVAL_BATCH_SIZE, EVAL_MODES, PROFILES, RECIPES, VARIANTS, LLMSettings)

    f = sub.add_parser("finetune", help="fine-tune a LLaRA variant",
                       description="Fine-tune one LLaRA variant under a recipe and a profile (the library's, as in "
                                   "params.yaml; the pipeline's stage finetune@VARIANT reads params.yaml instead). "
                                   "Resumes from checkpoints in --out made from the same inputs and settings.")
    f.add_argument("variant", choices=VARIANTS, metavar="VARIANT", help=" | ".join(VARIANTS))
    f.add_argument("--llm", default=LLMSettings.model, help=f"HF folder or id of the base LLM (default: {LLMSettings.model})")
    f.add_argument("--recommender", required=True, help="recommender export directory")
    f.add_argument("--items", default="data/ingested/items.parquet", help="item table with titles")
    f.add_argument("--train", required=True, help="train split parquet")
    f.add_argument("--val", default=None, help="validation split parquet for the checkpoint choice (with the profile's "
                                                "select_every > 0, or --set select_every=N)")
    f.add_argument("--out", required=True, help="run directory")
    f.add_argument("--recipe", default=DEFAULT_RECIPE, choices=sorted(RECIPES), help=f"training recipe (default: {DEFAULT_RECIPE})")
    f.add_argument("--profile", default=DEFAULT_PROFILE, choices=sorted(PROFILES),
                   help=f"steps, batch and speed settings (default: {DEFAULT_PROFILE}: "
                        f"{PROFILES[DEFAULT_PROFILE].steps} steps x {PROFILES[DEFAULT_PROFILE].batch_size} examples)")
    f.add_argument("--steps", type=int, default=None, help="optimizer steps (default: the profile's)")
    f.add_argument("--batch-size", type=int, default=None, help="examples per optimizer step (default: the profile's)")
    f.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                   help="override one recipe or profile setting (docs/params.md, finetune.recipes / profiles), "
                        "e.g. --set lr=8e-4; repeatable")
    f.add_argument("--prompts", default=DEFAULT_PROMPTS, help=f"movie | game | artist | item | template file (default: {DEFAULT_PROMPTS})")
    f.add_argument("--dtype", default=LLMSettings.dtype, help=f"{' | '.join(DTYPE_NAMES)} (default: {LLMSettings.dtype}: "
                   "bfloat16 where the device multiplies it natively, else float32)")
    f.add_argument("--device", default=LLMSettings.device, help="auto | cpu | cuda")
    f.add_argument("--seed", type=int, default=DEFAULT_SEED)
    f.set_defaults(func=_finetune)

    e = sub.add_parser("evaluate", help="evaluate trained LLaRA runs (generate, rank, rank_llm)",
                       description="Evaluate a trained run directory on a split file; prints the metrics as JSON.")
    e.add_argument("run", help="run directory (data/runs/<protocol>/<variant>)")
    e.add_argument("--split", required=True, help="split parquet (user, history, target, candidates)")
    e.add_argument("--modes", default=None, help=f"comma-separated, of {','.join(EVAL_MODES)} (default: every mode "
                   "read in one candidate order; two orders: docs/llara.md#position-bias-and-two-orders)")
    e.add_argument("--batch-size", type=int, default=EVAL_BATCH_SIZE, help="users per batch (default: %(default)s)")
    e.add_argument("--max-rows", type=int, default=None, help="only the first N rows")
    e.add_argument("--predictions", default=None, help="write per-example predictions to this parquet (internal ids "
                   "and original_user, original_target, original_top_item, original_generated_item[_two_orders]: your ids)")
    e.add_argument("--device", default="auto", help="auto | cpu | cuda")
    e.set_defaults(func=_evaluate)

    r = sub.add_parser("recommend", help="rank items for a history with a trained run",
                       description="Rank candidate items (default: all unseen items) for a history of ids or titles. "
                                   "Ids are the dataset's own (original) ids, as in its raw files; the output lists "
                                   "original item id, score and title.")
    r.add_argument("run", help="run directory (data/runs/<protocol>/<variant>) or the champion (data/champion)")
    r.add_argument("--history", required=True, nargs="+",
                   help="history items, oldest first (original item ids or exact titles)")
    r.add_argument("--candidates", nargs="+", default=None,
                   help="candidate items (original item ids or titles); default: all unseen items")
    r.add_argument("-k", type=int, default=10, help="how many to return (default: 10)")
    r.add_argument("--device", default="auto", help="auto | cpu | cuda")
    r.set_defaults(func=_recommend)


def _finetune(args: argparse.Namespace) -> int:
    from pathlib import Path

    from llara.llm.distributed import is_main_process
    from llara.llm.recipes import PROFILES, RECIPES, LLMSettings, with_settings
    from llara.llm.workflow import FinetuneJob, finetune

    settings = dict(parse_setting(s) for s in args.settings)
    settings.update({k: v for k, v in (("steps", args.steps), ("batch_size", args.batch_size)) if v is not None})
    recipe, profile = with_settings(RECIPES[args.recipe], PROFILES[args.profile], settings)
    job = FinetuneJob(variant=args.variant, train=Path(args.train), recommender=Path(args.recommender),
                      val=Path(args.val) if args.val else None,
                      items=Path(args.items), out=Path(args.out), recipe=recipe, profile=profile,
                      llm=LLMSettings(args.llm, args.dtype, args.device), prompts=args.prompts, seed=args.seed,
                      labels={"recipe": args.recipe, "profile": args.profile})
    finetune(job)
    if is_main_process():
        print(f"trained {args.variant} -> {args.out}")
    return 0


def parse_setting(text: str) -> tuple[str, object]:
    """``key=value`` with a YAML value (numbers, true/false, lists)."""
    import yaml

    from llara.errors import InputError

    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise InputError("--set", f"expected KEY=VALUE, got {text!r}")
    parsed = yaml.safe_load(value)
    if isinstance(parsed, str):  # YAML 1.1 reads 8e-4 (no dot) as text
        try:
            parsed = float(parsed)
        except ValueError:
            pass
    return key.strip(), parsed


def _evaluate(args: argparse.Namespace) -> int:
    from llara.atomic import write_parquet
    from llara.errors import require
    from llara.llm.data import read_examples
    from llara.llm.evaluation import SINGLE_ORDER_MODES, evaluate
    from llara.llm.recipes import check_modes
    from llara.llm.runs import eval_item_mode, load_run

    modes = list(SINGLE_ORDER_MODES) if args.modes is None else [m.strip() for m in args.modes.split(",") if m.strip()]
    require(modes, "--modes", "empty: name at least one mode, or leave the option out for the default")
    check_modes(modes)  # before the model loads
    model, encoder, info = load_run(args.run, device=args.device)
    examples = read_examples(args.split)[: args.max_rows]
    metrics, predictions = evaluate(model, encoder, examples, item_mode=eval_item_mode(info.get("variant", "")),
                                    modes=modes, batch_size=args.batch_size, length_norm=info["train"]["length_norm"])
    if args.predictions:
        from llara.data.idmap import predictions_with_originals

        write_parquet(predictions_with_originals(predictions, info["items"]), args.predictions)
    print(json.dumps(metrics, indent=2))
    return 0


def _recommend(args: argparse.Namespace) -> int:
    from pathlib import Path

    from llara.champion import CURRENT_FILE, load_bundle
    from llara.llm.recommend import recommend

    bundle = load_bundle(args.run, device=args.device)[:3] if (Path(args.run) / CURRENT_FILE).is_file() else None
    for row in recommend(args.run, args.history, args.candidates, k=args.k, device=args.device, model_bundle=bundle):
        print(f"{row['item']}\t{row['score']:.4f}\t{row['title']}")
    return 0
