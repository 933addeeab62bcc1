/*
 * fastmqa_db_plot.c -- `fastmqa-db plot`: the trials of each problem on each
 * device as an SVG chart (plot/plot.h), from db_list_plot_trials.
 *
 * One category per (template, config), fastest config first; one mark per
 * trial, coloured by status; a trial with no median (it failed before it was
 * timed) sits in the band under the axis in its status's row.  The value
 * axis is logarithmic: configs often differ by orders of magnitude.
 */
#define _POSIX_C_SOURCE 200809L
#include "fastmqa_db_plot.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "plot.h"

static const char *const STATUS_COLOR[DB_TRIAL_STATUS_COUNT] = {
    "#1f77b4", "#ff7f0e", "#9467bd", "#8c564b", "#d62728", "#7f7f7f"};

enum { C_PROBLEM_ID, C_PROBLEM, C_DEVICE_ID, C_DEVICE, C_TEMPLATE, C_TRIAL, C_CONFIG, C_STATUS,
       C_MEDIAN, C_P20, C_P80, C_BEST, C_DEFAULT, C_COUNT };

static const char *cell(const db_rows *r, size_t row, int col)
{
    const char *s = r->cells[row * (size_t)r->ncols + (size_t)col];
    return s ? s : "";
}

static double num(const db_rows *r, size_t row, int col)
{
    double v = atof(cell(r, row, col));
    return v > 0 ? v : NAN;
}

static int same_group(const db_rows *r, size_t a, size_t b)
{
    return !strcmp(cell(r, a, C_PROBLEM_ID), cell(r, b, C_PROBLEM_ID)) &&
           !strcmp(cell(r, a, C_DEVICE_ID), cell(r, b, C_DEVICE_ID));
}

static int same_config(const db_rows *r, size_t a, size_t b)
{
    return !strcmp(cell(r, a, C_TEMPLATE), cell(r, b, C_TEMPLATE)) &&
           !strcmp(cell(r, a, C_CONFIG), cell(r, b, C_CONFIG));
}

/* Owned texts of one chart, freed together. */
typedef struct chart_text {
    char **categories, **titles;
    size_t n_categories, n_titles;
} chart_text;

static void chart_text_free(chart_text *t)
{
    for (size_t i = 0; i < t->n_categories; i++)
        free(t->categories[i]);
    for (size_t i = 0; i < t->n_titles; i++)
        free(t->titles[i]);
    free(t->categories);
    free(t->titles);
}

static char *format(const char *fmt, const char *a, const char *b)
{
    size_t n = strlen(fmt) + strlen(a) + strlen(b) + 1;
    char *s = malloc(n);
    if (s)
        snprintf(s, n, fmt, a, b);
    return s;
}

/* Marks and categories of rows [b, e); 0, or -1 out of memory. */
static int build(const db_rows *r, size_t b, size_t e, plot_mark *marks, chart_text *t,
                 char *best, size_t best_cap)
{
    int templates = 1;
    for (size_t i = b + 1; i < e; i++)
        templates += strcmp(cell(r, i, C_TEMPLATE), cell(r, i - 1, C_TEMPLATE)) != 0;
    for (size_t i = b; i < e; i++) {
        if (i == b || !same_config(r, i, i - 1)) {
            char *c = templates > 1 ? format("%s %s", cell(r, i, C_TEMPLATE), cell(r, i, C_CONFIG))
                                    : format("%s%s", "", cell(r, i, C_CONFIG));
            if (!c)
                return -1;
            t->categories[t->n_categories++] = c;
        }
        db_trial_status status = DB_TRIAL_OK;
        db_trial_status_parse(cell(r, i, C_STATUS), &status, NULL);
        int is_best = atoi(cell(r, i, C_BEST)), is_default = atoi(cell(r, i, C_DEFAULT));
        char title[512];
        snprintf(title, sizeof title, "trial %s: %s: %s, median %s us (p20 %s, p80 %s)%s%s",
                 cell(r, i, C_TRIAL), t->categories[t->n_categories - 1], cell(r, i, C_STATUS),
                 cell(r, i, C_MEDIAN), cell(r, i, C_P20), cell(r, i, C_P80),
                 is_best ? ", best" : "", is_default ? ", template default" : "");
        if (!(t->titles[t->n_titles++] = format("%s%s", title, "")))
            return -1;
        if (is_best)
            snprintf(best, best_cap, "%s at %s us", t->categories[t->n_categories - 1],
                     cell(r, i, C_MEDIAN));
        marks[i - b] = (plot_mark){.category = t->n_categories - 1, .series = status,
                                   .y = num(r, i, C_MEDIAN), .lo = num(r, i, C_P20),
                                   .hi = num(r, i, C_P80), .title = t->titles[t->n_titles - 1],
                                   .cls = is_best && is_default ? "winner default"
                                          : is_best           ? "winner"
                                          : is_default        ? "default"
                                                              : NULL};
    }
    return 0;
}

