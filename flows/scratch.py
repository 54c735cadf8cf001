"""A scratch copy of the workspace for a run with one-run param overrides: the user's params.yaml is never written.

Why not ``dvc exp run --temp`` (DVC's own way, which works offline here): it reproduces the whole pipeline inside one
DVC process, so the flow would lose its one-task-per-stage runs (logs, retries, parallel stages, timeouts) and the
results would stay in an experiment ref instead of the workspace. The experiments flow, which runs whole variants,
does use it.

The copy is a sibling of the workspace (``<parent>/.<name>.llara-run-<host>-<pid>-<random>``), so relative paths in
params.yaml that leave the workspace (``../shared/data``) mean the same there. It holds the workspace's source files
(git's tracked and untracked-not-ignored files; without git every file but DVC's cached outputs and caches), the
overridden params.yaml, the workspace's outputs hard-linked (DVC deletes an output before its stage runs and copies
a linked persisted output before the stage may write it, so the workspace's files are never written through), and
DVC configured to use the workspace's cache (``cache.dir``, ``cache.type: copy``: DVC never moves a linked file into
the cache or makes it read-only), so up-to-date stages are skipped as in the workspace
and the run's results land in that cache. When the run succeeds, the workspace adopts its ``dvc.lock``, its
uncached outputs (metrics, plots) and, by ``dvc checkout``, its cached outputs. A copy left by a killed run is
removed by the next one.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Callable, Iterator

from flows.env import subprocess_env
from llara.atomic import atomic_dir, atomic_path, pid_alive

SKIP_DIRS = {".git", ".dvc/cache", ".dvc/tmp", ".venv", "__pycache__", ".pytest_cache"}


def _dvc(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, env=subprocess_env(), capture_output=True,
                          text=True, stdin=subprocess.DEVNULL)


def _outs(root: Path) -> list[tuple[Path, bool]]:
    """(path, cached) of every output declared in the workspace's DVC files."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        return [(Path(out.fs_path), bool(out.use_cache)) for out in repo.index.outs]


def source_files(root: Path) -> list[str]:
    """Files a run needs from the workspace (relative paths): git's tracked + untracked-not-ignored files when
    ``root`` is a git work tree, else every file outside DVC's caches and cached outputs."""
    probe = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=root, capture_output=True, text=True)
    if probe.returncode == 0 and Path(probe.stdout.strip()).resolve() == root.resolve():
        out = subprocess.run(["git", "ls-files", "-z", "-c", "-o", "--exclude-standard"], cwd=root, check=True,
                             capture_output=True).stdout
        names = sorted({n for n in out.decode().split("\0") if n})
        return [n for n in names if (root / n).is_file() and not n.startswith(".dvc/tmp/")]
    cached = [p.relative_to(root).as_posix() for p, use_cache in _outs(root) if use_cache]
    names = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel = Path(dirpath).relative_to(root).as_posix()
        rel = "" if rel == "." else rel + "/"
        dirnames[:] = [d for d in dirnames if f"{rel}{d}" not in SKIP_DIRS and d not in SKIP_DIRS
                       and f"{rel}{d}" not in cached]
        names += [f"{rel}{f}" for f in filenames if f"{rel}{f}" not in cached]
    return sorted(names)


def sweep_stale(root: Path, log: Callable[[str], None] = print) -> list[Path]:
    """Remove scratch copies of ``root`` left by dead processes of this host."""
    pattern = re.compile(rf"\.{re.escape(root.name)}\.llara-run-{re.escape(socket.gethostname())}-(\d+)-\w+")
    removed = []
    for sibling in root.parent.iterdir():
        match = pattern.fullmatch(sibling.name)
        if match and sibling.is_dir() and not pid_alive(int(match.group(1))):
            shutil.rmtree(sibling, ignore_errors=True)
            log(f"removed {sibling}, left by an interrupted override run")
            removed.append(sibling)
    return removed


def make_scratch(root: Path, params: bytes, log: Callable[[str], None] = print) -> Path:
    """Create the scratch copy of ``root`` with ``params`` as its params.yaml and the workspace's outputs checked out."""
    from dvc.repo import Repo

    root = root.resolve()
    sweep_stale(root, log)
    scratch = root.parent / f".{root.name}.llara-run-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    for name in source_files(root):
        target = scratch / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / name, target)
    (scratch / ".dvc").mkdir(exist_ok=True)
    (scratch / "params.yaml").write_bytes(params)
    with Repo(str(root)) as repo:
        cache_dir = repo.cache.local_cache_dir
    for key, value in (("cache.dir", cache_dir), ("cache.type", "copy"), ("core.no_scm", "true")):
        done = _dvc(scratch, "config", "--local", key, value)
        if done.returncode != 0:
            raise RuntimeError(f"dvc config {key} in {scratch}: {done.stderr.strip()}")
    for path, use_cache in _outs(root):  # the workspace's outputs as they are (user-provided raw data included)
        target = scratch / path.relative_to(root)
        if path.exists() and not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            _link_tree(path, target) if use_cache else _copy(path, target)
    return scratch


def _copy(src: Path, dest: Path) -> None:
    shutil.copytree(src, dest) if src.is_dir() else shutil.copy2(src, dest)


def _link_tree(src: Path, dest: Path) -> None:
    """Hard-link a file or tree (a copy across filesystems). Safe for DVC outputs: DVC deletes an output before its
    stage runs, and copies a linked persisted output (``unprotect``) before the stage may write it."""
    def link(a: str, b: str) -> None:
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)

    shutil.copytree(src, dest, copy_function=link) if src.is_dir() else link(str(src), str(dest))


def adopt(scratch: Path, root: Path, log: Callable[[str], None] = print) -> None:
    """Make the workspace hold the scratch run's state: dvc.lock, uncached outputs, cached outputs (dvc checkout)."""
    if not (scratch / "dvc.lock").is_file():
        return
    for path, use_cache in _outs(scratch):
        if use_cache or not path.exists():
            continue
        target = root / path.relative_to(scratch)
        if path.is_dir():
            with atomic_dir(target) as tmp:
                shutil.copytree(path, tmp, dirs_exist_ok=True)
        else:
            with atomic_path(target) as tmp:
                shutil.copy2(path, tmp)
    changed = changed_stages(root / "dvc.lock", scratch / "dvc.lock")
    with atomic_path(root / "dvc.lock") as tmp:
        shutil.copy2(scratch / "dvc.lock", tmp)
    if changed:
        done = _dvc(root, "checkout", "--force", "--quiet", *changed)
        if done.returncode != 0:
            raise RuntimeError(f"dvc checkout of the run's outputs in {root} failed: "
                               f"{(done.stderr or done.stdout).strip()}")
    log(f"the workspace now holds the run's dvc.lock and outputs of {len(changed)} changed stages "
        "(params.yaml unchanged)")


def changed_stages(before: Path, after: Path) -> list[str]:
    """Stages whose entry differs between two dvc.lock files (absent counts as different)."""
    import yaml

    old = (yaml.safe_load(before.read_text()) or {}).get("stages", {}) if before.is_file() else {}
    new = (yaml.safe_load(after.read_text()) or {}).get("stages", {})
    return sorted(name for name, entry in new.items() if old.get(name) != entry)


@contextlib.contextmanager
def scratch_workspace(root: Path, params: bytes, log: Callable[[str], None] = print) -> Iterator[Path]:
    """A scratch copy for the block; adopted by ``root`` when the block succeeds, removed in any case."""
    root = root.resolve()
    scratch = make_scratch(root, params, log)
    try:
        yield scratch
        adopt(scratch, root, log)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
