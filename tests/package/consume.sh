#!/usr/bin/env bash
# The install as a user meets it: `cmake --install` into a temporary prefix,
# then tests/consumer built against it four ways (find_package shared and
# static, pkg-config shared and static) and run.  Also checks what the prefix
# holds (every tool, header, docs, --help text, CMake package, .pc files), that
# the installed tools run (--version), and which binaries depend on
# libfastmqa.so.  Usage: consume.sh BUILD_DIR SOURCE_DIR GENERATOR SANITIZE LIBDIR
set -euo pipefail
build="$1" src="$2" generator="$3" sanitize="$4" libdir="$5"
if [ "$sanitize" = "ON" ]; then
    echo "skipped: a sanitizer build's library needs -fsanitize in its consumers" >&2
    exit 77
fi
tmp="$(mktemp -d /tmp/fmqa_package.XXXXXX)"
trap 'rm -rf "$tmp"' EXIT
prefix="$tmp/prefix"
fail() { echo "consume.sh: $*" >&2; exit 1; }

cmake --install "$build" --prefix "$prefix" >/dev/null
for f in include/fastmqa.h "$libdir"/libfastmqa.so "$libdir"/libfastmqa.a \
         "$libdir"/cmake/fastmqa/fastmqaConfig.cmake "$libdir"/pkgconfig/fastmqa.pc \
         "$libdir"/pkgconfig/fastmqa_static.pc share/doc/fastmqa/README.md \
         share/doc/fastmqa/database.md; do
    [ -e "$prefix/$f" ] || fail "not installed: $f"
done
for tool in fastmqa-tune fastmqa-db fastmqa-gen fastmqa-bench; do
    [ -x "$prefix/bin/$tool" ] || fail "not installed: bin/$tool"
    grep -q "usage" "$prefix/share/doc/fastmqa/help/$tool.txt" || fail "no --help text for $tool"
    # Each command its --help lists has its own text (the options are only there).
    for cmd in $(sed -n 's/^  \([a-z][a-z]*\)  .*/\1/p' "$prefix/share/doc/fastmqa/help/$tool.txt"); do
        grep -q "usage" "$prefix/share/doc/fastmqa/help/$tool-$cmd.txt" ||
            fail "no --help text for $tool $cmd"
    done
    "$prefix/bin/$tool" --version | grep -q "^$tool [0-9]" || fail "$tool --version"
done

# Each consumer runs in its own empty directory (its database path lies there).
run() {
    local name="$1" bin="$2" expect_shared="$3"
    mkdir "$tmp/run-$name"
    "$bin" "$tmp/run-$name" >"$tmp/$name.log" 2>&1 || { cat "$tmp/$name.log" >&2; fail "$name: consumer failed"; }
    grep -q "consumer ok" "$tmp/$name.log" || fail "$name: no 'consumer ok'"
    if readelf -d "$bin" | grep -q "NEEDED.*libfastmqa"; then
        [ "$expect_shared" = 1 ] || fail "$name: linked libfastmqa.so, expected the archive"
    else
        [ "$expect_shared" = 0 ] || fail "$name: does not use libfastmqa.so"
    fi
    echo "$name: ok"
}

for link in shared static; do
    cmake -S "$src/tests/consumer" -B "$tmp/cmake-$link" -G "$generator" \
          -DCMAKE_PREFIX_PATH="$prefix" -DFASTMQA_LINK=$link >/dev/null
    cmake --build "$tmp/cmake-$link" >/dev/null
    run "find_package-$link" "$tmp/cmake-$link/consumer" $([ $link = shared ] && echo 1 || echo 0)
done

export PKG_CONFIG_PATH="$prefix/$libdir/pkgconfig"
pkg-config --static --libs fastmqa | grep -q -- "-lsqlite3" || fail "fastmqa.pc: --static lacks the archive's dependencies"
# shellcheck disable=SC2046
cc -o "$tmp/pc-shared" "$src/tests/consumer/main.c" $(pkg-config --cflags --libs fastmqa) \
   -Wl,-rpath,"$prefix/$libdir"
run pkg-config-shared "$tmp/pc-shared" 1
# shellcheck disable=SC2046
cc -o "$tmp/pc-static" "$src/tests/consumer/main.c" $(pkg-config --cflags --libs --static fastmqa_static)
run pkg-config-static "$tmp/pc-static" 0
