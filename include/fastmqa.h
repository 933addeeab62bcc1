/*
 * fastmqa.h -- the one public header of libfastmqa.
 *
 * FastMQA computes multi-query / grouped-query / multi-head attention for LLM
 * inference on NVIDIA GPUs with kernels generated from templates, compiled at run
 * time with NVRTC and chosen by a tuning database.
 *
 * Conventions (they hold for every function below):
 *
 *  - Every function that can fail returns fmqa_status.  fmqa_status_string() names a
 *    status; fmqa_ctx_errmsg() returns the detailed message of the last failed call
 *    on that context.  The library never exits or aborts on bad input.  Bad input
 *    gets FMQA_ERR_INVALID_ARGUMENT (or FMQA_ERR_UNSUPPORTED for a valid but not
 *    implemented combination) and changes nothing: no memory is written, nothing is
 *    launched.
 *  - Output parameters are marked OUT.  They are written only on success unless the
 *    comment says otherwise.
 *  - Device memory (queries, caches, outputs, workspace) always belongs to the
 *    caller.  The library allocates no device memory of its own on the launch path;
 *    a call that needs scratch space says so through a *_workspace_size() query.
 *  - Every launching call takes the CUstream to launch on and returns as soon as
 *    the work is queued.  Errors of the kernel itself surface on that stream.
 *  - Threading: a context may be used from several threads at once; launch plans
 *    and loaded modules are shared and guarded internally.  The last-error message
 *    is kept per thread per context, so concurrent callers do not see each other's
 *    messages.  A context belongs to one device; it makes that device's primary
 *    context current on the calling thread for the duration of each call.
 *  - Without a CUDA driver or GPU, context creation, problem validation, memory
 *    reports and everything else that needs no GPU still work; calls that need a
 *    GPU return FMQA_ERR_NO_DRIVER or FMQA_ERR_NO_DEVICE.
 *
 * Tensors are described by element strides (not bytes); the innermost dimension
 * (head dim) is always contiguous.
 */
#ifndef FASTMQA_H
#define FASTMQA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Every function of this header carries FMQA_API: libfastmqa is built with
 * hidden visibility, so exactly these names (all fmqa_) leave the shared
 * library, and its static archive keeps every other name local.
 */
#if defined(__GNUC__) || defined(__clang__)
#define FMQA_API __attribute__((visibility("default")))
#else
#define FMQA_API
#endif

/* The version of this header.  CMake's project version is checked against it
 * when the library is built, so the two cannot drift apart. */
#define FMQA_VERSION_MAJOR 0
#define FMQA_VERSION_MINOR 1
#define FMQA_VERSION_PATCH 0
#define FMQA_VERSION_STRING "0.1.0"
/* MAJOR * 10000 + MINOR * 100 + PATCH, as fmqa_version() returns it. */
#define FMQA_VERSION \
    (FMQA_VERSION_MAJOR * 10000 + FMQA_VERSION_MINOR * 100 + FMQA_VERSION_PATCH)

/* CUstream without pulling in cuda.h: the same opaque pointer type. */
typedef struct CUstream_st *fmqa_stream_t;

/* ---------------------------------------------------------------- status */

typedef enum fmqa_status {
    FMQA_OK = 0,
    FMQA_ERR_INVALID_ARGUMENT = 1, /* null pointer, bad size, unknown enum, ...    */
    FMQA_ERR_UNSUPPORTED = 2,      /* valid request the library cannot serve     */
    FMQA_ERR_NO_DRIVER = 3,        /* libcuda.so.1 missing or unusable           */
    FMQA_ERR_NO_DEVICE = 4,        /* driver present, no (such) GPU              */
    FMQA_ERR_CUDA = 5,             /* a CUDA driver call failed                  */
    FMQA_ERR_COMPILE = 6,          /* NVRTC rejected a kernel                    */
    FMQA_ERR_TEMPLATE = 7,         /* a kernel template failed to load or run    */
    FMQA_ERR_DATABASE = 8,         /* the tuning database is unusable            */
    FMQA_ERR_OUT_OF_MEMORY = 9,    /* host allocation failed                     */
    FMQA_ERR_NOT_FOUND = 10,       /* no such template, entry or record          */
    FMQA_ERR_IO = 11,              /* file system error                          */
    FMQA_ERR_INTERNAL = 12         /* a bug in FastMQA: please report it         */
} fmqa_status;

/* Static string naming the status, e.g. "invalid argument".  Never NULL. */
FMQA_API const char *fmqa_status_string(fmqa_status status);

/* The version of the library that is running (it may differ from the header
 * the caller was compiled with: compare with FMQA_VERSION), as
 * MAJOR * 10000 + MINOR * 100 + PATCH, and as static text "MAJOR.MINOR.PATCH". */
FMQA_API int fmqa_version(void);
FMQA_API const char *fmqa_version_string(void);

/* ---------------------------------------------------------------- types */

typedef enum fmqa_dtype {
    FMQA_DTYPE_F16 = 1,
    FMQA_DTYPE_BF16 = 2,
    FMQA_DTYPE_F32 = 3,
    FMQA_DTYPE_INT8 = 4,     /* KV cache only: symmetric, scaled (below)          */
    FMQA_DTYPE_FP8_E4M3 = 5  /* KV cache only: OCP e4m3, scaled (below)           */
} fmqa_dtype;

/* Static name ("f16", "bf16", "f32", "int8", "fp8_e4m3") or NULL if unknown. */
FMQA_API const char *fmqa_dtype_name(fmqa_dtype dtype);
/* Bytes per element, 0 if unknown. */
FMQA_API size_t fmqa_dtype_size(fmqa_dtype dtype);

typedef enum fmqa_op {
    FMQA_OP_DECODE = 1,     /* few query tokens per sequence against a KV cache */
    FMQA_OP_PREFILL = 2,    /* many query tokens, causal, online softmax        */
    FMQA_OP_MLA_DECODE = 3, /* latent attention decode (absorbed weights)       */
    FMQA_OP_APPEND = 4,     /* write new tokens into the cache (RoPE, quantize) */
    FMQA_OP_COMPRESS = 5    /* keep chosen cache positions, compact them     */
} fmqa_op;

FMQA_API const char *fmqa_op_name(fmqa_op op);

typedef enum fmqa_rope {
    FMQA_ROPE_NONE = 0,
    FMQA_ROPE_NEOX = 1, /* half-split: pairs (i, i + d/2)            */
    FMQA_ROPE_GPTJ = 2  /* interleaved: pairs (2i, 2i + 1)           */
} fmqa_rope;

/*
 * Which scales an 8-bit KV cache carries (fmqa_problem.kv_scale_granularity),
 * for K and for V alike; value = scale * stored number.
 *   TOKEN_HEAD: one float per token and KV head, k_scale[b|page, j, hk] with
 *               all three k_scale_stride_* (the default, 0: a zeroed problem
 *               keeps this meaning); fmqa_append computes and writes it.
 *   HEAD:       one float per KV head, k_scale[hk * k_scale_stride_head];
 *               the batch and token strides are ignored.
 *   TENSOR:     one float for the whole K cache, k_scale[0] (vLLM's k_scale
 *               and v_scale); every scale stride is ignored.
 * With HEAD and TENSOR the scales are the caller's, fixed: fmqa_append
 * quantizes with them (code = round-to-nearest-even of x / scale, saturating
 * to +-127 for int8 and +-448 for fp8) and never writes them.  Each must be
 * finite and > 0 (not checked: the library does not read device memory on
 * the host; another value stores unspecified codes).  Only 8-bit caches may
 * choose other than TOKEN_HEAD.
 */
typedef enum fmqa_kv_scale_granularity {
    FMQA_KV_SCALE_TOKEN_HEAD = 0,
    FMQA_KV_SCALE_HEAD = 1,
    FMQA_KV_SCALE_TENSOR = 2
} fmqa_kv_scale_granularity;

