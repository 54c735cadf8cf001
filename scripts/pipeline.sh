#!/usr/bin/env bash
# Quick start 1/2: set up and run the whole pipeline on the default dataset (MovieLens-100K).
# Extra arguments go to `llara run` (e.g. `-S finetune.profile=long`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/env.sh
export PATH="$PWD/.venv/bin:$PATH"
exec llara run "$@"
