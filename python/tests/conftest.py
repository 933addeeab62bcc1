"""Shared test setup: where the repository and the library are, and the GPU mark.

The library comes from $FASTMQA_LIB (scripts/test.sh sets it to the build's
libfastmqa.so); without it, this checkout's build/libfastmqa.so is used when it
exists.  GPU tests carry requires_gpu and skip with the reason when torch sees no
CUDA device.
"""
import json
import os
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HEADER = os.path.join(REPO, "include", "fastmqa.h")

if "FASTMQA_LIB" not in os.environ:
    _built = os.path.join(REPO, "build", "libfastmqa.so")
    if os.path.exists(_built):
        os.environ["FASTMQA_LIB"] = _built


def _gpu_reason():
    try:
        import torch
    except ImportError as e:
        return f"no GPU test without torch ({e})"
    if not torch.cuda.is_available():
        return "no GPU: torch.cuda.is_available() is False on this machine"
    return None


GPU_REASON = _gpu_reason()
requires_gpu = pytest.mark.skipif(GPU_REASON is not None, reason=GPU_REASON or "")


def build_tool(name, subdir):
    """A tool of the build the library came from: $FASTMQA_BUILD_DIR/<subdir>/<name>,
    else beside the library's directory."""
    base = os.environ.get("FASTMQA_BUILD_DIR") or os.path.dirname(
        os.path.realpath(os.environ.get("FASTMQA_LIB", "")))
    path = os.path.join(base, subdir, name)
    return path if os.access(path, os.X_OK) else None


def bench_levels(hidden, heads, kv_heads, seq):
    """The level rows (data set random) of `fastmqa-bench levels --json`; with
    --allow-fail, since the memory figures are what is compared and random data
    fails every level that drops tokens by design (exit 1 otherwise)."""
    exe = build_tool("fastmqa-bench", "bench")
    if exe is None:
        pytest.skip("fastmqa-bench not built beside the library")
    out = subprocess.run([exe, "levels", "--json", "--allow-fail", "--hidden", str(hidden), "--heads",
                          str(heads), "--kv-heads", str(kv_heads), "--seq", str(seq)],
                         check=True, capture_output=True, text=True).stdout
    return [r for r in json.loads(out)["levels"] if r["data"] == "random"]
