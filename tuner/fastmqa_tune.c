/*
 * fastmqa_tune.c -- fastmqa-tune: benchmarks the legal variants of every
 * template for a set of problems on the detected GPU and stores every trial
 * and the winners in the tuning database (docs/tuning.md).
 *
 * Flow per problem and template: enumerate the space, order it with the
 * strategy (tun_search), submit the compilations to a thread pool, and as each
 * binary arrives load it, verify it on fresh random inputs against the float64
 * reference (tun_case), time it (tun_time), and commit the trial at once
 * (tun_record: db_trial_insert, db_best_update; kept in memory while the
 * database is busy).  The template default is tried first so every best entry
 * knows its speedup, then the stored best config, so that the incumbent
 * competes with times of this session (docs/tuning.md, "Re-measurement").
 *
 * Invariants that make a crash recoverable: the session row exists before the
 * first trial and stays "running" until every result is stored, every trial
 * is its own committed transaction, and --resume skips every config whose
 * hash the session already has (db_trials_done), whatever its status.  A
 * session records its owner and heartbeat; --resume takes over only one whose
 * process is gone (db_session_claim).  A kernel that
 * hangs cannot be cancelled inside a CUDA context, so a watchdog thread
 * commits a timeout trial for it and ends the process; --resume then goes on
 * past it.  SIGINT finishes the current trial and marks the session
 * interrupted (exit 130).
 */
#define _POSIX_C_SOURCE 200809L
#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tun.h"

#define MAX_PROBLEMS 256
/* Configs a quick dry run compiles per problem and template: the default and
 * evenly spaced picks across the space. */
#define DRY_QUICK_SAMPLE 8

typedef struct opts {
    const char *db_path;
    char db_buf[4096];
    const char *specs[MAX_PROBLEMS];
    int n_specs;
    const char *problems_file;
    tun_strategy strategy;
    uint64_t seed;
    int seed_given;
    int64_t budget;            /* configs per problem and template, 0 = all */
    double budget_s;           /* seconds per problem, 0 = no limit         */
    double prune_factor;
    double timeout_s;
    int threads;
    int resume, dry_run, all;
    const char *arch;
} opts;

/* Per-problem results for the summary table. */
typedef struct summary {
    char best[GEN_NAME_CAP + GEN_CONFIG_TEXT_CAP + 2];
    double best_us, default_us, seconds;
    int64_t by_status[DB_TRIAL_STATUS_COUNT];
} summary;

static volatile sig_atomic_t interrupted;

static void on_sigint(int sig)
{
    (void)sig;
    interrupted = 1;
    signal(SIGINT, SIG_DFL); /* a second ^C kills at once */
}

/* ---------------------------------------------------------------- usage */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: fastmqa-tune [options]\n"
            "Tunes decode (and other) problems on the detected GPU into the tuning database.\n"
            "  --problem SPEC       a problem (gen_problem_parse syntax, repeatable), e.g.\n"
            "                       op=decode,batch=8,heads=32,kv_heads=1,d=128,kv_len=4096\n"
            "                       or MLA: op=mla_decode,batch=64,heads=128,kv_heads=1,d=576,\n"
            "                       dv=512,kv_len=4096,q=bf16,kv=bf16,out=bf16,flags=causal\n"
            "                       or prefill (every template of the op: prefill, and\n"
            "                       prefill_sm90 on sm_90a): op=prefill,batch=4,heads=32,\n"
            "                       kv_heads=8,d=128,tq=4096,kv_len=4096,q=bf16,kv=bf16,\n"
            "                       out=bf16,flags=causal\n"
            "  --problems FILE      one spec per line, '#' comments\n"
            "                       (default: the conservative, balanced and aggressive level\n"
            "                       presets of a 4096-hidden, 32-head MQA model, batch %d;\n"
            "                       aggressive in int8 and fp8, so fmqa_level_policy_tune\n"
            "                       can pick the faster 8-bit format)\n"
            "  --strategy S         exhaustive (default) | random | local\n"
            "  --seed N             seed of the random strategy and of the inputs\n"
            "  --budget N | Ns|Nm   configs per problem and template, or time per problem\n"
            "  --prune-factor K     cut variants slower than K x the best after a few runs (3)\n"
            "  --timeout S          a trial running longer is recorded as timeout and the\n"
            "                       process exits; --resume continues after it (10)\n"
            "  --resume             continue the last unfinished session of this GPU (refused\n"
            "                       while the process that runs it is alive)\n"
            "  --threads N          compiler threads (default: online CPUs)\n"
            "  --db PATH            tuning database (default: $XDG_CACHE_HOME/fastmqa/tune.db,\n"
            "                       else $HOME/.cache/fastmqa/tune.db)\n"
            "  --dry-run            no GPU needed: compile variants for --arch and report\n"
            "                       counts, registers, spills and compile time (stored:\n"
            "                       fastmqa-db compiles); quick by default: each space's\n"
            "                       default and %d evenly spaced configs (--budget N: N)\n"
            "  --all                with --dry-run: every legal variant\n"
            "  --arch ARCH          dry run device preset: sm_80, sm_86, sm_89, sm_90 (default),\n"
            "                       sm_90a; on sm_90 the templates that use sm_90a features\n"
            "                       (prefill_sm90, mla_decode_sm90) compile for sm_90a, and\n"
            "                       each line says which target it compiled for\n"
            "  --version            versions of the library, NVRTC, driver and database schema\n"
            "  --help               this text\n"
            "Exit status: 0 done, 1 failure (no GPU, database; results the database could not\n"
            "store within %.0f s leave the session resumable), 2 usage, 3 watchdog timeout,\n"
            "130 interrupted.\n",
            TUN_DEFAULT_BATCH, DRY_QUICK_SAMPLE, TUN_RECORD_WAIT_S);
}

/* A positive finite number of at most a year (seconds, factors, budgets). */
static int parse_double(const char *s, double *out)
{
    return fmqa_parse_f64(s, 0, 365 * 86400.0, out) || *out <= 0 ? -1 : 0;
}

/* N configs, or Ns / Nm of time. */
static int parse_budget(const char *s, opts *o)
{
    char num[64];
    size_t n = strlen(s);
    double v;
    int64_t k;
    if (n > 1 && n < sizeof num && (s[n - 1] == 's' || s[n - 1] == 'm')) {
        memcpy(num, s, n - 1);
        num[n - 1] = '\0';
        if (parse_double(num, &v))
            return -1;
        o->budget_s = s[n - 1] == 'm' ? 60 * v : v;
        return 0;
    }
    if (fmqa_parse_i64(s, 1, INT64_MAX, &k))
        return -1;
    o->budget = k;
    return 0;
}

