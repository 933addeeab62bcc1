#!/usr/bin/env python3
"""Test strength of the CPU emulator tests, measured by planted bugs.

Plants one-line bugs of the kinds kernel engineers make (off-by-one bounds,
wrong strides, a missing barrier, int8 zero point off by 128, fp8 mantissa
mask, cvt operand order, fp8 subnormals, V scales addressed with K strides,
window edges, ...) into a copy of templates/ (decode.cuh, append.cuh,
decode.lua, fmqa_device.cuh, fmqa_ptx.cuh), one at a time, and runs the
emulator tests against each copy ($FASTMQA_TEMPLATE_DIR points them there).
A mutant is caught when a test fails.  Templates are read when the tests run,
so nothing is rebuilt per mutant: the script only builds the three test
binaries once (cmake --build --target ...).  Prints one line per mutant and
`caught N / M`; --markdown prints the table docs/PERFORMANCE.md carries.

A mutant whose text no longer occurs in its file (the code moved on) is
reported as stale and not counted: update its `old` text.  One that the
emulator cannot compile is reported as such and not counted either (a bug
the compiler finds needs no test).

Usage: scripts/mutate.py [--build-dir build] [--only SUBSTRING] [--list]
                         [--markdown] [--timeout SECONDS]
Slow on purpose (each survivor runs every relevant test: minutes); CI does
not run it.  Run it under `nice` on a shared machine.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (id, file, what, old, new): old must occur exactly once in the file.
MUTANTS = [
    # --- fmqa_device.cuh: conversions
    ("int8-zero-point", "fmqa_device.cuh", "int8 zero point off by 128 (magic 1024 for 1152)",
     "const u32 magic = 0x64806480u;", "const u32 magic = 0x64006400u;"),
    ("int8-sign-flip", "fmqa_device.cuh", "int8 bias flip missing (bytes read as unsigned)",
     "const u32 u = r ^ 0x80808080u;", "const u32 u = r;"),
    ("fp8-mantissa-mask", "fmqa_device.cuh", "fp8 mantissa mask drops the low mantissa bit (sm_80 path)",
     "((hi_bytes >> 1) & 0x3f803f80u)", "((hi_bytes >> 1) & 0x3f003f00u)"),
    ("fp8-sign-mask", "fmqa_device.cuh", "fp8 sign of the upper half lost (sm_80 path)",
     "(hi_bytes & 0x80008000u)", "(hi_bytes & 0x00008000u)"),
    ("fp8-native-pairing", "fmqa_device.cuh", "fp8 native path pairs (b0, b1) instead of (b0, b2)",
     "prmt(r, 0u, 0x3120u)", "prmt(r, 0u, 0x3210u)"),
    ("fp8-fold", "fmqa_device.cuh", "fp8 fold factor 2^7 instead of 2^8 (sm_80 path)",
     "FMQA_FP8_NATIVE ? 1.0f : 256.0f", "FMQA_FP8_NATIVE ? 1.0f : 128.0f"),
    ("cvt-operand-order", "fmqa_device.cuh", "cvt.rn.f16x2.f32 operands swapped in pack2",
     "return cvt_rn_x2_f32<BF16>(hi, lo);", "return cvt_rn_x2_f32<BF16>(lo, hi);"),
    ("bf16-pair-halves", "fmqa_device.cuh", "f16x2 -> bf16x2 swaps the halves",
     "return pack2<1>(f16_to_f32((u16)(x & 0xffff)), f16_to_f32((u16)(x >> 16)));",
     "return pack2<1>(f16_to_f32((u16)(x >> 16)), f16_to_f32((u16)(x & 0xffff)));"),
    ("fp8-encode-subnormal", "fmqa_device.cuh", "fp8 encoder: subnormal threshold off by one (sm_80 path)",
     "const int shift = e < -6 ? 14 - e : 20;", "const int shift = e < -7 ? 14 - e : 20;"),
    ("fp8-encode-ties", "fmqa_device.cuh", "fp8 encoder rounds ties away from zero (sm_80 path)",
     "q += rem > half || (rem == half && (q & 1));", "q += rem >= half;"),
    ("quad-max-lane", "fmqa_device.cuh", "quad max shuffles across quads (xor 4 for 2)",
     "return fmaxf(x, shfl_xor(x, 2));", "return fmaxf(x, shfl_xor(x, 4));"),
    ("quad-sum-own", "fmqa_device.cuh", "quad sum drops the lane's own value",
     "x += shfl_xor(x, 1);", "x = shfl_xor(x, 1);"),
    # --- decode.cuh: pipeline, barriers
    ("missing-barrier-loop", "decode.cuh", "__syncthreads deleted in the main loop",
     "__syncthreads(); /* tile `it` visible to all; tile it-1's stage is free */", ""),
    ("missing-barrier-merge", "decode.cuh", "__syncthreads deleted before the cross-warp merge",
     "    __syncthreads();\n    if (nw > 0) return;", "    if (nw > 0) return;"),
    ("wait-group-depth", "decode.cuh", "cp.async.wait_group one group too shallow",
     "cp_async_wait<STAGES - 2>();", "cp_async_wait<STAGES - 1>();"),
    # --- decode.cuh: addressing
    ("v-scale-k-strides", "decode.cuh", "V scales addressed with K's strides",
     "p.v_scale + o.vs + hk * p.vs_sh", "p.v_scale + o.ks + hk * p.ks_sh"),
    ("v-head-k-stride", "decode.cuh", "V head offset with K's head stride",
     "(o.v + hk * p.v_sh)", "(o.v + hk * p.k_sh)"),
    ("v-token-k-stride", "decode.cuh", "V token offset with K's token stride",
     "o.v = outer * p.v_sb + in * p.v_st;", "o.v = outer * p.v_sb + in * p.k_st;"),
    ("oob-page-table", "decode.cuh", "page-table read for rows past the end (value unused)",
     "const row_offsets o = offsets_of(p, b, ok ? slot_of(p, s, pos_of(s, v)) : 0);\n        const char *k",
     "const row_offsets o = offsets_of(p, b, slot_of(p, s, pos_of(s, v)));\n        const char *k"),
    ("tree-mask-padding-row", "decode.cuh", "padding rows read the tree mask past the sequence",
     "const int t = min(r / GROUP, Q_TOKENS - 1);", "const int t = r / GROUP;"),
    ("k-scale-column", "decode.cuh", "K scale of the neighbouring token",
     "p.sm_scale_log2 * KV_FOLD * kscale[col]", "p.sm_scale_log2 * KV_FOLD * kscale[col ^ 1]"),
    ("q-phys-col", "decode.cuh", "8-bit Q permutation swaps the two bit roles",
     "4 * (x >> 1) + hi + 2 * (x & 1)", "4 * (x >> 1) + 2 * hi + (x & 1)"),
    ("o-col-8bit", "decode.cuh", "8-bit O column drops the odd d-tile offset",
     "16 * (nt >> 1) + 2 * u + (nt & 1)", "16 * (nt >> 1) + 2 * u"),
    # --- decode.cuh: masks, windows, softmax
    ("window-edge", "decode.cuh", "window edge off by one in visible()",
     "ok = ok && (j > ri.qpos - p.window || j < p.sink_tokens)",
     "ok = ok && (j >= ri.qpos - p.window || j < p.sink_tokens)"),
    ("sink-edge", "decode.cuh", "sink edge off by one in visible()",
     "ok = ok && (j > ri.qpos - p.window || j < p.sink_tokens)",
     "ok = ok && (j > ri.qpos - p.window || j <= p.sink_tokens)"),
    ("causal-edge", "decode.cuh", "causal mask excludes the diagonal",
     "if (CAUSAL) ok = ok && j <= ri.qpos;", "if (CAUSAL) ok = ok && j < ri.qpos;"),
    ("tile-mask-window", "decode.cuh", "tile_needs_mask: window edge off by one",
     "pos_of(s, vf) <= s.kv_len - 1 - p.window", "pos_of(s, vf) < s.kv_len - 1 - p.window"),
    ("tile-mask-tree", "decode.cuh", "tile_needs_mask: a tile ending at the first draft skips the tree mask",
     "s.first_draft + (TREE ? 0 : 1)", "s.first_draft + 1"),
    ("window-lo", "decode.cuh", "window start one position late",
     "s.first_draft - p.window + 1;", "s.first_draft - p.window + 2;"),
    ("ring-wrap", "decode.cuh", "ring slot wraps one slot late",
     "slot >= p.sink_tokens + p.window ? slot - p.window : slot",
     "slot > p.sink_tokens + p.window ? slot - p.window : slot"),
    ("sinks-overlap", "decode.cuh", "sinks not clipped to the window start",
     "s.s0 = min(p.sink_tokens, s.lo);", "s.s0 = p.sink_tokens;"),
    ("tile-end-bound", "decode.cuh", "masked tile keeps the column at v_end",
     "if (v >= v_end || !visible(p, s, ri[h], pos_of(s, v))) x = neg_inf();",
     "if (v > v_end || !visible(p, s, ri[h], pos_of(s, v))) x = neg_inf();"),
    ("missing-l-rescale", "decode.cuh", "running sum not rescaled when the max grows",
     "        st.l[h] *= alpha;\n", ""),
    ("combine-last-split", "decode.cuh", "combine skips the last split",
     "for (int s = g; s < S; s += C_GROUPS)", "for (int s = g; s < S - 1; s += C_GROUPS)"),
    ("lse-base", "decode.cuh", "LSE written in base 2",
     "p.lse[row] = lse2 * 0.69314718055994531f;", "p.lse[row] = lse2;"),
    # --- decode.lua
    ("lua-scale-smem", "decode.lua", "shared_bytes forgets the V scales",
     "(eb == 1 and 8 * c.BLOCK_N or 0)", "(eb == 1 and 4 * c.BLOCK_N or 0)"),
    ("lua-workspace", "decode.lua", "workspace without the LSE column",
     "workspace = splits * out_rows * (p.head_dim_v + 1) * 4", "workspace = splits * out_rows * p.head_dim_v * 4"),
    ("lua-row-blocks", "decode.lua", "row blocks rounded down",
     "local row_blocks = ceil_div(rows(p), 16 * c.WARPS_M)", "local row_blocks = rows(p) // (16 * c.WARPS_M)"),
    ("lua-combine-smem", "decode.lua", "combine shared bytes half the column groups",
     "return 4 * MAX_AUTO_SPLITS + 4 * 4 + 16 * (128 // cols) * cols",
     "return 4 * MAX_AUTO_SPLITS + 4 * 4 + 8 * (128 // cols) * cols"),
    # --- append.cuh
    ("append-tie-rule", "append.cuh", "int8/fp8 rounding: the exact-quotient tie correction disabled",
     "if (e != 0.0f) /* r != 0 at a tie", "if (false) /* r != 0 at a tie"),
    ("append-tie-direction", "append.cuh", "tie correction moves the wrong way",
     "((e > 0.0f) == (r > 0.0f) ? 1 : -1)", "((e > 0.0f) == (r > 0.0f) ? -1 : 1)"),
    ("append-fp8-subnormal-ties", "append.cuh", "fp8 tie grid ignores subnormals",
     "- 127, -6);", "- 127, -9);"),
    ("append-fp8-qmax", "append.cuh", "fp8 scale divides by 447",
     "FMT == FMT_INT8 ? 127.0f : 448.0f", "FMT == FMT_INT8 ? 127.0f : 447.0f"),
    ("append-ring-overwrite", "append.cuh", "ring: last overwritten token still written",
     "if (p.window <= 0 || t + p.window < p.n_new)", "if (p.window <= 0 || t + p.window < p.n_new - 1)"),
    ("append-v-k-stride", "append.cuh", "V input rows addressed with K's token stride",
     "b * p.vn_sb + t * p.vn_st + h * p.vn_sh", "b * p.vn_sb + t * p.kn_st + h * p.vn_sh"),
    ("append-page-index", "append.cuh", "page index from the slot one past",
     "p.page_table[(long long)b * p.pt_stride + slot / PAGE_ROWS]",
     "p.page_table[(long long)b * p.pt_stride + (slot + 1) / PAGE_ROWS]"),
    ("append-row-amax-group", "append.cuh", "row max shuffles across row groups",
     "m = fmaxf(m, fmqa_dev::shfl_xor(m, o, mask));", "m = fmaxf(m, fmqa_dev::shfl_xor(m, o));"),
    ("append-latent-rot-front", "append.cuh", "latent rows rotate their first elements, not the rope part",
     "#define K_ROT_AT (LATENT ? HEAD_DIM - ROPE_DIM : 0)", "#define K_ROT_AT 0"),
    ("append-partial-freq", "append.cuh", "partial rotary frequencies over the head dim, not the rotated part",
     "exp(-(double)(2 * i) / ROPE_DIM * log_theta)", "exp(-(double)(2 * i) / HEAD_DIM * log_theta)"),
    ("append-table-sin-sign", "append.cuh", "table angles' sin read with the wrong sign",
     "s = rs.cs[half_r + i];", "s = -rs.cs[half_r + i];"),
    ("append-table-past-end", "append.cuh", "the token at the table's length is written",
     "pos >= p.rope_cs_len", "pos > p.rope_cs_len"),
]

# Which test binaries can see a bug in each file, cheapest first.
TESTS = {
    "fmqa_device.cuh": ["unit_convert_emu", "unit_decode_emu", "unit_append_emu"],
    "fmqa_ptx.cuh": ["unit_convert_emu", "unit_decode_emu", "unit_append_emu"],
    "decode.cuh": ["unit_decode_emu"],
    "decode.lua": ["unit_decode_emu"],
    "append.cuh": ["unit_append_emu", "unit_rope", "unit_mla_append"],
    "append.lua": ["unit_append_emu", "unit_rope", "unit_mla_append"],
}


def run_tests(build, tdir, binaries, timeout):
    """Returns ("caught", binary) on the first failing binary, ("uncompiled", b)
    when the emulator could not build the mutant, else ("survived", None)."""
    env = dict(os.environ, FASTMQA_TEMPLATE_DIR=tdir)
    for b in binaries:
        try:
            r = subprocess.run([os.path.join(build, "tests", b), "--fail-fast", "--jobs=2"],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               timeout=timeout, text=True, errors="replace")
        except subprocess.TimeoutExpired:
            return "caught", b + " (timeout)"
        if r.returncode != 0:
            if "emulator build failed" in r.stdout:
                return "uncompiled", b
            return "caught", b
    return "survived", None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build-dir", default=os.path.join(ROOT, "build"))
    ap.add_argument("--only", default="", help="run the mutants whose id contains this")
    ap.add_argument("--list", action="store_true", help="list the mutants and exit")
    ap.add_argument("--markdown", action="store_true", help="print a markdown table at the end")
    ap.add_argument("--timeout", type=int, default=900, help="seconds per test binary")
    a = ap.parse_args()
    mutants = [m for m in MUTANTS if a.only in m[0]]
    if a.list:
        for m in mutants:
            print(f"{m[0]:28} {m[1]:16} {m[2]}")
        return 0
    bins = sorted({b for m in mutants for b in TESTS[m[1]]})
    subprocess.run(["cmake", "--build", a.build_dir, "--target"] + bins, check=True,
                   stdout=subprocess.DEVNULL)
    src = os.path.join(ROOT, "templates")
    rows, caught, counted = [], 0, 0
    with tempfile.TemporaryDirectory(prefix="fmqa-mutate-") as tmp:
        tdir = os.path.join(tmp, "templates")
        shutil.copytree(src, tdir)
        for mid, fname, what, old, new in mutants:
            path = os.path.join(tdir, fname)
            with open(os.path.join(src, fname)) as f:
                text = f.read()
            n = text.count(old)
            if n != 1:
                rows.append((mid, fname, what, f"stale ({n} matches)", ""))
                print(f"{mid:28} stale: its text occurs {n} times in {fname}", flush=True)
                continue
            with open(path, "w") as f:
                f.write(text.replace(old, new))
            t0 = time.time()
            verdict, by = run_tests(a.build_dir, tdir, TESTS[fname], a.timeout)
            with open(path, "w") as f:
                f.write(text)
            if verdict != "uncompiled":
                counted += 1
                caught += verdict == "caught"
            rows.append((mid, fname, what, verdict, by or ""))
            print(f"{mid:28} {verdict:10} {by or '':24} {time.time() - t0:6.0f} s  {what}", flush=True)
    print(f"caught {caught} / {counted}")
    survivors = [r for r in rows if r[3] == "survived"]
    for r in survivors:
        print(f"survivor: {r[0]} ({r[1]}): {r[2]}")
    if a.markdown:
        print("\n| mutant | file | bug | result |\n|---|---|---|---|")
        for r in rows:
            print(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]}{' by ' + r[4] if r[4] else ''} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
