/*
 * test_prefill_args.c -- fmqa_prefill's gate without a GPU: prefill problems
 * the library refuses (each with the field named), argument checks that stop
 * a call before any GPU work, and the clear NO_DRIVER / NO_DEVICE answer of
 * good calls, workspace queries and plans on a machine without one.
 */
#define _POSIX_C_SOURCE 200809L
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "fastmqa.h"
#include "rt.h"
#include "test_support.h"

/* 2 sequences of up to 512 new tokens, 32 heads over 8 KV heads, d = 128. */
static fmqa_problem prefill_problem(void)
{
    fmqa_problem p;
    fmqa_problem_init(&p);
    p.op = FMQA_OP_PREFILL;
    p.batch = 2;
    p.num_q_heads = 32;
    p.num_kv_heads = 8;
    p.q_tokens = p.kv_len = 512;
    p.flags = FMQA_FLAG_CAUSAL;
    return p;
}

static fmqa_problem cache_problem(void)
{
    fmqa_problem p = prefill_problem();
    p.kv_len = 4096;
    p.kv_dtype = FMQA_DTYPE_INT8;
    p.flags |= FMQA_FLAG_KV_CACHE | FMQA_FLAG_PAGED;
    p.page_size = 16;
    return p;
}

Test(prefill_problem, good_problems_pass)
{
    fmqa_ctx_t *ctx = fmqa_test_ctx();
    fmqa_problem p = prefill_problem();
    cr_assert_eq(fmqa_problem_validate(ctx, &p), FMQA_OK, "%s", fmqa_ctx_errmsg(ctx));
    p = cache_problem();
    cr_assert_eq(fmqa_problem_validate(ctx, &p), FMQA_OK, "%s", fmqa_ctx_errmsg(ctx));
    p.window = 1024, p.sink_tokens = 4;
    cr_assert_eq(fmqa_problem_validate(ctx, &p), FMQA_OK, "%s", fmqa_ctx_errmsg(ctx));
    fmqa_ctx_destroy(ctx);
}

typedef struct bad_case {
    const char *what;
    fmqa_problem p;
    const char *msg; /* substring of the message */
} bad_case;

Test(prefill_problem, each_bad_field_is_named)
{
    bad_case cases[] = {
        {"kv_len beyond the new tokens", prefill_problem(), "differs from q_tokens 512"},
        {"an 8-bit type for new tokens", prefill_problem(), "kv_dtype int8 differs from q_dtype f16"},
        {"a paged layout without a cache", prefill_problem(), "PAGED without FMQA_FLAG_KV_CACHE"},
        {"more new tokens than the cache", cache_problem(), "q_tokens 512 exceeds kv_len 100"},
        {"the cache flag on decode", prefill_problem(), "FMQA_FLAG_KV_CACHE is a prefill flag"},
        {"too many sequences", prefill_problem(), "batch 70000 / num_kv_heads 8"},
        {"too many query rows", prefill_problem(), "exceed the kernels' 32-bit index"},
    };
    cases[0].p.kv_len = 1024;
    cases[1].p.kv_dtype = FMQA_DTYPE_INT8;
    cases[2].p.flags |= FMQA_FLAG_PAGED, cases[2].p.page_size = 16;
    cases[3].p.kv_len = 100;
    cases[4].p.op = FMQA_OP_DECODE, cases[4].p.q_tokens = 1, cases[4].p.flags |= FMQA_FLAG_KV_CACHE;
    cases[5].p.batch = 70000;
    cases[6].p.q_tokens = cases[6].p.kv_len = 1 << 20;
    fmqa_ctx_t *ctx = fmqa_test_ctx();
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cr_expect_eq(fmqa_problem_validate(ctx, &cases[i].p), FMQA_ERR_INVALID_ARGUMENT, "%s",
                     cases[i].what);
        cr_expect(strstr(fmqa_ctx_errmsg(ctx), cases[i].msg), "%s: message '%s'",
                  cases[i].what, fmqa_ctx_errmsg(ctx));
    }
    fmqa_ctx_destroy(ctx);
}

/* Packed [total_q, h, d] rows for prefill_problem (q, o: 32 heads; k, v: 8). */
static fmqa_prefill_args good_args(void)
{
    static _Alignas(16) char buf[64];
    static int32_t cu[3] = {0, 100, 612};
    fmqa_prefill_args a;
    memset(&a, 0, sizeof a);
    a.q = a.k = a.v = a.o = buf;
    a.cu_seqlens_q = cu;
    a.q_stride_head = a.o_stride_head = a.k_stride_head = a.v_stride_head = 128;
    a.q_stride_token = a.o_stride_token = 32 * 128;
    a.k_stride_token = a.v_stride_token = 8 * 128;
    return a;
}

typedef struct bad_args {
    const char *what;
    fmqa_problem p;
    fmqa_prefill_args a;
    const char *msg;
} bad_args;

