"""Stage ``recommend`` (``python -m flows.recommend``): top-k recommendations from the champion for every user with a
history, written to ``data/recommendations/part-NNNNN.parquet`` (+ ``state.json``).

Users (sorted by original id) are cut into shards of ``recommend.shard_size``; each shard is one Prefect task run on a
Dask task runner (``prefect-dask``: a ``LocalCluster`` of ``recommend.workers`` processes with one thread each, bound
to 127.0.0.1, or the scheduler at ``recommend.scheduler``) that loads the champion once per worker process, scores its
users (llara/batch_recommend.py) and writes its part into a staging directory that replaces the output only once
every part is written (a failed run leaves the last output whole). A part depends only on its shard, so the output is
the same with 1 or N workers. ``recommend.users: active`` re-scores only users whose history changed since the last
run and carries the other users' rows over; all users when the champion, a setting or the code changed (keyed on
content: llara/batch_recommend.py).
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Iterator

import polars as pl
from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from flows.env import apply_env_defaults
from llara import champion
from llara.atomic import atomic_dir, write_json, write_parquet
from llara.batch_recommend import (
    HISTORY_FILE, SCHEMA, Scorer, Settings, history_keys, read_history_keys, read_recommendations, read_state,
    rows_key, shards, user_histories, users_to_score,
)
from llara.data.ingest import read_dataset

apply_env_defaults()

CHAMPION_DIR = Path("data/champion")
INGESTED = Path("data/ingested")
OUT_DIR = Path("data/recommendations")
_SCORERS: dict[tuple, Scorer] = {}  # one loaded champion per worker process


def _scorer(champion_dir: str, version: str, key: str, device: str, threads: int) -> Scorer:
    """The worker's loaded champion, keyed on its content (``key``), not on its version's name."""
    import torch

    key = (champion_dir, version, key, device)
    if key not in _SCORERS:
        torch.set_num_threads(threads)  # fixed per worker, whatever the worker count: identical numerics
        _SCORERS.clear()
        _SCORERS[key] = Scorer(champion_dir, device=device)
    return _SCORERS[key]


@task(cache_policy=NO_CACHE, task_run_name="shard {index}")
def recommend_shard(index: int, users: list[str], histories: list[list[str]], score: list[bool], carried: pl.DataFrame,
                    out_dir: str, champion_dir: str, version: str, key: str, settings: Settings, device: str,
                    threads: int) -> dict:
    """Score the shard's users marked in ``score``, add the ``carried`` rows of the others, write the part."""
    started = time.monotonic()
    chosen = [j for j, s in enumerate(score) if s]
    fresh = pl.DataFrame(schema=SCHEMA)
    if chosen:
        scorer = _scorer(champion_dir, version, key, device, threads)
        fresh = scorer.recommend([users[j] for j in chosen], [histories[j] for j in chosen], settings)
    part = pl.concat([fresh, carried.select(list(SCHEMA)).cast(SCHEMA)]).sort(["user", "rank"])
    write_parquet(part, Path(out_dir) / f"part-{index:05d}.parquet")
    return {"index": index, "scored": len(chosen), "rows": part.height, "seconds": time.monotonic() - started}


