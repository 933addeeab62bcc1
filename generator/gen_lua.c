/*
 * gen_lua.c -- the Lua sandbox templates run in, and the protected readers that
 * turn Lua values into C records.
 *
 * The state of a lib opens base, string, table and math only, without load,
 * loadfile, dofile, collectgarbage and string.dump; print is silent; require
 * runs the set's lib/NAME.lua (nothing else) while a template file loads.
 * Every call of a template (and every chunk) must return: memory is capped by
 * a counting allocator (GEN_LUA_MEM_CAP), VM instructions by a count hook
 * (GEN_LUA_STEP_CAP) that names the file:line it stopped at, and the calling
 * thread's CPU time (GEN_LUA_CPU_MS) by the same hook, which also runs at every
 * function call so that slow C functions meet it too.  The ways around those
 * caps are closed: pcall and xpcall re-raise a cap once it was hit (a template
 * cannot catch it and go on), xpcall runs its message handler as an ordinary
 * call (Lua runs handlers of errors raised in a hook with hooks off),
 * setmetatable refuses __gc (Lua runs finalizers with hooks off), and the C
 * functions that can loop without instructions or allocations are charged
 * their work (string.rep, table.move, the pattern functions at their worst
 * case).  Everything that may allocate on the Lua side (argument tables,
 * registry references, reads) runs inside lua_pcall, so a memory error never
 * reaches the panic handler.  Readers use raw access only: a template's
 * metatables cannot run code while C reads its tables.
 */
#define _POSIX_C_SOURCE 200809L /* clock_gettime */
#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lualib.h>

#include "gen_internal.h"

static gen_lib *lib_of(lua_State *L)
{
    void *ud = NULL;
    lua_getallocf(L, &ud);
    return ud;
}

/* Counting allocator: refuses growth past the cap, so a runaway template gets
 * a Lua memory error instead of exhausting the process.  Lua answers a refusal
 * with a full collection and one retry; a call that keeps pressing against the
 * cap would spend its time collecting, so after GEN_LUA_MEM_REFUSALS refusals
 * every growth fails until the call ends.  The cap holds during template calls
 * only: the few values C pushes outside them (messages) must not fail, as
 * there a memory error would end in Lua's panic handler. */
static void *sandbox_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    gen_lib *lib = ud;
    size_t old = ptr ? osize : 0;
    if (nsize == 0) {
        free(ptr);
        lib->mem_used -= old;
        return NULL;
    }
    if (nsize > old && lib->capped &&
        (lib->refusals >= GEN_LUA_MEM_REFUSALS || lib->mem_used - old + nsize > lib->mem_cap)) {
        lib->refusals++;
        return NULL;
    }
    void *q = realloc(ptr, nsize);
    if (q)
        lib->mem_used = lib->mem_used - old + nsize;
    return q;
}

/* Why a call stopped; once set, pcall and xpcall re-raise instead of
 * returning, so a template cannot catch a cap and carry on. */
enum { TRIP_NONE, TRIP_STEPS, TRIP_TIME, TRIP_MEMORY };

static void cpu_now(struct timespec *ts)
{
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, ts);
}

static int past(const struct timespec *now, const struct timespec *end)
{
    return now->tv_sec > end->tv_sec || (now->tv_sec == end->tv_sec && now->tv_nsec >= end->tv_nsec);
}

/* Raises the error of a cap, at the innermost Lua line on the stack (a hook
 * may run at the call of a C function, whose frame has no line). */
static int trip(lua_State *L, int why)
{
    gen_lib *lib = lib_of(L);
    lib->tripped = why;
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    lua_Debug d;
    for (int level = 0; lua_getstack(L, level, &d); level++)
        if (lua_getinfo(L, "Sl", &d) && d.currentline > 0) {
            lua_pushfstring(L, "%s:%d: ", d.short_src, d.currentline);
            luaL_addvalue(&b);
            break;
        }
    if (why == TRIP_TIME)
        lua_pushfstring(L, "time limit (%d ms of CPU time) exceeded", GEN_LUA_CPU_MS);
    else
        lua_pushfstring(L, "instruction limit (%d million) exceeded",
                        (int)(lib->step_cap / 1000000));
    luaL_addvalue(&b);
    luaL_pushresult(&b);
    return lua_error(L);
}

