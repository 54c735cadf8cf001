#!/usr/bin/env bash
# The GPU run of issue 12 on one H200-class machine with no network, in two device calls. Prepared here by
#   python bench/bench_gpu.py prepare --weights gguf --protocol leave-one-out
# (.gpu/bundle: split rows, titles, recommender, configs, and the wheels the device image lacks: transformers and
# peft at the project's pins, gguf; .gpu/part-*: the GGUF in 36 MiB parts). A call carries at most 64 MiB, so the
# weights travel in two calls to the same warm machine (at most 30 s idle between them):
#   call 1, carry .gpu/bundle .gpu/part-0:   bash bench/gpu_session.sh stash .gpu/part-0
#     copies the bundle and the part to /tmp/llara-gpu, installs the wheels there, prints the versions and runs a
#     smoke test with random weights (`run` and `curve`, a few steps each), then bench/gpu_profile.py: where a
#     batch-8 step's time goes (host against GPU kernels), eager and (unless PROFILE_COMPILED=0) compiled
#   call 2, carry .gpu/part-1 .gpu/part-2:   bash bench/gpu_session.sh main .gpu/part-1 .gpu/part-2
#     joins and converts the weights (bf16), then `run` alone until its speed is measured (examples/s, MFU at the
#     paper profile's batch of 128, in micro-batches of RUN_MICRO_BATCH: default 128, one forward pass, since a
#     pass costs about the same whatever its size; the first run, with 32, is in bench/RESULTS.md), and beside its
#     training (RUN_MINUTES) and test evaluation, `curve` for both
#     recipes side by side: the default profile to EXAMPLES (20,000) examples, evaluated every EVAL_EVERY (250)
#     steps on the first USERS (200) validation users, the points bench/learning_curves.sh measures on CPU;
#     compiled when call 1's profile found the compiled step at most 80% of the eager one (CURVE_COMPILE=auto;
#     1 or 0 forces it).
# Everything is bounded by DEADLINE_S (default 540) seconds from the start, so that what was measured comes back
# before the call's limit: the curves' CSVs are rewritten at each point. Results and logs in $OUT.
# DEVICE (default auto), TEST_ROWS (default: all), SMOKE_EXAMPLES (160), SMOKE_ROWS (64), GPU_BUNDLE (default
# .gpu/bundle) and LLARA_GPU_DIR (default /tmp/llara-gpu) make a CPU dry run possible (tests/test_bench_gpu.py).
set -uo pipefail
usage() { sed -n '2,/^set -uo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }
case "${1:-}" in stash|main) ;; -h|--help) usage; exit 0 ;; *) usage; exit 2 ;; esac
mode="$1"; shift
cd "$(dirname "$0")/.."
work="${LLARA_GPU_DIR:-/tmp/llara-gpu}" out="${OUT:-$PWD/gpu-out}"
mkdir -p "$work" "$out"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TQDM_DISABLE=1 OMP_NUM_THREADS="${OMP_NUM_THREADS:-4}"
export PYTHONPATH="$work/site${PYTHONPATH:+:$PYTHONPATH}"
bench=(python3 bench/bench_gpu.py)
device=(--device "${DEVICE:-auto}" --bundle "$work/bundle")
start=$SECONDS
left() { echo $(( ${DEADLINE_S:-540} - (SECONDS - start) )); }

