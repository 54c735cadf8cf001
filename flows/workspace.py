"""The workspace a flow runs in: one-run-at-a-time lock (:mod:`llara.workspace_lock`), one-run ``-S`` param overrides.

Prefect-free, so the plain ``dvc repro`` path (``llara run --no-prefect``) shares it.

Overrides (the documented choice): ``-S key=value`` uses exactly DVC's ``dvc exp run -S`` grammar (Hydra overrides,
applied by DVC's own ``apply_overrides``), is checked against the allow-list :data:`OVERRIDABLE` (flow parameters come
from the Prefect API, which has no authentication) and validated against ``tasks/params.py`` before anything runs.
The user's ``params.yaml`` is never written: the run happens in a scratch copy of the workspace
(:mod:`flows.scratch`) whose ``params.yaml`` carries the overrides and whose DVC cache is the workspace's; when the
run succeeds its ``dvc.lock`` and outputs are adopted by the workspace, so ``dvc status`` afterwards shows the
affected stages as changed and the next plain run reproduces the committed parameters. A killed run leaves the
workspace as it was.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import tempfile
from pathlib import Path
from typing import Callable, Iterator

import yaml

from llara.atomic import atomic_path
from llara.errors import InputError
from llara.workspace_lock import LOCK_FILE, lock_holder, workspace_lock  # noqa: F401 (the flows' lock, re-exported)

PARAMS_FILE = "params.yaml"
BACKUP_FILE = Path(".dvc/tmp/llara-params.backup.yaml")  # written by older versions; restored if one was left
SERVED_ROOT_ENV = "LLARA_SERVED_ROOT"

# Params a run may override (dotted keys, fnmatch patterns). Everything else (input and output paths, the dataset's
# source and URL, llm.trust_remote_code, the recommend stage's Dask scheduler, ...) is changed in params.yaml only.
# Model locations are overridable only to a value params.yaml already configures or to a folder inside the
# workspace (MODEL_KEYS), prompt templates only to a packaged name or a file inside the workspace.
OVERRIDABLE = (
    "split.protocols", "split.seed", "split.history_len", "split.min_history", "split.min_rating",
    "split.n_candidates", "split.val_fraction", "split.test_fraction",
    "pretrain.*",
    "llm.model", "llm.dtype", "llm.device",
    "finetune.protocol", "finetune.backbone", "finetune.variants", "finetune.prompts", "finetune.seed",
    "finetune.profile", "finetune.recipe", "finetune.profiles.*", "finetune.recipes.*",
    "evaluate.*",
    "champion.*",
    "recommend.users", "recommend.k", "recommend.n_candidates", "recommend.rerank", "recommend.batch_size",
    "recommend.shard_size", "recommend.workers", "recommend.threads_per_worker", "recommend.device",
    "report.chart_metric", "report.n_examples", "report.top_k",
)
MODEL_KEYS = ("llm.model", "finetune.profiles.*.llm")
PACKAGED_MODELS = ("smollm2",)
PACKAGED_PROMPTS = ("movie", "game", "artist", "item")


def resolve_root(repo_root: str | Path) -> Path:
    """The repository root as an absolute path; it must hold dvc.yaml, and be the served workspace under
    ``llara serve`` (``$LLARA_SERVED_ROOT``): a run's parameters come from an unauthenticated API."""
    root = Path(repo_root).expanduser().resolve()
    served = os.environ.get(SERVED_ROOT_ENV)
    if served and root != Path(served).resolve():
        raise InputError(f"repo_root {repo_root}", f"runs of these deployments use the served workspace {served}")
    if not (root / "dvc.yaml").is_file():
        raise InputError(root, "not a pipeline workspace (no dvc.yaml here); pass the repository root")
    return root


def parse_override(text: str) -> str:
    """Check one ``key=value`` override (``+key=value`` adds, ``~key`` deletes, as in ``dvc exp run -S``)."""
    text = text.strip()
    if text.startswith("~") and len(text) > 1:
        return text
    key, sep, _ = text.partition("=")
    if not sep or not key.lstrip("+").strip():
        raise InputError("-S", f"expected key=value, got {text!r}")
    return text