/* 0 ok, 1 exit 0 (help), 2 usage error (printed). */
static int parse_args(int argc, char **argv, opts *o)
{
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    *o = (opts){.strategy = TUN_EXHAUSTIVE, .prune_factor = 3, .timeout_s = 10,
                .threads = ncpu > 0 ? (int)ncpu : 1, .arch = "sm_90"};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int bad = 0, takes = 1;
        fmqa_err err;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 1;
        } else if (!strcmp(a, "--resume")) {
            o->resume = 1, takes = 0;
        } else if (!strcmp(a, "--dry-run")) {
            o->dry_run = 1, takes = 0;
        } else if (!strcmp(a, "--all")) {
            o->all = 1, takes = 0;
        } else if (!v) {
            fprintf(stderr, "fastmqa-tune: %s needs a value (or is unknown)\n", a);
            return 2;
        } else if (!strcmp(a, "--problem")) {
            if (o->n_specs == MAX_PROBLEMS)
                bad = 1;
            else
                o->specs[o->n_specs++] = v;
        } else if (!strcmp(a, "--problems")) {
            o->problems_file = v;
        } else if (!strcmp(a, "--strategy")) {
            if (tun_strategy_parse(v, &o->strategy, &err) != FMQA_OK) {
                fprintf(stderr, "fastmqa-tune: %s\n", err.msg);
                return 2;
            }
        } else if (!strcmp(a, "--seed")) {
            char *end;
            errno = 0;
            o->seed = strtoull(v, &end, 0), o->seed_given = 1;
            bad = !isdigit((unsigned char)v[0]) || *end || errno; /* "-1" would wrap */
        } else if (!strcmp(a, "--budget")) {
            bad = parse_budget(v, o) != 0;
        } else if (!strcmp(a, "--prune-factor")) {
            bad = parse_double(v, &o->prune_factor) || o->prune_factor < 1;
        } else if (!strcmp(a, "--timeout")) {
            bad = parse_double(v, &o->timeout_s);
        } else if (!strcmp(a, "--threads")) {
            int64_t n;
            bad = fmqa_parse_i64(v, 1, INT32_MAX, &n) != 0;
            o->threads = bad ? o->threads : (int)n;
        } else if (!strcmp(a, "--db")) {
            o->db_path = v;
        } else if (!strcmp(a, "--arch")) {
            o->arch = v;
        } else {
            fprintf(stderr, "fastmqa-tune: unknown option %s\n", a);
            usage(stderr);
            return 2;
        }
        if (bad) {
            fprintf(stderr, "fastmqa-tune: bad value for %s: '%s'\n", a, v);
            return 2;
        }
        i += takes;
    }
    if (!o->db_path) {
        if (fmqa_default_db_path(o->db_buf, sizeof o->db_buf) != FMQA_OK) {
            fprintf(stderr, "fastmqa-tune: no default database path ($HOME unset?): use --db\n");
            return 2;
        }
        o->db_path = o->db_buf;
    }
    if (o->all && (!o->dry_run || o->budget)) {
        fprintf(stderr, "fastmqa-tune: --all goes with --dry-run and without --budget\n");
        return 2;
    }
    if (o->resume && (o->n_specs || o->problems_file)) {
        fprintf(stderr, "fastmqa-tune: --resume replays the session's own problem set; "
                        "drop --problem / --problems\n");
        return 2;
    }
    return 0;
}

/* ---------------------------------------------------------------- problems */

static char *read_file(const char *path, fmqa_err *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fmqa_err_set(err, FMQA_ERR_IO, "%s: %s", path, strerror(errno));
        return NULL;
    }
    size_t cap = 4096, n = 0;
    char *s = malloc(cap);
    while (s) {
        n += fread(s + n, 1, cap - n - 1, f);
        if (n < cap - 1)
            break;
        char *ns = realloc(s, cap *= 2);
        if (!ns)
            free(s);
        s = ns;
    }
    fclose(f);
    if (!s)
        fmqa_err_set(err, FMQA_ERR_OUT_OF_MEMORY, "out of memory reading %s", path);
    else
        s[n] = 0;
    return s;
}

/* The decode problems of the three level presets for the default model, the
 * aggressive one in both 8-bit formats so that fmqa_level_policy_tune can pick
 * the faster format from what this run measures. */
static fmqa_status level_problems(fmqa_problem *ps, size_t *n, fmqa_err *err)
{
    fmqa_model_config m;
    tun_default_model(&m);
    for (int l = FMQA_LEVEL_CONSERVATIVE; l <= FMQA_LEVEL_AGGRESSIVE; l++) {
        fmqa_level_policy pol;
        fmqa_level_policy_preset(NULL, (fmqa_level)l, &m, &pol);
        const fmqa_dtype eight_bit[2] = {FMQA_DTYPE_INT8, FMQA_DTYPE_FP8_E4M3};
        int formats = pol.kv_dtype == FMQA_DTYPE_INT8 || pol.kv_dtype == FMQA_DTYPE_FP8_E4M3;
        for (int f = 0; f < (formats ? 2 : 1); f++) {
            if (formats)
                pol.kv_dtype = eight_bit[f];
            if (fmqa_level_problem(NULL, &m, &pol, TUN_DEFAULT_BATCH, &ps[(*n)++]) != FMQA_OK)
                return fmqa_err_set(err, FMQA_ERR_INTERNAL,
                                    "level %d has no decode problem for the default model", l);
        }
    }
    return FMQA_OK;
}

/* The problem set text: --problems file, --problem specs, or the levels. */
static char *problem_text(const opts *o, fmqa_err *err)
{
    if (o->problems_file)
        return read_file(o->problems_file, err);
    fmqa_problem ps[MAX_PROBLEMS];
    size_t n = 0;
    for (int i = 0; i < o->n_specs; i++)
        if (gen_problem_parse(o->specs[i], &ps[n++], err) != FMQA_OK) {
            fmqa_err_prefix(err, "--problem '%s'", o->specs[i]);
            return NULL;
        }
    if (!n && level_problems(ps, &n, err) != FMQA_OK)
        return NULL;
    char *text = NULL;
    return tun_problems_format(ps, n, &text, err) == FMQA_OK ? text : NULL;
}

/* ---------------------------------------------------------------- tuner state */

typedef struct watchdog {
    pthread_mutex_t lock;
    int armed, quit;             /* quit: run_gpu is tearing down; stop      */
    double deadline_ms, timeout_s;
    db_trial trial;              /* what to record on a timeout              */
    char config[GEN_CONFIG_TEXT_CAP], what[512];
    tun_recorder *rec;           /* also beats the session's heartbeat       */
} watchdog;

typedef struct tuner {
    const opts *o;
    fmqa_ctx_t *ctx;
    fmqa_device_info dev;
    char dev_key[FMQA_HASH_HEX];
    db_t *db;
    gen_lib *lib;
    gen_compiler *comp;
    tun_timer *timer;
    db_session session;
    tun_recorder *rec;
    int told_pending;            /* the "kept in memory" note was printed    */
    watchdog wd;
    int tty;
    double problem_deadline_ms;
    tun_strategy strategy;       /* the session's (a resumed one keeps its own) */
    int64_t budget;
} tuner;

