/*
 * ref_attention.c -- reference attention: the visibility rule (which positions a
 * query token sees), softmax attention over the visible positions for any group
 * size, the split-KV log-sum-exp combine, and MLA in both its absorbed and its
 * naive (explicit up-projection) form.
 *
 * Invariants: ref_visible() is the only place that decides visibility, so
 * decode, prefill, MLA and split partials cannot disagree about masks; it is
 * asked once per (sequence, query token, position), and the query heads that
 * share a KV head are computed together, each K and V row read once for the
 * group (MQA verification of long caches was dominated by re-reading them per
 * head).  Each head's arithmetic does not depend on its group size.  The
 * softmax subtracts the running maximum before exponentiating, so it is exact to
 * double rounding for any score range.  A learned sink logit joins a head's
 * maximum and sum and nothing else.  A query that sees nothing gets o = 0 and
 * lse = -inf (its sink's logit with sinks), and the combine treats an lse of -inf as "contributes nothing".
 */
#include "ref.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define BAD(...) fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT, __VA_ARGS__)

static int64_t kv_len_of(const ref_attn_shape *s, int64_t b)
{
    return s->kv_lens ? s->kv_lens[b] : s->kv_len;
}

static fmqa_status check_sizes(const ref_attn_shape *s, fmqa_err *err)
{
    const struct { const char *name; int64_t v; } dims[] = {
        {"batch", s->batch}, {"q_tokens", s->q_tokens}, {"kv_len", s->kv_len},
        {"num_q_heads", s->num_q_heads}, {"num_kv_heads", s->num_kv_heads},
        {"head_dim_qk", s->head_dim_qk}, {"head_dim_v", s->head_dim_v}};
    for (size_t i = 0; i < sizeof dims / sizeof dims[0]; i++)
        if (dims[i].v <= 0)
            return BAD("ref_attn_shape.%s = %lld: must be > 0", dims[i].name, (long long)dims[i].v);
    if (s->num_q_heads % s->num_kv_heads)
        return BAD("ref_attn_shape.num_q_heads = %lld is not a multiple of num_kv_heads = %lld",
                   (long long)s->num_q_heads, (long long)s->num_kv_heads);
    if (s->q_tokens > s->kv_len)
        return BAD("ref_attn_shape.q_tokens = %lld exceeds kv_len = %lld",
                   (long long)s->q_tokens, (long long)s->kv_len);
    for (int64_t b = 0; s->kv_lens && b < s->batch; b++)
        if (s->kv_lens[b] < s->q_tokens || s->kv_lens[b] > s->kv_len)
            return BAD("ref_attn_shape.kv_lens[%lld] = %d outside [q_tokens = %lld, kv_len = %lld]",
                       (long long)b, s->kv_lens[b], (long long)s->q_tokens, (long long)s->kv_len);
    return FMQA_OK;
}

static fmqa_status check_masks(const ref_attn_shape *s, fmqa_err *err)
{
    if (s->flags & FMQA_FLAG_TREE_MASK) {
        if (!s->tree_mask)
            return BAD("ref_attn_shape.tree_mask is NULL with FMQA_FLAG_TREE_MASK");
        if (s->q_tokens > 64)
            return BAD("ref_attn_shape.q_tokens = %lld: a tree mask covers at most 64 drafts",
                       (long long)s->q_tokens);
    }
    if (s->window < 0 || s->sink_tokens < 0)
        return BAD("ref_attn_shape: window = %d and sink_tokens = %d must be >= 0",
                   s->window, s->sink_tokens);
    if ((s->flags & FMQA_FLAG_RING) && s->window == 0)
        return BAD("ref_attn_shape.window = 0 with FMQA_FLAG_RING: the ring needs window > 0");
    if (s->draft_slots < 0)
        return BAD("ref_attn_shape.draft_slots = %d must be >= 0", s->draft_slots);
    if (!(s->softcap >= 0.0) || !isfinite(s->softcap))
        return BAD("ref_attn_shape.softcap = %g must be finite and >= 0", s->softcap);
    for (int64_t h = 0; s->sinks && h < s->num_q_heads; h++)
        if (!isfinite(s->sinks[h]))
            return BAD("ref_attn_shape.sinks[%lld] = %g is not finite", (long long)h,
                       (double)s->sinks[h]);
    if (s->kv_begin < 0 || s->kv_end < 0 || (s->kv_end && s->kv_end < s->kv_begin))
        return BAD("ref_attn_shape: split range [%lld, %lld) is invalid",
                   (long long)s->kv_begin, (long long)s->kv_end);
    if (!isfinite(s->sm_scale))
        return BAD("ref_attn_shape.sm_scale is not finite");
    return FMQA_OK;
}

