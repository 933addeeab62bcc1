/*
 * gen_render.c -- turns (template, config, problem, device) into a program
 * NVRTC can compile: #defines from specialize() and the config, the template's
 * sources behind #line directives, every set header, the options, and the key
 * that identifies the compiled result.
 *
 * The key deliberately leaves out the -I option (a path that differs between
 * machines for the same toolkit; the NVRTC version stands for its headers) and
 * anything about the problem that does not reach the text as a define, so
 * problems that render the same program share one cubin.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <nvrtc.h>

#include "fmqa_params.h"
#include "gen_internal.h"

#ifndef FMQA_CUDA_INCLUDE_DIR
#define FMQA_CUDA_INCLUDE_DIR "/usr/local/cuda/include"
#endif

#define MAX_DEFINES 64

const char *gen_cuda_include_dir(void)
{
    const char *env = getenv("FASTMQA_CUDA_INCLUDE");
    return env && *env ? env : FMQA_CUDA_INCLUDE_DIR;
}

/* Growing string; oom sticks so callers check once at the end. */
typedef struct sbuf {
    char *s;
    size_t len, cap;
    int oom;
} sbuf;

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...)
{
    for (int tries = 0; tries < 2 && !b->oom; tries++) {
        va_list ap;
        va_start(ap, fmt);
        int w = vsnprintf(b->s ? b->s + b->len : NULL, b->s ? b->cap - b->len : 0, fmt, ap);
        va_end(ap);
        if (w < 0) {
            b->oom = 1;
            return;
        }
        if (b->s && b->len + (size_t)w < b->cap) {
            b->len += (size_t)w;
            return;
        }
        size_t ncap = (b->cap + (size_t)w + 1) * 2;
        char *ns = realloc(b->s, ncap);
        if (!ns) {
            b->oom = 1;
            return;
        }
        b->s = ns;
        b->cap = ncap;
    }
}

typedef struct defines {
    int n;
    char names[MAX_DEFINES][GEN_NAME_CAP];
    int64_t values[MAX_DEFINES];
} defines;

/* specialize(p) and arch_specific, with the lock held. */
static fmqa_status run_lua_locked(gen_template *t, const gen_config *c, const fmqa_problem *p,
                                  const fmqa_device_info *d, defines *defs, int *arch_specific,
                                  fmqa_err *err)
{
    gen_args pargs = {NULL, p, NULL};
    fmqa_status st = gen_lua_call(t, "specialize", &pargs, 1, err);
    if (st == FMQA_OK)
        st = gen_read_int_table(t, GEN_FN_SPECIALIZE, 1, MAX_DEFINES, defs->names, defs->values,
                                &defs->n, err);
    else if (st == FMQA_ERR_NOT_FOUND)
        st = FMQA_OK;
    if (st != FMQA_OK)
        return st;
    *arch_specific = t->arch_specific;
    gen_args args = {c, p, d};
    st = gen_lua_call(t, "arch_specific", &args, 1, err);
    if (st == FMQA_ERR_NOT_FOUND)
        return FMQA_OK;
    if (st != FMQA_OK)
        return st;
    lua_State *L = t->lib->L;
    if (lua_type(L, -1) != LUA_TBOOLEAN)
        st = fmqa_err_set(err, FMQA_ERR_TEMPLATE, "%s:%d: arch_specific(): expected boolean, got %s",
                          t->chunk, t->fn_line[GEN_FN_ARCH_SPECIFIC], luaL_typename(L, -1));
    *arch_specific = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return st;
}

/* Sorts the defines by name: Lua's table order must not change the text (and
 * so the key) of equal programs. */
static void sort_defines(defines *defs)
{
    for (int i = 1; i < defs->n; i++)
        for (int j = i; j > 0 && strcmp(defs->names[j - 1], defs->names[j]) > 0; j--) {
            char name[GEN_NAME_CAP];
            int64_t v = defs->values[j];
            memcpy(name, defs->names[j], GEN_NAME_CAP);
            memcpy(defs->names[j], defs->names[j - 1], GEN_NAME_CAP);
            memcpy(defs->names[j - 1], name, GEN_NAME_CAP);
            defs->values[j] = defs->values[j - 1];
            defs->values[j - 1] = v;
        }
}

static fmqa_status add_defines(const gen_template *t, const gen_config *c, defines *defs,
                               sbuf *b, fmqa_err *err)
{
    sort_defines(defs);
    for (int i = 0; i < defs->n; i++) {
        int64_t v;
        if (gen_config_get(c, defs->names[i], &v))
            return fmqa_err_set(err, FMQA_ERR_TEMPLATE,
                                "%s:%d: specialize().%s: also a tunable parameter in space",
                                t->chunk, t->fn_line[GEN_FN_SPECIALIZE], defs->names[i]);
        sb_printf(b, "#define %s %lld\n", defs->names[i], (long long)defs->values[i]);
    }
    for (int i = 0; i < c->n; i++)
        sb_printf(b, "#define %s %lld\n", c->p[i].name, (long long)c->p[i].value);
    return FMQA_OK;
}

static char **dup_list(int n)
{
    return calloc((size_t)n + 1, sizeof(char *));
}

static fmqa_status fill_headers(const gen_lib *lib, gen_source *s)
{
    s->header_names = dup_list(lib->n_files);
    s->header_texts = dup_list(lib->n_files);
    if (!s->header_names || !s->header_texts)
        return FMQA_ERR_OUT_OF_MEMORY;
    for (int i = 0; i < lib->n_files; i++) {
        const gen_file *f = &lib->files[i];
        if (strstr(f->name, ".lua"))
            continue;
        sbuf b = {0};
        sb_printf(&b, "#line 1 \"%s/%s\"\n%s", lib->prefix, f->name, f->text);
        s->header_names[s->n_headers] = fmqa_strdup(f->name);
        s->header_texts[s->n_headers++] = b.s;
        if (b.oom || !s->header_names[s->n_headers - 1])
            return FMQA_ERR_OUT_OF_MEMORY;
    }
    return FMQA_OK;
}

