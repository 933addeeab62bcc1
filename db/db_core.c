/*
 * db_core.c -- opening the tuning database (checks, WAL, migrations), SQLite
 * error translation, statement and transaction helpers, the keys of devices,
 * problems and configs, and the upserts of devices, templates and problems.
 *
 * A FastMQA file is recognised by PRAGMA application_id = DB_APP_ID.  A file
 * without it is accepted only if it is empty (no tables, user_version 0), and
 * then only read-write, which initialises it.  Migrations run in one
 * BEGIN IMMEDIATE transaction that re-reads user_version inside it, so two
 * processes opening a fresh file at once migrate it once.  A file whose
 * user_version is newer than DB_SCHEMA_VERSION is refused before anything is
 * written to it.
 */
#define _POSIX_C_SOURCE 200809L
#define _XOPEN_SOURCE 700
#include "db_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* "FMQA" as a big-endian integer; decimal so the PRAGMA text can hold it. */
#define DB_APP_ID 1179472193
#define DB_STR2(x) #x
#define DB_STR(x) DB_STR2(x)

/* Migration i brings user_version from i to i + 1.  Append only: a released
 * step is never edited. */
static const char *const MIGRATIONS[DB_SCHEMA_VERSION] = {
    /* 0 -> 1: the initial schema. */
    "CREATE TABLE devices("
    "  id INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE, name TEXT NOT NULL,"
    "  arch TEXT NOT NULL, cc_major INTEGER NOT NULL, cc_minor INTEGER NOT NULL,"
    "  sm_count INTEGER NOT NULL, l2_bytes INTEGER NOT NULL,"
    "  smem_per_block_optin INTEGER NOT NULL, driver_version INTEGER NOT NULL,"
    "  nvrtc_major INTEGER NOT NULL, nvrtc_minor INTEGER NOT NULL,"
    "  first_seen INTEGER NOT NULL);"
    "CREATE TABLE templates("
    "  id INTEGER PRIMARY KEY, name TEXT NOT NULL, hash TEXT NOT NULL,"
    "  first_seen INTEGER NOT NULL, UNIQUE(name, hash));"
    "CREATE TABLE problems("
    "  id INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE, class_key TEXT NOT NULL,"
    "  op TEXT NOT NULL, q_dtype TEXT NOT NULL, kv_dtype TEXT NOT NULL,"
    "  out_dtype TEXT NOT NULL, num_q_heads INTEGER NOT NULL,"
    "  num_kv_heads INTEGER NOT NULL, head_dim_qk INTEGER NOT NULL,"
    "  head_dim_v INTEGER NOT NULL, q_tokens INTEGER NOT NULL,"
    "  page_size INTEGER NOT NULL, window INTEGER NOT NULL,"
    "  sink_tokens INTEGER NOT NULL, rope INTEGER NOT NULL, flags INTEGER NOT NULL,"
    "  batch_bucket INTEGER NOT NULL, kv_len_bucket INTEGER NOT NULL);"
    "CREATE INDEX problems_class ON problems(class_key);"
    "CREATE TABLE sessions("
    "  id INTEGER PRIMARY KEY, uid TEXT NOT NULL UNIQUE,"
    "  device_id INTEGER REFERENCES devices(id) ON DELETE CASCADE,"
    "  status TEXT NOT NULL CHECK(status IN ('running','done','interrupted')),"
    "  strategy TEXT, budget INTEGER NOT NULL DEFAULT 0, seed INTEGER NOT NULL DEFAULT 0,"
    "  problem_set TEXT, started_at INTEGER NOT NULL, finished_at INTEGER NOT NULL DEFAULT 0);"
    "CREATE TABLE trials("
    "  id INTEGER PRIMARY KEY, uid TEXT NOT NULL UNIQUE,"
    "  session_id INTEGER REFERENCES sessions(id) ON DELETE SET NULL,"
    "  device_id INTEGER NOT NULL REFERENCES devices(id) ON DELETE CASCADE,"
    "  template_id INTEGER NOT NULL REFERENCES templates(id) ON DELETE CASCADE,"
    "  problem_id INTEGER NOT NULL REFERENCES problems(id) ON DELETE CASCADE,"
    "  config TEXT NOT NULL, config_hash TEXT NOT NULL,"
    "  status TEXT NOT NULL CHECK(status IN ('ok','compile_error','launch_error',"
    "    'timeout','wrong_result','pruned')),"
    "  compile_ms REAL, median_us REAL, p20_us REAL, p80_us REAL, min_us REAL,"
    "  spread REAL, runs INTEGER, rel_l2_err REAL, max_abs_err REAL,"
    "  sm_clock_mhz INTEGER, mem_clock_mhz INTEGER, tuner_version TEXT, message TEXT,"
    "  created_at INTEGER NOT NULL);"
    "CREATE INDEX trials_variant ON trials(device_id, template_id, problem_id, config_hash);"
    "CREATE INDEX trials_session ON trials(session_id);"
    "CREATE TABLE best("
    "  id INTEGER PRIMARY KEY,"
    "  device_id INTEGER NOT NULL REFERENCES devices(id) ON DELETE CASCADE,"
    "  template_id INTEGER NOT NULL REFERENCES templates(id) ON DELETE CASCADE,"
    "  problem_id INTEGER NOT NULL REFERENCES problems(id) ON DELETE CASCADE,"
    "  trial_id INTEGER NOT NULL REFERENCES trials(id) ON DELETE CASCADE,"
    "  config TEXT NOT NULL, median_us REAL NOT NULL,"
    "  default_median_us REAL NOT NULL DEFAULT 0, updated_at INTEGER NOT NULL,"
    "  UNIQUE(device_id, template_id, problem_id));"
    "CREATE INDEX best_trial ON best(trial_id);"
    "CREATE TABLE cubins("
    "  id INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE, arch TEXT NOT NULL,"
    "  nvrtc_version TEXT NOT NULL, template_hash TEXT, size INTEGER NOT NULL,"
    "  data BLOB NOT NULL, resources TEXT, created_at INTEGER NOT NULL,"
    "  last_used INTEGER NOT NULL);"
    "PRAGMA user_version = 1;",
    /* 1 -> 2: trustworthy results (docs/database.md).  Trials record their
     * timing method; best entries their spread, tuner version, timing method
     * and origin (local, or imported from a file at a time); sessions their
     * owner.  Entries from schema 1 get timing method 0: stale. */
    "ALTER TABLE trials ADD COLUMN timing_method INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE best ADD COLUMN spread REAL NOT NULL DEFAULT 0;"
    "ALTER TABLE best ADD COLUMN tuner_version TEXT;"
    "ALTER TABLE best ADD COLUMN timing_method INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE best ADD COLUMN origin TEXT NOT NULL DEFAULT 'local'"
    "  CHECK(origin IN ('local','import'));"
    "ALTER TABLE best ADD COLUMN origin_file TEXT;"
    "ALTER TABLE best ADD COLUMN origin_at INTEGER NOT NULL DEFAULT 0;"
    "UPDATE best SET spread = coalesce((SELECT t.spread FROM trials t WHERE t.id = best.trial_id), 0),"
    "  tuner_version = (SELECT t.tuner_version FROM trials t WHERE t.id = best.trial_id),"
    "  origin_at = updated_at;"
    "ALTER TABLE sessions ADD COLUMN host TEXT;"
    "ALTER TABLE sessions ADD COLUMN pid INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE sessions ADD COLUMN heartbeat_at INTEGER NOT NULL DEFAULT 0;"
    "PRAGMA user_version = 2;",
    /* 2 -> 3: a checksum per cubin (fmqa_hash_hex of data), verified on load;
     * rows from versions 1 and 2 keep NULL and are verified by size only. */
    "ALTER TABLE cubins ADD COLUMN checksum TEXT; PRAGMA user_version = 3;",
};

