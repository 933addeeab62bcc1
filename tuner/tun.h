/*
 * tun.h -- the tuner library (fastmqa_tuner): one harness that builds random
 * decode / append / prefill problems on the GPU, runs a kernel variant or the public
 * entry point on them and checks the result against the float64 reference;
 * the one timing method (CUDA graphs over rotated inputs, or a read flush)
 * and the device's read bandwidth measured by it; sample statistics; static
 * figures from a cubin's SASS; search strategies; problem sets.  fastmqa-tune,
 * fastmqa-bench and the gpu tests all link it, so that there is exactly one
 * definition of "this variant is right and takes this long".
 *
 * Conventions: functions return fmqa_status and fill err (may be NULL) with a
 * message naming the field or driver call.  OUT parameters are written only on
 * success.  Functions that touch the GPU enter the context themselves
 * (rt_enter / rt_leave nest), so callers need not; they need a device and
 * return FMQA_ERR_NO_DRIVER / NO_DEVICE otherwise.  Nothing here exits.
 * Objects (tun_case, tun_timer, tun_search) belong to their creator and are
 * freed by their *_destroy, which accepts NULL.  None is thread-safe: use one
 * object from one thread at a time.
 */
#ifndef FMQA_TUN_H
#define FMQA_TUN_H

#include <stddef.h>
#include <stdio.h>
#include <stdint.h>

#include "fastmqa.h"
#include "fmqa_common.h"
#include "db.h"
#include "gen.h"
#include "ref.h"
#include "rt.h"

#define TUN_VERSION "fastmqa-tune " FMQA_VERSION_STRING

/* Prints the device report (identity, limits, clocks, driver and NVRTC). */
void tun_device_report(FILE *out, const fmqa_device_info *d);

/* ---------------------------------------------------------------- statistics */

/* Summary of timing samples (microseconds).  Percentiles interpolate linearly
 * between order statistics at rank q * (n - 1): median of {1,2,3,4} is 2.5,
 * p20 of {1,2,3,4,5} is 1.8.  spread = (p80 - p20) / median (0 if median 0). */
typedef struct tun_stats {
    int n;
    double median, p20, p80, min, max, mean, spread;
} tun_stats;

/* n >= 1 finite samples (not modified); FMQA_ERR_INVALID_ARGUMENT otherwise. */
fmqa_status tun_stats_compute(const double *samples, int n, tun_stats *out /* OUT */,
                              fmqa_err *err);

/* ---------------------------------------------------------------- test cases */

/* Tolerances of DESIGN.md section 5 for an output dtype: relative L2 error
 * 1e-3 for f16 (and f32), 1e-2 for bf16.  8-bit caches are compared on the
 * dequantized values, so the same tolerance applies to the kernel's own error. */
double tun_rel_tol(fmqa_dtype out_dtype);

typedef struct tun_case_opts {
    /* Per-sequence KV lengths ([batch], each in [q_tokens, kv_len]; append:
     * start positions, each in [0, kv_len - q_tokens]; prefill: the positions
     * a sequence holds, each in [1, kv_len], which without
     * FMQA_FLAG_KV_CACHE are its new tokens).  NULL: the seed draws them,
     * sequence 0 always gets the extreme (kv_len; append: the last start) so
     * the full capacity is exercised.  Copied. */
    const int32_t *lens;
    /* Input copies rotated by run index so that caches do not flatter timing:
     * 0 = tun_rotation_copies(tun_case_copy_bytes, L2), else that many
     * (>= 1).  Only copy 0 is verified. */
    int copies;
    float sm_scale;          /* decode: 0 = 1/sqrt(d)                             */
    float rope_theta;        /* append: 0 = 10000                                 */
    int rope_q;              /* append: also RoPE a q tensor in place             */
    /* Decode: learned sink logits [num_q_heads] (host values, copied; the
     * device args and the reference get them), NULL = none. */
    const float *sinks;
    /* Prefill with FMQA_FLAG_KV_CACHE: new tokens per sequence ([batch], each
     * in [1, min(q_tokens, lens[b])]: the last of the positions it holds).
     * NULL: drawn, sequence 0 gets q_tokens.  Copied.  Ignored otherwise. */
    const int32_t *q_lens;
    /* Prefill: the float64 reference's budget in multiply-adds (0 =
     * TUN_PREFILL_REF_MACS); see tun_case_create. */
    double ref_macs;
} tun_case_opts;

