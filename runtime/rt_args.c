/*
 * rt_args.c -- the public launching entry points (fmqa_decode, fmqa_mla_decode,
 * fmqa_append, fmqa_prefill, fmqa_compress and the workspace queries) and the
 * translation of their argument structs into the kernels' parameter structs.
 * An MLA decode is a decode whose K and V are the one latent cache
 * (rt_mla_decode_args), so it shares every check and the kernel parameter
 * struct with decode.
 *
 * Everything a kernel assumes about its arguments is checked here, before
 * anything is launched: required pointers present; every pointer and stride
 * aligned for the width the kernel reads it with (16-byte vectors for q, o,
 * caches and inputs; 4-byte cp.async and loads for scales, kv_lens,
 * start_pos, page tables, RoPE cos/sin tables and lse; 8-byte words for tree
 * masks); every element
 * offset a kernel forms from the strides (long long in decode.cuh, append.cuh) within
 * int64, by checked arithmetic over the extents the problem implies (a page id
 * may be any int32); rows of written tensors that do not overlap; page tables
 * wide enough; workspace large enough.  A failed check returns
 * FMQA_ERR_INVALID_ARGUMENT naming the field; nothing is launched.
 */
#include "rt.h"

#include <math.h>
#include <string.h>

#include "fmqa_params.h"

#define BAD(...) fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT, __VA_ARGS__)

static int is_8bit(fmqa_dtype t) { return t == FMQA_DTYPE_INT8 || t == FMQA_DTYPE_FP8_E4M3; }

/* Widths the kernels read arguments with, in bytes. */
#define VEC_BYTES 16  /* q, o, k, v, k_new, v_new, workspace: 16-byte vectors */
#define WORD_BYTES 4  /* scales (cp.async 4), kv_lens, start_pos, page tables, lse */
#define MASK_BYTES 8  /* tree_mask: one 64-bit word per query token */

static fmqa_status check_aligned(const char *name, const void *ptr, size_t bytes, fmqa_err *err)
{
    if ((uintptr_t)ptr % bytes)
        return BAD("args.%s is not %zu-byte aligned (%p): the kernel reads it %zu bytes at a "
                   "time",
                   name, bytes, ptr, bytes);
    return FMQA_OK;
}

/* A strided tensor argument [outer, token, head, row]: the row contiguous,
 * three strides in elements, and the extents the problem implies. */
typedef struct tensor_spec {
    const char *name;
    const void *ptr;
    const int64_t *strides; /* outer (batch or page), token, head */
    int64_t extent[3];
    int64_t row;            /* contiguous elements per row */
    size_t elem;            /* bytes per element */
    size_t align;           /* bytes per kernel access: pointer and strides */
    int required, written;
} tensor_spec;

/* Rows of a written tensor must not overlap (all-zero strides would make
 * every thread write the same row): ordered by stride, each dimension with
 * more than one index must step over everything the inner ones span. */
static fmqa_status check_disjoint(const tensor_spec *t, fmqa_err *err)
{
    int order[3] = {0, 1, 2};
    for (int i = 1; i < 3; i++)
        for (int j = i; j > 0 && t->strides[order[j]] < t->strides[order[j - 1]]; j--) {
            int x = order[j];
            order[j] = order[j - 1];
            order[j - 1] = x;
        }
    int64_t span = t->row;
    for (int i = 0; i < 3; i++) {
        int k = order[i];
        if (t->extent[k] <= 1)
            continue;
        if (t->strides[k] < span)
            return BAD("args.%s stride %d (%lld elements) is smaller than the %lld elements "
                       "the inner dimensions span: the kernel's writes would overlap",
                       t->name, k, (long long)t->strides[k], (long long)span);
        if (fmqa_mul64(t->strides[k], t->extent[k], &span))
            span = INT64_MAX; /* the offset check below rejects it */
    }
    return FMQA_OK;
}

static fmqa_status check_tensor(const tensor_spec *t, fmqa_err *err)
{
    if (!t->ptr)
        return t->required ? BAD("args.%s is NULL", t->name) : FMQA_OK;
    fmqa_status st = check_aligned(t->name, t->ptr, t->align, err);
    if (st)
        return st;
    int64_t last = t->row, step, bytes;
    for (int i = 0; i < 3; i++) {
        if (t->strides[i] < 0 || fmqa_mul64(t->strides[i], (int64_t)t->elem, &bytes) ||
            bytes % (int64_t)t->align)
            return BAD("args.%s stride %d (%lld elements) is negative or not a multiple of "
                       "%zu bytes",
                       t->name, i, (long long)t->strides[i], t->align);
        if (fmqa_mul64(t->extent[i] - 1, t->strides[i], &step) || fmqa_add64(last, step, &last))
            last = INT64_MAX;
    }
    /* The kernels form element offsets in long long and address bytes from
     * them: the farthest element the extents reach must fit both. */
    if (last == INT64_MAX || fmqa_mul64(last, (int64_t)t->elem, &bytes))
        return BAD("args.%s: strides (%lld, %lld, %lld) over extents (%lld, %lld, %lld) reach "
                   "past 2^63 bytes, beyond the kernels' 64-bit offsets",
                   t->name, (long long)t->strides[0], (long long)t->strides[1],
                   (long long)t->strides[2], (long long)t->extent[0], (long long)t->extent[1],
                   (long long)t->extent[2]);
    return t->written ? check_disjoint(t, err) : FMQA_OK;
}

/* A device int32 array the kernels read when the problem has `flag`. */
static fmqa_status check_word_array(const char *name, const int32_t *x, const char *flag,
                                    fmqa_err *err)
{
    if (!x)
        return BAD("args.%s is NULL but the problem has %s", name, flag);
    return check_aligned(name, x, WORD_BYTES, err);
}

/* The 2-D page table, unless the pages come from a CSR table or a slot per
 * token (checked by check_page_csr and check_append). */
static fmqa_status check_pages(const fmqa_problem *p, const int32_t *table, int64_t stride,
                               fmqa_err *err)
{
    if (!(p->flags & FMQA_FLAG_PAGED) || (p->flags & (FMQA_FLAG_PAGE_CSR | FMQA_FLAG_SLOT_MAPPING)))
        return FMQA_OK;
    int64_t pages = (fmqa_cache_slots(p) + p->page_size - 1) / p->page_size, last;
    if (!table)
        return BAD("args.page_table is NULL but the problem is paged");
    fmqa_status st = check_aligned("page_table", table, WORD_BYTES, err);
    if (st)
        return st;
    if (stride < pages)
        return BAD("args.page_table_stride %lld is less than the %lld pages a sequence "
                   "may need",
                   (long long)stride, (long long)pages);
    /* kernels: page_table + b * pt_stride + page, in long long */
    if (fmqa_mul64(p->batch - 1, stride, &last) || fmqa_add64(last, pages, &last) ||
        fmqa_mul64(last, (int64_t)sizeof(int32_t), &last))
        return BAD("args.page_table_stride %lld x batch %d reaches past 2^63 bytes",
                   (long long)stride, p->batch);
    return FMQA_OK;
}

