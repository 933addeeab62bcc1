/*
 * fuzz_problem.c -- problem validation, argument checks and the level and
 * memory arithmetic, on sizes, strides, pointers and policies taken from the
 * fuzzer's bytes.  Properties checked beyond "no crash, no undefined
 * behaviour": an accepted problem keeps the bounds validation promises
 * (recomputed in 128-bit arithmetic), fmqa_level_problem returns only
 * problems that validate, fmqa_level_step's actions follow the schedule and a
 * preset's schedule keeps the amortised score cost within 3%.  Nothing is
 * launched: the argument checks of decode, MLA decode, append and prefill run
 * through rt_decode_params / rt_append_params / rt_prefill_params on a plan
 * built here.
 */
#include <math.h>
#include <stdio.h>

#include "fuzz.h"
#include "fmqa_params.h"
#include "rt.h"

static _Alignas(16) char arena[4096];

/* A pointer into the arena at a fuzzed offset, or NULL. */
static void *ptr(fuzz_bytes *in)
{
    uint8_t b = fuzz_u8(in);
    return b == 0xff ? NULL : arena + (b & 0x7f) * 8 + ((b >> 7) ? 2 : 0);
}

/* ptr(), or NULL once the bytes run out: the fields taken after the first
 * ones stay NULL for inputs written before they were taken. */
static void *opt_ptr(fuzz_bytes *in)
{
    return in->n ? ptr(in) : NULL;
}

static void fill_strides(fuzz_bytes *in, int64_t *s, int n)
{
    for (int i = 0; i < n; i++)
        s[i] = fuzz_i64(in);
}

static void check_bounds(const fmqa_problem *p)
{
    __int128 d = p->head_dim_qk > p->head_dim_v ? p->head_dim_qk : p->head_dim_v;
    __int128 slots = (p->flags & FMQA_FLAG_RING)
                         ? (__int128)p->sink_tokens + p->window + p->draft_slots
                         : p->kv_len;
    FUZZ_ASSERT(slots <= INT32_MAX && p->draft_slots >= 0);
    FUZZ_ASSERT(p->logit_softcap == 0.0f || (p->logit_softcap > 0.0f && p->logit_softcap < INFINITY));
    FUZZ_ASSERT(slots * p->num_kv_heads * d <= INT32_MAX);
    FUZZ_ASSERT((__int128)p->batch * p->q_tokens * p->num_q_heads * d <= INT32_MAX);
    if (p->op == FMQA_OP_DECODE || p->op == FMQA_OP_MLA_DECODE)
        FUZZ_ASSERT(p->q_tokens >= 1 && p->q_tokens <= 16);
    /* decode's and MLA decode's persistent grids have only an x axis
     * (rt_problem.c check_grid; mla_decode_sm90 refuses what its grid z cannot
     * hold); prefill still launches sequences on grid z and KV heads on y */
    if (p->op == FMQA_OP_PREFILL)
        FUZZ_ASSERT(p->batch <= 65535 && p->num_kv_heads <= 65535);
}

static void decode_args(fuzz_bytes *in, const fmqa_problem *p)
{
    fmqa_decode_args a;
    memset(&a, 0, sizeof a);
    a.q = ptr(in), a.k = ptr(in), a.v = ptr(in), a.o = ptr(in);
    a.k_scale = ptr(in), a.v_scale = ptr(in), a.kv_lens = ptr(in), a.page_table = ptr(in);
    a.tree_mask = ptr(in), a.lse = ptr(in), a.workspace = ptr(in), a.sinks = ptr(in);
    fill_strides(in, &a.q_stride_batch, 3);
    fill_strides(in, &a.k_stride_batch, 6);
    fill_strides(in, &a.k_scale_stride_batch, 6);
    fill_strides(in, &a.o_stride_batch, 3);
    a.page_table_stride = fuzz_i64(in);
    a.workspace_size = (size_t)fuzz_i64(in);
    fuzz_take(in, &a.sm_scale, sizeof a.sm_scale);
    rt_plan plan;
    memset(&plan, 0, sizeof plan);
    plan.problem = *p;
    plan.launch.splits = 1 + fuzz_u8(in) % 8;
    /* fields appended after 0.1.0: CSR tables, scores */
    a.page_indptr = opt_ptr(in), a.page_indices = opt_ptr(in), a.last_page_len = opt_ptr(in);
    a.scores = opt_ptr(in);
    fill_strides(in, &a.scores_stride_batch, 2);
    int64_t rows = (int64_t)p->batch * p->q_tokens * p->num_q_heads; /* validated */
    plan.launch.workspace = plan.launch.splits > 1
                                ? plan.launch.splits * rows * (p->head_dim_v + 1) * 4
                                : 0;
    if (p->flags & FMQA_FLAG_SCORES) /* decode.lua: the rows' LSEs and logits */
        plan.launch.workspace += rows * 4 + 16;
    fmqa_decode_params o;
    fmqa_err err = {0};
    if (rt_decode_params(&plan, &a, &o, &err) != FMQA_OK)
        FUZZ_ASSERT(err.msg[0] != '\0');
}

