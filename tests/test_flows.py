"""flows/: the DVC graph, stage runs, overrides, locking, and the Prefect pipeline flow on a tiny DVC repo
(stages are small python scripts: parallel sleepers, a flaky one, one that reports bad input)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from flows.dvc_stages import (
    OutputTail, StageFailed, classify, failed_stage, failure_message, iter_output, load_stage_graph, stage_name,
)
from flows.workspace import (
    BACKUP_FILE, overridden_params, params_overrides, restore_interrupted_override, workspace_lock,
)
from llara.errors import InputError

from _flow_helpers import child_env


def test_graph_comes_from_dvc_yaml(mini_repo: Path):
    graph = load_stage_graph(mini_repo)
    assert graph.order.index("join") > max(graph.order.index("make@a"), graph.order.index("make@b"))
    assert graph.upstream["join"] == ["make@a", "make@b"]
    assert graph.upstream["make@a"] == [] and set(graph.order) == {"make@a", "make@b", "join", "flaky", "bad", "slow"}
    assert load_stage_graph(mini_repo, ["join"]).order == ["make@a", "make@b", "join"]
    assert load_stage_graph(mini_repo, ["make"]).order == ["make@a", "make@b"]  # a foreach group
    with pytest.raises(InputError, match=r"stage 'nope': not in the pipeline \(known stages: make, join, flaky, bad, slow\)"):
        load_stage_graph(mini_repo, ["nope"])


def test_output_parsing():
    read_fd, write_fd = os.pipe()
    os.write(write_fd, b"start\n 10%\r 20%\r 30%\r100%\ndone\npartial")
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as stream:
        lines = list(iter_output(stream, progress_interval_s=3600))
    assert lines == ["start", " 10%", "100%", "done", "partial"]  # progress thinned, its final state kept
    error, code = failure_message(["Running stage 'x':", "error: f.csv: row 2: bad", "ERROR: failed to reproduce "
                                   "'x': failed to run: python -m tasks.x, exited with 2"])
    assert (error, code) == ("f.csv: row 2: bad", 2)
    assert failure_message(["ERROR: missing dependency"]) == ("missing dependency", None)
    assert classify("split@paper", ["Running stage 'split@paper':"]) == "ran"
    assert classify("split@paper", ["Stage 'split@paper' didn't change, skipping"]) == "skipped"
    # a long stage: its progress lines push DVC's "Running stage" out of the kept tail, the classification stays
    tail = OutputTail(tail=5)
    for line in ["Running stage 'finetune@hybrid':", *[f"finetune: {k}/240" for k in range(240)], "done"]:
        tail.append(line)
    assert len(tail.lines()) == 6 and tail.lines()[-1] == "done"
    assert classify("finetune@hybrid", tail.lines()) == "ran"
    assert stage_name("sub/dvc.yaml:split@paper") == "split"
    assert failed_stage(["ERROR: failed to reproduce 'split@paper': failed to run: x, exited with 1"]) == "split@paper"


def test_overrides_run_in_a_scratch_copy_and_params_yaml_is_never_written(mini_repo: Path):
    params = mini_repo / "params.yaml"
    original = params.read_bytes()
    with pytest.raises(RuntimeError):
        with params_overrides(mini_repo, ["split.seed=7", "report.top_k=3"], log=lambda m: None) as workdir:
            assert workdir != mini_repo and workdir.parent == mini_repo.parent
            data = yaml.safe_load((workdir / "params.yaml").read_text())
            assert data["split"]["seed"] == 7 and data["report"]["top_k"] == 3
            assert "# movielens | generic" in (workdir / "params.yaml").read_text()  # round-trip YAML keeps comments
            assert (workdir / "scripts.py").read_bytes() == (mini_repo / "scripts.py").read_bytes()
            assert params.read_bytes() == original
            raise RuntimeError("stage crashed")
    assert params.read_bytes() == original and not workdir.exists()
    with params_overrides(mini_repo, [], log=lambda m: None) as workdir:
        assert workdir == mini_repo
    for bad, message in (("split.seed=-1", "split.seed"), ("split.seed", "expected key=value"),
                         ("split.nosuch=1", "nosuch")):
        with pytest.raises(InputError, match=message):
            with params_overrides(mini_repo, [bad], log=lambda m: None):
                pass
    assert params.read_bytes() == original
    assert [p.name for p in mini_repo.parent.iterdir()] == [mini_repo.name]


@pytest.mark.parametrize("override, reason", [
    ("+llm.trust_remote_code=true", "llm.trust_remote_code may not be overridden"),
    ("llm.model=/etc", "llm.model='/etc': a model must be the configured one"),
    ("llm.model=someone/else", "a model must be the configured one"),
    ("+finetune.profiles.default.llm=../../outside", "finetune.profiles.default.llm='../../outside'"),
    ("+finetune.prompts=/etc/passwd", "prompts must be movie|game|artist|item or a file inside the workspace"),
    ("+ingest.input_dir=/", "ingest.input_dir may not be overridden"),
    ("+report.out=/tmp/elsewhere.html", "report.out may not be overridden"),
    ("~split", "split.heldout_users may not be overridden"),  # deleting a section changes what it held
])
def test_forbidden_overrides_are_refused_naming_the_key(mini_repo: Path, override: str, reason: str):
    (mini_repo / "params.yaml").write_text("split:\n  seed: 42\n  heldout_users: null\nllm:\n  model: smollm2\n")
    with pytest.raises(InputError, match=re.escape(reason)):
        overridden_params(mini_repo / "params.yaml", [override])


def test_allowed_model_overrides(mini_repo: Path):
    params = yaml.safe_load((mini_repo / "params.yaml").read_text())  # the repository's
    params["llm"]["model"] = "smollm2"
    params["finetune"]["profiles"]["paper"]["llm"] = "org/model"
    (mini_repo / "params.yaml").write_text(yaml.safe_dump(params))
    (mini_repo / "models" / "mine").mkdir(parents=True)
    for ok in ("llm.model=org/model", "llm.model=models/mine", "llm.model=smollm2", "finetune.profiles.paper.llm=null"):
        overridden_params(mini_repo / "params.yaml", [ok])


def test_interrupted_override_of_an_older_version_is_restored(mini_repo: Path):
    (mini_repo / BACKUP_FILE).parent.mkdir(parents=True, exist_ok=True)
    (mini_repo / BACKUP_FILE).write_text("split:\n  seed: 1\n")
    (mini_repo / "params.yaml").write_text("split:\n  seed: 999\n")
    assert restore_interrupted_override(mini_repo, log=lambda m: None)
    assert (mini_repo / "params.yaml").read_text() == "split:\n  seed: 1\n"
    assert not (mini_repo / BACKUP_FILE).exists()


def test_workspace_lock_is_reentrant_exclusive_and_times_out(mini_repo: Path):
    probe = ("import fcntl,sys; f=open(sys.argv[1],'a+')\n"
             "try: fcntl.flock(f, fcntl.LOCK_EX|fcntl.LOCK_NB); print('free')\nexcept BlockingIOError: print('busy')")
    lock_file = mini_repo / ".dvc/tmp/llara-workspace.lock"

    def other_process() -> str:
        return subprocess.run([sys.executable, "-c", probe, str(lock_file)], capture_output=True, text=True).stdout.strip()

    with workspace_lock(mini_repo):
        with workspace_lock(mini_repo):  # a subflow in the same process
            assert other_process() == "busy"
        assert other_process() == "busy"
    assert other_process() == "free"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom flows.workspace import workspace_lock\n"
                               "from pathlib import Path\nwith workspace_lock(Path(sys.argv[1])):\n"
                               "    print('held', flush=True); time.sleep(60)", str(mini_repo)],
                              stdout=subprocess.PIPE, text=True, env=child_env())
    try:
        assert holder.stdout.readline().strip() == "held"
        messages = []
        with pytest.raises(InputError, match=rf"still holds this workspace after 1 s \(host .* pid {holder.pid} since"):
            with workspace_lock(mini_repo, messages.append, timeout_s=1):
                pass
        assert "waiting up to 1 s" in messages[0]
    finally:
        holder.kill()
        holder.wait()
    with workspace_lock(mini_repo, timeout_s=5):  # released by the holder's death (SIGKILL)
        pass


@pytest.mark.integration
def test_pipeline_flow_parallel_skip_retry_bad_input(mini_repo: Path, prefect_api):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from flows.pipeline import METRICS_ARTIFACT_KEY, pipeline

    (mini_repo / "metrics").mkdir()
    (mini_repo / "metrics/demo.json").write_text(json.dumps(
        {"test": {"sasrec": {"hr@1": {"value": 0.123456, "ci95": [0.1, 0.15], "n": 50}}}}))
    assert pipeline(repo_root=str(mini_repo), targets=["join"]) == {"make@a": "ran", "make@b": "ran", "join": "ran"}
    a, b = (json.loads((mini_repo / f"times/{n}.json").read_text()) for n in "ab")
    assert max(a[0], b[0]) < min(a[1], b[1]), "independent stages did not overlap"
    assert pipeline(repo_root=str(mini_repo), targets=["join"]) == {"make@a": "skipped", "make@b": "skipped",
                                                                    "join": "skipped"}
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[METRICS_ARTIFACT_KEY])))
    assert any("0.1235 [0.1000, 0.1500] n=50" in str(a.data) for a in artifacts)

    assert pipeline(repo_root=str(mini_repo), targets=["flaky"], retries={"flaky": 1}, retry_delay_s=0) == {"flaky": "ran"}
    assert (mini_repo / "attempts/flaky").read_text() == "2"

    with pytest.raises(StageFailed) as failed:
        pipeline(repo_root=str(mini_repo), targets=["bad"], retries={"bad": 3}, retry_delay_s=0)
    assert failed.value.bad_input and failed.value.error == "data.csv: row 3: column 'user' is not an integer"
    assert (mini_repo / "attempts/bad").read_text() == "1", "bad input must not be retried"


def _wait_for(path_glob, root: Path, timeout_s: float = 120) -> Path:
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = [p for p in root.glob(path_glob) if p.is_file() and p.read_text().strip()]
        if found:
            return found[0]
        time.sleep(0.2)
    raise AssertionError(f"nothing matched {path_glob} in {root} after {timeout_s} s")


def _gone(pid: int, timeout_s: float = 20) -> bool:
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        if Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":  # a zombie waiting for its (new) parent
            return True
        time.sleep(0.2)
    return False


@pytest.mark.integration
def test_sigkill_of_the_flow_stops_its_stages_and_leaves_params_yaml_alone(mini_repo: Path):
    """The issue's reproduction: `run -S ... <stage>` killed with SIGKILL mid-stage. Nothing keeps running
    unsupervised, params.yaml never carried the override, and the next run cleans up and works."""
    import signal

    original = (mini_repo / "params.yaml").read_bytes()
    flow = subprocess.Popen([sys.executable, "-m", "flows", "run", "--root", str(mini_repo), "-S", "split.seed=5", "slow"],
                            env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # its group: the temporary Prefect server it starts, ended below
    try:
        pid_file = _wait_for(".repo.llara-run-*/slow.pid", mini_repo.parent, timeout_s=180)
        stage_pid = int(pid_file.read_text())
        scratch_params = yaml.safe_load((pid_file.parent / "params.yaml").read_text())
        assert scratch_params["split"]["seed"] == 5 and (mini_repo / "params.yaml").read_bytes() == original
        os.kill(flow.pid, signal.SIGKILL)
        flow.wait(30)
        assert _gone(stage_pid), "the stage outlived the flow that started it"
    finally:
        flow.kill()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(flow.pid, signal.SIGKILL)  # Prefect's temporary API server outlives a SIGKILLed flow
    assert (mini_repo / "params.yaml").read_bytes() == original
    leftover = list(mini_repo.parent.glob(".repo.llara-run-*"))
    ok = subprocess.run([sys.executable, "-m", "flows", "run", "--no-prefect", "--root", str(mini_repo),
                         "-S", "split.seed=6", "make@a"], capture_output=True, text=True, env=child_env(), timeout=180)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert leftover and not any(p.exists() for p in leftover), "the killed run's scratch copy was not removed"
    assert "removed" in ok.stdout and (mini_repo / "out/a.txt").read_text() == "a"  # adopted from the scratch run
    assert (mini_repo / "params.yaml").read_bytes() == original


@pytest.mark.integration
def test_a_stage_past_its_timeout_is_stopped_and_fails_the_run(mini_repo: Path, prefect_api):
    from flows.pipeline import pipeline

    with pytest.raises(StageFailed, match=r"stage 'slow' failed \(exit 124\): timed out after 3 s") as failed:
        pipeline(repo_root=str(mini_repo), targets=["slow"], timeouts={"slow": 3})
    assert not failed.value.bad_input
    assert _gone(int((mini_repo / "slow.pid").read_text())), "the timed-out stage kept running"
    assert not (mini_repo / "slow.txt").exists()


@pytest.mark.integration
def test_a_forbidden_override_fails_the_flow_before_any_stage(mini_repo: Path, prefect_api):
    from flows.pipeline import pipeline

    original = (mini_repo / "params.yaml").read_bytes()
    with pytest.raises(InputError, match=r"llm.trust_remote_code may not be overridden for one run"):
        pipeline(repo_root=str(mini_repo), targets=["join"], overrides=["llm.trust_remote_code=true"])
    assert not (mini_repo / "out").exists() and not (mini_repo / "dvc.lock").exists(), "a stage ran"
    assert (mini_repo / "params.yaml").read_bytes() == original
    cli = subprocess.run([sys.executable, "-m", "flows", "run", "--no-prefect", "--root", str(mini_repo),
                          "-S", "llm.model=/somewhere/else", "join"], capture_output=True, text=True, env=child_env(),
                         timeout=120)
    assert cli.returncode == 2 and not (mini_repo / "out").exists()
    assert cli.stderr.strip().splitlines()[-1].startswith("error: -S llm.model=/somewhere/else: llm.model='/some")
    assert "a model must be the configured one" in cli.stderr


@pytest.mark.integration
def test_a_promotion_before_a_later_stage_fails_is_still_announced_and_pushed(mini_repo: Path, prefect_api):
    """Stages run in the workspace itself: when a stage after ``promote`` fails, the promotion stands, so the run
    still publishes the champion artifact and pushes the new champion before it fails."""
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from flows.pipeline import CHAMPION_ARTIFACT_KEY, pipeline

    decision = {"event": "promoted", "version": "v0001", "reason": "no champion yet (mini repo)"}
    summary = {"decision": decision, "current": "v0001", "history": [decision], "comparison": {}}
    (mini_repo / "promote.py").write_text(
        "import json, pathlib\npathlib.Path('champion').mkdir(exist_ok=True)\n"
        "pathlib.Path('champion/CURRENT').write_text('v0001')\npathlib.Path('metrics').mkdir(exist_ok=True)\n"
        f"pathlib.Path('metrics/champion.json').write_text(json.dumps({summary!r}))\n")
    stages = yaml.safe_load((mini_repo / "dvc.yaml").read_text())
    stages["stages"]["promote"] = {"cmd": "python promote.py", "deps": ["promote.py"], "outs": ["champion"],
                                   "metrics": [{"metrics/champion.json": {"cache": False}}]}
    stages["stages"]["recommend"] = {"cmd": "python -c \"import sys; sys.exit('error: recommend: out of memory')\"",
                                     "deps": ["champion"], "outs": ["recs.txt"]}
    (mini_repo / "dvc.yaml").write_text(yaml.safe_dump(stages, sort_keys=False))
    with pytest.raises(StageFailed, match="stage 'recommend' failed"):
        pipeline(repo_root=str(mini_repo), targets=["recommend"], retries={})
    remote = mini_repo.parent / f"{mini_repo.name}-dvc-remote"
    assert remote.is_dir() and any(p.is_file() for p in remote.rglob("*")), "the new champion was not pushed"
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[CHAMPION_ARTIFACT_KEY])))
    assert any("no champion yet (mini repo)" in str(a.data) for a in artifacts)
