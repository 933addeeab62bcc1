#!/usr/bin/env bash
# The whole test suite: install what is missing, build (warnings are errors when
# CI=true), run every ctest label and the Python package's pytest suite, then
# rebuild with AddressSanitizer and UndefinedBehaviorSanitizer and run the CPU
# tests again (but the long emulator suites, label emu_long: tests/CMakeLists.txt), run each fuzzer of tests/fuzz for FUZZ_SECONDS (scripts/fuzz.sh),
# and run the threaded paths under ThreadSanitizer.  gpu tests skip with a
# message on a machine without a GPU (ctest and pytest count them as skipped,
# not passed).
source "$(dirname "$0")/common.sh"
fmqa_install_deps
fmqa_find_cuda
fmqa_find_cuobjdump
BUILD_DIR="${BUILD_DIR:-$FASTMQA_ROOT/build}"
jobs="$(nproc)"

fmqa_say "build ($BUILD_DIR)"
fmqa_build "$BUILD_DIR"
fmqa_say "tests: unit, nvrtc, gpu"
ctest --test-dir "$BUILD_DIR" -j "$jobs" --output-on-failure
fmqa_say "python tests (pytest, python/tests)"
fmqa_python_tests "$BUILD_DIR"

fmqa_say "sanitizer build ($BUILD_DIR-asan)"
fmqa_build "$BUILD_DIR-asan" -DFASTMQA_SANITIZE=ON
fmqa_say "tests under ASan+UBSan: unit"
ctest --test-dir "$BUILD_DIR-asan" -j "$jobs" -L unit -LE emu_long --output-on-failure

"$FASTMQA_ROOT/scripts/fuzz.sh"

# The threaded paths under ThreadSanitizer: tests/threads/thread_stress, a plain
# program (Criterion cannot run under TSan, Snaipe/Criterion#274).
fmqa_say "ThreadSanitizer build of the threaded paths ($BUILD_DIR-tsan)"
cmake -S "$FASTMQA_ROOT" -B "$BUILD_DIR-tsan" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DFASTMQA_TSAN=ON >/dev/null
cmake --build "$BUILD_DIR-tsan" -j "$jobs" --target thread_stress
ctest --test-dir "$BUILD_DIR-tsan" -R '^threads_stress$' --output-on-failure
