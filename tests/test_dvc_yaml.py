"""dvc.yaml says what the stages do: each stage's code deps cover every module its command imports (static import
graph, tests/test_structure.py), its data deps and outs are the folders tasks/paths.py names, and the params it
tracks are the keys it reads."""

from __future__ import annotations

import dataclasses
from pathlib import Path


import pytest
import yaml

from _flow_helpers import dvc, git_files
from llara import code_key
from test_structure import import_graph, modules

ROOT = Path(__file__).resolve().parents[1]
# Entry-point plumbing: reading params.yaml, logging, exit codes, atomic writes. They cannot change what a stage
# computes, so they are no stage's dep (else every stage would rerun when one of them changes).
PLUMBING = {"tasks.params", "tasks.common", "tasks.paths"} | code_key.PLUMBING


def stages() -> dict[str, dict]:
    raw = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    return {name: stage.get("do", stage) for name, stage in raw.items()}


def code_closure(module: str, graph: dict[str, set[str]]) -> set[str]:
    """The project modules ``module`` imports, directly or not, without walking through the plumbing."""
    seen, stack = set(), [module]
    while stack:
        current = stack.pop()
        if current in seen:
            continue
        seen.add(current)
        if current not in PLUMBING:
            stack += graph[current]
    return seen - PLUMBING


def covered(path: str, deps: list[str]) -> bool:
    return any(path == dep or path.startswith(dep.rstrip("/") + "/") for dep in deps)


@pytest.mark.parametrize("name", sorted(stages()))
def test_code_deps_cover_every_module_the_stage_imports(name):
    stage, graph, files = stages()[name], import_graph(), modules()
    module = stage["cmd"].split()[2]  # python -m tasks.<stage> ...
    needed = sorted(str(files[m].relative_to(ROOT)) for m in code_closure(module, graph))
    missing = [path for path in needed if not covered(path, stage["deps"])]
    assert not missing, f"dvc.yaml stage {name}: deps miss modules its command imports: {missing}"
    code_deps = [d for d in stage["deps"] if d.endswith(".py")]
    assert not set(code_deps) - set(needed), f"dvc.yaml stage {name}: code deps it does not import"


def test_the_closure_follows_lazy_imports():
    closure = code_closure("tasks.pretrain", import_graph())
    assert {"llara.recommenders.sasrec", "llara.recommenders.workflow"} <= closure and "tasks.params" not in closure


def test_outs_and_data_deps_are_the_paths_of_tasks_paths():
    from tasks import paths

    s = stages()
    assert s["ingest"]["outs"] == [str(paths.INGESTED)]
    assert s["split"]["outs"] == [f"{paths.SPLIT_ROOT}/${{item}}"]
    assert s["pretrain"]["outs"] == [f"{paths.PRETRAIN_ROOT}/${{item.protocol}}/${{item.backbone}}"]
    assert s["export"]["outs"] == [f"{paths.EXPORT_ROOT}/${{item.protocol}}/${{item.backbone}}"]
    assert list(s["finetune"]["outs"][0]) == [f"{paths.RUNS_ROOT}/${{finetune.protocol}}/${{item}}"]
    assert s["evaluate"]["outs"] == [f"{paths.EVAL_ROOT}/${{finetune.protocol}}"]
    assert {str(paths.ITEMS), f"{paths.SPLIT_ROOT}/${{item.protocol}}"} <= set(s["pretrain"]["deps"])
    assert f"{paths.PRETRAIN_ROOT}/${{item.protocol}}/${{item.backbone}}" in s["export"]["deps"]
    assert {str(paths.EXPORT_ROOT), str(paths.SPLIT_ROOT)} <= set(s["evaluate_recommenders"]["deps"])
    for name in ("pretrain", "finetune", "evaluate"):
        metrics = [next(iter(p)) if isinstance(p, dict) else p for p in s[name].get("plots", []) + s[name].get("metrics", [])]
        assert all(m.startswith(f"{paths.METRICS_ROOT}/") for m in metrics), name


def test_report_reads_and_writes_what_its_params_say():
    """The report's output is report.out; it depends on the folders of every input its params name."""
    from llara.report import ReportConfig

    stage, config = stages()["report"], ReportConfig(**yaml.safe_load((ROOT / "params.yaml").read_text())["report"])
    assert stage["outs"] == ["${report.out}"] and "report" in stage["params"]
    deps = [config.items if dep == "${report.items}" else dep for dep in stage["deps"]]
    inputs = [config.items, config.split_file, *config.predictions, *config.metrics.values(), *config.plots]
    for path in inputs:
        top = path.split("{")[0].split("*")[0]
        assert any(covered(top, [dep]) or covered(dep, [top.rstrip("/")]) for dep in deps), path


