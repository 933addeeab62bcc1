"""bench/peers/peers.py without a GPU: its prefill shapes are those of
`fastmqa-bench prefill` (same ids, same order), `--list` needs no torch, and its
prefill check (a float64 reference of the first and last rows of each sequence,
every element finite) agrees with PyTorch's own float64 attention on the CPU and
fails an output with a NaN outside the checked rows."""
import importlib.util
import math
import os
import subprocess
import sys
import types

import pytest

from conftest import REPO, build_tool

PEERS = os.path.join(REPO, "bench", "peers", "peers.py")


def peers_module():
    spec = importlib.util.spec_from_file_location("peers", PEERS)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def listed(*args):
    return subprocess.run([sys.executable, PEERS, "--list", *args], check=True,
                          capture_output=True, text=True).stdout.split()


def test_prefill_shapes_are_the_bench_shapes():
    ids = listed("--shapes", "prefill-*")
    assert len(ids) == 12 and ids[0] == "prefill-b4-t4096-hkv32-d128"
    assert set(listed()) >= set(ids), "--list without --shapes lists every shape"
    exe = build_tool("fastmqa-bench", "bench")
    if exe is None:
        pytest.skip("fastmqa-bench not built beside the library")
    out = subprocess.run([exe, "prefill", "--list"], check=True, capture_output=True,
                         text=True).stdout
    assert ids == [line.split()[0] for line in out.splitlines() if line.strip()]


def test_unknown_pattern_is_refused():
    r = subprocess.run([sys.executable, PEERS, "--list", "--shapes", "prefill-b9-*"],
                       capture_output=True, text=True)
    assert r.returncode != 0 and "matches no shape" in r.stderr


@pytest.fixture
def cpu_peers():
    torch = pytest.importorskip("torch")
    mod = peers_module()
    mod.torch, mod.DEVICE = torch, "cpu"
    return mod, torch


def test_prefill_reference_is_torch_causal_attention(cpu_peers):
    peers, torch = cpu_peers
    B, T, H, hk, d = 2, 300, 8, 2, 16
    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(B * T, h, d, generator=g).bfloat16() for h in (H, hk, hk))
    rows = peers.prefill_rows(T)
    assert rows == list(range(128)) + list(range(T - 128, T))
    ref = peers.prefill_reference(q, k, v, B, T, rows, heads_per_chunk=3)
    qq, kk, vv = (t.double().view(B, T, t.shape[1], d).transpose(1, 2) for t in (q, k, v))
    kk, vv = (t.repeat_interleave(H // hk, dim=1) for t in (kk, vv))
    want = torch.nn.functional.scaled_dot_product_attention(qq, kk, vv, is_causal=True)
    want = want.transpose(1, 2)[:, rows]
    assert torch.allclose(ref, want, rtol=0, atol=1e-12)
    full = torch.zeros(B, T, H, d, dtype=torch.float64)
    full[:, rows] = want
    assert peers.prefill_compare(full, ref, rows)[0] < 1e-15
    full[0, 200, 3, 5] = math.nan  # a row the reference does not check
    assert peers.prefill_compare(full, ref, rows) == (math.inf, math.inf)


def test_prefill_flops_and_bytes(cpu_peers):
    peers, _ = cpu_peers
    s = peers.PrefillShape(4, 4096, 8, 128)
    assert peers.prefill_flops(s) == 4 * 4 * 32 * 4096 * 4096 * 128 / 2
    assert peers.prefill_bytes(s) == 4 * 4096 * 128 * 2 * (2 * 32 + 2 * 8)


def test_runs_retry_a_refused_gqa_peer_and_poison_ours(cpu_peers, monkeypatch):
    """Run, the part decode's and prefill's runs share, on the CPU with fake
    contenders (check only, nothing timed): FastMQA's output is poisoned before its
    first launch, a peer refusing enable_gqa is retried with K and V expanded (named
    in its note) unless the repeat mode runs anyway, and each entry is checked."""
    peers, torch = cpu_peers
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: None)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    ref = torch.arange(4.0)

    class Fake(peers.Run):
        tol = 1e-3

        def __init__(self):
            self.opts = types.SimpleNamespace(backends=["math"], check_only=True)
            self.res, self.env = {"contenders": []}, {}

        def make_peer(self, bname, mode):
            def launch(i):
                if mode == "gqa":
                    raise RuntimeError("no enable_gqa here")
                return ref.clone()
            return peers.Contender(f"{bname}/{mode}", 64, 1, launch)

        def check(self, out):
            return float((out - ref).norm() / ref.norm()), float((out - ref).abs().max())

    run, o = Fake(), torch.zeros(4)

    def half(i):  # writes only the first half of o
        o[:2] = ref[:2]
        return o

    ours = peers.Contender("fastmqa", 64, 1, half, note="v")
    run.evaluate(ours, run.first_ours(ours, o))
    assert run.res["variant"] == "v"
    assert not run.res["contenders"][0]["ok"]  # o[2:] never written: NaN
    run.res["contenders"].clear()
    run.run_peers(["gqa"])
    (e,) = run.res["contenders"]
    assert e["name"] == "math/repeat" and e["ok"] and "no enable_gqa here" in e["note"]
    run.res["contenders"].clear()
    run.run_peers(["gqa", "repeat"])
    skipped, repeat = run.res["contenders"]
    assert skipped["name"] == "math/gqa" and "no enable_gqa here" in skipped["skipped"]
    assert repeat["name"] == "math/repeat" and repeat["ok"] and not repeat["note"]
