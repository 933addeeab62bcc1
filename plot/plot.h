/*
 * plot.h -- self-contained SVG charts for the tools (fastmqa-db plot,
 * fastmqa-bench decode --svg): one chart of marks over categories, each mark
 * a value with an optional spread, coloured by series, with horizontal
 * reference lines (a device's ceiling) and a band under the axis for marks
 * without a value (failed trials, by series).
 *
 * The SVG has no scripts, fonts or external references; each mark is one
 * <g class="mark ..."> element with a <title> tooltip, so a test (or a
 * script) can count and read the marks.  Not part of libfastmqa.
 */
#ifndef FMQA_PLOT_H
#define FMQA_PLOT_H

#include <stddef.h>
#include <stdio.h>

typedef struct plot_series {
    const char *name;           /* legend text and the mark's data-series   */
    const char *color;          /* CSS colour, e.g. "#1f77b4"               */
} plot_series;

typedef struct plot_mark {
    size_t category;            /* x slot, < n_categories                   */
    size_t series;              /* < n_series                               */
    double y;                   /* the value; NAN: none (drawn in the band) */
    double lo, hi;              /* spread drawn as a bar; NAN when none     */
    const char *cls;            /* extra classes ("winner", "default"); may
                                   be NULL: winners get a ring, defaults a
                                   diamond                                  */
    const char *title;          /* tooltip; may be NULL                     */
} plot_mark;

typedef struct plot_line {
    double y;
    const char *label;          /* drawn at the line's right end            */
} plot_line;

typedef struct plot_chart {
    const char *title, *subtitle; /* subtitle may be NULL                    */
    const char *y_label;
    int log_y;                  /* log10 axis (values must be > 0)          */
    const char *const *categories;
    size_t n_categories;
    const plot_series *series;
    size_t n_series;
    const plot_mark *marks;
    size_t n_marks;
    const plot_line *lines;     /* may be NULL                              */
    size_t n_lines;
    const char *band_label;     /* label of the band of marks without value */
} plot_chart;

/* Writes the chart as one SVG document.  0, or -1 if writing failed or the
 * chart is inconsistent (a mark's category or series out of range). */
int plot_svg_write(FILE *f, const plot_chart *c);

/* One measured decode bandwidth: shape (the category), who measured it
 * ("FastMQA" or a peer: the series, at most 8), GB/s (<= 0: it failed, drawn
 * in the band) and a tooltip note (may be NULL). */
typedef struct plot_bandwidth {
    const char *shape;
    const char *who;
    double gbps;
    const char *note;
} plot_bandwidth;

/* The bandwidth chart of fastmqa-bench decode --svg: every figure against the
 * device's read bandwidth (ceiling_gbps, a dashed line; 0 = unknown), linear
 * axis from 0.  0, or -1 on a write error, out of memory or more than 8
 * contenders. */
int plot_bandwidth_svg(FILE *f, const char *title, const char *subtitle, double ceiling_gbps,
                       const plot_bandwidth *pts, size_t n);

#endif /* FMQA_PLOT_H */
