/*
 * test_levels.c -- optimization levels, their presets, the KV-cache memory report
 * and `fastmqa-bench levels`.
 *
 * Memory figures are hand-computed in the comments next to each assertion (one
 * layer, bytes).  The reference model is the project's assessment configuration:
 * hidden 2048, 32 query heads, head dim 64, 1024 tokens, f16, for which the fp16
 * MHA baseline is 2 * 32 * 64 * 2 = 8192 bytes per token, 8388608 per sequence.
 * The accuracy checks run the built tool with --json (found through
 * FMQA_BINARY_DIR) because the accuracy report lives in bench/, next to the
 * float64 reference it drives.
 */
#define _POSIX_C_SOURCE 200809L /* popen, pclose */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include <criterion/criterion.h>

#include "fastmqa.h"

static fmqa_ctx_t *ctx;

static void setup(void)
{
    cr_assert_eq(fmqa_ctx_create(NULL, &ctx), FMQA_OK);
}

static void teardown(void)
{
    fmqa_ctx_destroy(ctx);
}

TestSuite(levels, .init = setup, .fini = teardown);

static fmqa_model_config model(int32_t kv_heads)
{
    return (fmqa_model_config){.hidden_size = 2048, .num_q_heads = 32,
                               .num_kv_heads = kv_heads, .max_seq_len = 1024,
                               .dtype = FMQA_DTYPE_F16};
}

static fmqa_level_policy preset(fmqa_level level, const fmqa_model_config *m)
{
    fmqa_level_policy p;
    cr_assert_eq(fmqa_level_policy_preset(ctx, level, m, &p), FMQA_OK, "%s",
                 fmqa_ctx_errmsg(ctx));
    return p;
}

static fmqa_memory_report report(const fmqa_model_config *m, const fmqa_level_policy *p,
                                 int64_t n_seqs, int64_t budget)
{
    fmqa_memory_report r;
    cr_assert_eq(fmqa_memory_report_compute(ctx, m, p, n_seqs, budget, &r), FMQA_OK, "%s",
                 fmqa_ctx_errmsg(ctx));
    return r;
}

/* ------------------------------------------------------------ names */

Test(levels, names_round_trip)
{
    cr_assert_str_eq(fmqa_level_name(FMQA_LEVEL_CONSERVATIVE), "conservative");
    cr_assert_str_eq(fmqa_level_name(FMQA_LEVEL_BALANCED), "balanced");
    cr_assert_str_eq(fmqa_level_name(FMQA_LEVEL_AGGRESSIVE), "aggressive");
    cr_assert_null(fmqa_level_name((fmqa_level)0));
    cr_assert_null(fmqa_level_name((fmqa_level)4));
    fmqa_level l = 0;
    cr_assert_eq(fmqa_level_from_name(ctx, "BaLanced", &l), FMQA_OK);
    cr_assert_eq(l, FMQA_LEVEL_BALANCED);
    cr_assert_str_eq(fmqa_ctx_errmsg(ctx), "");
}

Test(levels, unknown_name_is_rejected_and_output_untouched)
{
    fmqa_level l = FMQA_LEVEL_AGGRESSIVE;
    cr_assert_eq(fmqa_level_from_name(ctx, "fast", &l), FMQA_ERR_INVALID_ARGUMENT);
    cr_assert_eq(l, FMQA_LEVEL_AGGRESSIVE);
    cr_assert_str_eq(fmqa_ctx_errmsg(ctx),
                     "unknown level 'fast' (expected conservative, balanced or aggressive)");
    cr_assert_eq(fmqa_level_from_name(ctx, "balance", &l), FMQA_ERR_INVALID_ARGUMENT);
    cr_assert_eq(fmqa_level_from_name(NULL, NULL, &l), FMQA_ERR_INVALID_ARGUMENT);
}

/* ------------------------------------------------------------ presets */

Test(levels, conservative_preset_is_lossless)
{
    fmqa_model_config m = model(32);
    m.dtype = FMQA_DTYPE_BF16;
    fmqa_level_policy p = preset(FMQA_LEVEL_CONSERVATIVE, &m);
    cr_assert_eq(p.level, FMQA_LEVEL_CONSERVATIVE);
    cr_assert_eq(p.kv_dtype, FMQA_DTYPE_BF16); /* the model's own 16-bit type */
    cr_assert_eq(p.window, 0);
    cr_assert_eq(p.sink_tokens, 0);
    cr_assert_eq(p.spec_tokens, 1);
    cr_assert_eq(p.page_size, 0);
    cr_assert_eq(p.rope, FMQA_ROPE_NONE);
}

