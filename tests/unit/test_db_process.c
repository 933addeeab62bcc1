/*
 * test_db_process.c -- the database across processes: two writers at once lose
 * no trial, a writer killed with SIGKILL inside a transaction leaves a file
 * that opens with every committed row and none of the uncommitted ones, a
 * write lock held elsewhere gives a clear busy error after the timeout, and
 * the fastmqa-db tool (run as a subprocess) reports a random file and helps.
 */
#define _POSIX_C_SOURCE 200809L
#include <criterion/criterion.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "db.h"

static char dir[64];

static void make_dir(void)
{
    strcpy(dir, "/tmp/fmqa_db_proc_XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
}

TestSuite(db_process, .init = make_dir);

static const char *db_file(void)
{
    static char buf[256];
    snprintf(buf, sizeof buf, "%s/tune.db", dir);
    return buf;
}

typedef struct ids {
    int64_t dev, tmpl, prob;
} ids;

static ids setup(db_t *db)
{
    ids k;
    fmqa_device_info d;
    memset(&d, 0, sizeof d);
    strcpy(d.name, "GPU");
    fmqa_problem p;
    memset(&p, 0, sizeof p);
    p.op = FMQA_OP_DECODE;
    p.batch = p.num_q_heads = p.num_kv_heads = p.q_tokens = 1;
    p.head_dim_qk = p.head_dim_v = 64;
    p.kv_len = 128;
    p.q_dtype = p.kv_dtype = p.out_dtype = FMQA_DTYPE_F16;
    cr_assert_eq(db_device_upsert(db, &d, &k.dev, NULL), FMQA_OK);
    cr_assert_eq(db_template_upsert(db, "decode", "h", &k.tmpl, NULL), FMQA_OK);
    cr_assert_eq(db_problem_upsert(db, &p, &k.prob, NULL), FMQA_OK);
    return k;
}

/* Child body: inserts n trials with configs "W=who,I=i"; exit status 0 if all
 * succeeded, else the number of failures (capped). */
static int insert_many(const ids *k, int who, int n)
{
    db_t *db = NULL;
    fmqa_err err = {0};
    if (db_open(db_file(), DB_READ_WRITE, 20000, &db, &err))
        return 100;
    int failures = 0;
    for (int i = 0; i < n; i++) {
        char cfg[32];
        snprintf(cfg, sizeof cfg, "W=%d,I=%d", who, i);
        db_trial t = {.device_id = k->dev, .template_id = k->tmpl, .problem_id = k->prob,
                      .config = cfg, .status = DB_TRIAL_OK, .median_us = 1.0 + i};
        if (db_trial_insert(db, &t, NULL, &err)) {
            fprintf(stderr, "child %d: %s\n", who, err.msg);
            failures++;
        }
    }
    db_close(db);
    return failures > 99 ? 99 : failures;
}

Test(db_process, two_writers_lose_nothing)
{
    db_t *db = NULL;
    cr_assert_eq(db_open(db_file(), DB_READ_WRITE, 0, &db, NULL), FMQA_OK);
    ids k = setup(db);
    pid_t pids[2];
    for (int w = 0; w < 2; w++) {
        pids[w] = fork();
        cr_assert_neq(pids[w], -1);
        if (pids[w] == 0)
            _exit(insert_many(&k, w, 200));
    }
    for (int w = 0; w < 2; w++) {
        int status;
        cr_assert_eq(waitpid(pids[w], &status, 0), pids[w]);
        cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "writer %d failed (%d)", w,
                  WEXITSTATUS(status));
    }
    db_stats s;
    cr_assert_eq(db_stats_get(db, &s, NULL), FMQA_OK);
    cr_assert_eq(s.trials, 400);
    db_hash_set set;
    cr_assert_eq(db_trials_done(db, 0, k.dev, k.tmpl, k.prob, &set, NULL), FMQA_OK);
    cr_assert_eq(set.count, 400, "every config distinct and present");
    db_hash_set_free(&set);
    db_close(db);
}

