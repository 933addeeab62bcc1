#!/usr/bin/env python3
"""peers.py -- FastMQA decode and prefill next to PyTorch's scaled_dot_product_attention.

For each shape of `fastmqa-bench decode` (and a few more GQA group sizes and head
dims) it builds one set of random inputs on the GPU with PyTorch, runs FastMQA's
fmqa_decode on them through ctypes (libfastmqa.so, the public API only) and runs
SDPA's flash, cuDNN and memory-efficient backends on the same inputs, then
prints, per shape, every contender's median time and GB/s, the device's read
bandwidth measured in the same run, our speed-up over the best peer, and each
output's error against a float64 reference computed on the GPU.

How PyTorch gets a GQA/MQA cache (H query heads, Hkv < H cache heads):
  gqa     enable_gqa=True on the [B, Hkv, T, d] cache; a backend that refuses it
          gets the cache expanded with repeat_interleave to H heads instead
          ("repeat"), built before timing and never timed;
  fold    the G = H / Hkv query heads of a cache head become G query rows of
          that head (exact for one query token that sees the whole cache);
          each cache row is read once.
8-bit caches are quantized here exactly as docs/reference.md says (per token and
head, scale = max|x| / 127 or / 448 rounded to float, codes of x / scale by
round-to-nearest-even); FastMQA reads the codes and scales, PyTorch the
dequantized cache in f16, and the reference the exact dequantized values.

Timing, the same for every contender and the same as fastmqa-bench and fastmqa-tune
(tuner/tun.h, "timing"; docs/PERFORMANCE.md): input copies rotate so that
consecutive launches read different memory (the fewest copies whose total exceeds
twice the L2, at most 8); after a warm-up and one probe launch, when the copies
cover the L2 a sample is one replay of a CUDA graph of N launches (about 2 ms of
work, a whole number of rotations, 4 to 200; FastMQA's ctypes call is captured on
the capture stream after a first call has built its launch plan), unflushed;
otherwise a sample is one launch after a read of 2 x L2 (torch.sum, which leaves no
dirty lines for the timed launch to write back).  The median per-launch time and
the spread (p80 - p20) / median are reported.  The read bandwidth is timed the
same way.  --print-timing-plan prints the plan the rules give, without torch.

Prefill (--shapes 'prefill-*': the shapes of `fastmqa-bench prefill`, causal bf16,
32 query heads over 32, 8 and 1 KV heads, d = 128 and 64, B = 4 x T = 4096 and
B = 1 x T = 16384): fmqa_prefill on packed [B T, heads, d] q, k, v (varlen by
cu_seqlens_q) against SDPA's flash, cuDNN and efficient backends on [B, heads, T, d]
views of the same memory (is_causal; GQA as enable_gqa, else repeat_interleave),
timed by the same method, reported as TFLOP/s = 4 B H T^2 d / 2 / time beside the
device's bf16 GEMM rate (torch.matmul of 8192^3, same method, same run); every
output is checked finite and its first and last 128 rows of each sequence against
a float64 reference.

FastMQA is called through the fastmqa package of this checkout (python/), its
ctypes layer only (fastmqa.Context, fastmqa.DecodeArgs, fastmqa.PrefillArgs).
"""
import argparse
import fnmatch
import json
import math
import os
import sys
import warnings
from collections import namedtuple

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# ---------------------------------------------------------------- the C API

# The fastmqa package of this checkout (python/): its ctypes declarations of
# fastmqa.h, checked against the C compiler by python/tests/test_layout.py.
sys.path.insert(0, os.path.join(REPO, "python"))
import fastmqa  # noqa: E402
from fastmqa import DecodeArgs, Dtype, PrefillArgs  # noqa: E402


class Lib:
    """libfastmqa (loaded from `path`) and one context on `device`."""

    def __init__(self, path, device, db_path):
        fastmqa.load(path)
        self.ctx = fastmqa.Context(device, db_path=db_path)

    def close(self):
        self.ctx.close()

    def problem(self, s):
        return fastmqa.Problem(op="decode", batch=s.batch, kv_len=s.kv_len,
                               num_q_heads=s.heads, num_kv_heads=s.kv_heads,
                               head_dim_qk=s.d, head_dim_v=s.d, q_tokens=1, q_dtype="f16",
                               out_dtype="f16", kv_dtype=KV_DTYPES[s.kv][0],
                               flags=fastmqa.FLAG_CAUSAL)

    def plan(self, p):
        """Builds (compiles) the plan; returns (choice text, workspace bytes)."""
        plan = self.ctx.plan(p)
        return f"{plan.source} {plan.config}", plan.workspace_bytes

    def decode(self, p, args, stream):
        self.ctx.decode_raw(p, args, stream)

    def prefill_problem(self, s):
        return fastmqa.Problem(op="prefill", batch=s.batch, kv_len=s.tokens, q_tokens=s.tokens,
                               num_q_heads=PREFILL_HEADS, num_kv_heads=s.kv_heads,
                               head_dim_qk=s.d, head_dim_v=s.d, q_dtype="bf16",
                               kv_dtype="bf16", out_dtype="bf16", flags=fastmqa.FLAG_CAUSAL)

    def prefill(self, p, args, stream):
        self.ctx.prefill_raw(p, args, stream)


# ---------------------------------------------------------------- shapes

# kv name -> (fmqa dtype, bytes per element, quantization max or None)
KV_DTYPES = {"f16": (Dtype.F16, 2, None), "int8": (Dtype.INT8, 1, 127.0),
             "fp8": (Dtype.FP8_E4M3, 1, 448.0)}

Shape = namedtuple("Shape", "family kv batch kv_len heads kv_heads d")


def shape_id(s):
    return f"{s.family}-{s.kv}-b{s.batch}-t{s.kv_len}"


