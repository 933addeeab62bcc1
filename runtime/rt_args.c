/*
 * rt_args.c -- the public launching entry points (fmqa_decode, fmqa_append,
 * fmqa_decode_workspace_size) and the translation of their argument structs
 * into the kernels' parameter structs.
 *
 * Everything a kernel assumes about its arguments is checked here, before
 * anything is launched: required pointers present, 16-byte alignment of the
 * tensors and of every stride in bytes (the kernels use 16-byte vector loads),
 * page tables wide enough, workspace large enough.  A failed check returns
 * FMQA_ERR_INVALID_ARGUMENT naming the field; nothing is launched.
 */
#include "rt.h"

#include <math.h>
#include <string.h>

#include "fmqa_params.h"

#define BAD(...) fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT, __VA_ARGS__)

static int is_8bit(fmqa_dtype t) { return t == FMQA_DTYPE_INT8 || t == FMQA_DTYPE_FP8_E4M3; }

/* A tensor: base pointer and three strides in elements of elem bytes. */
static fmqa_status check_tensor(const char *name, const void *ptr, const int64_t *strides,
                                size_t elem, int required, fmqa_err *err)
{
    if (!ptr)
        return required ? BAD("args.%s is NULL", name) : FMQA_OK;
    if ((uintptr_t)ptr % 16)
        return BAD("args.%s is not 16-byte aligned", name);
    for (int i = 0; i < 3; i++)
        if (strides[i] < 0 || (strides[i] * (int64_t)elem) % 16)
            return BAD("args.%s stride %d (%lld elements) is negative or not a multiple of "
                       "16 bytes",
                       name, i, (long long)strides[i]);
    return FMQA_OK;
}

static fmqa_status check_scales(const char *name, const float *ptr, const int64_t *strides,
                                fmqa_err *err)
{
    if (!ptr)
        return BAD("args.%s is NULL but the cache is 8-bit", name);
    for (int i = 0; i < 3; i++)
        if (strides[i] < 0)
            return BAD("args.%s stride %d is negative", name, i);
    return FMQA_OK;
}

static fmqa_status check_pages(const fmqa_problem *p, const int32_t *table, int64_t stride,
                               fmqa_err *err)
{
    if (!(p->flags & FMQA_FLAG_PAGED))
        return FMQA_OK;
    int64_t slots = (p->flags & FMQA_FLAG_RING) ? (int64_t)p->sink_tokens + p->window
                                                 : p->kv_len;
    int64_t pages = (slots + p->page_size - 1) / p->page_size;
    if (!table)
        return BAD("args.page_table is NULL but the problem is paged");
    if (stride < pages)
        return BAD("args.page_table_stride %lld is less than the %lld pages a sequence "
                   "may need",
                   (long long)stride, (long long)pages);
    return FMQA_OK;
}

/* The KV-cache fields carry the same names in fmqa_decode_args and
 * fmqa_append_args, and in both params structs: one view checks them and one
 * macro copies them, whichever op it is. */
typedef struct cache_view {
    const void *k, *v;
    int64_t ks[3], vs[3];
    const float *k_scale, *v_scale;
    int64_t kss[3], vss[3];
    const int32_t *page_table;
    int64_t page_table_stride;
} cache_view;

#define CACHE_VIEW(a)                                                                   \
    {(a)->k, (a)->v,                                                                    \
     {(a)->k_stride_batch, (a)->k_stride_token, (a)->k_stride_head},                    \
     {(a)->v_stride_batch, (a)->v_stride_token, (a)->v_stride_head},                    \
     (a)->k_scale, (a)->v_scale,                                                        \
     {(a)->k_scale_stride_batch, (a)->k_scale_stride_token, (a)->k_scale_stride_head},  \
     {(a)->v_scale_stride_batch, (a)->v_scale_stride_token, (a)->v_scale_stride_head},  \
     (a)->page_table, (a)->page_table_stride}

