#!/usr/bin/env bash
# The main job: install what is missing, build, and tune this machine's GPU with
# fastmqa-tune (arguments are passed on, e.g. --help or --dry-run).
source "$(dirname "$0")/common.sh"
fmqa_install_deps
fmqa_find_cuda
BUILD_DIR="${BUILD_DIR:-$FASTMQA_ROOT/build}"
fmqa_build "$BUILD_DIR"
exec "$BUILD_DIR/tuner/fastmqa-tune" "$@"
