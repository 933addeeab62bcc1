/*
 * test_ref_cache.c -- cache addressing, gather, RoPE and append: the ring slot
 * map by hand, ring gather = contiguous gather on the positions the ring keeps
 * (and decode through either = windowed decode), paged = contiguous (8-bit,
 * with RoPE), an append by hand, bad page tables writing nothing, RoPE
 * identities (NeoX vs GPT-J by a permutation, pair norms, relative positions),
 * and MLA through ref_decode with V read from the latent.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ref.h"
#include "test_support.h"

enum { B = 2, HQ = 4, HKV = 2, D = 8 };

static ref_cache_view view(fmqa_dtype dt, void *data, int64_t tokens, float *scale, uint32_t flags)
{
    ref_cache_view v = {.dtype = dt, .data = data, .stride_batch = tokens * HKV * D,
                        .stride_token = HKV * D, .stride_head = D, .scale = scale,
                        .scale_stride_batch = tokens * HKV, .scale_stride_token = HKV,
                        .scale_stride_head = 1, .flags = flags};
    return v;
}

static void expect_same(const double *a, const double *b, int64_t n, const char *what)
{
    for (int64_t i = 0; i < n; i++)
        cr_assert(a[i] == b[i], "%s[%lld]: %.17g vs %.17g", what, (long long)i, a[i], b[i]);
}

Test(ref_cache, ring_slot_map_by_hand)
{
    /* 2 sinks + a ring of 4: positions 2..5 fill slots 2..5, then 6 -> 2, 9 -> 5. */
    ref_cache_view c = {.flags = FMQA_FLAG_RING, .window = 4, .sink_tokens = 2};
    const int64_t j[6] = {0, 1, 2, 5, 6, 9}, slot[6] = {0, 1, 2, 5, 2, 5};
    for (int i = 0; i < 6; i++)
        cr_expect_eq(ref_cache_slot(&c, j[i]), slot[i], "position %lld", (long long)j[i]);
    c.flags = 0;
    cr_expect_eq(ref_cache_slot(&c, 9), 9);
}

/* fmqa_ring_slot / fmqa_ring_holds, the ring addressing the reference, the
 * tuner's inputs and the runtime's checks share: 2 sinks and a period of 4
 * (window 3 + 1 draft slot) across two wraps. */
Test(ref_cache, ring_helpers_across_a_wrap)
{
    const int64_t j[] = {0, 1, 2, 5, 6, 9, 10, 13, 14};
    const int64_t slot[] = {0, 1, 2, 5, 2, 5, 2, 5, 2};
    for (size_t i = 0; i < sizeof j / sizeof j[0]; i++) {
        cr_expect_eq(fmqa_ring_slot(FMQA_FLAG_RING, 2, 4, j[i]), slot[i], "position %lld",
                     (long long)j[i]);
        cr_expect_eq(fmqa_ring_slot(FMQA_FLAG_PAGED, 2, 4, j[i]), j[i], "no ring: %lld",
                     (long long)j[i]);
    }
    /* 11 positions: the sinks and the last 4 (7..10) are held, 2..6 overwritten */
    for (int64_t p = 0; p < 11; p++) {
        cr_expect_eq(fmqa_ring_holds(FMQA_FLAG_RING, 2, 4, 11, p), p < 2 || p >= 7, "position %lld",
                     (long long)p);
        cr_expect(fmqa_ring_holds(0, 2, 4, 11, p));
    }
    /* the slots of the held positions are distinct: nothing held was overwritten */
    int used[6] = {0};
    for (int64_t p = 0; p < 11; p++)
        if (fmqa_ring_holds(FMQA_FLAG_RING, 2, 4, 11, p))
            cr_expect_eq(used[fmqa_ring_slot(FMQA_FLAG_RING, 2, 4, p)]++, 0, "position %lld",
                         (long long)p);
}

