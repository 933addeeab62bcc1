/*
 * db_trial.c -- trials, the best entry per (device, template, problem), the
 * exact and nearest-bucket lookups, tuning sessions and the sets of configs a
 * session already tried, and the cubin cache.
 *
 * Trials and sessions carry a uid (a hash of process, time and a counter) so
 * that export/import and merge recognise a row they already hold; ids are
 * local to one file.  A best entry always points to an ok trial of the same
 * (device, template, problem) and holds that trial's config, median, spread,
 * tuner version and timing method, copied so the runtime's lookup is one
 * indexed join.  A session records its owner (host, pid, heartbeat) so that a
 * resume takes over only a session whose process is gone.
 */
#define _POSIX_C_SOURCE 200809L
#include "db_internal.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char *const TRIAL_STATUS[DB_TRIAL_STATUS_COUNT] = {
    "ok", "compile_error", "launch_error", "timeout", "wrong_result", "pruned"};
static const char *const SESSION_STATUS[3] = {"running", "done", "interrupted"};

const char *db_trial_status_name(db_trial_status status)
{
    return (unsigned)status < DB_TRIAL_STATUS_COUNT ? TRIAL_STATUS[status] : NULL;
}

fmqa_status db_trial_status_parse(const char *name, db_trial_status *status, fmqa_err *err)
{
    for (int i = 0; name && i < DB_TRIAL_STATUS_COUNT; i++)
        if (strcmp(name, TRIAL_STATUS[i]) == 0) {
            *status = (db_trial_status)i;
            return FMQA_OK;
        }
    return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT,
                        "unknown trial status '%s' (expected ok, compile_error, launch_error, "
                        "timeout, wrong_result or pruned)", name ? name : "(null)");
}

const char *db_session_status_name(db_session_status status)
{
    return (unsigned)status < 3 ? SESSION_STATUS[status] : NULL;
}

/* A row identity unique across processes and files. */
static void make_uid(const void *salt, char out[FMQA_HASH_HEX])
{
    static unsigned long counter; /* guarded by the db lock of the caller */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    fmqa_hasher h;
    fmqa_hash_init(&h);
    long long parts[4] = {(long long)getpid(), (long long)ts.tv_sec, ts.tv_nsec,
                          (long long)++counter};
    fmqa_hash_update(&h, parts, sizeof parts);
    fmqa_hash_update(&h, &salt, sizeof salt);
    fmqa_hash_final(&h, out);
}

/* ------------------------------------------------------------ trials */

static fmqa_status check_trial(const db_trial *t, fmqa_err *err)
{
    if (!t->config || !*t->config)
        return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT, "trial.config: empty");
    if (strlen(t->config) >= DB_CONFIG_CAP)
        return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT,
                            "trial.config: %zu characters, at most %d", strlen(t->config),
                            DB_CONFIG_CAP - 1);
    if (!db_trial_status_name(t->status))
        return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT, "trial.status: unknown value %d",
                            (int)t->status);
    if (t->device_id <= 0 || t->template_id <= 0 || t->problem_id <= 0 || t->session_id < 0)
        return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT,
                            "trial: device_id, template_id and problem_id must be set");
    return FMQA_OK;
}

static void bind_trial(sqlite3_stmt *st, const db_trial *t, const char *uid)
{
    char hash[FMQA_HASH_HEX];
    db_config_hash(t->config, hash);
    sqlite3_bind_text(st, 1, uid, -1, SQLITE_TRANSIENT);
    if (t->session_id > 0)
        sqlite3_bind_int64(st, 2, t->session_id);
    sqlite3_bind_int64(st, 3, t->device_id);
    sqlite3_bind_int64(st, 4, t->template_id);
    sqlite3_bind_int64(st, 5, t->problem_id);
    sqlite3_bind_text(st, 6, t->config, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 7, hash, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 8, db_trial_status_name(t->status), -1, SQLITE_STATIC);
    const double reals[] = {t->compile_ms, t->median_us, t->p20_us, t->p80_us, t->min_us,
                            t->median_us > 0 ? (t->p80_us - t->p20_us) / t->median_us : 0.0};
    for (int i = 0; i < 6; i++)
        sqlite3_bind_double(st, 9 + i, reals[i]);
    sqlite3_bind_int64(st, 15, t->runs);
    sqlite3_bind_double(st, 16, t->rel_l2_err);
    sqlite3_bind_double(st, 17, t->max_abs_err);
    sqlite3_bind_int64(st, 18, t->sm_clock_mhz);
    sqlite3_bind_int64(st, 19, t->mem_clock_mhz);
    db_bind_text(st, 20, t->tuner_version);
    db_bind_text(st, 21, t->message);
    sqlite3_bind_int64(st, 22, db_now());
    sqlite3_bind_int64(st, 23, t->timing_method);
}

