/*
 * test_runtime.c -- the public layer without a GPU: status strings, context
 * creation from versioned options, per-thread error messages, default paths,
 * problem validation and argument checks, and the clear NO_DRIVER / NO_DEVICE
 * answers of calls that need a GPU.
 */
#define _POSIX_C_SOURCE 200809L
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "fastmqa.h"
#include "test_support.h"

static fmqa_problem decode_problem(void)
{
    fmqa_problem p;
    fmqa_problem_init(&p);
    p.batch = 2;
    p.num_q_heads = 32;
    p.num_kv_heads = 8;
    p.kv_len = 4096;
    p.flags = FMQA_FLAG_CAUSAL;
    return p;
}

Test(status, every_status_has_a_distinct_name)
{
    for (int a = FMQA_OK; a <= FMQA_ERR_INTERNAL; a++) {
        cr_assert_str_neq(fmqa_status_string(a), "unknown status");
        for (int b = a + 1; b <= FMQA_ERR_INTERNAL; b++)
            cr_assert_str_neq(fmqa_status_string(a), fmqa_status_string(b));
    }
    cr_assert_str_eq(fmqa_status_string((fmqa_status)999), "unknown status");
}

Test(status, dtype_and_op_names)
{
    cr_assert_str_eq(fmqa_dtype_name(FMQA_DTYPE_FP8_E4M3), "fp8_e4m3");
    cr_assert_eq(fmqa_dtype_size(FMQA_DTYPE_BF16), 2);
    cr_assert_eq(fmqa_dtype_size(FMQA_DTYPE_INT8), 1);
    cr_assert_null(fmqa_dtype_name((fmqa_dtype)77));
    cr_assert_eq(fmqa_dtype_size((fmqa_dtype)77), 0);
    cr_assert_str_eq(fmqa_op_name(FMQA_OP_MLA_DECODE), "mla_decode");
    cr_assert_null(fmqa_op_name((fmqa_op)0));
}

Test(ctx, null_options_give_defaults)
{
    fmqa_ctx_t *ctx = NULL;
    cr_assert_eq(fmqa_ctx_create(NULL, &ctx), FMQA_OK);
    cr_assert_str_eq(fmqa_ctx_errmsg(ctx), "");
    fmqa_ctx_destroy(ctx);
    fmqa_ctx_destroy(NULL);
}

Test(ctx, unknown_options_version_is_refused_with_a_message)
{
    fmqa_options o = FMQA_OPTIONS_INIT;
    o.version = 99;
    fmqa_ctx_t *ctx = NULL;
    cr_assert_eq(fmqa_ctx_create(&o, &ctx), FMQA_ERR_INVALID_ARGUMENT);
    cr_assert_not_null(ctx, "the context is returned so the message can be read");
    cr_assert(strstr(fmqa_ctx_errmsg(ctx), "FMQA_OPTIONS_INIT"), "%s", fmqa_ctx_errmsg(ctx));
    fmqa_ctx_destroy(ctx);
    cr_assert_eq(fmqa_ctx_create(&o, NULL), FMQA_ERR_INVALID_ARGUMENT);
}

Test(ctx, shorter_options_struct_from_an_older_caller_gets_defaults)
{
    fmqa_options o = FMQA_OPTIONS_INIT;
    o.struct_size = (uint32_t)offsetof(fmqa_options, log_level);
    o.log_level = (fmqa_log_level)12345; /* beyond the caller's struct: ignored */
    o.db_path = "";
    fmqa_ctx_t *ctx = NULL;
    cr_assert_eq(fmqa_ctx_create(&o, &ctx), FMQA_OK, "%s", fmqa_ctx_errmsg(ctx));
    fmqa_ctx_destroy(ctx);
}