Test(levels, balanced_preset_adds_compression_sinks_and_rope)
{
    fmqa_model_config m = model(1);
    fmqa_level_policy p = preset(FMQA_LEVEL_BALANCED, &m);
    cr_assert_eq(p.kv_dtype, FMQA_DTYPE_F16);
    cr_assert_eq(p.window, 128); /* recent: 1024 / 8 */
    cr_assert_eq(p.heavy, 384);  /* heavy hitters: 3 * 1024 / 8 */
    cr_assert_eq(p.pooling, FMQA_POOL_NONE);
    cr_assert_eq(p.sink_tokens, 4);
    cr_assert_eq(p.spec_tokens, 1);
    cr_assert_eq(p.rope, FMQA_ROPE_NEOX);
    fmqa_problem q;
    cr_assert_eq(fmqa_level_problem(ctx, &m, &p, 2, &q), FMQA_OK, "%s", fmqa_ctx_errmsg(ctx));
    /* MQA, f16: scores cost 264 / 256 bytes per call, so one score step every
       35 (ceil(103.1% / 3%), test_score_schedule.c) */
    cr_assert_eq(p.compress_every, 35);
    cr_assert_eq(p.score_steps, 1);
    cr_assert_eq(q.kv_len, 551); /* 4 + 128 + 384 + 35 slots between compactions */
    cr_assert_eq(q.window, 0);
    cr_assert_eq(q.flags, FMQA_FLAG_CAUSAL | FMQA_FLAG_SCORES);

    m.mla_latent_dim = 512, m.mla_rope_dim = 64; /* MLA: sinks + sliding window */
    p = preset(FMQA_LEVEL_BALANCED, &m);
    cr_assert_eq(p.window, 256);
    cr_assert_eq(p.heavy, 0);
    p.heavy = 8;
    fmqa_memory_report r;
    cr_assert_eq(fmqa_memory_report_compute(ctx, &m, &p, 1, 0, &r), FMQA_ERR_UNSUPPORTED);
}

Test(levels, aggressive_preset_adds_8bit_and_speculation)
{
    fmqa_model_config m = model(32);
    fmqa_level_policy p = preset(FMQA_LEVEL_AGGRESSIVE, &m);
    cr_assert_eq(p.kv_dtype, FMQA_DTYPE_INT8);
    cr_assert_eq(p.window, 128);
    cr_assert_eq(p.heavy, 384);
    cr_assert_eq(p.sink_tokens, 4);
    cr_assert_eq(p.spec_tokens, 4);
    cr_assert_eq(p.rope, FMQA_ROPE_NEOX);
    /* 4 rows: 40 / 136 bytes per call, one score step of 16 (1.8%) */
    cr_assert_eq(p.compress_every, 16);
    cr_assert_eq(p.score_steps, 1);
    /* MQA: 128 rows cost 1032 / 136 per call: 253 steps of up to 4 tokens
       between compactions do not fit in 1024 tokens: full context */
    m = model(1);
    p = preset(FMQA_LEVEL_AGGRESSIVE, &m);
    cr_assert_eq(p.kv_dtype, FMQA_DTYPE_INT8);
    cr_assert_eq(p.heavy + p.window + p.sink_tokens, 0);
}

Test(levels, short_context_keeps_full_context)
{
    /* A recent window shorter than 16 query tokens: no compression. */
    fmqa_model_config m = model(1);
    m.max_seq_len = 127; /* recent 15 */
    fmqa_level_policy p = preset(FMQA_LEVEL_BALANCED, &m);
    cr_assert_eq(p.window, 0);
    cr_assert_eq(p.heavy, 0);
    cr_assert_eq(p.sink_tokens, 0);
    m.max_seq_len = 128; /* 4 + 16 + 48 + 35 (MQA's score schedule) = 103 slots < 128 */
    p = preset(FMQA_LEVEL_BALANCED, &m);
    cr_assert_eq(p.window, 16);
    cr_assert_eq(p.heavy, 48);
    cr_assert_eq(p.sink_tokens, 4);
    /* MLA: max_seq_len 5: window 1 + 4 sinks = 5 keeps every position. */
    m.mla_latent_dim = 512, m.mla_rope_dim = 64, m.max_seq_len = 5;
    p = preset(FMQA_LEVEL_BALANCED, &m);
    cr_assert_eq(p.window, 0);
    m.max_seq_len = 8; /* window 2 + 4 sinks = 6 < 8 */
    p = preset(FMQA_LEVEL_BALANCED, &m);
    cr_assert_eq(p.window, 2);
    cr_assert_eq(p.sink_tokens, 4);
}