fmqa_status db_trial_insert(db_t *db, const db_trial *t, int64_t *id, fmqa_err *err)
{
    if (!db || !t)
        return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT, "db_trial_insert: NULL argument");
    fmqa_status s = check_trial(t, err);
    if (s)
        return s;
    sqlite3_stmt *st = NULL;
    db_lock(db);
    char uid[FMQA_HASH_HEX];
    make_uid(db, uid);
    s = db_prepare(db,
        "INSERT INTO trials(uid, session_id, device_id, template_id, problem_id, config,"
        " config_hash, status, compile_ms, median_us, p20_us, p80_us, min_us, spread, runs,"
        " rel_l2_err, max_abs_err, sm_clock_mhz, mem_clock_mhz, tuner_version, message,"
        " created_at, timing_method) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12,"
        " ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23)", &st, "store a trial", err);
    if (!s) {
        bind_trial(st, t, uid);
        s = db_begin_write(db, err);
        if (!s)
            s = db_step_done(db, st, "store a trial (do its device, template, problem "
                                     "and session exist?)", err);
        if (!s && id)
            *id = sqlite3_last_insert_rowid(db->conn);
        s = db_end(db, s, err);
    }
    sqlite3_finalize(st);
    db_unlock(db);
    return s;
}

/* ------------------------------------------------------------ best */

/* What the replacement rule looks at, of a trial or of the entry it backs. */
typedef struct measure {
    char config_hash[FMQA_HASH_HEX];
    char tuner_version[64];
    int64_t timing_method;
    double median_us, spread;
    bool imported;
} measure;

/* Fills m from columns col.. of st: median, config hash, tuner version,
 * timing method, spread. */
static void read_measure(sqlite3_stmt *st, int col, measure *m)
{
    memset(m, 0, sizeof *m);
    m->median_us = sqlite3_column_double(st, col);
    fmqa_strlcpy(m->config_hash, (const char *)sqlite3_column_text(st, col + 1),
                 sizeof m->config_hash);
    fmqa_strlcpy(m->tuner_version, (const char *)sqlite3_column_text(st, col + 2),
                 sizeof m->tuner_version);
    m->timing_method = sqlite3_column_int64(st, col + 3);
    m->spread = sqlite3_column_double(st, col + 4);
}

/* Reads a trial's measure; it must be ok and timed to become a best entry. */
static fmqa_status read_candidate(db_t *db, int64_t trial_id, measure *m, fmqa_err *err)
{
    sqlite3_stmt *st;
    fmqa_status s = db_prepare(db,
        "SELECT status, median_us, config_hash, coalesce(tuner_version, ''), timing_method,"
        " coalesce(spread, 0) FROM trials WHERE id = ?1", &st, "read a trial", err);
    if (s)
        return s;
    sqlite3_bind_int64(st, 1, trial_id);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_DONE)
        s = fmqa_err_set(err, FMQA_ERR_NOT_FOUND, "%s: no trial %lld", db->path,
                         (long long)trial_id);
    else if (rc != SQLITE_ROW)
        s = db_fail(db, rc, err, "read a trial");
    else if (strcmp((const char *)sqlite3_column_text(st, 0), "ok") != 0 ||
             !(sqlite3_column_double(st, 1) > 0))
        s = fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT,
                         "trial %lld cannot be a best entry: status %s, median %g us",
                         (long long)trial_id, (const char *)sqlite3_column_text(st, 0),
                         sqlite3_column_double(st, 1));
    if (!s)
        read_measure(st, 1, m);
    sqlite3_finalize(st);
    return s;
}

/* The incumbent of the candidate trial's (device, template, problem); 0 in
 * *found when there is none. */
static fmqa_status read_incumbent(db_t *db, int64_t trial_id, measure *m, int *found,
                                  fmqa_err *err)
{
    sqlite3_stmt *st;
    fmqa_status s = db_prepare(db,
        "SELECT b.median_us, t.config_hash, coalesce(b.tuner_version, ''), b.timing_method,"
        " b.spread, b.origin = 'import' FROM trials c JOIN best b ON b.device_id = c.device_id"
        " AND b.template_id = c.template_id AND b.problem_id = c.problem_id"
        " JOIN trials t ON t.id = b.trial_id WHERE c.id = ?1", &st, "read the best entry", err);
    if (s)
        return s;
    sqlite3_bind_int64(st, 1, trial_id);
    int rc = sqlite3_step(st);
    *found = rc == SQLITE_ROW;
    if (rc == SQLITE_ROW) {
        read_measure(st, 0, m);
        m->imported = sqlite3_column_int(st, 5) != 0;
    } else if (rc != SQLITE_DONE) {
        s = db_fail(db, rc, err, "read the best entry");
    }
    sqlite3_finalize(st);
    return s;
}

