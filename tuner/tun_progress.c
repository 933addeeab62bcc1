/*
 * tun_progress.c -- progress of a long run (tuning, the dry run): a bar
 * redrawn in place on a terminal, or one plain line per item otherwise, both
 * with the rate and the time left, so a redirected log shows the run advance
 * line by line instead of staying empty until the end.
 *
 * The rate is items per second since the start; time left assumes the rest
 * goes at that rate.  Lines are flushed as written.
 */
#include <stdio.h>
#include <string.h>

#include "tun.h"

#define BAR_WIDTH 24
#define REDRAW_MS 100.0

void tun_progress_start(tun_progress *p, FILE *f, int tty, const char *label, size_t total)
{
    memset(p, 0, sizeof *p);
    p->f = f;
    p->tty = tty;
    p->total = total;
    p->t0_ms = fmqa_now_ms();
    snprintf(p->label, sizeof p->label, "%s", label);
}

/* "1h02m", "3m05s", "12s", "?" before the first item. */
static void format_left(double seconds, char *buf, size_t cap)
{
    long s = (long)(seconds + 0.5);
    if (seconds < 0)
        snprintf(buf, cap, "?");
    else if (s >= 3600)
        snprintf(buf, cap, "%ldh%02ldm", s / 3600, s / 60 % 60);
    else if (s >= 60)
        snprintf(buf, cap, "%ldm%02lds", s / 60, s % 60);
    else
        snprintf(buf, cap, "%lds", s);
}

void tun_progress_update(tun_progress *p, size_t done, const char *line)
{
    double now = fmqa_now_ms(), elapsed = (now - p->t0_ms) / 1000;
    double rate = done && elapsed > 0 ? done / elapsed : 0;
    char left[32];
    format_left(rate > 0 && done <= p->total ? (p->total - done) / rate : -1, left, sizeof left);
    if (!p->tty) {
        fprintf(p->f, "%s %zu/%zu, %.2f/s, %s left: %s\n", p->label, done, p->total, rate, left,
                line ? line : "");
        fflush(p->f);
        return;
    }
    if (done < p->total && now - p->drawn_ms < REDRAW_MS)
        return;
    p->drawn_ms = now;
    char bar[BAR_WIDTH + 1];
    size_t full = p->total ? done * BAR_WIDTH / p->total : BAR_WIDTH;
    for (size_t i = 0; i < BAR_WIDTH; i++)
        bar[i] = i < full ? '#' : '.';
    bar[BAR_WIDTH] = '\0';
    fprintf(p->f, "\r\033[K%s [%s] %zu/%zu %.2f/s %s left  %.60s", p->label, bar, done, p->total,
            rate, left, line ? line : "");
    fflush(p->f);
    p->drawn = 1;
}

void tun_progress_clear(tun_progress *p)
{
    if (p->tty && p->drawn) {
        fputs("\r\033[K", p->f);
        fflush(p->f);
        p->drawn_ms = 0; /* redraw at the next update */
    }
}
