/*
 * rt_levels.c -- optimization levels and the KV-cache memory report.
 *
 * A level is a named preset over the cache policy (fmqa_level_policy): element
 * type, sinks + sliding window or (GQA/MQA/MHA models) sinks + recent window +
 * heavy hitters kept by fmqa_compress, speculative query tokens, paging, fused
 * RoPE.
 * fmqa_level_policy_preset() fills the policy from the model; the caller may edit
 * any field afterwards, so fmqa_memory_report_compute() validates the policy it is
 * given rather than trusting the preset.  docs/levels.md states every default and
 * why; keep the two in step.
 *
 * Memory arithmetic (one layer; the page table is counted in full in every layer's
 * report although engines usually share one table across layers):
 *   elements per token   MHA/GQA/MQA: 2 * Hkv * d (K and V); MLA: d_c + d_r (one
 *                        latent row shared by all heads, V read from it)
 *   8-bit scales         one float per token per KV head for K and one for V;
 *                        MLA: one float per token for the latent row.  Per-head
 *                        (per-tensor) scales: none per token, 2 * Hkv (2)
 *                        floats per layer, fixed_scale_bytes
 *   tokens kept          max_seq_len, or sinks + window + draft slots (RING cache)
 *                        capped at it, or sinks + window + heavy +
 *                        compress_every * spec_tokens (compressed cache: the
 *                        tokens appended between two compactions) capped at it
 *   scores               compressed cache: one float per slot per KV head
 *   paged                whole pages are allocated, plus one int32 per page
 *   baseline             fp16 MHA: 2 * H * d * 2 bytes per token, max_seq_len tokens;
 *                        MLA: the same model run as MHA caches per head K = [k_nope
 *                        (d) | k_rope (d_r)] and V (d): H * (2 d + d_r) * 2 bytes
 *
 * Score schedule of a compressed cache (fmqa_level_step): decode adds scores
 * only on the score_steps steps before each compaction, compress_every steps
 * apart.  With c the per-call cost of FMQA_FLAG_SCORES (fmqa_score_cost_bytes,
 * the byte model `fastmqa-bench static --scores` prints), the amortised cost
 * c * score_steps / compress_every stays <= 3% in the presets: 16 steps and
 * as many score steps as fit, or, where even one of 16 costs more, one score
 * step every ceil(c / 3%) steps (fmqa_score_schedule).
 *
 * MLA models get their own presets (mla_policy): the latent row replaces K and V,
 * the 8-bit level stores it in fp8 e4m3 (the format the MLA kernels and FlashMLA
 * read), and RoPE is fused in DeepSeek's interleaved (GPT-J) layout.  The two
 * preset functions share only the window rule, so either can change alone.
 * All sums and products go through the checked helpers of fmqa_common.h: a
 * model too large for int64 bytes is an error, never a wrapped number.
 *
 * Every public function accepts a NULL context (the message is then dropped),
 * writes its OUT parameter only on success and clears the message on success.
 */
#include <ctype.h>
#include <stddef.h>
#include <stdint.h>

#include "fastmqa.h"
#include "rt.h"

#define LEVEL_SINKS 4          /* StreamingLLM: four sinks restore perplexity   */
#define LEVEL_WINDOW_DIV 4     /* window = max_seq_len / 4: 4x fewer tokens      */
#define LEVEL_SPEC_TOKENS 4    /* typical draft length of EAGLE/Medusa drafters */
#define LEVEL_MAX_SPEC 16      /* decode serves 1..16 query tokens per sequence  */
#define LEVEL_8BIT FMQA_DTYPE_INT8
#define LEVEL_8BIT_MLA FMQA_DTYPE_FP8_E4M3 /* the MLA kernels' 8-bit latent          */
#define LEVEL_ROPE_MLA FMQA_ROPE_GPTJ      /* DeepSeek's rope part is interleaved    */
/* Compressed levels (GQA/MQA/MHA): a recent window of max_seq_len / 8 and
 * 3 max_seq_len / 8 heavy hitters, unpooled: the smallest of the budgets tried
 * (docs/levels.md) with which balanced and aggressive meet their accuracy
 * budgets on the structured data sets of `fastmqa-bench levels` when they
 * choose from their score schedule's observation window, at the table's seed
 * and three others.  Max pooling (SnapKV's kernel 7) spent the heavy budget on
 * the neighbours of isolated heavy hitters there; it stays a policy option for
 * clustered attention. */
