"""Deployments served by this process (``llara serve`` / ``python -m flows serve``):

- ``llara-pipeline/manual``: the pipeline, triggered by hand (UI "Run", ``prefect deployment run``, the API);
- ``llara-retrain/nightly``: retraining on a cron schedule (timezone configurable), merging the inbox folder;
- ``llara-experiments/experiments``: the experiment/ablation flow, variants entered in the UI form.

Runs execute in this process's machine and workspace (``--root``). For workers on a process work pool use
``prefect.yaml`` (``prefect deploy --all``) instead; see docs/operations.md.
"""

from __future__ import annotations

from flows.workspace import apply_env_defaults, resolve_root

apply_env_defaults()

NIGHTLY_CRON = "0 3 * * *"  # the nightly retraining: 03:00 (in the deployment's timezone)
DEFAULT_INBOX = "data/inbox"  # where new interaction files are dropped for the nightly run


def build_deployments(root: str, cron: str = NIGHTLY_CRON, timezone: str = "UTC", inbox: str | None = DEFAULT_INBOX,
                      paused: bool = False) -> list:
    """The three RunnerDeployments, parameterized with the absolute workspace path."""
    from prefect.schedules import Cron

    from flows.experiments import experiments
    from flows.pipeline import pipeline
    from flows.retrain import retrain

    workspace = str(resolve_root(root))
    try:
        schedule = Cron(cron, timezone=timezone)
    except Exception as exc:  # bad cron text or unknown timezone
        from llara.errors import InputError

        raise InputError("--cron/--timezone", f"{cron!r} in {timezone!r}: {str(exc).splitlines()[0]}") from None
    return [
        pipeline.to_deployment(
            name="manual", parameters={"repo_root": workspace}, tags=["llara"],
            description="Reproduce the DVC pipeline (or given targets) stage by stage.",
        ),
        retrain.to_deployment(
            name="nightly", schedule=schedule, paused=paused, parameters={"repo_root": workspace, "inbox": inbox},
            tags=["llara", "nightly"], description=f"Merge new interactions from {inbox} and retrain what changed.",
        ),
        experiments.to_deployment(
            name="experiments", parameters={"repo_root": workspace}, tags=["llara", "experiments"],
            description="Run parameter variants as DVC experiments and compare their metrics.",
        ),
    ]


def serve_all(root: str = ".", cron: str = NIGHTLY_CRON, timezone: str = "UTC", inbox: str | None = DEFAULT_INBOX,
              paused: bool = False, limit: int | None = None) -> None:
    """Register the deployments and serve them until interrupted."""
    from prefect import serve

    deployments = build_deployments(root, cron, timezone, inbox, paused)
    serve(*deployments, limit=limit)
