/*
 * rt_problem.c -- fmqa_problem defaults and validation.
 *
 * Validation is the library's single gate for shapes: every launching entry
 * point calls rt_problem_check before touching anything, so the kernels may
 * assume what is checked here (positive sizes, whole groups, known enums, page
 * sizes that are powers of two, the decode kernels' grid axes, per-tensor
 * element counts that fit the 32-bit index arithmetic of the kernels).  Every
 * product of caller sizes goes through fmqa_prod64: one that overflows int64
 * is over its limit, never a wrapped number.  What a particular template
 * cannot do is its own valid() function's business and is reported as
 * FMQA_ERR_UNSUPPORTED.
 */
#include "rt.h"

#include <math.h>
#include <string.h>

void fmqa_problem_init(fmqa_problem *p)
{
    if (!p)
        return;
    memset(p, 0, sizeof *p);
    p->op = FMQA_OP_DECODE;
    p->batch = 1;
    p->num_q_heads = 1;
    p->num_kv_heads = 1;
    p->head_dim_qk = 128;
    p->head_dim_v = 128;
    p->q_tokens = 1;
    p->kv_len = 1;
    p->q_dtype = FMQA_DTYPE_F16;
    p->kv_dtype = FMQA_DTYPE_F16;
    p->out_dtype = FMQA_DTYPE_F16;
    p->rope = FMQA_ROPE_NONE;
}

#define BAD(...) fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT, __VA_ARGS__)

/* Limits the kernels impose (include/fastmqa.h and docs/reference.md list them). */
#define MAX_HEAD_DIM 1024
#define MAX_DECODE_Q_TOKENS 16 /* decode.lua: Q_TOKENS rows per group in registers */
#define MAX_GRID_YZ 65535      /* CUDA's limit on gridDim.y and gridDim.z          */

static int is_decode(fmqa_op op) { return op == FMQA_OP_DECODE || op == FMQA_OP_MLA_DECODE; }

static int is_half(fmqa_dtype t) { return t == FMQA_DTYPE_F16 || t == FMQA_DTYPE_BF16; }
static int is_kv(fmqa_dtype t)
{
    return is_half(t) || t == FMQA_DTYPE_INT8 || t == FMQA_DTYPE_FP8_E4M3;
}

static fmqa_status check_sizes(const fmqa_problem *p, fmqa_err *err)
{
    const struct { const char *name; int32_t v; } pos[] = {
        {"batch", p->batch},           {"num_q_heads", p->num_q_heads},
        {"num_kv_heads", p->num_kv_heads}, {"head_dim_qk", p->head_dim_qk},
        {"head_dim_v", p->head_dim_v}, {"q_tokens", p->q_tokens},
        {"kv_len", p->kv_len},
    };
    for (size_t i = 0; i < sizeof pos / sizeof pos[0]; i++)
        if (pos[i].v <= 0)
            return BAD("problem.%s: %d, must be positive", pos[i].name, pos[i].v);
    if (p->num_q_heads % p->num_kv_heads != 0)
        return BAD("problem.num_q_heads %d is not a multiple of num_kv_heads %d",
                   p->num_q_heads, p->num_kv_heads);
    if (p->head_dim_qk > MAX_HEAD_DIM || p->head_dim_v > MAX_HEAD_DIM)
        return BAD("problem.head_dim: %d/%d, at most %d", p->head_dim_qk, p->head_dim_v,
                   MAX_HEAD_DIM);
    if (is_decode(p->op) && p->q_tokens > MAX_DECODE_Q_TOKENS)
        return BAD("problem.q_tokens: %d, decode serves 1 to %d query tokens per sequence",
                   p->q_tokens, MAX_DECODE_Q_TOKENS);
    if (p->window < 0 || p->sink_tokens < 0)
        return BAD("problem.window %d / sink_tokens %d: must not be negative", p->window,
                   p->sink_tokens);
    if (p->sink_tokens > 0 && p->window == 0)
        return BAD("problem.sink_tokens %d without a window: sinks only matter with one",
                   p->sink_tokens);
    /* The kernels add sinks, window and draft slots in int (ring slots). */
    if (p->draft_slots < 0)
        return BAD("problem.draft_slots %d: must not be negative", p->draft_slots);
    if ((int64_t)p->sink_tokens + p->window + p->draft_slots > INT32_MAX)
        return BAD("problem.sink_tokens %d + window %d + draft_slots %d exceeds 2^31-1",
                   p->sink_tokens, p->window, p->draft_slots);
    /* tanh(s / c) in float: a cap below 2^-100 or beyond float makes it 0/0. */
    if (!(p->logit_softcap == 0.0f || (p->logit_softcap >= 0x1p-100f && isfinite(p->logit_softcap))))
        return BAD("problem.logit_softcap %g: must be 0 (off) or finite and >= 2^-100",
                   (double)p->logit_softcap);
    return FMQA_OK;
}

