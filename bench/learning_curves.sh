#!/usr/bin/env bash
# The learning curves to 20,000 examples (issue 12, section 3): both recipes on the first 200 leave-one-out validation
# users, evaluated every 250 steps (2,000 examples), side by side with one torch thread each (on 2 cores about 1.3x
# the throughput of one 2-thread run after the other in float32 on AVX2, about the same in bf16 on AVX512; a single
# recipe named alone, e.g. the one left when the other has finished, gets both threads; LEARNING_THREADS overrides). Resumable: stop it (kill) and rerun it to continue from the
# newest checkpoint (every 25 steps). Logs and curves: data/learning/<recipe>-loo.log and <recipe>-loo/curve.csv;
# `publish` copies them to metrics/learning/<recipe>-loo-val200.csv and re-renders metrics/learning/README.md's table
# and docs/llara.md's chart; a committed curve of another run (one restarted after its checkpoints were lost, once it
# has caught up) is kept as <recipe>-loo-val200-runN.csv, never overwritten.
# Usage: bench/learning_curves.sh [recipe ...]           (default: ours paper; after scripts/setup.sh, on a fresh
#                                                        clone too: it first reproduces the inputs it reads)
#        bench/learning_curves.sh publish [recipe ...]   copy the curves measured so far to metrics/learning/ and
#                                                        re-render the table of points and the chart (then commit,
#                                                        with dvc.lock after `dvc repro report` where the pipeline's
#                                                        outputs are: the report reads metrics/)
#        bench/learning_curves.sh status [recipe ...]    where each run stands: newest checkpoint, last point,
#                                                        seconds per step, whether it is running, time left
set -euo pipefail
case "${1:-}" in -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;; esac
cd "$(dirname "$0")/.."
source scripts/env.sh
export PATH="$PWD/.venv/bin:$PATH"   # the environment scripts/setup.sh made
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-passive}"
mkdir -p data/learning
publish=false
status=false
if [ "${1:-}" = publish ]; then publish=true; shift; fi
if [ "${1:-}" = status ]; then status=true; shift; fi
recipes=("$@")
[ ${#recipes[@]} -gt 0 ] || recipes=(ours paper)
run_dir() { echo "data/learning/$1-loo"; }   # a recipe's run: checkpoints, curve.csv, settings.json (log: <dir>.log)
published() { echo "metrics/learning/$1-loo-val200.csv"; }   # where `publish` puts a recipe's curve
if $status; then
  for r in "${recipes[@]}"; do
    running=no; pgrep -f -- "bench_learning.py .*--out $(run_dir "$r")\$" > /dev/null && running=yes
    echo "$r (running: $running): $(python bench/bench_learning.py --status --out "$(run_dir "$r")")"
  done
  exit 0
fi
if $publish; then
  asides=()
  for r in "${recipes[@]}"; do   # every curve checked before any is copied: a failed publish changes nothing
    src="$(run_dir "$r")/curve.csv" dst="$(published "$r")"
    [ -f "$src" ] || { echo "publish: $src: no curve measured yet" >&2; exit 1; }
    # a restarted run that has not caught up yet, or one evaluated at other steps, would drop committed points; one
    # that has is another run (its rows differ at a committed step): the committed curve is kept as <name>-runN.csv
    aside="$([ ! -f "$dst" ] || python - "$src" "$dst" <<'PY'
import csv, itertools, sys
from pathlib import Path
src, dst = ({int(r["step"]): r for r in csv.DictReader(open(p))} for p in sys.argv[1:])
if set(dst) - set(src):
    sys.exit(f"publish: {sys.argv[1]} lacks step(s) {sorted(set(dst) - set(src))} of {sys.argv[2]}; nothing replaced")
if any(src[step] != row for step, row in dst.items()):
    stem = Path(sys.argv[2]).with_suffix("")
    print(next(f"{stem}-run{n}.csv" for n in itertools.count(1) if not Path(f"{stem}-run{n}.csv").exists()))
PY
)" || exit 1
    asides+=("$aside")
  done
  for i in "${!recipes[@]}"; do
    r="${recipes[$i]}" dst="$(published "${recipes[$i]}")"
    if [ -n "${asides[$i]}" ]; then
      cp "$dst" "${asides[$i]}"
      echo "publish: $dst held another run (different points at the same steps): kept as ${asides[$i]}; add its" \
        "table to metrics/learning/README.md and its lines to docs/llara.md's chart"
    fi
    cp "$(run_dir "$r")/curve.csv" "$dst"
  done
  python bench/learning_table.py --update metrics/learning/README.md   # the table of points
  exec python bench/learning_table.py --update docs/llara.md           # the chart
fi
# what the runs read (split, recommender, converted LLM): made here on a fresh machine, a no-op when up to date
backbone="$(python -c 'import yaml; print(yaml.safe_load(open("params.yaml"))["finetune"]["backbone"])')"
dvc repro "export@leave-one-out-$backbone" llm >> data/learning/prepare.log 2>&1 \
  || { echo "learning_curves: preparing the inputs failed, see data/learning/prepare.log" >&2; exit 1; }
threads="${LEARNING_THREADS:-$(( ${#recipes[@]} == 1 ? 2 : 1 ))}"
for r in "${recipes[@]}"; do
  python bench/bench_learning.py --recipe "$r" --protocol leave-one-out --users 200 --steps 2500 --eval-every 250 \
    --checkpoint-every 25 --threads "$threads" --out "$(run_dir "$r")" >> "$(run_dir "$r").log" 2>&1 &
done
wait
