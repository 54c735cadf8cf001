"""Atomic artifact writes: write to a temporary sibling, then rename over the target.

A crash or an error leaves either the old artifact or nothing, never a half-written one. Temporary siblings are
named ``.<target>.<host>-<pid>.<random>.tmp``; those of a process that died (killed, power cut) are removed by the
next atomic write of the same target on the same host.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import socket
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from llara.errors import LlaraError, require

if TYPE_CHECKING:  # only for annotations: the model code imports this module where polars is absent (bench_gpu)
    import polars as pl


def _read_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # temp files are created 0600 / 0700; artifacts get the usual umask-based modes


def _owner() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host still exists."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temps(target: str | Path) -> list[Path]:
    """Delete temporary siblings of ``target`` left by dead processes of this host; return what was removed."""
    target = Path(target)
    if not target.parent.is_dir():
        return []
    pattern = re.compile(
        rf"\.{re.escape(target.name)}\.(?:old-)?{re.escape(socket.gethostname())}-(\d+)(?:\.[^/]*\.tmp)?"
    )
    removed = []
    for sibling in target.parent.iterdir():
        match = pattern.fullmatch(sibling.name)
        if match and not pid_alive(int(match.group(1))):
            remove_path(sibling)
            removed.append(sibling)
    return removed


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary file path next to ``target``; rename it onto ``target`` on success."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(target)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.{_owner()}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_UMASK)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)


def refuse_unsafe_target(target: str | Path) -> None:
    """Refuse to swap out the working directory or one of its parents, the home directory, a filesystem root or a
    directory holding a repository (``.git``/``.dvc``): replacing a directory deletes what was in it."""
    target = Path(target)
    resolved = target.resolve()
    cwd = Path.cwd().resolve()
    require(
        not (resolved == cwd or resolved in cwd.parents or resolved == Path.home().resolve() or resolved == Path(resolved.anchor)),
        target, "refusing to replace the working directory, one of its parents or the home directory; "
        "choose an output directory of its own",
    )
    require(
        not (resolved.is_dir() and any((resolved / marker).exists() for marker in (".git", ".dvc"))),
        target, "refusing to replace a directory that holds a repository (.git or .dvc)",
    )


def require_replaceable(target: str | Path, artifact_files: set[str] | list[str], where: str | Path | None = None) -> None:
    """An existing ``target`` may be replaced only when it holds nothing but (a previous version of) the artifact.

    Use it at the start of a command that writes a user-named output directory, before the work.
    """
    target = Path(target)
    if not (target.exists() or target.is_symlink()):
        return
    refuse_unsafe_target(target)
    require(target.is_dir() and not target.is_symlink(), where or target, f"{target} exists and is not a directory")
    foreign = sorted(p.name for p in target.iterdir() if p.name not in set(artifact_files))
    require(
        not foreign, where or target,
        f"{target} exists and holds other files ({', '.join(foreign[:3])}); refusing to replace it",
    )


@contextlib.contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """Yield a temporary directory next to ``target``; swap it into place on success.

    An existing ``target`` is replaced only after the new directory is complete (see :func:`refuse_unsafe_target`).
    """
    target = Path(target)
    refuse_unsafe_target(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.{_owner()}.", suffix=".tmp", dir=target.parent))
    os.chmod(tmp, 0o777 & ~_UMASK)
    try:
        yield tmp
        _swap_in(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _swap_in(tmp: Path, target: Path, attempts: int = 10) -> None:
    """Rename the directory ``tmp`` onto ``target``, moving an existing ``target`` aside first.

    Another process may swap its own copy in between the two renames; then its copy is moved aside too and the
    swap is retried (the last writer wins, nothing is left half-done). On any other failure the previous
    ``target`` is put back.
    """
    aside = target.with_name(f".{target.name}.old-{_owner()}")
    for _ in range(attempts):
        remove_path(aside)
        with contextlib.suppress(FileNotFoundError):
            os.replace(target, aside)
        try:
            os.replace(tmp, target)
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                continue  # a concurrent writer put a target in place meanwhile
            if aside.exists() and not target.exists():
                os.replace(aside, target)
            raise
        with contextlib.suppress(OSError):
            remove_path(aside)
        return
    raise LlaraError(f"{target}: could not be replaced: other processes keep writing it")


def write_parquet(df: pl.DataFrame, target: str | Path) -> None:
    """Write a parquet file atomically, deterministically (no timestamps, fixed compression)."""
    with atomic_path(target) as tmp:
        df.write_parquet(tmp, compression="zstd", statistics=False)


def write_json(obj: Any, target: str | Path) -> None:
    """Write pretty, key-sorted JSON atomically."""
    with atomic_path(target) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def remove_path(path: str | Path) -> None:
    """Delete a file or a directory tree if present (used to clear a stage's outputs before it runs)."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
