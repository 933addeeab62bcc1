/*
 * rt_dispatch.c -- the dispatcher: from a problem to a loaded kernel variant.
 *
 * For a problem it takes, in this order, the exact tuned entry of the
 * database, the nearest tuned shape bucket within a bounded distance whose
 * config is still legal for this problem and keeps the GPU as busy as the
 * default would, or, untuned, the default of the op's template built for the
 * newest architecture among those whose default is legal (fmqa_choice says
 * which and why, and debug logging too).  The variant is rendered, compiled through the in-memory and
 * database cubin caches, loaded into the context's primary CUDA context and
 * kept in a plan cache keyed by the whole problem, so that later calls cost a
 * lookup under a mutex.  Lua, SQLite and NVRTC are touched only on a miss.
 *
 * The database is opened when a plan first needs it (a choice to look up, a
 * cubin to find or keep), never at context creation.  Where the file and its
 * directory are writable it is opened read-write (the runtime stores cubins it
 * had to compile, so the next process starts without compiling; a missing file
 * is created then), else read-only (db.h: immutable in a read-only directory).
 * The integrity check, whose cost grows with the file, is left to fastmqa-db
 * check and the tuner.  A missing or unusable database is logged and the
 * runtime falls back to template defaults.
 */
#include "rt.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"

#define MAX_STATIC_SMEM (48 * 1024)

struct rt_dispatch {
    fmqa_ctx_t *ctx;             /* owner: path and logging              */
    gen_lib *lib;
    gen_compiler *compiler;
    pthread_mutex_t db_lock;     /* guards the lazy open below           */
    int db_tried;
    db_t *db;                    /* NULL: none, or not opened yet        */
    rt_cubin_store cubins;       /* the compiler's cache hook's state    */
    pthread_mutex_t lock;        /* guards plans                         */
    rt_plan **plans;
    size_t n_plans, cap_plans;
};

static db_t *open_db(fmqa_ctx_t *ctx)
{
    db_t *db = NULL;
    fmqa_err err;
    if (!ctx->db_path)
        return NULL;
    db_mode mode = db_path_writable(ctx->db_path) ? DB_READ_WRITE_UNCHECKED : DB_READ_ONLY;
    if (db_open(ctx->db_path, mode, 0, &db, &err) == FMQA_OK) {
        rt_log(ctx, FMQA_LOG_DEBUG, "tuning database %s opened %s", ctx->db_path,
               mode == DB_READ_ONLY ? "read-only" : "read-write");
        return db;
    }
    rt_log(ctx, FMQA_LOG_INFO, "no tuning database, template defaults only: %s", err.msg);
    return NULL;
}

/* The dispatcher's database, opened on the first call that needs it (a plan's
 * choice, a cubin lookup from a compile thread); NULL when there is none. */
static db_t *dispatch_db(struct rt_dispatch *d)
{
    pthread_mutex_lock(&d->db_lock);
    if (!d->db_tried) {
        d->db = open_db(d->ctx);
        d->db_tried = 1;
    }
    db_t *db = d->db;
    pthread_mutex_unlock(&d->db_lock);
    return db;
}

static db_t *dispatch_db_of(void *d)
{
    return dispatch_db(d);
}

static fmqa_status dispatch_create(fmqa_ctx_t *ctx, struct rt_dispatch **out, fmqa_err *err)
{
    struct rt_dispatch *d = calloc(1, sizeof *d);
    if (!d)
        return fmqa_err_set(err, FMQA_ERR_OUT_OF_MEMORY, "out of memory");
    pthread_mutex_init(&d->lock, NULL);
    pthread_mutex_init(&d->db_lock, NULL);
    d->ctx = ctx;
    fmqa_status st = gen_lib_open(ctx->template_dir, &d->lib, err);
    rt_cubin_store_init(&d->cubins, NULL, ctx);
    d->cubins.open = dispatch_db_of, d->cubins.open_arg = d;
    gen_cache_hook hook = rt_cubin_hook(&d->cubins);
    if (st == FMQA_OK)
        st = gen_compiler_create(1, ctx->db_path ? &hook : NULL, &d->compiler, err);
    if (st != FMQA_OK) {
        rt_dispatch_destroy(d);
        return st;
    }
    *out = d;
    return FMQA_OK;
}

