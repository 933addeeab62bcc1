/*
 * bench_levels.c -- `fastmqa-bench levels`: the assessment of the optimization
 * levels for one model shape (default hidden 2048, 32 heads, MHA, 1024 tokens).
 *
 * For each level and each data set it prints the memory report of one layer
 * (fmqa_memory_report_compute) and the output error of one decode step against
 * exact attention: full context, full precision, float64 (reference/ref.h).
 * A level's output is computed by the same reference on what the level's cache
 * would hold: q and the 16-bit cache rounded to their dtype, 8-bit rows quantized
 * and dequantized (ref_quantize_row), the window + sinks of the policy applied
 * (FMQA_FLAG_RING with a window), spec_tokens query tokens (causal), and the
 * output rounded to the model dtype.  The error is therefore the level's own
 * approximation error, not a kernel's; kernels are checked against the same
 * reference elsewhere.
 *
 * Data sets (docs/levels.md states them; a fixed seed makes runs reproducible):
 *   random      q, k, v ~ N(0, 1): attention spread over all positions, the
 *               worst case for a window;
 *   sink+local  v ~ N(0, 1); each KV head g has a direction c_g ~ N(0, I_d);
 *               q = c_g + 0.5 N(0, I_d); k_j = 0.5 N(0, I_d) + b_j sqrt(d)
 *               c_g / |c_g|^2, so that score_j ~ b_j + N(0, ~0.5^2) with
 *               b_j = 8 for the 4 first positions (sinks) and
 *               b_j = 6 exp(-(T-1-j)/32) elsewhere (a recent neighbourhood);
 *   heavy       sink+local plus recurring heavy hitters: per KV head, T / 32
 *               positions drawn uniformly from [4, T - 128) (far from every
 *               query) get b_j = 5 + 2 U(0, 1).  It imitates what H2O (Zhang et
 *               al., 2023, Fig. 2: a small set of tokens keeps receiving most of
 *               the attention, throughout the sequence) and SnapKV (Li et al.,
 *               2024, Sec. 3: the positions a prompt's last window attends to
 *               stay the ones later queries attend to) observe in real models.
 * A compressed level (heavy > 0) chooses what it keeps from exactly the scores
 * its policy collects before a compaction (fmqa_level_step): score_steps
 * decode steps of spec_tokens query tokens each, summed (H2O's accumulation
 * over SnapKV's observation window), here query tokens 8 .. 8 + score_steps x
 * spec_tokens - 1 of the same data, which the evaluated tokens 0..3 never
 * are, over the whole cache; the choice is ref_compress_select's
 * (fmqa_compress's exact reference), per KV head.  Queries beyond the first
 * 16 come from a random stream of their own, so the rest of the data does not
 * depend on how many there are.  The
 * table prints each level's amortised score cost (fmqa_score_cost_bytes x
 * score_steps / compress_every).
 *
 * Beside the seed model it assesses an MLA model, DeepSeek-V3's attention (128
 * heads, head dim 128, latent 512 + rope 64) at the same length and dtype: the
 * same data sets built on its absorbed form (one latent K row of 576 per token
 * shared by all heads, V = the row's first 512, queries of 576), so its levels'
 * errors come from the same float64 reference; the 8-bit level quantizes the
 * whole 576-row with one scale, as the MLA cache stores it.
 *
 * The "claims" section tests the figures the project started from (64x, 128x,
 * 512x at max error < 0.1 "against MHA"): for each, the cheapest MQA + int8 +
 * window configuration that reaches the multiplier, and its error both against
 * the MHA layer it replaces (K and V mean-pooled over the heads, the usual
 * uptraining-free conversion) and, on data built as MQA, against exact attention
 * of that MQA layer (the cache configuration's own error).
 *
 * The decode time column calls bench_decode_step_us() (bench.h) only when a GPU
 * is present.  All memory is freed before returning.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "fmqa_common.h"
#include "ref.h"

#define LV_MAX_ABS 0.1        /* the claim: max error under 0.1                 */
#define LV_SINKS 4
#define LV_SEED 20240601u
#define LV_CACHE_DTYPE_ANY 0

enum { LV_RANDOM, LV_STRUCTURED, LV_HEAVY, LV_NDATA };
static const char *const data_names[LV_NDATA] = {"random", "sink+local", "heavy"};
#define LV_OBS_FIRST 8          /* observation window: query tokens 8, 9, ...  */
#define LV_QUERIES 16           /* query tokens of a data set at least         */

/* Relative L2 budget per level, indexed by fmqa_level: conservative is fp16
 * rounding (DESIGN.md: ~1e-3), the others add a stated approximation. */
static const double rel_budget[] = {0, 2e-3, 5e-2, 1e-1};

static const double claims[] = {64, 128, 512};
static const char *const claim_label[] = {"cons 64x", "bal 128x", "aggr 512x"};

typedef struct lv_args {
    fmqa_model_config model;
    fmqa_model_config mla;  /* the MLA model assessed beside it */
    fmqa_dtype kv8;     /* 8-bit type of the aggressive level, 0 = preset's */
    int json, no_mla, allow_fail;
} lv_args;

/* One error measurement. */
typedef struct lv_err {
    double max_abs, rel_l2;
} lv_err;

/* Inputs of one data set: q for tq >= 16 query tokens (levels evaluate a
 * prefix and observe from token LV_OBS_FIRST on) and
 * k, v for `kv_heads` heads.  latent: MLA's absorbed form, v is the first dv
 * elements of each k row (and is stored as k is).  Owns its arrays. */
typedef struct lv_data {
    int64_t tq, t, h, hkv, d, dv;
    int latent;
    double *q, *k, *v;
} lv_data;

