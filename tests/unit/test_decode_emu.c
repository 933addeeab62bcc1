/*
 * test_decode_emu.c -- the decode template's real source run on the CPU against
 * the float64 reference, no GPU needed.
 *
 * Each case goes through the same path as fmqa_decode: the template's Lua
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

#include "fmqa_params.h"
#include "gen.h"
#include "ref.h"
#include "rt.h"
#include "test_support.h"

typedef int (*emu_launch_fn)(const char *entry, const fmqa_decode_params *p,
                             const unsigned grid[3], unsigned threads, unsigned dyn_smem);

/* One case: a problem spec, parameters overriding the default config ("" =
 * default), per-sequence lengths (0 = drawn), and column slices for the
 * combine other than decode.lua's (0 = the plan's): the combine must be right
 * for any slicing, including one that leaves a thread several batches of
 * splits. */
typedef struct ecase {
    const char *spec;
    const char *config;
    int32_t lens[4];
    unsigned combine_slices;
} ecase;

/* Host buffers of one case (all malloc'ed, freed by the process's end). */
typedef struct inputs {
    fmqa_decode_args a;
    int32_t lens[64];
    int64_t n_pages;
} inputs;

static void *poisoned(size_t bytes)
{
    void *p = malloc(bytes ? bytes : 1);
    cr_assert_not_null(p);
    memset(p, 0xff, bytes);
    return p;
}

/* Writes one random row of position j into the cache (16-bit or quantized). */
static void put_row(const fmqa_problem *p, ref_rng *r, void *base, int64_t at, float *scales,
                    int64_t sat)
{
    const int d = p->head_dim_qk;
    double x[256];
    ref_rng_fill(r, x, d, 1.0, 0);
    fmqa_err err;
    if (p->kv_dtype == FMQA_DTYPE_INT8 || p->kv_dtype == FMQA_DTYPE_FP8_E4M3) {
        cr_assert_eq(ref_quantize_row(p->kv_dtype, x, d, (uint8_t *)base + at, &scales[sat], &err),
                     FMQA_OK, "%s", err.msg);
    } else {
        cr_assert_eq(ref_from_double(p->kv_dtype, x, d, (uint16_t *)base + at, &err), FMQA_OK,
                     "%s", err.msg);
    }
}