/* The KV-cache fields carry the same names in fmqa_decode_args and
 * fmqa_append_args, and in both params structs: one view checks them and one
 * macro copies them, whichever op it is.  names are what messages call K, V
 * and their scales: an MLA decode's caller knows them as kv and kv_scale. */
typedef struct cache_view {
    const void *k, *v;
    int64_t ks[3], vs[3];
    const float *k_scale, *v_scale;
    int64_t kss[3], vss[3];
    const int32_t *page_table;
    int64_t page_table_stride;
    const char *const *names; /* k, v, k_scale, v_scale */
} cache_view;

static const char *const KV_NAMES[4] = {"k", "v", "k_scale", "v_scale"};
static const char *const MLA_NAMES[4] = {"kv", "kv", "kv_scale", "kv_scale"};

#define CACHE_VIEW(a)                                                                   \
    {(a)->k, (a)->v,                                                                    \
     {(a)->k_stride_batch, (a)->k_stride_token, (a)->k_stride_head},                    \
     {(a)->v_stride_batch, (a)->v_stride_token, (a)->v_stride_head},                    \
     (a)->k_scale, (a)->v_scale,                                                        \
     {(a)->k_scale_stride_batch, (a)->k_scale_stride_token, (a)->k_scale_stride_head},  \
     {(a)->v_scale_stride_batch, (a)->v_scale_stride_token, (a)->v_scale_stride_head},  \
     (a)->page_table, (a)->page_table_stride, KV_NAMES}

/* Copies the cache fields of args a into params o; the scale strides that
 * granularity g ignores become 0 (scale_strides). */
#define COPY_CACHE(o, a, g)                                                             \
    do {                                                                                \
        const cache_view cv_ = CACHE_VIEW(a);                                           \
        int64_t kss_[3], vss_[3];                                                       \
        scale_strides((g), cv_.kss, kss_);                                              \
        scale_strides((g), cv_.vss, vss_);                                              \
        (o)->ks_sb = kss_[0], (o)->ks_st = kss_[1], (o)->ks_sh = kss_[2];               \
        (o)->vs_sb = vss_[0], (o)->vs_st = vss_[1], (o)->vs_sh = vss_[2];               \
        (o)->k = (a)->k, (o)->v = (a)->v;                                               \
        (o)->k_sb = (a)->k_stride_batch, (o)->k_st = (a)->k_stride_token;               \
        (o)->k_sh = (a)->k_stride_head;                                                 \
        (o)->v_sb = (a)->v_stride_batch, (o)->v_st = (a)->v_stride_token;               \
        (o)->v_sh = (a)->v_stride_head;                                                 \
        (o)->k_scale = (a)->k_scale, (o)->v_scale = (a)->v_scale;                       \
        (o)->page_table = (a)->page_table, (o)->pt_stride = (a)->page_table_stride;     \
    } while (0)

/* The scale strides the kernels use for granularity g: those the granularity
 * ignores (fmqa_kv_scale_granularity) are 0, so that the per-token addressing
 * of the kernels reads one scale per head, or one in all. */
static void scale_strides(fmqa_kv_scale_granularity g, const int64_t in[3], int64_t out[3])
{
    out[0] = g == FMQA_KV_SCALE_TOKEN_HEAD ? in[0] : 0;
    out[1] = g == FMQA_KV_SCALE_TOKEN_HEAD ? in[1] : 0;
    out[2] = g == FMQA_KV_SCALE_TENSOR ? 0 : in[2];
}

/* The cache tensors (K, V and 8-bit scales): [b|page, slot, hk, d].  A page id
 * may be any int32, so a paged cache's outer extent is 2^31.  Per-head scales
 * are [hk], a per-tensor scale one float; neither is written.  An MLA latent
 * append (FMQA_FLAG_LATENT) has no V: v and v_scale must be NULL. */
static fmqa_status check_cache(const fmqa_problem *p, const cache_view *c, int written,
                               fmqa_err *err)
{
    int has_v = !(p->flags & FMQA_FLAG_LATENT);
    if (!has_v && (c->v || c->v_scale))
        return BAD("args.%s must be NULL with FMQA_FLAG_LATENT: V is the first head_dim_v "
                   "elements of the latent K row",
                   c->v ? "v" : "v_scale");
    int paged = (p->flags & FMQA_FLAG_PAGED) != 0;
    int64_t ext[3] = {paged ? (int64_t)INT32_MAX + 1 : p->batch,
                      paged ? p->page_size : fmqa_cache_slots(p), p->num_kv_heads};
    size_t ke = fmqa_dtype_size(p->kv_dtype);
    const fmqa_kv_scale_granularity g = p->kv_scale_granularity;
    const int per_token = g == FMQA_KV_SCALE_TOKEN_HEAD;
    const int64_t sext[3] = {per_token ? ext[0] : 1, per_token ? ext[1] : 1,
                             g == FMQA_KV_SCALE_TENSOR ? 1 : ext[2]};
    int64_t kss[3], vss[3];
    scale_strides(g, c->kss, kss);
    scale_strides(g, c->vss, vss);
    tensor_spec k = {c->names[0], c->k, c->ks, {ext[0], ext[1], ext[2]}, p->head_dim_qk, ke,
                     VEC_BYTES, 1, written};
    tensor_spec v = {c->names[1], c->v, c->vs, {ext[0], ext[1], ext[2]}, p->head_dim_v, ke,
                     VEC_BYTES, has_v, written};
    tensor_spec ks = {c->names[2], c->k_scale, kss, {sext[0], sext[1], sext[2]}, 1, sizeof(float),
                      WORD_BYTES, 1, written && per_token};
    tensor_spec vs = {c->names[3], c->v_scale, vss, {sext[0], sext[1], sext[2]}, 1, sizeof(float),
                      WORD_BYTES, has_v, written && per_token};
    fmqa_status st;
    if ((st = check_tensor(&k, err)) || (st = check_tensor(&v, err)))
        return st;
    if (is_8bit(p->kv_dtype) && (!c->k_scale || (has_v && !c->v_scale)))
        return BAD("args.%s is NULL but the cache is 8-bit", c->names[c->k_scale ? 3 : 2]);
    if (is_8bit(p->kv_dtype) && ((st = check_tensor(&ks, err)) || (st = check_tensor(&vs, err))))
        return st;
    return check_pages(p, c->page_table, c->page_table_stride, err);
}