/* ------------------------------------------------------------ options */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: fastmqa-bench levels [options]\n"
            "  --hidden N      hidden size (default 2048)\n"
            "  --heads N       query heads (default 32; head dim = hidden / heads)\n"
            "  --kv-heads N    KV heads, 1 = MQA (default = heads: MHA)\n"
            "  --seq N         max sequence length (default 1024)\n"
            "  --kv-dtype T    8-bit cache of the aggressive level: int8 or fp8_e4m3\n"
            "                  (default: the preset's, int8)\n"
            "  --no-mla        skip the MLA model (DeepSeek-V3 attention: 128 heads,\n"
            "                  head dim 128, latent 512 + rope 64, same --seq)\n"
            "  --json          one JSON document instead of the tables\n"
            "  --allow-fail    exit 0 even with FAIL rows, when they are expected (the\n"
            "                  random data set defeats every level that drops tokens)\n"
            "  --help          this text\n"
            "Errors are against exact float64 attention; see docs/levels.md.\n"
            "Exit status: 0 every row passes (or --allow-fail), 1 a row FAILs (the tables\n"
            "are printed first) or an error, 2 bad usage.\n");
}

/* Parses a positive int32 option value; prints why not. */
static int parse_pos(const char *opt, const char *s, int32_t *out)
{
    int64_t v;
    if (fmqa_parse_i64(s, 1, INT32_MAX, &v)) {
        fprintf(stderr, "fastmqa-bench levels: %s expects a positive integer, got '%s'\n",
                opt, s ? s : "(nothing)");
        return -1;
    }
    *out = (int32_t)v;
    return 0;
}

static int parse_kv_dtype(const char *s, fmqa_dtype *out)
{
    if (s && !strcmp(s, "int8")) {
        *out = FMQA_DTYPE_INT8;
        return 0;
    }
    if (s && (!strcmp(s, "fp8_e4m3") || !strcmp(s, "fp8"))) {
        *out = FMQA_DTYPE_FP8_E4M3;
        return 0;
    }
    fprintf(stderr, "fastmqa-bench levels: --kv-dtype expects int8 or fp8_e4m3, got '%s'\n",
            s ? s : "(nothing)");
    return -1;
}

/* 0 ok, 1 help printed, 2 bad usage (message printed). */
static int parse_args(int argc, char **argv, lv_args *a)
{
    *a = (lv_args){.model = {.hidden_size = 2048, .num_q_heads = 32, .num_kv_heads = 0,
                             .max_seq_len = 1024, .dtype = FMQA_DTYPE_F16}};
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        int rc = 0;
        if (!strcmp(o, "--help") || !strcmp(o, "-h")) {
            usage(stdout);
            return 1;
        } else if (!strcmp(o, "--json")) {
            a->json = 1;
            continue;
        } else if (!strcmp(o, "--no-mla") || !strcmp(o, "--allow-fail")) {
            *(o[2] == 'n' ? &a->no_mla : &a->allow_fail) = 1;
            continue;
        } else if (!strcmp(o, "--hidden")) {
            rc = parse_pos(o, val, &a->model.hidden_size);
        } else if (!strcmp(o, "--heads")) {
            rc = parse_pos(o, val, &a->model.num_q_heads);
        } else if (!strcmp(o, "--kv-heads")) {
            rc = parse_pos(o, val, &a->model.num_kv_heads);
        } else if (!strcmp(o, "--seq")) {
            rc = parse_pos(o, val, &a->model.max_seq_len);
        } else if (!strcmp(o, "--kv-dtype")) {
            rc = parse_kv_dtype(val, &a->kv8);
        } else {
            fprintf(stderr, "fastmqa-bench levels: unknown option '%s'\n", o);
            usage(stderr);
            return 2;
        }
        if (rc)
            return 2;
        i++; /* the value */
    }
    if (a->model.num_kv_heads == 0)
        a->model.num_kv_heads = a->model.num_q_heads;
    a->mla = (fmqa_model_config){.hidden_size = 7168, .num_q_heads = 128, .num_kv_heads = 128,
                                 .head_dim = 128, .mla_latent_dim = 512, .mla_rope_dim = 64,
                                 .max_seq_len = a->model.max_seq_len, .dtype = a->model.dtype};
    return 0;
}

/* ------------------------------------------------------------ data */

static void data_free(lv_data *x)
{
    free(x->q);
    free(x->k);
    free(x->v);
    *x = (lv_data){0};
}

static int data_alloc(lv_data *x, int64_t tq, int64_t t, int64_t h, int64_t hkv, int64_t d,
                      int64_t dv)
{
    *x = (lv_data){.tq = tq, .t = t, .h = h, .hkv = hkv, .d = d, .dv = dv};
    x->q = malloc(sizeof(double) * (size_t)(tq * h * d));
    x->k = malloc(sizeof(double) * (size_t)(t * hkv * d));
    x->v = malloc(sizeof(double) * (size_t)(t * hkv * dv));
    if (x->q && x->k && x->v)
        return 0;
    data_free(x);
    return -1;
}

/* The sink+local (and, heavy > 0, heavy-hitter) construction of the file
 * comment, on top of q, k, v already filled with N(0, 1). */
