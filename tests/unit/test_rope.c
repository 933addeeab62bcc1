/*
 * test_rope.c -- RoPE beyond one theta (issue 16 item 3): rotation from the
 * caller's cos/sin table indexed by position, and partial rotary (the first
 * rope_dim elements of a row), in the append and for Q.
 *
 * The reference first: a table holding theta's own angles gives the theta
 * path (to the float rounding of cos and sin), partial rotary rotates its part
 * as a rope_dim-wide RoPE and leaves the rest bit for bit, and a token past
 * the table's end is not written.  Then the append template's real source on
 * the CPU emulator against the reference (tests/support/append_check.h), both
 * layouts: 64 of 128 rotated (int8 and f16 caches), StableLM's 20 of 80
 * (VEC 2) with a ring, a Llama-3-scaled table on a paged cache, a table one
 * position short whose last token must stay unwritten, and Q rotated alone
 * (a call without new tokens).  Last, the
 * validation of rope_dim and of the table arguments.
 */
#define _POSIX_C_SOURCE 200809L

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "append_check.h"
#include "ref.h"
#include "test_support.h"

#define BF16 FMQA_DTYPE_BF16
#define F16 FMQA_DTYPE_F16
#define NEOX FMQA_ROPE_NEOX
#define GPTJ FMQA_ROPE_GPTJ

/* ------------------------------------------------------------ reference */

enum { D = 64, N = 5, HK = 2, HQ = 4 };

/* ref_append of N tokens at positions 7.. into f32 caches (so that every
 * rotated value is seen to float precision); q rotated too.  table NULL:
 * theta 10000. */
static void append_f32(fmqa_rope mode, int64_t rope_dim, const float *table, int64_t table_len,
                       const double *k_new, const double *v_new, double *q, float *k,
                       float *v)
{
    static const int32_t start[1] = {7};
    ref_append_shape s = {1, N, HQ, HK, D, D, start, mode, table ? 0 : 10000.0, 0,
                          rope_dim, 0, table, rope_dim ? rope_dim : D, table_len, NULL, NULL};
    ref_cache_view kc = {.dtype = FMQA_DTYPE_F32, .data = k, .stride_batch = 16 * HK * D,
                         .stride_token = HK * D, .stride_head = D};
    ref_cache_view vc = kc;
    vc.data = v;
    fmqa_err err;
    cr_assert_eq(ref_append(&s, k_new, v_new, q, &kc, &vc, &err), FMQA_OK, "%s", err.msg);
}

static void inputs(double *k_new, double *v_new, double *q)
{
    ref_rng rng;
    ref_rng_seed(&rng, fmqa_test_seed("rope_ref"));
    ref_rng_fill(&rng, k_new, N * HK * D, 1.0, F16);
    ref_rng_fill(&rng, v_new, N * HK * D, 1.0, F16);
    ref_rng_fill(&rng, q, N * HQ * D, 1.0, F16);
}

/* theta's angles in a [len, r] table of floats: cos then sin. */
static float *theta_table(int64_t len, int64_t r)
{
    float *t = malloc((size_t)(len * r) * sizeof *t);
    cr_assert(t);
    for (int64_t p = 0; p < len; p++)
        for (int64_t i = 0; i < r / 2; i++) {
            double a = (double)p * pow(10000.0, -2.0 * (double)i / (double)r);
            t[p * r + i] = (float)cos(a), t[p * r + r / 2 + i] = (float)sin(a);
        }
    return t;
}

