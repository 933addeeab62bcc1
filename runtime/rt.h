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

#include "fastmqa.h"
#include "fmqa_common.h"
#include "rt_cuda.h"

struct rt_dispatch; /* plan cache, templates, database: rt_dispatch.c */

struct fmqa_ctx {
    fmqa_options opts;          /* copy; the strings below own their text     */
    char *db_path;              /* NULL = no database                         */
    char *template_dir;         /* NULL = embedded templates                  */
    fmqa_log_level log_level;
    pthread_key_t err_key;      /* per-thread fmqa_err, freed at thread exit  */
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

/* Dispatcher lifetime (rt_dispatch.c). */
void rt_dispatch_destroy(struct rt_dispatch *d);

#endif /* FMQA_RT_H */