/* The replacement rule of db_best_update (docs/database.md, "Best entries"). */
static bool replaces(const measure *inc, const measure *cand)
{
    if (inc->imported || inc->timing_method != cand->timing_method ||
        strcmp(inc->tuner_version, cand->tuner_version) != 0)
        return true; /* foreign or stale: the fresh local measurement wins */
    if (strcmp(inc->config_hash, cand->config_hash) == 0)
        return true; /* the incumbent re-measured: its latest time is its time */
    double noise = (inc->spread > cand->spread ? inc->spread : cand->spread) / 2;
    double margin = noise > DB_BEST_MIN_MARGIN ? noise : DB_BEST_MIN_MARGIN;
    return cand->median_us < inc->median_us * (1 - margin);
}

bool db_best_is_stale(const db_best_entry *e, int32_t timing_method, const char *tuner_version)
{
    return e->timing_method != timing_method ||
           strcmp(e->tuner_version, tuner_version ? tuner_version : "") != 0;
}

fmqa_status db_best_update(db_t *db, int64_t trial_id, double default_median_us,
                           bool *replaced, fmqa_err *err)
{
    if (!db)
        return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT, "db_best_update: NULL db");
    sqlite3_stmt *st = NULL;
    measure cand, inc;
    int found = 0;
    bool take = false;
    db_lock(db);
    fmqa_status s = db_begin_write(db, err);
    if (!s)
        s = read_candidate(db, trial_id, &cand, err);
    if (!s)
        s = read_incumbent(db, trial_id, &inc, &found, err);
    take = !s && (!found || replaces(&inc, &cand));
    /* The WHERE true resolves the parse ambiguity of INSERT ... SELECT ... ON.
     * A default time is kept even when the entry is not replaced. */
    if (!s)
        s = db_prepare(db,
            "INSERT INTO best(device_id, template_id, problem_id, trial_id, config, median_us,"
            " default_median_us, updated_at, spread, tuner_version, timing_method, origin,"
            " origin_file, origin_at)"
            " SELECT device_id, template_id, problem_id, id, config, median_us, ?2, ?3,"
            " coalesce(spread, 0), tuner_version, timing_method, 'local', NULL, ?3"
            " FROM trials WHERE id = ?1 AND true"
            " ON CONFLICT(device_id, template_id, problem_id) DO UPDATE SET"
            "  trial_id = CASE WHEN ?4 THEN excluded.trial_id ELSE best.trial_id END,"
            "  config = CASE WHEN ?4 THEN excluded.config ELSE best.config END,"
            "  median_us = CASE WHEN ?4 THEN excluded.median_us ELSE best.median_us END,"
            "  spread = CASE WHEN ?4 THEN excluded.spread ELSE best.spread END,"
            "  tuner_version = CASE WHEN ?4 THEN excluded.tuner_version"
            "   ELSE best.tuner_version END,"
            "  timing_method = CASE WHEN ?4 THEN excluded.timing_method"
            "   ELSE best.timing_method END,"
            "  origin = CASE WHEN ?4 THEN 'local' ELSE best.origin END,"
            "  origin_file = CASE WHEN ?4 THEN NULL ELSE best.origin_file END,"
            "  origin_at = CASE WHEN ?4 THEN excluded.origin_at ELSE best.origin_at END,"
            "  updated_at = CASE WHEN ?4 THEN excluded.updated_at ELSE best.updated_at END,"
            "  default_median_us = CASE WHEN excluded.default_median_us > 0"
            "   THEN excluded.default_median_us ELSE best.default_median_us END",
            &st, "update the best entry", err);
    if (!s) {
        sqlite3_bind_int64(st, 1, trial_id);
        sqlite3_bind_double(st, 2, default_median_us > 0 ? default_median_us : 0.0);
        sqlite3_bind_int64(st, 3, db_now());
        sqlite3_bind_int(st, 4, take);
        s = db_step_done(db, st, "update the best entry", err);
    }
    if (!s && replaced)
        *replaced = take;
    s = db_end(db, s, err);
    sqlite3_finalize(st);
    db_unlock(db);
    return s;
}

static int ilog2(int32_t pow2)
{
    int l = 0;
    while (pow2 > 1) {
        pow2 >>= 1;
        l++;
    }
    return l;
}