/* A CSR page table's device arrays (fastmqa.h, FMQA_FLAG_PAGE_CSR); their
 * contents are the kernel's to trust, as kv_lens are. */
static fmqa_status check_page_csr(const fmqa_problem *p, const int32_t *indptr,
                                  const int32_t *indices, fmqa_err *err)
{
    if (!(p->flags & FMQA_FLAG_PAGE_CSR))
        return indptr || indices ? BAD("args.page_%s is set but the problem has no "
                                       "FMQA_FLAG_PAGE_CSR",
                                       indptr ? "indptr" : "indices")
                                 : FMQA_OK;
    fmqa_status st = check_word_array("page_indptr", indptr, "FMQA_FLAG_PAGE_CSR", err);
    return st ? st : check_word_array("page_indices", indices, "FMQA_FLAG_PAGE_CSR", err);
}

static int64_t plan_scalar(const rt_plan *plan, const char *name, int64_t dflt)
{
    int64_t v;
    return gen_plan_scalar(&plan->launch, name, &v) ? v : dflt;
}

/* A decode's lengths: kv_lens, or with a CSR page table the table's
 * (page_indptr and last_page_len), never both. */
static fmqa_status check_decode_lens(const fmqa_problem *p, const fmqa_decode_args *a,
                                     fmqa_err *err)
{
    fmqa_status st = check_page_csr(p, a->page_indptr, a->page_indices, err);
    if (st != FMQA_OK)
        return st;
    if (!(p->flags & FMQA_FLAG_PAGE_CSR)) {
        if (a->last_page_len)
            return BAD("args.last_page_len is set but the problem has no FMQA_FLAG_PAGE_CSR");
        if (!a->kv_lens)
            return BAD("args.kv_lens is NULL");
        return check_aligned("kv_lens", a->kv_lens, WORD_BYTES, err);
    }
    if (a->kv_lens)
        return BAD("args.kv_lens is set with FMQA_FLAG_PAGE_CSR: the lengths are the CSR "
                   "table's ((pages - 1) * page_size + last_page_len); pass NULL");
    return check_word_array("last_page_len", a->last_page_len, "FMQA_FLAG_PAGE_CSR", err);
}

/* FMQA_FLAG_SCORES: the caller's buffer [b, hk, slot], written (added to). */
static fmqa_status check_scores(const fmqa_problem *p, const fmqa_decode_args *a, fmqa_err *err)
{
    if (!(p->flags & FMQA_FLAG_SCORES))
        return FMQA_OK;
    if (!a->scores)
        return BAD("args.scores is NULL but the problem has FMQA_FLAG_SCORES");
    const int64_t ss[3] = {a->scores_stride_batch, a->scores_stride_head, 1};
    const tensor_spec sc = {"scores", a->scores, ss, {p->batch, p->num_kv_heads, 1},
                            fmqa_cache_slots(p), sizeof(float), WORD_BYTES, 1, 1};
    return check_tensor(&sc, err);
}

/* What decode and prefill take alike after their tensors: lse (with
 * FMQA_FLAG_LSE), sm_scale, learned sinks and the workspace's alignment (its
 * size needs the plan: check_workspace_size). */
static fmqa_status check_scale_lse_sinks(const fmqa_problem *p, const float *lse, float sm_scale,
                                         const float *sinks, const void *workspace, fmqa_err *err)
{
    fmqa_status st;
    if ((p->flags & FMQA_FLAG_LSE) &&
        (!lse ? (st = BAD("args.lse is NULL but the problem has FMQA_FLAG_LSE"))
              : (st = check_aligned("lse", lse, WORD_BYTES, err))))
        return st;
    if (sm_scale < 0 || !isfinite(sm_scale))
        return BAD("args.sm_scale %g is negative or not finite", sm_scale);
    if (sinks && (st = check_aligned("sinks", sinks, WORD_BYTES, err)))
        return st;
    if (workspace && (st = check_aligned("workspace", workspace, VEC_BYTES, err)))
        return st;
    return FMQA_OK;
}

/* The plan's workspace against what the caller gave; `query` names the call
 * that tells its size. */
static fmqa_status check_workspace_size(const rt_plan *plan, const void *workspace, size_t size,
                                        const char *query, fmqa_err *err)
{
    if (plan->launch.workspace > 0 && (!workspace || size < (size_t)plan->launch.workspace))
        return BAD("args.workspace: %zu bytes given, %lld needed (%s)", workspace ? size : 0,
                   (long long)plan->launch.workspace, query);
    return FMQA_OK;
}

/* The kernels' score scale: sm_scale, 0 for 1/sqrt(head_dim_qk), and it in
 * base 2 (the kernels exponentiate with ex2). */
static void scale_fill(const fmqa_problem *p, float sm_scale, float *scale, float *scale_log2)
{
    *scale = sm_scale > 0 ? sm_scale : 1.0f / sqrtf((float)p->head_dim_qk);
    *scale_log2 = *scale * 1.4426950408889634f;
}

/* Everything about the arguments that the problem alone settles: checked before
 * a plan is resolved, so bad input is reported even without a GPU. */
static fmqa_status check_decode(const fmqa_problem *p, const fmqa_decode_args *a, fmqa_err *err)
{
    if (!a)
        return BAD("args is NULL");
    const int64_t qs[3] = {a->q_stride_batch, a->q_stride_token, a->q_stride_head};
    const int64_t os[3] = {a->o_stride_batch, a->o_stride_token, a->o_stride_head};
    const tensor_spec q = {"q", a->q, qs, {p->batch, p->q_tokens, p->num_q_heads},
                           p->head_dim_qk, fmqa_dtype_size(p->q_dtype), VEC_BYTES, 1, 0};
    const tensor_spec o = {"o", a->o, os, {p->batch, p->q_tokens, p->num_q_heads},
                           p->head_dim_v, fmqa_dtype_size(p->out_dtype), VEC_BYTES, 1, 1};
    cache_view cache = CACHE_VIEW(a);
    if (p->op == FMQA_OP_MLA_DECODE)
        cache.names = MLA_NAMES;
    fmqa_status st;
    if ((st = check_tensor(&q, err)) || (st = check_tensor(&o, err)) ||
        (st = check_cache(p, &cache, 0, err)))
        return st;
    if ((st = check_decode_lens(p, a, err)))
        return st;
    if ((p->flags & FMQA_FLAG_TREE_MASK) &&
        (!a->tree_mask ? (st = BAD("args.tree_mask is NULL but the problem has "
                                   "FMQA_FLAG_TREE_MASK"))
                       : (st = check_aligned("tree_mask", a->tree_mask, MASK_BYTES, err))))
        return st;
    if ((st = check_scale_lse_sinks(p, a->lse, a->sm_scale, a->sinks, a->workspace, err)))
        return st;
    return check_scores(p, a, err);
}