static int make_structured(lv_data *x, ref_rng *rng, int heavy)
{
    int64_t d = x->d, g_size = x->h / x->hkv;
    double *c = malloc(sizeof(double) * (size_t)(x->hkv * d));
    if (!c)
        return -1;
    ref_rng_fill(rng, c, x->hkv * d, 1.0, 0);
    for (int64_t i = 0; i < x->tq * x->h; i++) {
        const double *cg = c + (i % x->h) / g_size * d;
        for (int64_t e = 0; e < d; e++)
            x->q[i * d + e] = cg[e] + 0.5 * x->q[i * d + e];
    }
    double *bias = malloc(sizeof(double) * (size_t)(x->t * x->hkv));
    if (!bias) {
        free(c);
        return -1;
    }
    for (int64_t j = 0; j < x->t; j++)
        for (int64_t g = 0; g < x->hkv; g++)
            bias[j * x->hkv + g] = j < LV_SINKS ? 8.0 : 6.0 * exp(-(double)(x->t - 1 - j) / 32.0);
    for (int64_t g = 0; heavy && x->t > LV_SINKS + 128 && g < x->hkv; g++)
        for (int64_t i = 0; i < x->t / 32; i++) {
            int64_t j = LV_SINKS + (int64_t)(ref_rng_uniform(rng) * (double)(x->t - 128 - LV_SINKS));
            bias[j * x->hkv + g] = 5.0 + 2.0 * ref_rng_uniform(rng);
        }
    for (int64_t j = 0; j < x->t; j++) {
        for (int64_t g = 0; g < x->hkv; g++) {
            double b = bias[j * x->hkv + g];
            const double *cg = c + g * d;
            double n2 = 0;
            for (int64_t e = 0; e < d; e++)
                n2 += cg[e] * cg[e];
            double *k = x->k + (j * x->hkv + g) * d;
            for (int64_t e = 0; e < d; e++)
                k[e] = 0.5 * k[e] + b * sqrt((double)d) * cg[e] / n2;
        }
    }
    free(bias);
    free(c);
    return 0;
}

/* v of a latent layer: the first dv elements of every k row. */
static void latent_v(const lv_data *x, const double *k, double *v)
{
    for (int64_t r = 0; r < x->t * x->hkv; r++)
        memcpy(v + r * x->dv, k + r * x->d, sizeof(double) * (size_t)x->dv);
}

/* Data of model m with hkv KV heads and tq query tokens; an MLA model's is its
 * absorbed form (one latent K row of latent + rope per token, V its first
 * latent elements). */
static int data_make(lv_data *x, int kind, const fmqa_model_config *m, int64_t hkv, int64_t tq)
{
    int mla = m->mla_latent_dim > 0;
    int64_t d = mla ? m->mla_latent_dim + m->mla_rope_dim : m->hidden_size / m->num_q_heads;
    int64_t dv = mla ? m->mla_latent_dim : d;
    if (data_alloc(x, tq, m->max_seq_len, m->num_q_heads, mla ? 1 : hkv, d, dv))
        return -1;
    x->latent = mla;
    /* queries beyond the first 16 from a stream of their own: the data does
       not depend on tq */
    ref_rng rng, qrng;
    ref_rng_seed(&rng, LV_SEED + (uint64_t)kind);
    ref_rng_seed(&qrng, LV_SEED + LV_NDATA + (uint64_t)kind);
    ref_rng_fill(&rng, x->q, LV_QUERIES * x->h * d, 1.0, 0);
    ref_rng_fill(&rng, x->k, x->t * x->hkv * d, 1.0, 0);
    ref_rng_fill(&rng, x->v, x->t * x->hkv * dv, 1.0, 0);
    ref_rng_fill(&qrng, x->q + LV_QUERIES * x->h * d, (x->tq - LV_QUERIES) * x->h * d, 1.0, 0);
    if (kind != LV_RANDOM && make_structured(x, &rng, kind == LV_HEAVY)) {
        data_free(x);
        return -1;
    }
    if (mla)
        latent_v(x, x->k, x->v);
    return 0;
}

/* A copy of src with K and V mean-pooled from src->hkv heads to hkv heads. */
static int data_pool(const lv_data *src, int64_t hkv, lv_data *dst)
{
    if (data_alloc(dst, src->tq, src->t, src->h, hkv, src->d, src->d))
        return -1;
    memcpy(dst->q, src->q, sizeof(double) * (size_t)(src->tq * src->h * src->d));
    int64_t f = src->hkv / hkv, d = src->d;
    for (int64_t j = 0; j < src->t; j++)
        for (int64_t g = 0; g < hkv; g++)
            for (int64_t e = 0; e < d; e++) {
                double sk = 0, sv = 0;
                for (int64_t i = 0; i < f; i++) {
                    sk += src->k[(j * src->hkv + g * f + i) * d + e];
                    sv += src->v[(j * src->hkv + g * f + i) * d + e];
                }
                dst->k[(j * hkv + g) * d + e] = sk / (double)f;
                dst->v[(j * hkv + g) * d + e] = sv / (double)f;
            }
    return 0;
}

/* ------------------------------------------------------------ accuracy */

static ref_attn_shape shape_of(const lv_data *x, int64_t tq, const fmqa_level_policy *p)
{
    ref_attn_shape s = {.batch = 1, .q_tokens = tq, .kv_len = x->t, .num_q_heads = x->h,
                        .num_kv_heads = x->hkv, .head_dim_qk = x->d, .head_dim_v = x->dv,
                        .flags = FMQA_FLAG_CAUSAL};
    if (p && p->window > 0 && p->heavy == 0) {
        s.window = p->window;
        s.sink_tokens = p->sink_tokens;
        s.draft_slots = p->spec_tokens - 1;   /* as fmqa_level_problem sets it */
        s.flags |= FMQA_FLAG_RING;
    }
    return s;
}

/* Rounds n values to what dtype stores: 16-bit rounding, or per-row (d values)
 * 8-bit quantization and exact dequantization. */