void db_lock(db_t *db) { pthread_mutex_lock(&db->lock); }
void db_unlock(db_t *db) { pthread_mutex_unlock(&db->lock); }

int64_t db_now(void) { return (int64_t)time(NULL); }

const char *db_path(const db_t *db) { return db ? db->path : NULL; }

fmqa_status db_fail(db_t *db, int rc, fmqa_err *err, const char *what)
{
    const char *path = db ? db->path : "?";
    const char *msg = db && db->conn ? sqlite3_errmsg(db->conn) : sqlite3_errstr(rc);
    switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return fmqa_err_set(err, FMQA_ERR_DATABASE,
                            "%s: database is locked by another connection "
                            "(gave up after %d ms): %s",
                            path, db ? db->busy_timeout_ms : 0, what);
    case SQLITE_READONLY:
        return fmqa_err_set(err, FMQA_ERR_DATABASE, "%s: database is read-only: cannot %s",
                            path, what);
    case SQLITE_NOTADB:
    case SQLITE_CORRUPT:
        return fmqa_err_set(err, FMQA_ERR_DATABASE,
                            "%s: not a FastMQA database or the file is corrupted (%s: %s)",
                            path, what, msg);
    case SQLITE_FULL:
        return fmqa_err_set(err, FMQA_ERR_IO, "%s: disk full: %s", path, what);
    case SQLITE_CONSTRAINT:
        return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT, "%s: %s: %s", path, what, msg);
    default:
        return fmqa_err_set(err, FMQA_ERR_DATABASE, "%s: %s: %s", path, what, msg);
    }
}