/* ------------------------------------------------------------ memory */

Test(levels, mha_conservative_is_the_baseline)
{
    fmqa_model_config m = model(32);
    fmqa_level_policy p = preset(FMQA_LEVEL_CONSERVATIVE, &m);
    fmqa_memory_report r = report(&m, &p, 3, 0);
    cr_assert_eq(r.bytes_per_token, 8192);   /* 2 * 32 * 64 * 2 */
    cr_assert_eq(r.tokens_kept, 1024);
    cr_assert_eq(r.bytes_per_seq, 8388608);  /* 8192 * 1024 */
    cr_assert_eq(r.baseline_bytes_per_seq, 8388608);
    cr_assert_eq(r.total_bytes, 3 * 8388608LL);
    cr_assert_float_eq(r.reduction, 0.0, 1e-12);
    cr_assert_float_eq(r.cache_multiplier, 1.0, 1e-12);
    cr_assert_eq(r.max_seqs_in_budget, 0); /* no budget given */
}

Test(levels, mqa_and_gqa_divide_by_the_group)
{
    fmqa_model_config m = model(1);
    fmqa_level_policy p = preset(FMQA_LEVEL_CONSERVATIVE, &m);
    fmqa_memory_report r = report(&m, &p, 1, 1LL << 30);
    cr_assert_eq(r.bytes_per_token, 256);    /* 2 * 1 * 64 * 2 */
    cr_assert_eq(r.bytes_per_seq, 262144);   /* 256 * 1024 */
    cr_assert_float_eq(r.reduction, 0.96875, 1e-12);
    cr_assert_float_eq(r.cache_multiplier, 32.0, 1e-12);
    cr_assert_eq(r.max_seqs_in_budget, 4096); /* 2^30 / 2^18 */

    m = model(8);
    r = report(&m, &p, 1, 0);
    cr_assert_eq(r.bytes_per_token, 2048);   /* 2 * 8 * 64 * 2 */
    cr_assert_float_eq(r.cache_multiplier, 4.0, 1e-12);
}

Test(levels, mla_caches_one_latent_row)
{
    fmqa_model_config m = model(1);
    m.mla_latent_dim = 512;
    m.mla_rope_dim = 64;
    fmqa_level_policy p = preset(FMQA_LEVEL_CONSERVATIVE, &m);
    fmqa_memory_report r = report(&m, &p, 1, 0);
    cr_assert_eq(r.bytes_per_token, 1152);   /* (512 + 64) * 2, no separate V */
    cr_assert_eq(r.bytes_per_seq, 1179648);  /* 1152 * 1024 */
    /* the model as MHA: 32 heads of K (64 + 64 rope) and V (64), fp16 */
    cr_assert_eq(r.baseline_bytes_per_seq, 12582912); /* 32 * 192 * 2 * 1024 */
    cr_assert_float_eq(r.cache_multiplier, 12582912.0 / 1179648.0, 1e-12);

    p.kv_dtype = FMQA_DTYPE_FP8_E4M3;
    r = report(&m, &p, 1, 0);
    cr_assert_eq(r.bytes_per_token, 580);    /* 576 * 1 + one float scale */
}

/* DeepSeek-V3's attention: 128 heads, head dim 128, latent 512 + rope 64. */
static fmqa_model_config deepseek_v3(void)
{
    return (fmqa_model_config){.hidden_size = 7168, .num_q_heads = 128, .num_kv_heads = 128,
                               .head_dim = 128, .mla_latent_dim = 512, .mla_rope_dim = 64,
                               .max_seq_len = 4096, .dtype = FMQA_DTYPE_BF16};
}

