/*
 * tun_problems.c -- problem sets for the tuner: the text format (one
 * gen_problem_parse spec per line, '#' comments) that --problems files use
 * and that a session stores in the database so that --resume replays exactly
 * the same set, and the default set derived from the optimization levels.
 */
#include "tun.h"

#include <stdlib.h>
#include <string.h>

#define LINE_CAP 1024

/* Copies line [s, e) without its comment and surrounding blanks into buf. */
static void strip(const char *s, const char *e, char *buf, size_t cap)
{
    const char *hash = memchr(s, '#', (size_t)(e - s));
    if (hash)
        e = hash;
    while (s < e && (*s == ' ' || *s == '\t' || *s == '\r'))
        s++;
    while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r'))
        e--;
    size_t n = (size_t)(e - s) < cap - 1 ? (size_t)(e - s) : cap - 1;
    memcpy(buf, s, n);
    buf[n] = 0;
}

static fmqa_status push(fmqa_problem **v, size_t *n, size_t *cap, const fmqa_problem *p,
                        fmqa_err *err)
{
    if (*n == *cap) {
        size_t c = *cap ? 2 * *cap : 8;
        fmqa_problem *nv = realloc(*v, c * sizeof *nv);
        if (!nv)
            return fmqa_err_set(err, FMQA_ERR_OUT_OF_MEMORY, "out of memory");
        *v = nv, *cap = c;
    }
    (*v)[(*n)++] = *p;
    return FMQA_OK;
}

fmqa_status tun_problems_parse(const char *text, const char *name, fmqa_problem **out,
                               size_t *count, fmqa_err *err)
{
    fmqa_problem *v = NULL;
    size_t n = 0, cap = 0;
    int line = 0;
    char buf[LINE_CAP];
    if (!name)
        name = "problems";
    for (const char *s = text ? text : ""; *s;) {
        const char *e = strchr(s, '\n');
        if (!e)
            e = s + strlen(s);
        line++;
        if ((size_t)(e - s) >= LINE_CAP) {
            free(v);
            return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT, "%s:%d: line too long",
                                name, line);
        }
        strip(s, e, buf, sizeof buf);
        s = *e ? e + 1 : e;
        if (!buf[0])
            continue;
        fmqa_problem p;
        fmqa_status st = gen_problem_parse(buf, &p, err);
        if (st == FMQA_OK)
            st = rt_problem_check(&p, err); /* an invalid problem is an error, not 0 configs */
        if (st == FMQA_OK)
            st = push(&v, &n, &cap, &p, err);
        else
            fmqa_err_prefix(err, "%s:%d", name, line);
        if (st != FMQA_OK) {
            free(v);
            return st;
        }
    }
    if (!n)
        return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT, "%s: no problem in the set", name);
    *out = v;
    *count = n;
    return FMQA_OK;
}

fmqa_status tun_problems_format(const fmqa_problem *p, size_t n, char **text, fmqa_err *err)
{
    char *s = malloc(n * (GEN_PROBLEM_TEXT_CAP + 1) + 1);
    if (!s)
        return fmqa_err_set(err, FMQA_ERR_OUT_OF_MEMORY, "out of memory");
    size_t len = 0;
    for (size_t i = 0; i < n; i++) {
        if (gen_problem_format(&p[i], s + len, GEN_PROBLEM_TEXT_CAP)) {
            free(s);
            return fmqa_err_set(err, FMQA_ERR_INTERNAL, "problem %zu: spec too long", i);
        }
        len += strlen(s + len);
        s[len++] = '\n';
    }
    s[len] = 0;
    *text = s;
    return FMQA_OK;
}

void tun_default_model(fmqa_model_config *m)
{
    memset(m, 0, sizeof *m);
    m->hidden_size = 4096;
    m->num_q_heads = 32;
    m->num_kv_heads = 1;
    m->head_dim = 128;
    m->max_seq_len = 4096;
    m->dtype = FMQA_DTYPE_F16;
}
