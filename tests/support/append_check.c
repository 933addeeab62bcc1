/*
 * append_check.c -- see append_check.h.
 */
#include "append_check.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "ref.h"
#include "test_support.h"

#define POISON 0xA5
#define SQRT2 1.4142135623730951

/* ------------------------------------------------------------ host data */

static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s >> 12, *s ^= *s << 25, *s ^= *s >> 27;
    return *s * 2685821657736338717ull;
}

static double gaussian(uint64_t *s)
{
    double u = ((double)(rng_next(s) >> 11) + 0.5) / 9007199254740992.0;
    double v = (double)(rng_next(s) >> 11) / 9007199254740992.0;
    return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}

/* n rows of d values at row stride rs (elements), rest of the row zero. */
static void *random_rows(fmqa_dtype t, int64_t n, int64_t d, int64_t rs, uint64_t *seed)
{
    double *x = calloc((size_t)(n * rs), sizeof *x);
    void *out = calloc((size_t)(n * rs), fmqa_dtype_size(t));
    cr_assert(x && out);
    for (int64_t r = 0; r < n; r++)
        for (int64_t i = 0; i < d; i++)
            x[r * rs + i] = gaussian(seed);
    cr_assert_eq(ref_from_double(t, x, n * rs, out, NULL), FMQA_OK);
    free(x);
    return out;
}

/*
 * Plants exact rounding ties of the 8-bit encoding in every head row of rows
 * (n rows of `heads` head rows of d elements, row stride rs): with amax the
 * head row's max |x|, elements 1, 2, 5 and 6 become +-f amax, f = 1/2 for
 * int8 (x * 127 / amax = 63.5) and 3/4 for fp8 (x * 448 / amax = 336, the
 * midpoint of 320 and 352); for fp8 also 3 and 4, +-2^-16 amax (x * 448 /
 * amax = 7 * 2^-10, the midpoint of the subnormals 3 and 4 * 2^-9; exact in
 * bf16, near the tie in f16).  The stored scale fl32(amax / QMAX) is rarely
 * exact, so x / scale lies just off the tie while its float quotient is
 * usually the tie itself: append.cuh's tie correction decides those codes,
 * and the reference rounds the exact quotient.
 */
static void plant_ties(fmqa_dtype in, fmqa_dtype kv, void *rows, int64_t n, int64_t heads,
                       int64_t d, int64_t rs)
{
    const int fp8 = kv == FMQA_DTYPE_FP8_E4M3;
    const double f[6] = {fp8 ? 0.75 : 0.5, fp8 ? 0.75 : 0.5, fp8 ? 0x1p-16 : 0.5, fp8 ? 0x1p-16 : 0.5,
                         fp8 ? 0.75 : 0.5, fp8 ? 0.75 : 0.5};
    const int64_t at[6] = {1, 2, 3, 4, 5, 6};
    for (int64_t r = 0; r < n; r++)
        for (int64_t h = 0; h < heads; h++) {
            const int64_t base = r * rs + h * d;
            double x[1024], amax = 0.0;
            int64_t arg = 0;
            cr_assert_eq(ref_to_double(in, (const uint8_t *)rows + base * 2, d, x, NULL), FMQA_OK);
            for (int64_t i = 0; i < d; i++)
                if (fabs(x[i]) > amax)
                    amax = fabs(x[i]), arg = i;
            for (int k = 0; k < 6; k++)
                if (at[k] != arg)
                    x[at[k]] = (k % 2 ? -f[k] : f[k]) * amax;
            cr_assert_eq(ref_from_double(in, x, d, (uint8_t *)rows + base * 2, NULL), FMQA_OK);
        }
}

static void *copy_of(const void *src, size_t bytes)
{
    void *p = malloc(bytes ? bytes : 1);
    cr_assert(p);
    memcpy(p, src, bytes);
    return p;
}

static int is_8bit(fmqa_dtype t) { return t == FMQA_DTYPE_INT8 || t == FMQA_DTYPE_FP8_E4M3; }

/*
 * Error bound of a rotated value relative to its pair's norm at position pos:
 * append.cuh's angle bound (~1.5e-15 * pos + 2e-7 rad), the fp32 rotation
 * (sincospif within 1 ulp, two roundings: ~3e-7) and the reference's own
 * double angle (~1e-16 * pos).
 */
static double rope_err(double pos)
{
    return 1.5e-15 * pos + 5e-7;
}

