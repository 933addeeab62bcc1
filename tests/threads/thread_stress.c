/*
 * thread_stress.c -- the library's threaded paths hammered from many threads,
 * as a plain program (Criterion cannot run under ThreadSanitizer: its arena
 * mapping fails, Snaipe/Criterion#274), so that scripts/test.sh can run it in
 * a ThreadSanitizer build; the ctest threads_stress (label unit) runs it in
 * every build.  Each part checks its results and exits non-zero on a wrong one:
 *   contexts   8 threads share one context (validation, argument checks, the
 *              per-thread messages) while others create and destroy contexts;
 *   templates  8 threads call one template set (its Lua state is serialized);
 *   cubins     8 threads store and read cubins through one rt_cubin_store;
 *   pool       the tuner's host thread pool and the threaded case builder.
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "db.h"
#include "gen.h"
#include "rt.h"
#include "tun.h"

#define THREADS 8
#define ROUNDS 2000

static int failures;
static pthread_mutex_t fail_lock = PTHREAD_MUTEX_INITIALIZER;

#define CHECK(cond, ...)                                                      \
    do {                                                                      \
        if (!(cond)) {                                                        \
            pthread_mutex_lock(&fail_lock);                                   \
            if (failures++ < 10) {                                            \
                fprintf(stderr, "%s:%d: ", __FILE__, __LINE__);               \
                fprintf(stderr, __VA_ARGS__);                                 \
                fputc('\n', stderr);                                          \
            }                                                                 \
            pthread_mutex_unlock(&fail_lock);                                 \
        }                                                                     \
    } while (0)

static void run_threads(void *(*fn)(void *), void *arg)
{
    pthread_t th[THREADS];
    struct { void *arg; int id; } a[THREADS];
    for (int i = 0; i < THREADS; i++) {
        a[i].arg = arg, a[i].id = i;
        if (pthread_create(&th[i], NULL, fn, &a[i]) != 0)
            abort();
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
}
#define ARG(p) (*(void **)(p))
#define ID(p) (((struct { void *arg; int id; } *)(p))->id)

static fmqa_ctx_t *make_ctx(void)
{
    fmqa_options o = FMQA_OPTIONS_INIT;
    o.db_path = "";
    fmqa_ctx_t *ctx = NULL;
    if (fmqa_ctx_create(&o, &ctx) != FMQA_OK)
        abort();
    return ctx;
}

/* ------------------------------------------------------------ contexts */

static void *context_worker(void *p)
{
    fmqa_ctx_t *shared = ARG(p);
    int id = ID(p);
    fmqa_problem pr;
    char want[64];
    for (int r = 0; r < ROUNDS; r++) {
        fmqa_problem_init(&pr);
        pr.batch = -(id * ROUNDS + r) - 1; /* a message only this thread expects */
        CHECK(fmqa_problem_validate(shared, &pr) == FMQA_ERR_INVALID_ARGUMENT, "validated");
        snprintf(want, sizeof want, "problem.batch: %d,", pr.batch);
        CHECK(strstr(fmqa_ctx_errmsg(shared), want), "thread %d: got '%s'", id,
              fmqa_ctx_errmsg(shared));
        pr.batch = 1;
        CHECK(fmqa_problem_validate(shared, &pr) == FMQA_OK, "%s", fmqa_ctx_errmsg(shared));
        CHECK(fmqa_ctx_errmsg(shared)[0] == '\0', "message not cleared");
        if (r % 50 == 0) { /* a private context created and destroyed meanwhile */
            fmqa_ctx_t *own = make_ctx();
            CHECK(fmqa_problem_validate(own, NULL) == FMQA_ERR_INVALID_ARGUMENT, "NULL");
            fmqa_ctx_destroy(own);
        }
    }
    return NULL;
}

static void contexts(void)
{
    fmqa_ctx_t *shared = make_ctx();
    run_threads(context_worker, shared);
    fmqa_ctx_destroy(shared);
}

/* ------------------------------------------------------------ templates */

