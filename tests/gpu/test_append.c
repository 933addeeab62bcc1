/*
 * test_append.c -- fmqa_append on the GPU against ref_append_args, entry by
 * entry.  Each case builds fresh random k_new / v_new / q (Gaussian, rounded to
 * the input dtype, token stride padded), a cache filled with a poison byte, and
 * runs the public call and the float64 reference on identical copies.  Then:
 *  - every row the call must write (ring tokens overwritten later in the same
 *    call excluded) matches the reference.  Unrotated rows (V, K without RoPE)
 *    bit for bit, 8-bit scales and codes included: one rounding of an exact
 *    value is all there is.  Rotated rows (K, and q when passed) within the
 *    rotation's error bound e(pos) (rope_err) times the pair's norm: 16-bit
 *    values within one ulp plus that (near cancellation a ulp is smaller than
 *    the fp32 rotation error), 8-bit scales within sqrt(2) e relative and
 *    codes equal except adjacent codes where the reference's x / scale lies
 *    within QMAX * 3e of their rounding tie;
 *  - every other byte of the caches and scales still holds the poison.
 * Positions include 0, page and ring boundaries, more new tokens than ring
 * slots, and 1e5 / 2^30 (the RoPE angle claim of append.cuh).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "ref.h"
#include "test_support.h"

#define POISON 0xA5
#define SQRT2 1.4142135623730951

typedef struct acase {
    const char *name;
    int32_t batch, heads, kv_heads, d, dv, n_new, kv_len;
    uint32_t flags;
    int32_t page, window, sinks;
    int32_t start[3]; /* [batch] */
} acase;

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

/* ------------------------------------------------------------ comparison */

typedef struct row_ctx {
    fmqa_dtype kv;
    double err;     /* rope_err(pos) of the row being compared, 0 unrotated */
    int64_t ulp_diffs, code_diffs, elems;
} row_ctx;

/* Compares one written row; x is the reference's unrounded row (for ties) and
 * amax_in the largest |input| of the row (sqrt(2) amax_in bounds a pair's norm). */
static void compare_row(row_ctx *rc, const char *what, const uint8_t *gpu, const uint8_t *ref,
                        int64_t d, float gscale, float rscale, const double *x, double amax_in)
{
    rc->elems += d;
    if (!is_8bit(rc->kv)) {
        for (int64_t i = 0; i < d; i++) {
            uint16_t a, b;
            memcpy(&a, gpu + 2 * i, 2);
            memcpy(&b, ref + 2 * i, 2);
            cr_assert(close16(rc->kv, a, b, rc->err * SQRT2 * amax_in),
                      "%s[%lld]: gpu 0x%04x ref 0x%04x", what, (long long)i, a, b);
            rc->ulp_diffs += a != b;
        }
        return;
    }
    const double stol = rc->err > 0 ? (SQRT2 * rc->err + 0x1p-22) * rscale : 0.0;
    cr_assert(fabs((double)gscale - rscale) <= stol, "%s: scale gpu %.9g ref %.9g", what, gscale,
              rscale);
    const double qmax = rc->kv == FMQA_DTYPE_INT8 ? 127.0 : 448.0;
    for (int64_t i = 0; i < d; i++) {
        if (gpu[i] == ref[i])
            continue;
        double va = unscaled(rc->kv, gpu[i]), vb = unscaled(rc->kv, ref[i]);
        double t = rscale > 0 ? x[i] / rscale : 0.0, mid = (va + vb) / 2;
        cr_assert(rc->err > 0 && fabs(t - mid) <= qmax * (3.0 * rc->err + 0x1p-22),
                  "%s[%lld]: code gpu %g ref %g for x/scale %.9g: not a rounding tie", what,
                  (long long)i, va, vb, t);
        rc->code_diffs++;
    }
}

/* Rotated q row r at position pos against the reference (in: its dtype, q0:
 * the input row, x: scratch of d doubles): the bound depends on both. */
static void check_q_row(const char *name, fmqa_dtype in, int64_t r, int64_t pos, int64_t d,
                        const uint8_t *q0, const uint8_t *gpu, const uint8_t *ref, double *x)
{
    cr_assert_eq(ref_to_double(in, q0, d, x, NULL), FMQA_OK);
    const double tol = rope_err((double)pos) * SQRT2 * row_amax(x, d);
    for (int64_t i = 0; i < d; i++) {
        uint16_t a, b;
        memcpy(&a, gpu + 2 * i, 2);
        memcpy(&b, ref + 2 * i, 2);
        cr_assert(close16(in, a, b, tol), "%s: q row %lld [%lld] gpu 0x%04x ref 0x%04x", name,
                  (long long)r, (long long)i, a, b);
    }
}

