/*
 * test_score_schedule.c -- the score schedule of the compressed levels:
 * fmqa_level_policy_preset's compress_every / score_steps (the amortised cost
 * of FMQA_FLAG_SCORES within 3% of the decode it rides on), fmqa_level_step
 * (which step zeroes, scores, compresses) and the validation of both fields.
 *
 * The per-call cost is recomputed here from docs/kernels.md's byte model,
 * (8 M + 8) / (2 d EB + 8 for per-token 8-bit scales), M = group x query
 * tokens, independently of fmqa_score_cost_bytes; the preset must keep
 * cost * score_steps / compress_every <= 3%, score as many of 16 steps as
 * that allows, and, where not even one of 16 fits, stretch compress_every no
 * further than one score step needs.
 */
#include <stdio.h>

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

TestSuite(score_schedule, .init = setup, .fini = teardown);

/* 32 query heads, head dim d, kv KV heads; long enough that every class's
 * schedule fits (MQA, d 64, int8, 4 drafts: 253 steps x 4 slots). */
static fmqa_model_config model(int32_t kv, int32_t d)
{
    return (fmqa_model_config){.hidden_size = 4096, .num_q_heads = 32, .num_kv_heads = kv,
                               .head_dim = d, .max_seq_len = 32768, .dtype = FMQA_DTYPE_F16};
}

/* Per-call cost of scores for policy p on model m: added and read bytes per
 * position and KV head. */
static void cost(const fmqa_model_config *m, const fmqa_level_policy *p, double *added,
                 double *read)
{
    int eb = p->kv_dtype == FMQA_DTYPE_INT8 || p->kv_dtype == FMQA_DTYPE_FP8_E4M3 ? 1 : 2;
    double rows = (double)(m->num_q_heads / m->num_kv_heads) * p->spec_tokens;
    *added = 8 * rows + 8;
    *read = 2.0 * m->head_dim * eb + (eb == 1 ? 8 : 0);
}

/* The preset rule, checked on one policy: within 3%, maximal score steps,
 * minimal stretch, and the slots it costs counted by the memory report. */
static void check_schedule(const fmqa_model_config *m, const fmqa_level_policy *p,
                           const char *what)
{
    double added, read;
    cost(m, p, &added, &read);
    const double c = added / read, E = p->compress_every, S = p->score_steps;
    cr_assert(p->heavy > 0, "%s: not compressed", what);
    cr_assert(S >= 1 && S <= E, "%s: score_steps %g of %g", what, S, E);
    cr_assert(c * S / E <= 0.03 + 1e-12, "%s: amortised %g (per call %g, %g of %g steps)", what,
              c * S / E, c, S, E);
    if (E == FMQA_LEVEL_COMPRESS_EVERY) /* one more score step would exceed 3% */
        cr_assert(S == E || c * (S + 1) / E > 0.03, "%s: %g of 16 steps at %g", what, S, c);
    else /* stretched: one step, and one step less would exceed 3% */
        cr_assert(S == 1 && E > FMQA_LEVEL_COMPRESS_EVERY && c / (E - 1) > 0.03,
                  "%s: %g of %g steps at %g", what, S, E, c);
    fmqa_memory_report r;
    cr_assert_eq(fmqa_memory_report_compute(ctx, m, p, 1, 0, &r), FMQA_OK, "%s",
                 fmqa_ctx_errmsg(ctx));
    cr_assert_eq(r.tokens_kept, p->sink_tokens + p->window + p->heavy +
                                    (int64_t)p->compress_every * p->spec_tokens,
                 "%s", what);
}

/* MHA, GQA-8 (4 heads), GQA-4 (8 heads), MQA x d 64, 128, 256 x balanced
 * (f16), aggressive (int8, 4 drafts) and aggressive in fp8 (what
 * fmqa_level_policy_tune may choose: the same bytes as int8, so the same
 * schedule must hold).  bf16 costs what f16 does. */
