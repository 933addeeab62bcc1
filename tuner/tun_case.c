/*
 * tun_case.c -- the shared verification harness: random decode / append /
 * prefill problems in the physical layouts of the public argument structs, on the host
 * (for the float64 reference) and on the device (copy 0 and `copies - 1`
 * identical copies at other addresses, rotated when timing), poisoning,
 * launching through a plan or the public API, and comparison.
 *
 * Invariants:
 *  - Host buffers hold exactly the bytes uploaded to copy 0, so ref_decode /
 *    ref_append_args / ref_prefill on the host args compute what the kernel
 *    must produce.
 *  - Cache rows a sequence does not hold (positions >= its length) and every
 *    byte an append has not yet written are 0xFF: NaN in 16-bit data and in
 *    8-bit scales, so a kernel that lets them leak into a result fails.
 *  - The reference is computed once, at creation; an append's q is RoPEd in
 *    place by the kernel, so tun_case_poison() restores copy 0's original q.
 *  - Row addressing (row_at) follows fmqa_decode_args: ring slot, then page.
 *    A CSR page table (decode: each sequence's pages up to its length;
 *    append: all its pages) and an append's slot mapping are built from the
 *    same shuffled 2-D table, so row_at holds for them too.
 *  - Inputs and references are built on tun_host_threads() threads and do not
 *    depend on their number: blocks of rows draw from streams keyed by (seed,
 *    tensor, block), and the reference runs per sequence (prefill: per block
 *    of checked query rows) into its own rows.
 *  - A prefill's lens are its kv_lens (without the cache: its new tokens) and
 *    q_lens its new tokens; its cache, when it has one, is drawn as decode's.
 */
#include "tun.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fmqa_params.h"

#define MAX_COPIES TUN_MAX_COPIES
#define POISON 0xFF

static int is_8bit(fmqa_dtype t) { return t == FMQA_DTYPE_INT8 || t == FMQA_DTYPE_FP8_E4M3; }

/* One host tensor and its device copies (dev[0] is verified). */
typedef struct tensor {
    void *host;
    size_t bytes;
    CUdeviceptr dev[MAX_COPIES];
    int shared;              /* one device copy serves every input copy       */
} tensor;

/* T_CU: prefill's cu_seqlens_q [B + 1];
 * T_CSR: a CSR page table [indptr B + 1 | last_page_len B | indices];
 * T_SLOTS: an append's slot mapping [B * q_tokens];
 * T_SC: decode scores [B, Hkv, slots], prefill scores [B, Hkv, kv_len]
 * (FMQA_FLAG_SCORES). */
enum { T_Q, T_K, T_V, T_KS, T_VS, T_KN, T_VN, T_LENS, T_PT, T_MASK, T_O, T_LSE, T_WS, T_SINKS,
       T_CU, T_CSR, T_SLOTS, T_SC, T_N };

/* Physical cache layout shared by K, V and their scales. */
typedef struct layout {
    int64_t slots;           /* per sequence: kv_len, or sinks + window (ring) */
    int64_t pages_per_seq, n_pages, outer;  /* outer: batch or n_pages         */
    int64_t rows_per_outer;  /* slots or page_size                              */
} layout;

struct tun_case {
    fmqa_ctx_t *ctx;
    fmqa_problem p;
    int copies;
    float sm_scale, rope_theta;
    int rope_q;
    layout lay;
    int32_t *lens;
    int32_t *q_lens;                     /* prefill: new tokens [batch]       */
    int64_t total_q;                     /* prefill: rows of q and o          */
    tensor t[T_N];
    void *q_orig;                        /* append: q before RoPE             */
    fmqa_decode_args dargs[MAX_COPIES];
    fmqa_append_args aargs[MAX_COPIES];
    fmqa_prefill_args pargs[MAX_COPIES];
    double *ref_o, *ref_lse, *full_o;    /* decode references; prefill: of the
                                            checked rows                      */
    int64_t *checked, n_checked;         /* prefill: checked rows, ascending  */
    double *ref_sc;                      /* prefill scores of the first n_sc  */
    int64_t n_sc;                        /* floats of T_SC (whole sequences)  */
    uint8_t *written[4];                 /* append: K, V, KS, VS byte masks   */
};

/* MLA decode runs as a decode whose K and V are the one latent cache (V = its
 * first head_dim_v values): T_V holds nothing, the args point V at T_K. */
static int is_mla(const fmqa_problem *p) { return p->op == FMQA_OP_MLA_DECODE; }
static int is_decode(const fmqa_problem *p) { return p->op == FMQA_OP_DECODE || is_mla(p); }
static int is_prefill(const fmqa_problem *p) { return p->op == FMQA_OP_PREFILL; }
/* Ops whose outputs are o (and lse), not cache rows. */
static int writes_o(const fmqa_problem *p) { return is_decode(p) || is_prefill(p); }
/* A cache whose held rows are drawn (decode's; a chunked prefill's). */
static int drawn_cache(const fmqa_problem *p)
{
    return is_decode(p) || (is_prefill(p) && (p->flags & FMQA_FLAG_KV_CACHE));
}

double tun_rel_tol(fmqa_dtype out_dtype)
{
    return db_verify_tol(FMQA_OP_DECODE, out_dtype, out_dtype);
}

const fmqa_problem *tun_case_problem(const tun_case *c) { return &c->p; }
int tun_case_copies(const tun_case *c) { return c->copies; }
const int32_t *tun_case_lens(const tun_case *c) { return c->lens; }
const fmqa_decode_args *tun_case_decode_args(const tun_case *c, int i) { return &c->dargs[i]; }
const fmqa_append_args *tun_case_append_args(const tun_case *c, int i) { return &c->aargs[i]; }
const fmqa_prefill_args *tun_case_prefill_args(const tun_case *c, int i) { return &c->pargs[i]; }

const int64_t *tun_case_checked_rows(const tun_case *c, int64_t *n)
{
    *n = c->n_checked;
    return c->checked;
}

/* ---------------------------------------------------------------- layout */

static void make_layout(const fmqa_problem *p, layout *l)
{
    l->slots = fmqa_cache_slots(p);
    if (p->flags & FMQA_FLAG_PAGED) {
        l->pages_per_seq = (l->slots + p->page_size - 1) / p->page_size;
        l->n_pages = l->pages_per_seq * p->batch;
        l->outer = l->n_pages;
        l->rows_per_outer = p->page_size;
    } else {
        l->pages_per_seq = l->n_pages = 0;
        l->outer = p->batch;
        l->rows_per_outer = l->slots;
    }
}

/* Row index (in rows of one head) of (b, position j, kv head h); the element
 * offset is row * d, the scale offset is row. */
static int64_t row_at(const tun_case *c, int64_t b, int64_t j, int64_t h)
{
    const fmqa_problem *p = &c->p;
    int64_t slot = fmqa_ring_slot(p->flags, p->sink_tokens, fmqa_ring_period(p), j);
    int64_t outer = b, r = slot;
    if (p->flags & FMQA_FLAG_PAGED) {
        const int32_t *pt = c->t[T_PT].host;
        outer = pt[b * c->lay.pages_per_seq + slot / p->page_size];
        r = slot % p->page_size;
    }
    return (outer * c->lay.rows_per_outer + r) * p->num_kv_heads + h;
}

/* A position the cache of sequence b holds (ring: not yet overwritten). */
static int held(const fmqa_problem *p, int64_t len, int64_t j)
{
    return j < len && fmqa_ring_holds(p->flags, p->sink_tokens, fmqa_ring_period(p), len, j);
}

/* ---------------------------------------------------------------- host data */

static fmqa_status host_alloc(tensor *t, size_t bytes, int fill, fmqa_err *err)
{
    t->bytes = bytes;
    t->host = malloc(bytes ? bytes : 1);
    if (!t->host)
        return fmqa_err_set(err, FMQA_ERR_OUT_OF_MEMORY, "out of memory (%zu bytes)", bytes);
    memset(t->host, fill, bytes);
    return FMQA_OK;
}

/* n standard normal draws by Marsaglia's polar method: both values of each
 * accepted pair are used and no trigonometry is needed, about three times
 * cheaper than ref_rng_gauss (one cosine and one logarithm per value), which
 * dominated building large caches.  u and v take 32 random bits each. */
static void fill_gauss(ref_rng *rng, double *x, int64_t n)
{
    for (int64_t i = 0; i < n; i += 2) {
        double u, v, s;
        do {
            uint64_t bits = ref_rng_next(rng);
            u = (double)(bits >> 32) * 0x1p-31 - 1.0;
            v = (double)(bits & 0xFFFFFFFFu) * 0x1p-31 - 1.0;
            s = u * u + v * v;
        } while (s >= 1.0 || s == 0.0);
        double f = sqrt(-2.0 * log(s) / s);
        x[i] = u * f;
        if (i + 1 < n)
            x[i + 1] = v * f;
    }
}

/* Draws d Gaussian values rounded to `round` and stores them (16-bit encode or
 * 8-bit quantize) at element row `row` of data / scale.  A 16-bit dtype is its
 * own `round` (draw_caches, draw_plain), and encoding rounds once, so its
 * values are encoded straight from the draws. */
static fmqa_status draw_row(ref_rng *rng, fmqa_dtype dtype, fmqa_dtype round, int64_t d,
                            void *data, float *scale, int64_t row, double *keep,
                            fmqa_err *err)
{
    double x[1024];
    if (d > 1024)
        return fmqa_err_set(err, FMQA_ERR_UNSUPPORTED, "head dim %lld > 1024", (long long)d);
    fill_gauss(rng, x, d);
    size_t es = fmqa_dtype_size(dtype);
    if (!is_8bit(dtype) && round == dtype && !keep)
        return ref_from_double(dtype, x, d, (char *)data + row * d * es, err);
    for (int64_t i = 0; i < d; i++)
        x[i] = ref_round_to(round, x[i]);
    if (keep)
        memcpy(keep, x, (size_t)d * sizeof *x);
    if (is_8bit(dtype))
        return ref_quantize_row(dtype, x, d, (char *)data + row * d * es, &scale[row], err);
    return ref_from_double(dtype, x, d, (char *)data + row * d * es, err);
}

/* Inputs are drawn in blocks of BLOCK_ROWS logical rows, each from its own
 * stream seeded by (seed, tensor, block): the values depend on the seed and the
 * shape only, never on how many threads draw the blocks or in which order. */
