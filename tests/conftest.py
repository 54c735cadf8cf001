"""Generic test fixtures: repository paths, the real shared data, tiny synthetic datasets, running the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The read-only real data (../shared/data seen from the repo root); tests using it skip when it is absent."""
    if not (SHARED_DATA / "ml-100k" / "u.data").is_file():
        pytest.skip(f"real data not found at {SHARED_DATA} (needs ml-100k/u.data)")
    return SHARED_DATA


def synthetic_tables(n_users: int = 30, n_items: int = 60, seed: int = 0, per_user: tuple[int, int] = (6, 15)):
    """Interactions (user, item, timestamp, rating) and items (item, title) as lists of dicts; ids start at 1.

    Each user rates a random set of distinct items at increasing times (a few equal timestamps included).
    """
    rng = np.random.default_rng(seed)
    interactions = []
    for user in range(1, n_users + 1):
        count = min(n_items, int(rng.integers(per_user[0], per_user[1] + 1)))
        items = rng.choice(np.arange(1, n_items + 1), size=count, replace=False)
        time = 1_000_000 + int(rng.integers(0, 1000))
        for item in items:
            time += int(rng.integers(0, 3))  # 0 -> a tie with the previous interaction
            interactions.append({"user": user, "item": int(item), "timestamp": time, "rating": int(rng.integers(1, 6))})
    items = [{"item": i, "title": f"Film {i} (19{50 + i % 50})"} for i in range(1, n_items + 1)]
    return interactions, items


def write_csv(path: Path, rows: list[dict], columns: list[str] | None = None, encoding: str = "utf8") -> Path:
    """Write dict rows as a simple CSV (values quoted when they hold a comma)."""
    columns = columns or list(rows[0])

    def cell(value) -> str:
        text = "" if value is None else str(value)
        return f'"{text}"' if ("," in text or '"' in text) else text

    lines = [",".join(columns)] + [",".join(cell(row.get(c)) for c in columns) for row in rows]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(("\n".join(lines) + "\n").encode(encoding))
    return path


@pytest.fixture
def synthetic_csv(tmp_path):
    """Factory: write a tiny synthetic interactions.csv + items.csv into ``tmp_path/raw`` and return their paths."""

    def make(n_users: int = 30, n_items: int = 60, seed: int = 0, directory: Path | None = None, **kwargs):
        directory = directory or tmp_path / "raw"
        interactions, items = synthetic_tables(n_users, n_items, seed, **kwargs)
        return write_csv(directory / "interactions.csv", interactions), write_csv(directory / "items.csv", items)

    return make


@pytest.fixture
def cli(capsys):
    """Run ``llara ...`` in-process; returns (exit code, stdout, stderr)."""
    from llara.cli import main

    def run(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exc:  # argparse errors
            code = exc.code
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture
def subprocess_env() -> dict[str, str]:
    """Environment for child processes (``_flow_helpers.child_env``, the one definition)."""
    from _flow_helpers import child_env

    return child_env()


def sigkill_when(child, ready, timeout: float = 300) -> None:
    """Wait until ``ready()`` (the child paused where the test wants it), then SIGKILL the child and reap it."""
    import signal
    import time

    deadline = time.time() + timeout
    while not ready():
        assert child.poll() is None, child.stderr.read() if child.stderr else f"exit {child.returncode}"
        assert time.time() < deadline, "the child never reached the kill point"
        time.sleep(0.1)
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)


@pytest.fixture(scope="module")
def prefect_api():
    """A Prefect test server for the tests of one module."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        yield


@pytest.fixture()
def mini_repo(tmp_path: Path) -> Path:
    """A tiny DVC repo (no git): python sleepers, a flaky stage, a bad-input one (``_flow_helpers.make_mini_repo``)."""
    from _flow_helpers import make_mini_repo

    return make_mini_repo(tmp_path)


@pytest.fixture(scope="module")
def recommender_split(tmp_path_factory) -> tuple[Path, Path]:
    """(items.parquet, split directory) of the recommender tests' tiny synthetic split (``_recommender_helpers``)."""
    from _recommender_helpers import make_fixture

    return make_fixture(tmp_path_factory.mktemp("recfix"))


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> Path:
    """The real SmolLM2 tokenizer, extracted once per session."""
    from _llm_helpers import extract_tokenizer

    return extract_tokenizer(tmp_path_factory.mktemp("tokenizer"))


@pytest.fixture(scope="session")
def tiny_llm_dir(tokenizer_dir, tmp_path_factory) -> Path:
    """A tiny random Llama with the real tokenizer (``_llm_helpers.make_tiny_llm``), built once per session."""
    from _llm_helpers import make_tiny_llm

    return make_tiny_llm(tokenizer_dir, tmp_path_factory.mktemp("tiny-llm"))
