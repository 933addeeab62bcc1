/*
 * test_db_plot.c -- `fastmqa-db plot` on a fixture database: one SVG per
 * problem, well-formed XML (python3's xml.etree, tests/support/svg_marks.py),
 * one mark per trial with its status, the best entry and the template
 * default's trials marked, trials without a time in the band.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "db.h"
#include "test_support.h"

#define DBTOOL FMQA_BINARY_DIR "/db/fastmqa-db"
#define MARKS "python3 " FMQA_SOURCE_DIR "/tests/support/svg_marks.py"

static char dir[] = "/tmp/fmqa_db_plot_XXXXXX";
static char path[256];

static void setup(void)
{
    cr_assert_not_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/tune.db", dir);
}

static void teardown(void)
{
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_expect_eq(system(cmd), 0);
}

TestSuite(db_plot, .init = setup, .fini = teardown);

static size_t count(const char *s, const char *needle)
{
    size_t n = 0;
    for (const char *p = s; (p = strstr(p, needle)); p++)
        n++;
    return n;
}

/* Problem 1: eight trials of seven configs, every kind of mark; problem 2:
 * one trial. */
static void fixture(void)
{
    db_t *db;
    fmqa_err err;
    fmqa_device_info d = fmqa_test_device("sm_90");
    fmqa_problem p = fmqa_test_problem("op=decode,batch=8,heads=32,kv_heads=1,d=128,kv_len=4096");
    fmqa_problem q = fmqa_test_problem("op=decode,batch=1,heads=8,kv_heads=8,d=64,kv_len=512");
    cr_assert_eq(db_open(path, DB_READ_WRITE, 0, &db, &err), FMQA_OK, "%s", err.msg);
    int64_t dflt = fmqa_test_db_trial(db, &d, "decode", "h1", &p, "D=1", DB_TRIAL_OK, 10, 9, 11);
    cr_assert_eq(db_best_update(db, dflt, 10, NULL, &err), FMQA_OK, "%s", err.msg);
    fmqa_test_db_best(db, &d, "decode", "h1", &p, "A=1", 5, 10);
    fmqa_test_db_trial(db, &d, "decode", "h1", &p, "A=1", DB_TRIAL_OK, 5.5, 5, 6);
    fmqa_test_db_trial(db, &d, "decode", "h1", &p, "B=1", DB_TRIAL_OK, 20, 18, 25);
    fmqa_test_db_trial(db, &d, "decode", "h1", &p, "C=1", DB_TRIAL_COMPILE_ERROR, 0, 0, 0);
    fmqa_test_db_trial(db, &d, "decode", "h1", &p, "E=1", DB_TRIAL_WRONG_RESULT, 3, 3, 3);
    fmqa_test_db_trial(db, &d, "decode", "h1", &p, "F=1", DB_TRIAL_TIMEOUT, 0, 0, 0);
    fmqa_test_db_trial(db, &d, "decode", "h1", &p, "G=1", DB_TRIAL_PRUNED, 40, 40, 40);
    fmqa_test_db_best(db, &d, "decode", "h1", &q, "A=2", 7, 0);
    db_close(db);
}

Test(db_plot, one_svg_per_problem_one_mark_per_trial)
{
    static char out[16384];
    char cmd[512];
    fixture();
    snprintf(cmd, sizeof cmd, "%s plot %s --db %s", DBTOOL, dir, path);
    int rc = fmqa_test_run(cmd, out, sizeof out);
    cr_assert_eq(rc, 0, "exit %d: %s", rc, out);
    cr_expect(strstr(out, "problem-1-device-1.svg: 8 trials of 7 configs"), "%s", out);
    cr_expect(strstr(out, "problem-2-device-1.svg: 1 trials of 1 configs"), "%s", out);

    snprintf(cmd, sizeof cmd, MARKS " %s/problem-1-device-1.svg", dir);
    rc = fmqa_test_run(cmd, out, sizeof out);
    cr_assert_eq(rc, 0, "not well-formed: %s", out);
    cr_expect(strstr(out, "marks 8\n"), "%s", out);
    cr_expect_eq(count(out, "mark winner\tok\ttrial 2: A=1: ok, median 5"), 1, "%s", out);
    cr_expect_eq(count(out, "winner"), 1, "%s", out);
    cr_expect_eq(count(out, "mark default\tok\ttrial 1: D=1: ok"), 1, "%s", out);
    cr_expect_eq(count(out, "default\t"), 1, "%s", out);
    cr_expect_eq(count(out, "\tcompile_error\t"), 1, "%s", out);
    cr_expect_eq(count(out, "\ttimeout\t"), 1, "%s", out);
    cr_expect_eq(count(out, "\twrong_result\t"), 1, "%s", out);
    cr_expect_eq(count(out, "\tpruned\t"), 1, "%s", out);
    cr_expect_eq(count(out, "\tok\t"), 4, "%s", out);
    /* Fastest config first: the categories follow the ok medians. */
    const char *a = strstr(out, ": A=1:"), *dd = strstr(out, ": D=1:"), *b = strstr(out, ": B=1:");
    cr_expect(a && dd && b && a < dd && dd < b, "%s", out);

    snprintf(cmd, sizeof cmd, MARKS " %s/problem-2-device-1.svg", dir);
    rc = fmqa_test_run(cmd, out, sizeof out);
    cr_assert_eq(rc, 0, "not well-formed: %s", out);
    cr_expect(strstr(out, "marks 1\n"), "%s", out);
}

Test(db_plot, nothing_to_plot_is_an_error)
{
    char out[4096], cmd[512];
    fixture();
    snprintf(cmd, sizeof cmd, "%s plot %s --problem 99 --db %s", DBTOOL, dir, path);
    cr_expect_eq(fmqa_test_run(cmd, out, sizeof out), 1, "%s", out);
    cr_expect(strstr(out, "problem 99 has no trials"), "%s", out);
}