static fmqa_status dispatch(fmqa_ctx_t *ctx, struct rt_dispatch **out, fmqa_err *err)
{
    fmqa_status st = FMQA_OK;
    pthread_mutex_lock(&ctx->lock);
    if (!ctx->dispatch)
        st = dispatch_create(ctx, &ctx->dispatch, err);
    *out = ctx->dispatch;
    pthread_mutex_unlock(&ctx->lock);
    return st;
}

fmqa_status rt_templates(fmqa_ctx_t *ctx, gen_lib **lib, fmqa_err *err)
{
    struct rt_dispatch *d;
    fmqa_status st = dispatch(ctx, &d, err);
    if (st == FMQA_OK)
        *lib = d->lib;
    return st;
}

fmqa_status rt_compiler(fmqa_ctx_t *ctx, gen_compiler **compiler, fmqa_err *err)
{
    struct rt_dispatch *d;
    fmqa_status st = dispatch(ctx, &d, err);
    if (st == FMQA_OK)
        *compiler = d->compiler;
    return st;
}

struct db *rt_database(fmqa_ctx_t *ctx)
{
    struct rt_dispatch *d;
    return dispatch(ctx, &d, NULL) == FMQA_OK ? dispatch_db(d) : NULL;
}

void rt_dispatch_destroy(struct rt_dispatch *d)
{
    if (!d)
        return;
    /* Modules die with the primary context's last reference; plans only free
     * host memory here (the context may already be gone at process exit). */
    for (size_t i = 0; i < d->n_plans; i++) {
        gen_binary_free(&d->plans[i]->binary);
        free(d->plans[i]);
    }
    free(d->plans);
    gen_compiler_destroy(d->compiler);
    gen_lib_close(d->lib);
    rt_cubin_store_fini(&d->cubins);
    db_close(d->db);
    pthread_mutex_destroy(&d->db_lock);
    pthread_mutex_destroy(&d->lock);
    free(d);
}

/* ---------------------------------------------------------------- choosing */

/* Problems are compared whole (fmqa_problem has no padding): any field may
 * change the kernel. */
static rt_plan *find_plan(struct rt_dispatch *d, const fmqa_problem *p)
{
    for (size_t i = 0; i < d->n_plans; i++)
        if (memcmp(&d->plans[i]->problem, p, sizeof *p) == 0)
            return d->plans[i];
    return NULL;
}

/* CTAs of a launch's first kernel, the one that does the work (later ones,
 * such as decode's combine, merge its results and size their grids by the
 * output, not by how the work is spread). */
static int64_t launch_ctas(const gen_plan *pl)
{
    return (int64_t)pl->kernels[0].grid[0] * pl->kernels[0].grid[1] * pl->kernels[0].grid[2];
}

/* NULL when the config of a nearby bucket keeps a sensible launch for this
 * problem, else why not (in why).  Sensible: it does not launch fewer CTAs
 * than the device has SMs while the template default launches more. */
static const char *launch_too_small(const gen_template *t, const gen_config *c,
                                    const fmqa_problem *p, const fmqa_device_info *dev,
                                    char *why, size_t cap)
{
    gen_plan mine, dflt_plan;
    gen_config dflt;
    if (gen_launch_plan(t, c, p, dev, &mine, NULL) != FMQA_OK) {
        snprintf(why, cap, "its config has no launch for this shape");
        return why;
    }
    if (gen_default(t, p, dev, &dflt, NULL) != FMQA_OK ||
        gen_launch_plan(t, &dflt, p, dev, &dflt_plan, NULL) != FMQA_OK)
        return NULL; /* nothing better to compare with */
    int64_t n = launch_ctas(&mine), nd = launch_ctas(&dflt_plan);
    if (n >= dev->sm_count || nd <= n)
        return NULL;
    snprintf(why, cap, "would launch %lld CTAs on %d SMs where the default launches %lld",
             (long long)n, dev->sm_count, (long long)nd);
    return why;
}