static fmqa_status check_types(const fmqa_problem *p, fmqa_err *err)
{
    if (!fmqa_op_name(p->op))
        return BAD("problem.op: %d is not an fmqa_op", (int)p->op);
    if (!is_half(p->q_dtype))
        return BAD("problem.q_dtype: %d is not f16 or bf16", (int)p->q_dtype);
    if (!is_kv(p->kv_dtype))
        return BAD("problem.kv_dtype: %d is not f16, bf16, int8 or fp8_e4m3", (int)p->kv_dtype);
    if (!is_half(p->out_dtype))
        return BAD("problem.out_dtype: %d is not f16 or bf16", (int)p->out_dtype);
    if (p->rope != FMQA_ROPE_NONE && p->rope != FMQA_ROPE_NEOX && p->rope != FMQA_ROPE_GPTJ)
        return BAD("problem.rope: %d is not an fmqa_rope", (int)p->rope);
    if (p->flags & ~FMQA_FLAG_ALL)
        return BAD("problem.flags: unknown bits 0x%x", p->flags & ~FMQA_FLAG_ALL);
    if ((unsigned)p->kv_scale_granularity > FMQA_KV_SCALE_TENSOR)
        return BAD("problem.kv_scale_granularity: %d is not an fmqa_kv_scale_granularity",
                   (int)p->kv_scale_granularity);
    if (p->kv_scale_granularity != FMQA_KV_SCALE_TOKEN_HEAD) {
        if (is_half(p->kv_dtype))
            return BAD("problem.kv_scale_granularity: %s scales need an 8-bit cache, kv_dtype is "
                       "%s",
                       fmqa_kv_scale_name(p->kv_scale_granularity), fmqa_dtype_name(p->kv_dtype));
        if (p->op != FMQA_OP_DECODE && p->op != FMQA_OP_APPEND)
            return BAD("problem.kv_scale_granularity: %s scales are for decode and append, not %s",
                       fmqa_kv_scale_name(p->kv_scale_granularity), fmqa_op_name(p->op));
    }
    if ((p->flags & FMQA_FLAG_KV_CACHE) && p->op != FMQA_OP_PREFILL)
        return BAD("problem.flags: FMQA_FLAG_KV_CACHE is a prefill flag, the op is %s",
                   fmqa_op_name(p->op));
    if ((p->flags & FMQA_FLAG_SCORES) && p->op != FMQA_OP_DECODE && p->op != FMQA_OP_PREFILL)
        return BAD("problem.flags: FMQA_FLAG_SCORES is a decode and prefill flag, the op is %s",
                   fmqa_op_name(p->op));
    return FMQA_OK;
}

/* Prefill reads K and V either from a cache that holds the new tokens or as
 * the new tokens themselves, packed like q (fastmqa.h, fmqa_prefill_args). */
static fmqa_status check_prefill(const fmqa_problem *p, fmqa_err *err)
{
    if (p->flags & FMQA_FLAG_KV_CACHE) {
        if (p->q_tokens > p->kv_len)
            return BAD("problem.q_tokens %d exceeds kv_len %d: the cache holds the new tokens",
                       p->q_tokens, p->kv_len);
        return FMQA_OK;
    }
    if (p->flags & FMQA_FLAG_PAGED)
        return BAD("problem.flags: FMQA_FLAG_PAGED without FMQA_FLAG_KV_CACHE: only a cache is "
                   "paged");
    if (p->kv_len != p->q_tokens)
        return BAD("problem.kv_len %d differs from q_tokens %d: without FMQA_FLAG_KV_CACHE the "
                   "new tokens are all there is",
                   p->kv_len, p->q_tokens);
    if (p->kv_dtype != p->q_dtype)
        return BAD("problem.kv_dtype %s differs from q_dtype %s: without FMQA_FLAG_KV_CACHE K "
                   "and V are new tokens like q",
                   fmqa_dtype_name(p->kv_dtype), fmqa_dtype_name(p->q_dtype));
    return FMQA_OK;
}