/* Problem flags. */
#define FMQA_FLAG_CAUSAL 0x1u    /* query tokens see only positions <= their own  */
#define FMQA_FLAG_PAGED 0x2u     /* KV cache addressed through a page table      */
#define FMQA_FLAG_TREE_MASK 0x4u /* query tokens carry a bitmask over the drafts */
#define FMQA_FLAG_LSE 0x8u       /* also write log-sum-exp per (token, head)     */
#define FMQA_FLAG_RING 0x10u     /* cache keeps sinks + a ring of window +
                                    draft_slots slots                              */
/* A sequence's output is bitwise the same whatever batch it runs in and
 * whatever the device's SM count: its keys are split into chunks fixed by its
 * own length and merged in a fixed order, and the dispatcher uses the
 * template's default config (a tuned choice may differ by batch).  Costs
 * balance: see docs/PERFORMANCE.md. */
#define FMQA_FLAG_BATCH_INVARIANT 0x20u
#define FMQA_FLAG_SCORES 0x80u   /* decode, prefill: add each cached position's
                                    attention mass into args.scores
                                    (fmqa_decode_args; fmqa_prefill_args: from
                                    the last scores_window tokens, SnapKV)   */
#define FMQA_FLAG_KV_CACHE 0x100u /* prefill: K and V come from the cache, which
                                     already holds the new tokens (fmqa_prefill) */
/* Append into an MLA latent cache (fmqa_append_args): one K row per token of
 * head_dim_qk = latent (head_dim_v) + rope part, no V (decode reads V as the
 * row's first head_dim_v); RoPE rotates the row's last head_dim_qk - head_dim_v
 * elements; q holds only the query's rope part.  Append only, num_kv_heads 1. */
#define FMQA_FLAG_LATENT 0x1000u
/* Paged cache whose page table is in CSR form (FlashInfer's paged_kv format):
 * sequence b owns pages page_indices[page_indptr[b] .. page_indptr[b + 1]),
 * in order, and holds (n_b - 1) * page_size + last_page_len[b] positions
 * (n_b its page count; 0 without pages).  Decode, MLA decode and append; needs
 * FMQA_FLAG_PAGED, excludes FMQA_FLAG_RING (a ring's length is not its
 * pages'); fmqa_decode_args / fmqa_append_args say which fields. */
#define FMQA_FLAG_PAGE_CSR 0x40u
/* Append writes token t of sequence b to the paged cache slot
 * slot_mapping[b * q_tokens + t] (page slot / page_size, row slot % page_size;
 * vLLM's reshape_and_cache), -1 = not written; no page table.  Append only;
 * needs FMQA_FLAG_PAGED, excludes FMQA_FLAG_RING and FMQA_FLAG_PAGE_CSR. */
#define FMQA_FLAG_SLOT_MAPPING 0x2000u
#define FMQA_FLAG_ALL 0x31FFu

/*
 * A problem: the shape and types of one attention call, independent of pointers.
 * It is what the dispatcher keys on.  For decode, kv_len is the largest KV length
 * any sequence of the batch may have (the cache capacity the caller plans for);
 * the real per-sequence lengths travel with the call.  Keeping it constant across
 * decode steps keeps the launch plan constant.
 */
typedef struct fmqa_problem {
    fmqa_op op;
    int32_t batch;          /* sequences (prefill <= 65535: grid z)              */
    int32_t num_q_heads;    /* H                                                 */
    int32_t num_kv_heads;   /* Hkv; H % Hkv == 0; 1 = MQA, H = MHA                */
    int32_t head_dim_qk;    /* d of Q and K (MLA: latent + rope)                 */
    int32_t head_dim_v;     /* d of V and the output (MLA: latent)               */
    int32_t q_tokens;       /* query tokens per sequence (decode 1..16; MLA
                               decode: num_q_heads * q_tokens <= 65535). Every limit:
                               docs/reference.md, "Limits the library enforces" */
    int32_t kv_len;         /* largest KV length (see above)                     */
    fmqa_dtype q_dtype;     /* f16 or bf16                                       */
    fmqa_dtype kv_dtype;    /* f16, bf16, int8 or fp8_e4m3                       */
    fmqa_dtype out_dtype;   /* f16 or bf16                                       */
    int32_t page_size;      /* tokens per page when FMQA_FLAG_PAGED, else 0: a
                               power of two >= 16; 1..8 are UNSUPPORTED (no
                               kernel gathers token-granular pages yet)     */
    int32_t window;         /* sliding window in tokens, 0 = unlimited           */
    int32_t sink_tokens;    /* with a window: first positions that stay visible  */
    fmqa_rope rope;         /* append only: RoPE layout applied to new K (and Q) */
    uint32_t flags;         /* FMQA_FLAG_*                                       */
    fmqa_kv_scale_granularity kv_scale_granularity; /* 8-bit caches: which scales
                               (above); 0 = per token and head                  */
    /* Fields appended after 0.1.0 (fmqa_problem_init zeroes them: off). */
    float logit_softcap;    /* decode, prefill: > 0 caps every score s (sm_scale
                               included) to softcap * tanh(s / softcap) before
                               the softmax (Gemma 2/3); 0 = off; finite        */
    int32_t draft_slots;    /* FMQA_FLAG_RING: ring slots beyond the window, so
                               that speculative drafts never overwrite a
                               position a query still sees; the ring holds
                               sink_tokens + window + draft_slots slots.  A
                               verification step appends at most
                               draft_slots + 1 tokens (see fmqa_decode)      */
    int32_t rope_dim;       /* append only: elements of a K / q row RoPE rotates,
                               the row's first rope_dim (partial rotary: GPT-NeoX,
                               Phi, StableLM, ChatGLM), with frequencies
                               theta^(-2i/rope_dim); a multiple of 4, 0 = all of
                               head_dim_qk.  FMQA_FLAG_LATENT: 0 or head_dim_qk -
                               head_dim_v (the rope part, last in the row)      */
} fmqa_problem;

/* Fills a problem with zeros and the most common choices (decode, f16, 1 token). */
FMQA_API void fmqa_problem_init(fmqa_problem *problem);

/* ---------------------------------------------------------------- context */

typedef enum fmqa_log_level {
    FMQA_LOG_QUIET = 0,
    FMQA_LOG_ERROR = 1,
    FMQA_LOG_WARN = 2,
    FMQA_LOG_INFO = 3,
    FMQA_LOG_DEBUG = 4
} fmqa_log_level;

/*
 * Versioned, append-only options.  Always start from FMQA_OPTIONS_INIT so that
 * struct_size and version tell the library which fields the caller knows about.
 */
typedef struct fmqa_options {
    uint32_t struct_size;       /* sizeof(fmqa_options) as the caller compiled it  */
    uint32_t version;           /* FMQA_OPTIONS_VERSION                            */
    int32_t device;             /* CUDA device ordinal                             */
    const char *db_path;        /* tuning database; NULL = default (below);
                                   "" = no database (template defaults only)       */
    const char *template_dir;   /* NULL = $FASTMQA_TEMPLATE_DIR, else the
                                   templates embedded in the library               */
    fmqa_log_level log_level;   /* messages to stderr at or above this level;
                                   $FASTMQA_LOG overrides when set to quiet,
                                   error, warn, info, debug or 0 to 4 (another
                                   value is ignored with a warning)                */
} fmqa_options;

#define FMQA_OPTIONS_VERSION 1u
#define FMQA_OPTIONS_INIT \
    { (uint32_t)sizeof(fmqa_options), FMQA_OPTIONS_VERSION, 0, NULL, NULL, FMQA_LOG_WARN }

/*
 * The default database path: $XDG_CACHE_HOME/fastmqa/tune.db, else
 * $HOME/.cache/fastmqa/tune.db.  Writes at most `cap` bytes including the NUL.
 */
