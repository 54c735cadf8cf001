"""Batch recommendations from the champion: top-k items for many users at once (the nightly product).

Per user: the history is every item the user interacted with, in time order (original ids, translated into the
champion's internal ids; items the champion does not know are skipped). Candidates are the champion recommender's
top-``n_candidates`` over its whole catalogue minus the items the user has seen; the champion LLM re-ranks them in
``rank`` mode (its score head / answer log-likelihood over the last ``window`` history items) and the top ``k`` are
kept (``rerank=False``: the recommender's own top ``k``). Rows carry original user and item ids, titles, scores, rank
and the champion version, so a shard's output depends only on its users: the same with 1 or N workers.

Incremental runs are keyed on content: a user's rows are carried over from the last run only while both the key of
what every row depends on (:func:`rows_key`: the champion's weights, LLM and settings, and the code that scores) and
the digest of that user's own history (``histories.parquet``) are unchanged. A late event (an interaction older than
the newest one seen), an edited or shortened history, a new champion built under a reused name, another ``k`` or a
code fix each re-score exactly the users they affect.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import polars as pl
import torch

from llara import champion
from llara.code_key import code_digest
from llara.errors import require
from llara.fingerprint import json_digest

SCHEMA = {"user": pl.String, "rank": pl.Int32, "item": pl.String, "title": pl.String, "score": pl.Float64,
          "recommender_score": pl.Float64, "model_version": pl.String}
STATE_FILE = "state.json"
HISTORY_FILE = "histories.parquet"  # user, history_key: the history each user's rows were computed from


def user_histories(interactions: pl.DataFrame, ids) -> pl.DataFrame:
    """One row per user with a history: ``user`` (original id, as text), ``history`` (original item ids as text, in
    time order, stable on ties), ``last_timestamp``; sorted by user. ``ids``: the dataset's
    :class:`~llara.data.idmap.IdMaps`."""
    ordered = interactions.with_row_index("_order").sort(["user", "timestamp", "_order"])
    ordered = ordered.with_columns(ids.users.to_original(ordered["user"]).cast(pl.String).alias("_user"),
                                   ids.items.to_original(ordered["item"]).cast(pl.String).alias("_item"))
    grouped = ordered.group_by("user", maintain_order=True).agg(
        pl.col("_user").first(), pl.col("_item"), pl.col("timestamp").max().cast(pl.Int64).alias("last_timestamp"))
    return grouped.select(pl.col("_user").alias("user"), pl.col("_item").alias("history"), "last_timestamp").sort("user")


def history_keys(table: pl.DataFrame) -> pl.DataFrame:
    """``user``, ``history_key``: a digest of each user's history (original item ids in order), sorted by user."""
    keys = [hashlib.sha256("\x1f".join(h).encode()).hexdigest()[:32] for h in table["history"].to_list()]
    return pl.DataFrame({"user": table["user"], "history_key": keys},
                        schema={"user": pl.String, "history_key": pl.String})


def rows_key(bundle: dict, settings: "Settings") -> str:
    """What every user's rows depend on besides the history: the champion's weights (``run_hash``) and base LLM,
    the settings and the code that computes them (this module and every llara module it imports)."""
    return json_digest([bundle["run_hash"], bundle.get("llm_hash"), asdict(settings), code_digest(__name__)])


def read_history_keys(directory: Path) -> pl.DataFrame | None:
    path = Path(directory) / HISTORY_FILE
    return pl.read_parquet(path) if path.is_file() else None


def users_to_score(keys: pl.DataFrame, state: dict | None, previous: pl.DataFrame | None, key: str,
                   mode: str) -> set[str]:
    """``all`` users, or in ``active`` mode those whose history changed since the last run (``keys`` against that
    run's ``previous`` history keys); everyone when there was no last run or its ``rows_key`` differs from ``key``."""
    users = set(keys["user"].to_list())
    if mode == "all" or state is None or previous is None or state.get("rows_key") != key:
        return users
    same = keys.join(previous, on=["user", "history_key"], how="inner")["user"].to_list()
    return users - set(same)


def shards(users: Sequence[str], size: int) -> list[list[str]]:
    return [list(users[i:i + size]) for i in range(0, len(users), size)]


def read_state(directory: Path) -> dict | None:
    path = directory / STATE_FILE
    return json.loads(path.read_text()) if path.is_file() else None


@dataclass
class Settings:
    k: int = 10
    n_candidates: int = 20
    rerank: bool = True
    batch_size: int = 16
    seed: int = 0


