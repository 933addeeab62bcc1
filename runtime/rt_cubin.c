/*
 * rt_cubin.c -- the compiler's persistent cubin cache in the tuning database,
 * for the dispatcher and the tuner.  A store the database refuses and a cached
 * cubin that fails its size or checksum check are not errors of the call that
 * met them (the kernel was compiled and runs), but they are never silent: the
 * store counts them, logs the first of each kind and reports a summary, from
 * which fastmqa-tune decides its exit status.
 */
#include <stdio.h>
#include <string.h>

#include "db.h"
#include "rt.h"

void rt_cubin_store_init(rt_cubin_store *s, struct db *db, const fmqa_ctx_t *ctx)
{
    memset(s, 0, sizeof *s);
    s->db = db;
    s->ctx = ctx;
    pthread_mutex_init(&s->lock, NULL);
}

void rt_cubin_store_fini(rt_cubin_store *s)
{
    pthread_mutex_destroy(&s->lock);
}

/* Counts a failure of one kind and logs it (the first one loudly). */
static void note_failure(rt_cubin_store *s, size_t *count, const char *what, const fmqa_err *err)
{
    pthread_mutex_lock(&s->lock);
    size_t n = ++*count;
    snprintf(s->last_failure, sizeof s->last_failure, "%s", err->msg);
    pthread_mutex_unlock(&s->lock);
    rt_log(s->ctx, n == 1 ? FMQA_LOG_WARN : FMQA_LOG_DEBUG, "cubin cache: %s (%zu so far): %s",
           what, n, err->msg);
}

/* The store's database: given, or opened on first use; NULL when none. */
static struct db *store_db(const rt_cubin_store *s)
{
    return s->db ? s->db : s->open ? s->open(s->open_arg) : NULL;
}

static int cubin_get(void *user, const char *key, gen_binary *out)
{
    rt_cubin_store *s = user;
    struct db *db = store_db(s);
    void *data;
    size_t size;
    fmqa_err err = {0};
    if (!db)
        return 0;
    fmqa_status st = db_cubin_get(db, key, &data, &size, &err);
    if (st == FMQA_ERR_DATABASE && strstr(err.msg, "is damaged"))
        note_failure(s, &s->damaged, "dropped a damaged cubin, compiling it again", &err);
    if (st != FMQA_OK)
        return 0;
    memset(out, 0, sizeof *out);
    fmqa_strlcpy(out->key, key, sizeof out->key);
    out->cubin = data;
    out->size = size;
    out->cached = 1;
    return 1;
}

static void cubin_put(void *user, const gen_binary *bin)
{
    rt_cubin_store *s = user;
    struct db *db = store_db(s);
    if (!db)
        return;
    int maj = 0, min = 0;
    char nvrtc[16];
    fmqa_nvrtc_version(&maj, &min);
    snprintf(nvrtc, sizeof nvrtc, "%d.%d", maj, min);
    /* The template hash lets db_prune drop cubins of templates that changed;
     * the compile report is what fastmqa-db compiles lists. */
    char report[2048];
    gen_binary_report(bin, report, sizeof report);
    fmqa_err err = {0};
    if (db_cubin_put(db, bin->key, bin->cubin, bin->size, bin->arch, nvrtc,
                     bin->template_hash[0] ? bin->template_hash : NULL, report[0] ? report : NULL,
                     &err) != FMQA_OK) {
        note_failure(s, &s->failed, "the database did not keep a compiled cubin", &err);
        return;
    }
    pthread_mutex_lock(&s->lock);
    s->stored++;
    pthread_mutex_unlock(&s->lock);
}

gen_cache_hook rt_cubin_hook(rt_cubin_store *s)
{
    gen_cache_hook hook = {s, cubin_get, cubin_put};
    return hook;
}

size_t rt_cubin_store_summary(rt_cubin_store *s, char *buf, size_t cap)
{
    pthread_mutex_lock(&s->lock);
    size_t failed = s->failed;
    int n = snprintf(buf, cap, "cubin cache: %zu stored, %zu not kept by the database, %zu "
                               "damaged dropped",
                     s->stored, s->failed, s->damaged);
    if (s->last_failure[0] && n >= 0 && (size_t)n < cap)
        snprintf(buf + n, cap - (size_t)n, "; last failure: %s", s->last_failure);
    pthread_mutex_unlock(&s->lock);
    return failed;
}