/* Notes a memory cap hit in the function that called the running C function
 * (Lua unwinds a memory error without a message handler, so the line is
 * taken here); `what` follows the limit. */
static void trip_memory(lua_State *L, const char *what)
{
    gen_lib *lib = lib_of(L);
    lua_Debug d;
    int line = lua_getstack(L, 1, &d) && lua_getinfo(L, "Sl", &d) ? d.currentline : 0;
    lib->tripped = TRIP_MEMORY;
    if (line > 0)
        snprintf(lib->mem_msg, sizeof lib->mem_msg, "%s:%d: memory limit (%d MiB) exceeded%s",
                 d.short_src, line, (int)(lib->mem_cap >> 20), what);
    else
        snprintf(lib->mem_msg, sizeof lib->mem_msg, "memory limit (%d MiB) exceeded%s",
                 (int)(lib->mem_cap >> 20), what);
}

/* Charges `work` instructions to the call's budget (C functions that loop
 * pay what they would cost), raising the instruction limit when spent. */
static void charge(lua_State *L, double work)
{
    gen_lib *lib = lib_of(L);
    if (lib->tripped || work > (double)(lib->step_cap - lib->steps))
        trip(L, lib->tripped ? lib->tripped : TRIP_STEPS);
    lib->steps += (long long)work;
}

static void step_hook(lua_State *L, lua_Debug *ar)
{
    gen_lib *lib = lib_of(L);
    if (ar->event == LUA_HOOKCOUNT)
        charge(L, GEN_LUA_HOOK_EVERY);
    struct timespec now;
    cpu_now(&now);
    if (past(&now, &lib->deadline))
        trip(L, TRIP_TIME);
}

/* pcall(f, ...) that re-raises a cap instead of returning false. */
static int sandbox_pcall(lua_State *L)
{
    luaL_checkany(L, 1);
    int rc = lua_pcall(L, lua_gettop(L) - 1, LUA_MULTRET, 0);
    gen_lib *lib = lib_of(L);
    if (rc == LUA_ERRMEM && !lib->tripped)
        trip_memory(L, "");
    if (rc != LUA_OK && lib->tripped)
        return lua_error(L);
    lua_pushboolean(L, rc == LUA_OK);
    lua_insert(L, 1);
    return lua_gettop(L);
}

/* xpcall(f, msgh, ...): f runs like pcall; msgh then gets the error as an
 * ordinary (hooked) protected call, whose result is the second value. */
static int sandbox_xpcall(lua_State *L)
{
    luaL_checktype(L, 2, LUA_TFUNCTION);
    int n = lua_gettop(L);
    luaL_checkstack(L, n + 4, NULL);
    lua_pushcfunction(L, sandbox_pcall);
    lua_pushvalue(L, 1);
    for (int i = 3; i <= n; i++)
        lua_pushvalue(L, i);
    lua_call(L, n - 1, LUA_MULTRET); /* f, msgh, args..., ok, results... */
    if (lua_toboolean(L, n + 1))
        return lua_gettop(L) - n;
    lua_settop(L, n + 2);
    lua_pushcfunction(L, sandbox_pcall);
    lua_pushvalue(L, 2);
    lua_pushvalue(L, n + 2);
    lua_call(L, 2, 2); /* ..., false, error, handled?, result */
    lua_pushboolean(L, 0);
    lua_insert(L, -2);
    return 2;
}

/* setmetatable refusing __gc: a finalizer would run with hooks off. */
static int sandbox_setmetatable(lua_State *L)
{
    if (lua_type(L, 2) == LUA_TTABLE && lua_getfield(L, 2, "__gc") != LUA_TNIL)
        return luaL_error(L, "setmetatable: __gc metamethods are not allowed in templates");
    lua_settop(L, 2);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, 2, 1);
    return 1;
}

/* string.rep: an empty result takes no time, a large one is refused before
 * it is built (empty pieces repeated 2^60 times would loop in C). */
