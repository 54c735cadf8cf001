"""Options of the sequential recommenders: training and each family's sizes, as plain dataclasses (no torch import:
the CLI reads the defaults for its --help and the stages validate params.yaml with them)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from llara.errors import require_config, require_range

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
    num_threads: int = 1  # results are deterministic for a fixed value; 1 is fastest for these small models
    checkpoint_every: int = 1  # epochs

    def validate(self) -> None:
        """Range checks; a :class:`~llara.errors.ConfigError` names the field."""
        require_range("seed", self.seed, 0)
        require_range("epochs", self.epochs, 1, 10_000)
        require_range("batch_size", self.batch_size, 1)
        require_range("lr", self.lr, 0, 1, low_open=True)
        require_range("weight_decay", self.weight_decay, 0)
        require_range("patience", self.patience, 1)
        require_config(self.monitor in MONITORS, "monitor", f"must be one of {sorted(MONITORS)}, got {self.monitor!r}")
        require_range("min_delta", self.min_delta, 0)
        require_config(self.loss in LOSSES, "loss", f"must be one of {LOSSES}, got {self.loss!r}")
        require_range("n_negatives", self.n_negatives, 1, 10_000)
        require_range("num_threads", self.num_threads, 1, 256)
        require_range("checkpoint_every", self.checkpoint_every, 1)


@dataclass(frozen=True)
class BackboneConfig:
    """Sizes shared by every family. ``n_items`` excludes the padding row."""

    n_items: int
    hidden: int = 64
    window: int = 10  # history window (left-padded)
    dropout: float = 0.1

    def validate(self) -> None:
        """Range checks; a :class:`~llara.errors.ConfigError` names the field."""
        require_range("n_items", self.n_items, 1)
        require_range("hidden", self.hidden, 1, 4096)
        require_range("window", self.window, 1, 200)
        require_range("dropout", self.dropout, 0, 1, high_open=True)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class SASRecConfig(BackboneConfig):
    n_blocks: int = 1
    n_heads: int = 1

    def validate(self) -> None:
        super().validate()
        require_range("n_blocks", self.n_blocks, 1, 16)
        require_range("n_heads", self.n_heads, 1, 64)
        require_config(self.hidden % self.n_heads == 0, "n_heads", f"({self.n_heads}) must divide hidden ({self.hidden})")


@dataclass(frozen=True)
class GRU4RecConfig(BackboneConfig):
    dropout: float = 0.3  # chosen on validation loss (docs/recommenders.md)
    n_layers: int = 1

    def validate(self) -> None:
        super().validate()
        require_range("n_layers", self.n_layers, 1, 8)


@dataclass(frozen=True)
class CaserConfig(BackboneConfig):
    dropout: float = 0.3  # chosen on validation loss (docs/recommenders.md)
    n_h: int = 16  # horizontal filters per height (heights 1..window)
    n_v: int = 4  # vertical filters

    def validate(self) -> None:
        super().validate()
        require_range("n_h", self.n_h, 1, 1024)
        require_range("n_v", self.n_v, 1, 1024)
