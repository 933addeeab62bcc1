/*
 * rt_ctx.c -- fmqa_ctx_t: creation from versioned options, per-thread last
 * error, logging, lazy device opening and the push/pop of its primary context.
 *
 * Options are read only up to the caller's struct_size, so a program built
 * against an older header (a shorter struct) keeps working: fields it does not
 * know get their defaults.
 */
#define _GNU_SOURCE
#include "rt.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include <nvrtc.h>

/* ---------------------------------------------------------------- errors */

/*
 * Each thread's last error lives in a record owned by the context, one per
 * thread that called it, in a list the context frees when destroyed (so no
 * record of any thread outlives it, and contexts use no process-wide resource
 * such as pthread keys, whose number is limited).  A thread finds its record
 * through a one-entry thread-local cache keyed by the context's serial number
 * (an address may be reused by a later context; a serial never is), and
 * searches the list under err_lock only on its first call or after using
 * another context.
 */
typedef struct rt_err_rec {
    pthread_t owner;
    fmqa_err err;
    struct rt_err_rec *next;
} rt_err_rec;

static _Thread_local struct {
    uint64_t serial;
    rt_err_rec *rec;
} err_cache;

static uint64_t next_serial(void)
{
    static _Atomic uint64_t serial;
    return ++serial;
}

/* The calling thread's record; created when `create` (NULL if out of memory
 * or, without create, if the thread has none). */
static rt_err_rec *thread_rec(const fmqa_ctx_t *ctx, int create)
{
    if (err_cache.serial == ctx->serial && err_cache.rec)
        return err_cache.rec;
    fmqa_ctx_t *c = (fmqa_ctx_t *)ctx; /* the list is not part of the value */
    pthread_t self = pthread_self();
    pthread_mutex_lock(&c->err_lock);
    rt_err_rec *r = c->errs;
    while (r && !pthread_equal(r->owner, self))
        r = r->next;
    if (!r && create && (r = calloc(1, sizeof *r)) != NULL) {
        r->owner = self;
        r->next = c->errs;
        c->errs = r;
    }
    pthread_mutex_unlock(&c->err_lock);
    if (r) {
        err_cache.serial = ctx->serial;
        err_cache.rec = r;
    }
    return r;
}

static fmqa_err *thread_err(fmqa_ctx_t *ctx)
{
    rt_err_rec *r = thread_rec(ctx, 1);
    return r ? &r->err : NULL;
}

fmqa_status rt_error(fmqa_ctx_t *ctx, fmqa_status status, const char *fmt, ...)
{
    fmqa_err *e = ctx ? thread_err(ctx) : NULL;
    va_list ap;
    va_start(ap, fmt);
    fmqa_err_setv(e, status, fmt, ap);
    va_end(ap);
    if (e)
        rt_log(ctx, FMQA_LOG_DEBUG, "%s: %s", fmqa_status_string(status), e->msg);
    return status;
}

fmqa_status rt_fail(fmqa_ctx_t *ctx, const fmqa_err *err)
{
    return rt_error(ctx, err->status, "%s", err->msg);
}

fmqa_status rt_clear(fmqa_ctx_t *ctx)
{
    fmqa_err_clear(ctx ? thread_err(ctx) : NULL);
    return FMQA_OK;
}

const char *fmqa_ctx_errmsg(const fmqa_ctx_t *ctx)
{
    if (!ctx)
        return "no context (out of memory?)";
    if (ctx->create_err.status != FMQA_OK)
        return ctx->create_err.msg;
    const rt_err_rec *r = thread_rec(ctx, 0);
    return r ? r->err.msg : "";
}

void rt_log(const fmqa_ctx_t *ctx, fmqa_log_level level, const char *fmt, ...)
{
    if (!ctx || level > ctx->log_level)
        return;
    static const char *names[] = {"", "error", "warning", "info", "debug"};
    char line[FMQA_ERRMSG_CAP + 64];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    fprintf(stderr, "fastmqa: %s: %s\n", names[level], line);
}

/* ---------------------------------------------------------------- options */