Test(ctx, bad_fields_are_named)
{
    fmqa_options o = FMQA_OPTIONS_INIT;
    o.device = -1;
    fmqa_ctx_t *ctx = NULL;
    cr_assert_eq(fmqa_ctx_create(&o, &ctx), FMQA_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(fmqa_ctx_errmsg(ctx), "options.device"), "%s", fmqa_ctx_errmsg(ctx));
    fmqa_ctx_destroy(ctx);

    fmqa_options t = FMQA_OPTIONS_INIT;
    t.template_dir = "/nonexistent/fastmqa-templates";
    cr_assert_eq(fmqa_ctx_create(&t, &ctx), FMQA_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(fmqa_ctx_errmsg(ctx), "/nonexistent/fastmqa-templates"));
    fmqa_ctx_destroy(ctx);
}

Test(ctx, default_db_path_follows_xdg_then_home)
{
    char buf[512];
    setenv("XDG_CACHE_HOME", "/tmp/xdg", 1);
    cr_assert_eq(fmqa_default_db_path(buf, sizeof buf), FMQA_OK);
    cr_assert_str_eq(buf, "/tmp/xdg/fastmqa/tune.db");
    unsetenv("XDG_CACHE_HOME");
    setenv("HOME", "/home/someone", 1);
    cr_assert_eq(fmqa_default_db_path(buf, sizeof buf), FMQA_OK);
    cr_assert_str_eq(buf, "/home/someone/.cache/fastmqa/tune.db");
    cr_assert_eq(fmqa_default_db_path(buf, 8), FMQA_ERR_INVALID_ARGUMENT);
}

Test(device, without_a_gpu_the_answer_is_clear)
{
    char why[256];
    fmqa_ctx_t *ctx = fmqa_test_ctx();
    fmqa_device_info info;
    fmqa_status st = fmqa_device_query(ctx, &info);
    if (fmqa_test_gpu_available(why, sizeof why)) {
        cr_assert_eq(st, FMQA_OK, "%s", fmqa_ctx_errmsg(ctx));
        cr_assert_gt(info.sm_count, 0);
    } else {
        cr_assert(st == FMQA_ERR_NO_DRIVER || st == FMQA_ERR_NO_DEVICE, "%d", st);
        cr_assert_gt(strlen(fmqa_ctx_errmsg(ctx)), 10);
        /* Asking twice gives the same answer (the outcome is remembered). */
        cr_assert_eq(fmqa_device_query(ctx, &info), st);
    }
    cr_assert_eq(fmqa_device_query(ctx, NULL), FMQA_ERR_INVALID_ARGUMENT);
    fmqa_ctx_destroy(ctx);
}

Test(device, nvrtc_version_needs_no_gpu)
{
    int maj = 0, min = 0;
    cr_assert_eq(fmqa_nvrtc_version(&maj, &min), FMQA_OK);
    cr_assert_geq(maj, 11);
}

/* ---------------------------------------------------------------- problems */

Test(problem, a_good_problem_passes)
{
    fmqa_ctx_t *ctx = fmqa_test_ctx();
    fmqa_problem p = decode_problem();
    cr_assert_eq(fmqa_problem_validate(ctx, &p), FMQA_OK, "%s", fmqa_ctx_errmsg(ctx));
    p.flags |= FMQA_FLAG_PAGED;
    p.page_size = 64;
    cr_assert_eq(fmqa_problem_validate(ctx, &p), FMQA_OK, "%s", fmqa_ctx_errmsg(ctx));
    fmqa_ctx_destroy(ctx);
}

typedef struct bad_case {
    const char *what;
    void (*edit)(fmqa_problem *);
    const char *msg; /* substring of the message */
} bad_case;

