"""The pipeline as a Prefect flow: one task run per DVC stage, the graph read from dvc.yaml.

Stages start as soon as their upstream stages finish (independent ones in parallel, DVC's lock serializing the
bookkeeping); DVC decides what is up to date. ``fetch`` (a download) is retried; a stage exiting 2 (bad input)
fails at once with its one-line error. After the run the metrics files are published as a markdown artifact.
"""

from __future__ import annotations

import collections
import concurrent.futures
import json
import os
from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger
from prefect.task_runners import ThreadPoolTaskRunner

from flows.dvc_stages import StageFailed, StageResult, load_stage_graph, push, run_stage, stage_name
from flows.env import apply_env_defaults
from flows.workspace import params_overrides, resolve_root, workspace_lock
from llara import champion
from llara.metrics_files import metrics_markdown

apply_env_defaults()

DEFAULT_RETRIES = {"fetch": 2}  # network downloads; every other stage is deterministic compute
RETRY_DELAY_S = 20
# A stage still running after this long is stopped with its processes and fails the run (per stage name or address
# in the flow's ``timeouts``; this default for the others). The long CPU profile trains ~8 h.
STAGE_TIMEOUT_S = float(os.environ.get("LLARA_STAGE_TIMEOUT_S", str(12 * 3600)))
MAX_PARALLEL_STAGES = int(os.environ.get("LLARA_MAX_PARALLEL_STAGES", "4"))
DONE = ("ran", "skipped", "restored")
METRICS_ARTIFACT_KEY = "pipeline-metrics"
CHAMPION_ARTIFACT_KEY = "champion"
CHAMPION_METRICS = Path("metrics/champion.json")


def _retry_unless_bad_input(task, task_run, state) -> bool:
    """Prefect retry condition: never retry bad input (exit 2): the same data would fail again."""
    try:
        state.result()
    except StageFailed as exc:
        return not exc.bad_input
    except Exception:
        return True
    return False


@task(cache_policy=NO_CACHE, retry_condition_fn=_retry_unless_bad_input, log_prints=False)
def dvc_stage(repo_root: str, stage: str, force: bool = False, timeout_s: float | None = None) -> StageResult:
    """Reproduce ONE DVC stage; its output is streamed into this task run's log."""
    log = get_run_logger()

    def emit(line: str) -> None:
        (log.error if line.startswith(("error: ", "ERROR: ")) else log.info)(line)

    result = run_stage(Path(repo_root), stage, emit, force=force, timeout_s=timeout_s)
    log.info("stage %s: %s in %.1f s", stage, result.status, result.seconds)
    return result


def publish_metrics(root: Path, key: str = METRICS_ARTIFACT_KEY) -> str:
    """Markdown table of every ``metrics/*.json`` as a Prefect artifact (missing files show as "not run")."""
    files = {p.stem: p.relative_to(root) for p in sorted((root / "metrics").glob("*.json"))
             if p.name != CHAMPION_METRICS.name}
    text = "## Metrics (value [95% CI] n)\n\n"
    text += metrics_markdown({k: root / v for k, v in files.items()}) if files else "_no metrics files yet_\n"
    create_markdown_artifact(markdown=text, key=key, description=f"metrics/*.json of {root}")
    return text


def publish_champion(root: Path, statuses: dict[str, str], push_remote: bool, log) -> dict | None:
    """After stage ``promote`` ran: the comparison and decision as a markdown artifact, and ``dvc push`` of a new
    champion to the default remote (configured as a local directory outside the workspace if there is none)."""
    path = root / CHAMPION_METRICS
    if statuses.get("promote") not in ("ran", "restored") or not path.is_file():
        return None
    data = json.loads(path.read_text())
    create_markdown_artifact(markdown=champion.markdown(data), key=CHAMPION_ARTIFACT_KEY,
                             description="champion/challenger: comparison, decision, history")
    decision = data.get("decision", {})
    log(f"champion: {decision.get('event')} {decision.get('version')}: {decision.get('reason')}")
    if push_remote and decision.get("event") == "promoted":
        remote = push(root, log)
        log(f"pushed champion {decision.get('version')} and the pipeline's outputs to DVC remote {remote}")
    return data