#define LEVEL_RECENT_DIV 8
#define LEVEL_HEAVY_NUM 3
#define LEVEL_HEAVY_DIV 8
#define LEVEL_MAX_POOL 4096    /* fmqa_compress's limit                         */

static const char *const level_names[] = {
    [FMQA_LEVEL_CONSERVATIVE] = "conservative",
    [FMQA_LEVEL_BALANCED] = "balanced",
    [FMQA_LEVEL_AGGRESSIVE] = "aggressive",
};

static int level_known(fmqa_level level)
{
    return level >= FMQA_LEVEL_CONSERVATIVE && level <= FMQA_LEVEL_AGGRESSIVE;
}

const char *fmqa_level_name(fmqa_level level)
{
    return level_known(level) ? level_names[level] : NULL;
}

/* Case-insensitive equality; names are short ASCII words. */
static int name_equal(const char *a, const char *b)
{
    for (; *a && *b; a++, b++)
        if (tolower((unsigned char)*a) != tolower((unsigned char)*b))
            return 0;
    return *a == *b;
}

fmqa_status fmqa_level_from_name(fmqa_ctx_t *ctx, const char *name, fmqa_level *level)
{
    if (!name || !level)
        return rt_error(ctx, FMQA_ERR_INVALID_ARGUMENT,
                        "fmqa_level_from_name: %s is NULL", name ? "level" : "name");
    for (int l = FMQA_LEVEL_CONSERVATIVE; l <= FMQA_LEVEL_AGGRESSIVE; l++) {
        if (name_equal(name, level_names[l])) {
            *level = (fmqa_level)l;
            return rt_clear(ctx);
        }
    }
    return rt_error(ctx, FMQA_ERR_INVALID_ARGUMENT,
                    "unknown level '%s' (expected conservative, balanced or aggressive)",
                    name);
}

/* ------------------------------------------------------------ model checks */

static int model_is_mla(const fmqa_model_config *m)
{
    return m->mla_latent_dim > 0;
}

static int32_t model_head_dim(const fmqa_model_config *m)
{
    return m->head_dim > 0 ? m->head_dim : m->hidden_size / m->num_q_heads;
}

