/*
 * ref_cache.c -- physical KV caches: addressing (contiguous, paged, ring), the
 * gather that turns any of them into the dense logical arrays of ref_attention,
 * RoPE, the append reference, and ref_decode / ref_append_args, which apply
 * them to the public fmqa_problem + args structs on host copies.
 *
 * Invariants: row_at() is the only function that turns (b, position, head) into
 * an address, so every layout is read and written the same way.  ref_append
 * runs its loop twice, first only checking every address and row (so that bad
 * input writes nothing), then writing.
 */
#include "ref.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define BAD(...) fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT, __VA_ARGS__)

static int is_8bit(fmqa_dtype dtype)
{
    return dtype == FMQA_DTYPE_INT8 || dtype == FMQA_DTYPE_FP8_E4M3;
}

static fmqa_status check_view(const ref_cache_view *c, const char *what, fmqa_err *err)
{
    if (!c || !c->data)
        return BAD("%s: NULL view or data", what);
    if (fmqa_dtype_size(c->dtype) == 0)
        return BAD("%s.dtype = %d is unknown", what, (int)c->dtype);
    if (is_8bit(c->dtype) && !c->scale)
        return BAD("%s.scale is NULL for an 8-bit (%s) cache", what, fmqa_dtype_name(c->dtype));
    if ((c->flags & FMQA_FLAG_PAGED) && (!c->page_table || c->page_size <= 0))
        return BAD("%s: paged without a page table or with page_size = %d", what, c->page_size);
    if ((c->flags & FMQA_FLAG_RING) && (c->window <= 0 || c->sink_tokens < 0))
        return BAD("%s: ring needs window > 0 and sink_tokens >= 0 (got %d, %d)", what,
                   c->window, c->sink_tokens);
    return FMQA_OK;
}

int64_t ref_cache_slot(const ref_cache_view *c, int64_t j)
{
    if (!(c->flags & FMQA_FLAG_RING) || j < c->sink_tokens)
        return j;
    return c->sink_tokens + (j - c->sink_tokens) % c->window;
}

/* Element offsets of row (b, j, h) and of its scale.  OUT: *off, *soff. */
static fmqa_status row_at(const ref_cache_view *c, int64_t b, int64_t j, int64_t h,
                          int64_t n_pages, int64_t *off, int64_t *soff, fmqa_err *err)
{
    int64_t slot = ref_cache_slot(c, j), outer = b;
    if (c->flags & FMQA_FLAG_PAGED) {
        int64_t col = slot / c->page_size;
        if (c->page_table_stride > 0 && col >= c->page_table_stride)
            return BAD("page table: position %lld of sequence %lld needs page column %lld, "
                       "beyond page_table_stride = %lld", (long long)j, (long long)b,
                       (long long)col, (long long)c->page_table_stride);
        outer = c->page_table[b * c->page_table_stride + col];
        if (outer < 0 || (n_pages > 0 && outer >= n_pages))
            return BAD("page_table[%lld][%lld] = %lld outside [0, %lld)", (long long)b,
                       (long long)col, (long long)outer, (long long)n_pages);
        slot %= c->page_size;
    }
    *off = outer * c->stride_batch + slot * c->stride_token + h * c->stride_head;
    *soff = outer * c->scale_stride_batch + slot * c->scale_stride_token + h * c->scale_stride_head;
    return FMQA_OK;
}

static void *elem(const ref_cache_view *c, int64_t off)
{
    return (char *)c->data + off * (int64_t)fmqa_dtype_size(c->dtype);
}

static fmqa_status load_row(const ref_cache_view *c, int64_t b, int64_t j, int64_t h, int64_t d,
                            int64_t n_pages, double *out, fmqa_err *err)
{
    int64_t off, soff;
    fmqa_status st = row_at(c, b, j, h, n_pages, &off, &soff, err);
    if (st != FMQA_OK)
        return st;
    if (!is_8bit(c->dtype))
        return ref_to_double(c->dtype, elem(c, off), d, out, err);
    for (int64_t i = 0; i < d; i++)
        out[i] = ref_dequantize(c->dtype, elem(c, off), i, c->scale[soff]);
    return FMQA_OK;
}

