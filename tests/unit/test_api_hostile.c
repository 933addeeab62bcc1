/*
 * test_api_hostile.c -- the public API against hostile callers, without a GPU:
 * NULL contexts, problems, arguments and outputs on every entry point; every
 * enum field out of range; every flag bit outside FMQA_FLAG_ALL; sizes at 0,
 * negative and INT32_MAX; flags an op does not serve (a CSR page table for
 * fmqa_compress, whose kernel reads a 2-D table; a tree mask for MLA decode,
 * whose arguments have none).  Each must return a failing status with a
 * message that names the culprit, never crash or reach the device
 * (NO_DRIVER / NO_DEVICE here would mean the checks let it through).
 */
#define _POSIX_C_SOURCE 200809L /* setenv */
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>
#include <criterion/redirect.h>

#include "fastmqa.h"
#include "test_support.h"

/* The call failed before any device work, with status `want` and a message
 * that contains `needle`. */
#define EXPECT_REFUSED(ctx, call, want, needle)                                            \
    do {                                                                                   \
        fmqa_status st_ = (call);                                                          \
        cr_expect_eq(st_, (want), "%s: %s (%s)", #call, fmqa_status_string(st_),           \
                     fmqa_ctx_errmsg(ctx));                                                \
        cr_expect(strstr(fmqa_ctx_errmsg(ctx), (needle)) != NULL,                          \
                  "%s: message '%s' does not name '%s'", #call, fmqa_ctx_errmsg(ctx),      \
                  (needle));                                                               \
    } while (0)

static fmqa_problem decode_problem(void)
{
    fmqa_problem p;
    fmqa_problem_init(&p);
    p.batch = 2, p.num_q_heads = 8, p.num_kv_heads = 2, p.kv_len = 256;
    return p;
}

