"""``llara pretrain``, ``llara export``, ``llara evaluate-recommenders``: sequential recommenders from the command line.

The pipeline's stages (pretrain@, export@, evaluate_recommenders) do the same with values from params.yaml.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from llara.recommenders.config import CURVE_COLUMNS, LOSSES, MONITORS, BackboneConfig, TrainConfig
from llara.recommenders.registry import FAMILIES

PRETRAIN_FILES = {"model.safetensors", "config.json", "item_map.parquet", "training.json"}
EXPORT_FILES = PRETRAIN_FILES | {"item_embeddings.safetensors"}


def _key_value(text: str) -> tuple[str, int | float]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, int(value)
    except ValueError:
        try:
            return key, float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{key}: expected a number, got {value!r}") from None


def _family_options() -> str:
    """Each family's own sizes and their defaults, for --help (from the registry)."""
    shared = {f.name for f in dataclasses.fields(BackboneConfig)}
    return "; ".join(
        f"{name}: " + ", ".join(f"{f.name} {f.default}" for f in dataclasses.fields(family.config) if f.name not in shared)
        for name, family in FAMILIES.items())


def _family_default(field: str) -> str:
    defaults = {name: getattr(family.config(n_items=1), field) for name, family in FAMILIES.items()}
    return ", ".join(f"{name} {value}" for name, value in defaults.items())


def register(sub: argparse._SubParsersAction) -> None:
    d, shared = TrainConfig(), BackboneConfig(n_items=1)
    p = sub.add_parser(
        "pretrain", help=f"train a sequential recommender ({', '.join(FAMILIES)})",
        description="Train a recommender on a split's train rows with early stopping on its val rows. Resumes from "
                    "--checkpoint-dir after an interruption (same inputs and options).",
    )
    p.add_argument("--split", required=True, metavar="DIR", help="split directory (train/val/test.parquet)")
    p.add_argument("--items", default="data/ingested/items.parquet", metavar="PATH",
                   help="item table of the ingested dataset (default: data/ingested/items.parquet)")
    p.add_argument("--backbone", required=True, choices=list(FAMILIES), help="model family")
    p.add_argument("--out", required=True, metavar="DIR", help="output model directory")
    p.add_argument("--checkpoint-dir", metavar="DIR", help="resumable checkpoints (deleted after success)")
    p.add_argument("--curve", metavar="CSV", help=f"write the per-epoch curve ({', '.join(CURVE_COLUMNS)})")
    p.add_argument("--window", type=int, default=shared.window, help=f"history window (default: {shared.window})")
    p.add_argument("--hidden", type=int, help=f"hidden size (default: the family's: {_family_default('hidden')})")
    p.add_argument("--dropout", type=float, help=f"dropout (default: the family's: {_family_default('dropout')})")
    p.add_argument("--option", type=_key_value, action="append", default=[], metavar="KEY=VALUE",
                   help=f"family-specific size (defaults: {_family_options()})")
    p.add_argument("--seed", type=int, default=d.seed, help=f"random seed (default: {d.seed})")
    p.add_argument("--epochs", type=int, default=d.epochs, help=f"epoch cap (default: {d.epochs})")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help=f"rows per step (default: {d.batch_size})")
    p.add_argument("--lr", type=float, help="AdamW learning rate (default: the family's own where it has one, "
                   + ", ".join(f"{n} {f.lr}" for n, f in FAMILIES.items() if f.lr is not None) + f"; else {d.lr})")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay, help=f"(default: {d.weight_decay})")
    p.add_argument("--patience", type=int, default=d.patience, help=f"early-stopping patience in epochs (default: {d.patience})")
    p.add_argument("--monitor", choices=sorted(MONITORS), default=d.monitor, help=f"early-stopping criterion (default: {d.monitor})")
    p.add_argument("--loss", choices=LOSSES, default=d.loss, help="ce: softmax over all items; bce: sampled negatives")
    p.add_argument("--n-negatives", type=int, default=d.n_negatives, help="negatives per row for --loss bce")
    p.add_argument("--threads", type=int, default=d.num_threads, help=f"torch threads (default: {d.num_threads})")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_pretrain, option_names={"num_threads": "--threads"})

    e = sub.add_parser(
        "export", help="export a pretrained recommender for the LLM stage",
        description="Write item_embeddings.safetensors, item_map.parquet, model.safetensors and config.json.",
    )
    e.add_argument("model", metavar="MODEL_DIR", help="output directory of `llara pretrain`")
    e.add_argument("--out", required=True, metavar="DIR", help="export directory")
    e.set_defaults(func=_export)

    v = sub.add_parser(
        "evaluate-recommenders", help="HR@k / NDCG@k of exported recommenders on a split",
        description="Evaluate exports on a split part: hr@1, hr@5, ndcg@5 on the stored candidates and full-ranking "
                    "full_hr@10, full_ndcg@10 (history items excluded); each {value, ci95, n}. Prints JSON.",
    )
    v.add_argument("exports", nargs="+", metavar="EXPORT_DIR", help="export directories")
    v.add_argument("--split", required=True, metavar="DIR", help="split directory")
    v.add_argument("--part", choices=["test", "val"], default="test", help="which rows (default: test)")
    v.add_argument("--out", metavar="JSON", help="also write the metrics to this file")
    v.set_defaults(func=_evaluate)


def _pretrain(args: argparse.Namespace) -> int:
    from llara.atomic import require_replaceable
    from llara.recommenders.registry import config_from_dict
    from llara.recommenders.workflow import pretrain

    require_replaceable(args.out, PRETRAIN_FILES, "--out")
    sizes = {"hidden": args.hidden, "dropout": args.dropout}
    options = {"n_items": 1, "window": args.window, **{k: v for k, v in sizes.items() if v is not None}, **dict(args.option)}
    model_config = config_from_dict(args.backbone, options, "--option")
    lr = args.lr if args.lr is not None else (FAMILIES[args.backbone].lr or TrainConfig.lr)
    train_config = TrainConfig(
        seed=args.seed, epochs=args.epochs, batch_size=args.batch_size, lr=lr, weight_decay=args.weight_decay,
        patience=args.patience, monitor=args.monitor, loss=args.loss, n_negatives=args.n_negatives,
        num_threads=args.threads,
    )
    train_config.validate()
    result = pretrain(args.backbone, model_config, train_config, args.split, args.items, args.out,
                      checkpoint_dir=args.checkpoint_dir, curve_path=args.curve, progress=not args.no_progress)
    best = result.history[result.best_epoch - 1]
    print(f"{args.backbone}: best epoch {result.best_epoch}/{result.epochs_run}, val_loss {best['val_loss']:.4f}, "
          f"val_full_ndcg@10 {best['val_full_ndcg@10']:.4f} -> {args.out}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from llara.atomic import require_replaceable
    from llara.recommenders.workflow import export

    require_replaceable(args.out, EXPORT_FILES, "--out")
    print(f"exported {args.model} -> {export(args.model, args.out)}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from llara.atomic import write_json
    from llara.recommenders.workflow import evaluate_export

    results = {Path(d).name: evaluate_export(d, args.split, args.part) for d in args.exports}
    if args.out:
        write_json({Path(args.split).name: results}, args.out)
    print(json.dumps({Path(args.split).name: results}, indent=2))
    return 0
