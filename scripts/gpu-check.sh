#!/usr/bin/env bash
# gpu-check.sh -- issue 17's one prepared command on a machine with a GPU (the lent
# device machine): build, the gpu tests, the same tests under compute-sanitizer at
# small sizes, the benchmarks (static, decode, mla, prefill, levels), bench/peers
# against PyTorch SDPA on the decode and the prefill shapes, the first-call latency
# of a second process with a warm cubin cache, a short fastmqa-tune of bench shapes
# and the benchmarks again on the tuned database, and last the table of every shape
# against the best peer and its issue's target (scripts/gpu-table.py).
#
# Every step runs under its own time cap (timeout), so one hang cannot eat the rest;
# the caps add up to the budget (issue 17: 8 minutes), and a step whose cap exceeds
# what is left of the budget is skipped, said so.  Each step writes <step>.log (and
# its JSON) into a scratch directory; at the end, however the run ends, DIR gets
# two files (the device tool brings back at most 8): summary.txt (one line per
# step: rc or timeout, seconds; the short tables) and gpu-check.tar.gz (every log
# and JSON file).
#
# Usage: scripts/gpu-check.sh [--dry-run] [--budget SECONDS] DIR
#   DIR        where summary.txt and gpu-check.tar.gz go (created); the device
#              tool's "$OUT"
#   --dry-run  print the steps and their time caps, run nothing (no GPU needed)
#   --budget   total seconds (default 480); steps that no longer fit are skipped
# On the device machine (../shared/device/prepare carries Lua, SQLite and Criterion):
#   source .device/sysroot.sh && scripts/gpu-check.sh "$OUT"
# Exit status: 0 every step ran and passed, 1 a step failed, timed out or was
# skipped, 2 bad usage.
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dry=0 budget=480 dest=
while [ $# -gt 0 ]; do
  case $1 in
    --dry-run) dry=1; shift ;;
    --budget) budget=${2:-}; shift 2 || true ;;
    -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) echo "gpu-check.sh: unknown option $1 (--help)" >&2; exit 2 ;;
    *) dest=$1; shift ;;
  esac
done
case $budget in ''|*[!0-9]*) echo "gpu-check.sh: --budget expects seconds" >&2; exit 2 ;; esac
[ -n "$dest" ] || { echo "gpu-check.sh: name the output directory (DIR; --help)" >&2; exit 2; }
build=/tmp/fastmqa-build
out=/tmp/fastmqa-gpu-check  # the steps' logs and JSON, packed into DIR at the end
export PATH=$PATH:/usr/local/cuda/bin  # compute-sanitizer, nvcc's toolkit
bench=$build/bench/fastmqa-bench
export XDG_CACHE_HOME=/tmp/fastmqa-cache  # the tuning database and cubin cache of this run
export PYTHONUNBUFFERED=1
py_env=(env "FASTMQA_LIB=$build/libfastmqa.so" "FASTMQA_BUILD_DIR=$build" "PYTHONPATH=$root/python")

# Small bench shapes the short tune covers (fastmqa-gen SPEC syntax) and their ids.
tune_problems=(
  "op=decode,batch=64,heads=32,kv_heads=1,d=128,kv_len=4096,flags=causal"
  "op=mla_decode,batch=64,heads=128,kv_heads=1,d=576,dv=512,kv_len=4096,q=bf16,kv=bf16,out=bf16,flags=causal"
  "op=prefill,batch=4,heads=32,kv_heads=8,d=128,tq=4096,kv_len=4096,q=bf16,kv=bf16,out=bf16,flags=causal")
mla_shapes='mla-h*-b64-t4096'  # 16 to 128 heads in bf16, 16 and 32 in fp8: one query token

