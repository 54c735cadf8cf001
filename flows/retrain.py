"""Retraining flow: new interactions arrive -> the inbox merges them into the generic dataset -> DVC reruns only what
the changed input affects (ingest and everything downstream of it; fetch and unrelated stages such as the LLM
download stay skipped).

The merging is the library's inbox (:mod:`llara.data.inbox`, contract in docs/operations.md): files named here
(``new_interactions``) or ready in the inbox folder (the nightly deployment watches ``data/inbox``; a file is ready
once its ``<name>.done`` marker exists) are read by their own reader, validated like ingest before anything is
stored, and added exactly once (a ledger of content hashes) as parquet parts beside the raw files; a bad inbox file
is quarantined with its reason and the run goes on. The raw folder is ``fetch``'s persisted output, so after a merge
the flow records it with ``dvc commit`` (the new raw data is the accepted state of that output, not a reason to fetch
again). With nothing new the flow is a plain pipeline run, i.e. a no-op when everything is up to date.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from flows.dvc_stages import StageFailed, run_dvc, stage_address
from flows.pipeline import pipeline
from flows.env import apply_env_defaults
from flows.workspace import resolve_root, workspace_lock
from llara.data.inbox import GenericDataset, InboxReport, merge_inbox, ready_files
from llara.data.tables import Columns
from llara.errors import InputError
from tasks.params import IngestParams, load_params

apply_env_defaults()


def generic_dataset(root: Path, params: IngestParams) -> GenericDataset:
    c = params.columns
    return GenericDataset((root / params.input_dir).resolve(), params.interactions_file, params.items_file,
                          Columns(c.user, c.item, c.timestamp, c.rating, c.title), params.separator, params.encoding)


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
def merge_new_interactions(repo_root: str, files: list[str], inbox: str | None) -> dict:
    """Merge the named files and the ready inbox files (:func:`llara.data.inbox.merge_inbox`); record the raw
    folder's new state in DVC. Returns the merge report (merged, already merged, quarantined, waiting)."""
    log = get_run_logger()
    root = Path(repo_root)
    params = load_params(root / "params.yaml").ingest
    inbox_dir = root / inbox if inbox else None
    named = [Path(f) if Path(f).is_absolute() else root / f for f in files]
    if params.source != "generic":
        if named or (inbox_dir is not None and ready_files(inbox_dir)[0]):
            raise InputError("ingest.source", f"is {params.source!r}: new interactions can only be merged into a "
                                              "generic dataset (ingest.source: generic)")
        return asdict(InboxReport())
    data = generic_dataset(root, params)
    report = merge_inbox(data, inbox_dir, named, max_bad_rows=params.inbox_max_bad_rows, log=log.info)
    for name, reason in report.quarantined + report.rows_quarantined:
        log.warning("quarantined %s: %s", name, reason)
    lines = report.lines()
    log.info("inbox: %s", "; ".join(lines) if lines else "no new interactions")
    if lines:
        create_markdown_artifact(key="inbox-merge", markdown="\n".join(["# Inbox merge", ""] + [f"- {x}" for x in lines]),
                                 description="files merged, skipped and quarantined by the merge")
    if report.merged:
        owner = raw_input_stage(root, data.input_dir)
        if owner:
            code, lines = run_dvc(root, ["--wait-for-lock", "commit", "--force", owner], log.info)
            if code != 0:
                raise StageFailed(f"dvc commit {owner}", code, lines[-1] if lines else "dvc commit failed")
            log.info("recorded the new %s as %s's output", params.input_dir, owner)
    return asdict(report)


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
        new_interactions: interaction (or ``items*``) files to merge (paths relative to repo_root or absolute); a bad
            one stops the run (exit 2).
        inbox: a folder (relative to repo_root) whose ready files (``<name>.done`` beside them) are merged and moved
            to ``merged/``; a bad one moves to ``quarantine/`` with its reason and the run goes on.
        targets: stages to reproduce (default: the whole pipeline).
    """
    root = resolve_root(repo_root)
    with workspace_lock(root, get_run_logger().info):
        merge_new_interactions(str(root), list(new_interactions or []), inbox)
        return pipeline(repo_root=str(root), targets=targets)
