/*
 * test_tool_messages.c -- the tools say what they found: an invalid problem
 * is an error with its reason and a non-zero exit (fastmqa-gen space,
 * fastmqa-tune), a space with no legal config too; fastmqa-bench levels names
 * the model of each table and explains every FAIL row in one line.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <string.h>

#include <criterion/criterion.h>

#include "test_support.h"

#define GEN FMQA_BINARY_DIR "/generator/fastmqa-gen"
#define TUNE FMQA_BINARY_DIR "/tuner/fastmqa-tune"
#define BENCH FMQA_BINARY_DIR "/bench/fastmqa-bench"
#define BAD "op=decode,batch=1,heads=32,kv_heads=3,d=128,kv_len=100"

Test(tool_messages, invalid_problem_is_an_error_everywhere)
{
    char out[4096];
    int rc = fmqa_test_run(GEN " space decode --problem " BAD, out, sizeof out);
    cr_expect_eq(rc, 1, "fastmqa-gen space: exit %d: %s", rc, out);
    cr_expect(strstr(out, "invalid problem") && strstr(out, "not a multiple of num_kv_heads 3"),
              "%s", out);
    cr_expect_eq(strstr(out, "legal config"), NULL, "counted configs of an invalid problem");
    rc = fmqa_test_run(TUNE " --dry-run --db /nonexistent/dir/t.db --problem " BAD, out,
                       sizeof out);
    cr_expect_eq(rc, 1, "fastmqa-tune: exit %d: %s", rc, out);
    cr_expect(strstr(out, "not a multiple of num_kv_heads 3"), "%s", out);
    /* Valid, but nothing in the space fits: also an error, with the reason. */
    rc = fmqa_test_run(GEN " space decode --problem op=decode,batch=1,heads=8,kv_heads=1,d=100,"
                           "kv_len=100", out, sizeof out);
    cr_expect_eq(rc, 1, "exit %d: %s", rc, out);
    cr_expect(strstr(out, "no legal config") && strstr(out, "head_dim_qk"), "%s", out);
}

Test(tool_messages, bench_levels_names_models_and_explains_failures)
{
    static char out[16384];
    int rc = fmqa_test_run(BENCH " levels --hidden 256 --heads 4 --kv-heads 2 --seq 512", out,
                           sizeof out);
    /* FAIL rows make the exit status 1, after the tables, unless --allow-fail */
    cr_assert_eq(rc, 1, "exit %d: %s", rc, out);
    cr_expect(strstr(out, "row(s) failed (exit 1; --allow-fail when they are expected)"), "%s", out);
    cr_expect(strstr(out, "levels of the GQA-2 model"), "%s", out);
    cr_expect(strstr(out, "claims on the GQA-2 model's layer made MQA"), "%s", out);
    /* Every FAIL row has its own explanation line, and nothing else does. */
    size_t rows = 0, lines = 0;
    for (const char *p = strstr(out, " FAIL "); p; p = strstr(p + 1, " FAIL "))
        rows++;
    for (const char *p = strstr(out, "\nFAIL "); p; p = strstr(p + 1, "\nFAIL ")) {
        const char *eol = strchr(p + 1, '\n');
        cr_expect(eol && strstr(p, ": it keeps ") && strstr(p, ": it keeps ") < eol, "%.200s", p);
        lines++;
    }
    cr_expect_gt(rows, 0, "this model was expected to fail a level:\n%s", out);
    cr_expect_eq(lines, rows, "%zu FAIL rows, %zu explanations:\n%s", rows, lines, out);
    rc = fmqa_test_run(BENCH " levels --hidden 256 --heads 4 --kv-heads 2 --seq 512 --allow-fail "
                             "--no-mla", out, sizeof out);
    cr_expect_eq(rc, 0, "exit %d: %s", rc, out);
    cr_expect(strstr(out, " FAIL ") && !strstr(out, "levels of the MLA model"), "%s", out);
}