fmqa_status ref_attn_shape_check(const ref_attn_shape *s, fmqa_err *err)
{
    if (!s)
        return BAD("ref_attn_shape is NULL");
    fmqa_status st = check_sizes(s, err);
    return st != FMQA_OK ? st : check_masks(s, err);
}

int64_t ref_query_pos(const ref_attn_shape *s, int64_t b, int64_t t)
{
    return kv_len_of(s, b) - s->q_tokens + t;
}

/* Rule 5: a ring of window + draft_slots slots after the sinks holds j. */
static int ring_holds(const ref_attn_shape *s, int64_t len, int64_t j)
{
    return fmqa_ring_holds(s->flags, s->sink_tokens, (int64_t)s->window + s->draft_slots, len, j);
}

int ref_visible(const ref_attn_shape *s, int64_t b, int64_t t, int64_t j)
{
    int64_t len = kv_len_of(s, b), p = ref_query_pos(s, b, t), first_draft = len - s->q_tokens;
    if (j < 0 || j >= len)
        return 0;
    if ((s->flags & FMQA_FLAG_CAUSAL) && j > p)
        return 0;
    if (s->window > 0 && j <= p - s->window && j >= s->sink_tokens)
        return 0;
    if ((s->flags & FMQA_FLAG_TREE_MASK) && j >= first_draft &&
        !((s->tree_mask[b * s->q_tokens + t] >> (j - first_draft)) & 1u))
        return 0;
    if (!ring_holds(s, len, j))
        return 0;
    if (j < s->kv_begin || (s->kv_end && j >= s->kv_end))
        return 0;
    return 1;
}

int ref_readable(const ref_attn_shape *s, int64_t b, int64_t j)
{
    int64_t len = kv_len_of(s, b), first_draft = len - s->q_tokens;
    if (j < 0 || j >= len || !ring_holds(s, len, j))
        return 0;
    return s->window == 0 || j < s->sink_tokens || j > first_draft - s->window;
}

static double effective_scale(const ref_attn_shape *s)
{
    return s->sm_scale != 0.0 ? s->sm_scale : 1.0 / sqrt((double)s->head_dim_qk);
}

/* Four partial sums: independent chains of additions run several times faster
 * than one, and the order depends only on n, so every head gets the same
 * arithmetic whatever its group. */
static double dot(const double *a, const double *b, int64_t n)
{
    double acc[4] = {0.0, 0.0, 0.0, 0.0};
    int64_t i = 0;
    for (; i + 4 <= n; i += 4)
        for (int l = 0; l < 4; l++)
            acc[l] += a[i + l] * b[i + l];
    for (; i < n; i++)
        acc[0] += a[i] * b[i];
    return (acc[0] + acc[1]) + (acc[2] + acc[3]);
}

/* y += a x, y and x distinct (restrict lets the compiler use vector loads). */
static void axpy(double *restrict y, double a, const double *restrict x, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        y[i] += a * x[i];
}

/* a > b ? a : b, but NaN wins, so that a NaN score or lse can never be hidden. */
static double max_nan(double a, double b)
{
    return isnan(a) || isnan(b) ? NAN : a > b ? a : b;
}

/* Scratch of ref_attention: which positions the current query token sees
 * (vis [kv_len], from ref_visible), and per head of one group its scores
 * (sc [kv_len, G]), running maximum, sum and lse ([G] each). */
