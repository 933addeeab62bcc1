/*
 * test_prefill.c -- prefill attention on the GPU against the float64
 * reference.
 *
 * Each case runs the public entry point (fmqa_prefill: the dispatcher's
 * choice) on the inputs of tests/support/prefill_check.h -- fresh random
 * values, layouts that catch a mixed-up stride, NaN wherever nothing may be
 * read and NaN outputs, so an unwritten element fails -- uploaded as they
 * are, and compares o and lse with ref_prefill exactly as the emulator test
 * does.  The cases cover the template's specializations: ragged batches of
 * new tokens, chunked prefill over contiguous and paged 16- and 8-bit caches,
 * group sizes, head dims, windows with sinks, no causal mask, observation-
 * window scores (FMQA_FLAG_SCORES, against ref_prefill_scores).  One line per
 * case (the chosen config with it).  And the tuner's harness (tun_case, what
 * fastmqa-tune verifies every prefill variant with) on the GPU: a correct
 * launch passes it, with its row blocks under a budget that checks only part
 * of the rows, through the public entry point and through every legal
 * template's default plan.
 */
#include <stdio.h>
#include <string.h>

#include <criterion/criterion.h>

#include "gen.h"
#include "prefill_check.h"
#include "rt.h"
#include "test_support.h"
#include "tun.h"

typedef struct gcase {
    const char *spec;
    int32_t tq[PREFILL_MAX_SEQS];
    int32_t cached[PREFILL_MAX_SEQS];
} gcase;

/* window: the observation window of a problem with FMQA_FLAG_SCORES. */
static void run_case(fmqa_ctx_t *ctx, fmqa_test_gpu *g, const gcase *c, int32_t window)
{
    fmqa_problem p = fmqa_test_problem(c->spec);
    ref_rng r;
    ref_rng_seed(&r, fmqa_test_seed(c->spec));
    prefill_inputs in;
    prefill_inputs_make(&p, c->tq, c->cached, &r, &in);
    if (p.flags & FMQA_FLAG_SCORES)
        prefill_inputs_scores(&p, window, &r, &in);
    /* The same bytes on the device, o and lse still NaN. */
    fmqa_prefill_args da = in.a;
    CUdeviceptr dev[PREFILL_MAX_BUFS];
    for (int i = 0; i < in.n_bufs; i++) {
        const void *host;
        memcpy(&host, (const char *)&in.a + in.field[i], sizeof host);
        dev[i] = fmqa_test_upload(g, host, in.bytes[i]);
        void *d = (void *)(uintptr_t)dev[i];
        memcpy((char *)&da + in.field[i], &d, sizeof d);
    }
    size_t ws = 0;
    cr_assert_eq(fmqa_prefill_workspace_size(ctx, &p, &ws), FMQA_OK, "%s: %s", c->spec,
                 fmqa_ctx_errmsg(ctx));
    CUdeviceptr d_ws = ws ? fmqa_test_alloc_poisoned(g, ws, 0xff) : 0;
    da.workspace = (void *)(uintptr_t)d_ws, da.workspace_size = ws;
    cr_assert_eq(fmqa_prefill(ctx, &p, &da, NULL), FMQA_OK, "%s: %s", c->spec,
                 fmqa_ctx_errmsg(ctx));
    const size_t o_bytes = (size_t)in.total * p.num_q_heads * p.head_dim_v * 2;
    fmqa_test_download(g, in.a.o, (CUdeviceptr)(uintptr_t)da.o, o_bytes);
    fmqa_test_download(g, in.a.lse, (CUdeviceptr)(uintptr_t)da.lse,
                       (size_t)in.total * p.num_q_heads * 4);
    fmqa_choice choice = {0};
    cr_assert_eq(fmqa_plan(ctx, &p, &choice), FMQA_OK);
    char what[512];
    snprintf(what, sizeof what, "prefill %s [%s]", c->spec, choice.config);
    prefill_inputs_check(&p, &in, in.a.o, in.a.lse, what);
    if (p.flags & FMQA_FLAG_SCORES) {
        fmqa_test_download(g, in.a.scores, (CUdeviceptr)(uintptr_t)da.scores,
                           (size_t)p.batch * p.num_kv_heads * (p.kv_len + 8) * 4);
        prefill_inputs_check_scores(&p, &in, in.a.scores, what);
    }
    for (int i = 0; i < in.n_bufs; i++)
        fmqa_test_free(g, dev[i]);
    if (d_ws)
        fmqa_test_free(g, d_ws);
}

/* The cases, with windows[i] for a scores case (windows NULL: none). */
static void run_windows(const gcase *cases, const int32_t *windows, size_t n)
{
    fmqa_ctx_t *ctx = fmqa_test_ctx();
    fmqa_test_gpu g;
    fmqa_test_gpu_open(&g);
    for (size_t i = 0; i < n; i++)
        run_case(ctx, &g, &cases[i], windows ? windows[i] : 0);
    fmqa_test_gpu_close(&g);
    fmqa_ctx_destroy(ctx);
}

static void run_all(const gcase *cases, size_t n) { run_windows(cases, NULL, n); }

#define N(a) (sizeof(a) / sizeof((a)[0]))

Test(prefill, ragged_new_tokens)
{
    static const gcase cases[] = {
        {"op=prefill,batch=4,heads=32,kv_heads=8,d=128,tq=1000,kv_len=1000,flags=causal|lse",
         {1, 17, 128, 1000}, {0}},
        {"op=prefill,batch=2,heads=8,kv_heads=1,d=64,tq=4099,kv_len=4099,q=bf16,kv=bf16,out=bf16,"
         "flags=causal|lse", {4099, 333}, {0}},
        {"op=prefill,batch=3,heads=6,kv_heads=6,d=96,tq=300,kv_len=300,flags=lse", {300, 1, 77}, {0}},
        {"op=prefill,batch=2,heads=64,kv_heads=2,d=256,tq=200,kv_len=200,flags=causal|lse",
         {200, 31}, {0}},
    };
    run_all(cases, N(cases));
}

