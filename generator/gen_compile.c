/*
 * gen_compile.c -- one NVRTC compilation: rendered source to cubin, the log,
 * and the ptxas resource usage (registers, spills, shared memory, stack) per
 * entry parsed from that log (render asks ptxas for it with -v).
 *
 * Nothing here touches a template or Lua: a gen_source carries everything, so
 * compilations run on any thread without the lib lock.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nvrtc.h>

#include "gen_internal.h"

static fmqa_status nvrtc_status(nvrtcResult r)
{
    switch (r) {
    case NVRTC_SUCCESS: return FMQA_OK;
    case NVRTC_ERROR_OUT_OF_MEMORY: return FMQA_ERR_OUT_OF_MEMORY;
    case NVRTC_ERROR_COMPILATION:
    case NVRTC_ERROR_INVALID_OPTION: return FMQA_ERR_COMPILE;
    default: return FMQA_ERR_INTERNAL;
    }
}

static char *program_log(nvrtcProgram prog)
{
    size_t n = 0;
    if (nvrtcGetProgramLogSize(prog, &n) != NVRTC_SUCCESS || n == 0)
        return NULL;
    char *log = malloc(n);
    if (log && nvrtcGetProgramLog(prog, log) != NVRTC_SUCCESS) {
        free(log);
        return NULL;
    }
    return log;
}

static int find_entry(const gen_resource *res, int n, const char *name, size_t len)
{
    for (int i = 0; i < n; i++)
        if (strlen(res[i].entry) == len && strncmp(res[i].entry, name, len) == 0)
            return i;
    return -1;
}

/* Reads the integer just before `label` on the line [line, end). */
static int number_before(const char *line, const char *end, const char *label, int *out)
{
    const char *p = strstr(line, label);
    if (!p || p >= end)
        return 0;
    while (p > line && p[-1] == ' ')
        p--;
    while (p > line && p[-1] >= '0' && p[-1] <= '9')
        p--;
    *out = atoi(p);
    return 1;
}

int gen_parse_resources(const char *log, gen_resource *res, int cap)
{
    int n = 0, current = -1, props = -1;
    for (const char *line = log; line && *line;) {
        const char *end = strchr(line, '\n');
        if (!end)
            end = line + strlen(line);
        const char *p;
        if ((p = strstr(line, "Compiling entry function '")) && p < end) {
            p += strlen("Compiling entry function '");
            size_t len = strcspn(p, "'\n");
            current = find_entry(res, n, p, len);
            if (current < 0 && n < cap && len < GEN_NAME_CAP) {
                memset(&res[n], 0, sizeof res[n]);
                memcpy(res[n].entry, p, len);
                current = n++;
            }
        } else if ((p = strstr(line, "Function properties for ")) && p < end) {
            p += strlen("Function properties for ");
            props = find_entry(res, n, p, (size_t)(end - p));
        } else if (props >= 0 && strstr(line, "bytes stack frame") &&
                   strstr(line, "bytes stack frame") < end) {
            number_before(line, end, " bytes stack frame", &res[props].stack_bytes);
            number_before(line, end, " bytes spill stores", &res[props].spill_stores);
            number_before(line, end, " bytes spill loads", &res[props].spill_loads);
        } else if (current >= 0 && (p = strstr(line, "Used ")) && p < end) {
            number_before(p, end, " registers", &res[current].registers);
            number_before(p, end, " bytes smem", &res[current].smem_bytes);
        }
        line = *end ? end + 1 : NULL;
    }
    return n;
}

/* First lines of the log, enough to locate the error. */
static fmqa_status compile_error(const gen_source *s, nvrtcResult r, const char *log,
                                 fmqa_err *err)
{
    return fmqa_err_set(err, nvrtc_status(r), "nvrtc: %s (%s %s, config %s): %s\n%s", s->name,
                        s->template_name, s->arch, s->config[0] ? s->config : "-",
                        nvrtcGetErrorString(r), log ? log : "");
}