/* fmqa_problem + args of a one-token f16 decode over the given cache views. */
static void decode_through(const ref_cache_view *k, const ref_cache_view *v, const uint16_t *q,
                           const int32_t *lens, int32_t kv_len, uint32_t flags, int32_t window,
                           int32_t sinks, double *o, double *lse)
{
    fmqa_problem p;
    memset(&p, 0, sizeof p);
    p.op = FMQA_OP_DECODE;
    p.batch = B, p.num_q_heads = HQ, p.num_kv_heads = HKV, p.head_dim_qk = p.head_dim_v = D;
    p.q_tokens = 1, p.kv_len = kv_len, p.q_dtype = p.out_dtype = FMQA_DTYPE_F16;
    p.kv_dtype = k->dtype, p.page_size = k->page_size, p.window = window, p.sink_tokens = sinks;
    p.flags = flags;
    fmqa_decode_args a;
    memset(&a, 0, sizeof a);
    a.q = q, a.q_stride_batch = HQ * D, a.q_stride_token = HQ * D, a.q_stride_head = D;
    a.k = k->data, a.v = v->data;
    a.k_stride_batch = k->stride_batch, a.k_stride_token = k->stride_token, a.k_stride_head = D;
    a.v_stride_batch = v->stride_batch, a.v_stride_token = v->stride_token, a.v_stride_head = D;
    a.k_scale = k->scale, a.v_scale = v->scale;
    a.k_scale_stride_batch = k->scale_stride_batch, a.k_scale_stride_token = HKV;
    a.k_scale_stride_head = 1;
    a.v_scale_stride_batch = v->scale_stride_batch, a.v_scale_stride_token = HKV;
    a.v_scale_stride_head = 1;
    a.kv_lens = lens, a.page_table = k->page_table, a.page_table_stride = k->page_table_stride;
    fmqa_err err = {0};
    cr_assert_eq(ref_decode(&p, &a, 0, o, lse, &err), FMQA_OK, "%s", err.msg);
}

Test(ref_cache, ring_gather_equals_contiguous_on_kept_positions)
{
    enum { L = 13, SINK = 2, WIN = 4, SLOTS = SINK + WIN };
    ref_rng r;
    ref_rng_seed(&r, fmqa_test_seed("ref_cache.ring"));
    double kn[B * L * HKV * D], vn[B * L * HKV * D];
    ref_rng_fill(&r, kn, B * L * HKV * D, 1.0, 0);
    ref_rng_fill(&r, vn, B * L * HKV * D, 1.0, 0);
    static uint16_t kc[B * L * HKV * D], vc[B * L * HKV * D], kr[B * SLOTS * HKV * D],
        vr[B * SLOTS * HKV * D];
    ref_cache_view kcv = view(FMQA_DTYPE_F16, kc, L, NULL, 0), vcv = view(FMQA_DTYPE_F16, vc, L, NULL, 0);
    ref_cache_view krv = view(FMQA_DTYPE_F16, kr, SLOTS, NULL, FMQA_FLAG_RING), vrv = krv;
    vrv.data = vr;
    krv.window = vrv.window = WIN;
    krv.sink_tokens = vrv.sink_tokens = SINK;
    const int32_t start[B] = {0, 0}, lens[B] = {L, L};
    ref_append_shape s = {B, L, HQ, HKV, D, D, start, FMQA_ROPE_NEOX, 0, 0, 0, 0, NULL, 0, 0, NULL, NULL};
    cr_assert_eq(ref_append(&s, kn, vn, NULL, &kcv, &vcv, NULL), FMQA_OK);
    cr_assert_eq(ref_append(&s, kn, vn, NULL, &krv, &vrv, NULL), FMQA_OK);
    static double gc[B * L * HKV * D], gr[B * L * HKV * D];
    cr_assert_eq(ref_cache_gather(&kcv, B, L, HKV, D, lens, 0, gc, NULL), FMQA_OK);
    cr_assert_eq(ref_cache_gather(&krv, B, L, HKV, D, lens, 0, gr, NULL), FMQA_OK);
    for (int64_t i = 0; i < B * L * HKV * D; i++) {
        int64_t j = i / (HKV * D) % L;
        if (j < SINK || j >= L - WIN)
            cr_assert_eq(gc[i], gr[i], "position %lld", (long long)j);
        else
            cr_assert(isnan(gr[i]), "overwritten position %lld must gather as NaN", (long long)j);
    }
    /* The last token through the ring = through the full cache with the window. */
    uint16_t q[B * HQ * D];
    for (int i = 0; i < B * HQ * D; i++)
        q[i] = ref_f16_from_double(ref_rng_gauss(&r));
    double o1[B * HQ * D], o2[B * HQ * D], l1[B * HQ], l2[B * HQ];
    decode_through(&kcv, &vcv, q, lens, L, FMQA_FLAG_CAUSAL, WIN, SINK, o1, l1);
    decode_through(&krv, &vrv, q, lens, L, FMQA_FLAG_CAUSAL | FMQA_FLAG_RING, WIN, SINK, o2, l2);
    expect_same(o1, o2, B * HQ * D, "o");
    expect_same(l1, l2, B * HQ, "lse");
}