/* Spacing of 16-bit values (f16 or bf16) at magnitude v. */
static double spacing16(fmqa_dtype t, double v)
{
    int e = v > 0 ? ilogb(v) : -1000;
    return t == FMQA_DTYPE_F16 ? fmax(ldexp(1.0, e - 10), 0x1p-24) : fmax(ldexp(1.0, e - 7), 0x1p-133);
}

/* Two 16-bit elements within one spacing plus tol of each other. */
static int close16(fmqa_dtype t, uint16_t a, uint16_t b, double tol)
{
    double va, vb;
    ref_to_double(t, &a, 1, &va, NULL);
    ref_to_double(t, &b, 1, &vb, NULL);
    return a == b || fabs(va - vb) <= spacing16(t, fmax(fabs(va), fabs(vb))) + tol;
}

/* max |x| of a row. */
static double row_amax(const double *x, int64_t d)
{
    double m = 0;
    for (int64_t i = 0; i < d; i++)
        m = fmax(m, fabs(x[i]));
    return m;
}

static double unscaled(fmqa_dtype t, uint8_t code)
{
    return t == FMQA_DTYPE_INT8 ? (double)(int8_t)code : ref_fp8_to_double(code);
}

/* ------------------------------------------------------------ setup */

static void side_init(append_side *s, size_t bytes, size_t scale_floats)
{
    s->bytes = bytes;
    s->scale_bytes = scale_floats * sizeof(float);
    s->init = malloc(bytes + 1); /* + 1: a latent cache's V side is empty */
    s->sinit = malloc(s->scale_bytes + 4);
    cr_assert(s->init && s->sinit);
    memset(s->init, POISON, bytes);
    memset(s->sinit, POISON, s->scale_bytes);
    s->ref = copy_of(s->init, bytes), s->out = copy_of(s->init, bytes);
    s->sref = copy_of(s->sinit, s->scale_bytes), s->sout = copy_of(s->sinit, s->scale_bytes);
}

/* A shuffled permutation of pages 2 .. n_blk-1: pages 0, 1 never used. */
static int32_t *page_table(int64_t n, uint64_t *seed)
{
    int32_t *table = malloc((size_t)n * sizeof *table);
    cr_assert(table);
    for (int64_t i = 0; i < n; i++)
        table[i] = (int32_t)(i + 2);
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)(rng_next(seed) % (uint64_t)(i + 1));
        int32_t t = table[i];
        table[i] = table[j], table[j] = t;
    }
    return table;
}

void append_case_problem(const append_case *c, fmqa_dtype in, fmqa_dtype kv, fmqa_rope rope,
                         fmqa_problem *p)
{
    fmqa_problem_init(p);
    p->op = FMQA_OP_APPEND;
    p->batch = c->batch, p->num_q_heads = c->heads, p->num_kv_heads = c->kv_heads;
    p->head_dim_qk = c->d, p->head_dim_v = c->dv, p->q_tokens = c->n_new, p->kv_len = c->kv_len;
    p->q_dtype = p->out_dtype = in, p->kv_dtype = kv;
    p->page_size = c->page, p->window = c->window, p->sink_tokens = c->sinks;
    p->rope = rope, p->flags = c->flags | (c->latent ? FMQA_FLAG_LATENT : 0u);
    p->rope_dim = rope == FMQA_ROPE_NONE ? 0 : c->rope_dim;
    if (is_8bit(kv))
        p->kv_scale_granularity = c->scale;
}

/* Fixed (per-head or per-tensor) scales: V's heads are this many floats apart. */
#define V_SCALE_HEAD_STRIDE 3
#define IGNORED_STRIDE 1000003 /* scale strides a granularity ignores */

static int fixed_scales(const append_run *r)
{
    return r->p.kv_scale_granularity != FMQA_KV_SCALE_TOKEN_HEAD;
}

/* Where the scale of head h of side side_i (0 K, 1 V) is with fixed scales. */
static int64_t fixed_scale_at(const append_run *r, int side_i, int64_t h)
{
    if (r->p.kv_scale_granularity == FMQA_KV_SCALE_TENSOR)
        return 0;
    return h * (side_i ? V_SCALE_HEAD_STRIDE : 1);
}


/* Positions a sequence's tokens reach: the table's length (rope_table 1), or
 * one less (rope_table 2: its last token has no angles). */
static int64_t table_len(const append_case *c)
{
    int64_t end = 0;
    for (int64_t b = 0; b < c->batch; b++)
        end = c->start[b] + c->n_new > end ? c->start[b] + c->n_new : end;
    return c->rope_table == 2 ? end - 1 : end;
}