/* NULL when entry e may serve p, else why not (in why). */
static const char *unusable(const db_best_entry *e, const gen_template *t, gen_config *c,
                            const fmqa_problem *p, const fmqa_device_info *dev, char *why,
                            size_t cap)
{
    if (e->batch_steps > RT_NEAREST_MAX_STEPS || e->kv_len_steps > RT_NEAREST_MAX_STEPS) {
        snprintf(why, cap, "is %d batch and %d kv_len power-of-two steps away (at most %d each)",
                 e->batch_steps, e->kv_len_steps, RT_NEAREST_MAX_STEPS);
        return why;
    }
    if (gen_config_parse(e->config, c, NULL) != FMQA_OK ||
        gen_check(t, c, p, dev, NULL) != FMQA_OK) {
        snprintf(why, cap, "has a config that is not legal for this shape");
        return why;
    }
    return e->distance ? launch_too_small(t, c, p, dev, why, cap) : NULL;
}

/* The first tuned entry (exact bucket first, then nearest) that may serve
 * this problem; 1 if one was found.  Otherwise choice->reason says why the
 * closest one was not used (or that there is none). */
static int tuned_choice(db_t *db, const char *device_key, const gen_template *t,
                        const fmqa_problem *p, const fmqa_device_info *dev, gen_config *c,
                        fmqa_choice *choice)
{
    db_best_entry *e = NULL;
    size_t n = 0;
    int found = 0;
    if (!db || db_best_candidates(db, device_key, gen_template_name(t), gen_template_hash(t), p,
                                  &e, &n, NULL) != FMQA_OK || n == 0) {
        if (!choice->reason[0])
            snprintf(choice->reason, sizeof choice->reason,
                     "%s: no tuned entry for this device, template version and problem class",
                     db ? "default" : "default (no tuning database)");
        free(e);
        return 0;
    }
    for (size_t i = 0; i < n && !found; i++) {
        char why[128];
        const char *no = unusable(&e[i], t, c, p, dev, why, sizeof why);
        if (no && i == 0)
            snprintf(choice->reason, sizeof choice->reason,
                     "default: the nearest tuned bucket (batch %d, kv_len %d) %s",
                     e[i].batch_bucket, e[i].kv_len_bucket, no);
        if (no)
            continue;
        choice->source = e[i].distance == 0 ? FMQA_CHOICE_TUNED : FMQA_CHOICE_NEAREST;
        choice->tuned_time_us = e[i].median_us;
        snprintf(choice->reason, sizeof choice->reason,
                 "%s bucket (batch %d, kv_len %d)%s", e[i].distance ? "nearest tuned" : "tuned",
                 e[i].batch_bucket, e[i].kv_len_bucket,
                 e[i].imported ? ", imported" : "");
        found = 1;
    }
    free(e);
    return found;
}

/* Untuned: among the op's templates whose default is legal, the one built for
 * the newest architecture (highest arch_min, first in library order among
 * equals), so that a Hopper gets its wgmma template and an sm_80 device the
 * mma.sync one; a tuned entry, being measured, overrides this.  Leaves
 * choice->source 0 and why set to the last refusal when none is legal. */
static void default_choice(gen_lib *lib, const fmqa_device_info *dev, const fmqa_problem *p,
                           const gen_template **tpl, gen_config *c, fmqa_choice *choice,
                           fmqa_err *why)
{
    fmqa_err_set(why, FMQA_ERR_UNSUPPORTED, "no %s template is loaded (%s)",
                 fmqa_op_name(p->op), gen_lib_origin(lib));
    gen_config cand;
    for (const gen_template *t = gen_lib_next(lib, p->op, NULL); t;
         t = gen_lib_next(lib, p->op, t)) {
        if (choice->source && gen_template_arch_min(t) <= gen_template_arch_min(*tpl))
            continue;
        if (gen_default(t, p, dev, &cand, why) == FMQA_OK) {
            *tpl = t;
            *c = cand;
            choice->source = FMQA_CHOICE_DEFAULT;
        }
    }
}

