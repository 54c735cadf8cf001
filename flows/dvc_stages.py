"""DVC plumbing for the flows (Prefect-free): the stage graph read from dvc.yaml, and running ONE stage.

The graph comes from DVC itself (``Repo.index.graph``: the same stages, ``foreach`` expansions like ``split@paper``
and dependency edges that ``dvc repro`` uses), so adding a stage to dvc.yaml adds it to every flow. Each stage runs as
``python -m dvc --wait-for-lock repro --single-item <stage>``: DVC decides whether it is up to date and skips it.
DVC and the stage run in their own process group tied to the flow's life (:mod:`flows.guard`), with a timeout.
"""

from __future__ import annotations

import collections
import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

from flows.guard import PARENT_ENV
from flows.env import subprocess_env
from llara.errors import InputError

BAD_INPUT_EXIT = 2
TIMEOUT_EXIT = 124
PROGRESS_LOG_INTERVAL_S = 10.0  # \r-terminated progress bars (tqdm) are logged at most this often
_EXITED = re.compile(r"exited with (-?\d+)")
_FAILED_STAGE = re.compile(r"failed to reproduce '([^']+)'")


@dataclass(frozen=True)
class StageGraph:
    """Stages in a runnable order (dependencies first) and each stage's direct upstream stages."""

    order: list[str]
    upstream: dict[str, list[str]]
    runnable: dict[str, bool] = field(default_factory=dict)  # False for data sources (``.dvc`` files, no command)


def stage_name(address: str) -> str:
    """``sub/dvc.yaml:split@paper`` -> ``split``: the stage's name in dvc.yaml without file or foreach key."""
    return address.rsplit(":", 1)[-1].split("@", 1)[0]


def stage_address(stage, root: Path) -> str:
    """The stage as ``dvc repro`` names it when run in ``root``: ``name`` (``split@paper``) or ``sub/dvc.yaml:name``."""
    dvcfile = Path(stage.path).resolve().relative_to(root).as_posix()
    return stage.name if dvcfile == "dvc.yaml" else f"{dvcfile}:{stage.name}"


def _absolute_target(target: str, root: Path) -> str:
    """DVC resolves targets against the process's cwd; anchor them at ``root`` instead."""
    file, sep, name = target.rpartition(":")
    return f"{root / file}:{name}" if sep else f"{root / 'dvc.yaml'}:{target}"


def load_stage_graph(root: Path, targets: Iterable[str] | None = None) -> StageGraph:
    """Read dvc.yaml's stage graph through DVC's API, restricted to ``targets`` and everything they depend on.

    A target is anything ``dvc repro`` accepts as a stage: ``ingest``, ``split`` (all ``split@*``), ``split@paper``,
    ``sub/dvc.yaml:stage``. Unknown targets raise :class:`InputError`.
    """
    import networkx as nx
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    root = Path(root).resolve()
    with Repo(str(root)) as repo:
        try:
            graph = repo.index.graph  # edge a -> b: stage a depends on stage b
        except DvcException as exc:
            raise InputError(root / "dvc.yaml", str(exc).splitlines()[0]) from None
        address = {stage: stage_address(stage, root) for stage in graph.nodes}
        position = {stage: i for i, stage in enumerate(repo.index.stages)}
        if targets:
            selected = set()
            for target in targets:
                try:
                    matched = repo.stage.collect(_absolute_target(target, root))
                except DvcException:
                    known = ", ".join(dict.fromkeys(stage_name(address[s]) for s in repo.index.stages if s in address))
                    raise InputError(f"stage {target!r}", f"not in the pipeline (known stages: {known})") from None
                for stage in matched:
                    selected.add(stage)
                    selected.update(nx.descendants(graph, stage))
            graph = graph.subgraph(selected)
        order = [
            address[s]
            for s in nx.lexicographical_topological_sort(graph.reverse(copy=True), key=lambda s: f"{position[s]:08d}")
        ]
        upstream = {
            address[s]: sorted((address[d] for d in graph.successors(s)), key=order.index) for s in graph.nodes
        }
        runnable = {address[s]: not s.is_data_source for s in graph.nodes}
    return StageGraph(order=order, upstream=upstream, runnable=runnable)