/* The kernels' soft-capping constants (tanh_from_ex2 in fmqa_device.cuh takes
 * base-2 logits); left 0 without a cap. */
static void softcap_fill(const fmqa_problem *p, float *inv, float *log2c)
{
    if (p->logit_softcap > 0) {
        *inv = 2.0f / p->logit_softcap;
        *log2c = p->logit_softcap * 1.4426950408889634f;
    }
}

fmqa_status rt_decode_params(const rt_plan *plan, const fmqa_decode_args *a,
                             fmqa_decode_params *o, fmqa_err *err)
{
    const fmqa_problem *p = &plan->problem;
    fmqa_status st = check_decode(p, a, err);
    if (st != FMQA_OK)
        return st;
    if ((st = check_workspace_size(plan, a->workspace, a->workspace_size,
                                   "fmqa_decode_workspace_size", err)))
        return st;
    memset(o, 0, sizeof *o);
    o->q = a->q;
    o->q_sb = a->q_stride_batch, o->q_st = a->q_stride_token, o->q_sh = a->q_stride_head;
    COPY_CACHE(o, a, p->kv_scale_granularity);
    o->kv_lens = a->kv_lens;
    o->page_indptr = a->page_indptr, o->page_indices = a->page_indices;
    o->last_page_len = a->last_page_len;
    o->tree_mask = (const unsigned long long *)a->tree_mask;
    o->o = a->o;
    o->o_sb = a->o_stride_batch, o->o_st = a->o_stride_token, o->o_sh = a->o_stride_head;
    o->lse = a->lse;
    scale_fill(p, a->sm_scale, &o->sm_scale, &o->sm_scale_log2);
    o->batch = p->batch, o->num_q_heads = p->num_q_heads, o->num_kv_heads = p->num_kv_heads;
    o->kv_len_max = p->kv_len, o->window = p->window, o->sink_tokens = p->sink_tokens;
    o->ring_period = (int)fmqa_ring_period(p);
    o->sinks = a->sinks;
    softcap_fill(p, &o->softcap_inv, &o->softcap_log2);
    o->num_splits = plan->launch.splits;
    /* the MLA templates' static split (decode's persistent schedule has none) */
    o->split_tokens = (int)plan_scalar(plan, "split_tokens", 0);
    if (o->num_splits > 1) {
        /* Partial outputs, partial LSEs, then the pieces of each segment, at
         * the template's offsets (decode.lua). */
        char *ws = a->workspace;
        o->ws_o = a->workspace;
        o->ws_lse = (float *)(ws + plan_scalar(plan, "ws_lse_offset", 0));
        o->ws_meta = (int *)(ws + plan_scalar(plan, "ws_meta_offset", 0));
    }
    if (p->flags & FMQA_FLAG_SCORES) {
        /* The rows' final LSEs and logits for fmqa_decode_scores (decode.lua). */
        char *ws = a->workspace;
        o->scores = a->scores;
        o->sc_sb = a->scores_stride_batch, o->sc_sh = a->scores_stride_head;
        o->sc_nv = (int)plan_scalar(plan, "score_nv", 0);
        o->ws_sl = (float *)(ws + plan_scalar(plan, "ws_sl_offset", 0));
        o->ws_x = (float *)(ws + plan_scalar(plan, "ws_x_offset", 0));
    }
    return FMQA_OK;
}

void rt_mla_decode_args(const fmqa_problem *p, const fmqa_mla_decode_args *m,
                        fmqa_decode_args *d)
{
    memset(d, 0, sizeof *d);
    d->q = m->q;
    d->q_stride_batch = m->q_stride_batch, d->q_stride_token = m->q_stride_token;
    d->q_stride_head = m->q_stride_head;
    /* One head: its stride is never applied; the row length keeps it aligned. */
    d->k = d->v = m->kv;
    d->k_stride_batch = d->v_stride_batch = m->kv_stride_batch;
    d->k_stride_token = d->v_stride_token = m->kv_stride_token;
    d->k_stride_head = d->v_stride_head = p->head_dim_qk;
    d->k_scale = d->v_scale = m->kv_scale;
    d->k_scale_stride_batch = d->v_scale_stride_batch = m->kv_scale_stride_batch;
    d->k_scale_stride_token = d->v_scale_stride_token = m->kv_scale_stride_token;
    d->kv_lens = m->kv_lens;
    d->page_table = m->page_table, d->page_table_stride = m->page_table_stride;
    d->sinks = m->sinks;
    d->o = m->o;
    d->o_stride_batch = m->o_stride_batch, d->o_stride_token = m->o_stride_token;
    d->o_stride_head = m->o_stride_head;
    d->lse = m->lse;
    d->sm_scale = m->sm_scale;
    d->workspace = m->workspace, d->workspace_size = m->workspace_size;
    d->page_indptr = m->page_indptr, d->page_indices = m->page_indices;
    d->last_page_len = m->last_page_len;
}

/* The RoPE table: floats, rows of at least the rotated elements, read at any
 * position below its length; exclusive with rope_theta. */
static fmqa_status check_rope_table(const fmqa_problem *p, const fmqa_append_args *a,
                                    fmqa_err *err)
{
    int64_t r = fmqa_rope_extent(p);
    if (!a->rope_cos_sin)
        return FMQA_OK;
    if (r == 0)
        return BAD("args.rope_cos_sin is set but the problem has no RoPE (problem.rope none)");
    if (a->rope_theta != 0)
        return BAD("args.rope_theta %g and args.rope_cos_sin are exclusive: the table holds "
                   "the angles (set rope_theta to 0)",
                   a->rope_theta);
    if (a->rope_cos_sin_len <= 0 || a->rope_cos_sin_stride < r)
        return BAD("args.rope_cos_sin_len %lld must be positive and rope_cos_sin_stride %lld "
                   "at least the %lld rotated elements (cos and sin of %lld pairs)",
                   (long long)a->rope_cos_sin_len, (long long)a->rope_cos_sin_stride,
                   (long long)r, (long long)r / 2);
    const int64_t ts[3] = {0, a->rope_cos_sin_stride, 0};
    const tensor_spec t = {"rope_cos_sin", a->rope_cos_sin, ts, {1, a->rope_cos_sin_len, 1},
                           r, sizeof(float), WORD_BYTES, 1, 0};
    return check_tensor(&t, err);
}

