/*
 * test_spec_decode.c -- speculative decoding end to end at the reference level,
 * as engines run it (the protocol of fastmqa.h, fmqa_decode): append drafts,
 * verify them with a decode (causal or tree mask), accept a random number
 * (lowering kv_lens; a tree's accepted path committed by appending it again),
 * append the next token and decode it; many steps, on contiguous, paged, ring
 * and paged ring caches in every cache dtype.  The cache is written by
 * ref_append_args and read by ref_decode through the public argument structs,
 * exactly as the GPU calls address it; every decode is compared with exact
 * attention (ref_attention) over the true accepted history, kept separately as
 * dense rows holding what the cache stores for each position.  A ring gets
 * draft_slots = MAX_DRAFTS - 1, so no draft ever overwrites a position a later
 * query sees.  The first test is the failure the issue names.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "gen.h"
#include "ref.h"
#include "test_support.h"

enum { B = 2, HQ = 4, HKV = 2, D = 16, MAX_DRAFTS = 4, T = 400 };

/* One cache and the dense truth of what it must hold. */
typedef struct spec_cache {
    fmqa_problem p;          /* the cache's problem (op and q_tokens set per call) */
    void *k, *v;             /* [outer][slot or page row][HKV][D]                  */
    float *ks, *vs;          /* [outer][slot or page row][HKV]                     */
    int32_t *table;          /* paged: [B][per_seq], a shuffled page order         */
    int64_t per_seq, rows, n_pages;
    double *hk, *hv;         /* truth: [B][T][HKV][D], what position j holds       */
    int32_t len[B];          /* accepted lengths                                   */
    ref_rng r;
} spec_cache;

static int is_8bit(fmqa_dtype t) { return t == FMQA_DTYPE_INT8 || t == FMQA_DTYPE_FP8_E4M3; }

static void cache_init(spec_cache *c, const char *spec)
{
    memset(c, 0, sizeof *c);
    fmqa_err err;
    cr_assert_eq(gen_problem_parse(spec, &c->p, &err), FMQA_OK, "%s: %s", spec, err.msg);
    ref_rng_seed(&c->r, fmqa_test_seed(spec));
    const int paged = (c->p.flags & FMQA_FLAG_PAGED) != 0;
    const int64_t slots = fmqa_cache_slots(&c->p);
    c->rows = paged ? c->p.page_size : slots;
    c->per_seq = paged ? (slots + c->rows - 1) / c->rows : 1;
    const int64_t outer = paged ? B * c->per_seq : B, n = outer * c->rows * HKV;
    c->n_pages = paged ? outer : 0;
    size_t es = fmqa_dtype_size(c->p.kv_dtype);
    c->k = calloc((size_t)(n * D), es), c->v = calloc((size_t)(n * D), es);
    c->ks = calloc((size_t)n, sizeof *c->ks), c->vs = calloc((size_t)n, sizeof *c->vs);
    c->hk = malloc(sizeof(double) * B * T * HKV * D), c->hv = malloc(sizeof(double) * B * T * HKV * D);
    cr_assert(c->k && c->v && c->ks && c->vs && c->hk && c->hv);
    if (paged) {
        c->table = malloc(sizeof *c->table * (size_t)outer);
        for (int64_t i = 0; i < outer; i++)
            c->table[i] = (int32_t)i;
        for (int64_t i = outer - 1; i > 0; i--) {
            int64_t j = (int64_t)(ref_rng_next(&c->r) % (uint64_t)(i + 1));
            int32_t t = c->table[i];
            c->table[i] = c->table[j], c->table[j] = t;
        }
    }
}

/* The cache fields of fmqa_decode_args and fmqa_append_args (same names). */
#define SET_CACHE(a, c)                                                                   \
    do {                                                                                  \
        (a)->k = (c)->k, (a)->v = (c)->v;                                                 \
        (a)->k_stride_head = (a)->v_stride_head = D;                                      \
        (a)->k_stride_token = (a)->v_stride_token = HKV * D;                              \
        (a)->k_stride_batch = (a)->v_stride_batch = (c)->rows * HKV * D;                  \
        if (is_8bit((c)->p.kv_dtype)) {                                                   \
            (a)->k_scale = (c)->ks, (a)->v_scale = (c)->vs;                               \
            (a)->k_scale_stride_head = (a)->v_scale_stride_head = 1;                      \
            (a)->k_scale_stride_token = (a)->v_scale_stride_token = HKV;                  \
            (a)->k_scale_stride_batch = (a)->v_scale_stride_batch = (c)->rows * HKV;      \
        }                                                                                 \
        (a)->page_table = (c)->table, (a)->page_table_stride = (c)->per_seq;              \
    } while (0)

