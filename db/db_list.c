/*
 * db_list.c -- read-side views for people and fastmqa-db (devices, problems,
 * trials with filters, best entries, one trial in full) as db_rows, and the
 * maintenance operations: statistics, pruning, vacuum.
 *
 * Filters are bound parameters of static SQL ("?1 IS NULL OR ..."), never
 * spliced text; the trial sort is a CASE over a bound sort code.
 */
#define _POSIX_C_SOURCE 200809L
#include "db_internal.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Runs static, parameterless SQL into rows under the lock. */
static fmqa_status list_static(db_t *db, const char *sql, db_rows *rows, const char *what,
                               fmqa_err *err)
{
    if (!db || !rows)
        return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT, "%s: NULL argument", what);
    sqlite3_stmt *st = NULL;
    db_lock(db);
    fmqa_status s = db_prepare(db, sql, &st, what, err);
    if (!s)
        s = db_rows_from_stmt(db, st, rows, what, err);
    sqlite3_finalize(st);
    db_unlock(db);
    return s;
}

fmqa_status db_list_devices(db_t *db, db_rows *rows, fmqa_err *err)
{
    return list_static(db,
        "SELECT id, substr(key, 1, 12) AS key, name, arch, cc_major || '.' || cc_minor AS cc,"
        " sm_count AS sms, l2_bytes, smem_per_block_optin AS smem_optin, driver_version AS driver,"
        " nvrtc_major || '.' || nvrtc_minor AS nvrtc,"
        " datetime(first_seen, 'unixepoch') AS first_seen,"
        " (SELECT count(*) FROM trials t WHERE t.device_id = devices.id) AS trials"
        " FROM devices ORDER BY id", rows, "list devices", err);
}

fmqa_status db_list_problems(db_t *db, db_rows *rows, fmqa_err *err)
{
    return list_static(db,
        "SELECT id, op, q_dtype AS q, kv_dtype AS kv, out_dtype AS out, num_q_heads AS h,"
        " num_kv_heads AS hkv, head_dim_qk AS d, head_dim_v AS dv, q_tokens AS tq,"
        " batch_bucket AS batch_b, kv_len_bucket AS kv_len_b, page_size AS page,"
        " window, sink_tokens AS sinks, rope, printf('0x%x', flags) AS flags,"
        " (SELECT count(*) FROM trials t WHERE t.problem_id = problems.id) AS trials"
        " FROM problems ORDER BY id", rows, "list problems", err);
}

fmqa_status db_list_best(db_t *db, db_rows *rows, fmqa_err *err)
{
    return list_static(db,
        "SELECT b.id, d.name AS device, t.name AS template, substr(t.hash, 1, 12) AS hash,"
        " b.problem_id AS problem, p.batch_bucket AS batch_b, p.kv_len_bucket AS kv_len_b,"
        " b.config, round(b.median_us, 3) AS median_us,"
        " round(b.default_median_us, 3) AS default_us,"
        " CASE WHEN b.default_median_us > 0 THEN round(b.default_median_us / b.median_us, 3)"
        " END AS speedup, round(b.spread, 4) AS spread, b.trial_id AS trial,"
        " b.timing_method AS method, b.tuner_version,"
        " CASE WHEN b.origin = 'local' THEN 'local' ELSE 'imported from '"
        "  || coalesce(b.origin_file, '?') || ' at ' || datetime(b.origin_at, 'unixepoch')"
        " END AS source"
        " FROM best b JOIN devices d ON d.id = b.device_id"
        " JOIN templates t ON t.id = b.template_id JOIN problems p ON p.id = b.problem_id"
        " ORDER BY d.id, t.name, b.problem_id", rows, "list best entries", err);
}

