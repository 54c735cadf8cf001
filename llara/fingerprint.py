"""Content fingerprints: what a checkpoint, a cache or a ledger is keyed on (never paths, names or counts).

- :func:`file_digest` streams a file through sha256 once per process (repeat calls for an unchanged file, same
  inode, size and mtime, reuse the result); :func:`tree_digest` covers a directory (relative paths + file digests,
  dotfiles and atomic-write temporaries left by crashed writers excluded); :func:`json_digest` plain data and
  :func:`array_digest` tensors/arrays (dtype, shape and bytes).
- :class:`ContentKey` names each input's digest, so a mismatch says *which* input changed.

Why not DVC's md5s: while a stage command runs, ``dvc.lock`` still holds the hashes of the *previous* run (DVC writes
it after the command), so reading them would key a resume on stale inputs. Hashing is ~1 GB/s here
(bench/RESULTS.md: start-up cost of the keys on MovieLens and at 10M interactions).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

CHUNK = 1 << 20
_MEMO: dict[tuple, str] = {}


def _stat_key(path: Path) -> tuple:
    st = path.stat()
    return (str(path.resolve()), st.st_ino, st.st_size, st.st_mtime_ns)


def file_digest(path: str | Path) -> str:
    """sha256 (hex) of a file's bytes, hashed once per process while the file is unchanged."""
    path = Path(path)
    key = _stat_key(path)
    if key not in _MEMO:
        h = hashlib.sha256()
        with path.open("rb") as fh:
            while chunk := fh.read(CHUNK):
                h.update(chunk)
        _MEMO[key] = h.hexdigest()
    return _MEMO[key]


def _skipped(name: str) -> bool:
    return name.startswith(".") or name == "__pycache__"


def tree_files(root: str | Path) -> list[Path]:
    """Regular files under ``root`` (sorted by relative path), without dotfiles, temporaries and caches."""
    root = Path(root)
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not _skipped(d))
        out += [Path(dirpath) / f for f in filenames if not _skipped(f)]
    return sorted(out, key=lambda p: p.relative_to(root).as_posix())


def tree_digest(path: str | Path) -> str:
    """A file's digest, or a directory's: sha256 over its files' relative paths and digests."""
    path = Path(path)
    if path.is_file():
        return file_digest(path)
    if not path.is_dir():
        raise FileNotFoundError(path)
    h = hashlib.sha256()
    for f in tree_files(path):
        h.update(f"{f.relative_to(path).as_posix()}\0{file_digest(f)}\n".encode())
    return h.hexdigest()


def json_digest(value: Any) -> str:
    """sha256 of plain data (JSON with sorted keys; other objects by ``str``)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def array_digest(*arrays: Any) -> str:
    """sha256 over tensors/arrays: dtype, shape and raw bytes of each."""
    h = hashlib.sha256()
    for a in arrays:
        name = str(a.dtype)
        if hasattr(a, "detach"):  # torch tensor (bfloat16 has no numpy type: hashed as its 16-bit patterns)
            import torch

            a = a.detach().cpu().contiguous()
            a = (a.view(torch.int16) if a.dtype in (torch.bfloat16, torch.float16) else a).numpy()
        a = np.ascontiguousarray(a)
        h.update(f"{name}{tuple(a.shape)}".encode())
        h.update(a.reshape(-1).view(np.uint8))
    return h.hexdigest()


def model_digest(reference: str | Path) -> str:
    """A model by content: a local folder's tree digest; a hub id with the commit of its cached snapshot (a
    revision names immutable files), or the id alone when nothing is cached."""
    if Path(reference).exists():
        return tree_digest(reference)
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(str(reference), "config.json")
    except Exception:  # noqa: BLE001 - not a hub id, or no hub library: the id itself
        cached = None
    commit = Path(cached).parent.name if isinstance(cached, str) else "not cached"
    return json_digest({"hub": str(reference), "commit": commit})


class ContentKey:
    """Named input digests; ``digest`` is the key, ``changed(recorded)`` says which inputs differ from a record."""

    def __init__(self, parts: dict[str, str] | None = None):
        self.parts: dict[str, str] = dict(parts or {})

    def add(self, name: str, digest: str) -> "ContentKey":
        self.parts[name] = digest
        return self

    def file(self, name: str, path: str | Path) -> "ContentKey":
        return self.add(name, tree_digest(path))

    def value(self, name: str, value: Any) -> "ContentKey":
        return self.add(name, json_digest(value))

    @property
    def digest(self) -> str:
        return json_digest(self.parts)

    def changed(self, recorded: dict[str, str] | None) -> list[str]:
        """Names whose digest differs from ``recorded`` (also those only one side has), sorted."""
        recorded = recorded or {}
        return sorted(k for k in set(self.parts) | set(recorded) if self.parts.get(k) != recorded.get(k))

    def explain(self, recorded: dict[str, str] | None) -> str:
        """``"<a>, <b> changed"`` for a log line; ``"made by an older version (no input record)"`` without one."""
        if not recorded:
            return "made by an older version (no input record)"
        changed = self.changed(recorded)
        return f"{', '.join(changed)} changed" if changed else "unchanged"
