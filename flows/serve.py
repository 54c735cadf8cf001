"""Deployments served by this process (``llara serve`` / ``python -m flows serve``):

- ``llara-pipeline/manual``: the pipeline, triggered by hand (UI "Run", ``prefect deployment run``, the API);
- ``llara-retrain/nightly``: retraining on a cron schedule (timezone configurable), merging the inbox folder;
- ``llara-experiments/experiments``: the experiment/ablation flow, variants entered in the UI form.

Runs execute in this process's machine and workspace (``--root``; a run asking for another ``repo_root`` is
refused). For workers on a process work pool use ``prefect.yaml`` (``prefect deploy --all``) instead; see
docs/operations.md. With ``--notify BLOCK`` a Prefect automation (``llara-failed-runs``) sends that notification
block a message for every failed, crashed or timed-out run of a flow tagged ``llara``.
"""

from __future__ import annotations

import os

from flows.env import apply_env_defaults
from flows.workspace import SERVED_ROOT_ENV, resolve_root

apply_env_defaults()

NIGHTLY_CRON = "0 3 * * *"  # the nightly retraining: 03:00 (in the deployment's timezone)
DEFAULT_INBOX = "data/inbox"  # where new interaction files are dropped for the nightly run
AUTOMATION_NAME = "llara-failed-runs"
FAILED_RUN_EVENTS = ("prefect.flow-run.Failed", "prefect.flow-run.Crashed", "prefect.flow-run.TimedOut")


def failed_runs_automation(block_document_id) -> "object":
    """A Prefect automation: each failed/crashed/timed-out run of a flow tagged ``llara`` -> the notification block."""
    from prefect.automations import Automation, EventTrigger, SendNotification

    return Automation(
        name=AUTOMATION_NAME,
        description="Notify when a LLaRA flow run (nightly retraining included) fails, crashes or times out.",
        trigger=EventTrigger(
            expect=set(FAILED_RUN_EVENTS), match={"prefect.resource.id": "prefect.flow-run.*"},
            match_related={"prefect.resource.role": "tag", "prefect.resource.id": "prefect.tag.llara"},
            posture="Reactive", threshold=1, within=0,
        ),
        actions=[SendNotification(
            block_document_id=block_document_id,
            subject="LLaRA run {{ flow_run.name }} of {{ flow.name }}: {{ flow_run.state.name }}",
            body="Flow run {{ flow_run.name }} ({{ flow.name }}) ended {{ flow_run.state.name }}: "
                 "{{ flow_run.state.message }}\nThe champion model stays in place. {{ flow_run|ui_url }}",
        )],
    )


def ensure_failure_automation(block: str) -> object:
    """Create or update the ``llara-failed-runs`` automation for the notification block ``block`` (``type/name``,
    as ``prefect block ls`` lists it, e.g. ``slack-webhook/ops``)."""
    from prefect.blocks.core import Block
    from prefect.client.orchestration import get_client

    from llara.errors import InputError

    try:
        document_id = Block.load(block)._block_document_id
    except Exception as exc:  # unknown block type or name
        raise InputError("--notify", f"{block!r}: {str(exc).splitlines()[0]}") from None
    automation = failed_runs_automation(document_id)
    with get_client(sync_client=True) as client:
        existing = client.read_automations_by_name(AUTOMATION_NAME)
        for old in existing[1:]:
            client.delete_automation(old.id)
        if existing:
            client.update_automation(existing[0].id, automation)
            automation.id = existing[0].id
        else:
            automation = automation.create()
    return automation


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
              paused: bool = False, limit: int | None = None, notify: str | None = None) -> None:
    """Register the deployments (and, with ``notify``, the failed-runs automation) and serve them until interrupted."""
    from prefect import serve
    from prefect.logging import get_logger

    deployments = build_deployments(root, cron, timezone, inbox, paused)
    if notify:
        ensure_failure_automation(notify)
        get_logger("llara").info("failed runs notify %s (automation %s)", notify, AUTOMATION_NAME)
    else:
        get_logger("llara").warning("failed runs notify nobody: pass --notify <block type/name> (docs/operations.md)")
    os.environ[SERVED_ROOT_ENV] = str(resolve_root(root))  # runs of these deployments stay in this workspace
    serve(*deployments, limit=limit)
