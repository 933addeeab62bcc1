/*
 * test_decode_emu.c -- the decode template's real source run on the CPU against
 * the float64 reference, no GPU needed.
 *
 * Each case goes through the same path as fmqa_decode (tests/support/
 * decode_emu.c): the template's Lua (default config, or one with parameters
 * overridden) gives the launch plan, gen_render the source, rt_decode_params
 * the kernel parameters from public fmqa_decode_args; then the rendered source
 * is compiled by the host C++ compiler with tests/emu/cuda_emu.h (an emulation
 * of the PTX the kernels use: see there) and each kernel of the plan runs over
 * its grid.  Inputs are fresh
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
 * including one that leaves a thread several batches of splits. */
typedef struct ecase {
    const char *spec;
    const char *config;
    int32_t lens[4];
    const char *arch;
    unsigned combine_slices;
} ecase;

static void run_case(const ecase *ec)
{
    fmqa_err err;
    fmqa_problem p;
    cr_assert_eq(gen_problem_parse(ec->spec, &p, &err), FMQA_OK, "%s: %s", ec->spec, err.msg);
    ref_rng r;
    uint64_t seed = fmqa_test_seed(ec->spec);
    ref_rng_seed(&r, seed);
    fmqa_emu_inputs in;
    fmqa_emu_inputs_make(&p, ec->lens, &r, &in);
    char cfg[GEN_CONFIG_TEXT_CAP];
    const char *arch = ec->arch ? ec->arch : "sm_90";
    int splits = fmqa_emu_decode(&p, ec->config, arch, ec->combine_slices, &in, cfg);

    const int64_t rows = (int64_t)p.batch * p.q_tokens * p.num_q_heads, n = rows * p.head_dim_v;
    double *o = malloc(n * sizeof *o), *lse = malloc(rows * sizeof *lse);
    cr_assert_eq(ref_decode(&p, &in.a, in.n_pages, o, lse, &err), FMQA_OK, "%s", err.msg);
    ref_cmp cmp;
    cr_assert_eq(ref_compare(p.out_dtype, in.a.o, o, n, &cmp, &err), FMQA_OK, "%s", err.msg);
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
        cr_assert_eq(ref_compare(FMQA_DTYPE_F32, in.a.lse, lse, rows, &cmp, &err), FMQA_OK);
        cr_expect(ref_cmp_ok(&cmp, 1e-4, -1), "%s [%s]: lse rel_l2 %g, max %g at %lld, %lld bad",
                  ec->spec, cfg, cmp.rel_l2, cmp.max_abs, (long long)cmp.worst,
                  (long long)cmp.bad);
    }
}

static void run_all(const ecase *cases, size_t n)
{
    for (size_t i = 0; i < n; i++)
        run_case(&cases[i]);
}

#define BASE "op=decode,batch=3,kv_heads=2,"

Test(decode_emu, dense_16bit, .timeout = 900)
{
    static const ecase cases[] = {
        {BASE "heads=8,d=64,kv_len=200,flags=causal", "", {200, 1, 0}, NULL, 0},
        {BASE "heads=4,d=128,kv_len=300,q=bf16,kv=bf16,out=bf16,flags=causal|lse", "SPLITS=4", {300, 70, 0}, NULL, 0},
        {BASE "heads=64,d=96,kv_len=150,flags=causal|lse", "SPLITS=2,WARPS_M=2,WARPS_N=2,BLOCK_N=32", {0}, NULL, 0},
        {BASE "heads=2,d=256,kv_len=100,flags=causal", "", {0}, NULL, 0},
    };
    run_all(cases, sizeof cases / sizeof cases[0]);
}

Test(decode_emu, eight_bit, .timeout = 900)
{
    static const ecase cases[] = {
        {BASE "heads=16,d=64,kv_len=180,kv=int8,flags=causal|lse", "SPLITS=2", {180, 5, 0}, NULL, 0},
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
         "BLOCK_N=128,WARPS_M=1,WARPS_N=1,SPLITS=2", {300, 130, 2}, NULL, 0},
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
         "WARPS_M=2,WARPS_N=2,BLOCK_N=32,SPLITS=2", {100, 33}, NULL, 0},
        {"op=decode,batch=2,kv_heads=3,heads=3,d=64,tq=1,kv_len=90,page=32,kv=int8,out=bf16,"
         "window=16,sinks=2,flags=paged|ring|lse", "STAGES=2", {90, 10}, NULL, 0},
        {"op=decode,batch=1,kv_heads=1,heads=40,d=128,tq=1,kv_len=260,flags=lse",
         "WARPS_M=2,WARPS_N=1,BLOCK_N=128,STAGES=2,SPLITS=2", {260}, NULL, 0},
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
         "flags=causal|paged|lse", "BLOCK_N=32,WARPS_M=2,WARPS_N=2,SPLITS=1", {-16}, NULL, 0},
        {WIN "tq=4,sinks=1,q=bf16,kv=int8,flags=tree|ring|lse", "BLOCK_N=32,WARPS_N=2,SPLITS=2", {-16}, NULL, 0},
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

/* Warp layouts the other cases do not take: 8 x 1, 4 x 2, 1 x 8, 2 x 4. */
Test(decode_emu, warp_layouts, .timeout = 900)
{
    static const ecase cases[] = {
        {"op=decode,batch=2,kv_heads=1,heads=128,d=64,kv_len=80,flags=lse",
         "WARPS_M=8,WARPS_N=1,BLOCK_N=32,SPLITS=1", {80, 33}, NULL, 0},
        {"op=decode,batch=2,kv_heads=1,heads=64,d=64,kv_len=150,kv=int8,flags=lse",
         "WARPS_M=4,WARPS_N=2,BLOCK_N=64,SPLITS=2", {150, 97}, NULL, 0},
        {"op=decode,batch=2,kv_heads=2,heads=32,d=128,kv_len=150,flags=lse",
         "WARPS_M=1,WARPS_N=8,BLOCK_N=128,SPLITS=1", {150, 129}, NULL, 0},
        {"op=decode,batch=2,kv_heads=1,heads=24,d=64,tq=2,kv_len=150,kv=fp8_e4m3,flags=causal|lse",
         "WARPS_M=2,WARPS_N=4,BLOCK_N=64,STAGES=2,SPLITS=1", {150, 70}, NULL, 0},
    };
    run_all(cases, sizeof cases / sizeof cases[0]);
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
