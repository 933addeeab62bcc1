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
    if ((c->flags & FMQA_FLAG_RING) && (c->window <= 0 || c->sink_tokens < 0 || c->draft_slots < 0))
        return BAD("%s: ring needs window > 0, sink_tokens >= 0 and draft_slots >= 0 (got %d, "
                   "%d, %d)", what, c->window, c->sink_tokens, c->draft_slots);
    return FMQA_OK;
}

int64_t ref_cache_slot(const ref_cache_view *c, int64_t j)
{
    return fmqa_ring_slot(c->flags, c->sink_tokens, (int64_t)c->window + c->draft_slots, j);
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
    if (st == FMQA_OK && is_8bit(c->dtype) && c->fixed_scale)
        st = ref_quantize_row_fixed(c->dtype, x, d, c->scale[soff], write ? elem(c, off) : NULL,
                                    err);
    else if (st == FMQA_OK && is_8bit(c->dtype))
        st = write ? ref_quantize_row(c->dtype, x, d, elem(c, off), &c->scale[soff], err)
                   : ref_quant_scale(c->dtype, x, d, &scale, err);
    else if (st == FMQA_OK && write)
        st = ref_from_double(c->dtype, x, d, elem(c, off), err);
    return st;
}

/* 1 if the gather reads position j of sequence b: the cache holds it (of a
 * sequence of length len) and, for a decode (s not NULL), the decode reads it. */
static int wanted(const ref_cache_view *c, const ref_attn_shape *s, int64_t b, int64_t len,
                  int64_t j)
{
    if (s)
        return ref_readable(s, b, j);
    return j < len &&
           fmqa_ring_holds(c->flags, c->sink_tokens, (int64_t)c->window + c->draft_slots, len, j);
}

/* One pass of the gather; write = 0 only checks every address (so that a bad
 * page table leaves out untouched). */