def _leaves(data, prefix: str = "") -> dict[str, object]:
    """``{"a.b.c": value}`` for every leaf of nested mappings (lists are leaves)."""
    if not isinstance(data, dict):
        return {prefix: data}
    out: dict[str, object] = {}
    for key, value in data.items():
        out.update(_leaves(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def _inside(root: Path, value: str) -> bool:
    """Whether ``value`` names an existing path inside ``root`` (relative, no escape through ``..`` or links)."""
    if not value or Path(value).is_absolute():
        return False
    target = (root / value).resolve()
    return target.exists() and (target == root.resolve() or root.resolve() in target.parents)


def override_violations(original: dict, new: dict, root: Path) -> list[str]:
    """Why the change from ``original`` to ``new`` params is not allowed for a run (empty when it is)."""
    before, after = _leaves(original), _leaves(new)
    configured = {v for k, v in before.items() if any(fnmatch.fnmatchcase(k, p) for p in MODEL_KEYS) and v}
    problems = []
    for key in sorted(set(before) | set(after)):
        if before.get(key) == after.get(key) and (key in before) == (key in after):
            continue
        value = after.get(key)
        if not any(fnmatch.fnmatchcase(key, p) for p in OVERRIDABLE):
            problems.append(f"{key} may not be overridden for one run (edit params.yaml)")
        elif any(fnmatch.fnmatchcase(key, p) for p in MODEL_KEYS) and value is not None and not (
                value in configured or value in PACKAGED_MODELS or _inside(root, str(value))):
            problems.append(f"{key}={value!r}: a model must be the configured one ({', '.join(map(str, sorted(configured)))}), "
                            "a packaged one or a folder inside the workspace")
        elif key == "finetune.prompts" and not (value in PACKAGED_PROMPTS or _inside(root, str(value))):
            problems.append(f"{key}={value!r}: prompts must be {'|'.join(PACKAGED_PROMPTS)} or a file inside the workspace")
    return problems


def overridden_params(params_path: Path, overrides: list[str]) -> bytes:
    """The bytes of ``params_path`` with ``overrides`` applied, allow-listed and validated (nothing is written)."""
    from dvc.utils.hydra import apply_overrides

    from tasks.params import parse_params

    overrides = [parse_override(o) for o in overrides]
    where = "-S " + " ".join(overrides)
    fd, tmp = tempfile.mkstemp(prefix=".params.override.", suffix=".yaml", dir=params_path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        original = params_path.read_bytes()
        tmp_path.write_bytes(original)
        try:
            apply_overrides(tmp_path, overrides)
        except Exception as exc:  # DVC wraps Hydra's grammar errors; show the innermost cause
            cause = exc.__cause__ or exc
            raise InputError(where, str(cause).splitlines()[0]) from None
        data = tmp_path.read_bytes()
        new = yaml.safe_load(data) or {}
        problems = override_violations(yaml.safe_load(original) or {}, new, params_path.parent)
        if problems:
            raise InputError(where, "; ".join(problems))
        parse_params(new, where=f"params.yaml with {where}")
        return data
    finally:
        tmp_path.unlink(missing_ok=True)


def write_atomic(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def restore_interrupted_override(root: Path, log: Callable[[str], None] = print) -> bool:
    """Put back a params.yaml that an older version's override run left behind when it crashed."""
    backup = root / BACKUP_FILE
    if not backup.is_file():
        return False
    write_atomic(root / PARAMS_FILE, backup.read_bytes())
    backup.unlink()
    log(f"restored {PARAMS_FILE} from an interrupted override run ({BACKUP_FILE})")
    return True


@contextlib.contextmanager
def params_overrides(root: Path, overrides: list[str] | None, log: Callable[[str], None] = print) -> Iterator[Path]:
    """Yield the directory a run with ``-S`` overrides happens in: ``root`` itself without overrides, else a scratch
    copy carrying the overridden params.yaml, adopted by ``root`` when the block succeeds (see module doc)."""
    from flows.scratch import scratch_workspace

    restore_interrupted_override(root, log)
    if not overrides:
        yield root
        return
    data = overridden_params(root / PARAMS_FILE, list(overrides))
    with scratch_workspace(root, data, log) as scratch:
        log(f"running with {' '.join(overrides)} in {scratch} (params.yaml stays as it is)")
        yield scratch
