# Shared by scripts/run.sh and scripts/test.sh: installs what a fresh Debian 12 /
# Ubuntu 24.04 machine with the CUDA toolkit lacks, then configures and builds.
# Sourced, not run.  Honours BUILD_DIR, CMAKE_ARGS and CI=true (-Werror).

set -euo pipefail
FASTMQA_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

fmqa_say() { printf '==> %s\n' "$*" >&2; }

# Debian packages the build needs; each is installed only when missing.
# clang and libclang-rt-dev (libFuzzer, sanitizer runtimes): scripts/fuzz.sh.
FASTMQA_PACKAGES="cmake ninja-build gcc pkg-config liblua5.4-dev libsqlite3-dev libcriterion-dev python3 python3-pip python3-venv clang libclang-rt-dev"

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

# cuobjdump, for the SASS figures of `fastmqa-bench static` (the CUDA 13 toolkit
# we build with has none): $CUOBJDUMP, PATH, or pip's nvidia-cuda-cuobjdump,
# installed into the user's site when missing (--break-system-packages only
# where the system Python refuses --user installs, as Debian 12's does).
# Exports CUOBJDUMP.
fmqa_pip_cuobjdump() {
    python3 - <<'PY' 2>/dev/null
import os, nvidia
for d in nvidia.__path__:
    for v in ("cu13", "cu12"):
        x = os.path.join(d, v, "bin", "cuobjdump")
        if os.access(x, os.X_OK):
            print(x)
            raise SystemExit(0)
PY
}

fmqa_find_cuobjdump() {
    if [ -n "${CUOBJDUMP:-}" ] && [ -x "$CUOBJDUMP" ]; then return 0; fi
    local c
    c="$(command -v cuobjdump || fmqa_pip_cuobjdump || true)"
    if [ -z "$c" ]; then
        fmqa_say "installing nvidia-cuda-cuobjdump (pip, user site)"
        python3 -m pip install --user --quiet nvidia-cuda-cuobjdump 2>/dev/null ||
            python3 -m pip install --user --quiet --break-system-packages nvidia-cuda-cuobjdump
        c="$(fmqa_pip_cuobjdump || true)"
    fi
    [ -n "$c" ] || { echo "cuobjdump not found after pip install nvidia-cuda-cuobjdump" >&2; exit 1; }
    export CUOBJDUMP="$c"
}

# fmqa_build DIR [cmake args...]; $CMAKE_ARGS (split on spaces) go before them.
fmqa_build() {
    local dir="$1"; shift
    # shellcheck disable=SC2086 # CMAKE_ARGS is a list of arguments
    cmake -S "$FASTMQA_ROOT" -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo ${CMAKE_ARGS:-} "$@" >/dev/null
    cmake --build "$dir" -j "$(nproc)"
}

# The Python tests' virtual environment: outside the checkout, at a stable path
# ($FASTMQA_VENV, default ~/.cache/fastmqa/venv) reused by every run, because
# PyPI's torch for Linux pulls ~2.5 GB of CUDA wheels (about 5 minutes on a
# 2-core machine the first time).  Created, and the packages installed, only when
# missing.
FASTMQA_VENV="${FASTMQA_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/fastmqa/venv}"
FASTMQA_PY_PACKAGES="torch pytest numpy"

fmqa_python_env() {
    if [ ! -x "$FASTMQA_VENV/bin/python" ]; then
        fmqa_say "creating the Python environment $FASTMQA_VENV"
        python3 -m venv "$FASTMQA_VENV"
    fi
    "$FASTMQA_VENV/bin/python" -c "import torch, pytest, numpy" 2>/dev/null && return 0
    fmqa_say "installing $FASTMQA_PY_PACKAGES into $FASTMQA_VENV (torch: minutes, once)"
    "$FASTMQA_VENV/bin/python" -m pip install -q --disable-pip-version-check $FASTMQA_PY_PACKAGES
}

# fmqa_python_tests BUILD_DIR: pytest over python/tests on the source tree,
# against BUILD_DIR's libfastmqa and tools.
fmqa_python_tests() {
    fmqa_python_env
    FASTMQA_LIB="$1/libfastmqa.so" FASTMQA_BUILD_DIR="$1" PYTHONPATH="$FASTMQA_ROOT/python" \
        "$FASTMQA_VENV/bin/python" -m pytest -q -rs -p no:cacheprovider "$FASTMQA_ROOT/python/tests"
}