static int sandbox_rep(lua_State *L)
{
    size_t l = 0, lsep = 0;
    luaL_checklstring(L, 1, &l);
    lua_Integer n = luaL_checkinteger(L, 2);
    luaL_optlstring(L, 3, "", &lsep);
    if (n <= 0 || l + lsep == 0) {
        lua_pushliteral(L, "");
        return 1;
    }
    gen_lib *lib = lib_of(L);
    double bytes = (double)n * (double)(l + lsep);
    if (bytes > (double)lib->mem_cap) {
        char what[64];
        snprintf(what, sizeof what, ": string.rep of %.0f bytes", bytes);
        trip_memory(L, what);
        return luaL_error(L, "%s", lib->mem_msg);
    }
    charge(L, bytes / 64);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, 1);
    return 1;
}

/* table.move(a1, f, e, t [,a2]): charged one instruction per element. */
static int sandbox_move(lua_State *L)
{
    lua_Integer f = luaL_checkinteger(L, 2), e = luaL_checkinteger(L, 3);
    if (e >= f)
        charge(L, (double)e - (double)f + 1);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
    return lua_gettop(L);
}

/* find, match, gmatch, gsub: charged their worst case, one backtracking step
 * per (subject length + 1)^(quantifiers + 1) (each start position may try
 * every split of every quantifier), before they run. */
static int sandbox_pattern(lua_State *L)
{
    size_t ls = 0, lp = 0;
    luaL_checklstring(L, 1, &ls);
    const char *pat = luaL_checklstring(L, 2, &lp);
    int q = 0;
    for (size_t i = 0; i < lp; i++) {
        if (pat[i] == '%' && i + 1 < lp && pat[i + 1] == 'b')
            q++;
        if (pat[i] == '%')
            i++;
        else if (pat[i] == '*' || pat[i] == '+' || pat[i] == '-' || pat[i] == '?')
            q++;
    }
    charge(L, pow((double)ls + 1, q + 1));
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
    return lua_gettop(L);
}

/* Replaces lib[name] by f, with the original as f's upvalue. */
static void wrap(lua_State *L, const char *lib, const char *name, lua_CFunction f)
{
    lua_getglobal(L, lib);
    lua_getfield(L, -1, name);
    lua_pushcclosure(L, f, 1);
    lua_setfield(L, -2, name);
    lua_pop(L, 1);
}

static int silent_print(lua_State *L)
{
    return 0;
}

/* A library's name: letters, digits and _, so that lib/NAME.lua can name no
 * file outside the set's lib/. */
static int is_lib_name(const char *s, size_t len)
{
    if (len == 0 || len >= GEN_NAME_CAP)
        return 0;
    for (size_t i = 0; i < len; i++)
        if (!isalnum((unsigned char)s[i]) && s[i] != '_')
            return 0;
    return 1;
}

/* Notes f among the libraries of the loading template (they join its hash). */
static void note_lib(lua_State *L, gen_template *t, const gen_file *f)
{
    for (int i = 0; i < t->n_libs; i++)
        if (t->libs[i] == f)
            return;
    if (t->n_libs == GEN_MAX_LIBS)
        luaL_error(L, "require: a template may use at most %d libraries", GEN_MAX_LIBS);
    t->libs[t->n_libs++] = f;
}

/* require(name): runs lib/NAME.lua of the template set, as text, under the
 * budget of the file that requires it, and returns its value.  Only while a
 * template file loads (its functions are then closures over the library's),
 * so that the libraries a template uses are known when its hash is taken.
 * Every require runs the file afresh: templates share no library state. */
static int sandbox_require(lua_State *L)
{
    gen_lib *lib = lib_of(L);
    size_t len = 0;
    const char *name = luaL_checklstring(L, 1, &len);
    if (!is_lib_name(name, len))
        return luaL_error(L, "require: '%s' is not a library name (the file is lib/NAME.lua of "
                             "the template set, NAME of letters, digits and _)", name);
    if (!lib->loading)
        return luaL_error(L, "require: only while a template file loads, not in its functions");
    char file[GEN_NAME_CAP + 8];
    snprintf(file, sizeof file, "lib/%s.lua", name);
    const gen_file *f = gen_lib_file(lib, file);
    if (!f)
        return luaL_error(L, "require: no library '%s' (%s/%s) in %s", name, lib->prefix, file,
                          lib->origin);
    for (int i = 0; i < lib->req_depth; i++)
        if (lib->req_stack[i] == f)
            return luaL_error(L, "require: library '%s' requires itself", name);
    if (lib->req_depth == GEN_MAX_LIBS)
        return luaL_error(L, "require: libraries nested deeper than %d", GEN_MAX_LIBS);
    note_lib(L, lib->loading, f);
    lua_pushfstring(L, "@%s/%s", lib->prefix, file);
    if (luaL_loadbufferx(L, f->text, f->size, lua_tostring(L, -1), "t") != LUA_OK)
        return lua_error(L);
    lib->req_stack[lib->req_depth++] = f;
    int rc = lua_pcall(L, 0, 1, 0);
    lib->req_depth--;
    if (rc == LUA_ERRMEM && !lib->tripped)
        trip_memory(L, "");
    if (rc != LUA_OK)
        return lua_error(L);
    return 1;
}

