/*
 * test_prefill_emu.c -- the prefill template's real source run on the CPU
 * against the float64 reference (ref_prefill), no GPU needed.
 *
 * Each case goes the way of fmqa_prefill: the template's Lua (default config,
 * or one with parameters overridden) gives the launch plan, gen_render the
 * source, rt_prefill_params the kernel parameters from public
 * fmqa_prefill_args; the rendered source is compiled by the host C++ compiler
 * with tests/emu/cuda_emu.h and the kernel runs over its grid.  Inputs are
 * fresh random values; q, k and v rows carry padding between tokens and V
 * (and its scales) a layout unlike K's, so that a stride mixed up reads the
 * wrong row; cache rows no position holds (past kv_lens, unused pages), the
 * padding and the outputs are NaN, so a stray read or a missing write fails;
 * every buffer ends at an inaccessible page.  Without a C++ compiler ($CXX or
 * c++) the test is skipped.
 *
 * Cost (2-core CI machine, -O1 emulator): the cases below take about TODO s.
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

typedef int (*emu_launch_fn)(const char *entry, const fmqa_prefill_params *p,
                             const unsigned grid[3], unsigned threads, unsigned dyn_smem);

#define MAX_SEQS 8

/* One case: a problem spec (batch, tq = the largest new-token count, kv_len =
 * the largest cache length), parameters overriding the default config ("" =
 * default), the new tokens of each sequence, with FMQA_FLAG_KV_CACHE the
 * cached positions before them, and the device preset (NULL: sm_90). */
typedef struct pcase {
    const char *spec;
    const char *config;
    int32_t tq[MAX_SEQS];
    int32_t cached[MAX_SEQS];
    const char *arch;
} pcase;

static void *poisoned(size_t bytes, size_t align)
{
    return fmqa_test_guarded(bytes, align, 0xff);
}

/* Writes one random row of d elements of dtype t at element `at` of base (an
 * 8-bit row quantized, its scale at scales[sat]). */
static void put_row(fmqa_dtype t, int64_t d, ref_rng *r, void *base, int64_t at, float *scales,
                    int64_t sat)
{
    double x[256];
    ref_rng_fill(r, x, d, 1.0, 0);
    fmqa_err err;
    if (t == FMQA_DTYPE_INT8 || t == FMQA_DTYPE_FP8_E4M3)
        cr_assert_eq(ref_quantize_row(t, x, d, (uint8_t *)base + at, &scales[sat], &err), FMQA_OK,
                     "%s", err.msg);
    else
        cr_assert_eq(ref_from_double(t, x, d, (uint16_t *)base + at, &err), FMQA_OK, "%s",
                     err.msg);
}

/* The cache: K [outer][slot][head][d], V [outer][head][slot][d + 16 bytes],
 * scales [outer][slot][head] and [outer][head][slot]; outer is the sequence
 * or, paged, a page of a shuffled table with a few pages never used. */
static int64_t make_cache(const fmqa_problem *p, const int32_t *kv, ref_rng *r,
                          fmqa_prefill_args *a)
{
    const int64_t B = p->batch, Hk = p->num_kv_heads, D = p->head_dim_qk;
    const int paged = (p->flags & FMQA_FLAG_PAGED) != 0;
    const int64_t ps = paged ? p->page_size : p->kv_len;
    const int64_t per_seq = (p->kv_len + ps - 1) / ps, outer = paged ? B * per_seq + 3 : B;
    const size_t ke = fmqa_dtype_size(p->kv_dtype);
    const int64_t vrow = D + 16 / (int64_t)ke;
    a->k_stride_head = D, a->k_stride_token = Hk * D, a->k_stride_batch = ps * Hk * D;
    a->v_stride_head = ps * vrow, a->v_stride_token = vrow, a->v_stride_batch = Hk * ps * vrow;
    a->k_scale_stride_head = 1, a->k_scale_stride_token = Hk, a->k_scale_stride_batch = ps * Hk;
    a->v_scale_stride_head = ps, a->v_scale_stride_token = 1, a->v_scale_stride_batch = Hk * ps;
    void *k = poisoned(outer * ps * Hk * D * ke, 16), *v = poisoned(outer * ps * Hk * vrow * ke, 16);
    float *ks = poisoned(outer * ps * Hk * 4, 4), *vs = poisoned(outer * ps * Hk * 4, 4);
    int32_t *table = NULL;
    if (paged) {
        table = poisoned(B * per_seq * sizeof *table, 4);
        for (int64_t i = 0; i < B * per_seq; i++)
            table[i] = (int32_t)i;
        for (int64_t i = B * per_seq - 1; i > 0; i--) {
            int64_t j = ref_rng_next(r) % (i + 1);
            int32_t t = table[i];
            table[i] = table[j], table[j] = t;
        }
        a->page_table = table, a->page_table_stride = per_seq;
    }
    for (int64_t b = 0; b < B; b++)
        for (int64_t j = 0; j < kv[b]; j++) {
            int64_t o = paged ? table[b * per_seq + j / ps] : b, t = paged ? j % ps : j;
            for (int64_t h = 0; h < Hk; h++) {
                put_row(p->kv_dtype, D, r, k, o * a->k_stride_batch + t * a->k_stride_token + h * D,
                        ks, o * a->k_scale_stride_batch + t * Hk + h);
                put_row(p->kv_dtype, D, r, v,
                        o * a->v_stride_batch + t * vrow + h * a->v_stride_head, vs,
                        o * a->v_scale_stride_batch + t + h * ps);
            }
        }
    a->k = k, a->v = v;
    if (ke == 1)
        a->k_scale = ks, a->v_scale = vs;
    return paged ? outer : 0;
}

