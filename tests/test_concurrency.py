"""Crashes and concurrent runs: atomic artifacts, killed writers, two pipelines on one working copy.

A failed or killed write leaves the previous artifact or nothing (never a partial one) and no stray temp files once
the next write of the same target has run; two ``dvc repro`` at once serialize through DVC's lock (or the second
fails with a lock message); two direct stage runs at once both finish with one valid artifact.
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

import llara.atomic as atomic
from llara.atomic import atomic_dir, atomic_path, remove_stale_temps, write_json
from llara.data.ingest import read_generic, write_dataset
from llara.data.split import SplitConfig, make_split
from llara.data.split_files import write_split

from _flow_helpers import child_env
from conftest import synthetic_tables, write_csv


def hidden(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def files_of(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------ atomic writes


class Boom(RuntimeError):
    pass


def test_error_mid_directory_write_leaves_nothing(tmp_path):
    with pytest.raises(Boom):
        with atomic_dir(tmp_path / "out") as tmp:
            (tmp / "a.parquet").write_bytes(b"half")
            raise Boom
    assert list(tmp_path.iterdir()) == []


def test_error_mid_write_keeps_the_previous_artifact(tmp_path):
    with atomic_dir(tmp_path / "out") as tmp:
        (tmp / "a.txt").write_text("old")
    with pytest.raises(Boom):
        with atomic_dir(tmp_path / "out") as tmp:
            (tmp / "a.txt").write_text("new")
            (tmp / "b.txt").write_text("new")
            raise Boom
    assert files_of(tmp_path / "out") == {"a.txt": b"old"}
    assert hidden(tmp_path) == []
    with pytest.raises(Boom):
        with atomic_path(tmp_path / "meta.json") as tmp:
            tmp.write_text("{")
            raise Boom
    assert list(p.name for p in tmp_path.iterdir()) == ["out"]


def test_split_write_failing_on_its_third_file_leaves_nothing(tmp_path, monkeypatch):
    interactions, items = synthetic_tables(20, 40, seed=1)
    ds = read_generic(write_csv(tmp_path / "raw" / "i.csv", interactions), write_csv(tmp_path / "raw" / "t.csv", items))
    split = make_split(ds, SplitConfig(protocol="leave-one-out", min_rating=None))
    real, calls = pq.ParquetWriter.write_table, []

    def flaky(self, table, *args, **kwargs):
        calls.append(table.num_rows)
        if len(calls) == 3:  # test.parquet, after some of its bytes
            real(self, table.slice(0, 1), *args, **kwargs)
            raise OSError("disk full")
        return real(self, table, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetWriter, "write_table", flaky)
    with pytest.raises(OSError, match="disk full"):
        write_split(split, tmp_path / "split" / "leave-one-out")
    assert calls == [split.train.height, split.val.height, split.test.height]
    assert list((tmp_path / "split").iterdir()) == []
    monkeypatch.setattr(pq.ParquetWriter, "write_table", real)
    with pytest.raises(OSError):
        with monkeypatch.context() as m:
            m.setattr(atomic.json, "dumps", lambda *a, **k: (_ for _ in ()).throw(OSError("no space")))
            write_dataset(ds, tmp_path / "ingested")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw", "split"]


def test_artifacts_get_normal_permissions(tmp_path):
    umask = os.umask(0o022)
    os.umask(umask)
    write_json({"a": 1}, tmp_path / "m.json")
    with atomic_dir(tmp_path / "d") as tmp:
        (tmp / "x").write_text("x")
    assert stat.S_IMODE((tmp_path / "m.json").stat().st_mode) == 0o666 & ~umask
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o777 & ~umask


def test_a_concurrent_writer_swapping_in_between_is_retried(tmp_path, monkeypatch):
    target = tmp_path / "out"
    with atomic_dir(target) as tmp:
        (tmp / "v").write_text("first")
    real_replace, intruded = os.replace, []

    def replace(src, dst):
        # right after our copy of the old target moved aside, another process puts its own copy in place
        if Path(dst) == target and not intruded:
            intruded.append(True)
            target.mkdir()
            (target / "v").write_text("theirs")
        return real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", replace)
    with atomic_dir(target) as tmp:
        (tmp / "v").write_text("ours")
    assert intruded and (target / "v").read_text() == "ours"
    assert hidden(tmp_path) == []


WRITER = """
import sys, time
from llara.atomic import atomic_dir
with atomic_dir(sys.argv[1]) as tmp:
    (tmp / "a.parquet").write_bytes(b"x" * 1000)
    print("writing", flush=True)
    time.sleep(60)
    (tmp / "b.parquet").write_bytes(b"y")
