/*
 * test_timing_method.c -- the host-side rules of the timing method (tun.h,
 * "timing"; tuner/tun_method.c): how many input copies cover the L2, what one
 * sample is (flush, launches per graph), explicit choices winning over the
 * rules, bad options refused; and bench/peers/peers.py's Python mirror of the
 * same rules (--print-timing-plan) agreeing with the C on a grid of inputs.
 */
#define _POSIX_C_SOURCE 200809L /* popen, pclose */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include <criterion/criterion.h>

#include "tun.h"

#define MIB (1024.0 * 1024.0)
static const int64_t h100_l2 = 50 << 20;

Test(timing_method, rotation_copies_exceed_twice_the_l2)
{
    /* MQA B=64 T=4096: 134 MB alone is more than 2 x 50 MiB. */
    cr_expect_eq(tun_rotation_copies(134.2e6, h100_l2), 1);
    cr_expect(tun_rotation_covers(134.2e6, 1, h100_l2));
    /* 16 MiB: 2 x 50 / 16 = 6.25, so 7 copies (112 MiB > 100 MiB), 6 do not cover. */
    cr_expect_eq(tun_rotation_copies(16 * MIB, h100_l2), 7);
    cr_expect(tun_rotation_covers(16 * MIB, 7, h100_l2));
    cr_expect(!tun_rotation_covers(16 * MIB, 6, h100_l2));
    /* Exactly 2 x L2 is not more than it. */
    cr_expect_eq(tun_rotation_copies(100 * MIB, h100_l2), 2);
    /* Small problems hit the cap and do not cover. */
    cr_expect_eq(tun_rotation_copies(1 * MIB, h100_l2), TUN_MAX_COPIES);
    cr_expect(!tun_rotation_covers(1 * MIB, TUN_MAX_COPIES, h100_l2));
    /* Unknown sizes: one copy, never covering. */
    cr_expect_eq(tun_rotation_copies(0, h100_l2), 1);
    cr_expect_eq(tun_rotation_copies(1e9, 0), 1);
    cr_expect(!tun_rotation_covers(1e9, 1, 0));
}

static tun_time_plan plan_of(double bytes, int copies, double probe_us, tun_flush flush,
                             int launches)
{
    tun_time_opts o = TUN_TIME_OPTS_INIT;
    o.bytes = bytes, o.copies = copies, o.flush = flush, o.graph_launches = launches;
    tun_time_plan p;
    fmqa_err err;
    cr_assert_eq(tun_time_plan_make(&o, h100_l2, probe_us, &p, &err), FMQA_OK, "%s", err.msg);
    return p;
}

Test(timing_method, covered_rotation_is_an_unflushed_graph_of_whole_rotations)
{
    tun_time_plan p = plan_of(134.2e6, 1, 50.0, TUN_FLUSH_AUTO, 0);
    cr_expect_eq(p.flush, TUN_FLUSH_NONE);
    cr_expect_eq(p.launches, 40, "2000 us / 50 us = 40, got %d", p.launches);
    cr_expect(p.covers);
    /* 7 copies: 40 rounds up to 42 launches, six whole rotations. */
    cr_expect_eq(plan_of(16 * MIB, 7, 50.0, TUN_FLUSH_AUTO, 0).launches, 42);
    /* A 1 us kernel: capped at 200, rounded down to whole rotations (196). */
    cr_expect_eq(plan_of(16 * MIB, 7, 1.0, TUN_FLUSH_AUTO, 0).launches, 196);
    /* A 5 ms kernel: at least TUN_GRAPH_MIN_LAUNCHES, then whole rotations. */
    cr_expect_eq(plan_of(134.2e6, 1, 5000.0, TUN_FLUSH_AUTO, 0).launches, TUN_GRAPH_MIN_LAUNCHES);
    cr_expect_eq(plan_of(16 * MIB, 7, 5000.0, TUN_FLUSH_AUTO, 0).launches, 7);
    /* An unknown probe time gives the largest graph. */
    cr_expect_eq(plan_of(134.2e6, 1, 0.0, TUN_FLUSH_AUTO, 0).launches, TUN_GRAPH_MAX_LAUNCHES);
}

Test(timing_method, small_rotation_is_single_launches_after_a_read_flush)
{
    tun_time_plan p = plan_of(1 * MIB, TUN_MAX_COPIES, 3.0, TUN_FLUSH_AUTO, 0);
    cr_expect_eq(p.flush, TUN_FLUSH_READ);
    cr_expect_eq(p.launches, 1);
    cr_expect(!p.covers);
    /* Unknown bytes never count as covering. */
    cr_expect_eq(plan_of(0, 1, 3.0, TUN_FLUSH_AUTO, 0).flush, TUN_FLUSH_READ);
}

Test(timing_method, explicit_choices_win)
{
    /* A memset flush (the study mode) on a covering rotation: single launches. */
    tun_time_plan p = plan_of(134.2e6, 1, 50.0, TUN_FLUSH_MEMSET, 0);
    cr_expect_eq(p.flush, TUN_FLUSH_MEMSET);
    cr_expect_eq(p.launches, 1);
    /* No flush on a small rotation: a graph, whatever the L2 keeps. */
    p = plan_of(1 * MIB, 8, 50.0, TUN_FLUSH_NONE, 0);
    cr_expect_eq(p.flush, TUN_FLUSH_NONE);
    cr_expect_eq(p.launches, 40);
    /* An explicit graph size is taken as given, flush or not. */
    cr_expect_eq(plan_of(134.2e6, 4, 50.0, TUN_FLUSH_NONE, 20).launches, 20);
    p = plan_of(134.2e6, 1, 50.0, TUN_FLUSH_READ, 5);
    cr_expect_eq(p.flush, TUN_FLUSH_READ);
    cr_expect_eq(p.launches, 5);
}