FMQA_API fmqa_status fmqa_default_db_path(char *buf /* OUT */, size_t cap);

typedef struct fmqa_ctx fmqa_ctx_t;

/*
 * Creates a context.  *out is set even on error when memory allows (then it
 * holds the message): always pass it to fmqa_ctx_destroy().  Creation does not
 * need a GPU; the device is opened on first use.  opts may be NULL (defaults).
 */
FMQA_API fmqa_status fmqa_ctx_create(const fmqa_options *opts, fmqa_ctx_t **out /* OUT */);

/* Destroys the context, unloading its modules.  NULL is a no-op. */
FMQA_API void fmqa_ctx_destroy(fmqa_ctx_t *ctx);

/* The calling thread's last error message on ctx; "" after success.  The string
 * is owned by ctx and valid until the thread's next call on ctx. */
FMQA_API const char *fmqa_ctx_errmsg(const fmqa_ctx_t *ctx);

/* ---------------------------------------------------------------- device */

typedef struct fmqa_device_info {
    char name[256];
    int32_t ordinal;
    int32_t cc_major, cc_minor;        /* compute capability                */
    int32_t sm_count;
    int64_t total_memory;              /* bytes                             */
    int64_t l2_bytes;
    int32_t smem_per_block_optin;      /* bytes a block may opt in to       */
    int32_t smem_per_sm;
    int32_t regs_per_sm;
    int32_t max_threads_per_block;
    int32_t clock_khz;                 /* SM clock                          */
    int32_t mem_clock_khz;
    int32_t mem_bus_width;             /* bits                              */
    int32_t driver_version;            /* e.g. 13000 for 13.0               */
    int32_t nvrtc_major, nvrtc_minor;  /* NVRTC linked into the library     */
    char arch[16];                     /* "sm_90": base target; templates that
                                          need sm_90a features ask for it   */
} fmqa_device_info;

/* Describes the context's device.  FMQA_ERR_NO_DRIVER / NO_DEVICE without one. */
FMQA_API fmqa_status fmqa_device_query(fmqa_ctx_t *ctx, fmqa_device_info *info /* OUT */);

/* NVRTC version linked into the library; works without a GPU. */
FMQA_API fmqa_status fmqa_nvrtc_version(int *major /* OUT */, int *minor /* OUT */);

/* ---------------------------------------------------------------- problems */

/* Checks a problem: sizes, divisibility, enum values, 32-bit index overflow.
 * FMQA_OK or FMQA_ERR_INVALID_ARGUMENT / UNSUPPORTED with the reason in ctx. */
FMQA_API fmqa_status fmqa_problem_validate(fmqa_ctx_t *ctx, const fmqa_problem *problem);

/* How the dispatcher chose the kernel variant for a problem. */
typedef enum fmqa_choice_source {
    FMQA_CHOICE_TUNED = 1,   /* exact entry in the tuning database            */
    FMQA_CHOICE_NEAREST = 2, /* nearest tuned shape bucket, legality rechecked */
    FMQA_CHOICE_DEFAULT = 3  /* the template's default                        */
} fmqa_choice_source;

typedef struct fmqa_choice {
    fmqa_choice_source source;
    char template_name[64];
    char config[256];        /* canonical config text, "BLOCK_N=64,WARPS=4"   */
    double tuned_time_us;    /* median of the tuned trial, 0 if none          */
    /* Why this source, for people: the tuned bucket used, or why no tuned
     * entry was (none for this device and template version, the nearest too
     * far or launching too few CTAs for this shape, none legal).  The rules
     * are those of docs/tuning.md, "Reuse of a nearby shape". */
    char reason[192];
} fmqa_choice;

/* Resolves (and caches) the launch plan for a problem without launching:
 * compiles the kernel if needed.  Needs a device. */
FMQA_API fmqa_status fmqa_plan(fmqa_ctx_t *ctx, const fmqa_problem *problem,
                      fmqa_choice *choice /* OUT, may be NULL */);

/* ---------------------------------------------------------------- decode */

/*
 * Decode attention: for every sequence b, query token t and query head h,
 *   o[b,t,h,:] = softmax_j(scale * q[b,t,h,:] . k[b,j,h/G,:] + mask) v[b,j,h/G,:]
 * over the cache positions j the token sees (G = H / Hkv).  Semantics of the
 * mask, window, positions and 8-bit scales are those of reference/ref.h.
 *
 * Query token t of sequence b sits at position kv_lens[b] - q_tokens + t; the
 * cache already holds the query tokens' own K and V.  A token sees position j
 * when j <= its position (FMQA_FLAG_CAUSAL; without it, all kv_lens[b]
 * positions), when window > 0 also j > position - window or j < sink_tokens,
 * and, with FMQA_FLAG_TREE_MASK, for the draft positions j >= kv_lens[b] -
 * q_tokens, bit (j - first draft) of tree_mask[b * q_tokens + t] is set.
 *
 * With FMQA_FLAG_RING the cache holds sink_tokens + R slots, R = window +
 * draft_slots, instead of one per position: position j < sink_tokens lives in
 * slot j, any later position in slot sink_tokens + (j - sink_tokens) % R; only
 * the last R positions (and the sinks) are present.  kv_lens stays the logical
 * length.  A position the ring no longer holds is invisible to every query
 * token, even an early draft whose own window would still reach it (with
 * q_tokens <= draft_slots + 1 that never happens).
 *
 * Scores: s_j = sm_scale * q . k_j; with problem->logit_softcap = c > 0,
 * s_j = c * tanh(s_j / c).  With args->sinks, head h's softmax denominator
 * also holds exp(sinks[h]), a learned logit that carries no value:
 * o = sum_j exp(s_j) v_j / (exp(sinks[h]) + sum_j exp(s_j)) and lse is the log
 * of that whole denominator (a query that sees nothing gets o = 0 and
 * lse = sinks[h]).  To merge partial results by LSE (cascade), give the sinks
 * to one part only.
 *
 * Which cache rows and page-table entries are read: only those of positions j <
 * kv_lens[b] that are sinks (j < sink_tokens) or lie in some query token's
 * window (without a window: all).  Other positions' rows, their scales and the
 * page-table entries of pages holding none of them are never dereferenced, so
 * an engine may free pages that fell behind the window and set their entries
 * to -1 (an entry is only read for a position this rule reads).
 *
 * Speculative decoding, the protocol (docs/reference.md, "Speculative
 * decoding"): with L accepted tokens, append n drafts at L .. L+n-1
 * (fmqa_append, start_pos = L); verify with a decode of q_tokens = n, kv_lens =
 * L + n, causal or tree mask; accept a tokens by setting kv_lens to L + a (no
 * call: rejected positions lie beyond kv_lens and are never read, and the next
 * append overwrites their rows and 8-bit scales).  A tree's accepted path that
 * is not a prefix of the drafts is committed by appending its K/V again at
 * L .. L+a-1.  A ring cache needs draft_slots >= n - 1, else a draft overwrites
 * a position the next queries still see (a longer step is served, with the
 * ring rule above for its early tokens, but its rejected drafts then clobber
 * positions later queries need).
 *
 * Layouts, strides in elements:
 *   q    [b, t, h, d]  strides q_stride_{batch,token,head}
 *   o    [b, t, h, dv] strides o_stride_{batch,token,head}
 *   lse  [b, t, h]     float, natural log, contiguous (FMQA_FLAG_LSE)
 *   contiguous cache: k [b, j, hk, d] strides k_stride_{batch,token,head}
 *   paged cache:      k [page, j % page_size, hk, d] with k_stride_batch the
 *                     stride of a page; page j / page_size of sequence b is
 *                     page_table[b * page_table_stride + j / page_size], or
 *                     with FMQA_FLAG_PAGE_CSR page_indices[page_indptr[b] +
 *                     j / page_size] (then page_table is unused and kv_lens
 *                     must be NULL: the lengths are the table's).
 *   page layouts:     NHD [page, j, hk, d] (above) and HND [page, hk, j, d]
 *                     are both these strides: HND is k_stride_token = d,
 *                     k_stride_head = page_size * d (the same for V and the
 *                     scales); K and V are separate tensors with their own
 *                     strides (vLLM's and FlashInfer's split caches).
 *   8-bit scales:     k_scale [b|page, j, hk] floats, strides
 *                     k_scale_stride_{batch,token,head} (batch means page when
 *                     paged); value = scale * stored integer or fp8 number.
 *                     Per head or per tensor (problem->kv_scale_granularity):
 *                     k_scale[hk * k_scale_stride_head] or k_scale[0].
 * Alignment: q, o, k, v, workspace and their strides in bytes: 16; k_scale,
 * v_scale, kv_lens, page_table, page_indptr, page_indices, last_page_len,
 * lse, scores: 4; tree_mask: 8.  Rows of o must not overlap.  Otherwise
 * FMQA_ERR_INVALID_ARGUMENT naming the field.  The CSR arrays are device
 * memory the kernel trusts like kv_lens (page_indptr non-decreasing,
 * last_page_len[b] in 1..page_size for a sequence with pages, lengths within
 * q_tokens..kv_len, indices of pages it reads valid); ref_decode checks them.
 *
 * Heavy-hitter scores (FMQA_FLAG_SCORES).  The call ADDS, for every sequence
 * b, KV head hk and cache slot i (the position itself, or its ring slot with
 * FMQA_FLAG_RING; a paged cache's logical index, before the page table), the
 * attention mass the slot's position j received in this call:
 *   scores[b * scores_stride_batch + hk * scores_stride_head + i] +=
 *       sum over query tokens t and the G query heads h of KV head hk of
 *       exp(s[b,t,h,j] - lse[b,t,h])
 * with s and lse the natural-log logits (soft-capped where logit_softcap
 * is set) and log-sum-exp of the call (the final lse over all positions and
 * the learned sink, whatever the KV split).  Positions no query
 * token sees add nothing; slots >= kv_lens[b] are not touched.  So each
 * element gains at most Tq * G per call, and a buffer the caller keeps across
 * decode steps accumulates the steps (H2O); zero it to start afresh.  scores
 * [b, hk, i] has room for kv_len slots (sink_tokens + window + draft_slots
 * with a ring); its rows must not overlap.  The masses the kernel adds are those it
 * applied: its softmax probabilities rounded to f16 (relative error ~5e-4,
 * masses below ~6e-8 of their tile's maximum flush to 0).  The cost and how it
 * is kept small: docs/kernels.md, "Scores".
 */
