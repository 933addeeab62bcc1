/*
 * tun.h -- the tuner library (fastmqa_tuner): one harness that builds random
 * decode / append problems on the GPU, runs a kernel variant or the public
 * entry point on them and checks the result against the float64 reference;
 * timing with CUDA events and graphs; the device's measured read bandwidth;
 * sample statistics; search strategies; problem sets.  fastmqa-tune,
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
     * start positions, each in [0, kv_len - q_tokens]).  NULL: the seed draws
     * them, sequence 0 always gets the extreme (kv_len; append: the last
     * start) so the full capacity is exercised.  Copied. */
    const int32_t *lens;
    /* Input copies rotated by run index so that caches do not flatter timing:
     * 0 = enough copies to exceed twice the L2 size (at most 8), else that many
     * (>= 1).  Only copy 0 is verified. */
    int copies;
    float sm_scale;          /* decode: 0 = 1/sqrt(d)                             */
    float rope_theta;        /* append: 0 = 10000                                 */
    int rope_q;              /* append: also RoPE a q tensor in place             */
} tun_case_opts;

#define TUN_CASE_OPTS_INIT {NULL, 1, 0.0f, 0.0f, 0}

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
 * tun_case_destroy() it.  Prefill and MLA problems are FMQA_ERR_UNSUPPORTED.
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
    TUN_HOST_REF_O, TUN_HOST_REF_LSE, TUN_HOST_FULL_O, TUN_HOST_N
} tun_host_image;
/* Image `which` and its size in *bytes; NULL (and 0) when the case has none. */
const void *tun_case_host_image(const tun_case *c, tun_host_image which, size_t *bytes);
/* Decode arguments over the host images (what ref_decode is given). */
void tun_case_host_decode_args(const tun_case *c, fmqa_decode_args *out /* OUT */);

const fmqa_problem *tun_case_problem(const tun_case *c);
int tun_case_copies(const tun_case *c);
/* The per-sequence lengths (decode kv_lens / append start_pos), [batch].  Owned. */
const int32_t *tun_case_lens(const tun_case *c);
/* Device argument structs of input copy i (0 <= i < copies); owned by c.  Decode
 * args hold the workspace given at creation. */
const fmqa_decode_args *tun_case_decode_args(const tun_case *c, int copy);
const fmqa_append_args *tun_case_append_args(const tun_case *c, int copy);
/* Bytes of KV cache (K, V and scales) a decode reads for the case's lengths:
 * the rows of the positions some query token sees (window, sinks, ring, causal
 * and tree rules), the figure of merit of a bandwidth-bound kernel.  0 for an
 * append case. */
double tun_case_kv_bytes(const tun_case *c);

/* Fills the outputs of copy 0 with 0xFF bytes (NaN in f16/bf16/f32): decode o
 * and lse; append the cache rows it will write and their scales.  Queued on
 * stream and synchronized. */
fmqa_status tun_case_poison(tun_case *c, CUstream stream, fmqa_err *err);

/* Launches the plan on copy `copy` (params filled by rt_decode_params /
 * rt_append_params, so argument checks are those of the runtime).  Queued
 * only: errors of the kernel itself show at the next synchronization. */
fmqa_status tun_case_run_plan(tun_case *c, const rt_plan *plan, int copy, CUstream stream,
                              fmqa_err *err);
/* The same through the public entry point fmqa_decode / fmqa_append (the
 * dispatcher picks the variant). */
fmqa_status tun_case_run_api(tun_case *c, int copy, CUstream stream, fmqa_err *err);

typedef struct tun_report {
    /* Decode: o against ref_decode on the exact stored inputs (dequantized
     * for 8-bit caches: the kernel's own error).  Append: every written cache
     * row (dequantized) against ref_append_args. */
    ref_cmp out;
    /* Decode with an 8-bit cache: o against the unquantized inputs (the
     * quantization error); informative, not part of pass.  n = 0 otherwise. */
    ref_cmp full;
    ref_cmp lse;          /* FMQA_FLAG_LSE, else n = 0                          */
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

/* ---------------------------------------------------------------- timing */

typedef struct tun_timer tun_timer;

/* Events, a stream and an L2-flush buffer (twice the device's L2) on ctx's
 * device.  *out (OUT) is the caller's. */
fmqa_status tun_timer_create(fmqa_ctx_t *ctx, tun_timer **out /* OUT */, fmqa_err *err);
void tun_timer_destroy(tun_timer *t);
/* The timer's stream (kernels timed by it must be launched on it). */
CUstream tun_timer_stream(const tun_timer *t);

/* One launch of the thing being timed, run index i (rotate inputs by it). */
typedef fmqa_status (*tun_launch_fn)(void *user, int i, CUstream stream, fmqa_err *err);

typedef struct tun_time_opts {
    int warmup;           /* untimed launches first                              */
    int runs;             /* timed samples                                       */
    double max_ms;        /* stop sampling after this much measured time (>= 3
                             samples kept); 0 = no limit                         */
    int flush_l2;         /* write the flush buffer before each sample            */
    double graph_below_us;/* a launch shorter than this is timed as a graph of
                             graph_launches launches (per-launch time reported);
                             0 = never                                            */
    int graph_launches;
    double prune_us;      /* > 0: after prune_runs samples, stop if the median
                             exceeds this (tun_timing.pruned = 1)                */
    int prune_runs;
} tun_time_opts;

#define TUN_TIME_OPTS_INIT {5, 50, 2000.0, 1, 20.0, 20, 0.0, 5}

typedef struct tun_timing {
    tun_stats stats;      /* per launch, microseconds                            */
    int graph;            /* 1 if timed through a CUDA graph                     */
    int pruned;
    int32_t sm_clock_mhz; /* the device's rated clocks: the driver API cannot
                             read the current clock                              */
    int32_t mem_clock_mhz;
} tun_timing;

/* Times fn: warm-up, then samples between two events each (L2 flushed between
 * samples when asked), or a captured graph when one launch is short. */
fmqa_status tun_time(tun_timer *t, tun_launch_fn fn, void *user, const tun_time_opts *o,
                     tun_timing *out /* OUT */, fmqa_err *err);

/* Device read bandwidth in GB/s (1e9 bytes/s): the median of timed passes of a
 * 16-byte-vector read kernel (compiled once with NVRTC) over a buffer of 8
 * times the L2 size (at least 256 MiB). */
fmqa_status tun_read_bandwidth(tun_timer *t, double *gbps /* OUT */, fmqa_err *err);

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