@dataclass(frozen=True)
class StageResult:
    stage: str
    status: str  # "ran" | "skipped" | "restored" (DVC's run cache checked the outputs out)
    seconds: float


class StageFailed(Exception):
    """A stage (or DVC around it) failed. ``bad_input`` (exit 2) must never be retried."""

    def __init__(self, stage: str, exit_code: int, error: str):
        self.stage = stage
        self.exit_code = exit_code
        self.error = error
        kind = "bad input" if exit_code == BAD_INPUT_EXIT else f"exit {exit_code}"
        super().__init__(f"stage '{stage}' failed ({kind}): {error}")

    @property
    def bad_input(self) -> bool:
        return self.exit_code == BAD_INPUT_EXIT


def iter_output(stream, progress_interval_s: float = PROGRESS_LOG_INTERVAL_S) -> Iterator[str]:
    """Lines of a subprocess's output as they come; ``\\r`` progress updates are thinned to one per interval."""
    buffer = b""
    last_progress = float("-inf")
    pending_progress = ""
    fd = stream.fileno()
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        buffer += chunk
        while True:
            match = re.search(rb"[\r\n]", buffer)
            if not match:
                break
            piece, sep, buffer = buffer[: match.start()], buffer[match.start() : match.end()], buffer[match.end() :]
            text = piece.decode("utf-8", "replace").rstrip()
            if sep == b"\r":
                if text:
                    pending_progress = text
                    now = time.monotonic()
                    if now - last_progress >= progress_interval_s:
                        last_progress = now
                        pending_progress = ""
                        yield text
            else:
                if text:
                    yield text
                elif pending_progress:  # a bar's final state before its newline
                    yield pending_progress
                pending_progress = ""
    if buffer.strip():
        yield buffer.decode("utf-8", "replace").rstrip()


def failure_message(lines: Iterable[str]) -> tuple[str, int | None]:
    """The stage's own one-line ``error: ...`` (else DVC's ``ERROR: ...``) and the stage's exit code if DVC said."""
    stage_error = dvc_error = None
    exit_code = None
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("error: "):
            stage_error = stripped[len("error: ") :]
        elif stripped.startswith("ERROR: "):
            dvc_error = stripped[len("ERROR: ") :]
            found = _EXITED.search(stripped)
            if found:
                exit_code = int(found.group(1))
    return (stage_error or dvc_error or "no error message (see the stage's log)"), exit_code


def failed_stage(lines: Iterable[str]) -> str | None:
    """The stage DVC names in ``ERROR: failed to reproduce '<stage>'``, if any."""
    for line in reversed(list(lines)):
        found = _FAILED_STAGE.search(line)
        if found:
            return found.group(1)
    return None


def classify(stage: str, lines: Iterable[str]) -> str:
    """What DVC did with ``stage`` according to its output."""
    name = "|".join(re.escape(n) for n in {stage, stage.rsplit(":", 1)[-1]})
    name = f"(?:{name})"
    text = "\n".join(lines)
    if re.search(rf"Stage '{name}' is cached - skipping run", text):
        return "restored"
    if re.search(rf"Running stage '{name}'", text):
        return "ran"
    return "skipped"


