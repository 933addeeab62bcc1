/*
 * test_decode_emu.c -- the decode template's real source run on the CPU against
 * the float64 reference, no GPU needed.
 *
 * Each case goes through the same path as fmqa_decode (tests/support/
 * decode_emu.c, shared with the scores and compression tests): the template's Lua
 * (default config, or one with parameters overridden) gives the launch plan,
 * gen_render the source, rt_decode_params the kernel parameters from public
 * fmqa_decode_args; then the rendered source is compiled by the host C++
 * compiler with tests/emu/cuda_emu.h (an emulation of the PTX the kernels use:
 * see there) and each kernel of the plan runs over its grid.  Inputs are fresh
 * random values with every cache row that no position holds (beyond kv_lens,
 * overwritten ring slots, unused pages) and the outputs and workspace filled
 * with NaN, so a stray read or a missing write fails.  The output and LSE are
 * compared with ref_decode.  Without a C++ compiler ($CXX or c++) the test is
 * skipped.
 */
#define _POSIX_C_SOURCE 200809L

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "decode_emu.h"
#include "gen.h"
#include "ref.h"
#include "rt.h"
#include "test_support.h"

/* One case: a problem spec, parameters overriding the default config ("" =
 * default), per-sequence lengths (0 = drawn; lens[0] = -n: sequence b has
 * length kv_len - (batch - 1 - b) % n, so n consecutive lengths put every
 * edge -- first draft, window start, sink end -- at each of n offsets in a
 * tile, and the last sequence fills the cache up to the guard page) and the
 * device preset (NULL: sm_90), and column slices for the combine other than
 * decode.lua's (0 = the plan's): the combine must be right for any slicing,
 * including one that leaves a thread several batches of splits.  An arch
 * "sm_90@3" is the sm_90 preset with 3 SMs (they size the persistent grid).
 * run_case's sinks: learned sink logits, one per query head, drawn from
 * [-4, 8) (those near 8 outweigh every score). */
typedef struct ecase {
    const char *spec;
    const char *config;
    int32_t lens[8];
    const char *arch;
    unsigned combine_slices;
} ecase;

/* Reshapes a case's drawn inputs before the run (the reference sees the same). */
typedef void (*steer_fn)(const fmqa_problem *p, fmqa_emu_inputs *in);

/* Sequence 0 of `from` (same problem but the batch) copied into sequence b of
 * `to`: its length, cache rows (contiguous caches: the same per-sequence
 * layout) and queries. */
static void transplant(const fmqa_problem *p, const fmqa_emu_inputs *from, fmqa_emu_inputs *to, int b)
{
    const size_t ke = fmqa_dtype_size(p->kv_dtype);
    const fmqa_decode_args *f = &from->a;
    fmqa_decode_args *t = &to->a;
    cr_assert_eq(p->flags & FMQA_FLAG_PAGED, 0u);
    to->lens[b] = from->lens[0];
    memcpy((int32_t *)(uintptr_t)t->kv_lens + b, f->kv_lens, sizeof(int32_t));
    memcpy((char *)(uintptr_t)t->k + b * t->k_stride_batch * ke, f->k, f->k_stride_batch * ke);
    memcpy((char *)(uintptr_t)t->v + b * t->v_stride_batch * ke, f->v, f->v_stride_batch * ke);
    if (ke == 1) {
        memcpy((float *)(uintptr_t)t->k_scale + b * t->k_scale_stride_batch, f->k_scale,
               f->k_scale_stride_batch * 4);
        memcpy((float *)(uintptr_t)t->v_scale + b * t->v_scale_stride_batch, f->v_scale,
               f->v_scale_stride_batch * 4);
    }
    memcpy((uint16_t *)(uintptr_t)t->q + b * t->q_stride_batch, f->q, f->q_stride_batch * 2);
}

/* One case: plan, emulated run and comparison with the reference (sinks:
 * learned sink logits or none; steer: NULL or how the inputs are reshaped).  With
 * `donor`, sequence 0 of that earlier run's inputs replaces sequence
 * donor_b of this one's.  The inputs stay in *in for the caller. */
