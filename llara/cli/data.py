"""``llara ingest`` and ``llara split``."""

from __future__ import annotations

import argparse
from pathlib import Path

from llara.atomic import require_replaceable
from llara.data.ingest import DATASET_FILES, Columns, read_dataset, read_generic, read_movielens, write_dataset
from llara.data.split import PROTOCOLS, SplitConfig, split_to_dir
from llara.data.split_files import SPLIT_FILES
from llara.entrypoint import keyword_defaults
from llara.errors import InputError


def register(sub: argparse._SubParsersAction) -> None:
    columns, text = Columns(), keyword_defaults(read_generic)
    p = sub.add_parser(
        "ingest",
        help="normalize raw interactions + items to parquet",
        description="Normalize MovieLens-100K (--movielens DIR) or a generic interactions + items pair to parquet. "
                    "User and item ids may be integers or text (e.g. u0042, UUIDs); they are mapped to dense internal "
                    "ids 1..N, and the maps are written beside the tables (user_ids.parquet, item_ids.parquet) so "
                    "every output can be read back in the original ids. Parts merged by the inbox beside the "
                    "interactions file are read too.",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--movielens", metavar="DIR", help="directory with raw MovieLens-100K u.data and u.item")
    src.add_argument("--interactions", metavar="PATH", help="interactions file (.csv, .tsv or .parquet)")
    p.add_argument("--items", metavar="PATH", help="item table (.csv, .tsv or .parquet); required with --interactions")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.add_argument("--user-col", default=columns.user,
                   help=f"user id column, integers or text (default: {columns.user})")
    p.add_argument("--item-col", default=columns.item,
                   help=f"item id column, integers or text (default: {columns.item})")
    p.add_argument("--time-col", default=columns.timestamp,
                   help=f"timestamp column, unix seconds or ISO-8601 (default: {columns.timestamp})")
    p.add_argument("--rating-col", default=columns.rating,
                   help="optional rating column (default: none, implicit feedback)")
    p.add_argument("--title-col", default=columns.title, help=f"item title column (default: {columns.title})")
    p.add_argument("--separator", default=text["separator"], help=f"CSV separator (default: {text['separator']!r})")
    p.add_argument("--encoding", default=text["encoding"],
                   help=f"text encoding of CSV files (default: {text['encoding']})")
    p.add_argument("--min-rating", type=float, default=text["min_rating"],
                   help="keep only interactions rated at least this (needs --rating-col; default: keep all)")
    p.add_argument("--no-verify", action="store_true", help="skip the MovieLens sha256 check")
    p.set_defaults(func=_ingest)

    d = SplitConfig()
    s = sub.add_parser(
        "split",
        help="split interactions into train/val/test with fixed candidates",
        description="Split an ingested dataset by a protocol and store seeded candidate sets "
                    f"({d.n_candidates} items by default).",
    )
    s.add_argument("--data", required=True, metavar="DIR", help="output directory of `llara ingest`")
    s.add_argument("--protocol", required=True, choices=PROTOCOLS, help="splitting protocol")
    s.add_argument("--seed", type=int, default=d.seed, help=f"seed for user split and candidates (default: {d.seed})")
    s.add_argument("--out", required=True, metavar="DIR", help="output directory")
    s.add_argument("--history-len", type=int, default=d.history_len, help=f"history window (default: {d.history_len})")
    s.add_argument("--min-history", type=int, default=d.min_history,
                   help=f"minimum history of a train row (default: {d.min_history})")
    s.add_argument("--min-rating", type=_min_rating, default=d.min_rating, metavar="R|none",
                   help=f"with ratings in the data, keep interactions rated >= R (default: {d.min_rating:g}, the "
                        "paper's MovieLens filter; 'none' keeps all); data without ratings always keeps every "
                        "interaction")
    s.add_argument("--n-candidates", type=int, default=d.n_candidates,
                   help=f"candidates per row incl. the target (default: {d.n_candidates})")
    s.add_argument("--heldout-users", metavar="CSV", help="held-out users (user_id, split[, row_index]) for 'paper'")
    s.add_argument("--paper-files", dest="paper_files_dir", metavar="DIR",
                   help="directory of the authors' Val/Test_data.parquet ('paper-files')")
    s.set_defaults(func=_split, option_names={"paper_files_dir": "--paper-files"})


def _min_rating(text: str) -> float | None:
    """A number, or ``none`` (a negative number also keeps every interaction, as before)."""
    if text.strip().lower() == "none":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'none', got {text!r}") from None
    return None if value < 0 else value


def _ingest(args: argparse.Namespace) -> int:
    require_replaceable(args.out, DATASET_FILES, "--out")
    if args.movielens:
        dataset = read_movielens(args.movielens, verify=not args.no_verify, min_rating=args.min_rating)
    else:
        if not args.items:
            raise InputError("--items", "required with --interactions")
        columns = Columns(args.user_col, args.item_col, args.time_col, args.rating_col, args.title_col)
        dataset = read_generic(
            args.interactions, args.items, columns, separator=args.separator, encoding=args.encoding,
            min_rating=args.min_rating,
        )
    out = write_dataset(dataset, args.out)
    print(f"ingested {dataset.interactions.height} interactions, {dataset.items.height} items -> {out}")
    return 0


def _split(args: argparse.Namespace) -> int:
    require_replaceable(args.out, SPLIT_FILES, "--out")
    config = SplitConfig(
        protocol=args.protocol,
        seed=args.seed,
        history_len=args.history_len,
        min_history=args.min_history,
        min_rating=args.min_rating,
        n_candidates=args.n_candidates,
        heldout_users=args.heldout_users,
        paper_files_dir=args.paper_files_dir,
    )
    meta = split_to_dir(read_dataset(args.data), config, Path(args.out))
    print(f"split {meta['rows']} -> {args.out}")
    return 0