/* RoPE of q alone (k_new NULL): q with RoPE, and no cache or input besides. */
static fmqa_status check_q_only(const fmqa_problem *p, const fmqa_append_args *a,
                                fmqa_err *err)
{
    const void *const other[] = {a->v_new, a->k, a->v, a->k_scale, a->v_scale, a->k_pe_new};
    static const char *const names[] = {"v_new", "k", "v", "k_scale", "v_scale", "k_pe_new"};
    for (int i = 0; i < 6; i++)
        if (other[i])
            return BAD("args.%s is set but args.k_new is NULL: without new tokens the call "
                       "only rotates q, and writes no cache",
                       names[i]);
    if (!a->q || p->rope == FMQA_ROPE_NONE)
        return BAD("args.k_new is NULL and %s: a call without new tokens rotates q and needs "
                   "both",
                   !a->q ? "args.q is NULL" : "problem.rope is none");
    return FMQA_OK;
}

static fmqa_status check_append(const fmqa_problem *p, const fmqa_append_args *a, fmqa_err *err)
{
    if (!a)
        return BAD("args is NULL");
    const int latent = (p->flags & FMQA_FLAG_LATENT) != 0, q_only = !a->k_new;
    fmqa_status st;
    if (q_only && (st = check_q_only(p, a, err)))
        return st;
    if (latent && a->v_new)
        return BAD("args.v_new must be NULL with FMQA_FLAG_LATENT: k_new rows hold the latent "
                   "and the rope part, and V is the latent");
    if (!latent && a->k_pe_new)
        return BAD("args.k_pe_new is set without FMQA_FLAG_LATENT: only an MLA latent row has a "
                   "rope part apart");
    /* With k_pe_new the k_new rows are the latent alone. */
    const int pe_apart = a->k_pe_new != NULL;
    const int64_t kn[3] = {a->k_new_stride_batch, a->k_new_stride_token, a->k_new_stride_head};
    const int64_t kpn[3] = {a->k_pe_new_stride_batch, a->k_pe_new_stride_token, 0};
    const int64_t vn[3] = {a->v_new_stride_batch, a->v_new_stride_token, a->v_new_stride_head};
    const int64_t qs[3] = {a->q_stride_batch, a->q_stride_token, a->q_stride_head};
    size_t ie = fmqa_dtype_size(p->q_dtype);
    const tensor_spec k_new = {"k_new", a->k_new, kn, {p->batch, p->q_tokens, p->num_kv_heads},
                               pe_apart ? p->head_dim_v : p->head_dim_qk, ie, VEC_BYTES, 1, 0};
    const tensor_spec k_pe_new = {"k_pe_new", a->k_pe_new, kpn, {p->batch, p->q_tokens, 1},
                                  p->head_dim_qk - p->head_dim_v, ie, VEC_BYTES, pe_apart, 0};
    const tensor_spec v_new = {"v_new", a->v_new, vn, {p->batch, p->q_tokens, p->num_kv_heads},
                               p->head_dim_v, ie, VEC_BYTES, !latent, 0};
    /* a latent cache's q is its rope part only */
    const tensor_spec q = {"q", a->q, qs, {p->batch, p->q_tokens, p->num_q_heads},
                           latent ? fmqa_rope_extent(p) : p->head_dim_qk, ie, VEC_BYTES, 0, 1};
    const cache_view cache = CACHE_VIEW(a);
    if (!q_only && ((st = check_tensor(&k_new, err)) || (st = check_tensor(&k_pe_new, err)) ||
                    (st = check_tensor(&v_new, err)) || (st = check_cache(p, &cache, 1, err))))
        return st;
    if ((st = check_tensor(&q, err)))
        return st;
    if (!q_only && (st = check_page_csr(p, a->page_indptr, a->page_indices, err)))
        return st;
    if (p->flags & FMQA_FLAG_SLOT_MAPPING) {
        if (!q_only && (st = check_word_array("slot_mapping", a->slot_mapping,
                                              "FMQA_FLAG_SLOT_MAPPING", err)))
            return st;
    } else if (a->slot_mapping) {
        return BAD("args.slot_mapping is set but the problem has no FMQA_FLAG_SLOT_MAPPING");
    }
    if (!a->start_pos)
        return BAD("args.start_pos is NULL");
    if ((st = check_aligned("start_pos", a->start_pos, WORD_BYTES, err)))
        return st;
    if (a->rope_pos && (st = check_aligned("rope_pos", a->rope_pos, WORD_BYTES, err)))
        return st;
    if (a->rope_theta < 0 || !isfinite(a->rope_theta))
        return BAD("args.rope_theta %g is negative or not finite", a->rope_theta);
    return check_rope_table(p, a, err);
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
    COPY_CACHE(o, a, p->kv_scale_granularity);
    o->start_pos = a->start_pos;
    o->rope_theta = a->rope_theta > 0 ? a->rope_theta : 10000.0f;
    o->batch = p->batch, o->num_q_heads = p->num_q_heads, o->num_kv_heads = p->num_kv_heads;
    o->n_new = p->q_tokens, o->window = (int)fmqa_ring_period(p), o->sink_tokens = p->sink_tokens;
    o->rope_cs = a->rope_cos_sin;
    o->rope_cs_stride = a->rope_cos_sin_stride, o->rope_cs_len = a->rope_cos_sin_len;
    o->page_indptr = a->page_indptr, o->page_indices = a->page_indices;
    o->slot_mapping = a->slot_mapping;
    o->k_pe_new = a->k_pe_new;
    o->kpn_sb = a->k_pe_new_stride_batch, o->kpn_st = a->k_pe_new_stride_token;
    o->rope_pos = a->rope_pos;
    return FMQA_OK;
}

/* The largest pooling radius: a slot's key reads 2 pool + 1 scores. */
#define MAX_POOL 4096