static void run_case_into(const ecase *ec, int sinks, steer_fn steer, const fmqa_emu_inputs *donor, int donor_b,
                          fmqa_emu_inputs *in_out)
{
    fmqa_err err;
    fmqa_problem p;
    cr_assert_eq(gen_problem_parse(ec->spec, &p, &err), FMQA_OK, "%s: %s", ec->spec, err.msg);
    ref_rng r;
    uint64_t seed = fmqa_test_seed(ec->spec);
    ref_rng_seed(&r, seed);
    static fmqa_emu_inputs local;
    fmqa_emu_inputs *in = in_out ? in_out : &local;
    fmqa_emu_inputs_make(&p, ec->lens, sinks, &r, in);
    if (donor)
        transplant(&p, donor, in, donor_b);
    if (steer)
        steer(&p, in);
    char cfg[GEN_CONFIG_TEXT_CAP];
    const char *arch = ec->arch ? ec->arch : "sm_90";
    const int splits = fmqa_emu_decode(&p, ec->config, arch, ec->combine_slices, in, cfg);

    const int64_t rows = (int64_t)p.batch * p.q_tokens * p.num_q_heads, n = rows * p.head_dim_v;
    double *o = malloc(n * sizeof *o), *lse = malloc(rows * sizeof *lse);
    cr_assert_eq(ref_decode(&p, &in->a, in->n_pages, o, lse, &err), FMQA_OK, "%s", err.msg);
    ref_cmp cmp;
    cr_assert_eq(ref_compare(p.out_dtype, in->a.o, o, n, &cmp, &err), FMQA_OK, "%s", err.msg);
    /* Observed: ~3e-4 with f16 operands, ~2.5e-3 with bf16 (P and Q rounded to
     * bf16); a 1% error in one split of two must fail. */
    const double tol = p.out_dtype == FMQA_DTYPE_BF16 || p.kv_dtype == FMQA_DTYPE_BF16 ||
                               p.q_dtype == FMQA_DTYPE_BF16 ? 8e-3 : 1e-3;
    fprintf(stderr, "%s [%s] %s splits %d: o rel_l2 %.2e max %.2e bad %lld (seed %llu)\n", ec->spec,
            cfg, arch, splits, cmp.rel_l2, cmp.max_abs, (long long)cmp.bad,
            (unsigned long long)seed);
    cr_expect(ref_cmp_ok(&cmp, tol, -1), "%s [%s]: o rel_l2 %g, max %g at %lld, %lld bad", ec->spec,
              cfg, cmp.rel_l2, cmp.max_abs, (long long)cmp.worst, (long long)cmp.bad);
    if (p.flags & FMQA_FLAG_LSE) {
        cr_assert_eq(ref_compare(FMQA_DTYPE_F32, in->a.lse, lse, rows, &cmp, &err), FMQA_OK);
        cr_expect(ref_cmp_ok(&cmp, 1e-4, -1), "%s [%s]: lse rel_l2 %g, max %g at %lld, %lld bad",
                  ec->spec, cfg, cmp.rel_l2, cmp.max_abs, (long long)cmp.worst,
                  (long long)cmp.bad);
    }
    free(o);
    free(lse);
}

static void run_case(const ecase *ec, int sinks)
{
    run_case_into(ec, sinks, NULL, NULL, 0, NULL);
}

static void run_all_sinks(const ecase *cases, size_t n, int sinks)
{
    for (size_t i = 0; i < n; i++)
        run_case(&cases[i], sinks);
}

static void run_all(const ecase *cases, size_t n) { run_all_sinks(cases, n, 0); }

#define BASE "op=decode,batch=3,kv_heads=2,"

Test(decode_emu, dense_16bit, .timeout = 900)
{
    static const ecase cases[] = {
        {BASE "heads=8,d=64,kv_len=200,flags=causal", "", {200, 1, 0}, NULL, 0},
        {BASE "heads=4,d=128,kv_len=300,q=bf16,kv=bf16,out=bf16,flags=causal|lse", "SPLITS=4", {300, 70, 0}, NULL, 0},
        {BASE "heads=64,d=96,kv_len=150,flags=causal|lse", "SPLITS=2,WARPS_M=2,WARPS_N=2,BLOCK_N=32,M_TILES=1", {0}, NULL, 0},
        {BASE "heads=2,d=256,kv_len=100,flags=causal", "", {0}, NULL, 0},
    };
    run_all(cases, sizeof cases / sizeof cases[0]);
}

Test(decode_emu, eight_bit, .timeout = 900)
{
    static const ecase cases[] = {
        /* int8 with f16 queries: V read biased (VBIAS = 1, the default of short pieces) and not */
        {BASE "heads=16,d=64,kv_len=180,kv=int8,flags=causal|lse", "SPLITS=2,VBIAS=1", {180, 5, 0}, NULL, 0},
        {BASE "heads=16,d=64,kv_len=180,kv=int8,flags=causal|lse", "SPLITS=2,VBIAS=0", {180, 5, 0}, NULL, 0},
        {BASE "heads=16,d=128,kv_len=180,kv=fp8_e4m3,flags=causal", "", {0}, NULL, 0},
        {BASE "heads=8,d=96,kv_len=130,q=bf16,out=bf16,kv=int8,flags=causal", "", {0}, NULL, 0},
        {BASE "heads=8,d=64,kv_len=130,q=bf16,out=bf16,kv=fp8_e4m3,flags=causal|lse", "SPLITS=2", {0}, NULL, 0},
    };
    run_all(cases, sizeof cases / sizeof cases[0]);
}

Test(decode_emu, drafts_windows_pages, .timeout = 900)
{
    static const ecase cases[] = {
        {BASE "heads=6,d=64,tq=4,kv_len=160,flags=causal|lse", "SPLITS=2", {160, 4, 0}, NULL, 0},
        {BASE "heads=4,d=64,tq=5,kv_len=150,page=16,flags=tree|paged|lse", "", {150, 5, 77}, NULL, 0},
        {BASE "heads=4,d=64,tq=3,kv_len=300,window=50,sinks=4,flags=causal|lse", "SPLITS=2,BLOCK_N=32,WARPS_N=2", {300, 3, 53}, NULL, 0},
        {BASE "heads=4,d=64,tq=3,kv_len=300,window=8,sinks=20,flags=causal", "BLOCK_N=32,WARPS_N=2", {300, 25, 12}, NULL, 0},
        {BASE "heads=4,d=64,tq=3,kv_len=300,window=40,sinks=5,page=16,flags=causal|paged|ring|lse",
         "SPLITS=2,BLOCK_N=32,WARPS_N=2", {300, 44, 3}, NULL, 0},
        {BASE "heads=2,d=128,tq=2,kv_len=200,window=64,sinks=0,kv=int8,flags=causal|ring", "", {200, 70, 0}, NULL, 0},
        /* One warp copies a 128-token tile as 4 row groups of 32 rows: runs of
         * 16 (a page), split again where the window meets the sinks. */
        {BASE "heads=4,d=64,tq=2,kv_len=300,page=16,window=200,sinks=3,flags=causal|paged|lse",
         "BLOCK_N=128,WARPS_M=1,WARPS_N=1,SPLITS=2,M_TILES=1", {300, 130, 2}, NULL, 0},
        /* Row 0 of a tree sees no position when kv_len = tq: every split of
         * the first sequence is empty for it (o = 0, lse = -inf, no NaN). */
        {BASE "heads=4,d=64,tq=4,kv_len=200,flags=tree|lse", "SPLITS=2", {4, 200, 9}, NULL, 0},
    };
    run_all(cases, sizeof cases / sizeof cases[0]);
}