def run_graph(root: Path, targets: list[str] | None, force: bool, retries: dict[str, int],
              retry_delay_s: float = RETRY_DELAY_S, timeouts: dict[str, float] | None = None,
              statuses: dict[str, str] | None = None) -> dict[str, str]:
    """Run one task per stage, each submitted as soon as its upstream stages completed (``wait_for`` records the
    edges for the UI; no worker slot is spent waiting). After a failure nothing new starts (like ``dvc repro``);
    running stages finish, then the first failure is raised. Returns {stage: ran|skipped|restored|failed|not run},
    also kept in ``statuses`` when given (what ran before a failure)."""
    log = get_run_logger()
    graph = load_stage_graph(root, targets)
    log.info("stages (%d): %s", len(graph.order), ", ".join(graph.order))
    pending = [s for s in graph.order if graph.runnable[s]]  # .dvc data sources have nothing to reproduce
    statuses = {} if statuses is None else statuses
    statuses.update({s: "skipped" for s in graph.order if not graph.runnable[s]})
    futures: dict[str, object] = {}
    running: dict[concurrent.futures.Future, str] = {}
    first_failure: BaseException | None = None
    while pending or running:
        ready = [] if first_failure else [s for s in pending if all(statuses.get(u) in DONE for u in graph.upstream[s])]
        for stage in ready:
            pending.remove(stage)
            runner = dvc_stage.with_options(
                name=f"dvc {stage}", task_run_name=stage, retry_delay_seconds=retry_delay_s,
                retries=retries.get(stage, retries.get(stage_name(stage), 0)),
            )
            upstream = [futures[u] for u in graph.upstream[stage] if u in futures]
            timeout_s = (timeouts or {}).get(stage, (timeouts or {}).get(stage_name(stage), STAGE_TIMEOUT_S))
            futures[stage] = runner.submit(str(root), stage, force, timeout_s, wait_for=upstream)
            running[futures[stage].wrapped_future] = stage
        if not running:
            break  # what is left waits on a failed stage
        finished, _ = concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED)
        for wrapped in finished:
            stage = running.pop(wrapped)
            future = futures[stage]
            future.wait()  # records the final state (else .state asks the API, which may lag)
            if future.state.is_completed():
                statuses[stage] = future.result().status
                log.info("[%d/%d] %s: %s", len(statuses), len(graph.order), stage, statuses[stage])
                continue
            statuses[stage] = "failed"
            try:
                future.result()
            except BaseException as exc:  # noqa: BLE001 - re-raised below as the flow's failure
                first_failure = first_failure or exc
    statuses.update({s: "not run" for s in pending})
    counts = collections.Counter(statuses.values())
    log.info("summary: %s", ", ".join(f"{n} {status}" for status, n in sorted(counts.items())))
    if first_failure is not None:
        raise first_failure
    return {s: statuses[s] for s in graph.order}


@flow(name="llara-pipeline", task_runner=ThreadPoolTaskRunner(max_workers=MAX_PARALLEL_STAGES), log_prints=True)
def pipeline(
    repo_root: str = ".",
    targets: list[str] | None = None,
    overrides: list[str] | None = None,
    force: bool = False,
    retries: dict[str, int] | None = None,
    retry_delay_s: float = RETRY_DELAY_S,
    timeouts: dict[str, float] | None = None,
    push_remote: bool = True,
) -> dict[str, str]:
    """Reproduce the DVC pipeline (or ``targets`` and what they need) stage by stage.

    Args:
        repo_root: the repository (holds dvc.yaml and params.yaml).
        targets: stages to reproduce with their upstream stages (``split``, ``split@paper``); all when empty.
        overrides: ``-S``-style ``key=value`` param overrides for this run only (allow-listed keys, see
            docs/operations.md; params.yaml is never written: the run happens in a scratch copy).
        force: reproduce even up-to-date stages (``dvc repro --force``).
        retries: retries per stage (name or address) on failures other than bad input (default: fetch 2).
        retry_delay_s: seconds between retries.
        timeouts: seconds per stage (name or address) before it is stopped and fails the run (default 12 h,
            ``$LLARA_STAGE_TIMEOUT_S``).
        push_remote: after a promotion, ``dvc push`` to the default remote (docs/operations.md).
    """
    log = get_run_logger()
    root = resolve_root(repo_root)
    retries = DEFAULT_RETRIES if retries is None else retries
    statuses: dict[str, str] = {}
    with workspace_lock(root, log.info):
        try:
            with params_overrides(root, overrides, log.info) as workdir:
                statuses = run_graph(workdir, targets, force, retries, retry_delay_s, timeouts, statuses)
        except BaseException:
            if not overrides:  # stages ran in the workspace itself: a promotion before the failure stands, so it
                try:          # is announced and pushed like any other (with overrides nothing was adopted)
                    publish_champion(root, statuses, push_remote, log.info)
                except Exception as exc:  # noqa: BLE001 - the stage's failure is the one to raise
                    log.error("publishing the champion after the failure failed too: %s", exc)
            raise
        publish_metrics(root)
        publish_champion(root, statuses, push_remote, log.info)
    return statuses
