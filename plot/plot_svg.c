/*
 * plot_svg.c -- plot_svg_write: lays a plot_chart out on a fixed grid
 * (categories evenly spaced left to right, the value axis linear from 0 or
 * log10 over whole decades) and writes it as SVG 1.1 with inline styles.
 *
 * Layout, top to bottom: title and subtitle, legend, plot area with value
 * ticks and reference lines, one row per series for marks without a value,
 * category labels turned 60 degrees.  Every text is XML-escaped.
 */
#include "plot.h"

#include <math.h>
#include <string.h>

#define LEFT 160.0
#define RIGHT 150.0
#define TOP 84.0
#define PLOT_H 320.0
#define SLOT_MIN 14.0
#define PLOT_W_MIN 420.0
#define BAND_ROW 16.0
#define LABELS_H 200.0

typedef struct layout {
    double x0, w, y0, h, slot;      /* plot area and one category's width */
    double vmin, vmax;              /* axis range (log10 units if log_y)  */
    int log_y;
} layout;

static void xml_text(FILE *f, const char *s)
{
    for (; s && *s; s++) {
        switch (*s) {
        case '&': fputs("&amp;", f); break;
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '"': fputs("&quot;", f); break;
        default:
            if ((unsigned char)*s >= 0x20 || *s == '\n' || *s == '\t')
                fputc(*s, f);
        }
    }
}

static double axis_value(const layout *L, double v) { return L->log_y ? log10(v) : v; }

static double y_of(const layout *L, double v)
{
    double t = (axis_value(L, v) - L->vmin) / (L->vmax - L->vmin);
    return L->y0 + L->h * (1 - t);
}

static double x_of(const layout *L, size_t category) { return L->x0 + L->slot * (category + 0.5); }

static int usable(const plot_chart *c, double v) { return isfinite(v) && (!c->log_y || v > 0); }

/* The axis range: whole decades (log) or 0 to a 1-2-5 step above the max. */
static void value_range(const plot_chart *c, layout *L)
{
    double lo = INFINITY, hi = -INFINITY;
    for (size_t i = 0; i < c->n_marks; i++) {
        const plot_mark *m = &c->marks[i];
        double v[3] = {m->y, m->lo, m->hi};
        for (int k = 0; k < 3; k++)
            if (usable(c, v[k]))
                lo = fmin(lo, v[k]), hi = fmax(hi, v[k]);
    }
    for (size_t i = 0; i < c->n_lines; i++)
        if (usable(c, c->lines[i].y))
            lo = fmin(lo, c->lines[i].y), hi = fmax(hi, c->lines[i].y);
    if (!isfinite(lo))
        lo = hi = 1;
    if (c->log_y) {
        L->vmin = floor(log10(lo));
        L->vmax = ceil(log10(hi));
        if (L->vmax <= L->vmin)
            L->vmax = L->vmin + 1;
        return;
    }
    double step = pow(10, floor(log10(hi > 0 ? hi : 1)));
    L->vmin = 0;
    L->vmax = step * ceil(hi * 1.05 / step);
    if (L->vmax <= 0)
        L->vmax = 1;
}

static void ticks(FILE *f, const layout *L)
{
    double x1 = L->x0 + L->w;
    for (int i = 0; i <= 50; i++) {
        double v;
        if (L->log_y) {
            int decade = (int)L->vmin + i / 3;
            v = pow(10, decade) * (double[]){1, 2, 5}[i % 3];
            if (log10(v) > L->vmax + 1e-9)
                break;
        } else {
            double step = pow(10, floor(log10(L->vmax))) / 2;
            v = i * step;
            if (v > L->vmax + 1e-9 * L->vmax)
                break;
        }
        double y = y_of(L, v);
        fprintf(f, "<line class=\"grid\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>\n",
                L->x0, y, x1, y);
        fprintf(f, "<text class=\"tick\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%g</text>\n",
                L->x0 - 6, y + 4, v);
    }
}

