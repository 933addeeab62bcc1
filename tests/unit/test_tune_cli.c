/*
 * test_tune_cli.c -- fastmqa-tune as a process (FMQA_BINARY_DIR/tuner/
 * fastmqa-tune): the dry run compiles real template variants without a GPU
 * and records their cubins in the database it was given (a damaged one is
 * recompiled, stores the database refuses fail the run); a plain run without a
 * GPU exits non-zero and says so; bad usage exits 2 naming the problem.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <sqlite3.h>

#include "db.h"
#include "test_support.h"

#define TUNE FMQA_BINARY_DIR "/tuner/fastmqa-tune"

/* Runs a shell command line, returns its exit status and its output (stdout and
 * stderr) in out. */
static int run(const char *args, char *out, size_t cap)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "FASTMQA_TEMPLATE_DIR=%s/templates %s %s", FMQA_SOURCE_DIR, TUNE,
             args);
    return fmqa_test_run(cmd, out, cap);
}

static void temp_db(char *path)
{
    strcpy(path, "/tmp/fmqa_tune_cli_XXXXXX");
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    close(fd);
    unlink(path);
}

static void remove_db(const char *path)
{
    char side[96];
    unlink(path);
    snprintf(side, sizeof side, "%s-wal", path);
    unlink(side);
    snprintf(side, sizeof side, "%s-shm", path);
    unlink(side);
}

Test(tune_cli, dry_run_compiles_variants_and_caches_cubins, .timeout = 600)
{
    char path[64], args[512], out[16384];
    temp_db(path);
    snprintf(args, sizeof args,
             "--dry-run --db %s --budget 2 --threads 2 "
             "--problem op=decode,batch=3,heads=8,kv_heads=1,d=64,kv_len=1000 "
             "--problem op=append,batch=1,heads=8,kv_heads=8,d=64,kv_len=4099,tq=1,rope=neox",
             path);
    int rc = run(args, out, sizeof out);
    cr_expect_eq(rc, 0, "exit %d:\n%s", rc, out);
    cr_expect(strstr(out, "problem 1: op=decode,batch=3") != NULL, "%s", out);
    cr_expect(strstr(out, "problem 2: op=append") != NULL, "%s", out);
    cr_expect(strstr(out, "4 variants compiled, 0 failed") != NULL, "%s", out);
    db_t *db;
    db_stats st;
    cr_assert_eq(db_open(path, DB_READ_ONLY, 0, &db, NULL), FMQA_OK);
    cr_assert_eq(db_stats_get(db, &st, NULL), FMQA_OK);
    cr_expect_eq(st.cubins, 4, "every compiled variant is cached (%lld)", (long long)st.cubins);
    cr_expect_eq(st.trials, 0, "a dry run measures nothing");
    db_close(db);
    /* A second process finds every cubin in the database and compiles nothing. */
    rc = run(args, out, sizeof out);
    cr_expect_eq(rc, 0, "exit %d:\n%s", rc, out);
    const char *hit = strstr(out, "2 compiled for sm_90 (2 from the cubin cache)");
    cr_expect(hit && strstr(hit + 1, "2 compiled for sm_90 (2 from the cubin cache)"),
              "both templates served from the cache:\n%s", out);
    cr_expect(strstr(out, "compile 0 ms cpu") != NULL, "%s", out);
    cr_expect(strstr(out, "cubin cache: 0 stored, 0 not kept by the database, 0 damaged dropped"),
              "%s", out);

    /* A damaged cubin is dropped and compiled again; a database that does not
     * keep the new one (here a trigger standing in for a full disk) makes the
     * run fail, naming what happened. */
    sqlite3 *c;
    cr_assert_eq(sqlite3_open(path, &c), SQLITE_OK);
    cr_assert_eq(sqlite3_exec(c,
                              "UPDATE cubins SET data = randomblob(size) WHERE id = "
                              "(SELECT min(id) FROM cubins);"
                              "CREATE TRIGGER full_disk BEFORE INSERT ON cubins BEGIN "
                              "SELECT RAISE(ABORT, 'database or disk is full'); END;",
                              NULL, NULL, NULL),
                 SQLITE_OK, "%s", sqlite3_errmsg(c));
    sqlite3_close(c);
    rc = run(args, out, sizeof out);
    cr_expect_eq(rc, 1, "exit %d:\n%s", rc, out);
    cr_expect(strstr(out, "cubin cache: 0 stored, 1 not kept by the database, 1 damaged dropped; "
                          "last failure: "),
              "%s", out);
    cr_expect(strstr(out, "database or disk is full"), "%s", out);
    cr_expect(strstr(out, "fastmqa-tune: the database did not keep 1 compiled cubin(s)"), "%s",
              out);
    remove_db(path);
}

Test(tune_cli, plain_run_without_gpu_fails_clearly)
{
    char why[256], path[64], args[256], out[4096];
    if (fmqa_test_gpu_available(why, sizeof why))
        cr_skip_test("a GPU is present: the no-GPU path cannot be exercised");
    temp_db(path);
    snprintf(args, sizeof args, "--db %s --problem op=decode", path);
    int rc = run(args, out, sizeof out);
    cr_expect_eq(rc, 1, "exit %d: %s", rc, out);
    cr_expect(strstr(out, "no GPU found") != NULL, "%s", out);
    cr_expect(strstr(out, "--dry-run") != NULL, "the message points at the dry run: %s", out);
    cr_expect(strstr(out, "--dry-run --all") != NULL,
              "the dry run compiles every variant only with --all: %s", out);
    remove_db(path);
}

Test(tune_cli, usage_errors_exit_2)
{
    char out[4096];
    cr_expect_eq(run("--strategy anneal", out, sizeof out), 2);
    cr_expect(strstr(out, "'anneal'") != NULL, "%s", out);
    cr_expect_eq(run("--budget 0", out, sizeof out), 2);
    cr_expect(strstr(out, "--budget") != NULL, "%s", out);
    cr_expect_eq(run("--frobnicate", out, sizeof out), 2);
    cr_expect_eq(run("--resume --problem op=decode", out, sizeof out), 2);
    cr_expect_eq(run("--help", out, sizeof out), 0);
    cr_expect(strstr(out, "--resume") != NULL && strstr(out, "--dry-run") != NULL);
    cr_expect(strstr(out, ".cache/fastmqa/tune.db") != NULL, "--db names its default: %s", out);
}

Test(tune_cli, bad_problem_file_names_the_line)
{
    char path[64], args[256], out[4096];
    temp_db(path);
    const char *file = "/tmp/fmqa_tune_cli_problems.txt";
    FILE *f = fopen(file, "w");
    cr_assert_not_null(f);
    fputs("# two problems\nop=decode,heads=32\nop=decode,heads=zero\n", f);
    fclose(f);
    snprintf(args, sizeof args, "--dry-run --db %s --problems %s", path, file);
    int rc = run(args, out, sizeof out);
    cr_expect_eq(rc, 1, "%s", out);
    cr_expect(strstr(out, "fmqa_tune_cli_problems.txt:3") != NULL, "%s", out);
    unlink(file);
    remove_db(path);
}