#define COPY_CACHE(o, a)                                                                \
    do {                                                                                \
        (o)->k = (a)->k, (o)->v = (a)->v;                                               \
        (o)->k_sb = (a)->k_stride_batch, (o)->k_st = (a)->k_stride_token;               \
        (o)->k_sh = (a)->k_stride_head;                                                 \
        (o)->v_sb = (a)->v_stride_batch, (o)->v_st = (a)->v_stride_token;               \
        (o)->v_sh = (a)->v_stride_head;                                                 \
        (o)->k_scale = (a)->k_scale, (o)->v_scale = (a)->v_scale;                       \
        (o)->ks_sb = (a)->k_scale_stride_batch, (o)->ks_st = (a)->k_scale_stride_token; \
        (o)->ks_sh = (a)->k_scale_stride_head;                                          \
        (o)->vs_sb = (a)->v_scale_stride_batch, (o)->vs_st = (a)->v_scale_stride_token; \
        (o)->vs_sh = (a)->v_scale_stride_head;                                          \
        (o)->page_table = (a)->page_table, (o)->pt_stride = (a)->page_table_stride;     \
    } while (0)

static fmqa_status check_cache(const fmqa_problem *p, const cache_view *c, fmqa_err *err)
{
    size_t ke = fmqa_dtype_size(p->kv_dtype);
    fmqa_status st;
    if ((st = check_tensor("k", c->k, c->ks, ke, 1, err)) ||
        (st = check_tensor("v", c->v, c->vs, ke, 1, err)))
        return st;
    if (is_8bit(p->kv_dtype) && ((st = check_scales("k_scale", c->k_scale, c->kss, err)) ||
                                 (st = check_scales("v_scale", c->v_scale, c->vss, err))))
        return st;
    return check_pages(p, c->page_table, c->page_table_stride, err);
}

static int64_t plan_scalar(const rt_plan *plan, const char *name, int64_t dflt)
{
    int64_t v;
    return gen_plan_scalar(&plan->launch, name, &v) ? v : dflt;
}

/* Everything about the arguments that the problem alone settles: checked before
 * a plan is resolved, so bad input is reported even without a GPU. */
static fmqa_status check_decode(const fmqa_problem *p, const fmqa_decode_args *a, fmqa_err *err)
{
    if (!a)
        return BAD("args is NULL");
    size_t qe = fmqa_dtype_size(p->q_dtype), oe = fmqa_dtype_size(p->out_dtype);
    const int64_t qs[3] = {a->q_stride_batch, a->q_stride_token, a->q_stride_head};
    const int64_t os[3] = {a->o_stride_batch, a->o_stride_token, a->o_stride_head};
    const cache_view cache = CACHE_VIEW(a);
    fmqa_status st;
    if ((st = check_tensor("q", a->q, qs, qe, 1, err)) ||
        (st = check_tensor("o", a->o, os, oe, 1, err)) || (st = check_cache(p, &cache, err)))
        return st;
    if (!a->kv_lens)
        return BAD("args.kv_lens is NULL");
    if ((p->flags & FMQA_FLAG_TREE_MASK) && !a->tree_mask)
        return BAD("args.tree_mask is NULL but the problem has FMQA_FLAG_TREE_MASK");
    if ((p->flags & FMQA_FLAG_LSE) && !a->lse)
        return BAD("args.lse is NULL but the problem has FMQA_FLAG_LSE");
    if (a->sm_scale < 0 || !isfinite(a->sm_scale))
        return BAD("args.sm_scale %g is negative or not finite", a->sm_scale);
    if (a->workspace && (uintptr_t)a->workspace % 16)
        return BAD("args.workspace is not 16-byte aligned");
    return check_pages(p, a->page_table, a->page_table_stride, err);
}