Test(levels, mla_presets_exact_then_window_then_fp8_latent)
{
    fmqa_model_config m = deepseek_v3();
    fmqa_level_policy c = preset(FMQA_LEVEL_CONSERVATIVE, &m);
    fmqa_level_policy b = preset(FMQA_LEVEL_BALANCED, &m);
    fmqa_level_policy a = preset(FMQA_LEVEL_AGGRESSIVE, &m);
    cr_assert(c.kv_dtype == FMQA_DTYPE_BF16 && c.window == 0 && c.sink_tokens == 0 &&
              c.spec_tokens == 1 && c.rope == FMQA_ROPE_NONE);
    cr_assert(b.kv_dtype == FMQA_DTYPE_BF16 && b.window == 1024 && b.sink_tokens == 4 &&
              b.spec_tokens == 1 && b.rope == FMQA_ROPE_GPTJ);
    cr_assert(a.kv_dtype == FMQA_DTYPE_FP8_E4M3 && a.window == 1024 && a.sink_tokens == 4 &&
              a.spec_tokens == 4 && a.rope == FMQA_ROPE_GPTJ);

    /* baseline: 128 heads x (K 128 + 64 rope, V 128) x 2 bytes = 81920 per token */
    fmqa_memory_report r = report(&m, &c, 1, 0);
    cr_assert_eq(r.bytes_per_token, 1152);
    cr_assert_eq(r.baseline_bytes_per_seq, 81920LL * 4096);
    cr_assert_float_eq(r.cache_multiplier, 81920.0 / 1152.0, 1e-12); /* 71.1x */
    cr_assert_float_eq(r.reduction, 1.0 - 1152.0 / 81920.0, 1e-12);
    r = report(&m, &b, 1, 0);
    cr_assert_eq(r.bytes_per_seq, 1152LL * 1028);
    a.page_size = 64; /* 1028 slots -> 17 pages of 64: 1088 slots + 17 table entries */
    r = report(&m, &a, 1, 0);
    cr_assert_eq(r.bytes_per_token, 580); /* 576 fp8 + one float scale */
    cr_assert_eq(r.bytes_per_seq, 580LL * 1088 + 17 * 4);

    fmqa_problem p;
    cr_assert_eq(fmqa_level_problem(ctx, &m, &a, 8, &p), FMQA_OK, "%s", fmqa_ctx_errmsg(ctx));
    cr_assert_eq(p.op, FMQA_OP_MLA_DECODE);
    cr_assert(p.num_q_heads == 128 && p.num_kv_heads == 1 && p.head_dim_qk == 576 &&
              p.head_dim_v == 512 && p.q_tokens == 4 && p.kv_dtype == FMQA_DTYPE_FP8_E4M3);
    cr_assert_eq(p.flags, FMQA_FLAG_CAUSAL | FMQA_FLAG_PAGED | FMQA_FLAG_RING);
}

Test(levels, window_keeps_sinks_plus_recent)
{
    fmqa_model_config m = model(1);
    fmqa_level_policy p = preset(FMQA_LEVEL_BALANCED, &m);
    p.heavy = 0, p.window = 256; /* a ring of sinks and a sliding window */
    fmqa_memory_report r = report(&m, &p, 2, 0);
    cr_assert_eq(r.tokens_kept, 260);        /* 4 sinks + 256 window */
    cr_assert_eq(r.bytes_per_seq, 66560);    /* 256 * 260 */
    cr_assert_eq(r.total_bytes, 133120);
    cr_assert_float_eq(r.cache_multiplier, 8388608.0 / 66560.0, 1e-12);

    p.window = 1024; /* sinks + window beyond the context: capped at max_seq_len */
    r = report(&m, &p, 1, 0);
    cr_assert_eq(r.tokens_kept, 1024);
}

Test(levels, compressed_cache_counts_kept_slots_and_scores)
{
    fmqa_model_config m = model(8);
    fmqa_level_policy p = preset(FMQA_LEVEL_BALANCED, &m);
    fmqa_memory_report r = report(&m, &p, 1, 0);
    cr_assert_eq(r.tokens_kept, 532);        /* 4 + 128 + 384 + 16 between compactions */
    cr_assert_eq(r.bytes_per_token, 2080);   /* 2 * 8 * 64 * 2 + 8 heads * 4 (scores) */
    cr_assert_eq(r.bytes_per_seq, 2080 * 532);
    p.window = 0, p.sink_tokens = 0; /* fewer recent slots than query tokens */
    cr_assert_eq(fmqa_memory_report_compute(ctx, &m, &p, 1, 0, &r), FMQA_ERR_INVALID_ARGUMENT);
    cr_assert_str_eq(fmqa_ctx_errmsg(ctx), "policy.window 0: a compressed cache keeps at least "
                                           "the 1 query tokens as recent slots");
}

