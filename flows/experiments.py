"""Experiment / ablation flow: each variant is a DVC experiment (``dvc exp run -S ... --name <variant>``), run one
after the other in the workspace, so every variant is recorded by DVC (``dvc exp show``, ``dvc exp apply <name>``)
and reuses the run cache for stages its overrides do not touch.

The variants are flow parameters (a form in the Prefect UI). Every variant starts from the committed params.yaml
(variants do not compound) and params.yaml is restored at the end; the workspace's outputs/dvc.lock are those of the
last variant until the next ``llara run``. A comparison table of the variants' metrics is published as an artifact.
"""

from __future__ import annotations

import re
from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger
from pydantic import BaseModel, Field

from flows.dvc_stages import StageFailed, failure_message, run_dvc
from flows.workspace import (
    PARAMS_FILE, apply_env_defaults, overridden_params, parse_override, resolve_root, restore_interrupted_override,
    workspace_lock, write_atomic,
)
from llara.errors import InputError
from llara.report import format_summary, load_metrics, metric_rows

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


@task(cache_policy=NO_CACHE)
def run_variant(repo_root: str, variant: Variant, targets: list[str], original_params: bytes) -> dict:
    """``dvc exp run`` one variant from the original params; return its metrics files' contents."""
    log = get_run_logger()
    root = Path(repo_root)
    write_atomic(root / PARAMS_FILE, original_params)
    run_dvc(root, ["exp", "remove", variant.name], lambda line: None)  # rerunning a variant replaces it
    args = ["--wait-for-lock", "exp", "run", "--name", variant.name]
    for override in variant.overrides:
        args += ["-S", override]
    code, lines = run_dvc(root, args + list(targets), log.info)
    if code != 0:
        error, stage_code = failure_message(lines)
        raise StageFailed(f"experiment {variant.name}", stage_code if stage_code is not None else code, error)
    return {p.stem: load_metrics(p) for p in sorted((root / "metrics").glob("*.json"))}


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
        original = (root / PARAMS_FILE).read_bytes()
        try:
            for variant in variants:
                future = run_variant.with_options(task_run_name=f"exp {variant.name}").submit(
                    str(root), variant, list(targets or []), original)
                results[variant.name] = future.result()
        finally:
            write_atomic(root / PARAMS_FILE, original)
            log.info("params.yaml restored; `dvc exp show` lists the variants")
    create_markdown_artifact(markdown=comparison_markdown(results, metric), key="experiments-comparison",
                             description=f"{metric} of each variant")
    return results
