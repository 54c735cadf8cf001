"""The environment of the flows and of the ``dvc`` / stage subprocesses they start (Prefect-free)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ENV_DEFAULTS = {
    "HF_HUB_OFFLINE": "1",
    "DVC_NO_ANALYTICS": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
}


def apply_env_defaults(env: dict[str, str] | None = None) -> dict[str, str]:
    """Set the project's environment defaults (only where unset) in ``env`` (default: ``os.environ``)."""
    env = os.environ if env is None else env
    for key, value in ENV_DEFAULTS.items():
        env.setdefault(key, value)
    return env


def subprocess_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for ``dvc``/stage subprocesses: this interpreter's bin dir first on PATH (dvc runs ``python``)."""
    env = apply_env_defaults(dict(os.environ))
    bin_dir = str(Path(sys.executable).parent)
    parts = [p for p in env.get("PATH", "").split(os.pathsep) if p and p != bin_dir]
    env["PATH"] = os.pathsep.join([bin_dir, *parts])
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env
