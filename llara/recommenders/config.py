"""Training options (no torch import: the CLI reads the defaults for its --help)."""

from __future__ import annotations

from dataclasses import dataclass

from llara.errors import require

LOSSES = ("ce", "bce")
CURVE_COLUMNS = ["epoch", "train_loss", "val_loss", "val_full_hr@10", "val_full_ndcg@10", "val_hr@1"]
MONITORS = {"val_loss": "min", "val_full_ndcg@10": "max", "val_full_hr@10": "max"}


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 42
    epochs: int = 50  # cap; early stopping usually ends sooner
    batch_size: int = 256
    lr: float = 2e-3
    weight_decay: float = 0.0
    patience: int = 3  # epochs without improvement of ``monitor`` before stopping
    monitor: str = "val_loss"
    min_delta: float = 0.0
    loss: str = "ce"  # ce: softmax cross-entropy over all items | bce: sampled negatives
    n_negatives: int = 1
    num_threads: int = 1
    checkpoint_every: int = 1  # epochs

    def validate(self, where: str = "train config") -> None:
        require(self.epochs >= 1, where, f"epochs must be >= 1, got {self.epochs}")
        require(self.batch_size >= 1, where, f"batch_size must be >= 1, got {self.batch_size}")
        require(self.lr > 0, where, f"lr must be > 0, got {self.lr}")
        require(self.weight_decay >= 0, where, f"weight_decay must be >= 0, got {self.weight_decay}")
        require(self.patience >= 1, where, f"patience must be >= 1, got {self.patience}")
        require(self.monitor in MONITORS, where, f"monitor must be one of {sorted(MONITORS)}, got {self.monitor!r}")
        require(self.loss in LOSSES, where, f"loss must be one of {LOSSES}, got {self.loss!r}")
        require(self.n_negatives >= 1, where, f"n_negatives must be >= 1, got {self.n_negatives}")
        require(self.num_threads >= 1, where, f"num_threads must be >= 1, got {self.num_threads}")
        require(self.checkpoint_every >= 1, where, f"checkpoint_every must be >= 1, got {self.checkpoint_every}")