Test(levels, eight_bit_counts_scales)
{
    fmqa_model_config m = model(1);
    m.max_seq_len = 4096;
    fmqa_level_policy p = preset(FMQA_LEVEL_AGGRESSIVE, &m);
    fmqa_memory_report r = report(&m, &p, 1, 0);
    cr_assert_eq(r.bytes_per_token, 140);    /* 2 * 64 * 1 + 2 * 4 (K and V scale) + 4 (score) */
    cr_assert_eq(r.bytes_per_seq, 428960);   /* 140 * (4 + 512 + 1536 + 253 steps * 4) */

    m = model(32);
    p = preset(FMQA_LEVEL_AGGRESSIVE, &m);
    p.window = p.sink_tokens = p.heavy = 0;
    r = report(&m, &p, 1, 0);
    cr_assert_eq(r.bytes_per_token, 4352);   /* 2 * 32 * 64 + 2 * 32 * 4 */
    cr_assert_float_eq(r.reduction, 1.0 - 4352.0 / 8192.0, 1e-12);
}

/* Per-head and per-tensor scales store nothing per token: 2 * Hkv or 2 floats
 * a layer, once, in total_bytes and against the budget; the level problem
 * carries the granularity; 16-bit caches and MLA models refuse it. */
Test(levels, fixed_scale_granularity_counts_scales_once)
{
    fmqa_model_config m = model(8);
    fmqa_level_policy p = preset(FMQA_LEVEL_AGGRESSIVE, &m);
    p.window = p.sink_tokens = p.heavy = 0; /* full context */
    p.kv_scale_granularity = FMQA_KV_SCALE_HEAD;
    fmqa_memory_report r = report(&m, &p, 3, 0);
    cr_assert_eq(r.bytes_per_token, 1024);        /* 2 * 8 * 64, no scales */
    cr_assert_eq(r.fixed_scale_bytes, 64);        /* 2 * 8 * 4 */
    cr_assert_eq(r.total_bytes, 3 * 1024 * 1024 + 64);
    r = report(&m, &p, 1, 2 * 1024 * 1024 + 64);
    cr_assert_eq(r.max_seqs_in_budget, 2);
    cr_assert_eq(fmqa_memory_report_compute(ctx, &m, &p, 1, 1024 * 1024 + 63, &r),
                 FMQA_ERR_INVALID_ARGUMENT);
    p.kv_scale_granularity = FMQA_KV_SCALE_TENSOR;
    r = report(&m, &p, 1, 0);
    cr_assert_eq(r.fixed_scale_bytes, 8);
    fmqa_problem prob;
    cr_assert_eq(fmqa_level_problem(ctx, &m, &p, 4, &prob), FMQA_OK, "%s", fmqa_ctx_errmsg(ctx));
    cr_assert_eq(prob.kv_scale_granularity, FMQA_KV_SCALE_TENSOR);

    p = preset(FMQA_LEVEL_BALANCED, &m); /* 16-bit */
    p.kv_scale_granularity = FMQA_KV_SCALE_TENSOR;
    cr_assert_eq(fmqa_memory_report_compute(ctx, &m, &p, 1, 0, &r), FMQA_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(fmqa_ctx_errmsg(ctx), "policy.kv_scale_granularity tensor"), "%s",
              fmqa_ctx_errmsg(ctx));
    p.kv_scale_granularity = (fmqa_kv_scale_granularity)7;
    cr_assert_eq(fmqa_memory_report_compute(ctx, &m, &p, 1, 0, &r), FMQA_ERR_INVALID_ARGUMENT);
}