/* What the cache stores for row x: the value the dtype keeps (16-bit: rounded;
 * 8-bit: quantized with the row's scale, then dequantized). */
static void stored(fmqa_dtype dt, const double *x, double *out)
{
    if (!is_8bit(dt)) {
        for (int i = 0; i < D; i++)
            out[i] = ref_round_to(dt, x[i]);
        return;
    }
    uint8_t q[D];
    float scale;
    cr_assert_eq(ref_quantize_row(dt, x, D, q, &scale, NULL), FMQA_OK);
    for (int i = 0; i < D; i++)
        out[i] = ref_dequantize(dt, q, i, scale);
}

/* Appends n rows per sequence at start[b] from kn, vn [B][n][HKV][D] (f16
 * values) and records them in the truth. */
static void append_rows(spec_cache *c, const int32_t *start, int n, const double *kn,
                        const double *vn)
{
    fmqa_problem p = c->p;
    p.op = FMQA_OP_APPEND, p.q_tokens = n, p.flags &= FMQA_FLAG_PAGED | FMQA_FLAG_RING;
    uint16_t *k16 = malloc(sizeof *k16 * B * n * HKV * D), *v16 = malloc(sizeof *v16 * B * n * HKV * D);
    cr_assert(k16 && v16);
    cr_assert_eq(ref_from_double(FMQA_DTYPE_F16, kn, (int64_t)B * n * HKV * D, k16, NULL), FMQA_OK);
    cr_assert_eq(ref_from_double(FMQA_DTYPE_F16, vn, (int64_t)B * n * HKV * D, v16, NULL), FMQA_OK);
    fmqa_append_args a;
    memset(&a, 0, sizeof a);
    a.k_new = k16, a.v_new = v16;
    a.k_new_stride_head = a.v_new_stride_head = D;
    a.k_new_stride_token = a.v_new_stride_token = HKV * D;
    a.k_new_stride_batch = a.v_new_stride_batch = (int64_t)n * HKV * D;
    SET_CACHE(&a, c);
    a.start_pos = start;
    fmqa_err err;
    cr_assert_eq(ref_append_args(&p, &a, c->n_pages, &err), FMQA_OK, "%s", err.msg);
    for (int b = 0; b < B; b++)
        for (int t = 0; t < n; t++)
            for (int h = 0; h < HKV; h++) {
                int64_t src = ((int64_t)(b * n + t) * HKV + h) * D;
                int64_t dst = (((int64_t)b * T + start[b] + t) * HKV + h) * D;
                stored(c->p.kv_dtype, kn + src, c->hk + dst);
                stored(c->p.kv_dtype, vn + src, c->hv + dst);
            }
    free(k16);
    free(v16);
}

/* n fresh rows per sequence appended at the accepted lengths (not accepted
 * yet); OUT: the rows, kept for a tree's commit. */
static void append_fresh(spec_cache *c, int n, double *kn, double *vn)
{
    ref_rng_fill(&c->r, kn, (int64_t)B * n * HKV * D, 1.0, FMQA_DTYPE_F16);
    ref_rng_fill(&c->r, vn, (int64_t)B * n * HKV * D, 1.0, FMQA_DTYPE_F16);
    append_rows(c, c->len, n, kn, vn);
}

/* Decodes n query tokens at lengths len[b] + n (the last n positions) through
 * the cache and compares with exact attention over the truth. */
