/*
 * db_trial.c -- trials, the best entry per (device, template, problem), the
 * exact and nearest-bucket lookups, tuning sessions and the sets of configs a
 * session already tried, and the cubin cache.
 *
 * Trials and sessions carry a uid (a hash of process, time and a counter) so
 * that export/import and merge recognise a row they already hold; ids are
 * local to one file.  A best entry always points to an ok trial of the same
 * (device, template, problem) and holds that trial's config and median, copied
 * so the runtime's lookup is one indexed join.
 */
#define _POSIX_C_SOURCE 200809L
#include "db_internal.h"

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
        " created_at) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14,"
        " ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22)", &st, "store a trial", err);
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

/* Reads the trial's key, status and median (a best entry needs an ok, timed
 * trial). */
static fmqa_status best_candidate(db_t *db, int64_t trial_id, fmqa_err *err)
{
    sqlite3_stmt *st;
    fmqa_status s = db_prepare(db, "SELECT status, median_us FROM trials WHERE id = ?1", &st,
                               "read a trial", err);
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
    sqlite3_finalize(st);
    return s;
}

fmqa_status db_best_update(db_t *db, int64_t trial_id, double default_median_us,
                           bool *replaced, fmqa_err *err)
{
    if (!db)
        return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT, "db_best_update: NULL db");
    sqlite3_stmt *st = NULL;
    db_lock(db);
    fmqa_status s = db_begin_write(db, err);
    if (!s)
        s = best_candidate(db, trial_id, err);
    /* The WHERE true resolves the parse ambiguity of INSERT ... SELECT ... ON. */
    if (!s)
        s = db_prepare(db,
            "INSERT INTO best(device_id, template_id, problem_id, trial_id, config, median_us,"
            " default_median_us, updated_at)"
            " SELECT device_id, template_id, problem_id, id, config, median_us, ?2, ?3"
            " FROM trials WHERE id = ?1 AND true"
            " ON CONFLICT(device_id, template_id, problem_id) DO UPDATE SET"
            "  trial_id = excluded.trial_id, config = excluded.config,"
            "  median_us = excluded.median_us, updated_at = excluded.updated_at,"
            "  default_median_us = CASE WHEN excluded.default_median_us > 0"
            "   THEN excluded.default_median_us ELSE best.default_median_us END"
            " WHERE excluded.median_us < best.median_us", &st, "update the best entry", err);
    if (!s) {
        sqlite3_bind_int64(st, 1, trial_id);
        sqlite3_bind_double(st, 2, default_median_us > 0 ? default_median_us : 0.0);
        sqlite3_bind_int64(st, 3, db_now());
        s = db_step_done(db, st, "update the best entry", err);
    }
    if (!s && replaced)
        *replaced = sqlite3_changes(db->conn) > 0;
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
    e->distance = abs(ilog2(e->batch_bucket) - ilog2(db_bucket(p->batch))) +
                  abs(ilog2(e->kv_len_bucket) - ilog2(db_bucket(p->kv_len)));
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
        " p.batch_bucket, p.kv_len_bucket"
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
    s->strategy = s->problem_set = NULL;
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
    fmqa_status r = db_prepare(db,
        "INSERT INTO sessions(uid, device_id, status, strategy, budget, seed, problem_set,"
        " started_at) VALUES(?1, ?2, 'running', ?3, ?4, ?5, ?6, ?7)", &st,
        "create a session", err);
    if (!r) {
        sqlite3_bind_text(st, 1, uid, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(st, 2, s->device_id);
        db_bind_text(st, 3, s->strategy);
        sqlite3_bind_int64(st, 4, s->budget);
        sqlite3_bind_int64(st, 5, (int64_t)s->seed);
        db_bind_text(st, 6, s->problem_set);
        sqlite3_bind_int64(st, 7, now);
        r = db_begin_write(db, err);
        if (!r)
            r = db_step_done(db, st, "create a session (does its device exist?)", err);
        if (!r) {
            s->id = sqlite3_last_insert_rowid(db->conn);
            s->status = DB_SESSION_RUNNING;
            s->started_at = now;
            s->finished_at = 0;
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

fmqa_status db_session_find_resumable(db_t *db, int64_t device_id, db_session *out,
                                      fmqa_err *err)
{
    if (!db || !out)
        return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT, "db_session_find_resumable: NULL");
    sqlite3_stmt *st = NULL;
    db_lock(db);
    fmqa_status s = db_prepare(db,
        "SELECT id, device_id, status, strategy, budget, seed, problem_set, started_at,"
        " finished_at FROM sessions WHERE device_id = ?1 AND status <> 'done'"
        " ORDER BY started_at DESC, id DESC LIMIT 1", &st, "find a session", err);
    if (!s) {
        sqlite3_bind_int64(st, 1, device_id);
        int rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            db_session r = {
                .id = sqlite3_column_int64(st, 0), .device_id = sqlite3_column_int64(st, 1),
                .status = parse_session_status((const char *)sqlite3_column_text(st, 2)),
                .strategy = db_column_strdup(st, 3), .budget = sqlite3_column_int64(st, 4),
                .seed = (uint64_t)sqlite3_column_int64(st, 5),
                .problem_set = db_column_strdup(st, 6),
                .started_at = sqlite3_column_int64(st, 7),
                .finished_at = sqlite3_column_int64(st, 8)};
            *out = r;
        } else if (rc == SQLITE_DONE) {
            s = fmqa_err_set(err, FMQA_ERR_NOT_FOUND, "%s: no unfinished session for device %lld",
                             db->path, (long long)device_id);
        } else {
            s = db_fail(db, rc, err, "find a session");
        }
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