fmqa_status db_prepare(db_t *db, const char *sql, sqlite3_stmt **st, const char *what,
                       fmqa_err *err)
{
    int rc = sqlite3_prepare_v2(db->conn, sql, -1, st, NULL);
    if (rc != SQLITE_OK) {
        sqlite3_finalize(*st);
        *st = NULL;
        return db_fail(db, rc, err, what);
    }
    return FMQA_OK;
}

fmqa_status db_exec(db_t *db, const char *sql, const char *what, fmqa_err *err)
{
    int rc = sqlite3_exec(db->conn, sql, NULL, NULL, NULL);
    return rc == SQLITE_OK ? FMQA_OK : db_fail(db, rc, err, what);
}

fmqa_status db_step_done(db_t *db, sqlite3_stmt *st, const char *what, fmqa_err *err)
{
    int rc = sqlite3_step(st);
    fmqa_status s = rc == SQLITE_DONE ? FMQA_OK : db_fail(db, rc, err, what);
    sqlite3_reset(st);
    return s;
}

fmqa_status db_begin_write(db_t *db, fmqa_err *err)
{
    fmqa_status st = db_require_write(db, "write", err);
    return st ? st : db_exec(db, "BEGIN IMMEDIATE", "begin a write transaction", err);
}

fmqa_status db_end(db_t *db, fmqa_status st, fmqa_err *err)
{
    if (st == FMQA_OK)
        st = db_exec(db, "COMMIT", "commit", err);
    if (st != FMQA_OK && !sqlite3_get_autocommit(db->conn))
        sqlite3_exec(db->conn, "ROLLBACK", NULL, NULL, NULL); /* keeps the first error */
    return st;
}

fmqa_status db_require_write(db_t *db, const char *what, fmqa_err *err)
{
    if (db->mode == DB_READ_WRITE)
        return FMQA_OK;
    return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT,
                        "%s: opened read-only: cannot %s", db->path, what);
}

int db_bind_text(sqlite3_stmt *st, int idx, const char *s)
{
    return s ? sqlite3_bind_text(st, idx, s, -1, SQLITE_TRANSIENT) : sqlite3_bind_null(st, idx);
}

char *db_column_strdup(sqlite3_stmt *st, int col)
{
    const unsigned char *s = sqlite3_column_text(st, col);
    return s ? fmqa_strdup((const char *)s) : NULL;
}

/* ------------------------------------------------------------ open */

/* mkdir -p of the directory part of path. */
static fmqa_status make_parent_dirs(const char *path, fmqa_err *err)
{
    char *dir = fmqa_strdup(path);
    if (!dir)
        return fmqa_err_set(err, FMQA_ERR_OUT_OF_MEMORY, "out of memory");
    fmqa_status st = FMQA_OK;
    for (char *p = dir + 1; *p && st == FMQA_OK; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(dir, 0755) != 0 && errno != EEXIST)
            st = fmqa_err_set(err, FMQA_ERR_IO, "%s: cannot create directory %s: %s", path,
                              dir, strerror(errno));
        *p = '/';
    }
    free(dir);
    return st;
}

/* A file or directory whose permission bits deny writing to everyone is
 * read-only even for root (who passes every access() test): that is what its
 * owner asked for, and it is how a read-only image or mount looks to a test
 * running as root. */
static bool writable(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 && (sb.st_mode & 0222) != 0 && access(path, W_OK) == 0;
}

/* The directory part of path ("." for a bare name), in buf. */
static const char *dir_of(const char *path, char *buf, size_t cap)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        return ".";
    size_t n = slash == path ? 1 : (size_t)(slash - path);
    if (n >= cap)
        n = cap - 1;
    memcpy(buf, path, n);
    buf[n] = '\0';
    return buf;
}

bool db_path_writable(const char *path)
{
    char dir[4096];
    struct stat sb;
    if (stat(path, &sb) == 0 && !writable(path))
        return false;
    /* A file yet to be created needs its nearest existing ancestor writable. */
    const char *d = dir_of(path, dir, sizeof dir);
    while (stat(d, &sb) != 0 && strcmp(d, "/") != 0 && strcmp(d, ".") != 0)
        d = dir_of(d, dir, sizeof dir);
    return writable(d);
}