Test(db_process, sigkill_inside_a_transaction_keeps_committed_rows)
{
    db_t *db = NULL;
    cr_assert_eq(db_open(db_file(), DB_READ_WRITE, 0, &db, NULL), FMQA_OK);
    ids k = setup(db);
    db_close(db);
    int ready[2], feed[2];
    cr_assert_eq(pipe(ready), 0);
    cr_assert_eq(pipe(feed), 0);
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        close(ready[0]);
        close(feed[1]);
        int r = insert_many(&k, 0, 100);
        db_t *c = NULL;
        db_open(db_file(), DB_READ_WRITE, 0, &c, NULL);
        if (write(ready[1], "r", 1) != 1 || r)
            _exit(1);
        /* The import holds one write transaction while it waits for more lines. */
        FILE *in = fdopen(feed[0], "r");
        db_import(c, in, "pipe", NULL, NULL);
        _exit(2);
    }
    close(ready[1]);
    close(feed[0]);
    char byte;
    cr_assert_eq(read(ready[0], &byte, 1), 1, "child failed before the transaction");
    FILE *out = fdopen(feed[1], "w");
    for (int i = 0; i < 20; i++)
        fprintf(out, "{\"table\":\"templates\",\"name\":\"uncommitted%d\",\"hash\":\"x\","
                     "\"first_seen\":1}\n", i);
    fflush(out);
    struct timespec pause = {0, 300 * 1000 * 1000};
    nanosleep(&pause, NULL); /* let the child insert them, uncommitted */
    kill(pid, SIGKILL);
    int status;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "the child was not killed");
    fclose(out);

    fmqa_err err = {0};
    cr_assert_eq(db_open(db_file(), DB_READ_WRITE, 0, &db, &err), FMQA_OK, "%s", err.msg);
    db_stats s;
    cr_assert_eq(db_stats_get(db, &s, NULL), FMQA_OK);
    cr_assert_eq(s.trials, 100);
    cr_assert_eq(s.templates, 1, "uncommitted rows of the killed transaction are visible");
    /* And the file still takes writes. */
    int64_t id;
    cr_assert_eq(db_template_upsert(db, "after", "crash", &id, &err), FMQA_OK, "%s", err.msg);
    db_close(db);
}