Test(prefill, chunked_caches)
{
    static const gcase cases[] = {
        {"op=prefill,batch=3,heads=32,kv_heads=4,d=128,tq=512,kv_len=3000,page=16,"
         "flags=causal|lse|paged|kv_cache", {512, 1, 100}, {2488, 900, 0}},
        {"op=prefill,batch=2,heads=16,kv_heads=2,d=128,tq=256,kv_len=2048,kv=int8,"
         "flags=causal|lse|kv_cache", {256, 40}, {1792, 7}},
        {"op=prefill,batch=2,heads=8,kv_heads=8,d=64,tq=128,kv_len=1024,page=64,q=bf16,out=bf16,"
         "kv=fp8_e4m3,flags=causal|lse|paged|kv_cache", {128, 3}, {896, 500}},
        {"op=prefill,batch=2,heads=12,kv_heads=1,d=64,tq=200,kv_len=1500,window=256,sinks=4,"
         "flags=causal|lse|kv_cache", {200, 50}, {1300, 100}},
    };
    run_all(cases, N(cases));
}

/* SnapKV's observation-window scores: both kernels, windows shorter and
 * longer than a sequence, GQA over several row blocks, a paged 8-bit cache
 * with a sliding window and sinks (whose scores problem runs on the sm_80
 * template on a Hopper too). */
Test(prefill, observation_window_scores)
{
    static const gcase cases[] = {
        {"op=prefill,batch=3,heads=32,kv_heads=8,d=128,tq=2000,kv_len=2000,q=bf16,kv=bf16,out=bf16,"
         "flags=causal|lse|scores", {2000, 17, 300}, {0}},
        {"op=prefill,batch=2,heads=16,kv_heads=2,d=128,tq=256,kv_len=3000,page=16,kv=int8,window=1024,"
         "sinks=4,flags=causal|lse|paged|kv_cache|scores", {256, 40}, {2744, 7}},
    };
    static const int32_t windows[] = {32, 64};
    run_windows(cases, windows, N(cases));
}

/* One tun_case: poisoned, launched (plan NULL: fmqa_prefill), verified. */
static void tune_case(fmqa_ctx_t *ctx, const fmqa_problem *p, const rt_plan *plan, double ref_macs,
                      const char *what)
{
    tun_case_opts o = TUN_CASE_OPTS_INIT;
    o.ref_macs = ref_macs;
    size_t ws = 0;
    cr_assert_eq(fmqa_prefill_workspace_size(ctx, p, &ws), FMQA_OK, "%s", fmqa_ctx_errmsg(ctx));
    tun_case *tc = NULL;
    fmqa_err err;
    cr_assert_eq(tun_case_create(ctx, p, fmqa_test_seed(what), &o, ws, &tc, &err), FMQA_OK, "%s: %s",
                 what, err.msg);
    cr_assert_eq(tun_case_poison(tc, NULL, &err), FMQA_OK, "%s", err.msg);
    fmqa_status st = plan ? tun_case_run_plan(tc, plan, 0, NULL, &err) : tun_case_run_api(tc, 0, NULL, &err);
    cr_assert_eq(st, FMQA_OK, "%s: %s", what, err.msg);
    tun_report r;
    cr_assert_eq(tun_case_verify(tc, NULL, &r, &err), FMQA_OK, "%s: %s", what, err.msg);
    int64_t n;
    tun_case_checked_rows(tc, &n);
    fprintf(stderr, "tun_case %s: %s (%lld rows checked)\n", what, r.summary, (long long)n);
    cr_expect(r.pass, "%s: %s", what, r.summary);
    tun_case_destroy(tc);
}

Test(prefill, tuner_harness)
{
    fmqa_ctx_t *ctx = fmqa_test_ctx();
    static const char *const specs[] = {
        "op=prefill,batch=3,heads=32,kv_heads=8,d=128,tq=1500,kv_len=1500,q=bf16,kv=bf16,out=bf16,"
        "flags=causal|lse",
        "op=prefill,batch=2,heads=16,kv_heads=2,d=128,tq=256,kv_len=2048,page=16,kv=int8,"
        "flags=causal|lse|paged|kv_cache"};
    for (size_t i = 0; i < N(specs); i++) {
        fmqa_problem p = fmqa_test_problem(specs[i]);
        tune_case(ctx, &p, NULL, 0, specs[i]);
        tune_case(ctx, &p, NULL, 1e8, specs[i]); /* a part of the rows */
        /* every template's default, as fastmqa-tune's first trial */
        gen_lib *lib = NULL;
        fmqa_device_info dev;
        fmqa_err err;
        cr_assert_eq(fmqa_device_query(ctx, &dev), FMQA_OK);
        cr_assert_eq(gen_lib_open(NULL, &lib, &err), FMQA_OK, "%s", err.msg);
        for (const gen_template *t = gen_lib_next(lib, p.op, NULL); t; t = gen_lib_next(lib, p.op, t)) {
            gen_config c;
            rt_plan *plan = NULL;
            if (gen_default(t, &p, &dev, &c, NULL) != FMQA_OK)
                continue;
            cr_assert_eq(rt_plan_build(ctx, t, &c, &p, NULL, &plan, &err), FMQA_OK, "%s", err.msg);
            tune_case(ctx, &p, plan, 0, gen_template_name(t));
            rt_plan_free(ctx, plan);
        }
        gen_lib_close(lib);
    }
    fmqa_ctx_destroy(ctx);
}