def _shapes():
    mqa_bt = ((1, 131072), (8, 32768), (64, 4096), (128, 1024))
    out = [Shape("mqa", kv, b, t, 32, 1, 128) for kv in ("f16", "int8", "fp8")
           for b, t in mqa_bt]
    # fastmqa-bench decode's other shapes, then group sizes 16 and 4 at d=64 and MQA at d=64.
    out.insert(4, Shape("gqa8", "f16", 64, 4096, 32, 8, 128))
    out += [Shape("h2048-mqa", "f16", 64, 1024, 32, 1, 64),
            Shape("h2048-mha", "f16", 64, 1024, 32, 32, 64),
            Shape("gqa2", "f16", 64, 4096, 32, 2, 128),
            Shape("gqa8-d64", "f16", 64, 4096, 32, 8, 64),
            Shape("mqa-d64", "f16", 64, 4096, 32, 1, 64)]
    return out


SHAPES = _shapes()

# The prefill shapes of `fastmqa-bench prefill` (bench/bench_shapes.c, same ids and
# order): causal bf16, PREFILL_HEADS query heads, every sequence `tokens` long.
PrefillShape = namedtuple("PrefillShape", "batch tokens kv_heads d")
PREFILL_HEADS = 32
PREFILL_SHAPES = [PrefillShape(b, t, hk, d) for b, t in ((4, 4096), (1, 16384))
                  for d in (128, 64) for hk in (32, 8, 1)]


def any_id(s):
    if isinstance(s, PrefillShape):
        return f"prefill-b{s.batch}-t{s.tokens}-hkv{s.kv_heads}-d{s.d}"
    return shape_id(s)


def select_shapes(patterns, listing=False):
    """Shapes whose id matches a pattern; without patterns the decode shapes (every
    shape when listing)."""
    if not patterns:
        return list(SHAPES) + (PREFILL_SHAPES if listing else [])
    pats = [p.strip() for p in patterns.split(",") if p.strip()]
    chosen = [s for s in SHAPES + PREFILL_SHAPES
              if any(fnmatch.fnmatchcase(any_id(s), p) for p in pats)]
    if not chosen:
        raise SystemExit(f"peers.py: --shapes {patterns!r} matches no shape (see --list)")
    return chosen


def prefill_flops(s):
    """4 B H T^2 d / 2: QK^T and PV over half the square (causal)."""
    return 4.0 * s.batch * PREFILL_HEADS * s.tokens * s.tokens * s.d / 2


def prefill_bytes(s):
    """Bytes one prefill launch reads and writes: q, o and k, v, bf16."""
    return s.batch * s.tokens * s.d * 2 * (2 * PREFILL_HEADS + 2 * s.kv_heads)


def cache_bytes(s, kv, heads):
    """K and V bytes of a [B, T, heads, d] cache of kind kv (8-bit: plus two float scales)."""
    _, elem, qmax = KV_DTYPES[kv]
    row = 2 * s.d * elem + (8 if qmax else 0)
    return s.batch * s.kv_len * heads * row


# The timing method of tuner/tun.h ("timing"), mirrored rule for rule; the
# unit test unit_timing_method compares timing_plan() with tun_time_plan_make.
TIMING_METHOD = 2            # TUN_TIMING_METHOD
GRAPH_TARGET_US = 2000.0     # TUN_GRAPH_TARGET_US
GRAPH_MIN_LAUNCHES = 4       # TUN_GRAPH_MIN_LAUNCHES
GRAPH_MAX_LAUNCHES = 200     # TUN_GRAPH_MAX_LAUNCHES
MAX_COPIES = 8               # TUN_MAX_COPIES


def copies_for(nbytes, l2_bytes):
    """tun_rotation_copies: the fewest copies whose total exceeds twice the L2, at most 8."""
    if nbytes <= 0 or l2_bytes <= 0:
        return 1
    return min(MAX_COPIES, math.floor(2 * l2_bytes / nbytes) + 1)