/* The new tokens' own K and V, packed [total_q, hk, d] with padding rows
 * between tokens (K) and heads (V: [hk][total_q][d + 8]). */
static void make_packed_kv(const fmqa_problem *p, int64_t total, ref_rng *r, fmqa_prefill_args *a)
{
    const int64_t Hk = p->num_kv_heads, D = p->head_dim_qk;
    a->k_stride_head = D, a->k_stride_token = Hk * D + 8;
    a->v_stride_token = D + 8, a->v_stride_head = total * (D + 8);
    uint16_t *k = poisoned(total * (Hk * D + 8) * 2, 16), *v = poisoned(Hk * total * (D + 8) * 2, 16);
    for (int64_t t = 0; t < total; t++)
        for (int64_t h = 0; h < Hk; h++) {
            put_row(p->kv_dtype, D, r, k, t * a->k_stride_token + h * D, NULL, 0);
            put_row(p->kv_dtype, D, r, v, t * a->v_stride_token + h * a->v_stride_head, NULL, 0);
        }
    a->k = k, a->v = v;
}

typedef struct inputs {
    fmqa_prefill_args a;
    int64_t total, n_pages;
} inputs;

static void make_inputs(const fmqa_problem *p, const pcase *pc, ref_rng *r, inputs *in)
{
    const int64_t B = p->batch, H = p->num_q_heads, D = p->head_dim_qk;
    const int cache = (p->flags & FMQA_FLAG_KV_CACHE) != 0;
    fmqa_prefill_args *a = &in->a;
    memset(a, 0, sizeof *a);
    cr_assert_leq(B, MAX_SEQS);
    int32_t *cu = poisoned((B + 1) * sizeof *cu, 4), *kv = poisoned(B * sizeof *kv, 4);
    cu[0] = 0;
    for (int64_t b = 0; b < B; b++) {
        cu[b + 1] = cu[b] + pc->tq[b];
        kv[b] = pc->cached[b] + pc->tq[b];
    }
    in->total = cu[B];
    a->cu_seqlens_q = cu;
    in->n_pages = 0;
    if (cache) {
        a->kv_lens = kv;
        in->n_pages = make_cache(p, kv, r, a);
    } else {
        make_packed_kv(p, in->total, r, a);
    }
    const int64_t qrow = H * D + 8, n = in->total * qrow;
    double *qd = malloc(n * sizeof *qd);
    uint16_t *q = poisoned(n * 2, 16);
    fmqa_err err;
    ref_rng_fill(r, qd, n, 1.0, p->q_dtype);
    cr_assert_eq(ref_from_double(p->q_dtype, qd, n, q, &err), FMQA_OK, "%s", err.msg);
    free(qd);
    a->q = q, a->q_stride_token = qrow, a->q_stride_head = D;
    a->o = poisoned(in->total * H * D * 2, 16);
    a->o_stride_token = H * D, a->o_stride_head = D;
    a->lse = poisoned(in->total * H * 4, 4);
}