Test(decode_emu, many_rows, .timeout = 900)
{
    static const ecase cases[] = {
        {"op=decode,batch=2,kv_heads=1,heads=4,d=64,tq=16,kv_len=100,flags=causal|lse", "", {100, 16}, NULL, 0},
        {"op=decode,batch=2,kv_heads=1,heads=12,d=64,tq=3,kv_len=100,kv=fp8_e4m3,flags=causal|lse",
         "WARPS_M=2,WARPS_N=2,BLOCK_N=32,SPLITS=2,M_TILES=1", {100, 33}, NULL, 0},
        {"op=decode,batch=2,kv_heads=3,heads=3,d=64,tq=1,kv_len=90,page=32,kv=int8,out=bf16,"
         "window=16,sinks=2,flags=paged|ring|lse", "STAGES=2", {90, 10}, NULL, 0},
        {"op=decode,batch=1,kv_heads=1,heads=40,d=128,tq=1,kv_len=260,flags=lse",
         "WARPS_M=2,WARPS_N=1,BLOCK_N=128,STAGES=2,SPLITS=2,M_TILES=1", {260}, NULL, 0},
    };
    run_all(cases, sizeof cases / sizeof cases[0]);
}

/* Sliding windows crossed with 1 to 4 query tokens, with and without a ring,
 * causal and tree masks.  Sinks are chosen so that a tile starts exactly at
 * the window edge (the first position the last query token no longer sees:
 * sinks + q_tokens - 2 = 0 mod 32 without a ring, sinks = 1 mod 32 with one)
 * or the sinks end on a tile boundary (32); 16 consecutive lengths move the
 * first draft across the tiles, and (sinks 62, 63) the window start across
 * the end of the sinks, where position `sinks` is in the window of some query
 * tokens but not of others. */
#define WIN "op=decode,batch=16,kv_heads=1,heads=4,d=64,kv_len=120,window=40,"

Test(decode_emu, windows_by_query_tokens, .timeout = 900)
{
    static const ecase cases[] = {
        {WIN "tq=1,sinks=32,flags=causal|lse", "BLOCK_N=32,WARPS_N=1,SPLITS=1", {-16}, NULL, 0},
        {WIN "tq=1,sinks=5,flags=causal|ring|lse", "BLOCK_N=32,WARPS_N=2,STAGES=2,SPLITS=1", {-16}, NULL, 0},
        {WIN "tq=2,sinks=32,flags=causal|lse", "BLOCK_N=32,WARPS_N=2,SPLITS=2", {-16}, NULL, 0},
        {WIN "tq=2,sinks=1,page=16,flags=tree|ring|paged|lse", "BLOCK_N=32,WARPS_N=1,SPLITS=1", {-16}, NULL, 0},
        {WIN "tq=3,sinks=63,kv=int8,flags=tree|lse", "BLOCK_N=32,WARPS_N=1,STAGES=3,SPLITS=1", {-16}, NULL, 0},
        {WIN "tq=3,sinks=33,kv=fp8_e4m3,flags=causal|ring|lse", "BLOCK_N=32,WARPS_N=2,SPLITS=1", {-16}, "sm_80", 0},
        {"op=decode,batch=16,kv_heads=1,heads=8,d=64,kv_len=120,window=40,tq=4,sinks=62,page=16,"
         "flags=causal|paged|lse", "BLOCK_N=32,WARPS_M=2,WARPS_N=2,SPLITS=1,M_TILES=1", {-16}, NULL, 0},
        {WIN "tq=4,sinks=1,q=bf16,kv=int8,flags=tree|ring|lse", "BLOCK_N=32,WARPS_N=2,SPLITS=2", {-16}, NULL, 0},
        /* two m-tiles a warp: query tokens 0-1 in the first, 2-3 in the second */
        {"op=decode,batch=16,kv_heads=1,heads=8,d=64,kv_len=120,window=40,tq=4,sinks=30,kv=int8,"
         "flags=causal|lse", "BLOCK_N=32,WARPS_M=1,M_TILES=2,WARPS_N=2,SPLITS=1", {-16}, NULL, 0},
    };
    run_all(cases, sizeof cases / sizeof cases[0]);
}

/* Full tiles ending exactly at the first draft (tree) or one past it (causal),
 * and tiles starting there, among 16 consecutive lengths; the last sequence
 * fills its last page exactly, whose successor in the page table is the
 * guard page; fp8 on the sm_80 bit path and the sm_90 cvt path. */