fmqa_status fmqa_default_db_path(char *buf, size_t cap)
{
    const char *xdg = getenv("XDG_CACHE_HOME");
    const char *home = getenv("HOME");
    int n;
    if (!buf || cap == 0)
        return FMQA_ERR_INVALID_ARGUMENT;
    if (xdg && *xdg)
        n = snprintf(buf, cap, "%s/fastmqa/tune.db", xdg);
    else if (home && *home)
        n = snprintf(buf, cap, "%s/.cache/fastmqa/tune.db", home);
    else
        return FMQA_ERR_NOT_FOUND;
    return (n < 0 || (size_t)n >= cap) ? FMQA_ERR_INVALID_ARGUMENT : FMQA_OK;
}

/* $FASTMQA_LOG as a level: -1 when unset or empty, -2 when it names none. */
static int env_log_level(void)
{
    static const char *names[] = {"quiet", "error", "warn", "info", "debug"};
    const char *v = getenv("FASTMQA_LOG");
    if (!v || !*v)
        return -1;
    for (int i = 0; i <= FMQA_LOG_DEBUG; i++)
        if (strcasecmp(v, names[i]) == 0 || (v[0] - '0' == i && !v[1]))
            return i;
    return -2;
}

/* Copies the fields the caller's struct has; the rest keep their defaults. */
static fmqa_status read_options(const fmqa_options *in, fmqa_options *out, fmqa_err *err)
{
    const fmqa_options dflt = FMQA_OPTIONS_INIT;
    *out = dflt;
    if (!in)
        return FMQA_OK;
    if (in->struct_size < offsetof(fmqa_options, db_path) || in->version == 0 ||
        in->version > FMQA_OPTIONS_VERSION)
        return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT,
                            "options: struct_size %u / version %u not recognised; "
                            "initialise with FMQA_OPTIONS_INIT",
                            in->struct_size, in->version);
    memcpy(out, in, in->struct_size < sizeof *out ? in->struct_size : sizeof *out);
    out->struct_size = sizeof *out;
    if (out->device < 0)
        return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT, "options.device: %d is negative",
                            out->device);
    if (out->log_level < FMQA_LOG_QUIET || out->log_level > FMQA_LOG_DEBUG)
        return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT,
                            "options.log_level: %d is not an fmqa_log_level", out->log_level);
    return FMQA_OK;
}

static fmqa_status resolve_paths(fmqa_ctx_t *ctx, fmqa_err *err)
{
    const fmqa_options *o = &ctx->opts;
    if (!o->db_path) {
        char path[4096];
        if (fmqa_default_db_path(path, sizeof path) == FMQA_OK)
            ctx->db_path = fmqa_strdup(path);
    } else if (*o->db_path) {
        ctx->db_path = fmqa_strdup(o->db_path);
    }
    const char *dir = o->template_dir ? o->template_dir : getenv("FASTMQA_TEMPLATE_DIR");
    if (dir && *dir) {
        struct stat st;
        if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
            return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT,
                                "template directory '%s' does not exist or is not a directory",
                                dir);
        ctx->template_dir = fmqa_strdup(dir);
    }
    return FMQA_OK;
}

fmqa_status fmqa_ctx_create(const fmqa_options *opts, fmqa_ctx_t **out)
{
    if (!out)
        return FMQA_ERR_INVALID_ARGUMENT;
    fmqa_ctx_t *ctx = calloc(1, sizeof *ctx);
    *out = ctx;
    if (!ctx)
        return FMQA_ERR_OUT_OF_MEMORY;
    ctx->serial = next_serial();
    pthread_mutex_init(&ctx->err_lock, NULL);
    pthread_mutex_init(&ctx->lock, NULL);
    fmqa_status st = read_options(opts, &ctx->opts, &ctx->create_err);
    if (st == FMQA_OK)
        st = resolve_paths(ctx, &ctx->create_err);
    const int env_level = env_log_level();
    ctx->log_level = env_level >= 0 ? (fmqa_log_level)env_level : ctx->opts.log_level;
    if (env_level == -2) /* a typo would otherwise silence or flood without a word */
        rt_log(ctx, FMQA_LOG_WARN,
               "FASTMQA_LOG='%.64s' is not quiet, error, warn, info, debug or 0 to 4: ignored",
               getenv("FASTMQA_LOG"));
    /* The copied strings belong to the caller: only our duplicates are kept. */
    ctx->opts.db_path = ctx->db_path;
    ctx->opts.template_dir = ctx->template_dir;
    return st;
}