Test(ref_cache, paged_int8_equals_contiguous_and_bad_page_writes_nothing)
{
    enum { T = 10, PS = 4, PAGES = 6, NT = 7 };
    ref_rng r;
    ref_rng_seed(&r, fmqa_test_seed("ref_cache.paged"));
    double kn[B * NT * HKV * D], vn[B * NT * HKV * D];
    ref_rng_fill(&r, kn, B * NT * HKV * D, 2.0, FMQA_DTYPE_F16);
    ref_rng_fill(&r, vn, B * NT * HKV * D, 2.0, FMQA_DTYPE_F16);
    static int8_t kc[B * T * HKV * D], vc[B * T * HKV * D], kp[PAGES * PS * HKV * D],
        vp[PAGES * PS * HKV * D];
    static float kcs[B * T * HKV], vcs[B * T * HKV], kps[PAGES * PS * HKV], vps[PAGES * PS * HKV];
    const int32_t table[B * 3] = {4, 0, 5, 2, 3, 1};
    ref_cache_view kcv = view(FMQA_DTYPE_INT8, kc, T, kcs, 0), vcv = view(FMQA_DTYPE_INT8, vc, T, vcs, 0);
    ref_cache_view kpv = view(FMQA_DTYPE_INT8, kp, PS, kps, FMQA_FLAG_PAGED);
    ref_cache_view vpv = view(FMQA_DTYPE_INT8, vp, PS, vps, FMQA_FLAG_PAGED);
    kpv.page_table = vpv.page_table = table;
    kpv.page_table_stride = vpv.page_table_stride = 3;
    kpv.page_size = vpv.page_size = PS;
    /* Sequence 0 gets positions 3..9 (crossing pages), sequence 1 gets 0..6. */
    const int32_t start[B] = {3, 0}, lens[B] = {10, 7};
    ref_append_shape s = {B, NT, HQ, HKV, D, D, start, FMQA_ROPE_GPTJ, 500.0, PAGES, 0, 0, NULL, 0, 0, NULL, NULL};
    for (int pass = 0; pass < 2; pass++) {   /* twice: the first pass fills 0..2 of seq 0 */
        int32_t st0[B] = {pass ? 3 : 0, 0};
        s.start_pos = pass ? start : st0;
        cr_assert_eq(ref_append(&s, kn, vn, NULL, &kcv, &vcv, NULL), FMQA_OK);
        cr_assert_eq(ref_append(&s, kn, vn, NULL, &kpv, &vpv, NULL), FMQA_OK);
    }
    static double gc[B * T * HKV * D], gp[B * T * HKV * D];
    cr_assert_eq(ref_cache_gather(&kcv, B, T, HKV, D, lens, 0, gc, NULL), FMQA_OK);
    cr_assert_eq(ref_cache_gather(&kpv, B, T, HKV, D, lens, PAGES, gp, NULL), FMQA_OK);
    for (int64_t i = 0; i < B * T * HKV * D; i++)
        cr_assert(gc[i] == gp[i] || (isnan(gc[i]) && isnan(gp[i])), "k element %lld", (long long)i);
    cr_expect(isnan(gp[(1 * T + 7) * HKV * D]), "position 7 of sequence 1 is not held");
    uint16_t q[B * HQ * D];
    for (int i = 0; i < B * HQ * D; i++)
        q[i] = ref_f16_from_double(ref_rng_gauss(&r));
    double o1[B * HQ * D], o2[B * HQ * D];
    decode_through(&kcv, &vcv, q, lens, T, FMQA_FLAG_CAUSAL, 0, 0, o1, NULL);
    decode_through(&kpv, &vpv, q, lens, T, FMQA_FLAG_CAUSAL | FMQA_FLAG_PAGED, 0, 0, o2, NULL);
    expect_same(o1, o2, B * HQ * D, "o");
    /* A page id beyond n_pages: an error naming the entry, and no byte written. */
    int32_t bad[B * 3] = {4, 0, 5, 2, 7, 1};
    kpv.page_table = vpv.page_table = bad;
    static int8_t before[PAGES * PS * HKV * D];
    memcpy(before, kp, sizeof kp);
    fmqa_err err = {0};
    cr_expect_eq(ref_append(&s, kn, vn, NULL, &kpv, &vpv, &err), FMQA_ERR_INVALID_ARGUMENT);
    cr_expect(strstr(err.msg, "page_table[1][1] = 7 outside [0, 6)"), "%s", err.msg);
    cr_expect(memcmp(before, kp, sizeof kp) == 0, "a failed append wrote the cache");
    gp[0] = 42.0;   /* the gather checks every address before writing out */
    cr_expect_eq(ref_cache_gather(&kpv, B, T, HKV, D, lens, PAGES, gp, &err),
                 FMQA_ERR_INVALID_ARGUMENT);
    cr_expect(gp[0] == 42.0, "a failed gather wrote out");
}