/* One template on one problem. */
typedef struct job_ctx {
    tuner *T;
    const fmqa_problem *p;
    const gen_template *t;
    int64_t template_id, problem_id;
    const gen_config *space;
    size_t n_space;
    tun_case *tc;
    double best_us, default_us;
    summary *sum;
    int idx_problem, n_problems;
    size_t tried;
    tun_progress prog;           /* per template: J->tried of the configs to try */
} job_ctx;

static void *watchdog_main(void *arg)
{
    watchdog *w = arg;
    for (;;) {
        struct timespec ts = {0, 100 * 1000 * 1000};
        nanosleep(&ts, NULL);
        tun_recorder_heartbeat(w->rec); /* beats even while a kernel runs long */
        pthread_mutex_lock(&w->lock);
        if (w->quit) {
            pthread_mutex_unlock(&w->lock);
            return NULL;
        }
        if (w->armed && fmqa_now_ms() > w->deadline_ms) {
            fmqa_err err;
            w->trial.status = DB_TRIAL_TIMEOUT;
            w->trial.message = "watchdog: the kernel did not finish within --timeout";
            /* Everything not yet stored goes first; a busy database gets the
             * bounded wait an ending session gets. */
            int ok = tun_record(w->rec, &w->trial, 0, NULL, &err) == FMQA_OK &&
                     tun_recorder_drain(w->rec, TUN_RECORD_WAIT_S, &err) == FMQA_OK;
            fprintf(stderr,
                    "\nfastmqa-tune: watchdog: %s ran longer than %.0f s; %s.  A hung kernel "
                    "cannot be stopped inside its CUDA context, so the process exits; run "
                    "again with --resume to continue after it.\n",
                    w->what, w->timeout_s,
                    ok ? "recorded as timeout" : "could not record it (the session stays "
                                                 "resumable and redoes what was not stored)");
            _exit(3);
        }
        pthread_mutex_unlock(&w->lock);
    }
}

/* The watchdog lives in run_gpu's frame and uses the database: it must be gone
 * before either is. */
static void watchdog_stop(watchdog *w, pthread_t thread)
{
    pthread_mutex_lock(&w->lock);
    w->quit = 1;
    pthread_mutex_unlock(&w->lock);
    pthread_join(thread, NULL);
    pthread_mutex_destroy(&w->lock);
}

static void watchdog_arm(watchdog *w, const db_trial *trial, const char *what)
{
    pthread_mutex_lock(&w->lock);
    w->trial = *trial;
    fmqa_strlcpy(w->config, trial->config, sizeof w->config);
    w->trial.config = w->config;
    fmqa_strlcpy(w->what, what, sizeof w->what);
    w->deadline_ms = fmqa_now_ms() + 1000 * w->timeout_s;
    w->armed = 1;
    pthread_mutex_unlock(&w->lock);
}

static void watchdog_disarm(watchdog *w)
{
    pthread_mutex_lock(&w->lock);
    w->armed = 0;
    pthread_mutex_unlock(&w->lock);
}

/* ---------------------------------------------------------------- one trial */

typedef struct launch_user {
    tun_case *tc;
    const rt_plan *plan;
} launch_user;

static fmqa_status launch_plan(void *user, int i, CUstream stream, fmqa_err *err)
{
    launch_user *u = user;
    return tun_case_run_plan(u->tc, u->plan, i, stream, err);
}

/* Verifies then times a loaded plan; fills status, errors and timing. */
static void measure(job_ctx *J, const rt_plan *plan, db_trial *tr, char *msg, size_t cap)
{
    tuner *T = J->T;
    CUstream s = tun_timer_stream(T->timer);
    fmqa_err err;
    tun_report rep;
    fmqa_status st = tun_case_poison(J->tc, s, &err);
    if (st == FMQA_OK)
        st = tun_case_run_plan(J->tc, plan, 0, s, &err);
    if (st == FMQA_OK)
        st = tun_case_verify(J->tc, s, &rep, &err);
    if (st != FMQA_OK) {
        tr->status = DB_TRIAL_LAUNCH_ERROR;
        snprintf(msg, cap, "%s", err.msg);
        return;
    }
    tr->rel_l2_err = rep.out.rel_l2, tr->max_abs_err = rep.out.max_abs;
    if (!rep.pass) {
        tr->status = DB_TRIAL_WRONG_RESULT;
        snprintf(msg, cap, "%s", rep.summary);
        return;
    }
    tun_time_opts to = TUN_TIME_OPTS_INIT;
    to.prune_us = J->best_us > 0 ? T->o->prune_factor * J->best_us : 0;
    to.bytes = tun_case_copy_bytes(J->tc), to.copies = tun_case_copies(J->tc);
    launch_user u = {J->tc, plan};
    tun_timing tm;
    if (tun_time(T->timer, launch_plan, &u, &to, &tm, &err) != FMQA_OK) {
        tr->status = DB_TRIAL_LAUNCH_ERROR;
        snprintf(msg, cap, "%s", err.msg);
        return;
    }
    tr->status = tm.pruned ? DB_TRIAL_PRUNED : DB_TRIAL_OK;
    tr->median_us = tm.stats.median, tr->p20_us = tm.stats.p20, tr->p80_us = tm.stats.p80;
    tr->min_us = tm.stats.min, tr->runs = tm.stats.n;
    tr->sm_clock_mhz = tm.sm_clock_mhz, tr->mem_clock_mhz = tm.mem_clock_mhz;
    snprintf(msg, cap, "%s%s", rep.summary, tm.plan.launches > 1 ? " (timed as a graph)" : "");
}

/* A CUDA error that poisons the context (illegal address, ...) makes every
 * later call fail: the process must end; --resume continues. */
static void check_context(tuner *T)
{
    fmqa_err err;
    if (rt_enter(T->ctx, &err) == FMQA_OK) {
        CUresult r = T->ctx->cu->cuCtxSynchronize();
        rt_leave(T->ctx);
        if (r == CUDA_SUCCESS)
            return;
        rt_cuda_error(&err, r, "cuCtxSynchronize");
    }
    fprintf(stderr, "\nfastmqa-tune: the CUDA context is unusable after a failed kernel (%s); "
                    "exiting: run again with --resume to continue after it\n", err.msg);
    fmqa_err derr;
    if (tun_recorder_drain(T->rec, TUN_RECORD_WAIT_S, &derr) != FMQA_OK)
        fprintf(stderr, "fastmqa-tune: %zu result(s) could not be stored (%s); --resume redoes "
                        "them\n", tun_recorder_pending(T->rec), derr.msg);
    exit(1);
}