/* Llama-3's frequency scaling of theta 10000 over rot elements, as a
 * [len, rot] table of cos then sin (see append_check.h). */
static float *rope_table(int64_t len, int64_t rot)
{
    float *t = malloc((size_t)(len * rot) * sizeof *t);
    cr_assert(t);
    for (int64_t pos = 0; pos < len; pos++)
        for (int64_t i = 0; i < rot / 2; i++) {
            double f = pow(10000.0, -2.0 * (double)i / (double)rot) / (i < rot / 4 ? 1.0 : 8.0);
            t[pos * rot + i] = (float)cos((double)pos * f);
            t[pos * rot + rot / 2 + i] = (float)sin((double)pos * f);
        }
    return t;
}

/* The case's RoPE on a row of d elements at pos, as ref_append does it: the
 * rotated part first, or last in a latent K row (a latent q row is all
 * rotated part). */
static void rope_as_call(const append_run *r, double *x, int64_t d, int64_t pos)
{
    if (r->rot == 0)
        return;
    double *part = x + (r->c->latent ? d - r->rot : 0);
    if (r->rope_cs)
        ref_rope_row_cs(r->rope, part, r->rot, r->rope_cs + pos * r->rot, NULL);
    else
        ref_rope_row(r->rope, part, r->rot, (double)pos, 10000.0, NULL);
}

/* The 2-D table [B, pages_seq] as CSR: indptr[B + 1] (from 1: indptr[0] need
 * not be 0), then the indices, the first unused (-1). */
static int32_t *csr_of(const int32_t *table, int64_t B, int64_t pages_seq, size_t *bytes)
{
    *bytes = (size_t)(B + 2 + B * pages_seq) * sizeof(int32_t);
    int32_t *x = malloc(*bytes), *ind = x + B + 1;
    cr_assert(x);
    ind[0] = -1;
    for (int64_t b = 0; b <= B; b++)
        x[b] = (int32_t)(1 + b * pages_seq);
    memcpy(ind + 1, table, (size_t)(B * pages_seq) * sizeof *ind);
    return x;
}

/* Slot of cache block blk, row tok, in a paged cache. */
static int32_t *slots_of(const append_run *r, size_t *bytes)
{
    const append_case *c = r->c;
    *bytes = (size_t)(c->batch * c->n_new) * sizeof(int32_t);
    int32_t *x = malloc(*bytes);
    cr_assert(x);
    for (int64_t b = 0; b < c->batch; b++)
        for (int64_t t = 0; t < c->n_new; t++) {
            const int64_t pos = c->start[b] + t, i = b * c->n_new + t;
            x[i] = i % 5 == 3 ? -1
                              : (int32_t)(r->table[b * r->pages_seq + pos / c->page] * c->page +
                                          pos % c->page);
        }
    return x;
}

/* Where token t of sequence b (slot `slot` by position) goes: block and row;
 * 0 when a slot mapping skips it. */
static int place_of(const append_run *r, int64_t b, int64_t t, int64_t slot, int64_t *blk,
                    int64_t *tok)
{
    const append_case *c = r->c;
    if (r->slots) {
        const int32_t s = r->slots[b * c->n_new + t];
        *blk = s / c->page, *tok = s % c->page;
        return s >= 0;
    }
    const int paged = (c->flags & FMQA_FLAG_PAGED) != 0;
    *blk = paged ? r->table[b * r->pages_seq + slot / c->page] : b;
    *tok = paged ? slot % c->page : slot;
    return 1;
}

/* 0 when the call must leave the token rotated at rpos alone (beyond the
 * table). */
static int written_pos(const append_run *r, int64_t rpos)
{
    return !r->rope_cs || rpos < r->rope_cs_len;
}

/* The position token t of sequence b is rotated at: start, or the case's
 * rope_pos (a compacted cache). */
static int64_t rope_at(const append_run *r, int64_t b, int64_t t)
{
    return (r->c->rope_pos ? r->c->rope_pos[b] : r->c->start[b]) + t;
}

/* Strides: inputs with the token stride padded by 16 elements, caches of
 * blk_rows rows of Hk heads per block (sequence or page). */
