/*
 * gen_pool.c -- the compiler: a pool of worker threads running NVRTC on queued
 * sources, with an in-memory cache keyed by source key in front of an optional
 * persistent cache (hook) in front of NVRTC.
 *
 * Locking: c->mu guards the queue, the cache and the counters; each job has its
 * own mutex so a job outlives its compiler.  A key being compiled sits in the
 * cache as a placeholder (ready == 0); a second request for it waits on
 * cv_cache instead of compiling it again.  Failures are not cached (they may be
 * transient, e.g. out of memory); the placeholder is removed and waiters retry.
 * NVRTC itself always runs without c->mu held.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "gen_internal.h"

#define CACHE_BUCKETS 256

typedef struct cache_entry {
    struct cache_entry *next;
    char key[FMQA_HASH_HEX];
    int ready;
    gen_binary bin;
} cache_entry;

struct gen_job {
    gen_job *next;
    gen_source src;
    gen_job_done_fn done;
    void *user;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int finished;
    fmqa_status status;
    fmqa_err err;
    gen_binary bin;
};

struct gen_compiler {
    pthread_mutex_t mu;
    pthread_cond_t cv_work, cv_idle, cv_cache;
    pthread_t *threads;
    int n_threads;
    int stop;
    gen_job *head, *tail;
    size_t pending;
    cache_entry *buckets[CACHE_BUCKETS];
    gen_cache_hook hook;
    uint64_t hits, misses;
};

static cache_entry **bucket(gen_compiler *c, const char *key)
{
    fmqa_hasher h;
    fmqa_hash_init(&h);
    fmqa_hash_str(&h, key);
    return &c->buckets[h.a % CACHE_BUCKETS];
}

static cache_entry *lookup(gen_compiler *c, const char *key)
{
    for (cache_entry *e = *bucket(c, key); e; e = e->next)
        if (strcmp(e->key, key) == 0)
            return e;
    return NULL;
}

static void unlink_entry(gen_compiler *c, cache_entry *dead)
{
    for (cache_entry **pp = bucket(c, dead->key); *pp; pp = &(*pp)->next)
        if (*pp == dead) {
            *pp = dead->next;
            break;
        }
    gen_binary_free(&dead->bin);
    free(dead);
}

/* Claims key for compilation: returns the placeholder to fill, or NULL after
 * copying a ready binary into out (*st tells how that went).  Lock held. */
static cache_entry *claim_locked(gen_compiler *c, const char *key, gen_binary *out,
                                 fmqa_status *st)
{
    for (;;) {
        cache_entry *e = lookup(c, key);
        if (e && e->ready) {
            c->hits++;
            *st = gen_binary_copy(&e->bin, out);
            out->cached = 1;
            out->compile_ms = 0;
            return NULL;
        }
        if (!e)
            break;
        pthread_cond_wait(&c->cv_cache, &c->mu);
    }
    cache_entry *e = calloc(1, sizeof *e);
    if (!e) {
        *st = FMQA_ERR_OUT_OF_MEMORY;
        return NULL;
    }
    memcpy(e->key, key, FMQA_HASH_HEX);
    cache_entry **b = bucket(c, key);
    e->next = *b;
    *b = e;
    *st = FMQA_OK;
    return e;
}

/* Hook, then NVRTC; no lock held. */
static fmqa_status produce(gen_compiler *c, const gen_source *src, gen_binary *out, int *from_hook,
                           fmqa_err *err)
{
    *from_hook = 0;
    memset(out, 0, sizeof *out);
    if (c->hook.get && c->hook.get(c->hook.user, src->key, out) && out->cubin) {
        memcpy(out->key, src->key, FMQA_HASH_HEX);
        memcpy(out->arch, src->arch, sizeof out->arch);
        memcpy(out->template_hash, src->template_hash, FMQA_HASH_HEX);
        memcpy(out->template_name, src->template_name, sizeof out->template_name);
        memcpy(out->config, src->config, sizeof out->config);
        out->cached = 1;
        out->compile_ms = 0;
        *from_hook = 1;
        return FMQA_OK;
    }
    fmqa_status st = gen_compile(src, out, err);
    if (st == FMQA_OK && c->hook.put)
        c->hook.put(c->hook.user, out);
    return st;
}

static fmqa_status compile_cached(gen_compiler *c, const gen_source *src, gen_binary *out,
                                  fmqa_err *err)
{
    fmqa_status st;
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&c->mu);
    cache_entry *e = claim_locked(c, src->key, out, &st);
    pthread_mutex_unlock(&c->mu);
    if (!e)
        return st == FMQA_ERR_OUT_OF_MEMORY
                   ? fmqa_err_set(err, st, "out of memory caching %s", src->key)
                   : st;
    int from_hook;
    st = produce(c, src, out, &from_hook, err);
    pthread_mutex_lock(&c->mu);
    if (from_hook)
        c->hits++;
    else
        c->misses++;
    if (st == FMQA_OK && gen_binary_copy(out, &e->bin) == FMQA_OK)
        e->ready = 1;
    else
        unlink_entry(c, e);
    pthread_cond_broadcast(&c->cv_cache);
    pthread_mutex_unlock(&c->mu);
    return st;
}