Test(score_schedule, preset_score_cost_within_3_percent_for_every_class)
{
    const int32_t kvs[] = {32, 8, 4, 1}, ds[] = {64, 128, 256};
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 3; j++)
            for (int l = FMQA_LEVEL_BALANCED; l <= FMQA_LEVEL_AGGRESSIVE; l++) {
                fmqa_model_config m = model(kvs[i], ds[j]);
                fmqa_level_policy p;
                cr_assert_eq(fmqa_level_policy_preset(ctx, (fmqa_level)l, &m, &p), FMQA_OK,
                             "%s", fmqa_ctx_errmsg(ctx));
                char what[96];
                snprintf(what, sizeof what, "%s, %d KV heads, d %d, %s", fmqa_level_name(l),
                         kvs[i], ds[j], fmqa_dtype_name(p.kv_dtype));
                check_schedule(&m, &p, what);
                if (l == FMQA_LEVEL_AGGRESSIVE) {
                    p.kv_dtype = FMQA_DTYPE_FP8_E4M3;
                    snprintf(what, sizeof what, "aggressive, %d KV heads, d %d, fp8_e4m3",
                             kvs[i], ds[j]);
                    check_schedule(&m, &p, what);
                }
            }
}

/* Hand-computed cases of the rule (docs/kernels.md's table). */
Test(score_schedule, preset_score_steps_by_hand)
{
    struct { int32_t kv, d; fmqa_level level; int32_t every, steps; } cases[] = {
        {32, 128, FMQA_LEVEL_BALANCED, 16, 15},  /* MHA f16: 16 / 512 = 3.1%: 15 of 16      */
        {32, 64, FMQA_LEVEL_BALANCED, 16, 7},    /* 16 / 256 = 6.25%: 7 of 16 (2.7%)        */
        {8, 128, FMQA_LEVEL_BALANCED, 16, 6},    /* G 4: 40 / 512 = 7.8%: 6 of 16 (2.9%)    */
        {4, 128, FMQA_LEVEL_BALANCED, 16, 3},    /* G 8: 72 / 512 = 14.1%: 3 of 16 (2.6%)   */
        {1, 128, FMQA_LEVEL_BALANCED, 18, 1},    /* G 32: 264 / 512 = 51.6%: 1 of 18 (2.9%) */
        {32, 128, FMQA_LEVEL_AGGRESSIVE, 16, 3}, /* M 4 int8: 40 / 264 = 15.2%: 3 of 16     */
        {1, 128, FMQA_LEVEL_AGGRESSIVE, 131, 1}, /* M 128: 1032 / 264 = 391%: 1 of 131      */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fmqa_model_config m = model(cases[i].kv, cases[i].d);
        fmqa_level_policy p;
        cr_assert_eq(fmqa_level_policy_preset(ctx, cases[i].level, &m, &p), FMQA_OK);
        cr_assert_eq(p.compress_every, cases[i].every, "case %zu: every %d", i, p.compress_every);
        cr_assert_eq(p.score_steps, cases[i].steps, "case %zu: steps %d", i, p.score_steps);
    }
}

/* Where the schedule's slots would not leave room for compression, the preset
 * keeps full context (and no schedule); conservative never compresses. */
Test(score_schedule, preset_without_room_for_the_score_schedule_keeps_full_context)
{
    fmqa_model_config m = model(1, 64);
    m.max_seq_len = 1024; /* aggressive MQA: 4 + 128 + 384 + 253 x 4 slots > 1024 */
    fmqa_level_policy p;
    cr_assert_eq(fmqa_level_policy_preset(ctx, FMQA_LEVEL_AGGRESSIVE, &m, &p), FMQA_OK);
    cr_assert_eq(p.heavy, 0);
    cr_assert_eq(p.window, 0);
    cr_assert_eq(p.compress_every, 0);
    cr_assert_eq(p.score_steps, 0);
    cr_assert_eq(fmqa_level_policy_preset(ctx, FMQA_LEVEL_BALANCED, &m, &p), FMQA_OK);
    cr_assert_eq(p.compress_every, 35); /* 264 / 256 per call: ceil(103.1 / 3) */
    cr_assert_eq(p.score_steps, 1);
    cr_assert_eq(fmqa_level_policy_preset(ctx, FMQA_LEVEL_CONSERVATIVE, &m, &p), FMQA_OK);
    cr_assert_eq(p.heavy + p.compress_every + p.score_steps, 0);
}

