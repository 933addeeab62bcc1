/*
 * prefill_check.c -- the host side of the fmqa_prefill tests (prefill_check.h):
 * inputs in guarded, poisoned buffers and the comparison with ref_prefill.
 */
#include "prefill_check.h"

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "test_support.h"

/* A guarded NaN-filled buffer that the args field at offset `field` points
 * at, listed for upload. */
static void *buffer(prefill_inputs *in, size_t field, size_t bytes, size_t align)
{
    cr_assert_lt(in->n_bufs, PREFILL_MAX_BUFS);
    void *b = fmqa_test_guarded(bytes, align, 0xff);
    memcpy((char *)&in->a + field, &b, sizeof b);
    in->field[in->n_bufs] = field, in->bytes[in->n_bufs++] = bytes;
    return b;
}

#define BUF(in, f, bytes, align) buffer((in), offsetof(fmqa_prefill_args, f), (bytes), (align))

/* Writes one random row of d elements of dtype t at element `at` of base (an
 * 8-bit row quantized, its scale at scales[sat]). */
static void put_row(fmqa_dtype t, int64_t d, ref_rng *r, void *base, int64_t at, float *scales,
                    int64_t sat)
{
    double x[256];
    cr_assert_leq(d, 256);
    ref_rng_fill(r, x, d, 1.0, 0);
    fmqa_err err;
    if (t == FMQA_DTYPE_INT8 || t == FMQA_DTYPE_FP8_E4M3)
        cr_assert_eq(ref_quantize_row(t, x, d, (uint8_t *)base + at, &scales[sat], &err), FMQA_OK,
                     "%s", err.msg);
    else
        cr_assert_eq(ref_from_double(t, x, d, (uint16_t *)base + at, &err), FMQA_OK, "%s",
                     err.msg);
}

/* A shuffled page table of per_seq pages a sequence, 3 pages never used. */
static int32_t *page_table(prefill_inputs *in, int64_t n, ref_rng *r)
{
    int32_t *table = BUF(in, page_table, n * sizeof *table, 4);
    fmqa_test_shuffle_pages(table, n, r);
    in->n_pages = n + 3;
    return table;
}

/* The cache: outer is the sequence or, paged, a page. */
static void make_cache(const fmqa_problem *p, const int32_t *kv, ref_rng *r, prefill_inputs *in)
{
    fmqa_prefill_args *a = &in->a;
    const int64_t B = p->batch, Hk = p->num_kv_heads, D = p->head_dim_qk;
    const int paged = (p->flags & FMQA_FLAG_PAGED) != 0;
    const int64_t ps = paged ? p->page_size : p->kv_len;
    const int64_t per_seq = (p->kv_len + ps - 1) / ps, outer = paged ? B * per_seq + 3 : B;
    const size_t ke = fmqa_dtype_size(p->kv_dtype);
    const int64_t vrow = D + 16 / (int64_t)ke;
    a->k_stride_head = D, a->k_stride_token = Hk * D, a->k_stride_batch = ps * Hk * D;
    a->v_stride_head = ps * vrow, a->v_stride_token = vrow, a->v_stride_batch = Hk * ps * vrow;
    a->k_scale_stride_head = 1, a->k_scale_stride_token = Hk, a->k_scale_stride_batch = ps * Hk;
    a->v_scale_stride_head = ps, a->v_scale_stride_token = 1, a->v_scale_stride_batch = Hk * ps;
    void *k = BUF(in, k, outer * ps * Hk * D * ke, 16);
    void *v = BUF(in, v, outer * ps * Hk * vrow * ke, 16);
    float *ks = NULL, *vs = NULL;
    if (ke == 1) {
        ks = BUF(in, k_scale, outer * ps * Hk * 4, 4);
        vs = BUF(in, v_scale, outer * ps * Hk * 4, 4);
    }
    const int32_t *table = paged ? page_table(in, B * per_seq, r) : NULL;
    if (paged)
        a->page_table_stride = per_seq;
    for (int64_t b = 0; b < B; b++)
        for (int64_t j = 0; j < kv[b]; j++) {
            int64_t o = paged ? table[b * per_seq + j / ps] : b, t = paged ? j % ps : j;
            for (int64_t h = 0; h < Hk; h++) {
                put_row(p->kv_dtype, D, r, k, o * a->k_stride_batch + t * a->k_stride_token + h * D,
                        ks, o * a->k_scale_stride_batch + t * Hk + h);
                put_row(p->kv_dtype, D, r, v, o * a->v_stride_batch + t * vrow + h * a->v_stride_head,
                        vs, o * a->v_scale_stride_batch + t + h * ps);
            }
        }
}

