/*
 * test_plot_svg.c -- the SVG writer behind fastmqa-bench decode --svg, fed a
 * results array as the benchmark feeds it (no GPU needed): well-formed XML
 * (python3's xml.etree via tests/support/svg_marks.py), one mark per figure
 * with its contender, failures in the band, the ceiling line, and text that
 * needs escaping kept intact.
 */
#define _DEFAULT_SOURCE
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "plot.h"
#include "test_support.h"

#define MARKS "python3 " FMQA_SOURCE_DIR "/tests/support/svg_marks.py"

static size_t count(const char *s, const char *needle)
{
    size_t n = 0;
    for (const char *p = s; (p = strstr(p, needle)); p++)
        n++;
    return n;
}

/* Writes the chart to a temporary file and returns svg_marks.py's report. */
static int marks_of(const plot_bandwidth *pts, size_t n, double ceiling, char *out, size_t cap)
{
    char path[] = "/tmp/fmqa_plot_XXXXXX.svg", cmd[256];
    int fd = mkstemps(path, 4);
    cr_assert_geq(fd, 0);
    FILE *f = fdopen(fd, "w");
    cr_assert_eq(plot_bandwidth_svg(f, "decode <bandwidth> & \"peers\"", NULL, ceiling, pts, n), 0);
    cr_assert_eq(fclose(f), 0);
    snprintf(cmd, sizeof cmd, MARKS " %s", path);
    int rc = fmqa_test_run(cmd, out, cap);
    unlink(path);
    return rc;
}

Test(plot_svg, bandwidth_against_ceiling_and_peers)
{
    const plot_bandwidth pts[] = {
        {"mqa f16 B=1 T=131072", "FastMQA", 3100, "decode BLOCK_N=64"},
        {"mqa f16 B=1 T=131072", "torch sdpa (flash)", 2500, NULL},
        {"mqa f16 B=64 T=4096", "FastMQA", 3600, NULL},
        {"mqa f16 B=64 T=4096", "torch sdpa (flash)", 0, "refused <GQA>"},
        {"gqa8 f16 B=64 T=4096", "FastMQA", 0, "verification failed"},
    };
    char out[8192];
    int rc = marks_of(pts, 5, 4000, out, sizeof out);
    cr_assert_eq(rc, 0, "not well-formed: %s", out);
    cr_expect(strstr(out, "marks 5\n"), "%s", out);
    cr_expect_eq(count(out, "mark\tFastMQA\t"), 3, "%s", out);
    cr_expect_eq(count(out, "mark\ttorch sdpa (flash)\t"), 2, "%s", out);
    cr_expect(strstr(out, "mqa f16 B=1 T=131072, FastMQA: 3100 GB/s, 77.5% of the ceiling; "
                          "decode BLOCK_N=64"), "%s", out);
    cr_expect(strstr(out, "torch sdpa (flash): refused <GQA>"), "escaped text intact: %s", out);
    cr_expect(strstr(out, "gqa8 f16 B=64 T=4096, FastMQA: verification failed"), "%s", out);
    cr_expect_eq(count(out, "line "), 1, "one ceiling line: %s", out);
}

Test(plot_svg, marks_out_of_range_are_refused)
{
    const char *cats[] = {"a"};
    plot_series s = {"x", "#000"};
    plot_mark m = {.category = 1, .series = 0, .y = 1, .lo = NAN, .hi = NAN};
    plot_chart c = {.title = "t", .categories = cats, .n_categories = 1, .series = &s,
                    .n_series = 1, .marks = &m, .n_marks = 1};
    FILE *f = tmpfile();
    cr_expect_eq(plot_svg_write(f, &c), -1);
    fclose(f);
}