/* ------------------------------------------------------------ fmqa_level_step */

static fmqa_level_step_actions step(const fmqa_level_policy *p, int64_t s)
{
    fmqa_level_step_actions a;
    cr_assert_eq(fmqa_level_step(ctx, p, s, &a), FMQA_OK, "%s", fmqa_ctx_errmsg(ctx));
    return a;
}

Test(score_schedule, step_scores_the_window_before_each_compress)
{
    fmqa_level_policy p = {.heavy = 8, .compress_every = 16, .score_steps = 3};
    for (int64_t s = 0; s < 3 * 16; s++) {
        fmqa_level_step_actions a = step(&p, s);
        int64_t phase = s % 16;
        cr_assert_eq(a.score, phase >= 13, "step %lld", (long long)s);
        cr_assert_eq(a.zero_scores, phase == 13, "step %lld", (long long)s);
        cr_assert_eq(a.compress, phase == 15, "step %lld", (long long)s);
    }
    /* every step scored (H2O) and compressed: zero only on the first */
    p.compress_every = p.score_steps = 1;
    for (int64_t s = 0; s < 4; s++) {
        fmqa_level_step_actions a = step(&p, s);
        cr_assert(a.score && a.zero_scores && a.compress);
    }
    p.compress_every = 5, p.score_steps = 5;
    cr_assert(step(&p, 5).zero_scores && step(&p, 6).score && !step(&p, 6).zero_scores);
    cr_assert(step(&p, INT64_MAX).compress == (INT64_MAX % 5 == 4));
    /* no heavy hitters: a sliding window or full context, nothing to do */
    fmqa_level_policy w = {.window = 64, .sink_tokens = 4};
    fmqa_level_step_actions a = step(&w, 15);
    cr_assert_eq(a.score + a.zero_scores + a.compress, 0);
}

/* Each period of a preset scores exactly score_steps steps, zeroes once
 * before them and compresses once, last. */
Test(score_schedule, step_follows_every_preset_schedule)
{
    fmqa_model_config m = model(8, 128);
    fmqa_level_policy p;
    cr_assert_eq(fmqa_level_policy_preset(ctx, FMQA_LEVEL_AGGRESSIVE, &m, &p), FMQA_OK);
    int scored = 0, zeroed = 0, compressed = 0;
    for (int64_t s = 0; s < 2 * (int64_t)p.compress_every; s++) {
        fmqa_level_step_actions a = step(&p, s);
        cr_assert(!a.zero_scores || a.score, "step %lld zeroes without scoring", (long long)s);
        scored += a.score, zeroed += a.zero_scores, compressed += a.compress;
        if (a.compress)
            cr_assert_eq(s % p.compress_every, p.compress_every - 1);
    }
    cr_assert_eq(scored, 2 * p.score_steps);
    cr_assert_eq(zeroed, 2);
    cr_assert_eq(compressed, 2);
}

/* ------------------------------------------------------------ validation */

static void expect_step_error(const fmqa_level_policy *p, int64_t s, const char *msg)
{
    fmqa_level_step_actions a = {7, 7, 7};
    cr_assert_eq(fmqa_level_step(ctx, p, s, &a), FMQA_ERR_INVALID_ARGUMENT);
    cr_assert_str_eq(fmqa_ctx_errmsg(ctx), msg);
    cr_assert(a.score == 7 && a.zero_scores == 7 && a.compress == 7, "output written");
}

