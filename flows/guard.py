"""``python -m flows.guard DVC-ARGS...``: ``dvc`` tied to the life of the flow process that started it.

The flow starts this in a new session (its own process group, which the stage commands DVC runs inherit) with
``LLARA_GUARD_PARENT`` set to its pid. Here the kernel is asked (``prctl(PR_SET_PDEATHSIG)``) to send SIGTERM when
that parent dies, also by SIGKILL; on SIGTERM, SIGHUP or SIGINT the whole group is killed. So a killed flow (or a
timed-out or cancelled stage: the flow signals the group) leaves no ``dvc repro`` or stage running unsupervised.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1
PARENT_ENV = "LLARA_GUARD_PARENT"


def die_with_parent(sig: int = signal.SIGTERM) -> bool:
    """Ask Linux to send ``sig`` to this process when its parent dies. False where prctl is unavailable."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _kill_group(signum, frame) -> None:  # noqa: ARG001 - signal handler signature
    os.killpg(0, signal.SIGKILL)  # this process is the group's leader: DVC and the stage commands it started


def main(argv: list[str]) -> int:
    parent = int(os.environ.get(PARENT_ENV, "0"))
    if os.getpgrp() != os.getpid():
        os.setpgid(0, 0)  # lead a group of our own: the group kill below must never reach the caller's
    die_with_parent()
    if parent and os.getppid() != parent:  # the parent died before prctl took effect
        return 143
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, _kill_group)
    from dvc.cli import main as dvc_main

    return dvc_main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