fmqa_status rt_decode_params(const rt_plan *plan, const fmqa_decode_args *a,
                             fmqa_decode_params *o, fmqa_err *err)
{
    const fmqa_problem *p = &plan->problem;
    fmqa_status st = check_decode(p, a, err);
    if (st != FMQA_OK)
        return st;
    if (plan->launch.workspace > 0 &&
        (!a->workspace || a->workspace_size < (size_t)plan->launch.workspace))
        return BAD("args.workspace: %zu bytes given, %lld needed "
                   "(fmqa_decode_workspace_size)",
                   a->workspace ? a->workspace_size : 0, (long long)plan->launch.workspace);
    memset(o, 0, sizeof *o);
    o->q = a->q;
    o->q_sb = a->q_stride_batch, o->q_st = a->q_stride_token, o->q_sh = a->q_stride_head;
    COPY_CACHE(o, a);
    o->kv_lens = a->kv_lens;
    o->tree_mask = (const unsigned long long *)a->tree_mask;
    o->o = a->o;
    o->o_sb = a->o_stride_batch, o->o_st = a->o_stride_token, o->o_sh = a->o_stride_head;
    o->lse = a->lse;
    o->sm_scale = a->sm_scale > 0 ? a->sm_scale : 1.0f / sqrtf((float)p->head_dim_qk);
    o->sm_scale_log2 = o->sm_scale * 1.4426950408889634f;
    o->batch = p->batch, o->num_q_heads = p->num_q_heads, o->num_kv_heads = p->num_kv_heads;
    o->kv_len_max = p->kv_len, o->window = p->window, o->sink_tokens = p->sink_tokens;
    o->num_splits = plan->launch.splits;
    o->split_tokens = (int)plan_scalar(plan, "split_tokens",
                                       (p->kv_len + o->num_splits - 1) / o->num_splits);
    if (o->num_splits > 1) {
        /* Partial outputs first, then partial LSEs: [split, b, t, h, (dv)] fp32. */
        size_t rows = (size_t)o->num_splits * p->batch * p->q_tokens * p->num_q_heads;
        o->ws_o = a->workspace;
        o->ws_lse = o->ws_o + rows * p->head_dim_v;
    }
    return FMQA_OK;
}

static fmqa_status check_append(const fmqa_problem *p, const fmqa_append_args *a, fmqa_err *err)
{
    if (!a)
        return BAD("args is NULL");
    size_t ie = fmqa_dtype_size(p->q_dtype);
    const int64_t kn[3] = {a->k_new_stride_batch, a->k_new_stride_token, a->k_new_stride_head};
    const int64_t vn[3] = {a->v_new_stride_batch, a->v_new_stride_token, a->v_new_stride_head};
    const int64_t qs[3] = {a->q_stride_batch, a->q_stride_token, a->q_stride_head};
    const cache_view cache = CACHE_VIEW(a);
    fmqa_status st;
    if ((st = check_tensor("k_new", a->k_new, kn, ie, 1, err)) ||
        (st = check_tensor("v_new", a->v_new, vn, ie, 1, err)) ||
        (st = check_tensor("q", a->q, qs, ie, 0, err)) || (st = check_cache(p, &cache, err)))
        return st;
    if (!a->start_pos)
        return BAD("args.start_pos is NULL");
    if (a->rope_theta < 0 || !isfinite(a->rope_theta))
        return BAD("args.rope_theta %g is negative or not finite", a->rope_theta);
    return FMQA_OK;
}

fmqa_status rt_append_params(const rt_plan *plan, const fmqa_append_args *a,
                             fmqa_append_params *o, fmqa_err *err)
{
    const fmqa_problem *p = &plan->problem;
    fmqa_status st = check_append(p, a, err);
    if (st != FMQA_OK)
        return st;
    memset(o, 0, sizeof *o);
    o->k_new = a->k_new, o->v_new = a->v_new;
    o->kn_sb = a->k_new_stride_batch, o->kn_st = a->k_new_stride_token;
    o->kn_sh = a->k_new_stride_head;
    o->vn_sb = a->v_new_stride_batch, o->vn_st = a->v_new_stride_token;
    o->vn_sh = a->v_new_stride_head;
    o->q = a->q;
    o->q_sb = a->q_stride_batch, o->q_st = a->q_stride_token, o->q_sh = a->q_stride_head;
    COPY_CACHE(o, a);
    o->start_pos = a->start_pos;
    o->rope_theta = a->rope_theta > 0 ? a->rope_theta : 10000.0f;
    o->batch = p->batch, o->num_q_heads = p->num_q_heads, o->num_kv_heads = p->num_kv_heads;
    o->n_new = p->q_tokens, o->window = p->window, o->sink_tokens = p->sink_tokens;
    return FMQA_OK;
}