static void make_strides(append_run *r, int64_t kst, int64_t vst, int64_t qst)
{
    const append_case *c = r->c;
    const int64_t N = c->n_new, Hk = c->kv_heads;
    fmqa_append_args *a = &r->args;
    memset(a, 0, sizeof *a);
    a->k_new_stride_batch = N * kst, a->k_new_stride_token = kst, a->k_new_stride_head = c->d;
    a->v_new_stride_batch = N * vst, a->v_new_stride_token = vst, a->v_new_stride_head = c->dv;
    a->q_stride_batch = N * qst, a->q_stride_token = qst, a->q_stride_head = r->dq;
    a->k_stride_batch = r->blk_rows * Hk * c->d, a->k_stride_token = Hk * c->d;
    a->k_stride_head = c->d;
    a->v_stride_batch = r->blk_rows * Hk * c->dv, a->v_stride_token = Hk * c->dv;
    a->v_stride_head = c->dv;
    a->k_scale_stride_batch = a->v_scale_stride_batch = r->blk_rows * Hk;
    a->k_scale_stride_token = a->v_scale_stride_token = Hk;
    a->k_scale_stride_head = a->v_scale_stride_head = 1;
    if (fixed_scales(r)) {
        const int tensor = r->p.kv_scale_granularity == FMQA_KV_SCALE_TENSOR;
        a->k_scale_stride_batch = a->v_scale_stride_batch = IGNORED_STRIDE;
        a->k_scale_stride_token = a->v_scale_stride_token = IGNORED_STRIDE;
        a->k_scale_stride_head = tensor ? IGNORED_STRIDE : 1;
        a->v_scale_stride_head = tensor ? IGNORED_STRIDE : V_SCALE_HEAD_STRIDE;
    }
    if (c->flags & (FMQA_FLAG_PAGE_CSR | FMQA_FLAG_SLOT_MAPPING)) /* K HND */
        a->k_stride_token = c->d, a->k_stride_head = r->blk_rows * c->d,
        a->k_scale_stride_token = 1, a->k_scale_stride_head = r->blk_rows;
    a->page_table_stride = r->pages_seq;
    a->rope_theta = r->rope_cs ? 0.0f : 10000.0f;
    a->rope_cos_sin_stride = r->rope_cs ? r->rot : 0;
    a->rope_cos_sin_len = r->rope_cs ? r->rope_cs_len : 0;
}

/* The rope part of every k_new row (n rows of stride kst) copied to r->k_pe
 * (rows of stride pst) and poisoned in r->k_lat, a copy of k_new: the latent
 * the call gets in k_new rows. */
static void split_rope_part(append_run *r, fmqa_dtype in, int64_t kst, int64_t pst)
{
    const append_case *c = r->c;
    const int64_t n = c->batch * c->n_new, dr = c->d - c->dv;
    const size_t ie = fmqa_dtype_size(in);
    r->k_lat = copy_of(r->k_new, r->k_new_bytes);
    r->k_pe = malloc((size_t)(n * pst) * ie);
    cr_assert(r->k_pe);
    memset(r->k_pe, 0xff, (size_t)(n * pst) * ie);
    for (int64_t i = 0; i < n; i++) {
        uint8_t *lat = (uint8_t *)r->k_lat + (size_t)(i * kst + c->dv) * ie;
        memcpy((uint8_t *)r->k_pe + (size_t)(i * pst) * ie, lat, (size_t)dr * ie);
        memset(lat, 0xff, (size_t)dr * ie);
    }
}

/* A call that rotates q alone passes no tokens and no caches. */
static void no_tokens(fmqa_append_args *a)
{
    a->k_new = a->v_new = NULL;
    a->k_pe_new = NULL;
    a->k = a->v = NULL;
    a->k_scale = a->v_scale = NULL;
    a->page_table = NULL;
}

/* The CSR table or slot mapping of the run into args a (at csr, slots). */
static void page_args(const append_run *r, fmqa_append_args *a, const int32_t *csr,
                      const int32_t *slots)
{
    if (!r->csr && !r->slots)
        return;
    a->page_table = NULL, a->page_table_stride = 0;
    if (r->csr)
        a->page_indptr = csr, a->page_indices = csr + r->c->batch + 1;
    a->slot_mapping = r->slots ? slots : NULL;
}

