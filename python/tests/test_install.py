"""`pip install` of the python/ tree into a fresh virtual environment (no torch,
no compiler needed), then the library found each of the three ways: a copy
bundled in the package (fastmqa/_lib/, as a wheel built with it carries),
$FASTMQA_LIB (which wins over it), and an installed prefix (the venv's lib/).
One environment and one install (a copy of python/ with the library placed in
fastmqa/_lib/) keep the cost of this test to one package build."""
import os
import shutil
import subprocess
import sys
import venv

from conftest import REPO

PROBE = ("import fastmqa\n"
         "r = fastmqa.memory_report(hidden_size=2048, num_q_heads=32, num_kv_heads=1, "
         "max_seq_len=4096, level='aggressive')\n"
         "print(fastmqa.library_path(), r.bytes_per_token, round(r.cache_multiplier, 1))\n")


def probe(py, cwd, lib=None):
    """What the installed package prints, run outside the checkout."""
    env = {k: v for k, v in os.environ.items() if k not in ("FASTMQA_LIB", "PYTHONPATH")}
    if lib:
        env["FASTMQA_LIB"] = lib
    return subprocess.run([py, "-c", PROBE], env=env, cwd=cwd, capture_output=True, text=True,
                          check=True).stdout.split()


def test_pip_install_and_the_three_ways_to_find_the_library(tmp_path):
    lib = os.path.realpath(os.environ["FASTMQA_LIB"])
    env = tmp_path / "env"
    venv.EnvBuilder(with_pip=False).create(env)
    py = str(env / "bin" / "python")
    src = tmp_path / "src"
    shutil.copytree(os.path.join(REPO, "python"), src,
                    ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info", "_lib"))
    (src / "fastmqa" / "_lib").mkdir()
    shutil.copy(lib, src / "fastmqa" / "_lib" / "libfastmqa.so")
    # this interpreter's pip installs into the fresh environment (which has none)
    subprocess.run([sys.executable, "-m", "pip", "--python", py, "install", "-q",
                    "--disable-pip-version-check", "--no-deps", str(src)], check=True)

    path, per_token, mult = probe(py, tmp_path)
    bundled = os.path.dirname(path)
    assert bundled.endswith(os.path.join("site-packages", "fastmqa", "_lib"))
    assert (per_token, mult) == ("140", "78.2")

    assert probe(py, tmp_path, lib) == [lib, "140", "78.2"]

    shutil.rmtree(bundled)
    prefix_lib = env / "lib" / "libfastmqa.so"
    shutil.copy(lib, prefix_lib)  # where `cmake --install . --prefix <venv>` puts it
    assert probe(py, tmp_path) == [str(prefix_lib), "140", "78.2"]
