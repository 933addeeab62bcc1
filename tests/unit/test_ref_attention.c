/*
 * test_ref_attention.c -- the reference attention: hand-computed cases (plain,
 * causal prefill, window with sinks, tree mask, a query that sees nothing), and
 * identities on random inputs (MQA = MHA with repeated KV heads, window >= the
 * sequence = full attention, full lower tree mask = causal, split-KV combine =
 * unsplit, absorbed MLA = naive MLA), shape errors, and the decode time bound.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ref.h"
#include "test_support.h"

static double *fresh(ref_rng *r, int64_t n)
{
    double *x = malloc((size_t)n * sizeof *x);
    cr_assert(x);
    ref_rng_fill(r, x, n, 1.0, 0);
    return x;
}

static void expect_close(const double *a, const double *b, int64_t n, double tol, const char *what)
{
    for (int64_t i = 0; i < n; i++)
        cr_assert(fabs(a[i] - b[i]) <= tol || (a[i] == b[i]), "%s[%lld]: %.17g vs %.17g", what,
                  (long long)i, a[i], b[i]);
}

Test(ref_attention, hand_two_positions)
{
    /* sm_scale 1, q = 1, k = {0, ln 2}: scores 0 and ln 2, weights 1/3 and 2/3.
     * v = {3, 6}: o = 3/3 + 12/3 = 5; lse = ln(e^0 + e^ln2) = ln 3. */
    const double q[1] = {1.0}, k[2] = {0.0, log(2.0)}, v[2] = {3.0, 6.0};
    ref_attn_shape s = {.batch = 1, .q_tokens = 1, .kv_len = 2, .num_q_heads = 1,
                        .num_kv_heads = 1, .head_dim_qk = 1, .head_dim_v = 1, .sm_scale = 1.0};
    double o, lse;
    cr_assert_eq(ref_attention(&s, q, k, v, &o, &lse, NULL), FMQA_OK);
    cr_expect_float_eq(o, 5.0, 1e-14);
    cr_expect_float_eq(lse, log(3.0), 1e-14);
    /* d = 2, equal scores q.k = 2 (default scale 1/sqrt 2): o is the mean of the
     * values {1,2}, {3,4} = {2,3}; lse = 2/sqrt(2) + ln 2. */
    const double q2[2] = {1, 0}, k2[4] = {2, 5, 2, -5}, v2[4] = {1, 2, 3, 4};
    s.head_dim_qk = s.head_dim_v = 2;
    s.sm_scale = 0;
    double o2[2];
    cr_assert_eq(ref_attention(&s, q2, k2, v2, o2, &lse, NULL), FMQA_OK);
    cr_expect_float_eq(o2[0], 2.0, 1e-14);
    cr_expect_float_eq(o2[1], 3.0, 1e-14);
    cr_expect_float_eq(lse, sqrt(2.0) + log(2.0), 1e-14);
}

Test(ref_attention, hand_causal_prefill)
{
    /* Tq = T = 2, causal: token 0 sees only position 0 (o = 3, lse = 0), token 1
     * sees both (o = 5, lse = ln 3, as above). */
    const double q[2] = {1, 1}, k[2] = {0, log(2.0)}, v[2] = {3, 6};
    ref_attn_shape s = {.batch = 1, .q_tokens = 2, .kv_len = 2, .num_q_heads = 1,
                        .num_kv_heads = 1, .head_dim_qk = 1, .head_dim_v = 1,
                        .flags = FMQA_FLAG_CAUSAL, .sm_scale = 1.0};
    double o[2], lse[2];
    cr_assert_eq(ref_attention(&s, q, k, v, o, lse, NULL), FMQA_OK);
    cr_expect_float_eq(o[0], 3.0, 1e-14);
    cr_expect_float_eq(lse[0], 0.0, 1e-14);
    cr_expect_float_eq(o[1], 5.0, 1e-14);
    cr_expect_float_eq(lse[1], log(3.0), 1e-14);
}

Test(ref_attention, hand_window_with_sinks)
{
    /* kv_len 5, one query at position 4, window 2, 1 sink: it sees j > 4 - 2,
     * i.e. {3, 4}, plus the sink {0}.  Zero keys give equal weights, so
     * o = (1 + 4 + 7) / 3 = 4 and lse = ln 3. */
    const double q[1] = {1}, k[5] = {0, 0, 0, 0, 0}, v[5] = {1, 10, 100, 4, 7};
    ref_attn_shape s = {.batch = 1, .q_tokens = 1, .kv_len = 5, .num_q_heads = 1,
                        .num_kv_heads = 1, .head_dim_qk = 1, .head_dim_v = 1,
                        .flags = FMQA_FLAG_CAUSAL, .window = 2, .sink_tokens = 1};
    const int want[5] = {1, 0, 0, 1, 1};
    for (int j = 0; j < 5; j++)
        cr_expect_eq(ref_visible(&s, 0, 0, j), want[j], "position %d", j);
    double o, lse;
    cr_assert_eq(ref_attention(&s, q, k, v, &o, &lse, NULL), FMQA_OK);
    cr_expect_float_eq(o, 4.0, 1e-14);
    cr_expect_float_eq(lse, log(3.0), 1e-14);
}