static fmqa_status store_as(fmqa_dtype dt, double *x, int64_t n, int64_t d, fmqa_err *err)
{
    if (dt != FMQA_DTYPE_INT8 && dt != FMQA_DTYPE_FP8_E4M3) {
        for (int64_t i = 0; i < n; i++)
            x[i] = ref_round_to(dt, x[i]);
        return FMQA_OK;
    }
    uint8_t row[1024];
    if (d > (int64_t)sizeof row)
        return fmqa_err_set(err, FMQA_ERR_UNSUPPORTED, "head dim %lld > 1024", (long long)d);
    for (int64_t r = 0; r < n / d; r++) {
        float scale;
        fmqa_status st = ref_quantize_row(dt, x + r * d, d, row, &scale, err);
        if (st != FMQA_OK)
            return st;
        for (int64_t e = 0; e < d; e++)
            x[r * d + e] = ref_dequantize(dt, row, e, scale);
    }
    return FMQA_OK;
}

/*
 * A compressed level's cache: the slots ref_compress_select keeps of x's T
 * (per KV head, from the scores of the policy's observation window: its
 * score_steps x spec_tokens query tokens from LV_OBS_FIRST on, which x
 * holds), gathered in order into k and v [nk, hkv, d] (which hold x's cache
 * on entry).  *nk the count.
 */
static fmqa_status compress_cache(const lv_data *x, const fmqa_level_policy *p, double *k,
                                  double *v, int64_t *nk, fmqa_err *err)
{
    ref_attn_shape s = {.batch = 1, .q_tokens = (int64_t)p->score_steps * p->spec_tokens,
                        .kv_len = x->t,
                        .num_q_heads = x->h, .num_kv_heads = x->hkv, .head_dim_qk = x->d,
                        .head_dim_v = x->d};
    const fmqa_compress_policy cp = {p->sink_tokens, p->window, p->heavy, p->pooling, p->pool, 0};
    double *sd = calloc((size_t)(x->hkv * x->t), sizeof *sd);
    float *sf = malloc(sizeof(float) * (size_t)(x->hkv * x->t));
    int32_t *kept = malloc(sizeof(int32_t) * (size_t)x->t);
    fmqa_status st = sd && sf && kept ? FMQA_OK
                                      : fmqa_err_set(err, FMQA_ERR_OUT_OF_MEMORY, "compress_cache");
    if (st == FMQA_OK)
        st = ref_attention_scores(&s, x->q + LV_OBS_FIRST * x->h * x->d, x->k, sd, err);
    for (int64_t i = 0; st == FMQA_OK && i < x->hkv * x->t; i++)
        sf[i] = (float)sd[i]; /* as the decode kernel leaves them */
    for (int64_t g = 0; st == FMQA_OK && g < x->hkv; g++) {
        st = ref_compress_select(&cp, x->t, x->hkv, g, sf, x->t, kept, nk, err);
        for (int64_t i = 0; st == FMQA_OK && i < *nk; i++) { /* kept[i] >= i: in place */
            memmove(k + (i * x->hkv + g) * x->d, k + (kept[i] * x->hkv + g) * x->d,
                    sizeof(double) * (size_t)x->d);
            memmove(v + (i * x->hkv + g) * x->d, v + (kept[i] * x->hkv + g) * x->d,
                    sizeof(double) * (size_t)x->d);
        }
    }
    free(sd);
    free(sf);
    free(kept);
    return st;
}

/*
 * Error of policy p on data x against `exact` (o of the first tq tokens):
 * q in act dtype, cache in p->kv_dtype, p's window (or, heavy > 0, its
 * compressed cache), output in act dtype.
 */
static fmqa_status level_error(const lv_data *x, int64_t tq, const fmqa_level_policy *p,
                               fmqa_dtype act, const double *exact, lv_err *out,
                               fmqa_err *err)
{
    int64_t nq = tq * x->h * x->d, no = tq * x->h * x->dv;
    int64_t nk = x->t * x->hkv * x->d, nv = x->t * x->hkv * x->dv;
    double *q = malloc(sizeof(double) * (size_t)nq), *o = malloc(sizeof(double) * (size_t)no);
    double *k = malloc(sizeof(double) * (size_t)nk), *v = malloc(sizeof(double) * (size_t)nv);
    uint16_t *o16 = malloc(sizeof(uint16_t) * (size_t)no);
    fmqa_status st = FMQA_ERR_OUT_OF_MEMORY;
    if (q && o && k && v && o16) {
        memcpy(q, x->q, sizeof(double) * (size_t)nq);
        memcpy(k, x->k, sizeof(double) * (size_t)nk);
        memcpy(v, x->v, sizeof(double) * (size_t)nv);
        ref_attn_shape s = shape_of(x, tq, p);
        ref_cmp c;
        st = FMQA_OK;
        if (p && p->heavy > 0) { /* not MLA: dv = d */
            int64_t kept = 0;
            st = compress_cache(x, p, k, v, &kept, err);
            s = shape_of(x, tq, NULL);
            s.kv_len = kept;
            nk = kept * x->hkv * x->d, nv = kept * x->hkv * x->dv;
        }
        if (st == FMQA_OK)
            st = store_as(act, q, nq, x->d, err);
        if (st == FMQA_OK)
            st = store_as(p->kv_dtype, k, nk, x->d, err);
        if (st == FMQA_OK && x->latent) /* V is read from the stored latent row */
            latent_v(x, k, v);
        else if (st == FMQA_OK)
            st = store_as(p->kv_dtype, v, nv, x->dv, err);
        if (st == FMQA_OK)
            st = ref_attention(&s, q, k, v, o, NULL, err);
        if (st == FMQA_OK)
            st = ref_from_double(act, o, no, o16, err);
        if (st == FMQA_OK)
            st = ref_compare(act, o16, exact, no, &c, err);
        if (st == FMQA_OK)
            *out = (lv_err){.max_abs = c.max_abs, .rel_l2 = c.rel_l2};
    } else {
        fmqa_err_set(err, st, "level_error: out of memory");
    }
    free(q);
    free(o);
    free(k);
    free(v);
    free(o16);
    return st;
}