static void append_args(fuzz_bytes *in, const fmqa_problem *p)
{
    fmqa_append_args a;
    memset(&a, 0, sizeof a);
    a.k_new = ptr(in), a.v_new = ptr(in), a.q = ptr(in), a.k = ptr(in), a.v = ptr(in);
    a.k_scale = ptr(in), a.v_scale = ptr(in), a.start_pos = ptr(in), a.page_table = ptr(in);
    fill_strides(in, &a.k_new_stride_batch, 6);
    fill_strides(in, &a.q_stride_batch, 3);
    fill_strides(in, &a.k_stride_batch, 6);
    fill_strides(in, &a.k_scale_stride_batch, 6);
    a.page_table_stride = fuzz_i64(in);
    fuzz_take(in, &a.rope_theta, sizeof a.rope_theta);
    a.rope_cos_sin = ptr(in);
    a.rope_cos_sin_stride = fuzz_i64(in), a.rope_cos_sin_len = fuzz_i64(in);
    /* fields appended after 0.1.0: CSR tables, slot mapping, k_pe_new, rope_pos */
    a.page_indptr = opt_ptr(in), a.page_indices = opt_ptr(in), a.slot_mapping = opt_ptr(in);
    a.k_pe_new = opt_ptr(in), a.rope_pos = opt_ptr(in);
    fill_strides(in, &a.k_pe_new_stride_batch, 2);
    rt_plan plan;
    memset(&plan, 0, sizeof plan);
    plan.problem = *p;
    plan.launch.splits = 1;
    fmqa_append_params o;
    fmqa_err err = {0};
    if (rt_append_params(&plan, &a, &o, &err) != FMQA_OK)
        FUZZ_ASSERT(err.msg[0] != '\0');
}

/* MLA decode's arguments, checked as the decode they become. */
static void mla_args(fuzz_bytes *in, const fmqa_problem *p)
{
    fmqa_mla_decode_args a;
    memset(&a, 0, sizeof a);
    a.q = ptr(in), a.kv = ptr(in), a.o = ptr(in), a.kv_scale = ptr(in), a.kv_lens = ptr(in);
    a.page_table = ptr(in), a.lse = ptr(in), a.workspace = ptr(in), a.sinks = ptr(in);
    a.page_indptr = ptr(in), a.page_indices = ptr(in), a.last_page_len = ptr(in);
    fill_strides(in, &a.q_stride_batch, 3);
    fill_strides(in, &a.kv_stride_batch, 2);
    fill_strides(in, &a.kv_scale_stride_batch, 2);
    fill_strides(in, &a.o_stride_batch, 3);
    a.page_table_stride = fuzz_i64(in);
    a.workspace_size = (size_t)fuzz_i64(in);
    fuzz_take(in, &a.sm_scale, sizeof a.sm_scale);
    fmqa_decode_args d;
    rt_mla_decode_args(p, &a, &d);
    rt_plan plan;
    memset(&plan, 0, sizeof plan);
    plan.problem = *p;
    plan.launch.splits = 1;
    fmqa_decode_params o;
    fmqa_err err = {0};
    if (rt_decode_params(&plan, &d, &o, &err) != FMQA_OK)
        FUZZ_ASSERT(err.msg[0] != '\0');
}