/* How a paged cache finds its pages: a 2-D table, a CSR table
 * (FMQA_FLAG_PAGE_CSR) or, for an append, a slot per token
 * (FMQA_FLAG_SLOT_MAPPING); and which page sizes a kernel gathers. */
static fmqa_status check_pages(const fmqa_problem *p, fmqa_err *err)
{
    int paged = (p->flags & FMQA_FLAG_PAGED) != 0;
    int csr = (p->flags & FMQA_FLAG_PAGE_CSR) != 0, slots = (p->flags & FMQA_FLAG_SLOT_MAPPING) != 0;
    if ((csr || slots) && !paged)
        return BAD("problem.flags: FMQA_FLAG_%s needs FMQA_FLAG_PAGED",
                   csr ? "PAGE_CSR" : "SLOT_MAPPING");
    if (csr && slots)
        return BAD("problem.flags: FMQA_FLAG_PAGE_CSR and FMQA_FLAG_SLOT_MAPPING are two ways "
                   "to find an append's pages: choose one");
    if (slots && p->op != FMQA_OP_APPEND)
        return BAD("problem.flags: FMQA_FLAG_SLOT_MAPPING is an append flag, the op is %s",
                   fmqa_op_name(p->op));
    if ((csr || slots) && (p->flags & FMQA_FLAG_RING))
        return BAD("problem.flags: FMQA_FLAG_%s with FMQA_FLAG_RING: a ring cache addresses "
                   "its slots by position through a 2-D page table",
                   csr ? "PAGE_CSR" : "SLOT_MAPPING");
    /* Prefill and compress look pages up in a 2-D table only: a CSR problem
     * would pass their page_table unchecked to a kernel that reads it. */
    if (csr && p->op != FMQA_OP_DECODE && p->op != FMQA_OP_MLA_DECODE && p->op != FMQA_OP_APPEND)
        return fmqa_err_set(err, FMQA_ERR_UNSUPPORTED,
                            "problem.flags: FMQA_FLAG_PAGE_CSR with %s: only decode, MLA "
                            "decode and append read CSR page tables; give %s a 2-D page "
                            "table",
                            fmqa_op_name(p->op), fmqa_op_name(p->op));
    if (paged && p->page_size >= 1 && p->page_size < 16 &&
        (p->page_size & (p->page_size - 1)) == 0)
        return fmqa_err_set(err, FMQA_ERR_UNSUPPORTED,
                            "problem.page_size: %d is not served: the kernels look a page up "
                            "once per run of rows of a page, so pages of fewer than 16 tokens "
                            "(token-granular pools such as SGLang's page size 1) would cost a "
                            "page-table read per 16-byte copy; use a page size >= 16",
                            p->page_size);
    if (paged && (p->page_size < 16 || (p->page_size & (p->page_size - 1)) != 0))
        return BAD("problem.page_size: %d, a paged cache needs a power of two >= 16",
                   p->page_size);
    return FMQA_OK;
}

static fmqa_status check_layout(const fmqa_problem *p, fmqa_err *err)
{
    int paged = (p->flags & FMQA_FLAG_PAGED) != 0;
    fmqa_status st = check_pages(p, err);
    if (st != FMQA_OK)
        return st;
    if (!paged && p->page_size != 0)
        return BAD("problem.page_size: %d without FMQA_FLAG_PAGED", p->page_size);
    if ((p->flags & FMQA_FLAG_RING) && p->window == 0)
        return BAD("problem.flags: FMQA_FLAG_RING needs a window");
    if (!(p->flags & FMQA_FLAG_RING) && p->draft_slots != 0)
        return BAD("problem.draft_slots %d without FMQA_FLAG_RING: only a ring cache has "
                   "draft slots", p->draft_slots);
    if (p->logit_softcap != 0.0f && p->op != FMQA_OP_DECODE && p->op != FMQA_OP_PREFILL)
        return BAD("problem.logit_softcap %g: only decode and prefill cap scores",
                   (double)p->logit_softcap);
    /* Only decode's arguments carry a tree mask (MLA decode's have none). */
    if ((p->flags & FMQA_FLAG_TREE_MASK) &&
        (p->op == FMQA_OP_MLA_DECODE || p->op == FMQA_OP_PREFILL))
        return fmqa_err_set(err, FMQA_ERR_UNSUPPORTED,
                            "problem.flags: FMQA_FLAG_TREE_MASK with %s: only decode serves a "
                            "tree mask over draft tokens (%s: causal or none)",
                            fmqa_op_name(p->op), fmqa_op_name(p->op));
    if ((p->flags & FMQA_FLAG_TREE_MASK) && p->q_tokens > 64)
        return BAD("problem.q_tokens: %d, a tree mask covers at most 64 tokens", p->q_tokens);
    if (is_decode(p->op) && p->q_tokens > p->kv_len)
        return BAD("problem.q_tokens %d exceeds kv_len %d: the cache holds the query tokens",
                   p->q_tokens, p->kv_len);
    return p->op == FMQA_OP_PREFILL ? check_prefill(p, err) : FMQA_OK;
}