static fmqa_status plot_group(const db_rows *r, size_t b, size_t e, const char *dir,
                              FILE *report, fmqa_err *err)
{
    size_t n = e - b;
    plot_mark *marks = calloc(n, sizeof *marks);
    chart_text t = {calloc(n, sizeof(char *)), calloc(n, sizeof(char *)), 0, 0};
    char best[512] = "none", path[4096], title[256], subtitle[1024];
    fmqa_status st = FMQA_OK;
    if (!marks || !t.categories || !t.titles || build(r, b, e, marks, &t, best, sizeof best))
        st = fmqa_err_set(err, FMQA_ERR_OUT_OF_MEMORY, "out of memory");
    plot_series series[DB_TRIAL_STATUS_COUNT];
    for (int s = 0; s < DB_TRIAL_STATUS_COUNT; s++)
        series[s] = (plot_series){db_trial_status_name((db_trial_status)s), STATUS_COLOR[s]};
    snprintf(title, sizeof title, "problem %s on %s: %zu trials", cell(r, b, C_PROBLEM_ID),
             cell(r, b, C_DEVICE), n);
    snprintf(subtitle, sizeof subtitle, "%s; best: %s", cell(r, b, C_PROBLEM), best);
    snprintf(path, sizeof path, "%s/problem-%s-device-%s.svg", dir, cell(r, b, C_PROBLEM_ID),
             cell(r, b, C_DEVICE_ID));
    plot_chart c = {.title = title, .subtitle = subtitle,
                    .y_label = "median time per call (us), bar: p20-p80", .log_y = 1,
                    .categories = (const char *const *)t.categories,
                    .n_categories = t.n_categories, .series = series,
                    .n_series = DB_TRIAL_STATUS_COUNT, .marks = marks, .n_marks = n,
                    .band_label = "no time"};
    FILE *f = st == FMQA_OK ? fopen(path, "w") : NULL;
    if (st == FMQA_OK && !f)
        st = fmqa_err_set(err, FMQA_ERR_IO, "%s: %s", path, strerror(errno));
    if (f && (plot_svg_write(f, &c) != 0) + (fclose(f) != 0))
        st = fmqa_err_set(err, FMQA_ERR_IO, "%s: could not write the chart", path);
    if (st == FMQA_OK)
        fprintf(report, "%s: %zu trials of %zu configs\n", path, n, t.n_categories);
    chart_text_free(&t);
    free(marks);
    return st;
}

fmqa_status db_plot_write(db_t *db, const char *dir, int64_t problem_id, FILE *report,
                          fmqa_err *err)
{
    db_rows r = {0};
    fmqa_status st = db_list_plot_trials(db, problem_id, &r, err);
    if (st == FMQA_OK && r.ncols != C_COUNT)
        st = fmqa_err_set(err, FMQA_ERR_INTERNAL, "plot: %d columns, expected %d", r.ncols,
                          C_COUNT);
    if (st == FMQA_OK && r.nrows == 0)
        st = problem_id > 0 ? fmqa_err_set(err, FMQA_ERR_NOT_FOUND, "%s: problem %lld has no trials",
                                           db_path(db), (long long)problem_id)
                            : fmqa_err_set(err, FMQA_ERR_NOT_FOUND, "%s: no trials to plot",
                                           db_path(db));
    for (size_t b = 0, e; st == FMQA_OK && b < r.nrows; b = e) {
        for (e = b + 1; e < r.nrows && same_group(&r, b, e);)
            e++;
        st = plot_group(&r, b, e, dir, report, err);
    }
    db_rows_free(&r);
    return st;
}
