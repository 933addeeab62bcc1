/*
 * test_mla_append.c -- the append into an MLA latent cache (issue 12 item 2,
 * FMQA_FLAG_LATENT): one K row of latent 512 + rope part 64 per token, no V,
 * q_pe rotated in place in the same call.
 *
 * The append template's real source on the CPU emulator against the float64
 * reference (tests/support/append_check.h: every row that must be written
 * matches ref_append_args, every other byte of the cache and its scales keeps
 * its poison, q_pe rotated like the rope part): f16 and bf16 inputs, f16,
 * bf16 and fp8 e4m3 latent caches (one scale per token over the whole row),
 * contiguous and paged with shuffled page tables across page boundaries, NeoX
 * and GPT-J layouts, without RoPE, DeepSeek-V3's 128 heads with angles from
 * a cos/sin table, q_pe rotated alone (a call without new tokens), and the
 * rope part passed apart (k_pe_new, the k_new rows then the latent alone,
 * their old rope part NaN), with and without RoPE.  Then the reference end to
 * end (a latent row appended is what ref_decode reads as MLA: V the latent;
 * the rope part apart writes the same cache as one concatenated row) and the
 * validation of latent problems and arguments, which rejects bad input before
 * any GPU work.
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
#define FP8 FMQA_DTYPE_FP8_E4M3
#define NEOX FMQA_ROPE_NEOX
#define GPTJ FMQA_ROPE_GPTJ
#define PAGED FMQA_FLAG_PAGED

/* Latent rows of 512 + 64: contiguous (a token at the capacity's end), paged
 * with 16- and 64-token pages (tokens cross 15 -> 16 and 63 -> 64), and
 * DeepSeek-V3's 128 heads with its angles from a table. */
static const append_case MLA[] = {
    {"mla contig", 2, 16, 1, 576, 512, 3, 64, 0, 0, 0, 0, {0, 61}, 0, 1, 0, 0, FMQA_KV_SCALE_TOKEN_HEAD, NULL},
    {"mla paged16", 3, 16, 1, 576, 512, 4, 96, PAGED, 16, 0, 0, {13, 0, 62}, 0, 1, 0, 0, FMQA_KV_SCALE_TOKEN_HEAD, NULL},
    {"mla paged64 h128 table", 2, 128, 1, 576, 512, 2, 256, PAGED, 64, 0, 0, {63, 190}, 0, 1,
     1, 0, FMQA_KV_SCALE_TOKEN_HEAD, NULL},
    {"mla q_pe alone", 2, 32, 1, 576, 512, 2, 64, 0, 0, 0, 0, {5, 40}, 0, 1, 0, 1, FMQA_KV_SCALE_TOKEN_HEAD, NULL},
    {"mla k_pe apart", 2, 16, 1, 576, 512, 3, 64, 0, 0, 0, 0, {0, 61}, 0, 2, 0, 0, FMQA_KV_SCALE_TOKEN_HEAD, NULL},
    {"mla k_pe apart paged16", 3, 16, 1, 576, 512, 4, 96, PAGED, 16, 0, 0, {13, 0, 62}, 0, 2, 0, 0,
     FMQA_KV_SCALE_TOKEN_HEAD, NULL},
};

Test(mla_append_emu, contiguous, .timeout = 900)
{
    append_emu_case(&MLA[0], BF16, BF16, GPTJ, "");
    append_emu_case(&MLA[0], F16, FP8, NEOX, "THREADS_PER_ROW=16,VEC=4");
}

Test(mla_append_emu, paged, .timeout = 900)
{
    append_emu_case(&MLA[1], BF16, FP8, GPTJ, "");
    append_emu_case(&MLA[1], F16, F16, NEOX, "THREADS_PER_ROW=16,VEC=8,ROWS_PER_CTA=4");
    append_emu_case(&MLA[1], BF16, FP8, FMQA_ROPE_NONE, "");
    append_emu_case(&MLA[2], BF16, FP8, GPTJ, "");
}