static void progress(job_ctx *J, const char *config, const db_trial *tr, const char *msg)
{
    summary *S = J->sum;
    char line[GEN_CONFIG_TEXT_CAP + FMQA_ERRMSG_CAP + 64];
    if (J->T->tty)
        snprintf(line, sizeof line, "best %.2f us, ok %lld wrong %lld pruned %lld", J->best_us,
                 (long long)S->by_status[DB_TRIAL_OK],
                 (long long)S->by_status[DB_TRIAL_WRONG_RESULT],
                 (long long)S->by_status[DB_TRIAL_PRUNED]);
    else
        snprintf(line, sizeof line, "%s: %s %.2f us %s", config,
                 db_trial_status_name(tr->status), tr->median_us, msg);
    tun_progress_update(&J->prog, J->tried, line);
}

/* Runs and records one config (bin NULL: compilation failed with cerr). */
static double trial(job_ctx *J, const gen_config *c, const gen_binary *bin, const fmqa_err *cerr,
                    int is_default)
{
    tuner *T = J->T;
    char config[GEN_CONFIG_TEXT_CAP], msg[1024] = "", what[700];
    gen_config_text(c, config, sizeof config);
    db_trial tr = {.session_id = T->session.id, .device_id = T->session.device_id,
                   .template_id = J->template_id, .problem_id = J->problem_id,
                   .config = config, .tuner_version = TUN_VERSION, .message = msg,
                   .timing_method = TUN_TIMING_METHOD};
    if (!bin) {
        tr.status = DB_TRIAL_COMPILE_ERROR;
        snprintf(msg, sizeof msg, "%s", cerr->msg);
    } else {
        tr.compile_ms = bin->compile_ms;
        rt_plan *plan = NULL;
        fmqa_err err;
        snprintf(what, sizeof what, "%s %s", gen_template_name(J->t), config);
        watchdog_arm(&T->wd, &tr, what);
        if (rt_plan_build(T->ctx, J->t, c, J->p, bin, &plan, &err) != FMQA_OK) {
            tr.status = DB_TRIAL_LAUNCH_ERROR;
            snprintf(msg, sizeof msg, "%s", err.msg);
        } else {
            measure(J, plan, &tr, msg, sizeof msg);
        }
        watchdog_disarm(&T->wd);
        rt_plan_free(T->ctx, plan);
    }
    fmqa_err err;
    int stored = 0;
    if (is_default && tr.status == DB_TRIAL_OK)
        J->default_us = tr.median_us;
    if (tun_record(T->rec, &tr, J->default_us, &stored, &err) != FMQA_OK)
        fprintf(stderr, "\nfastmqa-tune: the database refused a trial: %s\n", err.msg);
    else if (!stored && !T->told_pending++)
        fprintf(stderr, "\nfastmqa-tune: the database is busy (%s); results are kept in "
                        "memory and written when it frees\n", err.msg);
    if (tr.status == DB_TRIAL_LAUNCH_ERROR)
        check_context(T); /* after the record: the failure itself is kept */
    if (tr.status == DB_TRIAL_OK) {
        if (J->best_us <= 0 || tr.median_us < J->best_us)
            J->best_us = tr.median_us;
        if (J->sum->best_us <= 0 || tr.median_us < J->sum->best_us) {
            J->sum->best_us = tr.median_us;
            snprintf(J->sum->best, sizeof J->sum->best, "%s:%s", gen_template_name(J->t), config);
        }
    }
    J->sum->by_status[tr.status]++;
    J->tried++;
    progress(J, config, &tr, msg);
    return tr.status == DB_TRIAL_OK ? tr.median_us : 0;
}

/* ---------------------------------------------------------------- one template */

typedef struct pending {
    size_t index;
    gen_job *job;
} pending;

static int out_of_time(const tuner *T)
{
    return interrupted || (T->problem_deadline_ms > 0 && fmqa_now_ms() > T->problem_deadline_ms);
}

static fmqa_status submit(job_ctx *J, size_t i, pending *q, size_t *nq, fmqa_err *err)
{
    gen_source src;
    fmqa_status st = gen_render(J->t, &J->space[i], J->p, &J->T->dev, &src, err);
    if (st == FMQA_OK)
        st = gen_compiler_submit(J->T->comp, &src, NULL, NULL, &q[*nq].job, err);
    gen_source_free(&src);
    if (st == FMQA_OK)
        q[(*nq)++].index = i;
    return st;
}

static void run_one(job_ctx *J, tun_search *s, pending *pd, size_t di)
{
    const gen_binary *bin = NULL;
    fmqa_err err = {0};
    if (pd->job && gen_job_wait(pd->job, &bin, &err) != FMQA_OK)
        bin = NULL;
    else if (!pd->job)
        err.status = FMQA_ERR_COMPILE;
    double us = trial(J, &J->space[pd->index], bin, &err, pd->index == di);
    tun_search_report(s, pd->index, us);
    gen_job_release(pd->job);
}

/* Drives the search: keeps every available config compiling, measures each in
 * order as its binary arrives.  first[] are the indices measured before the
 * search (the default, the incumbent), with their times in first_us[]. */
static void drive(job_ctx *J, tun_search *s, const size_t first[2], const double first_us[2],
                  pending *q)
{
    size_t head = 0, nq = 0, i;
    /* A bounded window of compilations ahead keeps the pool busy while the GPU
     * measures, and an interrupt waits for at most the window. */
    size_t window = 2 * (size_t)J->T->o->threads + 2;
    for (;;) {
        while (nq - head < window && !out_of_time(J->T) && tun_search_next(s, &i)) {
            fmqa_err err;
            if (i == first[0] || i == first[1]) { /* measured already */
                tun_search_report(s, i, first_us[i == first[0] ? 0 : 1]);
                continue;
            }
            if (submit(J, i, q, &nq, &err) != FMQA_OK) {
                trial(J, &J->space[i], NULL, &err, 0);
                tun_search_report(s, i, 0);
            }
        }
        if (head == nq)
            break;
        if (out_of_time(J->T)) {
            gen_job_release(q[head++].job);
            continue;
        }
        run_one(J, s, &q[head++], first[0]);
    }
}

static fmqa_status max_workspace(job_ctx *J, size_t *ws, fmqa_err *err)
{
    *ws = 0;
    for (size_t i = 0; i < J->n_space; i++) {
        gen_plan pl;
        fmqa_status st = gen_launch_plan(J->t, &J->space[i], J->p, &J->T->dev, &pl, err);
        if (st != FMQA_OK)
            return st;
        if ((size_t)pl.workspace > *ws)
            *ws = (size_t)pl.workspace;
    }
    return FMQA_OK;
}

static size_t find_config(const gen_config *space, size_t n, const gen_config *c)
{
    for (size_t i = 0; i < n; i++)
        if (gen_config_equal(&space[i], c))
            return i;
    return n;
}

/* Measures one config before the search (unless a resumed session has it),
 * compiled on this thread: the template default, so that every best entry
 * knows its speedup, and the incumbent best, so that it competes with fresh
 * times.  Returns its median (0: failed or skipped). */
