#!/usr/bin/env bash
# `--version` on every tool names the tool and the versions of libfastmqa,
# NVRTC, the CUDA driver (or why there is none) and the database schema, and
# exits 0.  Usage: versions.sh BUILD_DIR VERSION SCHEMA
set -euo pipefail
build="$1" version="$2" schema="$3"
for tool in tuner/fastmqa-tune db/fastmqa-db generator/fastmqa-gen bench/fastmqa-bench; do
    name="$(basename "$tool")"
    out="$("$build/$tool" --version)" || { echo "$name --version failed" >&2; exit 1; }
    for want in "^$name $version\$" "libfastmqa +$version\$" "NVRTC +[0-9]+\.[0-9]+\$" \
                "CUDA driver +([0-9]+\.[0-9]+|none \(.+\))\$" "database schema +$schema\$"; do
        grep -Eq "$want" <<<"$out" || { printf '%s --version lacks /%s/:\n%s\n' "$name" "$want" "$out" >&2; exit 1; }
    done
done
echo "4 tools report their versions"