/* Checks the file itself before SQLite sees it, for clearer messages.  Writing
 * needs the directory too (SQLite keeps its -wal and -shm files beside the
 * database). */
static fmqa_status check_file(const char *path, bool write, fmqa_err *err)
{
    struct stat sb;
    if (stat(path, &sb) != 0) {
        if (errno == ENOENT && write && db_path_writable(path))
            return make_parent_dirs(path, err);
        if (errno == ENOENT && write)
            return fmqa_err_set(err, FMQA_ERR_IO,
                                "%s: cannot create the database: its directory is read-only",
                                path);
        return fmqa_err_set(err, errno == ENOENT ? FMQA_ERR_NOT_FOUND : FMQA_ERR_IO,
                            "%s: cannot open database: %s", path, strerror(errno));
    }
    if (!S_ISREG(sb.st_mode))
        return fmqa_err_set(err, FMQA_ERR_IO, "%s: not a regular file", path);
    if (write && !writable(path))
        return fmqa_err_set(err, FMQA_ERR_IO,
                            "%s: the file is read-only; open it read-only or make it writable",
                            path);
    if (write && !db_path_writable(path))
        return fmqa_err_set(err, FMQA_ERR_IO,
                            "%s: the directory is read-only; open the database read-only "
                            "or make the directory writable",
                            path);
    return FMQA_OK;
}

/* The URI SQLite opens: "file:PATH?mode=ro" for reading, with immutable=1 when
 * the directory is read-only (no -shm can be made there, and nobody can write
 * the file in WAL mode either), else "file:PATH".  PATH is percent-encoded. */