/* ------------------------------------------------------------ one case */

typedef struct side {
    size_t bytes, scale_bytes;
    uint8_t *init, *ref, *gpu;
    float *sinit, *sref, *sgpu;
    uint8_t *mark; /* bytes a written row covers                     */
    uint8_t *smark;
    CUdeviceptr dev, sdev;
} side;

static void side_init(fmqa_test_gpu *g, side *s, size_t bytes, size_t scale_floats)
{
    s->bytes = bytes;
    s->scale_bytes = scale_floats * sizeof(float);
    s->init = malloc(bytes), s->ref = malloc(bytes), s->gpu = malloc(bytes);
    s->mark = calloc(bytes, 1);
    s->sinit = malloc(s->scale_bytes + 4), s->sref = malloc(s->scale_bytes + 4);
    s->sgpu = malloc(s->scale_bytes + 4), s->smark = calloc(scale_floats + 1, 1);
    cr_assert(s->init && s->ref && s->gpu && s->mark && s->sinit && s->sref && s->sgpu && s->smark);
    memset(s->init, POISON, bytes);
    memset(s->sinit, POISON, s->scale_bytes);
    memcpy(s->ref, s->init, bytes);
    memcpy(s->sref, s->sinit, s->scale_bytes);
    s->dev = fmqa_test_upload(g, s->init, bytes);
    s->sdev = s->scale_bytes ? fmqa_test_upload(g, s->sinit, s->scale_bytes) : 0;
}

static void side_fetch_and_free(fmqa_test_gpu *g, side *s)
{
    fmqa_test_download(g, s->gpu, s->dev, s->bytes);
    if (s->scale_bytes)
        fmqa_test_download(g, s->sgpu, s->sdev, s->scale_bytes);
    fmqa_test_free(g, s->dev);
    fmqa_test_free(g, s->sdev);
}

/* Bytes no written row covers still hold the poison. */
static void check_untouched(const char *name, const char *which, const side *s)
{
    for (size_t i = 0; i < s->bytes; i++)
        cr_assert(s->mark[i] || s->gpu[i] == POISON, "%s: %s byte %zu written (0x%02x)", name,
                  which, i, s->gpu[i]);
    for (size_t i = 0; i < s->scale_bytes / sizeof(float); i++)
        cr_assert(s->smark[i] || memcmp(&s->sgpu[i], &s->sinit[i], 4) == 0,
                  "%s: %s scale %zu written", name, which, i);
}

static void side_free(side *s)
{
    free(s->init), free(s->ref), free(s->gpu), free(s->mark);
    free(s->sinit), free(s->sref), free(s->sgpu), free(s->smark);
}