fmqa_status rt_compress_policy_check(const fmqa_compress_policy *c, int has_scores, fmqa_err *err)
{
    if (c->sink_tokens < 0 || c->recent < 0 || c->heavy < 0 || c->pool < 0)
        return BAD("args.policy: sink_tokens %d, recent %d, heavy %d, pool %d: none may be "
                   "negative",
                   c->sink_tokens, c->recent, c->heavy, c->pool);
    int64_t budget = (int64_t)c->sink_tokens + c->recent + c->heavy;
    if (budget == 0 || budget > INT32_MAX)
        return BAD("args.policy: sink_tokens + recent + heavy = %lld slots kept, must be in "
                   "[1, 2^31-1]",
                   (long long)budget);
    if (c->pooling != FMQA_POOL_NONE && c->pooling != FMQA_POOL_MAX && c->pooling != FMQA_POOL_AVG)
        return BAD("args.policy.pooling: %d is not an fmqa_pooling", (int)c->pooling);
    if (c->pool > 0 && c->pooling == FMQA_POOL_NONE)
        return BAD("args.policy.pool %d without pooling (FMQA_POOL_MAX or FMQA_POOL_AVG)", c->pool);
    if (c->pool > MAX_POOL)
        return BAD("args.policy.pool %d: at most %d", c->pool, MAX_POOL);
    if (c->per_sequence != 0 && c->per_sequence != 1)
        return BAD("args.policy.per_sequence: %d, must be 0 or 1", c->per_sequence);
    if (c->heavy > 0 && !has_scores)
        return BAD("args.scores is NULL but policy.heavy = %d heavy hitters are chosen by score",
                   c->heavy);
    return FMQA_OK;
}

/* free_pages: paged only, [batch, page_table_stride], apart from the table
 * the moves read while it is written. */
static fmqa_status check_free_pages(const fmqa_problem *p, const fmqa_compress_args *a,
                                    fmqa_err *err)
{
    if (!a->free_pages)
        return FMQA_OK;
    if (!(p->flags & FMQA_FLAG_PAGED))
        return BAD("args.free_pages is given for a contiguous cache (it lists pages)");
    fmqa_status st = check_aligned("free_pages", a->free_pages, WORD_BYTES, err);
    if (st)
        return st;
    const int64_t n = (int64_t)p->batch * a->page_table_stride;
    const int32_t *f = a->free_pages, *t = a->page_table;
    if (f < t + n && t < f + n)
        return BAD("args.free_pages overlaps args.page_table: the moves read the table while "
                   "the released pages are written");
    return FMQA_OK;
}

static fmqa_status check_compress(const fmqa_problem *p, const fmqa_compress_args *a,
                                  fmqa_err *err)
{
    if (!a)
        return BAD("args is NULL");
    if (p->flags & FMQA_FLAG_RING)
        return fmqa_err_set(err, FMQA_ERR_UNSUPPORTED,
                            "problem.flags: a ring cache is not compressed (its slots are "
                            "positions modulo the window)");
    fmqa_status st = rt_compress_policy_check(&a->policy, a->scores != NULL, err);
    const cache_view cache = CACHE_VIEW(a);
    const int64_t ss[3] = {a->scores_stride_batch, a->scores_stride_head, 1};
    const int64_t ks[3] = {a->kept_stride_batch, a->kept_stride_head, 1};
    const tensor_spec sc = {"scores", a->scores, ss, {p->batch, p->num_kv_heads, 1}, p->kv_len,
                            sizeof(float), WORD_BYTES, 0, 1};
    const tensor_spec kept = {"kept", a->kept, ks, {p->batch, p->num_kv_heads, 1}, p->kv_len,
                              sizeof(int32_t), WORD_BYTES, 0, 1};
    if (st || (st = check_cache(p, &cache, 1, err)) || (st = check_tensor(&sc, err)) ||
        (st = check_tensor(&kept, err)))
        return st;
    if (!a->kv_lens || !a->new_lens)
        return BAD("args.%s is NULL", a->kv_lens ? "new_lens" : "kv_lens");
    if ((st = check_aligned("kv_lens", a->kv_lens, WORD_BYTES, err)) ||
        (st = check_aligned("new_lens", a->new_lens, WORD_BYTES, err)))
        return st;
    const int32_t *in = a->kv_lens, *out = a->new_lens;
    if (out < in + p->batch && in < out + p->batch)
        return BAD("args.new_lens overlaps args.kv_lens: every KV head reads the old lengths "
                   "while the first writes the new ones");
    if ((st = check_free_pages(p, a, err)))
        return st;
    if (a->workspace && (st = check_aligned("workspace", a->workspace, VEC_BYTES, err)))
        return st;
    return FMQA_OK;
}

fmqa_status rt_compress_params(const rt_plan *plan, const fmqa_compress_args *a,
                               fmqa_compress_params *o, fmqa_err *err)
{
    const fmqa_problem *p = &plan->problem;
    fmqa_status st = check_compress(p, a, err);
    if (st != FMQA_OK)
        return st;
    if ((st = check_workspace_size(plan, a->workspace, a->workspace_size,
                                   "fmqa_compress_workspace_size", err)))
        return st;
    memset(o, 0, sizeof *o);
    COPY_CACHE(o, a, p->kv_scale_granularity);
    o->kv_lens = a->kv_lens, o->new_lens = a->new_lens;
    o->scores = a->scores, o->sc_sb = a->scores_stride_batch, o->sc_sh = a->scores_stride_head;
    o->kept = a->kept, o->kept_sb = a->kept_stride_batch, o->kept_sh = a->kept_stride_head;
    o->free_pages = a->free_pages;
    size_t slots = (size_t)p->batch * p->num_kv_heads * p->kv_len;
    o->ws_key = a->workspace;
    o->ws_sel = (int *)(o->ws_key + slots);
    o->batch = p->batch, o->num_kv_heads = p->num_kv_heads, o->kv_len_max = p->kv_len;
    const fmqa_compress_policy *c = &a->policy;
    o->sink_tokens = c->sink_tokens, o->recent = c->recent, o->heavy = c->heavy;
    o->pooling = (int)c->pooling, o->pool = c->pool, o->per_sequence = c->per_sequence;
    return FMQA_OK;
}

/* Prefill's q, o and, without a cache, k and v are packed rows [total_q, head,
 * d]; total_q is at most batch x q_tokens (fastmqa.h), so that is the extent
 * checked. */
static tensor_spec packed(const char *name, const void *ptr, const int64_t s[3], int64_t rows,
                          int64_t heads, int64_t d, fmqa_dtype t, int written)
{
    tensor_spec x = {name, ptr, s, {1, rows, heads}, d, fmqa_dtype_size(t), VEC_BYTES, 1, written};
    return x;
}