static int open_sandbox(lua_State *L)
{
    static const luaL_Reg libs[] = {{LUA_GNAME, luaopen_base},
                                    {LUA_STRLIBNAME, luaopen_string},
                                    {LUA_TABLIBNAME, luaopen_table},
                                    {LUA_MATHLIBNAME, luaopen_math}};
    for (size_t i = 0; i < sizeof libs / sizeof libs[0]; i++) {
        luaL_requiref(L, libs[i].name, libs[i].func, 1);
        lua_pop(L, 1);
    }
    static const char *const removed[] = {"load", "loadfile", "dofile", "collectgarbage"};
    for (size_t i = 0; i < sizeof removed / sizeof removed[0]; i++) {
        lua_pushnil(L);
        lua_setglobal(L, removed[i]);
    }
    lua_pushcfunction(L, silent_print);
    lua_setglobal(L, "print");
    lua_pushcfunction(L, sandbox_require);
    lua_setglobal(L, "require");
    lua_getglobal(L, LUA_STRLIBNAME);
    lua_pushnil(L);
    lua_setfield(L, -2, "dump");
    lua_pop(L, 1);
    lua_pushcfunction(L, sandbox_pcall);
    lua_setglobal(L, "pcall");
    lua_pushcfunction(L, sandbox_xpcall);
    lua_setglobal(L, "xpcall");
    wrap(L, LUA_GNAME, "setmetatable", sandbox_setmetatable);
    wrap(L, LUA_STRLIBNAME, "rep", sandbox_rep);
    wrap(L, LUA_TABLIBNAME, "move", sandbox_move);
    static const char *const patterns[] = {"find", "match", "gmatch", "gsub"};
    for (size_t i = 0; i < sizeof patterns / sizeof patterns[0]; i++)
        wrap(L, LUA_STRLIBNAME, patterns[i], sandbox_pattern);
    return 0;
}

fmqa_status gen_lua_open(gen_lib *lib, fmqa_err *err)
{
    lib->mem_cap = GEN_LUA_MEM_CAP;
    lib->step_cap = GEN_LUA_STEP_CAP;
    lib->L = lua_newstate(sandbox_alloc, lib);
    if (!lib->L)
        return fmqa_err_set(err, FMQA_ERR_OUT_OF_MEMORY, "cannot create the Lua state");
    lua_pushcfunction(lib->L, open_sandbox);
    if (lua_pcall(lib->L, 0, 0, 0) != LUA_OK) {
        fmqa_err_set(err, FMQA_ERR_OUT_OF_MEMORY, "cannot open the Lua libraries: %s",
                     lua_tostring(lib->L, -1));
        lua_close(lib->L);
        lib->L = NULL;
        return err ? err->status : FMQA_ERR_OUT_OF_MEMORY;
    }
    lua_sethook(lib->L, step_hook, LUA_MASKCOUNT | LUA_MASKCALL, GEN_LUA_HOOK_EVERY);
    return FMQA_OK;
}

static int traceback_handler(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    if (!msg)
        msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    luaL_traceback(L, L, msg, 1);
    return 1;
}

/* Starts a protected call: fresh budgets, and a message for memory errors,
 * for which Lua calls no handler (lib->mem_msg, which names the line when a
 * pcall caught the error or string.rep refused). */