static void run_case(fmqa_ctx_t *ctx, fmqa_test_gpu *g, const acase *c, fmqa_dtype in,
                     fmqa_dtype kv, fmqa_rope rope, int rope_q)
{
    char name[160];
    snprintf(name, sizeof name, "%s in=%s kv=%s rope=%d q=%d", c->name, fmqa_dtype_name(in),
             fmqa_dtype_name(kv), (int)rope, rope_q);
    uint64_t seed = fmqa_test_seed(name) | 1;
    const int paged = (c->flags & FMQA_FLAG_PAGED) != 0, ring = (c->flags & FMQA_FLAG_RING) != 0;
    const int64_t B = c->batch, N = c->n_new, Hk = c->kv_heads, H = c->heads;
    const size_t ie = fmqa_dtype_size(in), ke = fmqa_dtype_size(kv);

    fmqa_problem p;
    fmqa_problem_init(&p);
    p.op = FMQA_OP_APPEND;
    p.batch = c->batch, p.num_q_heads = c->heads, p.num_kv_heads = c->kv_heads;
    p.head_dim_qk = c->d, p.head_dim_v = c->dv, p.q_tokens = c->n_new, p.kv_len = c->kv_len;
    p.q_dtype = p.out_dtype = in, p.kv_dtype = kv;
    p.page_size = c->page, p.window = c->window, p.sink_tokens = c->sinks;
    p.rope = rope, p.flags = c->flags;

    /* Inputs: token stride padded by 16 elements to exercise the strides. */
    const int64_t kst = Hk * c->d + 16, vst = Hk * c->dv + 16, qst = H * c->d;
    void *k_new = random_rows(in, B * N, Hk * c->d, kst, &seed);
    void *v_new = random_rows(in, B * N, Hk * c->dv, vst, &seed);
    void *q = random_rows(in, B * N, qst, qst, &seed);
    void *q_ref = malloc((size_t)(B * N * qst) * ie), *q_gpu = malloc((size_t)(B * N * qst) * ie);
    cr_assert(q_ref && q_gpu);
    memcpy(q_ref, q, (size_t)(B * N * qst) * ie);

    /* Cache: per block (sequence or page) `slots` rows of Hk heads. */
    const int64_t slots_seq = ring ? c->sinks + c->window : c->kv_len;
    const int64_t pages_seq = paged ? (slots_seq + c->page - 1) / c->page : 0;
    const int64_t n_blk = paged ? B * pages_seq + 2 : B, blk_rows = paged ? c->page : slots_seq;
    int32_t *table = paged ? malloc((size_t)(B * pages_seq) * sizeof *table) : NULL;
    if (paged) { /* a shuffled permutation of pages 2 .. n_blk-1: pages 0, 1 never used */
        for (int64_t i = 0; i < B * pages_seq; i++)
            table[i] = (int32_t)(i + 2);
        for (int64_t i = B * pages_seq - 1; i > 0; i--) {
            int64_t j = (int64_t)(rng_next(&seed) % (uint64_t)(i + 1));
            int32_t t = table[i];
            table[i] = table[j], table[j] = t;
        }
    }
    side ks, vs;
    const size_t sfl = is_8bit(kv) ? (size_t)(n_blk * blk_rows * Hk) : 0;
    side_init(g, &ks, (size_t)(n_blk * blk_rows * Hk * c->d) * ke, sfl);
    side_init(g, &vs, (size_t)(n_blk * blk_rows * Hk * c->dv) * ke, sfl);

    CUdeviceptr d_k_new = fmqa_test_upload(g, k_new, (size_t)(B * N * kst) * ie);
    CUdeviceptr d_v_new = fmqa_test_upload(g, v_new, (size_t)(B * N * vst) * ie);
    CUdeviceptr d_q = fmqa_test_upload(g, q, (size_t)(B * N * qst) * ie);
    CUdeviceptr d_start = fmqa_test_upload(g, c->start, (size_t)B * sizeof(int32_t));
    CUdeviceptr d_table = paged ? fmqa_test_upload(g, table, (size_t)(B * pages_seq) * 4) : 0;

    fmqa_append_args a;
    memset(&a, 0, sizeof a);
    a.k_new_stride_batch = N * kst, a.k_new_stride_token = kst, a.k_new_stride_head = c->d;
    a.v_new_stride_batch = N * vst, a.v_new_stride_token = vst, a.v_new_stride_head = c->dv;
    a.q_stride_batch = N * qst, a.q_stride_token = qst, a.q_stride_head = c->d;
    a.k_stride_batch = blk_rows * Hk * c->d, a.k_stride_token = Hk * c->d, a.k_stride_head = c->d;
    a.v_stride_batch = blk_rows * Hk * c->dv, a.v_stride_token = Hk * c->dv;
    a.v_stride_head = c->dv;
    a.k_scale_stride_batch = a.v_scale_stride_batch = blk_rows * Hk;
    a.k_scale_stride_token = a.v_scale_stride_token = Hk;
    a.k_scale_stride_head = a.v_scale_stride_head = 1;
    a.page_table_stride = pages_seq;
    a.rope_theta = 10000.0f;

    /* Device pointers for the call, host pointers for the reference. */
    fmqa_append_args da = a, ha = a;
    da.k_new = (void *)d_k_new, da.v_new = (void *)d_v_new, da.q = rope_q ? (void *)d_q : NULL;
    da.k = (void *)ks.dev, da.v = (void *)vs.dev;
    da.k_scale = (float *)ks.sdev, da.v_scale = (float *)vs.sdev;
    da.start_pos = (const int32_t *)d_start, da.page_table = (const int32_t *)d_table;
    ha.k_new = k_new, ha.v_new = v_new, ha.q = rope_q ? q_ref : NULL;
    ha.k = ks.ref, ha.v = vs.ref;
    ha.k_scale = sfl ? ks.sref : NULL, ha.v_scale = sfl ? vs.sref : NULL;
    ha.start_pos = c->start, ha.page_table = table;

    cr_assert_eq(fmqa_append(ctx, &p, &da, NULL), FMQA_OK, "%s: %s", name, fmqa_ctx_errmsg(ctx));
    fmqa_err err;
    cr_assert_eq(ref_append_args(&p, &ha, paged ? n_blk : 0, &err), FMQA_OK, "%s: %s", name,
                 err.msg);
    side_fetch_and_free(g, &ks);
    side_fetch_and_free(g, &vs);
    fmqa_test_download(g, q_gpu, d_q, (size_t)(B * N * qst) * ie);

    /* Every row that must be written, in call order. */
    row_ctx rk = {kv, 0, 0, 0, 0}, rv = {kv, 0, 0, 0, 0};
    double *x = malloc((size_t)(c->d > c->dv ? c->d : c->dv) * sizeof *x);
    cr_assert(x);
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < N; t++) {
            int64_t pos = c->start[b] + t, slot = pos;
            if (ring && pos >= c->sinks) {
                if (t + c->window < N)
                    continue; /* overwritten by token t + window */
                slot = c->sinks + (pos - c->sinks) % c->window;
            }
            int64_t blk = paged ? table[b * pages_seq + slot / c->page] : b;
            int64_t tok = paged ? slot % c->page : slot;
            for (int64_t h = 0; h < Hk; h++) {
                for (int side_i = 0; side_i < 2; side_i++) {
                    side *s = side_i ? &vs : &ks;
                    int64_t d = side_i ? c->dv : c->d;
                    int64_t off = (blk * blk_rows * Hk + tok * Hk + h) * d * (int64_t)ke;
                    int64_t soff = blk * blk_rows * Hk + tok * Hk + h;
                    const void *src = (const uint8_t *)(side_i ? v_new : k_new) +
                                      ((b * N + t) * (side_i ? vst : kst) + h * d) * (int64_t)ie;
                    cr_assert_eq(ref_to_double(in, src, d, x, NULL), FMQA_OK);
                    double amax_in = row_amax(x, d);
                    if (!side_i)
                        ref_rope_row(rope, x, d, (double)pos, 10000.0, NULL);
                    rk.err = rope != FMQA_ROPE_NONE ? rope_err((double)pos) : 0.0;
                    char what[200];
                    snprintf(what, sizeof what, "%s %c b%lld t%lld h%lld", name, side_i ? 'V' : 'K',
                             (long long)b, (long long)t, (long long)h);
                    compare_row(side_i ? &rv : &rk, what, s->gpu + off, s->ref + off, d,
                                sfl ? s->sgpu[soff] : 0, sfl ? s->sref[soff] : 0, x, amax_in);
                    memset(s->mark + off, 1, (size_t)(d * (int64_t)ke));
                    if (sfl)
                        s->smark[soff] = 1;
                }
            }
        }
    check_untouched(name, "K cache", &ks);
    check_untouched(name, "V cache", &vs);
    /* V is never rotated: one rounding of an exact value, like unrotated K
     * (compare_row asserts equal codes and scales for 8-bit caches). */
    cr_expect_eq(rv.ulp_diffs, 0, "%s: V differs from the reference", name);
    if (rope == FMQA_ROPE_NONE)
        cr_expect_eq(rk.ulp_diffs, 0, "%s: unrotated K differs from the reference", name);
    else
        cr_expect(rk.ulp_diffs <= rk.elems / 20 && rk.code_diffs <= rk.elems / 1000,
                  "%s: %lld one-ulp and %lld code differences in %lld K values", name,
                  (long long)rk.ulp_diffs, (long long)rk.code_diffs, (long long)rk.elems);

    /* q: rotated like K when asked, untouched otherwise. */
    for (int64_t r = 0; r < B * N * H; r++) {
        const uint8_t *q0 = (const uint8_t *)q + r * c->d * 2;
        if (rope_q && rope != FMQA_ROPE_NONE)
            check_q_row(name, in, r, c->start[r / (N * H)] + r / H % N, c->d, q0,
                        (const uint8_t *)q_gpu + r * c->d * 2, (const uint8_t *)q_ref + r * c->d * 2,
                        x);
        else
            cr_assert_eq(memcmp((const uint8_t *)q_gpu + r * c->d * 2, q0, (size_t)c->d * 2), 0,
                         "%s: q row %lld changed", name, (long long)r);
    }
    fprintf(stderr, "append %-60s PASS  K 1-ulp %lld, codes at ties K %lld V %lld of %lld\n",
            name, (long long)rk.ulp_diffs, (long long)rk.code_diffs, (long long)rv.code_diffs,
            (long long)(rk.elems + rv.elems));

    fmqa_test_free(g, d_k_new), fmqa_test_free(g, d_v_new), fmqa_test_free(g, d_q);
    fmqa_test_free(g, d_start), fmqa_test_free(g, d_table);
    side_free(&ks), side_free(&vs);
    free(x), free(k_new), free(v_new), free(q), free(q_ref), free(q_gpu), free(table);
}