typedef struct fmqa_decode_args {
    const void *q;
    int64_t q_stride_batch, q_stride_token, q_stride_head;
    const void *k;
    const void *v;
    int64_t k_stride_batch, k_stride_token, k_stride_head;
    int64_t v_stride_batch, v_stride_token, v_stride_head;
    const float *k_scale;            /* 8-bit caches only, else NULL */
    const float *v_scale;
    int64_t k_scale_stride_batch, k_scale_stride_token, k_scale_stride_head;
    int64_t v_scale_stride_batch, v_scale_stride_token, v_scale_stride_head;
    const int32_t *kv_lens;          /* [batch], device                          */
    const int32_t *page_table;       /* [batch, page_table_stride], device       */
    int64_t page_table_stride;
    const uint64_t *tree_mask;       /* [batch, q_tokens], device, bit j = draft j */
    void *o;
    int64_t o_stride_batch, o_stride_token, o_stride_head;
    float *lse;                      /* FMQA_FLAG_LSE only                       */
    float sm_scale;                  /* 0 = 1 / sqrt(head_dim_qk)                */
    void *workspace;                 /* fmqa_decode_workspace_size() bytes       */
    size_t workspace_size;
    /* Appended after 0.1.0 (zero it: memset or = {0}). */
    const float *sinks;              /* [num_q_heads], device: learned sink logit
                                        per query head (natural-log units, not
                                        scaled by sm_scale nor capped), finite;
                                        NULL = none.  4-byte aligned             */
    /* FMQA_FLAG_PAGE_CSR only (else NULL), device: */
    const int32_t *page_indptr;      /* [batch + 1]                              */
    const int32_t *page_indices;     /* [page_indptr[batch]] page ids            */
    const int32_t *last_page_len;    /* [batch], 1..page_size                    */
    float *scores;                   /* FMQA_FLAG_SCORES only: [b, hk, slot], added to */
    int64_t scores_stride_batch, scores_stride_head;
} fmqa_decode_args;

/* Workspace bytes a decode or an MLA decode (FMQA_OP_DECODE or
 * FMQA_OP_MLA_DECODE) of this problem needs (split-KV partials); may be 0.
 * Resolves the launch plan (see fmqa_plan), so it needs the device. */
FMQA_API fmqa_status fmqa_decode_workspace_size(fmqa_ctx_t *ctx, const fmqa_problem *problem,
                                       size_t *bytes /* OUT */);

/* Launches decode attention on stream.  problem->op must be FMQA_OP_DECODE. */
FMQA_API fmqa_status fmqa_decode(fmqa_ctx_t *ctx, const fmqa_problem *problem,
                        const fmqa_decode_args *args, fmqa_stream_t stream);

/* ---------------------------------------------------------------- MLA decode */

/*
 * Multi-head Latent Attention decode (DeepSeek-V2/V3 style, absorbed weights):
 * problem->op = FMQA_OP_MLA_DECODE, num_kv_heads = 1, head_dim_qk = d_c + d_r,
 * head_dim_v = d_c.  The kernels serve d_c = 512, d_r = 64 (any other size is
 * FMQA_ERR_UNSUPPORTED naming that) with 1 to 16 query tokens, any number of
 * query heads, f16/bf16 queries and outputs, and f16, bf16 or fp8_e4m3 caches.
 * Every cached token has one latent row [c_kv (d_c) | k_pe (d_r)] shared by
 * all heads; for sequence b, query token t and head h
 *   o[b,t,h,:] = softmax_j(sm_scale * q[b,t,h,:] . kv[b,j,:]) kv[b,j,:d_c]
 * where q = [q_nope W_UK (d_c) | q_pe (d_r)] is the absorbed query (the
 * caller applies W_UV to o).  Positions, kv_lens, the causal mask among the
 * query tokens, the sliding window with sink_tokens, the ring cache
 * (FMQA_FLAG_RING, draft_slots: slot rules and which rows are read) and the
 * learned sinks are those of fmqa_decode / fmqa_decode_args, with the latent
 * row as the cached token; FMQA_FLAG_PAGED, FMQA_FLAG_CAUSAL, FMQA_FLAG_LSE
 * and FMQA_FLAG_PAGE_CSR (page_indptr, page_indices, last_page_len as in
 * fmqa_decode_args, kv_lens NULL) apply; a tree mask is FMQA_ERR_UNSUPPORTED.
 * One KV head: NHD and HND pages are the same layout.
 *
 * Layouts, strides in elements:
 *   q        [b, t, h, d_c + d_r]  strides q_stride_{batch,token,head}
 *   kv       [b|page, j, d_c + d_r] strides kv_stride_{batch,token}; paged:
 *            page j / page_size of sequence b is page_table[b *
 *            page_table_stride + j / page_size], kv_stride_batch a page's
 *   kv_scale [b|page, j] floats, fp8_e4m3 caches only: value = scale * stored
 *   o        [b, t, h, d_c]        strides o_stride_{batch,token,head}
 *   lse      [b, t, h]             float, natural log (FMQA_FLAG_LSE)
 * Alignment: q, kv, o, workspace and their strides in bytes: 16; kv_scale,
 * kv_lens, page_table, lse, sinks: 4.  Rows of o must not overlap.  Otherwise
 * FMQA_ERR_INVALID_ARGUMENT naming the field.  The workspace is
 * fmqa_decode_workspace_size() bytes.
 */