Test(decode_emu, draft_edges, .timeout = 900)
{
    static const ecase cases[] = {
        {"op=decode,batch=16,kv_heads=1,heads=4,d=64,tq=4,kv_len=144,page=16,flags=tree|paged|lse",
         "BLOCK_N=32,WARPS_N=2,SPLITS=1", {-16}, NULL, 0},
        {"op=decode,batch=16,kv_heads=1,heads=2,d=64,tq=3,kv_len=112,page=16,kv=fp8_e4m3,flags=causal|paged",
         "BLOCK_N=32,WARPS_N=1,SPLITS=1", {-16}, "sm_80", 0},
        {"op=decode,batch=16,kv_heads=2,heads=4,d=64,tq=2,kv_len=80,kv=fp8_e4m3,flags=tree|lse",
         "BLOCK_N=32,WARPS_N=2,SPLITS=2", {-16}, NULL, 0},
    };
    run_all(cases, sizeof cases / sizeof cases[0]);
}

/* Warp layouts the other cases do not take: 8 x 1, 4 x 2, 1 x 8, 2 x 4 with
 * one m-tile a warp; two m-tiles a warp as 2 x 2 (the CTA's last m-tile half
 * padding), 4 x 1 with 128 rows, and 1 x 4 over two row blocks whose second
 * holds 8 rows (a warp with one real and one padding-only m-tile). */
Test(decode_emu, warp_layouts, .timeout = 900)
{
    static const ecase cases[] = {
        {"op=decode,batch=2,kv_heads=1,heads=128,d=64,kv_len=80,flags=lse",
         "WARPS_M=8,WARPS_N=1,BLOCK_N=32,SPLITS=1,M_TILES=1", {80, 33}, NULL, 0},
        {"op=decode,batch=2,kv_heads=1,heads=64,d=64,kv_len=150,kv=int8,flags=lse",
         "WARPS_M=4,WARPS_N=2,BLOCK_N=64,SPLITS=2,M_TILES=1", {150, 97}, NULL, 0},
        {"op=decode,batch=2,kv_heads=2,heads=32,d=128,kv_len=150,flags=lse",
         "WARPS_M=1,WARPS_N=8,BLOCK_N=128,SPLITS=1,M_TILES=1", {150, 129}, NULL, 0},
        {"op=decode,batch=2,kv_heads=1,heads=24,d=64,tq=2,kv_len=150,kv=fp8_e4m3,flags=causal|lse",
         "WARPS_M=2,WARPS_N=4,BLOCK_N=64,STAGES=2,SPLITS=1,M_TILES=1", {150, 70}, NULL, 0},
        {"op=decode,batch=2,kv_heads=1,heads=56,d=64,kv_len=150,kv=fp8_e4m3,flags=causal|lse",
         "WARPS_M=2,WARPS_N=2,BLOCK_N=64,M_TILES=2,SPLITS=2", {150, 65}, NULL, 0},
        {"op=decode,batch=2,kv_heads=1,heads=128,d=64,kv_len=100,q=bf16,out=bf16,kv=int8,flags=lse",
         "WARPS_M=4,WARPS_N=1,BLOCK_N=32,M_TILES=2,SPLITS=1", {100, 31}, NULL, 0},
        /* int8 two m-tiles at d = 96 (at d = 128 they are the default the other int8 cases run) */
        {"op=decode,batch=2,kv_heads=2,heads=80,d=96,kv_len=140,kv=int8,flags=causal|lse",
         "WARPS_M=1,WARPS_N=4,BLOCK_N=64,M_TILES=2,SPLITS=2", {140, 64}, NULL, 0},
    };
    run_all(cases, sizeof cases / sizeof cases[0]);
}

/* Per-head and per-tensor 8-bit scales (fmqa_kv_scale_granularity): int8 and
 * fp8 (sm_80 bit path and sm_90 cvt), contiguous, paged with a window and a
 * ring, the int8 K bias with two m-tiles a warp, LSE. */
Test(decode_emu, scale_granularity, .timeout = 900)
{
    static const ecase cases[] = {
        {BASE "heads=64,d=128,kv_len=200,kv=int8,kv_scale=head,flags=causal|lse", "SPLITS=2",
         {200, 65, 0}, NULL, 0},
        {BASE "heads=8,d=64,tq=2,kv_len=150,kv=fp8_e4m3,kv_scale=tensor,flags=causal|lse", "",
         {150, 2, 77}, NULL, 0},
        {BASE "heads=4,d=64,tq=3,kv_len=300,window=40,sinks=5,page=16,kv=int8,kv_scale=tensor,"
         "flags=causal|paged|ring|lse", "SPLITS=2,BLOCK_N=32,WARPS_N=2", {300, 44, 3}, NULL, 0},
        {BASE "heads=32,d=96,kv_len=130,q=bf16,out=bf16,kv=fp8_e4m3,kv_scale=head,flags=causal",
         "", {0}, "sm_80", 0},
    };
    run_all(cases, sizeof cases / sizeof cases[0]);
}

/* Scales of a contiguous per-token 8-bit cache (TOKEN_HEAD) reshaped for the
 * int8 V offset's correction (decode.cuh, V_BIAS): K scales grow along each
 * sequence, from 1x to 6x, so a row's running maximum moves in most tiles and
 * the correction is rescaled with O many times; V scales jump between
 * neighbouring tokens (x1000 every third token, x0.001 every fifth), so a
 * correction built from other operands than P V's, or one rescaled with the
 * wrong factor, is far off. */
