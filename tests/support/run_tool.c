/*
 * run_tool.c -- runs a tool of the build tree as a process and captures what
 * it prints, for the tests of the command-line tools.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <sys/wait.h>

#include <criterion/criterion.h>

#include "test_support.h"

int fmqa_test_run(const char *cmd, char *out, size_t cap)
{
    char line[8192];
    snprintf(line, sizeof line, "%s 2>&1", cmd);
    FILE *p = popen(line, "r");
    cr_assert_not_null(p, "popen %s", cmd);
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = 0;
    while (n == cap - 1 && fread(line, 1, sizeof line, p) > 0) /* drain the rest */
        ;
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}