Test(prefill_args, bad_arguments_are_reported_before_any_gpu_work)
{
    static int32_t odd[4];
    bad_args cases[] = {
        {"no cu_seqlens_q", prefill_problem(), good_args(), "args.cu_seqlens_q is NULL"},
        {"misaligned cu_seqlens_q", prefill_problem(), good_args(), "cu_seqlens_q is not 4-byte"},
        {"no k", prefill_problem(), good_args(), "args.k is NULL"},
        {"a k token stride of 8 bytes", prefill_problem(), good_args(), "args.k stride 1"},
        {"o rows that overlap", prefill_problem(), good_args(), "writes would overlap"},
        {"no lse with FMQA_FLAG_LSE", prefill_problem(), good_args(), "args.lse is NULL"},
        {"a negative scale", prefill_problem(), good_args(), "sm_scale -1 is negative"},
        {"no kv_lens with a cache", cache_problem(), good_args(), "args.kv_lens is NULL"},
        {"no scales for an 8-bit cache", cache_problem(), good_args(), "k_scale is NULL"},
        {"no page table", cache_problem(), good_args(), "page_table is NULL"},
        {"more rows than batch * q_tokens", prefill_problem(), good_args(), "args.total_q"},
        {"a negative row count", prefill_problem(), good_args(), "args.total_q -1"},
        {"misaligned learned sinks", prefill_problem(), good_args(), "sinks is not 4-byte"},
    };
    cases[0].a.cu_seqlens_q = NULL;
    cases[1].a.cu_seqlens_q = (const int32_t *)((const char *)odd + 2);
    cases[2].a.k = NULL;
    cases[3].a.k_stride_token = 4;
    cases[4].a.o_stride_token = 64;
    cases[5].p.flags |= FMQA_FLAG_LSE;
    cases[6].a.sm_scale = -1.0f;
    static int32_t lens[2] = {600, 700}, table[2 * 256];
    static float scales[4];
    cases[7].a.k_scale = cases[7].a.v_scale = scales;
    cases[7].a.page_table = table, cases[7].a.page_table_stride = 256;
    cases[8].a.kv_lens = cases[9].a.kv_lens = lens;
    cases[9].a.k_scale = cases[9].a.v_scale = scales;
    cases[10].a.total_q = (int64_t)cases[10].p.batch * cases[10].p.q_tokens + 1;
    cases[11].a.total_q = -1;
    cases[12].a.sinks = (const float *)((const char *)odd + 2);
    fmqa_ctx_t *ctx = fmqa_test_ctx();
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cr_expect_eq(fmqa_prefill(ctx, &cases[i].p, &cases[i].a, NULL), FMQA_ERR_INVALID_ARGUMENT,
                     "%s", cases[i].what);
        cr_expect(strstr(fmqa_ctx_errmsg(ctx), cases[i].msg), "%s: message '%s'", cases[i].what,
                  fmqa_ctx_errmsg(ctx));
    }
    fmqa_problem p = prefill_problem();
    fmqa_prefill_args a = good_args();
    cr_assert_eq(fmqa_prefill(ctx, &p, NULL, NULL), FMQA_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(fmqa_ctx_errmsg(ctx), "args is NULL"));
    p.op = FMQA_OP_DECODE;
    cr_assert_eq(fmqa_prefill(ctx, &p, &a, NULL), FMQA_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(fmqa_ctx_errmsg(ctx), "this call needs prefill"), "%s", fmqa_ctx_errmsg(ctx));
    fmqa_ctx_destroy(ctx);
}

Test(prefill_args, good_arguments_without_a_gpu_get_no_driver)
{
    char why[256];
    if (fmqa_test_gpu_available(why, sizeof why))
        cr_skip_test("a GPU is present");
    fmqa_ctx_t *ctx = fmqa_test_ctx();
    fmqa_problem p = prefill_problem();
    fmqa_prefill_args a = good_args();
    fmqa_status st = fmqa_prefill(ctx, &p, &a, NULL);
    cr_assert(st == FMQA_ERR_NO_DRIVER || st == FMQA_ERR_NO_DEVICE, "%d: %s", st,
              fmqa_ctx_errmsg(ctx));
    size_t ws;
    cr_assert_eq(fmqa_prefill_workspace_size(ctx, &p, &ws), st);
    cr_assert_eq(fmqa_prefill_workspace_size(ctx, &p, NULL), FMQA_ERR_INVALID_ARGUMENT);
    fmqa_choice c;
    cr_assert_eq(fmqa_plan(ctx, &p, &c), st);
    fmqa_ctx_destroy(ctx);
}

/* A plan's workspace larger than the one given is refused, naming both sizes
 * and the query that tells it (known only with a plan: rt_prefill_params). */
Test(prefill_args, a_short_workspace_names_both_sizes)
{
    fmqa_problem p = prefill_problem();
    fmqa_prefill_args a = good_args();
    static _Alignas(16) char ws[256];
    a.workspace = ws, a.workspace_size = sizeof ws;
    a.sm_scale = 0.5f;
    rt_plan plan;
    memset(&plan, 0, sizeof plan);
    plan.problem = p;
    plan.launch.workspace = 4096;
    fmqa_prefill_params prm;
    fmqa_err err = {0};
    cr_assert_eq(rt_prefill_params(&plan, &a, &prm, &err), FMQA_ERR_INVALID_ARGUMENT);
    cr_expect_str_eq(err.msg, "args.workspace: 256 bytes given, 4096 needed "
                              "(fmqa_prefill_workspace_size)");
    plan.launch.workspace = 0;
    cr_expect_eq(rt_prefill_params(&plan, &a, &prm, &err), FMQA_OK, "%s", err.msg);
    cr_expect_null(prm.workspace);
    cr_expect_float_eq(prm.sm_scale_log2, 0.5f * 1.4426950408889634f, 1e-7f);
}