static void decode_check(spec_cache *c, int n, const uint64_t *tree, int step)
{
    fmqa_problem p = c->p;
    p.op = FMQA_OP_DECODE, p.q_tokens = n;
    p.flags |= FMQA_FLAG_LSE | (tree ? FMQA_FLAG_TREE_MASK : FMQA_FLAG_CAUSAL);
    int32_t lens[B];
    for (int b = 0; b < B; b++)
        lens[b] = c->len[b] + n;
    double q[B * MAX_DRAFTS * HQ * D];
    uint16_t q16[B * MAX_DRAFTS * HQ * D];
    ref_rng_fill(&c->r, q, (int64_t)B * n * HQ * D, 1.0, FMQA_DTYPE_F16);
    cr_assert_eq(ref_from_double(FMQA_DTYPE_F16, q, (int64_t)B * n * HQ * D, q16, NULL), FMQA_OK);
    fmqa_decode_args a;
    memset(&a, 0, sizeof a);
    a.q = q16, a.q_stride_head = D, a.q_stride_token = HQ * D, a.q_stride_batch = (int64_t)n * HQ * D;
    SET_CACHE(&a, c);
    a.kv_lens = lens, a.tree_mask = tree;
    double o[B * MAX_DRAFTS * HQ * D], lse[B * MAX_DRAFTS * HQ], eo[B * MAX_DRAFTS * HQ * D],
        else_[B * MAX_DRAFTS * HQ];
    fmqa_err err;
    cr_assert_eq(ref_decode(&p, &a, c->n_pages, o, lse, &err), FMQA_OK, "step %d: %s", step, err.msg);
    /* The truth: every position it holds, the window alone deciding (no ring). */
    ref_attn_shape s = {B, n, T, HQ, HKV, D, D, lens, p.flags & ~FMQA_FLAG_RING, tree,
                        p.window, p.sink_tokens, 0, 0, 0.0, NULL, 0.0, 0};
    cr_assert_eq(ref_attention(&s, q, c->hk, c->hv, eo, else_, &err), FMQA_OK, "%s", err.msg);
    for (int i = 0; i < B * n * HQ * D; i++)
        cr_assert(fabs(o[i] - eo[i]) <= 1e-12, "step %d (q_tokens %d, lens %d %d): o[%d] %.17g, "
                  "exact over the accepted history %.17g", step, n, lens[0], lens[1], i, o[i], eo[i]);
    for (int i = 0; i < B * n * HQ; i++)
        cr_assert(fabs(lse[i] - else_[i]) <= 1e-12, "step %d: lse[%d] %.17g vs %.17g", step, i,
                  lse[i], else_[i]);
}

/* A random tree over n drafts: draft t sees itself and a random subset of the
 * earlier drafts; the accepted path is a random increasing subset of length a. */
static void random_tree(ref_rng *r, int n, uint64_t *mask)
{
    for (int b = 0; b < B; b++)
        for (int t = 0; t < n; t++)
            mask[b * n + t] = (ref_rng_next(r) & ((1ull << t) - 1)) | 1ull << t;
}

/* One engine step: draft, verify, accept, commit, then the next token. */
static void spec_step(spec_cache *c, int step)
{
    double kn[B * MAX_DRAFTS * HKV * D], vn[B * MAX_DRAFTS * HKV * D];
    const int n = 1 + (int)(ref_rng_next(&c->r) % MAX_DRAFTS), tree = step % 2;
    uint64_t mask[B * MAX_DRAFTS];
    append_fresh(c, n, kn, vn);
    if (tree)
        random_tree(&c->r, n, mask);
    decode_check(c, n, tree ? mask : NULL, step);
    int accepted[B];
    for (int b = 0; b < B; b++)
        accepted[b] = (int)(ref_rng_next(&c->r) % (uint64_t)(n + 1));
    if (tree) {   /* commit: the accepted drafts (every other one) appended again */
        double ck[B * MAX_DRAFTS * HKV * D], cv[B * MAX_DRAFTS * HKV * D];
        int a = accepted[0] < accepted[1] ? accepted[0] : accepted[1];
        for (int b = 0; b < B; b++) {
            accepted[b] = a;
            for (int t = 0; t < a; t++) {
                int from = (2 * t) % n;   /* a path that skips drafts */
                memcpy(ck + ((b * a + t) * HKV) * D, kn + ((b * n + from) * HKV) * D,
                       sizeof(double) * HKV * D);
                memcpy(cv + ((b * a + t) * HKV) * D, vn + ((b * n + from) * HKV) * D,
                       sizeof(double) * HKV * D);
            }
        }
        if (a > 0)
            append_rows(c, c->len, a, ck, cv);
    }
    for (int b = 0; b < B; b++)
        c->len[b] += accepted[b];
    append_fresh(c, 1, kn, vn);   /* the token sampled after verification */
    decode_check(c, 1, NULL, step);
    for (int b = 0; b < B; b++)
        c->len[b] += 1;
}

