"""Shared by the bad-input corpora (test_bad_inputs.py: the ``llara`` CLI; test_bad_stage_inputs.py: the stages'
entry points): the clean-failure check, small valid inputs to break, and the case records."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import yaml

from llara.data.ingest import Columns, read_generic, write_dataset

from conftest import synthetic_tables, write_csv


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def assert_clean_failure(code, err: str, root: Path, before: set[str], names: tuple[str, ...], *, exact_one_line=True):
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert code == 2, f"exit {code}, stderr:\n{err}"
    assert "Traceback" not in err, err
    assert len(errors) == 1, err
    if exact_one_line:
        assert len(lines) == 1, err
    for fragment in names:
        assert fragment in errors[0], f"{fragment!r} not in {errors[0]!r}"
    assert tree(root) == before, f"left behind: {sorted(tree(root) - before)}"


def generic_inputs(root: Path, inter_rows=None, item_rows=None, sub: str = "in") -> tuple[Path, Path]:
    interactions, items = synthetic_tables(n_users=12, n_items=40, seed=11)
    return (
        write_csv(root / sub / "interactions.csv", inter_rows if inter_rows is not None else interactions),
        write_csv(root / sub / "items.csv", item_rows if item_rows is not None else items),
    )


def ingested(root: Path, n_users=12, n_items=40, seed=11, per_user=(6, 15)) -> Path:
    interactions, items = synthetic_tables(n_users=n_users, n_items=n_items, seed=seed, per_user=per_user)
    raw = root / "raw"
    ds = read_generic(write_csv(raw / "i.csv", interactions), write_csv(raw / "t.csv", items), Columns(rating="rating"))
    return write_dataset(ds, root / "in" / "data")


@dataclass(frozen=True)
class Case:
    id: str
    argv: Callable[[Path], list[str]]
    names: tuple[str, ...]


def stage_copy(root: Path, repo_root: Path, params_change: Callable[[dict], None]) -> Path:
    """A working copy holding params.yaml (the repo's, edited), data/reference and a tiny generic dataset."""
    params = yaml.safe_load((repo_root / "params.yaml").read_text())
    params["ingest"].update(source="generic", input_dir="data/raw/mine", movielens_local_dir=None,
                            columns={"user": "user", "item": "item", "timestamp": "timestamp", "rating": "rating", "title": "title"})
    params["split"].update(heldout_users=None, protocols=["leave-one-out"])
    params_change(params)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    inter, items = generic_inputs(root / "data" / "raw" / "mine", sub=".")
    write_dataset(read_generic(inter, items, Columns(rating="rating")), root / "data" / "ingested")
    return root


def run_stage(root: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    env = {**env, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", *args], cwd=root, env=env, capture_output=True, text=True, timeout=120)


def set_key(dotted: str, value):
    def change(params: dict):
        *path, last = dotted.split(".")
        node = params
        for key in path:
            node = node.setdefault(key, {})
        node[last] = value

    return change


@dataclass(frozen=True)
class StageCase:
    id: str
    stage: tuple[str, ...]
    change: Callable  # params change, or a factory of one taking the working copy root when ``needs_root``
    names: tuple[str, ...]
    needs_root: bool = False
    prepare: Callable[[Path], None] | None = None