# ---------------------------------------------------------------- the steps
# Each is a function; STEPS lists "name cap_seconds what" in run order.
step_info() { nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,memory.total --format=csv; }
step_build() {
  cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release &&
    cmake --build "$build" -j"$(nproc)" --target fastmqa fastmqa-bench fastmqa-tune fastmqa-db \
      gpu_decode gpu_append gpu_mla_decode gpu_prefill gpu_prefill_sm90
}
step_gpu_tests() { ctest --test-dir "$build" -L gpu --output-on-failure -j2 --timeout 80; }
step_pytest() { "${py_env[@]}" python3 -m pytest -q -rs -p no:cacheprovider "$root/python/tests/test_gpu.py"; }
# compute-sanitizer over criterion cases of a few sequences and <= 4099 positions
# (the test binaries fork a process per case: --target-processes all).
sanitize() { # tool binary filter...
  local tool=$1 bin=$2 rc=0 f; shift 2
  for f in "$@"; do
    compute-sanitizer --tool "$tool" --target-processes all --error-exitcode 86 \
      "$build/tests/$bin" --jobs=1 --filter="$f" || rc=1
  done
  return $rc
}
step_memcheck() {
  sanitize memcheck gpu_decode 'decode/speculative_tokens_tree_lse' && sanitize memcheck gpu_append 'append/contiguous' &&
    sanitize memcheck gpu_mla_decode 'mla_decode/query_tokens_fp8_splits'
}
step_racecheck() { sanitize racecheck gpu_decode 'decode/speculative_tokens_tree_lse' && sanitize racecheck gpu_append 'append/ring*'; }
step_synccheck() { sanitize synccheck gpu_decode 'decode/forced_split_kv' && sanitize synccheck gpu_mla_decode 'mla_decode/heads_and_lengths'; }
step_static() { "$bench" static --arch sm_90 --shapes 'mqa-f16-b64-t4096,mqa-int8-b64-t4096,mla-h128-bf16-b64-t4096,prefill-b4-t4096-hkv8-d128' --threads "$(nproc)"; }
step_bench_decode() { "$bench" decode --json >"$out/decode.json"; }
step_bench_mla() { "$bench" mla --shapes "$mla_shapes" --json >"$out/mla.json"; }
step_bench_prefill() { "$bench" prefill --json >"$out/prefill.json"; }
# FAIL rows are expected: the random data set defeats every level that drops tokens.
step_levels() { "$bench" levels --allow-fail; }
step_peers_decode() { python3 "$root/bench/peers/peers.py" --lib "$build/libfastmqa.so" --json "$out/peers-decode.json"; }
step_peers_prefill() { python3 "$root/bench/peers/peers.py" --lib "$build/libfastmqa.so" --shapes 'prefill-*' --json "$out/peers-prefill.json"; }
# A first process plans a problem no step has planned (NVRTC compiles it, the cubin
# goes to the database); a second process plans it again: its latency is the first
# call's with a warm cubin cache (database read + module load, no compile).
step_first_call() {
  local code='import sys, time, fastmqa
p = fastmqa.level_problem(hidden_size=4096, num_q_heads=32, num_kv_heads=1, max_seq_len=3000, batch=5)
t = time.perf_counter(); plan = fastmqa.plan(p); ms = 1e3 * (time.perf_counter() - t)
print(f"{sys.argv[1]} process: first fastmqa.plan {ms:.1f} ms ({plan.source} {plan.template} {plan.config})")'
  "${py_env[@]}" python3 -c "$code" first && "${py_env[@]}" python3 -c "$code" second
}
step_tune() {
  local a=() p
  for p in "${tune_problems[@]}"; do a+=(--problem "$p"); done
  "$build/tuner/fastmqa-tune" "${a[@]}" --budget 5s --strategy random --seed 1
}
step_bench_tuned() {
  "$bench" decode --shapes 'mqa-f16-b64-t4096' --json >"$out/decode-tuned.json" &&
    "$bench" mla --shapes 'mla-h128-bf16-b64-t4096' --json >"$out/mla-tuned.json" &&
    "$bench" prefill --shapes 'prefill-b4-t4096-hkv8-d128' --json >"$out/prefill-tuned.json"
}
step_table() { python3 "$root/scripts/gpu-table.py" "$out"; }

