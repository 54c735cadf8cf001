"""The workspace's run lock: one pipeline run (flow, ``dvc repro`` wrapper or champion rollback) at a time.

In the library so that every writer of a workspace takes the same lock: the flows (``flows/workspace.py``) and the
``llara promote --rollback`` command, which must not interleave with a nightly ``promote``.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

from llara.errors import InputError

LOCK_FILE = Path(".dvc/tmp/llara-workspace.lock")
LOCK_TIMEOUT_S = float(os.environ.get("LLARA_LOCK_TIMEOUT_S", str(6 * 3600)))

_held: dict[Path, int] = {}
_held_guard = threading.Lock()


def lock_holder(root: Path) -> str:
    """Who holds the workspace lock, as its holder recorded it (host, pid, since); empty if unknown."""
    note = root / LOCK_FILE.with_suffix(".holder")
    return note.read_text().strip() if note.is_file() else ""


@contextlib.contextmanager
def workspace_lock(root: Path, log: Callable[[str], None] = print, timeout_s: float | None = None) -> Iterator[None]:
    """Hold the workspace's run lock: one flow run at a time per workspace (re-entrant within a process).

    DVC's own lock guards single commands; this one keeps a nightly retrain and a manual run from interleaving.
    An OS file lock (the ``filelock`` package: released when the holder dies, even by SIGKILL); a run that cannot
    get it within ``timeout_s`` (default ``$LLARA_LOCK_TIMEOUT_S``, 6 h) fails saying who holds it.
    """
    from filelock import FileLock, Timeout

    root = root.resolve()
    with _held_guard:
        reentrant = bool(_held.get(root))
        if reentrant:
            _held[root] += 1
    if reentrant:
        try:
            yield
        finally:
            with _held_guard:
                _held[root] -= 1
        return
    path = root / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    timeout_s = LOCK_TIMEOUT_S if timeout_s is None else timeout_s
    lock = FileLock(str(path), thread_local=False)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log(f"another pipeline run holds {path} ({lock_holder(root) or 'holder unknown'}); waiting up to "
            f"{timeout_s:.0f} s for it to finish")
        try:
            lock.acquire(timeout=timeout_s, poll_interval=1.0)
        except Timeout:
            raise InputError(path, f"another pipeline run still holds this workspace after {timeout_s:.0f} s "
                                   f"({lock_holder(root) or 'holder unknown'})") from None
    note = root / LOCK_FILE.with_suffix(".holder")
    note.write_text(f"host {socket.gethostname()} pid {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    with _held_guard:
        _held[root] = 1
    try:
        yield
    finally:
        with _held_guard:
            _held.pop(root, None)
        note.unlink(missing_ok=True)
        lock.release()