/* Exact attention of x's first tq query tokens: full context, full precision. */
static double *exact_output(const lv_data *x, int64_t tq, fmqa_err *err)
{
    double *o = malloc(sizeof(double) * (size_t)(tq * x->h * x->dv));
    ref_attn_shape s = shape_of(x, tq, NULL);
    if (!o) {
        fmqa_err_set(err, FMQA_ERR_OUT_OF_MEMORY, "exact_output: out of memory");
        return NULL;
    }
    if (ref_attention(&s, x->q, x->k, x->v, o, NULL, err) != FMQA_OK) {
        free(o);
        return NULL;
    }
    return o;
}

/* Error of p on x against exact attention of `truth` (same q; truth may have
 * more KV heads than x: the MHA layer x was pooled from). */
static fmqa_status error_against(const lv_data *truth, const lv_data *x,
                                 const fmqa_level_policy *p, fmqa_dtype act, lv_err *out,
                                 fmqa_err *err)
{
    double *exact = exact_output(truth, p->spec_tokens, err);
    if (!exact)
        return err->status;
    fmqa_status st = level_error(x, p->spec_tokens, p, act, exact, out, err);
    free(exact);
    return st;
}

/* ------------------------------------------------------------ rows */

typedef struct lv_row {
    const char *label;          /* level name, or claimed figure              */
    const char *data;
    fmqa_level_policy policy;
    fmqa_memory_report mem;
    lv_err err, err_own;        /* err_own: claims only, vs the MQA layer     */
    double budget;
    double score_cost;          /* amortised per KV byte; < 0: no scores      */
    int pass;
    char decode[48];            /* "12.3" or "n/a (why)"                      */
} lv_row;

static int row_pass(const lv_err *e, double budget)
{
    return e->max_abs < LV_MAX_ABS && e->rel_l2 <= budget;
}

/* Decode column: time per step, or why there is none. */
static void decode_cell(fmqa_ctx_t *ctx, int have_gpu, const fmqa_model_config *m,
                        const fmqa_level_policy *p, char *out, size_t cap)
{
    if (!have_gpu) {
        snprintf(out, cap, "n/a (no GPU)");
        return;
    }
    fmqa_problem pr;
    if (fmqa_level_problem(ctx, m, p, 1, &pr) != FMQA_OK) {
        snprintf(out, cap, "n/a (%s)", fmqa_ctx_errmsg(ctx));
        return;
    }
    double us = 0;
    fmqa_status st = bench_decode_step_us(ctx, &pr, &us);
    if (st == FMQA_OK)
        snprintf(out, cap, "%.2f", us);
    else
        snprintf(out, cap, "n/a (%s)", fmqa_status_string(st));
}

/* ------------------------------------------------------------ output */

static void print_table(const lv_row *rows, int n, int claims_table)
{
    if (!claims_table)
        printf("%-13s %-11s %11s %9s %10s %11s %10s %7s %4s %-13s %s\n", "level", "data",
               "bytes/token", "reduction", "multiplier", "max_abs_err", "rel_l2_err",
               "budget", "pass", " scores", "decode_us/step");
    else
        printf("%-13s %-11s %8s %6s %6s %11s %9s %10s %11s %10s %11s %10s\n", "claim",
               "data", "kv_heads", "window", "dtype", "bytes/token", "reduction",
               "multiplier", "max_vs_mha", "rel_vs_mha", "max_vs_mqa", "rel_vs_mqa");
    for (int i = 0; i < n; i++) {
        const lv_row *r = &rows[i];
        char sc[32] = " -";
        if (r->score_cost >= 0)
            snprintf(sc, sizeof sc, " %.2f%% %d/%d", 100 * r->score_cost, r->policy.score_steps,
                     r->policy.compress_every);
        if (!claims_table)
            printf("%-13s %-11s %11" PRId64 " %8.1f%% %9.1fx %11.2e %10.2e %7.0e %4s %-13s %s\n",
                   r->label, r->data, r->mem.bytes_per_token, 100 * r->mem.reduction,
                   r->mem.cache_multiplier, r->err.max_abs, r->err.rel_l2, r->budget,
                   r->pass ? "PASS" : "FAIL", sc, r->decode);
        else
            printf("%-13s %-11s %8d %6d %6s %11" PRId64 " %8.1f%% %9.1fx %11.2e %10.2e "
                   "%11.2e %10.2e\n",
                   r->label, r->data, 1, r->policy.window, fmqa_dtype_name(r->policy.kv_dtype),
                   r->mem.bytes_per_token, 100 * r->mem.reduction, r->mem.cache_multiplier,
                   r->err.max_abs, r->err.rel_l2, r->err_own.max_abs, r->err_own.rel_l2);
    }
}