static void make_inputs(const fmqa_problem *p, const int32_t *lens, ref_rng *r, inputs *in)
{
    const int64_t B = p->batch, T = p->kv_len, H = p->num_q_heads, Hk = p->num_kv_heads;
    const int64_t D = p->head_dim_qk, Tq = p->q_tokens;
    const int paged = (p->flags & FMQA_FLAG_PAGED) != 0, ring = (p->flags & FMQA_FLAG_RING) != 0;
    const int64_t slots = ring ? p->sink_tokens + p->window : T;
    const int64_t ps = paged ? p->page_size : slots;
    const int64_t per_seq = (slots + ps - 1) / ps;
    const int64_t outer = paged ? B * per_seq + 3 : B; /* a few pages never used */
    const size_t ke = fmqa_dtype_size(p->kv_dtype);
    fmqa_decode_args *a = &in->a;
    memset(a, 0, sizeof *a);
    in->n_pages = paged ? outer : 0;
    for (int64_t b = 0; b < B; b++)
        in->lens[b] = lens[b] ? lens[b] : (int32_t)(Tq + ref_rng_next(r) % (T - Tq + 1));

    a->k_stride_head = a->v_stride_head = D;
    a->k_stride_token = a->v_stride_token = Hk * D;
    a->k_stride_batch = a->v_stride_batch = ps * Hk * D;
    void *k = poisoned(outer * ps * Hk * D * ke), *v = poisoned(outer * ps * Hk * D * ke);
    float *ks = poisoned(outer * ps * Hk * 4), *vs = poisoned(outer * ps * Hk * 4);
    a->k_scale_stride_head = a->v_scale_stride_head = 1;
    a->k_scale_stride_token = a->v_scale_stride_token = Hk;
    a->k_scale_stride_batch = a->v_scale_stride_batch = ps * Hk;
    int32_t *table = NULL;
    if (paged) { /* a shuffled page order */
        table = malloc(B * per_seq * sizeof *table);
        for (int64_t i = 0; i < B * per_seq; i++)
            table[i] = (int32_t)i;
        for (int64_t i = B * per_seq - 1; i > 0; i--) {
            int64_t j = ref_rng_next(r) % (i + 1);
            int32_t t = table[i];
            table[i] = table[j], table[j] = t;
        }
        a->page_table = table, a->page_table_stride = per_seq;
    }
    ref_cache_view view = {.dtype = p->kv_dtype, .flags = p->flags & (FMQA_FLAG_RING | FMQA_FLAG_PAGED),
                           .window = p->window, .sink_tokens = p->sink_tokens};
    for (int64_t b = 0; b < B; b++)
        for (int64_t j = 0; j < in->lens[b]; j++) {
            if (ring && j >= p->sink_tokens && j < in->lens[b] - p->window)
                continue; /* overwritten by a later position */
            int64_t slot = ref_cache_slot(&view, j);
            int64_t o = paged ? table[b * per_seq + slot / ps] : b, t = paged ? slot % ps : slot;
            for (int64_t h = 0; h < Hk; h++) {
                int64_t row = o * a->k_stride_batch + t * a->k_stride_token + h * D;
                int64_t srow = o * a->k_scale_stride_batch + t * Hk + h;
                put_row(p, r, k, row, ks, srow);
                put_row(p, r, v, row, vs, srow);
            }
        }
    a->k = k, a->v = v;
    if (ke == 1)
        a->k_scale = ks, a->v_scale = vs;

    const int64_t nq = B * Tq * H * D;
    double *qd = malloc(nq * sizeof *qd);
    uint16_t *q = malloc(nq * 2);
    fmqa_err err;
    ref_rng_fill(r, qd, nq, 1.0, p->q_dtype);
    cr_assert_eq(ref_from_double(p->q_dtype, qd, nq, q, &err), FMQA_OK, "%s", err.msg);
    free(qd);
    a->q = q;
    a->q_stride_head = D, a->q_stride_token = H * D, a->q_stride_batch = Tq * H * D;
    a->o = poisoned(nq * 2);
    a->o_stride_head = D, a->o_stride_token = H * D, a->o_stride_batch = Tq * H * D;
    a->lse = poisoned(B * Tq * H * 4);
    int32_t *kv_lens = malloc(B * sizeof *kv_lens);
    memcpy(kv_lens, in->lens, B * sizeof *kv_lens);
    a->kv_lens = kv_lens;
    if (p->flags & FMQA_FLAG_TREE_MASK) {
        uint64_t *m = malloc(B * Tq * sizeof *m);
        for (int64_t i = 0; i < B * Tq; i++) /* random drafts; row 0 of a sequence sees none */
            m[i] = i % Tq == 0 ? 0 : (ref_rng_next(r) & ((1ull << Tq) - 1)) | 1ull << (i % Tq);
        a->tree_mask = m;
    }
}

