/*
 * fuzz_compress.c -- fmqa_compress's policy and arguments from the fuzzer's
 * bytes.  Properties beyond "no crash, no undefined behaviour":
 *  - a policy rt_compress_policy_check accepts is one the reference serves,
 *    and the reference's choice keeps min(n, budget) slots, strictly
 *    increasing, every sink and (when over budget) every recent slot; without
 *    pooling, for a single head, no candidate left out outranks one kept
 *    (larger score, or equal score and smaller slot);
 *  - the argument checks (rt_compress_params on a plan built here, nothing
 *    launched) either accept or say why.
 */
#include <math.h>
#include <stdio.h>

#include "fuzz.h"
#include "fmqa_params.h"
#include "ref.h"
#include "rt.h"

#define MAX_SLOTS 300
#define MAX_HEADS 4

static _Alignas(16) char arena[4096];

static void *ptr(fuzz_bytes *in)
{
    uint8_t b = fuzz_u8(in);
    return b == 0xff ? NULL : arena + (b & 0x7f) * 8 + ((b >> 7) ? 2 : 0);
}

static int32_t small(fuzz_bytes *in)
{
    int32_t v;
    fuzz_take(in, &v, sizeof v);
    /* mostly small values (where the choice is interesting), sometimes any */
    return (v & 0x40000000) ? v : v % 64;
}

static void choice(fuzz_bytes *in, const fmqa_compress_policy *pol)
{
    static float sc[MAX_HEADS * MAX_SLOTS];
    static int32_t kept[MAX_SLOTS];
    const int64_t n = fuzz_u8(in) + fuzz_u8(in) % 45, heads = 1 + fuzz_u8(in) % MAX_HEADS;
    const int64_t hk = fuzz_u8(in) % heads;
    for (int64_t i = 0; i < heads * n; i++) {
        uint8_t b = fuzz_u8(in); /* few distinct values: many ties */
        sc[i] = (float)(b % 16) / 8.0f;
    }
    int64_t nk = -1;
    fmqa_err err = {0};
    FUZZ_ASSERT(ref_compress_select(pol, n, heads, hk, sc, n, kept, &nk, &err) == FMQA_OK);
    const int64_t budget = (int64_t)pol->sink_tokens + pol->recent + pol->heavy;
    FUZZ_ASSERT(nk == (n < budget ? n : budget));
    for (int64_t i = 0; i < nk; i++)
        FUZZ_ASSERT(kept[i] >= 0 && kept[i] < n && (i == 0 || kept[i] > kept[i - 1]));
    for (int64_t i = 0; i < nk && i < pol->sink_tokens; i++)
        FUZZ_ASSERT(kept[i] == i);
    if (n <= budget)
        return;
    for (int64_t r = 0; r < pol->recent; r++)
        FUZZ_ASSERT(kept[nk - 1 - r] == n - 1 - r);
    if (pol->pooling != FMQA_POOL_NONE || pol->per_sequence)
        return;
    static unsigned char in_set[MAX_SLOTS + 64];
    memset(in_set, 0, sizeof in_set);
    for (int64_t i = 0; i < nk; i++)
        in_set[kept[i]] = 1;
    const float *s = sc + hk * n;
    for (int64_t j = pol->sink_tokens; j < n - pol->recent; j++)
        for (int64_t i = pol->sink_tokens; !in_set[j] && i < n - pol->recent; i++)
            if (in_set[i])
                FUZZ_ASSERT(s[i] > s[j] || (s[i] == s[j] && i < j));
}

static void args(fuzz_bytes *in, const fmqa_problem *p, const fmqa_compress_policy *pol)
{
    fmqa_compress_args a;
    memset(&a, 0, sizeof a);
    a.k = ptr(in), a.v = ptr(in), a.k_scale = ptr(in), a.v_scale = ptr(in);
    a.page_table = ptr(in), a.kv_lens = ptr(in), a.new_lens = ptr(in);
    a.scores = ptr(in), a.kept = ptr(in), a.workspace = ptr(in);
    fuzz_take(in, &a.k_stride_batch, 6 * sizeof(int64_t));
    fuzz_take(in, &a.k_scale_stride_batch, 6 * sizeof(int64_t));
    a.page_table_stride = fuzz_i64(in);
    a.scores_stride_batch = fuzz_i64(in), a.scores_stride_head = fuzz_i64(in);
    a.kept_stride_batch = fuzz_i64(in), a.kept_stride_head = fuzz_i64(in);
    a.workspace_size = (size_t)fuzz_i64(in);
    a.free_pages = ptr(in);
    a.policy = *pol;
    rt_plan plan;
    memset(&plan, 0, sizeof plan);
    plan.problem = *p;
    plan.launch.splits = 1;
    plan.launch.workspace = 8 * (int64_t)p->batch * p->num_kv_heads * p->kv_len;
    fmqa_compress_params o;
    fmqa_err err = {0};
    if (rt_compress_params(&plan, &a, &o, &err) != FMQA_OK)
        FUZZ_ASSERT(err.msg[0] != '\0');
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_bytes in = {data, size};
    fmqa_compress_policy pol;
    pol.sink_tokens = small(&in), pol.recent = small(&in), pol.heavy = small(&in);
    pol.pooling = (fmqa_pooling)(fuzz_u8(&in) % 4);
    pol.pool = small(&in), pol.per_sequence = fuzz_u8(&in) % 3;
    const int has_scores = fuzz_u8(&in) & 1;
    fmqa_err err = {0};
    if (rt_compress_policy_check(&pol, has_scores, &err) == FMQA_OK) {
        if (pol.sink_tokens + (int64_t)pol.recent + pol.heavy < MAX_SLOTS)
            choice(&in, &pol);
    } else {
        FUZZ_ASSERT(err.msg[0] != '\0');
    }
    fmqa_problem p;
    fuzz_take(&in, &p, sizeof p);
    p.op = FMQA_OP_COMPRESS;
    memset(&err, 0, sizeof err);
    if (rt_problem_check(&p, &err) == FMQA_OK)
        args(&in, &p, &pol);
    return 0;
}