/* Checks a model configuration; the message names the offending field. */
static fmqa_status model_check(fmqa_ctx_t *ctx, const fmqa_model_config *m)
{
    if (!m)
        return rt_error(ctx, FMQA_ERR_INVALID_ARGUMENT, "model: NULL model config");
    if (m->hidden_size <= 0 || m->num_q_heads <= 0 || m->num_kv_heads <= 0 ||
        m->max_seq_len <= 0)
        return rt_error(ctx, FMQA_ERR_INVALID_ARGUMENT,
                        "model: hidden_size (%d), num_q_heads (%d), num_kv_heads (%d) "
                        "and max_seq_len (%d) must be positive",
                        m->hidden_size, m->num_q_heads, m->num_kv_heads, m->max_seq_len);
    if (m->head_dim < 0 || m->mla_latent_dim < 0 || m->mla_rope_dim < 0)
        return rt_error(ctx, FMQA_ERR_INVALID_ARGUMENT,
                        "model: head_dim (%d), mla_latent_dim (%d) and mla_rope_dim (%d) "
                        "must not be negative",
                        m->head_dim, m->mla_latent_dim, m->mla_rope_dim);
    if (m->hidden_size % m->num_q_heads != 0)
        return rt_error(ctx, FMQA_ERR_INVALID_ARGUMENT,
                        "model.hidden_size %d is not a multiple of num_q_heads %d",
                        m->hidden_size, m->num_q_heads);
    if (m->num_q_heads % m->num_kv_heads != 0)
        return rt_error(ctx, FMQA_ERR_INVALID_ARGUMENT,
                        "model.num_q_heads %d is not a multiple of num_kv_heads %d",
                        m->num_q_heads, m->num_kv_heads);
    int64_t mla_dim; /* head_dim_qk of the MLA problem, an int32 field */
    if (fmqa_add64(m->mla_latent_dim, m->mla_rope_dim, &mla_dim) || mla_dim > INT32_MAX)
        return rt_error(ctx, FMQA_ERR_INVALID_ARGUMENT,
                        "model: mla_latent_dim %d + mla_rope_dim %d exceeds %d",
                        m->mla_latent_dim, m->mla_rope_dim, INT32_MAX);
    if (m->mla_rope_dim > 0 && !model_is_mla(m))
        return rt_error(ctx, FMQA_ERR_INVALID_ARGUMENT,
                        "model.mla_rope_dim %d without mla_latent_dim", m->mla_rope_dim);
    if (m->dtype != FMQA_DTYPE_F16 && m->dtype != FMQA_DTYPE_BF16)
        return rt_error(ctx, FMQA_ERR_INVALID_ARGUMENT,
                        "model.dtype %d: expected f16 or bf16", (int)m->dtype);
    return FMQA_OK;
}

/* ------------------------------------------------------------ presets */

/* The MLA balanced window: a quarter of the context plus 4 sinks, or none when
 * it would keep every position anyway. */
static void level_window(const fmqa_model_config *m, fmqa_level_policy *p)
{
    int32_t window = m->max_seq_len / LEVEL_WINDOW_DIV;
    if (window > 0 && window + LEVEL_SINKS < m->max_seq_len) {
        p->window = window;
        p->sink_tokens = LEVEL_SINKS;
    }
}

/* Slots per sequence of a compressed cache (heavy > 0), capped at max_seq_len:
 * the kept ones and the (at most spec_tokens) tokens each of compress_every
 * steps appends before the next compaction. */
static int64_t compressed_slots(const fmqa_model_config *m, const fmqa_level_policy *p)
{
    int64_t s = (int64_t)p->sink_tokens + p->window + p->heavy +
                (int64_t)p->compress_every * p->spec_tokens;
    return s < m->max_seq_len ? s : m->max_seq_len;
}

/* The decode problem of fmqa_level_problem, unchecked (the presets use it for
 * the score cost before the policy is complete). */
static fmqa_problem problem_of(const fmqa_model_config *model, const fmqa_level_policy *policy,
                               int32_t batch)
{
    fmqa_problem p;
    fmqa_problem_init(&p);
    p.batch = batch;
    p.num_q_heads = model->num_q_heads;
    if (model_is_mla(model)) { /* one latent shared by all heads; V is its first d_c */
        p.op = FMQA_OP_MLA_DECODE;
        p.num_kv_heads = 1;
        p.head_dim_qk = model->mla_latent_dim + model->mla_rope_dim;
        p.head_dim_v = model->mla_latent_dim;
    } else {
        p.op = FMQA_OP_DECODE;
        p.num_kv_heads = model->num_kv_heads;
        p.head_dim_qk = p.head_dim_v = model_head_dim(model);
    }
    p.q_tokens = policy->spec_tokens;
    p.kv_len = model->max_seq_len;
    p.q_dtype = p.out_dtype = model->dtype;
    p.kv_dtype = policy->kv_dtype;
    p.page_size = policy->page_size;
    p.window = policy->window;
    p.sink_tokens = policy->sink_tokens;
    p.kv_scale_granularity = policy->kv_scale_granularity;
    p.flags = FMQA_FLAG_CAUSAL | (policy->page_size ? FMQA_FLAG_PAGED : 0) |
              (policy->window ? FMQA_FLAG_RING : 0);
    /* The speculative protocol (fastmqa.h): a ring keeps spare slots so that
     * spec_tokens drafts never overwrite a position a query still sees. */
    p.draft_slots = policy->window ? policy->spec_tokens - 1 : 0;
    if (policy->heavy > 0) { /* compressed: the cache holds only kept slots */
        p.kv_len = (int32_t)compressed_slots(model, policy);
        p.window = p.sink_tokens = p.draft_slots = 0;
        p.flags = (p.flags & ~FMQA_FLAG_RING) | FMQA_FLAG_SCORES;
    }
    return p;
}

