"""Retraining flow: new interactions arrive -> they are appended to the generic dataset -> DVC reruns only what the
changed input affects (ingest and everything downstream of it; fetch and unrelated stages such as the LLM download
stay skipped).

New interactions come as files (``new_interactions``) or are picked up from an inbox folder (the nightly deployment
watches ``data/inbox``); merged inbox files move to ``<inbox>/merged/``. The files need the dataset's columns
(``ingest.columns``, same order for CSV/TSV). The raw folder is ``fetch``'s persisted output, so after appending the
flow records it with ``dvc commit`` (the new raw data is the accepted state of that output, not a reason to fetch
again). With nothing new the flow is a plain pipeline run, i.e. a no-op when everything is up to date.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import polars as pl
from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from flows.dvc_stages import StageFailed, run_dvc, stage_address
from flows.pipeline import pipeline
from flows.workspace import apply_env_defaults, resolve_root, workspace_lock
from llara.atomic import atomic_path
from llara.data.ingest import read_table
from llara.errors import InputError, require
from tasks.params import IngestParams, load_params

apply_env_defaults()

INBOX_SUFFIXES = (".csv", ".tsv", ".parquet")


def append_interactions(target: Path, new: Path, params: IngestParams) -> int:
    """Append the rows of ``new`` to ``target`` atomically (same columns required); returns the rows added."""
    existing, _ = read_table(target, separator=params.separator, encoding=params.encoding)
    added, _ = read_table(new, separator=params.separator, encoding=params.encoding)
    require(added.columns == existing.columns, new,
            f"columns {added.columns} do not match {target}'s {existing.columns} (same names, same order)")
    with atomic_path(target) as tmp:
        if target.suffix.lower() == ".parquet":
            pl.concat([existing, added.cast(existing.schema)], how="vertical").write_parquet(tmp)
        else:  # text: keep the existing bytes exactly, append the new file's data lines (its header dropped)
            body = target.read_bytes()
            lines = new.read_bytes().splitlines(keepends=True)[1:]
            if body and not body.endswith(b"\n"):
                body += b"\n"
            if lines and not lines[-1].endswith(b"\n"):
                lines[-1] += b"\n"
            tmp.write_bytes(body + b"".join(lines))
    return added.height


def raw_input_stage(root: Path, input_dir: Path) -> str | None:
    """The DVC stage whose output holds ``input_dir`` (``fetch`` today), if any: found in dvc.yaml, not assumed."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        for stage in repo.index.stages:
            for out in stage.outs:
                out_path = Path(out.fs_path).resolve()
                if input_dir == out_path or out_path in input_dir.parents:
                    return stage_address(stage, root)
    return None


@task(cache_policy=NO_CACHE, task_run_name="merge new interactions")
def merge_new_interactions(repo_root: str, files: list[str], inbox: str | None) -> int:
    """Append new interaction files (and inbox files) to the dataset; record the raw folder's new state in DVC."""
    log = get_run_logger()
    root = Path(repo_root)
    params = load_params(root / "params.yaml").ingest
    inbox_dir = root / inbox if inbox else None
    pending = [Path(f) if Path(f).is_absolute() else root / f for f in files]
    if inbox_dir is not None and inbox_dir.is_dir():
        pending += sorted(p for p in inbox_dir.iterdir() if p.is_file() and p.suffix.lower() in INBOX_SUFFIXES)
    if not pending:
        log.info("no new interactions")
        return 0
    if params.source != "generic":
        raise InputError("ingest.source", f"is {params.source!r}: new interactions can only be merged into a "
                                          "generic dataset (ingest.source: generic)")
    input_dir = (root / params.input_dir).resolve()
    target = input_dir / params.interactions_file
    total = 0
    for path in pending:
        rows = append_interactions(target, path, params)
        total += rows
        log.info("appended %d interactions from %s to %s", rows, path, target)
        if inbox_dir is not None and path.parent == inbox_dir:
            done = inbox_dir / "merged"
            done.mkdir(exist_ok=True)
            shutil.move(str(path), done / path.name)
    owner = raw_input_stage(root, input_dir)
    if owner:
        code, lines = run_dvc(root, ["--wait-for-lock", "commit", "--force", owner], log.info)
        if code != 0:
            raise StageFailed(f"dvc commit {owner}", code, lines[-1] if lines else "dvc commit failed")
        log.info("recorded the new %s as %s's output", params.input_dir, owner)
    return total


@flow(name="llara-retrain", log_prints=True)
def retrain(
    repo_root: str = ".",
    new_interactions: list[str] | None = None,
    inbox: str | None = None,
    targets: list[str] | None = None,
) -> dict[str, str]:
    """Merge new interactions, then reproduce the pipeline: DVC reruns only the stages the new data affects.

    Args:
        repo_root: the repository (holds dvc.yaml and params.yaml).
        new_interactions: interaction files to append (paths relative to repo_root or absolute).
        inbox: a folder (relative to repo_root) whose .csv/.tsv/.parquet files are merged and moved to merged/.
        targets: stages to reproduce (default: the whole pipeline).
    """
    root = resolve_root(repo_root)
    with workspace_lock(root, get_run_logger().info):
        merge_new_interactions(str(root), list(new_interactions or []), inbox)
        return pipeline(repo_root=str(root), targets=targets)