#define TUN_CASE_OPTS_INIT {NULL, 1, 0.0f, 0.0f, 0, NULL, NULL, 0.0}

/* Prefill verification: query rows are checked against ref_prefill in blocks
 * of TUN_PREFILL_CHECK_ROWS rows aligned to the sequence's start (whole row
 * tiles of the kernels), chosen until the reference would take more than the
 * budget: every block when the whole batch fits (small problems), else
 * sequence 0's last block (it sees the most keys), then each sequence's last
 * and first blocks, then the others in a seeded random order, each taken if
 * it still fits.  2^32 multiply-adds: twice what the decode reference costs at
 * its largest bench shapes (batch 64 x 4096 keys x 32 heads x (128 + 128)),
 * seconds on the host's cores; the whole of a causal B = 4, T = 4096, H = 32,
 * d = 128 prefill would take 2^38.  Every row, checked or not, must be written and
 * finite. */
#define TUN_PREFILL_REF_MACS 4294967296.0
#define TUN_PREFILL_CHECK_ROWS 128
/* Prefill with FMQA_FLAG_SCORES: the observation window the case's arguments
 * carry (SnapKV's default).  The scores [B, Hkv, kv_len] start at zero for
 * the verified call (tun_case_poison) and are compared with
 * ref_prefill_scores for the leading sequences whose reference (window x H
 * x positions x d multiply-adds each) fits TUN_PREFILL_REF_MACS (sequence 0
 * always); the others must be finite. */
#define TUN_SCORES_WINDOW 32

typedef struct tun_case tun_case;

/* Host threads that build a case (drawing inputs, the reference): the online
 * CPUs, at most TUN_HOST_THREADS_CAP, or FASTMQA_HOST_THREADS when it is set to
 * a number in 1 .. TUN_HOST_THREADS_MAX.  The inputs and the reference do not
 * depend on it. */
#define TUN_HOST_THREADS_CAP 32
#define TUN_HOST_THREADS_MAX 256
int tun_host_threads(void);

/* Runs fn(user, job, err) for every job in [0, n_jobs) on up to `threads`
 * threads, the caller's included, handing jobs out in index order.  After a
 * failure no new job starts; the status and message returned are those of the
 * lowest failing job, whatever the thread count.  fn must be safe to run
 * concurrently for different jobs. */
typedef fmqa_status (*tun_job_fn)(void *user, int64_t job, fmqa_err *err);
fmqa_status tun_parallel(int threads, int64_t n_jobs, tun_job_fn fn, void *user,
                         fmqa_err *err);

/*
 * Builds fresh random inputs for a decode or append problem from seed, in the
 * physical layouts of fmqa_decode_args / fmqa_append_args (dense strides;
 * paged caches with a shuffled page table; ring caches; 8-bit caches quantized
 * per token and head with ref_quantize_row; a random tree mask with the
 * diagonal set), keeps host copies, uploads them and the workspace the problem
 * may need (sized for the largest plan: `workspace` bytes, 0 = none).  Inputs
 * are Gaussian (stddev 1) rounded to their dtype.  *out (OUT) is the caller's:
 * tun_case_destroy() it.
 * Prefill (fmqa_prefill_args): cu_seqlens_q from the per-sequence new tokens,
 * q packed [total_q, H, d]; K and V packed like q, or with FMQA_FLAG_KV_CACHE
 * a cache laid out as decode's (kv_lens; contiguous or paged, 16- or 8-bit)
 * that holds each sequence's prefix and its new tokens; o [total_q, H, dv] and
 * lse [total_q, H]; the reference covers the rows TUN_PREFILL_REF_MACS
 * affords (above).
 */
fmqa_status tun_case_create(fmqa_ctx_t *ctx, const fmqa_problem *p, uint64_t seed,
                            const tun_case_opts *opts, size_t workspace,
                            tun_case **out /* OUT */, fmqa_err *err);
void tun_case_destroy(tun_case *c);

/*
 * The host half of tun_case_create, without a device (no context, no copies):
 * the same inputs from the same seed and, for decode, the same reference, built
 * on `threads` host threads (0 = tun_host_threads()).  An append case stops
 * before its reference (the host caches hold the inputs).  Only the accessors
 * below that do not mention a device apply to such a case, and
 * tun_case_destroy().  For tests and host-side measurements.
 */