static int compare_entries(const void *a, const void *b)
{
    const db_best_entry *x = a, *y = b;
    if (x->distance != y->distance)
        return x->distance < y->distance ? -1 : 1;
    if (x->kv_len_bucket != y->kv_len_bucket)
        return x->kv_len_bucket > y->kv_len_bucket ? -1 : 1;
    if (x->batch_bucket != y->batch_bucket)
        return x->batch_bucket > y->batch_bucket ? -1 : 1;
    return (x->trial_id > y->trial_id) - (x->trial_id < y->trial_id);
}

/* Fills e from the current row of the lookup query and the problem's buckets. */
static void read_entry(sqlite3_stmt *st, const fmqa_problem *p, db_best_entry *e)
{
    memset(e, 0, sizeof *e);
    e->trial_id = sqlite3_column_int64(st, 0);
    e->problem_id = sqlite3_column_int64(st, 1);
    fmqa_strlcpy(e->config, (const char *)sqlite3_column_text(st, 2), sizeof e->config);
    e->median_us = sqlite3_column_double(st, 3);
    e->default_median_us = sqlite3_column_double(st, 4);
    e->batch_bucket = sqlite3_column_int(st, 5);
    e->kv_len_bucket = sqlite3_column_int(st, 6);
    e->batch_steps = abs(ilog2(e->batch_bucket) - ilog2(db_bucket(p->batch)));
    e->kv_len_steps = abs(ilog2(e->kv_len_bucket) - ilog2(db_bucket(p->kv_len)));
    e->distance = e->batch_steps + e->kv_len_steps;
    e->spread = sqlite3_column_double(st, 7);
    fmqa_strlcpy(e->tuner_version, (const char *)sqlite3_column_text(st, 8),
                 sizeof e->tuner_version);
    e->timing_method = sqlite3_column_int(st, 9);
    e->imported = sqlite3_column_int(st, 10) != 0;
}

/* One query serves the exact lookup (buckets bound) and the candidate list
 * (?5 = 0: any bucket). */
static fmqa_status best_query(db_t *db, const char *device_key, const char *template_name,
                              const char *template_hash, const fmqa_problem *p, bool exact,
                              db_best_entry **entries, size_t *count, fmqa_err *err)
{
    char cls[DB_KEY_CAP];
    db_problem_class_key(p, cls);
    sqlite3_stmt *st;
    fmqa_status s = db_prepare(db,
        "SELECT b.trial_id, b.problem_id, b.config, b.median_us, b.default_median_us,"
        " p.batch_bucket, p.kv_len_bucket, b.spread, coalesce(b.tuner_version, ''),"
        " b.timing_method, b.origin = 'import'"
        " FROM best b JOIN devices d ON d.id = b.device_id"
        " JOIN templates t ON t.id = b.template_id JOIN problems p ON p.id = b.problem_id"
        " WHERE d.key = ?1 AND t.name = ?2 AND t.hash = ?3 AND p.class_key = ?4"
        " AND (?5 = 0 OR (p.batch_bucket = ?6 AND p.kv_len_bucket = ?7))",
        &st, "look up the best entry", err);
    if (s)
        return s;
    sqlite3_bind_text(st, 1, device_key, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, template_name, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 3, template_hash, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 4, cls, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int(st, 5, exact);
    sqlite3_bind_int(st, 6, db_bucket(p->batch));
    sqlite3_bind_int(st, 7, db_bucket(p->kv_len));
    size_t n = 0, cap = 0;
    db_best_entry *v = NULL;
    int rc;
    while (!s && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (n == cap) {
            db_best_entry *nv = realloc(v, (cap = cap ? 2 * cap : 8) * sizeof *v);
            if (!nv) {
                s = fmqa_err_set(err, FMQA_ERR_OUT_OF_MEMORY, "out of memory");
                break;
            }
            v = nv;
        }
        read_entry(st, p, &v[n++]);
    }
    if (!s && rc != SQLITE_DONE)
        s = db_fail(db, rc, err, "look up the best entry");
    sqlite3_finalize(st);
    if (s) {
        free(v);
        return s;
    }
    if (n > 1)
        qsort(v, n, sizeof *v, compare_entries);
    *entries = v;
    *count = n;
    return FMQA_OK;
}

static fmqa_status check_lookup_args(db_t *db, const char *device_key, const char *name,
                                     const char *hash, const fmqa_problem *p, fmqa_err *err)
{
    if (!db || !device_key || !name || !hash || !p)
        return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT, "best lookup: NULL argument");
    return FMQA_OK;
}