/* The new tokens' own K and V, packed [total, hk, d] with padding between
 * tokens (K) and V as [hk][total][d + 8]. */
static void make_packed_kv(const fmqa_problem *p, ref_rng *r, prefill_inputs *in)
{
    fmqa_prefill_args *a = &in->a;
    const int64_t Hk = p->num_kv_heads, D = p->head_dim_qk, total = in->total;
    a->k_stride_head = D, a->k_stride_token = Hk * D + 8;
    a->v_stride_token = D + 8, a->v_stride_head = total * (D + 8);
    uint16_t *k = BUF(in, k, total * (Hk * D + 8) * 2, 16);
    uint16_t *v = BUF(in, v, Hk * total * (D + 8) * 2, 16);
    for (int64_t t = 0; t < total; t++)
        for (int64_t h = 0; h < Hk; h++) {
            put_row(p->kv_dtype, D, r, k, t * a->k_stride_token + h * D, NULL, 0);
            put_row(p->kv_dtype, D, r, v, t * a->v_stride_token + h * a->v_stride_head, NULL, 0);
        }
}

void prefill_inputs_make(const fmqa_problem *p, const int32_t *tq, const int32_t *cached,
                         ref_rng *r, prefill_inputs *in)
{
    const int64_t B = p->batch, H = p->num_q_heads, D = p->head_dim_qk;
    memset(in, 0, sizeof *in);
    cr_assert_leq(B, PREFILL_MAX_SEQS);
    int32_t *cu = BUF(in, cu_seqlens_q, (B + 1) * sizeof *cu, 4);
    cu[0] = 0;
    for (int64_t b = 0; b < B; b++)
        cu[b + 1] = cu[b] + tq[b];
    in->total = cu[B];
    if (p->flags & FMQA_FLAG_KV_CACHE) {
        int32_t *kv = BUF(in, kv_lens, B * sizeof *kv, 4);
        for (int64_t b = 0; b < B; b++)
            kv[b] = cached[b] + tq[b];
        make_cache(p, kv, r, in);
    } else {
        make_packed_kv(p, r, in);
    }
    const int64_t qrow = H * D + 8, n = in->total * qrow;
    fmqa_test_fill_random(r, p->q_dtype, BUF(in, q, n * 2, 16), n);
    in->a.q_stride_token = qrow, in->a.q_stride_head = D;
    BUF(in, o, in->total * H * D * 2, 16);
    in->a.o_stride_token = H * D, in->a.o_stride_head = D;
    in->a.total_q = in->total; /* the sm_90a maps stop at the last row */
    BUF(in, lse, in->total * H * 4, 4);
}

void prefill_inputs_sinks(const fmqa_problem *p, ref_rng *r, prefill_inputs *in)
{
    float *s = BUF(in, sinks, p->num_q_heads * sizeof *s, 4);
    for (int h = 0; h < p->num_q_heads; h++)
        s[h] = (float)((double)(ref_rng_next(r) % 1536) / 128.0 - 4.0);
}