fmqa_status tun_case_create_host(const fmqa_problem *p, uint64_t seed,
                                 const tun_case_opts *opts, int threads,
                                 tun_case **out /* OUT */, fmqa_err *err);

/* The host images of a case: the inputs exactly as uploaded to copy 0 (before
 * an append's reference runs) and the decode references as dense doubles. */
typedef enum tun_host_image {
    TUN_HOST_Q, TUN_HOST_K, TUN_HOST_V, TUN_HOST_K_SCALE, TUN_HOST_V_SCALE,
    TUN_HOST_K_NEW, TUN_HOST_V_NEW, TUN_HOST_LENS, TUN_HOST_PAGE_TABLE, TUN_HOST_TREE_MASK,
    TUN_HOST_REF_O, TUN_HOST_REF_LSE, TUN_HOST_FULL_O, TUN_HOST_CU_SEQLENS,
    TUN_HOST_REF_SCORES, /* prefill scores [sequences covered, Hkv, kv_len] doubles */
    TUN_HOST_N
} tun_host_image;
/* Image `which` and its size in *bytes; NULL (and 0) when the case has none. */
const void *tun_case_host_image(const tun_case *c, tun_host_image which, size_t *bytes);
/* Decode arguments over the host images (what ref_decode is given). */
void tun_case_host_decode_args(const tun_case *c, fmqa_decode_args *out /* OUT */);
/* Append arguments over the host images (what ref_append_args is given). */
void tun_case_host_append_args(const tun_case *c, fmqa_append_args *out /* OUT */);
/* Prefill arguments over the host images (what ref_prefill is given). */
void tun_case_host_prefill_args(const tun_case *c, fmqa_prefill_args *out /* OUT */);
/* Prefill: the query rows the reference covers, ascending ([*n], owned by c;
 * TUN_HOST_REF_O / REF_LSE hold their rows in this order). */
const int64_t *tun_case_checked_rows(const tun_case *c, int64_t *n /* OUT */);

const fmqa_problem *tun_case_problem(const tun_case *c);
int tun_case_copies(const tun_case *c);
/* Bytes of one input copy (q, the caches and their scales, k_new, v_new; the
 * small shared inputs left out): what tun_time_opts.bytes wants for this case. */
double tun_case_copy_bytes(const tun_case *c);
/* The per-sequence lengths (decode kv_lens / append start_pos), [batch].  Owned. */
const int32_t *tun_case_lens(const tun_case *c);
/* Device argument structs of input copy i (0 <= i < copies); owned by c.  Decode
 * args hold the workspace given at creation. */
const fmqa_decode_args *tun_case_decode_args(const tun_case *c, int copy);
const fmqa_append_args *tun_case_append_args(const tun_case *c, int copy);
const fmqa_prefill_args *tun_case_prefill_args(const tun_case *c, int copy);
/* Bytes of KV cache (K, V and scales) a decode reads for the case's lengths:
 * the rows of the positions some query token sees (window, sinks, ring, causal
 * and tree rules), the figure of merit of a bandwidth-bound kernel.  0 for an
 * append case. */
double tun_case_kv_bytes(const tun_case *c);

/* Fills the outputs of copy 0 with 0xFF bytes (NaN in f16/bf16/f32): decode and
 * prefill o and lse; append the cache rows it will write and their scales.  Queued on
 * stream and synchronized. */
fmqa_status tun_case_poison(tun_case *c, CUstream stream, fmqa_err *err);

/* Launches the plan on copy `copy` (params filled by rt_decode_params /
 * rt_append_params / rt_prefill_kernel_params_fill, so argument checks and
 * tensor maps are those of the runtime).  Queued
 * only: errors of the kernel itself show at the next synchronization. */
fmqa_status tun_case_run_plan(tun_case *c, const rt_plan *plan, int copy, CUstream stream,
                              fmqa_err *err);
/* The same through the public entry point fmqa_decode / fmqa_append /
 * fmqa_prefill (the dispatcher picks the variant). */
fmqa_status tun_case_run_api(tun_case *c, int copy, CUstream stream, fmqa_err *err);