typedef struct fmqa_mla_decode_args {
    const void *q;
    int64_t q_stride_batch, q_stride_token, q_stride_head;
    const void *kv;
    int64_t kv_stride_batch, kv_stride_token;
    const float *kv_scale;           /* fp8 caches only, else NULL              */
    int64_t kv_scale_stride_batch, kv_scale_stride_token;
    const int32_t *kv_lens;          /* [batch], device                          */
    const int32_t *page_table;       /* [batch, page_table_stride], device       */
    int64_t page_table_stride;
    void *o;
    int64_t o_stride_batch, o_stride_token, o_stride_head;
    float *lse;                      /* FMQA_FLAG_LSE only                       */
    float sm_scale;                  /* 0 = 1 / sqrt(head_dim_qk)                */
    void *workspace;                 /* fmqa_decode_workspace_size() bytes       */
    size_t workspace_size;
    /* Appended after 0.1.0 (zero it: memset or = {0}).
     * FMQA_FLAG_PAGE_CSR only (else NULL), device, as fmqa_decode_args: */
    const int32_t *page_indptr;      /* [batch + 1]                              */
    const int32_t *page_indices;     /* [page_indptr[batch]] page ids            */
    const int32_t *last_page_len;    /* [batch], 1..page_size                    */
    const float *sinks;              /* [num_q_heads], device: learned sink logit
                                        per query head, as fmqa_decode_args.sinks;
                                        NULL = none.  4-byte aligned             */
} fmqa_mla_decode_args;

/* Launches MLA decode on stream.  problem->op must be FMQA_OP_MLA_DECODE. */
FMQA_API fmqa_status fmqa_mla_decode(fmqa_ctx_t *ctx, const fmqa_problem *problem,
                            const fmqa_mla_decode_args *args, fmqa_stream_t stream);

/* ---------------------------------------------------------------- append */

/*
 * KV append: writes n_new = problem->q_tokens new tokens per sequence into the
 * cache at positions start_pos[b] .. start_pos[b] + n_new - 1, applying RoPE
 * (problem->rope, base rope_theta or the rope_cos_sin table) to K at its
 * position and, for 8-bit caches, quantizing per token and head (scale =
 * max|x| / 127 for int8, / 448 for fp8) and writing the scale, or, with
 * problem->kv_scale_granularity HEAD or TENSOR, quantizing with the given
 * scales (saturating) and writing none.  With FMQA_FLAG_RING positions map to
 * slots as in fmqa_decode_args (sinks, then a ring of window + draft_slots
 * slots).  If q is not NULL, RoPE is applied to q in place at the same
 * positions (its dtype is problem->q_dtype).  With rope_pos (a cache
 * compacted by fmqa_compress, whose slots no longer equal positions), token t
 * is still written at slot start_pos[b] + t but rotated (K and q) at position
 * rope_pos[b] + t.
 *   k_new, v_new [b, t, hk, d] strides {k,v}_new_stride_{batch,token,head}
 *   q            [b, t, h, d]  strides q_stride_{batch,token,head}
 * Cache layouts and strides are those of fmqa_decode_args (NHD or HND).
 * FMQA_FLAG_PAGE_CSR: the page of position j of sequence b is
 * page_indices[page_indptr[b] + j / page_size] (start_pos still gives the
 * positions; last_page_len is not read).  FMQA_FLAG_SLOT_MAPPING: token t of
 * sequence b goes to slot s = slot_mapping[b * q_tokens + t] of the paged
 * cache, row s % page_size of page s / page_size, whatever its position
 * (which still drives RoPE); s = -1 writes nothing for the token (its q rows
 * are still rotated); page_table is then unused.  vLLM's flat token batch is
 * batch = tokens, q_tokens = 1, start_pos = the positions.
 *
 * RoPE rotates the first problem->rope_dim elements of each K and q row (all
 * of them when 0).  MLA (FMQA_FLAG_LATENT): k_new rows are the new tokens'
 * latent (head_dim_v) followed by their rope part (k_pe), 1 KV head; the row
 * goes to the k cache (8-bit: one scale per token for the whole row) with the
 * rope part rotated; v_new, v and v_scale must be NULL; q is q_pe only,
 * [b, t, h, rope part] (for a query stored as [.., latent + rope] pass the
 * address of its rope part with the same strides).  An engine that holds the
 * latent (kv_c) and the rope part (k_pe) as two tensors passes k_pe_new: then
 * k_new rows are the latent alone and k_pe_new [b, t, rope part] (strides
 * k_pe_new_stride_{batch,token}, dtype q_dtype, 16-byte aligned like k_new)
 * the rope part; the cache row is the same as from one concatenated row.
 *
 * RoPE of q alone ("separately": q_pe of an MLA query, or any q whose K was
 * appended before): k_new NULL, and then k, v, v_new and the scales NULL too;
 * q and RoPE required.  Nothing is written but q.
 *
 * RoPE from a table (rope_cos_sin not NULL; rope_theta must then be 0): row p
 * of the table holds, for position p, the cos of the rope_dim / 2 rotated
 * pairs' angles, then their sin, as floats (vLLM's and FlashInfer's
 * cos_sin_cache layout): any scaling (linear, dynamic NTK, YaRN with its
 * attention factor folded into cos and sin, Llama-3, LongRoPE) is the
 * caller's table.  Pair i of the layout (NEOX: elements i and i + rope_dim/2,
 * GPT-J: 2i and 2i + 1, of the rotated part) becomes (a cos - b sin,
 * b cos + a sin).  A token whose position is >= rope_cos_sin_len is not
 * written at all (K, V and its q rows stay as they were): the kernel cannot
 * report it, so size the table for every position the cache may hold.
 */
typedef struct fmqa_append_args {
    const void *k_new;
    const void *v_new;
    int64_t k_new_stride_batch, k_new_stride_token, k_new_stride_head;
    int64_t v_new_stride_batch, v_new_stride_token, v_new_stride_head;
    void *q;
    int64_t q_stride_batch, q_stride_token, q_stride_head;
    void *k;
    void *v;
    int64_t k_stride_batch, k_stride_token, k_stride_head;
    int64_t v_stride_batch, v_stride_token, v_stride_head;
    float *k_scale;
    float *v_scale;
    int64_t k_scale_stride_batch, k_scale_stride_token, k_scale_stride_head;
    int64_t v_scale_stride_batch, v_scale_stride_token, v_scale_stride_head;
    const int32_t *start_pos;        /* [batch], device                        */
    const int32_t *page_table;
    int64_t page_table_stride;
    float rope_theta;                /* 0 = 10000                              */
    const float *rope_cos_sin;       /* [rope_cos_sin_len, rope_cos_sin_stride]
                                        floats, device; NULL = rope_theta      */
    int64_t rope_cos_sin_stride;     /* floats between positions, >= the
                                        rotated elements                       */
    int64_t rope_cos_sin_len;        /* positions the table holds              */
    /* Appended after 0.1.0 (zero it: memset or = {0}). */
    const int32_t *page_indptr;      /* FMQA_FLAG_PAGE_CSR: [batch + 1], device */
    const int32_t *page_indices;     /* FMQA_FLAG_PAGE_CSR: page ids, device    */
    const int32_t *slot_mapping;     /* FMQA_FLAG_SLOT_MAPPING: [batch *
                                        q_tokens] slots or -1, device; 4-byte
                                        aligned                                */
    const void *k_pe_new;            /* FMQA_FLAG_LATENT only: the new tokens'
                                        rope part apart from their latent (see
                                        above); NULL = in the k_new rows       */
    int64_t k_pe_new_stride_batch, k_pe_new_stride_token;
    const int32_t *rope_pos;         /* [batch], device, or NULL = start_pos   */
} fmqa_append_args;

