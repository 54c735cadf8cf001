"""Where raw data comes from: checksum verification, resumable download and safe archive extraction."""

from __future__ import annotations

import hashlib
import http.client
import shutil
import urllib.error
import urllib.request
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from llara.atomic import atomic_dir
from llara.errors import InputError, LlaraError, require

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


def safe_extract(archive: str | Path, dest: str | Path, *, max_bytes: int = 1 << 30) -> None:
    """Extract a zip, refusing absolute paths, '..' components, links, and more than ``max_bytes`` unpacked."""
    archive, dest = Path(archive), Path(dest)
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
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
        total = sum(member.file_size for member in zf.infolist())
        require(total <= max_bytes, archive, f"unpacks to {total} bytes, more than the {max_bytes} allowed")
        try:
            zf.extractall(root)
        except (zipfile.BadZipFile, zlib.error, EOFError, RuntimeError, NotImplementedError) as exc:
            raise InputError(archive, f"corrupt or unsupported zip archive ({type(exc).__name__}: {exc})") from None


URL_SCHEMES = ("https://", "http://", "file://")


def check_url(url: str) -> None:
    """Only https, http and file URLs are fetched."""
    require(url.startswith(URL_SCHEMES), url, f"must be an https://, http:// or file:// URL, got {url!r}")


def _open(url: str, offset: int, timeout: float):
    """Open ``url`` from byte ``offset``. HTTP errors are bad input (a wrong URL); network failures are transient."""
    check_url(url)
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    try:
        return urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 (scheme checked by check_url)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:
            return None  # the partial file cannot be continued: restart
        raise InputError(url, f"download failed (HTTP {exc.code} {exc.reason})") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, (str, FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)):
            raise InputError(url, f"download failed ({reason})") from None  # unknown scheme, missing local file, ...
        raise LlaraError(f"{url}: download failed ({type(reason).__name__}: {reason}); rerun to retry") from None
    except ValueError as exc:
        raise InputError(url, f"not a valid URL ({exc})") from None


def download(url: str, dest: str | Path, *, progress: bool = True, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest``, resuming a partial ``dest.part`` with an HTTP Range request.

    A transfer cut short raises :class:`LlaraError` and keeps ``dest.part`` so that the next call resumes; a server
    that ignores the Range request, or answers for another offset, makes it restart from byte 0.
    """
    from tqdm import tqdm

    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    offset = part.stat().st_size if part.exists() else 0
    response = _open(url, offset, timeout)
    resumed = response is not None and bool(offset) and getattr(response, "status", None) == 206
    if response is None or (resumed and not (response.headers.get("Content-Range") or "").startswith(f"bytes {offset}-")):
        if response is not None:
            response.close()  # a range we did not ask for
        part.unlink(missing_ok=True)
        offset, resumed, response = 0, False, _open(url, 0, timeout)
    with response:
        length = response.headers.get("Content-Length")
        written = offset if resumed else 0
        expected = int(length) + written if length and length.isdigit() else None
        try:
            with open(part, "ab" if resumed else "wb") as handle, tqdm(
                total=expected, initial=written, unit="B", unit_scale=True, disable=not progress, desc=dest.name
            ) as bar:
                while block := response.read(1 << 16):
                    handle.write(block)
                    written += len(block)
                    bar.update(len(block))
        except (OSError, http.client.HTTPException) as exc:
            raise LlaraError(
                f"{url}: download interrupted after {written} bytes ({type(exc).__name__}); rerun to resume"
            ) from None
    if expected is not None and written != expected:
        raise LlaraError(f"{url}: download incomplete ({written} of {expected} bytes); rerun to resume")
    part.replace(dest)
    return dest


def fetch_movielens_100k(
    dest: str | Path,
    *,
    url: str = MOVIELENS_100K_URL,
    progress: bool = True,
    expected: dict[str, str] = MOVIELENS_100K_SHA256,
) -> Path:
    """Download and unpack MovieLens-100K into ``dest`` (the folder holding u.data), checksum-verified.

    An interrupted download resumes from its ``.part`` file (kept in a hidden ``.<dest>.download`` folder next to
    ``dest``); a bad URL or a corrupt or tampered archive leaves nothing behind, so the next run starts afresh.
    ``expected`` maps file names to sha256 (the GroupLens files by default).
    """
    dest = Path(dest)
    cache = dest.parent / f".{dest.name}.download"
    try:
        archive = download(url, cache / "ml-100k.zip", progress=progress)
        with atomic_dir(dest) as tmp:
            safe_extract(archive, tmp / "unzipped")
            inner = tmp / "unzipped" / "ml-100k"
            source = inner if inner.is_dir() else tmp / "unzipped"
            verify_checksums(source, expected)
            for path in source.iterdir():
                shutil.move(str(path), tmp / path.name)
            shutil.rmtree(tmp / "unzipped")
    except InputError as exc:
        shutil.rmtree(cache, ignore_errors=True)  # wrong URL, corrupt or tampered archive: restart from scratch
        if exc.where == url:
            raise
        # name the source, not the temporary file that is gone now
        raise InputError(url, f"{Path(exc.where).name}: {exc.what}") from None
    shutil.rmtree(cache, ignore_errors=True)
    return dest
