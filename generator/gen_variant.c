/*
 * gen_variant.c -- the variant space of a template: legality (structure,
 * arch_min, valid()), enumeration, the default config, and launch plans.
 *
 * Every entry point takes the lib lock around its Lua calls (check_locked and
 * friends expect it held).  Results of Lua functions are read by protected
 * readers whose errors cite the function's line and the field path, e.g.
 * "templates/decode.lua:40: launch().kernels[1].grid[2]: expected integer, got nil".
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "gen_internal.h"

#define SPACE_LIMIT 1000000 /* configs enumerated at most, before valid() */

static fmqa_status require_loaded(const gen_template *t, fmqa_err *err)
{
    if (!t)
        return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT, "no template");
    if (t->status != FMQA_OK)
        return fmqa_err_set(err, FMQA_ERR_TEMPLATE, "template %s did not load: %s", t->file,
                            t->message ? t->message : "");
    return FMQA_OK;
}

/* ------------------------------------------------------------ name = int tables */

typedef struct int_table {
    int allow_bool;
    int cap;
    int n;
    char (*names)[GEN_NAME_CAP];
    int64_t *values;
} int_table;

static void read_int_table(lua_State *L, gen_reader *r)
{
    int_table *out = r->out;
    if (!lua_istable(L, 1))
        gen_lua_field_error(L, r, "expected a table of NAME = %s, got %s",
                            out->allow_bool ? "integer or boolean" : "integer",
                            luaL_typename(L, 1));
    lua_pushnil(L);
    while (lua_next(L, 1)) {
        if (lua_type(L, -2) != LUA_TSTRING)
            gen_lua_field_error(L, r, "keys must be names, got %s", luaL_typename(L, -2));
        const char *name = lua_tostring(L, -2);
        size_t old = gen_path_push(r, name, 0);
        if (strlen(name) >= GEN_NAME_CAP || out->n == out->cap)
            gen_lua_field_error(L, r, "name too long or more than %d names", out->cap);
        int64_t v = gen_lua_check_int(L, r, -1, out->allow_bool);
        snprintf(out->names[out->n], GEN_NAME_CAP, "%s", name);
        out->values[out->n++] = v;
        r->path[old] = '\0';
        lua_pop(L, 1);
    }
}

fmqa_status gen_read_int_table(gen_template *t, int fn, int allow_bool, int cap,
                               char (*names)[GEN_NAME_CAP], int64_t *values, int *n,
                               fmqa_err *err)
{
    int_table tab = {allow_bool, cap, 0, names, values};
    gen_reader r = {.t = t, .line = t->fn_line[fn], .out = &tab};
    snprintf(r.path, sizeof r.path, "%s()", gen_fn_names[fn]);
    fmqa_status st = gen_lua_read(&r, read_int_table, err);
    *n = tab.n;
    return st;
}

/* ------------------------------------------------------------ legality */

static const gen_param *find_param(const gen_template *t, const char *name)
{
    for (int i = 0; i < t->n_params; i++)
        if (strcmp(t->params[i].name, name) == 0)
            return &t->params[i];
    return NULL;
}

/* The legal values of a parameter, "1, 2, 4", into buf (cut short at cap). */
static const char *values_text(const gen_param *prm, char *buf, size_t cap)
{
    size_t used = 0;
    buf[0] = '\0';
    for (int j = 0; j < prm->n && used < cap; j++)
        used += (size_t)snprintf(buf + used, cap - used, "%s%lld", j ? ", " : "",
                                 (long long)prm->values[j]);
    return buf;
}

/* The template's parameter names, "BLOCK_N, STAGES", into buf. */
static const char *names_text(const gen_template *t, char *buf, size_t cap)
{
    size_t used = 0;
    buf[0] = '\0';
    for (int i = 0; i < t->n_params && used < cap; i++)
        used += (size_t)snprintf(buf + used, cap - used, "%s%s", i ? ", " : "",
                                 t->params[i].name);
    return buf;
}

/* Every parameter of c is one of the template's, at one of its values, and
 * every parameter is given; the message lists what is legal. */
