"""Stage ``split@<protocol>``: ``data/ingested`` -> ``data/split/<protocol>`` (train/val/test parquet + candidates)."""

from __future__ import annotations

from pathlib import Path

from llara.data.ingest import read_dataset
from llara.data.split import PROTOCOLS, SplitConfig, split_to_dir
from llara.entrypoint import OneLineParser, exit_with
from tasks.common import get_logger
from tasks.ingest import OUT_DIR as INGESTED
from tasks.params import SplitParams, load_params, reported_as_params

SPLIT_ROOT = Path("data/split")


def split_config(params: SplitParams, protocol: str) -> SplitConfig:
    return SplitConfig(
        protocol=protocol,
        seed=params.seed,
        history_len=params.history_len,
        min_history=params.min_history,
        min_rating=params.min_rating,
        n_candidates=params.n_candidates,
        val_fraction=params.val_fraction,
        test_fraction=params.test_fraction,
        heldout_users=params.heldout_users,
        paper_files_dir=params.paper_files_dir,
        paper_files_id_offset=params.paper_files_id_offset,
    )


def split(params: SplitParams, protocol: str, data_dir: Path = INGESTED, out_root: Path = SPLIT_ROOT) -> dict:
    """Split and write one protocol (built and written in chunks); returns the split's meta."""
    log = get_logger("llara.split")
    meta = split_to_dir(read_dataset(data_dir), split_config(params, protocol), out_root / protocol)
    log.info("split %s: rows %s, users %s -> %s", protocol, meta["rows"], meta["users"], out_root / protocol)
    return meta


def main() -> None:
    parser = OneLineParser(prog="tasks.split", description="Run the split stage for one protocol (values from params.yaml).")
    parser.add_argument("protocol", choices=PROTOCOLS, help="splitting protocol")
    parser.add_argument("--verbose", action="store_true", help="full tracebacks on errors")
    args = parser.parse_args()
    params = load_params()
    with reported_as_params():
        split(params.split, args.protocol)


if __name__ == "__main__":
    exit_with(main)