Test(rope_ref, table_of_theta_angles_is_the_theta_path)
{
    double k_new[N * HK * D], v_new[N * HK * D], q0[N * HQ * D], qa[N * HQ * D], qb[N * HQ * D];
    float ka[16 * HK * D], va[16 * HK * D], kb[16 * HK * D], vb[16 * HK * D];
    inputs(k_new, v_new, q0);
    float *table = theta_table(16, D);
    for (int mode = NEOX; mode <= GPTJ; mode++) {
        memcpy(qa, q0, sizeof qa), memcpy(qb, q0, sizeof qb);
        append_f32((fmqa_rope)mode, 0, NULL, 0, k_new, v_new, qa, ka, va);
        append_f32((fmqa_rope)mode, 0, table, 16, k_new, v_new, qb, kb, vb);
        /* cos and sin rounded to float: |error| <= 2^-24 each, a pair's norm
           times 2^-23 at most */
        for (int i = 7 * HK * D; i < 12 * HK * D; i++) {
            cr_assert(fabsf(ka[i] - kb[i]) <= 4e-7f * (1 + fabsf(ka[i])), "k[%d] %g %g", i,
                      ka[i], kb[i]);
            cr_assert_eq(va[i], vb[i]);
        }
        for (int i = 0; i < N * HQ * D; i++)
            cr_assert(fabs(qa[i] - qb[i]) <= 4e-7 * (1 + fabs(qa[i])), "q[%d]", i);
    }
    free(table);
}

Test(rope_ref, partial_rotary_rotates_its_part_only)
{
    double k_new[N * HK * D], v_new[N * HK * D], q0[N * HQ * D], q[N * HQ * D];
    float k[16 * HK * D], v[16 * HK * D];
    inputs(k_new, v_new, q0);
    for (int mode = NEOX; mode <= GPTJ; mode++) {
        memcpy(q, q0, sizeof q);
        append_f32((fmqa_rope)mode, 16, NULL, 0, k_new, v_new, q, k, v);
        for (int t = 0; t < N; t++)
            for (int h = 0; h < HK; h++) {
                double x[D];
                memcpy(x, k_new + (t * HK + h) * D, sizeof x);
                ref_rope_row((fmqa_rope)mode, x, 16, 7 + t, 10000.0, NULL); /* 16-wide RoPE */
                const float *row = k + ((7 + t) * HK + h) * D;
                for (int i = 0; i < D; i++)
                    cr_assert_eq(row[i], (float)x[i], "t%d h%d [%d]", t, h, i);
            }
        for (int i = 0; i < N * HQ * D; i++)
            if (i % D >= 16)
                cr_assert_eq(q[i], q0[i], "q[%d] beyond the rotated part changed", i);
    }
}

Test(rope_ref, a_token_past_the_table_is_not_written)
{
    double k_new[N * HK * D], v_new[N * HK * D], q0[N * HQ * D], q[N * HQ * D];
    float k[16 * HK * D], v[16 * HK * D];
    inputs(k_new, v_new, q0);
    memcpy(q, q0, sizeof q);
    float *table = theta_table(11, D); /* positions 7..10 of 7..11 */
    memset(k, 0x7f, sizeof k), memset(v, 0x7f, sizeof v);
    append_f32(NEOX, 0, table, 11, k_new, v_new, q, k, v);
    float poison;
    memset(&poison, 0x7f, sizeof poison);
    for (int i = 0; i < HK * D; i++) {
        cr_assert_eq(memcmp(&k[11 * HK * D + i], &poison, 4), 0, "k of position 11 written");
        cr_assert_eq(memcmp(&v[11 * HK * D + i], &poison, 4), 0, "v of position 11 written");
        cr_assert(k[10 * HK * D + i] != poison, "position 10 not written");
    }
    for (int i = 4 * HQ * D; i < N * HQ * D; i++)
        cr_assert_eq(q[i], q0[i], "q of position 11 rotated");
    free(table);
}

/* ------------------------------------------------------------ emulator */

/* Partial rotary (64 of 128; StableLM's 20 of 80, whose 10 pairs allow only
 * VEC 2, with a ring and its wrap) and angles from a Llama-3-scaled table (one
 * covering every token; one a position short, whose last token must stay
 * unwritten, K, V and q). */