static void e_batch(fmqa_problem *p) { p->batch = 0; }
static void e_neg_heads(fmqa_problem *p) { p->num_q_heads = -4; }
static void e_divide(fmqa_problem *p) { p->num_kv_heads = 5; }
static void e_dtype(fmqa_problem *p) { p->kv_dtype = (fmqa_dtype)42; }
static void e_q_int8(fmqa_problem *p) { p->q_dtype = FMQA_DTYPE_INT8; }
static void e_op(fmqa_problem *p) { p->op = (fmqa_op)9; }
static void e_flags(fmqa_problem *p) { p->flags = 0x80000000u; }
static void e_page(fmqa_problem *p) { p->flags |= FMQA_FLAG_PAGED; p->page_size = 24; }
static void e_page_unpaged(fmqa_problem *p) { p->page_size = 16; }
static void e_ring(fmqa_problem *p) { p->flags |= FMQA_FLAG_RING; }
static void e_sinks(fmqa_problem *p) { p->sink_tokens = 4; }
static void e_window(fmqa_problem *p) { p->window = -1; }
static void e_rope(fmqa_problem *p) { p->rope = (fmqa_rope)7; }
static void e_tq(fmqa_problem *p) { p->q_tokens = 16; p->kv_len = 8; }
static void e_overflow(fmqa_problem *p) { p->kv_len = 1 << 24; p->num_kv_heads = 32; }
static void e_overflow_q(fmqa_problem *p) { p->batch = 65535; p->q_tokens = 16; }
static void e_overflow_ring(fmqa_problem *p)
{
    p->flags |= FMQA_FLAG_RING;
    p->window = 1 << 22;
    p->kv_len = 1 << 30;
}

Test(problem, each_bad_field_is_named)
{
    const bad_case cases[] = {
        {"batch 0", e_batch, "problem.batch"},
        {"negative heads", e_neg_heads, "problem.num_q_heads"},
        {"heads that do not divide", e_divide, "not a multiple of num_kv_heads"},
        {"unknown dtype", e_dtype, "problem.kv_dtype"},
        {"int8 queries", e_q_int8, "problem.q_dtype"},
        {"unknown op", e_op, "problem.op"},
        {"unknown flags", e_flags, "unknown bits 0x80000000"},
        {"page size not a power of two", e_page, "power of two"},
        {"page size without paging", e_page_unpaged, "without FMQA_FLAG_PAGED"},
        {"ring without window", e_ring, "RING needs a window"},
        {"sinks without window", e_sinks, "without a window"},
        {"negative window", e_window, "negative"},
        {"unknown rope", e_rope, "problem.rope"},
        {"more query tokens than cache", e_tq, "exceeds kv_len"},
        {"32-bit overflow of a sequence", e_overflow, "exceed the kernels' 32-bit index"},
        {"32-bit overflow of the queries", e_overflow_q, "exceed the kernels' 32-bit index"},
        {"32-bit overflow of a ring", e_overflow_ring, "4194304 cache slots"},
    };
    fmqa_ctx_t *ctx = fmqa_test_ctx();
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fmqa_problem p = decode_problem();
        cases[i].edit(&p);
        cr_expect_eq(fmqa_problem_validate(ctx, &p), FMQA_ERR_INVALID_ARGUMENT, "%s",
                     cases[i].what);
        cr_expect(strstr(fmqa_ctx_errmsg(ctx), cases[i].msg), "%s: message '%s'",
                  cases[i].what, fmqa_ctx_errmsg(ctx));
    }
    cr_assert_eq(fmqa_problem_validate(ctx, NULL), FMQA_ERR_INVALID_ARGUMENT);
    fmqa_ctx_destroy(ctx);
}

Test(problem, a_ring_cache_is_sized_by_its_slots_not_the_logical_length)
{
    fmqa_ctx_t *ctx = fmqa_test_ctx();
    fmqa_problem p = decode_problem();
    p.flags |= FMQA_FLAG_RING;
    p.window = 4096;
    p.sink_tokens = 4;
    p.kv_len = 1 << 30; /* a long conversation in a bounded cache */
    cr_assert_eq(fmqa_problem_validate(ctx, &p), FMQA_OK, "%s", fmqa_ctx_errmsg(ctx));
    fmqa_ctx_destroy(ctx);
}