static fmqa_status check_structure(const gen_template *t, const gen_config *c, fmqa_err *err)
{
    char legal[512];
    for (int i = 0; i < c->n; i++) {
        const gen_param *prm = find_param(t, c->p[i].name);
        if (!prm)
            return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT,
                                "config: %s: template %s has no parameter %s (its parameters: "
                                "%s)",
                                c->p[i].name, t->name, c->p[i].name,
                                names_text(t, legal, sizeof legal));
        int found = 0;
        for (int j = 0; j < prm->n; j++)
            found |= prm->values[j] == c->p[i].value;
        if (!found)
            return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT,
                                "config: %s=%lld is not in the space of template %s (%s: %s)",
                                c->p[i].name, (long long)c->p[i].value, t->name, c->p[i].name,
                                values_text(prm, legal, sizeof legal));
    }
    for (int i = 0; i < t->n_params; i++) {
        int64_t v;
        if (!gen_config_get(c, t->params[i].name, &v))
            return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT, "config: %s is missing (%s: %s)",
                                t->params[i].name, t->params[i].name,
                                values_text(&t->params[i], legal, sizeof legal));
    }
    return FMQA_OK;
}

/* valid(c, p, d) with the lock held: FMQA_OK or UNSUPPORTED with its reason. */
static fmqa_status check_locked(const gen_template *t, const gen_config *c, const fmqa_problem *p,
                                const fmqa_device_info *d, fmqa_err *err)
{
    int cc = d->cc_major * 10 + d->cc_minor;
    if (t->arch_min && cc < t->arch_min)
        return fmqa_err_set(err, FMQA_ERR_UNSUPPORTED, "template %s needs sm_%d, device is sm_%d",
                            t->name, t->arch_min, cc);
    gen_args args = {c, p, d};
    lua_State *L = t->lib->L;
    fmqa_status st = gen_lua_call(t, "valid", &args, 2, err);
    if (st == FMQA_ERR_NOT_FOUND)
        return FMQA_OK;
    if (st != FMQA_OK)
        return st;
    if (lua_type(L, -2) != LUA_TBOOLEAN) {
        st = fmqa_err_set(err, FMQA_ERR_TEMPLATE,
                          "%s:%d: valid(): must return true, or false and a reason; got %s",
                          t->chunk, t->fn_line[GEN_FN_VALID], luaL_typename(L, -2));
    } else if (!lua_toboolean(L, -2)) {
        char text[GEN_CONFIG_TEXT_CAP];
        gen_config_text(c, text, sizeof text);
        st = fmqa_err_set(err, FMQA_ERR_UNSUPPORTED, "%s %s: %s", t->name, text,
                          lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1)
                                                         : "rejected by valid() (no reason given)");
    }
    lua_pop(L, 2);
    return st;
}

fmqa_status gen_check(const gen_template *t, const gen_config *c, const fmqa_problem *p,
                      const fmqa_device_info *d, fmqa_err *err)
{
    fmqa_status st = require_loaded(t, err);
    if (st == FMQA_OK)
        st = check_structure(t, c, err);
    if (st != FMQA_OK)
        return st;
    gen_lock(t);
    st = check_locked(t, c, p, d, err);
    gen_unlock(t);
    return st;
}

/* ------------------------------------------------------------ enumeration */