static int pcall_budgeted(lua_State *L, int nargs, int nres, int msgh)
{
    gen_lib *lib = lib_of(L);
    lib->steps = 0;
    lib->tripped = TRIP_NONE;
    lib->refusals = 0;
    snprintf(lib->mem_msg, sizeof lib->mem_msg, "memory limit (%d MiB) exceeded",
             (int)(lib->mem_cap >> 20));
    cpu_now(&lib->deadline);
    lib->deadline.tv_sec += GEN_LUA_CPU_MS / 1000;
    lib->deadline.tv_nsec += (GEN_LUA_CPU_MS % 1000) * 1000000L;
    if (lib->deadline.tv_nsec >= 1000000000L) {
        lib->deadline.tv_sec++;
        lib->deadline.tv_nsec -= 1000000000L;
    }
    lib->capped = 1;
    int rc = lua_pcall(L, nargs, nres, msgh);
    lib->capped = 0;
    if (rc != LUA_OK)
        lua_gc(L, LUA_GCCOLLECT);
    if (rc == LUA_ERRMEM || (rc != LUA_OK && lib->tripped == TRIP_MEMORY)) {
        lua_pop(L, 1);
        lua_pushstring(L, lib->mem_msg);
    }
    return rc;
}

/* Message of a failed call: its first lines up to the C boundary of the
 * traceback, which says nothing a template author can use. */
static void set_lua_error(lua_State *L, fmqa_err *err, const char *what)
{
    const char *msg = lua_tostring(L, -1);
    fmqa_err_set(err, FMQA_ERR_TEMPLATE, "%s%s", what, msg ? msg : "(no message)");
}

/* ------------------------------------------------------------ argument tables */

static void set_int(lua_State *L, const char *k, lua_Integer v)
{
    lua_pushinteger(L, v);
    lua_setfield(L, -2, k);
}

static void set_str(lua_State *L, const char *k, const char *v)
{
    lua_pushstring(L, v ? v : "?");
    lua_setfield(L, -2, k);
}

static void set_bool(lua_State *L, const char *k, int v)
{
    lua_pushboolean(L, v);
    lua_setfield(L, -2, k);
}

static const char *rope_name(fmqa_rope r)
{
    switch (r) {
    case FMQA_ROPE_NONE: return "none";
    case FMQA_ROPE_NEOX: return "neox";
    case FMQA_ROPE_GPTJ: return "gptj";
    }
    return NULL;
}

static void push_problem(lua_State *L, const fmqa_problem *p)
{
    lua_createtable(L, 0, 24);
    set_str(L, "op", fmqa_op_name(p->op));
    set_int(L, "batch", p->batch);
    set_int(L, "num_q_heads", p->num_q_heads);
    set_int(L, "num_kv_heads", p->num_kv_heads);
    set_int(L, "head_dim_qk", p->head_dim_qk);
    set_int(L, "head_dim_v", p->head_dim_v);
    set_int(L, "q_tokens", p->q_tokens);
    set_int(L, "kv_len", p->kv_len);
    set_str(L, "q_dtype", fmqa_dtype_name(p->q_dtype));
    set_str(L, "kv_dtype", fmqa_dtype_name(p->kv_dtype));
    set_str(L, "out_dtype", fmqa_dtype_name(p->out_dtype));
    set_int(L, "page_size", p->page_size);
    set_int(L, "window", p->window);
    set_int(L, "sink_tokens", p->sink_tokens);
    set_int(L, "draft_slots", p->draft_slots);
    lua_pushnumber(L, p->logit_softcap);
    lua_setfield(L, -2, "logit_softcap");
    set_str(L, "rope", rope_name(p->rope));
    set_bool(L, "causal", (p->flags & FMQA_FLAG_CAUSAL) != 0);
    set_bool(L, "paged", (p->flags & FMQA_FLAG_PAGED) != 0);
    set_bool(L, "tree", (p->flags & FMQA_FLAG_TREE_MASK) != 0);
    set_bool(L, "lse", (p->flags & FMQA_FLAG_LSE) != 0);
    set_bool(L, "ring", (p->flags & FMQA_FLAG_RING) != 0);
    set_bool(L, "batch_invariant", (p->flags & FMQA_FLAG_BATCH_INVARIANT) != 0);
    set_str(L, "kv_scale", fmqa_kv_scale_name(p->kv_scale_granularity));
    set_bool(L, "kv_cache", (p->flags & FMQA_FLAG_KV_CACHE) != 0);
    set_bool(L, "latent", (p->flags & FMQA_FLAG_LATENT) != 0);
    set_bool(L, "csr", (p->flags & FMQA_FLAG_PAGE_CSR) != 0);
    set_bool(L, "slot_mapping", (p->flags & FMQA_FLAG_SLOT_MAPPING) != 0);
    set_int(L, "rope_dim", p->rope_dim);
    set_bool(L, "scores", (p->flags & FMQA_FLAG_SCORES) != 0);
}