static void steer_scales(const fmqa_problem *p, fmqa_emu_inputs *in)
{
    const fmqa_decode_args *a = &in->a;
    float *ks = (float *)(uintptr_t)a->k_scale, *vs = (float *)(uintptr_t)a->v_scale;
    cr_assert(!(p->flags & FMQA_FLAG_PAGED) && p->kv_scale_granularity == FMQA_KV_SCALE_TOKEN_HEAD);
    for (int b = 0; b < p->batch; b++)
        for (int j = 0; j < in->lens[b]; j++)
            for (int hk = 0; hk < p->num_kv_heads; hk++) {
                ks[b * a->k_scale_stride_batch + j * a->k_scale_stride_token + hk * a->k_scale_stride_head] *=
                    1.0f + 5.0f * (float)j / (float)in->lens[b];
                vs[b * a->v_scale_stride_batch + j * a->v_scale_stride_token + hk * a->v_scale_stride_head] *=
                    j % 3 == 0 ? 1000.0f : j % 5 == 0 ? 0.001f : 1.0f;
            }
}

/* The int8 V offset (f16 queries, VBIAS = 1: V read as 1152 + v, O corrected
 * by an mma of the same A operands, decode.cuh V_BIAS) under steer_scales: the MQA
 * default (two m-tiles a warp) with splits, 1 to 4 query tokens, a 16-row
 * warp layout, d = 64, bf16 queries (no offset: the exact conversion), fp8
 * beside it, and tiles ending at every offset from the first draft. */