static double try_first(job_ctx *J, const gen_config *c, const db_hash_set *done,
                        int is_default)
{
    char text[GEN_CONFIG_TEXT_CAP], hash[FMQA_HASH_HEX];
    gen_config_text(c, text, sizeof text);
    db_config_hash(text, hash);
    if (db_hash_set_contains(done, hash))
        return 0;
    gen_binary bin;
    gen_source src;
    fmqa_err cerr;
    fmqa_status cs = gen_render(J->t, c, J->p, &J->T->dev, &src, &cerr);
    if (cs == FMQA_OK)
        cs = gen_compiler_compile(J->T->comp, &src, &bin, &cerr);
    gen_source_free(&src);
    double us = trial(J, c, cs == FMQA_OK ? &bin : NULL, &cerr, is_default);
    if (cs == FMQA_OK)
        gen_binary_free(&bin);
    return us;
}

/* The index in the space of the stored best config of this (device,
 * template, problem), or n when there is none, it is the default (measured
 * anyway) or it is no longer legal.  Says so when its timing is stale. */
static size_t incumbent_index(job_ctx *J, const gen_config *space, size_t n, size_t di)
{
    db_best_entry e;
    gen_config c;
    if (db_best_lookup_exact(J->T->db, J->T->dev_key, gen_template_name(J->t),
                             gen_template_hash(J->t), J->p, &e, NULL) != FMQA_OK ||
        gen_config_parse(e.config, &c, NULL) != FMQA_OK)
        return n;
    if (db_best_is_stale(&e, TUN_TIMING_METHOD, TUN_VERSION))
        fprintf(stderr, "fastmqa-tune: %s: the best entry (%s, %.2f us) was timed by timing "
                        "method %d of '%s'; its time is stale and is measured again\n",
                gen_template_name(J->t), e.config, e.median_us, e.timing_method,
                e.tuner_version);
    size_t i = find_config(space, n, &c);
    return i == di ? n : i;
}

static fmqa_status tune_template(job_ctx *J, uint64_t case_seed, fmqa_err *err)
{
    tuner *T = J->T;
    gen_config *space = NULL, dflt, start;
    size_t n = 0, ws = 0;
    int di_ok = 1;
    db_hash_set done = {0};
    tun_search *s = NULL;
    pending *q = NULL;
    fmqa_status st = db_template_upsert(T->db, gen_template_name(J->t), gen_template_hash(J->t),
                                        &J->template_id, err);
    if (st == FMQA_OK)
        st = gen_space(J->t, J->p, &T->dev, &space, &n, err);
    if (st == FMQA_OK && n == 0) {
        fprintf(stderr, "fastmqa-tune: %s: no legal config for this problem\n",
                gen_template_name(J->t));
        return FMQA_OK;
    }
    J->space = space, J->n_space = n;
    fmqa_err derr;
    if (st == FMQA_OK && gen_default(J->t, J->p, &T->dev, &dflt, &derr) != FMQA_OK) {
        fprintf(stderr, "fastmqa-tune: %s: no usable default (%s); speedups unknown\n",
                gen_template_name(J->t), derr.msg);
        dflt = space[0];
        di_ok = 0;
    }
    if (st == FMQA_OK)
        st = db_trials_done(T->db, T->session.id, T->session.device_id, J->template_id,
                            J->problem_id, &done, err);
    if (st == FMQA_OK)
        st = max_workspace(J, &ws, err);
    tun_case_opts co = TUN_CASE_OPTS_INIT;
    co.copies = 0;
    if (st == FMQA_OK)
        st = tun_case_create(T->ctx, J->p, case_seed, &co, ws, &J->tc, err);
    int64_t budget = T->budget;
    if (st == FMQA_OK && budget > 0 && (budget -= (int64_t)done.count) <= 0)
        budget = -1; /* a resumed session already spent it */
    if (st == FMQA_OK && T->strategy == TUN_LOCAL)
        tun_warm_start(T->db, T->dev_key, gen_template_name(J->t), gen_template_hash(J->t),
                       J->p, &dflt, &start);
    if (st == FMQA_OK)
        st = tun_search_create(T->strategy, space, n, T->session.seed, budget < 0 ? 0 : budget,
                               T->strategy == TUN_LOCAL ? &start : NULL, &done, &s, err);
    if (st == FMQA_OK && !(q = calloc(n, sizeof *q)))
        st = fmqa_err_set(err, FMQA_ERR_OUT_OF_MEMORY, "out of memory");
    size_t first[2] = {di_ok ? find_config(space, n, &dflt) : n, n};
    double first_us[2] = {0, 0};
    char label[GEN_NAME_CAP + 32];
    snprintf(label, sizeof label, "[%d/%d] %s", J->idx_problem + 1, J->n_problems,
             gen_template_name(J->t));
    size_t left = n > done.count ? n - done.count : 0;
    tun_progress_start(&J->prog, stderr, T->tty, label,
                       budget > 0 && (size_t)budget < left ? (size_t)budget : left);
    if (st == FMQA_OK && budget >= 0) {
        first[1] = incumbent_index(J, space, n, first[0]);
        if (first[0] < n)
            first_us[0] = try_first(J, &dflt, &done, 1);
        if (first[1] < n)
            first_us[1] = try_first(J, &space[first[1]], &done, 0);
        drive(J, s, first, first_us, q);
    }
    free(q);
    tun_search_destroy(s);
    tun_case_destroy(J->tc);
    J->tc = NULL;
    db_hash_set_free(&done);
    free(space);
    return st;
}

/* ---------------------------------------------------------------- GPU run */

static fmqa_status tune_problem(tuner *T, const fmqa_problem *p, int k, int n, summary *sum,
                                fmqa_err *err)
{
    job_ctx J = {.T = T, .p = p, .sum = sum, .idx_problem = k, .n_problems = n};
    double t0 = fmqa_now_ms();
    T->problem_deadline_ms = T->o->budget_s > 0 ? t0 + 1000 * T->o->budget_s : 0;
    fmqa_status st = db_problem_upsert(T->db, p, &J.problem_id, err);
    int any = 0;
    for (const gen_template *t = gen_lib_next(T->lib, p->op, NULL); t && st == FMQA_OK &&
                                                                     !interrupted;
         t = gen_lib_next(T->lib, p->op, t)) {
        J.t = t, J.best_us = 0, J.default_us = 0, J.tried = 0, any = 1;
        st = tune_template(&J, T->session.seed + (uint64_t)k, err);
        if (J.default_us > 0 && !sum->default_us)
            sum->default_us = J.default_us;
    }
    if (st == FMQA_OK && !any)
        st = fmqa_err_set(err, FMQA_ERR_NOT_FOUND, "no %s template is loaded",
                          fmqa_op_name(p->op));
    sum->seconds = (fmqa_now_ms() - t0) / 1000;
    if (T->tty)
        fputc('\n', stderr);
    return st;
}

