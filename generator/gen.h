/*
 * gen.h -- the generator layer: Lua-described kernel templates, their variant
 * space, rendering to CUDA source, and NVRTC compilation (one call or a thread
 * pool with a cache).  docs/templates.md describes the template format.
 *
 * Objects and ownership:
 *  - gen_lib owns every gen_template it holds; a template pointer is valid until
 *    gen_lib_close().  A lib never fails to open because one template is bad:
 *    that template keeps a load status and message and every call on it returns
 *    FMQA_ERR_TEMPLATE.
 *  - gen_config and gen_plan are plain values (no pointers): copy them freely.
 *  - gen_source and gen_binary own all their memory (nothing points back into the
 *    lib), so they may outlive the lib and cross threads.  Free them with
 *    gen_source_free() / gen_binary_free(); both accept zeroed structs.
 *
 * Threading: every function is safe to call from several threads.  Calls into a
 * template's Lua code are serialized by a mutex per lib; rendering runs Lua under
 * that lock, compilation never does.
 *
 * Errors: every fallible function returns fmqa_status and, when err is not NULL,
 * a message naming the template file, line and field where it can, e.g.
 *   "templates/decode.lua:12: space.BLOCK_N: expected integer, got string".
 * OUT parameters are written only on success unless the comment says otherwise.
 */
#ifndef FMQA_GEN_H
#define FMQA_GEN_H

#include <stddef.h>
#include <stdint.h>

#include "fastmqa.h"
#include "fmqa_common.h"

/* Bumped whenever rendering or compilation changes what a template produces; part
 * of every template's identity hash (with FMQA_PARAMS_VERSION). */
#define GEN_VERSION 1

#define GEN_NAME_CAP 64        /* template, parameter and entry names incl. NUL  */
#define GEN_MAX_PARAMS 16      /* tunable parameters per template               */
#define GEN_MAX_VALUES 64      /* candidate values per parameter                */
#define GEN_MAX_KERNELS 4      /* kernels per launch plan                       */
#define GEN_MAX_SCALARS 8      /* extra named integers per launch plan          */
#define GEN_CONFIG_TEXT_CAP 256 /* canonical config text incl. NUL (fits
                                   fmqa_choice.config)                          */
#define GEN_PROBLEM_TEXT_CAP 512

/* ---------------------------------------------------------------- problems */

/*
 * Parses a compact problem spec into *out (OUT), e.g.
 *   op=decode,batch=8,heads=32,kv_heads=1,d=128,dv=128,tq=1,kv_len=4096,
 *   q=f16,kv=f16,out=f16,page=0,window=0,sinks=0,rope=none,flags=causal|paged
 * Keys: op (decode|prefill|mla_decode|append), batch, heads, kv_heads, d, dv,
 * tq, kv_len, q, kv, out (dtype names as fmqa_dtype_name), page, window, sinks,
 * draft_slots, softcap (a number >= 0: logit_softcap), rope (none|neox|gptj),
 * flags ('|'-separated causal, paged, tree, lse, ring, or "none").
 * gen_problem_format writes softcap and draft_slots only when they are set.  Omitted keys keep the defaults: decode, batch 1, heads 1,
 * kv_heads 1, d 128, dv = d, tq 1, kv_len 1024, f16 everywhere, no page,
 * window, sinks, rope or flags.  Errors name the bad token.  Checks syntax and
 * ranges only (positive sizes, known names); legality is the template's job.
 */
fmqa_status gen_problem_parse(const char *spec, fmqa_problem *out /* OUT */, fmqa_err *err);

/* Writes the spec of a problem in the syntax above, every key present, so that
 * gen_problem_parse(gen_problem_format(p)) == p.  Returns 0, or -1 if truncated. */
int gen_problem_format(const fmqa_problem *p, char *buf /* OUT */, size_t cap);

/*
 * A device description without a GPU, from an architecture name: "sm_80"
 * (A100: 108 SMs, 163 KB opt-in shared memory), "sm_86", "sm_89", "sm_90" and
 * "sm_90a" (H100: 132 SMs, 227 KB).  Fills every field of *out (OUT) with the
 * flagship part's numbers; FMQA_ERR_INVALID_ARGUMENT for an unknown name.
 */
fmqa_status gen_device_preset(const char *arch, fmqa_device_info *out /* OUT */, fmqa_err *err);

/* ---------------------------------------------------------------- library */

typedef struct gen_lib gen_lib;
typedef struct gen_template gen_template;