/* Launches the append on stream.  problem->op must be FMQA_OP_APPEND, its
 * dtypes those of k_new (q_dtype) and of the cache (kv_dtype). */
FMQA_API fmqa_status fmqa_append(fmqa_ctx_t *ctx, const fmqa_problem *problem,
                        const fmqa_append_args *args, fmqa_stream_t stream);

/* ---------------------------------------------------------------- prefill */

/*
 * Prefill attention over a ragged batch (the "varlen" form): sequence b has
 * Tq_b = cu_seqlens_q[b + 1] - cu_seqlens_q[b] new query tokens, packed one
 * after another in q and o: token i of sequence b is row cu_seqlens_q[b] + i.
 * For every such row and query head h,
 *   o[row,h,:] = softmax_j(scale * q[row,h,:] . k[b,j,h/G,:]) v[b,j,h/G,:]
 * over the positions j the token sees (G = H / Hkv), by the rules of
 * fmqa_decode_args (reference/ref.h, docs/reference.md):
 *
 *  - without FMQA_FLAG_KV_CACHE, K and V are the new tokens' own, packed like q
 *    ([total_q, hk, d], dtype kv_dtype == q_dtype): sequence b has kv_len_b =
 *    Tq_b positions and token i sits at position i;
 *  - with FMQA_FLAG_KV_CACHE (chunked prefill), K and V are a cache laid out as
 *    decode's (contiguous or FMQA_FLAG_PAGED; f16, bf16, int8 or fp8_e4m3 with
 *    scales) that already holds the new tokens (fmqa_append them first): it
 *    holds kv_lens[b] positions and token i sits at position kv_lens[b] - Tq_b
 *    + i, so the new tokens see the cached prefix and themselves.
 *
 * FMQA_FLAG_CAUSAL: a token sees positions <= its own (otherwise all of its
 * sequence's positions); window > 0: also only the last `window` of them and
 * the first sink_tokens.  Scores are soft-capped (problem->logit_softcap) and
 * learned sinks (args->sinks) join the denominator and lse as in fmqa_decode.
 * A row that sees nothing gets o = 0 (lse = -inf, or sinks[h] with sinks).
 * FMQA_FLAG_RING, FMQA_FLAG_TREE_MASK and FMQA_FLAG_PAGE_CSR are not served
 * (UNSUPPORTED); HND pages are strides as in fmqa_decode_args.
 *
 * The problem: op FMQA_OP_PREFILL, batch = B (<= 65535), q_tokens = the
 * largest Tq_b the call may bring (the launch is sized by it), kv_len = the
 * largest kv_lens[b] with FMQA_FLAG_KV_CACHE (else q_tokens).  Keep them
 * constant across calls to keep the launch plan constant.
 *
 * Device arrays the kernel trusts (like decode's kv_lens): 0 = cu_seqlens_q[0]
 * <= cu_seqlens_q[1] <= ..., Tq_b <= q_tokens, Tq_b <= kv_lens[b] <= kv_len.
 *
 * Layouts, strides in elements:
 *   q    [total_q, h, d]   strides q_stride_{token,head}
 *   o    [total_q, h, dv]  strides o_stride_{token,head}
 *   lse  [total_q, h]      float, natural log, contiguous (FMQA_FLAG_LSE)
 *   k, v without the cache: [total_q, hk, d] strides {k,v}_stride_{token,head}
 *        ({k,v}_stride_batch unused);
 *   k, v, k_scale, v_scale with the cache: as fmqa_decode_args.
 * Give total_q (the rows, cu_seqlens_q[batch]): with 0 the sm_90a kernel's
 * tensor maps span batch * q_tokens rows, so q, k and v are then read in whole
 * tiles up to that row (allocate that many; rows past total_q finite).
 * Alignment as fmqa_decode_args; cu_seqlens_q, kv_lens: 4.  Otherwise
 * FMQA_ERR_INVALID_ARGUMENT naming the field.
 *
 * Observation-window scores (FMQA_FLAG_SCORES; SnapKV, Li et al. 2024): the
 * call ADDS, for every sequence b, KV head hk and position j < kv_len_b, the
 * attention mass j received from the sequence's observation window, its last
 * w_b = min(scores_window, Tq_b) new tokens:
 *   scores[b * scores_stride_batch + hk * scores_stride_head + j] +=
 *       sum over the window's tokens t and the G query heads h of hk of
 *       exp(s[b,t,h,j] - lse[b,t,h])
 * with s and lse as fmqa_decode_args states for its scores (soft-capped
 * logits; lse the row's final one, learned sink included).  The slot is the
 * position j itself: the cache slot with FMQA_FLAG_KV_CACHE (a paged cache's
 * logical index, before the page table), else the new token's index.
 * Positions no window token sees add nothing; slots >= kv_len_b are not
 * touched, so scores [b, hk, slot] needs room for kv_len slots, rows not
 * overlapping.  A chunked prefill scores the last tokens of each call: give
 * the flag to the prompt's last chunk for SnapKV's selection (fmqa_compress,
 * pooling FMQA_POOL_*).  The workspace grows by 4 bytes per (row of q, head)
 * for the rows' LSEs; the sm_90a kernel emits no scores, so the dispatcher
 * picks the sm_80 one.  Cost: docs/kernels.md, "Prefill scores".
 */
typedef struct fmqa_prefill_args {
    const void *q;
    int64_t q_stride_token, q_stride_head;
    const void *k;
    const void *v;
    int64_t k_stride_batch, k_stride_token, k_stride_head;
    int64_t v_stride_batch, v_stride_token, v_stride_head;
    const float *k_scale;            /* 8-bit caches only, else NULL             */
    const float *v_scale;
    int64_t k_scale_stride_batch, k_scale_stride_token, k_scale_stride_head;
    int64_t v_scale_stride_batch, v_scale_stride_token, v_scale_stride_head;
    const int32_t *cu_seqlens_q;     /* [batch + 1], device                      */
    const int32_t *kv_lens;          /* [batch], device; FMQA_FLAG_KV_CACHE only */
    const int32_t *page_table;       /* [batch, page_table_stride]; paged only   */
    int64_t page_table_stride;
    void *o;
    int64_t o_stride_token, o_stride_head;
    float *lse;                      /* FMQA_FLAG_LSE only                       */
    float sm_scale;                  /* 0 = 1 / sqrt(head_dim_qk)                */
    void *workspace;                 /* fmqa_prefill_workspace_size() bytes      */
    size_t workspace_size;
    int64_t total_q;                 /* rows of q, o (and k, v without the
                                        cache): cu_seqlens_q[batch], 1..batch *
                                        q_tokens; 0 = batch * q_tokens.  The
                                        sm_90a kernel's tensor maps span this many
                                        rows (TMA reads whole tiles, zero past it) */
    const float *sinks;              /* [num_q_heads], device: learned sink logit
                                        per query head, as fmqa_decode_args.sinks
                                        (joins every row's denominator and lse,
                                        carries no value); NULL = none.  4-byte
                                        aligned                                  */
    /* FMQA_FLAG_SCORES only (else NULL and 0): observation-window scores
     * (SnapKV), see "Observation-window scores" above. */
    float *scores;                   /* [b, hk, slot], added to; 4-byte aligned  */
    int64_t scores_stride_batch, scores_stride_head;
    int32_t scores_window;           /* >= 1: the last scores_window new tokens
                                        of each sequence score (all of them
                                        when it has fewer)                       */
} fmqa_prefill_args;

/* Workspace bytes a prefill of this problem needs; may be 0.  Resolves the
 * launch plan (see fmqa_plan), so it needs the device. */
FMQA_API fmqa_status fmqa_prefill_workspace_size(fmqa_ctx_t *ctx, const fmqa_problem *problem,
                                        size_t *bytes /* OUT */);