static const append_case CASES[] = {
    {"rope partial d128 r64", 2, 8, 2, 128, 128, 3, 64, 0, 0, 0, 0, {0, 50}, 64, 0, 0, 0, FMQA_KV_SCALE_TOKEN_HEAD, NULL},
    {"rope partial d80 r20 ring", 2, 4, 1, 80, 80, 5, 4096, FMQA_FLAG_RING, 0, 16, 4,
     {0, 300}, 20, 0, 0, 0, FMQA_KV_SCALE_TOKEN_HEAD, NULL},
    {"rope table d128 paged", 2, 8, 2, 128, 128, 4, 64, FMQA_FLAG_PAGED, 16, 0, 0, {5, 40}, 0,
     0, 1, 0, FMQA_KV_SCALE_TOKEN_HEAD, NULL},
    {"rope table short r32", 2, 4, 1, 64, 64, 4, 64, 0, 0, 0, 0, {10, 30}, 32, 0, 2, 0, FMQA_KV_SCALE_TOKEN_HEAD, NULL},
    {"rope q alone r64 table", 2, 8, 2, 128, 128, 3, 64, 0, 0, 0, 0, {0, 33}, 64, 0, 1, 1, FMQA_KV_SCALE_TOKEN_HEAD, NULL},
};

Test(rope_emu, partial, .timeout = 900)
{
    append_emu_case(&CASES[0], F16, FMQA_DTYPE_INT8, NEOX, "");
    append_emu_case(&CASES[0], BF16, F16, GPTJ, "THREADS_PER_ROW=4,VEC=4,ROWS_PER_CTA=8");
    append_emu_case(&CASES[1], BF16, FMQA_DTYPE_FP8_E4M3, GPTJ, "");
    append_emu_case(&CASES[1], F16, BF16, NEOX, "");
}

Test(rope_emu, table, .timeout = 900)
{
    append_emu_case(&CASES[2], BF16, FMQA_DTYPE_INT8, NEOX, "");
    append_emu_case(&CASES[2], F16, F16, GPTJ, "THREADS_PER_ROW=16,VEC=2");
    append_emu_case(&CASES[3], F16, F16, NEOX, "");
}

/* RoPE for Q alone (k_new NULL): partial, from a table, no cache touched. */
Test(rope_emu, q_alone, .timeout = 900)
{
    append_emu_case(&CASES[4], BF16, F16, GPTJ, "");
}

/* ------------------------------------------------------------ validation */

static _Alignas(16) uint16_t buf[8 * 4 * 128];
static _Alignas(16) float table[64 * 128];
static const int32_t starts[2] = {0, 0};

static fmqa_problem rope_problem(void)
{
    fmqa_problem p;
    fmqa_problem_init(&p);
    p.op = FMQA_OP_APPEND;
    p.batch = 2, p.num_q_heads = 4, p.num_kv_heads = 1, p.q_tokens = 2, p.kv_len = 8;
    p.rope = NEOX;
    return p;
}

/* Arguments of rope_problem (d 128): inputs and caches in buf, the table in
 * table (64 positions of 128 floats). */
static fmqa_append_args good_args(void)
{
    fmqa_append_args a;
    memset(&a, 0, sizeof a);
    a.k_new = a.v_new = a.k = a.v = buf;
    a.k_new_stride_batch = a.v_new_stride_batch = 2 * 128;
    a.k_new_stride_token = a.v_new_stride_token = a.k_new_stride_head = a.v_new_stride_head = 128;
    a.k_stride_batch = a.v_stride_batch = 8 * 128;
    a.k_stride_token = a.v_stride_token = a.k_stride_head = a.v_stride_head = 128;
    a.start_pos = starts;
    a.rope_cos_sin = table, a.rope_cos_sin_stride = 128, a.rope_cos_sin_len = 64;
    return a;
}