Test(ref_attention, tree_mask_hand_and_empty_query)
{
    /* kv_len 5, 3 drafts at positions 2, 3, 4 (first draft 2).  Tree: draft 1
     * and draft 2 are both children of draft 0, so draft 2 must not see draft 1
     * (position 3).  Masks: t0 = 0b001, t1 = 0b011, t2 = 0b101. */
    const uint64_t mask[3] = {0x1, 0x3, 0x5};
    ref_attn_shape s = {.batch = 1, .q_tokens = 3, .kv_len = 5, .num_q_heads = 1,
                        .num_kv_heads = 1, .head_dim_qk = 1, .head_dim_v = 1,
                        .flags = FMQA_FLAG_CAUSAL | FMQA_FLAG_TREE_MASK, .tree_mask = mask};
    const int want[3][5] = {{1, 1, 1, 0, 0}, {1, 1, 1, 1, 0}, {1, 1, 1, 0, 1}};
    for (int t = 0; t < 3; t++)
        for (int j = 0; j < 5; j++)
            cr_expect_eq(ref_visible(&s, 0, t, j), want[t][j], "t %d j %d", t, j);
    cr_expect_eq(ref_query_pos(&s, 0, 2), 4);
    /* No prefix (kv_len = q_tokens = 1) and an empty mask: sees nothing, so by
     * definition o = 0 and lse = -inf. */
    const uint64_t none = 0;
    ref_attn_shape e = {.batch = 1, .q_tokens = 1, .kv_len = 1, .num_q_heads = 1,
                        .num_kv_heads = 1, .head_dim_qk = 1, .head_dim_v = 2,
                        .flags = FMQA_FLAG_TREE_MASK, .tree_mask = &none};
    const double q[1] = {1}, k[1] = {1}, v[2] = {5, 6};
    double o[2] = {9, 9}, lse = 0;
    cr_assert_eq(ref_attention(&e, q, k, v, o, &lse, NULL), FMQA_OK);
    cr_expect(o[0] == 0.0 && o[1] == 0.0 && lse == -INFINITY);
}

/* A random GQA problem: B = 2, kv_lens {29, 17}, Tq = 3, causal. */
static ref_attn_shape random_shape(int64_t hq, int64_t hkv, int32_t *lens)
{
    lens[0] = 29;
    lens[1] = 17;
    ref_attn_shape s = {.batch = 2, .q_tokens = 3, .kv_len = 29, .num_q_heads = hq,
                        .num_kv_heads = hkv, .head_dim_qk = 16, .head_dim_v = 8,
                        .kv_lens = lens, .flags = FMQA_FLAG_CAUSAL};
    return s;
}

static int64_t n_q(const ref_attn_shape *s) { return s->batch * s->q_tokens * s->num_q_heads; }
static int64_t n_kv(const ref_attn_shape *s) { return s->batch * s->kv_len * s->num_kv_heads; }

Test(ref_attention, mqa_and_gqa_equal_mha_with_repeated_heads)
{
    ref_rng r;
    ref_rng_seed(&r, fmqa_test_seed("ref_attention.mqa_mha"));
    int32_t lens[2];
    for (int64_t hkv = 1; hkv <= 2; hkv++) {   /* MQA (G = 6), then GQA (G = 3) */
        ref_attn_shape g = random_shape(6, hkv, lens), m = g;
        m.num_kv_heads = 6;
        double *q = fresh(&r, n_q(&g) * 16), *k = fresh(&r, n_kv(&g) * 16);
        double *v = fresh(&r, n_kv(&g) * 8), *km = malloc(n_kv(&m) * 16 * sizeof(double));
        double *vm = malloc(n_kv(&m) * 8 * sizeof(double));
        for (int64_t tok = 0; tok < g.batch * g.kv_len; tok++)
            for (int64_t h = 0; h < 6; h++) {   /* MHA head h gets KV head h / G */
                int64_t src = tok * hkv + h / (6 / hkv);
                memcpy(km + (tok * 6 + h) * 16, k + src * 16, 16 * sizeof(double));
                memcpy(vm + (tok * 6 + h) * 8, v + src * 8, 8 * sizeof(double));
            }
        double og[2 * 3 * 6 * 8], om[2 * 3 * 6 * 8], lg[36], lm[36];
        cr_assert_eq(ref_attention(&g, q, k, v, og, lg, NULL), FMQA_OK);
        cr_assert_eq(ref_attention(&m, q, km, vm, om, lm, NULL), FMQA_OK);
        expect_close(og, om, 288, 0.0, "o");
        expect_close(lg, lm, 36, 0.0, "lse");
        free(q), free(k), free(v), free(km), free(vm);
    }
}