Test(ref_cache, append_by_hand)
{
    /* f32 cache of 4 positions, one KV head, d = 2.  GPT-J RoPE with d = 2 has one
     * pair of frequency theta^0 = 1, so at position 2 the key (1, 0) becomes
     * (cos 2, sin 2); V is stored as is; q (0, 1) becomes (-sin 2, cos 2). */
    float k[4 * 2], v[4 * 2];
    ref_poison_fill(k, 4, 8, REF_POISON_32);
    ref_poison_fill(v, 4, 8, REF_POISON_32);
    ref_cache_view kv = {.dtype = FMQA_DTYPE_F32, .data = k, .stride_batch = 8, .stride_token = 2,
                         .stride_head = 2};
    ref_cache_view vv = kv;
    vv.data = v;
    const double kn[2] = {1, 0}, vn[2] = {3, 4};
    double q[2] = {0, 1};
    const int32_t start[1] = {2};
    ref_append_shape s = {1, 1, 1, 1, 2, 2, start, FMQA_ROPE_GPTJ, 0, 0, 0, 0, NULL, 0, 0, NULL, NULL};
    cr_assert_eq(ref_append(&s, kn, vn, q, &kv, &vv, NULL), FMQA_OK);
    cr_expect_eq(k[4], (float)cos(2.0));
    cr_expect_eq(k[5], (float)sin(2.0));
    cr_expect(v[4] == 3.0f && v[5] == 4.0f);
    cr_expect_float_eq(q[0], -sin(2.0), 1e-15);
    cr_expect_float_eq(q[1], cos(2.0), 1e-15);
    cr_expect_eq(ref_poison_count(k, 4, 8, REF_POISON_32), 6, "only position 2 written");
}

Test(ref_cache, rope_identities)
{
    /* By hand: d = 4, theta = 100, pos = 10: pair 0 has frequency 1 (angle 10),
     * pair 1 frequency 100^(-1/2) = 0.1 (angle 1).  NeoX pairs are (0,2), (1,3). */
    double e1[4] = {0, 1, 0, 0};
    cr_assert_eq(ref_rope_row(FMQA_ROPE_NEOX, e1, 4, 10, 100, NULL), FMQA_OK);
    cr_expect_float_eq(e1[1], cos(1.0), 1e-15);
    cr_expect_float_eq(e1[3], sin(1.0), 1e-15);
    cr_expect(e1[0] == 0 && e1[2] == 0);
    ref_rng r;
    ref_rng_seed(&r, fmqa_test_seed("ref_cache.rope"));
    enum { DR = 16 };
    for (int trial = 0; trial < 50; trial++) {
        double x[DR], neox[DR], gptj[DR], pos = floor(ref_rng_uniform(&r) * 4096);
        ref_rng_fill(&r, x, DR, 1.0, 0);
        memcpy(neox, x, sizeof x);
        for (int i = 0; i < DR / 2; i++) {   /* interleave the halves: the GPT-J layout */
            gptj[2 * i] = x[i];
            gptj[2 * i + 1] = x[i + DR / 2];
        }
        cr_assert_eq(ref_rope_row(FMQA_ROPE_NEOX, neox, DR, pos, 0, NULL), FMQA_OK);
        cr_assert_eq(ref_rope_row(FMQA_ROPE_GPTJ, gptj, DR, pos, 0, NULL), FMQA_OK);
        for (int i = 0; i < DR / 2; i++) {
            cr_assert_eq(gptj[2 * i], neox[i]);
            cr_assert_eq(gptj[2 * i + 1], neox[i + DR / 2]);
            double n0 = hypot(x[i], x[i + DR / 2]), n1 = hypot(neox[i], neox[i + DR / 2]);
            cr_assert_float_eq(n0, n1, 1e-12 * (1 + n0), "pair %d norm", i);
        }
        /* Scores depend only on the distance: rope(q, p+s) . rope(k, p) is the
         * same for every p. */
        double q[DR], k[DR], q0[DR], k0[DR], qs = 0, q0s = 0;
        ref_rng_fill(&r, q, DR, 1.0, 0);
        ref_rng_fill(&r, k, DR, 1.0, 0);
        memcpy(q0, q, sizeof q);
        memcpy(k0, k, sizeof k);
        ref_rope_row(FMQA_ROPE_NEOX, q, DR, pos + 7, 0, NULL);
        ref_rope_row(FMQA_ROPE_NEOX, k, DR, pos, 0, NULL);
        ref_rope_row(FMQA_ROPE_NEOX, q0, DR, 7, 0, NULL);
        for (int i = 0; i < DR; i++)
            qs += q[i] * k[i], q0s += q0[i] * k0[i];
        cr_assert_float_eq(qs, q0s, 1e-9, "relative position at %g", pos);
    }
    fmqa_err err = {0};
    double odd[3] = {0};
    cr_expect_eq(ref_rope_row(FMQA_ROPE_NEOX, odd, 3, 1, 0, &err), FMQA_ERR_INVALID_ARGUMENT);
    cr_expect(strstr(err.msg, "must be even"), "%s", err.msg);
}