Test(rope_args, bad_rope_dims_and_tables_are_named)
{
    fmqa_ctx_t *ctx = NULL;
    cr_assert_eq(fmqa_ctx_create(NULL, &ctx), FMQA_OK);
    fmqa_problem p = rope_problem();
    p.rope_dim = 30;
    cr_expect_eq(fmqa_problem_validate(ctx, &p), FMQA_ERR_INVALID_ARGUMENT);
    cr_expect(strstr(fmqa_ctx_errmsg(ctx), "problem.rope_dim 30: expected 0"), "%s",
              fmqa_ctx_errmsg(ctx));
    p.rope_dim = 32, p.rope = FMQA_ROPE_NONE;
    cr_expect_eq(fmqa_problem_validate(ctx, &p), FMQA_ERR_INVALID_ARGUMENT);
    cr_expect(strstr(fmqa_ctx_errmsg(ctx), "without RoPE"), "%s", fmqa_ctx_errmsg(ctx));
    p.rope = NEOX, p.op = FMQA_OP_DECODE;
    cr_expect_eq(fmqa_problem_validate(ctx, &p), FMQA_ERR_INVALID_ARGUMENT);
    cr_expect(strstr(fmqa_ctx_errmsg(ctx), "an append field"), "%s", fmqa_ctx_errmsg(ctx));

    static const char *const msgs[] = {
        "args.rope_theta 10000 and args.rope_cos_sin are exclusive",
        "rope_cos_sin_stride 32 at least the 64 rotated elements",
        "args.rope_cos_sin_len 0 must be positive",
        "args.rope_cos_sin is not 4-byte aligned",
        "args.rope_cos_sin is set but the problem has no RoPE",
    };
    for (int i = 0; i < 5; i++) {
        p = rope_problem();
        p.rope_dim = 64;
        fmqa_append_args a = good_args();
        if (i == 0)
            a.rope_theta = 10000.0f;
        else if (i == 1)
            a.rope_cos_sin_stride = 32;
        else if (i == 2)
            a.rope_cos_sin_len = 0;
        else if (i == 3)
            a.rope_cos_sin = (const float *)((const char *)table + 2);
        else
            p.rope = FMQA_ROPE_NONE, p.rope_dim = 0;
        cr_expect_eq(fmqa_append(ctx, &p, &a, NULL), FMQA_ERR_INVALID_ARGUMENT, "%s", msgs[i]);
        cr_expect(strstr(fmqa_ctx_errmsg(ctx), msgs[i]), "%s: '%s'", msgs[i],
                  fmqa_ctx_errmsg(ctx));
    }
    /* q alone: no other input or cache, and q itself */
    p = rope_problem();
    fmqa_append_args a = good_args();
    a.k_new = NULL;
    cr_expect_eq(fmqa_append(ctx, &p, &a, NULL), FMQA_ERR_INVALID_ARGUMENT);
    cr_expect(strstr(fmqa_ctx_errmsg(ctx), "args.v_new is set but args.k_new is NULL"), "%s",
              fmqa_ctx_errmsg(ctx));
    memset(&a, 0, sizeof a);
    a.start_pos = starts;
    cr_expect_eq(fmqa_append(ctx, &p, &a, NULL), FMQA_ERR_INVALID_ARGUMENT);
    cr_expect(strstr(fmqa_ctx_errmsg(ctx), "args.k_new is NULL and args.q is NULL"), "%s",
              fmqa_ctx_errmsg(ctx));

    char why[256];
    if (!fmqa_test_gpu_available(why, sizeof why)) {
        p = rope_problem();
        p.rope_dim = 64;
        a = good_args();
        fmqa_status st = fmqa_append(ctx, &p, &a, NULL);
        cr_expect(st == FMQA_ERR_NO_DRIVER || st == FMQA_ERR_NO_DEVICE, "%d: %s", st,
                  fmqa_ctx_errmsg(ctx));
    }
    fmqa_ctx_destroy(ctx);
}
