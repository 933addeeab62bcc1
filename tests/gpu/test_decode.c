/*
 * test_decode.c -- decode attention on the GPU against the float64 reference.
 *
 * Every specialization the decode template offers is run through the public
 * entry point (fmqa_decode: the dispatcher's default variant) on fresh random
 * inputs with poisoned outputs, and compared with ref_attention on the exact
 * stored cache (dequantized for 8-bit caches: the kernel's own error; the
 * error against the unquantized inputs is printed separately).  Split-KV is
 * also forced through explicit configs.  Each case prints one line, so the log
 * of a run is the table of what was verified.
 */
#include <stdio.h>
#include <string.h>

#include <criterion/criterion.h>

#include "test_support.h"
#include "tun.h"

typedef struct dcase {
    const char *name;
    int32_t batch, heads, kv_heads, d, tq, kv_len;
    fmqa_dtype q, kv;
    uint32_t flags;
    int32_t page, window, sinks;
    int32_t lens[4];   /* per-sequence lengths; zeros: drawn by the seed */
    const char *config; /* NULL: the dispatcher's choice */
} dcase;

static fmqa_problem to_problem(const dcase *c)
{
    fmqa_problem p;
    fmqa_problem_init(&p);
    p.batch = c->batch;
    p.num_q_heads = c->heads;
    p.num_kv_heads = c->kv_heads;
    p.head_dim_qk = p.head_dim_v = c->d;
    p.q_tokens = c->tq;
    p.kv_len = c->kv_len;
    p.q_dtype = p.out_dtype = c->q;
    p.kv_dtype = c->kv;
    p.flags = c->flags;
    p.page_size = c->page;
    p.window = c->window;
    p.sink_tokens = c->sinks;
    return p;
}

/* A plan for the decode template's default config with some parameters
 * overridden ("SPLITS=4"). */
static const rt_plan *forced_plan(fmqa_ctx_t *ctx, const fmqa_problem *p, const char *text,
                                  rt_plan **owned)
{
    fmqa_err err;
    gen_lib *lib;
    gen_config cfg, over;
    fmqa_device_info dev;
    cr_assert_eq(rt_templates(ctx, &lib, &err), FMQA_OK, "%s", err.msg);
    cr_assert_eq(fmqa_device_query(ctx, &dev), FMQA_OK);
    const gen_template *t = gen_lib_find(lib, "decode");
    cr_assert_not_null(t, "no decode template");
    cr_assert_eq(gen_default(t, p, &dev, &cfg, &err), FMQA_OK, "%s", err.msg);
    cr_assert_eq(gen_config_parse(text, &over, &err), FMQA_OK, "%s", err.msg);
    for (int i = 0; i < over.n; i++)
        cr_assert_eq(gen_config_set(&cfg, over.p[i].name, over.p[i].value, &err), FMQA_OK);
    cr_assert_eq(rt_plan_build(ctx, t, &cfg, p, NULL, owned, &err), FMQA_OK, "%s: %s", text,
                 err.msg);
    return *owned;
}

/* Runs problem p of case c (its name, lengths and config) with learned sink
 * logits when sinks is not NULL, and verifies it against the reference. */
static void run_problem(fmqa_ctx_t *ctx, const dcase *c, const fmqa_problem *pp,
                        const float *sinks)
{
    fmqa_err err;
    fmqa_problem p = *pp;
    tun_case_opts opts = TUN_CASE_OPTS_INIT;
    opts.lens = c->lens[0] ? c->lens : NULL;
    opts.sinks = sinks;
    rt_plan *owned = NULL;
    const rt_plan *plan = NULL;
    size_t ws = 0;
    if (c->config)
        plan = forced_plan(ctx, &p, c->config, &owned);
    else
        cr_assert_eq(fmqa_decode_workspace_size(ctx, &p, &ws), FMQA_OK, "%s: %s", c->name,
                     fmqa_ctx_errmsg(ctx));
    if (plan)
        ws = (size_t)plan->launch.workspace;

    tun_case *tc = NULL;
    cr_assert_eq(tun_case_create(ctx, &p, fmqa_test_seed(c->name), &opts, ws, &tc, &err),
                 FMQA_OK, "%s: %s", c->name, err.msg);
    cr_assert_eq(tun_case_poison(tc, NULL, &err), FMQA_OK, "%s", err.msg);
    fmqa_status st = plan ? tun_case_run_plan(tc, plan, 0, NULL, &err)
                          : tun_case_run_api(tc, 0, NULL, &err);
    cr_assert_eq(st, FMQA_OK, "%s: launch: %s", c->name, err.msg);
    tun_report r;
    cr_assert_eq(tun_case_verify(tc, NULL, &r, &err), FMQA_OK, "%s: %s", c->name, err.msg);

    fmqa_choice choice = {0};
    if (!plan)
        fmqa_plan(ctx, &p, &choice);
    fprintf(stderr, "decode %-28s %-4s %s [%s]\n", c->name, r.pass ? "PASS" : "FAIL", r.summary,
            plan ? c->config : choice.config);
    if (r.full.n)
        fprintf(stderr, "    quantization error vs unquantized inputs: rel_l2 %.3e max_abs %.3e\n",
                r.full.rel_l2, r.full.max_abs);
    cr_expect(r.pass, "%s (%s): %s", c->name, plan ? c->config : choice.config, r.summary);
    tun_case_destroy(tc);
    rt_plan_free(ctx, owned);
}