static fmqa_status fill_options(const char *arch, gen_source *s)
{
    char opt_arch[64], opt_inc[4096];
    snprintf(opt_arch, sizeof opt_arch, "--gpu-architecture=%s", arch);
    snprintf(opt_inc, sizeof opt_inc, "-I%s", gen_cuda_include_dir());
    const char *opts[] = {opt_arch, "-default-device", "-std=c++17", "--ptxas-options=-v",
                          opt_inc};
    int n = (int)(sizeof opts / sizeof opts[0]);
    s->options = dup_list(n);
    if (!s->options)
        return FMQA_ERR_OUT_OF_MEMORY;
    for (int i = 0; i < n; i++)
        if (!(s->options[s->n_options++] = fmqa_strdup(opts[i])))
            return FMQA_ERR_OUT_OF_MEMORY;
    return FMQA_OK;
}

static void compute_key(gen_source *s)
{
    int major = 0, minor = 0;
    nvrtcVersion(&major, &minor);
    char ver[64];
    snprintf(ver, sizeof ver, "nvrtc %d.%d arch %s", major, minor, s->arch);
    fmqa_hasher h;
    fmqa_hash_init(&h);
    fmqa_hash_str(&h, ver);
    fmqa_hash_str(&h, s->text);
    for (int i = 0; i < s->n_headers; i++) {
        fmqa_hash_str(&h, s->header_names[i]);
        fmqa_hash_str(&h, s->header_texts[i]);
    }
    for (int i = 0; i < s->n_options; i++)
        if (strncmp(s->options[i], "-I", 2) != 0)
            fmqa_hash_str(&h, s->options[i]);
    fmqa_hash_final(&h, s->key);
}

static fmqa_status fill_source(const gen_template *t, const gen_config *c, defines *defs,
                               const char *arch, gen_source *s, fmqa_err *err)
{
    const gen_lib *lib = t->lib;
    sbuf b = {0};
    sb_printf(&b, "/* FastMQA generator %d: template %s (%s), params %d */\n", GEN_VERSION,
              t->name, t->hash, FMQA_PARAMS_VERSION);
    fmqa_status st = add_defines(t, c, defs, &b, err);
    for (int i = 0; st == FMQA_OK && i < t->n_sources; i++)
        sb_printf(&b, "#line 1 \"%s/%s\"\n%s\n", lib->prefix, t->sources[i],
                  gen_lib_file(lib, t->sources[i])->text);
    s->text = b.s;
    if (st != FMQA_OK)
        return st;
    size_t nlen = strlen(lib->prefix) + strlen(t->sources[0]) + 2;
    if ((s->name = malloc(nlen)) != NULL)
        snprintf(s->name, nlen, "%s/%s", lib->prefix, t->sources[0]);
    s->entries = dup_list(t->n_entries);
    for (int i = 0; s->entries && i < t->n_entries; i++)
        if ((s->entries[s->n_entries] = fmqa_strdup(t->entries[i])) != NULL)
            s->n_entries++;
    if (b.oom || !s->name || !s->entries || s->n_entries != t->n_entries ||
        fill_headers(lib, s) != FMQA_OK || fill_options(arch, s) != FMQA_OK)
        return fmqa_err_set(err, FMQA_ERR_OUT_OF_MEMORY, "out of memory rendering %s", t->name);
    snprintf(s->arch, sizeof s->arch, "%s", arch);
    snprintf(s->template_name, sizeof s->template_name, "%s", t->name);
    snprintf(s->template_hash, sizeof s->template_hash, "%s", t->hash);
    gen_config_text(c, s->config, sizeof s->config);
    compute_key(s);
    return FMQA_OK;
}

fmqa_status gen_render(const gen_template *t, const gen_config *c, const fmqa_problem *p,
                       const fmqa_device_info *d, gen_source *out, fmqa_err *err)
{
    memset(out, 0, sizeof *out);
    fmqa_status st = gen_check(t, c, p, d, err);
    if (st != FMQA_OK)
        return st;
    defines defs = {0};
    int arch_specific = 0;
    gen_lock(t);
    st = run_lua_locked((gen_template *)t, c, p, d, &defs, &arch_specific, err);
    gen_unlock(t);
    if (st != FMQA_OK)
        return st;
    char arch[16];
    snprintf(arch, sizeof arch, "%s", d->arch[0] ? d->arch : "sm_80");
    size_t alen = strlen(arch);
    if (alen > 0 && arch[alen - 1] == 'a')
        arch[--alen] = '\0';
    if (arch_specific && d->cc_major >= 9 && alen + 1 < sizeof arch)
        strcat(arch, "a");
    st = fill_source(t, c, &defs, arch, out, err);
    if (st != FMQA_OK)
        gen_source_free(out);
    return st;
}

static void free_list(char **list, int n)
{
    for (int i = 0; list && i < n; i++)
        free(list[i]);
    free(list);
}

void gen_source_free(gen_source *s)
{
    if (!s)
        return;
    free(s->name);
    free(s->text);
    free_list(s->header_names, s->n_headers);
    free_list(s->header_texts, s->n_headers);
    free_list(s->options, s->n_options);
    free_list(s->entries, s->n_entries);
    memset(s, 0, sizeof *s);
}