/* The compressed cache of balanced and aggressive (MHA / GQA / MQA) for a
 * policy whose dtype and spec_tokens are set: sinks, a recent window and heavy
 * hitters (fmqa_compress) on the score schedule, or none when it would keep
 * every position anyway or leave fewer recent slots than the drafts need. */
static void level_compressed(const fmqa_model_config *m, fmqa_level_policy *p)
{
    int32_t recent = m->max_seq_len / LEVEL_RECENT_DIV;
    int32_t heavy = (int32_t)((int64_t)m->max_seq_len * LEVEL_HEAVY_NUM / LEVEL_HEAVY_DIV);
    fmqa_problem pr = problem_of(m, p, 1);
    int64_t every, steps;
    fmqa_score_schedule(&pr, &every, &steps);
    /* every < 2^43 (added < 2^39, read >= 2): no overflow below */
    int64_t slots = (int64_t)LEVEL_SINKS + recent + heavy + every * p->spec_tokens;
    if (recent >= LEVEL_MAX_SPEC && heavy > 0 && slots < m->max_seq_len) {
        p->window = recent;
        p->sink_tokens = LEVEL_SINKS;
        p->heavy = heavy;
        p->pooling = FMQA_POOL_NONE;
        p->compress_every = (int32_t)every;
        p->score_steps = (int32_t)steps;
    }
}

/* MHA / GQA / MQA: the model's K and V heads, compressed from balanced on,
 * int8 at the aggressive level. */
static fmqa_level_policy kv_policy(fmqa_level level, const fmqa_model_config *model)
{
    fmqa_level_policy p = {
        .level = level, .kv_dtype = model->dtype, .sink_tokens = 0, .window = 0,
        .spec_tokens = 1, .page_size = 0, .rope = FMQA_ROPE_NONE,
    };
    if (level >= FMQA_LEVEL_AGGRESSIVE) {
        p.kv_dtype = LEVEL_8BIT;
        p.spec_tokens = LEVEL_SPEC_TOKENS;
    }
    if (level >= FMQA_LEVEL_BALANCED) {
        level_compressed(model, &p);
        p.rope = FMQA_ROPE_NEOX;
    }
    return p;
}

/* MLA: conservative is exact MLA (16-bit latent, full context); balanced adds
 * the window and sinks and the fused interleaved RoPE of the rope part;
 * aggressive the fp8 e4m3 latent (one scale per token) and 4 drafts. */
static fmqa_level_policy mla_policy(fmqa_level level, const fmqa_model_config *model)
{
    fmqa_level_policy p = {
        .level = level, .kv_dtype = model->dtype, .sink_tokens = 0, .window = 0,
        .spec_tokens = 1, .page_size = 0, .rope = FMQA_ROPE_NONE,
    };
    if (level >= FMQA_LEVEL_BALANCED) {
        level_window(model, &p);
        p.rope = LEVEL_ROPE_MLA;
    }
    if (level >= FMQA_LEVEL_AGGRESSIVE) {
        p.kv_dtype = LEVEL_8BIT_MLA;
        p.spec_tokens = LEVEL_SPEC_TOKENS;
    }
    return p;
}