Test(levels, paged_cache_rounds_to_pages_and_counts_the_table)
{
    fmqa_model_config m = model(1);
    fmqa_level_policy p = preset(FMQA_LEVEL_CONSERVATIVE, &m);
    p.page_size = 16;
    fmqa_memory_report r = report(&m, &p, 1, 0);
    cr_assert_eq(r.bytes_per_seq, 262400);   /* 64 pages: 1024 * 256 + 64 * 4 */

    p = preset(FMQA_LEVEL_BALANCED, &m);
    p.page_size = 16;
    r = report(&m, &p, 1, 0);
    cr_assert_eq(r.bytes_per_seq, 145740);   /* 551 slots -> 35 pages: 560 * 260 + 35 * 4 */
}

/* ------------------------------------------------------------ bad input */

static void expect_model_error(fmqa_model_config m, const char *msg)
{
    fmqa_level_policy p = {.level = 0};
    cr_assert_eq(fmqa_level_policy_preset(ctx, FMQA_LEVEL_BALANCED, &m, &p),
                 FMQA_ERR_INVALID_ARGUMENT);
    cr_assert_eq(p.level, 0, "policy written on error");
    cr_assert_str_eq(fmqa_ctx_errmsg(ctx), msg);
}

Test(levels, bad_models_are_named)
{
    fmqa_model_config m = model(1);
    m.hidden_size = 2000;
    expect_model_error(m, "model.hidden_size 2000 is not a multiple of num_q_heads 32");
    m = model(5);
    expect_model_error(m, "model.num_q_heads 32 is not a multiple of num_kv_heads 5");
    m = model(1);
    m.hidden_size = -1;
    expect_model_error(m, "model: hidden_size (-1), num_q_heads (32), num_kv_heads (1) "
                          "and max_seq_len (1024) must be positive");
    m = model(1);
    m.dtype = FMQA_DTYPE_INT8;
    expect_model_error(m, "model.dtype 4: expected f16 or bf16");
    m = model(1);
    m.mla_rope_dim = 64;
    expect_model_error(m, "model.mla_rope_dim 64 without mla_latent_dim");
}

Test(levels, bad_level_is_named)
{
    fmqa_model_config m = model(1);
    fmqa_level_policy p;
    cr_assert_eq(fmqa_level_policy_preset(ctx, (fmqa_level)7, &m, &p),
                 FMQA_ERR_INVALID_ARGUMENT);
    cr_assert_str_eq(fmqa_ctx_errmsg(ctx),
                     "unknown level 7 (expected 1 conservative, 2 balanced, 3 aggressive)");
}

static void expect_policy_error(const fmqa_level_policy *p, int64_t budget, const char *msg)
{
    fmqa_model_config m = model(1);
    fmqa_memory_report r = {.bytes_per_token = -7};
    cr_assert_eq(fmqa_memory_report_compute(ctx, &m, p, 1, budget, &r),
                 FMQA_ERR_INVALID_ARGUMENT);
    cr_assert_eq(r.bytes_per_token, -7, "report written on error");
    cr_assert_str_eq(fmqa_ctx_errmsg(ctx), msg);
}

Test(levels, bad_policies_are_named)
{
    fmqa_model_config m = model(1);
    fmqa_level_policy base = preset(FMQA_LEVEL_BALANCED, &m), p = base;
    p.window = 2048;
    expect_policy_error(&p, 0, "policy.window 2048 is larger than model.max_seq_len 1024");
    p = base;
    p.kv_dtype = (fmqa_dtype)99;
    expect_policy_error(&p, 0, "policy.kv_dtype 99: expected f16, bf16, int8 or fp8_e4m3");
    p = base;
    p.spec_tokens = 0;
    expect_policy_error(&p, 0, "policy.spec_tokens 0: expected 1..16");
    p = base;
    p.window = 0;
    expect_policy_error(&p, 0, "policy.sink_tokens 4 without a window (sinks only matter "
                               "with a sliding window)");
    p = base;
    p.page_size = -16;
    expect_policy_error(&p, 0, "policy: sink_tokens (4), window (128) and page_size (-16) "
                               "must not be negative");
    /* 143260 bytes per sequence: 551 slots of 260 bytes */
    expect_policy_error(&base, 143259, "budget_bytes 143259 is too small for one sequence "
                                       "(143260 bytes per layer)");
    expect_policy_error(&base, -1, "n_seqs (1) and budget_bytes (-1) must not be negative");
}

