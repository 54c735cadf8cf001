"""Training with the next-item objective, early stopping on validation, and resumable checkpoints.

Determinism: the model is initialized from ``torch.manual_seed(seed)``; epoch ``e`` re-seeds torch from
``(seed, e)`` and shuffles with its own generator, so a run resumed from a checkpoint repeats an uninterrupted run
exactly (same machine, same ``num_threads``). Deterministic algorithms are enforced while training.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from llara.fingerprint import ContentKey, array_digest
from llara.recommenders.base import SequentialRecommender
from llara.recommenders.checkpoint import TrainState, load_checkpoint, save_checkpoint
from llara.recommenders.config import MONITORS, BackboneConfig, TrainConfig
from llara.recommenders.evaluation import SequenceData, evaluate_rows, summary_values
from llara.recommenders.registry import build_model

@dataclass
class TrainResult:
    model: SequentialRecommender  # weights of the best epoch, eval mode
    history: list[dict]  # per epoch: epoch, train_loss, val_* values
    best_epoch: int
    epochs_run: int
    resumed_from: int  # last completed epoch found in the checkpoint (0: fresh start)


@contextlib.contextmanager
def deterministic(num_threads: int) -> Iterator[None]:
    """Fixed thread count + deterministic algorithms, restored afterwards."""
    threads = torch.get_num_threads()
    enforced = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(num_threads)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(enforced)


def epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch * 7_919) % (2**63 - 1)


def batch_loss(model: SequentialRecommender, seqs: torch.Tensor, targets: torch.Tensor, config: TrainConfig) -> torch.Tensor:
    hidden = model.encode(seqs)
    items = model.item_emb.weight
    if config.loss == "ce":
        return F.cross_entropy(hidden @ items[1:].T, targets - 1)
    negatives = torch.randint(1, items.shape[0], (targets.shape[0], config.n_negatives))
    pos = (hidden * items[targets]).sum(-1)
    neg = torch.einsum("bh,bnh->bn", hidden, items[negatives])
    valid = (negatives != targets[:, None]).to(neg.dtype)  # a sampled target is not a negative
    neg_loss = (F.binary_cross_entropy_with_logits(neg, torch.zeros_like(neg), reduction="none") * valid).sum(-1)
    return (F.binary_cross_entropy_with_logits(pos, torch.ones_like(pos), reduction="none") + neg_loss).mean()


def _improved(value: float, best: float | None, config: TrainConfig) -> bool:
    if best is None:
        return not math.isnan(value)
    if MONITORS[config.monitor] == "min":
        return value < best - config.min_delta
    return value > best + config.min_delta


def train(
    family: str,
    model_config: BackboneConfig,
    train_data: SequenceData,
    val_data: SequenceData,
    config: TrainConfig,
    *,
    checkpoint_dir: str | Path | None = None,
    on_epoch_end: Callable[[dict], None] | None = None,
    progress: bool = True,
    log: logging.Logger | None = None,
) -> TrainResult:
    """Train ``family`` on ``train_data``; keep the weights of the best validation epoch.

    With ``checkpoint_dir`` a checkpoint is written every ``checkpoint_every`` epochs and a matching one is resumed
    from: same content key (model and training config, the train and validation rows as the model sees them:
    content, not paths or counts); one of other inputs is discarded with a log line saying which changed. The caller
    deletes the checkpoint once the result is safely stored.
    """
    config.validate()
    log = log or logging.getLogger("llara.recommenders")
    with deterministic(config.num_threads):
        torch.manual_seed(config.seed)
        model = build_model(family, model_config)
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        train_cfg = {k: v for k, v in dataclasses.asdict(config).items() if k != "checkpoint_every"}
        key = (ContentKey().value("model", [family, model_config.to_dict()]).value("settings", train_cfg)
               .add("train rows", array_digest(train_data.seqs, train_data.targets))
               .add("validation rows", array_digest(val_data.seqs, val_data.targets)))
        state, best = TrainState(key.digest, key.parts), copy.deepcopy(model.state_dict())
        ckpt = Path(checkpoint_dir) if checkpoint_dir is not None else None
        restored = load_checkpoint(ckpt, model, optimizer, key, log) if ckpt is not None else None
        if restored is not None:
            state, best = restored
            log.info("%s: resuming from checkpoint %s after epoch %d", family, ckpt, state.epoch)
        resumed_from = state.epoch

        bar = tqdm(total=config.epochs, initial=state.epoch, desc=f"pretrain {family}", unit="epoch", disable=not progress)
        while not state.finished and state.epoch < config.epochs:
            epoch = state.epoch + 1
            row = {"epoch": epoch, "train_loss": _train_epoch(model, optimizer, train_data, config, epoch)}
            row.update({f"val_{k}": v for k, v in summary_values(evaluate_rows(model, val_data)).items()})
            value = row[config.monitor]
            if _improved(value, state.best_value, config):
                state.best_value, state.best_epoch, state.bad_epochs = value, epoch, 0
                best = copy.deepcopy(model.state_dict())
            else:
                state.bad_epochs += 1
            state.epoch = epoch
            state.history.append(row)
            state.finished = state.bad_epochs >= config.patience or epoch >= config.epochs
            log.info(
                "%s epoch %d: train_loss %.4f val_loss %.4f val_full_ndcg@10 %.4f%s", family, epoch,
                row["train_loss"], row["val_loss"], row["val_full_ndcg@10"], " (best)" if state.best_epoch == epoch else "",
            )
            bar.set_postfix(loss=f"{row['train_loss']:.4f}", **{config.monitor: f"{value:.4f}"})
            bar.update(1)
            if ckpt is not None and (epoch % config.checkpoint_every == 0 or state.finished):
                save_checkpoint(ckpt, model, best, optimizer, state)
            if on_epoch_end is not None:
                on_epoch_end(row)
        bar.close()
        model.load_state_dict(best)
        model.eval()
    if state.bad_epochs >= config.patience:
        log.info("%s: early stop after epoch %d; best epoch %d", family, state.epoch, state.best_epoch)
    return TrainResult(model, state.history, state.best_epoch, state.epoch, resumed_from)


def _train_epoch(
    model: SequentialRecommender, optimizer: torch.optim.Optimizer, data: SequenceData, config: TrainConfig, epoch: int
) -> float:
    seed = epoch_seed(config.seed, epoch)
    torch.manual_seed(seed)
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
    model.train()
    total, count = 0.0, 0
    for start in range(0, len(data), config.batch_size):
        idx = order[start : start + config.batch_size]
        loss = batch_loss(model, data.seqs[idx], data.targets[idx], config)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += float(loss.detach()) * idx.numel()
        count += idx.numel()
    return total / count
