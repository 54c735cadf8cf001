"""Benchmark: start-up cost of the content keys that checkpoints resume on (llara/fingerprint.py).

Two datasets: MovieLens-100K (``paper`` split; a 1-epoch SASRec export; the base LLM) and a synthetic dataset of N
interactions (bench_split_scale.py's generator, ``paper`` protocol with a seeded user split). For each it times, in
this process (files just written, so mostly from the page cache):
- the fine-tuning key's inputs (sha256 streamed once per process): train rows (train.parquet), item table,
  recommender export, base LLM folder, prompt templates; next to reading the train rows (read_examples), the
  start-up cost they add to;
- the pretraining key: digest of the train/validation tensors; next to building those tensors (sequence_data).
Prints a table; the last line is ``content_key_startup_s=<largest key time>``.

    python bench/bench_fingerprint.py [--llm data/llm/base]   # MovieLens + 10M interactions
    python bench/bench_fingerprint.py --quick                 # MovieLens + 1M
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from benchlib import record  # noqa: E402
from bench_split_scale import make_data  # noqa: E402

from llara.data.ingest import read_dataset, read_generic, read_movielens, write_dataset  # noqa: E402
from llara.data.split import SplitConfig, split_to_dir  # noqa: E402
from llara.data.tables import Columns  # noqa: E402
from llara.fingerprint import ContentKey, array_digest, model_digest, tree_digest, tree_files  # noqa: E402
from llara.llm.data import read_examples  # noqa: E402
from llara.llm.prompts import load_templates  # noqa: E402
from llara.recommenders.evaluation import sequence_data  # noqa: E402
from llara.recommenders.workflow import read_item_index  # noqa: E402
from llara.data.split_files import read_split  # noqa: E402


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def size_mb(path: Path) -> float:
    files = [path] if path.is_file() else tree_files(path)
    return sum(f.stat().st_size for f in files) / 2**20


def llm_key(split: Path, items: Path, export: Path | None, llm: Path | None) -> tuple[float, float, float]:
    """(seconds for the key, MB hashed, seconds to read the train rows: read_examples)."""
    paths = {"train rows": split / "train.parquet", "items": items}
    paths.update({k: v for k, v in (("recommender", export), ("base LLM", llm)) if v is not None})
    key, seconds = timed(lambda: ContentKey({name: (model_digest(p) if name == "base LLM" else tree_digest(p))
                                             for name, p in paths.items()}).value("prompts", [str(t) for t in load_templates("movie")]))
    _, read = timed(lambda: read_examples(split / "train.parquet"))
    return seconds, sum(size_mb(p) for p in paths.values()), read


def recommender_key(split: Path, items: Path) -> tuple[float, float, float]:
    """(seconds for the digest, MB of tensors, seconds to build the tensors: sequence_data)."""
    index = read_item_index(items)
    parts = read_split(split)
    (train, val), built = timed(lambda: (sequence_data(parts.train, index, 10, split / "train.parquet"),
                                         sequence_data(parts.val, index, 10, split / "val.parquet")))
    tensors = (train.seqs, train.targets, val.seqs, val.targets)
    _, seconds = timed(lambda: array_digest(*tensors))
    return seconds, sum(t.numel() * t.element_size() for t in tensors) / 2**20, built


def movielens(work: Path, llm: Path | None) -> list[tuple]:
    from llara.cli import main as cli

    source = ROOT.parent / "shared" / "data" / "ml-100k"
    write_dataset(read_movielens(source), work / "ingested")
    heldout = str(ROOT / "data" / "reference" / "paper_heldout_users.csv")
    split_to_dir(read_dataset(work / "ingested"), SplitConfig(protocol="paper", heldout_users=heldout), work / "paper")
    items = work / "ingested" / "items.parquet"
    assert cli(["pretrain", "--split", str(work / "paper"), "--items", str(items), "--backbone", "sasrec", "--epochs",
                "1", "--no-progress", "--out", str(work / "pretrain")]) == 0
    assert cli(["export", str(work / "pretrain"), "--out", str(work / "export")]) == 0
    if llm is None:
        from llara.llm.loading import convert_gguf, find_smollm2_gguf

        llm = convert_gguf(find_smollm2_gguf(), work / "llm")
    return [("MovieLens-100K", "fine-tuning", *llm_key(work / "paper", items, work / "export", llm)),
            ("MovieLens-100K", "pretraining", *recommender_key(work / "paper", items))]


def synthetic(work: Path, n: int) -> list[tuple]:
    make_data(work, n)
    write_dataset(read_generic(work / "interactions.parquet", work / "items.parquet", Columns(rating="rating")),
                  work / "ingested")
    split_to_dir(read_dataset(work / "ingested"), SplitConfig(protocol="paper", heldout_users=None), work / "paper")
    items = work / "ingested" / "items.parquet"
    label = f"synthetic {n / 1e6:g}M"
    return [(label, "fine-tuning (train rows + items)", *llm_key(work / "paper", items, None, None)),
            (label, "pretraining", *recommender_key(work / "paper", items))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1M synthetic interactions instead of 10M")
    parser.add_argument("--llm", type=Path, default=None, help="base LLM folder (default: convert the packaged SmolLM2)")
    parser.add_argument("-n", type=int, default=None, help="synthetic interactions")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    n = args.n or (1_000_000 if args.quick else 10_000_000)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        rows += movielens(Path(tmp) / "ml", args.llm)
    with tempfile.TemporaryDirectory() as tmp:
        rows += synthetic(Path(tmp), n)
    print(f"{'dataset':<17}{'key':<34}{'MB':>9}{'key s':>8}{'existing s':>12}")
    for dataset, key, seconds, mb, existing in rows:
        print(f"{dataset:<17}{key:<34}{mb:>9.1f}{seconds:>8.2f}{existing:>12.2f}")
    worst = max(r[2] for r in rows)
    summary = "; ".join(f"{d} {k}: {s:.2f} s for {mb:.0f} MB (reading/building them: {e:.1f} s)"
                        for d, k, s, mb, e in rows)
    record(f"bench_fingerprint{' --quick' if args.quick else ''} (n={n:,}): {summary}; content_key_startup_s={worst:.2f}")
    print(f"content_key_startup_s={worst:.2f}")


if __name__ == "__main__":
    main()