/* Prefill's packed rows, total_q, the cache of a chunked prefill and sinks;
 * the sm_90a tensor maps are left out (they need the driver). */
static void prefill_args(fuzz_bytes *in, const fmqa_problem *p)
{
    fmqa_prefill_args a;
    memset(&a, 0, sizeof a);
    a.q = ptr(in), a.k = ptr(in), a.v = ptr(in), a.o = ptr(in), a.k_scale = ptr(in);
    a.v_scale = ptr(in), a.cu_seqlens_q = ptr(in), a.kv_lens = ptr(in), a.page_table = ptr(in);
    a.lse = ptr(in), a.workspace = ptr(in), a.sinks = ptr(in);
    fill_strides(in, &a.q_stride_token, 2);
    fill_strides(in, &a.k_stride_batch, 6);
    fill_strides(in, &a.k_scale_stride_batch, 6);
    fill_strides(in, &a.o_stride_token, 2);
    a.page_table_stride = fuzz_i64(in);
    a.workspace_size = (size_t)fuzz_i64(in);
    a.total_q = fuzz_i64(in);
    fuzz_take(in, &a.sm_scale, sizeof a.sm_scale);
    rt_plan plan;
    memset(&plan, 0, sizeof plan);
    plan.problem = *p;
    plan.launch.splits = 1;
    fmqa_prefill_params o;
    fmqa_err err = {0};
    if (rt_prefill_params(&plan, &a, &o, &err) != FMQA_OK)
        FUZZ_ASSERT(err.msg[0] != '\0');
}

static void levels(fuzz_bytes *in)
{
    fmqa_model_config m;
    fmqa_level_policy pol;
    fuzz_take(in, &m, sizeof m);
    fuzz_take(in, &pol, sizeof pol);
    int32_t batch = (int32_t)fuzz_i64(in);
    fmqa_problem q;
    fmqa_err err = {0};
    if (fmqa_level_problem(NULL, &m, &pol, batch, &q) == FMQA_OK)
        FUZZ_ASSERT(rt_problem_check(&q, &err) == FMQA_OK);
    fmqa_memory_report r;
    fmqa_memory_report_compute(NULL, &m, &pol, fuzz_i64(in), fuzz_i64(in), &r);
    fmqa_level_policy preset;
    int64_t step = fuzz_i64(in);
    fmqa_level_step_actions a;
    if (fmqa_level_step(NULL, &pol, step, &a) == FMQA_OK && pol.heavy > 0) {
        FUZZ_ASSERT(!a.zero_scores || a.score);
        FUZZ_ASSERT(a.compress == (step % pol.compress_every == pol.compress_every - 1));
    }
    /* a preset's score schedule keeps the amortised cost within 3% */
    if (fmqa_level_policy_preset(NULL, pol.level, &m, &preset) == FMQA_OK && preset.heavy > 0 &&
        fmqa_level_problem(NULL, &m, &preset, 1, &q) == FMQA_OK) {
        int64_t added, read;
        fmqa_score_cost_bytes(&q, &added, &read);
        FUZZ_ASSERT(added * preset.score_steps * 100 <= 3 * read * preset.compress_every);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_bytes in = {data, size};
    fmqa_problem p;
    fuzz_take(&in, &p, sizeof p);
    fmqa_err err = {0};
    if (rt_problem_check(&p, &err) == FMQA_OK) {
        check_bounds(&p);
        if (p.op == FMQA_OP_DECODE)
            decode_args(&in, &p);
        else if (p.op == FMQA_OP_APPEND)
            append_args(&in, &p);
        else if (p.op == FMQA_OP_MLA_DECODE)
            mla_args(&in, &p);
        else if (p.op == FMQA_OP_PREFILL)
            prefill_args(&in, &p);
    } else {
        FUZZ_ASSERT(err.msg[0] != '\0');
    }
    levels(&in);
    return 0;
}