Test(levels, overflow_is_an_error_not_a_wrap)
{
    fmqa_model_config m = model(32);
    fmqa_level_policy p = preset(FMQA_LEVEL_CONSERVATIVE, &m);
    fmqa_memory_report r;
    cr_assert_eq(fmqa_memory_report_compute(ctx, &m, &p, INT64_MAX / 2, 0, &r),
                 FMQA_ERR_INVALID_ARGUMENT);
    cr_assert_str_eq(fmqa_ctx_errmsg(ctx),
                     "n_seqs 4611686018427387903: total bytes overflow int64");
}

Test(levels, null_context_is_accepted)
{
    fmqa_model_config m = model(1);
    fmqa_level_policy p;
    cr_assert_eq(fmqa_level_policy_preset(NULL, FMQA_LEVEL_AGGRESSIVE, &m, &p), FMQA_OK);
    m.num_kv_heads = 3;
    cr_assert_eq(fmqa_level_policy_preset(NULL, FMQA_LEVEL_AGGRESSIVE, &m, &p),
                 FMQA_ERR_INVALID_ARGUMENT);
}

/* ------------------------------------------------------------ fastmqa-bench levels */

/* Output of `fastmqa-bench levels ARGS` (malloc'ed); asserts exit status 0.
 * --allow-fail: these tests read the figures, and the random data set fails
 * every level that drops tokens by design (test_tool_messages.c checks the
 * exit status without it). */
static char *run_bench(const char *args)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "'%s/bench/fastmqa-bench' levels --allow-fail %s", FMQA_BINARY_DIR,
             args);
    FILE *f = popen(cmd, "r");
    cr_assert_not_null(f, "popen %s", cmd);
    size_t cap = 1 << 16, len = 0, got;
    char *out = malloc(cap);
    while ((got = fread(out + len, 1, cap - 1 - len, f)) > 0)
        len += got;
    out[len] = 0;
    cr_assert_eq(pclose(f), 0, "%s failed (is fastmqa-bench built?):\n%s", cmd, out);
    return out;
}

/* Numeric field of the JSON row {"<kind>":level,"data":data,...}: one row a
 * line; kind "level" (the seed model) or "mla_level" (the MLA model). */
static double json_row_field(const char *out, const char *kind, const char *level,
                             const char *data, const char *field)
{
    char key[128], name[64];
    snprintf(key, sizeof key, "{\"%s\":\"%s\",\"data\":\"%s\"", kind, level, data);
    snprintf(name, sizeof name, "\"%s\":", field);
    const char *row = strstr(out, key);
    cr_assert_not_null(row, "no row %s in:\n%s", key, out);
    const char *eol = strchr(row, '\n'), *at = strstr(row, name);
    cr_assert(at && (!eol || at < eol), "row %s has no %s", key, name);
    return strtod(at + strlen(name), NULL);
}

static double json_field(const char *out, const char *level, const char *data,
                         const char *field)
{
    return json_row_field(out, "level", level, data, field);
}

Test(levels, bench_prints_the_table_header)
{
    char *out = run_bench("--seq 256 --kv-heads 8 --no-mla");
    cr_assert(strstr(out, "FastMQA levels: hidden 2048, 32 query heads, 8 KV heads, head dim "
                          "64, 256 tokens, f16; one layer, one sequence\n"), "%s", out);
    cr_assert(strstr(out, "level         data        bytes/token reduction multiplier "
                          "max_abs_err rel_l2_err  budget pass  scores       "
                          "decode_us/step\n"), "%s", out);
    free(out);
}

