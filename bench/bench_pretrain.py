"""Recommender pretraining time per backbone on the real `paper` split (data/split/paper, data/ingested).

Each backbone is pretrained with the values of params.yaml (early stopping included) and timed from the start of
training to the best weights (data loading excluded). ``--quick`` pretrains SASRec fully and times one epoch of the
others. Floor: SASRec under 60 s on 2 cores. Prints a table; last line: sasrec_pretrain_s=<seconds>.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from llara.recommenders.evaluation import evaluate_rows, report, sequence_data  # noqa: E402
from llara.recommenders.training import train  # noqa: E402
from llara.recommenders.workflow import read_item_index  # noqa: E402
from llara.data.split_files import read_split  # noqa: E402
from tasks.params import load_params  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="SASRec fully, one epoch of the others")
    parser.add_argument("--protocol", default="paper", help="split under data/split (default: paper)")
    parser.add_argument("--threads", type=int, default=None, help="override pretrain.num_threads")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    params = load_params(ROOT / "params.yaml").pretrain
    split = read_split(ROOT / "data/split" / args.protocol)
    index = read_item_index(ROOT / "data/ingested/items.parquet")
    threads = args.threads or params.num_threads
    print(f"# {platform.node()} | {platform.processor() or platform.machine()} | python {platform.python_version()} | "
          f"threads {threads} | cores {os.cpu_count()} | load avg {os.getloadavg()[0]:.1f} | "
          f"{datetime.datetime.now().isoformat(timespec='seconds')}")
    print(f"{'backbone':<10} {'epochs':>6} {'best':>5} {'seconds':>8} {'s/epoch':>8} {'val_loss':>9} {'test hr@1':>9}")
    times = {}
    for backbone in params.backbones:
        config = params.model_config_for(backbone, len(index))
        data = {p: sequence_data(split.part(p), index, config.window, p) for p in ("train", "val", "test")}
        cfg = dataclasses.replace(params.train_config(backbone), num_threads=threads)
        if args.quick and backbone != "sasrec":
            cfg = dataclasses.replace(cfg, epochs=1)
        with tempfile.TemporaryDirectory() as tmp:  # no checkpoint reuse between runs
            start = time.perf_counter()
            result = train(backbone, config, data["train"], data["val"], cfg, checkpoint_dir=Path(tmp) / "ckpt",
                           progress=False)
            seconds = time.perf_counter() - start
        times[backbone] = seconds
        best = result.history[result.best_epoch - 1]
        hr1 = report(evaluate_rows(result.model, data["test"]))["hr@1"]["value"]
        print(f"{backbone:<10} {result.epochs_run:>6} {result.best_epoch:>5} {seconds:>8.1f} "
              f"{seconds / result.epochs_run:>8.2f} {best['val_loss']:>9.4f} {hr1:>9.4f}", flush=True)
    print(f"# load avg at the end {os.getloadavg()[0]:.1f} (other processes on the machine slow every number above)")
    print(f"sasrec_pretrain_s={times.get('sasrec', float('nan')):.1f}")


if __name__ == "__main__":
    main()