static char *open_uri(const char *path, bool write)
{
    char dir[4096];
    size_t n = strlen(path);
    char *uri = malloc(3 * n + 64);
    if (!uri)
        return NULL;
    char *o = uri + sprintf(uri, "file:");
    for (const unsigned char *c = (const unsigned char *)path; *c; c++) {
        if ((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
            strchr("/._-~", *c))
            *o++ = (char)*c;
        else
            o += sprintf(o, "%%%02X", *c);
    }
    *o = '\0';
    if (!write)
        strcat(uri, writable(dir_of(path, dir, sizeof dir)) ? "?mode=ro"
                                                             : "?mode=ro&immutable=1");
    return uri;
}

/* Runs a one-integer PRAGMA (static text). */
static fmqa_status pragma_int(db_t *db, const char *sql, int64_t *value, fmqa_err *err)
{
    sqlite3_stmt *st;
    fmqa_status s = db_prepare(db, sql, &st, "read the file header", err);
    if (s)
        return s;
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        *value = sqlite3_column_int64(st, 0);
    else
        s = db_fail(db, rc, err, "read the file header");
    sqlite3_finalize(st);
    return s;
}

/* Reads the schema version, refusing files that are not ours or are newer. */
static fmqa_status read_version(db_t *db, int *version, fmqa_err *err)
{
    int64_t app = 0, ver = 0, tables = 0;
    fmqa_status s = pragma_int(db, "PRAGMA application_id", &app, err);
    if (!s)
        s = pragma_int(db, "PRAGMA user_version", &ver, err);
    if (!s)
        s = pragma_int(db, "SELECT count(*) FROM sqlite_master", &tables, err);
    if (s)
        return s;
    if (app != DB_APP_ID && (app != 0 || ver != 0 || tables != 0))
        return fmqa_err_set(err, FMQA_ERR_DATABASE,
                            "%s: not a FastMQA database (application_id 0x%llx, "
                            "user_version %lld, %lld schema objects)",
                            db->path, (long long)app, (long long)ver, (long long)tables);
    if (ver > DB_SCHEMA_VERSION)
        return fmqa_err_set(err, FMQA_ERR_DATABASE,
                            "%s: schema version %lld is newer than this library knows (%d); "
                            "use a newer FastMQA (the file was not modified)",
                            db->path, (long long)ver, DB_SCHEMA_VERSION);
    *version = (int)ver;
    return FMQA_OK;
}

/* Runs one checking PRAGMA (static text) whose first row is "ok" when all is
 * well; names the first problem otherwise. */
static fmqa_status check_pragma(db_t *db, const char *sql, const char *name, fmqa_err *err)
{
    sqlite3_stmt *st;
    fmqa_status s = db_prepare(db, sql, &st, "check the file", err);
    if (s)
        return s;
    int rc = sqlite3_step(st);
    const char *first = rc == SQLITE_ROW ? (const char *)sqlite3_column_text(st, 0) : NULL;
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        s = db_fail(db, rc, err, "check the file");
    else if (first && strcmp(first, "ok") != 0)
        s = fmqa_err_set(err, FMQA_ERR_DATABASE,
                         "%s: not a FastMQA database or the file is corrupted (%s: %s)",
                         db->path, name, first);
    else if (rc == SQLITE_ROW && !first)  /* foreign_key_check: a row is a violation */
        s = fmqa_err_set(err, FMQA_ERR_DATABASE, "%s: %s: row %lld of %s points nowhere",
                         db->path, name, (long long)sqlite3_column_int64(st, 1),
                         (const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    return s;
}

fmqa_status db_check(db_t *db, bool full, fmqa_err *err)
{
    db_lock(db);
    fmqa_status s = full ? check_pragma(db, "PRAGMA integrity_check(1)", "integrity_check", err)
                         : check_pragma(db, "PRAGMA quick_check(1)", "quick_check", err);
    if (!s && full)
        s = check_pragma(db, "PRAGMA foreign_key_check", "foreign_key_check", err);
    db_unlock(db);
    return s;
}

static fmqa_status migrate(db_t *db, fmqa_err *err)
{
    fmqa_status s = db_begin_write(db, err);
    int version = 0;
    if (!s)
        s = read_version(db, &version, err); /* another process may have migrated */
    for (int v = version; !s && v < DB_SCHEMA_VERSION; v++)
        s = db_exec(db, MIGRATIONS[v], "migrate the schema", err);
    if (!s && version < DB_SCHEMA_VERSION)
        s = db_exec(db, "PRAGMA application_id = " DB_STR(DB_APP_ID), "mark the file", err);
    return db_end(db, s, err);
}

/* Everything after sqlite3_open_v2: pragmas, checks, migrations. */
static fmqa_status configure(db_t *db, bool check, fmqa_err *err)
{
    sqlite3_extended_result_codes(db->conn, 1);
    sqlite3_busy_timeout(db->conn, db->busy_timeout_ms);
    int version = 0;
    fmqa_status s = read_version(db, &version, err);
    if (s)
        return s;
    if (db->mode == DB_READ_ONLY) {
        if (version < DB_SCHEMA_VERSION)
            return fmqa_err_set(err, FMQA_ERR_DATABASE,
                                "%s: schema version %d is older than this library's (%d) "
                                "or the file is empty; open it read-write once to upgrade "
                                "(e.g. fastmqa-db import /dev/null --db FILE)",
                                db->path, version, DB_SCHEMA_VERSION);
        return db_exec(db, "PRAGMA query_only = ON", "configure", err);
    }
    if (sqlite3_db_readonly(db->conn, "main") == 1)
        return fmqa_err_set(err, FMQA_ERR_IO,
                            "%s: the file is read-only; open it read-only or make it writable",
                            db->path);
    if (!s && check)
        s = db_check(db, false, err);
    if (!s)
        s = db_exec(db, "PRAGMA journal_mode = WAL", "switch to WAL mode", err);
    if (!s)
        s = db_exec(db, "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON", "configure",
                    err);
    if (!s && version < DB_SCHEMA_VERSION)
        s = migrate(db, err);
    return s;
}

fmqa_status db_open(const char *path, db_mode mode, int busy_timeout_ms, db_t **out,
                    fmqa_err *err)
{
    if (!out)
        return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT, "db_open: out is NULL");
    *out = NULL;
    if (!path || !*path || mode < DB_READ_ONLY || mode > DB_READ_WRITE_UNCHECKED)
        return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT, "db_open: %s",
                            !path || !*path ? "empty path" : "unknown mode");
    bool write = mode != DB_READ_ONLY, check = mode == DB_READ_WRITE;
    fmqa_status s = check_file(path, write, err);
    if (s)
        return s;
    db_t *db = calloc(1, sizeof *db);
    if (!db || !(db->path = fmqa_strdup(path))) {
        free(db);
        return fmqa_err_set(err, FMQA_ERR_OUT_OF_MEMORY, "out of memory");
    }
    db->mode = write ? DB_READ_WRITE : DB_READ_ONLY;
    db->busy_timeout_ms = busy_timeout_ms > 0 ? busy_timeout_ms : DB_BUSY_TIMEOUT_MS;
    pthread_mutexattr_t attr;
    pthread_mutexattr_init(&attr);
    pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_RECURSIVE);
    pthread_mutex_init(&db->lock, &attr);
    pthread_mutexattr_destroy(&attr);
    int flags = write ? SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE : SQLITE_OPEN_READONLY;
    char *uri = open_uri(path, write);
    int rc = uri ? sqlite3_open_v2(uri, &db->conn, flags | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_URI,
                                   NULL)
                 : SQLITE_NOMEM;
    free(uri);
    s = rc == SQLITE_OK ? configure(db, check, err) : db_fail(db, rc, err, "open");
    if (s) {
        db_close(db);
        return s;
    }
    *out = db;
    return FMQA_OK;
}

