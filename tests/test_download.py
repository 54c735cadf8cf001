"""Resumable, checksum-verified download of MovieLens-100K against a local HTTP server on 127.0.0.1.

The server cuts the first transfer mid-way and honours Range requests afterwards (or ignores them, or answers 416),
so the tests cover resume, restart and rejection without the internet. The archive is built in tmp at test time from
synthetic files, and from the real ../shared/data/ml-100k when present (never committed).
"""

from __future__ import annotations

import hashlib
import http.server
import socket
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import pytest
import yaml

from llara.data.sources import MOVIELENS_100K_SHA256, download, fetch_movielens_100k, sha256_file
from llara.errors import InputError, LlaraError

SYNTHETIC = {
    "u.data": "".join(f"{u}\t{i}\t{(u + i) % 5 + 1}\t{881250949 + u * 10 + i}\n" for u in range(1, 40) for i in range(1, 30)),
    "u.item": "".join(f"{i}|Film {i} (19{50 + i})|x\n" for i in range(1, 30)),
}


class Server:
    """A one-file HTTP server. ``mode``: 'cut-first' (first GET stops half-way), 'ok', 'ignore-range', '416'."""

    def __init__(self, payload: bytes, mode: str = "cut-first"):
        self.payload, self.mode, self.requests = payload, mode, []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def do_GET(self):
                rng = self.headers.get("Range")
                server.requests.append((self.path, rng))
                data = server.payload
                if self.path != "/ml-100k.zip":
                    self.send_error(404)
                    return
                if rng and server.mode == "416":
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                start = int(rng.removeprefix("bytes=").split("-")[0]) if rng and server.mode != "ignore-range" else 0
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                if server.mode == "cut-first" and len(server.requests) == 1:
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)  # the connection drops mid-transfer
                    self.close_connection = True
                    return
                self.wfile.write(data[start:])

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/ml-100k.zip"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def make_zip(path: Path, files: dict[str, bytes], folder: str = "ml-100k/") -> bytes:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(folder + name, data)
    return path.read_bytes()


def synthetic_zip(tmp_path: Path) -> tuple[bytes, dict[str, str]]:
    files = {k: v.encode() for k, v in SYNTHETIC.items()}
    # incompressible padding so the archive is big enough to be cut in the middle of a block
    files["padding.bin"] = hashlib.sha256(b"x").digest() * 20_000
    payload = make_zip(tmp_path / "src.zip", files)
    return payload, {k: hashlib.sha256(v).hexdigest() for k, v in files.items() if k.startswith("u.")}


def leftovers(parent: Path, keep: set[str]) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name not in keep)


def test_interrupted_download_resumes_with_a_range_request(tmp_path):
    payload, expected = synthetic_zip(tmp_path)
    dest = tmp_path / "raw" / "ml-100k"
    with Server(payload) as server:
        with pytest.raises(LlaraError, match="rerun to resume") as info:
            fetch_movielens_100k(dest, url=server.url, progress=False, expected=expected)
        assert info.value.exit_code == 1
        assert not dest.exists()
        part = dest.parent / ".ml-100k.download" / "ml-100k.zip.part"
        assert 0 < part.stat().st_size < len(payload)
        kept = part.stat().st_size
        fetch_movielens_100k(dest, url=server.url, progress=False, expected=expected)
    assert server.requests[1] == ("/ml-100k.zip", f"bytes={kept}-")
    for name, digest in expected.items():
        assert sha256_file(dest / name) == digest
    assert leftovers(dest.parent, set()) == ["ml-100k"]  # no .part, no cache folder, no temp directory


@pytest.mark.parametrize("mode", ["ignore-range", "416"])
def test_a_server_that_cannot_resume_restarts_cleanly(tmp_path, mode):
    payload, expected = synthetic_zip(tmp_path)
    dest = tmp_path / "raw" / "ml"
    part = dest.parent / ".ml.download" / "ml-100k.zip.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(payload[:1000])
    with Server(payload, mode=mode) as server:
        fetch_movielens_100k(dest, url=server.url, progress=False, expected=expected)
    assert server.requests[0][1] == "bytes=1000-"
    assert sha256_file(dest / "u.data") == expected["u.data"]
    assert leftovers(dest.parent, set()) == ["ml"]