def timing_plan(nbytes, copies, l2_bytes, probe_us):
    """tun_time_plan_make with automatic flush and graph size: (flush, launches, covers).
    The rotation covers the L2 when copies x bytes > 2 x L2: then a sample is a graph of
    about 2 ms of launches, a whole number of rotations, unflushed; otherwise one launch
    after a read flush of 2 x L2 (clean lines only)."""
    covers = nbytes > 0 and l2_bytes > 0 and copies * nbytes > 2 * l2_bytes
    if not covers:
        return "read", 1, False
    want = math.ceil(GRAPH_TARGET_US / probe_us) if probe_us > 0 else GRAPH_MAX_LAUNCHES
    n = max(GRAPH_MIN_LAUNCHES, min(GRAPH_MAX_LAUNCHES, want))
    n = -(-n // copies) * copies
    if n > GRAPH_MAX_LAUNCHES:
        n = GRAPH_MAX_LAUNCHES // copies * copies
    return "none", max(n, copies), True


def quantile(sorted_x, q):
    """tun_stats' percentile: linear between order statistics at rank q (n - 1)."""
    r = q * (len(sorted_x) - 1)
    lo = math.floor(r)
    hi = min(lo + 1, len(sorted_x) - 1)
    return sorted_x[lo] + (r - lo) * (sorted_x[hi] - sorted_x[lo])


def summarize_us(us):
    """tun_stats: median, p20, p80, spread = (p80 - p20) / median."""
    x = sorted(us)
    med, p20, p80 = quantile(x, 0.5), quantile(x, 0.2), quantile(x, 0.8)
    return {"median_us": med, "p20_us": p20, "p80_us": p80, "min_us": x[0], "max_us": x[-1],
            "spread": (p80 - p20) / med if med > 0 else 0.0, "samples": len(x)}


# ---------------------------------------------------------------- inputs (torch from here on)

torch = None  # imported by main() only, so --list needs no torch
DEVICE = "cuda"  # where every tensor lives


def quantize(x, qmax):
    """docs/reference.md: per row scale = fl32(max|x| / qmax); codes = RNE(x / scale)."""
    xd = x.double()
    scale = (xd.abs().amax(-1) / qmax).float()
    s = scale.double().unsqueeze(-1)
    y = torch.where(s > 0, xd / s, torch.zeros_like(xd))
    if qmax == 127.0:
        return torch.round(y).clamp(-127, 127).to(torch.int8), scale
    return fp8_rne(y).float().to(torch.float8_e4m3fn), scale  # exact: y holds e4m3 values


def fp8_rne(y):
    """e4m3 values nearest to float64 y, ties to even, saturated to +-448.  Done in
    float64 because torch converts double to fp8 through float (two roundings)."""
    _, e = torch.frexp(y)                      # |y| in [2^(e-1), 2^e)
    step = torch.pow(2.0, (e - 4).clamp(min=-9).double())  # 3 mantissa bits; subnormal 2^-9
    return (torch.round(y / step) * step).clamp(-448.0, 448.0)


def dequant64(codes, scale):
    """Exact values of a cache in float64: scale * stored for 8-bit, else the f16 values."""
    if scale is None:
        return codes.double()
    return codes.float().double() * scale.double().unsqueeze(-1)


class Copy:
    """One input copy: q [B, 1, H, d]; the cache k, v [B, T, Hkv, d] as FastMQA reads it
    (with scales [B, T, Hkv] for 8-bit); kd, vd: the f16 cache PyTorch reads."""

    def __init__(self, s, seed, keep_full):
        dev = torch.device(DEVICE)
        g = torch.Generator(device=dev)
        g.manual_seed(seed)

        def randn(*shape):
            return torch.randn(shape, generator=g, device=dev, dtype=torch.float32).half()

        self.q = randn(s.batch, 1, s.heads, s.d)
        kf, vf = (randn(s.batch, s.kv_len, s.kv_heads, s.d) for _ in range(2))
        qmax = KV_DTYPES[s.kv][2]
        self.full = (kf, vf) if keep_full and qmax else None
        if qmax is None:
            self.k, self.v, self.k_scale, self.v_scale = kf, vf, None, None
        else:
            self.k, self.k_scale = quantize(kf, qmax)
            self.v, self.v_scale = quantize(vf, qmax)
        self.kd = self.vd = None

    def dequantize_for_peers(self):
        if self.k_scale is None:
            self.kd, self.vd = self.k, self.v
        else:
            self.kd = dequant64(self.k, self.k_scale).half()
            self.vd = dequant64(self.v, self.v_scale).half()


def reference(q, k64, v64):
    """float64 decode of one query token that sees every position: [B, H, d]."""
    B, _, H, d = q.shape
    hkv = k64.shape[2]
    qq = q.double().reshape(B, hkv, H // hkv, d)
    kk = k64.permute(0, 2, 1, 3)
    p = torch.softmax(torch.matmul(qq, kk.transpose(-1, -2)) / math.sqrt(d), dim=-1)
    return torch.matmul(p, v64.permute(0, 2, 1, 3)).reshape(B, H, d)


def compare(out, ref):
    """(rel_l2, max_abs) of out against ref in float64; inf for NaN or inf in out."""
    o = out.double().reshape(ref.shape)
    if not bool(torch.isfinite(o).all()):
        return math.inf, math.inf
    diff = o - ref
    return float(diff.norm() / ref.norm()), float(diff.abs().max())


def max_diff(a, b):
    """max |a - b| in float64; inf where either holds NaN."""
    d = float((a.double().reshape(b.shape) - b.double()).abs().max())
    return d if math.isfinite(d) else math.inf


# ---------------------------------------------------------------- contenders

class Contender:
    """A name, the K/V bytes one launch is handed, how many input copies it rotates
    over, and launch(i) on copy i % copies (on torch's current stream), which returns
    the output tensor.  keep holds what raw pointers in launch's arguments point at."""

    def __init__(self, name, nbytes, copies, launch, keep=(), note=""):
        self.name, self.nbytes, self.copies, self.launch = name, nbytes, copies, launch
        self.keep, self.note = keep, note


def ours(lib, s, copies):
    """FastMQA's contender (its launch plan built here) and its output tensor."""
    p = lib.problem(s)
    choice, ws_bytes = lib.plan(p)
    dev = torch.device(DEVICE)
    ws = torch.empty(max(ws_bytes, 16), dtype=torch.uint8, device=dev)
    o = torch.empty(s.batch, 1, s.heads, s.d, dtype=torch.float16, device=dev)
    lens = torch.full((s.batch,), s.kv_len, dtype=torch.int32, device=dev)
    args = [decode_args(c, o, lens, ws, ws_bytes) for c in copies]

    def launch(i):
        lib.decode(p, args[i % len(args)], torch.cuda.current_stream().cuda_stream)
        return o

    return Contender("fastmqa", cache_bytes(s, s.kv, s.kv_heads), len(copies), launch,
                     keep=(copies, ws, lens), note=choice), o


def decode_args(c, o, lens, ws, ws_bytes):
    """fmqa_decode_args of copy c; every stride read off the tensor itself."""
    a = DecodeArgs()
    tensors = (("q", c.q), ("k", c.k), ("v", c.v), ("o", o), ("k_scale", c.k_scale),
               ("v_scale", c.v_scale))
    for name, t in tensors:
        if t is None:
            continue
        setattr(a, name, t.data_ptr())
        for axis, dim in enumerate(("batch", "token", "head")):
            setattr(a, f"{name}_stride_{dim}", t.stride(axis))
    a.kv_lens = lens.data_ptr()
    a.sm_scale = 0.0  # 1 / sqrt(d), SDPA's default too
    a.workspace, a.workspace_size = ws.data_ptr(), ws_bytes
    return a


def sdpa_backends():
    from torch.nn.attention import SDPBackend
    return {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
            "efficient": SDPBackend.EFFICIENT_ATTENTION}


def sdpa(backend, q, k, v, gqa, causal=False):
    from torch.nn.attention import sdpa_kernel
    kw = {"enable_gqa": True} if gqa else {}
    with sdpa_kernel([backend]):
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal, **kw)


def peer_views(s, c, mode):
    """SDPA's (q, k, v, enable_gqa) of copy c: [B, heads, L, d] views of the same
    memory (the cache [B, T, Hkv, d] transposed, no copy), except "repeat", whose
    expanded cache is a new tensor."""
    q, k, v = c.q.transpose(1, 2), c.kd.transpose(1, 2), c.vd.transpose(1, 2)
    g = s.heads // s.kv_heads
    if mode == "fold":
        return c.q.view(s.batch, s.kv_heads, g, s.d), k, v, False
    if mode == "repeat":
        return q, k.repeat_interleave(g, dim=1), v.repeat_interleave(g, dim=1), False
    return q, k, v, g > 1


def peer(s, bname, mode, copies, l2_bytes):
    heads = s.heads if mode == "repeat" else s.kv_heads
    nbytes = cache_bytes(s, "f16", heads)
    copies = copies[:copies_for(nbytes, l2_bytes)]
    views = [peer_views(s, c, mode) for c in copies]
    backend = sdpa_backends()[bname]

    def launch(i):
        q, k, v, gqa = views[i % len(views)]
        return sdpa(backend, q, k, v, gqa)

    return Contender(f"{bname}/{mode}", nbytes, len(views), launch, keep=views)


def first_launch(contender):
    """Runs launch(0) once: (a copy of its output, None) or (None, why it failed)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            out = contender.launch(0).clone()
            torch.cuda.synchronize()
            return out, None
        except Exception as e:  # a refusal is a RuntimeError; anything else is reported too
            why = " ".join([str(w.message) for w in caught] + [f"{type(e).__name__}: {e}"])
            return None, " ".join(why.split())[:240]


# ---------------------------------------------------------------- timing

def time_launches(launch, nbytes, copies, samples, env):
    """The method of tuner/tun.h: warm-up over every copy, one probe launch after a read
    flush, then `samples` samples as timing_plan() says (graph replays over the rotated
    copies, or single launches after a read flush); per-launch microseconds."""
    flush = env["flush"]
    start, stop = (torch.cuda.Event(enable_timing=True) for _ in range(2))

    def one_sample(run, launches, flushed):
        if flushed:
            flush.sum()  # reads 2 x L2: evicts without leaving dirty lines
        start.record()
        run()
        stop.record()
        stop.synchronize()
        return start.elapsed_time(stop) * 1e3 / launches

    for i in range(max(copies, 5)):  # warm: plans, cuDNN graphs, the allocator
        launch(i)
    probe = one_sample(lambda: launch(0), 1, True)
    how, n, covers = timing_plan(nbytes, copies, env["l2_bytes"], probe)
    if n == 1:
        us = [one_sample(lambda: launch(0), 1, True) for _ in range(samples)]
    else:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for i in range(n):
                launch(i)
        graph.replay()
        us = [one_sample(graph.replay, n, False) for _ in range(samples)]
        del graph
    res = summarize_us(us)
    res.update({"launches_per_sample": n, "flush": how, "covers_l2": covers,
                "timing_method": TIMING_METHOD})
    return res


def time_contender(contender, samples, env):
    return time_launches(contender.launch, contender.nbytes, contender.copies, samples, env)


def device_bandwidth(l2_bytes, samples, env):
    """GB/s of a read-only reduction (torch.sum) and of a device-to-device copy
    (bytes read plus bytes written) over max(8 L2, 1 GiB), timed by the same method."""
    nbytes = max(8 * l2_bytes, 1 << 30)
    x = torch.ones(nbytes // 4, dtype=torch.float32, device=DEVICE)
    y = torch.empty_like(x)
    read = time_launches(lambda i: x.sum(), nbytes, 1, samples, env)
    copy = time_launches(lambda i: y.copy_(x), 2 * nbytes, 1, samples, env)
    return nbytes / (read["median_us"] * 1e3), 2 * nbytes / (copy["median_us"] * 1e3), nbytes


# ---------------------------------------------------------------- one shape

TOL_F16 = 1e-3  # DESIGN.md section 5: relative L2 error of an f16 output


class Run:
    """What decode's and prefill's runs of one shape share: FastMQA's first launch
    (its output poisoned first), the peers of each backend and mode (a refused
    enable_gqa retried with K and V expanded, unless that mode runs anyway), and
    each contender's check against the reference, then its timing.  A subclass
    sets lib, s, opts, env, res (with its "contenders" list) and tol, and gives
    make_peer(bname, mode), check(out) -> (rel_l2, max_abs) and rates(e), which
    adds the throughput of a timed entry."""

    def first_ours(self, c, o):
        """Launches FastMQA's contender c once (o, its output, poisoned first)."""
        self.res["variant"] = c.note
        o.fill_(float("nan"))  # poison: an element never written shows as NaN
        out, why = first_launch(c)
        if why:
            raise RuntimeError(f"fastmqa failed: {why}")
        self.ours_out = out
        return out

    def run_peers(self, modes):
        for bname in self.opts.backends:
            for mode in modes:
                self.run_peer(bname, mode, modes)

    def run_peer(self, bname, mode, modes):
        c = self.make_peer(bname, mode)
        out, why = first_launch(c)
        if why and mode == "gqa" and "repeat" not in modes:
            # enable_gqa refused: the cache expanded to H heads, built here, not timed.
            c = self.make_peer(bname, "repeat")
            c.note = f"enable_gqa refused: {why}"
            out, why = first_launch(c)
        if not why:
            try:
                self.evaluate(c, out)
            except Exception as e:  # e.g. runs eagerly but not inside a graph capture
                why = " ".join(f"failed while timed: {type(e).__name__}: {e}".split())[:240]
        if why:
            self.res["contenders"].append({"name": c.name, "skipped": why, "note": c.note})
        del c, out
        torch.cuda.empty_cache()

    def evaluate(self, c, out):
        """Checks copy 0's output against the reference, then times the contender."""
        rel, mabs = self.check(out)
        e = {"name": c.name, "bytes": c.nbytes, "copies": c.copies, "rel_l2": rel,
             "max_abs": mabs, "ok": rel <= self.tol, "note": c.note}
        if c.name != "fastmqa":
            e["max_diff_vs_fastmqa"] = max_diff(out, self.ours_out)
        if not self.opts.check_only:
            e.update(time_contender(c, self.opts.samples, self.env))
            self.rates(e)
        self.res["contenders"].append(e)


class ShapeRun(Run):
    """Inputs, reference and results of one shape; contenders are added one by one."""

    def __init__(self, lib, s, opts, env):
        self.lib, self.s, self.opts, self.env = lib, s, opts, env
        self.res = {"shape": shape_id(s), "kv": s.kv, "batch": s.batch, "kv_len": s.kv_len,
                    "heads": s.heads, "kv_heads": s.kv_heads, "d": s.d, "contenders": []}
        l2 = env["l2_bytes"]
        n_ours = copies_for(cache_bytes(s, s.kv, s.kv_heads), l2)
        n_peer = copies_for(cache_bytes(s, "f16", s.kv_heads), l2)
        self.copies = [Copy(s, opts.seed * 1000 + i, keep_full=(i == 0))
                       for i in range(max(n_ours, n_peer))]
        self.n_ours, self.n_peer = n_ours, n_peer
        c0 = self.copies[0]
        self.ref = reference(c0.q, dequant64(c0.k, c0.k_scale), dequant64(c0.v, c0.v_scale))
        self.ours_out = None

    tol = TOL_F16

    def run(self):
        self.run_ours()
        for c in self.copies[:self.n_peer]:
            c.dequantize_for_peers()
        self.run_peers(["mha"] if self.s.heads == self.s.kv_heads else self.opts.modes)
        summarize(self.res)
        return self.res

    def run_ours(self):
        c, o = ours(self.lib, self.s, self.copies[:self.n_ours])
        out = self.first_ours(c, o)
        c0 = self.copies[0]
        if c0.full:  # 8-bit: the quantization error, against the unquantized cache
            full = reference(c0.q, c0.full[0].double(), c0.full[1].double())
            self.res["fastmqa_rel_l2_vs_unquantized"] = compare(out, full)[0]
            c0.full = None
        self.evaluate(c, out)

    def make_peer(self, bname, mode):
        return peer(self.s, bname, mode, self.copies, self.env["l2_bytes"])

    def check(self, out):
        return compare(out, self.ref)

    def rates(self, e):
        e["gbps"] = e["bytes"] / (e["median_us"] * 1e3)


def summarize(res):
    """Best correct peer by time, our speed-up over it, the largest |ours - torch|."""
    ours_e = res["contenders"][0]
    ran = [e for e in res["contenders"][1:] if "skipped" not in e]
    res["ok"] = ours_e["ok"]
    res["max_diff_vs_torch"] = max((e["max_diff_vs_fastmqa"] for e in ran), default=None)
    timed = [e for e in ran if e["ok"] and "median_us" in e]
    if timed and "median_us" in ours_e:
        best = min(timed, key=lambda e: e["median_us"])
        res["best_peer"], res["best_peer_us"] = best["name"], best["median_us"]
        res["speedup"] = best["median_us"] / ours_e["median_us"]


# ---------------------------------------------------------------- prefill

PREFILL_CHECK_ROWS = 128  # rows checked at each end of every sequence
TOL_BF16 = 1e-2           # DESIGN.md section 5: relative L2 error of a bf16 output


def prefill_rows(tokens):
    """The query rows of a sequence checked against the reference: the first and the
    last PREFILL_CHECK_ROWS (the tiles with the fewest and the most keys), all of a
    short sequence."""
    n = PREFILL_CHECK_ROWS
    if tokens <= 2 * n:
        return list(range(tokens))
    return list(range(n)) + list(range(tokens - n, tokens))


def prefill_reference(q, k, v, batch, tokens, rows, heads_per_chunk=8):
    """float64 causal attention of the given rows of every sequence: [B, len(rows), H, dv].
    q [B T, H, d], k [B T, Hkv, d], v [B T, Hkv, dv] packed; head h reads KV head
    h // (H / Hkv); scale 1 / sqrt(d).  Heads go in chunks to bound the scores' memory."""
    H, d, hk = q.shape[1], q.shape[2], k.shape[1]
    g = H // hk
    idx = torch.tensor(rows, device=q.device)
    later = torch.arange(tokens, device=q.device)[None, :] > idx[:, None]  # [n, T]
    out = torch.empty(batch, len(rows), H, v.shape[2], dtype=torch.float64, device=q.device)
    for b in range(batch):
        seq = slice(b * tokens, (b + 1) * tokens)
        qb, kb, vb = q[seq][idx].double(), k[seq].double(), v[seq].double()
        for h0 in range(0, H, heads_per_chunk):
            h1 = min(H, h0 + heads_per_chunk)
            kv = torch.arange(h0, h1, device=q.device) // g
            sc = torch.einsum("nhd,thd->hnt", qb[:, h0:h1], kb[:, kv]) / math.sqrt(d)
            sc.masked_fill_(later, -math.inf)
            out[b, :, h0:h1] = torch.einsum("hnt,thd->nhd", torch.softmax(sc, dim=-1), vb[:, kv])
    return out


def prefill_compare(out, ref, rows):
    """(rel_l2, max_abs) of out [B, T, H, dv] (any view) on the checked rows against ref;
    inf when any element of out, checked or not, is NaN or inf."""
    if not bool(torch.isfinite(out).all()):
        return math.inf, math.inf
    return compare(out[:, rows], ref)


class PrefillCopy:
    """One input copy: q [B T, H, d], k, v [B T, Hkv, d] bf16, packed (varlen with equal
    lengths, which is also [B, T, heads, d])."""

    def __init__(self, s, seed):
        g = torch.Generator(device=DEVICE)
        g.manual_seed(seed)
        n = s.batch * s.tokens

        def randn(heads):
            return torch.randn((n, heads, s.d), generator=g, device=DEVICE).bfloat16()

        self.q, self.k, self.v = randn(PREFILL_HEADS), randn(s.kv_heads), randn(s.kv_heads)


def prefill_args(c, o, cu, ws, ws_bytes):
    """fmqa_prefill_args of copy c; strides read off the tensors."""
    a = PrefillArgs()
    for name, t in (("q", c.q), ("k", c.k), ("v", c.v), ("o", o)):
        setattr(a, name, t.data_ptr())
        setattr(a, f"{name}_stride_token", t.stride(0))
        setattr(a, f"{name}_stride_head", t.stride(1))
    a.cu_seqlens_q = cu.data_ptr()
    a.total_q = c.q.shape[0]
    a.workspace, a.workspace_size = ws.data_ptr(), ws_bytes
    return a


def prefill_ours(lib, s, copies):
    """FastMQA's prefill contender; its launch returns o as [B, T, H, d]."""
    p = lib.prefill_problem(s)
    choice, ws_bytes = lib.plan(p)
    ws = torch.empty(max(ws_bytes, 16), dtype=torch.uint8, device=DEVICE)
    o = torch.empty_like(copies[0].q)
    cu = torch.arange(0, s.batch + 1, dtype=torch.int32, device=DEVICE) * s.tokens
    args = [prefill_args(c, o, cu, ws, ws_bytes) for c in copies]

    def launch(i):
        lib.prefill(p, args[i % len(args)], torch.cuda.current_stream().cuda_stream)
        return o.view(s.batch, s.tokens, PREFILL_HEADS, s.d)

    return Contender("fastmqa", prefill_bytes(s), len(copies), launch, keep=(copies, ws, cu),
                     note=choice), o


def prefill_peer(s, bname, mode, copies):
    """SDPA on [B, heads, T, d] views of the same copies (mode gqa: enable_gqa; repeat:
    K and V expanded to H heads, built here); launch returns [B, T, H, d]."""
    g = PREFILL_HEADS // s.kv_heads

    def views(c):
        q, k, v = (t.view(s.batch, s.tokens, t.shape[1], s.d).transpose(1, 2)
                   for t in (c.q, c.k, c.v))
        if mode == "repeat":
            return q, k.repeat_interleave(g, dim=1), v.repeat_interleave(g, dim=1), False
        return q, k, v, g > 1

    vs = [views(c) for c in copies]
    backend = sdpa_backends()[bname]

    def launch(i):
        q, k, v, gqa = vs[i % len(vs)]
        return sdpa(backend, q, k, v, gqa, causal=True).transpose(1, 2)

    return Contender(f"{bname}/{mode}", prefill_bytes(s), len(vs), launch, keep=vs)


def gemm_rate(samples, env):
    """The device's bf16 tensor-core rate in TFLOP/s: torch.matmul of 8192^3 (bf16
    operands), timed by the same method."""
    n = 8192
    a, b = (torch.randn(n, n, device=DEVICE).bfloat16() for _ in range(2))
    t = time_launches(lambda i: a @ b, 3 * n * n * 2, 1, samples, env)
    return 2.0 * n ** 3 / (t["median_us"] * 1e6)


class PrefillRun(Run):
    """Inputs, reference and results of one prefill shape (as ShapeRun for decode)."""

    def __init__(self, lib, s, opts, env):
        self.lib, self.s, self.opts, self.env = lib, s, opts, env
        self.res = {"shape": any_id(s), "op": "prefill", "batch": s.batch, "tokens": s.tokens,
                    "heads": PREFILL_HEADS, "kv_heads": s.kv_heads, "d": s.d,
                    "flops": prefill_flops(s), "contenders": []}
        n = copies_for(prefill_bytes(s), env["l2_bytes"])
        self.copies = [PrefillCopy(s, opts.seed * 1000 + i) for i in range(n)]
        self.rows = prefill_rows(s.tokens)
        c0 = self.copies[0]
        self.ref = prefill_reference(c0.q, c0.k, c0.v, s.batch, s.tokens, self.rows)
        self.ours_out = None

    tol = TOL_BF16

    def run(self):
        c, o = prefill_ours(self.lib, self.s, self.copies)
        self.evaluate(c, self.first_ours(c, o))
        self.run_peers(["mha"] if self.s.kv_heads == PREFILL_HEADS else ["gqa"])
        summarize(self.res)
        return self.res

    def make_peer(self, bname, mode):
        return prefill_peer(self.s, bname, mode, self.copies)

    def check(self, out):
        return prefill_compare(out, self.ref, self.rows)

    def rates(self, e):
        e["tflops"] = self.res["flops"] / (e["median_us"] * 1e6)
        gemm = self.env.get("gemm_tflops")
        e["gemm_fraction"] = e["tflops"] / gemm if gemm else None


# ---------------------------------------------------------------- output

def fmt(x, spec, width):
    return f"{x:{width}{spec}}" if isinstance(x, (int, float)) else f"{'-':>{width}}"


def clip(text, n=110):
    return text if len(text) <= n else text[:n - 3] + "..."


def print_shape(i, n, s, bw):
    print(f"[{i}/{n}] {s['shape']}: B={s['batch']} T={s['kv_len']} H={s['heads']} "
          f"Hkv={s['kv_heads']} d={s['d']} kv={s['kv']}; fastmqa {s.get('variant', '-')}")
    if s["contenders"]:
        print(f"  {'contender':<18} {'median_us':>10} {'GB/s':>7} {'%bw':>6} {'MiB':>8} "
              f"{'rel_l2':>8} {'max_abs':>8} {'|ours-it|':>9} ok")
    for e in s["contenders"]:
        print_contender(e, bw)
    if "fastmqa_rel_l2_vs_unquantized" in s:
        print(f"  quantization: fastmqa rel_l2 {s['fastmqa_rel_l2_vs_unquantized']:.1e} "
              f"against the unquantized cache")
    if "speedup" in s:
        print(f"  -> fastmqa {s['speedup']:.2f}x the speed of the best peer "
              f"({s['best_peer']}, {s['best_peer_us']:.2f} us); "
              f"max |fastmqa - torch| {fmt(s['max_diff_vs_torch'], '.1e', 0)}")
    if "error" in s:
        print(f"  error: {s['error']}")
    sys.stdout.flush()


def print_contender(e, bw):
    if "skipped" in e:
        print(f"  {e['name']:<18} skipped: {clip(e['skipped'])}")
    else:
        pct = 100 * e["gbps"] / bw if "gbps" in e and bw else None
        print(f"  {e['name']:<18} {fmt(e.get('median_us'), '.2f', 10)} "
              f"{fmt(e.get('gbps'), '.0f', 7)} {fmt(pct, '.1f', 5)}% "
              f"{e['bytes'] / 2**20:8.1f} {e['rel_l2']:8.1e} {e['max_abs']:8.1e} "
              f"{fmt(e.get('max_diff_vs_fastmqa'), '.1e', 9)} {'yes' if e['ok'] else 'NO'}")
    if e["note"] and e["name"] != "fastmqa":
        print(f"  {'':<18} ({clip(e['note'])})")


def print_prefill_shape(i, n, s, gemm):
    print(f"[{i}/{n}] {s['shape']}: B={s['batch']} T={s['tokens']} H={s['heads']} "
          f"Hkv={s['kv_heads']} d={s['d']} causal bf16, {s['flops'] / 1e12:.3f} TFLOP; "
          f"fastmqa {s.get('variant', '-')}")
    if s["contenders"]:
        print(f"  {'contender':<18} {'median_us':>10} {'TFLOP/s':>8} {'%gemm':>6} "
              f"{'rel_l2':>8} {'max_abs':>8} {'|ours-it|':>9} ok")
    for e in s["contenders"]:
        if "skipped" in e:
            print(f"  {e['name']:<18} skipped: {clip(e['skipped'])}")
            continue
        pct = 100 * e["gemm_fraction"] if e.get("gemm_fraction") else None
        print(f"  {e['name']:<18} {fmt(e.get('median_us'), '.1f', 10)} "
              f"{fmt(e.get('tflops'), '.1f', 8)} {fmt(pct, '.1f', 5)}% {e['rel_l2']:8.1e} "
              f"{e['max_abs']:8.1e} {fmt(e.get('max_diff_vs_fastmqa'), '.1e', 9)} "
              f"{'yes' if e['ok'] else 'NO'}")
        if e["note"] and e["name"] != "fastmqa":
            print(f"  {'':<18} ({clip(e['note'])})")
    if "speedup" in s:
        print(f"  -> fastmqa {s['speedup']:.2f}x the speed of the best peer "
              f"({s['best_peer']}, {s['best_peer_us']:.1f} us)")
    if "error" in s:
        print(f"  error: {s['error']}")
    sys.stdout.flush()


def print_prefill_summary(doc):
    gemm = doc.get("gemm_tflops")
    print(f"\nprefill summary: {doc['device']}, bf16 GEMM "
          f"{fmt(gemm, '.0f', 0)} TFLOP/s (torch.matmul 8192^3, same run)")
    print(f"{'shape':<28} {'ours_us':>9} {'TFLOP/s':>8} {'%gemm':>6} {'best peer':<17} "
          f"{'peer_us':>9} {'TFLOP/s':>8} {'speedup':>7} ok")
    for s in doc["shapes"]:
        if s.get("op") != "prefill":
            continue
        if "error" in s:
            print(f"{s['shape']:<28} error: {s['error'][:90]}")
            continue
        o = s["contenders"][0]
        best = next((e for e in s["contenders"] if e["name"] == s.get("best_peer")), {})
        pct = 100 * o["gemm_fraction"] if o.get("gemm_fraction") else None
        print(f"{s['shape']:<28} {fmt(o.get('median_us'), '.1f', 9)} "
              f"{fmt(o.get('tflops'), '.1f', 8)} {fmt(pct, '.1f', 5)}% "
              f"{s.get('best_peer', '-'):<17} {fmt(best.get('median_us'), '.1f', 9)} "
              f"{fmt(best.get('tflops'), '.1f', 8)} {fmt(s.get('speedup'), '.2f', 6)}x "
              f"{'yes' if s['ok'] else 'NO'}")


def print_summary(doc):
    print(f"\nsummary: {doc['device']}, torch {doc['torch']}, "
          f"read {doc['read_gbps']:.0f} GB/s (torch.sum over {doc['bw_bytes'] / 2**30:.1f} GiB),"
          f" copy {doc['copy_gbps']:.0f} GB/s (read + written)")
    print(f"{'shape':<24} {'ours_us':>9} {'GB/s':>6} {'%bw':>6} {'best peer':<17} "
          f"{'peer_us':>9} {'GB/s':>6} {'speedup':>7} {'|ours-torch|':>12} ok")
    for s in doc["shapes"]:
        if s.get("op") == "prefill":
            continue
        if "error" in s:
            print(f"{s['shape']:<24} error: {s['error'][:90]}")
            continue
        o = s["contenders"][0]
        best = next((e for e in s["contenders"] if e["name"] == s.get("best_peer")), {})
        pct = 100 * o["gbps"] / doc["read_gbps"] if "gbps" in o else None
        print(f"{s['shape']:<24} {fmt(o.get('median_us'), '.2f', 9)} "
              f"{fmt(o.get('gbps'), '.0f', 6)} {fmt(pct, '.1f', 5)}% "
              f"{s.get('best_peer', '-'):<17} {fmt(best.get('median_us'), '.2f', 9)} "
              f"{fmt(best.get('gbps'), '.0f', 6)} {fmt(s.get('speedup'), '.2f', 6)}x "
              f"{fmt(s['max_diff_vs_torch'], '.1e', 12)} {'yes' if s['ok'] else 'NO'}")


def write_json(path, doc):
    if path:
        with open(path + ".tmp", "w") as f:
            json.dump(doc, f, indent=1)
        os.replace(path + ".tmp", path)


# ---------------------------------------------------------------- main

def parse_args(argv):
    ap = argparse.ArgumentParser(
        description="FastMQA decode and prefill against PyTorch SDPA (flash, cuDNN, "
                    "efficient) on the same inputs; needs PyTorch and a GPU.")
    ap.add_argument("--lib", default=os.path.join(REPO, "build", "libfastmqa.so"),
                    help="libfastmqa.so (default: build/libfastmqa.so of this checkout)")
    ap.add_argument("--db", default=None,
                    help="tuning database FastMQA reads (default: its default path; "
                         "'' = template defaults only)")
    ap.add_argument("--shapes", default="",
                    help="comma-separated patterns (fnmatch) over shape ids, e.g. 'mqa-*' or "
                         "'prefill-*' (default: the decode shapes); see --list")
    ap.add_argument("--list", action="store_true",
                    help="print the shape ids (every one without --shapes) and exit (no torch)")
    ap.add_argument("--backends", default="flash,cudnn,efficient",
                    help="SDPA backends to run (default: flash,cudnn,efficient)")
    ap.add_argument("--modes", default="gqa,fold",
                    help="how PyTorch gets a GQA/MQA cache: gqa (enable_gqa, else "
                         "repeat_interleave), fold, repeat (default: gqa,fold)")
    ap.add_argument("--check-only", action="store_true",
                    help="verify every contender, time nothing")
    ap.add_argument("--samples", type=int, default=15, help="timed graph replays (15)")
    ap.add_argument("--seed", type=int, default=1, help="input seed (1)")
    ap.add_argument("--device", type=int, default=0, help="CUDA device ordinal (0)")
    ap.add_argument("--json", default=None, metavar="PATH",
                    help="also write the results as JSON (rewritten after each shape)")
    ap.add_argument("--print-timing-plan", default=None,
                    metavar="BYTES,COPIES,L2,PROBE_US[;...]",
                    help="print the timing method's plan for each launch as one JSON line "
                         "(no torch; the unit tests compare it with the C rules) and exit")
    o = ap.parse_args(argv)
    o.backends = [b for b in o.backends.split(",") if b]
    o.modes = [m for m in o.modes.split(",") if m]
    bad = [b for b in o.backends if b not in ("flash", "cudnn", "efficient")]
    bad += [m for m in o.modes if m not in ("gqa", "fold", "repeat")]
    if bad or o.samples < 1:
        ap.error(f"unknown backend or mode {bad}" if bad else "--samples must be >= 1")
    return o


def environment(opts):
    """Imports torch, checks the GPU, measures bandwidth; the run's shared state."""
    global torch
    try:
        import torch as t
    except ImportError as e:
        raise SystemExit(f"peers.py: needs PyTorch ({e})")
    torch = t
    if not torch.cuda.is_available():
        raise SystemExit("peers.py: PyTorch sees no GPU")
    torch.cuda.set_device(opts.device)
    props = torch.cuda.get_device_properties(opts.device)
    l2 = getattr(props, "L2_cache_size", 0) or 50 << 20
    env = {"l2_bytes": l2, "name": props.name,
           "flush": torch.ones(2 * l2 // 4, dtype=torch.float32, device=DEVICE)}
    read, copy, nbytes = device_bandwidth(l2, opts.samples, env)
    torch.cuda.empty_cache()  # the bandwidth buffers
    env.update({"read_gbps": read, "copy_gbps": copy, "bw_bytes": nbytes})
    return env


def cudnn_version():
    try:
        return torch.backends.cudnn.version()
    except Exception:  # informative only: never stop the run for it
        return None


def context_alive():
    try:
        torch.cuda.synchronize()
        return True
    except RuntimeError:
        return False


def measure(lib, s, opts, env):
    """One shape's results; an error keeps what was measured before it."""
    run = None
    prefill = isinstance(s, PrefillShape)
    try:
        run = PrefillRun(lib, s, opts, env) if prefill else ShapeRun(lib, s, opts, env)
        return run.run()
    except Exception as e:  # fastmqa.Error, CUDA errors, out of memory: the next shape runs
        res = run.res if run else {"shape": any_id(s), "batch": s.batch, "kv_heads": s.kv_heads,
                                   "d": s.d, "contenders": []}
        if prefill and not run:
            res.update({"op": "prefill", "tokens": s.tokens, "heads": PREFILL_HEADS,
                        "flops": prefill_flops(s)})
        elif not run:
            res.update({"kv": s.kv, "kv_len": s.kv_len, "heads": s.heads})
        res["error"] = " ".join(f"{type(e).__name__}: {e}".split())[:400]
        res["ok"] = False
        return res


def main(argv):
    opts = parse_args(argv)
    if opts.print_timing_plan:
        for spec in opts.print_timing_plan.split(";"):
            nbytes, copies, l2, probe = (float(x) for x in spec.split(","))
            how, n, covers = timing_plan(nbytes, int(copies), l2, probe)
            print(json.dumps({"flush": how, "launches": n, "covers": int(covers),
                              "copies_for": copies_for(nbytes, l2)}))
        return 0
    shapes = select_shapes(opts.shapes, listing=opts.list)
    if opts.list:
        print("\n".join(any_id(s) for s in shapes))
        return 0
    if not os.path.exists(opts.lib):
        raise SystemExit(f"peers.py: {opts.lib} not found (build the project, or --lib)")
    env = environment(opts)
    if any(isinstance(s, PrefillShape) for s in shapes):
        env["gemm_tflops"] = gemm_rate(opts.samples, env)
        torch.cuda.empty_cache()
    lib = Lib(opts.lib, opts.device, opts.db)
    doc = {"device": env["name"], "torch": torch.__version__, "cuda": torch.version.cuda,
           "cudnn": cudnn_version(), "lib": opts.lib,
           "read_gbps": env["read_gbps"], "copy_gbps": env["copy_gbps"],
           "bw_bytes": env["bw_bytes"], "l2_bytes": env["l2_bytes"],
           "gemm_tflops": env.get("gemm_tflops"), "check_only": opts.check_only, "shapes": []}
    print(f"{env['name']}: torch {doc['torch']} (CUDA {doc['cuda']}, cuDNN {doc['cudnn']}); "
          f"read {env['read_gbps']:.0f} GB/s, copy {env['copy_gbps']:.0f} GB/s; {opts.lib}")
    failed = False
    for i, s in enumerate(shapes, 1):
        res = measure(lib, s, opts, env)
        torch.cuda.empty_cache()
        failed |= not res.get("ok", False)
        doc["shapes"].append(res)
        if res.get("op") == "prefill":
            print_prefill_shape(i, len(shapes), res, env.get("gemm_tflops"))
        else:
            print_shape(i, len(shapes), res, env["read_gbps"])
        write_json(opts.json, doc)
        if "error" in res and not context_alive():
            print("the CUDA context is unusable after this error: remaining shapes not run")
            break
    if not opts.check_only and any(s.get("op") != "prefill" for s in doc["shapes"]):
        print_summary(doc)
    if not opts.check_only and any(s.get("op") == "prefill" for s in doc["shapes"]):
        print_prefill_summary(doc)
    lib.close()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