static void run_case(fmqa_ctx_t *ctx, const dcase *c)
{
    fmqa_problem p = to_problem(c);
    run_problem(ctx, c, &p, NULL);
}

static void run_all(const dcase *cases, size_t n)
{
    fmqa_ctx_t *ctx = fmqa_test_ctx();
    for (size_t i = 0; i < n; i++)
        run_case(ctx, &cases[i]);
    fmqa_ctx_destroy(ctx);
}

#define F16 FMQA_DTYPE_F16
#define BF16 FMQA_DTYPE_BF16
#define I8 FMQA_DTYPE_INT8
#define FP8 FMQA_DTYPE_FP8_E4M3
#define CAUSAL FMQA_FLAG_CAUSAL
#define N(a) (sizeof(a) / sizeof((a)[0]))

Test(decode, group_sizes_and_odd_lengths)
{
    static const dcase cases[] = {
        {"mha g1 b3", 3, 8, 8, 128, 1, 1000, F16, F16, CAUSAL, 0, 0, 0, {1, 17, 1000}, NULL},
        {"gqa g4 b3", 3, 32, 8, 128, 1, 1000, F16, F16, CAUSAL, 0, 0, 0, {17, 1000, 1}, NULL},
        {"gqa g6 b1", 1, 12, 2, 128, 1, 4099, F16, F16, CAUSAL, 0, 0, 0, {4099}, NULL},
        {"gqa g8 b3", 3, 64, 8, 128, 1, 4099, F16, F16, CAUSAL, 0, 0, 0, {4099, 1, 17}, NULL},
        {"mqa g32 b3", 3, 32, 1, 128, 1, 4099, F16, F16, CAUSAL, 0, 0, 0, {1000, 4099, 17}, NULL},
        {"mqa g32 b1 long", 1, 32, 1, 128, 1, 32768, F16, F16, CAUSAL, 0, 0, 0, {32768}, NULL},
        {"g128", 1, 128, 1, 128, 1, 1000, F16, F16, CAUSAL, 0, 0, 0, {999}, NULL},
    };
    run_all(cases, N(cases));
}

Test(decode, head_dims_and_dtypes)
{
    static const dcase cases[] = {
        {"d64 f16", 3, 32, 1, 64, 1, 1000, F16, F16, CAUSAL, 0, 0, 0, {0}, NULL},
        {"d96 f16", 3, 32, 4, 96, 1, 1000, F16, F16, CAUSAL, 0, 0, 0, {0}, NULL},
        {"d256 f16", 3, 16, 2, 256, 1, 1000, F16, F16, CAUSAL, 0, 0, 0, {0}, NULL},
        {"bf16", 3, 32, 1, 128, 1, 1000, BF16, BF16, CAUSAL, 0, 0, 0, {0}, NULL},
        {"int8 f16", 3, 32, 1, 128, 1, 4099, F16, I8, CAUSAL, 0, 0, 0, {4099, 17, 1}, NULL},
        {"fp8 f16", 3, 32, 1, 128, 1, 4099, F16, FP8, CAUSAL, 0, 0, 0, {4099, 17, 1}, NULL},
        {"int8 bf16 gqa", 3, 32, 8, 128, 1, 1000, BF16, I8, CAUSAL, 0, 0, 0, {0}, NULL},
        {"fp8 bf16 d64", 3, 32, 1, 64, 1, 1000, BF16, FP8, CAUSAL, 0, 0, 0, {0}, NULL},
    };
    run_all(cases, N(cases));
}