typedef struct scratch {
    unsigned char *vis;
    double *sc, *m, *sum, *lse;
} scratch;

/* The logits of the G query heads of KV head hk for query token (b, t) at the
 * positions it sees (w->vis): w->sc [j, g] (soft-capped), the heads' maxima
 * w->m with the learned sink joined, and w->sum = the sink's exp (or 0).  Each
 * K row is read once for the whole group.  Returns how many positions it sees. */
static int64_t group_logits(const ref_attn_shape *s, int64_t b, int64_t t, int64_t hk,
                            const double *q, const double *k, scratch *w)
{
    int64_t G = s->num_q_heads / s->num_kv_heads, dqk = s->head_dim_qk;
    const double *qg = q + ((b * s->q_tokens + t) * s->num_q_heads + hk * G) * dqk;
    double scale = effective_scale(s);
    int64_t seen = 0;
    for (int64_t g = 0; g < G; g++)
        w->m[g] = -INFINITY, w->sum[g] = 0.0, w->lse[g] = -INFINITY;
    for (int64_t j = 0; j < s->kv_len; j++) {
        if (!w->vis[j])
            continue;
        const double *krow = k + ((b * s->kv_len + j) * s->num_kv_heads + hk) * dqk;
        for (int64_t g = 0; g < G; g++) {
            double x = scale * dot(qg + g * dqk, krow, dqk);
            w->sc[j * G + g] = s->softcap > 0.0 ? s->softcap * tanh(x / s->softcap) : x;
            w->m[g] = max_nan(w->m[g], w->sc[j * G + g]);
        }
        seen++;
    }
    for (int64_t g = 0; s->sinks && g < G; g++)   /* the sink joins the maximum */
        w->m[g] = max_nan(w->m[g], (double)s->sinks[hk * G + g]);
    for (int64_t g = 0; s->sinks && g < G; g++)   /* and the sum, with no value */
        w->sum[g] = exp((double)s->sinks[hk * G + g] - w->m[g]);
    if (!seen)   /* sees nothing: lse = the sink's logit (or -inf) */
        for (int64_t g = 0; s->sinks && g < G; g++)
            w->lse[g] = (double)s->sinks[hk * G + g];
    return seen;
}

/* The G query heads of KV head hk for query token (b, t): each K and V row is
 * read once for the whole group, and each head's arithmetic (scores, maximum,
 * sums, all in position order) is what it would be alone.  o is the group's
 * G rows of dv; the lse of head g goes to w->lse[g]; scores (or NULL) [kv_len]
 * gains each seen position's mass summed over the group, exp(sc - lse). */
static void attend_group(const ref_attn_shape *s, int64_t b, int64_t t, int64_t hk,
                         const double *q, const double *k, const double *v, scratch *w,
                         double *o, double *scores)
{
    int64_t G = s->num_q_heads / s->num_kv_heads, dv = s->head_dim_v;
    if (o)
        memset(o, 0, (size_t)(G * dv) * sizeof *o);
    if (!group_logits(s, b, t, hk, q, k, w))
        return;   /* o = 0 */
    for (int64_t j = 0; j < s->kv_len; j++) {
        if (!w->vis[j])
            continue;
        const double *vrow = v ? v + ((b * s->kv_len + j) * s->num_kv_heads + hk) * dv : NULL;
        for (int64_t g = 0; g < G; g++) {
            double e = exp(w->sc[j * G + g] - w->m[g]);
            if (o)
                axpy(o + g * dv, e, vrow, dv);
            w->sum[g] += e;
        }
    }
    for (int64_t g = 0; g < G; g++) {
        for (int64_t i = 0; o && i < dv; i++)
            o[g * dv + i] /= w->sum[g];
        w->lse[g] = w->m[g] + log(w->sum[g]);
    }
    for (int64_t j = 0; scores && j < s->kv_len; j++)
        for (int64_t g = 0; w->vis[j] && g < G; g++)
            scores[j] += exp(w->sc[j * G + g] - w->lse[g]);
}