static void run_case(const pcase *pc)
{
    gen_lib *lib = NULL;
    fmqa_err err;
    cr_assert_eq(gen_lib_open(fmqa_test_template_dir(), &lib, &err), FMQA_OK, "%s", err.msg);
    const gen_template *t = gen_lib_find(lib, "prefill");
    cr_assert_not_null(t);
    fmqa_device_info dev;
    const char *arch = pc->arch ? pc->arch : "sm_90";
    cr_assert_eq(gen_device_preset(arch, &dev, &err), FMQA_OK, "%s: %s", arch, err.msg);
    fmqa_problem p;
    cr_assert_eq(gen_problem_parse(pc->spec, &p, &err), FMQA_OK, "%s: %s", pc->spec, err.msg);
    cr_assert_eq(rt_problem_check(&p, &err), FMQA_OK, "%s: %s", pc->spec, err.msg);
    gen_config c, over;
    cr_assert_eq(gen_default(t, &p, &dev, &c, &err), FMQA_OK, "%s", err.msg);
    if (pc->config[0]) {
        cr_assert_eq(gen_config_parse(pc->config, &over, &err), FMQA_OK, "%s", err.msg);
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
    emu_launch_fn launch = (emu_launch_fn)fmqa_test_emu_build(t, &c, &p, &dev, "prefill_emu.cpp", dir);

    ref_rng r;
    uint64_t seed = fmqa_test_seed(pc->spec);
    ref_rng_seed(&r, seed);
    inputs in;
    make_inputs(&p, pc, &r, &in);
    fmqa_prefill_params prm;
    cr_assert_eq(rt_prefill_params(&plan, &in.a, &prm, &err), FMQA_OK, "%s", err.msg);
    cr_assert_eq(plan.launch.n_kernels, 1);
    const gen_kernel *k = &plan.launch.kernels[0];
    unsigned grid[3] = {k->grid[0], k->grid[1], k->grid[2]};
    cr_assert_eq(launch(k->entry, &prm, grid, k->block[0], k->shared), 0);

    const int64_t rows = in.total * p.num_q_heads, n = rows * p.head_dim_v;
    double *o = malloc(n * sizeof *o), *lse = malloc(rows * sizeof *lse);
    cr_assert_eq(ref_prefill(&p, &in.a, in.n_pages, o, lse, &err), FMQA_OK, "%s", err.msg);
    ref_cmp cmp;
    cr_assert_eq(ref_compare(p.out_dtype, in.a.o, o, n, &cmp, &err), FMQA_OK, "%s", err.msg);
    /* As decode's: ~3e-4 with f16 operands, ~2.5e-3 with bf16 (P rounded). */
    const double tol = p.out_dtype == FMQA_DTYPE_BF16 || p.kv_dtype == FMQA_DTYPE_BF16 ||
                               p.q_dtype == FMQA_DTYPE_BF16 ? 8e-3 : 1e-3;
    char cfg[GEN_CONFIG_TEXT_CAP];
    gen_config_text(&c, cfg, sizeof cfg);
    fprintf(stderr, "%s [%s] %s: o rel_l2 %.2e max %.2e bad %lld (seed %llu)\n", pc->spec, cfg,
            arch, cmp.rel_l2, cmp.max_abs, (long long)cmp.bad, (unsigned long long)seed);
    cr_expect(ref_cmp_ok(&cmp, tol, -1), "%s [%s]: o rel_l2 %g, max %g at %lld, %lld bad",
              pc->spec, cfg, cmp.rel_l2, cmp.max_abs, (long long)cmp.worst, (long long)cmp.bad);
    if (p.flags & FMQA_FLAG_LSE) {
        cr_assert_eq(ref_compare(FMQA_DTYPE_F32, in.a.lse, lse, rows, &cmp, &err), FMQA_OK);
        cr_expect(ref_cmp_ok(&cmp, 1e-4, -1), "%s [%s]: lse rel_l2 %g, max %g at %lld, %lld bad",
                  pc->spec, cfg, cmp.rel_l2, cmp.max_abs, (long long)cmp.worst,
                  (long long)cmp.bad);
    }
    free(o);
    free(lse);
    char rm[1100];
    snprintf(rm, sizeof rm, "rm -rf %s", dir);
    (void)system(rm);
    gen_lib_close(lib);
}

static void run_all(const pcase *cases, size_t n)
{
    for (size_t i = 0; i < n; i++)
        run_case(&cases[i]);
}

/* Lengths 1, 17, 128 alone and mixed in one ragged batch (new tokens only). */
Test(prefill_emu, ragged_lengths, .timeout = 900)
{
    static const pcase cases[] = {
        {"op=prefill,batch=1,heads=8,kv_heads=1,d=64,tq=1,kv_len=1,flags=causal|lse", "", {1}, {0}, NULL},
        {"op=prefill,batch=1,heads=6,kv_heads=1,d=128,tq=17,kv_len=17,flags=causal|lse", "", {17}, {0}, NULL},
        {"op=prefill,batch=1,heads=2,kv_heads=2,d=64,tq=128,kv_len=128,q=bf16,kv=bf16,out=bf16,flags=causal|lse",
         "", {128}, {0}, NULL},
        {"op=prefill,batch=4,heads=8,kv_heads=1,d=64,tq=128,kv_len=128,flags=causal|lse", "", {17, 1, 128, 0}, {0}, NULL},
    };
    run_all(cases, sizeof cases / sizeof cases[0]);
}

/* Chunked prefill: new tokens after a cached prefix, contiguous and paged,
 * 16-bit and 8-bit (fp8 on the sm_80 bit path and the sm_89+ cvt path). */
Test(prefill_emu, chunked_cache, .timeout = 900)
{
    static const pcase cases[] = {
        {"op=prefill,batch=3,heads=8,kv_heads=2,d=64,tq=40,kv_len=200,flags=causal|lse|kv_cache", "",
         {40, 1, 17}, {160, 0, 70}, NULL},
        {"op=prefill,batch=2,heads=6,kv_heads=1,d=128,tq=33,kv_len=150,page=16,q=bf16,kv=bf16,out=bf16,"
         "flags=causal|lse|paged|kv_cache", "", {33, 20}, {117, 3}, NULL},
        {"op=prefill,batch=2,heads=8,kv_heads=1,d=64,tq=30,kv_len=130,page=32,kv=int8,flags=causal|lse|paged|kv_cache",
         "BLOCK_N=32", {30, 9}, {100, 64}, NULL},
        {"op=prefill,batch=2,heads=4,kv_heads=2,d=96,tq=24,kv_len=100,page=16,kv=fp8_e4m3,flags=causal|paged|kv_cache",
         "", {24, 5}, {76, 31}, "sm_80"},
        {"op=prefill,batch=1,heads=4,kv_heads=1,d=64,tq=20,kv_len=90,q=bf16,out=bf16,kv=fp8_e4m3,flags=causal|lse|kv_cache",
         "BLOCK_N=32,STAGES=3", {20}, {70}, NULL},
    };
    run_all(cases, sizeof cases / sizeof cases[0]);
}

/* Group sizes 1, 6, 8, 32 (rows of a KV head packed into M) and head dims 64
 * to 256, with BLOCK_M / WARPS / stages the defaults do not take. */
Test(prefill_emu, groups_and_head_dims, .timeout = 900)
{
    static const pcase cases[] = {
        {"op=prefill,batch=2,heads=3,kv_heads=3,d=256,tq=50,kv_len=50,flags=causal|lse", "", {50, 13}, {0}, NULL},
        {"op=prefill,batch=1,heads=32,kv_heads=1,d=64,tq=9,kv_len=9,flags=causal|lse", "BLOCK_M=64,WARPS=2", {9}, {0}, NULL},
        {"op=prefill,batch=1,heads=16,kv_heads=2,d=96,tq=24,kv_len=24,q=bf16,kv=bf16,out=f16,flags=causal|lse",
         "BLOCK_M=128,WARPS=8,BLOCK_N=128", {24}, {0}, NULL},
        {"op=prefill,batch=2,heads=12,kv_heads=2,d=128,tq=30,kv_len=30,flags=causal",
         "BLOCK_M=64,WARPS=4,BLOCK_N=32,STAGES=3", {30, 29}, {0}, NULL},
    };
    run_all(cases, sizeof cases / sizeof cases[0]);
}

/* Sliding windows with sinks: the window edge and the end of the sinks
 * cross tiles; without a causal mask as well. */
Test(prefill_emu, windows_and_sinks, .timeout = 900)
{
    static const pcase cases[] = {
        {"op=prefill,batch=2,heads=2,kv_heads=1,d=64,tq=150,kv_len=150,window=40,sinks=4,flags=causal|lse",
         "BLOCK_N=32", {150, 77}, {0}, NULL},
        {"op=prefill,batch=2,heads=4,kv_heads=1,d=64,tq=50,kv_len=220,window=70,sinks=33,page=16,"
         "flags=causal|lse|paged|kv_cache", "BLOCK_N=32,BLOCK_M=64,WARPS=4", {50, 8}, {170, 90}, NULL},
        {"op=prefill,batch=2,heads=2,kv_heads=2,d=64,tq=40,kv_len=40,flags=lse", "", {40, 7}, {0}, NULL},
        {"op=prefill,batch=1,heads=2,kv_heads=1,d=64,tq=30,kv_len=100,window=16,sinks=2,kv=int8,flags=lse|kv_cache",
         "BLOCK_N=32", {30}, {70}, NULL},
    };
    run_all(cases, sizeof cases / sizeof cases[0]);
}

/* A long sequence: 1000 new tokens (16 row blocks, up to 16 tiles each). */
Test(prefill_emu, long_sequence, .timeout = 900)
{
    static const pcase cases[] = {
        {"op=prefill,batch=1,heads=2,kv_heads=1,d=64,tq=1000,kv_len=1000,flags=causal|lse", "", {1000}, {0}, NULL},
    };
    run_all(cases, sizeof cases / sizeof cases[0]);
}
