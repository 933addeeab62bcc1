#!/usr/bin/env bash
# The whole test suite: install what is missing, build (warnings are errors when
# CI=true), run every ctest label and the Python package's pytest suite, then
# rebuild with AddressSanitizer and UndefinedBehaviorSanitizer and run the CPU
# tests again.  gpu tests skip with a message on a machine without a GPU (ctest
# and pytest count them as skipped, not passed).
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
ctest --test-dir "$BUILD_DIR-asan" -j "$jobs" -L unit --output-on-failure