Test(problem, messages_are_per_thread_and_cleared_on_success)
{
    fmqa_ctx_t *ctx = fmqa_test_ctx();
    fmqa_problem p = decode_problem();
    p.batch = -1;
    cr_assert_eq(fmqa_problem_validate(ctx, &p), FMQA_ERR_INVALID_ARGUMENT);
    cr_assert_neq(strlen(fmqa_ctx_errmsg(ctx)), 0);
    p.batch = 1;
    cr_assert_eq(fmqa_problem_validate(ctx, &p), FMQA_OK);
    cr_assert_str_eq(fmqa_ctx_errmsg(ctx), "");
    fmqa_ctx_destroy(ctx);
}

/* ---------------------------------------------------------------- arguments */

static fmqa_decode_args good_args(void)
{
    static _Alignas(16) char buf[64];
    static int32_t lens[2] = {10, 20};
    fmqa_decode_args a;
    memset(&a, 0, sizeof a);
    a.q = a.k = a.v = a.o = buf;
    a.kv_lens = lens;
    /* decode_problem: [2, 1, 32, 128] queries and outputs, rows that do not overlap */
    a.q_stride_head = a.o_stride_head = 128;
    a.q_stride_token = a.o_stride_token = 32 * 128;
    a.q_stride_batch = a.o_stride_batch = 32 * 128;
    return a;
}

Test(args, bad_arguments_are_reported_before_any_gpu_work)
{
    fmqa_ctx_t *ctx = fmqa_test_ctx();
    fmqa_problem p = decode_problem();
    fmqa_decode_args a = good_args();
    cr_assert_eq(fmqa_decode(ctx, &p, NULL, NULL), FMQA_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(fmqa_ctx_errmsg(ctx), "args is NULL"));

    a.q = NULL;
    cr_assert_eq(fmqa_decode(ctx, &p, &a, NULL), FMQA_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(fmqa_ctx_errmsg(ctx), "args.q is NULL"), "%s", fmqa_ctx_errmsg(ctx));

    a = good_args();
    a.k = (const char *)a.k + 2;
    cr_assert_eq(fmqa_decode(ctx, &p, &a, NULL), FMQA_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(fmqa_ctx_errmsg(ctx), "args.k is not 16-byte aligned"));

    a = good_args();
    a.v_stride_token = 4; /* 8 bytes of f16 */
    cr_assert_eq(fmqa_decode(ctx, &p, &a, NULL), FMQA_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(fmqa_ctx_errmsg(ctx), "args.v stride 1"), "%s", fmqa_ctx_errmsg(ctx));

    a = good_args();
    p.kv_dtype = FMQA_DTYPE_INT8;
    cr_assert_eq(fmqa_decode(ctx, &p, &a, NULL), FMQA_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(fmqa_ctx_errmsg(ctx), "k_scale is NULL"));

    p = decode_problem();
    p.flags |= FMQA_FLAG_PAGED;
    p.page_size = 16;
    cr_assert_eq(fmqa_decode(ctx, &p, &a, NULL), FMQA_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(fmqa_ctx_errmsg(ctx), "page_table is NULL"));

    p = decode_problem();
    p.op = FMQA_OP_APPEND;
    cr_assert_eq(fmqa_decode(ctx, &p, &a, NULL), FMQA_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(fmqa_ctx_errmsg(ctx), "this call needs decode"));
    fmqa_ctx_destroy(ctx);
}

Test(args, good_arguments_without_a_gpu_get_no_driver)
{
    char why[256];
    if (fmqa_test_gpu_available(why, sizeof why))
        cr_skip_test("a GPU is present");
    fmqa_ctx_t *ctx = fmqa_test_ctx();
    fmqa_problem p = decode_problem();
    fmqa_decode_args a = good_args();
    fmqa_status st = fmqa_decode(ctx, &p, &a, NULL);
    cr_assert(st == FMQA_ERR_NO_DRIVER || st == FMQA_ERR_NO_DEVICE, "%d: %s", st,
              fmqa_ctx_errmsg(ctx));
    size_t ws;
    cr_assert_eq(fmqa_decode_workspace_size(ctx, &p, &ws), st);
    fmqa_choice c;
    cr_assert_eq(fmqa_plan(ctx, &p, &c), st);
    fmqa_ctx_destroy(ctx);
}