Test(db_process, held_write_lock_gives_a_busy_error_after_the_timeout)
{
    db_t *db = NULL;
    cr_assert_eq(db_open(db_file(), DB_READ_WRITE, 0, &db, NULL), FMQA_OK);
    setup(db);
    db_close(db);
    sqlite3 *holder;
    cr_assert_eq(sqlite3_open(db_file(), &holder), SQLITE_OK);
    cr_assert_eq(sqlite3_exec(holder, "BEGIN EXCLUSIVE; INSERT INTO templates(name, hash,"
                                      " first_seen) VALUES('held', 'h', 0)", NULL, NULL, NULL),
                 SQLITE_OK, "%s", sqlite3_errmsg(holder));
    fmqa_err err = {0};
    /* Readers are not blocked by the writer (WAL). */
    cr_assert_eq(db_open(db_file(), DB_READ_ONLY, 200, &db, &err), FMQA_OK, "%s", err.msg);
    db_stats s;
    cr_assert_eq(db_stats_get(db, &s, &err), FMQA_OK, "%s", err.msg);
    cr_assert_eq(s.templates, 1);
    db_close(db);
    cr_assert_eq(db_open(db_file(), DB_READ_WRITE, 200, &db, &err), FMQA_OK, "%s", err.msg);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int64_t id;
    cr_assert_eq(db_template_upsert(db, "x", "y", &id, &err), FMQA_ERR_DATABASE);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ms = (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6;
    cr_assert_geq(ms, 150.0, "gave up after %.0f ms, before the timeout", ms);
    cr_assert(strstr(err.msg, "database is locked by another connection (gave up after 200 ms)"),
              "%s", err.msg);
    sqlite3_exec(holder, "ROLLBACK", NULL, NULL, NULL);
    sqlite3_close(holder);
    cr_assert_eq(db_template_upsert(db, "x", "y", &id, &err), FMQA_OK, "%s", err.msg);
    db_close(db);
}

/* Runs a shell command, capturing stdout+stderr; returns the exit status. */
static int run(const char *cmd, char *out, size_t cap)
{
    char full[1024];
    snprintf(full, sizeof full, "%s 2>&1", cmd);
    FILE *p = popen(full, "r");
    cr_assert_not_null(p);
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = '\0';
    int status = pclose(p);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

#define TOOL FMQA_BINARY_DIR "/db/fastmqa-db"

Test(db_process, tool_reports_random_bytes_and_helps)
{
    char path[256], cmd[1024], out[8192];
    snprintf(path, sizeof path, "%s/random.bin", dir);
    FILE *f = fopen(path, "wb");
    for (int i = 0; i < 4096; i++)
        fputc((i * 7919) & 0xff, f);
    fclose(f);
    snprintf(cmd, sizeof cmd, "%s stats --db %s", TOOL, path);
    cr_assert_eq(run(cmd, out, sizeof out), 1, "%s", out);
    cr_assert(strstr(out, "fastmqa-db: ") && strstr(out, "not a FastMQA database or the file "
                                                         "is corrupted"), "%s", out);
    cr_assert_eq(run(TOOL " --help", out, sizeof out), 0);
    cr_assert(strstr(out, "usage: fastmqa-db COMMAND") && strstr(out, "merge"), "%s", out);
    cr_assert_eq(run(TOOL " trials --help", out, sizeof out), 0);
    cr_assert(strstr(out, "--sort median|created|error"), "%s", out);
    cr_assert_eq(run(TOOL " frobnicate", out, sizeof out), 2);
    cr_assert(strstr(out, "unknown command 'frobnicate'"), "%s", out);
}

Test(db_process, tool_lists_and_exports)
{
    db_t *db = NULL;
    cr_assert_eq(db_open(db_file(), DB_READ_WRITE, 0, &db, NULL), FMQA_OK);
    ids k = setup(db);
    db_trial t = {.device_id = k.dev, .template_id = k.tmpl, .problem_id = k.prob,
                  .config = "BLOCK_N=64,WARPS=4", .status = DB_TRIAL_OK, .median_us = 7.25};
    cr_assert_eq(db_trial_insert(db, &t, NULL, NULL), FMQA_OK);
    t.config = "BLOCK_N=128,WARPS=8";
    t.status = DB_TRIAL_COMPILE_ERROR;
    t.median_us = 0;
    cr_assert_eq(db_trial_insert(db, &t, NULL, NULL), FMQA_OK);
    db_close(db);
    char cmd[1024], out[8192];
    snprintf(cmd, sizeof cmd, "%s trials --db %s --json --status ok", TOOL, db_file());
    cr_assert_eq(run(cmd, out, sizeof out), 0, "%s", out);
    cr_assert(strstr(out, "\"config\":\"BLOCK_N=64,WARPS=4\",\"status\":\"ok\","
                          "\"median_us\":7.25"), "%s", out);
    cr_assert_null(strstr(out, "compile_error"), "%s", out);
    snprintf(cmd, sizeof cmd, "%s trials --db %s --csv --sort median", TOOL, db_file());
    cr_assert_eq(run(cmd, out, sizeof out), 0, "%s", out);
    cr_assert(strstr(out, "1,GPU,decode,1,\"BLOCK_N=64,WARPS=4\",ok,7.25"), "%s", out);
    snprintf(cmd, sizeof cmd, "%s stats --db %s", TOOL, db_file());
    cr_assert_eq(run(cmd, out, sizeof out), 0, "%s", out);
    cr_assert(strstr(out, "trials_compile_error  1"), "%s", out);
    snprintf(cmd, sizeof cmd, "%s export %s/x.jsonl --db %s && %s import %s/x.jsonl --db %s/c.db",
             TOOL, dir, db_file(), TOOL, dir, dir);
    cr_assert_eq(run(cmd, out, sizeof out), 0, "%s", out);
    cr_assert(strstr(out, "5 rows read, 5 added or updated"), "%s", out);
    snprintf(cmd, sizeof cmd, "%s show 99 --db %s", TOOL, db_file());
    cr_assert_eq(run(cmd, out, sizeof out), 1, "%s", out);
    cr_assert(strstr(out, "no trial 99"), "%s", out);
}