/* key: "level", "mla_level" or "claim" (claims carry the MQA-layer errors). */
static void print_json_row(const lv_row *r, const char *key, int last)
{
    int claim = !strcmp(key, "claim");
    printf("  {\"%s\":\"%s\",\"data\":\"%s\",\"kv_dtype\":\"%s\",\"window\":%d,"
           "\"sink_tokens\":%d,\"spec_tokens\":%d,\"bytes_per_token\":%" PRId64 ","
           "\"bytes_per_seq\":%" PRId64 ",\"reduction\":%.6f,\"cache_multiplier\":%.4f,"
           "\"max_abs_error\":%.6e,\"rel_l2_error\":%.6e",
           key, r->label, r->data, fmqa_dtype_name(r->policy.kv_dtype),
           r->policy.window, r->policy.sink_tokens, r->policy.spec_tokens,
           r->mem.bytes_per_token, r->mem.bytes_per_seq, r->mem.reduction,
           r->mem.cache_multiplier, r->err.max_abs, r->err.rel_l2);
    if (claim)
        printf(",\"max_abs_error_vs_mqa\":%.6e,\"rel_l2_error_vs_mqa\":%.6e}",
               r->err_own.max_abs, r->err_own.rel_l2);
    else
        printf(",\"heavy\":%d,\"compress_every\":%d,\"score_steps\":%d,"
               "\"score_cost_amortised\":%.6f,\"rel_l2_budget\":%g,\"pass\":%s,"
               "\"decode_us_per_step\":\"%s\"}",
               r->policy.heavy, r->policy.compress_every, r->policy.score_steps,
               r->score_cost >= 0 ? r->score_cost : 0.0, r->budget, r->pass ? "true" : "false",
               r->decode);
    printf("%s\n", last ? "" : ",");
}

/* ------------------------------------------------------------ assessment */

/* The level's policy (kv8: the aggressive level's 8-bit type, 0 = the
 * preset's), its memory and amortised score cost into r; 0 or -1 (message
 * printed). */
static int level_row(fmqa_ctx_t *ctx, const fmqa_model_config *m, fmqa_level l, fmqa_dtype kv8,
                     lv_row *r)
{
    *r = (lv_row){.label = fmqa_level_name(l), .budget = rel_budget[l], .score_cost = -1};
    fmqa_problem pr;
    fmqa_status st = fmqa_level_policy_preset(ctx, l, m, &r->policy);
    if (st == FMQA_OK && l == FMQA_LEVEL_AGGRESSIVE && kv8)
        r->policy.kv_dtype = kv8;
    if (st == FMQA_OK)
        st = fmqa_memory_report_compute(ctx, m, &r->policy, 1, 0, &r->mem);
    if (st == FMQA_OK)
        st = fmqa_level_problem(ctx, m, &r->policy, 1, &pr);
    if (st != FMQA_OK) {
        fprintf(stderr, "fastmqa-bench levels: %s\n", fmqa_ctx_errmsg(ctx));
        return -1;
    }
    if (r->policy.heavy > 0) {
        int64_t added, read;
        fmqa_score_cost_bytes(&pr, &added, &read);
        r->score_cost = (double)added * r->policy.score_steps /
                        ((double)read * r->policy.compress_every);
    }
    return 0;
}

/* Fills one row per (level, data set) of model m; kv8 (0: the preset's) is the
 * aggressive level's 8-bit type.  Returns 0 or prints why not. */
static int assess_levels(fmqa_ctx_t *ctx, const fmqa_model_config *m, fmqa_dtype kv8,
                         int have_gpu, lv_row rows[3 * LV_NDATA])
{
    fmqa_err err = {0};
    lv_row proto[3];
    int64_t tq = LV_QUERIES; /* and the longest observation window after token 8 */
    for (int l = FMQA_LEVEL_CONSERVATIVE; l <= FMQA_LEVEL_AGGRESSIVE; l++) {
        if (level_row(ctx, m, (fmqa_level)l, kv8, &proto[l - 1]))
            return -1;
        const fmqa_level_policy *p = &proto[l - 1].policy;
        int64_t obs = LV_OBS_FIRST + (int64_t)p->score_steps * p->spec_tokens;
        tq = p->heavy > 0 && obs > tq ? obs : tq;
    }
    for (int kind = 0; kind < LV_NDATA; kind++) {
        lv_data x;
        if (data_make(&x, kind, m, m->num_kv_heads, tq)) {
            fprintf(stderr, "fastmqa-bench levels: out of memory\n");
            return -1;
        }
        for (int l = FMQA_LEVEL_CONSERVATIVE; l <= FMQA_LEVEL_AGGRESSIVE; l++) {
            lv_row *r = &rows[(l - 1) * LV_NDATA + kind];
            *r = proto[l - 1];
            r->data = data_names[kind];
            if (error_against(&x, &x, &r->policy, m->dtype, &r->err, &err) != FMQA_OK) {
                fprintf(stderr, "fastmqa-bench levels: %s\n", err.msg);
                data_free(&x);
                return -1;
            }
            r->pass = row_pass(&r->err, r->budget);
            decode_cell(ctx, have_gpu, m, &r->policy, r->decode, sizeof r->decode);
        }
        data_free(&x);
    }
    return 0;
}

/* The cheapest MQA + int8 policy reaching `mult` times less memory than the
 * MHA baseline: full context if int8 alone suffices, else the largest window
 * (plus 4 sinks) that does.  -1 when even one token per sequence is too much. */
static int claim_policy(fmqa_ctx_t *ctx, const fmqa_model_config *mqa, double mult,
                        fmqa_level_policy *p, fmqa_memory_report *mem)
{
    fmqa_level_policy_preset(ctx, FMQA_LEVEL_AGGRESSIVE, mqa, p);
    p->spec_tokens = 1;
    p->window = p->sink_tokens = p->heavy = 0; /* claims: window + int8 only */
    fmqa_memory_report_compute(ctx, mqa, p, 1, 0, mem);
    int64_t tokens = (int64_t)floor((double)mem->baseline_bytes_per_seq /
                                    (mult * (double)mem->bytes_per_token));
    if (tokens < mqa->max_seq_len) {
        if (tokens <= LV_SINKS)
            return -1;
        p->window = (int32_t)(tokens - LV_SINKS);
        p->sink_tokens = LV_SINKS;
    }
    return fmqa_memory_report_compute(ctx, mqa, p, 1, 0, mem) == FMQA_OK ? 0 : -1;
}