STEPS="info 5 GPU, driver and clocks (nvidia-smi)
build 110 configure and build the library, tools and gpu tests (Release)
gpu_tests 85 ctest -L gpu
pytest 30 the Python package's GPU tests (python/tests/test_gpu.py: torch ops vs float64)
memcheck 30 compute-sanitizer memcheck: decode drafts/tree/lse, append, MLA fp8/splits
racecheck 15 compute-sanitizer racecheck: decode drafts/tree/lse, append ring
synccheck 10 compute-sanitizer synccheck: decode forced splits, MLA heads
static 10 fastmqa-bench static, 4 shapes (sm_90 preset; NVRTC and SASS)
bench_decode 20 fastmqa-bench decode --json (every decode shape)
bench_mla 15 fastmqa-bench mla --shapes $mla_shapes --json
bench_prefill 15 fastmqa-bench prefill --json
levels 10 fastmqa-bench levels --allow-fail
peers_decode 35 bench/peers vs SDPA flash, cuDNN, efficient: decode shapes
peers_prefill 20 bench/peers --shapes 'prefill-*'
first_call 10 first plan in a second process with a warm cubin cache
tune 40 fastmqa-tune --budget 5s per problem and template: 3 bench shapes
bench_tuned 15 the tuned shapes again on the tuned database
table 5 scripts/gpu-table.py: every shape vs the best peer and its target"
total=0
while read -r name cap what; do total=$((total + cap)); done <<<"$STEPS"
if [ "$dry" = 1 ]; then
  printf "gpu-check.sh: %s steps, caps %d s in all, budget %d s, output into %s\n" \
    "$(wc -l <<<"$STEPS")" "$total" "$budget" "$dest"
  while read -r name cap what; do printf "  %-14s %4d s  %s\n" "$name" "$cap" "$what"; done <<<"$STEPS"
  [ "$total" -le "$budget" ] || echo "gpu-check.sh: the caps exceed the budget: later steps will be skipped"
  exit 0
fi

mkdir -p "$dest" || exit 2
rm -rf "$out" && mkdir -p "$out" || exit 2
# Whatever ends the run, DIR gets the summary and every log so far.
pack() {
  { cat "$out/steps.txt"; echo; cat "$out/tables.txt" 2>/dev/null; } >"$dest/summary.txt"
  tar -czf "$dest/gpu-check.tar.gz" -C "$out" .
}
trap pack EXIT
start=$SECONDS status=0
: >"$out/steps.txt"
while read -r name cap what; do
  left=$((budget - (SECONDS - start)))
  if [ "$cap" -gt "$left" ]; then
    echo "== $name: skipped ($cap s cap, $left s of the budget left)" | tee -a "$out/steps.txt"
    status=1
    continue
  fi
  t0=$SECONDS
  export -f "step_$name" sanitize 2>/dev/null
  export root build bench out
  timeout --kill-after=5 "$cap" bash -c "$(declare -p tune_problems py_env mla_shapes); step_$name" \
    >"$out/$name.log" 2>&1
  rc=$?
  [ $rc = 124 ] && why="TIMED OUT at $cap s" || why="rc $rc"
  [ $rc = 0 ] || status=1
  echo "== $name: $why, $((SECONDS - t0)) s ($what)" | tee -a "$out/steps.txt"
  [ "$name" = build ] && [ $rc != 0 ] && { tail -30 "$out/build.log"; break; }
done <<<"$STEPS"
echo "== total $((SECONDS - start)) s of $budget; summary.txt and gpu-check.tar.gz in $dest" |
  tee -a "$out/steps.txt"
# The short tables last (the device tool returns the end of the output).
{
  for f in first_call levels; do grep -E "process: first|FAIL " "$out/$f.log" 2>/dev/null | tail -8; done
  grep -hE "tests passed|tests failed|ERROR SUMMARY" "$out"/gpu_tests.log "$out"/*check.log 2>/dev/null
  sed -n '/^summary:/,$p' "$out/peers_decode.log" 2>/dev/null
  sed -n '/^prefill summary:/,$p' "$out/peers_prefill.log" 2>/dev/null
  cat "$out/table.log" 2>/dev/null
} | tee "$out/tables.txt"
exit $status