Test(ref_cache, mla_through_decode_reads_v_from_the_latent)
{
    enum { T = 9, H = 4, DC = 16, DR = 8 };
    ref_rng r;
    ref_rng_seed(&r, fmqa_test_seed("ref_cache.mla"));
    float cache[T * (DC + DR)], qf[H * (DC + DR)];
    double c_kv[T * DC], k_rope[T * DR], q_abs[H * DC], q_rope[H * DR];
    for (int j = 0; j < T * (DC + DR); j++)
        cache[j] = (float)ref_rng_gauss(&r);
    for (int j = 0; j < H * (DC + DR); j++)
        qf[j] = (float)ref_rng_gauss(&r);
    for (int j = 0; j < T; j++)
        for (int i = 0; i < DC + DR; i++)
            *(i < DC ? &c_kv[j * DC + i] : &k_rope[j * DR + i - DC]) = cache[j * (DC + DR) + i];
    for (int h = 0; h < H; h++)
        for (int i = 0; i < DC + DR; i++)
            *(i < DC ? &q_abs[h * DC + i] : &q_rope[h * DR + i - DC]) = qf[h * (DC + DR) + i];
    fmqa_problem p;
    memset(&p, 0, sizeof p);
    p.op = FMQA_OP_MLA_DECODE, p.batch = 1, p.num_q_heads = H, p.num_kv_heads = 1;
    p.head_dim_qk = DC + DR, p.head_dim_v = DC, p.q_tokens = 1, p.kv_len = T;
    p.q_dtype = p.kv_dtype = FMQA_DTYPE_F32;
    fmqa_decode_args a;
    memset(&a, 0, sizeof a);
    int32_t len = T;
    a.q = qf, a.q_stride_batch = a.q_stride_token = H * (DC + DR), a.q_stride_head = DC + DR;
    a.k = a.v = cache;   /* V is the first d_c entries of each latent row */
    a.k_stride_batch = a.v_stride_batch = T * (DC + DR);
    a.k_stride_token = a.v_stride_token = DC + DR;
    a.kv_lens = &len;
    double o1[H * DC], o2[H * DC], l1[H], l2[H];
    cr_assert_eq(ref_decode(&p, &a, 0, o1, l1, NULL), FMQA_OK);
    ref_attn_shape s = {.batch = 1, .q_tokens = 1, .kv_len = T, .num_q_heads = H,
                        .num_kv_heads = 1, .head_dim_qk = DC + DR, .head_dim_v = DC};
    cr_assert_eq(ref_mla_decode(&s, q_abs, q_rope, c_kv, k_rope, o2, l2, NULL), FMQA_OK);
    expect_same(o1, o2, H * DC, "o");
    expect_same(l1, l2, H, "lse");
}

/* Decodes the one-sequence problem (1 head, d = 64, 64 positions,
 * window 16, causal, lse) from a contiguous cache and from pages of 16 mapped
 * by `table` (-1: a page no query sees, freed by the engine); both must give
 * the same result, and the paged one must not be rejected. */
