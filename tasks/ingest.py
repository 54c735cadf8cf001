"""Stage ``ingest``: raw files in ``ingest.input_dir`` -> ``data/ingested`` (normalized parquet)."""

from __future__ import annotations

from pathlib import Path

from llara.data.ingest import Dataset, read_generic, read_movielens, write_dataset
from llara.entrypoint import exit_with
from tasks.common import get_logger
from tasks.params import PARAMS_FILE, IngestParams, load_params, reported_as
from tasks.paths import INGESTED


def ingest(params: IngestParams, out_dir: Path = INGESTED) -> Dataset:
    log = get_logger("llara.ingest")
    source = Path(params.input_dir)
    if params.source == "movielens":
        dataset = read_movielens(source, min_rating=params.min_rating)
    else:
        dataset = read_generic(
            source / params.interactions_file,
            source / params.items_file,
            params.columns,
            separator=params.separator,
            encoding=params.encoding,
            min_rating=params.min_rating,
        )
    write_dataset(dataset, out_dir)
    log.info(
        "ingested %d interactions, %d users, %d items -> %s",
        dataset.interactions.height, dataset.interactions["user"].n_unique(), dataset.items.height, out_dir,
    )
    return dataset


def main() -> None:
    params = load_params()
    with reported_as(PARAMS_FILE, "ingest"):
        ingest(params.ingest)


if __name__ == "__main__":
    exit_with(main)
