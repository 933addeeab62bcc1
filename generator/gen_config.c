/*
 * gen_config.c -- configs (one value per tunable parameter), their canonical
 * text "A=1,B=2" and hash.
 *
 * Invariant: c->p[0..n) is sorted by name with no duplicates, so equal configs
 * have byte-identical canonical text whatever order they were built in.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gen.h"

void gen_config_init(gen_config *c)
{
    memset(c, 0, sizeof *c);
}

static int valid_name(const char *s)
{
    if (!s || !(*s == '_' || (*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z')))
        return 0;
    size_t n = 0;
    for (; *s; s++, n++)
        if (!(*s == '_' || (*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') ||
              (*s >= '0' && *s <= '9')))
            return 0;
    return n < GEN_NAME_CAP;
}

fmqa_status gen_config_set(gen_config *c, const char *name, int64_t value, fmqa_err *err)
{
    if (!valid_name(name))
        return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT,
                            "config: '%s' is not a parameter name", name ? name : "(null)");
    int i = 0;
    while (i < c->n && strcmp(c->p[i].name, name) < 0)
        i++;
    if (i < c->n && strcmp(c->p[i].name, name) == 0) {
        c->p[i].value = value;
        return FMQA_OK;
    }
    if (c->n == GEN_MAX_PARAMS)
        return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT, "config: more than %d parameters",
                            GEN_MAX_PARAMS);
    memmove(&c->p[i + 1], &c->p[i], (size_t)(c->n - i) * sizeof c->p[0]);
    snprintf(c->p[i].name, sizeof c->p[i].name, "%s", name);
    c->p[i].value = value;
    c->n++;
    return FMQA_OK;
}

int gen_config_get(const gen_config *c, const char *name, int64_t *value)
{
    for (int i = 0; i < c->n; i++)
        if (strcmp(c->p[i].name, name) == 0) {
            *value = c->p[i].value;
            return 1;
        }
    return 0;
}

int gen_config_equal(const gen_config *a, const gen_config *b)
{
    if (a->n != b->n)
        return 0;
    for (int i = 0; i < a->n; i++)
        if (a->p[i].value != b->p[i].value || strcmp(a->p[i].name, b->p[i].name) != 0)
            return 0;
    return 1;
}

int gen_config_text(const gen_config *c, char *buf, size_t cap)
{
    size_t len = 0;
    if (cap == 0)
        return -1;
    buf[0] = '\0';
    for (int i = 0; i < c->n; i++) {
        int w = snprintf(buf + len, cap - len, "%s%s=%" PRId64, i ? "," : "", c->p[i].name,
                         c->p[i].value);
        if (w < 0 || (size_t)w >= cap - len)
            return -1;
        len += (size_t)w;
    }
    return 0;
}

/* Trims spaces and tabs around [s, e) in place; returns the new start. */
static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    char *e = s + strlen(s);
    while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
        *--e = '\0';
    return s;
}

static fmqa_status parse_token(char *tok, gen_config *c, fmqa_err *err)
{
    char *eq = strchr(tok, '=');
    if (!eq)
        return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT, "config: '%s': expected NAME=VALUE",
                            tok);
    *eq = '\0';
    char *name = trim(tok), *val = trim(eq + 1);
    if (!valid_name(name))
        return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT,
                            "config: '%s=%s': '%s' is not a parameter name", name, val, name);
    int64_t dummy;
    if (gen_config_get(c, name, &dummy))
        return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT, "config: '%s=%s': %s given twice",
                            name, val, name);
    char *end = NULL;
    errno = 0;
    long long v = strtoll(val, &end, 10);
    if (!*val || *end || errno)
        return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT,
                            "config: '%s=%s': '%s' is not an integer", name, val, val);
    return gen_config_set(c, name, v, err);
}

fmqa_status gen_config_parse(const char *text, gen_config *out, fmqa_err *err)
{
    if (!text)
        return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT, "config: no text");
    char *copy = fmqa_strdup(text);
    if (!copy)
        return fmqa_err_set(err, FMQA_ERR_OUT_OF_MEMORY, "out of memory");
    gen_config c;
    gen_config_init(&c);
    fmqa_status st = FMQA_OK;
    char *s = trim(copy);
    while (st == FMQA_OK && *s) {
        char *comma = strchr(s, ',');
        if (comma)
            *comma = '\0';
        st = parse_token(s, &c, err);
        s = comma ? comma + 1 : s + strlen(s);
        if (st == FMQA_OK && comma && !*trim(s))
            st = fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT, "config: '%s': trailing comma",
                              text);
    }
    free(copy);
    if (st == FMQA_OK)
        *out = c;
    return st;
}

void gen_config_hash(const gen_config *c, char out[FMQA_HASH_HEX])
{
    char text[GEN_MAX_PARAMS * (GEN_NAME_CAP + 24)];
    gen_config_text(c, text, sizeof text); /* always fits: sized for the worst case */
    fmqa_hash_hex(text, strlen(text), out);
}