static void unmapped_pages_case(fmqa_dtype kv, int32_t sinks, const int32_t table[4])
{
    enum { L = 64, DD = 64, PS = 16 };
    ref_rng r;
    ref_rng_seed(&r, fmqa_test_seed("ref_cache.unmapped") + (uint64_t)kv);
    static uint8_t cont[2][L * DD * 2], paged[2][2 * PS * DD * 2];
    static float cs[2][L], ps[2][2 * PS];
    memset(paged, 0xff, sizeof paged);   /* unmapped rows never reach the result */
    const size_t es = fmqa_dtype_size(kv);
    for (int kvi = 0; kvi < 2; kvi++)
        for (int j = 0; j < L; j++) {
            double x[DD];
            ref_rng_fill(&r, x, DD, 1.0, FMQA_DTYPE_F16);
            void *row = cont[kvi] + (size_t)j * DD * es;
            if (es == 1)
                cr_assert_eq(ref_quantize_row(kv, x, DD, row, &cs[kvi][j], NULL), FMQA_OK);
            else
                cr_assert_eq(ref_from_double(kv, x, DD, row, NULL), FMQA_OK);
            int32_t page = table[j / PS];
            if (page >= 0) {
                memcpy(paged[kvi] + ((size_t)page * PS + j % PS) * DD * es, row, DD * es);
                ps[kvi][page * PS + j % PS] = cs[kvi][j];
            }
        }
    uint16_t q[DD];
    for (int i = 0; i < DD; i++)
        q[i] = ref_f16_from_double(ref_rng_gauss(&r));
    fmqa_problem p;
    memset(&p, 0, sizeof p);
    p.op = FMQA_OP_DECODE, p.batch = 1, p.num_q_heads = p.num_kv_heads = 1;
    p.head_dim_qk = p.head_dim_v = DD, p.q_tokens = 1, p.kv_len = L;
    p.q_dtype = p.out_dtype = FMQA_DTYPE_F16, p.kv_dtype = kv;
    p.window = 16, p.sink_tokens = sinks, p.flags = FMQA_FLAG_CAUSAL | FMQA_FLAG_LSE;
    const int32_t len = L;
    fmqa_decode_args a;
    memset(&a, 0, sizeof a);
    a.q = q, a.q_stride_batch = a.q_stride_token = a.q_stride_head = DD;
    a.k = cont[0], a.v = cont[1];
    a.k_stride_token = a.v_stride_token = a.k_stride_head = a.v_stride_head = DD;
    a.k_stride_batch = a.v_stride_batch = L * DD;
    if (es == 1) {
        a.k_scale = cs[0], a.v_scale = cs[1];
        a.k_scale_stride_token = a.v_scale_stride_token = 1;
        a.k_scale_stride_batch = a.v_scale_stride_batch = L;
    }
    a.kv_lens = &len;
    double o1[DD], o2[DD], l1, l2;
    fmqa_err err = {0};
    cr_assert_eq(ref_decode(&p, &a, 0, o1, &l1, &err), FMQA_OK, "%s", err.msg);
    p.flags |= FMQA_FLAG_PAGED, p.page_size = PS;
    a.k = paged[0], a.v = paged[1], a.k_stride_batch = a.v_stride_batch = PS * DD;
    a.k_scale = es == 1 ? ps[0] : NULL, a.v_scale = es == 1 ? ps[1] : NULL;
    a.k_scale_stride_batch = a.v_scale_stride_batch = es == 1 ? PS : 0;
    a.page_table = table, a.page_table_stride = 4;
    cr_assert_eq(ref_decode(&p, &a, 2, o2, &l2, &err), FMQA_OK, "%s: %s", fmqa_dtype_name(kv),
                 err.msg);
    expect_same(o1, o2, DD, "o");
    expect_same(&l1, &l2, 1, "lse");
}

/* The two inputs: entries of pages no query sees may be -1. */
Test(ref_cache, pages_behind_the_window_may_be_unmapped)
{
    unmapped_pages_case(FMQA_DTYPE_F16, 0, (const int32_t[4]){-1, -1, -1, 0});
    unmapped_pages_case(FMQA_DTYPE_INT8, 4, (const int32_t[4]){0, -1, -1, 1});
}

/* A page some query sees must be mapped: -1 there is still an error naming it. */
Test(ref_cache, a_visible_unmapped_page_is_an_error)
{
    enum { DD = 16 };
    static uint16_t k[2 * 16 * DD];
    uint16_t q[DD] = {0};
    const int32_t len = 64, table[4] = {-1, -1, 0, 1};   /* window 24 reaches page 2 */
    fmqa_problem p;
    memset(&p, 0, sizeof p);
    p.op = FMQA_OP_DECODE, p.batch = 1, p.num_q_heads = p.num_kv_heads = 1;
    p.head_dim_qk = p.head_dim_v = DD, p.q_tokens = 1, p.kv_len = 64, p.window = 24;
    p.q_dtype = p.out_dtype = p.kv_dtype = FMQA_DTYPE_F16;
    p.flags = FMQA_FLAG_CAUSAL | FMQA_FLAG_PAGED, p.page_size = 16;
    fmqa_decode_args a;
    memset(&a, 0, sizeof a);
    a.q = q, a.q_stride_batch = a.q_stride_token = a.q_stride_head = DD;
    a.k = a.v = k, a.k_stride_token = a.v_stride_token = a.k_stride_head = a.v_stride_head = DD;
    a.k_stride_batch = a.v_stride_batch = 16 * DD;
    a.kv_lens = &len, a.page_table = table, a.page_table_stride = 4;
    double o[DD];
    fmqa_err err = {0};
    cr_assert_eq(ref_decode(&p, &a, 2, o, NULL, &err), FMQA_OK, "%s", err.msg);
    p.window = 40;   /* now position 24 (page 1) is in the window */
    cr_expect_eq(ref_decode(&p, &a, 2, o, NULL, &err), FMQA_ERR_INVALID_ARGUMENT);
    cr_expect(strstr(err.msg, "page_table[0][1] = -1"), "%s", err.msg);
}