/* ref_attention and ref_attention_scores: o and lse, or scores. */
static fmqa_status attend(const ref_attn_shape *s, const double *q, const double *k,
                          const double *v, double *o, double *lse, double *scores, fmqa_err *err)
{
    int64_t G = s->num_q_heads / s->num_kv_heads;
    scratch w;
    w.sc = malloc((size_t)((s->kv_len + 3) * G) * sizeof *w.sc);
    w.vis = malloc((size_t)s->kv_len);
    if (!w.sc || !w.vis) {
        free(w.sc), free(w.vis);
        return fmqa_err_set(err, FMQA_ERR_OUT_OF_MEMORY, "ref_attention: %lld scores",
                            (long long)(s->kv_len * G));
    }
    w.m = w.sc + s->kv_len * G, w.sum = w.m + G, w.lse = w.sum + G;
    for (int64_t b = 0; b < s->batch; b++)
        for (int64_t t = 0; t < s->q_tokens; t++) {
            for (int64_t j = 0; j < s->kv_len; j++)   /* once for every head */
                w.vis[j] = (unsigned char)ref_visible(s, b, t, j);
            for (int64_t hk = 0; hk < s->num_kv_heads; hk++) {
                int64_t row = (b * s->q_tokens + t) * s->num_q_heads + hk * G;
                attend_group(s, b, t, hk, q, k, v, &w, o ? o + row * s->head_dim_v : NULL,
                             scores ? scores + (b * s->num_kv_heads + hk) * s->kv_len : NULL);
                for (int64_t g = 0; lse && g < G; g++)
                    lse[row + g] = w.lse[g];
            }
        }
    free(w.sc);
    free(w.vis);
    return FMQA_OK;
}

fmqa_status ref_attention(const ref_attn_shape *s, const double *q, const double *k,
                          const double *v, double *o, double *lse, fmqa_err *err)
{
    fmqa_status st = ref_attn_shape_check(s, err);
    if (st != FMQA_OK)
        return st;
    if (!q || !k || !v || !o)
        return BAD("ref_attention: NULL q, k, v or o");
    return attend(s, q, k, v, o, lse, NULL, err);
}

fmqa_status ref_attention_scores(const ref_attn_shape *s, const double *q, const double *k,
                                 double *scores, fmqa_err *err)
{
    fmqa_status st = ref_attn_shape_check(s, err);
    if (st != FMQA_OK)
        return st;
    if (!q || !k || !scores)
        return BAD("ref_attention_scores: NULL q, k or scores");
    return attend(s, q, k, NULL, NULL, NULL, scores, err);
}

fmqa_status ref_combine(int64_t n_splits, int64_t rows, int64_t dv, const double *o_parts,
                        const double *lse_parts, double *o, double *lse, fmqa_err *err)
{
    if (n_splits <= 0 || rows < 0 || dv <= 0)
        return BAD("ref_combine: n_splits = %lld, rows = %lld, dv = %lld: need n_splits, dv > 0",
                   (long long)n_splits, (long long)rows, (long long)dv);
    if (rows > 0 && (!o_parts || !lse_parts || !o))
        return BAD("ref_combine: NULL o_parts, lse_parts or o");
    for (int64_t r = 0; r < rows; r++) {
        double m = -INFINITY, sum = 0.0;
        for (int64_t i = 0; i < n_splits; i++)
            m = max_nan(m, lse_parts[i * rows + r]);
        double *orow = o + r * dv;
        memset(orow, 0, (size_t)dv * sizeof *orow);
        for (int64_t i = 0; m != -INFINITY && i < n_splits; i++) {
            double w = exp(lse_parts[i * rows + r] - m);   /* 0 for an empty part */
            for (int64_t c = 0; w != 0.0 && c < dv; c++)
                orow[c] += w * o_parts[(i * rows + r) * dv + c];
            sum += w;
        }
        for (int64_t c = 0; m != -INFINITY && c < dv; c++)
            orow[c] /= sum;
        if (lse)
            lse[r] = m == -INFINITY ? -INFINITY : m + log(sum);
    }
    return FMQA_OK;
}