@flow(name="llara-recommend", log_prints=True)
def recommend_users(k: int = 10, n_candidates: int = 20, rerank: bool = True, users: str = "active",
                    batch_size: int = 16, shard_size: int = 256, device: str = "cpu", threads: int = 1,
                    seed: int = 0, champion_dir: str = str(CHAMPION_DIR), ingested: str = str(INGESTED),
                    out_dir: str = str(OUT_DIR)) -> dict:
    """Recommendations for every user with a history (see the module doc); returns counts and users/s."""
    log = get_run_logger()
    started = time.monotonic()
    bundle = champion.bundle_info(champion_dir)
    version = bundle["version"]
    settings = Settings(k=k, n_candidates=n_candidates, rerank=rerank, batch_size=batch_size, seed=seed)
    key = rows_key(bundle, settings)
    dataset = read_dataset(ingested)
    table = user_histories(dataset.interactions, dataset.ids)
    keys = history_keys(table)
    out = Path(out_dir)
    state = read_state(out)
    chosen = users_to_score(keys, state, read_history_keys(out), key, users)
    previous = pl.DataFrame(schema=SCHEMA)
    if len(chosen) < table.height and any(out.glob("part-*.parquet")):
        previous = read_recommendations(out).filter(~pl.col("user").is_in(sorted(chosen)))
    chosen |= set(table["user"].to_list()) - set(previous["user"].unique().to_list())  # nothing to carry over
    user_list = table["user"].to_list()
    histories = dict(zip(user_list, table["history"].to_list()))
    # the whole output is built beside the old one and swapped in complete: a failed shard leaves the last run's
    # recommendations as they were (no user in two parts, no mix of two champions' rows)
    with atomic_dir(out) as staging:
        futures = []
        for index, shard in enumerate(shards(user_list, shard_size)):
            carried = previous.filter(pl.col("user").is_in(shard))
            futures.append(recommend_shard.submit(index, shard, [histories[u] for u in shard],
                                                  [u in chosen for u in shard], carried, str(staging.resolve()),
                                                  champion_dir, version, key, settings, device, threads))
        results = [f.result() for f in futures]
        write_parquet(keys, staging / HISTORY_FILE)
        write_json({"model_version": version, "rows_key": key, "watermark": int(table["last_timestamp"].max()),
                    "users": table.height, "k": k, "n_candidates": n_candidates, "rerank": rerank},
                   staging / "state.json")
    seconds = time.monotonic() - started
    scored = sum(r["scored"] for r in results)
    log.info("recommend: %d users (%d scored, %d carried over) in %d shards, %.1f s, %.2f scored users/s, model %s",
             table.height, scored, table.height - scored, len(results), seconds, scored / max(seconds, 1e-9), version)
    return {"users": table.height, "scored": scored, "shards": len(results), "seconds": seconds}


def task_runner(workers: int, scheduler: str | None):
    """A Dask task runner: the scheduler at ``scheduler``, else a LocalCluster on 127.0.0.1 (no dashboard)."""
    import dask
    from prefect_dask import DaskTaskRunner

    if scheduler:
        return DaskTaskRunner(address=scheduler)
    # no heartbeat deadline for the local workers: on a machine loaded by other jobs a worker busy scoring missed
    # the default 5-minute TTL, was dropped and its finished shards recomputed (seen at load 60 on 2 cores)
    dask.config.set({"distributed.scheduler.worker-ttl": None})
    return DaskTaskRunner(cluster_class="distributed.LocalCluster", cluster_kwargs={
        "n_workers": workers, "threads_per_worker": 1, "processes": True, "host": "127.0.0.1",
        "dashboard_address": None})


@contextlib.contextmanager
def shared_api() -> Iterator[None]:
    """A Prefect API the Dask workers share: ``$PREFECT_API_URL`` when set (e.g. inherited from the pipeline flow),
    else one temporary local server for the run, exported to the workers' environment (without it every worker
    process would start a temporary server of its own)."""
    import os

    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_API_URL, temporary_settings

    if os.environ.get("PREFECT_API_URL"):
        yield
        return
    server = SubprocessASGIServer()
    server.start(timeout=int(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")))
    os.environ["PREFECT_API_URL"] = server.api_url
    try:
        with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
            yield
    finally:
        from prefect.logging.handlers import APILogWorker

        APILogWorker.drain_all(timeout=5)  # the run's logs reach the server before it stops
        os.environ.pop("PREFECT_API_URL", None)
        server.stop()


def main() -> None:
    from llara.entrypoint import OneLineParser
    from tasks.params import load_params

    parser = OneLineParser(prog="flows.recommend", description="Batch recommendations (settings from params.yaml).")
    parser.add_argument("--verbose", action="store_true", help="full tracebacks on errors")
    parser.parse_args()
    params = load_params()
    r = params.recommend
    with shared_api():
        recommend_users.with_options(task_runner=task_runner(r.workers, r.scheduler))(
            k=r.k, n_candidates=r.n_candidates, rerank=r.rerank, users=r.users, batch_size=r.batch_size,
            shard_size=r.shard_size, device=r.device, threads=r.threads_per_worker, seed=params.finetune.seed)


if __name__ == "__main__":
    from llara.entrypoint import exit_with

    # run the imported module's flow, not __main__'s: Dask workers then import `flows.recommend` once (tasks are
    # pickled by reference) and keep its loaded champion between shards
    from flows.recommend import main as module_main

    exit_with(module_main)