void db_close(db_t *db)
{
    if (!db)
        return;
    sqlite3_close_v2(db->conn);
    pthread_mutex_destroy(&db->lock);
    free(db->path);
    free(db);
}

/* ------------------------------------------------------------ keys */

int32_t db_bucket(int32_t value)
{
    int32_t b = 1;
    while (b < value && b <= INT32_MAX / 2)
        b *= 2;
    return b;
}

void db_device_key(const fmqa_device_info *info, char out[FMQA_HASH_HEX])
{
    char text[512];
    snprintf(text, sizeof text, "%s|cc%d.%d|sm%d|l2=%lld|drv%d|nvrtc%d.%d", info->name,
             info->cc_major, info->cc_minor, info->sm_count, (long long)info->l2_bytes,
             info->driver_version, info->nvrtc_major, info->nvrtc_minor);
    fmqa_hash_hex(text, strlen(text), out);
}

static const char *name_or_unknown(const char *s) { return s ? s : "?"; }

void db_problem_class_key(const fmqa_problem *p, char out[DB_KEY_CAP])
{
    snprintf(out, DB_KEY_CAP,
             "%s q=%s kv=%s out=%s h=%d hkv=%d d=%d/%d tq=%d page=%d win=%d sink=%d "
             "rope=%d flags=0x%x",
             name_or_unknown(fmqa_op_name(p->op)), name_or_unknown(fmqa_dtype_name(p->q_dtype)),
             name_or_unknown(fmqa_dtype_name(p->kv_dtype)),
             name_or_unknown(fmqa_dtype_name(p->out_dtype)), p->num_q_heads, p->num_kv_heads,
             p->head_dim_qk, p->head_dim_v, p->q_tokens, p->page_size, p->window,
             p->sink_tokens, (int)p->rope, p->flags);
    /* Fields added after 0.1.0 join the key only when set: keys of problems
     * without them stay what they were (no migration), and problems that
     * differ in them never share a tuned entry. */
    size_t n = strlen(out);
    if (p->kv_scale_granularity != FMQA_KV_SCALE_TOKEN_HEAD && n < DB_KEY_CAP)
        n += (size_t)snprintf(out + n, DB_KEY_CAP - n, " kvscale=%s",
                              name_or_unknown(fmqa_kv_scale_name(p->kv_scale_granularity)));
    if (p->logit_softcap != 0.0f && n < DB_KEY_CAP)
        n += (size_t)snprintf(out + n, DB_KEY_CAP - n, " softcap=%a", (double)p->logit_softcap);
    if (p->draft_slots != 0 && n < DB_KEY_CAP)
        n += (size_t)snprintf(out + n, DB_KEY_CAP - n, " drafts=%d", p->draft_slots);
    if (p->rope_dim != 0 && n < DB_KEY_CAP)
        snprintf(out + n, DB_KEY_CAP - n, " rope_dim=%d", p->rope_dim);
}

double db_verify_tol(fmqa_op op, fmqa_dtype q_dtype, fmqa_dtype out_dtype)
{
    fmqa_dtype checked = op == FMQA_OP_APPEND ? q_dtype : out_dtype;
    return checked == FMQA_DTYPE_BF16 ? 1e-2 : 1e-3;
}

void db_config_hash(const char *config, char out[FMQA_HASH_HEX])
{
    fmqa_hash_hex(config, strlen(config), out);
}

/* ------------------------------------------------------------ upserts */

/* Runs an INSERT ... ON CONFLICT DO NOTHING and the SELECT of the row's id, both
 * bound by the caller, in one write transaction.  Finalizes both. */
static fmqa_status insert_then_id(db_t *db, sqlite3_stmt *ins, sqlite3_stmt *sel,
                                  int64_t *id, const char *what, fmqa_err *err)
{
    fmqa_status s = db_begin_write(db, err);
    if (!s)
        s = db_step_done(db, ins, what, err);
    if (!s) {
        int rc = sqlite3_step(sel);
        if (rc == SQLITE_ROW)
            *id = sqlite3_column_int64(sel, 0);
        else
            s = db_fail(db, rc == SQLITE_DONE ? SQLITE_INTERNAL : rc, err, what);
    }
    s = db_end(db, s, err);
    sqlite3_finalize(ins);
    sqlite3_finalize(sel);
    return s;
}