/* RoPE's extent (rope_dim) and the MLA latent append (FMQA_FLAG_LATENT): append
 * fields, checked here so that every template may assume them. */
static fmqa_status check_rope(const fmqa_problem *p, fmqa_err *err)
{
    int latent = (p->flags & FMQA_FLAG_LATENT) != 0;
    if (p->rope_dim != 0 && p->op != FMQA_OP_APPEND)
        return BAD("problem.rope_dim %d: RoPE's extent is an append field (op %s)", p->rope_dim,
                   fmqa_op_name(p->op));
    if (p->rope_dim != 0 && p->rope == FMQA_ROPE_NONE)
        return BAD("problem.rope_dim %d without RoPE (problem.rope is none)", p->rope_dim);
    if (p->rope_dim < 0 || p->rope_dim > p->head_dim_qk || p->rope_dim % 4 != 0)
        return BAD("problem.rope_dim %d: expected 0 (all of head_dim_qk) or a multiple of 4 "
                   "up to head_dim_qk %d",
                   p->rope_dim, p->head_dim_qk);
    if (!latent)
        return FMQA_OK;
    if (p->op != FMQA_OP_APPEND)
        return BAD("problem.flags: FMQA_FLAG_LATENT is an append flag (op %s; MLA decode is "
                   "FMQA_OP_MLA_DECODE)",
                   fmqa_op_name(p->op));
    if (p->num_kv_heads != 1)
        return BAD("problem.num_kv_heads %d: an MLA latent cache has one row per token "
                   "(num_kv_heads 1)",
                   p->num_kv_heads);
    if (p->head_dim_v >= p->head_dim_qk)
        return BAD("problem.head_dim_v %d: with FMQA_FLAG_LATENT it is the latent, less than "
                   "head_dim_qk %d = latent + rope part",
                   p->head_dim_v, p->head_dim_qk);
    if (p->rope_dim != 0 && p->rope_dim != p->head_dim_qk - p->head_dim_v)
        return BAD("problem.rope_dim %d: with FMQA_FLAG_LATENT RoPE rotates the rope part, "
                   "head_dim_qk - head_dim_v = %d (or give 0)",
                   p->rope_dim, p->head_dim_qk - p->head_dim_v);
    return FMQA_OK;
}

/* Limits of the launch geometry.  Prefill's grid is (row blocks, num_kv_heads,
 * batch): CUDA's y and z limits bound it (templates/prefill.lua).  MLA
 * decode's is persistent like decode's; only mla_decode_sm90's (splits, row
 * blocks, batch) meets the z limit, which its valid() enforces so that the
 * dispatcher falls back to mla_decode.  Decode's grid is persistent, (P,
 * 1, 1), and its combine's (batch x q_tokens x num_q_heads, slices, 1), which
 * check_overflow keeps below 2^31: what bounds a decode instead is the
 * workspace's segment table (templates/decode.cuh, "Work distribution"),
 * whose first-slot entries are int.  There are at most S = batch x
 * num_kv_heads x ceil(group x q_tokens / 16) segments (row blocks of >= 16
 * rows); the free schedule numbers slots up to P + S - 1, with P CTAs (the
 * device's SMs x the few one SM holds, or SPLITS <= 128) and S <= 2^25 once
 * check_overflow holds, so it always fits; in
 * batch-invariant mode a slot is a chunk's flat index, up to S x chunks, a
 * sequence having at most min(256, ceil(kv_len / 256)) chunks (>= 8 tiles of
 * >= 32 positions each; decode.lua's INV_MAX_CHUNKS, INV_MIN_TILES). */
