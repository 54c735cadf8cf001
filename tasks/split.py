"""Stage ``split@<protocol>``: ``data/ingested`` -> ``data/split/<protocol>`` (train/val/test parquet + candidates)."""

from __future__ import annotations

from pathlib import Path

from llara.data.ingest import read_dataset
from llara.data.split import PROTOCOLS, split_to_dir
from llara.entrypoint import exit_with
from tasks.common import get_logger, stage_args
from tasks.params import PARAMS_FILE, SplitParams, load_params, reported_as
from tasks.paths import INGESTED, SPLIT_ROOT


def split(params: SplitParams, protocol: str, data_dir: Path = INGESTED, out_root: Path = SPLIT_ROOT) -> dict:
    """Split and write one protocol (built and written in chunks); returns the split's meta."""
    log = get_logger("llara.split")
    with reported_as(PARAMS_FILE, "split"):
        meta = split_to_dir(read_dataset(data_dir), params.config(protocol), out_root / protocol)
    log.info("split %s: rows %s, users %s -> %s", protocol, meta["rows"], meta["users"], out_root / protocol)
    return meta


def main() -> None:
    args = stage_args("tasks.split", "Run the split stage for one protocol (values from params.yaml).",
                      protocol=(PROTOCOLS, "splitting protocol"))
    split(load_params().split, args.protocol)


if __name__ == "__main__":
    exit_with(main)