Test(decode_emu, biased_v_correction, .timeout = 900)
{
    static const ecase cases[] = {
        {"op=decode,batch=2,kv_heads=1,heads=32,d=128,kv_len=520,kv=int8,flags=causal|lse", "SPLITS=4,VBIAS=1",
         {520, 203}, NULL, 0},
        {"op=decode,batch=2,kv_heads=1,heads=8,d=128,tq=4,kv_len=300,kv=int8,flags=causal|lse", "SPLITS=2,VBIAS=1",
         {300, 131}, NULL, 0},
        {"op=decode,batch=2,kv_heads=2,heads=6,d=64,tq=2,kv_len=400,kv=int8,flags=causal",
         "WARPS_M=1,M_TILES=1,WARPS_N=4,BLOCK_N=64,SPLITS=1,VBIAS=1", {400, 77}, NULL, 0},
        {"op=decode,batch=2,kv_heads=1,heads=8,d=128,tq=3,kv_len=300,q=bf16,out=bf16,kv=int8,flags=causal|lse",
         "SPLITS=2", {300, 90}, NULL, 0},
        {"op=decode,batch=2,kv_heads=1,heads=32,d=128,kv_len=300,kv=fp8_e4m3,flags=causal|lse", "",
         {300, 150}, NULL, 0},
        /* 16 consecutive lengths (149 .. 164): full 32-token tiles ending at
         * the first draft, one past it (first draft 158) and around
         * (clean_tiles: no window, so the unmasked tiles are counted) */
        {"op=decode,batch=16,kv_heads=1,heads=4,d=64,tq=3,kv_len=164,kv=int8,flags=causal|lse",
         "BLOCK_N=32,WARPS_N=1,SPLITS=1,VBIAS=1", {-16}, NULL, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        run_case_into(&cases[i], 0, steer_scales, NULL, 0, NULL);
}

/* The combine at many splits: decode.lua's slicing (B = 1: 8 rows x 16 slices
 * of one float4 column, 128 split groups), and one slice of 32 columns, where
 * each of 4 split groups walks 64 splits in 2 batches of 8 (the running
 * maximum rescales the first); the short second sequence leaves most splits
 * empty. */
Test(decode_emu, combine_many_splits, .timeout = 900)
{
    static const ecase cases[] = {
        {"op=decode,batch=1,kv_heads=1,heads=8,d=64,tq=1,kv_len=2048,flags=causal|lse",
         "BLOCK_N=32,SPLITS=64,WARPS_N=2", {2048}, NULL, 0},
        {"op=decode,batch=2,kv_heads=1,heads=8,d=128,tq=1,kv_len=2048,flags=causal|lse",
         "BLOCK_N=32,SPLITS=64,WARPS_N=2", {2048, 40}, NULL, 1},
    };
    run_all(cases, sizeof cases / sizeof cases[0]);
}

/* ---------------------------------------------------------------- scheduler
 * The persistent schedule (decode.cuh, "Work distribution"): its own ctest
 * (unit_decode_sched, suite decode_sched), run beside unit_decode_emu.  Small
 * SM counts make few CTAs, so pieces cross sequences and tiles land at many
 * offsets of a CTA's range. */

/* Ragged batches mixing lengths 1 to 131072 (one CTA's range then spans many
 * whole short sequences and a piece of the long one), and B = 1 at 131072 on
 * the sm_90 preset's full grid: 2048 tiles on 396 CTAs, 396 pieces merged in
 * several batches per combine thread. */
Test(decode_sched, ragged_and_long, .timeout = 900)
{
    static const ecase cases[] = {
        {"op=decode,batch=7,kv_heads=1,heads=2,d=64,kv_len=131072,flags=causal|lse",
         "BLOCK_N=128,WARPS_N=2", {1, 131072, 2, 127, 129, 4000, 64}, "sm_90@3", 0},
        {"op=decode,batch=1,kv_heads=1,heads=2,d=64,kv_len=131072,flags=causal|lse",
         "BLOCK_N=128,WARPS_N=2", {131072}, NULL, 0},
    };
    run_all(cases, sizeof cases / sizeof cases[0]);
}

/* Lengths one below, at and one above a split boundary.  Two CTAs, 32-token
 * tiles, 128 positions in all, cut at position 64: (65, 63) cuts sequence 0
 * after its second tile, the second piece one token; (63, 65) cuts sequence 1
 * after its first token (a piece that starts inside a tile); (64, 64) falls
 * between the sequences.  16 consecutive lengths on 16 CTAs put cuts at many
 * offsets of a tile; batch-invariant chunks are 8 tiles (256 tokens): 255, 256 and 257 are one,
 * one and two chunks, the second of one token. */
Test(decode_sched, split_boundaries, .timeout = 900)
{
    static const ecase cases[] = {
        {"op=decode,batch=2,kv_heads=1,heads=4,d=64,kv_len=65,flags=causal|lse",
         "BLOCK_N=32,WARPS_N=2,SPLITS=2", {65, 63}, NULL, 0},
        {"op=decode,batch=2,kv_heads=1,heads=4,d=64,kv_len=65,flags=causal|lse",
         "BLOCK_N=32,WARPS_N=2,SPLITS=2", {63, 65}, NULL, 0},
        {"op=decode,batch=2,kv_heads=1,heads=4,d=64,kv_len=64,flags=lse",
         "BLOCK_N=32,WARPS_N=2,SPLITS=2", {64, 64}, NULL, 0},
        {"op=decode,batch=16,kv_heads=2,heads=8,d=64,tq=2,kv_len=100,flags=causal|lse",
         "BLOCK_N=32,WARPS_N=2,SPLITS=16", {-16}, NULL, 0},
        /* Sequences far shorter than the plan's: 5 positions on 16 CTAs, so
         * CTAs 4, 5, 7 and 8 have empty ranges inside sequence 0 (pieces of
         * CTAs 3 to 9) and 13, 14 inside sequence 1: they owe empty pieces. */
        {"op=decode,batch=2,kv_heads=1,heads=4,d=64,kv_len=256,flags=causal|lse",
         "BLOCK_N=32,WARPS_N=2,SPLITS=16", {3, 2}, NULL, 0},
        {"op=decode,batch=3,kv_heads=1,heads=4,d=64,kv_len=257,flags=causal|lse|invariant",
         "BLOCK_N=32,WARPS_N=2", {255, 256, 257}, "sm_90@2", 0},
    };
    run_all(cases, sizeof cases / sizeof cases[0]);
}

/* More sequences than SMs, and than the CTA's threads (a second pass of the
 * scan over kv_lens): 200 sequences on 2 SMs, random lengths, 8-bit cache. */
Test(decode_sched, many_sequences, .timeout = 900)
{
    static const ecase cases[] = {
        {"op=decode,batch=40,kv_heads=2,heads=4,d=64,kv_len=300,flags=causal|lse",
         "BLOCK_N=32,WARPS_N=2", {0}, "sm_90@4", 0},
        {"op=decode,batch=200,kv_heads=1,heads=4,d=64,kv_len=100,kv=int8,flags=causal|lse",
         "BLOCK_N=64,WARPS_N=4", {0}, "sm_90@2", 0},
    };
    run_all(cases, sizeof cases / sizeof cases[0]);
}

/* The o and lse bits of sequence b of a run. */
static int same_bits(const fmqa_problem *p, const fmqa_emu_inputs *x, int bx, const fmqa_emu_inputs *y, int by)
{
    const size_t n = (size_t)p->q_tokens * p->num_q_heads;
    return !memcmp((const uint16_t *)x->a.o + bx * x->a.o_stride_batch,
                   (const uint16_t *)y->a.o + by * y->a.o_stride_batch, n * p->head_dim_v * 2) &&
           !memcmp(x->a.lse + bx * n, y->a.lse + by * n, n * 4);
}

/* FMQA_FLAG_BATCH_INVARIANT: one sequence (3000 tokens: 47 tiles, 6 chunks of
 * 8) alone, and at positions 1 of 3 and 37 of 64 among random lengths, on
 * SM counts 132 and 7: its output and lse are bit for bit the same every
 * time (and right: each run is also checked against the reference).  Without
 * the flag the same runs differ, or the test would prove nothing. */
Test(decode_sched, batch_invariant, .timeout = 900)
{
#define INV_SPEC(b, f) "op=decode,batch=" #b ",kv_heads=1,heads=4,d=64,kv_len=3000,flags=causal|lse" f
    static const ecase solo = {INV_SPEC(1, "|invariant"), "", {3000}, NULL, 0};
    static const ecase runs[] = {
        {INV_SPEC(3, "|invariant"), "", {0}, NULL, 0},
        {INV_SPEC(64, "|invariant"), "", {0}, NULL, 0},
        {INV_SPEC(64, "|invariant"), "", {0}, "sm_90@7", 0},
        {INV_SPEC(1, "|invariant"), "", {3000}, "sm_90@7", 0},
    };
    static const int at[] = {1, 37, 37, 0};
    fmqa_problem p;
    fmqa_err err;
    cr_assert_eq(gen_problem_parse(solo.spec, &p, &err), FMQA_OK, "%s", err.msg);
    static fmqa_emu_inputs base, run;
    run_case_into(&solo, 0, NULL, NULL, 0, &base);
    for (size_t i = 0; i < sizeof runs / sizeof runs[0]; i++) {
        run_case_into(&runs[i], 0, NULL, &base, at[i], &run);
        cr_expect(same_bits(&p, &base, 0, &run, at[i]), "%s (%s): sequence %d differs from its run alone",
                  runs[i].spec, runs[i].arch ? runs[i].arch : "sm_90", at[i]);
    }
    static const ecase free_solo = {INV_SPEC(1, ""), "", {3000}, NULL, 0};
    static const ecase free_batch = {INV_SPEC(64, ""), "", {0}, "sm_90@7", 0};
    run_case_into(&free_solo, 0, NULL, NULL, 0, &base);
    run_case_into(&free_batch, 0, NULL, &base, 37, &run);
    cr_expect(!same_bits(&p, &base, 0, &run, 37), "the free schedule gave the same bits: the test shows nothing");
#undef INV_SPEC
}

/* Learned sink logits (gpt-oss): one per query head in the denominator only.
 * Split-KV forced (the sink joins the combine's final normalisation, never a
 * split's partial), windows with sink tokens, 1 to 4 query tokens, causal and
 * tree masks, 8-bit caches, LSE (the log of the whole denominator); the last
 * case has query rows that see nothing (o = 0, lse = the sink). */
Test(decode_emu, sinks_learned_logits, .timeout = 900)
{
    static const ecase cases[] = {
        {BASE "heads=8,d=64,kv_len=300,flags=causal|lse", "SPLITS=4,BLOCK_N=32,WARPS_N=2", {300, 61, 0}, NULL, 0},
        {BASE "heads=8,d=64,kv_len=200,flags=causal|lse", "SPLITS=1", {200, 7, 0}, NULL, 0},
        {BASE "heads=4,d=64,tq=3,kv_len=300,window=50,sinks=4,kv=int8,flags=causal|lse",
         "SPLITS=2,BLOCK_N=32,WARPS_N=2", {300, 3, 53}, NULL, 0},
        {BASE "heads=4,d=128,tq=4,kv_len=160,window=40,sinks=2,page=16,q=bf16,out=bf16,"
         "kv=fp8_e4m3,flags=tree|paged|ring|lse", "SPLITS=2,BLOCK_N=32,WARPS_N=2", {160, 45, 4}, NULL, 0},
        {BASE "heads=6,d=64,tq=2,kv_len=130,flags=causal|lse", "SPLITS=4,BLOCK_N=32,WARPS_N=2", {130, 2, 90}, NULL, 0},
        {BASE "heads=4,d=64,tq=4,kv_len=200,flags=tree|lse", "SPLITS=2", {4, 200, 9}, NULL, 0},
        {BASE "heads=4,d=64,tq=4,kv_len=200,flags=tree|lse", "SPLITS=1", {4, 200, 9}, NULL, 0},
    };
    run_all_sinks(cases, sizeof cases / sizeof cases[0], 1);
}

/* Logit soft-capping (Gemma 2/3): scores c tanh(s / c) before the softmax, with
 * caps small enough to bend every score, on 16- and 8-bit caches, windows,
 * split-KV and several query tokens, and together with learned sinks. */
/* Engines' cache layouts (fastmqa.h, "page layouts"): a CSR page table
 * (FlashInfer's paged_kv: indptr, indices, last page length, lengths from the
 * table) over HND pages for K and V, 16- and 8-bit, with splits, a window
 * whose freed pages are -1, a tree mask, and more sequences than a CTA has
 * threads (the schedule's second pass reads the lengths again).  The other
 * paged cases cover NHD K beside HND V. */
Test(decode_emu, layout_csr_hnd, .timeout = 900)
{
    static const ecase cases[] = {
        {BASE "heads=8,d=64,kv_len=200,page=16,flags=causal|paged|csr|lse", "SPLITS=2", {192, 1, 17}, NULL, 0},
        {BASE "heads=4,d=128,tq=3,kv_len=300,window=50,sinks=4,page=32,kv=int8,flags=causal|paged|csr|lse",
         "SPLITS=2,BLOCK_N=32,WARPS_N=2", {300, 3, 64}, NULL, 0},
        {"op=decode,batch=40,kv_heads=1,heads=4,d=64,tq=2,kv_len=70,page=16,q=bf16,kv=bf16,out=bf16,"
         "flags=tree|paged|csr|lse", "BLOCK_N=32,WARPS_M=1,WARPS_N=1,M_TILES=1", {-17}, NULL, 0},
    };
    run_all(cases, sizeof cases / sizeof cases[0]);
}

Test(decode_emu, softcap_scores, .timeout = 900)
{
    static const ecase cases[] = {
        {BASE "heads=8,d=64,kv_len=200,softcap=2,flags=causal|lse", "SPLITS=2", {200, 33, 0}, NULL, 0},
        {BASE "heads=4,d=128,tq=3,kv_len=300,window=50,sinks=4,softcap=1.5,kv=int8,flags=causal|lse",
         "SPLITS=2,BLOCK_N=32,WARPS_N=2", {300, 3, 53}, NULL, 0},
        {BASE "heads=4,d=64,tq=2,kv_len=150,softcap=0.75,q=bf16,out=bf16,kv=fp8_e4m3,flags=causal",
         "", {150, 70, 0}, "sm_80", 0},
    };
    run_all(cases, sizeof cases / sizeof cases[0]);
    static const ecase with_sinks[] = {
        {BASE "heads=8,d=64,tq=4,kv_len=160,page=16,softcap=3,flags=tree|paged|lse", "SPLITS=1", {160, 5, 77}, NULL, 0},
    };
    run_all_sinks(with_sinks, 1, 1);
}

/* A ring with draft slots (the speculative protocol of fastmqa.h): sinks +
 * window + draft_slots slots, the ring period window + draft_slots; only the
 * rows a query may read hold data, the rest of the ring (rejected drafts, old
 * positions) is NaN, so reading one fails.  Lengths cross the ring's wrap. */
Test(decode_emu, spec_ring_draft_slots, .timeout = 900)
{
    static const ecase cases[] = {
        {WIN "tq=4,sinks=5,draft_slots=3,flags=causal|ring|lse", "BLOCK_N=32,WARPS_N=2,SPLITS=2", {-16}, NULL, 0},
        {WIN "tq=1,sinks=4,draft_slots=3,page=16,kv=int8,flags=causal|paged|ring|lse",
         "BLOCK_N=32,WARPS_N=1,SPLITS=1", {-16}, NULL, 0},
        {WIN "tq=3,sinks=1,draft_slots=5,kv=fp8_e4m3,flags=tree|ring|lse", "BLOCK_N=32,WARPS_N=2,SPLITS=1", {-16}, NULL, 0},
    };
    run_all(cases, sizeof cases / sizeof cases[0]);
}

/* The sm_90 bulk pipeline (BULK=1, decode.cuh "Load pipeline"): a producer
 * warp's cp.async.bulk row copies into an mbarrier ring, the compute warps
 * releasing stages without CTA barriers.  The emulator poisons a copy's rows
 * until a consumer waits on its mbarrier, so a missing wait or a wrong
 * transaction count fails here.  Contiguous and paged (shuffled table, rows
 * looked up one by one), a ring with draft slots, int8 and fp8 with their
 * scales, windows with sinks, 1 to 4 query tokens, forced splits (pieces that
 * start and end inside tiles: partial tiles zero-filled), two m-tiles a warp,
 * 128-token tiles (4 rows a producer lane), and the ring carried across many
 * pieces of one CTA (2 to 4 stages). */
Test(decode_emu, bulk_pipeline, .timeout = 900)
{
    static const ecase cases[] = {
        {BASE "heads=8,d=64,kv_len=200,flags=causal", "BULK=1", {200, 1, 0}, NULL, 0},
        {BASE "heads=4,d=128,kv_len=300,q=bf16,kv=bf16,out=bf16,flags=causal|lse", "BULK=1,SPLITS=4",
         {300, 70, 0}, NULL, 0},
        {BASE "heads=16,d=64,kv_len=180,kv=int8,flags=causal|lse", "BULK=1,SPLITS=2", {180, 5, 0}, NULL, 0},
        {BASE "heads=8,d=64,kv_len=130,q=bf16,out=bf16,kv=fp8_e4m3,flags=causal|lse",
         "BULK=1,SPLITS=2,STAGES=2", {0}, NULL, 0},
        {BASE "heads=4,d=64,tq=3,kv_len=300,window=50,sinks=4,flags=causal|lse",
         "BULK=1,SPLITS=2,BLOCK_N=32,WARPS_N=2", {300, 3, 53}, NULL, 0},
        {BASE "heads=4,d=64,tq=3,kv_len=300,window=40,sinks=5,page=16,kv=int8,flags=causal|paged|ring|lse",
         "BULK=1,SPLITS=2,BLOCK_N=32,WARPS_N=2", {300, 44, 3}, NULL, 0},
        {BASE "heads=4,d=64,tq=2,kv_len=300,page=16,window=200,sinks=3,flags=causal|paged|lse",
         "BULK=1,BLOCK_N=128,WARPS_M=1,WARPS_N=1,SPLITS=2,M_TILES=1", {300, 130, 2}, NULL, 0},
        {WIN "tq=4,sinks=5,draft_slots=3,flags=causal|ring|lse", "BULK=1,BLOCK_N=32,WARPS_N=2,SPLITS=2",
         {-16}, NULL, 0},
        {WIN "tq=1,sinks=32,kv=fp8_e4m3,flags=causal|lse", "BULK=1,BLOCK_N=32,WARPS_N=1,SPLITS=1,STAGES=4",
         {-16}, NULL, 0},
        {"op=decode,batch=16,kv_heads=1,heads=8,d=64,kv_len=120,window=40,tq=4,sinks=30,kv=int8,"
         "flags=tree|lse", "BULK=1,BLOCK_N=32,WARPS_M=1,M_TILES=2,WARPS_N=2,SPLITS=1", {-16}, NULL, 0},
        {BASE "heads=2,d=256,kv_len=100,flags=causal", "BULK=1", {0}, NULL, 0},
    };
    run_all(cases, sizeof cases / sizeof cases[0]);
}

/* The bulk pipeline under the persistent schedule: a ragged batch on 3 SMs
 * (a CTA's ring runs on through many short sequences and a piece of a long
 * one), more sequences than the CTA's threads (the scan's second pass over
 * the producer warp too), and learned sinks with splits. */
Test(decode_sched, bulk_ragged, .timeout = 900)
{
    static const ecase cases[] = {
        {"op=decode,batch=7,kv_heads=1,heads=2,d=64,kv_len=4096,flags=causal|lse",
         "BULK=1,BLOCK_N=64,WARPS_N=2,STAGES=3", {1, 4096, 2, 127, 129, 1000, 64}, "sm_90@3", 0},
        {"op=decode,batch=200,kv_heads=1,heads=4,d=64,kv_len=100,kv=int8,flags=causal|lse",
         "BULK=1,BLOCK_N=64,WARPS_N=4", {0}, "sm_90@2", 0},
    };
    run_all(cases, sizeof cases / sizeof cases[0]);
    static const ecase with_sinks[] = {
        {BASE "heads=8,d=64,kv_len=300,flags=causal|lse", "BULK=1,SPLITS=4,BLOCK_N=32,WARPS_N=2", {300, 61, 0},
         NULL, 0},
    };
    run_all_sinks(with_sinks, 1, 1);
}
