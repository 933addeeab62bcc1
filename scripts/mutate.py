#!/usr/bin/env python3
"""Test strength of the CPU emulator tests, measured by planted bugs.

Plants one-line bugs of the kinds kernel engineers make (off-by-one bounds,
wrong strides, a missing barrier, int8 zero point off by 128, fp8 mantissa
mask, cvt operand order, fp8 subnormals, V scales addressed with K strides,
window edges, ...) into a copy of templates/ (decode.cuh, decode_scores.cuh,
prefill_scores.cuh, compress.cuh, append.cuh, mla_decode.cuh, prefill.cuh, the Lua files, fmqa_device.cuh, fmqa_ptx.cuh,
fmqa_combine.cuh, fmqa_pages.cuh, fmqa_seq.cuh, prefill_sm90.cuh, fmqa_sm90.cuh, mla_decode_sm90.cuh), one at a time, and runs the
emulator tests against each copy ($FASTMQA_TEMPLATE_DIR points them there).
A mutant is caught when a test fails.  Templates are read when the tests run,
so nothing is rebuilt per mutant: the script only builds the test
binaries once (cmake --build --target ...).  Mutants of library sources
(a file given with its directory, e.g. runtime/rt_tmap.c: the runtime's
tensor maps, which unit_prefill_sm90_emu fills through the runtime) are
planted in the source tree itself, their test binaries rebuilt, and the file
restored (also on an interrupt) and rebuilt after.  Prints one line per mutant and
`caught N / M`; --markdown prints the table docs/PERFORMANCE.md carries.

Each selected mutant's `old` text must occur exactly once in its file: one
that occurs nowhere (the code moved on) or more than once (it would plant
several bugs, or the wrong one) stops the script before anything runs, naming
it and its count (exit status 2): refresh its `old` text.  --check does only
that, for every selected mutant, in a second.  A mutant that the emulator
cannot compile is reported as such and not counted (a bug the compiler finds
needs no test).

Usage: scripts/mutate.py [--build-dir build] [--only SUBSTRING[,...]] [--list]
                         [--check] [--markdown] [--timeout SECONDS]
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
     "constexpr u32 INT8_F16_BIAS = 0x64806480u;", "constexpr u32 INT8_F16_BIAS = 0x64006400u;"),
    ("int8-sign-flip", "fmqa_device.cuh", "int8 bias flip missing (bytes read as unsigned)",
     "const u32 u = r ^ 0x80808080u;", "const u32 u = r;"),
    ("fp8-mantissa-mask", "fmqa_device.cuh", "fp8 mantissa mask drops the low mantissa bit (sm_80 path)",
     "((hi_bytes >> 1) & 0x3f803f80u)", "((hi_bytes >> 1) & 0x3f003f00u)"),
    ("fp8-sign-mask", "fmqa_device.cuh", "fp8 sign of the upper half lost (sm_80 path)",
     "(hi_bytes & 0x80008000u)", "(hi_bytes & 0x00008000u)"),
    ("q-adjacent-pairs", "fmqa_device.cuh", "Q for adjacent-pair K (K8 = 2) stored in physical order",
     "lo.x = x[0], lo.y = x[2], lo.z = x[4], lo.w = x[6];", "lo.x = x[0], lo.y = x[1], lo.z = x[2], lo.w = x[3];"),
    ("fp8-adjacent-native", "fmqa_device.cuh", "native fp8 K read as (b0, b2) pairs though Q expects adjacent ones",
     "const u32 s = ADJ ? r : prmt(r, 0u, 0x3120u);", "const u32 s = prmt(r, 0u, 0x3120u);"),
    ("int8-adjacent", "fmqa_device.cuh", "int8 K adjacent pairs built as (b0, b2)",
     "ADJ ? 0x5150u : 0x5250u", "ADJ ? 0x5250u : 0x5250u"),
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
    ("softcap-tanh", "fmqa_device.cuh", "soft-cap tanh off by a factor in its exponential",
     "return 1.0f - 2.0f / (ex2(u) + 1.0f);", "return 1.0f - 2.0f / (ex2(0.5f * u) + 1.0f);"),
    ("sink-lse", "fmqa_device.cuh", "LSE leaves the learned sink out of its log",
     "lse2 = den > 0.0f ? base + __log2f(den) : neg_inf();",
     "lse2 = den > 0.0f ? base + __log2f(l * a) : neg_inf();"),
    ("quad-max-lane", "fmqa_device.cuh", "quad max shuffles across quads (xor 4 for 2)",
     "return fmaxf(x, shfl_xor(x, 2));", "return fmaxf(x, shfl_xor(x, 4));"),
    ("quad-sum-own", "fmqa_device.cuh", "quad sum drops the lane's own value",
     "x += shfl_xor(x, 1);", "x = shfl_xor(x, 1);"),
    # --- decode.cuh: pipeline, barriers
    ("missing-barrier-loop", "decode.cuh", "__syncthreads deleted in the main loop",
     "__syncthreads(); /* tile `it` visible to all; tile it-1's stage is free */", ""),
    ("missing-barrier-merge", "decode.cuh", "__syncthreads deleted before the cross-warp merge",
     "    consumers_sync();\n    if (nw > 0) return;", "    if (nw > 0) return;"),
    ("wait-group-depth", "decode.cuh", "cp.async.wait_group one group too shallow",
     "cp_async_wait<STAGES - 2>();", "cp_async_wait<STAGES - 1>();"),
    # --- decode.cuh: addressing
    ("v-scale-k-strides", "decode.cuh", "V scales addressed with K's strides",
     "p.v_scale + o.v + hk * p.vs_sh", "p.v_scale + o.k + hk * p.ks_sh"),
    ("v-head-k-stride", "decode.cuh", "V head offset with K's head stride",
     "(outer * p.v_sb + hk * p.v_sh)", "(outer * p.v_sb + hk * p.k_sh)"),
    ("v-token-k-stride", "decode.cuh", "V token offset with K's token stride",
     "return {p.k_st * EB, p.v_st * EB};", "return {p.k_st * EB, p.k_st * EB};"),
    ("v-page-k-stride", "decode.cuh", "paged V: page offset with K's page stride",
     "v = page * p.v_sb + in * p.v_st;", "v = page * p.k_sb + in * p.v_st;"),
    ("v-scale-token-k-stride", "decode.cuh", "V scales' token offset with K's scale token stride",
     "outer * p.vs_sb + in * p.vs_st}", "outer * p.vs_sb + in * p.ks_st}"),
    ("oob-page-table-scales", "decode.cuh", "8-bit scales: page-table read for rows past the end (value unused)",
     "        else if (ok)\n            src = scale_of(", "        else\n            src = scale_of("),
    ("oob-page-table", "decode.cuh", "page-table read for rows past the end (value unused)",
     "kv_row(p, base, b, ok ? slot_of(p, s, pos_of(s, v + k)) : 0)",
     "kv_row(p, base, b, slot_of(p, s, pos_of(s, v + k)))"),
    ("tree-mask-padding-row", "decode.cuh", "padding rows read the tree mask past the sequence",
     "const int t = min(r / GROUP, Q_TOKENS - 1);", "const int t = r / GROUP;"),
    ("k-scale-column", "decode.cuh", "K scale of the neighbouring token",
     "p.sm_scale_log2 * KV_FOLD * kscale[col]", "p.sm_scale_log2 * KV_FOLD * kscale[col ^ 1]"),
    ("q-phys-col", "fmqa_device.cuh", "8-bit Q permutation takes the odd halves first",
     "lo.x = prmt(x[0], x[1], 0x5410u)", "lo.x = prmt(x[0], x[1], 0x7632u)"),
    ("q-second-half", "fmqa_device.cuh", "Q staging: a chunk's second 16-byte load repeats the first",
     "ld_nc_v4(w[k][1], q + 16 * (i % CH) + 8);", "ld_nc_v4(w[k][1], q + 16 * (i % CH));"),
    ("o-col-8bit", "fmqa_device.cuh", "8-bit O column drops the odd d-tile offset",
     "16 * (nt >> 1) + 2 * u + (nt & 1)", "16 * (nt >> 1) + 2 * u"),
    # --- decode.cuh: masks, windows, softmax
    ("window-edge", "fmqa_seq.cuh", "window edge off by one in visible()",
     "ok = ok && (j > ri.qpos - p.window || j < p.sink_tokens)",
     "ok = ok && (j >= ri.qpos - p.window || j < p.sink_tokens)"),
    ("sink-edge", "fmqa_seq.cuh", "sink edge off by one in visible()",
     "ok = ok && (j > ri.qpos - p.window || j < p.sink_tokens)",
     "ok = ok && (j > ri.qpos - p.window || j <= p.sink_tokens)"),
    ("causal-edge", "fmqa_seq.cuh", "causal mask excludes the diagonal",
     "if (CAUSAL) ok = ok && j <= ri.qpos;", "if (CAUSAL) ok = ok && j < ri.qpos;"),
    ("tile-mask-window", "fmqa_seq.cuh", "tile_needs_mask: window edge off by one",
     "pos_of(s, vf) <= s.kv_len - 1 - p.window", "pos_of(s, vf) < s.kv_len - 1 - p.window"),
    ("tile-mask-tree", "fmqa_seq.cuh", "tile_needs_mask: a tile ending at the first draft skips the tree mask",
     "pos_of(s, v_last) >= s.first_draft + (TREE ? 0 : 1)", "pos_of(s, v_last) >= s.first_draft + 1"),
    ("clean-tiles-tree", "fmqa_seq.cuh", "clean_tiles: a tile ending at the first draft counts as clean under a tree mask",
     "lim = min(lim, s.first_draft + (TREE ? 0 : 1));", "lim = min(lim, s.first_draft + 1);"),
    ("clean-tiles-causal", "fmqa_seq.cuh", "clean_tiles: a causal tile ending one past the first draft counts as clean",
     "lim = min(lim, s.first_draft + (TREE ? 0 : 1));", "lim = min(lim, s.first_draft + (TREE ? 0 : 2));"),
    ("window-lo-last-token", "fmqa_seq.cuh", "window start from the last query token, not the first",
     "s.lo = s.first_draft - p.window + 1;", "s.lo = s.kv_len - p.window;"),
    ("tile-mask-causal", "fmqa_seq.cuh", "tile_needs_mask: a causal tile ending one past the first draft skips the mask",
     "pos_of(s, v_last) >= s.first_draft + (TREE ? 0 : 1)", "pos_of(s, v_last) >= s.first_draft + (TREE ? 0 : 2)"),
    ("tile-mask-sinks", "fmqa_seq.cuh", "tile_needs_mask: the window part's first column taken one late",
     "const int vf = max(v0, s.s0);", "const int vf = max(v0, s.s0 + 1);"),
    ("window-lo", "fmqa_seq.cuh", "window start one position late",
     "s.first_draft - p.window + 1;", "s.first_draft - p.window + 2;"),
    ("ring-wrap", "fmqa_seq.cuh", "ring slot wraps one slot late",
     "slot >= p.sink_tokens + p.ring_period ? slot - p.ring_period : slot",
     "slot > p.sink_tokens + p.ring_period ? slot - p.ring_period : slot"),
    ("ring-period-lo", "fmqa_seq.cuh", "ring window start ignores the draft slots",
     "if (RING) s.lo = max(s.lo, s.kv_len - p.ring_period);",
     "if (RING) s.lo = max(s.lo, s.kv_len - p.window);"),
    ("sink-in-partials", "decode.cuh", "learned sink added to every split's partial too",
     "p.sinks && slot < 0 ? p.sinks[head] * LOG2E", "p.sinks ? p.sinks[head] * LOG2E"),
    ("sink-not-combined", "decode.cuh", "a segment not split leaves the learned sink out",
     "const float s2 = p.sinks && slot < 0 ? p.sinks[head] * LOG2E : neg_inf();",
     "const float s2 = neg_inf();"),
    ("sinks-overlap", "fmqa_seq.cuh", "sinks not clipped to the window start",
     "s.s0 = min(p.sink_tokens, s.lo);", "s.s0 = p.sink_tokens;"),
    ("tile-end-bound", "decode.cuh", "masked tile keeps the column at v_end",
     "if (v >= v_end || !visible(p, s, ri[i][h], pos_of(s, v)))",
     "if (v > v_end || !visible(p, s, ri[i][h], pos_of(s, v)))"),
    ("missing-l-rescale", "decode.cuh", "running sum not rescaled when the max grows",
     "                st[i].l[h] *= alpha;\n", ""),
    ("combine-last-split", "fmqa_combine.cuh", "combine skips the last partial",
     "k = s0 + u * groups < n;", "k = s0 + u * groups < n - 1;"),
    ("lse-base", "decode.cuh", "LSE of an unsplit segment written in base 2",
     "(lane & 3) == 0) p.lse[row] = lse2 * 0.69314718055994531f;", "(lane & 3) == 0) p.lse[row] = lse2;"),
    ("lse-base-combine", "fmqa_sched.cuh", "LSE of a split segment (the combine's) written in base 2",
     "if (LSE) p.lse[row] = lse2 * 0.69314718055994531f;", "if (LSE) p.lse[row] = lse2;"),
    # --- fmqa_sched.cuh: the persistent schedule (decode and mla_decode)
    ("sched-cta-of", "fmqa_sched.cuh", "CTA of a unit rounded as floor(x P / U) (off at range starts)",
     "return ((x + 1) * gridDim.x - 1) / total;", "return x * gridDim.x / total;"),
    ("sched-slot", "fmqa_sched.cuh", "piece slot by CTA only (segments share slots)",
     "INVARIANT ? u : blockIdx.x + j;", "INVARIANT ? u : blockIdx.x + 0 * j;"),
    ("sched-pieces", "fmqa_sched.cuh", "a split segment's last piece left out of its count",
     "- blockIdx.x + 1);", "- blockIdx.x);"),
    ("sched-empty-piece", "fmqa_sched.cuh", "an empty range inside a segment writes no (empty) piece",
     "if (k1 == k0 && k0 == 0) return;", "if (k1 == k0) return;"),
    ("sched-scan-owner", "fmqa_sched.cuh", "the start's sequence found with <= (one unit late)",
     "incl - n <= lo && lo < incl", "incl - n < lo && lo <= incl"),
    ("sched-piece-end", "fmqa_sched.cuh", "a piece ends one position early",
     "min(s.nvirt, k1 * su.per), slot);", "min(s.nvirt, k1 * su.per - 1), slot);"),
    # --- decode.cuh: m-tiles (M_TILES), fragments read once, K bias
    ("mt-q-base", "decode.cuh", "every m-tile reads the Q rows of the first",
     "ldsm_x4(a[i], q_base + i * 16 * QRB + kc * 32);", "ldsm_x4(a[i], q_base + kc * 32);"),
    ("mt-row-info", "decode.cuh", "row of an m-tile taken as warp row group + m-tile",
     "const int r = rb * ROWS + (mw * MT + i) * 16 + (lane >> 2) + 8 * h;",
     "const int r = rb * ROWS + (mw + i) * 16 + (lane >> 2) + 8 * h;"),
    ("mt-store-rows", "decode.cuh", "m-tile stored at the rows of the warp's first",
     "store_rows(p, b, hk, rb, mw * MT + i, slot, st[i]);", "store_rows(p, b, hk, rb, mw * MT, slot, st[i]);"),
    ("mt-merge-buffer", "decode.cuh", "m-tiles of a warp share one merge buffer",
     "merge_warps(stages, mw * MT + i, nw, st[i]);", "merge_warps(stages, mw, nw, st[i]);"),
    ("mt-vote", "decode.cuh", "rescale vote sees only the last row's maximum",
     "moved = moved || m_new != m_old[i][h];", "moved = m_new != m_old[i][h];"),
    ("k-frag-pairs", "decode.cuh", "16-bit K n-tiles take each other's second half",
     "bf[0] = r[0], bf[1] = r[2], bf[2] = r[1], bf[3] = r[3];",
     "bf[0] = r[0], bf[1] = r[1], bf[2] = r[2], bf[3] = r[3];"),
    ("v-frag-8bit", "decode.cuh", "8-bit V d-tiles swapped (even/odd pairs)",
     "kv8x4_to_pairs<V_BIAS, 0>(v8[2 * (j % 2)], bf[0], bf[2]);",
     "kv8x4_to_pairs<V_BIAS, 0>(v8[2 * (j % 2)], bf[2], bf[0]);"),
    ("empty-row-base", "decode.cuh", "running max starts at -inf: a row that sees nothing yet subtracts -inf (NaN)",
     "st[i].m[0] = st[i].m[1] = -3.402823466e38f;", "st[i].m[0] = st[i].m[1] = neg_inf();"),
    ("k-bias-start", "decode.cuh", "int8 K bias: S starts at 0, not -1152 * sum(Q)",
     "sacc[i][nt][e] = K_BIAS ? st[i].s0[e] : 0.0f;", "sacc[i][nt][e] = 0.0f;"),
    ("k-bias-row", "decode.cuh", "int8 K bias of row g + 8 taken from row g",
     "st[i].s0[e] = acc[e];", "st[i].s0[e] = acc[e & 1];"),
    # --- decode.cuh: the int8 V offset (V_BIAS) and the 8-bit loop's layout (issue 19, dec8)
    ("v-bias-rescale", "decode.cuh", "int8 V offset: its correction is not rescaled when a row maximum moves",
     "                if (V_BIAS) st[i].vc[2 * h] *= alpha;\n", ""),
    ("v-bias-constant", "decode.cuh", "int8 V offset: correction by 1024 instead of 1152",
     "mma16816<0>(st[i].vc, a[i], INT8_F16_BIAS, INT8_F16_BIAS);",
     "mma16816<0>(st[i].vc, a[i], 0x64006400u, 0x64006400u);"),
    ("v-bias-row", "decode.cuh", "int8 V offset: row g + 8 corrected with row g's sum",
     "st.o[nt][e] -= st.vc[e & 2];", "st.o[nt][e] -= st.vc[0];"),
    ("v-bias-missing", "decode.cuh", "int8 V offset: never subtracted",
     "        if (V_BIAS) v_unbias(st[i]);\n", ""),
    ("scale-entry-tensor", "decode.cuh", "spread 8-bit scale copies: entry RUN copies a K scale",
     "    t = e >= RUN;", "    t = e > RUN;"),
    ("scale-step-v", "decode.cuh", "spread 8-bit scale copies: V scales move on by K's token stride",
     "a.ss[k] = BLOCK_N * (t ? p.vs_st : p.ks_st);", "a.ss[k] = BLOCK_N * p.ks_st;"),
    ("scale-run-stride", "decode.cuh", "spread 8-bit scale copies: a run's V scales stepped by K's stride",
     "+ row * (t ? p.vs_st : p.ks_st)", "+ row * p.ks_st"),
    ("stage-after-mask", "decode.cuh", "the stage after the last wraps to stage STAGES, not 0",
     "(st + 1) & (STAGES - 1)", "(st + 1) & STAGES"),
    ("k-bias-barrier", "decode.cuh", "int8 K bias read before Q is published",
     "    if (BULK || K_BIAS) consumers_sync();", "    if (BULK) consumers_sync();"),
    ("mask-block", "decode.cuh", "masked tiles skip the mask",
     "    if (masked) {\n", "    if (false) {\n"),
    # --- decode.cuh: the sm_90 bulk pipeline (BULK = 1)
    ("bulk-full-wait", "decode.cuh", "bulk: consumers read a stage without waiting on its full mbarrier",
     "        mbar_wait(bar_full(smem, ring.stage), ring.phase); /* tile `it` has landed */\n", ""),
    ("bulk-tx-short", "decode.cuh", "bulk: transaction count of K rows only",
     "mbar_arrive_expect_tx(full, 2u * D * EB * n);", "mbar_arrive_expect_tx(full, D * EB * n);"),
    ("bulk-tx-long", "decode.cuh", "bulk: transaction count 16 bytes too many",
     "mbar_arrive_expect_tx(full, 2u * D * EB * n);", "mbar_arrive_expect_tx(full, 2u * D * EB * n + 16);"),
    ("bulk-empty-wait", "decode.cuh", "bulk: producer refills a stage without waiting for its release",
     "        if (r.n >= STAGES) mbar_wait(bar_empty(smem, r.stage), r.phase ^ 1u); /* its previous tile was read */\n",
     ""),
    ("bulk-empty-parity", "decode.cuh", "bulk: producer waits on the empty mbarrier with the current parity",
     "mbar_wait(bar_empty(smem, r.stage), r.phase ^ 1u)", "mbar_wait(bar_empty(smem, r.stage), r.phase)"),
    ("bulk-empty-count", "decode.cuh", "bulk: a stage counts as released once one warp is done",
     "mbar_init(bar_empty(smem, i), NTHREADS);", "mbar_init(bar_empty(smem, i), 32);"),
    ("bulk-full-count", "decode.cuh", "bulk: full mbarrier leaves the copying lane's expect_tx arrival out",
     "mbar_init(bar_full(smem, i), 32 + 1);", "mbar_init(bar_full(smem, i), 32);"),
    ("bulk-q-barrier", "decode.cuh", "bulk: Q read before the other warps' rows are published",
     "    if (BULK || K_BIAS) consumers_sync();", "    if (K_BIAS) consumers_sync();"),
    ("bulk-v-from-k", "decode.cuh", "bulk: V row copied from K's address",
     "bulk_g2s(dst + (BLOCK_N + r) * RB, a.v, D * EB, full);", "bulk_g2s(dst + (BLOCK_N + r) * RB, a.k, D * EB, full);"),
    ("bulk-run-page", "decode.cuh", "bulk: a run of rows crosses a page end",
     "    if (PAGED) n = min(n, PS - (slot & (PS - 1)));\n", ""),
    ("bulk-run-ring", "decode.cuh", "bulk: a run of rows crosses the ring's wrap",
     "    if (RING) n = min(n, p.sink_tokens + p.ring_period - slot);\n", ""),
    ("bulk-run-seam", "decode.cuh", "bulk: a run of rows crosses from the sinks into the window",
     "    if (WINDOW && v < s.s0) n = min(n, s.s0 - v);\n", ""),
    ("bulk-zero-v", "decode.cuh", "bulk: rows past the piece's end zero K but not V",
     "((uint4 *)kr)[c] = z, ((uint4 *)vr)[c] = z;", "((uint4 *)kr)[c] = z;"),
    ("bulk-v-scale", "decode.cuh", "bulk: V scale stored from K's",
     "sc[BLOCK_N + row] = vsc[k];", "sc[BLOCK_N + row] = ksc[k];"),
    # --- fmqa_ptx.cuh
    ("fp8-cvt-half", "fmqa_device.cuh", "fp8 native: the upper pair converted from the lower half",
     "p13 = cvt_f16x2_e4m3x2<1>(s);", "p13 = cvt_f16x2_e4m3x2<0>(s);"),
    # --- decode.lua
    ("lua-merge-mtiles", "decode.lua", "shared_bytes: merge buffer for one m-tile a warp",
     "local merge = c.WARPS_M * c.M_TILES * (c.WARPS_N - 1)", "local merge = c.WARPS_M * (c.WARPS_N - 1)"),
    ("lua-q-rows", "decode.lua", "shared_bytes: Q rows of one m-tile a warp",
     "local q = cta_rows(c) * (2 * d + 16)", "local q = 16 * c.WARPS_M * (2 * d + 16)"),
    ("lua-scale-smem", "decode.lua", "shared_bytes forgets the V scales",
     "(eb == 1 and 8 * c.BLOCK_N or 0)", "(eb == 1 and 4 * c.BLOCK_N or 0)"),
    ("lua-vbias-bound", "decode.lua", "VBIAS = 1 allowed up to 4096 tokens a warp-piece, not 256",
     "local VBIAS_MAX_TOKENS = 256 ", "local VBIAS_MAX_TOKENS = 4096"),
    ("lua-workspace", "lib/sched.lua", "workspace without the LSE column",
     "plan.ws_meta_offset = plan.ws_lse_offset + w.slots * s.rows_cta * 4",
     "plan.ws_meta_offset = plan.ws_lse_offset"),
    ("lua-slots", "lib/sched.lua", "one workspace slot too few",
     "and ctas + segs - 1 or 0", "and ctas + segs - 2 or 0"),
    ("lua-row-blocks", "lib/sched.lua", "row blocks rounded down",
     "local segs = p.batch * p.num_kv_heads * ceil_div(rows, s.rows_cta)",
     "local segs = p.batch * p.num_kv_heads * (rows // s.rows_cta)"),
    ("lua-combine-smem", "lib/combine.lua", "combine shared bytes half the column groups",
     "return 4 * 4 + 16 * 128 * 9 + 4 * 128 * 8", "return 4 * 4 + 16 * 128 * 8 + 4 * 128 * 8"),
    # --- mla_decode.cuh / mla_decode.lua
    ("mla-missing-max-barrier", "mla_decode.cuh", "no barrier between the slices' maxima and their use",
     "    __syncthreads(); /* every slice's maximum is in red */\n", ""),
    ("mla-missing-p-barrier", "mla_decode.cuh", "no barrier between writing P and P V",
     "        __syncthreads(); /* P complete */\n", ""),
    ("mla-max-one-slice", "mla_decode.cuh", "running max from the warp's own token slice only",
     "for (int k = 0; k < WARPS_D; ++k) m_new = fmaxf", "for (int k = dw; k <= dw; ++k) m_new = fmaxf"),
    ("mla-sum-one-slice", "mla_decode.cuh", "row sum of one token slice only",
     "for (int k = 0; k < WARPS_D; ++k) l +=", "for (int k = 0; k < 1; ++k) l +="),
    ("mla-mask-virtual", "mla_decode.cuh", "mask tests the virtual index, not the position (window)",
     "!visible(p, s, ri[h], pos_of(s, v0 + col))", "!visible(p, s, ri[h], v0 + col)"),
    ("mla-row-qpos", "mla_decode.cuh", "row h = 1 takes the query position of row h = 0",
     "min((rb * ROWS + mw * 16 + (lane >> 2) + 8 * h) / HEADS", "min((rb * ROWS + mw * 16 + (lane >> 2)) / HEADS"),
    ("mla-sink-in-partials", "mla_decode.cuh", "learned sink added to every split's partial too",
     "p.sinks && slot < 0 ? p.sinks[head] * LOG2E", "p.sinks ? p.sinks[head] * LOG2E"),
    ("sched-sink-not-combined", "fmqa_sched.cuh", "combine leaves the learned sink out",
     "const float sink2 = p.sinks ? p.sinks[h] * LOG2E : neg_inf();", "const float sink2 = neg_inf();"),
    ("mla-copy-runs-linear", "mla_decode.cuh", "copy runs step linearly across seams, wraps and pages",
     "if ((FULL || v < v_end) && run_linear(p, s, v, RUN, first))", "if (FULL || v < v_end)"),
    ("mla-scale-slot", "mla_decode.cuh", "fp8 scale read at the position, not its ring slot",
     "row_offset(p, b, slot_of(p, s, pos_of(s, v0 + row)), p.ks_sb", "row_offset(p, b, pos_of(s, v0 + row), p.ks_sb"),
    ("mla-scale-column", "mla_decode.cuh", "fp8: P's odd column takes the even token's scale",
     "s1 = Q8 ? KV_FOLD * scale[col + 1]", "s1 = Q8 ? KV_FOLD * scale[col]"),
    ("mla-page-index", "mla_decode.cuh", "page index of the next position",
     "pi = j / PS;", "pi = (j + 1) / PS;"),
    ("mla-o-columns", "mla_decode.cuh", "every warp stores to the first columns",
     "head * p.o_sh + dw * CW;", "head * p.o_sh;"),
    ("mla-missing-l-rescale", "mla_decode.cuh", "running sum not rescaled when the max grows",
     "            st.l[h] *= alpha;\n", ""),
    ("mla-copy-runs-ignore-pages", "mla_decode.cuh", "a run of copied rows crosses a page",
     "constexpr int RUN = PAGED && PS < PER ? PS : PER;", "constexpr int RUN = PER;"),
    ("mla-copy-columns", "mla_decode.cuh", "64 threads copy only the first 64 chunks of a row",
     "constexpr int CP = (CPR + NTHREADS - 1) / NTHREADS;", "constexpr int CP = 1;"),
    ("mla-lua-scale-smem", "mla_decode.lua", "shared_bytes forgets the fp8 scales",
     "(eb == 1 and 4 * c.BLOCK_N or 0)", "0"),
    # --- prefill.cuh: pipeline, rows, tiles
    ("prefill-missing-barrier", "prefill.cuh", "__syncthreads deleted in the main loop",
     "__syncthreads(); /* tile `it` visible to all; tile it-1's stage is free */", ""),
    ("prefill-wait-depth", "prefill.cuh", "cp.async.wait_group one group too shallow",
     "cp_async_wait<STAGES - 2>();", "cp_async_wait<STAGES - 1>();"),
    ("prefill-packed-row", "prefill.cuh", "new-token K/V rows not offset by cu_seqlens_q",
     "return (long long)(s.q0 + j) * st;", "return (long long)j * st;"),
    ("prefill-q-row", "prefill.cuh", "Q rows not offset by cu_seqlens_q",
     "(long long)(s.q0 + t) * p.q_st", "(long long)t * p.q_st"),
    ("prefill-lse-row", "prefill.cuh", "LSE rows not offset by cu_seqlens_q",
     "p.lse[(long long)(s.q0 + t) * p.num_q_heads + head]", "p.lse[(long long)t * p.num_q_heads + head]"),
    ("prefill-first-pos", "prefill.cuh", "new tokens one position early in the cache",
     "s.first = s.kv_len - s.tq;", "s.first = s.kv_len - s.tq - 1;"),
    ("prefill-store-bound", "prefill.cuh", "a padding row past the sequence is stored",
     "if (r >= m) continue;", "if (r > m) continue;"),
    ("prefill-v-k-stride", "prefill.cuh", "V rows addressed with K's token stride",
     "row_offset(p, s, b, j, p.v_sb, p.v_st)", "row_offset(p, s, b, j, p.v_sb, p.k_st)"),
    ("prefill-v-scale-k-strides", "prefill.cuh", "V scales addressed with K's strides",
     "row_offset(p, s, b, j, p.vs_sb, p.vs_st) + hk * p.vs_sh", "row_offset(p, s, b, j, p.ks_sb, p.ks_st) + hk * p.ks_sh"),
    ("prefill-k-scale-column", "prefill.cuh", "K scale of the neighbouring position",
     "p.sm_scale_log2 * KV_FOLD * kscale[col]", "p.sm_scale_log2 * KV_FOLD * kscale[col ^ 1]"),
    ("prefill-end-causal", "prefill.cuh", "the last row's own position is never loaded",
     "t.end = CAUSAL ? t.p_hi + 1 : s.kv_len;", "t.end = CAUSAL ? t.p_hi : s.kv_len;"),
    ("prefill-p-hi", "prefill.cuh", "the CTA's last token taken one too early",
     "min((r1 - 1) / GROUP, s.tq - 1)", "min((r1 - 1) / GROUP, s.tq - 2)"),
    ("prefill-sink-tiles", "prefill.cuh", "sink tiles rounded down",
     "t.n_sink = (s0 + BLOCK_N - 1) / BLOCK_N;", "t.n_sink = s0 / BLOCK_N;"),
    ("prefill-window-lo", "prefill.cuh", "window start one position late",
     "lo = max(t.p_lo - p.window + 1, 0);", "lo = max(t.p_lo - p.window + 2, 0);"),
    # --- prefill.cuh: masks, softmax
    ("prefill-causal-edge", "prefill.cuh", "causal mask excludes the diagonal",
     "bool ok = CAUSAL ? j <= qpos[mt][h] : j < s.kv_len;", "bool ok = CAUSAL ? j < qpos[mt][h] : j < s.kv_len;"),
    ("prefill-noncausal-end", "prefill.cuh", "without causality, the zero row past the sequence is seen",
     "bool ok = CAUSAL ? j <= qpos[mt][h] : j < s.kv_len;", "bool ok = CAUSAL ? j <= qpos[mt][h] : j <= s.kv_len;"),
    ("prefill-window-edge", "prefill.cuh", "window edge off by one",
     "(j > qpos[mt][h] - p.window || j < p.sink_tokens)", "(j >= qpos[mt][h] - p.window || j < p.sink_tokens)"),
    ("prefill-sink-edge", "prefill.cuh", "sink edge off by one",
     "(j > qpos[mt][h] - p.window || j < p.sink_tokens)", "(j > qpos[mt][h] - p.window || j <= p.sink_tokens)"),
    ("prefill-tile-mask-causal", "prefill.cuh", "tile_needs_mask judges causality by the last row",
     "if (j0 + BLOCK_N > (CAUSAL ? t.p_lo + 1 : t.end)) return true;",
     "if (j0 + BLOCK_N > (CAUSAL ? t.p_hi + 1 : t.end)) return true;"),
    ("prefill-tile-mask-window", "prefill.cuh", "tile_needs_mask: window edge off by one",
     "return WINDOW && j0 <= t.p_hi - p.window;", "return WINDOW && j0 < t.p_hi - p.window;"),
    ("prefill-missing-l-rescale", "prefill.cuh", "running sum not rescaled when the max grows",
     "            st.l[mt][h] *= alpha;\n", ""),
    ("prefill-lse-base", "prefill.cuh", "LSE written in base 2",
     "+ head] = lse2 * 0.69314718055994531f;", "+ head] = lse2;"),
    # --- prefill.lua
    ("prefill-lua-scale-smem", "prefill.lua", "shared_bytes forgets the V scales",
     "(eb == 1 and 8 * c.BLOCK_N or 0)", "(eb == 1 and 4 * c.BLOCK_N or 0)"),
    ("prefill-lua-row-blocks", "prefill.lua", "row blocks rounded down",
     "grid = { ceil_div(rows(p), c.BLOCK_M)", "grid = { rows(p) // c.BLOCK_M"),
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
    # --- prefill_sm90.cuh / fmqa_sm90.cuh: the Hopper pipeline
    ("sm90-empty-wait", "prefill_sm90.cuh", "producer refills a stage without waiting for its release",
     "if (it >= STAGES) mbar_wait(L.empty(s), (u32)((it / STAGES - 1) & 1));", "(void)s;"),
    ("sm90-v-parity", "prefill_sm90.cuh", "V waited with the other phase parity",
     "mbar_wait(L.v_full(s), phase(it));", "mbar_wait(L.v_full(s), phase(it) ^ 1);"),
    ("sm90-no-rescale", "prefill_sm90.cuh", "O not rescaled to the new row maximum (overlapped softmax)",
     "                rescale(O, corr);\n#pragma unroll", "                (void)corr;\n#pragma unroll"),
    ("sm90-no-rescale-serial", "prefill_sm90.cuh", "O not rescaled to the new row maximum (serial softmax)",
     "A, corr);\n                rescale(O, corr);", "A, corr);\n                (void)corr;"),
    ("sm90-causal-edge", "prefill_sm90.cuh", "causal mask lets a row see the next position",
     "(CAUSAL && col > row)", "(CAUSAL && col > row + 1)"),
    ("sm90-kv-head", "prefill_sm90.cuh", "kv head of q head h taken as h % G instead of h / G",
     "w.kvh = blockIdx.y / GROUP", "w.kvh = blockIdx.y % GROUP % p.num_kv_heads"),
    ("sm90-desc-sbo", "fmqa_sm90.cuh", "K-major descriptor strides 8-row groups by 4 rows",
     "return wgmma_desc(tile + (u32)((ks / per) * rows * w + (ks % per) * 32), 16, 8 * w, w);",
     "return wgmma_desc(tile + (u32)((ks / per) * rows * w + (ks % per) * 32), 16, 4 * w, w);"),
    ("sm90-vdesc-lbo", "fmqa_sm90.cuh", "MN-major descriptor's chunk stride off by a row",
     "return wgmma_desc(tile + (u32)(ks * 16 * w), (u32)(rows * w), 8 * w, w);",
     "return wgmma_desc(tile + (u32)(ks * 16 * w), (u32)((rows - 1) * w), 8 * w, w);"),
    ("append-fixed-scale", "append.cuh", "per-head/per-tensor scales ignored: the row's own computed and written",
     "if (q8 && FIXED_SCALE) {", "if (false) {"),
    ("lua-fixed-scale", "append.lua", "append.lua: fixed scales never selected",
     "FIXED_SCALE = (p.kv_scale ~= \"token_head\") and 1 or 0,", "FIXED_SCALE = 0,"),
    ("append-latent-rot-front", "append.cuh", "latent rows rotate their first elements, not the rope part",
     "#define K_ROT_AT (LATENT ? HEAD_DIM_V : 0)", "#define K_ROT_AT 0"),
    ("append-latent-pe-ignored", "append.cuh", "rope part read from the k_new row although k_pe_new is given",
     "const unsigned short *rot = LATENT && p.k_pe_new != nullptr",
     "const unsigned short *rot = false && p.k_pe_new != nullptr"),
    ("append-partial-freq", "append.cuh", "partial rotary frequencies over the head dim, not the rotated part",
     "exp(-(double)(2 * i) / ROPE_DIM * log_theta)", "exp(-(double)(2 * i) / HEAD_DIM * log_theta)"),
    ("append-table-sin-sign", "append.cuh", "table angles' sin read with the wrong sign",
     "s = rs.cs[half_r + i];", "s = -rs.cs[half_r + i];"),
    ("append-table-past-end", "append.cuh", "the token at the table's length is written",
     "rpos >= p.rope_cs_len", "rpos > p.rope_cs_len"),
    ("append-rope-pos", "append.cuh", "a compacted cache's token rotated at its slot, not rope_pos",
     "const int rpos = p.rope_pos ? p.rope_pos[b] + t : pos;", "const int rpos = pos;"),
    # --- decode scores (decode_scores.cuh, decode.cuh's hooks)
    ("scores-lse-head", "decode_scores.cuh", "epilogue reads the LSE of head r % G of KV head 0",
     "p.num_q_heads + hk * GROUP + r % GROUP];", "p.num_q_heads + r % GROUP];"),
    ("scores-past-piece", "decode_scores.cuh", "a piece keeps logits past its end (the next piece's)",
     "if (v < v_end) x[v] = sacc[i][nt][2 * h + e];", "x[v] = sacc[i][nt][2 * h + e];"),
    ("scores-padding-rows", "decode_scores.cuh", "padding rows keep logits (into the next head's rows)",
     "if (sr.r0 + dr >= M) continue;", "(void)dr;"),
    ("scores-ring-slot", "decode_scores.cuh", "a ring position's mass lands on its position, not its slot",
     "hk * p.sc_sh + slot_of(p, s, pos_of(s, v))] += acc;", "hk * p.sc_sh + pos_of(s, v)] += acc;"),
    ("scores-combine-lse", "decode.cuh", "the combine leaves a split row's final LSE out of ws_sl",
     "        if (SCORES) p.ws_sl[row] = lse2; /* decode_scores.cuh */",
     "        (void)row, (void)lse2;"),
    ("scores-overwrite", "decode_scores.cuh", "the epilogue overwrites the caller's scores",
     "pos_of(s, v))] += acc;", "pos_of(s, v))] = acc;"),
    # --- prefill scores (prefill_scores.cuh, prefill.cuh's hooks, prefill.lua)
    ("pscores-window-edge", "prefill.cuh", "the window's first token keeps no LSE (window off by one)",
     "t >= s.tq - p.sc_window) /* prefill_scores.cuh */", "t > s.tq - p.sc_window) /* prefill_scores.cuh */"),
    ("pscores-window-short", "prefill_scores.cuh", "the scores pass leaves the window's first token out",
     "rw0 = max(s.tq - p.sc_window, 0) * GROUP;", "rw0 = max(s.tq - p.sc_window + 1, 0) * GROUP;"),
    ("pscores-running-max", "prefill.cuh", "a window row keeps its running maximum, not its final LSE",
     "p.ws_sl[(long long)(s.q0 + t) * p.num_q_heads + head] = lse2;",
     "p.ws_sl[(long long)(s.q0 + t) * p.num_q_heads + head] = st.m[mt][h];"),
    ("pscores-lse-head", "prefill_scores.cuh", "rows read the LSE of head r % G of KV head 0",
     "p.num_q_heads + hk * GROUP + r % GROUP]", "p.num_q_heads + r % GROUP]"),
    ("pscores-slot", "prefill_scores.cuh", "a position's mass lands on its column in the tile, not its slot",
     "p.scores[b * p.sc_sb + hk * p.sc_sh + j0 + c] += acc[c];", "p.scores[b * p.sc_sb + hk * p.sc_sh + c] += acc[c];"),
    ("pscores-overwrite", "prefill_scores.cuh", "the scores pass overwrites the caller's scores",
     "hk * p.sc_sh + j0 + c] += acc[c];", "hk * p.sc_sh + j0 + c] = acc[c];"),
    ("pscores-sink-tiles", "prefill_scores.cuh", "the sink tiles before a sliding window are skipped",
     "if (!(j0 < tr.n_sink * BLOCK_N || (j0 >= tr.w0", "if (!((j0 >= tr.w0"),
    ("pscores-lane-sum", "prefill_scores.cuh", "the column sum misses the upper half of the warp's rows",
     "            v += shfl_xor(v, 16);\n", ""),
    ("pscores-lua-workspace", "prefill.lua", "the LSE workspace sized for one head a row",
     "plan.workspace = p.batch * p.q_tokens * p.num_q_heads * 4", "plan.workspace = p.batch * p.q_tokens * 4"),
    # --- compress.cuh
    ("compress-tie-count", "compress.cuh", "one tie too many kept",
     "(tie && tie_rank < ties)", "(tie && tie_rank <= ties)"),
    ("compress-move-barrier", "compress.cuh", "barrier between a chunk's loads and stores deleted",
     "__syncthreads(); /* every source of this chunk is read */", ""),
    ("compress-scales-stay", "compress.cuh", "8-bit scales not moved with their rows",
     "if (EB == 1 && src != d) {", "if (false) {"),
    ("compress-free-floor", "compress.cuh", "released pages start at floor(keep / PS): a kept page listed",
     "const int first = (keep + PS - 1) / PS,", "const int first = keep / PS,"),
    ("compress-pool-radius", "compress.cuh", "pooling window one slot short on the right",
     "hi = min(j + p.pool, n - 1);", "hi = min(j + p.pool - 1, n - 1);"),
    # --- engines' page tables (fmqa_pages.cuh: decode and MLA decode; append)
    ("csr-last-page-full", "fmqa_pages.cuh", "CSR length takes the last page as full",
     "(n - 1) * PS + min(max(__ldg(p.last_page_len + b), 1), PS)", "n * PS"),
    ("csr-indptr-next", "fmqa_pages.cuh", "CSR pages read from the next sequence's start",
     "__ldg(p.page_indices + __ldg(p.page_indptr + b) + (unsigned)slot / PS)",
     "__ldg(p.page_indices + __ldg(p.page_indptr + b + 1) + (unsigned)slot / PS)"),
    ("append-csr-indptr-zero", "append.cuh", "CSR append assumes page_indptr starts at 0",
     "p.page_indices[p.page_indptr[b] + slot / PAGE_ROWS]",
     "p.page_indices[b * p.pt_stride + slot / PAGE_ROWS]"),
    ("append-slot-skip", "append.cuh", "slot -1 is written, not skipped",
     "if (slot < 0)\n            return false;\n        *blk", "*blk"),
    # --- mla_decode_sm90.cuh / .lua: the seesaw
    ("mla90-no-corr", "mla_decode_sm90.cuh", "WG0's O not brought to the pair's final maximum",
     "for (int i = 0; i < 128; ++i) st.O[i] *= corr[(i % 4) / 2];", "(void)corr;"),
    ("mla90-max-chain", "mla_decode_sm90.cuh", "WG1's maximum ignores WG0's block (m0 not passed on)",
     "m_new[h] = fmaxf(L.xm[st.row[h]], mx[h]);", "m_new[h] = fmaxf(st.m[h], mx[h]);"),
    ("mla90-causal-edge", "mla_decode_sm90.cuh", "causal mask lets a query token see the next position",
     "(CAUSAL && col > first_draft + st.t[h])", "(CAUSAL && col > first_draft + st.t[h] + 1)"),
    ("mla90-swizzle", "mla_decode_sm90.cuh", "latent and Q pieces stored under the 64-byte swizzle",
     "(pc % 8) * 16), 128);", "(pc % 8) * 16), 64);"),
    ("mla90-split-end", "mla_decode_sm90.cuh", "a split reads past a short sequence's end",
     "min(kv_len, v_begin + p.split_tokens);", "v_begin + p.split_tokens;"),
    ("mla90-pipe1-sync", "mla_decode_sm90.cuh", "one stage: the next pair loads over one still being read",
     "if (it > 0) __syncthreads(); /* pair it - 1 read by both warpgroups */", ""),
    ("mla90-fp8-scale", "mla_decode_sm90.cuh", "fp8: even values dequantized without the token's scale",
     "f16_to_f32((u16)(h2 & 0xffff)) * sc,", "f16_to_f32((u16)(h2 & 0xffff)),"),
    ("mla90-lua-smem", "mla_decode_sm90.lua", "shared bytes count one block a stage",
     "local tiles = 2 * (q8 and 1 or c.PIPE) * c.BLOCK_N * dk * 2",
     "local tiles = (q8 and 1 or c.PIPE) * c.BLOCK_N * dk * 2"),
    # --- runtime: prefill_sm90's tensor maps (planted in the source tree)
    ("tmap-v-head-stride", "runtime/rt_tmap.c", "V's tensor map with K's head stride",
     "const long long sh[3] = {p->q_sh, p->k_sh, p->v_sh}",
     "const long long sh[3] = {p->q_sh, p->k_sh, p->k_sh}"),
    ("tmap-q-box", "runtime/rt_tmap.c", "Q's box as tall as a K/V tile",
     "d->box[2] = i == 0 ? 128u : (unsigned)block_n;", "d->box[2] = (unsigned)block_n;"),
    ("tmap-encode-strides", "runtime/rt_tmap.c", "rt_tmap_encode passes the first stride for every dimension",
     "strides[i - 1] = d->strides[i - 1];", "strides[i - 1] = d->strides[0];"),
    ("tmap-rows", "runtime/rt_args.c", "prefill maps span batch x q_tokens rows, not total_q",
     "const long long rows = a->total_q ? a->total_q : (long long)p->batch * p->q_tokens;",
     "const long long rows = (long long)p->batch * p->q_tokens;"),
    # --- runtime: the compressed levels' score schedule (planted in the source tree)
    ("level-step-zero", "runtime/rt_levels.c", "the score buffer zeroed one step into the window",
     "a.zero_scores = phase == first;", "a.zero_scores = phase == first + 1;"),
    ("score-schedule-floor", "runtime/rt_levels.c", "compress_every rounded down: above 3%",
     "int64_t slots = (int64_t)LEVEL_SINKS + recent + heavy + every * p->spec_tokens;",
     "every = every > FMQA_LEVEL_COMPRESS_EVERY ? every - 1 : every;\n"
     "    int64_t slots = (int64_t)LEVEL_SINKS + recent + heavy + every * p->spec_tokens;"),
    ("level-slots-spec", "runtime/rt_levels.c", "a compressed cache without room for the drafts",
     "                (int64_t)p->compress_every * p->spec_tokens;\n    return s",
     "                (int64_t)p->compress_every;\n    return s"),
]

# Which test binaries can see a bug in each file, cheapest first.
TESTS = {
    "fmqa_device.cuh": ["unit_convert_emu", "unit_decode_emu", "unit_append_emu", "unit_mla_decode_emu",
                        "unit_prefill_emu"],
    "fmqa_ptx.cuh": ["unit_convert_emu", "unit_decode_emu", "unit_append_emu", "unit_prefill_emu"],
    "decode.cuh": ["unit_decode_emu", "unit_scores_emu"],
    "decode_scores.cuh": ["unit_scores_emu"],
    "compress.cuh": ["unit_compress_emu"],
    "fmqa_combine.cuh": ["unit_decode_emu", "unit_mla_decode_emu"],
    "fmqa_pages.cuh": ["unit_decode_emu", "unit_mla_decode_emu"],
    "fmqa_seq.cuh": ["unit_decode_emu", "unit_mla_decode_emu"],
    "mla_decode.cuh": ["unit_mla_decode_emu"],
    "mla_decode.lua": ["unit_mla_decode_emu"],
    "decode.lua": ["nvrtc_decode_compile", "unit_decode_emu"],  # the former: vbias_bound
    "lib/combine.lua": ["unit_decode_emu", "unit_mla_decode_emu"],
    "fmqa_sched.cuh": ["unit_decode_emu", "unit_mla_decode_emu"],
    "lib/sched.lua": ["unit_decode_emu", "unit_mla_decode_emu"],
    "prefill.cuh": ["unit_prefill_scores", "unit_prefill_emu"],
    "prefill.lua": ["unit_prefill_scores", "unit_prefill_emu"],
    "prefill_scores.cuh": ["unit_prefill_scores"],
    "append.cuh": ["unit_append_emu", "unit_rope", "unit_mla_append"],
    "append.lua": ["unit_append_emu", "unit_rope", "unit_mla_append"],
    "prefill_sm90.cuh": ["unit_prefill_sm90_emu"],
    "fmqa_sm90.cuh": ["unit_prefill_sm90_emu", "unit_mla_decode_sm90_emu"],
    "mla_decode_sm90.cuh": ["unit_mla_decode_sm90_emu"],
    "mla_decode_sm90.lua": ["unit_mla_decode_sm90_emu"],
    "runtime/rt_tmap.c": ["unit_prefill_sm90_emu"],
    "runtime/rt_args.c": ["unit_prefill_sm90_emu"],
    "runtime/rt_levels.c": ["unit_score_schedule"],
}


def in_tree(fname):
    """A library source (runtime/rt_args.c), mutated in the source tree, not a
    template (decode.cuh, lib/sched.lua: under templates/)."""
    return not os.path.exists(os.path.join(ROOT, "templates", fname))


def source_text(fname):
    with open(os.path.join(ROOT, fname) if in_tree(fname) else
              os.path.join(ROOT, "templates", fname)) as f:
        return f.read()


def stale(mutants):
    """(id, file, count) of each mutant whose old text does not occur exactly once."""
    counts = ((m[0], m[1], source_text(m[1]).count(m[3])) for m in mutants)
    return [c for c in counts if c[2] != 1]


def run_in_tree(build, fname, old, new, timeout):
    """Plants old -> new in the source file, rebuilds its tests, runs them and
    restores the file (whatever happens); the caller rebuilds at the end."""
    path, bins = os.path.join(ROOT, fname), TESTS[fname]
    with open(path) as f:
        text = f.read()
    try:
        with open(path, "w") as f:
            f.write(text.replace(old, new))
        r = subprocess.run(["cmake", "--build", build, "--target"] + bins,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if r.returncode != 0:
            return "uncompiled", "cmake --build"
        return run_tests(build, os.path.join(ROOT, "templates"), bins, timeout)
    finally:
        with open(path, "w") as f:
            f.write(text)


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
    ap.add_argument("--only", default="",
                    help="run the mutants whose id contains this (comma-separated: any of these)")
    ap.add_argument("--list", action="store_true", help="list the mutants and exit")
    ap.add_argument("--check", action="store_true",
                    help="only check that each mutant's text occurs exactly once, and exit")
    ap.add_argument("--markdown", action="store_true", help="print a markdown table at the end")
    ap.add_argument("--timeout", type=int, default=900, help="seconds per test binary")
    a = ap.parse_args()
    mutants = [m for m in MUTANTS if any(o in m[0] for o in a.only.split(","))]
    if a.list:
        for m in mutants:
            print(f"{m[0]:28} {m[1]:16} {m[2]}")
        return 0
    bad = stale(mutants)
    for mid, fname, n in bad:
        print(f"mutate.py: mutant {mid}: its text occurs {n} times in {fname}, not once: "
              "refresh its old text", file=sys.stderr)
    if bad:
        return 2
    if a.check:
        print(f"{len(mutants)} mutants, each text found once")
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
            text = source_text(fname)
            t0 = time.time()
            if in_tree(fname):
                verdict, by = run_in_tree(a.build_dir, fname, old, new, a.timeout)
            else:
                with open(path, "w") as f:
                    f.write(text.replace(old, new))
                verdict, by = run_tests(a.build_dir, tdir, TESTS[fname], a.timeout)
                with open(path, "w") as f:
                    f.write(text)
            if verdict != "uncompiled":
                counted += 1
                caught += verdict == "caught"
            rows.append((mid, fname, what, verdict, by or ""))
            print(f"{mid:28} {verdict:10} {by or '':24} {time.time() - t0:6.0f} s  {what}", flush=True)
    if any(in_tree(m[1]) for m in mutants):  # the restored sources' binaries
        subprocess.run(["cmake", "--build", a.build_dir, "--target"] + bins, check=True,
                       stdout=subprocess.DEVNULL)
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