/* Stores x[d] at row (b, j, h); with write = 0 only checks that it could. */
static fmqa_status store_row(const ref_cache_view *c, int64_t b, int64_t j, int64_t h,
                             const double *x, int64_t d, int64_t n_pages, int write,
                             fmqa_err *err)
{
    int64_t off, soff;
    float scale;
    fmqa_status st = row_at(c, b, j, h, n_pages, &off, &soff, err);
    if (st == FMQA_OK && is_8bit(c->dtype))
        st = write ? ref_quantize_row(c->dtype, x, d, elem(c, off), &c->scale[soff], err)
                   : ref_quant_scale(c->dtype, x, d, &scale, err);
    else if (st == FMQA_OK && write)
        st = ref_from_double(c->dtype, x, d, elem(c, off), err);
    return st;
}

/* 1 if the cache holds position j of a sequence of length len. */
static int held(const ref_cache_view *c, int64_t len, int64_t j)
{
    if (j >= len)
        return 0;
    return !(c->flags & FMQA_FLAG_RING) || j < c->sink_tokens || j >= len - c->window;
}

/* One pass of the gather; write = 0 only checks every address (so that a bad
 * page table leaves out untouched). */
static fmqa_status gather_pass(const ref_cache_view *c, int64_t batch, int64_t tokens,
                               int64_t heads, int64_t head_dim, const int32_t *kv_lens,
                               int64_t n_pages, double *out, int write, fmqa_err *err)
{
    for (int64_t b = 0; b < batch; b++)
        for (int64_t j = 0; j < tokens; j++)
            for (int64_t h = 0; h < heads; h++) {
                double *row = out + ((b * tokens + j) * heads + h) * head_dim;
                int64_t off, soff;
                fmqa_status st = FMQA_OK;
                if (!held(c, kv_lens ? kv_lens[b] : tokens, j))
                    for (int64_t i = 0; write && i < head_dim; i++)
                        row[i] = NAN;
                else if (write)
                    st = load_row(c, b, j, h, head_dim, n_pages, row, err);
                else
                    st = row_at(c, b, j, h, n_pages, &off, &soff, err);
                if (st != FMQA_OK)
                    return st;
            }
    return FMQA_OK;
}

fmqa_status ref_cache_gather(const ref_cache_view *c, int64_t batch, int64_t tokens,
                             int64_t heads, int64_t head_dim, const int32_t *kv_lens,
                             int64_t n_pages, double *out, fmqa_err *err)
{
    fmqa_status st = check_view(c, "ref_cache_gather", err);
    if (st != FMQA_OK)
        return st;
    if (batch <= 0 || tokens <= 0 || heads <= 0 || head_dim <= 0 || !out)
        return BAD("ref_cache_gather: sizes must be > 0 and out not NULL");
    for (int64_t b = 0; kv_lens && b < batch; b++)
        if (kv_lens[b] < 0 || kv_lens[b] > tokens)
            return BAD("ref_cache_gather: kv_lens[%lld] = %d outside [0, %lld]", (long long)b,
                       kv_lens[b], (long long)tokens);
    for (int write = 0; write < 2 && st == FMQA_OK; write++)
        st = gather_pass(c, batch, tokens, heads, head_dim, kv_lens, n_pages, out, write, err);
    return st;
}

/* ---------------------------------------------------------------- RoPE */

fmqa_status ref_rope_row(fmqa_rope mode, double *x, int64_t d, double pos, double theta,
                         fmqa_err *err)
{
    if (mode != FMQA_ROPE_NONE && mode != FMQA_ROPE_NEOX && mode != FMQA_ROPE_GPTJ)
        return BAD("ref_rope_row: unknown rope mode %d", (int)mode);
    if (mode == FMQA_ROPE_NONE)
        return FMQA_OK;
    if (!x || d <= 0 || d % 2)
        return BAD("ref_rope_row: head dim %lld must be even and > 0", (long long)d);
    if (theta == 0.0)
        theta = 10000.0;
    for (int64_t i = 0; i < d / 2; i++) {
        double angle = pos * pow(theta, -2.0 * (double)i / (double)d);
        int64_t ia = mode == FMQA_ROPE_NEOX ? i : 2 * i;
        int64_t ib = mode == FMQA_ROPE_NEOX ? i + d / 2 : 2 * i + 1;
        double a = x[ia], b = x[ib], cs = cos(angle), sn = sin(angle);
        x[ia] = a * cs - b * sn;
        x[ib] = b * cs + a * sn;
    }
    return FMQA_OK;
}

/* ---------------------------------------------------------------- append */