Test(api_hostile, null_context_problem_args_and_outputs)
{
    fmqa_problem p = decode_problem();
    size_t bytes;
    fmqa_choice choice;
    fmqa_level lvl;
    fmqa_device_info info;
    /* NULL ctx: a status, no crash (nothing can hold a message) */
    cr_expect_eq(fmqa_problem_validate(NULL, NULL), FMQA_ERR_INVALID_ARGUMENT);
    cr_expect_eq(fmqa_plan(NULL, &p, &choice), FMQA_ERR_INVALID_ARGUMENT);
    cr_expect_eq(fmqa_decode(NULL, &p, NULL, NULL), FMQA_ERR_INVALID_ARGUMENT);
    cr_expect_eq(fmqa_mla_decode(NULL, &p, NULL, NULL), FMQA_ERR_INVALID_ARGUMENT);
    cr_expect_eq(fmqa_append(NULL, &p, NULL, NULL), FMQA_ERR_INVALID_ARGUMENT);
    cr_expect_eq(fmqa_prefill(NULL, &p, NULL, NULL), FMQA_ERR_INVALID_ARGUMENT);
    cr_expect_eq(fmqa_compress(NULL, &p, NULL, NULL), FMQA_ERR_INVALID_ARGUMENT);
    cr_expect_eq(fmqa_decode_workspace_size(NULL, NULL, &bytes), FMQA_ERR_INVALID_ARGUMENT);
    cr_expect_eq(fmqa_prefill_workspace_size(NULL, NULL, NULL), FMQA_ERR_INVALID_ARGUMENT);
    cr_expect_eq(fmqa_compress_workspace_size(NULL, NULL, NULL), FMQA_ERR_INVALID_ARGUMENT);
    cr_expect_eq(fmqa_device_query(NULL, &info), FMQA_ERR_INVALID_ARGUMENT);
    cr_expect_eq(fmqa_level_from_name(NULL, NULL, &lvl), FMQA_ERR_INVALID_ARGUMENT);
    cr_expect_eq(fmqa_level_policy_tune(NULL, NULL, 1, NULL, NULL), FMQA_ERR_INVALID_ARGUMENT);
    cr_expect_eq(fmqa_level_policy_preset(NULL, FMQA_LEVEL_BALANCED, NULL, NULL),
                 FMQA_ERR_INVALID_ARGUMENT);
    cr_expect_eq(fmqa_level_problem(NULL, NULL, NULL, 1, NULL), FMQA_ERR_INVALID_ARGUMENT);
    cr_expect_eq(fmqa_memory_report_compute(NULL, NULL, NULL, 1, 0, NULL),
                 FMQA_ERR_INVALID_ARGUMENT);
    cr_expect_eq(fmqa_ctx_create(NULL, NULL), FMQA_ERR_INVALID_ARGUMENT);
    cr_expect_eq(fmqa_default_db_path(NULL, 0), FMQA_ERR_INVALID_ARGUMENT);
    cr_expect_eq(fmqa_nvrtc_version(NULL, NULL), FMQA_ERR_INVALID_ARGUMENT);
    cr_expect(fmqa_ctx_errmsg(NULL)[0] != '\0');
    fmqa_ctx_destroy(NULL);
    fmqa_problem_init(NULL);
    cr_expect(fmqa_status_string((fmqa_status)-1) != NULL);
    cr_expect(fmqa_status_string((fmqa_status)INT_MAX) != NULL);
    cr_expect_null(fmqa_dtype_name((fmqa_dtype)0));
    cr_expect_eq(fmqa_dtype_size((fmqa_dtype)-7), 0);
    cr_expect_null(fmqa_op_name((fmqa_op)99));
    cr_expect_null(fmqa_level_name((fmqa_level)0));

    /* a context, NULL everything else: the message names what is missing */
    fmqa_ctx_t *ctx = fmqa_test_ctx();
    EXPECT_REFUSED(ctx, fmqa_problem_validate(ctx, NULL), FMQA_ERR_INVALID_ARGUMENT,
                   "problem is NULL");
    EXPECT_REFUSED(ctx, fmqa_plan(ctx, NULL, NULL), FMQA_ERR_INVALID_ARGUMENT, "problem");
    EXPECT_REFUSED(ctx, fmqa_decode(ctx, NULL, NULL, NULL), FMQA_ERR_INVALID_ARGUMENT,
                   "problem is NULL");
    EXPECT_REFUSED(ctx, fmqa_decode(ctx, &p, NULL, NULL), FMQA_ERR_INVALID_ARGUMENT,
                   "args is NULL");
    EXPECT_REFUSED(ctx, fmqa_decode_workspace_size(ctx, &p, NULL), FMQA_ERR_INVALID_ARGUMENT,
                   "bytes is NULL");
    p.op = FMQA_OP_MLA_DECODE, p.num_kv_heads = 1, p.head_dim_qk = 576, p.head_dim_v = 512;
    EXPECT_REFUSED(ctx, fmqa_mla_decode(ctx, &p, NULL, NULL), FMQA_ERR_INVALID_ARGUMENT,
                   "args is NULL");
    p = decode_problem();
    p.op = FMQA_OP_APPEND;
    EXPECT_REFUSED(ctx, fmqa_append(ctx, &p, NULL, NULL), FMQA_ERR_INVALID_ARGUMENT,
                   "args is NULL");
    p.op = FMQA_OP_COMPRESS, p.num_q_heads = p.num_kv_heads;
    EXPECT_REFUSED(ctx, fmqa_compress(ctx, &p, NULL, NULL), FMQA_ERR_INVALID_ARGUMENT,
                   "args is NULL");
    p = decode_problem();
    p.op = FMQA_OP_PREFILL, p.kv_len = p.q_tokens = 64;
    EXPECT_REFUSED(ctx, fmqa_prefill(ctx, &p, NULL, NULL), FMQA_ERR_INVALID_ARGUMENT,
                   "args is NULL");
    /* an op that is not the call's */
    fmqa_decode_args da;
    memset(&da, 0, sizeof da);
    EXPECT_REFUSED(ctx, fmqa_decode(ctx, &p, &da, NULL), FMQA_ERR_INVALID_ARGUMENT,
                   "this call needs decode");
    p.op = (fmqa_op)77;
    EXPECT_REFUSED(ctx, fmqa_decode(ctx, &p, &da, NULL), FMQA_ERR_INVALID_ARGUMENT, "unknown");
    EXPECT_REFUSED(ctx, fmqa_device_query(ctx, NULL), FMQA_ERR_INVALID_ARGUMENT, "info");
    EXPECT_REFUSED(ctx, fmqa_level_from_name(ctx, "", &lvl), FMQA_ERR_INVALID_ARGUMENT,
                   "unknown level");
    EXPECT_REFUSED(ctx, fmqa_level_from_name(ctx, "balanced\n", &lvl),
                   FMQA_ERR_INVALID_ARGUMENT, "unknown level");
    fmqa_ctx_destroy(ctx);
}

/* One problem field set to a hostile value, and a word the message must hold. */
typedef struct bad_field {
    const char *what;
    void (*set)(fmqa_problem *p, int64_t v);
    int64_t values[4];
    int nvalues;
    const char *needle;
} bad_field;

#define SETTER(field, type) \
    static void set_##field(fmqa_problem *p, int64_t v) { p->field = (type)v; }