/* Whether tuned choice a beats best (source 0: none yet) among an op's
 * templates (prefill and prefill_sm90): an exact bucket beats a nearest one,
 * then the lower tuned median wins (ties: the first in library order).  Two
 * nearest entries may come from different buckets; their times still rank
 * the templates on shapes close to this one. */
static int faster(const fmqa_choice *a, const fmqa_choice *best)
{
    if (!best->source)
        return 1;
    if (a->source != best->source)
        return a->source == FMQA_CHOICE_TUNED;
    return a->tuned_time_us < best->tuned_time_us;
}

fmqa_status rt_choose(gen_lib *lib, struct db *db, const fmqa_device_info *dev,
                      const fmqa_problem *p, const gen_template **tpl, gen_config *c,
                      fmqa_choice *choice, fmqa_err *err)
{
    char key[FMQA_HASH_HEX];
    db_device_key(dev, key);
    memset(choice, 0, sizeof *choice);
    /* Batch-invariant results need one config at every batch size; tuned
     * entries are chosen per batch bucket. */
    if (p->flags & FMQA_FLAG_BATCH_INVARIANT) {
        snprintf(choice->reason, sizeof choice->reason,
                 "default: batch-invariant problems take the template default at every batch");
        db = NULL;
    }
    fmqa_choice miss = *choice; /* why no tuned entry serves, when none does */
    for (const gen_template *t = gen_lib_next(lib, p->op, NULL); t;
         t = gen_lib_next(lib, p->op, t)) {
        fmqa_choice cand = miss;
        gen_config cc;
        if (!tuned_choice(db, key, t, p, dev, &cc, &cand))
            miss = cand;
        else if (faster(&cand, choice))
            *tpl = t, *c = cc, *choice = cand;
    }
    if (!choice->source)
        *choice = miss;
    fmqa_err why;
    if (!choice->source)
        default_choice(lib, dev, p, tpl, c, choice, &why);
    if (!choice->source) {
        if (err)
            *err = why;
        return why.status == FMQA_OK ? FMQA_ERR_UNSUPPORTED : why.status;
    }
    fmqa_strlcpy(choice->template_name, gen_template_name(*tpl), sizeof choice->template_name);
    gen_config_text(c, choice->config, sizeof choice->config);
    return FMQA_OK;
}

static const char *source_name(fmqa_choice_source s)
{
    return s == FMQA_CHOICE_TUNED ? "tuned" : s == FMQA_CHOICE_NEAREST ? "nearest" : "default";
}

/* ---------------------------------------------------------------- loading */

static fmqa_status compile(struct rt_dispatch *d, const rt_plan *plan, gen_binary *out,
                           fmqa_err *err, const fmqa_device_info *dev)
{
    gen_source src;
    fmqa_status st = gen_render(plan->tpl, &plan->config, &plan->problem, dev, &src, err);
    if (st != FMQA_OK)
        return st;
    st = gen_compiler_compile(d->compiler, &src, out, err);
    gen_source_free(&src);
    return st;
}

static fmqa_status load(fmqa_ctx_t *ctx, rt_plan *plan, fmqa_err *err)
{
    const rt_cuda *cu = ctx->cu;
    RT_CU(err, cu->cuModuleLoadData(&plan->module, plan->binary.cubin), "cuModuleLoadData");
    for (int i = 0; i < plan->launch.n_kernels; i++) {
        const gen_kernel *k = &plan->launch.kernels[i];
        RT_CU(err, cu->cuModuleGetFunction(&plan->fn[i], plan->module, k->entry),
              "cuModuleGetFunction");
        if (k->shared > MAX_STATIC_SMEM)
            RT_CU(err,
                  cu->cuFuncSetAttribute(plan->fn[i],
                                         CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                         (int)k->shared),
                  "cuFuncSetAttribute(max dynamic shared memory)");
    }
    return FMQA_OK;
}

