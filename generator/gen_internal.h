/*
 * gen_internal.h -- shared between the generator's own sources, not used
 * outside generator/.  It defines the lib and template records, the embedded
 * file table written at build time, and the Lua sandbox helpers.
 *
 * Invariants: a gen_template with status FMQA_OK has a registry reference to
 * its Lua table (ref != LUA_NOREF) and a complete description (op, sources,
 * entries, params sorted by name).  All Lua work on a lib happens with lib->mu
 * held; gen_lua_* functions expect the caller to hold it.
 */
#ifndef FMQA_GEN_INTERNAL_H
#define FMQA_GEN_INTERNAL_H

#include <pthread.h>
#include <stddef.h>
#include <time.h>

#include <lua.h>

#include "gen.h"

/* Files embedded at build time (generated gen_embedded.c). */
typedef struct gen_embedded_file {
    const char *name;           /* name in the set, "decode.lua", "lib/combine.lua" */
    const unsigned char *data;  /* not NUL-terminated */
    size_t size;
} gen_embedded_file;
extern const gen_embedded_file gen_embedded_files[];
extern const int gen_embedded_count;

/* One file of a template set (Lua, CUDA source or header, or a Lua library
 * under lib/). */
typedef struct gen_file {
    char *name;  /* bare file name; "lib/NAME.lua" for a library */
    char *text;  /* NUL-terminated copy */
    size_t size;
} gen_file;

/* Libraries (lib/NAME.lua of the set) one template may require, in all and
 * nested. */
#define GEN_MAX_LIBS 8

/* Template functions, with the line each is defined on (0 = absent). */
enum { GEN_FN_SPECIALIZE, GEN_FN_VALID, GEN_FN_LAUNCH, GEN_FN_DEFAULT, GEN_FN_ARCH_SPECIFIC,
       GEN_FN_COUNT };
extern const char *const gen_fn_names[GEN_FN_COUNT];

typedef struct gen_param {
    char name[GEN_NAME_CAP];
    int n;
    int64_t values[GEN_MAX_VALUES];
} gen_param;

struct gen_template {
    gen_lib *lib;
    char file[GEN_NAME_CAP];      /* "decode.lua"                 */
    char *chunk;                  /* "templates/decode.lua"       */
    const gen_file *lua;
    char name[GEN_NAME_CAP];
    fmqa_status status;
    char *message;
    fmqa_op op;
    int arch_min;
    char *accuracy;
    int n_sources;
    char **sources;
    int n_entries;
    char **entries;
    int n_params;
    gen_param params[GEN_MAX_PARAMS];
    char hash[FMQA_HASH_HEX];
    int fn_line[GEN_FN_COUNT];
    int arch_specific;            /* boolean field (function: fn_line) */
    int ref;                      /* registry ref of the Lua table */
    int n_libs;                   /* libraries its file required,  */
    const gen_file *libs[GEN_MAX_LIBS]; /* in order (in the hash) */
};

struct gen_lib {
    char *origin;                 /* "embedded" or the directory   */
    char *prefix;                 /* "templates": chunk/#line dir  */
    int n_files;
    gen_file *files;              /* sorted by name                */
    int n_templates;
    gen_template *templates;      /* sorted by file name           */
    lua_State *L;
    pthread_mutex_t mu;
    size_t mem_used, mem_cap;     /* counting allocator            */
    int capped;                   /* in a template call: cap holds */
    int refusals;                 /* growths refused in this call  */
    long long steps, step_cap;    /* instruction budget per call   */
    struct timespec deadline;     /* CPU-time end of the call      */
    int tripped;                  /* a cap was hit (gen_lua.c)     */
    char mem_msg[400];            /* message of a memory cap       */
    gen_template *loading;        /* whose file runs: require works */
    int req_depth;                /* libraries being run, nested   */
    const gen_file *req_stack[GEN_MAX_LIBS];
};

/* Limits of the sandbox, per call of a template function (or chunk): memory
 * held by the state, VM instructions (C functions that loop are charged their
 * work), and the calling thread's CPU time, checked at every function call
 * and every GEN_LUA_HOOK_EVERY instructions as the last line of defence. */
