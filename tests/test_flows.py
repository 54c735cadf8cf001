"""flows/: the DVC graph, stage runs, overrides, locking, and the Prefect pipeline flow on a tiny DVC repo
(stages are small python scripts: parallel sleepers, a flaky one, one that reports bad input)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import textwrap
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

sys.path.insert(0, str(Path(__file__).parent))
from _flow_helpers import child_env  # noqa: E402

DVC_YAML = """
stages:
  make:
    foreach: [a, b]
    do:
      cmd: python scripts.py make ${item}
      deps:
        - scripts.py
      outs:
        - out/${item}.txt
  join:
    cmd: python scripts.py join
    deps: [out/a.txt, out/b.txt]
    outs: [joined.txt]
  flaky:
    cmd: python scripts.py flaky
    outs: [flaky.txt]
  bad:
    cmd: python scripts.py bad
    outs: [bad.txt]
  slow:
    cmd: python scripts.py slow
    params: [split.seed]
    outs: [slow.txt]
"""

SCRIPTS = '''
import json, sys, time
from pathlib import Path

def attempt(name):
    path = Path("attempts") / name
    path.parent.mkdir(exist_ok=True)
    count = int(path.read_text()) + 1 if path.exists() else 1
    path.write_text(str(count))
    return count

what = sys.argv[1]
if what == "make":
    name = sys.argv[2]
    start = time.time()
    time.sleep(1.5)
    Path("out").mkdir(exist_ok=True)
    Path(f"out/{name}.txt").write_text(name)
    Path("times").mkdir(exist_ok=True)
    Path(f"times/{name}.json").write_text(json.dumps([start, time.time()]))
elif what == "join":
    Path("joined.txt").write_text(Path("out/a.txt").read_text() + Path("out/b.txt").read_text())
elif what == "flaky":
    if attempt("flaky") == 1:
        print("error: download interrupted", file=sys.stderr)
        sys.exit(1)
    Path("flaky.txt").write_text("ok")
elif what == "slow":  # records its pid, then runs until stopped
    Path(sys.argv[0]).resolve().parent.joinpath("slow.pid").write_text(str(__import__("os").getpid()))
    time.sleep(300)
    Path("slow.txt").write_text("done")
elif what == "bad":
    attempt("bad")
    print("error: data.csv: row 3: column 'user' is not an integer", file=sys.stderr)
    sys.exit(2)
'''


@pytest.fixture()
def mini_repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    (root / "dvc.yaml").write_text(DVC_YAML)
    (root / "scripts.py").write_text(textwrap.dedent(SCRIPTS))
    (root / "params.yaml").write_text((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=root, check=True, env=child_env())
    return root


@pytest.fixture(scope="module")
def prefect_api():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        yield


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
def test_cli_plain_dvc_and_one_line_errors(mini_repo: Path):
    env = child_env()
    ok = subprocess.run([sys.executable, "-m", "flows", "run", "--no-prefect", "--root", str(mini_repo), "make@a"],
                        capture_output=True, text=True, env=env, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert "Running stage 'make@a'" in ok.stdout and (mini_repo / "out/a.txt").is_file()
    bad = subprocess.run([sys.executable, "-m", "flows", "run", "--no-prefect", "--root", str(mini_repo), "bad"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1] == ("error: stage 'bad': data.csv: row 3: column 'user' is not "
                                                   "an integer")
    assert "Traceback" not in bad.stderr
    missing = subprocess.run([sys.executable, "-m", "llara", "run", "--no-prefect", "--root", str(mini_repo / "nope")],
                             capture_output=True, text=True, env=env, timeout=60)
    assert missing.returncode == 2 and missing.stderr.startswith("error: ") and "no dvc.yaml" in missing.stderr


def test_cli_help_lists_run_serve_report():
    """`llara run|serve --help` show the options flows/cli.py defines (forwarded to `python -m flows`)."""
    options = {"run": ["--no-prefect", "--set-param", "--force"], "serve": ["--cron", "--timezone", "--inbox"],
               "report": ["--chart-metric"]}
    for command, expected in options.items():
        result = subprocess.run([sys.executable, "-m", "llara", command, "--help"], capture_output=True, text=True,
                                env=child_env(), timeout=60)
        assert result.returncode == 0 and f"usage: llara {command}" in result.stdout
        assert all(option in result.stdout for option in expected), result.stdout
    bad = subprocess.run([sys.executable, "-m", "llara", "run", "--no-such-option"], capture_output=True, text=True,
                         env=child_env(), timeout=60)
    assert bad.returncode == 2 and bad.stderr.strip() == "error: llara: unrecognized arguments: --no-such-option"


def test_serve_defaults_match_prefect_yaml():
    """The nightly schedule is defined once (flows/serve.py); prefect.yaml's deployment must say the same."""
    from flows.cli import build_parser
    from flows.serve import DEFAULT_INBOX, NIGHTLY_CRON

    args = build_parser().parse_args(["serve"])
    assert (args.cron, args.inbox) == (NIGHTLY_CRON, DEFAULT_INBOX)
    config = yaml.safe_load((Path(__file__).resolve().parents[1] / "prefect.yaml").read_text())
    nightly = next(d for d in config["deployments"] if d["name"] == "nightly")
    assert nightly["schedules"][0]["cron"] == NIGHTLY_CRON and nightly["parameters"]["inbox"] == DEFAULT_INBOX