SETTER(op, fmqa_op)
SETTER(q_dtype, fmqa_dtype)
SETTER(kv_dtype, fmqa_dtype)
SETTER(out_dtype, fmqa_dtype)
SETTER(rope, fmqa_rope)
SETTER(kv_scale_granularity, fmqa_kv_scale_granularity)
SETTER(batch, int32_t)
SETTER(num_q_heads, int32_t)
SETTER(num_kv_heads, int32_t)
SETTER(head_dim_qk, int32_t)
SETTER(head_dim_v, int32_t)
SETTER(q_tokens, int32_t)
SETTER(kv_len, int32_t)
SETTER(page_size, int32_t)
SETTER(window, int32_t)
SETTER(sink_tokens, int32_t)
SETTER(draft_slots, int32_t)
SETTER(rope_dim, int32_t)

Test(api_hostile, every_enum_and_size_out_of_range)
{
    static const bad_field fields[] = {
        {"op", set_op, {0, -1, 6, INT_MAX}, 4, "problem.op"},
        {"q_dtype", set_q_dtype, {0, -1, FMQA_DTYPE_F32, FMQA_DTYPE_INT8}, 4, "problem.q_dtype"},
        {"kv_dtype", set_kv_dtype, {0, -1, FMQA_DTYPE_F32, 6}, 4, "problem.kv_dtype"},
        {"out_dtype", set_out_dtype, {0, INT_MIN, FMQA_DTYPE_F32, FMQA_DTYPE_FP8_E4M3}, 4,
         "problem.out_dtype"},
        {"rope", set_rope, {-1, 3, INT_MAX, INT_MIN}, 4, "problem.rope"},
        {"kv_scale_granularity", set_kv_scale_granularity, {-1, 3, INT_MAX, INT_MIN}, 4,
         "problem.kv_scale_granularity"},
        {"batch", set_batch, {0, -1, INT_MIN}, 3, "problem.batch"},
        {"num_q_heads", set_num_q_heads, {0, -1, INT_MIN}, 3, "problem.num_q_heads"},
        {"num_kv_heads", set_num_kv_heads, {0, -8, 3, INT_MAX}, 4, "num_kv_heads"},
        {"head_dim_qk", set_head_dim_qk, {0, -128, 1025, INT_MAX}, 4, "head_dim"},
        {"head_dim_v", set_head_dim_v, {0, -128, 1025, INT_MAX}, 4, "head_dim"},
        {"q_tokens", set_q_tokens, {0, -1, 17, INT_MAX}, 4, "q_tokens"},
        {"kv_len", set_kv_len, {0, -1, INT_MIN}, 3, "problem.kv_len"},
        {"page_size", set_page_size, {16, -16, INT_MAX}, 3, "page_size"},
        {"window", set_window, {-1, INT_MIN}, 2, "window"},
        {"sink_tokens", set_sink_tokens, {-1, 4}, 2, "sink_tokens"},
        {"draft_slots", set_draft_slots, {-1, 8}, 2, "draft_slots"},
        {"rope_dim", set_rope_dim, {-4, 64, 3}, 3, "rope_dim"},
    };
    fmqa_ctx_t *ctx = fmqa_test_ctx();
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        for (int j = 0; j < fields[i].nvalues; j++) {
            fmqa_problem p = decode_problem();
            fields[i].set(&p, fields[i].values[j]);
            fmqa_status st = fmqa_problem_validate(ctx, &p);
            cr_expect(st == FMQA_ERR_INVALID_ARGUMENT || st == FMQA_ERR_UNSUPPORTED,
                      "%s = %lld: %s", fields[i].what, (long long)fields[i].values[j],
                      fmqa_status_string(st));
            cr_expect(strstr(fmqa_ctx_errmsg(ctx), fields[i].needle) != NULL,
                      "%s = %lld: message '%s' does not name '%s'", fields[i].what,
                      (long long)fields[i].values[j], fmqa_ctx_errmsg(ctx), fields[i].needle);
        }
    }
    /* every bit outside FMQA_FLAG_ALL, one at a time */
    for (int bit = 0; bit < 32; bit++) {
        if (FMQA_FLAG_ALL & (1u << bit))
            continue;
        fmqa_problem p = decode_problem();
        p.flags = 1u << bit;
        EXPECT_REFUSED(ctx, fmqa_problem_validate(ctx, &p), FMQA_ERR_INVALID_ARGUMENT,
                       "unknown bits");
    }
    /* NaN, infinite and negative soft-caps */
    static const float caps[] = {-1.0f, 1.0f / 0.0f, 0.0f / 0.0f, 1e-40f};
    for (size_t i = 0; i < sizeof caps / sizeof caps[0]; i++) {
        fmqa_problem p = decode_problem();
        p.logit_softcap = caps[i];
        EXPECT_REFUSED(ctx, fmqa_problem_validate(ctx, &p), FMQA_ERR_INVALID_ARGUMENT,
                       "logit_softcap");
    }
    /* huge sizes whose products overflow int32 or int64 */
    fmqa_problem p = decode_problem();
    p.batch = INT_MAX, p.num_q_heads = INT_MAX, p.num_kv_heads = 1, p.kv_len = INT_MAX;
    p.q_tokens = 16;
    cr_expect_eq(fmqa_problem_validate(ctx, &p), FMQA_ERR_INVALID_ARGUMENT, "%s",
                 fmqa_ctx_errmsg(ctx));
    p = decode_problem();
    p.flags = FMQA_FLAG_RING, p.window = INT_MAX, p.sink_tokens = INT_MAX, p.draft_slots = 1;
    EXPECT_REFUSED(ctx, fmqa_problem_validate(ctx, &p), FMQA_ERR_INVALID_ARGUMENT, "2^31-1");
    fmqa_ctx_destroy(ctx);
}