fmqa_status db_list_trials(db_t *db, const db_trial_filter *f, db_rows *rows, fmqa_err *err)
{
    if (!db || !f || !rows)
        return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT, "db_list_trials: NULL argument");
    if (f->status >= DB_TRIAL_STATUS_COUNT || f->status < -1)
        return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT, "trial filter: bad status %d",
                            f->status);
    sqlite3_stmt *st = NULL;
    db_lock(db);
    fmqa_status s = db_prepare(db,
        "SELECT t.id, d.name AS device, tp.name AS template, t.problem_id AS problem,"
        " t.config, t.status, round(t.median_us, 3) AS median_us,"
        " round(t.spread, 4) AS spread, t.runs, t.rel_l2_err,"
        " round(t.compile_ms, 1) AS compile_ms, datetime(t.created_at, 'unixepoch') AS created"
        " FROM trials t JOIN devices d ON d.id = t.device_id"
        " JOIN templates tp ON tp.id = t.template_id"
        " WHERE (?1 IS NULL OR CAST(d.id AS TEXT) = ?1 OR d.key LIKE ?1 || '%'"
        "        OR d.name LIKE '%' || ?1 || '%')"
        " AND (?2 IS NULL OR tp.name = ?2) AND (?3 = 0 OR t.problem_id = ?3)"
        " AND (?4 IS NULL OR t.status = ?4)"
        " ORDER BY CASE WHEN ?5 = 1 THEN t.median_us > 0 END DESC,"
        "  CASE WHEN ?5 = 1 THEN t.median_us END ASC,"
        "  CASE WHEN ?5 = 2 THEN t.rel_l2_err END DESC,"
        "  t.created_at DESC, t.id DESC"
        " LIMIT ?6", &st, "list trials", err);
    if (!s) {
        db_bind_text(st, 1, f->device);
        db_bind_text(st, 2, f->template_name);
        sqlite3_bind_int64(st, 3, f->problem_id);
        db_bind_text(st, 4, f->status >= 0 ? db_trial_status_name((db_trial_status)f->status)
                                          : NULL);
        sqlite3_bind_int(st, 5, (int)f->sort);
        sqlite3_bind_int64(st, 6, f->limit > 0 ? f->limit : -1);
        s = db_rows_from_stmt(db, st, rows, "list trials", err);
    }
    sqlite3_finalize(st);
    db_unlock(db);
    return s;
}

fmqa_status db_show_trial(db_t *db, int64_t trial_id, db_rows *rows, fmqa_err *err)
{
    if (!db || !rows)
        return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT, "db_show_trial: NULL argument");
    sqlite3_stmt *st = NULL;
    db_lock(db);
    fmqa_status s = db_prepare(db,
        "SELECT t.id, t.uid, t.status, t.config, t.config_hash, t.compile_ms, t.median_us,"
        " t.p20_us, t.p80_us, t.min_us, t.spread, t.runs, t.rel_l2_err, t.max_abs_err,"
        " t.sm_clock_mhz, t.mem_clock_mhz, t.tuner_version,"
        " datetime(t.created_at, 'unixepoch') AS created, t.message,"
        " d.id AS device_id, d.name AS device, d.key AS device_key, d.arch,"
        " d.cc_major || '.' || d.cc_minor AS cc, d.sm_count, d.l2_bytes, d.driver_version,"
        " d.nvrtc_major || '.' || d.nvrtc_minor AS nvrtc,"
        " tp.id AS template_id, tp.name AS template, tp.hash AS template_hash,"
        " p.id AS problem_id, p.key AS problem,"
        " t.session_id, s.strategy AS session_strategy, s.status AS session_status,"
        " (SELECT count(*) FROM best b WHERE b.trial_id = t.id) AS is_best"
        " FROM trials t JOIN devices d ON d.id = t.device_id"
        " JOIN templates tp ON tp.id = t.template_id JOIN problems p ON p.id = t.problem_id"
        " LEFT JOIN sessions s ON s.id = t.session_id WHERE t.id = ?1", &st, "show a trial",
        err);
    if (!s) {
        sqlite3_bind_int64(st, 1, trial_id);
        s = db_rows_from_stmt(db, st, rows, "show a trial", err);
    }
    if (!s && rows->nrows == 0) {
        db_rows_free(rows);
        s = fmqa_err_set(err, FMQA_ERR_NOT_FOUND, "%s: no trial %lld", db->path,
                         (long long)trial_id);
    }
    sqlite3_finalize(st);
    db_unlock(db);
    return s;
}