Test(levels, bench_accuracy_is_ordered_and_conservative_is_rounding_only)
{
    char *out = run_bench("--seq 256 --kv-heads 8 --json");
    const char *data[] = {"random", "sink+local"};
    for (int i = 0; i < 2; i++) {
        double cons = json_field(out, "conservative", data[i], "rel_l2_error");
        double aggr = json_field(out, "aggressive", data[i], "rel_l2_error");
        /* f16 q, cache and output: a few units of 2^-11 relative */
        cr_assert(cons > 0 && cons < 1e-3, "%s: conservative rel_l2 %g", data[i], cons);
        cr_assert(json_field(out, "conservative", data[i], "max_abs_error") < 2e-3);
        cr_assert(aggr > cons, "%s: aggressive %g <= conservative %g", data[i], aggr, cons);
    }
    /* memory of GQA 8, 256 tokens: 2 * 8 * 64 * 2 = 2048 B/token; aggressive int8:
       1024 + 2 * 8 * 4 = 1088 B/token of K, V and scales */
    cr_assert_eq(json_field(out, "conservative", "random", "bytes_per_token"), 2048);
    /* ... over 256 tokens: 16 rows make scores cost as much as K and V (100% per
       call), so one score step every ceil(100 / 3) = 34 steps of up to 4 tokens,
       and 4 sinks + 32 recent + 96 heavy + 136 > 256 slots: full context.
       Balanced (4 rows, 40 / 256 per call: 3 of 16 steps score) compresses to
       4 + 32 + 96 + 16 slots of 2048 + 8 * 4 (scores) bytes. */
    cr_assert_eq(json_field(out, "aggressive", "random", "bytes_per_seq"), 1088 * 256);
    cr_assert_eq(json_field(out, "balanced", "random", "bytes_per_seq"), 2080 * 148);
    cr_assert_eq(json_field(out, "balanced", "random", "score_steps"), 3);
    cr_assert_eq(json_field(out, "balanced", "random", "compress_every"), 16);
    cr_assert_float_eq(json_field(out, "balanced", "random", "score_cost_amortised"),
                       40.0 / 256.0 * 3.0 / 16.0, 1e-6);
    /* balanced and aggressive meet their budgets on the structured data sets */
    const char *levels[] = {"balanced", "aggressive"}, *structured[] = {"sink+local", "heavy"};
    for (int l = 0; l < 2; l++)
        for (int i = 0; i < 2; i++) {
            double rel = json_field(out, levels[l], structured[i], "rel_l2_error");
            double budget = json_field(out, levels[l], structured[i], "rel_l2_budget");
            cr_assert(rel <= budget, "%s on %s: rel_l2 %g > budget %g", levels[l], structured[i],
                      rel, budget);
            cr_assert(json_field(out, levels[l], structured[i], "max_abs_error") < 0.1);
        }
    free(out);
}

/* The MLA model beside the seed: DeepSeek-V3's attention, its memory against
 * the model as fp16 MHA and its errors from the float64 reference. */
Test(levels, bench_assesses_the_mla_model)
{
    char *out = run_bench("--seq 256 --json");
    const char *data[] = {"random", "sink+local"};
    for (int i = 0; i < 2; i++) {
        double cons = json_row_field(out, "mla_level", "conservative", data[i], "rel_l2_error");
        double bal = json_row_field(out, "mla_level", "balanced", data[i], "rel_l2_error");
        double aggr = json_row_field(out, "mla_level", "aggressive", data[i], "rel_l2_error");
        cr_assert(cons > 0 && cons < 1e-3, "%s: conservative rel_l2 %g", data[i], cons);
        /* the window and the 8-bit latent add error to rounding (aggressive has 4 query
           tokens where balanced has 1, so the two are not ordered) */
        cr_assert(bal > cons && aggr > cons, "%s: %g %g %g", data[i], cons, bal, aggr);
    }
    /* 576 f16 = 1152 B/token against 128 x (128 + 64 + 128) x 2 = 81920; aggressive:
       576 fp8 + one scale over 4 sinks + 64 window + 3 draft slots (spec_tokens 4) */
    cr_assert_eq(json_row_field(out, "mla_level", "conservative", "random", "bytes_per_token"),
                 1152);
    cr_assert_float_eq(json_row_field(out, "mla_level", "conservative", "random",
                                      "cache_multiplier"), 81920.0 / 1152.0, 1e-3);
    cr_assert_eq(json_row_field(out, "mla_level", "aggressive", "random", "bytes_per_seq"),
                 580 * 71);
    cr_assert(strstr(out, "{\"mla_level\":\"aggressive\",\"data\":\"random\",\"kv_dtype\":"
                          "\"fp8_e4m3\""), "%s", out);
    free(out);
}

Test(levels, bench_rejects_bad_options)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "'%s/bench/fastmqa-bench' levels --hidden 2000 2>&1",
             FMQA_BINARY_DIR);
    FILE *f = popen(cmd, "r");
    char line[512] = "";
    cr_assert_not_null(fgets(line, sizeof line, f));
    cr_assert_eq(WEXITSTATUS(pclose(f)), 2);
    cr_assert_str_eq(line, "fastmqa-bench levels: model.hidden_size 2000 is not a multiple "
                           "of num_q_heads 32\n");
}
