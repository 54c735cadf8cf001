"""Where the stages read and write, relative to the repository root (the DVC stages run there). dvc.yaml's deps and
outs name the same folders; ``report.*`` and ``llm.base_dir`` are params instead."""

from pathlib import Path

INGESTED = Path("data/ingested")  # ingest: interactions.parquet, items.parquet
ITEMS = INGESTED / "items.parquet"
SPLIT_ROOT = Path("data/split")  # split@<protocol>: <protocol>/{train,val,test}.parquet, meta.json
PRETRAIN_ROOT = Path("data/pretrain")  # pretrain@<protocol>-<backbone>: <protocol>/<backbone>/
CHECKPOINT_ROOT = Path("data/checkpoints")  # resumable checkpoints, outside DVC's outputs
EXPORT_ROOT = Path("data/recommenders")  # export@<protocol>-<backbone>: <protocol>/<backbone>/
RUNS_ROOT = Path("data/runs")  # finetune@<variant>: <protocol>/<variant>/
EVAL_ROOT = Path("data/eval")  # evaluate: <protocol>/<split>/<variant>.parquet
METRICS_ROOT = Path("metrics")  # DVC metrics and plots