/* ------------------------------------------------------------ stats */

/* One integer from static SQL with an optional text parameter. */
static fmqa_status scalar(db_t *db, const char *sql, const char *param, int64_t *out,
                          fmqa_err *err)
{
    sqlite3_stmt *st;
    fmqa_status s = db_prepare(db, sql, &st, "count rows", err);
    if (s)
        return s;
    db_bind_text(st, 1, param);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        *out = sqlite3_column_int64(st, 0);
    else
        s = db_fail(db, rc, err, "count rows");
    sqlite3_finalize(st);
    return s;
}

static int64_t file_size(const char *path, const char *suffix)
{
    char name[4096];
    struct stat sb;
    snprintf(name, sizeof name, "%s%s", path, suffix);
    return stat(name, &sb) == 0 ? (int64_t)sb.st_size : 0;
}

fmqa_status db_stats_get(db_t *db, db_stats *out, fmqa_err *err)
{
    if (!db || !out)
        return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT, "db_stats_get: NULL argument");
    db_stats r = {.schema_version = DB_SCHEMA_VERSION};
    struct { const char *sql; int64_t *dst; } counts[] = {
        {"SELECT count(*) FROM devices", &r.devices},
        {"SELECT count(*) FROM templates", &r.templates},
        {"SELECT count(*) FROM problems", &r.problems},
        {"SELECT count(*) FROM trials", &r.trials},
        {"SELECT count(*) FROM best", &r.best},
        {"SELECT count(*) FROM cubins", &r.cubins},
        {"SELECT count(*) FROM sessions", &r.sessions},
        {"SELECT coalesce(sum(size), 0) FROM cubins", &r.cubin_bytes},
    };
    db_lock(db);
    /* One read transaction: the counts describe one snapshot. */
    fmqa_status s = db_exec(db, "BEGIN", "read statistics", err);
    for (size_t i = 0; !s && i < sizeof counts / sizeof counts[0]; i++)
        s = scalar(db, counts[i].sql, NULL, counts[i].dst, err);
    for (int i = 0; !s && i < DB_TRIAL_STATUS_COUNT; i++)
        s = scalar(db, "SELECT count(*) FROM trials WHERE status = ?1",
                   db_trial_status_name((db_trial_status)i), &r.trials_by_status[i], err);
    if (!sqlite3_get_autocommit(db->conn))
        sqlite3_exec(db->conn, "COMMIT", NULL, NULL, NULL);
    db_unlock(db);
    if (s)
        return s;
    r.file_bytes = file_size(db->path, "") + file_size(db->path, "-wal");
    *out = r;
    return FMQA_OK;
}

/* ------------------------------------------------------------ prune, vacuum */

/* Fills temp.keep_hashes with the template hashes to keep. */
static fmqa_status fill_keep_set(db_t *db, const db_prune_opts *o, fmqa_err *err)
{
    fmqa_status s = db_exec(db,
        "CREATE TEMP TABLE IF NOT EXISTS keep_hashes(hash TEXT PRIMARY KEY);"
        "DELETE FROM temp.keep_hashes", "prepare pruning", err);
    sqlite3_stmt *st = NULL;
    if (!s)
        s = db_prepare(db, "INSERT OR IGNORE INTO temp.keep_hashes(hash) VALUES(?1)", &st,
                       "prepare pruning", err);
    for (size_t i = 0; !s && i < o->n_keep; i++) {
        sqlite3_bind_text(st, 1, o->keep_template_hashes[i], -1, SQLITE_TRANSIENT);
        s = db_step_done(db, st, "prepare pruning", err);
    }
    sqlite3_finalize(st);
    return s;
}