typedef struct tun_report {
    /* Decode: o against ref_decode on the exact stored inputs (dequantized
     * for 8-bit caches: the kernel's own error).  Append: every written cache
     * row (dequantized) against ref_append_args.  Prefill: the checked rows
     * against ref_prefill; bad also counts NaN / inf in the other rows. */
    ref_cmp out;
    /* Decode with an 8-bit cache: o against the unquantized inputs (the
     * quantization error); informative, not part of pass.  n = 0 otherwise. */
    ref_cmp full;
    ref_cmp lse;          /* FMQA_FLAG_LSE, else n = 0                          */
    ref_cmp scores;       /* prefill with FMQA_FLAG_SCORES (TUN_SCORES_WINDOW),
                             else n = 0; bad also counts NaN / inf outside the
                             covered sequences                                   */
    int64_t poisoned;     /* output elements never written                      */
    int64_t stray;        /* append: elements (scales: bytes) changed outside the
                             written rows                                        */
    double rel_tol;       /* tun_rel_tol(out dtype)                             */
    int pass;             /* no NaN, nothing poisoned or stray, rel_l2 <= tol   */
    char summary[256];    /* one line: "rel_l2 3.1e-04 max_abs 2.0e-03 ..."     */
} tun_report;

/* Synchronizes stream, downloads copy 0's outputs and compares them with the
 * reference (computed once per case and kept).  A kernel fault is returned as
 * FMQA_ERR_CUDA; a wrong result is FMQA_OK with report->pass = 0. */
fmqa_status tun_case_verify(tun_case *c, CUstream stream, tun_report *report /* OUT */,
                            fmqa_err *err);
/* The comparison of tun_case_verify for a prefill case on host outputs: o
 * (out_dtype, [total_q, H, dv] dense), lse ([total_q, H] floats; NULL
 * without FMQA_FLAG_LSE) and scores ([B, Hkv, kv_len] floats from zero; NULL
 * without FMQA_FLAG_SCORES), as downloaded.  Needs no device. */
fmqa_status tun_case_check_prefill(const tun_case *c, const void *o, const float *lse,
                                   const float *scores, tun_report *report /* OUT */,
                                   fmqa_err *err);

/* ---------------------------------------------------------------- timing */

/*
 * The timing method, one for the tuner, fastmqa-bench and bench/peers/peers.py
 * (docs/PERFORMANCE.md, "How we time"):
 *  1. warm-up launches, untimed;
 *  2. the inputs exist in `copies` copies and launch i reads copy i % copies;
 *     when copies x bytes exceeds twice the L2 (the rotation "covers" the L2), a
 *     sample is one replay of a CUDA graph of N launches, N a multiple of
 *     copies, about TUN_GRAPH_TARGET_US of work (TUN_GRAPH_MIN_LAUNCHES ..
 *     TUN_GRAPH_MAX_LAUNCHES); nothing is flushed: each launch finds the L2
 *     holding other copies' lines, as a decode step finds it after the other
 *     layers;
 *  3. when it does not cover (a small problem), a sample is one launch after a
 *     read of a 2 x L2 buffer queued before the start event: the L2 is cold and
 *     holds no dirty lines, so the timed kernel writes nothing back for others;
 *  4. the per-launch time of each sample; the median and the spread
 *     (p80 - p20) / median over the samples;
 *  5. the device's read bandwidth by the same method in the same run
 *     (tun_read_bandwidth).
 * A memset flush (TUN_FLUSH_MEMSET) is kept only to show its artifact: it
 * leaves up to an L2 of dirty lines that the timed kernel writes back.
 * TUN_TIMING_METHOD names this method; timings stored by another method are
 * not comparable (1 = a 2 x L2 memset before every single launch, graphs only
 * below 20 us).  Bump it whenever a rule above changes: every best entry
 * timed by another method is then stale, and the first fresh measurement
 * replaces it (docs/database.md, "Best entries").  Trials and best entries
 * record it.
 */
#define TUN_TIMING_METHOD 2
#define TUN_GRAPH_TARGET_US 2000.0
#define TUN_GRAPH_MIN_LAUNCHES 4
#define TUN_GRAPH_MAX_LAUNCHES 200
#define TUN_MAX_COPIES 8