/* Launches prefill attention on stream.  problem->op must be FMQA_OP_PREFILL. */
FMQA_API fmqa_status fmqa_prefill(fmqa_ctx_t *ctx, const fmqa_problem *problem,
                         const fmqa_prefill_args *args, fmqa_stream_t stream);
/* ---------------------------------------------------------------- compress */

/*
 * KV-cache compression (H2O, SnapKV and StreamingLLM style): keep a sequence's
 * first sink_tokens slots, its last `recent` slots and, between them, the
 * `heavy` slots with the highest (pooled) scores, and move the kept rows to
 * the front of the sequence's cache in their original order.
 *
 * For sequence b with n = kv_lens[b] slots and budget = sink_tokens + recent
 * + heavy: if n <= budget every slot is kept and nothing moves; otherwise the
 * candidates are the slots [sink_tokens, n - recent), each scored
 *   raw(j)  = scores[b, hk, j]  (per_sequence: summed over the KV heads, in
 *             float, head 0 first)
 *   key(j)  = pooling NONE: raw(j); MAX: the largest raw(i), |i - j| <= pool,
 *             0 <= i < n; AVG: their float sum (ascending i) / (2 pool + 1)
 * (SnapKV's pooling of the observation window's scores, kernel 2 pool + 1),
 * and the `heavy` candidates with the largest keys are kept; equal keys keep
 * the smaller slot (the older token).  With per_sequence = 0 each KV head
 * chooses for itself (so heads keep different positions); with 1 all heads of
 * a sequence keep the same slots.  Every head keeps the same number,
 * new_lens[b] = min(n, budget).
 *
 * Kept row i (i < new_lens[b]) of head hk came from slot kept[b, hk, i]
 * (strictly increasing in i): the caller keeps the original position of
 * every slot (e.g. an int32 [b, hk, slot] it compacts with kept) so that RoPE
 * stays right -- new tokens are appended at slot new_lens[b] with their true
 * position (fmqa_append_args.rope_pos) and decode reads the compacted cache as
 * it is.  The scores move with their rows (an H2O buffer keeps accumulating);
 * K, V and 8-bit scales move in place, through the page table when paged:
 * the kept rows fill the lowest slots, so the pages of the table columns
 * ceil(new_lens[b] / page_size) .. ceil(kv_lens[b] / page_size) - 1 hold no
 * kept row any more; free_pages lists them for the caller to reuse (the table
 * itself is the caller's and is not written).  Slots from new_lens[b] on keep
 * stale rows.
 *
 * The problem: op FMQA_OP_COMPRESS, batch, num_kv_heads (num_q_heads is
 * ignored: set it to num_kv_heads), head_dim_qk = head_dim_v, kv_len (the
 * cache capacity per sequence), kv_dtype, page_size and FMQA_FLAG_PAGED as in
 * decode; FMQA_FLAG_RING and FMQA_FLAG_PAGE_CSR are not served (UNSUPPORTED:
 * the kernel reads a 2-D page table).
 */
typedef enum fmqa_pooling {
    FMQA_POOL_NONE = 0,
    FMQA_POOL_MAX = 1,
    FMQA_POOL_AVG = 2
} fmqa_pooling;

typedef struct fmqa_compress_policy {
    int32_t sink_tokens;   /* first slots, always kept (StreamingLLM)           */
    int32_t recent;        /* last slots, always kept                           */
    int32_t heavy;         /* heavy hitters kept between them (H2O)             */
    fmqa_pooling pooling;  /* of the scores before choosing (SnapKV)            */
    int32_t pool;          /* pooling radius: kernel 2 pool + 1                 */
    int32_t per_sequence;  /* 1: one choice for all KV heads of a sequence      */
} fmqa_compress_policy;

/*
 * Arguments of fmqa_compress.  Cache fields as fmqa_decode_args (written).
 *   scores [b, hk, slot] float, IN/OUT (compacted); may be NULL when heavy = 0
 *   kept   [b, hk, slot] int32, OUT; may be NULL
 *   free_pages [b, page_table_stride] int32, OUT, paged only, may be NULL:
 *          row b lists the page ids sequence b no longer uses (its table
 *          entries from column ceil(new_lens[b] / page_size) to column
 *          ceil(kv_lens[b] / page_size) - 1, in column order), then -1 to the
 *          end of the row
 * kv_lens and new_lens must not overlap, nor free_pages and page_table.  Alignment: k, v and their strides
 * 16 bytes; everything else 4.  Scores must not be NaN.
 */
typedef struct fmqa_compress_args {
    void *k;
    void *v;
    int64_t k_stride_batch, k_stride_token, k_stride_head;
    int64_t v_stride_batch, v_stride_token, v_stride_head;
    float *k_scale;                  /* 8-bit caches only, else NULL */
    float *v_scale;
    int64_t k_scale_stride_batch, k_scale_stride_token, k_scale_stride_head;
    int64_t v_scale_stride_batch, v_scale_stride_token, v_scale_stride_head;
    const int32_t *page_table;       /* [batch, page_table_stride], paged only   */
    int64_t page_table_stride;
    const int32_t *kv_lens;          /* [batch], device, IN                      */
    int32_t *new_lens;               /* [batch], device, OUT                     */
    float *scores;
    int64_t scores_stride_batch, scores_stride_head;
    int32_t *kept;
    int64_t kept_stride_batch, kept_stride_head;
    fmqa_compress_policy policy;
    void *workspace;                 /* fmqa_compress_workspace_size() bytes     */
    size_t workspace_size;
    int32_t *free_pages;             /* [batch, page_table_stride], paged only   */
} fmqa_compress_args;

/* Workspace bytes fmqa_compress needs for this problem (8 per slot and KV
 * head of the batch).  Resolves the launch plan, so it needs the device. */
FMQA_API fmqa_status fmqa_compress_workspace_size(fmqa_ctx_t *ctx, const fmqa_problem *problem,
                                         size_t *bytes /* OUT */);

/* Checks the policy and arguments (no GPU needed for that) and launches the
 * compaction on stream.  Bad policy values (negative, a budget of 0, heavy >
 * 0 without scores, pool > 0 without pooling) are FMQA_ERR_INVALID_ARGUMENT. */
FMQA_API fmqa_status fmqa_compress(fmqa_ctx_t *ctx, const fmqa_problem *problem,
                          const fmqa_compress_args *args, fmqa_stream_t stream);

/* ---------------------------------------------------------------- levels */

/* A model's attention shape, for memory and level planning. */
typedef struct fmqa_model_config {
    int32_t hidden_size;
    int32_t num_q_heads;
    int32_t num_kv_heads;       /* 1 = MQA; = num_q_heads for MHA             */
    int32_t head_dim;           /* 0 = hidden_size / num_q_heads (MLA: the
                                   per-head nope/V dim, DeepSeek-V3: 128)     */
    int32_t mla_latent_dim;     /* > 0 for MLA: latent d_c (e.g. 512)         */
    int32_t mla_rope_dim;       /* MLA rope part d_r (e.g. 64)                */
    int32_t max_seq_len;
    fmqa_dtype dtype;           /* f16 or bf16: activations and full cache    */
} fmqa_model_config;

typedef enum fmqa_level {
    FMQA_LEVEL_CONSERVATIVE = 1, /* exact attention, 16-bit cache, full context */
    FMQA_LEVEL_BALANCED = 2,     /* + sinks, recent window and heavy hitters
                                    (MLA: sinks and sliding window), fused RoPE */
    FMQA_LEVEL_AGGRESSIVE = 3    /* + 8-bit cache, speculative verification     */
} fmqa_level;
/* For an MLA model (mla_latent_dim > 0) the cache is the latent row at every
 * level; its 8-bit form is fp8 e4m3 with one scale per token, its fused RoPE
 * the interleaved (GPT-J) layout DeepSeek uses.  docs/levels.md. */