static fmqa_status check_grid(const fmqa_problem *p, fmqa_err *err)
{
    if (p->op == FMQA_OP_PREFILL && (p->batch > MAX_GRID_YZ || p->num_kv_heads > MAX_GRID_YZ))
        return BAD("problem: batch %d / num_kv_heads %d, prefill launches one grid z index per "
                   "sequence and one y index per KV head, and CUDA allows at most %d",
                   p->batch, p->num_kv_heads, MAX_GRID_YZ);
    if (p->op != FMQA_OP_DECODE || !(p->flags & FMQA_FLAG_BATCH_INVARIANT))
        return FMQA_OK;
    int64_t group = p->num_q_heads / p->num_kv_heads, chunks = ((int64_t)p->kv_len + 255) / 256;
    int64_t segs, slots;
    if (chunks > 256)
        chunks = 256;
    if (fmqa_prod64((int64_t[]){p->batch, p->num_kv_heads, (group * p->q_tokens + 15) / 16},
                    3, &segs) ||
        fmqa_prod64((int64_t[]){segs, chunks}, 2, &slots) || slots > INT32_MAX)
        return BAD("problem: batch %d x num_kv_heads %d x row blocks x up to %lld chunks a "
                   "sequence exceed the 2^31-1 workspace slots a batch-invariant decode numbers "
                   "in int (FMQA_FLAG_BATCH_INVARIANT)",
                   p->batch, p->num_kv_heads, (long long)chunks);
    return FMQA_OK;
}

/* The kernels index one sequence's cache, the query/output tensors and the
 * append's rows in 32-bit int; batch, page and stride offsets are long long
 * (checked per call in rt_args.c).  These bounds make every int index fit. */
static fmqa_status check_overflow(const fmqa_problem *p, fmqa_err *err)
{
    const int64_t lim = INT32_MAX;
    int64_t d = p->head_dim_qk > p->head_dim_v ? p->head_dim_qk : p->head_dim_v;
    /* A ring cache holds sinks + window + draft slots whatever the logical length. */
    int64_t slots = fmqa_cache_slots(p);
    int64_t seq, qo, rows;
    if (fmqa_prod64((int64_t[]){slots, p->num_kv_heads, d}, 3, &seq) || seq > lim)
        return BAD("problem: %lld cache slots x num_kv_heads %d x head_dim %lld elements per "
                   "sequence exceed the kernels' 32-bit index (2^31-1)",
                   (long long)slots, p->num_kv_heads, (long long)d);
    if (fmqa_prod64((int64_t[]){p->batch, p->q_tokens, p->num_q_heads, d}, 4, &qo) || qo > lim)
        return BAD("problem: batch %d x q_tokens %d x num_q_heads %d x head_dim %lld elements "
                   "exceed the kernels' 32-bit index (2^31-1)",
                   p->batch, p->q_tokens, p->num_q_heads, (long long)d);
    /* templates/append.cuh: row = (b, t) x (K, V and Q rows), an int. */
    if (p->op == FMQA_OP_APPEND &&
        (fmqa_prod64((int64_t[]){p->batch, p->q_tokens,
                                 2 * (int64_t)p->num_kv_heads + p->num_q_heads},
                     3, &rows) ||
         rows > lim))
        return BAD("problem: batch %d x q_tokens %d x (2 num_kv_heads + num_q_heads) append "
                   "rows exceed the kernel's 32-bit row index (2^31-1)",
                   p->batch, p->q_tokens);
    return FMQA_OK;
}

fmqa_status rt_problem_check(const fmqa_problem *p, fmqa_err *err)
{
    if (!p)
        return BAD("problem is NULL");
    fmqa_status st = check_types(p, err);
    if (st == FMQA_OK)
        st = check_sizes(p, err);
    if (st == FMQA_OK)
        st = check_layout(p, err);
    if (st == FMQA_OK)
        st = check_rope(p, err);
    if (st == FMQA_OK)
        st = check_grid(p, err);
    if (st == FMQA_OK)
        st = check_overflow(p, err);
    return st;
}

fmqa_status fmqa_problem_validate(fmqa_ctx_t *ctx, const fmqa_problem *problem)
{
    fmqa_err err;
    if (rt_problem_check(problem, &err) != FMQA_OK)
        return rt_fail(ctx, &err);
    return rt_clear(ctx);
}
