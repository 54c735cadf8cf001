"""Where raw data comes from: checksum verification, resumable download and safe archive extraction."""

from __future__ import annotations

import hashlib
import shutil
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath

from llara.atomic import atomic_dir
from llara.errors import InputError, require

MOVIELENS_100K_URL = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
# sha256 of the GroupLens files (identical across independent public copies).
MOVIELENS_100K_SHA256 = {
    "u.data": "06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490",
    "u.item": "553841ebc7de3a0fd0d6b62a204ea30c1e651aacfb2814c7a6584ac52f2c5701",
}


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, streamed."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def verify_checksums(directory: str | Path, expected: dict[str, str] = MOVIELENS_100K_SHA256) -> None:
    """Raise :class:`InputError` naming the first file that is missing or whose sha256 differs."""
    directory = Path(directory)
    for name, want in expected.items():
        path = directory / name
        require(path.is_file(), path, "file not found")
        got = sha256_file(path)
        require(got == want, path, f"sha256 mismatch: got {got}, expected {want}")


def safe_extract(archive: str | Path, dest: str | Path) -> None:
    """Extract a zip, refusing absolute paths, '..' components and links that would escape ``dest``."""
    archive, dest = Path(archive), Path(dest)
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile as exc:
        raise InputError(archive, f"not a valid zip archive ({exc})") from None
    root = dest.resolve()
    with zf:
        for member in zf.infolist():
            name = PurePosixPath(member.filename.replace("\\", "/"))
            target = (root / name).resolve()
            if name.is_absolute() or ".." in name.parts or not target.is_relative_to(root):
                raise InputError(archive, f"member '{member.filename}' would be extracted outside the target directory")
            mode = (member.external_attr >> 16) & 0o170000
            require(mode != 0o120000, archive, f"member '{member.filename}' is a symbolic link")
        zf.extractall(root)


def download(url: str, dest: str | Path, *, progress: bool = True, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest``, resuming a partial ``dest.part`` with an HTTP Range request."""
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 (https URL from config)
    except Exception as exc:
        raise InputError(url, f"download failed ({type(exc).__name__}: {exc})") from None
    with response:
        resumed = offset and response.status == 206
        mode = "ab" if resumed else "wb"
        total = response.length + (offset if resumed else 0) if response.length else None
        from tqdm import tqdm

        with open(part, mode) as handle, tqdm(
            total=total, initial=offset if resumed else 0, unit="B", unit_scale=True, disable=not progress, desc=dest.name
        ) as bar:
            while block := response.read(1 << 16):
                handle.write(block)
                bar.update(len(block))
    part.replace(dest)
    return dest


def fetch_movielens_100k(dest: str | Path, *, url: str = MOVIELENS_100K_URL, progress: bool = True) -> Path:
    """Download and unpack MovieLens-100K into ``dest`` (the folder holding u.data), checksum-verified.

    An interrupted download resumes from its ``.part`` file; a corrupt one is deleted so the next run restarts.
    """
    dest = Path(dest)
    cache = dest.parent / f".{dest.name}.download"
    archive = download(url, cache / "ml-100k.zip", progress=progress)
    try:
        with atomic_dir(dest) as tmp:
            safe_extract(archive, tmp / "unzipped")
            inner = tmp / "unzipped" / "ml-100k"
            source = inner if inner.is_dir() else tmp / "unzipped"
            verify_checksums(source)
            for path in source.iterdir():
                shutil.move(str(path), tmp / path.name)
            shutil.rmtree(tmp / "unzipped")
    except InputError:
        archive.unlink(missing_ok=True)  # corrupt or tampered: restart from scratch next time
        raise
    shutil.rmtree(cache, ignore_errors=True)
    return dest
