"""End to end against a REAL Prefect server on 127.0.0.1 (random port, its own PREFECT_HOME): `python -m flows.serve`
registers the deployments, a run is triggered through the REST API, and it publishes the metrics artifact.
Everything started here is killed (process groups) in a finally, within a bounded time."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _flow_helpers import child_env, make_workspace  # noqa: E402

pytestmark = pytest.mark.integration

STARTUP_TIMEOUT_S = 150
RUN_TIMEOUT_S = 240


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(what: str, check, timeout_s: float, procs: list[subprocess.Popen], logs: list[Path]):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for proc in procs:
            if proc.poll() is not None:
                pytest.fail(f"{proc.args[:4]} exited with {proc.returncode} while waiting for {what}:\n" + _tails(logs))
        try:
            result = check()
            if result:
                return result
        except httpx.HTTPError:
            pass
        time.sleep(1)
    pytest.fail(f"timed out after {timeout_s} s waiting for {what}:\n" + _tails(logs))


def _tails(logs: list[Path]) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in logs if p.exists())


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM the process group, SIGKILL it after 15 s."""
    for sig, wait_s in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def test_process_work_pool_worker_runs_a_deployment(tmp_path: Path):
    """prefect.yaml as documented: create the process pool, `prefect deploy` from the workspace, trigger a run through
    the API and let `prefect worker start --run-once` pick it up and run it in the recorded directory."""
    ws = make_workspace(tmp_path / "ws")
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = child_env(PREFECT_HOME=str(tmp_path / "prefect-home"), PREFECT_API_URL=api,
                    PREFECT_SERVER_API_HOST="127.0.0.1", PREFECT_UI_ENABLED="false", PREFECT_WORKER_QUERY_SECONDS="2")
    procs: list[subprocess.Popen] = []
    logs = [tmp_path / "server.log", tmp_path / "cli.log", tmp_path / "worker.log"]

    def start(cmd: list[str], log: Path) -> subprocess.Popen:
        proc = subprocess.Popen(cmd, cwd=ws, env=env, stdout=open(log, "a"), stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        procs.append(proc)
        return proc

    def cli(*args: str) -> None:
        proc = start([sys.executable, "-m", "prefect", "--no-prompt", *args], logs[1])
        procs.remove(proc)
        assert proc.wait(STARTUP_TIMEOUT_S) == 0, f"prefect {' '.join(args)} failed:\n" + _tails(logs)

    try:
        start([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)], logs[0])
        with httpx.Client(base_url=api, timeout=10) as http:
            _wait_for("the server", lambda: http.get("/health").status_code == 200, STARTUP_TIMEOUT_S, procs, logs)
            cli("work-pool", "create", "llara-process", "--type", "process")
            cli("deploy", "--name", "manual")
            reply = http.get("/deployments/name/llara-pipeline/manual")
            assert reply.status_code == 200, reply.text
            deployment = reply.json()
            assert deployment["work_pool_name"] == "llara-process"
            assert str(ws.resolve()) in json.dumps(deployment["pull_steps"])  # runs where it was deployed
            run = http.post(f"/deployments/{deployment['id']}/create_flow_run",
                            json={"parameters": {"targets": ["ingest"]}})
            assert run.status_code == 201, run.text
            run_id = run.json()["id"]
            worker = start([sys.executable, "-m", "prefect", "worker", "start", "--pool", "llara-process",
                            "--run-once"], logs[2])

            def finished():
                reply = http.get(f"/flow_runs/{run_id}")
                state = reply.json().get("state") if reply.status_code == 200 else None
                return state if state and state["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") else None

            state = _wait_for("the worker's flow run", finished, RUN_TIMEOUT_S, [p for p in procs if p is not worker],
                              logs)
            assert state["type"] == "COMPLETED", state.get("message", "") + _tails(logs)
        assert (ws / "data/ingested/items.parquet").is_file()
    finally:
        for proc in reversed(procs):
            _stop(proc)


def test_serve_trigger_and_artifact(tmp_path: Path):
    ws = make_workspace(tmp_path / "ws")
    (ws / "metrics").mkdir()
    (ws / "metrics/recommenders.json").write_text(json.dumps(
        {"paper": {"sasrec": {"hr@1": {"value": 0.3444, "ci95": [0.25, 0.44], "n": 95}}}}))
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = child_env(PREFECT_HOME=str(tmp_path / "prefect-home"), PREFECT_API_URL=api, PREFECT_RUNNER_POLL_FREQUENCY="2",
                    PREFECT_SERVER_API_HOST="127.0.0.1", PREFECT_UI_ENABLED="false")
    procs: list[subprocess.Popen] = []
    logs = [tmp_path / "server.log", tmp_path / "serve.log"]

    def start(cmd: list[str], log: Path, cwd: Path) -> subprocess.Popen:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        procs.append(proc)
        return proc

    try:
        start([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
              logs[0], tmp_path)
        with httpx.Client(base_url=api, timeout=10) as http:
            _wait_for("the server", lambda: http.get("/health").status_code == 200, STARTUP_TIMEOUT_S, procs, logs)
            start([sys.executable, "-m", "flows.serve", "--root", ".", "--timezone", "Europe/Berlin",
                   "--cron", "30 2 * * *"], logs[1], ws)

            def deployment(name: str):
                response = http.get(f"/deployments/name/{name}")
                return response.json() if response.status_code == 200 else None

            manual = _wait_for("the manual deployment", lambda: deployment("llara-pipeline/manual"), STARTUP_TIMEOUT_S,
                               procs, logs)
            assert manual["parameters"]["repo_root"] == str(ws.resolve())
            nightly = _wait_for("the nightly deployment", lambda: deployment("llara-retrain/nightly"), 30, procs, logs)
            schedule = nightly["schedules"][0]["schedule"]
            assert (schedule["cron"], schedule["timezone"]) == ("30 2 * * *", "Europe/Berlin")
            # serve() registers the deployments one after another: wait for each, do not assume an order.
            _wait_for("the experiments deployment", lambda: deployment("llara-experiments/experiments"), 30, procs, logs)

            def ok_json(response: httpx.Response):
                """The reply's JSON when it succeeded; None for a transient error (e.g. SQLite busy under load)."""
                return response.json() if response.status_code in (200, 201) else None

            run = _wait_for("the flow run to be created", lambda: ok_json(http.post(
                f"/deployments/{manual['id']}/create_flow_run", json={"parameters": {"targets": ["ingest"]}})),
                60, procs, logs)

            def finished():
                state = (ok_json(http.get(f"/flow_runs/{run['id']}")) or {}).get("state")
                return state if state and state["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") else None

            state = _wait_for("the flow run", finished, RUN_TIMEOUT_S, procs, logs)
            assert state["type"] == "COMPLETED", state.get("message")

            task_runs = _wait_for("the task runs", lambda: ok_json(http.post(
                "/task_runs/filter", json={"flow_runs": {"id": {"any_": [run["id"]]}}})), 30, procs, logs)
            assert sorted(t["name"] for t in task_runs) == ["fetch", "ingest"]
            artifacts = _wait_for("the artifacts", lambda: ok_json(http.post(
                "/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [run["id"]]}}})), 30, procs, logs)
            metrics = [a for a in artifacts if a["key"] == "pipeline-metrics"]
            assert metrics and "0.3444 [0.2500, 0.4400] n=95" in metrics[0]["data"]
        assert (ws / "data/ingested/items.parquet").is_file()
    finally:
        for proc in reversed(procs):
            _stop(proc)