void prefill_inputs_check(const fmqa_problem *p, const prefill_inputs *in, const void *o,
                          const float *lse, const char *what)
{
    const int64_t rows = in->total * p->num_q_heads, n = rows * p->head_dim_v;
    double *ro = malloc(n * sizeof *ro), *rl = malloc(rows * sizeof *rl);
    cr_assert(ro && rl);
    fmqa_err err;
    cr_assert_eq(ref_prefill(p, &in->a, in->n_pages, ro, rl, &err), FMQA_OK, "%s", err.msg);
    ref_cmp cmp;
    cr_assert_eq(ref_compare(p->out_dtype, o, ro, n, &cmp, &err), FMQA_OK, "%s", err.msg);
    /* As decode's: ~3e-4 with f16 operands, ~2.5e-3 with bf16 (P rounded). */
    const double tol = p->out_dtype == FMQA_DTYPE_BF16 || p->kv_dtype == FMQA_DTYPE_BF16 ||
                               p->q_dtype == FMQA_DTYPE_BF16 ? 8e-3 : 1e-3;
    fprintf(stderr, "%s: o rel_l2 %.2e max %.2e bad %lld\n", what, cmp.rel_l2, cmp.max_abs,
            (long long)cmp.bad);
    cr_expect(ref_cmp_ok(&cmp, tol, -1), "%s: o rel_l2 %g, max %g at %lld, %lld bad", what,
              cmp.rel_l2, cmp.max_abs, (long long)cmp.worst, (long long)cmp.bad);
    if (p->flags & FMQA_FLAG_LSE) {
        cr_assert_eq(ref_compare(FMQA_DTYPE_F32, lse, rl, rows, &cmp, &err), FMQA_OK);
        cr_expect(ref_cmp_ok(&cmp, 1e-4, -1), "%s: lse rel_l2 %g, max %g at %lld, %lld bad", what,
                  cmp.rel_l2, cmp.max_abs, (long long)cmp.worst, (long long)cmp.bad);
    }
    free(ro);
    free(rl);
}

void prefill_inputs_scores(const fmqa_problem *p, int32_t window, ref_rng *r, prefill_inputs *in)
{
    const int64_t slots = p->kv_len, row = slots + 8, n = (int64_t)p->batch * p->num_kv_heads * row;
    float *sc = BUF(in, scores, n * sizeof *sc, 16);
    for (int64_t i = 0; i < n; i++)
        if (i % row < slots)
            sc[i] = (float)ref_rng_uniform(r);
    in->scores_start = malloc(n * sizeof *sc);
    cr_assert_not_null(in->scores_start);
    memcpy(in->scores_start, sc, n * sizeof *sc);
    in->a.scores_stride_head = row, in->a.scores_stride_batch = p->num_kv_heads * row;
    in->a.scores_window = window;
}

void prefill_inputs_check_scores(const fmqa_problem *p, const prefill_inputs *in,
                                 const float *scores, const char *what)
{
    const int64_t slots = p->kv_len, row = slots + 8, n = (int64_t)p->batch * p->num_kv_heads * row;
    const float *start = in->scores_start;
    double *dense = calloc(n, sizeof *dense);
    cr_assert_not_null(dense);
    fmqa_err err;
    cr_assert_eq(ref_prefill_scores(p, &in->a, in->n_pages, dense, &err), FMQA_OK, "%s", err.msg);
    const int32_t *cu = in->a.cu_seqlens_q;
    int64_t bad = 0, worst = -1;
    double max_rel = 0.0;
    for (int64_t i = 0; i < n; i++) {
        const int64_t j = i % row, b = i / row / p->num_kv_heads;
        const int32_t len = in->a.kv_lens ? in->a.kv_lens[b] : cu[b + 1] - cu[b];
        if (j >= len) { /* padding and slots past the sequence: untouched */
            bad += memcmp(&scores[i], &start[i], sizeof *scores) != 0;
            continue;
        }
        const double w = start[i] + dense[i / row * slots + j];
        const double e = fabs(scores[i] - w) / fmax(w, 1e-3);
        if (isnan(e))
            bad++, worst = i;
        else if (e > max_rel)
            max_rel = e, worst = i;
    }
    /* 2^(x - L) of f32 logits and LSEs from f16 / bf16 operands, summed over
     * <= w G rows: observed ~2e-7 relative on the emulator. */
    fprintf(stderr, "%s: scores max rel %.2e at %lld, %lld NaN or untouchable slots written\n",
            what, max_rel, (long long)worst, (long long)bad);
    cr_expect(bad == 0 && max_rel <= 2e-3, "%s: scores max rel %g at %lld (%g, start %g), %lld NaN "
              "or untouchable slots written", what, max_rel, (long long)worst,
              worst >= 0 ? scores[worst] : 0.0, worst >= 0 ? start[worst] : 0.0, (long long)bad);
    free(dense);
}