fmqa_status db_best_lookup_exact(db_t *db, const char *device_key, const char *template_name,
                                 const char *template_hash, const fmqa_problem *problem,
                                 db_best_entry *entry, fmqa_err *err)
{
    fmqa_status s = check_lookup_args(db, device_key, template_name, template_hash, problem, err);
    if (s || !entry)
        return s ? s : fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT, "best lookup: NULL entry");
    db_best_entry *v = NULL;
    size_t n = 0;
    db_lock(db);
    s = best_query(db, device_key, template_name, template_hash, problem, true, &v, &n, err);
    db_unlock(db);
    if (!s && n == 0)
        s = fmqa_err_set(err, FMQA_ERR_NOT_FOUND, "%s: no tuned entry for %s on this device",
                         db->path, template_name);
    if (!s)
        *entry = v[0];
    free(v);
    return s;
}

fmqa_status db_best_candidates(db_t *db, const char *device_key, const char *template_name,
                               const char *template_hash, const fmqa_problem *problem,
                               db_best_entry **entries, size_t *count, fmqa_err *err)
{
    fmqa_status s = check_lookup_args(db, device_key, template_name, template_hash, problem, err);
    if (s || !entries || !count)
        return s ? s : fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT, "best lookup: NULL output");
    db_lock(db);
    s = best_query(db, device_key, template_name, template_hash, problem, false, entries, count,
                   err);
    db_unlock(db);
    return s;
}

/* ------------------------------------------------------------ sessions */

void db_session_free(db_session *s)
{
    if (!s)
        return;
    free(s->strategy);
    free(s->problem_set);
    free(s->host);
    s->strategy = s->problem_set = s->host = NULL;
}

/* This machine's name, as sessions record their owner's. */
static void host_name(char out[256])
{
    if (gethostname(out, 256) != 0)
        fmqa_strlcpy(out, "?", 256);
    out[255] = '\0';
}

fmqa_status db_session_create(db_t *db, db_session *s, fmqa_err *err)
{
    if (!db || !s)
        return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT, "db_session_create: NULL argument");
    sqlite3_stmt *st = NULL;
    char uid[FMQA_HASH_HEX];
    int64_t now = db_now();
    db_lock(db);
    make_uid(s, uid);
    char host[256];
    host_name(host);
    fmqa_status r = db_prepare(db,
        "INSERT INTO sessions(uid, device_id, status, strategy, budget, seed, problem_set,"
        " started_at, host, pid, heartbeat_at) VALUES(?1, ?2, 'running', ?3, ?4, ?5, ?6, ?7,"
        " ?8, ?9, ?7)", &st, "create a session", err);
    if (!r) {
        sqlite3_bind_text(st, 1, uid, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(st, 2, s->device_id);
        db_bind_text(st, 3, s->strategy);
        sqlite3_bind_int64(st, 4, s->budget);
        sqlite3_bind_int64(st, 5, (int64_t)s->seed);
        db_bind_text(st, 6, s->problem_set);
        sqlite3_bind_int64(st, 7, now);
        sqlite3_bind_text(st, 8, host, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(st, 9, (int64_t)getpid());
        r = db_begin_write(db, err);
        if (!r)
            r = db_step_done(db, st, "create a session (does its device exist?)", err);
        if (!r) {
            s->id = sqlite3_last_insert_rowid(db->conn);
            s->status = DB_SESSION_RUNNING;
            s->started_at = s->heartbeat_at = now;
            s->finished_at = 0;
            s->pid = (int64_t)getpid();
        }
        r = db_end(db, r, err);
    }
    sqlite3_finalize(st);
    db_unlock(db);
    return r;
}

fmqa_status db_session_finish(db_t *db, int64_t session_id, db_session_status status,
                              fmqa_err *err)
{
    if (!db || status == DB_SESSION_RUNNING || !db_session_status_name(status))
        return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT,
                            "db_session_finish: status must be done or interrupted");
    sqlite3_stmt *st = NULL;
    db_lock(db);
    fmqa_status s = db_prepare(db,
        "UPDATE sessions SET status = ?2, finished_at = ?3 WHERE id = ?1", &st,
        "finish a session", err);
    if (!s) {
        sqlite3_bind_int64(st, 1, session_id);
        sqlite3_bind_text(st, 2, db_session_status_name(status), -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 3, db_now());
        s = db_begin_write(db, err);
        if (!s)
            s = db_step_done(db, st, "finish a session", err);
        if (!s && sqlite3_changes(db->conn) == 0)
            s = fmqa_err_set(err, FMQA_ERR_NOT_FOUND, "%s: no session %lld", db->path,
                             (long long)session_id);
        s = db_end(db, s, err);
    }
    sqlite3_finalize(st);
    db_unlock(db);
    return s;
}

static db_session_status parse_session_status(const char *name)
{
    for (int i = 0; i < 3; i++)
        if (name && strcmp(name, SESSION_STATUS[i]) == 0)
            return (db_session_status)i;
    return DB_SESSION_INTERRUPTED; /* the CHECK constraint makes this unreachable */
}

