/*
 * test_tool_messages.c -- the tools say what they found: an invalid problem
 * is an error with its reason and a non-zero exit (fastmqa-gen space,
 * fastmqa-tune), a space with no legal config too; fastmqa-bench levels names
 * the model of each table and explains every FAIL row in one line; every
 * numeric option of every tool takes a whole number in range, never a prefix
 * of junk ("5x" as 5, "1e3" as 1) nor an overflowed or non-finite value.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <string.h>

#include <criterion/criterion.h>

#include "fmqa_common.h"
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

Test(tool_messages, number_parsing_takes_the_whole_value_in_range)
{
    int64_t i = 7;
    double d = 7;
    cr_expect_eq(fmqa_parse_i64("42", 1, 100, &i), 0);
    cr_expect_eq(i, 42);
    static const char *const bad_i[] = {"", " 5", "5x", "1e3", "-1", "101", "0x10",
                                        "99999999999999999999", "5 ", "nan", NULL};
    for (int k = 0; k < 11; k++)
        cr_expect_eq(fmqa_parse_i64(bad_i[k], 1, 100, &i), -1, "'%s'", bad_i[k] ? bad_i[k] : "NULL");
    cr_expect_eq(i, 42, "a refused value leaves the output alone");
    cr_expect_eq(fmqa_parse_f64("2.5", 0, 10, &d), 0);
    cr_expect_eq(d, 2.5);
    static const char *const bad_f[] = {"", "nan", "inf", "-inf", "1e400", "2.5s", "11", " 1",
                                        NULL};
    for (int k = 0; k < 9; k++)
        cr_expect_eq(fmqa_parse_f64(bad_f[k], 0, 10, &d), -1, "'%s'", bad_f[k] ? bad_f[k] : "NULL");
}

Test(tool_messages, numeric_options_refuse_junk_overflow_and_non_finite_values)
{
    static const struct { const char *cmd, *says; } cases[] = {
        {GEN " list --threads 2x", "--threads"},
        {GEN " list --threads 99999999999", "--threads"},
        {GEN " compile decode --problem op=decode --all --limit 1e3", "--limit"},
        {TUNE " --dry-run --problem op=decode --threads 2x", "--threads"},
        {TUNE " --dry-run --problem op=decode --threads 99999999999", "--threads"},
        {TUNE " --dry-run --problem op=decode --seed -1", "--seed"},
        {TUNE " --dry-run --problem op=decode --seed 99999999999999999999999", "--seed"},
        {TUNE " --dry-run --problem op=decode --budget 1e300", "--budget"},
        {TUNE " --dry-run --problem op=decode --budget 2x", "--budget"},
        {TUNE " --dry-run --problem op=decode --budget nanm", "--budget"},
        {TUNE " --dry-run --problem op=decode --timeout nan", "--timeout"},
        {TUNE " --dry-run --problem op=decode --prune-factor inf", "--prune-factor"},
        {BENCH " decode --copies 4x", "--copies"},
        {BENCH " decode --graph 99999999999", "--graph"},
        {BENCH " decode --flush read:2x", "--flush"},
        {BENCH " bw --copies 2x", "--copies"},
        {BENCH " bw --bytes inf", "--bytes"},
        {BENCH " bw --bytes 1e300G", "--bytes"},
        {BENCH " static --threads 2x", "--threads"},
    };
    char out[8192];
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        int rc = fmqa_test_run(cases[k].cmd, out, sizeof out);
        cr_expect_eq(rc, 2, "%s: exit %d: %s", cases[k].cmd, rc, out);
        cr_expect(strstr(out, cases[k].says) != NULL, "%s: expected '%s' in:\n%s", cases[k].cmd,
                  cases[k].says, out);
    }
}