Test(decode, paged_window_ring)
{
    static const dcase cases[] = {
        {"paged 16", 3, 32, 1, 128, 1, 1000, F16, F16, CAUSAL | FMQA_FLAG_PAGED, 16, 0, 0, {0}, NULL},
        {"paged 64 gqa", 3, 32, 8, 128, 1, 4099, F16, F16, CAUSAL | FMQA_FLAG_PAGED, 64, 0, 0, {0}, NULL},
        {"paged int8", 3, 32, 1, 128, 1, 1000, F16, I8, CAUSAL | FMQA_FLAG_PAGED, 32, 0, 0, {0}, NULL},
        {"window", 3, 32, 1, 128, 1, 4099, F16, F16, CAUSAL, 0, 512, 0, {4099, 300, 17}, NULL},
        {"window sinks", 3, 32, 1, 128, 1, 4099, F16, F16, CAUSAL, 0, 512, 4, {4099, 1000, 17}, NULL},
        {"ring sinks", 3, 32, 1, 128, 1, 4099, F16, F16, CAUSAL | FMQA_FLAG_RING, 0, 256, 4, {4099, 100, 17}, NULL},
        {"ring paged fp8", 3, 32, 1, 128, 1, 4099, F16, FP8, CAUSAL | FMQA_FLAG_RING | FMQA_FLAG_PAGED, 16, 256, 4, {4099, 1000, 5}, NULL},
    };
    run_all(cases, N(cases));
}

Test(decode, speculative_tokens_tree_lse)
{
    static const dcase cases[] = {
        {"tq4 causal", 3, 32, 1, 128, 4, 1000, F16, F16, CAUSAL, 0, 0, 0, {0}, NULL},
        {"tq16 causal gqa", 3, 32, 8, 128, 16, 1000, F16, F16, CAUSAL, 0, 0, 0, {1000, 16, 17}, NULL},
        {"tq8 tree", 3, 32, 1, 128, 8, 1000, F16, F16, CAUSAL | FMQA_FLAG_TREE_MASK, 0, 0, 0, {0}, NULL},
        {"tq4 window ring", 3, 32, 1, 128, 4, 4099, F16, I8, CAUSAL | FMQA_FLAG_RING, 0, 128, 4, {4099, 600, 4}, NULL},
        {"lse", 3, 32, 1, 128, 1, 1000, F16, F16, CAUSAL | FMQA_FLAG_LSE, 0, 0, 0, {0}, NULL},
        {"lse tq4 bf16", 3, 32, 4, 128, 4, 1000, BF16, BF16, CAUSAL | FMQA_FLAG_LSE, 0, 0, 0, {0}, NULL},
    };
    run_all(cases, N(cases));
}

Test(decode, forced_split_kv)
{
    static const dcase cases[] = {
        {"splits 4", 3, 32, 1, 128, 1, 4099, F16, F16, CAUSAL | FMQA_FLAG_LSE, 0, 0, 0, {4099, 1, 17}, "SPLITS=4"},
        {"splits 16 int8", 1, 32, 1, 128, 1, 32768, F16, I8, CAUSAL, 0, 0, 0, {30000}, "SPLITS=16"},
        {"splits 8 tq4 paged", 3, 32, 8, 128, 4, 4099, F16, F16, CAUSAL | FMQA_FLAG_PAGED, 64, 0, 0, {0}, "SPLITS=8"},
    };
    run_all(cases, N(cases));
}

/* The sm_90 bulk pipeline (BULK=1: a producer warp's cp.async.bulk copies
 * into an mbarrier ring; decode.cuh, "Load pipeline"): contiguous, paged, an
 * 8-bit ring with a window, forced splits.  Below sm_90 decode.lua refuses it,
 * so the cases are skipped there. */
