/*
 * test_mla_args.c -- fmqa_mla_decode's argument checks, without a GPU: every
 * bad argument is refused with a message naming the MLA field (kv, kv_scale,
 * not decode's k / v) before any GPU work; good arguments get as far as the
 * device (NO_DRIVER / NO_DEVICE here); the problem is validated as a decode;
 * the dispatcher (rt_choose, no GPU: a device preset) picks the mla_decode
 * template's default and refuses latent sizes it does not serve with
 * FMQA_ERR_UNSUPPORTED naming what it serves; every MLA level's problem
 * (windows, sinks, a ring, the fp8 latent, 4 query tokens) is served.
 */
#include <stdint.h>
#include <string.h>

#include <criterion/criterion.h>

#include "fastmqa.h"
#include "gen.h"
#include "rt.h"
#include "test_support.h"

/* DeepSeek-V3 attention on one tensor-parallel shard: 16 heads, 512 + 64. */
static fmqa_problem mla_problem(void)
{
    fmqa_problem p;
    fmqa_problem_init(&p);
    p.op = FMQA_OP_MLA_DECODE;
    p.batch = 2, p.num_q_heads = 16, p.num_kv_heads = 1;
    p.head_dim_qk = 576, p.head_dim_v = 512;
    p.q_tokens = 1, p.kv_len = 64;
    p.q_dtype = p.kv_dtype = p.out_dtype = FMQA_DTYPE_BF16;
    p.flags = FMQA_FLAG_CAUSAL;
    return p;
}

static _Alignas(16) uint16_t buf[2 * 64 * 576 + 2 * 16 * 576];
static const int32_t lens[2] = {64, 10};

static fmqa_mla_decode_args good_args(void)
{
    fmqa_mla_decode_args a;
    memset(&a, 0, sizeof a);
    a.q = a.kv = a.o = buf;
    a.kv_lens = lens;
    a.q_stride_head = 576, a.q_stride_token = a.q_stride_batch = 16 * 576;
    a.o_stride_head = 512, a.o_stride_token = a.o_stride_batch = 16 * 512;
    a.kv_stride_token = 576, a.kv_stride_batch = 64 * 576;
    return a;
}