static void print_summary(const fmqa_problem *ps, const summary *s, size_t n)
{
    printf("\n%-4s %-40s %12s %8s %5s %5s %5s %5s %5s %5s %8s\n", "#", "best config", "median_us",
           "speedup", "ok", "cerr", "lerr", "tmo", "wrong", "prune", "time_s");
    for (size_t i = 0; i < n; i++) {
        char spec[GEN_PROBLEM_TEXT_CAP];
        gen_problem_format(&ps[i], spec, sizeof spec);
        printf("%-4zu %-40s %12.2f %7.2fx %5lld %5lld %5lld %5lld %5lld %5lld %8.1f\n", i + 1,
               s[i].best[0] ? s[i].best : "(none)", s[i].best_us,
               s[i].best_us > 0 && s[i].default_us > 0 ? s[i].default_us / s[i].best_us : 0.0,
               (long long)s[i].by_status[0], (long long)s[i].by_status[1],
               (long long)s[i].by_status[2], (long long)s[i].by_status[3],
               (long long)s[i].by_status[4], (long long)s[i].by_status[5], s[i].seconds);
        printf("     %s\n", spec);
    }
}

/* Creates or resumes the session; the problem set text is the session's. */
static fmqa_status open_session(tuner *T, char **text, fmqa_err *err)
{
    int64_t dev_id;
    fmqa_status st = db_device_upsert(T->db, &T->dev, &dev_id, err);
    if (st != FMQA_OK)
        return st;
    if (T->o->resume) {
        db_session found;
        st = db_session_find_resumable(T->db, dev_id, &found, err);
        if (st == FMQA_ERR_NOT_FOUND)
            fmqa_err_set(err, st, "--resume: no unfinished session for this GPU in %s",
                         db_path(T->db));
        if (st != FMQA_OK)
            return st;
        /* Only a session whose process is gone is taken over: two tuners on
         * one GPU would duplicate trials and disturb each other's timings. */
        st = db_session_claim(T->db, found.id, &T->session, err);
        db_session_free(&found);
        if (st != FMQA_OK)
            return fmqa_err_prefix(err, "--resume");
        *text = fmqa_strdup(T->session.problem_set);
        fprintf(stderr, "fastmqa-tune: resuming session %lld (%s, seed %llu)\n",
                (long long)T->session.id, T->session.strategy,
                (unsigned long long)T->session.seed);
        T->budget = T->session.budget;
        if (tun_strategy_parse(T->session.strategy, &T->strategy, err) != FMQA_OK)
            return FMQA_ERR_DATABASE;
        return *text ? FMQA_OK : fmqa_err_set(err, FMQA_ERR_OUT_OF_MEMORY, "out of memory");
    }
    if (!(*text = problem_text(T->o, err)))
        return err->status;
    T->strategy = T->o->strategy, T->budget = T->o->budget;
    T->session = (db_session){.device_id = dev_id, .strategy = (char *)tun_strategy_name(T->strategy),
                              .budget = T->o->budget,
                              .seed = T->o->seed_given ? T->o->seed : ref_seed_from_time(),
                              .problem_set = *text};
    st = db_session_create(T->db, &T->session, err);
    /* The strings above are borrowed: detach them so db_session_free is safe. */
    T->session.strategy = NULL, T->session.problem_set = NULL;
    return st;
}

/* Prints the cubin cache's summary line (after the compiler is gone, so every
 * store has happened).  Returns 1 when the database did not keep some cubin:
 * the run's results are then incomplete and fastmqa-tune exits with 1. */
static int report_cubins(rt_cubin_store *cubins)
{
    char line[FMQA_ERRMSG_CAP + 128];
    size_t failed = rt_cubin_store_summary(cubins, line, sizeof line);
    printf("%s\n", line);
    if (failed)
        fprintf(stderr, "fastmqa-tune: the database did not keep %zu compiled cubin(s)\n",
                failed);
    return failed ? 1 : 0;
}

static int run_gpu(const opts *o)
{
    tuner T = {.o = o, .tty = isatty(2)};
    fmqa_err err = {0};
    fmqa_options fo = FMQA_OPTIONS_INIT;
    fo.db_path = "";  /* the tuner opens the database itself, read-write */
    char *text = NULL;
    fmqa_problem *ps = NULL;
    size_t n = 0;
    int rc = 1;
    fmqa_status st = fmqa_ctx_create(&fo, &T.ctx);
    if (st == FMQA_OK && (st = fmqa_device_query(T.ctx, &T.dev)) != FMQA_OK) {
        fprintf(stderr, "fastmqa-tune: no GPU found (%s).  Tuning needs a CUDA GPU; "
                        "--dry-run compiles a sample of each variant space without one "
                        "(--dry-run --all: every variant).\n",
                fmqa_ctx_errmsg(T.ctx));
        fmqa_ctx_destroy(T.ctx);
        return 1;
    }
    tun_device_report(stdout, &T.dev);
    db_device_key(&T.dev, T.dev_key);
    if (st == FMQA_OK)
        st = db_open(o->db_path, DB_READ_WRITE, 0, &T.db, &err);
    rt_cubin_store cubins;
    rt_cubin_store_init(&cubins, T.db, T.ctx);
    gen_cache_hook hook = rt_cubin_hook(&cubins);
    if (st == FMQA_OK)
        st = rt_templates(T.ctx, &T.lib, &err);
    if (st == FMQA_OK)
        st = gen_compiler_create(o->threads, &hook, &T.comp, &err);
    if (st == FMQA_OK)
        st = tun_timer_create(T.ctx, &T.timer, &err);
    if (st == FMQA_OK)
        st = open_session(&T, &text, &err);
    if (st == FMQA_OK)
        st = tun_recorder_create(T.db, T.session.id, &T.rec, &err);
    if (st == FMQA_OK)
        st = tun_problems_parse(text, "problem set", &ps, &n, &err);
    summary *sums = st == FMQA_OK ? calloc(n, sizeof *sums) : NULL;
    if (st == FMQA_OK && !sums)
        st = fmqa_err_set(&err, FMQA_ERR_OUT_OF_MEMORY, "out of memory");
    pthread_t wd;
    if (st == FMQA_OK) {
        pthread_mutex_init(&T.wd.lock, NULL);
        T.wd.rec = T.rec, T.wd.timeout_s = o->timeout_s;
        if (pthread_create(&wd, NULL, watchdog_main, &T.wd) != 0) {
            pthread_mutex_destroy(&T.wd.lock);
            st = fmqa_err_set(&err, FMQA_ERR_INTERNAL, "cannot start the watchdog thread");
        }
    }
    if (st == FMQA_OK) {
        signal(SIGINT, on_sigint);
        fprintf(stderr, "fastmqa-tune: %s (%s), %zu problem(s), strategy %s, session %lld, db %s\n",
                T.dev.name, T.dev.arch, n, tun_strategy_name(T.strategy),
                (long long)T.session.id, o->db_path);
        for (size_t i = 0; i < n && st == FMQA_OK && !interrupted; i++)
            st = tune_problem(&T, &ps[i], (int)i, (int)n, &sums[i], &err);
        watchdog_stop(&T.wd, wd);
    }
    if (st == FMQA_OK) {
        print_summary(ps, sums, n);
        if (tun_recorder_pending(T.rec))
            fprintf(stderr, "fastmqa-tune: waiting up to %.0f s for the database to store %zu "
                            "result(s)\n", TUN_RECORD_WAIT_S, tun_recorder_pending(T.rec));
        st = tun_recorder_finish(T.rec, interrupted, TUN_RECORD_WAIT_S, &err);
        rc = interrupted ? 130 : 0;
        if (interrupted && st == FMQA_OK)
            fprintf(stderr, "fastmqa-tune: interrupted; session %lld can be continued with "
                            "--resume\n", (long long)T.session.id);
    }
    if (st != FMQA_OK) {
        fprintf(stderr, "fastmqa-tune: %s\n", err.msg[0] ? err.msg : fmqa_ctx_errmsg(T.ctx));
        rc = 1;
    }
    free(sums);
    free(ps);
    free(text);
    tun_timer_destroy(T.timer);
    gen_compiler_destroy(T.comp);
    tun_recorder_destroy(T.rec);
    if (T.db && report_cubins(&cubins) && rc == 0)
        rc = 1;
    rt_cubin_store_fini(&cubins);
    db_session_free(&T.session);
    db_close(T.db);
    fmqa_ctx_destroy(T.ctx);
    return rc;
}