/* The rope part apart (k_pe_new): rotated (NeoX, GPT-J) or copied (no RoPE)
 * into the row after the latent, 16-bit and fp8 caches (one scale over the
 * whole row: the rope part's values count). */
Test(mla_append_emu, rope_part_apart, .timeout = 900)
{
    append_emu_case(&MLA[4], BF16, BF16, GPTJ, "");
    append_emu_case(&MLA[4], F16, F16, FMQA_ROPE_NONE, "");
    append_emu_case(&MLA[5], BF16, FP8, NEOX, "");
}

/* q_pe rotated separately: a call without new tokens (k_new NULL). */
Test(mla_append_emu, q_pe_alone, .timeout = 900)
{
    append_emu_case(&MLA[3], BF16, FP8, GPTJ, "");
}

/* ------------------------------------------------------------ reference */

enum { LAT = 512, ROPE_D = 64, ROW = LAT + ROPE_D, T = 6, H = 4 };

static fmqa_problem latent_problem(fmqa_op op, int32_t q_tokens)
{
    fmqa_problem p;
    fmqa_problem_init(&p);
    p.op = op;
    p.batch = 1, p.num_q_heads = H, p.num_kv_heads = 1;
    p.head_dim_qk = ROW, p.head_dim_v = LAT, p.q_tokens = q_tokens, p.kv_len = T;
    p.q_dtype = p.out_dtype = p.kv_dtype = F16;
    p.rope = op == FMQA_OP_APPEND ? GPTJ : FMQA_ROPE_NONE;
    p.flags = op == FMQA_OP_APPEND ? FMQA_FLAG_LATENT : 0u;
    return p;
}

/* Appending T tokens' latent rows then decoding through the MLA path (v = k)
 * equals ref_mla_decode over the latent and the rotated rope part: the two
 * halves of issue 12 agree on the cache they share. */
Test(mla_append_ref, appended_rows_decode_as_mla)
{
    ref_rng rng;
    ref_rng_seed(&rng, fmqa_test_seed("mla_append_ref"));
    double kn[T * ROW], qd[H * ROW];
    uint16_t k_new[T * ROW], cache[T * ROW], q[H * ROW];
    ref_rng_fill(&rng, kn, T * ROW, 1.0, F16);
    ref_rng_fill(&rng, qd, H * ROW, 1.0, F16);
    ref_from_double(F16, kn, T * ROW, k_new, NULL);
    ref_from_double(F16, qd, H * ROW, q, NULL);
    const int32_t start = 0, len = T;

    fmqa_problem ap = latent_problem(FMQA_OP_APPEND, T);
    fmqa_append_args a;
    memset(&a, 0, sizeof a);
    a.k_new = k_new, a.k_new_stride_batch = T * ROW, a.k_new_stride_token = ROW;
    a.k_new_stride_head = ROW;
    a.k = cache, a.k_stride_batch = T * ROW, a.k_stride_token = ROW, a.k_stride_head = ROW;
    a.start_pos = &start;
    fmqa_err err;
    cr_assert_eq(ref_append_args(&ap, &a, 0, &err), FMQA_OK, "%s", err.msg);

    /* the expectation: latent as given, rope part rotated at its position */
    double c_kv[T * LAT], k_rope[T * ROPE_D], q_abs[H * LAT], q_rope[H * ROPE_D];
    for (int j = 0; j < T; j++) {
        memcpy(c_kv + j * LAT, kn + j * ROW, LAT * sizeof(double));
        memcpy(k_rope + j * ROPE_D, kn + j * ROW + LAT, ROPE_D * sizeof(double));
        ref_rope_row(GPTJ, k_rope + j * ROPE_D, ROPE_D, j, 0, NULL);
        for (int i = 0; i < ROPE_D; i++) /* the cache holds it in f16 */
            k_rope[j * ROPE_D + i] = ref_round_to(F16, k_rope[j * ROPE_D + i]);
    }
    for (int h = 0; h < H; h++) {
        memcpy(q_abs + h * LAT, qd + h * ROW, LAT * sizeof(double));
        memcpy(q_rope + h * ROPE_D, qd + h * ROW + LAT, ROPE_D * sizeof(double));
    }
    ref_attn_shape s = {.batch = 1, .q_tokens = 1, .kv_len = T, .num_q_heads = H,
                        .num_kv_heads = 1, .head_dim_qk = ROW, .head_dim_v = LAT,
                        .kv_lens = &len, .flags = FMQA_FLAG_CAUSAL};
    double want[H * LAT], got[H * LAT];
    cr_assert_eq(ref_mla_decode(&s, q_abs, q_rope, c_kv, k_rope, want, NULL, &err), FMQA_OK,
                 "%s", err.msg);

    fmqa_problem dp = latent_problem(FMQA_OP_MLA_DECODE, 1);
    dp.flags = FMQA_FLAG_CAUSAL;
    fmqa_decode_args d;
    memset(&d, 0, sizeof d);
    d.q = q, d.q_stride_batch = d.q_stride_token = H * ROW, d.q_stride_head = ROW;
    d.k = d.v = cache;
    d.k_stride_batch = d.v_stride_batch = T * ROW;
    d.k_stride_token = d.v_stride_token = d.k_stride_head = d.v_stride_head = ROW;
    d.kv_lens = &len;
    cr_assert_eq(ref_decode(&dp, &d, 0, got, NULL, &err), FMQA_OK, "%s", err.msg);
    for (int i = 0; i < H * LAT; i++)
        cr_assert(fabs(got[i] - want[i]) <= 1e-12 * (1 + fabs(want[i])), "o[%d]: %.17g vs %.17g",
                  i, got[i], want[i]);
}