static void run_case(const ecase *ec)
{
    gen_lib *lib = NULL;
    fmqa_err err;
    cr_assert_eq(gen_lib_open(FMQA_SOURCE_DIR "/templates", &lib, &err), FMQA_OK, "%s", err.msg);
    const gen_template *t = gen_lib_find(lib, "decode");
    cr_assert_not_null(t);
    fmqa_device_info dev;
    cr_assert_eq(gen_device_preset("sm_90", &dev, &err), FMQA_OK, "%s", err.msg);
    fmqa_problem p;
    cr_assert_eq(gen_problem_parse(ec->spec, &p, &err), FMQA_OK, "%s: %s", ec->spec, err.msg);
    gen_config c, over;
    cr_assert_eq(gen_default(t, &p, &dev, &c, &err), FMQA_OK, "%s", err.msg);
    if (ec->config[0]) {
        cr_assert_eq(gen_config_parse(ec->config, &over, &err), FMQA_OK, "%s", err.msg);
        for (int i = 0; i < gen_template_param_count(t); i++) {
            const char *name = gen_template_param_name(t, i);
            int64_t v;
            if (gen_config_get(&over, name, &v))
                cr_assert_eq(gen_config_set(&c, name, v, &err), FMQA_OK, "%s", err.msg);
        }
    }
    rt_plan plan;
    memset(&plan, 0, sizeof plan);
    plan.problem = p;
    cr_assert_eq(gen_launch_plan(t, &c, &p, &dev, &plan.launch, &err), FMQA_OK, "%s", err.msg);
    char dir[] = "/tmp/fmqa-emu-XXXXXX";
    emu_launch_fn launch = (emu_launch_fn)fmqa_test_emu_build(t, &c, &p, &dev, "decode_emu.cpp", dir);

    ref_rng r;
    uint64_t seed = fmqa_test_seed(ec->spec);
    ref_rng_seed(&r, seed);
    inputs in;
    make_inputs(&p, ec->lens, &r, &in);
    in.a.workspace = poisoned(plan.launch.workspace);
    in.a.workspace_size = plan.launch.workspace;
    fmqa_decode_params prm;
    cr_assert_eq(rt_decode_params(&plan, &in.a, &prm, &err), FMQA_OK, "%s", err.msg);
    for (int i = 0; i < plan.launch.n_kernels; i++) {
        const gen_kernel *k = &plan.launch.kernels[i];
        cr_assert_eq(k->block[1] * k->block[2], 1);
        unsigned grid[3] = {k->grid[0], k->grid[1], k->grid[2]};
        if (ec->combine_slices && !strcmp(k->entry, "fmqa_decode_combine"))
            grid[1] = ec->combine_slices;
        cr_assert_eq(launch(k->entry, &prm, grid, k->block[0], k->shared), 0);
    }

    const int64_t rows = (int64_t)p.batch * p.q_tokens * p.num_q_heads, n = rows * p.head_dim_v;
    double *o = malloc(n * sizeof *o), *lse = malloc(rows * sizeof *lse);
    cr_assert_eq(ref_decode(&p, &in.a, in.n_pages, o, lse, &err), FMQA_OK, "%s", err.msg);
    ref_cmp cmp;
    cr_assert_eq(ref_compare(p.out_dtype, in.a.o, o, n, &cmp, &err), FMQA_OK, "%s", err.msg);
    /* Observed: ~3e-4 with f16 operands, ~2.5e-3 with bf16 (P and Q rounded to
     * bf16); a 1% error in one split of two must fail. */
    const double tol = p.out_dtype == FMQA_DTYPE_BF16 || p.kv_dtype == FMQA_DTYPE_BF16 ||
                               p.q_dtype == FMQA_DTYPE_BF16 ? 8e-3 : 1e-3;
    char cfg[GEN_CONFIG_TEXT_CAP];
    gen_config_text(&c, cfg, sizeof cfg);
    fprintf(stderr, "%s [%s] splits %d: o rel_l2 %.2e max %.2e bad %lld (seed %llu)\n", ec->spec,
            cfg, plan.launch.splits, cmp.rel_l2, cmp.max_abs, (long long)cmp.bad,
            (unsigned long long)seed);
    cr_expect(ref_cmp_ok(&cmp, tol, -1), "%s [%s]: o rel_l2 %g, max %g at %lld, %lld bad", ec->spec,
              cfg, cmp.rel_l2, cmp.max_abs, (long long)cmp.worst, (long long)cmp.bad);
    if (p.flags & FMQA_FLAG_LSE) {
        cr_assert_eq(ref_compare(FMQA_DTYPE_F32, in.a.lse, lse, rows, &cmp, &err), FMQA_OK);
        cr_expect(ref_cmp_ok(&cmp, 1e-4, -1), "%s [%s]: lse rel_l2 %g, max %g at %lld, %lld bad",
                  ec->spec, cfg, cmp.rel_l2, cmp.max_abs, (long long)cmp.worst,
                  (long long)cmp.bad);
    }
    char rm[1100];
    snprintf(rm, sizeof rm, "rm -rf %s", dir);
    (void)system(rm);
    gen_lib_close(lib);
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
        {BASE "heads=8,d=64,kv_len=200,flags=causal", "", {200, 1, 0}, 0},
        {BASE "heads=4,d=128,kv_len=300,q=bf16,kv=bf16,out=bf16,flags=causal|lse", "SPLITS=4", {300, 70, 0}, 0},
        {BASE "heads=64,d=96,kv_len=150,flags=causal|lse", "SPLITS=2,WARPS_M=2,WARPS_N=2,BLOCK_N=32", {0}, 0},
        {BASE "heads=2,d=256,kv_len=100,flags=causal", "", {0}, 0},
    };
    run_all(cases, sizeof cases / sizeof cases[0]);
}

