#!/usr/bin/env bash
# The learning curves to 20,000 examples (issue 12, section 3): both recipes on the first 200 leave-one-out validation
# users, evaluated every 250 steps (2,000 examples), side by side with one torch thread each (on 2 cores about 1.3x
# the throughput of one 2-thread run after the other). Resumable: stop it (kill) and rerun it to continue from the
# newest checkpoint (every 25 steps). Logs and curves: data/learning/<recipe>-loo.log and <recipe>-loo/curve.csv;
# copy the CSVs to metrics/learning/<recipe>-loo-val200.csv to commit them, then re-render the table of points with
# `python bench/learning_table.py --update metrics/learning/README.md`.
# Usage: bench/learning_curves.sh [recipe ...]   (default: ours paper)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
export PATH="$PWD/.venv/bin:$PATH"   # the environment scripts/setup.sh made
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-passive}"
mkdir -p data/learning
recipes=("$@")
[ ${#recipes[@]} -gt 0 ] || recipes=(ours paper)
for r in "${recipes[@]}"; do
  python bench/bench_learning.py --recipe "$r" --protocol leave-one-out --users 200 --steps 2500 --eval-every 250 \
    --checkpoint-every 25 --threads 1 --out "data/learning/$r-loo" >> "data/learning/$r-loo.log" 2>&1 &
done
wait