/* FMQA_FLAG_SCORES of a prefill: the buffer [b, hk, slot] (added to) and the
 * observation window; both absent without the flag. */
static fmqa_status check_prefill_scores(const fmqa_problem *p, const fmqa_prefill_args *a,
                                        fmqa_err *err)
{
    if (!(p->flags & FMQA_FLAG_SCORES)) {
        if (a->scores || a->scores_window)
            return BAD("args.scores / scores_window are set but the problem has no "
                       "FMQA_FLAG_SCORES");
        return FMQA_OK;
    }
    if (!a->scores)
        return BAD("args.scores is NULL but the problem has FMQA_FLAG_SCORES");
    if (a->scores_window < 1)
        return BAD("args.scores_window %d: the observation window needs at least 1 token",
                   a->scores_window);
    const int64_t ss[3] = {a->scores_stride_batch, a->scores_stride_head, 1};
    const tensor_spec sc = {"scores", a->scores, ss, {p->batch, p->num_kv_heads, 1}, p->kv_len,
                            sizeof(float), WORD_BYTES, 1, 1};
    return check_tensor(&sc, err);
}

static fmqa_status check_prefill(const fmqa_problem *p, const fmqa_prefill_args *a,
                                 fmqa_err *err)
{
    if (!a)
        return BAD("args is NULL");
    const int64_t most = (int64_t)p->batch * p->q_tokens; /* < 2^31: rt_problem.c */
    if (a->total_q < 0 || a->total_q > most)
        return BAD("args.total_q %lld is not within 0..batch * q_tokens = %lld",
                   (long long)a->total_q, (long long)most);
    const int64_t rows = a->total_q ? a->total_q : most;
    const int64_t qs[3] = {0, a->q_stride_token, a->q_stride_head};
    const int64_t os[3] = {0, a->o_stride_token, a->o_stride_head};
    const int64_t ks[3] = {0, a->k_stride_token, a->k_stride_head};
    const int64_t vs[3] = {0, a->v_stride_token, a->v_stride_head};
    const tensor_spec q = packed("q", a->q, qs, rows, p->num_q_heads, p->head_dim_qk, p->q_dtype, 0);
    const tensor_spec o = packed("o", a->o, os, rows, p->num_q_heads, p->head_dim_v, p->out_dtype, 1);
    fmqa_status st;
    if ((st = check_tensor(&q, err)) || (st = check_tensor(&o, err)))
        return st;
    if (p->flags & FMQA_FLAG_KV_CACHE) {
        const cache_view cache = CACHE_VIEW(a);
        if ((st = check_cache(p, &cache, 0, err)))
            return st;
        if (!a->kv_lens)
            return BAD("args.kv_lens is NULL but the problem has FMQA_FLAG_KV_CACHE");
        if ((st = check_aligned("kv_lens", a->kv_lens, WORD_BYTES, err)))
            return st;
    } else {
        const tensor_spec k = packed("k", a->k, ks, rows, p->num_kv_heads, p->head_dim_qk,
                                     p->kv_dtype, 0);
        const tensor_spec v = packed("v", a->v, vs, rows, p->num_kv_heads, p->head_dim_v,
                                     p->kv_dtype, 0);
        if ((st = check_tensor(&k, err)) || (st = check_tensor(&v, err)))
            return st;
    }
    if (!a->cu_seqlens_q)
        return BAD("args.cu_seqlens_q is NULL");
    if ((st = check_aligned("cu_seqlens_q", a->cu_seqlens_q, WORD_BYTES, err)))
        return st;
    if ((st = check_scale_lse_sinks(p, a->lse, a->sm_scale, a->sinks, a->workspace, err)))
        return st;
    return check_prefill_scores(p, a, err);
}

fmqa_status rt_prefill_params(const rt_plan *plan, const fmqa_prefill_args *a,
                              fmqa_prefill_params *o, fmqa_err *err)
{
    const fmqa_problem *p = &plan->problem;
    fmqa_status st = check_prefill(p, a, err);
    if (st != FMQA_OK)
        return st;
    if ((st = check_workspace_size(plan, a->workspace, a->workspace_size,
                                   "fmqa_prefill_workspace_size", err)))
        return st;
    memset(o, 0, sizeof *o);
    o->q = a->q;
    o->q_st = a->q_stride_token, o->q_sh = a->q_stride_head;
    COPY_CACHE(o, a, p->kv_scale_granularity);
    o->cu_seqlens_q = a->cu_seqlens_q;
    o->kv_lens = (p->flags & FMQA_FLAG_KV_CACHE) ? a->kv_lens : NULL;
    o->o = a->o;
    o->o_st = a->o_stride_token, o->o_sh = a->o_stride_head;
    o->lse = (p->flags & FMQA_FLAG_LSE) ? a->lse : NULL;
    o->workspace = plan->launch.workspace > 0 ? a->workspace : NULL;
    scale_fill(p, a->sm_scale, &o->sm_scale, &o->sm_scale_log2);
    o->batch = p->batch, o->num_q_heads = p->num_q_heads, o->num_kv_heads = p->num_kv_heads;
    o->q_tokens_max = p->q_tokens, o->kv_len_max = p->kv_len;
    o->window = p->window, o->sink_tokens = p->sink_tokens;
    softcap_fill(p, &o->softcap_inv, &o->softcap_log2);
    o->sinks = a->sinks;
    if (p->flags & FMQA_FLAG_SCORES) { /* the LSEs fill the workspace (prefill.lua) */
        o->scores = a->scores;
        o->sc_sb = a->scores_stride_batch, o->sc_sh = a->scores_stride_head;
        o->sc_window = a->scores_window;
        o->ws_sl = a->workspace;
    }
    return FMQA_OK;
}