#define SESSION_COLUMNS                                                                    \
    "SELECT id, device_id, status, strategy, budget, seed, problem_set, started_at,"        \
    " finished_at, host, pid, heartbeat_at FROM sessions"

/* Reads one session row of SESSION_COLUMNS (st bound and ready);
 * FMQA_ERR_NOT_FOUND with `none` as the message when there is no row. */
static fmqa_status read_session(db_t *db, sqlite3_stmt *st, db_session *out, const char *none,
                                fmqa_err *err)
{
    int rc = sqlite3_step(st);
    if (rc == SQLITE_DONE)
        return fmqa_err_set(err, FMQA_ERR_NOT_FOUND, "%s: %s", db->path, none);
    if (rc != SQLITE_ROW)
        return db_fail(db, rc, err, "read a session");
    db_session r = {
        .id = sqlite3_column_int64(st, 0), .device_id = sqlite3_column_int64(st, 1),
        .status = parse_session_status((const char *)sqlite3_column_text(st, 2)),
        .strategy = db_column_strdup(st, 3), .budget = sqlite3_column_int64(st, 4),
        .seed = (uint64_t)sqlite3_column_int64(st, 5), .problem_set = db_column_strdup(st, 6),
        .started_at = sqlite3_column_int64(st, 7), .finished_at = sqlite3_column_int64(st, 8),
        .host = db_column_strdup(st, 9), .pid = sqlite3_column_int64(st, 10),
        .heartbeat_at = sqlite3_column_int64(st, 11)};
    *out = r;
    return FMQA_OK;
}

fmqa_status db_session_find_resumable(db_t *db, int64_t device_id, db_session *out,
                                      fmqa_err *err)
{
    if (!db || !out)
        return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT, "db_session_find_resumable: NULL");
    sqlite3_stmt *st = NULL;
    db_lock(db);
    fmqa_status s = db_prepare(db, SESSION_COLUMNS
        " WHERE device_id = ?1 AND status <> 'done' ORDER BY started_at DESC, id DESC LIMIT 1",
        &st, "find a session", err);
    if (!s) {
        sqlite3_bind_int64(st, 1, device_id);
        char none[96];
        snprintf(none, sizeof none, "no unfinished session for device %lld",
                 (long long)device_id);
        s = read_session(db, st, out, none, err);
    }
    sqlite3_finalize(st);
    db_unlock(db);
    return s;
}

/* Whether a running session's owner may still be alive (db_session_claim). */
static bool owner_alive(const db_session *s, const char *host, int64_t now)
{
    if (s->status != DB_SESSION_RUNNING || !s->host || s->pid <= 0)
        return false;
    if (now - s->heartbeat_at > DB_SESSION_STALE_S)
        return false;
    if (strcmp(s->host, host) != 0)
        return true; /* another machine: only its heartbeat can tell */
    return kill((pid_t)s->pid, 0) == 0 || errno == EPERM;
}

/* Makes this process the running owner of session id (inside a transaction). */
static fmqa_status take_over(db_t *db, int64_t id, const char *host, int64_t now,
                             fmqa_err *err)
{
    sqlite3_stmt *st;
    fmqa_status s = db_prepare(db,
        "UPDATE sessions SET status = 'running', finished_at = 0, host = ?2, pid = ?3,"
        " heartbeat_at = ?4 WHERE id = ?1", &st, "take over a session", err);
    if (s)
        return s;
    sqlite3_bind_int64(st, 1, id);
    sqlite3_bind_text(st, 2, host, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 3, (int64_t)getpid());
    sqlite3_bind_int64(st, 4, now);
    s = db_step_done(db, st, "take over a session", err);
    sqlite3_finalize(st);
    return s;
}

fmqa_status db_session_claim(db_t *db, int64_t session_id, db_session *out, fmqa_err *err)
{
    if (!db)
        return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT, "db_session_claim: NULL db");
    char host[256];
    host_name(host);
    int64_t now = db_now();
    sqlite3_stmt *st = NULL;
    db_session cur = {0};
    db_lock(db);
    fmqa_status s = db_begin_write(db, err);
    if (!s)
        s = db_prepare(db, SESSION_COLUMNS " WHERE id = ?1", &st, "read a session", err);
    if (!s) {
        sqlite3_bind_int64(st, 1, session_id);
        s = read_session(db, st, &cur, "no such session", err);
    }
    if (!s && cur.status == DB_SESSION_DONE)
        s = fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT, "%s: session %lld is done", db->path,
                         (long long)session_id);
    if (!s && owner_alive(&cur, host, now))
        s = fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT,
                         "%s: session %lld is still running (pid %lld on %s, last heartbeat "
                         "%llds ago); it is taken over only once that process is gone or its "
                         "heartbeat is older than %d s",
                         db->path, (long long)session_id, (long long)cur.pid, cur.host,
                         (long long)(now - cur.heartbeat_at), DB_SESSION_STALE_S);
    if (!s)
        s = take_over(db, session_id, host, now, err);
    s = db_end(db, s, err);
    sqlite3_finalize(st);
    db_unlock(db);
    if (!s && out) {
        db_session_free(&cur);
        cur.host = fmqa_strdup(host);
        cur.pid = (int64_t)getpid();
        cur.heartbeat_at = now;
        cur.status = DB_SESSION_RUNNING;
        cur.finished_at = 0;
        *out = cur;
        return FMQA_OK;
    }
    db_session_free(&cur);
    return s;
}