Test(mla_args, bad_arguments_are_named_before_any_gpu_work)
{
    fmqa_ctx_t *ctx = fmqa_test_ctx();
    fmqa_problem p = mla_problem();
    fmqa_mla_decode_args a = good_args();
    cr_assert_eq(fmqa_mla_decode(ctx, &p, NULL, NULL), FMQA_ERR_INVALID_ARGUMENT);
    cr_expect(strstr(fmqa_ctx_errmsg(ctx), "args is NULL"), "%s", fmqa_ctx_errmsg(ctx));

    a.kv = NULL;
    cr_assert_eq(fmqa_mla_decode(ctx, &p, &a, NULL), FMQA_ERR_INVALID_ARGUMENT);
    cr_expect(strstr(fmqa_ctx_errmsg(ctx), "args.kv is NULL"), "%s", fmqa_ctx_errmsg(ctx));

    a = good_args();
    a.kv = (const char *)a.kv + 2;
    cr_assert_eq(fmqa_mla_decode(ctx, &p, &a, NULL), FMQA_ERR_INVALID_ARGUMENT);
    cr_expect(strstr(fmqa_ctx_errmsg(ctx), "args.kv is not 16-byte aligned"), "%s",
              fmqa_ctx_errmsg(ctx));

    a = good_args();
    a.kv_stride_token = 580; /* 1160 bytes: not a multiple of 16 */
    cr_assert_eq(fmqa_mla_decode(ctx, &p, &a, NULL), FMQA_ERR_INVALID_ARGUMENT);
    cr_expect(strstr(fmqa_ctx_errmsg(ctx), "args.kv stride 1"), "%s", fmqa_ctx_errmsg(ctx));

    a = good_args();
    a.o_stride_head = 256; /* rows of o would overlap */
    cr_assert_eq(fmqa_mla_decode(ctx, &p, &a, NULL), FMQA_ERR_INVALID_ARGUMENT);
    cr_expect(strstr(fmqa_ctx_errmsg(ctx), "args.o stride"), "%s", fmqa_ctx_errmsg(ctx));

    a = good_args();
    p.kv_dtype = FMQA_DTYPE_FP8_E4M3;
    cr_assert_eq(fmqa_mla_decode(ctx, &p, &a, NULL), FMQA_ERR_INVALID_ARGUMENT);
    cr_expect(strstr(fmqa_ctx_errmsg(ctx), "args.kv_scale is NULL but the cache is 8-bit"), "%s",
              fmqa_ctx_errmsg(ctx));

    p = mla_problem();
    p.flags |= FMQA_FLAG_LSE;
    cr_assert_eq(fmqa_mla_decode(ctx, &p, &a, NULL), FMQA_ERR_INVALID_ARGUMENT);
    cr_expect(strstr(fmqa_ctx_errmsg(ctx), "args.lse is NULL"), "%s", fmqa_ctx_errmsg(ctx));

    p = mla_problem();
    p.flags |= FMQA_FLAG_PAGED;
    p.page_size = 64;
    cr_assert_eq(fmqa_mla_decode(ctx, &p, &a, NULL), FMQA_ERR_INVALID_ARGUMENT);
    cr_expect(strstr(fmqa_ctx_errmsg(ctx), "page_table is NULL"), "%s", fmqa_ctx_errmsg(ctx));

    p = mla_problem();
    p.q_tokens = 65; /* more than kv_len: the cache holds the query tokens */
    cr_assert_eq(fmqa_mla_decode(ctx, &p, &a, NULL), FMQA_ERR_INVALID_ARGUMENT);

    p = mla_problem();
    a = good_args();
    a.sinks = (const float *)((const char *)buf + 2); /* learned sinks: 4-byte aligned */
    cr_assert_eq(fmqa_mla_decode(ctx, &p, &a, NULL), FMQA_ERR_INVALID_ARGUMENT);
    cr_expect(strstr(fmqa_ctx_errmsg(ctx), "args.sinks is not 4-byte aligned"), "%s",
              fmqa_ctx_errmsg(ctx));

    p = mla_problem();
    a = good_args();
    p.op = FMQA_OP_DECODE;
    cr_assert_eq(fmqa_mla_decode(ctx, &p, &a, NULL), FMQA_ERR_INVALID_ARGUMENT);
    cr_expect(strstr(fmqa_ctx_errmsg(ctx), "this call needs mla_decode"), "%s",
              fmqa_ctx_errmsg(ctx));
    fmqa_ctx_destroy(ctx);
}

Test(mla_args, good_arguments_without_a_gpu_get_no_driver)
{
    char why[256];
    if (fmqa_test_gpu_available(why, sizeof why))
        cr_skip_test("a GPU is present");
    fmqa_ctx_t *ctx = fmqa_test_ctx();
    fmqa_problem p = mla_problem();
    fmqa_mla_decode_args a = good_args();
    fmqa_status st = fmqa_mla_decode(ctx, &p, &a, NULL);
    cr_assert(st == FMQA_ERR_NO_DRIVER || st == FMQA_ERR_NO_DEVICE, "%d: %s", st,
              fmqa_ctx_errmsg(ctx));
    size_t ws;
    cr_assert_eq(fmqa_decode_workspace_size(ctx, &p, &ws), st, "%s", fmqa_ctx_errmsg(ctx));
    fmqa_choice c;
    cr_assert_eq(fmqa_plan(ctx, &p, &c), st);
    fmqa_ctx_destroy(ctx);
}

Test(mla_args, the_dispatcher_picks_mla_decode_and_names_what_it_serves)
{
    gen_lib *lib = fmqa_test_open_templates();
    fmqa_device_info dev = fmqa_test_device("sm_90");
    fmqa_problem p = mla_problem();
    const gen_template *t = NULL;
    gen_config c;
    fmqa_choice choice;
    fmqa_err err;
    cr_assert_eq(rt_choose(lib, NULL, &dev, &p, &t, &c, &choice, &err), FMQA_OK, "%s", err.msg);
    cr_expect_str_eq(choice.template_name, "mla_decode_sm90"); /* wgmma, on a Hopper */
    cr_expect_eq(choice.source, FMQA_CHOICE_DEFAULT);
    fmqa_device_info ampere = fmqa_test_device("sm_80");
    cr_assert_eq(rt_choose(lib, NULL, &ampere, &p, &t, &c, &choice, &err), FMQA_OK, "%s", err.msg);
    cr_expect_str_eq(choice.template_name, "mla_decode");
    p.head_dim_qk = 320, p.head_dim_v = 256; /* a smaller latent: valid, not served */
    cr_assert_eq(rt_problem_check(&p, &err), FMQA_OK, "%s", err.msg);
    cr_expect_eq(rt_choose(lib, NULL, &dev, &p, &t, &c, &choice, &err), FMQA_ERR_UNSUPPORTED);
    cr_expect(strstr(err.msg, "latent 512 + rope 64 only") != NULL, "%s", err.msg);
    gen_lib_close(lib);
}