#define BLOCK_ROWS 256

/* The splitmix64 finalizer: a bijection of 64-bit words. */
static uint64_t mix64(uint64_t x)
{
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

/* For a given seed, distinct (tensor, block) pairs (block < 2^56) get distinct
 * keys, so no two blocks share a stream. */
static void block_rng(ref_rng *rng, uint64_t seed, int which, int64_t block)
{
    ref_rng_seed(rng, mix64(mix64(seed) ^ ((uint64_t)which << 56 | (uint64_t)block)));
}

/* A plain tensor [n_rows, d] (q, k_new, v_new) being drawn. */
typedef struct plain_job {
    uint64_t seed;
    int tensor;
    fmqa_dtype dtype;
    int64_t n_rows, d;
    void *data;
} plain_job;

static fmqa_status draw_plain_block(void *user, int64_t block, fmqa_err *err)
{
    const plain_job *J = user;
    ref_rng rng;
    block_rng(&rng, J->seed, J->tensor, block);
    int64_t end = (block + 1) * BLOCK_ROWS < J->n_rows ? (block + 1) * BLOCK_ROWS : J->n_rows;
    fmqa_status st = FMQA_OK;
    for (int64_t r = block * BLOCK_ROWS; r < end && st == FMQA_OK; r++)
        st = draw_row(&rng, J->dtype, J->dtype, J->d, J->data, NULL, r, NULL, err);
    return st;
}

/* Dense rows [n_rows, d] of plain tensor c->t[which]. */
static fmqa_status draw_plain(tun_case *c, uint64_t seed, int which, fmqa_dtype dtype,
                              int64_t n_rows, int64_t d, int threads, fmqa_err *err)
{
    tensor *t = &c->t[which];
    fmqa_status st = host_alloc(t, (size_t)(n_rows * d) * fmqa_dtype_size(dtype), 0, err);
    plain_job J = {seed, which, dtype, n_rows, d, t->host};
    if (st == FMQA_OK)
        st = tun_parallel(threads, (n_rows + BLOCK_ROWS - 1) / BLOCK_ROWS, draw_plain_block, &J,
                          err);
    return st;
}

/* A draw in [lo, hi]. */
static int32_t draw_in(ref_rng *rng, int32_t lo, int32_t hi)
{
    return lo + (int32_t)(ref_rng_next(rng) % (uint64_t)(hi - lo + 1));
}

/* Prefill: new tokens, then (with the cache) the positions held; sequence 0
 * gets q_tokens and kv_len.  A drawn count of new tokens is cut to the given
 * lens[b]. */
static void draw_prefill_lens(tun_case *c, ref_rng *rng, const tun_case_opts *o)
{
    const fmqa_problem *p = &c->p;
    int cache = (p->flags & FMQA_FLAG_KV_CACHE) != 0;
    for (int b = 0; b < p->batch; b++) {
        int32_t tq = b == 0 ? p->q_tokens : draw_in(rng, 1, p->q_tokens);
        if (!cache) {
            c->lens[b] = c->q_lens[b] = o->lens ? o->lens[b] : tq;
            continue;
        }
        if (o->q_lens)
            tq = o->q_lens[b];
        else if (o->lens && tq > o->lens[b])
            tq = o->lens[b];
        c->q_lens[b] = tq;
        c->lens[b] = o->lens ? o->lens[b] : b == 0 ? p->kv_len : draw_in(rng, tq, p->kv_len);
    }
}

static fmqa_status check_prefill_lens(const tun_case *c, fmqa_err *err)
{
    const fmqa_problem *p = &c->p;
    for (int b = 0; b < p->batch; b++)
        if (c->q_lens[b] < 1 || c->q_lens[b] > p->q_tokens || c->lens[b] < c->q_lens[b] ||
            c->lens[b] > p->kv_len)
            return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT,
                                "sequence %d: %d new tokens (1..q_tokens %d) and %d positions "
                                "(from that to kv_len %d)",
                                b, c->q_lens[b], p->q_tokens, c->lens[b], p->kv_len);
    return FMQA_OK;
}

static void draw_lens(tun_case *c, ref_rng *rng, const int32_t *given)
{
    const fmqa_problem *p = &c->p;
    int append = p->op == FMQA_OP_APPEND;
    int32_t lo = append ? 0 : p->q_tokens, hi = append ? p->kv_len - p->q_tokens : p->kv_len;
    for (int b = 0; b < p->batch; b++)
        c->lens[b] = given ? given[b]
                           : b == 0 ? hi : lo + (int32_t)(ref_rng_next(rng) % (uint64_t)(hi - lo + 1));
}

static fmqa_status check_lens(const tun_case *c, fmqa_err *err)
{
    const fmqa_problem *p = &c->p;
    if (is_prefill(p))
        return check_prefill_lens(c, err);
    int append = p->op == FMQA_OP_APPEND;
    int32_t lo = append ? 0 : p->q_tokens, hi = append ? p->kv_len - p->q_tokens : p->kv_len;
    if (hi < lo)
        return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT,
                            "problem: kv_len %d < q_tokens %d", p->kv_len, p->q_tokens);
    for (int b = 0; b < p->batch; b++)
        if (c->lens[b] < lo || c->lens[b] > hi)
            return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT,
                                "opts.lens[%d] = %d is outside [%d, %d]", b, c->lens[b], lo, hi);
    return FMQA_OK;
}

/* A random permutation of all pages spread over the sequences' columns. */
static fmqa_status draw_pages(tun_case *c, ref_rng *rng, fmqa_err *err)
{
    int64_t n = c->lay.n_pages;
    fmqa_status st = host_alloc(&c->t[T_PT], (size_t)(n ? n : 1) * sizeof(int32_t), 0, err);
    int32_t *pt = c->t[T_PT].host;
    for (int64_t i = 0; i < n && st == FMQA_OK; i++)
        pt[i] = (int32_t)i;
    for (int64_t i = n; i > 1 && st == FMQA_OK; i--) {
        int64_t j = (int64_t)(ref_rng_next(rng) % (uint64_t)i);
        int32_t tmp = pt[i - 1];
        pt[i - 1] = pt[j], pt[j] = tmp;
    }
    return st;
}

/* The 2-D table as the problem's other page tables (T_CSR, T_SLOTS). */
static fmqa_status draw_page_forms(tun_case *c, fmqa_err *err)
{
    const fmqa_problem *p = &c->p;
    const int64_t B = p->batch, pps = c->lay.pages_per_seq, ps = p->page_size;
    const int32_t *pt = c->t[T_PT].host;
    fmqa_status st = FMQA_OK;
    if (p->flags & FMQA_FLAG_SLOT_MAPPING) {
        const int64_t n = B * p->q_tokens;
        if ((st = host_alloc(&c->t[T_SLOTS], (size_t)n * 4, 0, err)))
            return st;
        int32_t *slots = c->t[T_SLOTS].host;
        for (int64_t i = 0; i < n; i++) {
            const int64_t pos = c->lens[i / p->q_tokens] + i % p->q_tokens;
            slots[i] = (int32_t)(pt[i / p->q_tokens * pps + pos / ps] * ps + pos % ps);
        }
    }
    if (!(p->flags & FMQA_FLAG_PAGE_CSR) ||
        (st = host_alloc(&c->t[T_CSR], (size_t)(2 * B + 1 + B * pps) * 4, 0, err)))
        return st;
    int32_t *indptr = c->t[T_CSR].host, *last = indptr + B + 1, *ind = last + B;
    indptr[0] = 0;
    for (int64_t b = 0; b < B; b++) {
        const int64_t n = is_decode(p) ? (c->lens[b] + ps - 1) / ps : pps;
        memcpy(ind + indptr[b], pt + b * pps, (size_t)n * sizeof *ind);
        indptr[b + 1] = indptr[b] + (int32_t)n;
        last[b] = n > 0 ? (int32_t)(c->lens[b] - (n - 1) * ps) : 0;
    }
    return st;
}

/* The CSR table or slot mapping of copy k in the args (a decode's or an
 * append's: the same field names), instead of the 2-D table. */
#define FILL_PAGE_FORMS(c, a, k, host)                                                  \
    do {                                                                                \
        const int64_t B_ = (c)->p.batch;                                                \
        if ((c)->t[T_CSR].bytes || (c)->t[T_SLOTS].bytes)                               \
            (a)->page_table = NULL, (a)->page_table_stride = 0;                         \
        if ((c)->t[T_CSR].bytes)                                                        \
            (a)->page_indptr = PTR(c, T_CSR, k, host),                                  \
            (a)->page_indices = (a)->page_indptr + 2 * B_ + 1;                          \
    } while (0)

/* Tree masks: each draft's parent is an earlier draft or the prefix, and it
 * sees itself and its ancestors. */
static fmqa_status draw_mask(tun_case *c, ref_rng *rng, fmqa_err *err)
{
    const fmqa_problem *p = &c->p;
    fmqa_status st = host_alloc(&c->t[T_MASK], (size_t)p->batch * p->q_tokens * 8, 0, err);
    uint64_t *m = c->t[T_MASK].host;
    for (int64_t b = 0; b < p->batch && st == FMQA_OK; b++)
        for (int t = 0; t < p->q_tokens; t++) {
            int parent = (int)(ref_rng_next(rng) % (uint64_t)(t + 1)) - 1;
            m[b * p->q_tokens + t] = (parent >= 0 ? m[b * p->q_tokens + parent] : 0) |
                                     (1ull << t);
        }
    return st;
}

/* The caches of a decode being drawn: blocks of BLOCK_ROWS logical rows
 * (b, j, h) in dense order, K and V from their own streams. */
typedef struct cache_job {
    tun_case *c;
    uint64_t seed;
    fmqa_dtype round;
    double *full_k, *full_v;  /* dense [B, T, Hkv, d] or NULL */
} cache_job;

/* Draws the held rows of one block and marks its other rows NaN in full_k /
 * full_v.  A held position has its own slot (ring) and page (the page table is
 * a permutation), so blocks write disjoint physical rows. */
