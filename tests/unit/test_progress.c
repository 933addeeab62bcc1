/*
 * test_progress.c -- tun_progress: plain lines with rate and time left when
 * the output is not a terminal, a bar redrawn in place when it is.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <criterion/criterion.h>

#include "tun.h"

static void read_all(FILE *f, char *buf, size_t cap)
{
    rewind(f);
    size_t n = fread(buf, 1, cap - 1, f);
    buf[n] = 0;
}

Test(progress, plain_lines_carry_rate_and_time_left)
{
    FILE *f = tmpfile();
    char buf[4096];
    tun_progress p;
    tun_progress_start(&p, f, 0, "tune", 4);
    nanosleep(&(struct timespec){0, 20 * 1000 * 1000}, NULL);
    tun_progress_update(&p, 1, "first");
    tun_progress_update(&p, 4, "last");
    read_all(f, buf, sizeof buf);
    fclose(f);
    double rate;
    char left[16];
    cr_assert_eq(sscanf(buf, "tune 1/4, %lf/s, %15s left: first\n", &rate, left), 2, "%s", buf);
    cr_expect(rate > 0 && rate < 100, "one item in 20+ ms: %g/s", rate);
    cr_expect(strstr(buf, "tune 4/4, ") && strstr(buf, ", 0s left: last\n"), "%s", buf);
    cr_expect_eq(strchr(buf, '\r'), NULL, "%s", buf);
}

Test(progress, terminal_gets_a_bar_in_place)
{
    FILE *f = tmpfile();
    char buf[4096];
    tun_progress p;
    tun_progress_start(&p, f, 1, "dry run", 8);
    tun_progress_update(&p, 4, "half");
    tun_progress_clear(&p);
    tun_progress_update(&p, 8, "done");
    read_all(f, buf, sizeof buf);
    fclose(f);
    cr_expect(strstr(buf, "\r\033[Kdry run [############............] 4/8 "), "%s", buf);
    cr_expect(strstr(buf, "[########################] 8/8 "), "%s", buf);
    cr_expect_eq(strchr(buf, '\n'), NULL, "a bar never scrolls: %s", buf);
}
