/*
 * plot_bandwidth.c -- plot_bandwidth_svg: measured decode bandwidth per shape
 * against the device's measured read bandwidth (the ceiling), one series per
 * contender (FastMQA and any peers), as a plot_chart.
 */
#include "plot.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *const PALETTE[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd",
                                      "#8c564b", "#e377c2", "#17becf", "#bcbd22"};
#define N_PALETTE (sizeof PALETTE / sizeof PALETTE[0])

/* Index of s in list[0..*n), appended when new; -1 when list is full. */
static long intern(const char **list, size_t *n, size_t cap, const char *s)
{
    for (size_t i = 0; i < *n; i++)
        if (!strcmp(list[i], s))
            return (long)i;
    if (*n == cap)
        return -1;
    list[*n] = s;
    return (long)(*n)++;
}

int plot_bandwidth_svg(FILE *f, const char *title, const char *subtitle, double ceiling_gbps,
                       const plot_bandwidth *pts, size_t n)
{
    const char **shapes = calloc(n ? n : 1, sizeof *shapes), *who[N_PALETTE];
    plot_mark *marks = calloc(n ? n : 1, sizeof *marks);
    char (*titles)[256] = calloc(n ? n : 1, sizeof *titles);
    size_t n_shapes = 0, n_who = 0;
    int rc = shapes && marks && titles ? 0 : -1;
    for (size_t i = 0; i < n && !rc; i++) {
        long k = intern(shapes, &n_shapes, n, pts[i].shape);
        long s = intern(who, &n_who, N_PALETTE, pts[i].who);
        if (k < 0 || s < 0) {
            rc = -1;
            break;
        }
        if (pts[i].gbps > 0 && ceiling_gbps > 0)
            snprintf(titles[i], sizeof titles[i], "%s, %s: %.0f GB/s, %.1f%% of the ceiling%s%s",
                     pts[i].shape, pts[i].who, pts[i].gbps, 100 * pts[i].gbps / ceiling_gbps,
                     pts[i].note ? "; " : "", pts[i].note ? pts[i].note : "");
        else
            snprintf(titles[i], sizeof titles[i], "%s, %s: %s", pts[i].shape, pts[i].who,
                     pts[i].note ? pts[i].note : pts[i].gbps > 0 ? "" : "failed");
        marks[i] = (plot_mark){.category = (size_t)k, .series = (size_t)s,
                               .y = pts[i].gbps > 0 ? pts[i].gbps : NAN, .lo = NAN, .hi = NAN,
                               .title = titles[i]};
    }
    plot_series series[N_PALETTE];
    for (size_t s = 0; s < n_who; s++)
        series[s] = (plot_series){who[s], PALETTE[s]};
    char label[96];
    snprintf(label, sizeof label, "read bandwidth %.0f GB/s", ceiling_gbps);
    plot_line ceiling = {ceiling_gbps, label};
    plot_chart c = {.title = title, .subtitle = subtitle, .y_label = "GB/s of KV cache read",
                    .categories = shapes, .n_categories = n_shapes, .series = series,
                    .n_series = n_who, .marks = marks, .n_marks = n,
                    .lines = ceiling_gbps > 0 ? &ceiling : NULL, .n_lines = ceiling_gbps > 0,
                    .band_label = "failed"};
    if (!rc)
        rc = plot_svg_write(f, &c);
    free(titles);
    free(marks);
    free(shapes);
    return rc;
}