/* Runs static SQL with one integer parameter; *changes gets the rows it
 * changed (counting statements return their count instead). */
static fmqa_status run_counted(db_t *db, const char *sql, int64_t param, bool is_count,
                               int64_t *changes, fmqa_err *err)
{
    sqlite3_stmt *st;
    fmqa_status s = db_prepare(db, sql, &st, "prune", err);
    if (s)
        return s;
    if (sqlite3_bind_parameter_count(st) > 0)
        sqlite3_bind_int64(st, 1, param);
    int rc = sqlite3_step(st);
    if (is_count && rc == SQLITE_ROW)
        *changes += sqlite3_column_int64(st, 0);
    else if (!is_count && rc == SQLITE_DONE)
        *changes += sqlite3_changes(db->conn);
    else
        s = db_fail(db, rc, err, "prune");
    sqlite3_finalize(st);
    return s;
}

#define STALE_TEMPLATES "(SELECT id FROM templates WHERE hash NOT IN (SELECT hash FROM temp.keep_hashes))"

/* Counts the rows the template cascade will delete, then deletes. */
static fmqa_status prune_templates(db_t *db, db_prune_stats *r, fmqa_err *err)
{
    fmqa_status s = run_counted(db,
        "SELECT count(*) FROM trials WHERE template_id IN " STALE_TEMPLATES, 0, true,
        &r->trials, err);
    if (!s)
        s = run_counted(db, "SELECT count(*) FROM best WHERE template_id IN " STALE_TEMPLATES,
                        0, true, &r->best, err);
    if (!s)
        s = run_counted(db,
            "DELETE FROM cubins WHERE template_hash IS NOT NULL"
            " AND template_hash NOT IN (SELECT hash FROM temp.keep_hashes)", 0, false,
            &r->cubins, err);
    if (!s)
        s = run_counted(db, "DELETE FROM templates WHERE id IN " STALE_TEMPLATES, 0, false,
                        &r->templates, err);
    return s;
}

static fmqa_status prune_old(db_t *db, int64_t cutoff, db_prune_stats *r, fmqa_err *err)
{
    fmqa_status s = run_counted(db,
        "DELETE FROM trials WHERE created_at < ?1 AND id NOT IN (SELECT trial_id FROM best)",
        cutoff, false, &r->trials, err);
    if (!s)
        s = run_counted(db, "DELETE FROM cubins WHERE last_used < ?1", cutoff, false,
                        &r->cubins, err);
    return s;
}

fmqa_status db_prune(db_t *db, const db_prune_opts *o, db_prune_stats *stats, fmqa_err *err)
{
    if (!db || !o || (o->n_keep && !o->keep_template_hashes) || o->older_than_days < 0)
        return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT, "db_prune: bad options");
    db_prune_stats r = {0};
    db_lock(db);
    fmqa_status s = db_begin_write(db, err);
    if (!s && o->keep_template_hashes) {
        s = fill_keep_set(db, o, err);
        if (!s)
            s = prune_templates(db, &r, err);
    }
    if (!s && o->older_than_days > 0)
        s = prune_old(db, db_now() - (int64_t)o->older_than_days * 86400, &r, err);
    s = db_end(db, s, err);
    db_unlock(db);
    if (!s && stats)
        *stats = r;
    return s;
}

fmqa_status db_vacuum(db_t *db, fmqa_err *err)
{
    if (!db)
        return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT, "db_vacuum: NULL db");
    db_lock(db);
    fmqa_status s = db_require_write(db, "vacuum", err);
    if (!s)
        s = db_exec(db, "VACUUM", "vacuum", err);
    if (!s)
        s = db_exec(db, "PRAGMA wal_checkpoint(TRUNCATE)", "checkpoint", err);
    db_unlock(db);
    return s;
}