/*
 * Loads every NAME.lua of a directory (dir != NULL), or the set embedded in the
 * library at build time (dir == NULL; the caller resolves $FASTMQA_TEMPLATE_DIR
 * and the template_dir option first: either replaces the embedded set entirely).
 * The *.h and *.cuh files beside them are the headers NVRTC sees.  Chunk and
 * #line names are "<last dir component>/<file>", "templates/decode.lua" for the
 * embedded set.  Fails only when the directory cannot be read or memory runs
 * out; *out is NULL then.  Templates are kept sorted by file name.
 */
fmqa_status gen_lib_open(const char *dir, gen_lib **out /* OUT */, fmqa_err *err);
void gen_lib_close(gen_lib *lib); /* NULL is a no-op */

/* "embedded" or the directory given to gen_lib_open.  Owned by lib. */
const char *gen_lib_origin(const gen_lib *lib);
int gen_lib_count(const gen_lib *lib);
/* The i-th template (0 <= i < count), loaded or not. */
const gen_template *gen_lib_at(const gen_lib *lib, int i);
/* The successfully loaded template with that name, or NULL. */
const gen_template *gen_lib_find(const gen_lib *lib, const char *name);
/* Iterates the loaded templates of one op in file-name order: start with
 * prev == NULL; returns NULL after the last. */
const gen_template *gen_lib_next(const gen_lib *lib, fmqa_op op, const gen_template *prev);

/* Accessors; strings are owned by the lib. */
fmqa_status gen_template_status(const gen_template *t);   /* FMQA_OK if loaded */
const char *gen_template_message(const gen_template *t);  /* load error or ""  */
const char *gen_template_file(const gen_template *t);     /* "decode.lua"      */
const char *gen_template_name(const gen_template *t);     /* file stem until loaded */
fmqa_op gen_template_op(const gen_template *t);           /* 0 if not loaded   */
int gen_template_arch_min(const gen_template *t);         /* e.g. 80; 0 = any  */
const char *gen_template_accuracy(const gen_template *t); /* note or NULL      */
/* Identity hash (32 hex digits): the Lua file, its CUDA sources, every set
 * header they include (transitively), FMQA_PARAMS_VERSION and GEN_VERSION.
 * "" if the template did not load. */
const char *gen_template_hash(const gen_template *t);
/* Tunable parameters in name order, with their candidate values. */
int gen_template_param_count(const gen_template *t);
const char *gen_template_param_name(const gen_template *t, int i);
int gen_template_param_values(const gen_template *t, int i, const int64_t **values /* OUT */);

/* ---------------------------------------------------------------- configs */

/* One choice of every tunable parameter: (name, value) pairs kept sorted by
 * name, so the canonical text and hash do not depend on insertion order. */
typedef struct gen_config {
    int n;
    struct {
        char name[GEN_NAME_CAP];
        int64_t value;
    } p[GEN_MAX_PARAMS];
} gen_config;

void gen_config_init(gen_config *c /* OUT */);
/* Sets (or replaces) a parameter.  Names are [A-Za-z_][A-Za-z0-9_]*. */
fmqa_status gen_config_set(gen_config *c, const char *name, int64_t value, fmqa_err *err);
/* 1 and *value (OUT) if present, else 0. */
int gen_config_get(const gen_config *c, const char *name, int64_t *value /* OUT */);
int gen_config_equal(const gen_config *a, const gen_config *b);
/* Canonical text "A=1,B=2" ("" for no parameters); 0, or -1 if cap is short. */
int gen_config_text(const gen_config *c, char *buf /* OUT */, size_t cap);
/* Parses text in any order and whitespace around tokens; duplicate names,
 * missing '=', bad names and non-integers are errors that quote the token. */
fmqa_status gen_config_parse(const char *text, gen_config *out /* OUT */, fmqa_err *err);
/* Hash of the canonical text. */
void gen_config_hash(const gen_config *c, char out[FMQA_HASH_HEX] /* OUT */);

/* ---------------------------------------------------------------- variants */

/*
 * Every legal config for a problem on a device: the cartesian product of the
 * template's space, in lexicographic order of values (parameters in name
 * order), filtered by valid().  *configs (OUT) is malloc'ed, free() it; it is
 * set to NULL and *count to 0 when no config is legal (still FMQA_OK).
 */
fmqa_status gen_space(const gen_template *t, const fmqa_problem *p, const fmqa_device_info *d,
                      gen_config **configs /* OUT */, size_t *count /* OUT */, fmqa_err *err);

/* The template's default config (default(p, d)), checked with gen_check(). */
fmqa_status gen_default(const gen_template *t, const fmqa_problem *p, const fmqa_device_info *d,
                        gen_config *out /* OUT */, fmqa_err *err);