/* ---------------------------------------------------------------- entry points */

static fmqa_status check_op(const fmqa_problem *p, fmqa_op op, fmqa_err *err)
{
    if (!p)
        return BAD("problem is NULL");
    if (p->op != op)
        return BAD("problem.op is %s, this call needs %s",
                   fmqa_op_name(p->op) ? fmqa_op_name(p->op) : "unknown", fmqa_op_name(op));
    return FMQA_OK;
}

fmqa_status fmqa_decode_workspace_size(fmqa_ctx_t *ctx, const fmqa_problem *problem,
                                       size_t *bytes)
{
    fmqa_err err;
    const rt_plan *plan;
    if (!ctx)
        return FMQA_ERR_INVALID_ARGUMENT;
    if (!bytes)
        return rt_error(ctx, FMQA_ERR_INVALID_ARGUMENT, "bytes is NULL");
    if (check_op(problem, FMQA_OP_DECODE, &err) || rt_plan_get(ctx, problem, &plan, &err))
        return rt_fail(ctx, &err);
    *bytes = (size_t)plan->launch.workspace;
    return rt_clear(ctx);
}

/* How an op's public arguments become its kernel parameters. */
typedef struct op_kind {
    fmqa_op op;
    fmqa_status (*check)(const fmqa_problem *, const void *, fmqa_err *);
    fmqa_status (*fill)(const rt_plan *, const void *, void *, fmqa_err *);
} op_kind;

/* Checks, plans, fills the params, enters the context and launches. */
static fmqa_status launch_op(fmqa_ctx_t *ctx, const fmqa_problem *problem, const op_kind *kind,
                             const void *args, void *params, fmqa_stream_t stream)
{
    fmqa_err err;
    const rt_plan *plan;
    if (!ctx)
        return FMQA_ERR_INVALID_ARGUMENT;
    if (check_op(problem, kind->op, &err) || rt_problem_check(problem, &err) ||
        kind->check(problem, args, &err) || rt_plan_get(ctx, problem, &plan, &err) ||
        kind->fill(plan, args, params, &err) || rt_enter(ctx, &err))
        return rt_fail(ctx, &err);
    fmqa_status st = rt_plan_launch(ctx, plan, params, (CUstream)stream, &err);
    rt_leave(ctx);
    return st == FMQA_OK ? rt_clear(ctx) : rt_fail(ctx, &err);
}

static fmqa_status decode_check(const fmqa_problem *p, const void *a, fmqa_err *err)
{
    return check_decode(p, a, err);
}

static fmqa_status decode_fill(const rt_plan *plan, const void *a, void *o, fmqa_err *err)
{
    return rt_decode_params(plan, a, o, err);
}

static fmqa_status append_check(const fmqa_problem *p, const void *a, fmqa_err *err)
{
    return check_append(p, a, err);
}

static fmqa_status append_fill(const rt_plan *plan, const void *a, void *o, fmqa_err *err)
{
    return rt_append_params(plan, a, o, err);
}

static const op_kind DECODE = {FMQA_OP_DECODE, decode_check, decode_fill};
static const op_kind APPEND = {FMQA_OP_APPEND, append_check, append_fill};

fmqa_status fmqa_decode(fmqa_ctx_t *ctx, const fmqa_problem *problem,
                        const fmqa_decode_args *args, fmqa_stream_t stream)
{
    fmqa_decode_params params;
    return launch_op(ctx, problem, &DECODE, args, &params, stream);
}

fmqa_status fmqa_append(fmqa_ctx_t *ctx, const fmqa_problem *problem,
                        const fmqa_append_args *args, fmqa_stream_t stream)
{
    fmqa_append_params params;
    return launch_op(ctx, problem, &APPEND, args, &params, stream);
}