static fmqa_status draw_cache_block(void *user, int64_t block, fmqa_err *err)
{
    const cache_job *J = user;
    tun_case *c = J->c;
    const fmqa_problem *p = &c->p;
    int64_t hk = p->num_kv_heads, dk = p->head_dim_qk, dv = p->head_dim_v;
    int64_t n = (int64_t)p->batch * p->kv_len * hk;
    int64_t end = (block + 1) * BLOCK_ROWS < n ? (block + 1) * BLOCK_ROWS : n;
    ref_rng rk, rv;
    block_rng(&rk, J->seed, T_K, block);
    block_rng(&rv, J->seed, T_V, block);
    fmqa_status st = FMQA_OK;
    for (int64_t dense = block * BLOCK_ROWS; dense < end && st == FMQA_OK; dense++) {
        int64_t b = dense / (p->kv_len * hk), j = dense / hk % p->kv_len, h = dense % hk;
        double *fk = J->full_k ? J->full_k + dense * dk : NULL;
        double *fv = J->full_v ? J->full_v + dense * dv : NULL;
        if (!held(p, c->lens[b], j)) {
            for (int64_t i = 0; fk && i < dk; i++)
                fk[i] = NAN;
            for (int64_t i = 0; fv && i < dv; i++)
                fv[i] = NAN;
            continue;
        }
        int64_t r = row_at(c, b, j, h);
        st = draw_row(&rk, p->kv_dtype, J->round, dk, c->t[T_K].host, c->t[T_KS].host, r, fk,
                      err);
        if (st == FMQA_OK && is_mla(p) && fv)
            memcpy(fv, fk, (size_t)dv * sizeof *fv);
        else if (st == FMQA_OK && !is_mla(p))
            st = draw_row(&rv, p->kv_dtype, J->round, dv, c->t[T_V].host, c->t[T_VS].host, r,
                          fv, err);
    }
    return st;
}

/* Caches: 0xFF everywhere, then (decode) random rows at the held positions,
 * keeping the unquantized values in full_k / full_v (NaN elsewhere) when
 * asked. */
static fmqa_status draw_caches(tun_case *c, uint64_t seed, double *full_k, double *full_v,
                               int threads, fmqa_err *err)
{
    const fmqa_problem *p = &c->p;
    int64_t rows = c->lay.outer * c->lay.rows_per_outer * p->num_kv_heads;
    size_t es = fmqa_dtype_size(p->kv_dtype);
    int q8 = is_8bit(p->kv_dtype);
    int64_t v_rows = is_mla(p) ? 0 : rows; /* MLA: V is K's latent */
    fmqa_status st;
    if ((st = host_alloc(&c->t[T_K], (size_t)(rows * p->head_dim_qk) * es, POISON, err)) ||
        (st = host_alloc(&c->t[T_V], (size_t)(v_rows * p->head_dim_v) * es, POISON, err)) ||
        (st = host_alloc(&c->t[T_KS], q8 ? (size_t)rows * 4 : 0, POISON, err)) ||
        (st = host_alloc(&c->t[T_VS], q8 ? (size_t)v_rows * 4 : 0, POISON, err)))
        return st;
    if (!drawn_cache(p))
        return FMQA_OK;
    /* Activations are q_dtype; a 16-bit cache stores them as is, an 8-bit one
     * quantizes the q_dtype values. */
    cache_job J = {c, seed, q8 ? p->q_dtype : p->kv_dtype, full_k, full_v};
    int64_t n = (int64_t)p->batch * p->kv_len * p->num_kv_heads;
    return tun_parallel(threads, (n + BLOCK_ROWS - 1) / BLOCK_ROWS, draw_cache_block, &J, err);
}

/* ---------------------------------------------------------------- args */

static void cache_strides(const tun_case *c, int64_t d, int64_t *sb, int64_t *st, int64_t *sh)
{
    int64_t hk = c->p.num_kv_heads;
    *sb = c->lay.rows_per_outer * hk * d, *st = hk * d, *sh = d;
}

#define DEV(c, i, k) ((void *)(uintptr_t)(c)->t[i].dev[(c)->t[i].shared ? 0 : (k)])

/* The cache fields (K, V, 8-bit scales, page table) carry the same names in
 * fmqa_decode_args and fmqa_append_args: one macro fills them for both. */
#define FILL_CACHE(c, a, k, host)                                                       \
    do {                                                                                \
        const fmqa_problem *p_ = &(c)->p;                                               \
        const int mla_ = is_mla(p_); /* V is K's latent row */                          \
        (a)->k = PTR(c, T_K, k, host), (a)->v = PTR(c, mla_ ? T_K : T_V, k, host);      \
        cache_strides(c, p_->head_dim_qk, &(a)->k_stride_batch, &(a)->k_stride_token,   \
                      &(a)->k_stride_head);                                             \
        cache_strides(c, mla_ ? p_->head_dim_qk : p_->head_dim_v, &(a)->v_stride_batch, \
                      &(a)->v_stride_token, &(a)->v_stride_head);                       \
        if (is_8bit(p_->kv_dtype)) {                                                    \
            (a)->k_scale = PTR(c, T_KS, k, host);                                       \
            (a)->v_scale = PTR(c, mla_ ? T_KS : T_VS, k, host);                         \
            cache_strides(c, 1, &(a)->k_scale_stride_batch, &(a)->k_scale_stride_token, \
                          &(a)->k_scale_stride_head);                                   \
            cache_strides(c, 1, &(a)->v_scale_stride_batch, &(a)->v_scale_stride_token, \
                          &(a)->v_scale_stride_head);                                   \
        }                                                                               \
        if (p_->flags & FMQA_FLAG_PAGED)                                                \
            (a)->page_table = PTR(c, T_PT, k, host),                                    \
            (a)->page_table_stride = (c)->lay.pages_per_seq;                            \
    } while (0)
#define PTR(c, i, k, host) ((host) ? (c)->t[i].host : DEV(c, i, k))

static void fill_decode_args(const tun_case *c, int k, fmqa_decode_args *a, int host)
{
    const fmqa_problem *p = &c->p;
#define P(i) PTR(c, i, k, host)
    memset(a, 0, sizeof *a);
    int64_t H = p->num_q_heads, d = p->head_dim_qk, dv = p->head_dim_v;
    a->q = P(T_Q);
    a->q_stride_batch = p->q_tokens * H * d, a->q_stride_token = H * d, a->q_stride_head = d;
    FILL_CACHE(c, a, k, host);
    a->kv_lens = P(T_LENS);
    FILL_PAGE_FORMS(c, a, k, host);
    if (c->t[T_CSR].bytes) /* the lengths are the table's */
        a->last_page_len = a->page_indptr + p->batch + 1, a->kv_lens = NULL;
    if (p->flags & FMQA_FLAG_TREE_MASK)
        a->tree_mask = P(T_MASK);
    a->o = P(T_O);
    a->o_stride_batch = p->q_tokens * H * dv, a->o_stride_token = H * dv, a->o_stride_head = dv;
    if (p->flags & FMQA_FLAG_LSE)
        a->lse = P(T_LSE);
    a->sm_scale = c->sm_scale;
    if (c->t[T_SINKS].bytes)
        a->sinks = P(T_SINKS);
    if (p->flags & FMQA_FLAG_SCORES) /* [b, hk, slot], the decode adds into it */
        a->scores = P(T_SC), a->scores_stride_head = c->lay.slots,
        a->scores_stride_batch = p->num_kv_heads * c->lay.slots;
    if (!host && c->t[T_WS].bytes)
        a->workspace = P(T_WS), a->workspace_size = c->t[T_WS].bytes;
}

static void fill_append_args(const tun_case *c, int k, fmqa_append_args *a, int host)
{
    const fmqa_problem *p = &c->p;
    memset(a, 0, sizeof *a);
    int64_t H = p->num_q_heads, hk = p->num_kv_heads, d = p->head_dim_qk, dv = p->head_dim_v;
    int64_t n = p->q_tokens;
    a->k_new = P(T_KN), a->v_new = P(T_VN);
    a->k_new_stride_batch = n * hk * d, a->k_new_stride_token = hk * d, a->k_new_stride_head = d;
    a->v_new_stride_batch = n * hk * dv, a->v_new_stride_token = hk * dv;
    a->v_new_stride_head = dv;
    if (c->rope_q) {
        a->q = P(T_Q);
        a->q_stride_batch = n * H * d, a->q_stride_token = H * d, a->q_stride_head = d;
    }
    FILL_CACHE(c, a, k, host);
    if (p->flags & FMQA_FLAG_LATENT) /* MLA: no V; q rows start with their rope part */
        a->v_new = a->v = NULL, a->v_scale = NULL;
    a->start_pos = P(T_LENS);
    FILL_PAGE_FORMS(c, a, k, host);
    if (c->t[T_SLOTS].bytes)
        a->slot_mapping = P(T_SLOTS);
    a->rope_theta = c->rope_theta;
}

/* Packed rows [total_q, heads, d] (q, o; K and V without the cache). */
#define PACKED(a, f, heads, d) ((a)->f##_stride_token = (heads) * (d), (a)->f##_stride_head = (d))

static void fill_prefill_args(const tun_case *c, int k, fmqa_prefill_args *a, int host)
{
    const fmqa_problem *p = &c->p;
    memset(a, 0, sizeof *a);
    int64_t H = p->num_q_heads, hk = p->num_kv_heads, d = p->head_dim_qk, dv = p->head_dim_v;
    a->q = P(T_Q), PACKED(a, q, H, d);
    if (p->flags & FMQA_FLAG_KV_CACHE) {
        FILL_CACHE(c, a, k, host);
        a->kv_lens = P(T_LENS);
    } else {
        a->k = P(T_K), PACKED(a, k, hk, d);
        a->v = P(T_V), PACKED(a, v, hk, dv);
    }
    a->cu_seqlens_q = P(T_CU);
    a->o = P(T_O), PACKED(a, o, H, dv);
    if (p->flags & FMQA_FLAG_LSE)
        a->lse = P(T_LSE);
    a->sm_scale = c->sm_scale;
    if (!host && c->t[T_WS].bytes)
        a->workspace = P(T_WS), a->workspace_size = c->t[T_WS].bytes;
    a->total_q = c->total_q;
    if (p->flags & FMQA_FLAG_SCORES) /* [b, hk, position], the prefill adds into it */
        a->scores = P(T_SC), a->scores_stride_head = p->kv_len,
        a->scores_stride_batch = hk * p->kv_len, a->scores_window = TUN_SCORES_WINDOW;
#undef P
}