/* ---------------------------------------------------------------- dry run */

/* One template on one problem: what the dry run compiles of its space. */
typedef struct dry_task {
    size_t problem;
    const gen_template *t;
    gen_config *space;           /* owned                                     */
    size_t n_space, n_pick;
    size_t *pick;                /* owned: indices into space                 */
} dry_task;

typedef struct dry_totals {
    size_t compiled, cached, failed, spilling;
    int reg_min, reg_max;
    double compile_ms;
    char archs[48];              /* the targets compiled for, "sm_90a, sm_90" */
} dry_totals;

/* Adds arch to the comma-separated set (a template with sm_90a features
 * compiles for sm_90a on an sm_90 preset: the set says what was built). */
static void add_arch(char *set, size_t cap, const char *arch)
{
    size_t n = strlen(arch);
    for (const char *p = set; (p = strstr(p, arch)); p += n)
        if ((p == set || p[-1] == ' ') && (p[n] == ',' || p[n] == '\0'))
            return;
    size_t used = strlen(set);
    snprintf(set + used, cap - used, "%s%s", used ? ", " : "", arch);
}

/* The configs to compile: all of them when k is 0 or covers the space, else
 * the default (if legal) and evenly spaced picks, k in all. */
static size_t dry_picks(const gen_config *space, size_t n, const gen_config *dflt, size_t k,
                        size_t *pick)
{
    size_t m = 0;
    if (k == 0 || k >= n) {
        for (; m < n; m++)
            pick[m] = m;
        return m;
    }
    size_t di = dflt ? find_config(space, n, dflt) : n;
    if (di < n)
        pick[m++] = di;
    for (size_t i = 0; i < k && m < k; i++) {
        size_t j = i * n / k;
        if (j != di)
            pick[m++] = j;
    }
    return m;
}

/* Every (problem, template) pair with its space and picks; *total the configs
 * to compile, *legal the size of the spaces. */
static fmqa_status dry_plan(const opts *o, gen_lib *lib, const fmqa_problem *ps, size_t n,
                            const fmqa_device_info *dev, dry_task **out, size_t *n_out,
                            size_t *total, size_t *legal, fmqa_err *err)
{
    size_t cap = 0, k = o->all ? 0 : o->budget > 0 ? (size_t)o->budget : DRY_QUICK_SAMPLE;
    dry_task *tasks = NULL;
    fmqa_status st = FMQA_OK;
    *n_out = *total = *legal = 0;
    for (size_t i = 0; i < n && st == FMQA_OK; i++)
        for (const gen_template *t = gen_lib_next(lib, ps[i].op, NULL); t && st == FMQA_OK;
             t = gen_lib_next(lib, ps[i].op, t)) {
            if (*n_out == cap) {
                dry_task *grown = realloc(tasks, (cap = cap ? 2 * cap : 16) * sizeof *tasks);
                if (!grown) {
                    st = fmqa_err_set(err, FMQA_ERR_OUT_OF_MEMORY, "out of memory");
                    break;
                }
                tasks = grown;
            }
            dry_task *d = &tasks[*n_out];
            *d = (dry_task){.problem = i, .t = t};
            st = gen_space(t, &ps[i], dev, &d->space, &d->n_space, err);
            if (st != FMQA_OK)
                break;
            ++*n_out;
            gen_config dflt;
            int has_dflt = gen_default(t, &ps[i], dev, &dflt, NULL) == FMQA_OK;
            if (d->n_space && !(d->pick = malloc(d->n_space * sizeof *d->pick)))
                st = fmqa_err_set(err, FMQA_ERR_OUT_OF_MEMORY, "out of memory");
            else if (d->n_space)
                d->n_pick = dry_picks(d->space, d->n_space, has_dflt ? &dflt : NULL, k, d->pick);
            *total += d->n_pick, *legal += d->n_space;
        }
    *out = tasks;
    return st;
}

static void dry_tasks_free(dry_task *tasks, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(tasks[i].space);
        free(tasks[i].pick);
    }
    free(tasks);
}

/* Accounts one finished compile and describes it for the progress line. */
static void dry_account(dry_totals *d, const gen_binary *b, char *line, size_t cap)
{
    int regs = 0, spill = 0;
    for (int r = 0; r < b->n_resources; r++) {
        if (b->resources[r].registers > regs)
            regs = b->resources[r].registers;
        spill += b->resources[r].spill_stores + b->resources[r].spill_loads;
    }
    d->compiled++;
    d->cached += b->cached != 0;
    add_arch(d->archs, sizeof d->archs, b->arch);
    d->spilling += spill > 0;
    d->compile_ms += b->compile_ms;
    if (regs && (!d->reg_min || regs < d->reg_min))
        d->reg_min = regs;
    if (regs > d->reg_max)
        d->reg_max = regs;
    size_t used = strlen(line);
    if (b->cached)
        snprintf(line + used, cap - used, "from the cubin cache");
    else
        snprintf(line + used, cap - used, "%d registers, %d spill bytes, %.0f ms", regs, spill,
                 b->compile_ms);
}