def guarded_dvc_command(*args: str) -> list[str]:
    """``dvc`` through :mod:`flows.guard`: killed with its stage commands when the flow process dies."""
    return [sys.executable, "-m", "flows.guard", *args]


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def stop(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    """Stop ``proc`` and everything in its process group (DVC and the stage it runs): SIGTERM, then SIGKILL."""
    _signal_group(proc, signal.SIGTERM)
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        _signal_group(proc, signal.SIGKILL)
        proc.wait()


class OutputTail:
    """The last ``tail`` lines of a command's output, plus every line that says what DVC did with a stage ("Running
    stage", "is cached"): a long stage's own output (progress bars) must not push those out of the tail that
    :func:`classify` reads (a 240-step fine-tuning was reported "skipped")."""

    MARKS = ("Running stage '", "is cached - skipping run")

    def __init__(self, tail: int = 200):
        self.kept: collections.deque[str] = collections.deque(maxlen=tail)
        self.marks: list[str] = []

    def append(self, line: str) -> None:
        self.kept.append(line)
        if any(mark in line for mark in self.MARKS):
            self.marks.append(line)

    def lines(self) -> list[str]:
        kept = list(self.kept)
        return [m for m in self.marks if m not in kept] + kept


def run_dvc(root: Path, args: list[str], log: Callable[[str], None], tail: int = 200,
            timeout_s: float | None = None) -> tuple[int, list[str]]:
    """Run ``dvc <args>`` in ``root``, streaming every output line to ``log``; returns (exit code, last lines).

    DVC runs in a process group of its own, tied to this process's life (:mod:`flows.guard`); after ``timeout_s``
    the group is stopped and the exit code is :data:`TIMEOUT_EXIT`."""
    kept = OutputTail(tail)
    env = subprocess_env({PARENT_ENV: str(os.getpid())})
    flows_parent = str(Path(__file__).resolve().parents[1])  # flows.guard importable from any cwd
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [flows_parent, env.get("PYTHONPATH", "")]))
    timed_out = threading.Event()
    with subprocess.Popen(
        guarded_dvc_command(*args), cwd=root, env=env, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    ) as proc:
        timer = None
        if timeout_s:
            timer = threading.Timer(timeout_s, lambda: (timed_out.set(), stop(proc)))
            timer.daemon = True
            timer.start()
        try:
            for line in iter_output(proc.stdout):
                kept.append(line)
                log(line)
        except BaseException:  # interrupted or cancelled: do not leave DVC or its stage running
            stop(proc)
            raise
        finally:
            if timer is not None:
                timer.cancel()
        code = proc.wait()
    if timed_out.is_set():
        message = f"error: timed out after {timeout_s:.0f} s (stopped)"
        kept.append(message)
        log(message)
        return TIMEOUT_EXIT, kept.lines()
    return code, kept.lines()


def run_stage(root: Path, stage: str, log: Callable[[str], None], *, force: bool = False,
              timeout_s: float | None = None) -> StageResult:
    """Reproduce one stage through DVC (which skips it when nothing changed). Raises :class:`StageFailed`."""
    started = time.monotonic()
    args = ["--wait-for-lock", "repro", "--single-item", stage] + (["--force"] if force else [])
    code, lines = run_dvc(root, args, log, timeout_s=timeout_s)
    if code == TIMEOUT_EXIT:
        raise StageFailed(stage, code, f"timed out after {timeout_s:.0f} s (stopped with its processes)")
    if code != 0:
        error, stage_code = failure_message(lines)
        raise StageFailed(stage, stage_code if stage_code is not None else code, error)
    return StageResult(stage, classify(stage, lines), round(time.monotonic() - started, 3))


REMOTE_NAME = "llara-local"


def default_remote(root: Path, log: Callable[[str], None]) -> str:
    """The workspace's default DVC remote; when none is configured, a local directory outside the workspace
    (``$LLARA_DVC_REMOTE`` or ``<parent>/<name>-dvc-remote``) is added as the default in ``.dvc/config.local``."""
    code, lines = run_dvc(root, ["remote", "default"], lambda line: None)
    if code == 0 and lines and lines[-1].strip():
        return lines[-1].strip()
    path = Path(os.environ.get("LLARA_DVC_REMOTE") or root.parent / f"{root.name}-dvc-remote").resolve()
    path.mkdir(parents=True, exist_ok=True)
    code, lines = run_dvc(root, ["remote", "add", "--local", "--default", "--force", REMOTE_NAME, str(path)], log)
    if code != 0:
        raise StageFailed("dvc remote add", code, lines[-1] if lines else "failed")
    log(f"no default DVC remote: added {REMOTE_NAME} -> {path} (.dvc/config.local)")
    return REMOTE_NAME


def push(root: Path, log: Callable[[str], None]) -> str:
    """``dvc push`` to the default remote (configured first if there is none); returns the remote's name."""
    remote = default_remote(root, log)
    code, lines = run_dvc(root, ["push", "--remote", remote], log)
    if code != 0:
        error, _ = failure_message(lines)
        raise StageFailed(f"dvc push to {remote}", code, error)
    return remote
