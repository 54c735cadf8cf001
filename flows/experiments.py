"""Experiment / ablation flow: each variant is a DVC experiment run by DVC in a temporary directory
(``dvc exp run --temp -S ... --name <variant>``), one after the other, so every variant is recorded by DVC
(``dvc exp show``, ``dvc exp apply <name>``) and reuses the run cache for stages its overrides do not touch.

The variants are flow parameters (a form in the Prefect UI), their overrides allow-listed like the pipeline's. The
workspace is never written (params.yaml, outputs and dvc.lock stay as they are; DVC runs each variant from the last
commit plus the uncommitted changes of tracked files). A comparison table of the variants' metrics, read from each
experiment's commit, is published as an artifact.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger
from pydantic import BaseModel, Field

from flows.dvc_stages import StageFailed, failure_message, run_dvc
from flows.env import apply_env_defaults
from flows.workspace import (
    PARAMS_FILE, overridden_params, parse_override, resolve_root, restore_interrupted_override, workspace_lock,
)
from llara.errors import InputError
from llara.metrics_files import format_summary, metric_rows

apply_env_defaults()

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class Variant(BaseModel):
    """One experiment: a name and its ``key=value`` param overrides (``dvc exp run -S`` syntax)."""

    name: str = Field(..., description="experiment name (letters, digits, . _ -)")
    overrides: list[str] = Field(default_factory=list, description="param overrides, e.g. split.seed=7")


DEFAULT_VARIANTS = [
    Variant(name="seed-42", overrides=["split.seed=42"]),
    Variant(name="seed-7", overrides=["split.seed=7"]),
]


def check_variants(root: Path, variants: list[Variant]) -> None:
    """Fail before running anything: bad names, duplicate names, or overrides that do not validate."""
    require_names = [v.name for v in variants]
    if len(set(require_names)) != len(require_names):
        raise InputError("variants", f"names must be unique, got {require_names}")
    for v in variants:
        if not _NAME.match(v.name):
            raise InputError(f"variant {v.name!r}", "name may hold only letters, digits, '.', '_' and '-'")
        overridden_params(root / PARAMS_FILE, [parse_override(o) for o in v.overrides])


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True).stdout


def experiment_metrics(root: Path, name: str) -> dict:
    """The ``metrics/*.json`` files of experiment ``name`` (based on HEAD), read from the experiment's commit."""
    head = _git(root, "rev-parse", "HEAD").strip()
    ref = f"refs/exps/{head[:2]}/{head[2:]}/{name}"
    commit = _git(root, "rev-parse", "--verify", "--quiet", ref).strip()
    files = [f for f in _git(root, "ls-tree", "-r", "--name-only", commit, "metrics/").split() if f.endswith(".json")]
    return {Path(f).stem: json.loads(_git(root, "show", f"{commit}:{f}")) for f in sorted(files)}


@task(cache_policy=NO_CACHE)
def run_variant(repo_root: str, variant: Variant, targets: list[str]) -> dict:
    """``dvc exp run --temp`` one variant from the committed params; return its metrics files' contents."""
    log = get_run_logger()
    root = Path(repo_root)
    run_dvc(root, ["exp", "remove", variant.name], lambda line: None)  # rerunning a variant replaces it
    args = ["--wait-for-lock", "exp", "run", "--temp", "--name", variant.name]
    for override in variant.overrides:
        args += ["-S", override]
    code, lines = run_dvc(root, args + list(targets), log.info)
    if code != 0:
        error, stage_code = failure_message(lines)
        raise StageFailed(f"experiment {variant.name}", stage_code if stage_code is not None else code, error)
    return experiment_metrics(root, variant.name)


def comparison_markdown(results: dict[str, dict], metric: str) -> str:
    """One table: variant x (file, split, model) -> metric value [CI] n."""
    lines = [f"## Experiments: {metric} per variant (value [95% CI] n)", "", "| variant | file | split | model | value |",
             "|---|---|---|---|---|"]
    for variant, files in results.items():
        rows = [(name, r) for name, data in files.items() if data for r in metric_rows(data)
                if r.metric.rsplit("/", 1)[-1] == metric]
        if not rows:
            lines.append(f"| {variant} | | | | _no {metric} metrics_ |")
        for name, r in rows:
            lines.append(f"| {variant} | {name} | {r.split} | {r.model} | {format_summary(r)} |")
    return "\n".join(lines) + "\n"


@flow(name="llara-experiments", log_prints=True)
def experiments(
    variants: list[Variant] = DEFAULT_VARIANTS,
    targets: list[str] | None = None,
    repo_root: str = ".",
    metric: str = "hr@1",
) -> dict[str, dict]:
    """Run each variant as a DVC experiment (sequentially) and compare their metrics.

    Args:
        variants: the experiments: a name and ``key=value`` param overrides each.
        targets: stages to reproduce per variant (default: the whole pipeline), e.g. ["evaluate"].
        repo_root: the repository (holds dvc.yaml and params.yaml; must be a git repository with a commit).
        metric: the metric compared in the artifact table.
    """
    log = get_run_logger()
    root = resolve_root(repo_root)
    variants = [Variant.model_validate(v) for v in variants]
    results: dict[str, dict] = {}
    with workspace_lock(root, log.info):
        restore_interrupted_override(root, log.info)
        check_variants(root, variants)
        for variant in variants:
            future = run_variant.with_options(task_run_name=f"exp {variant.name}").submit(
                str(root), variant, list(targets or []))
            results[variant.name] = future.result()
        log.info("`dvc exp show` lists the variants; `dvc exp apply <name>` brings one into the workspace")
    create_markdown_artifact(markdown=comparison_markdown(results, metric), key="experiments-comparison",
                             description=f"{metric} of each variant")
    return results