fmqa_status db_device_upsert(db_t *db, const fmqa_device_info *info, int64_t *id,
                             fmqa_err *err)
{
    if (!db || !info || !id)
        return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT, "db_device_upsert: NULL argument");
    char key[FMQA_HASH_HEX];
    db_device_key(info, key);
    sqlite3_stmt *ins = NULL, *sel = NULL;
    db_lock(db);
    fmqa_status s = db_prepare(db,
        "INSERT INTO devices(key, name, arch, cc_major, cc_minor, sm_count, l2_bytes,"
        " smem_per_block_optin, driver_version, nvrtc_major, nvrtc_minor, first_seen)"
        " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
        " ON CONFLICT(key) DO NOTHING", &ins, "store a device", err);
    if (!s)
        s = db_prepare(db, "SELECT id FROM devices WHERE key = ?1", &sel, "find a device", err);
    if (!s) {
        sqlite3_bind_text(ins, 1, key, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(ins, 2, info->name, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(ins, 3, info->arch, -1, SQLITE_TRANSIENT);
        const int64_t nums[] = {info->cc_major, info->cc_minor, info->sm_count, info->l2_bytes,
                                info->smem_per_block_optin, info->driver_version,
                                info->nvrtc_major, info->nvrtc_minor, db_now()};
        for (int i = 0; i < (int)(sizeof nums / sizeof nums[0]); i++)
            sqlite3_bind_int64(ins, 4 + i, nums[i]);
        sqlite3_bind_text(sel, 1, key, -1, SQLITE_TRANSIENT);
        s = insert_then_id(db, ins, sel, id, "store a device", err);
    } else {
        sqlite3_finalize(ins);
    }
    db_unlock(db);
    return s;
}

fmqa_status db_template_upsert(db_t *db, const char *name, const char *hash, int64_t *id,
                               fmqa_err *err)
{
    if (!db || !name || !*name || !hash || !*hash || !id)
        return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT,
                            "db_template_upsert: name and hash must be non-empty");
    sqlite3_stmt *ins = NULL, *sel = NULL;
    db_lock(db);
    fmqa_status s = db_prepare(db,
        "INSERT INTO templates(name, hash, first_seen) VALUES(?1, ?2, ?3)"
        " ON CONFLICT(name, hash) DO NOTHING", &ins, "store a template", err);
    if (!s)
        s = db_prepare(db, "SELECT id FROM templates WHERE name = ?1 AND hash = ?2", &sel,
                       "find a template", err);
    if (!s) {
        sqlite3_bind_text(ins, 1, name, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(ins, 2, hash, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(ins, 3, db_now());
        sqlite3_bind_text(sel, 1, name, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(sel, 2, hash, -1, SQLITE_TRANSIENT);
        s = insert_then_id(db, ins, sel, id, "store a template", err);
    } else {
        sqlite3_finalize(ins);
    }
    db_unlock(db);
    return s;
}

/* The full problem key: class plus buckets. */
static void problem_key(const fmqa_problem *p, char out[DB_KEY_CAP + 32])
{
    char cls[DB_KEY_CAP];
    db_problem_class_key(p, cls);
    snprintf(out, DB_KEY_CAP + 32, "%s b=%d kv=%d", cls, db_bucket(p->batch),
             db_bucket(p->kv_len));
}

static fmqa_status check_problem_names(const fmqa_problem *p, fmqa_err *err)
{
    if (!fmqa_op_name(p->op))
        return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT, "problem.op: unknown value %d",
                            (int)p->op);
    const fmqa_dtype dt[3] = {p->q_dtype, p->kv_dtype, p->out_dtype};
    static const char *const field[3] = {"q_dtype", "kv_dtype", "out_dtype"};
    for (int i = 0; i < 3; i++)
        if (!fmqa_dtype_name(dt[i]))
            return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT,
                                "problem.%s: unknown value %d", field[i], (int)dt[i]);
    return FMQA_OK;
}

fmqa_status db_problem_upsert(db_t *db, const fmqa_problem *p, int64_t *id, fmqa_err *err)
{
    if (!db || !p || !id)
        return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT, "db_problem_upsert: NULL argument");
    fmqa_status s = check_problem_names(p, err);
    if (s)
        return s;
    char cls[DB_KEY_CAP], key[DB_KEY_CAP + 32];
    db_problem_class_key(p, cls);
    problem_key(p, key);
    sqlite3_stmt *ins = NULL, *sel = NULL;
    db_lock(db);
    s = db_prepare(db,
        "INSERT INTO problems(key, class_key, op, q_dtype, kv_dtype, out_dtype, num_q_heads,"
        " num_kv_heads, head_dim_qk, head_dim_v, q_tokens, page_size, window, sink_tokens,"
        " rope, flags, batch_bucket, kv_len_bucket)"
        " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)"
        " ON CONFLICT(key) DO NOTHING", &ins, "store a problem", err);
    if (!s)
        s = db_prepare(db, "SELECT id FROM problems WHERE key = ?1", &sel, "find a problem",
                       err);
    if (!s) {
        const char *texts[] = {key, cls, fmqa_op_name(p->op), fmqa_dtype_name(p->q_dtype),
                               fmqa_dtype_name(p->kv_dtype), fmqa_dtype_name(p->out_dtype)};
        for (int i = 0; i < 6; i++)
            sqlite3_bind_text(ins, 1 + i, texts[i], -1, SQLITE_TRANSIENT);
        const int64_t nums[] = {p->num_q_heads, p->num_kv_heads, p->head_dim_qk, p->head_dim_v,
                                p->q_tokens, p->page_size, p->window, p->sink_tokens,
                                (int64_t)p->rope, (int64_t)p->flags, db_bucket(p->batch),
                                db_bucket(p->kv_len)};
        for (int i = 0; i < 12; i++)
            sqlite3_bind_int64(ins, 7 + i, nums[i]);
        sqlite3_bind_text(sel, 1, key, -1, SQLITE_TRANSIENT);
        s = insert_then_id(db, ins, sel, id, "store a problem", err);
    } else {
        sqlite3_finalize(ins);
    }
    db_unlock(db);
    return s;
}

