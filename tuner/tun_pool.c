/*
 * tun_pool.c -- host threads for building test cases: how many to use (the
 * online CPUs, capped; FASTMQA_HOST_THREADS overrides) and a parallel loop over
 * job indices on threads that live for one call.
 *
 * Invariants: jobs are handed out in increasing index order from one counter,
 * so when job k fails every job below k has already started and runs to its
 * end; no job starts after a failure, and the error returned is that of the
 * lowest failing index, the same whatever the thread count.  The caller's
 * thread works too, so one thread (or a failed pthread_create) runs every job
 * in order on the caller.
 */
#define _POSIX_C_SOURCE 200809L
#include "tun.h"

#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

int tun_host_threads(void)
{
    const char *env = getenv("FASTMQA_HOST_THREADS");
    if (env && *env) {
        char *end;
        long n = strtol(env, &end, 10);
        if (*end == '\0' && n >= 1 && n <= TUN_HOST_THREADS_MAX)
            return (int)n;
    }
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    return cpus < 1 ? 1 : cpus > TUN_HOST_THREADS_CAP ? TUN_HOST_THREADS_CAP : (int)cpus;
}

typedef struct pool {
    pthread_mutex_t lock;
    int64_t next, n;
    int64_t failed;          /* lowest failing job, n while none failed */
    tun_job_fn fn;
    void *user;
    fmqa_err err;            /* the error of job `failed`               */
} pool;

/* The next job to run, or -1 when all are handed out or one failed. */
static int64_t take(pool *P)
{
    pthread_mutex_lock(&P->lock);
    int64_t job = P->failed == P->n && P->next < P->n ? P->next++ : -1;
    pthread_mutex_unlock(&P->lock);
    return job;
}

static void *work(void *arg)
{
    pool *P = arg;
    fmqa_err e;
    for (int64_t job; (job = take(P)) >= 0;) {
        fmqa_err_clear(&e);
        if (P->fn(P->user, job, &e) == FMQA_OK)
            continue;
        pthread_mutex_lock(&P->lock);
        if (job < P->failed)
            P->failed = job, P->err = e;
        pthread_mutex_unlock(&P->lock);
    }
    return NULL;
}

fmqa_status tun_parallel(int threads, int64_t n_jobs, tun_job_fn fn, void *user, fmqa_err *err)
{
    pool P = {.next = 0, .n = n_jobs, .failed = n_jobs, .fn = fn, .user = user};
    pthread_t tid[TUN_HOST_THREADS_MAX];
    int helpers = 0;
    if (threads > TUN_HOST_THREADS_MAX)
        threads = TUN_HOST_THREADS_MAX;
    if (n_jobs <= 0)
        return FMQA_OK;
    pthread_mutex_init(&P.lock, NULL);
    while (helpers < threads - 1 && helpers < n_jobs - 1 &&
           pthread_create(&tid[helpers], NULL, work, &P) == 0)
        helpers++;
    work(&P);
    for (int i = 0; i < helpers; i++)
        pthread_join(tid[i], NULL);
    pthread_mutex_destroy(&P.lock);
    if (P.failed == n_jobs)
        return FMQA_OK;
    if (err)
        *err = P.err;
    return P.err.status;
}