Test(score_schedule, step_and_compress_fields_are_validated)
{
    fmqa_level_policy p = {.heavy = 8, .compress_every = 16, .score_steps = 17};
    expect_step_error(&p, 0, "policy.score_steps 17: expected 1..compress_every (16), the "
                             "steps before each compaction that decode with scores");
    p.score_steps = 0;
    expect_step_error(&p, 0, "policy.score_steps 0: expected 1..compress_every (16), the "
                             "steps before each compaction that decode with scores");
    p.compress_every = 0, p.score_steps = 1;
    expect_step_error(&p, 0, "policy.compress_every 0: a compressed cache (heavy 8) needs a "
                             "compaction every 1 or more decode steps (the presets set it)");
    p.compress_every = -1;
    expect_step_error(&p, 0, "policy: heavy (8), compress_every (-1) and score_steps (1) must "
                             "not be negative");
    p.compress_every = 16;
    expect_step_error(&p, -1, "fmqa_level_step: step -1 must not be negative");
    fmqa_level_step_actions a;
    cr_assert_eq(fmqa_level_step(ctx, NULL, 0, &a), FMQA_ERR_INVALID_ARGUMENT);
    cr_assert_eq(fmqa_level_step(ctx, &p, 0, NULL), FMQA_ERR_INVALID_ARGUMENT);
    cr_assert_eq(fmqa_level_step(NULL, &p, 3, &a), FMQA_OK); /* no context needed */

    /* The memory report and the level problem check the same fields, and the
     * slots they add: compress_every * spec_tokens beyond the kept ones. */
    fmqa_model_config m = model(8, 128);
    fmqa_level_policy base;
    cr_assert_eq(fmqa_level_policy_preset(ctx, FMQA_LEVEL_BALANCED, &m, &base), FMQA_OK);
    fmqa_memory_report r;
    fmqa_problem pr;
    p = base;
    p.score_steps = p.compress_every + 1;
    cr_assert_eq(fmqa_memory_report_compute(ctx, &m, &p, 1, 0, &r), FMQA_ERR_INVALID_ARGUMENT);
    cr_assert_eq(fmqa_level_problem(ctx, &m, &p, 1, &pr), FMQA_ERR_INVALID_ARGUMENT);
    p = base;
    p.compress_every = INT32_MAX;
    cr_assert_eq(fmqa_memory_report_compute(ctx, &m, &p, 1, 0, &r), FMQA_ERR_INVALID_ARGUMENT);
    cr_assert_str_eq(fmqa_ctx_errmsg(ctx), "policy: sink_tokens + window + heavy + "
                                           "compress_every * spec_tokens exceed 2^31 - 1 slots");
    p = base;
    p.compress_every = 100, p.spec_tokens = 3;
    cr_assert_eq(fmqa_memory_report_compute(ctx, &m, &p, 1, 0, &r), FMQA_OK);
    cr_assert_eq(r.tokens_kept, 4 + 4096 + 12288 + 300); /* 32768 / 8, 3 / 8, 100 steps x 3 */
    cr_assert_eq(fmqa_level_problem(ctx, &m, &p, 1, &pr), FMQA_OK);
    cr_assert_eq(pr.kv_len, r.tokens_kept);
    /* heavy 0: the schedule is not used, only negative values are refused */
    p = base;
    p.heavy = 0, p.compress_every = 0, p.score_steps = 0;
    cr_assert_eq(fmqa_memory_report_compute(ctx, &m, &p, 1, 0, &r), FMQA_OK, "%s",
                 fmqa_ctx_errmsg(ctx));
    p.score_steps = -2;
    cr_assert_eq(fmqa_memory_report_compute(ctx, &m, &p, 1, 0, &r), FMQA_ERR_INVALID_ARGUMENT);
}