fmqa_status db_session_heartbeat(db_t *db, int64_t session_id, fmqa_err *err)
{
    if (!db)
        return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT, "db_session_heartbeat: NULL db");
    sqlite3_stmt *st = NULL;
    db_lock(db);
    fmqa_status s = db_prepare(db, "UPDATE sessions SET heartbeat_at = ?2 WHERE id = ?1", &st,
                               "record a heartbeat", err);
    if (!s) {
        sqlite3_bind_int64(st, 1, session_id);
        sqlite3_bind_int64(st, 2, db_now());
        s = db_begin_write(db, err);
        if (!s)
            s = db_step_done(db, st, "record a heartbeat", err);
        s = db_end(db, s, err);
    }
    sqlite3_finalize(st);
    db_unlock(db);
    return s;
}

/* ------------------------------------------------------------ done sets */

void db_hash_set_free(db_hash_set *set)
{
    if (!set)
        return;
    free(set->hex);
    set->hex = NULL;
    set->count = 0;
}

static int compare_hex(const void *a, const void *b) { return strcmp(a, b); }

bool db_hash_set_contains(const db_hash_set *set, const char *hash)
{
    return set && set->count && hash &&
           bsearch(hash, set->hex, set->count, sizeof *set->hex, compare_hex) != NULL;
}

fmqa_status db_trials_done(db_t *db, int64_t session_id, int64_t device_id, int64_t template_id,
                           int64_t problem_id, db_hash_set *set, fmqa_err *err)
{
    if (!db || !set)
        return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT, "db_trials_done: NULL argument");
    memset(set, 0, sizeof *set);
    sqlite3_stmt *st = NULL;
    db_lock(db);
    fmqa_status s = db_prepare(db,
        "SELECT DISTINCT config_hash FROM trials WHERE device_id = ?1 AND template_id = ?2"
        " AND problem_id = ?3 AND (?4 = 0 OR session_id = ?4) ORDER BY config_hash", &st,
        "list tried configs", err);
    if (!s) {
        sqlite3_bind_int64(st, 1, device_id);
        sqlite3_bind_int64(st, 2, template_id);
        sqlite3_bind_int64(st, 3, problem_id);
        sqlite3_bind_int64(st, 4, session_id);
        size_t cap = 0;
        int rc;
        while (!s && (rc = sqlite3_step(st)) == SQLITE_ROW) {
            if (set->count == cap) {
                void *nv = realloc(set->hex, (cap = cap ? 2 * cap : 64) * sizeof *set->hex);
                if (!nv) {
                    s = fmqa_err_set(err, FMQA_ERR_OUT_OF_MEMORY, "out of memory");
                    break;
                }
                set->hex = nv;
            }
            fmqa_strlcpy(set->hex[set->count++], (const char *)sqlite3_column_text(st, 0),
                         FMQA_HASH_HEX);
        }
        if (!s && rc != SQLITE_DONE)
            s = db_fail(db, rc, err, "list tried configs");
        if (s)
            db_hash_set_free(set);
    }
    sqlite3_finalize(st);
    db_unlock(db);
    return s;
}

/* ------------------------------------------------------------ cubins */

/* A row's data against its size and checksum (NULL in rows of schema 1). */
static fmqa_status cubin_verify(sqlite3_stmt *st, const char *key, fmqa_err *err)
{
    size_t n = (size_t)sqlite3_column_bytes(st, 0);
    int64_t recorded = sqlite3_column_int64(st, 1);
    if ((int64_t)n != recorded)
        return fmqa_err_set(err, FMQA_ERR_DATABASE,
                            "cubin %s is damaged: %zu bytes, %lld recorded", key, n,
                            (long long)recorded);
    const char *sum = (const char *)sqlite3_column_text(st, 2);
    char actual[FMQA_HASH_HEX];
    fmqa_hash_hex(sqlite3_column_blob(st, 0), n, actual);
    if (sum && strcmp(sum, actual) != 0)
        return fmqa_err_set(err, FMQA_ERR_DATABASE,
                            "cubin %s is damaged: checksum %s, %s recorded", key, actual, sum);
    return FMQA_OK;
}