/* ------------------------------------------------------------ cases */

static void run_matrix(const acase *c)
{
    static const fmqa_dtype in[] = {FMQA_DTYPE_F16, FMQA_DTYPE_BF16};
    static const fmqa_dtype kv[] = {FMQA_DTYPE_F16, FMQA_DTYPE_BF16, FMQA_DTYPE_INT8,
                                    FMQA_DTYPE_FP8_E4M3};
    static const fmqa_rope rope[] = {FMQA_ROPE_NONE, FMQA_ROPE_NEOX, FMQA_ROPE_GPTJ};
    fmqa_options o = FMQA_OPTIONS_INIT;
    o.db_path = "";
    fmqa_ctx_t *ctx = NULL;
    cr_assert_eq(fmqa_ctx_create(&o, &ctx), FMQA_OK, "%s", fmqa_ctx_errmsg(ctx));
    fmqa_test_gpu g;
    fmqa_test_gpu_open(&g);
    for (int a = 0; a < 2; a++)
        for (int b = 0; b < 4; b++)
            for (int r = 0; r < 3; r++)
                run_case(ctx, &g, c, in[a], kv[b], rope[r], b != 1); /* q rotated or not */
    fmqa_test_gpu_close(&g);
    fmqa_ctx_destroy(ctx);
}