/* The MLA levels (DeepSeek-V3's attention, 4096 tokens): conservative's full
 * context, balanced's ring of window and sinks, aggressive's fp8 latent with
 * 4 query tokens on that ring all reach an MLA template on sm_80 and sm_90
 * (they were FMQA_ERR_UNSUPPORTED before mla_decode served windows): the exact
 * context mla_decode_sm90 on a Hopper (the newest legal one, untuned),
 * mla_decode elsewhere and for the windows mla_decode_sm90 refuses. */
Test(mla_args, every_mla_level_problem_is_served)
{
    gen_lib *lib = fmqa_test_open_templates();
    const fmqa_model_config m = {.hidden_size = 7168, .num_q_heads = 128, .num_kv_heads = 128,
                                 .head_dim = 128, .mla_latent_dim = 512, .mla_rope_dim = 64,
                                 .max_seq_len = 4096, .dtype = FMQA_DTYPE_BF16};
    static const char *const archs[] = {"sm_80", "sm_90"};
    for (int l = FMQA_LEVEL_CONSERVATIVE; l <= FMQA_LEVEL_AGGRESSIVE; l++)
        for (int a = 0; a < 2; a++) {
            fmqa_level_policy pol;
            fmqa_problem p;
            cr_assert_eq(fmqa_level_policy_preset(NULL, (fmqa_level)l, &m, &pol), FMQA_OK);
            cr_assert_eq(fmqa_level_problem(NULL, &m, &pol, 8, &p), FMQA_OK);
            cr_assert_eq(p.window > 0, l > FMQA_LEVEL_CONSERVATIVE);
            fmqa_device_info dev = fmqa_test_device(archs[a]);
            const gen_template *t = NULL;
            gen_config c;
            fmqa_choice choice;
            fmqa_err err;
            cr_expect_eq(rt_choose(lib, NULL, &dev, &p, &t, &c, &choice, &err), FMQA_OK,
                         "level %d on %s: %s", l, archs[a], err.msg);
            const int hopper = a == 1 && l == FMQA_LEVEL_CONSERVATIVE;
            cr_expect_str_eq(choice.template_name, hopper ? "mla_decode_sm90" : "mla_decode",
                             "level %d on %s", l, archs[a]);
        }
    gen_lib_close(lib);
}

/* A plan's workspace (known only with a plan: past fmqa_mla_decode's checks on
 * a machine without a GPU) larger than the one given is refused, naming both
 * sizes and the query that tells it. */
Test(mla_args, a_short_workspace_names_both_sizes)
{
    fmqa_problem p = mla_problem();
    fmqa_mla_decode_args m = good_args();
    static _Alignas(16) char ws[256];
    m.workspace = ws, m.workspace_size = sizeof ws;
    rt_plan plan;
    memset(&plan, 0, sizeof plan);
    plan.problem = p;
    plan.launch.workspace = 4096;
    fmqa_decode_args a;
    rt_mla_decode_args(&p, &m, &a);
    fmqa_decode_params prm;
    fmqa_err err = {0};
    cr_assert_eq(rt_decode_params(&plan, &a, &prm, &err), FMQA_ERR_INVALID_ARGUMENT);
    cr_expect_str_eq(err.msg, "args.workspace: 256 bytes given, 4096 needed "
                              "(fmqa_decode_workspace_size)");
    a.workspace = NULL;
    cr_assert_eq(rt_decode_params(&plan, &a, &prm, &err), FMQA_ERR_INVALID_ARGUMENT);
    cr_expect_str_eq(err.msg, "args.workspace: 0 bytes given, 4096 needed "
                              "(fmqa_decode_workspace_size)");
    plan.launch.workspace = 256;
    a.workspace = ws;
    cr_expect_eq(rt_decode_params(&plan, &a, &prm, &err), FMQA_OK, "%s", err.msg);
    cr_expect_float_eq(prm.sm_scale, 1.0f / 24.0f, 1e-7f, "default scale 1/sqrt(576)");
}
