/*
 * test_ctx_resources.c -- contexts use no limited process-wide resource (the
 * 987th live context once failed as "out of memory": each took a pthread key)
 * and destroying one frees the last-error records of every thread that used
 * it, not only the caller's (other threads' messages once leaked; the
 * ASan build's leak checker and, in other builds, the heap's in-use bytes
 * tell).  tests/threads/thread_stress runs the same paths under
 * ThreadSanitizer in CI.
 */
#define _GNU_SOURCE /* mallinfo2 */
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "fastmqa.h"
#include "test_support.h"

Test(ctx_resources, thousands_of_live_contexts)
{
    enum { N = 3000 };
    static fmqa_ctx_t *ctx[N];
    fmqa_problem p;
    fmqa_problem_init(&p);
    for (int i = 0; i < N; i++) {
        ctx[i] = fmqa_test_ctx();
        p.batch = -i - 1; /* each context keeps its own message */
        cr_assert_eq(fmqa_problem_validate(ctx[i], &p), FMQA_ERR_INVALID_ARGUMENT);
    }
    char want[64];
    for (int i = 0; i < N; i++) {
        snprintf(want, sizeof want, "problem.batch: %d,", -i - 1);
        cr_expect(strstr(fmqa_ctx_errmsg(ctx[i]), want), "%d: %s", i, fmqa_ctx_errmsg(ctx[i]));
        fmqa_ctx_destroy(ctx[i]);
    }
}

typedef struct worker {
    fmqa_ctx_t *ctx;
    pthread_barrier_t *set, *destroyed;
    int ok;
} worker;

/* Leaves an error message in the context, waits until the main thread has
 * destroyed it, then exits. */
static void *work(void *arg)
{
    worker *w = arg;
    fmqa_problem p;
    fmqa_problem_init(&p);
    p.num_q_heads = 3;
    p.num_kv_heads = 2;
    w->ok = fmqa_problem_validate(w->ctx, &p) == FMQA_ERR_INVALID_ARGUMENT &&
            strstr(fmqa_ctx_errmsg(w->ctx), "not a multiple of num_kv_heads") != NULL;
    pthread_barrier_wait(w->set);
    pthread_barrier_wait(w->destroyed);
    return NULL;
}

static void round_of_threads(void)
{
    enum { T = 8 };
    pthread_barrier_t set, destroyed;
    pthread_barrier_init(&set, NULL, T + 1);
    pthread_barrier_init(&destroyed, NULL, T + 1);
    fmqa_ctx_t *ctx = fmqa_test_ctx();
    worker w[T];
    pthread_t th[T];
    for (int i = 0; i < T; i++) {
        w[i] = (worker){ctx, &set, &destroyed, 0};
        cr_assert_eq(pthread_create(&th[i], NULL, work, &w[i]), 0);
    }
    pthread_barrier_wait(&set);
    fmqa_ctx_destroy(ctx); /* the workers are alive, their messages set */
    pthread_barrier_wait(&destroyed);
    for (int i = 0; i < T; i++) {
        pthread_join(th[i], NULL);
        cr_expect(w[i].ok, "worker %d did not see its own message", i);
    }
    pthread_barrier_destroy(&set);
    pthread_barrier_destroy(&destroyed);
}

Test(ctx_resources, destroy_frees_every_threads_message)
{
    round_of_threads(); /* warm up thread stacks and the allocator's arenas */
#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
    size_t before = mallinfo2().uordblks;
    for (int i = 0; i < 50; i++)
        round_of_threads();
    size_t after = mallinfo2().uordblks;
    /* 50 rounds x 8 threads x a 1 KiB message each would be 400 KiB */
    cr_expect_lt(after, before + 64 * 1024, "%zu bytes still in use after destroying",
                 after - before);
#endif
}
