#!/usr/bin/env bash
# test_gpu_check.sh -- scripts/gpu-check.sh without a GPU: --dry-run lists every
# step issue 17 asks for with a time cap, the caps fit the 8-minute budget, and
# nothing runs or is created; a missing output directory is a usage error; and
# scripts/gpu-table.py turns the fixture results (tests/fixtures/gpu-table) into
# the verdicts the targets give.  Usage: test_gpu_check.sh SOURCE_DIR
set -u
src=$1 fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
dir=$(mktemp -d) && rmdir "$dir"
out=$("$src/scripts/gpu-check.sh" --dry-run "$dir") || fail "--dry-run exit $?"
echo "$out"
[ -e "$dir" ] && fail "--dry-run created $dir"
caps=$(sed -n 's/.*caps \([0-9]*\) s in all, budget \([0-9]*\) s.*/\1 \2/p' <<<"$out")
read -r total budget <<<"$caps"
[ "${budget:-0}" = 480 ] || fail "budget '$budget', expected 480 s (issue 17: 8 minutes)"
[ "${total:-999}" -le "${budget:-0}" ] || fail "caps $total s exceed the budget $budget s"
sum=0
for step in info build gpu_tests pytest memcheck racecheck synccheck static bench_decode bench_mla \
            bench_prefill levels peers_decode peers_prefill first_call tune bench_tuned table; do
  cap=$(awk -v s="$step" '$1 == s && $3 == "s" {print $2}' <<<"$out")
  [ -n "$cap" ] && [ "$cap" -gt 0 ] || fail "step $step has no time cap"
  sum=$((sum + ${cap:-0}))
done
[ "$sum" = "${total:-}" ] || fail "the listed caps add to $sum s, the header says $total s"
grep -q "prefill-\*" <<<"$out" || fail "peers does not run the prefill shapes"
"$src/scripts/gpu-check.sh" >/dev/null 2>&1; rc=$?
[ $rc = 2 ] || fail "no output directory: exit $rc, expected 2"
table=$(python3 "$src/scripts/gpu-table.py" "$src/tests/fixtures/gpu-table") || fail "gpu-table.py exit $?"
echo "$table"
expect() { # shape verdict
  grep -qE "^$1 .* $2\$" <<<"$table" || fail "$1: expected verdict '$2'"
}
expect mqa-f16-b64-t4096 met                       # 3600 of 4000 GB/s = 90%
expect mqa-int8-b64-t4096 met                      # 50% untuned, 88% once tuned (>= 85%)
expect h2048-mha-f16-b64-t1024 "FAILED \(verification\)"
grep -q "^mqa-fp8-b1-t131072 .*ERROR RuntimeError" <<<"$table" || fail "the error row"
expect prefill-b4-t4096-hkv8-d128 MISSED           # 550 TFLOP/s, slower than cuDNN
expect mla-h16-bf16-b64-t4096 met                  # 92% of the bandwidth
expect mla-h16-fp8-b64-t4096 MISSED                # 85% and 100/55 = 1.8x bf16: bw misses
expect mla-h128-bf16-b64-t4096 met                 # 72% of the GEMM rate
[ $fails = 0 ] && echo "test_gpu_check: ok" || echo "test_gpu_check: $fails failure(s)"
[ $fails = 0 ]