typedef enum tun_flush {
    TUN_FLUSH_AUTO = 0,   /* none when the rotation covers the L2, else read      */
    TUN_FLUSH_NONE = 1,
    TUN_FLUSH_READ = 2,   /* the read kernel over 2 x L2, before the start event   */
    TUN_FLUSH_MEMSET = 3  /* a memset of 2 x L2 (leaves dirty lines: for study)    */
} tun_flush;

const char *tun_flush_name(tun_flush f);
fmqa_status tun_flush_parse(const char *name, tun_flush *out /* OUT */, fmqa_err *err);

/* Copies whose total exceeds twice the L2: the smallest C with C * bytes >
 * 2 * l2_bytes, at most TUN_MAX_COPIES; 1 when either size is unknown (<= 0). */
int tun_rotation_copies(double bytes_per_copy, int64_t l2_bytes);
/* 1 when copies * bytes_per_copy > 2 * l2_bytes (and both are known). */
int tun_rotation_covers(double bytes_per_copy, int copies, int64_t l2_bytes);

typedef struct tun_time_opts {
    int warmup;           /* untimed launches first                              */
    int runs;             /* timed samples (graph replays or single launches)    */
    double max_ms;        /* stop sampling after this much measured time (>= 3
                             samples kept); 0 = no limit                         */
    tun_flush flush;      /* before each sample, outside the timed events        */
    int graph_launches;   /* launches per sample: 0 = the method's choice, 1 =
                             single launches, N > 1 = a graph of N launches       */
    double bytes;         /* bytes one launch reads from its copy (0 = unknown:
                             the rotation does not cover)                        */
    int copies;           /* copies fn rotates over: launch i reads i % copies   */
    double prune_us;      /* > 0: after prune_runs samples, stop if the median
                             exceeds this (tun_timing.pruned = 1)                */
    int prune_runs;
} tun_time_opts;

#define TUN_TIME_OPTS_INIT {5, 50, 2000.0, TUN_FLUSH_AUTO, 0, 0.0, 1, 0.0, 5}

/* What a sample is: the flush before it and the launches inside it. */
typedef struct tun_time_plan {
    tun_flush flush;      /* never AUTO                                           */
    int launches;         /* per sample; > 1 means one graph replay               */
    int covers;           /* the rotation covers the L2                           */
} tun_time_plan;

/* The method's rules above, without a device: the plan for options o on a
 * device with l2_bytes of L2, given probe_us, one launch's time.  Explicit
 * choices in o (flush, graph_launches) win over the rules.
 * FMQA_ERR_INVALID_ARGUMENT for copies outside 1..TUN_MAX_COPIES, negative
 * graph_launches or a flush out of range. */
fmqa_status tun_time_plan_make(const tun_time_opts *o, int64_t l2_bytes, double probe_us,
                               tun_time_plan *out /* OUT */, fmqa_err *err);

typedef struct tun_timer tun_timer;

/* Events, a stream, an L2-flush buffer (twice the device's L2) and the read
 * kernel on ctx's device.  *out (OUT) is the caller's. */
fmqa_status tun_timer_create(fmqa_ctx_t *ctx, tun_timer **out /* OUT */, fmqa_err *err);
void tun_timer_destroy(tun_timer *t);
/* The timer's stream (kernels timed by it must be launched on it). */
CUstream tun_timer_stream(const tun_timer *t);
/* The context the timer was created on (borrowed). */
fmqa_ctx_t *tun_timer_ctx(const tun_timer *t);

/* One launch of the thing being timed, run index i (rotate inputs by it). */
typedef fmqa_status (*tun_launch_fn)(void *user, int i, CUstream stream, fmqa_err *err);

typedef struct tun_timing {
    tun_stats stats;      /* per launch, microseconds                            */
    tun_time_plan plan;   /* how the samples were taken                          */
    int method;           /* TUN_TIMING_METHOD                                   */
    int pruned;
    int32_t sm_clock_mhz; /* the device's rated clocks: the driver API cannot
                             read the current clock                              */
    int32_t mem_clock_mhz;
} tun_timing;

/* Times fn by the method above: warm-up, one probe sample (for the graph
 * size), then the samples. */
fmqa_status tun_time(tun_timer *t, tun_launch_fn fn, void *user, const tun_time_opts *o,
                     tun_timing *out /* OUT */, fmqa_err *err);