/* ------------------------------------------------------------ validation */

typedef struct bad_problem {
    const char *what;
    void (*edit)(fmqa_problem *);
    const char *msg;
} bad_problem;

static void e_kv_heads(fmqa_problem *p) { p->num_kv_heads = 2, p->num_q_heads = 4; }
static void e_dv(fmqa_problem *p) { p->head_dim_v = p->head_dim_qk; }
static void e_rope_dim(fmqa_problem *p) { p->rope_dim = 32; }
static void e_decode(fmqa_problem *p) { p->op = FMQA_OP_DECODE, p->rope = FMQA_ROPE_NONE; }

Test(mla_append_args, bad_latent_problems_are_named)
{
    const bad_problem cases[] = {
        {"two KV heads", e_kv_heads, "an MLA latent cache has one row per token"},
        {"no rope part", e_dv, "with FMQA_FLAG_LATENT it is the latent"},
        {"rope_dim other than the rope part", e_rope_dim, "RoPE rotates the rope part, "
                                                          "head_dim_qk - head_dim_v = 64"},
        {"latent decode", e_decode, "FMQA_FLAG_LATENT is an append flag"},
    };
    fmqa_ctx_t *ctx = NULL;
    cr_assert_eq(fmqa_ctx_create(NULL, &ctx), FMQA_OK);
    fmqa_problem p = latent_problem(FMQA_OP_APPEND, 2);
    cr_assert_eq(fmqa_problem_validate(ctx, &p), FMQA_OK, "%s", fmqa_ctx_errmsg(ctx));
    p.rope_dim = ROPE_D; /* the rope part, given explicitly */
    cr_assert_eq(fmqa_problem_validate(ctx, &p), FMQA_OK, "%s", fmqa_ctx_errmsg(ctx));
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        p = latent_problem(FMQA_OP_APPEND, 2);
        cases[i].edit(&p);
        cr_expect_eq(fmqa_problem_validate(ctx, &p), FMQA_ERR_INVALID_ARGUMENT, "%s",
                     cases[i].what);
        cr_expect(strstr(fmqa_ctx_errmsg(ctx), cases[i].msg), "%s: '%s'", cases[i].what,
                  fmqa_ctx_errmsg(ctx));
    }
    fmqa_ctx_destroy(ctx);
}

static _Alignas(16) uint16_t buf[4 * ROW * H];
static _Alignas(16) float scales[64];
static const int32_t starts[1] = {0};

/* Arguments a latent fp8 append of 2 tokens accepts: k_new [1, 2, 1, 576],
 * q = the rope part of a [1, 2, H, 576] query, cache [1, T, 1, 576]. */