/* ---------------------------------------------------------------- MLA */

/* dst[n, a + c] = [x[n, a] | y[n, c]]: concatenation of row blocks. */
static void concat_rows(int64_t n, const double *x, int64_t a, const double *y, int64_t c,
                        double *dst)
{
    for (int64_t r = 0; r < n; r++) {
        memcpy(dst + r * (a + c), x + r * a, (size_t)a * sizeof *dst);
        memcpy(dst + r * (a + c) + a, y + r * c, (size_t)c * sizeof *dst);
    }
}

static fmqa_status check_mla(const ref_attn_shape *s, fmqa_err *err)
{
    fmqa_status st = ref_attn_shape_check(s, err);
    if (st != FMQA_OK)
        return st;
    if (s->num_kv_heads != 1 || s->head_dim_qk <= s->head_dim_v)
        return BAD("MLA shape: need num_kv_heads = 1 (got %lld) and head_dim_qk = d_c + d_r > "
                   "head_dim_v = d_c (got %lld, %lld)", (long long)s->num_kv_heads,
                   (long long)s->head_dim_qk, (long long)s->head_dim_v);
    return FMQA_OK;
}

fmqa_status ref_mla_decode(const ref_attn_shape *s, const double *q_abs, const double *q_rope,
                           const double *c_kv, const double *k_rope, double *o_latent,
                           double *lse, fmqa_err *err)
{
    fmqa_status st = check_mla(s, err);
    if (st != FMQA_OK)
        return st;
    if (!q_abs || !q_rope || !c_kv || !k_rope || !o_latent)
        return BAD("ref_mla_decode: NULL input or output");
    int64_t dc = s->head_dim_v, dr = s->head_dim_qk - dc;
    int64_t nq = s->batch * s->q_tokens * s->num_q_heads, nk = s->batch * s->kv_len;
    double *q = malloc((size_t)(nq + nk) * (size_t)(dc + dr) * sizeof *q);
    if (!q)
        return fmqa_err_set(err, FMQA_ERR_OUT_OF_MEMORY, "ref_mla_decode: scratch");
    double *k = q + nq * (dc + dr);
    concat_rows(nq, q_abs, dc, q_rope, dr, q);
    concat_rows(nk, c_kv, dc, k_rope, dr, k);
    /* c_kv [B, T, d_c] is exactly the V of one KV head: the latent is the value. */
    st = ref_attention(s, q, k, c_kv, o_latent, lse, err);
    free(q);
    return st;
}

static fmqa_status check_weights(const ref_mla_weights *w, int64_t n, const void *in,
                                 const void *out, fmqa_err *err)
{
    if (!w || !w->w_uk || !w->w_uv || w->num_heads <= 0 || w->latent_dim <= 0 ||
        w->nope_dim <= 0 || w->v_dim <= 0)
        return BAD("ref_mla_weights: NULL matrices or a dimension <= 0");
    if (n < 0 || (n > 0 && (!in || !out)))
        return BAD("MLA projection: n = %lld with NULL input or output", (long long)n);
    return FMQA_OK;
}

/* y[n, h, rows] = M[h] x[n, h, cols] (transposed: y[.., cols] = M[h]^T x[.., rows]). */
static void project(int64_t n, int64_t heads, const double *m, int64_t rows, int64_t cols,
                    int transposed, const double *x, double *y)
{
    int64_t din = transposed ? rows : cols, dout = transposed ? cols : rows;
    for (int64_t r = 0; r < n * heads; r++) {
        const double *mh = m + (r % heads) * rows * cols, *xr = x + r * din;
        double *yr = y + r * dout;
        for (int64_t i = 0; i < dout; i++) {
            double acc = 0.0;
            for (int64_t j = 0; j < din; j++)
                acc += (transposed ? mh[j * cols + i] : mh[i * cols + j]) * xr[j];
            yr[i] = acc;
        }
    }
}