fmqa_status rt_prefill_kernel_params_fill(const rt_cuda *cu, const rt_plan *plan,
                                          const fmqa_prefill_args *a,
                                          rt_prefill_kernel_params *out, fmqa_err *err)
{
    const fmqa_problem *p = &plan->problem;
    const int64_t box_n = plan_scalar(plan, "tma_box_n", 0);
    fmqa_status st = rt_prefill_params(plan, a, &out->plain, err);
    if (st != FMQA_OK || box_n == 0)
        return st;
    fmqa_prefill_params plain = out->plain; /* the union's two views overlap */
    const long long rows = a->total_q ? a->total_q : (long long)p->batch * p->q_tokens;
    return rt_prefill_sm90_maps(cu, &plain, rows, p->head_dim_qk, (int)box_n, &out->tma, err);
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

/* The workspace of op's plan for a problem. */
static fmqa_status workspace_size(fmqa_ctx_t *ctx, const fmqa_problem *problem, fmqa_op op,
                                  size_t *bytes)
{
    fmqa_err err;
    const rt_plan *plan;
    if (!ctx)
        return FMQA_ERR_INVALID_ARGUMENT;
    if (!bytes)
        return rt_error(ctx, FMQA_ERR_INVALID_ARGUMENT, "bytes is NULL");
    if (check_op(problem, op, &err) || rt_plan_get(ctx, problem, &plan, &err))
        return rt_fail(ctx, &err);
    *bytes = (size_t)plan->launch.workspace;
    return rt_clear(ctx);
}

fmqa_status fmqa_decode_workspace_size(fmqa_ctx_t *ctx, const fmqa_problem *problem,
                                       size_t *bytes)
{
    /* decode and MLA decode share the partial layout */
    fmqa_op op = problem && problem->op == FMQA_OP_MLA_DECODE ? FMQA_OP_MLA_DECODE : FMQA_OP_DECODE;
    return workspace_size(ctx, problem, op, bytes);
}

fmqa_status fmqa_prefill_workspace_size(fmqa_ctx_t *ctx, const fmqa_problem *problem,
                                        size_t *bytes)
{
    return workspace_size(ctx, problem, FMQA_OP_PREFILL, bytes);
}

fmqa_status fmqa_compress_workspace_size(fmqa_ctx_t *ctx, const fmqa_problem *problem,
                                         size_t *bytes)
{
    return workspace_size(ctx, problem, FMQA_OP_COMPRESS, bytes);
}

/* How an op's public arguments become its kernel parameters. */
typedef struct op_kind {
    fmqa_op op;
    fmqa_status (*check)(const fmqa_problem *, const void *, fmqa_err *);
    fmqa_status (*fill)(const rt_cuda *, const rt_plan *, const void *, void *, fmqa_err *);
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
        kind->fill(ctx->cu, plan, args, params, &err) || rt_enter(ctx, &err))
        return rt_fail(ctx, &err);
    fmqa_status st = rt_plan_launch(ctx, plan, params, (CUstream)stream, &err);
    rt_leave(ctx);
    return st == FMQA_OK ? rt_clear(ctx) : rt_fail(ctx, &err);
}

static fmqa_status decode_check(const fmqa_problem *p, const void *a, fmqa_err *err)
{
    return check_decode(p, a, err);
}

static fmqa_status decode_fill(const rt_cuda *cu, const rt_plan *plan, const void *a, void *o,
                               fmqa_err *err)
{
    (void)cu; /* no tensor maps */
    return rt_decode_params(plan, a, o, err);
}

static fmqa_status append_check(const fmqa_problem *p, const void *a, fmqa_err *err)
{
    return check_append(p, a, err);
}

static fmqa_status append_fill(const rt_cuda *cu, const rt_plan *plan, const void *a, void *o,
                               fmqa_err *err)
{
    (void)cu; /* no tensor maps */
    return rt_append_params(plan, a, o, err);
}

/* MLA: the latent cache as K and V of a decode. */
static fmqa_status mla_check(const fmqa_problem *p, const void *a, fmqa_err *err)
{
    fmqa_decode_args d;
    if (!a)
        return BAD("args is NULL");
    rt_mla_decode_args(p, a, &d);
    return check_decode(p, &d, err);
}

static fmqa_status mla_fill(const rt_cuda *cu, const rt_plan *plan, const void *a, void *o,
                        fmqa_err *err)
{
    (void)cu; /* no tensor maps */
    fmqa_decode_args d;
    if (!a)
        return BAD("args is NULL");
    rt_mla_decode_args(&plan->problem, a, &d);
    return rt_decode_params(plan, &d, o, err);
}

static fmqa_status prefill_check(const fmqa_problem *p, const void *a, fmqa_err *err)
{
    return check_prefill(p, a, err);
}

static fmqa_status prefill_fill(const rt_cuda *cu, const rt_plan *plan, const void *a, void *o,
                                fmqa_err *err)
{
    return rt_prefill_kernel_params_fill(cu, plan, a, o, err);
}

static fmqa_status compress_check(const fmqa_problem *p, const void *a, fmqa_err *err)
{
    return check_compress(p, a, err);
}

static fmqa_status compress_fill(const rt_cuda *cu, const rt_plan *plan, const void *a, void *o,
                                 fmqa_err *err)
{
    (void)cu; /* no tensor maps */
    return rt_compress_params(plan, a, o, err);
}

static const op_kind DECODE = {FMQA_OP_DECODE, decode_check, decode_fill};
static const op_kind MLA_DECODE = {FMQA_OP_MLA_DECODE, mla_check, mla_fill};
static const op_kind COMPRESS = {FMQA_OP_COMPRESS, compress_check, compress_fill};
static const op_kind APPEND = {FMQA_OP_APPEND, append_check, append_fill};
static const op_kind PREFILL = {FMQA_OP_PREFILL, prefill_check, prefill_fill};

fmqa_status fmqa_decode(fmqa_ctx_t *ctx, const fmqa_problem *problem,
                        const fmqa_decode_args *args, fmqa_stream_t stream)
{
    fmqa_decode_params params;
    return launch_op(ctx, problem, &DECODE, args, &params, stream);
}

fmqa_status fmqa_mla_decode(fmqa_ctx_t *ctx, const fmqa_problem *problem,
                            const fmqa_mla_decode_args *args, fmqa_stream_t stream)
{
    fmqa_decode_params params;
    return launch_op(ctx, problem, &MLA_DECODE, args, &params, stream);
}

fmqa_status fmqa_append(fmqa_ctx_t *ctx, const fmqa_problem *problem,
                        const fmqa_append_args *args, fmqa_stream_t stream)
{
    fmqa_append_params params;
    return launch_op(ctx, problem, &APPEND, args, &params, stream);
}

fmqa_status fmqa_prefill(fmqa_ctx_t *ctx, const fmqa_problem *problem,
                         const fmqa_prefill_args *args, fmqa_stream_t stream)
{
    rt_prefill_kernel_params params;
    return launch_op(ctx, problem, &PREFILL, args, &params, stream);
}

fmqa_status fmqa_compress(fmqa_ctx_t *ctx, const fmqa_problem *problem,
                          const fmqa_compress_args *args, fmqa_stream_t stream)
{
    fmqa_compress_params params;
    return launch_op(ctx, problem, &COMPRESS, args, &params, stream);
}