if [ "$mode" = stash ]; then
  rm -rf "$work/bundle" && cp -r "${GPU_BUNDLE:-.gpu/bundle}" "$work/bundle" && cp "$@" "$work/" || exit 1
  if compgen -G "$work/bundle/wheels/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$work/site" \
      "$work"/bundle/wheels/*.whl || exit 1
  fi
  python3 -c 'import torch, transformers, peft; print("torch", torch.__version__, "transformers",
      transformers.__version__, "peft", peft.__version__, "cuda", torch.cuda.is_available()
      and torch.cuda.get_device_name(0))'
  timeout 150 "${bench[@]}" curve "${device[@]}" --recipes ours --examples "${SMOKE_EXAMPLES:-160}" --eval-every 10 \
    --users "${SMOKE_ROWS:-64}" --out "$out/smoke" > "$out/smoke-curve.log" 2>&1 &
  timeout 150 "${bench[@]}" run "${device[@]}" --minutes 0.2 --measure-steps 2 --test-rows "${SMOKE_ROWS:-64}" \
    --out "$out/smoke" > "$out/smoke-run.log" 2>&1
  rc_run=$?
  wait $!; rc_curve=$?
  tail -n 4 "$out/smoke-run.log"; tail -n 4 "$out/smoke-curve.log"
  # where a step's time goes, with the device to itself (bench/gpu_profile.py)
  timeout 120 python3 bench/gpu_profile.py "${device[@]}" --recipe ours --out "$out/smoke" > "$out/profile.log" 2>&1
  rc_profile=$?
  head -n 1 "$out/smoke/profile-ours.txt" 2> /dev/null; tail -n 1 "$out/profile.log"
  if [ "${PROFILE_COMPILED:-1}" = 1 ]; then   # the pipeline does not compile on GPU: would it pay there?
    timeout 180 python3 bench/gpu_profile.py "${device[@]}" --recipe ours --compile --warmup 4 --out "$out/smoke" \
      >> "$out/profile.log" 2>&1 || rc_profile=$?
    head -n 1 "$out/smoke/profile-ours-compiled.txt" 2> /dev/null
  fi
  # call 2 trains the curves compiled when compiling paid here (gpu_profile.py --compare)
  rm -f "$work/compile-pays"
  if python3 bench/gpu_profile.py --compare "$out/smoke/profile-ours.txt" "$out/smoke/profile-ours-compiled.txt"; then
    touch "$work/compile-pays"
  fi
  echo "smoke: run rc=$rc_run curve rc=$rc_curve profile rc=$rc_profile"
  exit $(( rc_run || rc_curve || rc_profile ))
fi

timeout 150 "${bench[@]}" weights --bundle "$work/bundle" --gguf-parts "$work/part-0" "$@" --out "$work/base" \
  > "$out/weights.log" 2>&1 || { tail -n 20 "$out/weights.log"; exit 1; }
echo "weights converted at $((SECONDS - start)) s"
llm=(--llm "$work/base")
timeout $(( $(left) - 15 )) "${bench[@]}" run "${device[@]}" "${llm[@]}" --minutes "${RUN_MINUTES:-1}" \
  --micro-batch "${RUN_MICRO_BATCH:-128}" --measure-steps 5 ${TEST_ROWS:+--test-rows "$TEST_ROWS"} --out "$out" \
  > "$out/run.log" 2>&1 &
run_pid=$!
# the speed is measured with the GPU to itself; the curves start once it is (or once `run` has stopped)
for _ in $(seq 180); do
  grep -q '^measured:' "$out/run.log" && break
  kill -0 "$run_pid" 2> /dev/null || break
  sleep 1
done
echo "speed measured at $((SECONDS - start)) s: $(grep '^measured:' "$out/run.log")"
pids=()
compile=()
case "${CURVE_COMPILE:-auto}" in
  1) compile=(--compile) ;;
  auto) [ -f "$work/compile-pays" ] && compile=(--compile) ;;
esac
echo "curves ${compile[*]:-eager}"
for recipe in ours paper; do
  timeout $(( $(left) - 10 )) "${bench[@]}" curve "${device[@]}" "${llm[@]}" "${compile[@]}" --recipes "$recipe" \
    --examples "${EXAMPLES:-20000}" --eval-every "${EVAL_EVERY:-250}" --users "${USERS:-200}" --out "$out" \
    > "$out/curve-$recipe.log" 2>&1 &
  pids+=($!)
done
wait "$run_pid"; echo "run rc=$? at $((SECONDS - start)) s"; tail -n 5 "$out/run.log"
for i in 0 1; do wait "${pids[$i]}"; echo "curve rc=$? at $((SECONDS - start)) s"; done
for recipe in ours paper; do echo "== $recipe"; cat "$out/curve-$recipe.csv" 2> /dev/null | cut -c1-160; done