fmqa_status fmqa_level_policy_preset(fmqa_ctx_t *ctx, fmqa_level level,
                                     const fmqa_model_config *model,
                                     fmqa_level_policy *policy)
{
    if (!level_known(level))
        return rt_error(ctx, FMQA_ERR_INVALID_ARGUMENT,
                        "unknown level %d (expected 1 conservative, 2 balanced, "
                        "3 aggressive)", (int)level);
    fmqa_status st = model_check(ctx, model);
    if (st != FMQA_OK)
        return st;
    if (!policy)
        return rt_error(ctx, FMQA_ERR_INVALID_ARGUMENT, "policy: NULL output");
    *policy = model_is_mla(model) ? mla_policy(level, model) : kv_policy(level, model);
    return rt_clear(ctx);
}

/* ------------------------------------------------------------ memory */

static int dtype_is_8bit(fmqa_dtype t)
{
    return t == FMQA_DTYPE_INT8 || t == FMQA_DTYPE_FP8_E4M3;
}

/* The score schedule fields (fmqa_level_step): never negative; with heavy > 0
 * a compaction every compress_every >= 1 steps after 1..compress_every score
 * steps. */
static fmqa_status schedule_check(fmqa_ctx_t *ctx, const fmqa_level_policy *p)
{
    if (p->heavy < 0 || p->compress_every < 0 || p->score_steps < 0)
        return rt_error(ctx, FMQA_ERR_INVALID_ARGUMENT,
                        "policy: heavy (%d), compress_every (%d) and score_steps (%d) must "
                        "not be negative", p->heavy, p->compress_every, p->score_steps);
    if (p->heavy == 0)
        return FMQA_OK;
    if (p->compress_every < 1)
        return rt_error(ctx, FMQA_ERR_INVALID_ARGUMENT,
                        "policy.compress_every %d: a compressed cache (heavy %d) needs a "
                        "compaction every 1 or more decode steps (the presets set it)",
                        p->compress_every, p->heavy);
    if (p->score_steps < 1 || p->score_steps > p->compress_every)
        return rt_error(ctx, FMQA_ERR_INVALID_ARGUMENT,
                        "policy.score_steps %d: expected 1..compress_every (%d), the steps "
                        "before each compaction that decode with scores",
                        p->score_steps, p->compress_every);
    return FMQA_OK;
}

/* The heavy-hitter fields: a compressed cache keeps the last `window` slots
 * (at least the spec_tokens query tokens) and is not served for MLA. */
static fmqa_status heavy_check(fmqa_ctx_t *ctx, const fmqa_model_config *m,
                               const fmqa_level_policy *p)
{
    if (p->heavy > 0 && model_is_mla(m))
        return rt_error(ctx, FMQA_ERR_UNSUPPORTED,
                        "policy.heavy %d: MLA decode emits no scores; use a sliding window",
                        p->heavy);
    fmqa_status st = schedule_check(ctx, p);
    if (st != FMQA_OK)
        return st;
    if (p->pool < 0 || p->pool > LEVEL_MAX_POOL)
        return rt_error(ctx, FMQA_ERR_INVALID_ARGUMENT,
                        "policy.pool %d: expected 0..%d", p->pool, LEVEL_MAX_POOL);
    if (p->pooling != FMQA_POOL_NONE && p->pooling != FMQA_POOL_MAX &&
        p->pooling != FMQA_POOL_AVG)
        return rt_error(ctx, FMQA_ERR_INVALID_ARGUMENT, "policy.pooling: unknown pooling %d",
                        (int)p->pooling);
    if (p->heavy == 0)
        return FMQA_OK;
    if (p->window < p->spec_tokens)
        return rt_error(ctx, FMQA_ERR_INVALID_ARGUMENT,
                        "policy.window %d: a compressed cache keeps at least the %d query "
                        "tokens as recent slots", p->window, p->spec_tokens);
    if ((int64_t)p->sink_tokens + p->window + p->heavy +
            (int64_t)p->compress_every * p->spec_tokens > INT32_MAX)
        return rt_error(ctx, FMQA_ERR_INVALID_ARGUMENT,
                        "policy: sink_tokens + window + heavy + compress_every * spec_tokens "
                        "exceed 2^31 - 1 slots");
    return FMQA_OK;
}