void append_run_init(append_run *r, const append_case *c, fmqa_dtype in, fmqa_dtype kv,
                     fmqa_rope rope, int rope_q)
{
    memset(r, 0, sizeof *r);
    r->c = c, r->in = in, r->kv = kv, r->rope = rope, r->rope_q = rope_q;
    snprintf(r->name, sizeof r->name, "%s in=%s kv=%s rope=%d q=%d%s%s%s", c->name,
             fmqa_dtype_name(in), fmqa_dtype_name(kv), (int)rope, rope_q,
             is_8bit(kv) && c->scale ? " scale=" : "",
             is_8bit(kv) && c->scale ? fmqa_kv_scale_name(c->scale) : "",
             c->rope_pos ? " rope_pos" : "");
    uint64_t seed = fmqa_test_seed(r->name) | 1;
    const int paged = (c->flags & FMQA_FLAG_PAGED) != 0, ring = (c->flags & FMQA_FLAG_RING) != 0;
    const int64_t B = c->batch, N = c->n_new, Hk = c->kv_heads, H = c->heads;
    const size_t ie = fmqa_dtype_size(in), ke = fmqa_dtype_size(kv);
    append_case_problem(c, in, kv, rope, &r->p);
    r->rot = fmqa_rope_extent(&r->p);
    r->dq = c->latent ? r->rot : c->d;
    if (r->rot > 0 && c->rope_table) {
        r->rope_cs_len = table_len(c);
        r->rope_cs = rope_table(r->rope_cs_len, r->rot);
    }

    const int64_t kst = Hk * c->d + 16, vst = c->latent ? 0 : Hk * c->dv + 16, qst = H * r->dq;
    r->k_new = random_rows(in, B * N, Hk * c->d, kst, &seed);
    r->v_new = c->latent ? NULL : random_rows(in, B * N, Hk * c->dv, vst, &seed);
    r->q = random_rows(in, B * N, qst, qst ? qst : 1, &seed);
    if (is_8bit(kv)) {
        plant_ties(in, kv, r->k_new, B * N, Hk, c->d, kst);
        if (!c->latent)
            plant_ties(in, kv, r->v_new, B * N, Hk, c->dv, vst);
    }
    r->k_new_bytes = (size_t)(B * N * kst) * ie, r->v_new_bytes = (size_t)(B * N * vst) * ie;
    const int64_t pst = c->d - c->dv + 24; /* rope part apart: padded rows */
    if (c->latent == 2)
        split_rope_part(r, in, kst, pst);
    r->q_bytes = (size_t)(B * N * qst) * ie;
    r->q_ref = copy_of(r->q, r->q_bytes), r->q_out = copy_of(r->q, r->q_bytes);

    const int64_t slots_seq = ring ? c->sinks + c->window : c->kv_len;
    r->pages_seq = paged ? (slots_seq + c->page - 1) / c->page : 0;
    r->n_blk = paged ? B * r->pages_seq + 2 : B, r->blk_rows = paged ? c->page : slots_seq;
    r->table = paged ? page_table(B * r->pages_seq, &seed) : NULL;
    if (c->flags & FMQA_FLAG_PAGE_CSR)
        r->csr = csr_of(r->table, B, r->pages_seq, &r->csr_bytes);
    if (c->flags & FMQA_FLAG_SLOT_MAPPING)
        r->slots = slots_of(r, &r->slots_bytes);
    const size_t sfl = !is_8bit(kv)       ? 0
                       : fixed_scales(r) ? (size_t)(Hk * V_SCALE_HEAD_STRIDE)
                                         : (size_t)(r->n_blk * r->blk_rows * Hk);
    side_init(&r->k, (size_t)(r->n_blk * r->blk_rows * Hk * c->d) * ke, sfl);
    /* a latent cache has no V: an empty side */
    side_init(&r->v, c->latent ? 0 : (size_t)(r->n_blk * r->blk_rows * Hk * c->dv) * ke,
              c->latent ? 0 : sfl);
    make_strides(r, kst, vst, qst);
    if (c->latent == 2)
        r->args.k_pe_new_stride_batch = N * pst, r->args.k_pe_new_stride_token = pst;
    if (is_8bit(kv) && fixed_scales(r)) /* the caller's scales: some values saturate */
        for (int side_i = 0; side_i < 2; side_i++)
            for (int64_t h = 0; h < Hk; h++) {
                append_side *s = side_i ? &r->v : &r->k;
                const int64_t at = fixed_scale_at(r, side_i, h);
                const float sc = (float)((0.5 + 0.25 * side_i + 0.125 * (double)h) /
                                         (kv == FMQA_DTYPE_INT8 ? 127.0 : 448.0));
                s->sinit[at] = s->sref[at] = s->sout[at] = sc;
            }

    cr_assert(rope_q || !c->q_only, "%s: a q_only call needs q", r->name);
    fmqa_append_args ha = r->args;
    ha.k_new = r->k_new, ha.v_new = r->v_new, ha.q = rope_q ? r->q_ref : NULL;
    ha.k = r->k.ref, ha.v = c->latent ? NULL : r->v.ref;
    ha.k_scale = sfl ? r->k.sref : NULL, ha.v_scale = sfl && !c->latent ? r->v.sref : NULL;
    ha.start_pos = c->start, ha.page_table = r->table, ha.rope_cos_sin = r->rope_cs;
    page_args(r, &ha, r->csr, r->slots);
    if (c->latent == 2)
        ha.k_new = r->k_lat, ha.k_pe_new = r->k_pe;
    ha.rope_pos = c->rope_pos;
    if (c->q_only)
        no_tokens(&ha);
    fmqa_err err;
    cr_assert_eq(ref_append_args(&r->p, &ha, paged ? r->n_blk : 0, &err), FMQA_OK, "%s: %s",
                 r->name, err.msg);
}