/* The read kernel (16-byte vector loads, compiled once with NVRTC) over
 * `bytes` per launch, rotating over o->copies copies (0 = tun_rotation_copies),
 * timed by tun_time with o's other fields (o->bytes and o->copies are set
 * here); *gbps (OUT) = bytes / median.  The buffers live for the call. */
fmqa_status tun_read_time(tun_timer *t, size_t bytes, const tun_time_opts *o,
                          tun_timing *out /* OUT */, double *gbps /* OUT */, fmqa_err *err);

/* Device read bandwidth in GB/s (1e9 bytes/s): tun_read_time over 8 times the
 * L2 (at least 256 MiB) with the method's defaults. */
fmqa_status tun_read_bandwidth(tun_timer *t, double *gbps /* OUT */, fmqa_err *err);

/* The device's bf16 tensor-core rate in TFLOP/s (1e12 flop/s): a cuBLAS GEMM
 * of 8192^3 (bf16 operands, fp32 accumulation) timed by tun_time with single
 * launches and no flush (tun_gemm.c).  cuBLAS is dlopen'ed: without it
 * FMQA_ERR_NOT_FOUND. */
fmqa_status tun_gemm_rate(tun_timer *t, double *tflops /* OUT */, fmqa_err *err);

/* ---------------------------------------------------------------- SASS */

/*
 * Static figures from the SASS of a cubin (tun_sass.c): the steady-state path
 * of a kernel's main loop and dependent global round trips, counted without a
 * GPU for `fastmqa-bench static`.  Approximations are listed in tun_sass.c.
 */
typedef struct tun_sass tun_sass;

/* Parses `cuobjdump -sass` text (every "Function : NAME" in it).  *out (OUT)
 * is the caller's: tun_sass_free() it.  FMQA_ERR_INVALID_ARGUMENT when the
 * text holds no function or a branch without a target. */
fmqa_status tun_sass_parse(const char *text, tun_sass **out /* OUT */, fmqa_err *err);
void tun_sass_free(tun_sass *s);
int tun_sass_has_function(const tun_sass *s, const char *name);

/* Runs cuobjdump -sass on a cubin: $CUOBJDUMP, else cuobjdump on PATH, else
 * the one pip's nvidia-cuda-cuobjdump installs for python3.  *text (OUT) is
 * malloc'ed.  FMQA_ERR_NOT_FOUND when no cuobjdump runs. */
fmqa_status tun_sass_disassemble(const void *cubin, size_t size, char **text /* OUT */,
                                 fmqa_err *err);

/* Dynamic warp-instructions of one steady-state iteration of the main loop
 * (the backward branch whose range holds the most MMAs; the return jump of an
 * out-of-line mbarrier retry loop is no loop), by class. */
typedef struct tun_sass_loop {
    int found;
    int exact;            /* the path issues exactly the budgeted copies         */
    uint32_t head, tail;  /* addresses of the loop's first instruction and back edge */
    double insts;         /* every instruction but NOP                           */
    double mma, ldsm, copies, copy_bytes, ldg, integer, fp, conv, mufu, shfl, sync, branch,
        shared, other;
    double addr_per_copy; /* integer instructions in the basic blocks that issue
                             16-byte copies, per 16-byte copy                     */
} tun_sass_loop;

/* The main loop of function fn, walked with copies_per_iter 16-byte copies
 * (cp.async) per thread per iteration: inner loops are taken as often as that
 * budget asks. */
fmqa_status tun_sass_main_loop(const tun_sass *s, const char *fn, int copies_per_iter,
                               tun_sass_loop *out /* OUT */, fmqa_err *err);
/* The same walk budgeted in 4-byte words of cp.async copies (of any size) per
 * thread per iteration, for a tile that also holds copies smaller than 16
 * bytes (decode's 8-bit scales): the path that issues a thread's share of all
 * of the tile's bytes, not one that skips the small copies. */
fmqa_status tun_sass_main_loop_words(const tun_sass *s, const char *fn, int words_per_iter,
                                     tun_sass_loop *out /* OUT */, fmqa_err *err);
/* The same walk budgeted in MMA instructions per warp per iteration, for a
 * kernel whose copies are TMA's (one thread issues them, so a thread's copies
 * say nothing): the steady path is the one that issues the tile's MMAs
 * (prefill_sm90: HEAD_DIM / 16 wgmma for S = Q K^T, BLOCK_N / 16 for P V).
 * exact = the path issues exactly that many. */