static fmqa_status check_append(const ref_append_shape *s, const double *k_new,
                                const double *v_new, const ref_cache_view *kc,
                                const ref_cache_view *vc, fmqa_err *err)
{
    if (!s || s->batch <= 0 || s->n_new <= 0 || s->num_q_heads <= 0 || s->num_kv_heads <= 0 ||
        s->head_dim_k <= 0 || s->head_dim_v <= 0)
        return BAD("ref_append_shape: NULL or a size <= 0");
    if (!s->start_pos || !k_new || !v_new)
        return BAD("ref_append: NULL start_pos, k_new or v_new");
    for (int64_t b = 0; b < s->batch; b++)
        if (s->start_pos[b] < 0)
            return BAD("ref_append: start_pos[%lld] = %d < 0", (long long)b, s->start_pos[b]);
    fmqa_status st = check_view(kc, "ref_append k cache", err);
    return st != FMQA_OK ? st : check_view(vc, "ref_append v cache", err);
}

/* One pass of the append over every new (token, head); write = 0 only checks. */
static fmqa_status append_pass(const ref_append_shape *s, const double *k_new,
                               const double *v_new, double *q, const ref_cache_view *kc,
                               const ref_cache_view *vc, double *row, int write, fmqa_err *err)
{
    fmqa_status st = FMQA_OK;
    int64_t dk = s->head_dim_k, dv = s->head_dim_v;
    for (int64_t b = 0; b < s->batch; b++)
        for (int64_t t = 0; t < s->n_new; t++) {
            int64_t pos = s->start_pos[b] + t, tok = b * s->n_new + t;
            double rpos = (double)(s->rope_pos ? s->rope_pos[b] + t : pos);
            for (int64_t h = 0; h < s->num_kv_heads && st == FMQA_OK; h++) {
                memcpy(row, k_new + (tok * s->num_kv_heads + h) * dk, (size_t)dk * sizeof *row);
                st = ref_rope_row(s->rope, row, dk, rpos, s->rope_theta, err);
                if (st == FMQA_OK)
                    st = store_row(kc, b, pos, h, row, dk, s->n_pages, write, err);
                if (st == FMQA_OK)
                    st = store_row(vc, b, pos, h, v_new + (tok * s->num_kv_heads + h) * dv, dv,
                                   s->n_pages, write, err);
            }
            for (int64_t h = 0; q && write && h < s->num_q_heads && st == FMQA_OK; h++)
                st = ref_rope_row(s->rope, q + (tok * s->num_q_heads + h) * dk, dk, rpos,
                                  s->rope_theta, err);
            if (st != FMQA_OK)
                return st;
        }
    return FMQA_OK;
}

fmqa_status ref_append(const ref_append_shape *s, const double *k_new, const double *v_new,
                       double *q, const ref_cache_view *k_cache, const ref_cache_view *v_cache,
                       fmqa_err *err)
{
    fmqa_status st = check_append(s, k_new, v_new, k_cache, v_cache, err);
    if (st != FMQA_OK)
        return st;
    double *row = malloc((size_t)s->head_dim_k * sizeof *row);
    if (!row)
        return fmqa_err_set(err, FMQA_ERR_OUT_OF_MEMORY, "ref_append: row");
    st = append_pass(s, k_new, v_new, q, k_cache, v_cache, row, 0, err);
    if (st == FMQA_OK)
        st = append_pass(s, k_new, v_new, q, k_cache, v_cache, row, 1, err);
    free(row);
    return st;
}

/* ---------------------------------------------------------------- public-API level */

/* A dense [b, t, h, d] tensor of dtype with the public API's element strides. */
static ref_cache_view plain_view(fmqa_dtype dtype, const void *data, int64_t sb, int64_t st,
                                 int64_t sh)
{
    ref_cache_view v = {0};
    v.dtype = dtype;
    v.data = (void *)data;   /* views are only written by ref_append; see ref.h */
    v.stride_batch = sb;
    v.stride_token = st;
    v.stride_head = sh;
    return v;
}

/* The cache view of fmqa_decode_args / fmqa_append_args fields (same names). */
static ref_cache_view cache_view(const fmqa_problem *p, const void *data, const int64_t s[3],
                                 const float *scale, const int64_t ss[3],
                                 const int32_t *page_table, int64_t pt_stride)
{
    ref_cache_view v = plain_view(p->kv_dtype, data, s[0], s[1], s[2]);
    v.scale = (float *)scale;
    v.scale_stride_batch = ss[0];
    v.scale_stride_token = ss[1];
    v.scale_stride_head = ss[2];
    v.flags = p->flags & (FMQA_FLAG_PAGED | FMQA_FLAG_RING);
    v.page_table = page_table;
    v.page_table_stride = pt_stride;
    v.page_size = p->page_size;
    v.window = p->window;
    v.sink_tokens = p->sink_tokens;
    return v;
}

