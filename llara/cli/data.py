"""``llara ingest`` and ``llara split``."""

from __future__ import annotations

import argparse
from pathlib import Path

from llara.atomic import require_replaceable
from llara.data.ingest import DATASET_FILES, Columns, read_dataset, read_generic, read_movielens, write_dataset
from llara.data.split import PROTOCOLS, SPLIT_FILES, SplitConfig, split_to_dir
from llara.errors import ConfigError, InputError


def register(sub: argparse._SubParsersAction) -> None:
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
    p.add_argument("--user-col", default="user", help="user id column, integers or text (default: user)")
    p.add_argument("--item-col", default="item", help="item id column, integers or text (default: item)")
    p.add_argument("--time-col", default="timestamp", help="timestamp column, unix seconds or ISO-8601 (default: timestamp)")
    p.add_argument("--rating-col", default=None, help="optional rating column (default: none, implicit feedback)")
    p.add_argument("--title-col", default="title", help="item title column (default: title)")
    p.add_argument("--separator", default=",", help="CSV separator (default: ',')")
    p.add_argument("--encoding", default="utf8", help="text encoding of CSV files (default: utf8)")
    p.add_argument("--min-rating", type=float, default=None,
                   help="keep only interactions rated at least this (needs --rating-col; default: keep all)")
    p.add_argument("--no-verify", action="store_true", help="skip the MovieLens sha256 check")
    p.set_defaults(func=_ingest)

    s = sub.add_parser(
        "split",
        help="split interactions into train/val/test with fixed candidates",
        description="Split an ingested dataset by a protocol and store seeded 20-item candidate sets.",
    )
    s.add_argument("--data", required=True, metavar="DIR", help="output directory of `llara ingest`")
    s.add_argument("--protocol", required=True, choices=PROTOCOLS, help="splitting protocol")
    s.add_argument("--seed", type=int, default=42, help="seed for user split and candidates (default: 42)")
    s.add_argument("--out", required=True, metavar="DIR", help="output directory")
    s.add_argument("--history-len", type=int, default=10, help="history window (default: 10)")
    s.add_argument("--min-history", type=int, default=3, help="minimum history of a train row (default: 3)")
    s.add_argument("--min-rating", type=_min_rating, default=3.0, metavar="R|none",
                   help="with ratings in the data, keep interactions rated >= R (default: 3, the paper's MovieLens "
                        "filter; 'none' keeps all); data without ratings always keeps every interaction")
    s.add_argument("--n-candidates", type=int, default=20, help="candidates per row incl. the target (default: 20)")
    s.add_argument("--heldout-users", metavar="CSV", help="held-out users (user_id, split[, row_index]) for 'paper'")
    s.add_argument("--paper-files", metavar="DIR", help="directory of the authors' Val/Test_data.parquet ('paper-files')")
    s.set_defaults(func=_split)


_OPTION = {"split.paper_files_dir": "--paper-files"}


def _min_rating(text: str) -> float | None:
    """A number, or ``none`` (a negative number also keeps every interaction, as before)."""
    if text.strip().lower() == "none":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'none', got {text!r}") from None
    return None if value < 0 else value


def _as_option(exc: ConfigError) -> InputError:
    """A library parameter error, reported under the command-line option's name (``split.n_candidates`` ->
    ``--n-candidates``)."""
    return InputError(_OPTION.get(exc.key, "--" + exc.key.split(".")[-1].replace("_", "-")), exc.what)


def _ingest(args: argparse.Namespace) -> int:
    require_replaceable(args.out, DATASET_FILES, "--out")
    if args.movielens:
        dataset = read_movielens(args.movielens, verify=not args.no_verify, min_rating=args.min_rating)
    else:
        if not args.items:
            raise InputError("--items", "required with --interactions")
        columns = Columns(args.user_col, args.item_col, args.time_col, args.rating_col, args.title_col)
        try:
            dataset = read_generic(
                args.interactions, args.items, columns, separator=args.separator, encoding=args.encoding,
                min_rating=args.min_rating,
            )
        except ConfigError as exc:
            raise _as_option(exc) from None
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
        paper_files_dir=args.paper_files,
    )
    try:
        meta = split_to_dir(read_dataset(args.data), config, Path(args.out))
    except ConfigError as exc:
        raise _as_option(exc) from None
    print(f"split {meta['rows']} -> {args.out}")
    return 0