Test(decode_emu, eight_bit, .timeout = 900)
{
    static const ecase cases[] = {
        {BASE "heads=16,d=64,kv_len=180,kv=int8,flags=causal|lse", "SPLITS=2", {180, 5, 0}, 0},
        {BASE "heads=16,d=128,kv_len=180,kv=fp8_e4m3,flags=causal", "", {0}, 0},
        {BASE "heads=8,d=96,kv_len=130,q=bf16,out=bf16,kv=int8,flags=causal", "", {0}, 0},
        {BASE "heads=8,d=64,kv_len=130,q=bf16,out=bf16,kv=fp8_e4m3,flags=causal|lse", "SPLITS=2", {0}, 0},
    };
    run_all(cases, sizeof cases / sizeof cases[0]);
}

Test(decode_emu, drafts_windows_pages, .timeout = 900)
{
    static const ecase cases[] = {
        {BASE "heads=6,d=64,tq=4,kv_len=160,flags=causal|lse", "SPLITS=2", {160, 4, 0}, 0},
        {BASE "heads=4,d=64,tq=5,kv_len=150,page=16,flags=tree|paged|lse", "", {150, 5, 77}, 0},
        {BASE "heads=4,d=64,tq=3,kv_len=300,window=50,sinks=4,flags=causal|lse", "SPLITS=2,BLOCK_N=32,WARPS_N=2", {300, 3, 53}, 0},
        {BASE "heads=4,d=64,tq=3,kv_len=300,window=8,sinks=20,flags=causal", "BLOCK_N=32,WARPS_N=2", {300, 25, 12}, 0},
        {BASE "heads=4,d=64,tq=3,kv_len=300,window=40,sinks=5,page=16,flags=causal|paged|ring|lse",
         "SPLITS=2,BLOCK_N=32,WARPS_N=2", {300, 44, 3}, 0},
        {BASE "heads=2,d=128,tq=2,kv_len=200,window=64,sinks=0,kv=int8,flags=causal|ring", "", {200, 70, 0}, 0},
        /* One warp copies a 128-token tile as 4 row groups of 32 rows: runs of
         * 16 (a page), split again where the window meets the sinks. */
        {BASE "heads=4,d=64,tq=2,kv_len=300,page=16,window=200,sinks=3,flags=causal|paged|lse",
         "BLOCK_N=128,WARPS_M=1,WARPS_N=1,SPLITS=2", {300, 130, 2}, 0},
        /* Row 0 of a tree sees no position when kv_len = tq: every split of
         * the first sequence is empty for it (o = 0, lse = -inf, no NaN). */
        {BASE "heads=4,d=64,tq=4,kv_len=200,flags=tree|lse", "SPLITS=2", {4, 200, 9}, 0},
    };
    run_all(cases, sizeof cases / sizeof cases[0]);
}

Test(decode_emu, many_rows, .timeout = 900)
{
    static const ecase cases[] = {
        {"op=decode,batch=2,kv_heads=1,heads=4,d=64,tq=16,kv_len=100,flags=causal|lse", "", {100, 16}, 0},
        {"op=decode,batch=2,kv_heads=1,heads=12,d=64,tq=3,kv_len=100,kv=fp8_e4m3,flags=causal|lse",
         "WARPS_M=2,WARPS_N=2,BLOCK_N=32,SPLITS=2", {100, 33}, 0},
        {"op=decode,batch=2,kv_heads=3,heads=3,d=64,tq=1,kv_len=90,page=32,kv=int8,out=bf16,"
         "window=16,sinks=2,flags=paged|ring|lse", "STAGES=2", {90, 10}, 0},
        {"op=decode,batch=1,kv_heads=1,heads=40,d=128,tq=1,kv_len=260,flags=lse",
         "WARPS_M=2,WARPS_N=1,BLOCK_N=128,STAGES=2,SPLITS=2", {260}, 0},
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
         "BLOCK_N=32,SPLITS=64,WARPS_N=2", {2048}, 0},
        {"op=decode,batch=2,kv_heads=1,heads=8,d=128,tq=1,kv_len=2048,flags=causal|lse",
         "BLOCK_N=32,SPLITS=64,WARPS_N=2", {2048, 40}, 1},
    };
    run_all(cases, sizeof cases / sizeof cases[0]);
}