/*
 * Legality of one config.  FMQA_OK when legal; FMQA_ERR_INVALID_ARGUMENT for a
 * parameter the space lacks, a missing one, or a value not among the candidates;
 * FMQA_ERR_UNSUPPORTED with valid()'s reason (or "needs sm_XX" below arch_min);
 * FMQA_ERR_TEMPLATE when the Lua code fails.
 */
fmqa_status gen_check(const gen_template *t, const gen_config *c, const fmqa_problem *p,
                      const fmqa_device_info *d, fmqa_err *err);

/* What launch() returns: up to GEN_MAX_KERNELS kernels launched in order on one
 * stream, the workspace they share, the number of KV splits, and any other
 * integer fields of the returned table as named scalars (e.g. split_tokens). */
typedef struct gen_kernel {
    char entry[GEN_NAME_CAP];
    uint32_t grid[3];
    uint32_t block[3];
    uint32_t shared; /* dynamic shared memory bytes */
    uint32_t pdl;    /* 1: launch with programmatic dependent launch (sm_90+) */
} gen_kernel;

typedef struct gen_plan {
    int n_kernels;
    gen_kernel kernels[GEN_MAX_KERNELS];
    int64_t workspace; /* bytes */
    int32_t splits;    /* >= 1 */
    int n_scalars;
    struct {
        char name[GEN_NAME_CAP];
        int64_t value;
    } scalars[GEN_MAX_SCALARS];
} gen_plan;

/* Runs launch(c, p, d) for a legal config (checked first).  Every entry must be
 * one of the template's entries; grid/block components must be >= 1. */
fmqa_status gen_launch_plan(const gen_template *t, const gen_config *c, const fmqa_problem *p,
                            const fmqa_device_info *d, gen_plan *out /* OUT */, fmqa_err *err);
/* 1 and *value (OUT) if the plan has that scalar, else 0. */
int gen_plan_scalar(const gen_plan *plan, const char *name, int64_t *value /* OUT */);

/* ---------------------------------------------------------------- rendering */

/*
 * A rendered program, ready for NVRTC.  text is a header comment, one #define
 * per specialize() value and config parameter, then each source file after a
 * `#line 1 "templates/<file>"` directive so NVRTC errors point at the template.
 * Headers are every *.h / *.cuh of the set, by bare file name.  options are the
 * NVRTC options (--gpu-architecture=sm_XX[a], -default-device, -std=c++17,
 * -I<toolkit include>, ...).  key identifies the compiled result: the hash of
 * text, headers, options, the NVRTC version and arch.
 */
typedef struct gen_source {
    char *name;            /* program name, "templates/decode.cuh"          */
    char *text;
    int n_headers;
    char **header_names;
    char **header_texts;
    int n_options;
    char **options;
    int n_entries;
    char **entries;        /* extern "C" kernel names                       */
    char arch[16];         /* "sm_90" or "sm_90a": what the cubin targets   */
    char key[FMQA_HASH_HEX];
    char template_name[GEN_NAME_CAP];
    char template_hash[FMQA_HASH_HEX];
    char config[GEN_CONFIG_TEXT_CAP]; /* canonical text                     */
} gen_source;

/*
 * Renders a legal config (checked first) for the device's architecture: d->arch
 * without a trailing 'a' unless the template's arch_specific field (a boolean,
 * or a function(c, p, d) returning one) asks for it and the device is 9.0 or
 * newer.  The toolkit include directory is $FASTMQA_CUDA_INCLUDE, else the one
 * found at build time.  *out is zeroed first; on error it holds nothing to free.
 */
fmqa_status gen_render(const gen_template *t, const gen_config *c, const fmqa_problem *p,
                       const fmqa_device_info *d, gen_source *out /* OUT */, fmqa_err *err);
void gen_source_free(gen_source *s);

/* ---------------------------------------------------------------- compiling */

/* ptxas resource usage of one entry, parsed from the NVRTC log. */
typedef struct gen_resource {
    char entry[GEN_NAME_CAP];
    int registers;
    int spill_stores; /* bytes */
    int spill_loads;  /* bytes */
    int smem_bytes;   /* static shared memory */
    int stack_bytes;  /* stack frame */
} gen_resource;

typedef struct gen_binary {
    char key[FMQA_HASH_HEX]; /* the source key                              */
    char template_hash[FMQA_HASH_HEX]; /* of the template rendered ("" if unknown) */
    char template_name[GEN_NAME_CAP];  /* of the source, for compile reports   */
    char config[GEN_CONFIG_TEXT_CAP];  /* canonical config text of the source  */
    char arch[16];
    void *cubin;             /* malloc'ed                                   */
    size_t size;
    char *log;               /* NVRTC log (ptxas -v output included), or NULL */
    double compile_ms;       /* 0 when it came from a cache                 */
    int cached;              /* 1 if served by a cache                      */
    int n_resources;
    gen_resource resources[GEN_MAX_KERNELS];
} gen_binary;