/* Fills and loads plan for its template and config; compiles unless a binary
 * is given.  The caller has entered the context. */
static fmqa_status make_plan(fmqa_ctx_t *ctx, struct rt_dispatch *d, rt_plan *plan,
                             const gen_binary *binary, fmqa_err *err)
{
    fmqa_status st = gen_launch_plan(plan->tpl, &plan->config, &plan->problem, &ctx->info,
                                     &plan->launch, err);
    if (st == FMQA_OK)
        st = binary ? gen_binary_copy(binary, &plan->binary)
                    : compile(d, plan, &plan->binary, err, &ctx->info);
    if (st == FMQA_ERR_OUT_OF_MEMORY)
        fmqa_err_set(err, st, "out of memory copying a cubin");
    if (st == FMQA_OK)
        st = load(ctx, plan, err);
    return st;
}

static fmqa_status cache_plan(struct rt_dispatch *d, rt_plan *plan)
{
    if (d->n_plans == d->cap_plans) {
        size_t cap = d->cap_plans ? 2 * d->cap_plans : 16;
        rt_plan **np = realloc(d->plans, cap * sizeof *np);
        if (!np)
            return FMQA_ERR_OUT_OF_MEMORY;
        d->plans = np;
        d->cap_plans = cap;
    }
    d->plans[d->n_plans++] = plan;
    return FMQA_OK;
}

static fmqa_status resolve(fmqa_ctx_t *ctx, struct rt_dispatch *d, const fmqa_problem *p,
                           rt_plan **out, fmqa_err *err)
{
    rt_plan *plan = calloc(1, sizeof *plan);
    if (!plan)
        return fmqa_err_set(err, FMQA_ERR_OUT_OF_MEMORY, "out of memory");
    plan->problem = *p;
    fmqa_status st = rt_choose(d->lib, dispatch_db(d), &ctx->info, p, &plan->tpl, &plan->config,
                               &plan->choice, err);
    if (st == FMQA_OK)
        st = make_plan(ctx, d, plan, NULL, err);
    if (st == FMQA_OK && cache_plan(d, plan) != FMQA_OK)
        st = fmqa_err_set(err, FMQA_ERR_OUT_OF_MEMORY, "out of memory");
    if (st != FMQA_OK) {
        gen_binary_free(&plan->binary);
        free(plan);
        return st;
    }
    rt_log(ctx, FMQA_LOG_DEBUG, "plan %s %s: %s config %s (%s; %s)", fmqa_op_name(p->op),
           plan->choice.template_name, source_name(plan->choice.source), plan->choice.config,
           plan->choice.reason, plan->binary.cached ? "cached cubin" : "compiled");
    *out = plan;
    return FMQA_OK;
}

/* What every plan needs first: a valid problem, the device, the dispatcher. */
static fmqa_status prepare(fmqa_ctx_t *ctx, const fmqa_problem *p, struct rt_dispatch **d,
                           fmqa_err *err)
{
    fmqa_status st = rt_problem_check(p, err);
    if (st == FMQA_OK)
        st = rt_device(ctx, err);
    if (st == FMQA_OK)
        st = dispatch(ctx, d, err);
    return st;
}

fmqa_status rt_plan_get(fmqa_ctx_t *ctx, const fmqa_problem *p, const rt_plan **out,
                        fmqa_err *err)
{
    struct rt_dispatch *d;
    fmqa_status st = prepare(ctx, p, &d, err);
    if (st != FMQA_OK)
        return st;
    pthread_mutex_lock(&d->lock);
    rt_plan *plan = find_plan(d, p);
    /* Resolving under the lock keeps two threads from compiling one plan twice;
     * it happens once per problem. */
    if (!plan && (st = rt_enter(ctx, err)) == FMQA_OK) {
        st = resolve(ctx, d, p, &plan, err);
        rt_leave(ctx);
    }
    pthread_mutex_unlock(&d->lock);
    if (st == FMQA_OK)
        *out = plan;
    return st;
}