/* ------------------------------------------------------------ rows */

void db_rows_free(db_rows *rows)
{
    if (!rows)
        return;
    for (int c = 0; c < rows->ncols; c++)
        free(rows->names ? rows->names[c] : NULL);
    for (size_t i = 0; rows->cells && i < rows->nrows * (size_t)rows->ncols; i++)
        free(rows->cells[i]);
    free(rows->names);
    free(rows->numeric);
    free(rows->cells);
    memset(rows, 0, sizeof *rows);
}

/* Appends the current row of st to rows, growing cells geometrically. */
static fmqa_status rows_append(db_rows *rows, sqlite3_stmt *st, size_t *cap)
{
    size_t n = (size_t)rows->ncols;
    if (rows->nrows == *cap) {
        size_t ncap = *cap ? *cap * 2 : 16;
        char **cells = realloc(rows->cells, ncap * n * sizeof *cells);
        if (!cells)
            return FMQA_ERR_OUT_OF_MEMORY;
        rows->cells = cells;
        *cap = ncap;
    }
    char **row = rows->cells + rows->nrows * n;
    for (size_t c = 0; c < n; c++)
        row[c] = NULL;
    rows->nrows++; /* counted before filling so db_rows_free frees partial rows */
    for (size_t c = 0; c < n; c++) {
        int type = sqlite3_column_type(st, (int)c);
        if (type == SQLITE_NULL)
            continue;
        if (type == SQLITE_TEXT || type == SQLITE_BLOB)
            rows->numeric[c] = false;
        if (!(row[c] = db_column_strdup(st, (int)c)))
            return FMQA_ERR_OUT_OF_MEMORY;
    }
    return FMQA_OK;
}

fmqa_status db_rows_from_stmt(db_t *db, sqlite3_stmt *st, db_rows *rows, const char *what,
                              fmqa_err *err)
{
    memset(rows, 0, sizeof *rows);
    int n = sqlite3_column_count(st);
    rows->names = calloc((size_t)n, sizeof *rows->names);
    rows->numeric = calloc((size_t)n, sizeof *rows->numeric);
    if (!rows->names || !rows->numeric) {
        db_rows_free(rows);
        return fmqa_err_set(err, FMQA_ERR_OUT_OF_MEMORY, "out of memory");
    }
    rows->ncols = n;
    for (int c = 0; c < n; c++) {
        rows->numeric[c] = true;
        if (!(rows->names[c] = fmqa_strdup(sqlite3_column_name(st, c)))) {
            db_rows_free(rows);
            return fmqa_err_set(err, FMQA_ERR_OUT_OF_MEMORY, "out of memory");
        }
    }
    size_t cap = 0;
    int rc;
    fmqa_status s = FMQA_OK;
    while (!s && (rc = sqlite3_step(st)) == SQLITE_ROW)
        if (rows_append(rows, st, &cap))
            s = fmqa_err_set(err, FMQA_ERR_OUT_OF_MEMORY, "out of memory");
    if (!s && rc != SQLITE_DONE)
        s = db_fail(db, rc, err, what);
    if (s)
        db_rows_free(rows);
    return s;
}