/* ---------------------------------------------------------------- device */

static const rt_cuda *cu_of(const tun_case *c) { return c->ctx->cu; }

static fmqa_status upload(tun_case *c, fmqa_err *err)
{
    const rt_cuda *cu = cu_of(c);
    for (int i = 0; i < T_N; i++) {
        tensor *t = &c->t[i];
        if (!t->bytes)
            continue;
        for (int k = 0; k < (t->shared ? 1 : c->copies); k++) {
            RT_CU(err, cu->cuMemAlloc(&t->dev[k], t->bytes), "cuMemAlloc (test case)");
            if (t->host)
                RT_CU(err, cu->cuMemcpyHtoD(t->dev[k], t->host, t->bytes), "cuMemcpyHtoD");
            else
                RT_CU(err, cu->cuMemsetD8(t->dev[k], POISON, t->bytes), "cuMemsetD8");
        }
    }
    return FMQA_OK;
}

static void free_device(tun_case *c)
{
    if (!c->ctx || !c->ctx->cu || rt_enter(c->ctx, NULL) != FMQA_OK)
        return;
    for (int i = 0; i < T_N; i++)
        for (int k = 0; k < MAX_COPIES; k++)
            if (c->t[i].dev[k])
                c->ctx->cu->cuMemFree(c->t[i].dev[k]);
    rt_leave(c->ctx);
}

void tun_case_destroy(tun_case *c)
{
    if (!c)
        return;
    free_device(c);
    for (int i = 0; i < T_N; i++)
        free(c->t[i].host);
    for (int i = 0; i < 4; i++)
        free(c->written[i]);
    free(c->q_orig);
    free(c->lens);
    free(c->q_lens);
    free(c->checked);
    free(c->ref_o);
    free(c->ref_lse);
    free(c->full_o);
    free(c->ref_sc);
    free(c);
}

/* ---------------------------------------------------------------- references */

/* The reference's view of a decode case: its lengths, mask, window and scale. */
static ref_attn_shape attn_shape(const tun_case *c)
{
    const fmqa_problem *p = &c->p;
    ref_attn_shape s = {p->batch, p->q_tokens, p->kv_len, p->num_q_heads, p->num_kv_heads,
                        p->head_dim_qk, p->head_dim_v, c->lens, p->flags,
                        (p->flags & FMQA_FLAG_TREE_MASK) ? c->t[T_MASK].host : NULL,
                        p->window, p->sink_tokens, 0, 0, c->sm_scale, c->t[T_SINKS].host,
                        p->logit_softcap, p->draft_slots};
    return s;
}

/* The decode references of one sequence: ref_decode and ref_attention are
 * independent per sequence, so each gets the sub-problem of batch 1 whose
 * pointers start at its sequence (its page table row when paged: pages are
 * shared) and writes its own rows of the dense outputs. */
typedef struct ref_job {
    tun_case *c;
    fmqa_decode_args host;       /* the whole batch's host args */
    const double *full_k, *full_v;
} ref_job;

/* args moved to sequence b (data pointers advanced by b batch strides). */
static fmqa_decode_args sequence_args(const tun_case *c, const fmqa_decode_args *all, int64_t b)
{
    const fmqa_problem *p = &c->p;
    fmqa_decode_args a = *all;
    a.q = (const char *)a.q + b * a.q_stride_batch * (int64_t)fmqa_dtype_size(p->q_dtype);
    if (a.kv_lens)
        a.kv_lens += b;
    if (a.tree_mask)
        a.tree_mask += b * p->q_tokens;
    if (a.page_indptr) /* CSR: indptr values point into the whole indices */
        a.page_indptr += b, a.last_page_len += b;
    if (p->flags & FMQA_FLAG_PAGED) {
        if (a.page_table)
            a.page_table += b * a.page_table_stride;
        return a;
    }
    int64_t es = (int64_t)fmqa_dtype_size(p->kv_dtype);
    a.k = (const char *)a.k + b * a.k_stride_batch * es;
    a.v = (const char *)a.v + b * a.v_stride_batch * es;
    if (a.k_scale)
        a.k_scale += b * a.k_scale_stride_batch, a.v_scale += b * a.v_scale_stride_batch;
    return a;
}

/* ref_attention on the unquantized cache of sequence b (whose q is q_b) into
 * full_o. */
static fmqa_status full_reference(const ref_job *J, int64_t b, const void *q_b, fmqa_err *err)
{
    tun_case *c = J->c;
    const fmqa_problem *p = &c->p;
    int64_t rows = (int64_t)p->q_tokens * p->num_q_heads, nq = rows * p->head_dim_qk;
    int64_t kv_rows = (int64_t)p->kv_len * p->num_kv_heads;
    double *q = malloc((size_t)nq * sizeof *q);
    if (!q)
        return fmqa_err_set(err, FMQA_ERR_OUT_OF_MEMORY, "out of memory");
    ref_attn_shape s = attn_shape(c);
    s.batch = 1, s.kv_lens += b;
    if (s.tree_mask)
        s.tree_mask += b * p->q_tokens;
    fmqa_status st = ref_to_double(p->q_dtype, q_b, nq, q, err);
    if (st == FMQA_OK)
        st = ref_attention(&s, q, J->full_k + b * kv_rows * p->head_dim_qk,
                           J->full_v + b * kv_rows * p->head_dim_v,
                           c->full_o + b * rows * p->head_dim_v, NULL, err);
    free(q);
    return st;
}

static fmqa_status reference_sequence(void *user, int64_t b, fmqa_err *err)
{
    const ref_job *J = user;
    tun_case *c = J->c;
    fmqa_problem one = c->p;
    int64_t rows = (int64_t)one.q_tokens * one.num_q_heads;
    one.batch = 1;
    fmqa_decode_args a = sequence_args(c, &J->host, b);
    fmqa_status st = ref_decode(&one, &a, c->lay.n_pages, c->ref_o + b * rows * one.head_dim_v,
                                c->ref_lse + b * rows, err);
    if (st == FMQA_OK && J->full_k)
        st = full_reference(J, b, a.q, err);
    return st != FMQA_OK ? fmqa_err_prefix(err, "sequence %lld", (long long)b) : st;
}

/* ref_decode on the host args and, with an 8-bit cache, the same attention on
 * the unquantized cache (the quantization error), one sequence per job. */
static fmqa_status decode_reference(tun_case *c, double *full_k, double *full_v, int threads,
                                    fmqa_err *err)
{
    const fmqa_problem *p = &c->p;
    int64_t rows = (int64_t)p->batch * p->q_tokens * p->num_q_heads;
    ref_job J = {c, {0}, full_k, full_v};
    fill_decode_args(c, 0, &J.host, 1);
    c->ref_o = malloc((size_t)(rows * p->head_dim_v) * sizeof(double));
    c->ref_lse = malloc((size_t)rows * sizeof(double));
    if (full_k)
        c->full_o = malloc((size_t)(rows * p->head_dim_v) * sizeof(double));
    if (!c->ref_o || !c->ref_lse || (full_k && !c->full_o))
        return fmqa_err_set(err, FMQA_ERR_OUT_OF_MEMORY, "out of memory");
    return tun_parallel(threads, p->batch, reference_sequence, &J, err);
}

void tun_case_host_decode_args(const tun_case *c, fmqa_decode_args *out)
{
    fill_decode_args(c, 0, out, 1);
}

void tun_case_host_append_args(const tun_case *c, fmqa_append_args *out)
{
    fill_append_args(c, 0, out, 1);
}

void tun_case_host_prefill_args(const tun_case *c, fmqa_prefill_args *out)
{
    fill_prefill_args(c, 0, out, 1);
}

const void *tun_case_host_image(const tun_case *c, tun_host_image which, size_t *bytes)
{
    static const int input[] = {T_Q, T_K, T_V, T_KS, T_VS, T_KN, T_VN, T_LENS, T_PT, T_MASK};
    const fmqa_problem *p = &c->p;
    size_t rows = (size_t)(is_prefill(p) ? c->n_checked : (int64_t)p->batch * p->q_tokens) *
                  (size_t)p->num_q_heads, n = 0;
    const void *data = NULL;
    if (which >= TUN_HOST_Q && which <= TUN_HOST_TREE_MASK)
        data = c->t[input[which]].host, n = c->t[input[which]].bytes;
    else if (which == TUN_HOST_CU_SEQLENS)
        data = c->t[T_CU].host, n = c->t[T_CU].bytes;
    else if (which == TUN_HOST_REF_O || which == TUN_HOST_FULL_O)
        data = which == TUN_HOST_REF_O ? c->ref_o : c->full_o, n = rows * p->head_dim_v * 8;
    else if (which == TUN_HOST_REF_LSE)
        data = c->ref_lse, n = rows * 8;
    else if (which == TUN_HOST_REF_SCORES)
        data = c->ref_sc, n = (size_t)c->n_sc * 8;
    *bytes = data ? n : 0;
    return n ? data : NULL;
}

/* Marks the bytes of row r (elements of es bytes, d per row) in mask. */
static void mark(uint8_t *mask, int64_t r, int64_t d, size_t es)
{
    memset(mask + (size_t)(r * d) * es, 1, (size_t)d * es);
}

static fmqa_status append_reference(tun_case *c, fmqa_err *err)
{
    const fmqa_problem *p = &c->p;
    fmqa_append_args host;
    fill_append_args(c, 0, &host, 1);
    if (c->rope_q) {
        c->q_orig = malloc(c->t[T_Q].bytes);
        if (!c->q_orig)
            return fmqa_err_set(err, FMQA_ERR_OUT_OF_MEMORY, "out of memory");
        memcpy(c->q_orig, c->t[T_Q].host, c->t[T_Q].bytes);
    }
    const int idx[4] = {T_K, T_V, T_KS, T_VS};
    for (int i = 0; i < 4; i++)
        if (!(c->written[i] = calloc(c->t[idx[i]].bytes + 1, 1)))
            return fmqa_err_set(err, FMQA_ERR_OUT_OF_MEMORY, "out of memory");
    size_t es = fmqa_dtype_size(p->kv_dtype);
    for (int64_t b = 0; b < p->batch; b++)
        for (int64_t t = 0; t < p->q_tokens; t++)
            for (int64_t h = 0; h < p->num_kv_heads; h++) {
                int64_t r = row_at(c, b, c->lens[b] + t, h);
                int has_v = !(p->flags & FMQA_FLAG_LATENT);
                mark(c->written[0], r, p->head_dim_qk, es);
                if (has_v)
                    mark(c->written[1], r, p->head_dim_v, es);
                if (is_8bit(p->kv_dtype)) {
                    mark(c->written[2], r, 1, 4);
                    if (has_v)
                        mark(c->written[3], r, 1, 4);
                }
            }
    return ref_append_args(p, &host, c->lay.n_pages, err);
}

