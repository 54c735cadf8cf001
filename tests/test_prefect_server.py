"""End to end against a REAL Prefect server on 127.0.0.1 (random port, its own PREFECT_HOME): `llara serve`
registers the deployments, a run is triggered through the REST API, and it publishes the metrics artifact; a process
work pool's worker runs a `prefect deploy`ed deployment. Everything started here is killed (process groups) in a
finally, within a bounded time."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from _flow_helpers import child_env, make_workspace

pytestmark = pytest.mark.integration

STARTUP_TIMEOUT_S = 150
RUN_TIMEOUT_S = 240
FINAL_STATES = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")


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


def _ok_json(response: httpx.Response):
    """The reply's JSON when it succeeded; None for a transient error (e.g. SQLite busy under load)."""
    return response.json() if response.status_code in (200, 201) else None


def _final_state(http: httpx.Client, run_id: str):
    """The flow run's state once it is final, else None."""
    state = (_ok_json(http.get(f"/flow_runs/{run_id}")) or {}).get("state")
    return state if state and state["type"] in FINAL_STATES else None


@dataclass
class Server:
    """A running Prefect server: its API client, the environment its clients get, the processes started (stopped at
    the end) and their logs (shown when something fails)."""

    http: httpx.Client
    env: dict
    procs: list[subprocess.Popen] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)

    def start(self, cmd: list[str], log: Path, cwd: Path) -> subprocess.Popen:
        if log not in self.logs:
            self.logs.append(log)
        proc = subprocess.Popen(cmd, cwd=cwd, env=self.env, stdout=open(log, "a"), stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        self.procs.append(proc)
        return proc

    def wait_for(self, what: str, check, timeout_s: float, procs: list[subprocess.Popen] | None = None):
        return _wait_for(what, check, timeout_s, self.procs if procs is None else procs, self.logs)


@contextmanager
def prefect_server(tmp_path: Path, **env) -> Iterator[Server]:
    """`prefect server start` on a free port with its own PREFECT_HOME, healthy; everything started is stopped after."""
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = child_env(PREFECT_HOME=str(tmp_path / "prefect-home"), PREFECT_API_URL=api,
                    PREFECT_SERVER_API_HOST="127.0.0.1", PREFECT_UI_ENABLED="false", **env)
    with httpx.Client(base_url=api, timeout=10) as http:
        server = Server(http, env)
        try:
            server.start([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                         tmp_path / "server.log", tmp_path)
            server.wait_for("the server", lambda: http.get("/health").status_code == 200, STARTUP_TIMEOUT_S)
            yield server
        finally:
            for proc in reversed(server.procs):
                _stop(proc)


def test_process_work_pool_worker_runs_a_deployment(tmp_path: Path):
    """prefect.yaml as documented: create the process pool, `prefect deploy` from the workspace, trigger a run through
    the API and let `prefect worker start --run-once` pick it up and run it in the recorded directory."""
    ws = make_workspace(tmp_path / "ws")
    with prefect_server(tmp_path, PREFECT_WORKER_QUERY_SECONDS="2") as server:
        http = server.http

        def cli(*args: str) -> None:
            proc = server.start([sys.executable, "-m", "prefect", "--no-prompt", *args], tmp_path / "cli.log", ws)
            server.procs.remove(proc)
            assert proc.wait(STARTUP_TIMEOUT_S) == 0, f"prefect {' '.join(args)} failed:\n" + _tails(server.logs)

        cli("work-pool", "create", "llara-process", "--type", "process")
        cli("deploy", "--name", "manual")
        reply = http.get("/deployments/name/llara-pipeline/manual")
        assert reply.status_code == 200, reply.text
        deployment = reply.json()
        assert deployment["work_pool_name"] == "llara-process"
        assert str(ws.resolve()) in json.dumps(deployment["pull_steps"])  # runs where it was deployed
        run = http.post(f"/deployments/{deployment['id']}/create_flow_run", json={"parameters": {"targets": ["ingest"]}})
        assert run.status_code == 201, run.text
        run_id = run.json()["id"]
        worker = server.start([sys.executable, "-m", "prefect", "worker", "start", "--pool", "llara-process",
                               "--run-once"], tmp_path / "worker.log", ws)
        state = server.wait_for("the worker's flow run", lambda: _final_state(http, run_id), RUN_TIMEOUT_S,
                                [p for p in server.procs if p is not worker])  # --run-once: the worker exits
        assert state["type"] == "COMPLETED", state.get("message", "") + _tails(server.logs)
    assert (ws / "data/ingested/items.parquet").is_file()


def test_serve_trigger_and_artifact(tmp_path: Path):
    ws = make_workspace(tmp_path / "ws")
    (ws / "metrics").mkdir()
    (ws / "metrics/recommenders.json").write_text(json.dumps(
        {"paper": {"sasrec": {"hr@1": {"value": 0.3444, "ci95": [0.25, 0.44], "n": 95}}}}))
    with prefect_server(tmp_path, PREFECT_RUNNER_POLL_FREQUENCY="2") as server:
        http = server.http
        server.start([sys.executable, "-m", "llara", "serve", "--root", ".", "--timezone", "Europe/Berlin",
                      "--cron", "30 2 * * *"], tmp_path / "serve.log", ws)

        def deployment(name: str):
            return _ok_json(http.get(f"/deployments/name/{name}"))

        manual = server.wait_for("the manual deployment", lambda: deployment("llara-pipeline/manual"), STARTUP_TIMEOUT_S)
        assert manual["parameters"]["repo_root"] == str(ws.resolve())
        nightly = server.wait_for("the nightly deployment", lambda: deployment("llara-retrain/nightly"), 30)
        schedule = nightly["schedules"][0]["schedule"]
        assert (schedule["cron"], schedule["timezone"]) == ("30 2 * * *", "Europe/Berlin")
        # serve() registers the deployments one after another: wait for each, do not assume an order.
        server.wait_for("the experiments deployment", lambda: deployment("llara-experiments/experiments"), 30)

        run = server.wait_for("the flow run to be created", lambda: _ok_json(http.post(
            f"/deployments/{manual['id']}/create_flow_run", json={"parameters": {"targets": ["ingest"]}})), 60)
        state = server.wait_for("the flow run", lambda: _final_state(http, run["id"]), RUN_TIMEOUT_S)
        assert state["type"] == "COMPLETED", state.get("message")

        task_runs = server.wait_for("the task runs", lambda: _ok_json(http.post(
            "/task_runs/filter", json={"flow_runs": {"id": {"any_": [run["id"]]}}})), 30)
        assert sorted(t["name"] for t in task_runs) == ["fetch", "ingest"]
        artifacts = server.wait_for("the artifacts", lambda: _ok_json(http.post(
            "/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [run["id"]]}}})), 30)
        metrics = [a for a in artifacts if a["key"] == "pipeline-metrics"]
        assert metrics and "0.3444 [0.2500, 0.4400] n=95" in metrics[0]["data"]
    assert (ws / "data/ingested/items.parquet").is_file()
