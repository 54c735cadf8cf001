"""Stage ``ingest``: raw files in ``ingest.input_dir`` -> ``data/ingested`` (normalized parquet)."""

from __future__ import annotations

from pathlib import Path

from llara.data.ingest import Columns, Dataset, read_generic, read_movielens, write_dataset
from llara.entrypoint import exit_with
from tasks.common import get_logger
from tasks.params import IngestParams, load_params, reported_as_params

OUT_DIR = Path("data/ingested")


def ingest(params: IngestParams, out_dir: Path = OUT_DIR) -> Dataset:
    log = get_logger("llara.ingest")
    source = Path(params.input_dir)
    if params.source == "movielens":
        dataset = read_movielens(source, min_rating=params.min_rating)
    else:
        c = params.columns
        dataset = read_generic(
            source / params.interactions_file,
            source / params.items_file,
            Columns(c.user, c.item, c.timestamp, c.rating, c.title),
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
    with reported_as_params():
        ingest(params.ingest)


if __name__ == "__main__":
    exit_with(main)