/* Makes the data of `kind` for model m (its own KV heads) and, when pool > 0,
 * a copy with K and V mean-pooled to `pool` heads; 0 or -1 (message printed). */
static int claim_data(int kind, const fmqa_model_config *m, lv_data *x, lv_data *pooled,
                      int64_t pool)
{
    if (data_make(x, kind, m, m->num_kv_heads, LV_QUERIES) == 0 &&
        (pool == 0 || data_pool(x, pool, pooled) == 0))
        return 0;
    data_free(x);
    fprintf(stderr, "fastmqa-bench levels: out of memory\n");
    return -1;
}

/* Claims rows.  err: the MQA layer obtained by pooling an MHA layer's K and V,
 * against that MHA layer; err_own: a layer built as MQA (its own data), against
 * its own exact attention, i.e. the cache configuration's error alone. */
static int assess_claims(fmqa_ctx_t *ctx, const lv_args *a, lv_row rows[3 * LV_NDATA],
                         int *n)
{
    fmqa_model_config mha = a->model, mqa = a->model;
    mha.num_kv_heads = mha.num_q_heads;
    mqa.num_kv_heads = 1;
    fmqa_err err = {0};
    *n = 0;
    for (int kind = 0; kind < LV_NDATA; kind++) {
        lv_data x, pooled, own;
        if (claim_data(kind, &mha, &x, &pooled, 1))
            return -1;
        if (claim_data(kind, &mqa, &own, NULL, 0)) {
            data_free(&x);
            data_free(&pooled);
            return -1;
        }
        fmqa_status st = FMQA_OK;
        for (int c = 0; c < 3 && st == FMQA_OK; c++) {
            lv_row r = {.label = claim_label[c], .data = data_names[kind], .score_cost = -1};
            if (claim_policy(ctx, &mqa, claims[c], &r.policy, &r.mem))
                continue; /* unreachable for this shape: the docs say so */
            st = error_against(&x, &pooled, &r.policy, mqa.dtype, &r.err, &err);
            if (st == FMQA_OK)
                st = error_against(&own, &own, &r.policy, mqa.dtype, &r.err_own, &err);
            if (st == FMQA_OK)
                rows[(*n)++] = r;
        }
        data_free(&x);
        data_free(&pooled);
        data_free(&own);
        if (st != FMQA_OK) {
            fprintf(stderr, "fastmqa-bench levels: %s\n", err.msg);
            return -1;
        }
    }
    return 0;
}

/* "MHA", "MQA" or "GQA-G" (G query heads per KV head). */
static void model_kind(const fmqa_model_config *m, char *out, size_t cap)
{
    if (m->num_kv_heads == m->num_q_heads)
        snprintf(out, cap, "MHA");
    else if (m->num_kv_heads == 1)
        snprintf(out, cap, "MQA");
    else
        snprintf(out, cap, "GQA-%d", m->num_q_heads / m->num_kv_heads);
}

static int count_failed(const lv_row *rows, int n)
{
    int failed = 0;
    for (int i = 0; i < n; i++)
        failed += !rows[i].pass;
    return failed;
}

/* One line per FAIL row of the levels table: which bound it broke and what of
 * the level loses the accuracy (the tokens its window drops, else its 8-bit
 * cache). */
static void print_failures(const lv_row *rows, int n, int32_t seq)
{
    for (int i = 0; i < n; i++) {
        const lv_row *r = &rows[i];
        char cause[200];
        if (r->pass)
            continue;
        if (r->policy.heavy > 0 && r->mem.tokens_kept < seq)
            snprintf(cause, sizeof cause,
                     "it keeps %d sink, %d recent and the %d best-scored of %d tokens, and "
                     "this data spreads its attention over the tokens it drops%s",
                     r->policy.sink_tokens, r->policy.window, r->policy.heavy, seq,
                     strcmp(r->data, "random") ? "" : " (random data cannot be compressed)");
        else if (r->policy.window > 0 && r->policy.sink_tokens + r->policy.window < seq)
            snprintf(cause, sizeof cause,
                     "it keeps %d sink and %d recent tokens of %d, and this data attends to "
                     "tokens it drops",
                     r->policy.sink_tokens, r->policy.window, seq);
        else
            snprintf(cause, sizeof cause, "its %s cache rounds K and V",
                     fmqa_dtype_name(r->policy.kv_dtype));
        if (r->err.max_abs >= LV_MAX_ABS)
            printf("FAIL %s on %s data: max_abs_err %.2e >= tolerance %g: %s\n", r->label,
                   r->data, r->err.max_abs, LV_MAX_ABS, cause);
        else
            printf("FAIL %s on %s data: rel_l2_err %.2e > budget %.0e: %s\n", r->label,
                   r->data, r->err.rel_l2, r->budget, cause);
    }
}

/* The JSON rows of one array, with `key` naming the row kind. */
static void print_json_rows(const char *name, const char *key, const lv_row *rows, int n,
                            int last)
{
    printf("\"%s\":[\n", name);
    for (int i = 0; i < n; i++)
        print_json_row(&rows[i], key, i == n - 1);
    printf("]%s\n", last ? "}" : ",");
}

