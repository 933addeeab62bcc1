/*
 * rt.h -- internals of libfastmqa's public layer: the context, its per-thread
 * last error, logging, and lazy device opening.
 *
 * Invariants: every public function that takes a context either succeeds and
 * clears the calling thread's message (rt_clear) or fails through rt_error /
 * rt_fail, which record the message and return the status.  A NULL context is
 * accepted by the functions that need no GPU (levels, memory report): then the
 * message is dropped.  The device is opened at most once per context, under
 * ctx->lock; its outcome (success or the error) is remembered.
 */
#ifndef FMQA_RT_H
#define FMQA_RT_H

#include <pthread.h>
#include <stdio.h>

#include "fastmqa.h"
#include "fmqa_common.h"
#include "rt_cuda.h"

#include "gen.h"

struct rt_dispatch; /* plan cache, templates, database: rt_dispatch.c */
struct db;          /* db.h */

struct fmqa_ctx {
    fmqa_options opts;          /* copy; the strings below own their text     */
    char *db_path;              /* NULL = no database                         */
    char *template_dir;         /* NULL = embedded templates                  */
    fmqa_log_level log_level;
    struct rt_err_rec *errs;    /* per-thread last errors (rt_ctx.c), freed
                                   with the context                           */
    pthread_mutex_t err_lock;   /* guards the list errs                       */
    uint64_t serial;            /* unique per context ever created            */
    fmqa_err create_err;        /* message of a failed fmqa_ctx_create        */
    pthread_mutex_t lock;       /* guards the lazy state below                */
    int device_state;           /* 0 not tried, 1 open, -1 failed             */
    fmqa_err device_err;        /* why opening failed                         */
    const rt_cuda *cu;
    CUdevice dev;
    CUcontext cuctx;            /* retained primary context                   */
    fmqa_device_info info;
    struct rt_dispatch *dispatch;
};

/* Records status and message for the calling thread; returns status.  ctx may
 * be NULL (the message is dropped). */
