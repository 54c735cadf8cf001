"""Shared by the stage adapters: their arguments, logging (Prefect's run logger inside a flow) and the machine-wide
CPU slot.

Error reporting and exit codes are :mod:`llara.entrypoint`'s (``exit_with``), the same as the ``llara`` CLI's."""

from __future__ import annotations

import argparse
import fcntl
import logging
import os
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Sequence

from llara.entrypoint import OneLineParser



def stage_args(module: str, description: str, split: bool = False,
               **positionals: tuple[Sequence[str], str]) -> argparse.Namespace:
    """A stage's command line: a split name first when ``split`` (a folder of data/split, named by params.yaml's
    ``split.protocols``), then each positional (name -> (its registry's names, help)), and ``--verbose``; bad
    arguments are one line, exit 2."""
    parser = OneLineParser(prog=f"python -m {module}", description=description)
    if split:
        parser.add_argument("protocol", help="split protocol: the split under data/split/<protocol>")
    for name, (choices, help_text) in positionals.items():
        parser.add_argument(name, choices=list(choices), help=help_text)
    parser.add_argument("--verbose", action="store_true", help="full tracebacks on errors")
    return parser.parse_args()


def get_logger(name: str) -> logging.Logger:
    """Prefect's run logger inside a flow/task run, else a plain stderr logger."""
    try:  # Prefect is an optional runtime here: stages also run under plain `dvc repro`
        from prefect.context import TaskRunContext, FlowRunContext

        if TaskRunContext.get() or FlowRunContext.get():
            from prefect.logging import get_run_logger

            return get_run_logger()  # type: ignore[return-value]
    except Exception:
        pass
    logger = logging.getLogger(name)
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    return logger


def cpu_slot_path(name: str) -> Path:
    return Path(tempfile.gettempdir()) / f"llara-{name}-{os.getuid()}.lock"


@contextmanager
def cpu_slot(name: str, device: str, log: Callable[[str], None], path: Path | None = None) -> Iterator[bool]:
    """Run the block as the only ``name`` job on this machine's CPU (an OS file lock; released even on a crash).

    Two LLM fine-tunings on the same cores each run 4-6x slower (their OpenMP threads wait on each other), and the
    pipeline's flow starts the ``finetune@`` stages side by side: on CPU the second one waits for the first. No lock
    on CUDA or inside a multi-process (torchrun) launch. Yields whether the slot was taken."""
    if device != "cpu" or int(os.environ.get("WORLD_SIZE", "1")) > 1:
        yield False
        return
    path = path or cpu_slot_path(name)
    with open(path, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"waiting for another {name} on this machine's CPU to finish (lock {path})")
            start = time.monotonic()
            fcntl.flock(fh, fcntl.LOCK_EX)
            log(f"{name}: got the CPU after {time.monotonic() - start:.0f} s")
        try:
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