fmqa_status tun_sass_main_loop_mma(const tun_sass *s, const char *fn, int mma_per_iter,
                                   tun_sass_loop *out /* OUT */, fmqa_err *err);

/* The producer loop of a warp-specialized kernel in function fn: the back
 * edge around the most bulk copies (UBLKCP), walked with copies_per_iter of
 * them per iteration -- the loop ptxas wraps around a copy whose operands
 * differ between lanes (one lane's copy a trip) is taken as often as that asks.
 * copy_bytes is set to bytes_per_iter (what the copies move per iteration),
 * addr_per_copy to the path's integer instructions per 16 of those bytes. */
fmqa_status tun_sass_bulk_loop(const tun_sass *s, const char *fn, int copies_per_iter, double bytes_per_iter,
                               tun_sass_loop *out /* OUT */, fmqa_err *err);

typedef enum tun_sass_walk {
    TUN_SASS_TO_FIRST_COPY, /* entry to the first cp.async / TMA copy; budget =
                               global load bytes per thread on the way          */
    TUN_SASS_TO_EXIT        /* entry to EXIT; budget = 16-byte global loads per
                               thread                                           */
} tun_sass_walk;

/* Dependent global round trips per thread along the steady path: how many
 * times an instruction waits for a global load's result. */
fmqa_status tun_sass_round_trips(const tun_sass *s, const char *fn, tun_sass_walk how,
                                 int budget, int *trips /* OUT */, fmqa_err *err);

/* ---------------------------------------------------------------- search */

typedef enum tun_strategy {
    TUN_EXHAUSTIVE = 0, /* every legal config, in space order                   */
    TUN_RANDOM = 1,     /* a seeded random sample without repetition            */
    TUN_LOCAL = 2       /* hill climbing over neighbours, from a start config   */
} tun_strategy;

const char *tun_strategy_name(tun_strategy s);
fmqa_status tun_strategy_parse(const char *name, tun_strategy *out /* OUT */, fmqa_err *err);

typedef struct tun_search tun_search;

/*
 * A search over space[0..n-1] (borrowed: keep it alive).  budget > 0 caps the
 * configs handed out (0 = no cap).  Configs whose hash is in done (may be
 * NULL) are never handed out and do not count against the budget: that is how
 * --resume skips what a previous process tried.  start (TUN_LOCAL, may be NULL:
 * then space[0]) is the warm start; if it is not in the space the nearest
 * config (fewest differing parameters, then smallest value distance) is used.
 * Neighbours of a config differ in one parameter by one step in its sorted
 * candidate list.  Local search starts at start, then repeatedly tries the
 * untried neighbours of the best config so far, and stops when the best has
 * none left.
 */
fmqa_status tun_search_create(tun_strategy strategy, const gen_config *space, size_t n,
                              uint64_t seed, int64_t budget, const gen_config *start,
                              const db_hash_set *done, tun_search **out /* OUT */,
                              fmqa_err *err);
void tun_search_destroy(tun_search *s);

/* 1 and *index (OUT) of the next config to try; 0 when none is available now:
 * tun_search_finished() tells whether more may come once results are reported
 * (local search waits for results to pick its next neighbours). */
int tun_search_next(tun_search *s, size_t *index /* OUT */);
/* Reports the median of a config handed out; median_us <= 0 means it failed. */
void tun_search_report(tun_search *s, size_t index, double median_us);
int tun_search_finished(const tun_search *s);
/* The index of the warm start actually used (local), or -1. */
int64_t tun_search_start(const tun_search *s);

/* The warm start of local search: the config of the nearest tuned problem of
 * p's class for this device and template version (db_best_candidates: exact
 * bucket first, then by bucket distance).  Returns 1 and *out (OUT) when one
 * parses; else 0 and *out = *fallback (the template default).  db may be NULL. */
int tun_warm_start(db_t *db, const char *device_key, const char *template_name,
                   const char *template_hash, const fmqa_problem *p,
                   const gen_config *fallback, gen_config *out /* OUT */);

/* ---------------------------------------------------------------- recording */