fmqa_status rt_error(fmqa_ctx_t *ctx, fmqa_status status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Records an internal error record as the thread's last error. */
fmqa_status rt_fail(fmqa_ctx_t *ctx, const fmqa_err *err);
/* Clears the thread's message after a successful call; returns FMQA_OK. */
fmqa_status rt_clear(fmqa_ctx_t *ctx);

void rt_log(const fmqa_ctx_t *ctx, fmqa_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Opens the context's device on first use (driver, ordinal, primary context,
 * description).  FMQA_ERR_NO_DRIVER / NO_DEVICE / CUDA with the reason in err. */
fmqa_status rt_device(fmqa_ctx_t *ctx, fmqa_err *err);

/* Makes the context's primary CUDA context current for a call; rt_leave
 * restores the caller's.  rt_enter opens the device if needed. */
fmqa_status rt_enter(fmqa_ctx_t *ctx, fmqa_err *err);
void rt_leave(fmqa_ctx_t *ctx);

/* Checks a problem: sizes, divisibility, enums, flags, 32-bit index overflow.
 * FMQA_ERR_INVALID_ARGUMENT with the first problem found. */
fmqa_status rt_problem_check(const fmqa_problem *p, fmqa_err *err);

/* ---------------------------------------------------------------- plans */

/*
 * A launch plan: one variant of one template for one problem, compiled and
 * loaded.  Plans resolved by rt_plan_get belong to the context's cache and live
 * until fmqa_ctx_destroy; plans made by rt_plan_build (the tuner's variants)
 * belong to the caller, who frees them with rt_plan_free.
 */
typedef struct rt_plan {
    fmqa_problem problem;
    const gen_template *tpl;
    gen_config config;
    gen_plan launch;
    fmqa_choice choice;
    CUmodule module;
    CUfunction fn[GEN_MAX_KERNELS];
    gen_binary binary;          /* cubin, log and ptxas resources            */
} rt_plan;

/* The cached plan for a problem (validated first): tuned, nearest or default
 * variant, compiled through the cubin caches and loaded.  Thread-safe. */
fmqa_status rt_plan_get(fmqa_ctx_t *ctx, const fmqa_problem *p, const rt_plan **out /* OUT */,
                        fmqa_err *err);

/* A plan for an explicit template and config (legality checked), compiled
 * through the context's compiler and caches (or from `binary` if not NULL,
 * which is copied) and loaded.  *out is the caller's: rt_plan_free() it. */
fmqa_status rt_plan_build(fmqa_ctx_t *ctx, const gen_template *tpl, const gen_config *c,
                          const fmqa_problem *p, const gen_binary *binary,
                          rt_plan **out /* OUT */, fmqa_err *err);
void rt_plan_free(fmqa_ctx_t *ctx, rt_plan *plan);

/* Launches every kernel of the plan in order on stream with `params` (the
 * fmqa_*_params struct of the op) as the only argument.  The caller has
 * entered the context (rt_enter). */
fmqa_status rt_plan_launch(fmqa_ctx_t *ctx, const rt_plan *plan, void *params,
                           CUstream stream, fmqa_err *err);

/* How far a tuned shape bucket may be reused: at most this many powers of
 * two away in batch and, separately, in kv_len (docs/tuning.md). */
#define RT_NEAREST_MAX_STEPS 2

/* The dispatcher's choice for a problem on a described device: for each
 * template of the op, the exact tuned entry of db, else the nearest tuned
 * bucket within RT_NEAREST_MAX_STEPS per dimension whose config passes
 * gen_check for this problem and does not leave SMs idle that the default
 * would fill (fewer CTAs than SMs where the default launches more); of the
 * templates with such an entry, an exact one before a nearest one, then the
 * lowest tuned time (so prefill_sm90 serves where the tuner found it faster
 * than prefill, and the other way round); with none, the default of the
 * newest architecture's template whose default is legal.  choice->reason
 * says why.  db may be NULL.  Needs no GPU. */
fmqa_status rt_choose(gen_lib *lib, struct db *db, const fmqa_device_info *dev,
                      const fmqa_problem *p, const gen_template **tpl /* OUT */,
                      gen_config *config /* OUT */, fmqa_choice *choice /* OUT */,
                      fmqa_err *err);

/* fmqa_level_policy_tune for a described device, template set and database
 * (db may be NULL): the 8-bit format of the policy becomes the one whose tuned
 * decode of the level's problem is faster, when both are tuned.  Needs no GPU. */
fmqa_status rt_level_pick_format(gen_lib *lib, struct db *db, const fmqa_device_info *dev,
                                 const fmqa_model_config *model, int32_t batch,
                                 fmqa_level_policy *policy /* IN/OUT */, int *changed /* OUT */,
                                 fmqa_err *err);

/*
 * The generator's persistent cache in the database's cubins table, shared by
 * the dispatcher and the tuner.  It counts what it stored, the stores the
 * database did not take (full disk, locked or read-only file) and the damaged
 * cubins it dropped (size or checksum wrong: recompiled and stored again); the
 * first failure of each kind is logged at FMQA_LOG_WARN to ctx (may be NULL),
 * later ones at FMQA_LOG_DEBUG.  db (may be NULL: nothing is cached) and ctx
 * are borrowed and must outlive the compiler using the hook.  Where the
 * database is opened lazily (the dispatcher), db is NULL and open(open_arg)
 * returns it on first use (NULL: none); open must be thread-safe.
 * Thread-safe.
 */
typedef struct rt_cubin_store {
    struct db *db;
    struct db *(*open)(void *open_arg);
    void *open_arg;
    const fmqa_ctx_t *ctx;
    pthread_mutex_t lock;
    size_t stored, failed, damaged;
    char last_failure[FMQA_ERRMSG_CAP]; /* "" when none */
} rt_cubin_store;
void rt_cubin_store_init(rt_cubin_store *s, struct db *db, const fmqa_ctx_t *ctx);
void rt_cubin_store_fini(rt_cubin_store *s);
gen_cache_hook rt_cubin_hook(rt_cubin_store *s);
/* "cubin cache: 60 stored, 30 not kept by the database, 1 damaged dropped"
 * plus "; last failure: <message>" when there was one.  Returns the number of
 * stores that failed. */
size_t rt_cubin_store_summary(rt_cubin_store *s, char *buf /* OUT */, size_t cap);

/* The context's template set, compiler and database (opened on first use; the
 * database may be NULL when there is none).  Borrowed. */
fmqa_status rt_templates(fmqa_ctx_t *ctx, gen_lib **lib /* OUT */, fmqa_err *err);
fmqa_status rt_compiler(fmqa_ctx_t *ctx, gen_compiler **compiler /* OUT */, fmqa_err *err);
struct db *rt_database(fmqa_ctx_t *ctx);

/* Fill the kernel argument structs from the public argument structs, checking
 * every pointer, stride and alignment the plan relies on (rt_args.c). */
struct fmqa_decode_params;
struct fmqa_append_params;
struct fmqa_prefill_params;
fmqa_status rt_decode_params(const rt_plan *plan, const fmqa_decode_args *a,
                             struct fmqa_decode_params *out /* OUT */, fmqa_err *err);
fmqa_status rt_append_params(const rt_plan *plan, const fmqa_append_args *a,
                             struct fmqa_append_params *out /* OUT */, fmqa_err *err);
/* The decode arguments an MLA decode of problem p amounts to: the latent
 * cache kv (and kv_scale) as both K and V, one head.  rt_decode_params then
 * checks and fills them as for any decode (messages name kv and kv_scale). */
void rt_mla_decode_args(const fmqa_problem *p, const fmqa_mla_decode_args *m,
                        fmqa_decode_args *d /* OUT */);
fmqa_status rt_prefill_params(const rt_plan *plan, const fmqa_prefill_args *a,
                              struct fmqa_prefill_params *out /* OUT */, fmqa_err *err);

/* What a prefill plan's kernel takes: for a template whose launch() gives the
 * scalar tma_box_n (prefill_sm90) the params with TMA maps of q, k and v over
 * the args' total_q packed rows (k and v boxes tma_box_n
 * rows deep, encoded through cu: the driver's rules on strides and alignment
 * are refused with FMQA_ERR_INVALID_ARGUMENT), else the plain params.  One
 * path for fmqa_prefill and the tuner; rt_plan_launch takes &out. */
typedef union rt_prefill_kernel_params {
    fmqa_prefill_params plain;
    fmqa_prefill_sm90_params tma;
} rt_prefill_kernel_params;
fmqa_status rt_prefill_kernel_params_fill(const rt_cuda *cu, const rt_plan *plan,
                                          const fmqa_prefill_args *a,
                                          rt_prefill_kernel_params *out /* OUT */, fmqa_err *err);
struct fmqa_compress_params;
fmqa_status rt_compress_params(const rt_plan *plan, const fmqa_compress_args *a,
                               struct fmqa_compress_params *out /* OUT */, fmqa_err *err);
/* The policy of fmqa_compress alone (ranges, budget, pooling): FMQA_OK or
 * FMQA_ERR_INVALID_ARGUMENT naming the field.  has_scores: the call passes a
 * scores buffer. */
fmqa_status rt_compress_policy_check(const fmqa_compress_policy *policy, int has_scores,
                                     fmqa_err *err);

/* Every tool's --version (rt_version.c): when an argument is "--version",
 * prints "TOOL VERSION" and the versions of libfastmqa, NVRTC, the CUDA driver
 * (or why there is none), the database schema, SQLite and Lua on stdout and
 * returns 1 (the tool exits 0); else returns 0. */
int rt_version_option(int argc, char **argv, const char *tool);

/* Dispatcher lifetime (rt_dispatch.c). */
void rt_dispatch_destroy(struct rt_dispatch *d);

#endif /* FMQA_RT_H */