FMQA_API const char *fmqa_level_name(fmqa_level level);
/* Parses "conservative", "balanced" or "aggressive" (any case). */
FMQA_API fmqa_status fmqa_level_from_name(fmqa_ctx_t *ctx, const char *name, fmqa_level *level /* OUT */);

/* The concrete choices behind a level; every field may be overridden after
 * fmqa_level_policy_preset() fills it. */
typedef struct fmqa_level_policy {
    fmqa_level level;
    fmqa_dtype kv_dtype;        /* cache element type                          */
    int32_t sink_tokens;        /* first tokens always kept (0 = none)         */
    int32_t window;             /* recent tokens kept, 0 = full context        */
    int32_t spec_tokens;        /* query tokens per verification step (1 = off) */
    int32_t page_size;          /* 0 = contiguous cache                        */
    fmqa_rope rope;             /* RoPE fused into the append                  */
    fmqa_kv_scale_granularity kv_scale_granularity; /* 8-bit caches: scales per
                                   token and head (0), per head or per tensor   */
    /* Heavy hitters (fmqa_compress; not MLA): > 0 makes the cache a compressed
     * one of sink_tokens + window + heavy slots plus compress_every *
     * spec_tokens for the tokens appended between compactions: decode adds
     * scores (FMQA_FLAG_SCORES) on the score_steps steps before each
     * compaction, fmqa_compress keeps the sinks, the last `window` slots and
     * the `heavy` best-scored others (fmqa_level_step says which step does
     * what).  0 = plain sliding window. */
    int32_t heavy;
    fmqa_pooling pooling;       /* of the scores before choosing (SnapKV)      */
    int32_t pool;               /* pooling radius                              */
    /* Appended (issue 15).  With heavy > 0: */
    int32_t compress_every;     /* decode steps between two compactions, >= 1  */
    int32_t score_steps;        /* the last steps before each compaction that
                                   decode with FMQA_FLAG_SCORES,
                                   1..compress_every                           */
} fmqa_level_policy;

/*
 * The presets' decode steps between two compactions where the score cost
 * allows it (policy.compress_every; fmqa_level_policy_preset).  The score
 * option costs, per call, c = (8 M + 8) / (2 d EB [+ 8]) of the bytes decode
 * reads (M = group size x spec_tokens query rows, d head dim, EB cache bytes
 * per element, + 8 for per-token 8-bit scales; docs/kernels.md, "Scores",
 * the figure `fastmqa-bench static --scores` prints).  Scoring only
 * score_steps of every compress_every steps costs c * score_steps /
 * compress_every amortised; the presets keep that <= 3%: compress_every = 16
 * and score_steps = min(16, floor(0.03 * 16 / c)) when that is >= 1, else
 * score_steps = 1 and compress_every = ceil(c / 0.03).  A compressed cache
 * holds compress_every * spec_tokens slots beyond the kept ones (the memory
 * report counts them).  docs/levels.md.
 */
#define FMQA_LEVEL_COMPRESS_EVERY 16
/* The amortised score cost the presets stay within, in percent. */
#define FMQA_LEVEL_SCORE_COST_PCT 3

FMQA_API fmqa_status fmqa_level_policy_preset(fmqa_ctx_t *ctx, fmqa_level level,
                                     const fmqa_model_config *model,
                                     fmqa_level_policy *policy /* OUT */);

/*
 * What decode step `step` of a compressed level cache (policy->heavy > 0) does,
 * so that engines need not re-derive the rule.  Steps count from 0, the first
 * decode after the prompt (which the engine compacts once, from the prompt's
 * own scores, if it exceeds the kept slots); with E = compress_every, S =
 * score_steps and phase = step % E:
 *   zero_scores  phase == E - S: clear the score buffer before this decode, so
 *                that the next compaction chooses from this observation window
 *                alone (SnapKV, Li et al. 2024: the attention of the last few
 *                queries predicts what later queries attend to);
 *   score        phase >= E - S: decode with FMQA_FLAG_SCORES, which adds the
 *                step's attention mass to the buffer (H2O, Zhang et al. 2023:
 *                accumulated attention finds the heavy hitters);
 *   compress     phase == E - 1: after this decode, fmqa_compress with the
 *                policy's sinks, window, heavy and pooling.
 * With heavy == 0 every flag is 0.  Bad input (NULL, step < 0, compress_every <
 * 1 or score_steps outside 1..compress_every with heavy > 0) is
 * FMQA_ERR_INVALID_ARGUMENT.  Needs no GPU; ctx may be NULL.
 */
typedef struct fmqa_level_step_actions {
    int32_t zero_scores;
    int32_t score;
    int32_t compress;
} fmqa_level_step_actions;

FMQA_API fmqa_status fmqa_level_step(fmqa_ctx_t *ctx, const fmqa_level_policy *policy,
                                     int64_t step, fmqa_level_step_actions *actions /* OUT */);

/* The decode problem a policy implies for a model: the policy's cache dtype,
 * window and sinks (a ring cache of sinks + window slots), spec_tokens query
 * tokens with a causal mask, page size; kv_len = max_seq_len, Q and output in
 * the model's dtype.  A compressed policy (heavy > 0): no ring, kv_len = its
 * slots, FMQA_FLAG_SCORES set (clear it on the steps fmqa_level_step does not
 * score).  Needs no GPU. */
FMQA_API fmqa_status fmqa_level_problem(fmqa_ctx_t *ctx, const fmqa_model_config *model,
                               const fmqa_level_policy *policy, int32_t batch,
                               fmqa_problem *problem /* OUT */);

/*
 * Lets the tuner's measurements choose the 8-bit cache format of a policy: when
 * policy->kv_dtype is int8 or fp8_e4m3 and the context's tuning database holds
 * tuned decodes (exact or nearest shape) of fmqa_level_problem(batch) on this
 * device in both formats, sets kv_dtype to the faster one.  Both formats'
 * relative errors stay within the aggressive level's relative budget on the
 * data of docs/levels.md, so speed decides.  Otherwise the policy is left as it is.  *changed (may be
 * NULL) says whether kv_dtype changed.  Needs the device (its identity keys the
 * database).
 */
FMQA_API fmqa_status fmqa_level_policy_tune(fmqa_ctx_t *ctx, const fmqa_model_config *model,
                                   int32_t batch, fmqa_level_policy *policy /* IN/OUT */,
                                   int *changed /* OUT */);

typedef struct fmqa_memory_report {
    int64_t bytes_per_token;           /* per layer, K + V + scales (+ the 4-byte
                                          score per KV head of a compressed cache) */
    int64_t bytes_per_seq;             /* per layer, at max_seq_len, incl. page
                                          table                                  */
    int64_t tokens_kept;               /* cache slots per sequence              */
    int64_t total_bytes;               /* per layer, for n_seqs sequences       */
    int64_t baseline_bytes_per_seq;    /* fp16 MHA cache, same hidden and heads
                                          (MLA: per head K of head_dim +
                                          mla_rope_dim and V of head_dim)       */
    double reduction;                  /* 1 - bytes_per_seq / baseline          */
    double cache_multiplier;           /* baseline / bytes_per_seq              */
    int64_t max_seqs_in_budget;        /* sequences that fit budget_bytes       */
    int64_t fixed_scale_bytes;         /* per layer: per-head or per-tensor 8-bit
                                          scales (K and V), counted once in
                                          total_bytes and budget_bytes          */
} fmqa_memory_report;

/* Memory of one layer's KV cache under a policy.  budget_bytes may be 0 (then
 * max_seqs_in_budget is 0); a budget too small for one sequence is an error. */
FMQA_API fmqa_status fmqa_memory_report_compute(fmqa_ctx_t *ctx, const fmqa_model_config *model,
                                       const fmqa_level_policy *policy, int64_t n_seqs,
                                       int64_t budget_bytes,
                                       fmqa_memory_report *report /* OUT */);

#ifdef __cplusplus
}
#endif
#endif /* FASTMQA_H */