static fmqa_status gather_pass(const ref_cache_view *c, const ref_attn_shape *s, int64_t batch,
                               int64_t tokens, int64_t heads, int64_t head_dim,
                               const int32_t *kv_lens, int64_t n_pages, double *out, int write,
                               fmqa_err *err)
{
    for (int64_t b = 0; b < batch; b++)
        for (int64_t j = 0; j < tokens; j++)
            for (int64_t h = 0; h < heads; h++) {
                double *row = out + ((b * tokens + j) * heads + h) * head_dim;
                int64_t off, soff;
                fmqa_status st = FMQA_OK;
                if (!wanted(c, s, b, kv_lens ? kv_lens[b] : tokens, j))
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

/* ref_cache_gather, and with s (a decode's shape) only what the decode reads. */
static fmqa_status gather(const ref_cache_view *c, const ref_attn_shape *s, int64_t batch,
                          int64_t tokens, int64_t heads, int64_t head_dim,
                          const int32_t *kv_lens, int64_t n_pages, double *out, fmqa_err *err)
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
        st = gather_pass(c, s, batch, tokens, heads, head_dim, kv_lens, n_pages, out, write, err);
    return st;
}

fmqa_status ref_cache_gather(const ref_cache_view *c, int64_t batch, int64_t tokens,
                             int64_t heads, int64_t head_dim, const int32_t *kv_lens,
                             int64_t n_pages, double *out, fmqa_err *err)
{
    return gather(c, NULL, batch, tokens, heads, head_dim, kv_lens, n_pages, out, err);
}

/* ---------------------------------------------------------------- RoPE */

/* Checks a RoPE call; 1 when there is something to rotate. */
static int rope_args(fmqa_rope mode, const double *x, int64_t d, fmqa_status *st, fmqa_err *err)
{
    *st = FMQA_OK;
    if (mode != FMQA_ROPE_NONE && mode != FMQA_ROPE_NEOX && mode != FMQA_ROPE_GPTJ)
        *st = BAD("ref_rope_row: unknown rope mode %d", (int)mode);
    else if (mode != FMQA_ROPE_NONE && (!x || d <= 0 || d % 2))
        *st = BAD("ref_rope_row: head dim %lld must be even and > 0", (long long)d);
    return *st == FMQA_OK && mode != FMQA_ROPE_NONE;
}

/* Rotates pair i of the layout by the angle whose cos and sin are given. */
static void rotate_pair(fmqa_rope mode, double *x, int64_t d, int64_t i, double cs, double sn)
{
    int64_t ia = mode == FMQA_ROPE_NEOX ? i : 2 * i;
    int64_t ib = mode == FMQA_ROPE_NEOX ? i + d / 2 : 2 * i + 1;
    double a = x[ia], b = x[ib];
    x[ia] = a * cs - b * sn;
    x[ib] = b * cs + a * sn;
}

fmqa_status ref_rope_row(fmqa_rope mode, double *x, int64_t d, double pos, double theta,
                         fmqa_err *err)
{
    fmqa_status st;
    if (!rope_args(mode, x, d, &st, err))
        return st;
    if (theta == 0.0)
        theta = 10000.0;
    for (int64_t i = 0; i < d / 2; i++) {
        double angle = pos * pow(theta, -2.0 * (double)i / (double)d);
        rotate_pair(mode, x, d, i, cos(angle), sin(angle));
    }
    return FMQA_OK;
}

fmqa_status ref_rope_row_cs(fmqa_rope mode, double *x, int64_t d, const float *cs,
                            fmqa_err *err)
{
    fmqa_status st;
    if (!rope_args(mode, x, d, &st, err))
        return st;
    if (!cs)
        return BAD("ref_rope_row_cs: NULL table row");
    for (int64_t i = 0; i < d / 2; i++)
        rotate_pair(mode, x, d, i, cs[i], cs[d / 2 + i]);
    return FMQA_OK;
}

/* ---------------------------------------------------------------- append */

/* Elements RoPE rotates in a K row (fmqa_rope_extent of the public problem). */
static int64_t rope_extent(const ref_append_shape *s)
{
    if (s->rope == FMQA_ROPE_NONE)
        return 0;
    if (s->latent)
        return s->head_dim_k - s->head_dim_v;
    return s->rope_dim > 0 ? s->rope_dim : s->head_dim_k;
}

static fmqa_status check_append(const ref_append_shape *s, const double *k_new,
                                const double *v_new, const ref_cache_view *kc,
                                const ref_cache_view *vc, fmqa_err *err)
{
    if (!s || s->batch <= 0 || s->n_new <= 0 || s->num_q_heads <= 0 || s->num_kv_heads <= 0 ||
        s->head_dim_k <= 0 || s->head_dim_v <= 0)
        return BAD("ref_append_shape: NULL or a size <= 0");
    if (!s->start_pos || (k_new && !v_new && !s->latent))
        return BAD("ref_append: NULL start_pos or v_new");
    for (int64_t b = 0; b < s->batch; b++)
        if (s->start_pos[b] < 0)
            return BAD("ref_append: start_pos[%lld] = %d < 0", (long long)b, s->start_pos[b]);
    int64_t r = rope_extent(s);
    if (s->rope != FMQA_ROPE_NONE && (r <= 0 || r > s->head_dim_k || r % 2))
        return BAD("ref_append: %lld rotated elements of a %lld-element row: expected an even "
                   "number > 0 within it",
                   (long long)r, (long long)s->head_dim_k);
    if (s->rope_cos_sin && (s->rope_cos_sin_stride < r || s->rope_cos_sin_len <= 0))
        return BAD("ref_append: rope_cos_sin rows of %lld floats (stride) for %lld rotated "
                   "elements, %lld positions",
                   (long long)s->rope_cos_sin_stride, (long long)r,
                   (long long)s->rope_cos_sin_len);
    if (!k_new) /* q alone */
        return FMQA_OK;
    /* A slot mapping replaces the page table (slot_place checks the rest). */
    ref_cache_view k = *kc, v = vc ? *vc : *kc;
    if (s->slot_mapping)
        k.flags &= ~FMQA_FLAG_PAGED, v.flags &= ~FMQA_FLAG_PAGED;
    fmqa_status st = check_view(&k, "ref_append k cache", err);
    return st != FMQA_OK || s->latent ? st : check_view(&v, "ref_append v cache", err);
}

/* RoPE of the rotated part of a row of d elements (K: d = head_dim_k; q of a
 * latent cache: d = the rotated part) at position pos. */
static fmqa_status rope_part(const ref_append_shape *s, double *row, int64_t d, int64_t pos,
                             fmqa_err *err)
{
    int64_t r = rope_extent(s), at = s->latent ? d - r : 0;
    if (s->rope_cos_sin)
        return ref_rope_row_cs(s->rope, row + at, r,
                               s->rope_cos_sin + pos * s->rope_cos_sin_stride, err);
    return ref_rope_row(s->rope, row + at, r, (double)pos, s->rope_theta, err);
}

/* Where a slot mapping puts token tok (ref_append_shape.slot_mapping): the
 * views as contiguous [page, row] tensors (a page is their batch stride) and
 * the (page, row) to store at, or *skip for slot -1. */
static fmqa_status slot_place(const ref_append_shape *s, const ref_cache_view *kc, int64_t tok,
                              ref_cache_view *kt, ref_cache_view *vt, int64_t *page,
                              int64_t *row, int *skip, fmqa_err *err)
{
    const int64_t slot = s->slot_mapping[tok], ps = kc->page_size;
    if (!(kc->flags & FMQA_FLAG_PAGED) || ps <= 0 || (kc->flags & FMQA_FLAG_RING))
        return BAD("ref_append: a slot mapping needs a paged cache without a ring");
    if (slot < -1 || (s->n_pages > 0 && slot >= s->n_pages * ps))
        return BAD("ref_append: slot_mapping[%lld] = %lld outside -1 .. n_pages * page_size "
                   "- 1 = %lld",
                   (long long)tok, (long long)slot, (long long)(s->n_pages * ps - 1));
    *skip = slot < 0;
    *page = slot < 0 ? 0 : slot / ps, *row = slot < 0 ? 0 : slot % ps;
    kt->flags &= ~FMQA_FLAG_PAGED, vt->flags &= ~FMQA_FLAG_PAGED;
    return FMQA_OK;
}

/* One pass of the append over every new (token, head); write = 0 only checks. */
static fmqa_status append_pass(const ref_append_shape *s, const double *k_new,
                               const double *v_new, double *q, const ref_cache_view *kc,
                               const ref_cache_view *vc, double *row, int write, fmqa_err *err)
{
    fmqa_status st = FMQA_OK;
    int64_t dk = s->head_dim_k, dv = s->head_dim_v, dq = s->latent ? rope_extent(s) : dk;
    for (int64_t b = 0; b < s->batch; b++)
        for (int64_t t = 0; t < s->n_new; t++) {
            int64_t pos = s->start_pos[b] + t, tok = b * s->n_new + t;
            int64_t rpos = s->rope_pos ? s->rope_pos[b] + t : pos; /* a compacted cache */
            if (s->rope_cos_sin && s->rope != FMQA_ROPE_NONE &&
                (rpos < 0 || rpos >= s->rope_cos_sin_len))
                continue; /* no angles for it: the token is not written */
            ref_cache_view kt = *kc, vt = vc ? *vc : *kc;
            int64_t at_b = b, at_j = pos;
            int skip = 0;
            if (k_new && s->slot_mapping &&
                (st = slot_place(s, kc, tok, &kt, &vt, &at_b, &at_j, &skip, err)))
                return st;
            for (int64_t h = 0; k_new && !skip && h < s->num_kv_heads && st == FMQA_OK; h++) {
                memcpy(row, k_new + (tok * s->num_kv_heads + h) * dk, (size_t)dk * sizeof *row);
                st = rope_part(s, row, dk, rpos, err);
                if (st == FMQA_OK)
                    st = store_row(&kt, at_b, at_j, h, row, dk, s->n_pages, write, err);
                if (st == FMQA_OK && !s->latent)
                    st = store_row(&vt, at_b, at_j, h, v_new + (tok * s->num_kv_heads + h) * dv,
                                   dv, s->n_pages, write, err);
            }
            for (int64_t h = 0; q && write && h < s->num_q_heads && st == FMQA_OK; h++)
                st = rope_part(s, q + (tok * s->num_q_heads + h) * dq, dq, rpos, err);
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
    /* Per head or per tensor: the caller's scales, the strides they ignore 0. */
    const fmqa_kv_scale_granularity g = p->kv_scale_granularity;
    v.scale_stride_batch = g == FMQA_KV_SCALE_TOKEN_HEAD ? ss[0] : 0;
    v.scale_stride_token = g == FMQA_KV_SCALE_TOKEN_HEAD ? ss[1] : 0;
    v.scale_stride_head = g == FMQA_KV_SCALE_TENSOR ? 0 : ss[2];
    v.fixed_scale = g != FMQA_KV_SCALE_TOKEN_HEAD;
    v.flags = p->flags & (FMQA_FLAG_PAGED | FMQA_FLAG_RING);
    v.page_table = page_table;
    v.page_table_stride = pt_stride;
    v.page_size = p->page_size;
    v.window = p->window;
    v.sink_tokens = p->sink_tokens;
    v.draft_slots = p->draft_slots;
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

/* MLA through ref_decode: V is the latent K row, so v must be k with k's
 * strides and, for an 8-bit cache, dequantized with k's one scale: a second
 * scale would scale V differently from the latent it is. */
static fmqa_status check_mla_latent(const fmqa_problem *p, const fmqa_decode_args *a,
                                    fmqa_err *err)
{
    if (a->v != a->k || a->v_stride_batch != a->k_stride_batch ||
        a->v_stride_token != a->k_stride_token || a->v_stride_head != a->k_stride_head)
        return BAD("ref_decode: MLA reads V from the latent K rows: pass v = k with k's strides");
    if (is_8bit(p->kv_dtype) &&
        (a->v_scale != a->k_scale || a->v_scale_stride_batch != a->k_scale_stride_batch ||
         a->v_scale_stride_token != a->k_scale_stride_token ||
         a->v_scale_stride_head != a->k_scale_stride_head))
        return BAD("ref_decode: MLA with an 8-bit cache: the latent has one scale, pass "
                   "v_scale = k_scale with k_scale's strides");
    return FMQA_OK;
}

fmqa_status ref_csr_table(int64_t batch, int32_t page_size, int64_t max_pages,
                          const int32_t *indptr, const int32_t *indices,
                          const int32_t *last_page_len, int64_t n_pages, int32_t **table,
                          int64_t *stride, int32_t *lens, fmqa_err *err)
{
    if (!indptr || !indices || batch <= 0 || page_size <= 0)
        return BAD("page_indptr or page_indices is NULL, or batch %lld / page_size %d <= 0",
                   (long long)batch, page_size);
    if (indptr[0] < 0)
        return BAD("page_indptr[0] = %d < 0", indptr[0]);
    int64_t most = 1;
    for (int64_t b = 0; b < batch; b++) {
        const int64_t n = (int64_t)indptr[b + 1] - indptr[b];
        if (n < 0)
            return BAD("page_indptr is not monotone: page_indptr[%lld] = %d < page_indptr[%lld] "
                       "= %d", (long long)b + 1, indptr[b + 1], (long long)b, indptr[b]);
        if (n > max_pages)
            return BAD("page_indptr: sequence %lld has %lld pages, more than the %lld its "
                       "capacity needs", (long long)b, (long long)n, (long long)max_pages);
        if (last_page_len && n > 0 && (last_page_len[b] < 1 || last_page_len[b] > page_size))
            return BAD("last_page_len[%lld] = %d outside 1..page_size = %d", (long long)b,
                       last_page_len[b], page_size);
        most = n > most ? n : most;
    }
    for (int64_t i = indptr[0]; i < indptr[batch]; i++)
        if (indices[i] < -1 || (n_pages > 0 && indices[i] >= n_pages))
            return BAD("page_indices[%lld] = %d outside [0, %lld) (-1: a freed page)",
                       (long long)i, indices[i], (long long)n_pages);
    int32_t *t = malloc((size_t)(batch * most) * sizeof *t);
    if (!t)
        return fmqa_err_set(err, FMQA_ERR_OUT_OF_MEMORY, "ref_csr_table: %lld entries",
                            (long long)(batch * most));
    for (int64_t b = 0; b < batch; b++) {
        const int64_t n = (int64_t)indptr[b + 1] - indptr[b];
        for (int64_t c = 0; c < most; c++)
            t[b * most + c] = c < n ? indices[indptr[b] + c] : -1;
        if (lens)
            lens[b] = n > 0 ? (int32_t)((n - 1) * page_size + last_page_len[b]) : 0;
    }
    *table = t, *stride = most;
    return FMQA_OK;
}

/* Pages a sequence of the problem may own (its cache capacity in pages). */
static int64_t max_pages_of(const fmqa_problem *p)
{
    return (fmqa_cache_slots(p) + p->page_size - 1) / p->page_size;
}

/* ref_decode (o not NULL) or ref_decode_scores (into scores) of a CSR page
 * table: its 2-D table and lengths instead. */
static fmqa_status decode_csr(const fmqa_problem *p, const fmqa_decode_args *a, int64_t n_pages,
                              double *o, double *lse, double *scores, fmqa_err *err)
{
    if (a->kv_lens)
        return BAD("ref_decode: kv_lens must be NULL with FMQA_FLAG_PAGE_CSR (the lengths are "
                   "the table's)");
    if (!a->last_page_len)
        return BAD("ref_decode: last_page_len is NULL with FMQA_FLAG_PAGE_CSR");
    int32_t *lens = malloc((size_t)p->batch * sizeof *lens), *table = NULL;
    if (!lens)
        return fmqa_err_set(err, FMQA_ERR_OUT_OF_MEMORY, "ref_decode: lengths");
    fmqa_problem q = *p;
    fmqa_decode_args b = *a;
    q.flags &= ~FMQA_FLAG_PAGE_CSR;
    fmqa_status st = ref_csr_table(p->batch, p->page_size, max_pages_of(p), a->page_indptr,
                                   a->page_indices, a->last_page_len, n_pages, &table,
                                   &b.page_table_stride, lens, err);
    if (st == FMQA_OK) {
        b.kv_lens = lens, b.page_table = table;
        b.page_indptr = b.page_indices = b.last_page_len = NULL;
        st = o ? ref_decode(&q, &b, n_pages, o, lse, err)
               : ref_decode_scores(&q, &b, n_pages, scores, err);
    }
    free(table);
    free(lens);
    return st;
}

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
        st = gather(&kv, s, s->batch, s->kv_len, s->num_kv_heads, s->head_dim_qk, a->kv_lens,
                    n_pages, *k, err);
    if (st == FMQA_OK && v_too)
        st = gather(&vv, s, s->batch, s->kv_len, s->num_kv_heads, s->head_dim_v, a->kv_lens,
                    n_pages, *v, err);
    return st;
}

static ref_attn_shape decode_shape(const fmqa_problem *p, const fmqa_decode_args *a)
{
    ref_attn_shape s = {p->batch, p->q_tokens, p->kv_len, p->num_q_heads, p->num_kv_heads,
                        p->head_dim_qk, p->head_dim_v, a->kv_lens, p->flags, a->tree_mask,
                        p->window, p->sink_tokens, 0, 0, a->sm_scale, a->sinks,
                        p->logit_softcap, p->draft_slots};
    return s;
}

fmqa_status ref_decode(const fmqa_problem *p, const fmqa_decode_args *a, int64_t n_pages,
                       double *o, double *lse, fmqa_err *err)
{
    if (!p || !a || !o)
        return BAD("ref_decode: NULL problem, args or o");
    if (p->flags & FMQA_FLAG_PAGE_CSR)
        return decode_csr(p, a, n_pages, o, lse, NULL, err);
    ref_attn_shape s = decode_shape(p, a);
    fmqa_status st = ref_attn_shape_check(&s, err);
    if (st == FMQA_OK && p->op == FMQA_OP_MLA_DECODE)
        st = check_mla_latent(p, a, err);
    if (st != FMQA_OK)
        return st;
    double *q, *k, *v;
    st = gather_decode(p, a, &s, n_pages, 1, &q, &k, &v, err);
    if (st == FMQA_OK)
        st = ref_attention(&s, q, k, v, o, lse, err);
    free(q);
    return st;
}

/* Sequence b's view of a cache (contiguous: its batch slice; paged: its row
 * of the page table), or of packed new tokens (rows from q0), as batch 1. */
static ref_cache_view seq_view(ref_cache_view v, int kv_cache, int64_t b, int64_t q0)
{
    size_t e = fmqa_dtype_size(v.dtype);
    if (!kv_cache) {
        v.data = (char *)v.data + q0 * v.stride_token * (int64_t)e;
        return v;
    }
    if (v.flags & FMQA_FLAG_PAGED) {
        v.page_table += b * v.page_table_stride;
        return v;
    }
    v.data = (char *)v.data + b * v.stride_batch * (int64_t)e;
    if (v.scale)
        v.scale += b * v.scale_stride_batch;
    return v;
}

/* ref_attention_scores of one sequence (s: batch 1) added into scores [Hkv,
 * slots] (its rows slots apart). */
static fmqa_status add_scores(const ref_attn_shape *s, const double *q, const double *k,
                              int64_t slots, double *scores, fmqa_err *err)
{
    double *dense = calloc((size_t)(s->num_kv_heads * s->kv_len), sizeof *dense);
    if (!dense)
        return fmqa_err_set(err, FMQA_ERR_OUT_OF_MEMORY, "ref_prefill_scores");
    fmqa_status st = ref_attention_scores(s, q, k, dense, err);
    for (int64_t hk = 0; st == FMQA_OK && hk < s->num_kv_heads; hk++)
        for (int64_t j = 0; j < s->kv_len; j++)
            scores[hk * slots + j] += dense[hk * s->kv_len + j];
    free(dense);
    return st;
}

/* One sequence of ref_prefill: its last tq of tq_all new tokens (rows [q0 +
 * tq_all - tq, q0 + tq_all)) against kv positions; o and lse (of the rows from
 * q0), or with scores (IN/OUT [Hkv, p->kv_len]) the masses they give. */
static fmqa_status prefill_seq(const fmqa_problem *p, const fmqa_prefill_args *a, int64_t b,
                               int64_t q0, int32_t tq_all, int32_t tq, int32_t kv,
                               int64_t n_pages, double *o, double *lse, double *scores,
                               fmqa_err *err)
{
    int kv_cache = (p->flags & FMQA_FLAG_KV_CACHE) != 0;
    ref_attn_shape s = {1, tq, kv, p->num_q_heads, p->num_kv_heads, p->head_dim_qk,
                        p->head_dim_v, &kv, p->flags & FMQA_FLAG_CAUSAL, NULL, p->window,
                        p->sink_tokens, 0, 0, a->sm_scale, a->sinks, p->logit_softcap, 0}; /* no
                                                                          drafts */
    int64_t nq = (int64_t)tq * s.num_q_heads * s.head_dim_qk, nk = (int64_t)kv * s.num_kv_heads;
    double *q = malloc((size_t)(nq + nk * (s.head_dim_qk + s.head_dim_v)) * sizeof *q);
    if (!q)
        return fmqa_err_set(err, FMQA_ERR_OUT_OF_MEMORY, "ref_prefill: %lld KV rows", (long long)nk);
    double *k = q + nq, *v = k + nk * s.head_dim_qk;
    ref_cache_view qv = seq_view(plain_view(p->q_dtype, a->q, 0, a->q_stride_token,
                                            a->q_stride_head), 0, b, q0 + tq_all - tq);
    ref_cache_view kc = ARGS_CACHE_VIEW(p, a, k), vc = ARGS_CACHE_VIEW(p, a, v);
    if (!kv_cache)
        kc.flags = vc.flags = 0, kc.stride_batch = vc.stride_batch = 0;
    kc = seq_view(kc, kv_cache, b, q0), vc = seq_view(vc, kv_cache, b, q0);
    fmqa_status st = ref_cache_gather(&qv, 1, tq, s.num_q_heads, s.head_dim_qk, NULL, 0, q, err);
    if (st == FMQA_OK)
        st = ref_cache_gather(&kc, 1, kv, s.num_kv_heads, s.head_dim_qk, NULL, n_pages, k, err);
    if (st == FMQA_OK && !scores)
        st = ref_cache_gather(&vc, 1, kv, s.num_kv_heads, s.head_dim_v, NULL, n_pages, v, err);
    if (st == FMQA_OK && scores)
        st = add_scores(&s, q, k, p->kv_len, scores, err);
    else if (st == FMQA_OK)
        st = ref_attention(&s, q, k, v, o + q0 * s.num_q_heads * s.head_dim_v,
                           lse ? lse + q0 * s.num_q_heads : NULL, err);
    free(q);
    return st;
}

/* ref_prefill and ref_prefill_scores: o and lse, or the window's masses into
 * scores [B, Hkv, kv_len] (window w >= 1). */
static fmqa_status prefill(const fmqa_problem *p, const fmqa_prefill_args *a, int64_t n_pages,
                           double *o, double *lse, double *scores, int32_t w, fmqa_err *err)
{
    int kv_cache = (p->flags & FMQA_FLAG_KV_CACHE) != 0;
    if (kv_cache && !a->kv_lens)
        return BAD("ref_prefill: kv_lens is NULL with FMQA_FLAG_KV_CACHE");
    if (a->cu_seqlens_q[0] != 0)
        return BAD("ref_prefill: cu_seqlens_q[0] is %d, not 0", a->cu_seqlens_q[0]);
    fmqa_status st = FMQA_OK;
    for (int64_t b = 0; b < p->batch && st == FMQA_OK; b++) {
        int64_t q0 = a->cu_seqlens_q[b];
        int32_t tq = a->cu_seqlens_q[b + 1] - a->cu_seqlens_q[b];
        int32_t kv = kv_cache ? a->kv_lens[b] : tq;
        if (tq < 0 || tq > p->q_tokens || kv < tq || kv > (kv_cache ? p->kv_len : tq))
            return BAD("ref_prefill: sequence %lld has %d new tokens (at most q_tokens %d) and "
                       "%d positions (from that to kv_len %d)",
                       (long long)b, tq, p->q_tokens, kv, p->kv_len);
        int32_t rows = scores && w < tq ? w : tq;
        double *sc = scores ? scores + b * p->num_kv_heads * (int64_t)p->kv_len : NULL;
        if (tq > 0)
            st = prefill_seq(p, a, b, q0, tq, rows, kv, n_pages, o, lse, sc, err);
    }
    return st;
}

fmqa_status ref_prefill(const fmqa_problem *p, const fmqa_prefill_args *a, int64_t n_pages,
                        double *o, double *lse, fmqa_err *err)
{
    if (!p || !a || !o || !a->cu_seqlens_q)
        return BAD("ref_prefill: NULL problem, args, o or cu_seqlens_q");
    return prefill(p, a, n_pages, o, lse, NULL, 0, err);
}

fmqa_status ref_prefill_scores(const fmqa_problem *p, const fmqa_prefill_args *a,
                               int64_t n_pages, double *scores, fmqa_err *err)
{
    if (!p || !a || !scores || !a->cu_seqlens_q)
        return BAD("ref_prefill_scores: NULL problem, args, scores or cu_seqlens_q");
    if (a->scores_window < 1)
        return BAD("ref_prefill_scores: scores_window %d, need >= 1", a->scores_window);
    return prefill(p, a, n_pages, NULL, NULL, scores, a->scores_window, err);
}

fmqa_status ref_decode_scores(const fmqa_problem *p, const fmqa_decode_args *a, int64_t n_pages,
                              double *scores, fmqa_err *err)
{
    if (!p || !a || !scores)
        return BAD("ref_decode_scores: NULL problem, args or scores");
    if (p->flags & FMQA_FLAG_PAGE_CSR)
        return decode_csr(p, a, n_pages, NULL, NULL, scores, err);
    ref_attn_shape s = decode_shape(p, a);
    fmqa_status st = ref_attn_shape_check(&s, err);
    if (st != FMQA_OK)
        return st;
    ref_cache_view view = ARGS_CACHE_VIEW(p, a, k);
    int64_t slots = fmqa_cache_slots(p);
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

/* Writes the dense q [B, n, H, dq] back into the strided q of the args. */
static fmqa_status scatter_q(const ref_cache_view *qv, const ref_append_shape *s,
                             const double *q, int64_t dq, fmqa_err *err)
{
    fmqa_status st = FMQA_OK;
    for (int64_t r = 0; r < s->batch * s->n_new * s->num_q_heads && st == FMQA_OK; r++) {
        int64_t b = r / (s->n_new * s->num_q_heads), t = r / s->num_q_heads % s->n_new;
        st = store_row(qv, b, t, r % s->num_q_heads, q + r * dq, dq, 0, 1, err);
    }
    return st;
}

/* ref_append_args of a CSR page table: its 2-D table instead. */
static fmqa_status append_csr(const fmqa_problem *p, const fmqa_append_args *a, int64_t n_pages,
                              fmqa_err *err)
{
    fmqa_problem q = *p;
    fmqa_append_args b = *a;
    int32_t *table = NULL;
    q.flags &= ~FMQA_FLAG_PAGE_CSR;
    fmqa_status st = ref_csr_table(p->batch, p->page_size, max_pages_of(p), a->page_indptr,
                                   a->page_indices, NULL, n_pages, &table,
                                   &b.page_table_stride, NULL, err);
    for (int64_t i = 0; st == FMQA_OK && a->start_pos && i < p->batch; i++) {
        const int64_t last = (int64_t)a->start_pos[i] + p->q_tokens - 1;
        if (last / p->page_size >= a->page_indptr[i + 1] - a->page_indptr[i])
            st = BAD("ref_append_args: sequence %lld's new tokens reach position %lld, past its "
                     "%d pages in page_indptr", (long long)i, (long long)last,
                     a->page_indptr[i + 1] - a->page_indptr[i]);
    }
    if (st == FMQA_OK) {
        b.page_table = table;
        b.page_indptr = b.page_indices = NULL;
        st = ref_append_args(&q, &b, n_pages, err);
    }
    free(table);
    return st;
}

/* The new K rows [latent | rope part] of a latent append whose rope part is
 * held apart (k_pe_new): the latent from the k_new rows, the rope part from
 * the k_pe_new rows, into kn [B, n_new, head_dim_k]. */
static fmqa_status gather_latent_pe(const fmqa_problem *p, const fmqa_append_args *a,
                                    const ref_append_shape *s, double *kn, fmqa_err *err)
{
    const int64_t rows = s->batch * s->n_new, dl = s->head_dim_v, dr = s->head_dim_k - dl;
    double *lat = malloc((size_t)(rows * s->head_dim_k) * sizeof *lat), *pe = lat + rows * dl;
    if (!lat)
        return fmqa_err_set(err, FMQA_ERR_OUT_OF_MEMORY, "ref_append_args: %lld rows",
                            (long long)rows);
    ref_cache_view lv = plain_view(p->q_dtype, a->k_new, a->k_new_stride_batch,
                                   a->k_new_stride_token, a->k_new_stride_head);
    ref_cache_view pv = plain_view(p->q_dtype, a->k_pe_new, a->k_pe_new_stride_batch,
                                   a->k_pe_new_stride_token, 0);
    fmqa_status st = ref_cache_gather(&lv, s->batch, s->n_new, 1, dl, NULL, 0, lat, err);
    if (st == FMQA_OK)
        st = ref_cache_gather(&pv, s->batch, s->n_new, 1, dr, NULL, 0, pe, err);
    for (int64_t i = 0; st == FMQA_OK && i < rows; i++) {
        memcpy(kn + i * s->head_dim_k, lat + i * dl, (size_t)dl * sizeof *kn);
        memcpy(kn + i * s->head_dim_k + dl, pe + i * dr, (size_t)dr * sizeof *kn);
    }
    free(lat);
    return st;
}

fmqa_status ref_append_args(const fmqa_problem *p, const fmqa_append_args *a, int64_t n_pages,
                            fmqa_err *err)
{
    const int latent = p && (p->flags & FMQA_FLAG_LATENT);
    if (!p || !a || (a->k_new && !a->v_new && !latent) || (!a->k_new && !a->q))
        return BAD("ref_append_args: NULL problem, args, v_new, or k_new and q");
    if ((p->flags & FMQA_FLAG_PAGE_CSR) && a->k_new)
        return append_csr(p, a, n_pages, err);
    if ((p->flags & FMQA_FLAG_SLOT_MAPPING) && a->k_new && !a->slot_mapping)
        return BAD("ref_append_args: slot_mapping is NULL with FMQA_FLAG_SLOT_MAPPING");
    if (a->k_pe_new && (!latent || !a->k_new))
        return BAD("ref_append_args: k_pe_new without FMQA_FLAG_LATENT or without k_new");
    if (p->batch <= 0 || p->q_tokens <= 0 || p->num_q_heads <= 0 || p->num_kv_heads <= 0 ||
        p->head_dim_qk <= 0 || p->head_dim_v <= 0)
        return BAD("ref_append_args: problem sizes must be > 0");
    ref_append_shape s = {p->batch, p->q_tokens, p->num_q_heads, p->num_kv_heads, p->head_dim_qk,
                          p->head_dim_v, a->start_pos, p->rope, a->rope_theta, n_pages,
                          p->rope_dim, latent, a->rope_cos_sin, a->rope_cos_sin_stride,
                          a->rope_cos_sin_len,
                          (p->flags & FMQA_FLAG_SLOT_MAPPING) ? a->slot_mapping : NULL,
                          a->rope_pos};
    /* q rows: a latent cache's q is its rope part only */
    int64_t dq = latent ? fmqa_rope_extent(p) : s.head_dim_k, dvn = latent ? 0 : s.head_dim_v;
    const int q_only = !a->k_new; /* RoPE of q alone: no token is written */
    int64_t nt = s.batch * s.n_new, nq = a->q ? nt * s.num_q_heads * dq : 0;
    double *kn = malloc((size_t)(nt * s.num_kv_heads * (s.head_dim_k + dvn) + nq + 1) *
                        sizeof *kn);
    if (!kn)
        return fmqa_err_set(err, FMQA_ERR_OUT_OF_MEMORY, "ref_append_args: %lld tokens",
                            (long long)nt);
    double *vn = kn + nt * s.num_kv_heads * s.head_dim_k;
    double *q = a->q ? vn + nt * s.num_kv_heads * dvn : NULL;
    ref_cache_view knv = plain_view(p->q_dtype, a->k_new, a->k_new_stride_batch,
                                    a->k_new_stride_token, a->k_new_stride_head);
    ref_cache_view vnv = plain_view(p->q_dtype, a->v_new, a->v_new_stride_batch,
                                    a->v_new_stride_token, a->v_new_stride_head);
    ref_cache_view qv = plain_view(p->q_dtype, a->q, a->q_stride_batch, a->q_stride_token,
                                   a->q_stride_head);
    ref_cache_view kc = ARGS_CACHE_VIEW(p, a, k), vc = ARGS_CACHE_VIEW(p, a, v);
    fmqa_status st = q_only      ? FMQA_OK
                     : a->k_pe_new ? gather_latent_pe(p, a, &s, kn, err)
                                   : ref_cache_gather(&knv, s.batch, s.n_new, s.num_kv_heads,
                                                      s.head_dim_k, NULL, 0, kn, err);
    if (st == FMQA_OK && !latent && !q_only)
        st = ref_cache_gather(&vnv, s.batch, s.n_new, s.num_kv_heads, s.head_dim_v, NULL, 0, vn, err);
    if (st == FMQA_OK && q && dq > 0)
        st = ref_cache_gather(&qv, s.batch, s.n_new, s.num_q_heads, dq, NULL, 0, q, err);
    if (st == FMQA_OK)
        st = ref_append(&s, q_only ? NULL : kn, latent || q_only ? NULL : vn, q, &kc, &vc, err);
    if (st == FMQA_OK && q && dq > 0)
        st = scatter_q(&qv, &s, q, dq, err);
    free(kn);
    return st;
}