static fmqa_append_args good_latent_args(void)
{
    fmqa_append_args a;
    memset(&a, 0, sizeof a);
    a.k_new = buf, a.k_new_stride_batch = 2 * ROW, a.k_new_stride_token = ROW;
    a.k_new_stride_head = ROW;
    a.q = buf + LAT, a.q_stride_batch = 2 * H * ROW, a.q_stride_token = H * ROW;
    a.q_stride_head = ROW;
    a.k = buf, a.k_stride_batch = T * ROW, a.k_stride_token = ROW, a.k_stride_head = ROW;
    a.k_scale = scales, a.k_scale_stride_batch = T, a.k_scale_stride_token = 1;
    a.start_pos = starts;
    return a;
}

Test(mla_append_args, bad_latent_arguments_are_named_before_any_gpu_work)
{
    fmqa_ctx_t *ctx = NULL;
    cr_assert_eq(fmqa_ctx_create(NULL, &ctx), FMQA_OK);
    fmqa_problem p = latent_problem(FMQA_OP_APPEND, 2);
    p.kv_dtype = FP8;
    static const char *const msgs[] = {
        "args.v_new must be NULL with FMQA_FLAG_LATENT",
        "args.v must be NULL with FMQA_FLAG_LATENT",
        "args.v_scale must be NULL with FMQA_FLAG_LATENT",
        "args.k_scale is NULL but the cache is 8-bit",
        "args.q is not 16-byte aligned",
        "args.k_pe_new is not 16-byte aligned",
        "args.k_pe_new stride 1 (4 elements) is negative or not a multiple of 16 bytes",
    };
    for (int i = 0; i < 7; i++) {
        fmqa_append_args a = good_latent_args();
        if (i == 0)
            a.v_new = buf;
        else if (i == 1)
            a.v = buf;
        else if (i == 2)
            a.v_scale = scales;
        else if (i == 3)
            a.k_scale = NULL;
        else if (i == 4)
            a.q = buf + LAT + 4;
        else /* the rope part apart: misaligned, then a stride of 8 bytes */
            a.k_pe_new = buf + LAT + (i == 5 ? 4 : 0), a.k_pe_new_stride_token = i == 5 ? 64 : 4;
        cr_expect_eq(fmqa_append(ctx, &p, &a, NULL), FMQA_ERR_INVALID_ARGUMENT, "%s", msgs[i]);
        cr_expect(strstr(fmqa_ctx_errmsg(ctx), msgs[i]), "%s: '%s'", msgs[i],
                  fmqa_ctx_errmsg(ctx));
    }
    char why[256];
    if (!fmqa_test_gpu_available(why, sizeof why)) {
        /* the good arguments pass every check and reach the device */
        fmqa_append_args a = good_latent_args();
        fmqa_status st = fmqa_append(ctx, &p, &a, NULL);
        cr_expect(st == FMQA_ERR_NO_DRIVER || st == FMQA_ERR_NO_DEVICE, "%d: %s", st,
                  fmqa_ctx_errmsg(ctx));
    }
    fmqa_ctx_destroy(ctx);
}

/* The rope part apart is refused where it has no meaning: without
 * FMQA_FLAG_LATENT, and in a call that only rotates q. */