/* A block of checked prefill rows: new tokens [t0, t1) of sequence b, whose
 * reference rows start at `at` in ref_o / ref_lse (in rows of H heads). */
typedef struct pblock {
    int32_t b, t0, t1;
    int64_t at;
    uint64_t rank;        /* order of choice: smaller first */
} pblock;

/* Multiply-adds of a block's reference: each row against every position up to
 * the block's last (an upper bound under a window). */
static double block_macs(const tun_case *c, const pblock *k)
{
    const fmqa_problem *p = &c->p;
    double kv_end = (double)c->lens[k->b] - c->q_lens[k->b] + k->t1;
    return (double)(k->t1 - k->t0) * kv_end * p->num_q_heads * (p->head_dim_qk + p->head_dim_v);
}

static int by_rank(const void *x, const void *y)
{
    const pblock *a = x, *b = y;
    return a->rank < b->rank ? -1 : a->rank > b->rank;
}

static int by_position(const void *x, const void *y)
{
    const pblock *a = x, *b = y;
    return a->b != b->b ? (a->b > b->b) - (a->b < b->b) : (a->t0 > b->t0) - (a->t0 < b->t0);
}

/* Every block of every sequence, ranked as tun.h's TUN_PREFILL_REF_MACS says:
 * sequence 0's last block, then each sequence's last and first, then the
 * rest in a random order drawn from rng.  *n (OUT) blocks. */
static pblock *all_blocks(const tun_case *c, ref_rng *rng, int64_t *n)
{
    const fmqa_problem *p = &c->p;
    const int32_t R = TUN_PREFILL_CHECK_ROWS;
    *n = 0;
    for (int b = 0; b < p->batch; b++)
        *n += (c->q_lens[b] + R - 1) / R;
    pblock *k = malloc((size_t)(*n ? *n : 1) * sizeof *k);
    int64_t i = 0;
    for (int b = 0; k && b < p->batch; b++) {
        int32_t last = (c->q_lens[b] - 1) / R;
        for (int32_t j = 0; j <= last; j++, i++) {
            k[i].b = b, k[i].t0 = j * R, k[i].at = 0;
            k[i].t1 = j == last ? c->q_lens[b] : (j + 1) * R;
            k[i].rank = j == last ? 2 * (uint64_t)b
                        : j == 0  ? 2 * (uint64_t)b + 1
                                  : 2 * (uint64_t)p->batch + (ref_rng_next(rng) >> 2);
        }
    }
    return k;
}

/* Chooses the checked blocks within the budget (the first always), in
 * position order with their reference rows' offsets; fills c->checked.
 * *n (IN: all blocks, OUT: chosen). */
static fmqa_status choose_blocks(tun_case *c, pblock *k, int64_t *n, double budget, fmqa_err *err)
{
    double total = 0, used = 0;
    for (int64_t i = 0; i < *n; i++)
        total += block_macs(c, &k[i]);
    int64_t m = 0;
    if (total <= budget) {
        m = *n;
    } else {
        qsort(k, (size_t)*n, sizeof *k, by_rank);
        for (int64_t i = 0; i < *n; i++) {
            double cost = block_macs(c, &k[i]);
            if (m == 0 || used + cost <= budget)
                k[m++] = k[i], used += cost;
        }
    }
    qsort(k, (size_t)m, sizeof *k, by_position);
    int64_t rows = 0;
    for (int64_t i = 0; i < m; i++)
        k[i].at = rows, rows += k[i].t1 - k[i].t0;
    c->checked = malloc((size_t)(rows ? rows : 1) * sizeof *c->checked);
    if (!c->checked)
        return fmqa_err_set(err, FMQA_ERR_OUT_OF_MEMORY, "out of memory");
    const int32_t *cu = c->t[T_CU].host;
    for (int64_t i = 0; i < m; i++)
        for (int32_t t = k[i].t0; t < k[i].t1; t++)
            c->checked[c->n_checked++] = cu[k[i].b] + t;
    *n = m;
    return FMQA_OK;
}

typedef struct pref_job {
    tun_case *c;
    const pblock *blocks;
    fmqa_prefill_args host;  /* the whole batch's host args */
} pref_job;

/* ref_prefill of one block as a batch-1 chunked prefill: its rows are the new
 * tokens, the positions up to its last row the cache (packed K and V are a
 * cache of one sequence starting at its first row). */
static fmqa_status reference_block(void *user, int64_t i, fmqa_err *err)
{
    const pref_job *J = user;
    const tun_case *c = J->c;
    const pblock *k = &J->blocks[i];
    const fmqa_problem *p = &c->p;
    const int32_t *cu = c->t[T_CU].host;
    const int64_t b = k->b, es = (int64_t)fmqa_dtype_size(p->kv_dtype);
    int32_t n = k->t1 - k->t0, kv_end = c->lens[b] - c->q_lens[b] + k->t1, cu1[2] = {0, n};
    fmqa_problem one = p[0];
    one.batch = 1, one.q_tokens = n, one.kv_len = kv_end, one.flags |= FMQA_FLAG_KV_CACHE;
    fmqa_prefill_args a = J->host;
    a.q = (const char *)a.q +
          (cu[b] + k->t0) * a.q_stride_token * (int64_t)fmqa_dtype_size(p->q_dtype);
    a.cu_seqlens_q = cu1, a.kv_lens = &kv_end, a.total_q = n;
    if (!(p->flags & FMQA_FLAG_KV_CACHE)) {
        a.k = (const char *)a.k + cu[b] * a.k_stride_token * es;
        a.v = (const char *)a.v + cu[b] * a.v_stride_token * es;
        a.k_stride_batch = a.v_stride_batch = 0;
    } else if (p->flags & FMQA_FLAG_PAGED) {
        a.page_table += b * a.page_table_stride;
    } else {
        a.k = (const char *)a.k + b * a.k_stride_batch * es;
        a.v = (const char *)a.v + b * a.v_stride_batch * es;
        if (a.k_scale)
            a.k_scale += b * a.k_scale_stride_batch, a.v_scale += b * a.v_scale_stride_batch;
    }
    int64_t H = p->num_q_heads;
    fmqa_status st = ref_prefill(&one, &a, c->lay.n_pages, c->ref_o + k->at * H * p->head_dim_v,
                                 c->ref_lse + k->at * H, err);
    return st != FMQA_OK ? fmqa_err_prefix(err, "sequence %lld rows %d..%d", (long long)b,
                                           k->t0, k->t1 - 1)
                         : st;
}

/* The reference of the rows the budget affords (tun.h), one block a job. */
static fmqa_status prefill_reference(tun_case *c, uint64_t seed, double budget, int threads,
                                     fmqa_err *err)
{
    ref_rng rng;
    block_rng(&rng, seed, T_N, 0); /* T_N: no tensor's stream */
    int64_t n;
    pblock *k = all_blocks(c, &rng, &n);
    fmqa_status st = k ? choose_blocks(c, k, &n, budget > 0 ? budget : TUN_PREFILL_REF_MACS, err)
                       : fmqa_err_set(err, FMQA_ERR_OUT_OF_MEMORY, "out of memory");
    int64_t rows = c->n_checked * c->p.num_q_heads;
    if (st == FMQA_OK) {
        c->ref_o = malloc((size_t)(rows * c->p.head_dim_v + 1) * sizeof(double));
        c->ref_lse = malloc((size_t)(rows + 1) * sizeof(double));
        if (!c->ref_o || !c->ref_lse)
            st = fmqa_err_set(err, FMQA_ERR_OUT_OF_MEMORY, "out of memory (reference)");
    }
    pref_job J = {c, k, {0}};
    fill_prefill_args(c, 0, &J.host, 1);
    if (st == FMQA_OK)
        st = tun_parallel(threads, n, reference_block, &J, err);
    free(k);
    return st;
}

/* Prefill scores (tun.h, TUN_SCORES_WINDOW): the zeroed buffer and
 * ref_prefill_scores of the leading sequences the budget affords. */
static fmqa_status scores_reference(tun_case *c, double budget, fmqa_err *err)
{
    const fmqa_problem *p = &c->p;
    const int64_t row = (int64_t)p->num_kv_heads * p->kv_len;
    fmqa_status st = host_alloc(&c->t[T_SC], (size_t)(p->batch * row) * 4, 0, err);
    int nb = 0;
    for (double used = 0; st == FMQA_OK && nb < p->batch; nb++) {
        const int32_t w = c->q_lens[nb] < TUN_SCORES_WINDOW ? c->q_lens[nb] : TUN_SCORES_WINDOW;
        used += (double)w * p->num_q_heads * c->lens[nb] * p->head_dim_qk;
        if (nb > 0 && used > budget)
            break;
    }
    c->ref_sc = st == FMQA_OK ? calloc((size_t)(nb * row + 1), sizeof *c->ref_sc) : NULL;
    if (st == FMQA_OK && !c->ref_sc)
        st = fmqa_err_set(err, FMQA_ERR_OUT_OF_MEMORY, "out of memory (scores reference)");
    if (st != FMQA_OK)
        return st;
    fmqa_problem lead = *p;
    lead.batch = nb;
    fmqa_prefill_args a;
    fill_prefill_args(c, 0, &a, 1);
    c->n_sc = nb * row;
    return ref_prefill_scores(&lead, &a, c->lay.n_pages, c->ref_sc, err);
}

/* Prefill inputs: cu_seqlens_q, q, K and V packed or the cache (drawn by
 * draw_caches), and the reference. */