#define PAGED FMQA_FLAG_PAGED
#define RING FMQA_FLAG_RING

/* Starts: position 0, the last slots of the capacity, an odd middle. */
Test(append, contiguous) { run_matrix(&(acase){"contig d128", 3, 8, 2, 128, 128, 5, 64, 0, 0, 0, 0, {0, 59, 17}}); }
Test(append, contiguous_d64_dv_differs) { run_matrix(&(acase){"contig d64 dv128 mqa", 2, 8, 1, 64, 128, 3, 40, 0, 0, 0, 0, {37, 1}}); }
Test(append, contiguous_d96) { run_matrix(&(acase){"contig d96", 2, 4, 4, 96, 96, 2, 40, 0, 0, 0, 0, {38, 0}}); }
Test(append, contiguous_d256) { run_matrix(&(acase){"contig d256", 1, 4, 2, 256, 256, 7, 16, 0, 0, 0, 0, {9}}); }
/* Tokens cross page boundaries (15 -> 16, 31 -> 32). */
Test(append, paged) { run_matrix(&(acase){"paged16 d128", 3, 8, 2, 128, 128, 5, 64, PAGED, 16, 0, 0, {13, 59, 29}}); }
Test(append, paged_d64) { run_matrix(&(acase){"paged32 d64", 2, 4, 2, 64, 64, 9, 96, PAGED, 32, 0, 0, {28, 0}}); }
/* Sinks and the wrap; 24 tokens into 16 ring slots; far positions. */
Test(append, ring) { run_matrix(&(acase){"ring w16 s4", 3, 8, 2, 128, 128, 5, 4096, RING, 0, 16, 4, {0, 2, 1000}}); }
Test(append, ring_overwrite_in_call) { run_matrix(&(acase){"ring n24>w16", 2, 4, 1, 128, 128, 24, 4096, RING, 0, 16, 4, {3, 100}}); }
Test(append, ring_paged_far_positions) { run_matrix(&(acase){"ring paged pos 1e5, 2^30", 2, 8, 2, 128, 128, 3, 1 << 30, RING | PAGED, 16, 32, 4, {100000, (1 << 30) - 8}}); }
