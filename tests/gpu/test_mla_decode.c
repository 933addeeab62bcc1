/*
 * test_mla_decode.c -- MLA decode on the GPU against the float64 reference.
 *
 * Each case runs through the public entry point fmqa_mla_decode (the
 * dispatcher's choice: tuned or the template default) or an explicit
 * mla_decode config, on fresh random inputs (the tuner's harness, tun_case:
 * one latent cache that is K and V) with poisoned outputs and workspace, and
 * is compared with ref_decode on the exact stored cache (dequantized for fp8;
 * the error against the unquantized latent is printed separately).  Head
 * counts 16, 32, 64, 128 (DeepSeek-V3's 128 and its tensor-parallel shards),
 * 1 to 4 query tokens, lengths 1, 17, 1000, 4099, pages of 16 and 64
 * (shuffled), bf16, f16 and fp8 latents, forced splits.  Without a GPU the
 * binary prints why and exits 77 (skipped).
 */
#include <stdio.h>
#include <string.h>

#include <criterion/criterion.h>

#include "test_support.h"
#include "tun.h"

typedef struct mcase {
    const char *name;
    int32_t batch, heads, tq, kv_len;
    fmqa_dtype q, kv;
    uint32_t flags;
    int32_t page;
    int32_t lens[4];    /* zeros: drawn by the seed */
    const char *config; /* NULL: the dispatcher's choice */
} mcase;

static fmqa_problem to_problem(const mcase *c)
{
    fmqa_problem p;
    fmqa_problem_init(&p);
    p.op = FMQA_OP_MLA_DECODE;
    p.batch = c->batch, p.num_q_heads = c->heads, p.num_kv_heads = 1;
    p.head_dim_qk = 576, p.head_dim_v = 512;
    p.q_tokens = c->tq, p.kv_len = c->kv_len;
    p.q_dtype = p.out_dtype = c->q, p.kv_dtype = c->kv;
    p.flags = c->flags, p.page_size = c->page;
    return p;
}

/* The mla_decode default config with some parameters overridden. */
static const rt_plan *forced_plan(fmqa_ctx_t *ctx, const fmqa_problem *p, const char *text,
                                  rt_plan **owned)
{
    fmqa_err err;
    gen_lib *lib;
    gen_config cfg, over;
    fmqa_device_info dev;
    cr_assert_eq(rt_templates(ctx, &lib, &err), FMQA_OK, "%s", err.msg);
    cr_assert_eq(fmqa_device_query(ctx, &dev), FMQA_OK);
    const gen_template *t = gen_lib_find(lib, "mla_decode");
    cr_assert_not_null(t, "no mla_decode template");
    cr_assert_eq(gen_default(t, p, &dev, &cfg, &err), FMQA_OK, "%s", err.msg);
    cr_assert_eq(gen_config_parse(text, &over, &err), FMQA_OK, "%s", err.msg);
    for (int i = 0; i < over.n; i++)
        cr_assert_eq(gen_config_set(&cfg, over.p[i].name, over.p[i].value, &err), FMQA_OK);
    cr_assert_eq(rt_plan_build(ctx, t, &cfg, p, NULL, owned, &err), FMQA_OK, "%s: %s", text,
                 err.msg);
    return *owned;
}

static void run_case(fmqa_ctx_t *ctx, const mcase *c)
{
    fmqa_err err;
    fmqa_problem p = to_problem(c);
    tun_case_opts opts = TUN_CASE_OPTS_INIT;
    opts.lens = c->lens[0] ? c->lens : NULL;
    rt_plan *owned = NULL;
    const rt_plan *plan = c->config ? forced_plan(ctx, &p, c->config, &owned) : NULL;
    size_t ws = 0;
    if (plan)
        ws = (size_t)plan->launch.workspace;
    else
        cr_assert_eq(fmqa_decode_workspace_size(ctx, &p, &ws), FMQA_OK, "%s: %s", c->name,
                     fmqa_ctx_errmsg(ctx));
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
    fprintf(stderr, "mla_decode %-26s %-4s %s [%s]\n", c->name, r.pass ? "PASS" : "FAIL",
            r.summary, plan ? c->config : choice.config);
    if (r.full.n)
        fprintf(stderr, "    quantization error vs unquantized latent: rel_l2 %.3e max_abs %.3e\n",
                r.full.rel_l2, r.full.max_abs);
    cr_expect(r.pass, "%s (%s): %s", c->name, plan ? c->config : choice.config, r.summary);
    tun_case_destroy(tc);
    rt_plan_free(ctx, owned);
}

static void run_all(const mcase *cases, size_t n)
{
    fmqa_ctx_t *ctx = fmqa_test_ctx();
    for (size_t i = 0; i < n; i++)
        run_case(ctx, &cases[i]);
    fmqa_ctx_destroy(ctx);
}

#define F16 FMQA_DTYPE_F16
#define BF16 FMQA_DTYPE_BF16
#define FP8 FMQA_DTYPE_FP8_E4M3
#define CAUSAL (FMQA_FLAG_CAUSAL | FMQA_FLAG_LSE)
#define PAGED (CAUSAL | FMQA_FLAG_PAGED)
#define N(a) (sizeof(a) / sizeof((a)[0]))

Test(mla_decode, heads_and_lengths)
{
    static const mcase cases[] = {
        {"h16 bf16", 3, 16, 1, 4099, BF16, BF16, CAUSAL, 0, {1, 17, 4099}, NULL},
        {"h32 bf16 paged64", 3, 32, 1, 4099, BF16, BF16, PAGED, 64, {4099, 1000, 17}, NULL},
        {"h64 f16 paged16", 3, 64, 1, 1000, F16, F16, PAGED, 16, {1000, 1, 17}, NULL},
        {"h128 bf16", 3, 128, 1, 4099, BF16, BF16, CAUSAL, 0, {4099, 17, 1000}, NULL},
        {"h128 bf16 paged64 b64", 64, 128, 1, 2048, BF16, BF16, PAGED, 64, {0}, NULL},
    };
    run_all(cases, N(cases));
}

Test(mla_decode, query_tokens_fp8_splits)
{
    static const mcase cases[] = {
        {"h16 tq2 bf16", 3, 16, 2, 1000, BF16, BF16, PAGED, 64, {1000, 2, 17}, NULL},
        {"h32 tq4 bf16", 3, 32, 4, 1000, BF16, BF16, CAUSAL, 0, {1000, 4, 99}, NULL},
        {"h128 tq2 bf16", 2, 128, 2, 1000, BF16, BF16, PAGED, 64, {1000, 33}, NULL},
        {"h16 fp8 paged64", 3, 16, 1, 4099, BF16, FP8, PAGED, 64, {4099, 17, 1}, NULL},
        {"h128 fp8 tq2", 3, 128, 2, 4099, BF16, FP8, CAUSAL, 0, {4099, 1000, 2}, NULL},
        {"h16 splits 8", 2, 16, 1, 4099, BF16, BF16, PAGED, 64, {4099, 1000}, "SPLITS=8"},
        {"h64 fp8 splits 4 wd2", 2, 64, 3, 4099, F16, FP8, PAGED, 16, {4099, 100},
         "SPLITS=4,WARPS_D=2,BLOCK_N=32"},
    };
    run_all(cases, N(cases));
}