class Scorer:
    """The champion loaded once (per worker process), scoring users given by original ids."""

    def __init__(self, champion_dir: str | Path, device: str = "cpu"):
        from llara.llm.runs import eval_item_mode
        from llara.recommenders import load_recommender

        self.model, self.encoder, self.info, self.bundle = champion.load_bundle(champion_dir, device=device)
        directory = champion.version_dir(champion_dir, self.bundle["version"])
        self.version = self.bundle["version"]
        self.recommender = load_recommender(directory / "recommender")
        self.mode = eval_item_mode(self.info.get("variant", "hybrid-curriculum"))
        self.titles = self.encoder.titles
        internal = sorted(self.titles)
        originals = champion.item_originals(directory, internal)
        self.to_internal = {str(o): i for i, o in zip(internal, originals) if o is not None}
        self.to_original = {i: str(o) for i, o in zip(internal, originals) if o is not None}
        self.columns = self.recommender.items.numpy()

    def candidates(self, histories: list[list[int]], n: int) -> tuple[np.ndarray, np.ndarray]:
        """(items, scores): the recommender's top-``n`` unseen items per history, best first."""
        scores = self.recommender.score_all(histories).numpy().astype(np.float64)
        column = {int(item): j for j, item in enumerate(self.columns)}
        for row, history in enumerate(histories):
            scores[row, [column[i] for i in set(history) if i in column]] = -np.inf
        n = min(n, scores.shape[1])
        top = np.argsort(-scores, axis=1, kind="stable")[:, :n]
        return self.columns[top], np.take_along_axis(scores, top, axis=1)

    @torch.no_grad()
    def llm_scores(self, histories: list[list[int]], candidates: np.ndarray, batch_size: int, seed: int) -> np.ndarray:
        from llara.llm.curriculum import template_draws
        from llara.llm.data import Example, collate
        from llara.llm.scoring import rank_scores

        template = template_draws(len(self.encoder.templates), seed, 0, 1)[0]
        window = self.recommender.window
        out = np.zeros(candidates.shape, dtype=np.float64)
        for lo in range(0, len(histories), batch_size):
            rows = range(lo, min(lo + batch_size, len(histories)))
            examples = [Example(r, 0, tuple(histories[r][-window:]), int(candidates[r, 0]),
                                tuple(int(c) for c in candidates[r])) for r in rows]
            batch = collate(self.encoder, examples, [self.mode] * len(examples), [template] * len(examples), False,
                            self.model.loaded.pad_token_id)
            scores = rank_scores(self.model, self.encoder, batch, length_norm=self.info["train"]["length_norm"],
                                 use_head=True)
            out[lo:lo + len(examples)] = scores.float().cpu().numpy()
        return out

    def recommend(self, users: list[str], histories: list[list[str]], settings: Settings) -> pl.DataFrame:
        """Top-k rows for each user (original ids); users none of whose items the champion knows get no rows."""
        mapped = [[self.to_internal[i] for i in h if i in self.to_internal] for h in histories]
        keep = [j for j, h in enumerate(mapped) if h]
        rows: dict[str, list] = {name: [] for name in SCHEMA}
        if not keep:
            return pl.DataFrame(rows, schema=SCHEMA)
        mapped = [mapped[j] for j in keep]
        items, rec_scores = self.candidates(mapped, settings.n_candidates)
        scores = self.llm_scores(mapped, items, settings.batch_size, settings.seed) if settings.rerank else rec_scores
        for row, j in enumerate(keep):
            order = np.argsort(-scores[row], kind="stable")[: settings.k]  # ties keep the recommender's order
            for rank, c in enumerate(order, 1):
                item = int(items[row, c])
                rows["user"].append(users[j])
                rows["rank"].append(rank)
                rows["item"].append(self.to_original[item])
                rows["title"].append(self.titles[item])
                rows["score"].append(float(scores[row, c]))
                rows["recommender_score"].append(float(rec_scores[row, c]))
                rows["model_version"].append(self.version)
        return pl.DataFrame(rows, schema=SCHEMA)


def read_recommendations(directory: str | Path) -> pl.DataFrame:
    """Every part of a recommendations directory as one table, sorted by user and rank."""
    parts = sorted(Path(directory).glob("part-*.parquet"))
    require(bool(parts), directory, "no recommendation parts (run `dvc repro recommend`)")
    return pl.concat([pl.read_parquet(p) for p in parts]).sort(["user", "rank"])
