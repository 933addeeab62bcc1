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
 * group sizes, head dims, windows with sinks, no causal mask.  One line per
 * case (the chosen config with it).
 */
#include <stdio.h>
#include <string.h>

#include <criterion/criterion.h>

#include "prefill_check.h"
#include "test_support.h"

typedef struct gcase {
    const char *spec;
    int32_t tq[PREFILL_MAX_SEQS];
    int32_t cached[PREFILL_MAX_SEQS];
} gcase;

static void run_case(fmqa_ctx_t *ctx, fmqa_test_gpu *g, const gcase *c)
{
    fmqa_problem p = fmqa_test_problem(c->spec);
    ref_rng r;
    ref_rng_seed(&r, fmqa_test_seed(c->spec));
    prefill_inputs in;
    prefill_inputs_make(&p, c->tq, c->cached, &r, &in);
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
    for (int i = 0; i < in.n_bufs; i++)
        fmqa_test_free(g, dev[i]);
    if (d_ws)
        fmqa_test_free(g, d_ws);
}

static void run_all(const gcase *cases, size_t n)
{
    fmqa_options o = FMQA_OPTIONS_INIT;
    o.db_path = "";
    fmqa_ctx_t *ctx = NULL;
    cr_assert_eq(fmqa_ctx_create(&o, &ctx), FMQA_OK, "%s", fmqa_ctx_errmsg(ctx));
    fmqa_test_gpu g;
    fmqa_test_gpu_open(&g);
    for (size_t i = 0; i < n; i++)
        run_case(ctx, &g, &cases[i]);
    fmqa_test_gpu_close(&g);
    fmqa_ctx_destroy(ctx);
}

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