void fmqa_ctx_destroy(fmqa_ctx_t *ctx)
{
    if (!ctx)
        return;
    rt_dispatch_destroy(ctx->dispatch);
    if (ctx->device_state == 1)
        ctx->cu->cuDevicePrimaryCtxRelease(ctx->dev);
    for (rt_err_rec *r = ctx->errs, *next; r; r = next) {
        next = r->next;
        free(r);
    }
    pthread_mutex_destroy(&ctx->err_lock);
    pthread_mutex_destroy(&ctx->lock);
    free(ctx->db_path);
    free(ctx->template_dir);
    free(ctx);
}

/* ---------------------------------------------------------------- device */

static fmqa_status open_device(fmqa_ctx_t *ctx, fmqa_err *err)
{
    const rt_cuda *cu;
    fmqa_status st = rt_cuda_get(&cu, err);
    if (st != FMQA_OK)
        return st;
    int count = 0;
    RT_CU(err, cu->cuDeviceGetCount(&count), "cuDeviceGetCount");
    if (ctx->opts.device >= count)
        return fmqa_err_set(err, FMQA_ERR_NO_DEVICE, "device %d requested but %d GPU%s present",
                            ctx->opts.device, count, count == 1 ? " is" : "s are");
    RT_CU(err, cu->cuDeviceGet(&ctx->dev, ctx->opts.device), "cuDeviceGet");
    st = rt_cuda_describe(cu, ctx->opts.device, &ctx->info, err);
    if (st != FMQA_OK)
        return st;
    RT_CU(err, cu->cuDevicePrimaryCtxRetain(&ctx->cuctx, ctx->dev), "cuDevicePrimaryCtxRetain");
    ctx->cu = cu;
    return FMQA_OK;
}

fmqa_status rt_device(fmqa_ctx_t *ctx, fmqa_err *err)
{
    pthread_mutex_lock(&ctx->lock);
    if (ctx->device_state == 0) {
        fmqa_status st = open_device(ctx, &ctx->device_err);
        ctx->device_state = st == FMQA_OK ? 1 : -1;
    }
    fmqa_status st = ctx->device_state == 1 ? FMQA_OK : ctx->device_err.status;
    if (st != FMQA_OK && err)
        *err = ctx->device_err;
    pthread_mutex_unlock(&ctx->lock);
    return st;
}

fmqa_status rt_enter(fmqa_ctx_t *ctx, fmqa_err *err)
{
    fmqa_status st = rt_device(ctx, err);
    if (st != FMQA_OK)
        return st;
    RT_CU(err, ctx->cu->cuCtxPushCurrent(ctx->cuctx), "cuCtxPushCurrent");
    return FMQA_OK;
}

void rt_leave(fmqa_ctx_t *ctx)
{
    CUcontext popped;
    ctx->cu->cuCtxPopCurrent(&popped);
}

fmqa_status fmqa_device_query(fmqa_ctx_t *ctx, fmqa_device_info *info)
{
    fmqa_err err;
    if (!ctx || !info)
        return rt_error(ctx, FMQA_ERR_INVALID_ARGUMENT, "fmqa_device_query: %s is NULL",
                        ctx ? "info" : "ctx");
    if (rt_device(ctx, &err) != FMQA_OK)
        return rt_fail(ctx, &err);
    *info = ctx->info;
    return rt_clear(ctx);
}

fmqa_status fmqa_nvrtc_version(int *major, int *minor)
{
    if (!major || !minor)
        return FMQA_ERR_INVALID_ARGUMENT;
    return nvrtcVersion(major, minor) == NVRTC_SUCCESS ? FMQA_OK : FMQA_ERR_COMPILE;
}