static void mark(FILE *f, const plot_chart *c, const layout *L, const plot_mark *m,
                 const double *band_y)
{
    const plot_series *s = &c->series[m->series];
    double x = x_of(L, m->category), y;
    fprintf(f, "<g class=\"mark%s%s\" data-series=\"", m->cls ? " " : "", m->cls ? m->cls : "");
    xml_text(f, s->name);
    fputs("\">", f);
    if (usable(c, m->y)) {
        y = y_of(L, m->y);
        if (usable(c, m->lo) && usable(c, m->hi))
            fprintf(f, "<line class=\"spread\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" "
                       "stroke=\"%s\"/>",
                    x, y_of(L, m->lo), x, y_of(L, m->hi), s->color);
        fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3.5\" fill=\"%s\"/>", x, y, s->color);
    } else {
        y = band_y[m->series];
        fprintf(f, "<path d=\"M%.1f %.1fl6 6m0 -6l-6 6\" stroke=\"%s\" stroke-width=\"2\"/>",
                x - 3, y - 3, s->color);
    }
    if (m->cls && strstr(m->cls, "winner"))
        fprintf(f, "<circle class=\"ring\" cx=\"%.1f\" cy=\"%.1f\" r=\"8\"/>", x, y);
    if (m->cls && strstr(m->cls, "default"))
        fprintf(f, "<path class=\"diamond\" d=\"M%.1f %.1fl7 7l-7 7l-7 -7z\"/>", x, y - 7);
    fputs("<title>", f);
    xml_text(f, m->title);
    fputs("</title></g>\n", f);
}

/* Width of a legend entry: ~7 px per character of "NAME (COUNT)" plus the dot. */
static double legend_step(const char *name) { return 20 + 7.0 * (double)(strlen(name) + 6); }

/* Where the legend ends: series, then the "best" and "template default" keys. */
static double legend_end(const plot_chart *c)
{
    double x = LEFT;
    for (size_t s = 0; s < c->n_series; s++)
        x += legend_step(c->series[s].name);
    return x + 200;
}

static void legend(FILE *f, const plot_chart *c, const size_t *count)
{
    double x = LEFT;
    for (size_t s = 0; s < c->n_series; s++) {
        fprintf(f, "<circle cx=\"%.1f\" cy=\"62\" r=\"4\" fill=\"%s\"/>"
                   "<text class=\"legend\" x=\"%.1f\" y=\"66\">",
                x, c->series[s].color, x + 8);
        xml_text(f, c->series[s].name);
        fprintf(f, " (%zu)</text>\n", count[s]);
        x += legend_step(c->series[s].name);
    }
    int winner = 0, dflt = 0;
    for (size_t i = 0; i < c->n_marks; i++) {
        winner |= c->marks[i].cls && strstr(c->marks[i].cls, "winner") != NULL;
        dflt |= c->marks[i].cls && strstr(c->marks[i].cls, "default") != NULL;
    }
    if (winner)
        fprintf(f, "<circle class=\"ring\" cx=\"%.1f\" cy=\"62\" r=\"6\"/>"
                   "<text class=\"legend\" x=\"%.1f\" y=\"66\">best</text>\n",
                x + 6, x + 16);
    if (dflt)
        fprintf(f, "<path class=\"diamond\" d=\"M%.1f 56l6 6l-6 6l-6 -6z\"/>"
                   "<text class=\"legend\" x=\"%.1f\" y=\"66\">template default</text>\n",
                x + 66, x + 76);
}