fmqa_status db_list_cubins(db_t *db, const char *template_name, int64_t limit, db_rows *rows,
                           fmqa_err *err)
{
    if (!db || !rows)
        return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT, "db_list_cubins: NULL argument");
    sqlite3_stmt *st = NULL;
    db_lock(db);
    /* resources that are not JSON (a foreign import) read as unknown. */
    fmqa_status s = db_prepare(db,
        "WITH c AS (SELECT *, CASE WHEN json_valid(resources) THEN resources END AS j"
        "           FROM cubins)"
        " SELECT c.id, json_extract(c.j, '$.template') AS template,"
        " json_extract(c.j, '$.config') AS config, c.arch,"
        " (SELECT max(json_extract(k.value, '$.registers'))"
        "  FROM json_each(c.j, '$.kernels') k) AS registers,"
        " (SELECT sum(json_extract(k.value, '$.spill_stores') +"
        "             json_extract(k.value, '$.spill_loads'))"
        "  FROM json_each(c.j, '$.kernels') k) AS spill_bytes,"
        " (SELECT max(json_extract(k.value, '$.smem_bytes'))"
        "  FROM json_each(c.j, '$.kernels') k) AS static_smem,"
        " round(json_extract(c.j, '$.compile_ms'), 1) AS compile_ms, c.size AS cubin_bytes,"
        " datetime(c.created_at, 'unixepoch') AS created"
        " FROM c WHERE ?1 IS NULL OR json_extract(c.j, '$.template') = ?1"
        " ORDER BY c.created_at DESC, c.id DESC LIMIT ?2", &st, "list cubins", err);
    if (!s) {
        db_bind_text(st, 1, template_name);
        sqlite3_bind_int64(st, 2, limit > 0 ? limit : -1);
        s = db_rows_from_stmt(db, st, rows, "list cubins", err);
    }
    sqlite3_finalize(st);
    db_unlock(db);
    return s;
}

fmqa_status db_list_plot_trials(db_t *db, int64_t problem_id, db_rows *rows, fmqa_err *err)
{
    if (!db || !rows)
        return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT, "db_list_plot_trials: NULL argument");
    sqlite3_stmt *st = NULL;
    db_lock(db);
    /* The default's config: the ok trial whose median the best entry kept as
     * the default's time (the tuner stores both from the same measurement). */
    fmqa_status s = db_prepare(db,
        "WITH k AS (SELECT t.*, tp.name AS template, d.name AS device, p.key AS problem,"
        "   (SELECT min(o.median_us) FROM trials o WHERE o.device_id = t.device_id"
        "    AND o.template_id = t.template_id AND o.problem_id = t.problem_id"
        "    AND o.config = t.config AND o.status = 'ok' AND o.median_us > 0) AS config_best,"
        "   (SELECT o.config FROM best b JOIN trials o ON o.device_id = b.device_id"
        "    AND o.template_id = b.template_id AND o.problem_id = b.problem_id"
        "    AND o.status = 'ok' AND o.median_us = b.default_median_us"
        "    WHERE b.device_id = t.device_id AND b.template_id = t.template_id"
        "    AND b.problem_id = t.problem_id AND b.default_median_us > 0 LIMIT 1) AS dflt,"
        "   EXISTS (SELECT 1 FROM best b WHERE b.trial_id = t.id) AS is_best"
        "   FROM trials t JOIN templates tp ON tp.id = t.template_id"
        "   JOIN devices d ON d.id = t.device_id JOIN problems p ON p.id = t.problem_id"
        "   WHERE ?1 = 0 OR t.problem_id = ?1)"
        " SELECT problem_id, problem, device_id, device, template, id AS trial, config, status,"
        " median_us, p20_us, p80_us, is_best, coalesce(config = dflt, 0) AS is_default"
        " FROM k ORDER BY problem_id, device_id, template, config_best IS NULL, config_best,"
        " config, id", &st, "list trials to plot", err);
    if (!s) {
        sqlite3_bind_int64(st, 1, problem_id);
        s = db_rows_from_stmt(db, st, rows, "list trials to plot", err);
    }
    sqlite3_finalize(st);
    db_unlock(db);
    return s;
}