/*
 * The compile report of a binary as one JSON object, stored with its cubin:
 * {"template":..,"config":..,"arch":..,"compile_ms":..,"kernels":[{"entry":..,
 * "registers":..,"spill_stores":..,"spill_loads":..,"smem_bytes":..,
 * "stack_bytes":..}]} (spills and memory in bytes).  Writes at most cap bytes
 * including the NUL; returns -1 if it did not fit (buf then holds "").
 */
int gen_binary_report(const gen_binary *b, char *buf, size_t cap);

/*
 * Compiles a source to a cubin with NVRTC (adds the options that make ptxas
 * report resource usage and parses it).  On a CUDA error returns FMQA_ERR_COMPILE
 * and err holds the start of the NVRTC log (file names and lines are those of
 * the template thanks to #line); the full log is in out->log, which is then the
 * only field to free (gen_binary_free works on it either way).
 */
fmqa_status gen_compile(const gen_source *s, gen_binary *out /* OUT, see above */, fmqa_err *err);
void gen_binary_free(gen_binary *b);
/* Deep copy; FMQA_ERR_OUT_OF_MEMORY leaves *out zeroed. */
fmqa_status gen_binary_copy(const gen_binary *src, gen_binary *out /* OUT */);
/* Parses ptxas -v lines of a log into res (OUT, up to cap entries); returns the
 * number of entries found. */
int gen_parse_resources(const char *log, gen_resource *res /* OUT */, int cap);

/*
 * A persistent cache behind the in-memory one (the database provides it).
 * get: returns 1 and fills *out (key, arch, cubin, size; malloc'ed, the
 *      compiler takes ownership) on a hit, 0 on a miss.
 * put: offered every freshly compiled binary; copies what it keeps.
 * Both are called from worker threads, possibly concurrently.
 */
typedef struct gen_cache_hook {
    void *user;
    int (*get)(void *user, const char *key, gen_binary *out);
    void (*put)(void *user, const gen_binary *bin);
} gen_cache_hook;

typedef struct gen_compiler gen_compiler;
typedef struct gen_job gen_job;

/* Called on a worker thread when a job finishes, before waiters wake.  bin is
 * the job's binary (valid until gen_job_release) or NULL on failure; err holds
 * the failure. */
typedef void (*gen_job_done_fn)(void *user, gen_job *job, fmqa_status status,
                                const gen_binary *bin, const fmqa_err *err);

/* A pool of `threads` (>= 1) workers; hook may be NULL.  Binaries are cached in
 * memory by source key for the compiler's lifetime. */
fmqa_status gen_compiler_create(int threads, const gen_cache_hook *hook,
                                gen_compiler **out /* OUT */, fmqa_err *err);
/* Waits for every submitted job, stops the workers, frees the cache.  Jobs not
 * yet released stay valid until gen_job_release. */
void gen_compiler_destroy(gen_compiler *c);

/*
 * Queues a compilation.  Ownership of *src moves to the job (src is zeroed).
 * done (may be NULL) is called with user when it finishes.  *job (OUT) must be
 * released with gen_job_release() (after or instead of waiting).
 */
fmqa_status gen_compiler_submit(gen_compiler *c, gen_source *src, gen_job_done_fn done,
                                void *user, gen_job **job /* OUT */, fmqa_err *err);
/* Blocks until the job is done; returns its status, *bin (OUT) borrows the
 * job's binary on success, err gets its message on failure. */
fmqa_status gen_job_wait(gen_job *job, const gen_binary **bin /* OUT */, fmqa_err *err);
/* 1 if finished (never blocks). */
int gen_job_done(const gen_job *job);
/* The job's source key. */
const char *gen_job_key(const gen_job *job);
/* Frees the job; waits for it first if it is still running.  NULL is a no-op. */
void gen_job_release(gen_job *job);
/* Blocks until every job submitted so far has finished. */
void gen_compiler_wait_all(gen_compiler *c);

/* Synchronous compile through the caches on the calling thread (no queue):
 * memory cache, then hook, then NVRTC.  *out (OUT) is the caller's copy. */
fmqa_status gen_compiler_compile(gen_compiler *c, const gen_source *src, gen_binary *out /* OUT */,
                                 fmqa_err *err);
/* Cache statistics since creation. */
void gen_compiler_stats(gen_compiler *c, uint64_t *hits /* OUT */, uint64_t *misses /* OUT */);

#endif /* FMQA_GEN_H */