def test_experiment_variants_checked_before_running(mini_repo: Path):
    from flows.experiments import Variant, check_variants, comparison_markdown

    check_variants(mini_repo, [Variant(name="a", overrides=["split.seed=1"]), Variant(name="b")])
    with pytest.raises(InputError, match="unique"):
        check_variants(mini_repo, [Variant(name="a"), Variant(name="a")])
    with pytest.raises(InputError, match="letters, digits"):
        check_variants(mini_repo, [Variant(name="a b")])
    with pytest.raises(InputError, match="split.seed"):
        check_variants(mini_repo, [Variant(name="a", overrides=["split.seed=-5"])])
    table = comparison_markdown({"a": {"m": {"test": {"sasrec": {"hr@1": {"value": 0.25, "ci95": [0.2, 0.3], "n": 8}}}}},
                                 "b": {"m": None}}, "hr@1")
    assert "| a | m | test | sasrec | 0.2500 [0.2000, 0.3000] n=8 |" in table and "| b | | | | _no hr@1 metrics_ |" in table


def test_prefect_yaml_entrypoints_exist():
    import importlib

    config = yaml.safe_load((Path(__file__).resolve().parents[1] / "prefect.yaml").read_text())
    names = [d["name"] for d in config["deployments"]]
    assert len(set(names)) == len(names) and {"manual", "nightly", "experiments"} <= set(names)
    for deployment in config["deployments"]:
        path, function = deployment["entrypoint"].split(":")
        module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
        assert callable(getattr(module, function)), deployment["entrypoint"]
        assert deployment["work_pool"]["name"] == "llara-process"
    nightly = next(d for d in config["deployments"] if d["name"] == "nightly")
    assert nightly["schedules"][0]["cron"] and nightly["schedules"][0]["timezone"]


def test_serve_builds_deployments_with_schedule(mini_repo: Path):
    from flows.serve import build_deployments

    manual, nightly, exps = build_deployments(str(mini_repo), cron="15 4 * * 1-5", timezone="America/New_York")
    assert manual.parameters["repo_root"] == str(mini_repo.resolve()) and not manual.schedules
    schedule = nightly.schedules[0].schedule
    assert (schedule.cron, schedule.timezone) == ("15 4 * * 1-5", "America/New_York")
    assert nightly.parameters["inbox"] == "data/inbox" and exps.name == "experiments"
    with pytest.raises(InputError, match="--cron/--timezone"):
        build_deployments(str(mini_repo), cron="not a cron")


def test_finetune_deps_cover_every_training_module(repo_root: Path):
    """finetune@* lists llara/llm's training modules one by one: each one they import must be listed too."""
    import ast

    stage = yaml.safe_load((repo_root / "dvc.yaml").read_text())["stages"]["finetune"]["do"]
    listed = {Path(d).stem for d in stage["deps"] if d.startswith("llara/llm/")}
    assert {"training", "model", "runs", "prompts", "data"} <= listed
    for name in sorted(listed):
        tree = ast.parse((repo_root / "llara/llm" / f"{name}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("llara.llm"):
                imported = [node.module.split(".")[2]] if node.module.count(".") >= 2 else [a.name for a in node.names]
                assert set(imported) <= listed, f"llara/llm/{name}.py imports {imported}, not in finetune's deps"
    unlisted = {p.stem for p in (repo_root / "llara/llm").glob("*.py")} - listed
    assert unlisted == {"recommend"}  # a new module must be placed on one side


def test_finetune_params_are_every_setting_but_the_variant_list(repo_root: Path):
    from tasks.params import FinetuneParams

    stage = yaml.safe_load((repo_root / "dvc.yaml").read_text())["stages"]["finetune"]["do"]
    keys = {p.split(".", 1)[1] for p in stage["params"] if p.startswith("finetune.")}
    assert keys == set(FinetuneParams.model_fields) - {"variants"}
    assert "llm" in stage["params"]


@pytest.mark.integration
def test_serve_creates_the_failed_runs_automation_and_pins_the_workspace(mini_repo: Path, prefect_api, monkeypatch):
    from prefect.blocks.notifications import SlackWebhook
    from prefect.client.orchestration import get_client

    from flows.serve import AUTOMATION_NAME, FAILED_RUN_EVENTS, ensure_failure_automation
    from flows.workspace import SERVED_ROOT_ENV, resolve_root

    SlackWebhook(url="http://127.0.0.1:9/hook").save("llara-ops", overwrite=True)
    first = ensure_failure_automation("slack-webhook/llara-ops")
    ensure_failure_automation("slack-webhook/llara-ops")  # idempotent: updated, not duplicated
    with get_client(sync_client=True) as client:
        found = client.read_automations_by_name(AUTOMATION_NAME)
    assert len(found) == 1 and found[0].id == first.id and found[0].enabled
    assert set(found[0].trigger.expect) == set(FAILED_RUN_EVENTS)
    assert found[0].trigger.match_related["prefect.resource.id"] in ("prefect.tag.llara", ["prefect.tag.llara"])
    assert found[0].actions[0].type == "send-notification"
    assert str(found[0].actions[0].block_document_id) == str(SlackWebhook.load("llara-ops")._block_document_id)
    with pytest.raises(InputError, match="--notify: 'slack-webhook/nope'"):
        ensure_failure_automation("slack-webhook/nope")
    monkeypatch.setenv(SERVED_ROOT_ENV, str(mini_repo))
    assert resolve_root(str(mini_repo)) == mini_repo.resolve()
    with pytest.raises(InputError, match="runs of these deployments use the served workspace"):
        resolve_root(str(mini_repo.parent))