fmqa_status gen_compile(const gen_source *s, gen_binary *out, fmqa_err *err)
{
    memset(out, 0, sizeof *out);
    double t0 = fmqa_now_ms();
    nvrtcProgram prog;
    nvrtcResult r = nvrtcCreateProgram(&prog, s->text, s->name, s->n_headers,
                                       (const char *const *)s->header_texts,
                                       (const char *const *)s->header_names);
    if (r != NVRTC_SUCCESS)
        return compile_error(s, r, NULL, err);
    r = nvrtcCompileProgram(prog, s->n_options, (const char *const *)s->options);
    out->log = program_log(prog);
    if (r == NVRTC_SUCCESS) {
        r = nvrtcGetCUBINSize(prog, &out->size);
        if (r == NVRTC_SUCCESS && !(out->cubin = malloc(out->size ? out->size : 1)))
            r = NVRTC_ERROR_OUT_OF_MEMORY;
        if (r == NVRTC_SUCCESS)
            r = nvrtcGetCUBIN(prog, out->cubin);
    }
    nvrtcDestroyProgram(&prog);
    if (r != NVRTC_SUCCESS) {
        fmqa_status st = compile_error(s, r, out->log, err);
        free(out->cubin);
        out->cubin = NULL;
        out->size = 0;
        return st;
    }
    out->compile_ms = fmqa_now_ms() - t0;
    snprintf(out->key, sizeof out->key, "%s", s->key);
    snprintf(out->arch, sizeof out->arch, "%s", s->arch);
    snprintf(out->template_hash, sizeof out->template_hash, "%s", s->template_hash);
    snprintf(out->template_name, sizeof out->template_name, "%s", s->template_name);
    snprintf(out->config, sizeof out->config, "%s", s->config);
    if (out->log)
        out->n_resources = gen_parse_resources(out->log, out->resources, GEN_MAX_KERNELS);
    return FMQA_OK;
}

void gen_binary_free(gen_binary *b)
{
    if (!b)
        return;
    free(b->cubin);
    free(b->log);
    memset(b, 0, sizeof *b);
}

fmqa_status gen_binary_copy(const gen_binary *src, gen_binary *out)
{
    *out = *src;
    out->cubin = malloc(src->size ? src->size : 1);
    out->log = src->log ? fmqa_strdup(src->log) : NULL;
    if (!out->cubin || (src->log && !out->log)) {
        free(out->cubin);
        free(out->log);
        memset(out, 0, sizeof *out);
        return FMQA_ERR_OUT_OF_MEMORY;
    }
    if (src->size)
        memcpy(out->cubin, src->cubin, src->size);
    return FMQA_OK;
}

/* Appends printf output at *used; 0, or -1 once anything did not fit. */
static int append(char *buf, size_t cap, size_t *used, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int append(char *buf, size_t cap, size_t *used, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = *used < cap ? vsnprintf(buf + *used, cap - *used, fmt, ap) : -1;
    va_end(ap);
    if (n < 0 || (size_t)n >= cap - *used)
        return -1;
    *used += (size_t)n;
    return 0;
}

/* Names and config texts are identifiers, digits, '=' and ','; anything else
 * (a quote, a backslash, a control character) would need escaping and is
 * reported as '?' instead. */
static const char *json_safe(const char *s, char *buf, size_t cap)
{
    size_t i = 0;
    for (; s[i] && i + 1 < cap; i++)
        buf[i] = s[i] == '"' || s[i] == '\\' || (unsigned char)s[i] < 0x20 ? '?' : s[i];
    buf[i] = '\0';
    return buf;
}

int gen_binary_report(const gen_binary *b, char *buf, size_t cap)
{
    char t[GEN_NAME_CAP], c[GEN_CONFIG_TEXT_CAP], a[sizeof b->arch];
    size_t used = 0;
    int bad = append(buf, cap, &used,
                     "{\"template\":\"%s\",\"config\":\"%s\",\"arch\":\"%s\","
                     "\"compile_ms\":%.1f,\"kernels\":[",
                     json_safe(b->template_name, t, sizeof t), json_safe(b->config, c, sizeof c),
                     json_safe(b->arch, a, sizeof a), b->compile_ms);
    for (int i = 0; i < b->n_resources && !bad; i++) {
        const gen_resource *r = &b->resources[i];
        bad = append(buf, cap, &used,
                     "%s{\"entry\":\"%s\",\"registers\":%d,\"spill_stores\":%d,"
                     "\"spill_loads\":%d,\"smem_bytes\":%d,\"stack_bytes\":%d}",
                     i ? "," : "", json_safe(r->entry, t, sizeof t), r->registers,
                     r->spill_stores, r->spill_loads, r->smem_bytes, r->stack_bytes);
    }
    if (!bad)
        bad = append(buf, cap, &used, "]}");
    if (bad && cap)
        buf[0] = '\0';
    return bad;
}