/* ------------------------------------------------------------ cache layouts */

enum { LD = 16, LPS = 16, LPAGES = 6 };

/* Two sequences of lengths 40 and 17 on pages {3, 1, 4} and {0, 5} of an f16
 * cache [page, 16, 1, LD] of random rows: the decode problem and args with
 * the 2-D table. */
static void layout_case(fmqa_problem *p, fmqa_decode_args *a, uint16_t *k, uint16_t *q)
{
    static const int32_t table[2 * 4] = {3, 1, 4, -1, 0, 5, -1, -1}, lens[2] = {40, 17};
    ref_rng r;
    ref_rng_seed(&r, 16);
    double x[LPAGES * LPS * LD];
    ref_rng_fill(&r, x, LPAGES * LPS * LD, 1.0, FMQA_DTYPE_F16);
    cr_assert_eq(ref_from_double(FMQA_DTYPE_F16, x, LPAGES * LPS * LD, k, NULL), FMQA_OK);
    ref_rng_fill(&r, x, 2 * LD, 1.0, FMQA_DTYPE_F16);
    cr_assert_eq(ref_from_double(FMQA_DTYPE_F16, x, 2 * LD, q, NULL), FMQA_OK);
    fmqa_problem_init(p);
    p->batch = 2, p->num_q_heads = p->num_kv_heads = 1, p->head_dim_qk = p->head_dim_v = LD;
    p->kv_len = 64, p->flags = FMQA_FLAG_CAUSAL | FMQA_FLAG_PAGED, p->page_size = LPS;
    memset(a, 0, sizeof *a);
    a->q = q, a->q_stride_batch = a->q_stride_token = a->q_stride_head = LD;
    a->k = a->v = k, a->k_stride_token = a->v_stride_token = a->k_stride_head = LD;
    a->v_stride_head = LD, a->k_stride_batch = a->v_stride_batch = LPS * LD;
    a->kv_lens = lens, a->page_table = table, a->page_table_stride = 4;
}

/* FlashInfer's CSR table reads as the 2-D table it stands for, bit for bit,
 * and each malformed array is an error naming the entry. */