def test_pretrain_tracks_every_training_param_and_only_its_own_backbone():
    """A new TrainConfig field becomes a pretrain param and a dep of the stage (checkpoint_every: resuming only)."""
    from llara.recommenders.config import TrainConfig
    from tasks.params import PretrainParams

    stage = stages()["pretrain"]
    tracked = {p.split(".", 1)[1] for p in stage["params"]}
    training = {f.name for f in dataclasses.fields(TrainConfig)} & set(PretrainParams.model_fields)
    assert tracked == (training - {"checkpoint_every"}) | {"window", "${item.backbone}"}


def test_readme_shows_the_stage_graph():
    """README's mermaid chart is `dvc dag --mermaid` of this dvc.yaml (regenerate it when the graph changes)."""
    import re

    dag = dvc(ROOT, "dag", "--mermaid", check=False, timeout=120)
    assert dag.returncode == 0, dag.stderr
    chart = re.search(r"```mermaid\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
    assert chart.strip() == dag.stdout.strip()


def test_the_lock_records_only_stages_of_this_pipeline():
    """dvc.lock holds no stage dvc.yaml no longer generates (DVC keeps such entries, e.g. a variant dropped from
    finetune.variants): the committed lock describes this pipeline's last run and nothing else."""
    listed = dvc(ROOT, "stage", "list", "--name-only", check=False, timeout=120)
    assert listed.returncode == 0, listed.stderr
    locked = set(yaml.safe_load((ROOT / "dvc.lock").read_text())["stages"])
    assert locked <= set(listed.stdout.split()), sorted(locked - set(listed.stdout.split()))


def stale_committed_deps() -> dict[str, dict]:
    """Per stage, the dependencies git holds (code, params, committed metrics and reference files) that ``dvc status``
    finds changed since dvc.lock recorded them. Data that DVC makes or caches (absent from a clone) is not judged."""
    import json

    tracked = set(git_files())

    def committed(path: str) -> bool:
        return path in tracked or any(t.startswith(path + "/") for t in tracked)

    lock = yaml.safe_load((ROOT / "dvc.lock").read_text())["stages"]
    made = {o["path"] for s in lock.values() for o in s.get("outs", []) if not committed(o["path"])}

    def judged(path: str) -> bool:
        overlaps = any(m == path or m.startswith(path + "/") or path.startswith(m + "/") for m in made)
        return committed(path) and not overlaps

    status = dvc(ROOT, "status", "--json", check=False)
    assert status.returncode == 0, status.stderr
    stale = {}
    for stage, changes in json.loads(status.stdout or "{}").items():
        for change in changes:
            deps = change.get("changed deps", {}) if isinstance(change, dict) else {}
            found = {path: what for path, what in deps.items() if isinstance(what, dict) or judged(path)}
            if found:
                stale[stage] = found
    return stale


def test_the_lock_is_current_for_everything_git_holds():
    """dvc.lock was written from the committed code, params and metrics: after a change to any of them, rerun the
    stages it feeds (``dvc repro``, where the data are) and commit the lock, or a user with a DVC remote reruns work
    the lock says is done (e.g. publishing learning-curve points changes ``metrics/``, which ``report`` reads)."""
    stale = stale_committed_deps()
    assert not stale, f"dvc.lock is stale (rerun these stages and commit dvc.lock): {stale}"


def test_finetune_deps_are_the_code_its_checkpoints_are_keyed_on(repo_root: Path):
    """finetune@* lists its modules one by one: exactly those of the checkpoint key (the training workflow and every
    llara module it imports), so the stage reruns when, and only when, its checkpoints would be trained anew."""
    from llara.code_key import code_modules

    stage = yaml.safe_load((repo_root / "dvc.yaml").read_text())["stages"]["finetune"]["do"]
    listed = {d for d in stage["deps"] if d.startswith("llara/") and d.endswith(".py")}
    modules = code_modules("llara.llm.workflow", package_dir=repo_root / "llara")
    keyed = {p.relative_to(repo_root).as_posix() for p in modules.values()}
    assert listed == keyed, f"dvc.yaml only: {sorted(listed - keyed)}; checkpoint key only: {sorted(keyed - listed)}"
    assert "llara/llm/recommend.py" not in listed  # serving: changing it reruns `evaluate` only


def test_finetune_params_are_every_setting_but_the_variant_list(repo_root: Path):
    from tasks.params import FinetuneParams

    stage = yaml.safe_load((repo_root / "dvc.yaml").read_text())["stages"]["finetune"]["do"]
    keys = {p.split(".", 1)[1] for p in stage["params"] if p.startswith("finetune.")}
    assert keys == set(FinetuneParams.model_fields) - {"variants"}
    assert "llm" in stage["params"]