fmqa_status ref_mla_absorb_q(const ref_mla_weights *w, int64_t n, const double *q_nope,
                             double *q_abs, fmqa_err *err)
{
    fmqa_status st = check_weights(w, n, q_nope, q_abs, err);
    if (st == FMQA_OK)
        project(n, w->num_heads, w->w_uk, w->nope_dim, w->latent_dim, 1, q_nope, q_abs);
    return st;
}

fmqa_status ref_mla_up_v(const ref_mla_weights *w, int64_t n, const double *o_latent, double *o,
                         fmqa_err *err)
{
    fmqa_status st = check_weights(w, n, o_latent, o, err);
    if (st == FMQA_OK)
        project(n, w->num_heads, w->w_uv, w->v_dim, w->latent_dim, 0, o_latent, o);
    return st;
}

/* Per-head K and V of the naive form from the shared latent: k [B,T,H,nope+dr],
 * v [B,T,H,v_dim]; c_kv and k_rope are [B,T,d_c] and [B,T,d_r]. */
static void expand_kv(const ref_attn_shape *s, const ref_mla_weights *w, const double *c_kv,
                      const double *k_rope, double *k, double *v)
{
    int64_t H = w->num_heads, dc = w->latent_dim, dr = s->head_dim_qk - dc, dn = w->nope_dim;
    for (int64_t tok = 0; tok < s->batch * s->kv_len; tok++)
        for (int64_t h = 0; h < H; h++) {
            double *kr = k + (tok * H + h) * (dn + dr);
            project(1, 1, w->w_uk + h * dn * dc, dn, dc, 0, c_kv + tok * dc, kr);
            memcpy(kr + dn, k_rope + tok * dr, (size_t)dr * sizeof *kr);
            project(1, 1, w->w_uv + h * w->v_dim * dc, w->v_dim, dc, 0, c_kv + tok * dc,
                    v + (tok * H + h) * w->v_dim);
        }
}

fmqa_status ref_mla_naive(const ref_attn_shape *s, const ref_mla_weights *w,
                          const double *q_nope, const double *q_rope, const double *c_kv,
                          const double *k_rope, double *o, double *lse, fmqa_err *err)
{
    fmqa_status st = check_mla(s, err);
    if (st == FMQA_OK)
        st = check_weights(w, 1, c_kv, o, err);
    if (st != FMQA_OK)
        return st;
    if (w->num_heads != s->num_q_heads || w->latent_dim != s->head_dim_v || !q_nope || !q_rope ||
        !k_rope)
        return BAD("ref_mla_naive: weights (H = %lld, d_c = %lld) do not match the shape "
                   "(H = %lld, d_c = %lld), or NULL input", (long long)w->num_heads,
                   (long long)w->latent_dim, (long long)s->num_q_heads, (long long)s->head_dim_v);
    int64_t H = w->num_heads, dr = s->head_dim_qk - s->head_dim_v, dn = w->nope_dim;
    int64_t nq = s->batch * s->q_tokens * H, nk = s->batch * s->kv_len * H;
    double *q = malloc((size_t)(nq * (dn + dr) + nk * (dn + dr + w->v_dim)) * sizeof *q);
    if (!q)
        return fmqa_err_set(err, FMQA_ERR_OUT_OF_MEMORY, "ref_mla_naive: scratch");
    double *k = q + nq * (dn + dr), *v = k + nk * (dn + dr);
    concat_rows(nq, q_nope, dn, q_rope, dr, q);
    expand_kv(s, w, c_kv, k_rope, k, v);
    ref_attn_shape mha = *s;
    mha.num_kv_heads = H;
    mha.head_dim_qk = dn + dr;
    mha.head_dim_v = w->v_dim;
    mha.sm_scale = effective_scale(s);   /* same default as the absorbed form */
    st = ref_attention(&mha, q, k, v, o, lse, err);
    free(q);
    return st;
}