/* Appends to *list every legal config (lock held). */
static fmqa_status enumerate_locked(const gen_template *t, const fmqa_problem *p,
                                    const fmqa_device_info *d, gen_config **list, size_t *count,
                                    fmqa_err *err)
{
    size_t total = 1, cap = 0;
    for (int i = 0; i < t->n_params; i++) {
        total *= (size_t)t->params[i].n;
        if (total > SPACE_LIMIT)
            return fmqa_err_set(err, FMQA_ERR_TEMPLATE, "%s: space has more than %d configs",
                                t->chunk, SPACE_LIMIT);
    }
    *list = NULL;
    *count = 0;
    for (size_t k = 0; k < total; k++) {
        gen_config c;
        gen_config_init(&c);
        size_t rest = k;
        for (int i = t->n_params - 1; i >= 0; i--) { /* last parameter varies fastest */
            c.p[i].value = t->params[i].values[rest % (size_t)t->params[i].n];
            rest /= (size_t)t->params[i].n;
            memcpy(c.p[i].name, t->params[i].name, GEN_NAME_CAP);
        }
        c.n = t->n_params;
        fmqa_err why;
        fmqa_status st = check_locked(t, &c, p, d, &why);
        if (st == FMQA_ERR_UNSUPPORTED)
            continue;
        if (st != FMQA_OK) {
            if (err)
                *err = why;
            free(*list);
            *list = NULL;
            *count = 0;
            return st;
        }
        if (*count == cap) {
            gen_config *nl = realloc(*list, (cap = cap ? 2 * cap : 64) * sizeof *nl);
            if (!nl) {
                free(*list);
                *list = NULL;
                *count = 0;
                return fmqa_err_set(err, FMQA_ERR_OUT_OF_MEMORY, "out of memory");
            }
            *list = nl;
        }
        (*list)[(*count)++] = c;
    }
    return FMQA_OK;
}

fmqa_status gen_space(const gen_template *t, const fmqa_problem *p, const fmqa_device_info *d,
                      gen_config **configs, size_t *count, fmqa_err *err)
{
    fmqa_status st = require_loaded(t, err);
    if (st != FMQA_OK)
        return st;
    gen_config *list;
    size_t n;
    gen_lock(t);
    st = enumerate_locked(t, p, d, &list, &n, err);
    gen_unlock(t);
    if (st == FMQA_OK) {
        *configs = list;
        *count = n;
    }
    return st;
}

/* default(p, d), or the first legal config when the template has none. */
static fmqa_status default_locked(gen_template *t, const fmqa_problem *p,
                                  const fmqa_device_info *d, gen_config *out, fmqa_err *err)
{
    gen_args args = {NULL, p, d};
    fmqa_status st = gen_lua_call(t, "default", &args, 1, err);
    if (st == FMQA_ERR_NOT_FOUND) {
        gen_config *list;
        size_t n;
        st = enumerate_locked(t, p, d, &list, &n, err);
        if (st == FMQA_OK && n == 0)
            st = fmqa_err_set(err, FMQA_ERR_UNSUPPORTED,
                              "%s: no legal config for this problem and device", t->name);
        if (st == FMQA_OK)
            *out = list[0];
        free(list);
        return st;
    }
    if (st != FMQA_OK)
        return st;
    char names[GEN_MAX_PARAMS][GEN_NAME_CAP];
    int64_t values[GEN_MAX_PARAMS];
    int n = 0;
    st = gen_read_int_table(t, GEN_FN_DEFAULT, 0, GEN_MAX_PARAMS, names, values, &n, err);
    gen_config c;
    gen_config_init(&c);
    for (int i = 0; st == FMQA_OK && i < n; i++)
        st = gen_config_set(&c, names[i], values[i], err);
    if (st == FMQA_OK)
        *out = c;
    return st;
}

fmqa_status gen_default(const gen_template *t, const fmqa_problem *p, const fmqa_device_info *d,
                        gen_config *out, fmqa_err *err)
{
    fmqa_status st = require_loaded(t, err);
    if (st != FMQA_OK)
        return st;
    gen_config c;
    gen_lock(t);
    st = default_locked((gen_template *)t, p, d, &c, err);
    gen_unlock(t);
    if (st == FMQA_OK)
        st = gen_check(t, &c, p, d, err);
    if (st != FMQA_OK)
        return fmqa_err_prefix(err, "default of %s", t->name);
    *out = c;
    return FMQA_OK;
}

/* ------------------------------------------------------------ launch plans */

typedef struct plan_ctx {
    gen_plan *plan;
    const fmqa_device_info *d;
} plan_ctx;