fmqa_append_args append_run_args(const append_run *r, const append_bufs *b)
{
    fmqa_append_args a = r->args;
    a.k_new = b->k_new, a.v_new = r->c->latent ? NULL : b->v_new;
    a.q = r->rope_q ? b->q : NULL;
    a.k = b->k, a.v = r->c->latent ? NULL : b->v;
    a.k_scale = r->k.scale_bytes ? b->k_scale : NULL;
    a.v_scale = r->v.scale_bytes ? b->v_scale : NULL;
    a.start_pos = b->start_pos, a.page_table = r->table ? b->page_table : NULL;
    a.rope_cos_sin = r->rope_cs ? b->rope_cos_sin : NULL;
    page_args(r, &a, b->csr, b->slots);
    a.rope_pos = r->c->rope_pos ? b->rope_pos : NULL;
    if (r->c->q_only)
        no_tokens(&a);
    return a;
}

fmqa_append_args append_run_host_args(append_run *r)
{
    const append_bufs b = {r->c->latent == 2 ? r->k_lat : r->k_new, r->v_new, r->q_out, r->k.out,
                           r->v.out, r->k.sout, r->v.sout, r->c->start, r->table, r->rope_cs,
                           r->csr, r->slots, r->c->rope_pos};
    fmqa_append_args a = append_run_args(r, &b);
    if (r->c->latent == 2 && !r->c->q_only)
        a.k_pe_new = r->k_pe;
    return a;
}

/* ------------------------------------------------------------ comparison */

typedef struct row_ctx {
    fmqa_dtype kv;
    double err;     /* rope_err(pos) of the row being compared, 0 unrotated */
    int64_t ulp_diffs, code_diffs, elems;
} row_ctx;

/* Compares one written row; x is the reference's unrounded row (for ties) and
 * amax_in the largest |input| of the row (sqrt(2) amax_in bounds a pair's norm). */
static void compare_row(row_ctx *rc, const char *what, const uint8_t *out, const uint8_t *ref,
                        int64_t d, float oscale, float rscale, const double *x, double amax_in)
{
    rc->elems += d;
    if (!is_8bit(rc->kv)) {
        for (int64_t i = 0; i < d; i++) {
            uint16_t a, b;
            memcpy(&a, out + 2 * i, 2);
            memcpy(&b, ref + 2 * i, 2);
            cr_assert(close16(rc->kv, a, b, rc->err * SQRT2 * amax_in),
                      "%s[%lld]: out 0x%04x ref 0x%04x", what, (long long)i, a, b);
            rc->ulp_diffs += a != b;
        }
        return;
    }
    const double stol = rc->err > 0 ? (SQRT2 * rc->err + 0x1p-22) * rscale : 0.0;
    cr_assert(fabs((double)oscale - rscale) <= stol, "%s: scale out %.9g ref %.9g", what, oscale,
              rscale);
    const double qmax = rc->kv == FMQA_DTYPE_INT8 ? 127.0 : 448.0;
    for (int64_t i = 0; i < d; i++) {
        if (out[i] == ref[i])
            continue;
        double va = unscaled(rc->kv, out[i]), vb = unscaled(rc->kv, ref[i]);
        double t = rscale > 0 ? x[i] / rscale : 0.0, mid = (va + vb) / 2;
        cr_assert(rc->err > 0 && fabs(t - mid) <= qmax * (3.0 * rc->err + 0x1p-22),
                  "%s[%lld]: code out %g ref %g for x/scale %.9g: not a rounding tie", what,
                  (long long)i, va, vb, t);
        rc->code_diffs++;
    }
}