fmqa_status rt_plan_build(fmqa_ctx_t *ctx, const gen_template *tpl, const gen_config *c,
                          const fmqa_problem *p, const gen_binary *binary, rt_plan **out,
                          fmqa_err *err)
{
    struct rt_dispatch *d;
    fmqa_status st = prepare(ctx, p, &d, err);
    if (st == FMQA_OK)
        st = gen_check(tpl, c, p, &ctx->info, err);
    if (st != FMQA_OK)
        return st;
    rt_plan *plan = calloc(1, sizeof *plan);
    if (!plan)
        return fmqa_err_set(err, FMQA_ERR_OUT_OF_MEMORY, "out of memory");
    plan->problem = *p;
    plan->tpl = tpl;
    plan->config = *c;
    plan->choice.source = FMQA_CHOICE_DEFAULT;
    fmqa_strlcpy(plan->choice.reason, "a config given by the caller",
                 sizeof plan->choice.reason);
    fmqa_strlcpy(plan->choice.template_name, gen_template_name(tpl),
                 sizeof plan->choice.template_name);
    gen_config_text(c, plan->choice.config, sizeof plan->choice.config);
    st = rt_enter(ctx, err);
    if (st == FMQA_OK) {
        st = make_plan(ctx, d, plan, binary, err);
        rt_leave(ctx);
    }
    if (st != FMQA_OK) {
        rt_plan_free(ctx, plan);
        return st;
    }
    *out = plan;
    return FMQA_OK;
}

void rt_plan_free(fmqa_ctx_t *ctx, rt_plan *plan)
{
    if (!plan)
        return;
    if (plan->module)
        ctx->cu->cuModuleUnload(plan->module);
    gen_binary_free(&plan->binary);
    free(plan);
}

fmqa_status rt_plan_launch(fmqa_ctx_t *ctx, const rt_plan *plan, void *params,
                           CUstream stream, fmqa_err *err)
{
    void *args[] = {params};
    for (int i = 0; i < plan->launch.n_kernels; i++) {
        const gen_kernel *k = &plan->launch.kernels[i];
        /* pdl: the kernel may start launching while the previous one runs
         * (it waits with griddepcontrol.wait before reading its results). */
        CUlaunchAttribute pdl = {.id = CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION,
                                 .value.programmaticStreamSerializationAllowed = 1};
        CUlaunchConfig cfg = {.gridDimX = k->grid[0], .gridDimY = k->grid[1],
                              .gridDimZ = k->grid[2], .blockDimX = k->block[0],
                              .blockDimY = k->block[1], .blockDimZ = k->block[2],
                              .sharedMemBytes = k->shared, .hStream = stream,
                              .attrs = &pdl, .numAttrs = 1};
        RT_CU(err,
              k->pdl ? ctx->cu->cuLaunchKernelEx(&cfg, plan->fn[i], args, NULL)
                     : ctx->cu->cuLaunchKernel(plan->fn[i], k->grid[0], k->grid[1], k->grid[2],
                                               k->block[0], k->block[1], k->block[2], k->shared,
                                               stream, args, NULL),
              k->entry);
    }
    return FMQA_OK;
}

fmqa_status fmqa_plan(fmqa_ctx_t *ctx, const fmqa_problem *problem, fmqa_choice *choice)
{
    fmqa_err err;
    const rt_plan *plan;
    if (!ctx)
        return FMQA_ERR_INVALID_ARGUMENT;
    if (rt_plan_get(ctx, problem, &plan, &err) != FMQA_OK)
        return rt_fail(ctx, &err);
    if (choice)
        *choice = plan->choice;
    return rt_clear(ctx);
}