Test(decode, bulk_pipeline_sm90)
{
    static const dcase cases[] = {
        {"bulk mqa", 3, 32, 1, 128, 1, 4099, F16, F16, CAUSAL | FMQA_FLAG_LSE, 0, 0, 0, {4099, 1, 17}, "BULK=1"},
        {"bulk splits 8 tq4 paged", 3, 32, 8, 128, 4, 4099, F16, F16, CAUSAL | FMQA_FLAG_PAGED, 64, 0, 0, {0},
         "BULK=1,SPLITS=8"},
        {"bulk tq4 window ring int8", 3, 32, 1, 128, 4, 4099, F16, I8, CAUSAL | FMQA_FLAG_RING, 0, 128, 4,
         {4099, 600, 4}, "BULK=1"},
        {"bulk fp8 bf16 d64", 3, 16, 2, 64, 1, 4099, BF16, FP8, CAUSAL | FMQA_FLAG_LSE, 0, 0, 0, {0}, "BULK=1,SPLITS=4"},
    };
    fmqa_ctx_t *ctx = fmqa_test_ctx();
    fmqa_device_info dev;
    cr_assert_eq(fmqa_device_query(ctx, &dev), FMQA_OK);
    fmqa_ctx_destroy(ctx);
    if (dev.cc_major < 9)
        cr_skip_test("BULK=1 needs sm_90 (compute capability %d.%d here)", dev.cc_major, dev.cc_minor);
    run_all(cases, N(cases));
}

/* Learned sink logits (one per query head, some outweighing every score) with
 * and without split-KV, windows and query tokens; logit soft-capping with a cap
 * that bends the scores, on 16- and 8-bit caches, alone and with sinks. */
Test(decode, sinks_and_softcap)
{
    static const dcase cases[] = {
        {"sinks", 3, 32, 1, 128, 1, 4099, F16, F16, CAUSAL | FMQA_FLAG_LSE, 0, 0, 0, {4099, 1, 17}, NULL},
        {"sinks splits 8", 3, 32, 8, 128, 1, 4099, F16, F16, CAUSAL | FMQA_FLAG_LSE, 0, 0, 0, {4099, 1, 17}, "SPLITS=8"},
        {"sinks tq4 window int8", 3, 32, 1, 128, 4, 4099, F16, I8, CAUSAL | FMQA_FLAG_LSE, 0, 512, 4, {4099, 600, 4}, "SPLITS=4"},
        {"softcap", 3, 32, 1, 128, 1, 4099, F16, F16, CAUSAL | FMQA_FLAG_LSE, 0, 0, 0, {0}, NULL},
        {"softcap fp8 bf16 tq2", 3, 32, 4, 128, 2, 4099, BF16, FP8, CAUSAL | FMQA_FLAG_LSE, 0, 0, 0, {0}, "SPLITS=4"},
        {"softcap sinks paged", 3, 32, 8, 128, 1, 4099, F16, F16, CAUSAL | FMQA_FLAG_PAGED | FMQA_FLAG_LSE, 16, 0, 0, {0}, NULL},
    };
    float sinks[32];
    for (int h = 0; h < 32; h++)
        sinks[h] = (float)((h * 37) % 12) - 4.0f; /* -4 .. 7 */
    fmqa_ctx_t *ctx = fmqa_test_ctx();
    for (size_t i = 0; i < N(cases); i++) {
        fmqa_problem p = to_problem(&cases[i]);
        if (strstr(cases[i].name, "softcap"))
            p.logit_softcap = 2.0f;
        run_problem(ctx, &cases[i], &p, strstr(cases[i].name, "sinks") ? sinks : NULL);
    }
    fmqa_ctx_destroy(ctx);
}

/* A ring with draft slots: a verification step of 4 query tokens whose early
 * drafts see their whole window, and the single-token step after it. */
Test(decode, ring_draft_slots)
{
    static const dcase cases[] = {
        {"ring drafts tq4", 3, 32, 1, 128, 4, 4099, F16, I8, CAUSAL | FMQA_FLAG_RING | FMQA_FLAG_LSE, 0, 128, 4, {4099, 600, 4}, NULL},
        {"ring drafts tq1 paged", 3, 32, 1, 128, 1, 4099, F16, F16, CAUSAL | FMQA_FLAG_RING | FMQA_FLAG_PAGED, 16, 128, 4, {4099, 600, 5}, NULL},
    };
    fmqa_ctx_t *ctx = fmqa_test_ctx();
    for (size_t i = 0; i < N(cases); i++) {
        fmqa_problem p = to_problem(&cases[i]);
        p.draft_slots = 3;
        run_problem(ctx, &cases[i], &p, NULL);
    }
    fmqa_ctx_destroy(ctx);
}
