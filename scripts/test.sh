#!/usr/bin/env bash
# Quick start 2/2: set up and run the test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/fetch_mermaid.sh || echo "test: mermaid not fetched; tests/test_docs_charts.py will be skipped"
source scripts/env.sh
export PATH="$PWD/.venv/bin:$PATH"
exec python -m pytest "$@"