Test(ref_cache, layout_csr_reads_as_its_table)
{
    static uint16_t k[LPAGES * LPS * LD], q[2 * LD];
    fmqa_problem p;
    fmqa_decode_args a;
    layout_case(&p, &a, k, q);
    double o2d[2 * LD], ocsr[2 * LD], l2d[2], lcsr[2];
    fmqa_err err = {0};
    cr_assert_eq(ref_decode(&p, &a, LPAGES, o2d, l2d, &err), FMQA_OK, "%s", err.msg);
    int32_t indptr[3] = {1, 4, 6}, indices[6] = {-7, 3, 1, 4, 0, 5}, last[2] = {8, 1};
    p.flags |= FMQA_FLAG_PAGE_CSR;
    a.kv_lens = NULL, a.page_table = NULL, a.page_table_stride = 0;
    a.page_indptr = indptr, a.page_indices = indices, a.last_page_len = last;
    cr_assert_eq(ref_decode(&p, &a, LPAGES, ocsr, lcsr, &err), FMQA_OK, "%s", err.msg);
    cr_expect_eq(memcmp(o2d, ocsr, sizeof o2d), 0);
    cr_expect_eq(memcmp(l2d, lcsr, sizeof l2d), 0);

    const struct {
        int32_t indptr[3], indices[6], last[2];
        const char *msg;
    } bad[] = {
        {{1, 4, 3}, {-7, 3, 1, 4, 0, 5}, {8, 1}, "page_indptr is not monotone"},
        {{-1, 4, 6}, {-7, 3, 1, 4, 0, 5}, {8, 1}, "page_indptr[0] = -1 < 0"},
        {{1, 4, 6}, {-7, 3, 1, 6, 0, 5}, {8, 1}, "page_indices[3] = 6 outside [0, 6)"},
        {{1, 4, 6}, {-7, 3, -2, 4, 0, 5}, {8, 1}, "page_indices[2] = -2"},
        {{1, 4, 6}, {-7, 3, 1, 4, 0, 5}, {0, 1}, "last_page_len[0] = 0 outside 1..page_size = 16"},
        {{1, 4, 6}, {-7, 3, 1, 4, 0, 5}, {8, 17}, "last_page_len[1] = 17 outside"},
        {{0, 5, 6}, {3, 1, 4, 0, 5, 2}, {8, 1}, "sequence 0 has 5 pages, more than the 4"},
        {{1, 4, 4}, {-7, 3, 1, 4, 0, 5}, {8, 1}, "kv_lens[1] = 0 outside [q_tokens = 1"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        a.page_indptr = bad[i].indptr, a.page_indices = bad[i].indices;
        a.last_page_len = bad[i].last;
        cr_expect_eq(ref_decode(&p, &a, LPAGES, ocsr, NULL, &err), FMQA_ERR_INVALID_ARGUMENT,
                     "case %zu", i);
        cr_expect(strstr(err.msg, bad[i].msg), "case %zu: %s", i, err.msg);
    }
    static const int32_t lens[2] = {40, 17};
    a.page_indptr = indptr, a.page_indices = indices, a.last_page_len = last, a.kv_lens = lens;
    cr_expect_eq(ref_decode(&p, &a, LPAGES, ocsr, NULL, &err), FMQA_ERR_INVALID_ARGUMENT);
    cr_expect(strstr(err.msg, "kv_lens must be NULL"), "%s", err.msg);
}

/* vLLM's slot mapping: token t goes to slot_mapping[t] whatever its position,
 * -1 writes nothing, a slot beyond the pages is an error. */
Test(ref_cache, layout_slot_mapping_writes_where_told)
{
    static uint16_t k[3 * LPS * LD], v[3 * LPS * LD], kn[3 * LD];
    for (int i = 0; i < 3 * LD; i++)
        kn[i] = (uint16_t)(0x3c00 + i); /* f16 1.0 and up: exact through double */
    memset(k, 0xff, sizeof k), memset(v, 0xff, sizeof v);
    fmqa_problem p;
    fmqa_problem_init(&p);
    p.op = FMQA_OP_APPEND, p.batch = 1, p.num_q_heads = p.num_kv_heads = 1, p.q_tokens = 3;
    p.head_dim_qk = p.head_dim_v = LD, p.kv_len = 48, p.page_size = LPS;
    p.flags = FMQA_FLAG_PAGED | FMQA_FLAG_SLOT_MAPPING;
    int32_t start = 5, slots[3] = {17, -1, 40};
    fmqa_append_args a;
    memset(&a, 0, sizeof a);
    a.k_new = a.v_new = kn, a.k_new_stride_batch = a.v_new_stride_batch = 3 * LD;
    a.k_new_stride_token = a.v_new_stride_token = a.k_new_stride_head = a.v_new_stride_head = LD;
    a.k = k, a.v = v, a.k_stride_batch = a.v_stride_batch = LPS * LD;
    a.k_stride_token = a.v_stride_token = a.k_stride_head = a.v_stride_head = LD;
    a.start_pos = &start, a.slot_mapping = slots;
    fmqa_err err = {0};
    cr_assert_eq(ref_append_args(&p, &a, 3, &err), FMQA_OK, "%s", err.msg);
    cr_expect_eq(memcmp(k + 17 * LD, kn, 2 * LD), 0);
    cr_expect_eq(memcmp(v + 40 * LD, kn + 2 * LD, 2 * LD), 0);
    for (int r = 0; r < 3 * LPS; r++)
        for (int i = 0; r != 17 && r != 40 && i < LD; i++)
            cr_expect_eq(k[r * LD + i], 0xffff, "row %d written", r);
    slots[1] = 48;
    cr_expect_eq(ref_append_args(&p, &a, 3, &err), FMQA_ERR_INVALID_ARGUMENT);
    cr_expect(strstr(err.msg, "slot_mapping[1] = 48 outside -1 .. n_pages * page_size - 1 = 47"),
              "%s", err.msg);
    a.slot_mapping = NULL;
    cr_expect_eq(ref_append_args(&p, &a, 3, &err), FMQA_ERR_INVALID_ARGUMENT);
    cr_expect(strstr(err.msg, "slot_mapping is NULL"), "%s", err.msg);
}