static void cache_free(spec_cache *c)
{
    free(c->k), free(c->v), free(c->ks), free(c->vs), free(c->table), free(c->hk), free(c->hv);
}

/* Prefill to `start` tokens, then `steps` engine steps. */
static void run_cycle(const char *spec, int32_t start, int steps)
{
    spec_cache c;
    cache_init(&c, spec);
    double *kn = malloc(sizeof(double) * B * start * HKV * D), *vn = malloc(sizeof(double) * B * start * HKV * D);
    cr_assert(kn && vn);
    ref_rng_fill(&c.r, kn, (int64_t)B * start * HKV * D, 1.0, FMQA_DTYPE_F16);
    ref_rng_fill(&c.r, vn, (int64_t)B * start * HKV * D, 1.0, FMQA_DTYPE_F16);
    append_rows(&c, c.len, start, kn, vn);
    for (int b = 0; b < B; b++)
        c.len[b] = start;
    for (int s = 0; s < steps; s++)
        spec_step(&c, s);
    free(kn);
    free(vn);
    cache_free(&c);
}

/* The input: 4 sinks, window 64, length 200; drafts 200..203 are
 * appended, one is accepted, token 201 is appended and decoded: its query sees
 * 138..201, whose slots must still hold 138 and 139, not the rejected drafts. */
Test(spec_decode, ring_rejected_drafts_never_reach_a_window)
{
    static const char *const kinds[] = {"f16", "int8"};
    for (int i = 0; i < 2; i++) {
        char spec[256];
        snprintf(spec, sizeof spec, "op=decode,batch=2,heads=4,kv_heads=2,d=16,kv_len=400,kv=%s,"
                 "window=64,sinks=4,draft_slots=3,flags=ring", kinds[i]);
        spec_cache c;
        cache_init(&c, spec);
        double kn[B * 200 * HKV * D], vn[B * 200 * HKV * D];
        ref_rng_fill(&c.r, kn, B * 200 * HKV * D, 1.0, FMQA_DTYPE_F16);
        ref_rng_fill(&c.r, vn, B * 200 * HKV * D, 1.0, FMQA_DTYPE_F16);
        append_rows(&c, c.len, 200, kn, vn);
        c.len[0] = c.len[1] = 200;
        append_fresh(&c, 4, kn, vn);      /* drafts 200..203 */
        decode_check(&c, 4, NULL, 0);     /* verification */
        c.len[0] = c.len[1] = 201;        /* one accepted */
        append_fresh(&c, 1, kn, vn);      /* token 201 */
        decode_check(&c, 1, NULL, 1);
        cache_free(&c);
    }
}

#define SPEC "op=decode,batch=2,heads=4,kv_heads=2,d=16,kv_len=400,"

Test(spec_decode, contiguous_and_paged_every_dtype)
{
    static const char *const dt[] = {"f16", "bf16", "int8", "fp8_e4m3"};
    for (int i = 0; i < 4; i++) {
        char spec[256];
        snprintf(spec, sizeof spec, SPEC "kv=%s,flags=none", dt[i]);
        run_cycle(spec, 30, 40);
        /* paged, with a window and sinks */
        snprintf(spec, sizeof spec, SPEC "kv=%s,page=16,window=24,sinks=3,flags=paged", dt[i]);
        run_cycle(spec, 30, 40);
    }
}

Test(spec_decode, ring_and_paged_ring_every_dtype)
{
    static const char *const dt[] = {"f16", "bf16", "int8", "fp8_e4m3"};
    for (int i = 0; i < 4; i++) {
        char spec[256];
        snprintf(spec, sizeof spec, SPEC "kv=%s,window=20,sinks=2,draft_slots=3,flags=ring", dt[i]);
        run_cycle(spec, 30, 60);
        snprintf(spec, sizeof spec,
                 SPEC "kv=%s,page=16,window=29,sinks=5,draft_slots=3,flags=paged|ring", dt[i]);
        run_cycle(spec, 50, 60);
    }
}