static void *template_worker(void *p)
{
    gen_lib *lib = ARG(p);
    const gen_template *t = gen_lib_find(lib, "probe");
    fmqa_problem pr;
    fmqa_device_info d;
    gen_problem_parse("batch=4,heads=8,kv_heads=2", &pr, NULL);
    gen_device_preset("sm_90", &d, NULL);
    for (int r = 0; r < ROUNDS / 10; r++) {
        gen_config c;
        gen_plan plan;
        fmqa_err err = {0};
        CHECK(gen_default(t, &pr, &d, &c, &err) == FMQA_OK, "%s", err.msg);
        CHECK(gen_launch_plan(t, &c, &pr, &d, &plan, &err) == FMQA_OK, "%s", err.msg);
        CHECK(plan.kernels[0].grid[0] == 4, "grid %u", plan.kernels[0].grid[0]);
    }
    return NULL;
}

static void templates(void)
{
    gen_lib *lib = NULL;
    if (gen_lib_open(FMQA_SOURCE_DIR "/tests/fixtures/templates_sandbox", &lib, NULL) != FMQA_OK)
        abort();
    run_threads(template_worker, lib);
    gen_lib_close(lib);
}

/* ------------------------------------------------------------ cubins */

static void *cubin_worker(void *p)
{
    gen_cache_hook *hook = ARG(p);
    int id = ID(p);
    char key[64], data[64];
    for (int r = 0; r < 20; r++) {
        gen_binary b, got;
        memset(&b, 0, sizeof b);
        snprintf(key, sizeof key, "key-%d-%d", id, r);
        snprintf(data, sizeof data, "cubin %d %d", id, r);
        fmqa_strlcpy(b.key, key, sizeof b.key);
        fmqa_strlcpy(b.arch, "sm_90", sizeof b.arch);
        b.cubin = data;
        b.size = strlen(data);
        hook->put(hook->user, &b);
        CHECK(hook->get(hook->user, key, &got), "%s missing", key);
        CHECK(got.size == b.size && memcmp(got.cubin, data, b.size) == 0, "%s differs", key);
        free(got.cubin);
    }
    return NULL;
}

static void cubins(void)
{
    char path[] = "/tmp/fmqa_thread_stress_XXXXXX";
    if (!mkdtemp(path))
        abort();
    char file[64], cmd[96];
    snprintf(file, sizeof file, "%s/t.db", path);
    db_t *db;
    if (db_open(file, DB_READ_WRITE, 0, &db, NULL) != FMQA_OK)
        abort();
    rt_cubin_store s;
    rt_cubin_store_init(&s, db, NULL);
    gen_cache_hook hook = rt_cubin_hook(&s);
    run_threads(cubin_worker, &hook);
    char line[2048];
    CHECK(rt_cubin_store_summary(&s, line, sizeof line) == 0, "%s", line);
    CHECK(strstr(line, "160 stored"), "%s", line);
    rt_cubin_store_fini(&s);
    db_close(db);
    snprintf(cmd, sizeof cmd, "rm -rf %s", path);
    CHECK(system(cmd) == 0, "rm");
}

/* ------------------------------------------------------------ pool */

static fmqa_status count_job(void *user, int64_t job, fmqa_err *err)
{
    int *hits = user;
    __atomic_add_fetch(&hits[job], 1, __ATOMIC_RELAXED);
    return FMQA_OK;
}

static void pool(void)
{
    static int hits[1000];
    CHECK(tun_parallel(THREADS, 1000, count_job, hits, NULL) == FMQA_OK, "pool failed");
    for (int i = 0; i < 1000; i++)
        CHECK(hits[i] == 1, "job %d ran %d times", i, hits[i]);
    fmqa_problem pr;
    gen_problem_parse("op=decode,batch=4,heads=8,kv_heads=2,d=64,kv_len=300", &pr, NULL);
    tun_case_opts o;
    memset(&o, 0, sizeof o);
    tun_case *c = NULL;
    fmqa_err err = {0};
    CHECK(tun_case_create_host(&pr, 7, &o, 4, &c, &err) == FMQA_OK, "%s", err.msg);
    tun_case_destroy(c);
}

int main(void)
{
    contexts();
    templates();
    cubins();
    pool();
    printf("thread stress: %d failure(s)\n", failures);
    return failures ? 1 : 0;
}