fmqa_status fmqa_level_step(fmqa_ctx_t *ctx, const fmqa_level_policy *policy, int64_t step,
                            fmqa_level_step_actions *actions)
{
    if (!policy || !actions)
        return rt_error(ctx, FMQA_ERR_INVALID_ARGUMENT, "fmqa_level_step: %s is NULL",
                        policy ? "actions" : "policy");
    if (step < 0)
        return rt_error(ctx, FMQA_ERR_INVALID_ARGUMENT,
                        "fmqa_level_step: step %lld must not be negative", (long long)step);
    fmqa_status st = schedule_check(ctx, policy);
    if (st != FMQA_OK)
        return st;
    fmqa_level_step_actions a = {0};
    if (policy->heavy > 0) {
        int64_t every = policy->compress_every, phase = step % every;
        int64_t first = every - policy->score_steps; /* first phase of the window */
        a.zero_scores = phase == first;
        a.score = phase >= first;
        a.compress = phase == every - 1;
    }
    *actions = a;
    return rt_clear(ctx);
}

/* Checks a (possibly caller-edited) policy against the model. */
static fmqa_status policy_check(fmqa_ctx_t *ctx, const fmqa_model_config *m,
                                const fmqa_level_policy *p)
{
    if (!p)
        return rt_error(ctx, FMQA_ERR_INVALID_ARGUMENT, "policy: NULL policy");
    if (!level_known(p->level))
        return rt_error(ctx, FMQA_ERR_INVALID_ARGUMENT, "policy.level: unknown level %d",
                        (int)p->level);
    if (p->kv_dtype != FMQA_DTYPE_F16 && p->kv_dtype != FMQA_DTYPE_BF16 &&
        !dtype_is_8bit(p->kv_dtype))
        return rt_error(ctx, FMQA_ERR_INVALID_ARGUMENT,
                        "policy.kv_dtype %d: expected f16, bf16, int8 or fp8_e4m3",
                        (int)p->kv_dtype);
    if (p->sink_tokens < 0 || p->window < 0 || p->page_size < 0)
        return rt_error(ctx, FMQA_ERR_INVALID_ARGUMENT,
                        "policy: sink_tokens (%d), window (%d) and page_size (%d) must "
                        "not be negative", p->sink_tokens, p->window, p->page_size);
    /* Whole pages and a shift for the slot: the kernels' paged layout. */
    if (p->page_size != 0 && (p->page_size < 16 || (p->page_size & (p->page_size - 1)) != 0))
        return rt_error(ctx, FMQA_ERR_INVALID_ARGUMENT,
                        "policy.page_size %d: expected 0 (contiguous) or a power of two >= 16",
                        p->page_size);
    if (p->window > m->max_seq_len)
        return rt_error(ctx, FMQA_ERR_INVALID_ARGUMENT,
                        "policy.window %d is larger than model.max_seq_len %d",
                        p->window, m->max_seq_len);
    if (p->sink_tokens > 0 && p->window == 0)
        return rt_error(ctx, FMQA_ERR_INVALID_ARGUMENT,
                        "policy.sink_tokens %d without a window (sinks only matter "
                        "with a sliding window)", p->sink_tokens);
    if (p->spec_tokens < 1 || p->spec_tokens > LEVEL_MAX_SPEC)
        return rt_error(ctx, FMQA_ERR_INVALID_ARGUMENT,
                        "policy.spec_tokens %d: expected 1..%d", p->spec_tokens,
                        LEVEL_MAX_SPEC);
    if (p->rope != FMQA_ROPE_NONE && p->rope != FMQA_ROPE_NEOX &&
        p->rope != FMQA_ROPE_GPTJ)
        return rt_error(ctx, FMQA_ERR_INVALID_ARGUMENT, "policy.rope: unknown layout %d",
                        (int)p->rope);
    if ((unsigned)p->kv_scale_granularity > FMQA_KV_SCALE_TENSOR)
        return rt_error(ctx, FMQA_ERR_INVALID_ARGUMENT,
                        "policy.kv_scale_granularity: unknown value %d",
                        (int)p->kv_scale_granularity);
    if (p->kv_scale_granularity != FMQA_KV_SCALE_TOKEN_HEAD &&
        (!dtype_is_8bit(p->kv_dtype) || model_is_mla(m)))
        return rt_error(ctx, FMQA_ERR_INVALID_ARGUMENT,
                        "policy.kv_scale_granularity %s: per-head and per-tensor scales need "
                        "an 8-bit cache of an MHA/GQA/MQA model",
                        fmqa_kv_scale_name(p->kv_scale_granularity));
    return heavy_check(ctx, m, p);
}