/* The view of cache x (k or v) in fmqa_decode_args or fmqa_append_args, whose
 * fields share their names. */
#define ARGS_CACHE_VIEW(p, a, x)                                                              \
    cache_view((p), (a)->x,                                                                  \
               (const int64_t[3]){(a)->x##_stride_batch, (a)->x##_stride_token,              \
                                  (a)->x##_stride_head},                                     \
               (a)->x##_scale,                                                               \
               (const int64_t[3]){(a)->x##_scale_stride_batch, (a)->x##_scale_stride_token,  \
                                  (a)->x##_scale_stride_head},                               \
               (a)->page_table, (a)->page_table_stride)

/* The dense q, k (and v when v_too) of a decode call's host arguments, in one
 * allocation at *q that the caller frees (also on error). */
static fmqa_status gather_decode(const fmqa_problem *p, const fmqa_decode_args *a,
                                 const ref_attn_shape *s, int64_t n_pages, int v_too, double **q,
                                 double **k, double **v, fmqa_err *err)
{
    int64_t nq = s->batch * s->q_tokens * s->num_q_heads * s->head_dim_qk;
    int64_t nk = s->batch * s->kv_len * s->num_kv_heads;
    *q = malloc((size_t)(nq + nk * (s->head_dim_qk + (v_too ? s->head_dim_v : 0))) * sizeof **q);
    if (!*q)
        return fmqa_err_set(err, FMQA_ERR_OUT_OF_MEMORY, "ref_decode: %lld KV rows", (long long)nk);
    *k = *q + nq, *v = *k + nk * s->head_dim_qk;
    ref_cache_view qv = plain_view(p->q_dtype, a->q, a->q_stride_batch, a->q_stride_token,
                                   a->q_stride_head);
    ref_cache_view kv = ARGS_CACHE_VIEW(p, a, k), vv = ARGS_CACHE_VIEW(p, a, v);
    fmqa_status st = ref_cache_gather(&qv, s->batch, s->q_tokens, s->num_q_heads, s->head_dim_qk,
                                      NULL, 0, *q, err);
    if (st == FMQA_OK)
        st = ref_cache_gather(&kv, s->batch, s->kv_len, s->num_kv_heads, s->head_dim_qk,
                              a->kv_lens, n_pages, *k, err);
    if (st == FMQA_OK && v_too)
        st = ref_cache_gather(&vv, s->batch, s->kv_len, s->num_kv_heads, s->head_dim_v,
                              a->kv_lens, n_pages, *v, err);
    return st;
}

static ref_attn_shape decode_shape(const fmqa_problem *p, const fmqa_decode_args *a)
{
    ref_attn_shape s = {p->batch, p->q_tokens, p->kv_len, p->num_q_heads, p->num_kv_heads,
                        p->head_dim_qk, p->head_dim_v, a->kv_lens, p->flags, a->tree_mask,
                        p->window, p->sink_tokens, 0, 0, a->sm_scale};
    return s;
}

fmqa_status ref_decode(const fmqa_problem *p, const fmqa_decode_args *a, int64_t n_pages,
                       double *o, double *lse, fmqa_err *err)
{
    if (!p || !a || !o)
        return BAD("ref_decode: NULL problem, args or o");
    ref_attn_shape s = decode_shape(p, a);
    fmqa_status st = ref_attn_shape_check(&s, err);
    if (st != FMQA_OK)
        return st;
    double *q, *k, *v;
    st = gather_decode(p, a, &s, n_pages, 1, &q, &k, &v, err);
    if (st == FMQA_OK)
        st = ref_attention(&s, q, k, v, o, lse, err);
    free(q);
    return st;
}

fmqa_status ref_decode_scores(const fmqa_problem *p, const fmqa_decode_args *a, int64_t n_pages,
                              double *scores, fmqa_err *err)
{
    if (!p || !a || !scores)
        return BAD("ref_decode_scores: NULL problem, args or scores");
    ref_attn_shape s = decode_shape(p, a);
    fmqa_status st = ref_attn_shape_check(&s, err);
    if (st != FMQA_OK)
        return st;
    ref_cache_view view = ARGS_CACHE_VIEW(p, a, k);
    int64_t slots = (p->flags & FMQA_FLAG_RING) ? (int64_t)p->sink_tokens + p->window : p->kv_len;
    int64_t rows = s.batch * s.num_kv_heads;
    double *q, *k, *v, *dense = calloc((size_t)(rows * s.kv_len), sizeof *dense);
    st = dense ? gather_decode(p, a, &s, n_pages, 0, &q, &k, &v, err)
               : fmqa_err_set(err, FMQA_ERR_OUT_OF_MEMORY, "ref_decode_scores");
    if (st == FMQA_OK)
        st = ref_attention_scores(&s, q, k, dense, err);
    for (int64_t r = 0; st == FMQA_OK && r < rows; r++)
        for (int64_t j = 0; j < s.kv_len; j++)
            scores[r * slots + ref_cache_slot(&view, j)] += dense[r * s.kv_len + j];
    if (dense)
        free(q);
    free(dense);
    return st;
}

/* Writes the dense q [B, n, H, d] back into the strided q of the args. */
static fmqa_status scatter_q(const ref_cache_view *qv, const ref_append_shape *s,
                             const double *q, fmqa_err *err)
{
    fmqa_status st = FMQA_OK;
    for (int64_t r = 0; r < s->batch * s->n_new * s->num_q_heads && st == FMQA_OK; r++) {
        int64_t b = r / (s->n_new * s->num_q_heads), t = r / s->num_q_heads % s->n_new;
        st = store_row(qv, b, t, r % s->num_q_heads, q + r * s->head_dim_k, s->head_dim_k, 0, 1,
                       err);
    }
    return st;
}

fmqa_status ref_append_args(const fmqa_problem *p, const fmqa_append_args *a, int64_t n_pages,
                            fmqa_err *err)
{
    if (!p || !a || !a->k_new || !a->v_new)
        return BAD("ref_append_args: NULL problem, args, k_new or v_new");
    if (p->batch <= 0 || p->q_tokens <= 0 || p->num_q_heads <= 0 || p->num_kv_heads <= 0 ||
        p->head_dim_qk <= 0 || p->head_dim_v <= 0)
        return BAD("ref_append_args: problem sizes must be > 0");
    ref_append_shape s = {p->batch, p->q_tokens, p->num_q_heads, p->num_kv_heads, p->head_dim_qk,
                          p->head_dim_v, a->start_pos, p->rope, a->rope_theta, n_pages,
                          a->rope_pos};
    int64_t nt = s.batch * s.n_new, nq = a->q ? nt * s.num_q_heads * s.head_dim_k : 0;
    double *kn = malloc((size_t)(nt * s.num_kv_heads * (s.head_dim_k + s.head_dim_v) + nq) *
                        sizeof *kn);
    if (!kn)
        return fmqa_err_set(err, FMQA_ERR_OUT_OF_MEMORY, "ref_append_args: %lld tokens",
                            (long long)nt);
    double *vn = kn + nt * s.num_kv_heads * s.head_dim_k;
    double *q = a->q ? vn + nt * s.num_kv_heads * s.head_dim_v : NULL;
    ref_cache_view knv = plain_view(p->q_dtype, a->k_new, a->k_new_stride_batch,
                                    a->k_new_stride_token, a->k_new_stride_head);
    ref_cache_view vnv = plain_view(p->q_dtype, a->v_new, a->v_new_stride_batch,
                                    a->v_new_stride_token, a->v_new_stride_head);
    ref_cache_view qv = plain_view(p->q_dtype, a->q, a->q_stride_batch, a->q_stride_token,
                                   a->q_stride_head);
    ref_cache_view kc = ARGS_CACHE_VIEW(p, a, k), vc = ARGS_CACHE_VIEW(p, a, v);
    fmqa_status st = ref_cache_gather(&knv, s.batch, s.n_new, s.num_kv_heads, s.head_dim_k, NULL,
                                      0, kn, err);
    if (st == FMQA_OK)
        st = ref_cache_gather(&vnv, s.batch, s.n_new, s.num_kv_heads, s.head_dim_v, NULL, 0, vn, err);
    if (st == FMQA_OK && q)
        st = ref_cache_gather(&qv, s.batch, s.n_new, s.num_q_heads, s.head_dim_k, NULL, 0, q, err);
    if (st == FMQA_OK)
        st = ref_append(&s, kn, vn, q, &kc, &vc, err);
    if (st == FMQA_OK && q)
        st = scatter_q(&qv, &s, q, err);
    free(kn);
    return st;
}