static void push_device(lua_State *L, const fmqa_device_info *d)
{
    lua_createtable(L, 0, 12);
    set_str(L, "name", d->name);
    set_int(L, "cc", d->cc_major * 10 + d->cc_minor);
    set_int(L, "cc_major", d->cc_major);
    set_int(L, "cc_minor", d->cc_minor);
    set_str(L, "arch", d->arch);
    set_int(L, "sm_count", d->sm_count);
    set_int(L, "smem_per_block_optin", d->smem_per_block_optin);
    set_int(L, "smem_per_sm", d->smem_per_sm);
    set_int(L, "regs_per_sm", d->regs_per_sm);
    set_int(L, "max_threads_per_block", d->max_threads_per_block);
    set_int(L, "l2_bytes", d->l2_bytes);
}

static void push_config(lua_State *L, const gen_config *c)
{
    lua_createtable(L, 0, c->n);
    for (int i = 0; i < c->n; i++)
        set_int(L, c->p[i].name, c->p[i].value);
}

typedef struct call_ctx {
    const gen_template *t;
    const char *fn;
    const gen_args *args;
    int nres;
    int missing;
} call_ctx;

/* Runs protected: [ctx] -> the function's nres results (nils when the
 * template has no such function, which sets x->missing). */
static int call_trampoline(lua_State *L)
{
    call_ctx *x = lua_touserdata(L, 1);
    lua_pop(L, 1);
    lua_rawgeti(L, LUA_REGISTRYINDEX, x->t->ref);
    lua_pushstring(L, x->fn);
    if (lua_rawget(L, -2) != LUA_TFUNCTION) {
        x->missing = 1;
        return 0;
    }
    lua_remove(L, -2);
    int n = 0;
    if (x->args->c) {
        push_config(L, x->args->c);
        n++;
    }
    push_problem(L, x->args->p);
    n++;
    if (x->args->d) {
        push_device(L, x->args->d);
        n++;
    }
    lua_call(L, n, x->nres);
    return x->nres;
}

fmqa_status gen_lua_call(const gen_template *t, const char *fn, const gen_args *args, int nres,
                         fmqa_err *err)
{
    lua_State *L = t->lib->L;
    int base = lua_gettop(L);
    call_ctx x = {t, fn, args, nres, 0};
    lua_pushcfunction(L, traceback_handler);
    lua_pushcfunction(L, call_trampoline);
    lua_pushlightuserdata(L, &x);
    if (pcall_budgeted(L, 1, nres, base + 1) != LUA_OK) {
        char what[GEN_NAME_CAP + 8];
        snprintf(what, sizeof what, "%s(): ", fn);
        set_lua_error(L, err, what);
        lua_settop(L, base);
        return FMQA_ERR_TEMPLATE;
    }
    lua_remove(L, base + 1);
    if (x.missing) {
        lua_settop(L, base);
        return FMQA_ERR_NOT_FOUND;
    }
    return FMQA_OK;
}

fmqa_status gen_lua_run_chunk(gen_template *t, fmqa_err *err)
{
    lua_State *L = t->lib->L;
    int base = lua_gettop(L);
    char chunkname[300];
    snprintf(chunkname, sizeof chunkname, "@%s", t->chunk);
    lua_pushcfunction(L, traceback_handler);
    int rc = luaL_loadbufferx(L, t->lua->text, t->lua->size, chunkname, "t");
    t->n_libs = 0;
    t->lib->loading = t;
    t->lib->req_depth = 0;
    if (rc == LUA_OK)
        rc = pcall_budgeted(L, 0, 1, base + 1);
    else if (rc == LUA_ERRMEM)
        lua_pushfstring(L, "memory limit exceeded while loading");
    t->lib->loading = NULL;
    if (rc != LUA_OK) {
        set_lua_error(L, err, "");
        lua_settop(L, base);
        return FMQA_ERR_TEMPLATE;
    }
    lua_remove(L, base + 1);
    return FMQA_OK;
}