/*
 * The tuner's writer of results, so that no measurement is lost to a busy
 * database: trials (and the best-entry offers of ok ones) are written in
 * order; one the database cannot take now (locked past its busy timeout, or
 * any other failure but a refusal of the trial itself) is kept in memory with
 * everything after it and written first at the next call.  Ending the session
 * waits for them, bounded; if some remain, the session is left running, so
 * --resume redoes exactly what was not stored.  Thread-safe (the watchdog
 * records its timeout from another thread).  Also keeps the session's
 * heartbeat.  Owned by its creator; the db and session must outlive it.
 */
typedef struct tun_recorder tun_recorder;

/* How long ending a session waits for a busy database, in all. */
#define TUN_RECORD_WAIT_S 60.0
/* Seconds between heartbeats of a running session (DB_SESSION_STALE_S must be
 * several times this). */
#define TUN_HEARTBEAT_S 30

fmqa_status tun_recorder_create(db_t *db, int64_t session_id, tun_recorder **out /* OUT */,
                                fmqa_err *err);
void tun_recorder_destroy(tun_recorder *r);

/* Records trial t (copied), after anything pending, and when it is ok offers
 * it as the best entry with default_us (db_best_update).  FMQA_OK when it was
 * stored or is kept pending (*stored, may be NULL, says which); an error only
 * when the database refuses the trial itself (FMQA_ERR_INVALID_ARGUMENT) or
 * memory runs out, and then the trial is not kept. */
fmqa_status tun_record(tun_recorder *r, const db_trial *t, double default_us,
                       int *stored /* OUT */, fmqa_err *err);
/* Results not yet stored. */
size_t tun_recorder_pending(tun_recorder *r);
/* Writes what is pending, retrying a busy database until wait_s seconds have
 * passed.  FMQA_OK when nothing is left, else why the last write failed. */
fmqa_status tun_recorder_drain(tun_recorder *r, double wait_s, fmqa_err *err);
/* Ends the session: drains (up to wait_s), then marks the session done, or
 * interrupted when `interrupted`.  When results remain unstored the session
 * stays running (resumable) and FMQA_ERR_DATABASE says how many were lost. */
fmqa_status tun_recorder_finish(tun_recorder *r, int interrupted, double wait_s,
                                fmqa_err *err);
/* Refreshes the session's heartbeat when TUN_HEARTBEAT_S have passed since
 * the last one (best effort). */
void tun_recorder_heartbeat(tun_recorder *r);

/* ---------------------------------------------------------------- problems */

/* Parses a problem set: one gen_problem_parse spec per line, blank lines and
 * '#' comments ignored.  Errors name the line: "problems.txt:3: ...".
 * *out is malloc'ed (free() it), at least one problem. */
fmqa_status tun_problems_parse(const char *text, const char *name_for_errors,
                               fmqa_problem **out /* OUT */, size_t *count /* OUT */,
                               fmqa_err *err);
/* Formats a problem set in the syntax above (one spec per line); malloc'ed. */
fmqa_status tun_problems_format(const fmqa_problem *p, size_t n, char **text /* OUT */,
                                fmqa_err *err);

/* The default model shape: 4096 hidden, 32 query heads, MQA (1 KV head),
 * d = 128, 4096 tokens, f16; and batch TUN_DEFAULT_BATCH. */
#define TUN_DEFAULT_BATCH 8
void tun_default_model(fmqa_model_config *m /* OUT */);


/* ---------------------------------------------------------------- progress */

/*
 * Progress of `total` items (tun_progress.c): on a terminal (tty) a bar
 * redrawn in place at most every 100 ms ("LABEL [###...] DONE/TOTAL RATE/s
 * LEFT left  LINE", LINE cut to 60 characters), else one flushed line per
 * update, "LABEL DONE/TOTAL, RATE/s, LEFT left: LINE"; the rate is since the
 * start, the time left assumes it holds.  tun_progress_clear erases the bar
 * before other output on the same terminal (the next update redraws it).
 */
typedef struct tun_progress {
    FILE *f;
    int tty, drawn;
    char label[96];
    size_t total;
    double t0_ms, drawn_ms;
} tun_progress;

void tun_progress_start(tun_progress *p, FILE *f, int tty, const char *label, size_t total);
void tun_progress_update(tun_progress *p, size_t done, const char *line);
void tun_progress_clear(tun_progress *p);

#endif /* FMQA_TUN_H */