/* fmqa_compress reads a 2-D page table (compress.cuh): a CSR problem would
 * pass a NULL page_table check and the kernel would dereference it. */
Test(api_hostile, compress_refuses_a_csr_page_table)
{
    fmqa_ctx_t *ctx = fmqa_test_ctx();
    fmqa_problem p = decode_problem();
    p.op = FMQA_OP_COMPRESS, p.num_q_heads = p.num_kv_heads;
    p.flags = FMQA_FLAG_PAGED | FMQA_FLAG_PAGE_CSR, p.page_size = 16;
    EXPECT_REFUSED(ctx, fmqa_problem_validate(ctx, &p), FMQA_ERR_UNSUPPORTED,
                   "FMQA_FLAG_PAGE_CSR");
    static _Alignas(16) char cache[2][64 * 2 * 128 * 2];
    static int32_t lens[2][2];
    fmqa_compress_args a;
    memset(&a, 0, sizeof a);
    a.k = cache[0], a.v = cache[1];
    a.k_stride_head = a.v_stride_head = 128;
    a.k_stride_token = a.v_stride_token = 2 * 128;
    a.k_stride_batch = a.v_stride_batch = 16 * 2 * 128;
    a.kv_lens = lens[0], a.new_lens = lens[1];
    a.policy.sink_tokens = 4, a.policy.recent = 8;
    EXPECT_REFUSED(ctx, fmqa_compress(ctx, &p, &a, NULL), FMQA_ERR_UNSUPPORTED,
                   "FMQA_FLAG_PAGE_CSR");
    fmqa_ctx_destroy(ctx);
}

/* fmqa_mla_decode_args has no tree_mask: a tree-mask MLA problem is
 * UNSUPPORTED (fastmqa.h), not a missing args.tree_mask. */
Test(api_hostile, mla_decode_tree_mask_is_unsupported_not_a_missing_field)
{
    fmqa_ctx_t *ctx = fmqa_test_ctx();
    fmqa_problem p = decode_problem();
    p.op = FMQA_OP_MLA_DECODE, p.num_kv_heads = 1, p.head_dim_qk = 576, p.head_dim_v = 512;
    p.q_tokens = 4, p.flags = FMQA_FLAG_TREE_MASK;
    EXPECT_REFUSED(ctx, fmqa_problem_validate(ctx, &p), FMQA_ERR_UNSUPPORTED, "tree mask");
    static _Alignas(16) uint16_t buf[2 * 256 * 576];
    static const int32_t lens[2] = {256, 10};
    fmqa_mla_decode_args a;
    memset(&a, 0, sizeof a);
    a.q = a.kv = a.o = buf;
    a.kv_lens = lens;
    a.q_stride_head = 576, a.q_stride_token = 8 * 576, a.q_stride_batch = 4 * 8 * 576;
    a.o_stride_head = 512, a.o_stride_token = 8 * 512, a.o_stride_batch = 4 * 8 * 512;
    a.kv_stride_token = 576, a.kv_stride_batch = 256 * 576;
    EXPECT_REFUSED(ctx, fmqa_mla_decode(ctx, &p, &a, NULL), FMQA_ERR_UNSUPPORTED, "tree mask");
    fmqa_ctx_destroy(ctx);
}

/* A FASTMQA_LOG that names no level is ignored with a warning (a typo used to
 * leave the level at the options' without a word). */
Test(api_hostile, junk_log_level_in_the_environment_is_named, .init = cr_redirect_stderr)
{
    setenv("FASTMQA_LOG", "verbose", 1);
    fmqa_ctx_t *ctx = fmqa_test_ctx();
    fmqa_ctx_destroy(ctx);
    unsetenv("FASTMQA_LOG");
    fflush(stderr);
    char text[512] = "";
    size_t n = fread(text, 1, sizeof text - 1, cr_get_redirected_stderr());
    text[n] = '\0';
    cr_expect(strstr(text, "FASTMQA_LOG='verbose' is not quiet, error, warn, info, debug") != NULL,
              "stderr: '%s'", text);
}