/* ------------------------------------------------------------ readers */

int gen_lua_field_line(const gen_template *t, const char *key)
{
    const char *text = t->lua->text;
    size_t klen = strlen(key);
    for (const char *s = strstr(text, key); s && klen; s = strstr(s + 1, key)) {
        int word_start = s == text || !(isalnum((unsigned char)s[-1]) || s[-1] == '_');
        const char *e = s + klen;
        if (!word_start || isalnum((unsigned char)*e) || *e == '_')
            continue;
        while (*e == ' ' || *e == '\t')
            e++;
        if (*e == '=' && e[1] != '=') {
            int line = 1;
            for (const char *c = text; c < s; c++)
                line += *c == '\n';
            return line;
        }
    }
    return 0;
}

/* The last named component of a path: "space.BLOCK_N[2]" -> "BLOCK_N". */
static void last_key(const char *path, char *out, size_t cap)
{
    const char *dot = strrchr(path, '.');
    const char *s = dot ? dot + 1 : path;
    size_t n = strcspn(s, "[(");
    if (n >= cap)
        n = cap - 1;
    memcpy(out, s, n);
    out[n] = '\0';
}

int gen_lua_field_error(lua_State *L, gen_reader *r, const char *fmt, ...)
{
    char what[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    int line = r->line;
    if (!line) {
        char key[GEN_NAME_CAP];
        last_key(r->path, key, sizeof key);
        line = gen_lua_field_line(r->t, key);
    }
    if (line > 0)
        lua_pushfstring(L, "%s:%d: %s: %s", r->t->chunk, line, r->path, what);
    else
        lua_pushfstring(L, "%s: %s: %s", r->t->chunk, r->path, what);
    return lua_error(L);
}

size_t gen_path_push(gen_reader *r, const char *key, long long index)
{
    size_t old = strlen(r->path);
    if (key)
        snprintf(r->path + old, sizeof r->path - old, "%s%s", old ? "." : "", key);
    else
        snprintf(r->path + old, sizeof r->path - old, "[%lld]", index);
    return old;
}

/* "got string", "got number 1.5", "got nil". */
static const char *describe(lua_State *L, int idx, char *buf, size_t cap)
{
    if (lua_type(L, idx) == LUA_TNUMBER && !lua_isinteger(L, idx))
        snprintf(buf, cap, "number %.17g", (double)lua_tonumber(L, idx));
    else
        snprintf(buf, cap, "%s", luaL_typename(L, idx));
    return buf;
}

int64_t gen_lua_check_int(lua_State *L, gen_reader *r, int idx, int allow_bool)
{
    if (allow_bool && lua_type(L, idx) == LUA_TBOOLEAN)
        return lua_toboolean(L, idx);
    int ok = 0;
    lua_Integer v = 0;
    if (lua_type(L, idx) == LUA_TNUMBER)
        v = lua_tointegerx(L, idx, &ok);
    if (!ok) {
        char got[64];
        gen_lua_field_error(L, r, "expected integer%s, got %s", allow_bool ? " or boolean" : "",
                            describe(L, idx, got, sizeof got));
    }
    return v;
}

typedef struct read_ctx {
    gen_reader *r;
    gen_read_fn fn;
} read_ctx;

static int read_trampoline(lua_State *L)
{
    read_ctx *x = lua_touserdata(L, 2);
    lua_pop(L, 1);
    x->fn(L, x->r);
    return 0;
}

fmqa_status gen_lua_read(gen_reader *r, gen_read_fn reader, fmqa_err *err)
{
    lua_State *L = r->t->lib->L;
    int base = lua_gettop(L) - 1;
    lua_pushcfunction(L, read_trampoline);
    lua_insert(L, base + 1);
    read_ctx x = {r, reader};
    lua_pushlightuserdata(L, &x);
    int rc = pcall_budgeted(L, 2, 0, 0);
    if (rc != LUA_OK) {
        set_lua_error(L, err, "");
        lua_settop(L, base);
        return FMQA_ERR_TEMPLATE;
    }
    lua_settop(L, base);
    return FMQA_OK;
}