/* ---------------------------------------------------------------- cache layouts */

/* Engines' page tables (issue 16): the flags' combinations, and page sizes
 * below 16 refused as UNSUPPORTED with the reason, not as bad input. */
Test(problem, layout_flags_and_small_pages)
{
    fmqa_ctx_t *ctx = fmqa_test_ctx();
    fmqa_problem p = decode_problem();
    p.flags |= FMQA_FLAG_PAGED | FMQA_FLAG_PAGE_CSR, p.page_size = 16;
    cr_expect_eq(fmqa_problem_validate(ctx, &p), FMQA_OK, "%s", fmqa_ctx_errmsg(ctx));
    const struct {
        fmqa_op op;
        uint32_t flags;
        int32_t page_size;
        fmqa_status st;
        const char *msg;
    } cases[] = {
        {FMQA_OP_DECODE, FMQA_FLAG_PAGE_CSR, 0, FMQA_ERR_INVALID_ARGUMENT, "PAGE_CSR needs FMQA_FLAG_PAGED"},
        {FMQA_OP_APPEND, FMQA_FLAG_SLOT_MAPPING, 0, FMQA_ERR_INVALID_ARGUMENT, "SLOT_MAPPING needs"},
        {FMQA_OP_DECODE, FMQA_FLAG_PAGED | FMQA_FLAG_SLOT_MAPPING, 16, FMQA_ERR_INVALID_ARGUMENT,
         "is an append flag"},
        {FMQA_OP_APPEND, FMQA_FLAG_PAGED | FMQA_FLAG_SLOT_MAPPING | FMQA_FLAG_PAGE_CSR, 16,
         FMQA_ERR_INVALID_ARGUMENT, "choose one"},
        {FMQA_OP_DECODE, FMQA_FLAG_PAGED | FMQA_FLAG_PAGE_CSR | FMQA_FLAG_RING, 16,
         FMQA_ERR_INVALID_ARGUMENT, "with FMQA_FLAG_RING"},
        {FMQA_OP_PREFILL, FMQA_FLAG_PAGED | FMQA_FLAG_PAGE_CSR | FMQA_FLAG_KV_CACHE, 16,
         FMQA_ERR_UNSUPPORTED, "only decode, MLA decode and append read CSR"},
        {FMQA_OP_MLA_DECODE, FMQA_FLAG_PAGED | FMQA_FLAG_PAGE_CSR, 16, FMQA_OK, ""},
        {FMQA_OP_DECODE, FMQA_FLAG_PAGED, 1, FMQA_ERR_UNSUPPORTED, "SGLang's page size 1"},
        {FMQA_OP_APPEND, FMQA_FLAG_PAGED, 8, FMQA_ERR_UNSUPPORTED, "page size >= 16"},
        {FMQA_OP_DECODE, FMQA_FLAG_PAGED, 12, FMQA_ERR_INVALID_ARGUMENT, "power of two >= 16"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        p = decode_problem();
        p.op = cases[i].op, p.flags = cases[i].flags, p.page_size = cases[i].page_size;
        if (p.op == FMQA_OP_MLA_DECODE)
            p.num_kv_heads = 1, p.head_dim_qk = 576, p.head_dim_v = 512;
        cr_expect_eq(fmqa_problem_validate(ctx, &p), cases[i].st, "case %zu: %s", i,
                     fmqa_ctx_errmsg(ctx));
        cr_expect(strstr(fmqa_ctx_errmsg(ctx), cases[i].msg), "case %zu: '%s'", i,
                  fmqa_ctx_errmsg(ctx));
    }
    fmqa_ctx_destroy(ctx);
}

/* A CSR decode takes its lengths from the table: kv_lens must be NULL and
 * every CSR array given; an append with a slot mapping needs the mapping. */
Test(args, layout_csr_and_slot_mapping_arguments)
{
    static int32_t words[4];
    fmqa_ctx_t *ctx = fmqa_test_ctx();
    fmqa_problem p = decode_problem();
    p.flags |= FMQA_FLAG_PAGED | FMQA_FLAG_PAGE_CSR, p.page_size = 16;
    fmqa_decode_args a = good_args();
    a.page_indptr = a.page_indices = a.last_page_len = words;
    cr_expect_eq(fmqa_decode(ctx, &p, &a, NULL), FMQA_ERR_INVALID_ARGUMENT);
    cr_expect(strstr(fmqa_ctx_errmsg(ctx), "kv_lens is set with FMQA_FLAG_PAGE_CSR"), "%s",
              fmqa_ctx_errmsg(ctx));
    a.kv_lens = NULL, a.last_page_len = NULL;
    cr_expect_eq(fmqa_decode(ctx, &p, &a, NULL), FMQA_ERR_INVALID_ARGUMENT);
    cr_expect(strstr(fmqa_ctx_errmsg(ctx), "args.last_page_len is NULL"), "%s",
              fmqa_ctx_errmsg(ctx));
    a.last_page_len = words, a.page_indices = NULL;
    cr_expect_eq(fmqa_decode(ctx, &p, &a, NULL), FMQA_ERR_INVALID_ARGUMENT);
    cr_expect(strstr(fmqa_ctx_errmsg(ctx), "args.page_indices is NULL"), "%s",
              fmqa_ctx_errmsg(ctx));
    a.page_indices = (const int32_t *)((const char *)words + 2);
    cr_expect_eq(fmqa_decode(ctx, &p, &a, NULL), FMQA_ERR_INVALID_ARGUMENT);
    cr_expect(strstr(fmqa_ctx_errmsg(ctx), "page_indices is not 4-byte aligned"), "%s",
              fmqa_ctx_errmsg(ctx));
    a.page_indices = words;
    fmqa_status st = fmqa_decode(ctx, &p, &a, NULL);
    cr_expect(st == FMQA_ERR_NO_DRIVER || st == FMQA_ERR_NO_DEVICE || st == FMQA_OK ||
                  st == FMQA_ERR_CUDA,
              "%d: %s", st, fmqa_ctx_errmsg(ctx));
    p.flags &= ~FMQA_FLAG_PAGE_CSR; /* CSR arrays without the flag are a mistake */
    a = good_args();
    a.page_table = words, a.page_table_stride = 256, a.page_indptr = words;
    cr_expect_eq(fmqa_decode(ctx, &p, &a, NULL), FMQA_ERR_INVALID_ARGUMENT);
    cr_expect(strstr(fmqa_ctx_errmsg(ctx), "no FMQA_FLAG_PAGE_CSR"), "%s", fmqa_ctx_errmsg(ctx));

    static _Alignas(16) char buf[64];
    fmqa_problem ap = decode_problem();
    ap.op = FMQA_OP_APPEND, ap.flags = FMQA_FLAG_PAGED | FMQA_FLAG_SLOT_MAPPING, ap.page_size = 16;
    fmqa_append_args aa;
    memset(&aa, 0, sizeof aa);
    aa.k_new = aa.v_new = aa.k = aa.v = buf, aa.start_pos = words;
    aa.k_new_stride_batch = aa.k_new_stride_token = aa.v_new_stride_batch = 8 * 128;
    aa.v_new_stride_token = 8 * 128, aa.k_new_stride_head = aa.v_new_stride_head = 128;
    aa.k_stride_batch = aa.v_stride_batch = 16 * 8 * 128;
    aa.k_stride_token = aa.v_stride_token = 8 * 128, aa.k_stride_head = aa.v_stride_head = 128;
    cr_expect_eq(fmqa_append(ctx, &ap, &aa, NULL), FMQA_ERR_INVALID_ARGUMENT);
    cr_expect(strstr(fmqa_ctx_errmsg(ctx), "args.slot_mapping is NULL but the problem has "
                                           "FMQA_FLAG_SLOT_MAPPING"),
              "%s", fmqa_ctx_errmsg(ctx));
    fmqa_ctx_destroy(ctx);
}
