/*
 * test_prefill_sm90.c -- prefill_sm90 on an sm_90 GPU (H100 / H200) against
 * the float64 reference, the way the dispatcher will run it: the template's
 * default config through rt_plan_build (NVRTC for sm_90a, module loaded),
 * the tensor maps from rt_prefill_sm90_maps (cuTensorMapEncodeTiled), one
 * launch, outputs poisoned first.  Inputs as in unit_prefill_sm90_emu: a
 * ragged batch, padded q and k rows, v head-major.  Skips (exit 77 through
 * gpu_main.c) without a GPU, and with a message on a GPU that is not 9.0.
 */
#define _POSIX_C_SOURCE 200809L

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "fastmqa.h"
#include "gen.h"
#include "ref.h"
#include "rt.h"
#include "rt_cuda.h"
#include "test_support.h"

#define MAX_SEQS 8

typedef struct gcase {
    const char *spec;
    int lens[MAX_SEQS];
} gcase;

static void run_case(fmqa_ctx_t *ctx, const gcase *gc)
{
    fmqa_err err;
    fmqa_device_info dev;
    cr_assert_eq(fmqa_device_query(ctx, &dev), FMQA_OK, "%s", fmqa_ctx_errmsg(ctx));
    if (dev.cc_major != 9 || dev.cc_minor != 0)
        cr_skip_test("prefill_sm90 needs compute capability 9.0, the GPU is %d.%d", dev.cc_major, dev.cc_minor);
    gen_lib *lib;
    cr_assert_eq(rt_templates(ctx, &lib, &err), FMQA_OK, "%s", err.msg);
    const gen_template *t = gen_lib_find(lib, "prefill_sm90");
    cr_assert_not_null(t);
    fmqa_problem p;
    cr_assert_eq(gen_problem_parse(gc->spec, &p, &err), FMQA_OK, "%s", err.msg);
    gen_config c;
    cr_assert_eq(gen_default(t, &p, &dev, &c, &err), FMQA_OK, "%s", err.msg);
    rt_plan *plan = NULL;
    cr_assert_eq(rt_plan_build(ctx, t, &c, &p, NULL, &plan, &err), FMQA_OK, "%s", err.msg);
    int64_t block_n = 0;
    cr_assert(gen_config_get(&c, "BLOCK_N", &block_n));

    const int B = p.batch, H = p.num_q_heads, Hk = p.num_kv_heads, D = p.head_dim_qk;
    const fmqa_dtype dt = p.q_dtype;
    int cu[MAX_SEQS + 1] = {0};
    for (int b = 0; b < B; b++)
        cu[b + 1] = cu[b] + gc->lens[b];
    const long long total = cu[B];
    const long long q_st = (long long)H * D + 8, k_st = (long long)Hk * D + 8, v_st = D + 8, v_sh = total * v_st;
    const size_t nq = (size_t)(total * q_st), nk = (size_t)(total * k_st), nv = (size_t)(Hk * v_sh);
    uint16_t *q = malloc(nq * 2), *k = malloc(nk * 2), *v = malloc(nv * 2), *o = malloc((size_t)(total * H * D) * 2);
    float *lse = malloc((size_t)(total * H) * 4);
    memset(q, 0xff, nq * 2), memset(k, 0xff, nk * 2), memset(v, 0xff, nv * 2);
    double *qd = malloc((size_t)(total * H * D) * sizeof *qd), *kd = malloc((size_t)(total * Hk * D) * sizeof *kd),
           *vd = malloc((size_t)(total * Hk * D) * sizeof *vd), row[256];
    ref_rng r;
    ref_rng_seed(&r, fmqa_test_seed(gc->spec));
    for (long long tk = 0; tk < total; tk++) {
        for (int hh = 0; hh < H; hh++) {
            ref_rng_fill(&r, row, D, 1.0, dt);
            ref_from_double(dt, row, D, q + tk * q_st + hh * D, &err);
            memcpy(qd + (tk * H + hh) * D, row, (size_t)D * sizeof *row);
        }
        for (int hh = 0; hh < Hk; hh++) {
            ref_rng_fill(&r, row, D, 1.0, dt);
            ref_from_double(dt, row, D, k + tk * k_st + hh * D, &err);
            memcpy(kd + (tk * Hk + hh) * D, row, (size_t)D * sizeof *row);
            ref_rng_fill(&r, row, D, 1.0, dt);
            ref_from_double(dt, row, D, v + hh * v_sh + tk * v_st, &err);
            memcpy(vd + (tk * Hk + hh) * D, row, (size_t)D * sizeof *row);
        }
    }

    fmqa_test_gpu g;
    fmqa_test_gpu_open(&g);
    const CUdeviceptr dq = fmqa_test_upload(&g, q, nq * 2), dk = fmqa_test_upload(&g, k, nk * 2),
                      dv = fmqa_test_upload(&g, v, nv * 2), dcu = fmqa_test_upload(&g, cu, sizeof cu),
                      dout = fmqa_test_alloc_poisoned(&g, (size_t)(total * H * D) * 2, 0xff),
                      dlse = fmqa_test_alloc_poisoned(&g, (size_t)(total * H) * 4, 0xff);
    fmqa_prefill_params a;
    memset(&a, 0, sizeof a);
    a.q = (const void *)dq, a.q_st = q_st, a.q_sh = D;
    a.k = (const void *)dk, a.k_st = k_st, a.k_sh = D;
    a.v = (const void *)dv, a.v_st = v_st, a.v_sh = v_sh;
    a.cu_seqlens_q = (const int *)dcu;
    a.o = (void *)dout, a.o_st = (long long)H * D, a.o_sh = D;
    a.lse = (p.flags & FMQA_FLAG_LSE) ? (float *)dlse : NULL;
    a.sm_scale = (float)(1.0 / sqrt((double)D));
    a.sm_scale_log2 = (float)(a.sm_scale * 1.4426950408889634);
    a.batch = B, a.num_q_heads = H, a.num_kv_heads = Hk, a.q_tokens_max = p.q_tokens, a.kv_len_max = p.kv_len;
    static fmqa_prefill_sm90_params P;
    cr_assert_eq(rt_prefill_sm90_maps(g.cu, &a, total, D, (int)block_n, &P, &err), FMQA_OK, "%s", err.msg);
    cr_assert_eq(rt_enter(ctx, &err), FMQA_OK, "%s", err.msg);
    fmqa_status st = rt_plan_launch(ctx, plan, &P, NULL, &err);
    if (st == FMQA_OK && g.cu->cuCtxSynchronize() != CUDA_SUCCESS)
        st = fmqa_err_set(&err, FMQA_ERR_CUDA, "the kernel failed");
    rt_leave(ctx);
    cr_assert_eq(st, FMQA_OK, "%s: %s", gc->spec, err.msg);
    fmqa_test_download(&g, o, dout, (size_t)(total * H * D) * 2);
    fmqa_test_download(&g, lse, dlse, (size_t)(total * H) * 4);

    double *want = malloc((size_t)(total * H * D) * sizeof *want), *want_lse = malloc((size_t)(total * H) * sizeof *want_lse);
    for (int b = 0; b < B; b++) {
        const long long s0 = cu[b], L = gc->lens[b];
        ref_attn_shape s;
        memset(&s, 0, sizeof s);
        s.batch = 1, s.q_tokens = L, s.kv_len = L, s.num_q_heads = H, s.num_kv_heads = Hk;
        s.head_dim_qk = D, s.head_dim_v = D, s.flags = p.flags & FMQA_FLAG_CAUSAL;
        cr_assert_eq(ref_attention(&s, qd + s0 * H * D, kd + s0 * Hk * D, vd + s0 * Hk * D, want + s0 * H * D,
                                   want_lse + s0 * H, &err),
                     FMQA_OK, "%s", err.msg);
    }
    ref_cmp cmp;
    cr_assert_eq(ref_compare(dt, o, want, total * H * D, &cmp, &err), FMQA_OK, "%s", err.msg);
    fprintf(stderr, "prefill_sm90 %s: o rel_l2 %.2e max %.2e bad %lld\n", gc->spec, cmp.rel_l2, cmp.max_abs,
            (long long)cmp.bad);
    cr_expect(ref_cmp_ok(&cmp, dt == FMQA_DTYPE_BF16 ? 1e-2 : 2e-3, -1), "%s: o rel_l2 %g, max %g, %lld bad",
              gc->spec, cmp.rel_l2, cmp.max_abs, (long long)cmp.bad);
    if (p.flags & FMQA_FLAG_LSE) {
        cr_assert_eq(ref_compare(FMQA_DTYPE_F32, lse, want_lse, total * H, &cmp, &err), FMQA_OK);
        cr_expect(ref_cmp_ok(&cmp, 1e-4, -1), "%s: lse rel_l2 %g, %lld bad", gc->spec, cmp.rel_l2,
                  (long long)cmp.bad);
    }
    fmqa_test_free(&g, dq), fmqa_test_free(&g, dk), fmqa_test_free(&g, dv), fmqa_test_free(&g, dcu);
    fmqa_test_free(&g, dout), fmqa_test_free(&g, dlse);
    fmqa_test_gpu_close(&g);
    rt_plan_free(ctx, plan);
    free(q), free(k), free(v), free(o), free(lse), free(qd), free(kd), free(vd), free(want), free(want_lse);
}

Test(prefill_sm90, against_reference, .timeout = 900)
{
    fmqa_ctx_t *ctx = fmqa_test_ctx();
    static const gcase cases[] = {
        {"op=prefill,batch=4,heads=8,kv_heads=1,d=64,tq=1000,kv_len=1000,q=f16,kv=f16,out=f16,flags=causal|lse",
         {1, 17, 1000, 300}},
        {"op=prefill,batch=2,heads=16,kv_heads=2,d=128,tq=4099,kv_len=4099,q=bf16,kv=bf16,out=bf16,flags=causal|lse",
         {4099, 128}},
        {"op=prefill,batch=1,heads=4,kv_heads=4,d=128,tq=777,kv_len=777,q=f16,kv=f16,out=f16,flags=lse", {777}},
        {"op=prefill,batch=2,heads=8,kv_heads=1,d=256,tq=513,kv_len=513,q=bf16,kv=bf16,out=bf16,flags=causal",
         {513, 64}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        run_case(ctx, &cases[i]);
    fmqa_ctx_destroy(ctx);
}
