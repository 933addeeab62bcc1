#!/usr/bin/env bash
# libfastmqa's exports: the shared library's dynamic symbols and the static
# archive's global definitions are exactly the functions include/fastmqa.h
# declares with FMQA_API (every one of them fmqa_*); nothing internal leaks, and
# no function of the header lacks FMQA_API.
# Usage: exports.sh LIBFASTMQA.so LIBFASTMQA.a HEADER
set -euo pipefail
so="$1" ar="$2" header="$3"
tmp="$(mktemp -d /tmp/fmqa_exports.XXXXXX)"
trap 'rm -rf "$tmp"' EXIT
grep -oE '^FMQA_API [^(]*\bfmqa_[a-z0-9_]+\(' "$header" | grep -oE 'fmqa_[a-z0-9_]+\($' | tr -d '(' |
    sort -u >"$tmp/declared"
nm -D --defined-only "$so" | awk '{print $3}' | sort -u >"$tmp/shared"
nm --defined-only "$ar" | awk 'NF == 3 && $2 ~ /^[A-Z]$/ {print $3}' | sort -u >"$tmp/static"
status=0
# A function declared without FMQA_API would be hidden: missing from the library.
if grep -nE '^(const |unsigned |struct )?[a-z_0-9]+[ *]+fmqa_[a-z0-9_]+\(' "$header"; then
    echo "exports.sh: the declarations above lack FMQA_API" >&2; status=1
fi
grep -v '^fmqa_' "$tmp/shared" && { echo "exports.sh: names above leave $so" >&2; status=1; }
if ! diff -u "$tmp/declared" "$tmp/shared"; then
    echo "exports.sh: $so exports differ from the header's FMQA_API functions" >&2; status=1
fi
if ! diff -u "$tmp/declared" "$tmp/static"; then
    echo "exports.sh: $ar global definitions differ from the header's FMQA_API functions" >&2
    status=1
fi
[ "$status" = 0 ] && echo "$(wc -l <"$tmp/shared") exports, all declared in $(basename "$header")"
exit $status
