#!/usr/bin/env bash
# Builds the libFuzzer harnesses of tests/fuzz with clang, AddressSanitizer and
# UndefinedBehaviorSanitizer (in $BUILD_DIR-fuzz) and runs each for
# FUZZ_SECONDS (default 20) from its committed corpus and regression inputs
# (fuzz_template also from seeds the build writes from templates/ and
# tests/fixtures/), two at a time.  New corpus entries go to a scratch directory in the build
# directory (to keep them: fuzz_NAME -merge=1 tests/fuzz/corpus/NAME SCRATCH).
# A crash fails the run and leaves its input in $BUILD_DIR-fuzz/crashes: commit
# it under tests/fuzz/regress/NAME/ with the fix, where ctest replays it.
# Usage: scripts/fuzz.sh [NAME...]   (problem, template, import, spec, compress; default all)
all=(problem template import spec compress)
for a in "$@"; do
  case " ${all[*]} " in
    *" $a "*) ;;
    *) sed -n '2,/^# Usage/p' "$0" | sed 's/^# \{0,1\}//'
       [ "$a" = -h ] || [ "$a" = --help ] && exit 0
       echo "fuzz.sh: unknown harness '$a'" >&2; exit 2 ;;
  esac
done
source "$(dirname "$0")/common.sh"
fmqa_install_deps
fmqa_find_cuda
BUILD_DIR="${BUILD_DIR:-$FASTMQA_ROOT/build}"
dir="$BUILD_DIR-fuzz"
secs="${FUZZ_SECONDS:-20}"
names=("$@")
[ ${#names[@]} -eq 0 ] && names=("${all[@]}")

fmqa_say "fuzz build ($dir, clang)"
CC=clang cmake -S "$FASTMQA_ROOT" -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DFASTMQA_FUZZ=ON -DFASTMQA_SANITIZE=ON >/dev/null
cmake --build "$dir" -j "$(nproc)" --target "${names[@]/#/fuzz_}"

run_one() {
    local name="$1" scratch="$dir/scratch/$1" seeds=()
    mkdir -p "$scratch" "$dir/crashes"
    # seeds written at build time from today's files (tests/fuzz/seeds.cmake)
    [ -d "$dir/tests/fuzz/seeds/$name" ] && seeds=("$dir/tests/fuzz/seeds/$name")
    if ! "$dir/tests/fuzz/fuzz_$name" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
            -artifact_prefix="$dir/crashes/$name-" "$scratch" \
            "$FASTMQA_ROOT/tests/fuzz/corpus/$name" "$FASTMQA_ROOT/tests/fuzz/regress/$name" \
            "${seeds[@]}" >"$dir/fuzz_$name.log" 2>&1; then
        tail -n 40 "$dir/fuzz_$name.log" >&2
        echo "fuzz_$name failed; its input is in $dir/crashes: fix the fault and commit the" \
             "input under tests/fuzz/regress/$name/" >&2
        return 1
    fi
    echo "fuzz_$name: $(grep -o 'Done [0-9]* runs in [0-9]* second(s)' "$dir/fuzz_$name.log")"
}

fmqa_say "fuzzing ${names[*]}, $secs s each"
failed=0
for ((i = 0; i < ${#names[@]}; i += 2)); do
    pids=()
    for name in "${names[@]:i:2}"; do
        run_one "$name" &
        pids+=($!)
    done
    for pid in "${pids[@]}"; do
        wait "$pid" || failed=1
    done
done
exit "$failed"