Test(mla_append_args, rope_part_apart_only_for_latent_tokens)
{
    fmqa_ctx_t *ctx = NULL;
    cr_assert_eq(fmqa_ctx_create(NULL, &ctx), FMQA_OK);
    fmqa_problem p = latent_problem(FMQA_OP_APPEND, 2);
    p.flags = 0, p.head_dim_v = ROW; /* a plain MQA append of 576-wide rows */
    fmqa_append_args a = good_latent_args();
    a.k_scale = NULL, a.q = NULL, a.v_new = a.v = buf;
    a.v_new_stride_batch = 2 * ROW, a.v_new_stride_token = a.v_new_stride_head = ROW;
    a.v_stride_batch = T * ROW, a.v_stride_token = a.v_stride_head = ROW;
    a.k_pe_new = buf + LAT, a.k_pe_new_stride_token = ROW;
    cr_expect_eq(fmqa_append(ctx, &p, &a, NULL), FMQA_ERR_INVALID_ARGUMENT);
    cr_expect(strstr(fmqa_ctx_errmsg(ctx), "args.k_pe_new is set without FMQA_FLAG_LATENT"), "%s",
              fmqa_ctx_errmsg(ctx));
    p = latent_problem(FMQA_OP_APPEND, 2);
    a = good_latent_args();
    a.k_new = NULL, a.k = NULL, a.k_scale = NULL;
    a.k_pe_new = buf + LAT, a.k_pe_new_stride_token = ROW;
    cr_expect_eq(fmqa_append(ctx, &p, &a, NULL), FMQA_ERR_INVALID_ARGUMENT);
    cr_expect(strstr(fmqa_ctx_errmsg(ctx), "args.k_pe_new is set but args.k_new is NULL"), "%s",
              fmqa_ctx_errmsg(ctx));
    fmqa_ctx_destroy(ctx);
}

/* A latent row given as k_new [latent] + k_pe_new [rope part] (two tensors
 * with their own strides) lands in the cache exactly as the concatenated
 * row, rotated or not, 16-bit or fp8. */
Test(mla_append_ref, rope_part_apart_is_the_concatenated_row)
{
    enum { N = 3 };
    ref_rng rng;
    ref_rng_seed(&rng, fmqa_test_seed("mla_append_ref apart"));
    double kn[N * ROW];
    static uint16_t k_new[N * ROW], lat[N * (LAT + 8)], pe[N * (ROPE_D + 24)];
    static uint8_t whole[T * ROW * 2], apart[T * ROW * 2];
    float s_whole[T], s_apart[T];
    ref_rng_fill(&rng, kn, N * ROW, 1.0, F16);
    ref_from_double(F16, kn, N * ROW, k_new, NULL);
    for (int j = 0; j < N; j++) {
        memcpy(lat + j * (LAT + 8), k_new + j * ROW, LAT * 2);
        memcpy(pe + j * (ROPE_D + 24), k_new + j * ROW + LAT, ROPE_D * 2);
    }
    const int32_t start = 1;
    for (int k = 0; k < 4; k++) {
        fmqa_problem p = latent_problem(FMQA_OP_APPEND, N);
        p.rope = k % 2 ? FMQA_ROPE_NONE : GPTJ;
        p.kv_dtype = k < 2 ? F16 : FP8;
        fmqa_append_args a;
        memset(&a, 0, sizeof a);
        a.k_new = k_new, a.k_new_stride_batch = N * ROW, a.k_new_stride_token = ROW;
        a.k = whole, a.k_stride_batch = T * ROW, a.k_stride_token = ROW;
        a.k_scale = p.kv_dtype == FP8 ? s_whole : NULL, a.k_scale_stride_batch = T;
        a.k_scale_stride_token = 1;
        a.start_pos = &start;
        memset(whole, 0x5a, sizeof whole), memset(apart, 0x5a, sizeof apart);
        fmqa_err err;
        cr_assert_eq(ref_append_args(&p, &a, 0, &err), FMQA_OK, "%s", err.msg);
        a.k_new = lat, a.k_new_stride_batch = N * (LAT + 8), a.k_new_stride_token = LAT + 8;
        a.k_pe_new = pe, a.k_pe_new_stride_batch = N * (ROPE_D + 24);
        a.k_pe_new_stride_token = ROPE_D + 24;
        a.k = apart, a.k_scale = p.kv_dtype == FP8 ? s_apart : NULL;
        cr_assert_eq(ref_append_args(&p, &a, 0, &err), FMQA_OK, "%s", err.msg);
        cr_expect(memcmp(whole, apart, sizeof whole) == 0, "case %d: caches differ", k);
        if (p.kv_dtype == FP8)
            cr_expect(memcmp(s_whole + start, s_apart + start, N * sizeof(float)) == 0,
                      "case %d: scales differ", k);
    }
}