"""


@pytest.mark.parametrize("existing", [False, True])
def test_a_killed_writer_leaves_no_partial_artifact_and_its_temp_is_swept(tmp_path, repo_root, existing):
    target = tmp_path / "out"
    if existing:
        with atomic_dir(target) as tmp:
            (tmp / "old.parquet").write_text("old")
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], stdout=subprocess.PIPE, text=True,
                            cwd=repo_root, env={**os.environ, "PYTHONPATH": str(repo_root)})
    try:
        assert proc.stdout.readline().strip() == "writing"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    # the previous artifact (or none) is intact; the dead writer's temp directory is still there ...
    assert (files_of(target) == {"old.parquet": b"old"}) if existing else not target.exists()
    assert len(hidden(tmp_path)) == 1 and str(proc.pid) in hidden(tmp_path)[0]
    # ... until the next write of the same target sweeps it
    with atomic_dir(target) as tmp:
        (tmp / "new.parquet").write_text("new")
    assert files_of(target) == {"new.parquet": b"new"} and hidden(tmp_path) == []


def test_temps_of_live_processes_are_never_swept(tmp_path):
    target = tmp_path / "out"
    with atomic_dir(target) as tmp:
        assert remove_stale_temps(target) == [] and tmp.exists()
        (tmp / "f").write_text("f")
    assert files_of(target) == {"f": b"f"}


# ------------------------------------------------------------------ whole pipelines at once


def pipeline_copy(root: Path, repo_root: Path) -> Path:
    """A working copy with the real fetch/ingest/split stages and code, on a tiny synthetic dataset, DVC-initialized."""
    root.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__")
    for name in ("llara", "tasks"):
        shutil.copytree(repo_root / name, root / name, ignore=ignore)
    shutil.copytree(repo_root / "data" / "reference", root / "data" / "reference")
    stages = yaml.safe_load((repo_root / "dvc.yaml").read_text())["stages"]
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": {k: stages[k] for k in ("fetch", "ingest", "split")}}))
    params = yaml.safe_load((repo_root / "params.yaml").read_text())
    params["ingest"].update(source="generic", input_dir="data/raw/mine", movielens_local_dir=None,
                            columns={"user": "user", "item": "item", "timestamp": "timestamp", "rating": "rating", "title": "title"})
    params["split"].update(protocols=["leave-one-out", "paper"], heldout_users=None)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    interactions, items = synthetic_tables(40, 80, seed=9)
    write_csv(root / "data" / "raw" / "mine" / "interactions.csv", interactions)
    write_csv(root / "data" / "raw" / "mine" / "items.csv", items)
    subprocess.run(["dvc", "init", "--no-scm", "-q"], cwd=root, check=True, env=_env(root))
    return root


def _env(root: Path) -> dict:
    return child_env(PYTHONPATH=str(root))


def reference_outputs(root: Path, tmp_path: Path, monkeypatch) -> dict[str, bytes]:
    """The same stages run once, in-process, into a separate directory."""
    from tasks.ingest import ingest
    from tasks.params import load_params
    from tasks.split import split

    ref = tmp_path / "reference"
    monkeypatch.chdir(root)
    params = load_params()
    ingest(params.ingest, out_dir=ref / "ingested")
    for protocol in params.split.protocols:
        split(params.split, protocol, data_dir=ref / "ingested", out_root=ref / "split")
    monkeypatch.undo()
    return files_of(ref)


def outputs(root: Path) -> dict[str, bytes]:
    return {**{f"ingested/{k}": v for k, v in files_of(root / "data" / "ingested").items()},
            **{f"split/{k}": v for k, v in files_of(root / "data" / "split").items()}}


def start(root: Path, *cmd: str) -> subprocess.Popen:
    return subprocess.Popen(list(cmd), cwd=root, env=_env(root), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def assert_no_temps(root: Path) -> None:
    for directory in (root / "data", root / "data" / "split"):
        assert [n for n in hidden(directory) if ".tmp" in n or ".old-" in n] == []


def run_twice_at_once(root: Path, *cmd: str) -> list[tuple[int, str]]:
    procs = [start(root, *cmd) for _ in range(2)]
    return [(p.returncode, p.communicate(timeout=300)[0]) for p in procs if p.wait(timeout=300) is not None]


def assert_serialized_or_clean_failure(results: list[tuple[int, str]]) -> None:
    """At least one run succeeds; a run that fails says why (DVC's repo lock or a stage's busy paths)."""
    assert any(code == 0 for code, _ in results), results
    for code, log in results:
        assert "Traceback" not in log, log
        if code != 0:
            assert "lock" in log.lower() or "is busy" in log, log


@pytest.mark.integration
def test_two_dvc_repro_at_once_serialize_or_fail_cleanly(tmp_path, repo_root, monkeypatch):
    """DVC's ``--wait-for-lock`` waits for the repository lock, but DVC releases that lock while a stage command runs
    and guards the stage's paths with its read/write lock instead: the second run can then fail with "... is busy".
    Either way no artifact is written twice at once, and a rerun finds everything up to date."""
    copies = {"wait": ("dvc", "--wait-for-lock", "repro", "split"), "nowait": ("dvc", "repro", "split")}
    expected = None
    for name, cmd in copies.items():
        root = pipeline_copy(tmp_path / name, repo_root)
        if expected is None:
            expected = reference_outputs(root, tmp_path, monkeypatch)
        assert_serialized_or_clean_failure(run_twice_at_once(root, *cmd))
        assert outputs(root) == expected
        assert_no_temps(root)
        again = subprocess.run(["dvc", "--wait-for-lock", "repro", "split"], cwd=root, env=_env(root),
                               capture_output=True, text=True, timeout=300)
        assert again.returncode == 0 and "Running stage" not in again.stdout, again.stdout + again.stderr
        assert outputs(root) == expected

    # two direct stage runs (no DVC lock at all) at once: both finish, one valid artifact, no temp files
    results = run_twice_at_once(root, sys.executable, "-m", "tasks.split", "leave-one-out")
    assert [code for code, _ in results] == [0, 0], results
    assert outputs(root) == expected
    assert_no_temps(root)


def test_cpu_slot_runs_cpu_jobs_one_at_a_time(tmp_path, monkeypatch):
    """A second CPU fine-tuning waits for the first (the flow starts finetune@ stages side by side); none on CUDA or
    inside a torchrun launch."""
    import threading

    from tasks.common import cpu_slot

    lock, events, messages = tmp_path / "slot.lock", [], []

    def second():
        with cpu_slot("cpu-finetune", "cpu", messages.append, path=lock) as taken:
            events.append(("second", taken))

    with cpu_slot("cpu-finetune", "cpu", messages.append, path=lock) as taken:
        assert taken
        thread = threading.Thread(target=second)
        thread.start()
        thread.join(1.0)
        assert thread.is_alive() and events == []  # blocked while the first holds the CPU
        events.append(("first done", True))
    thread.join(10)
    assert events == [("first done", True), ("second", True)]
    assert "waiting for another cpu-finetune" in messages[0] and str(lock) in messages[0]
    with cpu_slot("cpu-finetune", "cpu", messages.append, path=lock):
        with cpu_slot("cpu-finetune", "cuda", messages.append, path=lock) as taken:
            assert not taken  # a GPU job does not wait for the CPU
        monkeypatch.setenv("WORLD_SIZE", "2")
        with cpu_slot("cpu-finetune", "cpu", messages.append, path=lock) as taken:
            assert not taken  # ranks of one launch must not lock each other out
