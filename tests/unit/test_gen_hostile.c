/*
 * test_gen_hostile.c -- templates that try to escape the sandbox's caps: one
 * fixture directory per kind under tests/fixtures/hostile/<kind>/, holding the
 * hostile <kind>.lua beside a correct template (ok.lua).  Each hostile chunk
 * must fail to load with a message naming <kind>/<kind>.lua:<line> within a
* second of CPU time (a line of 0: any line, where the hook may stop it on
 * either), and the correct template must still load and render.
 */
#define _POSIX_C_SOURCE 200809L /* clock_gettime */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <criterion/criterion.h>

#include "gen.h"

#define HOSTILE FMQA_SOURCE_DIR "/tests/fixtures/hostile/"

static double cpu_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Opens hostile/<kind>, checks that <kind>.lua failed with a message starting
 * "<kind>/<kind>.lua:<line>: " and containing `what`, and that ok.lua loaded
 * and renders. */
static void expect_contained(const char *kind, int line, const char *what)
{
    char dir[512], file[128], want[256];
    snprintf(dir, sizeof dir, HOSTILE "%s", kind);
    snprintf(file, sizeof file, "%s.lua", kind);
    if (line) /* 0: any line */
        snprintf(want, sizeof want, "%s/%s.lua:%d: ", kind, kind, line);
    else
        snprintf(want, sizeof want, "%s/%s.lua:", kind, kind);
    gen_lib *lib = NULL;
    fmqa_err err = {0};
    double t0 = cpu_seconds();
    cr_assert_eq(gen_lib_open(dir, &lib, &err), FMQA_OK, "%s", err.msg);
    double took = cpu_seconds() - t0;
    cr_expect_lt(took, 1.0, "%s: loading took %.2f s of CPU time", kind, took);
    const gen_template *bad = NULL;
    for (int i = 0; i < gen_lib_count(lib); i++)
        if (strcmp(gen_template_file(gen_lib_at(lib, i)), file) == 0)
            bad = gen_lib_at(lib, i);
    cr_assert_not_null(bad, "%s missing", file);
    cr_expect_eq(gen_template_status(bad), FMQA_ERR_TEMPLATE);
    const char *msg = gen_template_message(bad);
    cr_expect_eq(strncmp(msg, want, strlen(want)), 0, "%s: want '%s...', got: %s", kind, want, msg);
    cr_expect_not_null(strstr(msg, what), "%s: want '%s' in: %s", kind, what, msg);

    const gen_template *ok = gen_lib_find(lib, "ok");
    cr_assert_not_null(ok, "%s: the correct template did not load", kind);
    cr_expect_eq(gen_template_status(ok), FMQA_OK);
    fmqa_problem p;
    fmqa_device_info d;
    gen_config c;
    gen_source s;
    cr_assert_eq(gen_problem_parse("op=append,batch=2", &p, NULL), FMQA_OK);
    cr_assert_eq(gen_device_preset("sm_90", &d, NULL), FMQA_OK);
    cr_assert_eq(gen_default(ok, &p, &d, &c, &err), FMQA_OK, "%s", err.msg);
    cr_expect_eq(gen_render(ok, &c, &p, &d, &s, &err), FMQA_OK, "%s: %s", kind, err.msg);
    gen_source_free(&s);
    gen_lib_close(lib);
}

Test(gen_hostile, loop_inside_pcall)
{
    expect_contained("pcall_loop", 3, "instruction limit");
}

Test(gen_hostile, loop_inside_xpcall_and_its_handler)
{
    expect_contained("xpcall_handler", 4, "instruction limit");
}

Test(gen_hostile, finalizers_are_refused)
{
    expect_contained("gc_finalizer", 2, "__gc metamethods are not allowed");
}

Test(gen_hostile, string_rep_of_nothing)
{
    expect_contained("string_rep", 4, "memory limit (64 MiB) exceeded: string.rep of 1099511627776 bytes");
}

Test(gen_hostile, backtracking_pattern)
{
    expect_contained("pattern", 3, "instruction limit");
}

Test(gen_hostile, table_move_over_empty_slots)
{
    expect_contained("table_move", 2, "instruction limit");
}

Test(gen_hostile, recursion_retried_under_pcall)
{
    expect_contained("recursion", 0, "limit");
}

Test(gen_hostile, memory_exhausted_inside_pcall)
{
    expect_contained("pcall_memory", 3, "memory limit (64 MiB) exceeded");
}

Test(gen_hostile, slow_c_calls_meet_the_time_limit)
{
    expect_contained("slow_c_calls", 4, "time limit");
}
