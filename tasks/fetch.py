"""Stage ``fetch``: put raw MovieLens-100K into ``ingest.input_dir``.

Copies the local directory ``ingest.movielens_local_dir`` when it exists (checksum-verified), otherwise downloads the
official GroupLens archive (resumable, checksum-verified). With ``ingest.source: generic`` the user owns
``ingest.input_dir`` and this stage only checks it exists.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from llara.atomic import atomic_dir
from llara.data.sources import MOVIELENS_100K_SHA256, fetch_movielens_100k, verify_checksums
from llara.entrypoint import exit_with
from llara.errors import require_config
from tasks.common import get_logger
from tasks.params import PARAMS_FILE, IngestParams, load_params, reported_as


def fetch(params: IngestParams) -> Path:
    log = get_logger("llara.fetch")
    target = Path(params.input_dir)
    if params.source == "generic":
        require_config(target.is_dir(), "input_dir", f"{target} does not exist: put your interactions and items there")
        log.info("generic source: using %s as is", target)
        return target
    if target.is_dir():
        try:
            verify_checksums(target)
            log.info("%s already holds verified MovieLens-100K", target)
            return target
        except Exception:
            log.warning("%s is incomplete or corrupt; fetching again", target)
    local = Path(params.movielens_local_dir) if params.movielens_local_dir else None
    if local is not None and local.is_dir():
        verify_checksums(local)
        with atomic_dir(target) as tmp:
            for path in sorted(local.iterdir()):
                if path.is_file():
                    shutil.copy2(path, tmp / path.name)
            verify_checksums(tmp, MOVIELENS_100K_SHA256)
        log.info("copied MovieLens-100K from %s to %s", local, target)
        return target
    log.info("downloading MovieLens-100K from %s", params.movielens_url)
    return fetch_movielens_100k(target, url=params.movielens_url)


def main() -> None:
    params = load_params()
    with reported_as(PARAMS_FILE, "ingest"):
        fetch(params.ingest)


if __name__ == "__main__":
    exit_with(main)