static fmqa_status build_prefill(tun_case *c, uint64_t seed, const tun_case_opts *o, int threads,
                                 fmqa_err *err)
{
    const fmqa_problem *p = &c->p;
    fmqa_status st = host_alloc(&c->t[T_CU], (size_t)(p->batch + 1) * 4, 0, err);
    if (st != FMQA_OK)
        return st;
    int32_t *cu = c->t[T_CU].host;
    for (int b = 0; b < p->batch; b++)
        cu[b + 1] = cu[b] + c->q_lens[b];
    int64_t n = c->total_q = cu[p->batch];
    if ((st = draw_plain(c, seed, T_Q, p->q_dtype, n * p->num_q_heads, p->head_dim_qk, threads,
                         err)))
        return st;
    if (p->flags & FMQA_FLAG_KV_CACHE)
        st = draw_caches(c, seed, NULL, NULL, threads, err);
    else if (!(st = draw_plain(c, seed, T_K, p->kv_dtype, n * p->num_kv_heads, p->head_dim_qk,
                               threads, err)))
        st = draw_plain(c, seed, T_V, p->kv_dtype, n * p->num_kv_heads, p->head_dim_v, threads,
                        err);
    if (st != FMQA_OK)
        return st;
    c->t[T_O].bytes = (size_t)(n * p->num_q_heads * p->head_dim_v) * fmqa_dtype_size(p->out_dtype);
    c->t[T_LSE].bytes = (p->flags & FMQA_FLAG_LSE) ? (size_t)(n * p->num_q_heads) * 4 : 0;
    st = prefill_reference(c, seed, o->ref_macs, threads, err);
    if (st == FMQA_OK && (p->flags & FMQA_FLAG_SCORES))
        st = scores_reference(c, o->ref_macs > 0 ? o->ref_macs : TUN_PREFILL_REF_MACS, err);
    return st;
}

/* ---------------------------------------------------------------- create */

double tun_case_copy_bytes(const tun_case *c)
{
    double per = 0;
    for (int i = T_Q; i <= T_VN; i++)
        per += (double)c->t[i].bytes;
    return per;
}

/* The small inputs (lengths, page table, tree mask) come from one stream
 * seeded by `seed`, in this order; q, the caches, k_new and v_new from block
 * streams (block_rng), in parallel. */
static fmqa_status build(tun_case *c, uint64_t seed, const tun_case_opts *o, size_t ws,
                         int threads, fmqa_err *err)
{
    const fmqa_problem *p = &c->p;
    ref_rng rng;
    ref_rng_seed(&rng, seed);
    int decode = is_decode(p), q8 = is_8bit(p->kv_dtype);
    int64_t bt = (int64_t)p->batch * p->q_tokens;
    make_layout(p, &c->lay);
    c->lens = malloc((size_t)p->batch * sizeof *c->lens);
    c->q_lens = malloc((size_t)p->batch * sizeof *c->q_lens);
    if (!c->lens || !c->q_lens)
        return fmqa_err_set(err, FMQA_ERR_OUT_OF_MEMORY, "out of memory");
    if (is_prefill(p))
        draw_prefill_lens(c, &rng, o);
    else
        draw_lens(c, &rng, o->lens);
    fmqa_status st = check_lens(c, err);
    if (st == FMQA_OK)
        st = host_alloc(&c->t[T_LENS], (size_t)p->batch * 4, 0, err);
    if (st != FMQA_OK)
        return st;
    memcpy(c->t[T_LENS].host, c->lens, (size_t)p->batch * 4);
    if (decode && o->sinks) {
        if ((st = host_alloc(&c->t[T_SINKS], (size_t)p->num_q_heads * 4, 0, err)))
            return st;
        memcpy(c->t[T_SINKS].host, o->sinks, (size_t)p->num_q_heads * 4);
    }
    if ((p->flags & FMQA_FLAG_PAGED) && ((st = draw_pages(c, &rng, err)) ||
                                         (st = draw_page_forms(c, err))))
        return st;
    if ((p->flags & FMQA_FLAG_TREE_MASK) && (st = draw_mask(c, &rng, err)))
        return st;
    if (is_prefill(p)) {
        c->t[T_WS].bytes = ws;
        return build_prefill(c, seed, o, threads, err);
    }
    if ((decode || c->rope_q) &&
        (st = draw_plain(c, seed, T_Q, p->q_dtype, bt * p->num_q_heads, p->head_dim_qk, threads,
                         err)))
        return st;
    int64_t nk = (int64_t)p->batch * p->kv_len * p->num_kv_heads;
    double *fk = NULL, *fv = NULL;
    if (decode && q8) {
        /* NaN where nothing is held: written by draw_caches. */
        fk = malloc((size_t)(nk * (p->head_dim_qk + p->head_dim_v)) * sizeof *fk);
        if (!fk)
            return fmqa_err_set(err, FMQA_ERR_OUT_OF_MEMORY, "out of memory (full precision)");
        fv = fk + nk * p->head_dim_qk;
    }
    st = draw_caches(c, seed, fk, fv, threads, err);
    if (st == FMQA_OK && !decode)
        st = draw_plain(c, seed, T_KN, p->q_dtype, bt * p->num_kv_heads, p->head_dim_qk, threads,
                        err);
    if (st == FMQA_OK && !decode)
        st = draw_plain(c, seed, T_VN, p->q_dtype, bt * p->num_kv_heads, p->head_dim_v, threads,
                        err);
    if (st == FMQA_OK && decode) {
        /* Outputs: no host image, the device copy starts poisoned. */
        c->t[T_O].bytes = (size_t)(bt * p->num_q_heads * p->head_dim_v) *
                          fmqa_dtype_size(p->out_dtype);
        c->t[T_LSE].bytes = (p->flags & FMQA_FLAG_LSE) ? (size_t)(bt * p->num_q_heads) * 4 : 0;
        c->t[T_WS].bytes = ws;
        /* Heavy-hitter scores: zeros, added to by every call (timed or not);
         * the output and LSE are what is verified. */
        if (p->flags & FMQA_FLAG_SCORES)
            st = host_alloc(&c->t[T_SC],
                            (size_t)(p->batch * p->num_kv_heads * c->lay.slots) * 4, 0, err);
        if (st == FMQA_OK)
            st = decode_reference(c, fk, fv, threads, err);
    }
    free(fk);
    return st;
}

/* The argument checks tun_case_create makes before it needs a device. */
static fmqa_status check_request(const fmqa_problem *p, const tun_case_opts *o, fmqa_err *err)
{
    if (!writes_o(p) && p->op != FMQA_OP_APPEND)
        return fmqa_err_set(err, FMQA_ERR_UNSUPPORTED, "tun_case_create: op %s has no harness",
                            fmqa_op_name(p->op) ? fmqa_op_name(p->op) : "unknown");
    if (o->copies < 0 || o->copies > MAX_COPIES)
        return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT, "opts.copies = %d (0..%d)",
                            o->copies, MAX_COPIES);
    return rt_problem_check(p, err);
}

/* The host inputs and (decode) the reference of an already checked request. */
static fmqa_status create_host(const fmqa_problem *p, uint64_t seed, const tun_case_opts *o,
                               size_t workspace, int threads, tun_case **out, fmqa_err *err)
{
    tun_case *c = calloc(1, sizeof *c);
    if (!c)
        return fmqa_err_set(err, FMQA_ERR_OUT_OF_MEMORY, "out of memory");
    c->p = *p, c->sm_scale = o->sm_scale, c->rope_theta = o->rope_theta;
    c->rope_q = p->op == FMQA_OP_APPEND && o->rope_q;
    c->t[T_LENS].shared = c->t[T_PT].shared = c->t[T_MASK].shared = c->t[T_CU].shared = 1;
    c->t[T_O].shared = c->t[T_LSE].shared = c->t[T_WS].shared = c->t[T_SINKS].shared = 1;
    c->t[T_CSR].shared = c->t[T_SLOTS].shared = 1;
    fmqa_status st = build(c, seed, o, workspace, threads > 0 ? threads : tun_host_threads(), err);
    if (st != FMQA_OK) {
        tun_case_destroy(c);
        return st;
    }
    *out = c;
    return FMQA_OK;
}

fmqa_status tun_case_create_host(const fmqa_problem *p, uint64_t seed, const tun_case_opts *opts,
                                 int threads, tun_case **out, fmqa_err *err)
{
    tun_case_opts dflt = TUN_CASE_OPTS_INIT;
    const tun_case_opts *o = opts ? opts : &dflt;
    if (!p || !out)
        return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT, "tun_case_create_host: NULL argument");
    fmqa_status st = check_request(p, o, err);
    return st != FMQA_OK ? st : create_host(p, seed, o, 0, threads, out, err);
}

fmqa_status tun_case_create(fmqa_ctx_t *ctx, const fmqa_problem *p, uint64_t seed,
                            const tun_case_opts *opts, size_t workspace, tun_case **out,
                            fmqa_err *err)
{
    tun_case_opts dflt = TUN_CASE_OPTS_INIT;
    const tun_case_opts *o = opts ? opts : &dflt;
    if (!ctx || !p || !out)
        return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT, "tun_case_create: NULL argument");
    fmqa_status st = check_request(p, o, err);
    if (st == FMQA_OK)
        st = rt_device(ctx, err);
    tun_case *c = NULL;
    if (st == FMQA_OK)
        st = create_host(p, seed, o, workspace, 0, &c, err);
    if (st != FMQA_OK)
        return st;
    c->ctx = ctx;
    c->copies = o->copies ? o->copies
                         : tun_rotation_copies(tun_case_copy_bytes(c), ctx->info.l2_bytes);
    if (p->op == FMQA_OP_APPEND)  /* the cache is the output: one copy */
        c->t[T_K].shared = c->t[T_V].shared = c->t[T_KS].shared = c->t[T_VS].shared = 1;
    st = rt_enter(ctx, err);
    if (st == FMQA_OK) {
        st = upload(c, err);
        rt_leave(ctx);
    }
    if (st == FMQA_OK && p->op == FMQA_OP_APPEND)
        st = append_reference(c, err);
    if (st != FMQA_OK) {
        tun_case_destroy(c);
        return st;
    }
    for (int k = 0; k < c->copies; k++) {
        fill_decode_args(c, k, &c->dargs[k], 0);
        fill_append_args(c, k, &c->aargs[k], 0);
        fill_prefill_args(c, k, &c->pargs[k], 0);
    }
    *out = c;
    return FMQA_OK;
}

/* A position counts once if any query token of its sequence sees it (window,
 * sinks, ring, causal and tree rules of ref_visible): a sliding window on a
 * contiguous cache reads about `window` rows, not kv_lens[b]. */
