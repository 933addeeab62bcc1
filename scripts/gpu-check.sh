#!/usr/bin/env bash
# One-shot check on a machine with a GPU (the lent device machine): configure and
# build into /tmp, run the gpu tests, then the decode and levels benchmarks, then
# the Python package's tests and FastMQA against PyTorch SDPA (bench/peers), where
# python3 has torch, and print short tables last.  Logs go to $OUT when it is set (the device tool).
# Usage there: source .device/sysroot.sh && scripts/gpu-check.sh [ctest -R regex]
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${OUT:-/tmp/fastmqa-gpu-out}"; mkdir -p "$out"
build=/tmp/fastmqa-build
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv | tee "$out/gpu.txt"
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release >"$out/configure.log" 2>&1 \
  || { tail -30 "$out/configure.log"; exit 1; }
cmake --build "$build" -j16 >"$out/build.log" 2>&1 || { grep -E "error|Error" "$out/build.log" | head -40; exit 1; }
echo "== build ok"
export XDG_CACHE_HOME=/tmp/fastmqa-cache
ctest --test-dir "$build" -L gpu ${1:+-R "$1"} --output-on-failure -j2 >"$out/gpu-tests.log" 2>&1
gpu_rc=$?
grep -hE "^decode |^append |tests passed|tests failed|Failed|SKIPPED|Synthesis" "$out/gpu-tests.log" | tail -80
"$build/bench/fastmqa-bench" decode >"$out/bench-decode.txt" 2>&1; echo "bench decode rc=$?"
"$build/bench/fastmqa-bench" levels >"$out/bench-levels.txt" 2>&1; echo "bench levels rc=$?"
echo "== gpu tests rc=$gpu_rc"
cat "$out/bench-decode.txt"
# The Python package's tests (python/tests) where python3 has torch and pytest;
# the install test needs PyPI, which the device machine cannot reach.
if python3 -c "import torch, pytest" >/dev/null 2>&1; then
  FASTMQA_LIB="$build/libfastmqa.so" FASTMQA_BUILD_DIR="$build" PYTHONPATH="$root/python" \
    python3 -m pytest -q -rs -p no:cacheprovider -k "not install" "$root/python/tests" \
    >"$out/pytest.txt" 2>&1
  echo "pytest rc=$?"; tail -15 "$out/pytest.txt"
else
  echo "pytest: skipped (python3 cannot import torch and pytest)"
fi
# PyTorch SDPA on the same inputs (bench/peers/README.md): detail in peers.txt,
# the summary table here (or the tail, if the run stopped before it).
if python3 -c "import torch" >/dev/null 2>&1; then
  python3 "$root/bench/peers/peers.py" --lib "$build/libfastmqa.so" >"$out/peers.txt" 2>&1
  echo "peers rc=$?"
  grep -q '^summary:' "$out/peers.txt" && sed -n '/^summary:/,$p' "$out/peers.txt" \
    || tail -30 "$out/peers.txt"
else
  echo "peers: skipped (python3 cannot import torch)"
fi