/* Rotated q row r at position pos against the reference (in: its dtype, q0:
 * the input row, x: scratch of d doubles): the bound depends on both. */
static void check_q_row(const char *name, fmqa_dtype in, int64_t r, int64_t pos, int64_t d,
                        const uint8_t *q0, const uint8_t *out, const uint8_t *ref, double *x)
{
    cr_assert_eq(ref_to_double(in, q0, d, x, NULL), FMQA_OK);
    const double tol = rope_err((double)pos) * SQRT2 * row_amax(x, d);
    for (int64_t i = 0; i < d; i++) {
        uint16_t a, b;
        memcpy(&a, out + 2 * i, 2);
        memcpy(&b, ref + 2 * i, 2);
        cr_assert(close16(in, a, b, tol), "%s: q row %lld [%lld] out 0x%04x ref 0x%04x", name,
                  (long long)r, (long long)i, a, b);
    }
}

/* Bytes no written row covers (mark 0) still hold the poison. */
static void check_untouched(const char *name, const char *which, const append_side *s,
                            const uint8_t *mark, const uint8_t *smark)
{
    for (size_t i = 0; i < s->bytes; i++)
        cr_assert(mark[i] || s->out[i] == POISON, "%s: %s byte %zu written (0x%02x)", name, which,
                  i, s->out[i]);
    for (size_t i = 0; i < s->scale_bytes / sizeof(float); i++)
        cr_assert(smark[i] || memcmp(&s->sout[i], &s->sinit[i], 4) == 0,
                  "%s: %s scale %zu written", name, which, i);
}

/* Compares the K or V row of (b, t, h) at cache block blk, row tok, and marks
 * its bytes. */
static void check_kv_row(const append_run *r, int side_i, row_ctx *rc, int64_t b, int64_t t,
                         int64_t h, int64_t pos, int64_t blk, int64_t tok, uint8_t *mark,
                         uint8_t *smark, double *x)
{
    const append_case *c = r->c;
    const append_side *s = side_i ? &r->v : &r->k;
    const int64_t d = side_i ? c->dv : c->d;
    const int64_t ie = (int64_t)fmqa_dtype_size(r->in), ke = (int64_t)fmqa_dtype_size(r->kv);
    const int64_t st = side_i ? r->args.v_new_stride_token : r->args.k_new_stride_token;
    const fmqa_append_args *a = &r->args;
    const int64_t off = side_i ? (blk * a->v_stride_batch + tok * a->v_stride_token +
                                  h * a->v_stride_head) * ke
                               : (blk * a->k_stride_batch + tok * a->k_stride_token +
                                  h * a->k_stride_head) * ke;
    const int64_t soff =
        fixed_scales(r) ? fixed_scale_at(r, side_i, h)
        : side_i ? blk * a->v_scale_stride_batch + tok * a->v_scale_stride_token +
                       h * a->v_scale_stride_head
                 : blk * a->k_scale_stride_batch + tok * a->k_scale_stride_token +
                       h * a->k_scale_stride_head;
    const void *src = (const uint8_t *)(side_i ? r->v_new : r->k_new) +
                      ((b * c->n_new + t) * st + h * d) * ie;
    cr_assert_eq(ref_to_double(r->in, src, d, x, NULL), FMQA_OK);
    const double amax_in = row_amax(x, d);
    const int64_t rpos = rope_at(r, b, t);
    (void)pos;
    if (!side_i)
        rope_as_call(r, x, d, rpos);
    /* a table's angles are the call's own: only the fp32 rotation errs */
    rc->err = !side_i && r->rot > 0 ? rope_err(r->rope_cs ? 0.0 : (double)rpos) : 0.0;
    char what[200];
    snprintf(what, sizeof what, "%s %c b%lld t%lld h%lld", r->name, side_i ? 'V' : 'K',
             (long long)b, (long long)t, (long long)h);
    const int q8 = s->scale_bytes != 0;
    compare_row(rc, what, s->out + off, s->ref + off, d, q8 ? s->sout[soff] : 0,
                q8 ? s->sref[soff] : 0, x, amax_in);
    memset(mark + off, 1, (size_t)(d * ke));
    if (q8 && !fixed_scales(r)) /* fixed scales are never written */
        smark[soff] = 1;
}