/* The MLA model's levels (ml: 3 * LV_NDATA rows), after the seed model's. */
static void print_mla(const fmqa_model_config *m, const lv_row *ml)
{
    printf("\nlevels of the MLA model (DeepSeek-V3 attention: %d query heads, head dim %d, "
           "latent %d + rope %d, %d tokens, %s; baseline: the model as fp16 MHA, %d x "
           "(%d + %d + %d) x 2 bytes per token):\n",
           m->num_q_heads, m->head_dim, m->mla_latent_dim, m->mla_rope_dim, m->max_seq_len,
           fmqa_dtype_name(m->dtype), m->num_q_heads, m->head_dim, m->mla_rope_dim,
           m->head_dim);
    print_table(ml, 3 * LV_NDATA, 0);
    print_failures(ml, 3 * LV_NDATA, m->max_seq_len);
}

/* ml: the MLA model's rows, NULL with --no-mla. */
static void print_all(const lv_args *a, const lv_row *lv, const lv_row *ml, const lv_row *cl,
                      int ncl, int have_gpu)
{
    const fmqa_model_config *m = &a->model;
    if (a->json) {
        printf("{\"hidden\":%d,\"heads\":%d,\"kv_heads\":%d,\"head_dim\":%d,\"seq\":%d,"
               "\"max_abs_tolerance\":%g,\"gpu\":%s,\n",
               m->hidden_size, m->num_q_heads, m->num_kv_heads,
               m->hidden_size / m->num_q_heads, m->max_seq_len, LV_MAX_ABS,
               have_gpu ? "true" : "false");
        print_json_rows("levels", "level", lv, 3 * LV_NDATA, 0);
        if (ml)
            print_json_rows("mla_levels", "mla_level", ml, 3 * LV_NDATA, 0);
        print_json_rows("claims", "claim", cl, ncl, 1);
        return;
    }
    char kind[32];
    model_kind(m, kind, sizeof kind);
    printf("FastMQA levels: hidden %d, %d query heads, %d KV heads, head dim %d, %d tokens, "
           "%s; one layer, one sequence\n",
           m->hidden_size, m->num_q_heads, m->num_kv_heads, m->hidden_size / m->num_q_heads,
           m->max_seq_len, fmqa_dtype_name(m->dtype));
    printf("errors: decode output vs exact float64 attention (full context, full precision); "
           "pass = max_abs_err < %g and rel_l2_err <= budget\n", LV_MAX_ABS);
    printf("scores: a compressed level's amortised score cost, bytes per KV byte decode reads "
           "(byte model, docs/kernels.md), and the decode steps that score / steps between "
           "compactions; it chooses from those steps' scores\n\n");
    printf("levels of the %s model (its own %d KV heads):\n", kind, m->num_kv_heads);
    print_table(lv, 3 * LV_NDATA, 0);
    print_failures(lv, 3 * LV_NDATA, m->max_seq_len);
    if (ml)
        print_mla(&a->mla, ml);
    if (!have_gpu)
        printf("decode_us/step: n/a (no GPU): no CUDA driver or device on this machine\n");
    printf("\nclaims (64x, 128x, 512x vs fp16 MHA, max error < %g): cheapest MQA + int8 + "
           "window reaching each; errors vs the MHA layer (K, V mean-pooled to one head) "
           "and, on data built as MQA, vs exact attention of the MQA layer\n\n", LV_MAX_ABS);
    printf("claims on the %s model's layer made MQA (1 KV head, %d query heads):\n", kind,
           m->num_q_heads);
    print_table(cl, ncl, 1);
}

int bench_levels_main(int argc, char **argv)
{
    lv_args a;
    int rc = parse_args(argc, argv, &a);
    if (rc)
        return rc == 1 ? 0 : 2;
    fmqa_ctx_t *ctx = NULL;
    if (fmqa_ctx_create(NULL, &ctx) != FMQA_OK) {
        fprintf(stderr, "fastmqa-bench levels: %s\n", fmqa_ctx_errmsg(ctx));
        fmqa_ctx_destroy(ctx);
        return 1;
    }
    fmqa_level_policy probe;
    if (fmqa_level_policy_preset(ctx, FMQA_LEVEL_CONSERVATIVE, &a.model, &probe) != FMQA_OK) {
        fprintf(stderr, "fastmqa-bench levels: %s\n", fmqa_ctx_errmsg(ctx));
        fmqa_ctx_destroy(ctx);
        return 2;
    }
    fmqa_device_info info;
    int have_gpu = fmqa_device_query(ctx, &info) == FMQA_OK;
    lv_row lv[3 * LV_NDATA], ml[3 * LV_NDATA], cl[3 * LV_NDATA];
    int ncl = 0;
    rc = assess_levels(ctx, &a.model, a.kv8, have_gpu, lv) ||
         (!a.no_mla && assess_levels(ctx, &a.mla, 0, have_gpu, ml)) ||
         assess_claims(ctx, &a, cl, &ncl);
    if (!rc)
        print_all(&a, lv, a.no_mla ? NULL : ml, cl, ncl, have_gpu);
    fmqa_ctx_destroy(ctx);
    int failed = rc ? 0
                    : count_failed(lv, 3 * LV_NDATA) +
                          (a.no_mla ? 0 : count_failed(ml, 3 * LV_NDATA)) + count_failed(cl, ncl);
    if (!rc && failed && !a.allow_fail) {
        fflush(stdout); /* the tables first: a pipe buffers stdout, not stderr */
        fprintf(stderr, "fastmqa-bench levels: %d row(s) failed (exit 1; --allow-fail when they "
                        "are expected)\n", failed);
    }
    return rc || (failed && !a.allow_fail) ? 1 : 0;
}