static int64_t opt_int(lua_State *L, gen_reader *r, int tab, const char *key, int64_t dflt,
                       int64_t min)
{
    size_t old = gen_path_push(r, key, 0);
    lua_pushstring(L, key);
    int64_t v = lua_rawget(L, tab) == LUA_TNIL ? dflt : gen_lua_check_int(L, r, -1, 0);
    if (v < min)
        gen_lua_field_error(L, r, "must be >= %lld, got %lld", (long long)min, (long long)v);
    lua_pop(L, 1);
    r->path[old] = '\0';
    return v;
}

/* CUDA's limits per axis of a grid and of a block. */
static const int64_t GRID_MAX[3] = {INT32_MAX, 65535, 65535};
static const int64_t BLOCK_MAX[3] = {1024, 1024, 64};

static void read_dim3(lua_State *L, gen_reader *r, int tab, const char *key, const int64_t max[3],
                      uint32_t out[3])
{
    size_t old = gen_path_push(r, key, 0);
    lua_pushstring(L, key);
    if (lua_rawget(L, tab) != LUA_TTABLE)
        gen_lua_field_error(L, r, "expected a list of 1 to 3 integers, got %s",
                            luaL_typename(L, -1));
    int n = (int)lua_rawlen(L, -1);
    if (n < 1 || n > 3)
        gen_lua_field_error(L, r, "expected 1 to 3 integers, got %d", n);
    for (int i = 0; i < 3; i++) {
        int64_t v = 1;
        if (i < n) {
            size_t o2 = gen_path_push(r, NULL, i + 1);
            lua_rawgeti(L, -1, i + 1);
            v = gen_lua_check_int(L, r, -1, 0);
            if (v < 1 || v > max[i])
                gen_lua_field_error(L, r, "%lld is outside CUDA's limit for the %c axis (1 to %lld)",
                                    (long long)v, "xyz"[i], (long long)max[i]);
            lua_pop(L, 1);
            r->path[o2] = '\0';
        }
        out[i] = (uint32_t)v;
    }
    lua_pop(L, 1);
    r->path[old] = '\0';
}

static void read_kernel(lua_State *L, gen_reader *r, const fmqa_device_info *d, gen_kernel *k)
{
    int tab = lua_gettop(L);
    if (!lua_istable(L, tab))
        gen_lua_field_error(L, r, "expected a table {entry, grid, block, shared}, got %s",
                            luaL_typename(L, tab));
    size_t old = gen_path_push(r, "entry", 0);
    lua_pushstring(L, "entry");
    lua_rawget(L, tab);
    if (lua_type(L, -1) != LUA_TSTRING)
        gen_lua_field_error(L, r, "expected string, got %s", luaL_typename(L, -1));
    const char *entry = lua_tostring(L, -1);
    int known = 0;
    for (int i = 0; i < r->t->n_entries; i++)
        known |= strcmp(entry, r->t->entries[i]) == 0;
    if (!known)
        gen_lua_field_error(L, r, "'%s' is not listed in entries", entry);
    snprintf(k->entry, sizeof k->entry, "%s", entry);
    lua_pop(L, 1);
    r->path[old] = '\0';
    read_dim3(L, r, tab, "grid", GRID_MAX, k->grid);
    read_dim3(L, r, tab, "block", BLOCK_MAX, k->block);
    uint64_t threads = (uint64_t)k->block[0] * k->block[1] * k->block[2];
    if (threads > (uint64_t)d->max_threads_per_block) {
        gen_path_push(r, "block", 0);
        gen_lua_field_error(L, r, "%llu threads exceed the device's %d", (unsigned long long)threads,
                            d->max_threads_per_block);
    }
    int64_t shared = opt_int(L, r, tab, "shared", 0, 0);
    if (shared > d->smem_per_block_optin) {
        gen_path_push(r, "shared", 0);
        gen_lua_field_error(L, r, "%lld bytes exceed the device's %d", (long long)shared,
                            d->smem_per_block_optin);
    }
    k->shared = (uint32_t)shared;
    k->pdl = opt_int(L, r, tab, "pdl", 0, 0) != 0;
}