/* q: rotated like K when asked, untouched otherwise. */
static void check_q(const append_run *r, double *x)
{
    const append_case *c = r->c;
    const int64_t N = c->n_new, H = c->heads, rows = c->batch * N * H, rb = r->dq * 2;
    for (int64_t i = 0; i < rows; i++) {
        const uint8_t *q0 = (const uint8_t *)r->q + i * rb;
        const uint8_t *out = (const uint8_t *)r->q_out + i * rb;
        const int64_t rpos = rope_at(r, i / (N * H), i / H % N);
        if (r->rope_q && r->rope != FMQA_ROPE_NONE && written_pos(r, rpos))
            check_q_row(r->name, r->in, i, rpos, r->dq, q0, out,
                        (const uint8_t *)r->q_ref + i * rb, x);
        else
            cr_assert_eq(memcmp(out, q0, (size_t)rb), 0, "%s: q row %lld changed", r->name,
                         (long long)i);
    }
}

void append_run_check(const append_run *r)
{
    const append_case *c = r->c;
    const int ring = (c->flags & FMQA_FLAG_RING) != 0;
    uint8_t *mark[2], *smark[2];
    for (int i = 0; i < 2; i++) {
        const append_side *s = i ? &r->v : &r->k;
        mark[i] = calloc(s->bytes + 1, 1);
        smark[i] = calloc(s->scale_bytes / sizeof(float) + 1, 1);
        cr_assert(mark[i] && smark[i]);
    }
    row_ctx rc[2] = {{r->kv, 0, 0, 0, 0}, {r->kv, 0, 0, 0, 0}};
    double *x = malloc((size_t)(c->d > c->dv ? c->d : c->dv) * sizeof *x);
    cr_assert(x);
    /* Every row that must be written, in call order. */
    for (int64_t b = 0; b < c->batch; b++)
        for (int64_t t = 0; t < c->n_new; t++) {
            int64_t pos = c->start[b] + t, slot = pos;
            if (!written_pos(r, rope_at(r, b, t)) || c->q_only)
                continue; /* no angles for it in the table, or no token */
            if (ring && pos >= c->sinks) {
                if (t + c->window < c->n_new)
                    continue; /* overwritten by token t + window */
                slot = c->sinks + (pos - c->sinks) % c->window;
            }
            int64_t blk, tok;
            if (!place_of(r, b, t, slot, &blk, &tok))
                continue; /* slot -1: not written */
            for (int64_t h = 0; h < c->kv_heads; h++)
                for (int side_i = 0; side_i < (c->latent ? 1 : 2); side_i++)
                    check_kv_row(r, side_i, &rc[side_i], b, t, h, pos, blk, tok, mark[side_i],
                                 smark[side_i], x);
        }
    check_untouched(r->name, "K cache", &r->k, mark[0], smark[0]);
    check_untouched(r->name, "V cache", &r->v, mark[1], smark[1]);
    /* V is never rotated: one rounding of an exact value, like unrotated K
     * (compare_row asserts equal codes and scales for 8-bit caches). */
    const row_ctx *rk = &rc[0], *rv = &rc[1];
    cr_expect_eq(rv->ulp_diffs, 0, "%s: V differs from the reference", r->name);
    if (r->rope == FMQA_ROPE_NONE)
        cr_expect_eq(rk->ulp_diffs, 0, "%s: unrotated K differs from the reference", r->name);
    else
        cr_expect(rk->ulp_diffs <= rk->elems / 20 && rk->code_diffs <= rk->elems / 1000,
                  "%s: %lld one-ulp and %lld code differences in %lld K values", r->name,
                  (long long)rk->ulp_diffs, (long long)rk->code_diffs, (long long)rk->elems);
    check_q(r, x);
    fprintf(stderr, "append %-60s PASS  K 1-ulp %lld, codes at ties K %lld V %lld of %lld\n",
            r->name, (long long)rk->ulp_diffs, (long long)rk->code_diffs,
            (long long)rv->code_diffs, (long long)(rk->elems + rv->elems));
    for (int i = 0; i < 2; i++)
        free(mark[i]), free(smark[i]);
    free(x);
}

static void side_free(append_side *s)
{
    free(s->init), free(s->ref), free(s->out);
    free(s->sinit), free(s->sref), free(s->sout);
}

void append_run_free(append_run *r)
{
    side_free(&r->k), side_free(&r->v);
    free(r->k_new), free(r->v_new), free(r->q), free(r->q_ref), free(r->q_out), free(r->table);
    free(r->k_lat), free(r->k_pe);
    free(r->rope_cs), free(r->csr), free(r->slots);
}