static void *worker(void *arg)
{
    gen_compiler *c = arg;
    for (;;) {
        pthread_mutex_lock(&c->mu);
        while (!c->stop && !c->head)
            pthread_cond_wait(&c->cv_work, &c->mu);
        gen_job *job = c->head;
        if (!job) { /* stopping and drained */
            pthread_mutex_unlock(&c->mu);
            return NULL;
        }
        c->head = job->next;
        if (!c->head)
            c->tail = NULL;
        pthread_mutex_unlock(&c->mu);

        job->status = compile_cached(c, &job->src, &job->bin, &job->err);
        if (job->done)
            job->done(job->user, job, job->status, job->status == FMQA_OK ? &job->bin : NULL,
                      &job->err);
        pthread_mutex_lock(&job->mu);
        job->finished = 1; /* the job may be freed by its owner from here on */
        pthread_cond_broadcast(&job->cv);
        pthread_mutex_unlock(&job->mu);

        pthread_mutex_lock(&c->mu);
        if (--c->pending == 0)
            pthread_cond_broadcast(&c->cv_idle);
        pthread_mutex_unlock(&c->mu);
    }
}

fmqa_status gen_compiler_create(int threads, const gen_cache_hook *hook, gen_compiler **out,
                                fmqa_err *err)
{
    *out = NULL;
    if (threads < 1 || threads > 256)
        return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT,
                            "compiler: threads must be 1 to 256, got %d", threads);
    gen_compiler *c = calloc(1, sizeof *c);
    if (!c || !(c->threads = calloc((size_t)threads, sizeof *c->threads))) {
        free(c);
        return fmqa_err_set(err, FMQA_ERR_OUT_OF_MEMORY, "out of memory");
    }
    if (hook)
        c->hook = *hook;
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv_work, NULL);
    pthread_cond_init(&c->cv_idle, NULL);
    pthread_cond_init(&c->cv_cache, NULL);
    for (; c->n_threads < threads; c->n_threads++)
        if (pthread_create(&c->threads[c->n_threads], NULL, worker, c) != 0)
            break;
    if (c->n_threads == 0) {
        gen_compiler_destroy(c);
        return fmqa_err_set(err, FMQA_ERR_INTERNAL, "compiler: cannot start a thread");
    }
    *out = c;
    return FMQA_OK;
}

void gen_compiler_wait_all(gen_compiler *c)
{
    pthread_mutex_lock(&c->mu);
    while (c->pending > 0)
        pthread_cond_wait(&c->cv_idle, &c->mu);
    pthread_mutex_unlock(&c->mu);
}

void gen_compiler_destroy(gen_compiler *c)
{
    if (!c)
        return;
    gen_compiler_wait_all(c);
    pthread_mutex_lock(&c->mu);
    c->stop = 1;
    pthread_cond_broadcast(&c->cv_work);
    pthread_mutex_unlock(&c->mu);
    for (int i = 0; i < c->n_threads; i++)
        pthread_join(c->threads[i], NULL);
    for (int b = 0; b < CACHE_BUCKETS; b++)
        while (c->buckets[b])
            unlink_entry(c, c->buckets[b]);
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cv_work);
    pthread_cond_destroy(&c->cv_idle);
    pthread_cond_destroy(&c->cv_cache);
    free(c->threads);
    free(c);
}

fmqa_status gen_compiler_submit(gen_compiler *c, gen_source *src, gen_job_done_fn done,
                                void *user, gen_job **job, fmqa_err *err)
{
    gen_job *j = calloc(1, sizeof *j);
    if (!j)
        return fmqa_err_set(err, FMQA_ERR_OUT_OF_MEMORY, "out of memory");
    j->src = *src; /* ownership moves to the job */
    memset(src, 0, sizeof *src);
    j->done = done;
    j->user = user;
    pthread_mutex_init(&j->mu, NULL);
    pthread_cond_init(&j->cv, NULL);
    pthread_mutex_lock(&c->mu);
    if (c->tail)
        c->tail->next = j;
    else
        c->head = j;
    c->tail = j;
    c->pending++;
    pthread_cond_signal(&c->cv_work);
    pthread_mutex_unlock(&c->mu);
    *job = j;
    return FMQA_OK;
}

fmqa_status gen_job_wait(gen_job *job, const gen_binary **bin, fmqa_err *err)
{
    pthread_mutex_lock(&job->mu);
    while (!job->finished)
        pthread_cond_wait(&job->cv, &job->mu);
    pthread_mutex_unlock(&job->mu);
    if (job->status == FMQA_OK)
        *bin = &job->bin;
    else if (err)
        *err = job->err;
    return job->status;
}

int gen_job_done(const gen_job *job)
{
    pthread_mutex_lock((pthread_mutex_t *)&job->mu);
    int done = job->finished;
    pthread_mutex_unlock((pthread_mutex_t *)&job->mu);
    return done;
}

const char *gen_job_key(const gen_job *job)
{
    return job->src.key;
}

void gen_job_release(gen_job *job)
{
    if (!job)
        return;
    const gen_binary *unused;
    gen_job_wait(job, &unused, NULL);
    gen_source_free(&job->src);
    gen_binary_free(&job->bin);
    pthread_mutex_destroy(&job->mu);
    pthread_cond_destroy(&job->cv);
    free(job);
}

fmqa_status gen_compiler_compile(gen_compiler *c, const gen_source *src, gen_binary *out,
                                 fmqa_err *err)
{
    return compile_cached(c, src, out, err);
}

void gen_compiler_stats(gen_compiler *c, uint64_t *hits, uint64_t *misses)
{
    pthread_mutex_lock(&c->mu);
    *hits = c->hits;
    *misses = c->misses;
    pthread_mutex_unlock(&c->mu);
}