int plot_svg_write(FILE *f, const plot_chart *c)
{
    layout L = {.log_y = c->log_y};
    size_t count[64] = {0};
    double band_y[64];
    int band_rows = 0;
    if (c->n_series > 64)
        return -1;
    for (size_t i = 0; i < c->n_marks; i++) {
        if (c->marks[i].category >= c->n_categories || c->marks[i].series >= c->n_series)
            return -1;
        count[c->marks[i].series]++;
    }
    L.slot = fmax(SLOT_MIN, PLOT_W_MIN / (double)(c->n_categories ? c->n_categories : 1));
    L.x0 = LEFT, L.w = L.slot * (double)(c->n_categories ? c->n_categories : 1);
    L.y0 = TOP, L.h = PLOT_H;
    value_range(c, &L);
    /* One band row per series that has marks without a value. */
    for (size_t s = 0; s < c->n_series; s++) {
        band_y[s] = 0;
        for (size_t i = 0; i < c->n_marks && !band_y[s]; i++)
            if (c->marks[i].series == s && !usable(c, c->marks[i].y))
                band_y[s] = L.y0 + L.h + 22 + BAND_ROW * band_rows++;
    }
    double labels_y = L.y0 + L.h + 22 + BAND_ROW * band_rows + 8;
    double width = fmax(L.x0 + L.w + RIGHT, legend_end(c)), height = labels_y + LABELS_H;
    fprintf(f, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
               "<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" width=\"%.0f\" "
               "height=\"%.0f\" viewBox=\"0 0 %.0f %.0f\" font-family=\"sans-serif\" "
               "font-size=\"11\">\n"
               "<style>.grid{stroke:#ddd}.axis{stroke:#333}.spread{stroke-width:2;"
               "stroke-opacity:0.6}.ring{fill:none;stroke:#d62728;stroke-width:2}"
               ".diamond{fill:none;stroke:#111;stroke-width:1.5}.ref{stroke:#d62728;"
               "stroke-dasharray:6 3}.title{font-size:15px;font-weight:bold}.tick{fill:#444}"
               "</style>\n<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n",
            width, height, width, height);
    fputs("<text class=\"title\" x=\"10\" y=\"22\">", f);
    xml_text(f, c->title);
    fputs("</text>\n<text x=\"10\" y=\"40\">", f);
    xml_text(f, c->subtitle);
    fputs("</text>\n", f);
    legend(f, c, count);
    ticks(f, &L);
    fprintf(f, "<line class=\"axis\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>\n"
               "<line class=\"axis\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>\n",
            L.x0, L.y0, L.x0, L.y0 + L.h, L.x0, L.y0 + L.h, L.x0 + L.w, L.y0 + L.h);
    fprintf(f, "<text transform=\"translate(16 %.1f) rotate(-90)\" text-anchor=\"middle\">",
            L.y0 + L.h / 2);
    xml_text(f, c->y_label);
    fputs("</text>\n", f);
    for (size_t i = 0; i < c->n_lines; i++) {
        if (!usable(c, c->lines[i].y))
            continue;
        double y = y_of(&L, c->lines[i].y);
        fprintf(f, "<line class=\"ref\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>"
                   "<text x=\"%.1f\" y=\"%.1f\">",
                L.x0, y, L.x0 + L.w, y, L.x0 + L.w + 4, y + 4);
        xml_text(f, c->lines[i].label);
        fputs("</text>\n", f);
    }
    for (size_t s = 0; s < c->n_series; s++)
        if (band_y[s]) {
            fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">", L.x0 - 6,
                    band_y[s] + 4);
            xml_text(f, c->band_label ? c->band_label : "no value");
            fputs(": ", f);
            xml_text(f, c->series[s].name);
            fputs("</text>\n", f);
        }
    for (size_t i = 0; i < c->n_marks; i++)
        mark(f, c, &L, &c->marks[i], band_y);
    for (size_t k = 0; k < c->n_categories; k++) {
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" transform=\"rotate(60 %.1f %.1f)\">",
                x_of(&L, k), labels_y, x_of(&L, k), labels_y);
        xml_text(f, c->categories[k]);
        fputs("</text>\n", f);
    }
    fputs("</svg>\n", f);
    return ferror(f) ? -1 : 0;
}
