/*
 * ref_compress.c -- reference of fmqa_compress's choice: which slots a
 * sequence's KV head keeps under a policy (sinks, recent slots, heavy hitters
 * by pooled score).  The keys are floats computed in the kernel's order, so
 * the choice is exact, not approximate: any difference from the kernel is a
 * bug, whatever the scores.  The order among candidates is (key descending,
 * slot ascending), sorted with qsort.
 */
#include "ref.h"

#include <math.h>
#include <stdlib.h>

#define BAD(...) fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT, __VA_ARGS__)

typedef struct cand {
    float key;
    int32_t slot;
} cand;

static int by_key_then_slot(const void *x, const void *y)
{
    const cand *a = x, *b = y;
    if (a->key != b->key)
        return a->key > b->key ? -1 : 1;
    return (a->slot > b->slot) - (a->slot < b->slot);
}

/* raw(j): the head's score, or (per sequence) the float sum over heads. */
static float raw(const fmqa_compress_policy *c, int64_t heads, int64_t hk, const float *s,
                 int64_t hs, int64_t j)
{
    if (!c->per_sequence)
        return s[hk * hs + j];
    float x = 0.0f;
    for (int64_t h = 0; h < heads; h++)
        x += s[h * hs + j];
    return x;
}

static float key(const fmqa_compress_policy *c, int64_t n, int64_t heads, int64_t hk,
                 const float *s, int64_t hs, int64_t j)
{
    if (c->pooling == FMQA_POOL_NONE)
        return raw(c, heads, hk, s, hs, j);
    int64_t lo = j - c->pool < 0 ? 0 : j - c->pool, hi = j + c->pool >= n ? n - 1 : j + c->pool;
    float x = c->pooling == FMQA_POOL_MAX ? raw(c, heads, hk, s, hs, lo) : 0.0f;
    for (int64_t i = lo; i <= hi; i++) {
        float r = raw(c, heads, hk, s, hs, i);
        x = c->pooling == FMQA_POOL_MAX ? fmaxf(x, r) : x + r;
    }
    return c->pooling == FMQA_POOL_AVG ? x / (float)(2 * c->pool + 1) : x;
}

fmqa_status ref_compress_select(const fmqa_compress_policy *c, int64_t n, int64_t heads,
                                int64_t hk, const float *scores, int64_t hs, int32_t *kept,
                                int64_t *n_kept, fmqa_err *err)
{
    if (!c || !kept || !n_kept || n < 0 || heads <= 0 || hk < 0 || hk >= heads)
        return BAD("ref_compress_select: NULL policy or output, or bad n / heads / hk");
    if (c->sink_tokens < 0 || c->recent < 0 || c->heavy < 0 || c->pool < 0 ||
        (unsigned)c->pooling > FMQA_POOL_AVG || (c->heavy > 0 && !scores))
        return BAD("ref_compress_select: negative policy field, unknown pooling or no scores");
    int64_t budget = (int64_t)c->sink_tokens + c->recent + c->heavy;
    if (n <= budget) {
        for (int64_t j = 0; j < n; j++)
            kept[j] = (int32_t)j;
        *n_kept = n;
        return FMQA_OK;
    }
    int64_t c0 = c->sink_tokens, c1 = n - c->recent, m = 0, nc = c1 - c0;
    cand *cs = malloc((size_t)(nc > 0 ? nc : 1) * sizeof *cs);
    unsigned char *take = calloc((size_t)n, 1);
    if (!cs || !take) {
        free(cs), free(take);
        return fmqa_err_set(err, FMQA_ERR_OUT_OF_MEMORY, "ref_compress_select: %lld slots",
                            (long long)n);
    }
    for (int64_t j = c0; c->heavy > 0 && j < c1; j++)
        cs[m++] = (cand){key(c, n, heads, hk, scores, hs, j), (int32_t)j};
    qsort(cs, (size_t)m, sizeof *cs, by_key_then_slot);
    for (int64_t i = 0; i < c->heavy && i < m; i++)
        take[cs[i].slot] = 1;
    int64_t k = 0;
    for (int64_t j = 0; j < n; j++)
        if (j < c0 || j >= c1 || take[j])
            kept[k++] = (int32_t)j;
    *n_kept = k;
    free(cs);
    free(take);
    return FMQA_OK;
}