def test_a_stale_partial_file_is_rejected_and_the_next_run_starts_afresh(tmp_path):
    payload, expected = synthetic_zip(tmp_path)
    dest = tmp_path / "raw" / "ml"
    part = dest.parent / ".ml.download" / "ml-100k.zip.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"\0" * 5000)  # from another file: resuming it gives a corrupt archive
    with Server(payload, mode="ok") as server:
        with pytest.raises(InputError, match="corrupt|not a valid zip"):
            fetch_movielens_100k(dest, url=server.url, progress=False, expected=expected)
        assert leftovers(dest.parent, set()) == []
        fetch_movielens_100k(dest, url=server.url, progress=False, expected=expected)
    assert [r[1] for r in server.requests] == ["bytes=5000-", None]
    assert sha256_file(dest / "u.item") == expected["u.item"]


def test_wrong_checksum_archive_is_rejected_and_leaves_nothing(tmp_path):
    payload, expected = synthetic_zip(tmp_path)
    dest = tmp_path / "raw" / "ml"
    with Server(payload, mode="ok") as server:
        with pytest.raises(InputError) as info:
            fetch_movielens_100k(dest, url=server.url, progress=False)  # the GroupLens checksums
    assert info.value.where == server.url and "u.data: sha256 mismatch" in info.value.what
    assert leftovers(dest.parent, set()) == []


def test_a_wrong_url_is_bad_input_and_a_dead_server_is_transient(tmp_path):
    payload, expected = synthetic_zip(tmp_path)
    with Server(payload, mode="ok") as server:
        missing = server.url.replace("ml-100k.zip", "nothing.zip")
        with pytest.raises(InputError, match="HTTP 404"):
            fetch_movielens_100k(tmp_path / "raw" / "ml", url=missing, progress=False, expected=expected)
    assert leftovers(tmp_path / "raw", set()) == []
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again below: nothing listens there
    with pytest.raises(LlaraError, match="rerun") as info:
        download(f"http://127.0.0.1:{port}/x.zip", tmp_path / "x.zip", progress=False, timeout=5)
    assert info.value.exit_code == 1


def test_real_movielens_archive_round_trip(tmp_path, shared_data):
    """The real u.data / u.item zipped in tmp: the GroupLens checksums accept what the resumed download unpacks."""
    source = shared_data / "ml-100k"
    payload = make_zip(tmp_path / "ml.zip", {n: (source / n).read_bytes() for n in ("u.data", "u.item")})
    dest = tmp_path / "raw" / "ml-100k"
    with Server(payload) as server:
        with pytest.raises(LlaraError):
            fetch_movielens_100k(dest, url=server.url, progress=False)
        fetch_movielens_100k(dest, url=server.url, progress=False)
    assert {n: sha256_file(dest / n) for n in MOVIELENS_100K_SHA256} == MOVIELENS_100K_SHA256


def test_fetch_stage_resumes_after_an_interruption(tmp_path, repo_root, subprocess_env):
    """``python -m tasks.fetch`` twice: the first run fails with one clear line (exit 1), the second completes."""
    real = repo_root.parent / "shared" / "data" / "ml-100k"
    if (real / "u.data").is_file():  # the real files zipped in tmp: the second run succeeds
        payload = make_zip(tmp_path / "ml.zip", {n: (real / n).read_bytes() for n in ("u.data", "u.item")})
    else:  # synthetic files: the second run completes the download, then fails the GroupLens checksums
        payload, _ = synthetic_zip(tmp_path)
    params = yaml.safe_load((repo_root / "params.yaml").read_text())
    params["ingest"].update(source="movielens", input_dir="data/raw/ml", movielens_local_dir=None)
    env = {**subprocess_env, "PYTHONPATH": str(repo_root)}
    with Server(payload) as server:
        params["ingest"]["movielens_url"] = server.url
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
        first = subprocess.run([sys.executable, "-m", "tasks.fetch"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        errors = [line for line in first.stderr.splitlines() if line.startswith("error:")]
        assert first.returncode == 1 and len(errors) == 1 and "rerun to resume" in errors[0], first.stderr
        assert "Traceback" not in first.stderr
        assert not (tmp_path / "data" / "raw" / "ml").exists()
        second = subprocess.run([sys.executable, "-m", "tasks.fetch"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert server.requests[1][1] is not None and server.requests[1][1].startswith("bytes=")
    if (real / "u.data").is_file():
        assert second.returncode == 0, second.stderr
        assert sha256_file(tmp_path / "data" / "raw" / "ml" / "u.data") == MOVIELENS_100K_SHA256["u.data"]
        assert leftovers(tmp_path / "data" / "raw", set()) == ["ml"]
    else:
        assert second.returncode == 2 and "u.data: sha256 mismatch" in second.stderr, second.stderr
        assert leftovers(tmp_path / "data" / "raw", set()) == []
