"""The real pipeline (fetch -> ingest -> split@*) in a throwaway copy of the repo with a synthetic generic dataset:
the Prefect flow runs the same stages as plain `dvc repro`, a second run skips everything, `-S` overrides are
temporary, and the retraining flow reruns only what new interactions affect."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import yaml

from _flow_helpers import CHEAP_TARGETS, SYNTH_DIR, child_env, dvc, make_workspace
from test_inbox import deliver, kill_merge_at

from llara.data.inbox import GenericDataset
from llara.data.ingest import read_dataset
from llara.data.tables import Columns

pytestmark = pytest.mark.integration

SIDE_STAGE = """
  side_model:                            # test double for `llm`: a stage that does not depend on the data
    cmd: python -c "open('side.txt', 'w').write('model')"
    outs:
      - side.txt
"""


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory) -> Path:
    """One copy of the repo (other people edit it meanwhile): every workspace of this module is a copy of it."""
    return make_workspace(tmp_path_factory.mktemp("snapshot") / "ws")


def _copy(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest, symlinks=True)
    return dest


@pytest.fixture(scope="module")
def plain_run(snapshot: Path, tmp_path_factory) -> tuple[Path, list[str]]:
    """A workspace reproduced with `llara run --no-prefect -S split.seed=7 split` (plain dvc repro)."""
    root = _copy(snapshot, tmp_path_factory.mktemp("plain") / "ws")
    result = subprocess.run([sys.executable, "-m", "llara", "run", "--no-prefect", "-S", "split.seed=7", *CHEAP_TARGETS],
                            cwd=root, env=child_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    ran = [line.split("'")[1] for line in result.stdout.splitlines() if line.startswith("Running stage '")]
    return root, ran


def test_flow_matches_dvc_repro_then_skips_everything(tmp_path: Path, snapshot: Path, plain_run, prefect_api):
    from flows.pipeline import pipeline

    plain_root, plain_ran = plain_run
    assert sorted(plain_ran) == ["fetch", "ingest", "split@leave-one-out", "split@paper"]
    root = _copy(snapshot, tmp_path / "ws")
    params_before = (root / "params.yaml").read_bytes()

    first = pipeline(repo_root=str(root), targets=CHEAP_TARGETS, overrides=["split.seed=7"])
    assert sorted(s for s, v in first.items() if v == "ran") == sorted(plain_ran)
    assert (root / "params.yaml").read_bytes() == params_before, "the override must not outlive the run"
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    assert lock["stages"]["split@paper"]["params"]["params.yaml"]["split"]["seed"] == 7
    assert lock == yaml.safe_load((plain_root / "dvc.lock").read_text()), "same stages, same outputs as dvc repro"

    mtime = (root / "dvc.lock").stat().st_mtime_ns
    second = pipeline(repo_root=str(root), targets=CHEAP_TARGETS, overrides=["split.seed=7"])
    assert set(second.values()) == {"skipped"} and set(second) == set(first)
    assert (root / "dvc.lock").stat().st_mtime_ns == mtime


def test_retrain_reruns_only_what_new_interactions_affect(tmp_path: Path, plain_run, prefect_api):
    from flows.retrain import retrain

    root = _copy(plain_run[0], tmp_path / "ws")
    with open(root / "dvc.yaml", "a") as f:
        f.write(SIDE_STAGE)
    (root / "params.yaml").write_text((root / "params.yaml").read_text().replace("seed: 42", "seed: 7"))
    targets = CHEAP_TARGETS + ["side_model"]
    dvc(root, "repro", *targets)
    assert "up to date" in dvc(root, "status", *targets).stdout

    raw = root / SYNTH_DIR
    before = {name: (raw / name).read_bytes() for name in ("interactions.csv", "items.csv")}
    inbox = root / "data/inbox"
    deliver(inbox, "day1.csv", [{"user": 31, "item": i, "timestamp": 2_000_000 + 100 * i} for i in range(1, 5)])
    deliver(inbox, "items-new.csv", [{"item": 41, "title": "Synthetic item 41"}])
    deliver(inbox, "day2.parquet", frame=pl.DataFrame({"user": [32, 32, 32], "item": [41, 2, 3],
                                                       "timestamp": [2_100_000, 2_100_001, 2_100_002]}))
    deliver(inbox, "bad.csv", [{"customer": 1, "item": 2, "timestamp": 3}])
    deliver(inbox, "late.csv", [{"user": 33, "item": 1, "timestamp": 5}], marker=False)

    statuses = retrain(repo_root=str(root), inbox="data/inbox", targets=targets)
    assert statuses == {"fetch": "skipped", "ingest": "ran", "split@paper": "ran", "split@leave-one-out": "ran",
                        "side_model": "skipped"}
    assert {name: (raw / name).read_bytes() for name in before} == before, "merging never edits the raw files"
    assert sorted(p.name for p in (inbox / "merged").iterdir()) == ["day1.csv", "day2.parquet", "items-new.csv"]
    assert "missing column(s) ['user']" in (inbox / "quarantine" / "bad.csv.reason").read_text()
    assert (inbox / "late.csv").is_file(), "no completion marker: not picked up"
    ingested = read_dataset(root / "data/ingested")
    rows = ingested.ids.with_originals(ingested.interactions, {"user": "user", "item": "item"})
    assert rows.filter(pl.col("original_user") == 32)["original_item"].to_list() == [41, 2, 3]
    assert rows.filter(pl.col("original_user") == 31).height == 4
    assert "up to date" in dvc(root, "status", *targets).stdout

    shutil.copy(inbox / "merged" / "day1.csv", inbox / "day1-again.csv")  # delivered twice, renamed
    (inbox / "day1-again.csv.done").touch()
    again = retrain(repo_root=str(root), inbox="data/inbox", targets=targets)
    assert set(again.values()) == {"skipped"}

    # killed between writing the part and recording it in the ledger; the next night's flow adds the rows once
    deliver(inbox, "day3.csv", [{"user": 34, "item": 5, "timestamp": 2_200_000}])
    data = GenericDataset(raw, columns=Columns())
    kill_merge_at("write_parquet", data, inbox, tmp_path)
    third = retrain(repo_root=str(root), inbox="data/inbox", targets=targets)
    assert third["ingest"] == "ran"
    ingested = read_dataset(root / "data/ingested")
    assert ingested.ids.users.lookup(34) is not None
    assert ingested.interactions.filter(pl.col("user") == ingested.ids.users.lookup(34)).height == 1
    assert "up to date" in dvc(root, "status", *targets).stdout


METRIC_STAGE = """
  demo_metric:                           # a metric that depends on a param, as evaluate's does
    cmd: python demo_metric.py
    deps: [demo_metric.py]
    params: [split.seed]
    metrics:
      - metrics/demo.json:
          cache: false
