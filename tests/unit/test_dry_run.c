/*
 * test_dry_run.c -- fastmqa-tune --dry-run as a process, output redirected to
 * a pipe: it says what it will do before it starts, reports every variant on
 * its own line with rate and time left, compiles only the default and an
 * even sample of each space unless --all, and stores each compile report
 * where fastmqa-db compiles shows it.  Uses the 20-config fixture template
 * tests/fixtures/dryrun/wide.lua, which compiles in a moment.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "test_support.h"

#define TUNE FMQA_BINARY_DIR "/tuner/fastmqa-tune"
#define DB FMQA_BINARY_DIR "/db/fastmqa-db"
#define PROBLEM "op=decode,batch=1,heads=8,kv_heads=1,d=64,kv_len=128"

static char dir[] = "/tmp/fmqa_dry_run_XXXXXX";

static void setup(void) { cr_assert_not_null(mkdtemp(dir)); }

static void teardown(void)
{
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_expect_eq(system(cmd), 0);
}

static int dry_run(const char *extra, char *out, size_t cap)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "FASTMQA_TEMPLATE_DIR=%s/tests/fixtures/dryrun %s --dry-run --threads 2 "
             "--db %s/t.db --problem " PROBLEM " %s",
             FMQA_SOURCE_DIR, TUNE, dir, extra);
    return fmqa_test_run(cmd, out, cap);
}

static size_t count(const char *s, const char *needle)
{
    size_t n = 0;
    for (const char *p = s; (p = strstr(p, needle)); p++)
        n++;
    return n;
}

/* Rows of `fastmqa-db compiles --json` with a register count. */
static size_t compile_reports(void)
{
    static char out[65536];
    char cmd[512];
    snprintf(cmd, sizeof cmd, "%s compiles --json --db %s/t.db", DB, dir);
    cr_assert_eq(fmqa_test_run(cmd, out, sizeof out), 0, "%s", out);
    cr_expect_eq(count(out, "\"template\":\"wide\""), count(out, "\"registers\":8"), "%s", out);
    return count(out, "\"registers\":");
}

TestSuite(dry_run, .init = setup, .fini = teardown, .timeout = 300);

Test(dry_run, quick_by_default_with_progress_lines_then_all)
{
    static char out[65536];
    int rc = dry_run("", out, sizeof out);
    cr_assert_eq(rc, 0, "exit %d:\n%s", rc, out);
    const char *plan = strstr(out, "8 of 20 legal variants to compile");
    const char *first = strstr(out, "dry run 1/8, ");
    cr_assert(plan && first && plan < first, "the plan comes first:\n%s", out);
    /* One plain line per variant with rate and time left: not a terminal. */
    cr_expect_eq(count(out, "\r"), 0, "a bar was drawn into a pipe:\n%s", out);
    for (int k = 1; k <= 8; k++) {
        char want[64];
        snprintf(want, sizeof want, "dry run %d/8, ", k);
        const char *line = strstr(out, want);
        cr_assert(line, "no progress line %d:\n%s", k, out);
        const char *eol = strchr(line, '\n');
        cr_assert(eol && strstr(line, "/s, ") < eol && strstr(line, " left: problem 1 wide ") < eol,
                  "line %d lacks rate or time left:\n%s", k, out);
    }
    cr_expect(strstr(out, "wide A=3,B=2: "), "the template default is compiled:\n%s", out);
    cr_expect(strstr(out, "8 variants compiled, 0 failed"), "%s", out);
    cr_expect_eq(compile_reports(), 8);

    rc = dry_run("--all", out, sizeof out);
    cr_assert_eq(rc, 0, "exit %d:\n%s", rc, out);
    cr_expect(strstr(out, "20 of 20 legal variants"), "%s", out);
    cr_expect(strstr(out, "20 compiled for sm_90 (8 from the cubin cache)"), "%s", out);
    cr_expect_eq(compile_reports(), 20);
}

Test(dry_run, all_goes_with_dry_run_only)
{
    char out[4096], cmd[512];
    snprintf(cmd, sizeof cmd, "%s --all --db %s/t.db", TUNE, dir);
    cr_expect_eq(fmqa_test_run(cmd, out, sizeof out), 2, "%s", out);
    cr_expect(strstr(out, "--all goes with --dry-run"), "%s", out);
}

/* The dry run says what it compiled for: on the sm_90 preset a template that
 * asks for sm_90a features (tests/fixtures/dryrun/wide_sm90a.lua, like
 * prefill_sm90) is built for sm_90a, the others for sm_90. */
Test(dry_run, names_the_target_each_template_compiled_for)
{
    static char out[65536];
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "FASTMQA_TEMPLATE_DIR=%s/tests/fixtures/dryrun %s --dry-run --threads 2 --arch sm_90 "
             "--db %s/t.db --problem op=prefill,batch=1,heads=8,kv_heads=8,d=64,tq=16,kv_len=16 "
             "--problem " PROBLEM,
             FMQA_SOURCE_DIR, TUNE, dir);
    int rc = fmqa_test_run(cmd, out, sizeof out);
    cr_assert_eq(rc, 0, "exit %d:\n%s", rc, out);
    cr_expect(strstr(out, "wide_sm90a   2 legal, 2 compiled for sm_90a "), "%s", out);
    cr_expect(strstr(out, "wide         20 legal, 8 compiled for sm_90 "), "%s", out);
    cr_expect(strstr(out, "10 variants compiled, 0 failed; cubins for sm_90a, sm_90\n"), "%s", out);
}