double tun_case_kv_bytes(const tun_case *c)
{
    const fmqa_problem *p = &c->p;
    ref_attn_shape s = attn_shape(c);
    if (!is_decode(p) || ref_attn_shape_check(&s, NULL) != FMQA_OK)
        return 0;
    /* MLA: one latent row (and scale) serves as K and V */
    int kv_rows = is_mla(p) ? 1 : 2;
    double row = (double)fmqa_dtype_size(p->kv_dtype) *
                     (p->head_dim_qk + (is_mla(p) ? 0 : p->head_dim_v)) +
                 (is_8bit(p->kv_dtype) ? 4.0 * kv_rows : 0.0);
    double rows = 0;
    for (int64_t b = 0; b < p->batch; b++)
        for (int64_t j = 0; j < c->lens[b]; j++) {
            int seen = 0;
            for (int64_t t = 0; t < p->q_tokens && !seen; t++)
                seen = ref_visible(&s, b, t, j);
            rows += seen;
        }
    return rows * p->num_kv_heads * row;
}

/* ---------------------------------------------------------------- running */

fmqa_status tun_case_poison(tun_case *c, CUstream stream, fmqa_err *err)
{
    const rt_cuda *cu = cu_of(c);
    static const int dec[] = {T_O, T_LSE}, app[] = {T_K, T_V, T_KS, T_VS};
    int decode = writes_o(&c->p);
    fmqa_status st = rt_enter(c->ctx, err);
    if (st != FMQA_OK)
        return st;
    for (int i = 0; i < (decode ? 2 : 4) && st == FMQA_OK; i++) {
        tensor *t = &c->t[decode ? dec[i] : app[i]];
        if (!t->bytes)
            continue;
        CUresult r = cu->cuMemsetD8Async(t->dev[0], POISON, t->bytes, stream);
        if (r != CUDA_SUCCESS)
            st = rt_cuda_error(err, r, "cuMemsetD8Async (poison)");
    }
    if (st == FMQA_OK && is_prefill(&c->p) && c->t[T_SC].bytes) { /* added to: from zero */
        CUresult r = cu->cuMemsetD8Async(c->t[T_SC].dev[0], 0, c->t[T_SC].bytes, stream);
        if (r != CUDA_SUCCESS)
            st = rt_cuda_error(err, r, "cuMemsetD8Async (scores)");
    }
    if (st == FMQA_OK && c->q_orig) {
        CUresult r = cu->cuMemcpyHtoDAsync(c->t[T_Q].dev[0], c->q_orig, c->t[T_Q].bytes, stream);
        if (r != CUDA_SUCCESS)
            st = rt_cuda_error(err, r, "cuMemcpyHtoDAsync (q)");
    }
    if (st == FMQA_OK) {
        CUresult r = cu->cuStreamSynchronize(stream);
        if (r != CUDA_SUCCESS)
            st = rt_cuda_error(err, r, "cuStreamSynchronize (poison)");
    }
    rt_leave(c->ctx);
    return st;
}

fmqa_status tun_case_run_plan(tun_case *c, const rt_plan *plan, int copy, CUstream stream,
                              fmqa_err *err)
{
    union {
        fmqa_decode_params d;
        fmqa_append_params a;
        rt_prefill_kernel_params p;
    } params;
    int k = copy % c->copies;
    if (!plan || plan->problem.op != c->p.op)
        return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT,
                            "tun_case_run_plan: plan is NULL or of another op");
    fmqa_status st =
        is_decode(&c->p)    ? rt_decode_params(plan, &c->dargs[k], &params.d, err)
        : is_prefill(&c->p) ? rt_prefill_kernel_params_fill(cu_of(c), plan, &c->pargs[k], &params.p,
                                                            err)
                            : rt_append_params(plan, &c->aargs[k], &params.a, err);
    if (st == FMQA_OK)
        st = rt_enter(c->ctx, err);
    if (st != FMQA_OK)
        return st;
    st = rt_plan_launch(c->ctx, plan, &params, stream, err);
    rt_leave(c->ctx);
    return st;
}

/* The public MLA arguments the harness's decode view of an MLA case stands
 * for (rt_mla_decode_args in reverse). */
static fmqa_mla_decode_args mla_args_of(const fmqa_decode_args *d)
{
    fmqa_mla_decode_args m;
    memset(&m, 0, sizeof m);
    m.q = d->q;
    m.q_stride_batch = d->q_stride_batch, m.q_stride_token = d->q_stride_token;
    m.q_stride_head = d->q_stride_head;
    m.kv = d->k, m.kv_stride_batch = d->k_stride_batch, m.kv_stride_token = d->k_stride_token;
    m.kv_scale = d->k_scale;
    m.kv_scale_stride_batch = d->k_scale_stride_batch;
    m.kv_scale_stride_token = d->k_scale_stride_token;
    m.kv_lens = d->kv_lens, m.page_table = d->page_table;
    m.page_table_stride = d->page_table_stride;
    m.o = d->o;
    m.o_stride_batch = d->o_stride_batch, m.o_stride_token = d->o_stride_token;
    m.o_stride_head = d->o_stride_head;
    m.lse = d->lse, m.sm_scale = d->sm_scale;
    m.workspace = d->workspace, m.workspace_size = d->workspace_size;
    m.page_indptr = d->page_indptr, m.page_indices = d->page_indices;
    m.last_page_len = d->last_page_len;
    m.sinks = d->sinks;
    return m;
}

fmqa_status tun_case_run_api(tun_case *c, int copy, CUstream stream, fmqa_err *err)
{
    int k = copy % c->copies;
    fmqa_status st;
    if (is_mla(&c->p)) {
        fmqa_mla_decode_args m = mla_args_of(&c->dargs[k]);
        st = fmqa_mla_decode(c->ctx, &c->p, &m, (fmqa_stream_t)stream);
    } else if (is_prefill(&c->p)) {
        st = fmqa_prefill(c->ctx, &c->p, &c->pargs[k], (fmqa_stream_t)stream);
    } else {
        st = c->p.op == FMQA_OP_DECODE
                 ? fmqa_decode(c->ctx, &c->p, &c->dargs[k], (fmqa_stream_t)stream)
                 : fmqa_append(c->ctx, &c->p, &c->aargs[k], (fmqa_stream_t)stream);
    }
    if (st != FMQA_OK)
        fmqa_err_set(err, st, "%s", fmqa_ctx_errmsg(c->ctx));
    return st;
}

/* ---------------------------------------------------------------- verifying */

static fmqa_status download(tun_case *c, int i, void *host, fmqa_err *err)
{
    RT_CU(err, cu_of(c)->cuMemcpyDtoH(host, c->t[i].dev[0], c->t[i].bytes), "cuMemcpyDtoH");
    return FMQA_OK;
}

static fmqa_status verify_decode(tun_case *c, tun_report *r, fmqa_err *err)
{
    const fmqa_problem *p = &c->p;
    int64_t rows = (int64_t)p->batch * p->q_tokens * p->num_q_heads;
    int64_t n = rows * p->head_dim_v;
    void *o = malloc(c->t[T_O].bytes);
    float *lse = malloc(c->t[T_LSE].bytes + 4);
    fmqa_status st = o && lse ? FMQA_OK
                              : fmqa_err_set(err, FMQA_ERR_OUT_OF_MEMORY, "out of memory");
    if (st == FMQA_OK)
        st = download(c, T_O, o, err);
    if (st == FMQA_OK && c->t[T_LSE].bytes)
        st = download(c, T_LSE, lse, err);
    if (st == FMQA_OK)
        st = ref_compare(p->out_dtype, o, c->ref_o, n, &r->out, err);
    if (st == FMQA_OK && c->full_o)
        st = ref_compare(p->out_dtype, o, c->full_o, n, &r->full, err);
    if (st == FMQA_OK && c->t[T_LSE].bytes)
        st = ref_compare(FMQA_DTYPE_F32, lse, c->ref_lse, rows, &r->lse, err);
    if (st == FMQA_OK) {
        r->poisoned = ref_poison_count(o, fmqa_dtype_size(p->out_dtype), n, REF_POISON_32);
        if (c->t[T_LSE].bytes)
            r->poisoned += ref_poison_count(lse, 4, rows, REF_POISON_32);
    }
    free(o);
    free(lse);
    return st;
}

/* Dequantized or decoded value i of a cache tensor; scale row = i / d. */
static double cache_value(const fmqa_problem *p, const void *data, const float *scale,
                          int64_t i, int64_t d)
{
    double x;
    if (is_8bit(p->kv_dtype))
        return ref_dequantize(p->kv_dtype, data, i, scale[i / d]);
    ref_to_double(p->kv_dtype, (const char *)data + i * (int64_t)fmqa_dtype_size(p->kv_dtype),
                  1, &x, NULL);
    return x;
}

/* Appends the written elements of cache tensor `which` (K or V) to out / ref and
 * counts poisoned elements and stray bytes. */
static void collect_cache(tun_case *c, int which, const void *dev, const float *dev_scale,
                          float *out, double *ref, int64_t *n, tun_report *r)
{
    const fmqa_problem *p = &c->p;
    int64_t d = which == T_K ? p->head_dim_qk : p->head_dim_v;
    size_t es = fmqa_dtype_size(p->kv_dtype);
    const uint8_t *mask = c->written[which == T_K ? 0 : 1];
    const uint8_t *host = c->t[which].host, *got = dev;
    int64_t elems = (int64_t)(c->t[which].bytes / es);
    const float *host_scale = c->t[which == T_K ? T_KS : T_VS].host;
    for (int64_t i = 0; i < elems; i++) {
        if (!mask[(size_t)i * es]) {
            r->stray += memcmp(host + i * (int64_t)es, got + i * (int64_t)es, es) != 0;
            continue;
        }
        int poisoned = 1;
        for (size_t b = 0; b < es; b++)
            poisoned &= got[(size_t)i * es + b] == POISON;
        if (is_8bit(p->kv_dtype))
            poisoned = ref_poison_count(&dev_scale[i / d], 4, 1, REF_POISON_32) == 1;
        r->poisoned += poisoned;
        out[*n] = (float)cache_value(p, got, dev_scale, i, d);
        ref[(*n)++] = cache_value(p, host, host_scale, i, d);
    }
}