Test(ref_attention, long_window_equals_full_and_full_tree_equals_causal)
{
    ref_rng r;
    ref_rng_seed(&r, fmqa_test_seed("ref_attention.window_tree"));
    int32_t lens[2];
    ref_attn_shape s = random_shape(4, 2, lens);
    double *q = fresh(&r, n_q(&s) * 16), *k = fresh(&r, n_kv(&s) * 16), *v = fresh(&r, n_kv(&s) * 8);
    double ref[2 * 3 * 4 * 8], got[2 * 3 * 4 * 8], lref[24], lgot[24];
    cr_assert_eq(ref_attention(&s, q, k, v, ref, lref, NULL), FMQA_OK);
    ref_attn_shape w = s;
    w.window = 29;   /* as long as the longest sequence: masks nothing */
    w.sink_tokens = 3;
    cr_assert_eq(ref_attention(&w, q, k, v, got, lgot, NULL), FMQA_OK);
    expect_close(ref, got, 192, 0.0, "window o");
    expect_close(lref, lgot, 24, 0.0, "window lse");
    /* Draft t sees drafts 0..t: bits below and on the diagonal. */
    uint64_t mask[6];
    for (int i = 0; i < 6; i++)
        mask[i] = (2ull << (i % 3)) - 1;
    ref_attn_shape t = s;
    t.flags |= FMQA_FLAG_TREE_MASK;
    t.tree_mask = mask;
    cr_assert_eq(ref_attention(&t, q, k, v, got, lgot, NULL), FMQA_OK);
    expect_close(ref, got, 192, 0.0, "tree o");
    expect_close(lref, lgot, 24, 0.0, "tree lse");
    free(q), free(k), free(v);
}

Test(ref_attention, split_kv_combine_equals_unsplit)
{
    ref_rng r;
    ref_rng_seed(&r, fmqa_test_seed("ref_attention.split"));
    int32_t lens[2];
    ref_attn_shape s = random_shape(4, 2, lens);
    double *q = fresh(&r, n_q(&s) * 16), *k = fresh(&r, n_kv(&s) * 16), *v = fresh(&r, n_kv(&s) * 8);
    enum { ROWS = 24, DV = 8, SPLITS = 3 };
    double full[ROWS * DV], lfull[ROWS], parts[SPLITS * ROWS * DV], lparts[SPLITS * ROWS];
    cr_assert_eq(ref_attention(&s, q, k, v, full, lfull, NULL), FMQA_OK);
    /* [0,10) [10,20) [20,end): the last range is empty for sequence 1 (17 long). */
    const int64_t cut[SPLITS + 1] = {0, 10, 20, 0};
    for (int i = 0; i < SPLITS; i++) {
        ref_attn_shape p = s;
        p.kv_begin = cut[i];
        p.kv_end = cut[i + 1];
        cr_assert_eq(ref_attention(&p, q, k, v, parts + i * ROWS * DV, lparts + i * ROWS, NULL), FMQA_OK);
    }
    cr_expect_eq(lparts[2 * ROWS + ROWS - 1], -INFINITY, "empty split of sequence 1");
    double o[ROWS * DV], lse[ROWS];
    cr_assert_eq(ref_combine(SPLITS, ROWS, DV, parts, lparts, o, lse, NULL), FMQA_OK);
    expect_close(full, o, ROWS * DV, 1e-12, "o");
    expect_close(lfull, lse, ROWS, 1e-12, "lse");
    free(q), free(k), free(v);
}