#define GEN_LUA_MEM_CAP ((size_t)64 << 20)
#define GEN_LUA_STEP_CAP 20000000LL
#define GEN_LUA_HOOK_EVERY 1000
#define GEN_LUA_CPU_MS 500
#define GEN_LUA_MEM_REFUSALS 8

/* Set lookup by bare file name; NULL if absent. */
const gen_file *gen_lib_file(const gen_lib *lib, const char *name);

/* Creates the sandboxed state of a lib (base, string, table, math; no load,
 * loadfile, dofile, collectgarbage, string.dump; silent print; require of
 * the set's lib/NAME.lua only, while a template file loads). */
fmqa_status gen_lua_open(gen_lib *lib, fmqa_err *err);

/* Loads (text only, chunk name "@<t->chunk>") and runs a template's Lua file
 * with a fresh budget, leaving the value it returns on the stack; the
 * libraries it requires are noted in t->libs. */
fmqa_status gen_lua_run_chunk(gen_template *t, fmqa_err *err);

/* Arguments of a template function, pushed in this order when not NULL:
 * config, problem, device (specialize(p), valid(c,p,d), default(p,d), ...). */
typedef struct gen_args {
    const gen_config *c;
    const fmqa_problem *p;
    const fmqa_device_info *d;
} gen_args;

/*
 * Calls field `fn` of the template table with args, in protected mode (the
 * argument tables are built inside it too) with a traceback handler and a
 * fresh instruction budget, leaving nres results on the stack.  On error the
 * stack is as before and err (FMQA_ERR_TEMPLATE) reads "<fn>(): <message>".
 * A missing optional function: FMQA_ERR_NOT_FOUND, no message, nothing pushed.
 */
fmqa_status gen_lua_call(const gen_template *t, const char *fn, const gen_args *args, int nres,
                         fmqa_err *err);

/*
 * Runs reader(L, r) as a protected C function over the value at the top of
 * the stack (which it pops; the reader finds it at index 1).  Readers raise
 * errors through gen_lua_field_error, which formats
 * "<chunk>:<line>: <path>: <what>"; the line is r->line when set, else that of
 * the first `key =` (key: the last name in the path) in the Lua source.
 */
typedef struct gen_reader {
    gen_template *t;
    int line;
    char path[256];  /* field path being read, e.g. "space.BLOCK_N" */
    void *out;       /* destination of the read */
} gen_reader;
typedef void (*gen_read_fn)(lua_State *L, gen_reader *r);
fmqa_status gen_lua_read(gen_reader *r, gen_read_fn reader, fmqa_err *err);
int gen_lua_field_error(lua_State *L, gen_reader *r, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Reads an integer (booleans as 0/1 when allow_bool) at idx, raising a field
 * error naming r->path otherwise. */
int64_t gen_lua_check_int(lua_State *L, gen_reader *r, int idx, int allow_bool);
/* Appends ".key" (or "[index]" when key is NULL) to r->path; returns the old
 * length, to restore with r->path[old] = 0. */
size_t gen_path_push(gen_reader *r, const char *key, long long index);
/* Line of the first `key =` in the template's Lua source, or 0. */
int gen_lua_field_line(const gen_template *t, const char *key);

/* Reads the table on top of the stack (popped), returned by template function
 * fn, as NAME = integer (or boolean as 0/1 when allow_bool) pairs into
 * names/values (OUT, cap entries); *n (OUT) is the count read. */
fmqa_status gen_read_int_table(gen_template *t, int fn, int allow_bool, int cap,
                               char (*names)[GEN_NAME_CAP], int64_t *values, int *n,
                               fmqa_err *err);

/* Template locking (the lib's mutex). */
void gen_lock(const gen_template *t);
void gen_unlock(const gen_template *t);

/* Toolkit include directory for NVRTC ($FASTMQA_CUDA_INCLUDE or built in). */
const char *gen_cuda_include_dir(void);

#endif /* FMQA_GEN_INTERNAL_H */