static fmqa_status verify_append(tun_case *c, tun_report *r, fmqa_err *err)
{
    const fmqa_problem *p = &c->p;
    size_t kb = c->t[T_K].bytes, vb = c->t[T_V].bytes, sb = c->t[T_KS].bytes;
    size_t qn = c->rope_q ? c->t[T_Q].bytes / fmqa_dtype_size(p->q_dtype) : 0;
    size_t total = (kb + vb) / fmqa_dtype_size(p->kv_dtype) + qn;
    uint8_t *buf = malloc(kb + vb + 2 * sb + c->t[T_Q].bytes + 16);
    float *out = malloc(total * sizeof *out + 4);
    double *ref = malloc(total * sizeof *ref + 8);
    fmqa_status st = buf && out && ref
                         ? FMQA_OK
                         : fmqa_err_set(err, FMQA_ERR_OUT_OF_MEMORY, "out of memory");
    uint8_t *k = buf, *v = k + kb, *ks = v + vb, *vs = ks + sb, *q = vs + sb;
    if (st == FMQA_OK)
        st = download(c, T_K, k, err);
    if (st == FMQA_OK)
        st = download(c, T_V, v, err);
    if (st == FMQA_OK && sb)
        st = download(c, T_KS, ks, err);
    if (st == FMQA_OK && sb)
        st = download(c, T_VS, vs, err);
    if (st == FMQA_OK && qn)
        st = download(c, T_Q, q, err);
    if (st == FMQA_OK) {
        int64_t n = 0;
        collect_cache(c, T_K, k, (const float *)ks, out, ref, &n, r);
        collect_cache(c, T_V, v, (const float *)vs, out, ref, &n, r);
        /* Scales outside the written rows must stay poisoned too. */
        for (size_t i = 0; i < sb; i++)
            r->stray += (!c->written[2][i] && ks[i] != POISON) +
                        (!c->written[3][i] && vs[i] != POISON);
        st = ref_to_double(p->q_dtype, q, (int64_t)qn, ref + n, err);  /* kernel's q */
        for (size_t i = 0; st == FMQA_OK && i < qn; i++)
            out[n + (int64_t)i] = (float)ref[n + (int64_t)i];
        if (st == FMQA_OK)
            st = ref_to_double(p->q_dtype, c->t[T_Q].host, (int64_t)qn, ref + n, err);
        if (st == FMQA_OK)
            st = ref_compare(FMQA_DTYPE_F32, out, ref, n + (int64_t)qn, &r->out, err);
    }
    free(buf);
    free(out);
    free(ref);
    return st;
}

/* NaN and infinities among n values of dtype at data. */
static int64_t nonfinite(fmqa_dtype dtype, const void *data, int64_t n)
{
    double x[1024];
    int64_t bad = 0;
    size_t es = fmqa_dtype_size(dtype);
    for (int64_t i = 0; i < n; i += 1024) {
        int64_t m = n - i < 1024 ? n - i : 1024;
        if (ref_to_double(dtype, (const char *)data + (size_t)i * es, m, x, NULL) != FMQA_OK)
            return n;
        for (int64_t j = 0; j < m; j++)
            bad += !isfinite(x[j]);
    }
    return bad;
}

/* Prefill: the checked rows of o (and lse) gathered and compared with the
 * reference; the others only scanned for NaN; poison counted everywhere. */
static fmqa_status compare_prefill(const tun_case *c, const void *o, const float *lse,
                                   const float *scores, tun_report *r, fmqa_err *err)
{
    const fmqa_problem *p = &c->p;
    const int64_t H = p->num_q_heads, hd = H * p->head_dim_v, m = c->n_checked;
    const size_t es = fmqa_dtype_size(p->out_dtype), row = (size_t)hd * es;
    const int with_lse = (p->flags & FMQA_FLAG_LSE) != 0;
    char *got = malloc((size_t)m * row + 1);
    float *got_lse = malloc((size_t)(m * H + 1) * sizeof *got_lse);
    if (!got || !got_lse) {
        free(got), free(got_lse);
        return fmqa_err_set(err, FMQA_ERR_OUT_OF_MEMORY, "out of memory");
    }
    int64_t i = 0, o_bad = 0, lse_bad = 0;
    for (int64_t t = 0; t < c->total_q; t++) {
        const char *src = (const char *)o + (size_t)t * row;
        if (i < m && c->checked[i] == t) {
            memcpy(got + (size_t)i * row, src, row);
            if (with_lse)
                memcpy(got_lse + i * H, lse + t * H, (size_t)H * sizeof *lse);
            i++;
            continue;
        }
        o_bad += nonfinite(p->out_dtype, src, hd);
        lse_bad += with_lse ? nonfinite(FMQA_DTYPE_F32, lse + t * H, H) : 0;
    }
    fmqa_status st = ref_compare(p->out_dtype, got, c->ref_o, m * hd, &r->out, err);
    if (st == FMQA_OK && with_lse)
        st = ref_compare(FMQA_DTYPE_F32, got_lse, c->ref_lse, m * H, &r->lse, err);
    r->out.bad += o_bad, r->lse.bad += lse_bad;
    r->poisoned = ref_poison_count(o, es, c->total_q * hd, REF_POISON_32) +
                  (with_lse ? ref_poison_count(lse, 4, c->total_q * H, REF_POISON_32) : 0);
    if (st == FMQA_OK && c->n_sc) {
        st = ref_compare(FMQA_DTYPE_F32, scores, c->ref_sc, c->n_sc, &r->scores, err);
        r->scores.bad += nonfinite(FMQA_DTYPE_F32, scores + c->n_sc,
                                   (int64_t)(c->t[T_SC].bytes / 4) - c->n_sc);
    }
    free(got), free(got_lse);
    return st;
}

static fmqa_status verify_prefill(tun_case *c, tun_report *r, fmqa_err *err)
{
    void *o = malloc(c->t[T_O].bytes + 1);
    float *lse = malloc(c->t[T_LSE].bytes + 4), *sc = malloc(c->t[T_SC].bytes + 4);
    fmqa_status st = o && lse && sc ? FMQA_OK
                                    : fmqa_err_set(err, FMQA_ERR_OUT_OF_MEMORY, "out of memory");
    if (st == FMQA_OK)
        st = download(c, T_O, o, err);
    if (st == FMQA_OK && c->t[T_LSE].bytes)
        st = download(c, T_LSE, lse, err);
    if (st == FMQA_OK && c->t[T_SC].bytes)
        st = download(c, T_SC, sc, err);
    if (st == FMQA_OK)
        st = compare_prefill(c, o, lse, sc, r, err);
    free(o);
    free(lse);
    free(sc);
    return st;
}

/* pass and summary from the comparisons. */
static void finish_report(tun_report *r)
{
    tun_report rep = *r;
    rep.pass = rep.out.bad == 0 && rep.poisoned == 0 && rep.stray == 0 &&
               rep.out.rel_l2 <= rep.rel_tol &&
               (rep.lse.n == 0 || (rep.lse.bad == 0 && rep.lse.rel_l2 <= rep.rel_tol)) &&
               rep.scores.bad == 0 && (rep.scores.n == 0 || rep.scores.rel_l2 <= rep.rel_tol);
    int len = snprintf(rep.summary, sizeof rep.summary,
                       "rel_l2 %.2e max_abs %.2e nan %lld poisoned %lld", rep.out.rel_l2,
                       rep.out.max_abs, (long long)rep.out.bad, (long long)rep.poisoned);
    if (rep.full.n && len > 0 && (size_t)len < sizeof rep.summary)
        len += snprintf(rep.summary + len, sizeof rep.summary - (size_t)len,
                        " | vs full precision rel_l2 %.2e", rep.full.rel_l2);
    if (rep.lse.n && len > 0 && (size_t)len < sizeof rep.summary)
        len += snprintf(rep.summary + len, sizeof rep.summary - (size_t)len,
                        " | lse rel_l2 %.2e", rep.lse.rel_l2);
    if (rep.scores.n && len > 0 && (size_t)len < sizeof rep.summary)
        len += snprintf(rep.summary + len, sizeof rep.summary - (size_t)len,
                        " | scores rel_l2 %.2e nan %lld", rep.scores.rel_l2,
                        (long long)rep.scores.bad);
    if (rep.stray && len > 0 && (size_t)len < sizeof rep.summary)
        snprintf(rep.summary + len, sizeof rep.summary - (size_t)len, " | %lld stray bytes",
                 (long long)rep.stray);
    *r = rep;
}

fmqa_status tun_case_check_prefill(const tun_case *c, const void *o, const float *lse,
                                   const float *scores, tun_report *r, fmqa_err *err)
{
    tun_report rep;
    memset(&rep, 0, sizeof rep);
    rep.rel_tol = tun_rel_tol(c->p.out_dtype);
    if (!is_prefill(&c->p) || !o || ((c->p.flags & FMQA_FLAG_LSE) && !lse) ||
        ((c->p.flags & FMQA_FLAG_SCORES) && !scores))
        return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT, "tun_case_check_prefill: not a "
                            "prefill case, or o / lse / scores is NULL");
    fmqa_status st = compare_prefill(c, o, lse, scores, &rep, err);
    if (st != FMQA_OK)
        return st;
    finish_report(&rep);
    *r = rep;
    return FMQA_OK;
}

fmqa_status tun_case_verify(tun_case *c, CUstream stream, tun_report *r, fmqa_err *err)
{
    tun_report rep;
    memset(&rep, 0, sizeof rep);
    rep.rel_tol = tun_rel_tol(writes_o(&c->p) ? c->p.out_dtype : c->p.q_dtype);
    fmqa_status st = rt_enter(c->ctx, err);
    if (st != FMQA_OK)
        return st;
    CUresult res = cu_of(c)->cuStreamSynchronize(stream);
    if (res != CUDA_SUCCESS)
        st = rt_cuda_error(err, res, "cuStreamSynchronize (kernel under test)");
    if (st == FMQA_OK)
        st = is_decode(&c->p)    ? verify_decode(c, &rep, err)
             : is_prefill(&c->p) ? verify_prefill(c, &rep, err)
                                 : verify_append(c, &rep, err);
    rt_leave(c->ctx);
    if (st != FMQA_OK)
        return st;
    finish_report(&rep);
    *r = rep;
    return FMQA_OK;
}