Test(ref_attention, mla_absorbed_equals_naive)
{
    ref_rng r;
    ref_rng_seed(&r, fmqa_test_seed("ref_attention.mla"));
    /* DeepSeek sizes: latent 512, rope 64, nope 128, v 128; 8 heads, 2 drafts. */
    enum { B = 2, TQ = 2, T = 23, H = 8, DC = 512, DR = 64, DN = 128, DV = 128 };
    int32_t lens[B] = {23, 9};
    ref_attn_shape s = {.batch = B, .q_tokens = TQ, .kv_len = T, .num_q_heads = H,
                        .num_kv_heads = 1, .head_dim_qk = DC + DR, .head_dim_v = DC,
                        .kv_lens = lens, .flags = FMQA_FLAG_CAUSAL,
                        .sm_scale = 1.0 / sqrt(DN + DR)};
    double *wuk = fresh(&r, H * DN * DC), *wuv = fresh(&r, H * DV * DC);
    for (int64_t i = 0; i < H * DN * DC; i++)   /* keep scores O(1) */
        wuk[i] *= 0.02;
    for (int64_t i = 0; i < H * DV * DC; i++)
        wuv[i] *= 0.02;
    ref_mla_weights w = {H, DC, DN, DV, wuk, wuv};
    double *q_nope = fresh(&r, B * TQ * H * DN), *q_rope = fresh(&r, B * TQ * H * DR);
    double *c_kv = fresh(&r, B * T * DC), *k_rope = fresh(&r, B * T * DR);
    double *q_abs = malloc(B * TQ * H * DC * sizeof(double));
    double *o_lat = malloc(B * TQ * H * DC * sizeof(double));
    double o_abs[B * TQ * H * DV], o_naive[B * TQ * H * DV], l_abs[B * TQ * H], l_naive[B * TQ * H];
    cr_assert_eq(ref_mla_absorb_q(&w, B * TQ, q_nope, q_abs, NULL), FMQA_OK);
    cr_assert_eq(ref_mla_decode(&s, q_abs, q_rope, c_kv, k_rope, o_lat, l_abs, NULL), FMQA_OK);
    cr_assert_eq(ref_mla_up_v(&w, B * TQ, o_lat, o_abs, NULL), FMQA_OK);
    cr_assert_eq(ref_mla_naive(&s, &w, q_nope, q_rope, c_kv, k_rope, o_naive, l_naive, NULL), FMQA_OK);
    expect_close(o_abs, o_naive, B * TQ * H * DV, 1e-12, "o");
    expect_close(l_abs, l_naive, B * TQ * H, 1e-12, "lse");
    free(wuk), free(wuv), free(q_nope), free(q_rope), free(c_kv), free(k_rope), free(q_abs), free(o_lat);
}

Test(ref_attention, shape_errors_name_the_field)
{
    int32_t lens[2] = {5, 2};
    ref_attn_shape s = {.batch = 2, .q_tokens = 3, .kv_len = 5, .num_q_heads = 4,
                        .num_kv_heads = 3, .head_dim_qk = 8, .head_dim_v = 8, .kv_lens = lens};
    fmqa_err err = {0};
    cr_expect_eq(ref_attn_shape_check(&s, &err), FMQA_ERR_INVALID_ARGUMENT);
    cr_expect(strstr(err.msg, "not a multiple of num_kv_heads = 3"), "%s", err.msg);
    s.num_kv_heads = 2;
    cr_expect_eq(ref_attn_shape_check(&s, &err), FMQA_ERR_INVALID_ARGUMENT);
    cr_expect(strstr(err.msg, "kv_lens[1] = 2 outside [q_tokens = 3"), "%s", err.msg);
    lens[1] = 4;
    s.flags = FMQA_FLAG_RING;
    cr_expect_eq(ref_attn_shape_check(&s, &err), FMQA_ERR_INVALID_ARGUMENT);
    cr_expect(strstr(err.msg, "window = 0 with FMQA_FLAG_RING"), "%s", err.msg);
    s.flags = FMQA_FLAG_TREE_MASK;
    cr_expect_eq(ref_attn_shape_check(&s, &err), FMQA_ERR_INVALID_ARGUMENT);
    cr_expect(strstr(err.msg, "tree_mask is NULL"), "%s", err.msg);
    s.flags = 0;
    cr_expect_eq(ref_attn_shape_check(&s, &err), FMQA_OK);
}

Test(ref_attention, decode_4096_is_fast)
{
    /* The brief's bound: B*H*Tq*T*d work on T = 4096 well under a second. */
    ref_rng r;
    ref_rng_seed(&r, 1);
    ref_attn_shape s = {.batch = 1, .q_tokens = 1, .kv_len = 4096, .num_q_heads = 32,
                        .num_kv_heads = 4, .head_dim_qk = 128, .head_dim_v = 128,
                        .flags = FMQA_FLAG_CAUSAL};
    double *q = fresh(&r, 32 * 128), *k = fresh(&r, 4096 * 4 * 128), *v = fresh(&r, 4096 * 4 * 128);
    double o[32 * 128];
    double ms = INFINITY;
    for (int run = 0; run < 3; run++) {   /* best of 3: other jobs share the CPU */
        double t0 = fmqa_now_ms();
        cr_assert_eq(ref_attention(&s, q, k, v, o, NULL, NULL), FMQA_OK);
        ms = fmin(ms, fmqa_now_ms() - t0);
    }
    cr_log_info("decode T=4096, H=32, d=128: %.1f ms", ms);
    cr_expect_lt(ms, 1000.0, "decode T=4096 took %.0f ms", ms);
    cr_expect(isfinite(o[0]));
    free(q), free(k), free(v);
}