/* Runs a statement on one key (?1; ?2 is the time where it has one) as best
 * effort, on a read-write handle only. */
static void cubin_touch(db_t *db, const char *sql, const char *key)
{
    sqlite3_stmt *st = NULL;
    if (db->mode != DB_READ_WRITE || db_prepare(db, sql, &st, "", NULL))
        return;
    sqlite3_bind_text(st, 1, key, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 2, db_now());
    sqlite3_step(st);
    sqlite3_finalize(st);
}

fmqa_status db_cubin_get(db_t *db, const char *key, void **data, size_t *size, fmqa_err *err)
{
    if (!db || !key || !data || !size)
        return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT, "db_cubin_get: NULL argument");
    sqlite3_stmt *st = NULL;
    int damaged = 0;
    db_lock(db);
    fmqa_status s = db_prepare(db, "SELECT data, size, checksum FROM cubins WHERE key = ?1", &st,
                               "read a cubin", err);
    if (!s) {
        sqlite3_bind_text(st, 1, key, -1, SQLITE_TRANSIENT);
        int rc = sqlite3_step(st);
        if (rc == SQLITE_ROW)
            damaged = (s = cubin_verify(st, key, err)) != FMQA_OK;
        if (rc == SQLITE_ROW && !damaged) {
            size_t n = (size_t)sqlite3_column_bytes(st, 0);
            void *copy = malloc(n ? n : 1);
            if (!copy) {
                s = fmqa_err_set(err, FMQA_ERR_OUT_OF_MEMORY, "out of memory");
            } else {
                memcpy(copy, sqlite3_column_blob(st, 0), n);
                *data = copy;
                *size = n;
            }
        } else if (rc != SQLITE_ROW) {
            s = rc == SQLITE_DONE ? fmqa_err_set(err, FMQA_ERR_NOT_FOUND, "no cached cubin %s", key)
                                  : db_fail(db, rc, err, "read a cubin");
        }
    }
    sqlite3_finalize(st);
    /* Refreshing last_used is best effort: a busy writer must not fail a hit.
     * A damaged row goes, so that the recompiled cubin takes its place. */
    if (!s)
        cubin_touch(db, "UPDATE cubins SET last_used = ?2 WHERE key = ?1", key);
    else if (damaged)
        cubin_touch(db, "DELETE FROM cubins WHERE key = ?1", key);
    db_unlock(db);
    return s;
}

fmqa_status db_cubin_put(db_t *db, const char *key, const void *data, size_t size,
                         const char *arch, const char *nvrtc_version, const char *template_hash,
                         const char *resources, fmqa_err *err)
{
    if (!db || !key || !*key || !data || !size || !arch || !nvrtc_version ||
        size > (size_t)INT32_MAX)
        return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT,
                            "db_cubin_put: key, data (1 byte .. 2 GiB), arch and nvrtc "
                            "version are required");
    sqlite3_stmt *st = NULL;
    db_lock(db);
    fmqa_status s = db_prepare(db,
        "INSERT INTO cubins(key, arch, nvrtc_version, template_hash, size, data, resources,"
        " created_at, last_used, checksum) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, ?9)"
        " ON CONFLICT(key) DO UPDATE SET arch = excluded.arch,"
        " nvrtc_version = excluded.nvrtc_version, template_hash = excluded.template_hash,"
        " size = excluded.size, data = excluded.data, resources = excluded.resources,"
        " last_used = excluded.last_used, checksum = excluded.checksum", &st,
        "store a cubin", err);
    if (!s) {
        sqlite3_bind_text(st, 1, key, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 2, arch, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 3, nvrtc_version, -1, SQLITE_TRANSIENT);
        db_bind_text(st, 4, template_hash);
        sqlite3_bind_int64(st, 5, (int64_t)size);
        sqlite3_bind_blob(st, 6, data, (int)size, SQLITE_TRANSIENT);
        db_bind_text(st, 7, resources);
        sqlite3_bind_int64(st, 8, db_now());
        char sum[FMQA_HASH_HEX];
        fmqa_hash_hex(data, size, sum);
        sqlite3_bind_text(st, 9, sum, -1, SQLITE_TRANSIENT);
        s = db_begin_write(db, err);
        if (!s)
            s = db_step_done(db, st, "store a cubin", err);
        s = db_end(db, s, err);
    }
    sqlite3_finalize(st);
    db_unlock(db);
    return s;
}