fmqa_status fmqa_level_problem(fmqa_ctx_t *ctx, const fmqa_model_config *model,
                               const fmqa_level_policy *policy, int32_t batch,
                               fmqa_problem *problem)
{
    fmqa_status st = model_check(ctx, model);
    if (st == FMQA_OK)
        st = policy_check(ctx, model, policy);
    if (st != FMQA_OK)
        return st;
    if (batch <= 0 || !problem)
        return rt_error(ctx, FMQA_ERR_INVALID_ARGUMENT, "level problem: batch %d or NULL problem",
                        batch);
    fmqa_problem p = problem_of(model, policy, batch);
    /* Valid by construction: a model or policy the kernels cannot serve (head
     * dimension, query tokens, grid, 32-bit indexing) is refused here. */
    fmqa_err err;
    if (rt_problem_check(&p, &err) != FMQA_OK) {
        fmqa_err_prefix(&err, "level problem for batch %d", batch);
        return rt_fail(ctx, &err);
    }
    *problem = p;
    return rt_clear(ctx);
}


/* Fills the per-sequence figures; every product is checked. */
static fmqa_status memory_fill(fmqa_ctx_t *ctx, const fmqa_model_config *m,
                               const fmqa_level_policy *p, fmqa_memory_report *r /* OUT */)
{
    int64_t d = model_head_dim(m);
    /* baseline elements per token and head: K and V, MLA's K with its rope part */
    int64_t mha_row = 2 * d + (model_is_mla(m) ? m->mla_rope_dim : 0);
    int64_t elems, scale_rows = model_is_mla(m) ? 1 : 2 * (int64_t)m->num_kv_heads;
    int64_t elem_bytes, scale_bytes, baseline_per_token;
    const fmqa_kv_scale_granularity g = p->kv_scale_granularity;
    if (dtype_is_8bit(p->kv_dtype) && g != FMQA_KV_SCALE_TOKEN_HEAD) {
        r->fixed_scale_bytes = (g == FMQA_KV_SCALE_HEAD ? scale_rows : 2) * (int64_t)sizeof(float);
        scale_rows = 0;
    }
    int bad = model_is_mla(m) ? fmqa_add64(m->mla_latent_dim, m->mla_rope_dim, &elems)
                              : fmqa_prod64((int64_t[]){2, m->num_kv_heads, d}, 3, &elems);
    bad = bad || fmqa_mul64(elems, (int64_t)fmqa_dtype_size(p->kv_dtype), &elem_bytes);
    scale_bytes = dtype_is_8bit(p->kv_dtype) ? scale_rows * (int64_t)sizeof(float) : 0;
    if (p->heavy > 0) /* the H2O buffer: one float per slot per KV head */
        scale_bytes += (int64_t)m->num_kv_heads * (int64_t)sizeof(float);
    bad = bad || fmqa_add64(elem_bytes, scale_bytes, &r->bytes_per_token);

    /* A ring: sinks + window + the draft slots of fmqa_level_problem. */
    int64_t kept = m->max_seq_len, ring = (int64_t)p->sink_tokens + p->window + p->spec_tokens - 1;
    if (p->heavy > 0)
        kept = compressed_slots(m, p);
    else if (p->window > 0 && ring < kept)
        kept = ring;
    r->tokens_kept = kept;

    int64_t slots = kept, table = 0;
    if (p->page_size > 0) { /* policy_check: a power of two */
        int64_t pages = (kept + p->page_size - 1) / p->page_size;
        slots = pages * p->page_size;
        table = pages * (int64_t)sizeof(int32_t);
    }
    bad = bad || fmqa_mul64(slots, r->bytes_per_token, &r->bytes_per_seq) ||
          fmqa_add64(r->bytes_per_seq, table, &r->bytes_per_seq) ||
          fmqa_prod64((int64_t[]){m->num_q_heads, mha_row, 2}, 3, &baseline_per_token) ||
          fmqa_mul64(baseline_per_token, m->max_seq_len, &r->baseline_bytes_per_seq);
    if (bad)
        return rt_error(ctx, FMQA_ERR_INVALID_ARGUMENT,
                        "model: cache bytes per sequence overflow int64");
    return FMQA_OK;
}

