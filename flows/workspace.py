"""The workspace a flow runs in: subprocess environment, one-run-at-a-time lock, temporary ``-S`` param overrides.

Prefect-free, so the plain ``dvc repro`` path (``llara run --no-prefect``) shares it.

Override semantics (the documented choice): ``-S key=value`` uses exactly DVC's ``dvc exp run -S`` grammar (Hydra
overrides, applied by DVC's own ``apply_overrides``), validated against ``tasks/params.py`` before anything runs,
written to ``params.yaml`` atomically for the duration of the run and restored byte for byte afterwards (also after a
failure; a crash leaves a backup that the next run restores first). ``dvc.lock`` and the outputs keep the overridden
run's state, so ``dvc status`` afterwards shows the affected stages as changed and the next plain run reproduces the
committed parameters (DVC's run cache makes that cheap for cached stages).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import yaml

from llara.atomic import atomic_path
from llara.errors import InputError

ENV_DEFAULTS = {
    "HF_HUB_OFFLINE": "1",
    "DVC_NO_ANALYTICS": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
}
PARAMS_FILE = "params.yaml"
LOCK_FILE = Path(".dvc/tmp/llara-workspace.lock")
BACKUP_FILE = Path(".dvc/tmp/llara-params.backup.yaml")


def apply_env_defaults(env: dict[str, str] | None = None) -> dict[str, str]:
    """Set the project's environment defaults (only where unset) in ``env`` (default: ``os.environ``)."""
    env = os.environ if env is None else env
    for key, value in ENV_DEFAULTS.items():
        env.setdefault(key, value)
    return env


def subprocess_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for ``dvc``/stage subprocesses: this interpreter's bin dir first on PATH (dvc runs ``python``)."""
    env = apply_env_defaults(dict(os.environ))
    bin_dir = str(Path(sys.executable).parent)
    parts = [p for p in env.get("PATH", "").split(os.pathsep) if p and p != bin_dir]
    env["PATH"] = os.pathsep.join([bin_dir, *parts])
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def resolve_root(repo_root: str | Path) -> Path:
    """The repository root as an absolute path; it must hold dvc.yaml."""
    root = Path(repo_root).expanduser().resolve()
    if not (root / "dvc.yaml").is_file():
        raise InputError(root, "not a pipeline workspace (no dvc.yaml here); pass the repository root")
    return root


_held: dict[Path, int] = {}
_held_guard = threading.Lock()


@contextlib.contextmanager
def workspace_lock(root: Path, log: Callable[[str], None] = print, poll_s: float = 2.0) -> Iterator[None]:
    """Hold the workspace's run lock: one flow run at a time per workspace (re-entrant within a process).

    DVC's own lock guards single commands; this one keeps a nightly retrain and a manual run (or two override runs)
    from interleaving their params.yaml edits. Waits (logging once) while another process holds it.
    """
    root = root.resolve()
    with _held_guard:
        if _held.get(root):
            _held[root] += 1
            reentrant = True
        else:
            reentrant = False
    if reentrant:
        try:
            yield
        finally:
            with _held_guard:
                _held[root] -= 1
        return
    path = root / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        waited = False
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not waited:
                    log(f"another pipeline run holds {path}; waiting for it to finish")
                    waited = True
                time.sleep(poll_s)
        with _held_guard:
            _held[root] = 1
        try:
            yield
        finally:
            with _held_guard:
                _held.pop(root, None)
            fcntl.flock(handle, fcntl.LOCK_UN)


def parse_override(text: str) -> str:
    """Check one ``key=value`` override (``+key=value`` adds, ``~key`` deletes, as in ``dvc exp run -S``)."""
    text = text.strip()
    if text.startswith("~") and len(text) > 1:
        return text
    key, sep, _ = text.partition("=")
    if not sep or not key.lstrip("+").strip():
        raise InputError("-S", f"expected key=value, got {text!r}")
    return text


def overridden_params(params_path: Path, overrides: list[str]) -> bytes:
    """The bytes of ``params_path`` with ``overrides`` applied and validated (nothing is written)."""
    from dvc.utils.hydra import apply_overrides

    from tasks.params import parse_params

    overrides = [parse_override(o) for o in overrides]
    fd, tmp = tempfile.mkstemp(prefix=".params.override.", suffix=".yaml", dir=params_path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        tmp_path.write_bytes(params_path.read_bytes())
        try:
            apply_overrides(tmp_path, overrides)
        except Exception as exc:  # DVC wraps Hydra's grammar errors; show the innermost cause
            cause = exc.__cause__ or exc
            raise InputError("-S " + " ".join(overrides), str(cause).splitlines()[0]) from None
        data = tmp_path.read_bytes()
        parse_params(yaml.safe_load(data) or {}, where=f"params.yaml with -S {' '.join(overrides)}")
        return data
    finally:
        tmp_path.unlink(missing_ok=True)


def write_atomic(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def restore_interrupted_override(root: Path, log: Callable[[str], None] = print) -> bool:
    """If a previous override run crashed, put its saved params.yaml back. Returns whether it did."""
    backup = root / BACKUP_FILE
    if not backup.is_file():
        return False
    write_atomic(root / PARAMS_FILE, backup.read_bytes())
    backup.unlink()
    log(f"restored {PARAMS_FILE} from an interrupted override run ({BACKUP_FILE})")
    return True


@contextlib.contextmanager
def params_overrides(root: Path, overrides: list[str] | None, log: Callable[[str], None] = print) -> Iterator[None]:
    """Apply ``-S`` overrides to ``root/params.yaml`` for the duration of the block, then restore it exactly."""
    restore_interrupted_override(root, log)
    if not overrides:
        yield
        return
    params_path = root / PARAMS_FILE
    original = params_path.read_bytes()
    new = overridden_params(params_path, list(overrides))
    write_atomic(root / BACKUP_FILE, original)
    write_atomic(params_path, new)
    log(f"params.yaml overridden for this run: {' '.join(overrides)}")
    try:
        yield
    finally:
        write_atomic(params_path, original)
        (root / BACKUP_FILE).unlink(missing_ok=True)
        log("params.yaml restored")