"""
METRIC_SCRIPT = """
import json, os, yaml
seed = yaml.safe_load(open("params.yaml"))["split"]["seed"]
os.makedirs("metrics", exist_ok=True)
json.dump({"test": {"m": {"hr@1": {"value": seed / 10, "ci95": [0, 1], "n": 30}}}}, open("metrics/demo.json", "w"))
"""


def test_experiments_flow_records_each_variant(tmp_path: Path, plain_run, prefect_api):
    from flows.experiments import Variant, experiments

    root = _copy(plain_run[0], tmp_path / "ws")
    with open(root / "dvc.yaml", "a") as f:
        f.write(METRIC_STAGE)
    (root / "demo_metric.py").write_text(METRIC_SCRIPT)
    subprocess.run(["git", "add", "-A"], cwd=root, check=True, env=child_env())
    subprocess.run(["git", "commit", "-qm", "metric stage"], cwd=root, check=True, env=child_env())
    before = {p: p.read_bytes() for p in (root / "params.yaml", root / "dvc.lock")}
    results = experiments(variants=[Variant(name="seed-1", overrides=["split.seed=1"]),
                                    Variant(name="seed-2", overrides=["split.seed=2"])],
                          targets=["demo_metric"], repo_root=str(root))
    assert list(results) == ["seed-1", "seed-2"]
    assert [results[v]["demo"]["test"]["m"]["hr@1"] for v in results] == [
        {"value": 0.1, "ci95": [0, 1], "n": 30}, {"value": 0.2, "ci95": [0, 1], "n": 30}]
    assert {p: p.read_bytes() for p in before} == before, "the workspace must not be written"
    assert not (root / "metrics/demo.json").exists()
    listed = dvc(root, "exp", "list", "--name-only").stdout.split()
    assert sorted(listed) == ["seed-1", "seed-2"]