fmqa_status fmqa_memory_report_compute(fmqa_ctx_t *ctx, const fmqa_model_config *model,
                                       const fmqa_level_policy *policy, int64_t n_seqs,
                                       int64_t budget_bytes, fmqa_memory_report *report)
{
    fmqa_status st = model_check(ctx, model);
    if (st == FMQA_OK)
        st = policy_check(ctx, model, policy);
    if (st != FMQA_OK)
        return st;
    if (!report)
        return rt_error(ctx, FMQA_ERR_INVALID_ARGUMENT, "report: NULL output");
    if (n_seqs < 0 || budget_bytes < 0)
        return rt_error(ctx, FMQA_ERR_INVALID_ARGUMENT,
                        "n_seqs (%lld) and budget_bytes (%lld) must not be negative",
                        (long long)n_seqs, (long long)budget_bytes);

    fmqa_memory_report r = {0};
    st = memory_fill(ctx, model, policy, &r);
    if (st != FMQA_OK)
        return st;
    if (fmqa_mul64(r.bytes_per_seq, n_seqs, &r.total_bytes) ||
        fmqa_add64(r.total_bytes, r.fixed_scale_bytes, &r.total_bytes))
        return rt_error(ctx, FMQA_ERR_INVALID_ARGUMENT,
                        "n_seqs %lld: total bytes overflow int64", (long long)n_seqs);
    if (budget_bytes > 0 && budget_bytes - r.fixed_scale_bytes < r.bytes_per_seq)
        return rt_error(ctx, FMQA_ERR_INVALID_ARGUMENT,
                        "budget_bytes %lld is too small for one sequence (%lld bytes "
                        "per layer%s)",
                        (long long)budget_bytes,
                        (long long)(r.bytes_per_seq + r.fixed_scale_bytes),
                        r.fixed_scale_bytes ? " with the fixed scales" : "");
    r.max_seqs_in_budget = budget_bytes > 0 ? (budget_bytes - r.fixed_scale_bytes) / r.bytes_per_seq : 0;
    r.cache_multiplier = (double)r.baseline_bytes_per_seq / (double)r.bytes_per_seq;
    r.reduction = 1.0 - (double)r.bytes_per_seq / (double)r.baseline_bytes_per_seq;
    *report = r;
    return rt_clear(ctx);
}
