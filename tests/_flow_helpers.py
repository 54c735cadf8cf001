"""Shared by the flow/pipeline tests: a throwaway copy of the repository with a tiny synthetic generic dataset.

No MovieLens data: users, items and titles are generated from a seed.
"""

from __future__ import annotations

import csv
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SYNTH_DIR = "data/raw/synth"
CHEAP_TARGETS = ["split"]  # fetch -> ingest -> split@*: seconds, no models


def child_env(**extra: str) -> dict[str, str]:
    """Environment for every test's subprocesses: the venv's bin first on PATH, offline, no analytics, no
    bytecode files, git identity, and no ``LLARA_VERBOSE`` leaking in from the caller's shell (tests assert on
    the one-line errors); ``extra`` overrides any of it."""
    env = dict(os.environ)
    env.pop("LLARA_VERBOSE", None)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.update({
        "HF_HUB_OFFLINE": "1", "DVC_NO_ANALYTICS": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90", "GIT_AUTHOR_NAME": "test",
        "GIT_AUTHOR_EMAIL": "test@example.invalid", "GIT_COMMITTER_NAME": "test",
        "GIT_COMMITTER_EMAIL": "test@example.invalid",
    })
    env.update(extra)
    return env


def write_interactions(path: Path, users: range, per_user: int, n_items: int, seed: int, header: bool = True) -> None:
    rng = random.Random(seed)
    with open(path, "a" if not header else "w", newline="") as f:
        w = csv.writer(f)
        if header:
            w.writerow(["user", "item", "timestamp"])
        for u in users:
            for t in range(per_user):
                w.writerow([u, rng.randint(1, n_items), 1_000_000 + 100 * t + u + 10_000 * seed])


def git_files(*flags: str) -> list[str]:
    """The repository's files as ``git ls-files`` lists them (NUL-separated, so any name survives)."""
    out = subprocess.run(["git", "ls-files", "-z", *flags], cwd=REPO, check=True, capture_output=True).stdout
    return [name for name in out.decode().split("\0") if name]


def source_files(max_untracked_bytes: int = 5_000_000) -> list[str]:
    """Tracked files + untracked, not ignored ones, minus pipeline outputs (a stage's out not yet gitignored, e.g.
    a half-built model directory) and big untracked files."""
    from dvc.repo import Repo

    with Repo(str(REPO)) as repo:
        outs = [Path(out.fs_path).resolve().relative_to(REPO).as_posix() for out in repo.index.outs]
    untracked = [
        name for name in git_files("-o", "--exclude-standard")
        if not any(name == o or name.startswith(o + "/") for o in outs)
        and (REPO / name).is_file() and (REPO / name).stat().st_size <= max_untracked_bytes
    ]
    return sorted(set(git_files("-c")) | set(untracked))


def make_workspace(dest: Path, users: int = 30, per_user: int = 12, n_items: int = 40) -> Path:
    """Copy the repo's tracked + untracked-not-ignored files (minus tests and committed metrics) to ``dest``, add a synthetic generic dataset,
    point params.yaml at it (no rating filter, seeded user split), git init + commit (DVC experiments need one)."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in source_files():
        src = REPO / name
        if src.is_file() and not name.startswith(("tests/", "metrics/")):  # metrics/: the real pipeline's results
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(src.read_bytes())
    (dest / "dvc.lock").unlink(missing_ok=True)
    raw = dest / SYNTH_DIR
    raw.mkdir(parents=True)
    with open(raw / "items.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["item", "title"])
        for i in range(1, n_items + 1):
            w.writerow([i, f"Synthetic item {i}"])
    write_interactions(raw / "interactions.csv", range(1, users + 1), per_user, n_items, seed=0)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    params["ingest"].update(source="generic", input_dir=SYNTH_DIR, movielens_local_dir=None)
    params["split"].update(min_rating=None, heldout_users=None, protocols=["paper", "leave-one-out"])
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    with open(dest / "data/raw/.gitignore", "a") as f:
        f.write("\n/synth\n")
    env = child_env()
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "workspace"]):
        subprocess.run(cmd, cwd=dest, check=True, env=env)
    return dest


def dvc(root: Path, *args: str, check: bool = True, timeout: float | None = None) -> subprocess.CompletedProcess:
    """``dvc <args>`` in ``root`` with this venv's DVC and the tests' environment (output captured as text)."""
    return subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, env=child_env(), capture_output=True,
                          text=True, check=check, timeout=timeout)


MINI_DVC_YAML = """
stages:
  make:
    foreach: [a, b]
    do:
      cmd: python scripts.py make ${item}
      deps:
        - scripts.py
      outs:
        - out/${item}.txt
  join:
    cmd: python scripts.py join
    deps: [out/a.txt, out/b.txt]
    outs: [joined.txt]
  flaky:
    cmd: python scripts.py flaky
    outs: [flaky.txt]
  bad:
    cmd: python scripts.py bad
    outs: [bad.txt]
  slow:
    cmd: python scripts.py slow
    params: [split.seed]
    outs: [slow.txt]
"""

MINI_SCRIPTS = '''
import json, sys, time
from pathlib import Path

def attempt(name):
    path = Path("attempts") / name
    path.parent.mkdir(exist_ok=True)
    count = int(path.read_text()) + 1 if path.exists() else 1
    path.write_text(str(count))
    return count

what = sys.argv[1]
if what == "make":
    name = sys.argv[2]
    start = time.time()
    time.sleep(1.5)
    Path("out").mkdir(exist_ok=True)
    Path(f"out/{name}.txt").write_text(name)
    Path("times").mkdir(exist_ok=True)
    Path(f"times/{name}.json").write_text(json.dumps([start, time.time()]))
elif what == "join":
    Path("joined.txt").write_text(Path("out/a.txt").read_text() + Path("out/b.txt").read_text())
elif what == "flaky":
    if attempt("flaky") == 1:
        print("error: download interrupted", file=sys.stderr)
        sys.exit(1)
    Path("flaky.txt").write_text("ok")
elif what == "slow":  # records its pid, then runs until stopped
    Path(sys.argv[0]).resolve().parent.joinpath("slow.pid").write_text(str(__import__("os").getpid()))
    time.sleep(300)
    Path("slow.txt").write_text("done")
elif what == "bad":
    attempt("bad")
    print("error: data.csv: row 3: column 'user' is not an integer", file=sys.stderr)
    sys.exit(2)
'''


def make_mini_repo(tmp_path: Path) -> Path:
    """A tiny DVC repo (no git) whose stages are python sleepers, a flaky one and one that reports bad input."""
    root = tmp_path / "repo"
    root.mkdir()
    (root / "dvc.yaml").write_text(MINI_DVC_YAML)
    (root / "scripts.py").write_text(textwrap.dedent(MINI_SCRIPTS))
    (root / "params.yaml").write_text((REPO / "params.yaml").read_text())
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=root, check=True, env=child_env())
    return root
