# Shared by scripts/run.sh and scripts/test.sh: installs what a fresh Debian 12 /
# Ubuntu 24.04 machine with the CUDA toolkit lacks, then configures and builds.
# Sourced, not run.  Honours BUILD_DIR, CMAKE_ARGS and CI=true (-Werror).

set -euo pipefail
FASTMQA_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

fmqa_say() { printf '==> %s\n' "$*" >&2; }

# Debian packages the build needs; each is installed only when missing.
# clang and libclang-rt-dev (libFuzzer, sanitizer runtimes): scripts/fuzz.sh.
FASTMQA_PACKAGES="cmake ninja-build gcc pkg-config liblua5.4-dev libsqlite3-dev libcriterion-dev clang libclang-rt-dev"

fmqa_install_deps() {
    local missing=() p
    for p in $FASTMQA_PACKAGES; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    fmqa_say "installing ${missing[*]}"
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || { echo "need root or sudo to install: ${missing[*]}" >&2; exit 1; }
        sudo="sudo"
    fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# The CUDA toolkit is a prerequisite (NVRTC and cuda.h); put nvcc on PATH so that
# CMake's FindCUDAToolkit finds it.
fmqa_find_cuda() {
    command -v nvcc >/dev/null && return 0
    local d
    for d in /usr/local/cuda/bin /usr/local/cuda-*/bin; do
        [ -x "$d/nvcc" ] && { export PATH="$d:$PATH"; return 0; }
    done
    echo "the CUDA toolkit (nvcc, NVRTC) was not found: install it first" >&2
    exit 1
}

# fmqa_build DIR [cmake args...]
fmqa_build() {
    local dir="$1"; shift
    cmake -S "$FASTMQA_ROOT" -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
    cmake --build "$dir" -j "$(nproc)"
}