static void read_kernels(lua_State *L, gen_reader *r, plan_ctx *x)
{
    size_t old = gen_path_push(r, "kernels", 0);
    lua_pushstring(L, "kernels");
    if (lua_rawget(L, 1) != LUA_TTABLE)
        gen_lua_field_error(L, r, "expected a list of kernels, got %s", luaL_typename(L, -1));
    int n = (int)lua_rawlen(L, -1);
    if (n < 1 || n > GEN_MAX_KERNELS)
        gen_lua_field_error(L, r, "expected 1 to %d kernels, got %d", GEN_MAX_KERNELS, n);
    for (int i = 0; i < n; i++) {
        size_t o2 = gen_path_push(r, NULL, i + 1);
        lua_rawgeti(L, -1, i + 1);
        read_kernel(L, r, x->d, &x->plan->kernels[i]);
        lua_pop(L, 1);
        r->path[o2] = '\0';
    }
    x->plan->n_kernels = n;
    lua_pop(L, 1);
    r->path[old] = '\0';
}

/* Every field but kernels/workspace/splits becomes a named scalar. */
static void read_scalars(lua_State *L, gen_reader *r, gen_plan *plan)
{
    lua_pushnil(L);
    while (lua_next(L, 1)) {
        const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
        if (k && (!strcmp(k, "kernels") || !strcmp(k, "workspace") || !strcmp(k, "splits"))) {
            lua_pop(L, 1);
            continue;
        }
        if (!k || strlen(k) >= GEN_NAME_CAP)
            gen_lua_field_error(L, r, "extra keys must be names of integer scalars");
        size_t old = gen_path_push(r, k, 0);
        if (plan->n_scalars == GEN_MAX_SCALARS)
            gen_lua_field_error(L, r, "more than %d scalars", GEN_MAX_SCALARS);
        plan->scalars[plan->n_scalars].value = gen_lua_check_int(L, r, -1, 0);
        snprintf(plan->scalars[plan->n_scalars++].name, GEN_NAME_CAP, "%s", k);
        r->path[old] = '\0';
        lua_pop(L, 1);
    }
}

static void read_plan(lua_State *L, gen_reader *r)
{
    plan_ctx *x = r->out;
    if (!lua_istable(L, 1))
        gen_lua_field_error(L, r, "expected a table {kernels, workspace, splits}, got %s",
                            luaL_typename(L, 1));
    read_kernels(L, r, x);
    x->plan->workspace = opt_int(L, r, 1, "workspace", 0, 0);
    int64_t splits = opt_int(L, r, 1, "splits", 1, 1);
    if (splits > INT32_MAX)
        gen_lua_field_error(L, r, "splits too large");
    x->plan->splits = (int32_t)splits;
    read_scalars(L, r, x->plan);
}

fmqa_status gen_launch_plan(const gen_template *t, const gen_config *c, const fmqa_problem *p,
                            const fmqa_device_info *d, gen_plan *out, fmqa_err *err)
{
    fmqa_status st = gen_check(t, c, p, d, err);
    if (st != FMQA_OK)
        return st;
    gen_plan plan;
    memset(&plan, 0, sizeof plan);
    plan_ctx x = {&plan, d};
    gen_args args = {c, p, d};
    gen_lock(t);
    st = gen_lua_call(t, "launch", &args, 1, err);
    if (st == FMQA_OK) {
        gen_reader r = {.t = (gen_template *)t, .line = t->fn_line[GEN_FN_LAUNCH], .out = &x};
        snprintf(r.path, sizeof r.path, "launch()");
        st = gen_lua_read(&r, read_plan, err);
    }
    gen_unlock(t);
    if (st == FMQA_OK)
        *out = plan;
    return st;
}

int gen_plan_scalar(const gen_plan *plan, const char *name, int64_t *value)
{
    for (int i = 0; i < plan->n_scalars; i++)
        if (strcmp(plan->scalars[i].name, name) == 0) {
            *value = plan->scalars[i].value;
            return 1;
        }
    return 0;
}