/* Compiles a task's picks on the pool; one progress update per variant. */
static void dry_compile(gen_compiler *comp, const dry_task *task, const fmqa_problem *p,
                        const fmqa_device_info *dev, tun_progress *prog, size_t *done,
                        dry_totals *d)
{
    gen_job **jobs = calloc(task->n_pick ? task->n_pick : 1, sizeof *jobs);
    fmqa_err *errs = calloc(task->n_pick ? task->n_pick : 1, sizeof *errs);
    for (size_t i = 0; jobs && errs && i < task->n_pick; i++) {
        gen_source src;
        if (gen_render(task->t, &task->space[task->pick[i]], p, dev, &src, &errs[i]) == FMQA_OK)
            gen_compiler_submit(comp, &src, NULL, NULL, &jobs[i], &errs[i]);
        gen_source_free(&src);
    }
    for (size_t i = 0; i < task->n_pick; i++) {
        const gen_binary *b;
        fmqa_err e = {.msg = "out of memory"};
        char line[GEN_CONFIG_TEXT_CAP + 320];
        int n = snprintf(line, sizeof line, "problem %zu %s ", task->problem + 1,
                         gen_template_name(task->t));
        gen_config_text(&task->space[task->pick[i]], line + n, sizeof line - (size_t)n);
        fmqa_strlcpy(line + strlen(line), ": ", sizeof line - strlen(line));
        if (jobs && jobs[i] && gen_job_wait(jobs[i], &b, &e) == FMQA_OK) {
            dry_account(d, b, line, sizeof line);
        } else {
            d->failed++;
            n = (int)strlen(line);
            snprintf(line + n, sizeof line - (size_t)n, "FAILED %.200s",
                     jobs && !jobs[i] && errs ? errs[i].msg : e.msg);
        }
        tun_progress_update(prog, ++*done, line);
        if (jobs)
            gen_job_release(jobs[i]);
    }
    free(errs);
    free(jobs);
}

static int run_dry(const opts *o)
{
    fmqa_err err = {0};
    fmqa_device_info dev;
    fmqa_options fo = FMQA_OPTIONS_INIT;
    fo.db_path = "";
    fmqa_ctx_t *ctx = NULL;
    db_t *db = NULL;
    gen_lib *lib = NULL;
    gen_compiler *comp = NULL;
    fmqa_problem *ps = NULL;
    dry_task *tasks = NULL;
    size_t n = 0, n_tasks = 0, total = 0, legal = 0;
    char *text = NULL;
    int rc = 0;
    signal(SIGINT, on_sigint);
    fmqa_status st = gen_device_preset(o->arch, &dev, &err);
    if (st == FMQA_OK && (st = fmqa_ctx_create(&fo, &ctx)) != FMQA_OK)
        fmqa_err_set(&err, st, "%s", fmqa_ctx_errmsg(ctx));
    if (st == FMQA_OK)
        st = rt_templates(ctx, &lib, &err);
    if (st == FMQA_OK && !(text = problem_text(o, &err)))
        st = err.status;
    if (st == FMQA_OK)
        st = tun_problems_parse(text, o->problems_file ? o->problems_file : "problem set", &ps,
                                &n, &err);
    if (st == FMQA_OK)
        st = dry_plan(o, lib, ps, n, &dev, &tasks, &n_tasks, &total, &legal, &err);
    if (st == FMQA_OK) {
        printf("dry run for the %s preset: %zu problem(s), %zu template space(s), %zu of %zu legal "
               "variants to compile on %d thread(s) (%s), cubins and compile reports into %s\n",
               dev.arch, n, n_tasks, total, legal, o->threads,
               o->all ? "--all: every variant"
                      : "quick: each space's default and an even sample; --all for every variant",
               o->db_path);
        st = db_open(o->db_path, DB_READ_WRITE, 0, &db, &err);
    }
    rt_cubin_store cubins;
    rt_cubin_store_init(&cubins, db, ctx);
    gen_cache_hook hook = rt_cubin_hook(&cubins);
    if (st == FMQA_OK)
        st = gen_compiler_create(o->threads, &hook, &comp, &err);
    tun_progress prog;
    tun_progress_start(&prog, stderr, isatty(STDERR_FILENO), "dry run", total);
    size_t done = 0, compiled = 0, failed = 0;
    char archs[sizeof ((dry_totals *)0)->archs] = "";
    for (size_t i = 0; i < n_tasks && st == FMQA_OK && !interrupted; i++) {
        const dry_task *task = &tasks[i];
        dry_totals d = {0};
        double t0 = fmqa_now_ms();
        dry_compile(comp, task, &ps[task->problem], &dev, &prog, &done, &d);
        tun_progress_clear(&prog);
        if (i == 0 || tasks[i - 1].problem != task->problem) {
            char spec[GEN_PROBLEM_TEXT_CAP];
            gen_problem_format(&ps[task->problem], spec, sizeof spec);
            printf("problem %zu: %s\n", task->problem + 1, spec);
        }
        printf("  %-12s %zu legal, %zu compiled for %s (%zu from the cubin cache), %zu failed, "
               "registers %d..%d, %zu spilling, compile %.0f ms cpu / %.0f ms wall\n",
               gen_template_name(task->t), task->n_space, d.compiled,
               d.archs[0] ? d.archs : "-", d.cached, d.failed, d.reg_min, d.reg_max, d.spilling,
               d.compile_ms, fmqa_now_ms() - t0);
        compiled += d.compiled, failed += d.failed;
        char *save = NULL;
        for (char *a = strtok_r(d.archs, ", ", &save); a; a = strtok_r(NULL, ", ", &save))
            add_arch(archs, sizeof archs, a);
    }
    for (size_t i = 0; i < n && st == FMQA_OK; i++)
        if (!gen_lib_next(lib, ps[i].op, NULL)) {
            printf("problem %zu: no %s template is loaded (%s)\n", i + 1,
                   fmqa_op_name(ps[i].op), gen_lib_origin(lib));
            rc = 1;
        }
    if (st != FMQA_OK) {
        fprintf(stderr, "fastmqa-tune: %s\n", err.msg);
        rc = 1;
    } else {
        printf("dry run for the %s preset: %zu variants compiled, %zu failed%s; cubins for %s\n",
               dev.arch, compiled, failed, interrupted ? " (interrupted)" : "",
               archs[0] ? archs : "-");
        rc = interrupted ? 130 : rc || failed ? 1 : 0;
    }
    dry_tasks_free(tasks, n_tasks);
    free(ps);
    free(text);
    gen_compiler_destroy(comp);
    if (db && report_cubins(&cubins) && rc == 0)
        rc = 1;
    rt_cubin_store_fini(&cubins);
    db_close(db);
    fmqa_ctx_destroy(ctx);
    return rc;
}

int main(int argc, char **argv)
{
    if (rt_version_option(argc, argv, "fastmqa-tune"))
        return 0;
    setvbuf(stdout, NULL, _IOLBF, 0); /* a redirected log advances line by line */
    opts o;
    int r = parse_args(argc, argv, &o);
    if (r)
        return r == 1 ? 0 : 2;
    return o.dry_run ? run_dry(&o) : run_gpu(&o);
}