Test(timing_method, bad_options_are_refused)
{
    tun_time_opts o = TUN_TIME_OPTS_INIT;
    tun_time_plan p;
    fmqa_err err;
    o.copies = 0;
    cr_expect_eq(tun_time_plan_make(&o, h100_l2, 1, &p, &err), FMQA_ERR_INVALID_ARGUMENT);
    cr_expect(strstr(err.msg, "copies 0") != NULL, "%s", err.msg);
    o.copies = TUN_MAX_COPIES + 1;
    cr_expect_eq(tun_time_plan_make(&o, h100_l2, 1, &p, &err), FMQA_ERR_INVALID_ARGUMENT);
    o.copies = 1, o.graph_launches = -1;
    cr_expect_eq(tun_time_plan_make(&o, h100_l2, 1, &p, &err), FMQA_ERR_INVALID_ARGUMENT);
    o.graph_launches = 0, o.flush = (tun_flush)7;
    cr_expect_eq(tun_time_plan_make(&o, h100_l2, 1, &p, &err), FMQA_ERR_INVALID_ARGUMENT);
    cr_expect_eq(tun_time_plan_make(NULL, h100_l2, 1, &p, &err), FMQA_ERR_INVALID_ARGUMENT);
}

Test(timing_method, flush_names_round_trip)
{
    for (int f = TUN_FLUSH_AUTO; f <= TUN_FLUSH_MEMSET; f++) {
        tun_flush back;
        cr_expect_eq(tun_flush_parse(tun_flush_name((tun_flush)f), &back, NULL), FMQA_OK);
        cr_expect_eq((int)back, f);
    }
    tun_flush x;
    fmqa_err err;
    cr_expect_eq(tun_flush_parse("l2", &x, &err), FMQA_ERR_INVALID_ARGUMENT);
    cr_expect(strstr(err.msg, "'l2'") != NULL, "%s", err.msg);
}

Test(timing_method, stats_median_and_spread)
{
    /* The spread the reports quote: (p80 - p20) / median, type-7 percentiles. */
    const double us[] = {10, 11, 12, 13, 100};
    tun_stats s;
    cr_assert_eq(tun_stats_compute(us, 5, &s, NULL), FMQA_OK);
    cr_expect_float_eq(s.median, 12.0, 1e-12);
    cr_expect_float_eq(s.p20, 10.8, 1e-12);
    cr_expect_float_eq(s.p80, 30.4, 1e-12);
    cr_expect_float_eq(s.spread, (30.4 - 10.8) / 12.0, 1e-12);
}

static const double sizes[] = {1 * MIB, 16 * MIB, 100 * MIB, 134.2e6};
static const double probes[] = {1.0, 50.0, 5000.0};
#define N_SIZES (sizeof sizes / sizeof sizes[0])
#define N_PROBES (sizeof probes / sizeof probes[0])

Test(timing_method, peers_py_mirrors_the_rules)
{
    if (system("command -v python3 >/dev/null 2>&1") != 0)
        cr_skip_test("python3 not found: peers.py's timing rules not checked");
    /* One python run over the whole grid: "B,C,L2,US;B,C,L2,US;..." */
    char cmd[2048];
    int len = snprintf(cmd, sizeof cmd,
                       "python3 '" FMQA_SOURCE_DIR "/bench/peers/peers.py' --print-timing-plan '");
    for (size_t i = 0; i < N_SIZES; i++)
        for (size_t j = 0; j < N_PROBES; j++)
            len += snprintf(cmd + len, sizeof cmd - (size_t)len, "%s%.0f,%d,%lld,%g",
                            i || j ? ";" : "", sizes[i], tun_rotation_copies(sizes[i], h100_l2),
                            (long long)h100_l2, probes[j]);
    snprintf(cmd + len, sizeof cmd - (size_t)len, "'");
    FILE *p = popen(cmd, "r");
    cr_assert(p != NULL, "popen failed");
    char line[256];
    for (size_t i = 0; i < N_SIZES; i++)
        for (size_t j = 0; j < N_PROBES; j++) {
            int copies = tun_rotation_copies(sizes[i], h100_l2);
            tun_time_plan c = plan_of(sizes[i], copies, probes[j], TUN_FLUSH_AUTO, 0);
            char flush[16];
            int launches, covers, copies_py;
            cr_assert(fgets(line, sizeof line, p) != NULL, "peers.py printed too few lines");
            cr_assert_eq(sscanf(line, "{\"flush\": \"%15[a-z]\", \"launches\": %d, "
                                      "\"covers\": %d, \"copies_for\": %d}",
                                flush, &launches, &covers, &copies_py),
                         4, "unexpected output: %s", line);
            cr_expect_str_eq(flush, tun_flush_name(c.flush), "%.0f B, %g us", sizes[i],
                             probes[j]);
            cr_expect_eq(launches, c.launches, "%.0f B, %g us", sizes[i], probes[j]);
            cr_expect_eq(covers, c.covers);
            cr_expect_eq(copies_py, copies, "%.0f B", sizes[i]);
        }
    int rc = pclose(p);
    cr_expect(WIFEXITED(rc) && WEXITSTATUS(rc) == 0, "%s failed (%d)", cmd, rc);
}
