/*
 * db.h -- the tuning database: a SQLite file holding devices, templates,
 * problems, every tuning trial, the best variant per (device, template,
 * problem), compiled cubins and tuning sessions (schema: docs/database.md).
 *
 * Invariants:
 *  - Every row is keyed so that a stale answer is impossible: a device by the
 *    hash of its identity (db_device_key), a template by (name, source hash), a
 *    problem by its class (everything but batch and kv_len) plus the power-of-two
 *    buckets of batch and kv_len (db_bucket), a config by its canonical text.
 *  - The file is in WAL mode, so read-only handles (the runtime) never block the
 *    writer (the tuner) and vice versa.  Writers wait up to the busy timeout
 *    (DB_BUSY_TIMEOUT_MS) and then fail with a message that says the file is
 *    locked.
 *  - Each write function is one transaction: after it returns FMQA_OK the row
 *    is committed and survives a crash of the process.
 *  - All SQL is static text with bound parameters.
 *  - Errors: every function returns fmqa_status and fills err (may be NULL).
 *    FMQA_ERR_DATABASE for SQLite failures, busy and corruption (the message
 *    names the file), FMQA_ERR_NOT_FOUND for a lookup that matches nothing,
 *    FMQA_ERR_INVALID_ARGUMENT for bad input (nothing is written),
 *    FMQA_ERR_IO for files around the database (directories, export streams).
 *  - Threading: a db_t may be shared by several threads; its calls are
 *    serialized by an internal mutex (the generator's compile pool calls the
 *    cubin functions concurrently).  Several processes may open the same file.
 *
 * Ownership: a db_t is owned by whoever opened it and freed by db_close().
 * Strings passed in are borrowed for the duration of the call.  Memory handed
 * out is malloc'ed and owned by the caller unless a comment says otherwise;
 * structs with owned pointers have a *_free() that frees the members (not the
 * struct itself) and leaves them NULL.
 */
#ifndef FMQA_DB_H
#define FMQA_DB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "fastmqa.h"
#include "fmqa_common.h"

/* Schema version this library writes (PRAGMA user_version).  A file with a newer
 * version is refused, unmodified. */
#define DB_SCHEMA_VERSION 2
#define DB_BUSY_TIMEOUT_MS 5000
/* Capacity of config text handed out in fixed buffers; matches fmqa_choice. */
#define DB_CONFIG_CAP 256
/* Capacity of a problem class key text (db_problem_class_key). */
#define DB_KEY_CAP 160

typedef struct db db_t;

typedef enum db_mode {
    DB_READ_ONLY = 0,  /* SQLITE_OPEN_READONLY; the file must exist           */
    DB_READ_WRITE = 1  /* creates the file and its parent directories; runs
                          PRAGMA quick_check and the migrations on open       */
} db_mode;

/* ------------------------------------------------------------ open / close */

/*
 * Opens (read-write: creates) the database at path.  On success *out is a new
 * handle; on error *out is NULL and err says why: missing file (read-only),
 * not a FastMQA database or corrupted, schema newer than this library, file not
 * writable when opened read-write, locked past the busy timeout.
 * busy_timeout_ms <= 0 means DB_BUSY_TIMEOUT_MS.
 */
fmqa_status db_open(const char *path, db_mode mode, int busy_timeout_ms,
                    db_t **out /* OUT */, fmqa_err *err);
/* Closes the handle; NULL is a no-op. */
void db_close(db_t *db);
/* The path the handle was opened with (owned by db). */
const char *db_path(const db_t *db);

/* ------------------------------------------------------------ keys */

/* Power-of-two bucket of a size: the smallest power of two >= value; values
 * <= 1 map to 1.  db_bucket(1)=1, db_bucket(3)=4, db_bucket(4096)=4096,
 * db_bucket(4097)=8192. */
int32_t db_bucket(int32_t value);

/* Hash identifying a device: name, compute capability, SM count, L2 bytes,
 * driver version and NVRTC version (not the ordinal, clocks or memory size). */
void db_device_key(const fmqa_device_info *info, char out[FMQA_HASH_HEX] /* OUT */);

/* Text naming a problem's class: every field the dispatcher keys on except
 * batch and kv_len, e.g. "decode q=f16 kv=f16 out=f16 h=32 hkv=1 d=128/128
 * tq=1 page=0 win=0 sink=0 rope=0 flags=0x1".  Stable across versions of the
 * library only as long as DB_SCHEMA_VERSION is. */
void db_problem_class_key(const fmqa_problem *problem, char out[DB_KEY_CAP] /* OUT */);

/* Hash of a canonical config text (the trials.config_hash column). */
void db_config_hash(const char *config, char out[FMQA_HASH_HEX] /* OUT */);

/* ------------------------------------------------------------ upserts */

/* Each returns the row id of the existing or new row in *id.  Read-write only. */
fmqa_status db_device_upsert(db_t *db, const fmqa_device_info *info,
                             int64_t *id /* OUT */, fmqa_err *err);
fmqa_status db_template_upsert(db_t *db, const char *name, const char *hash,
                               int64_t *id /* OUT */, fmqa_err *err);
/* Stores the problem's class and buckets (batch and kv_len are bucketed). */
fmqa_status db_problem_upsert(db_t *db, const fmqa_problem *problem,
                              int64_t *id /* OUT */, fmqa_err *err);

/* ------------------------------------------------------------ trials */

typedef enum db_trial_status {
    DB_TRIAL_OK = 0,
    DB_TRIAL_COMPILE_ERROR = 1,
    DB_TRIAL_LAUNCH_ERROR = 2,
    DB_TRIAL_TIMEOUT = 3,
    DB_TRIAL_WRONG_RESULT = 4,
    DB_TRIAL_PRUNED = 5   /* skipped: slower than k times the best so far */
} db_trial_status;
#define DB_TRIAL_STATUS_COUNT 6

/* "ok", "compile_error", ...; NULL if out of range. */
const char *db_trial_status_name(db_trial_status status);
/* Parses a name of db_trial_status_name; FMQA_ERR_INVALID_ARGUMENT if unknown. */
fmqa_status db_trial_status_parse(const char *name, db_trial_status *status /* OUT */,
                                  fmqa_err *err);

/* One measured (or failed) variant.  Timing fields are 0 when not measured. */
typedef struct db_trial {
    int64_t session_id;        /* 0 = outside a session                      */
    int64_t device_id, template_id, problem_id;
    const char *config;        /* canonical text, required (borrowed)        */
    db_trial_status status;
    double compile_ms;
    double median_us, p20_us, p80_us, min_us;
    int32_t runs;
    double rel_l2_err, max_abs_err;
    int32_t sm_clock_mhz, mem_clock_mhz;
    const char *tuner_version; /* may be NULL                                */
    const char *message;       /* compile log excerpt, reason; may be NULL   */
} db_trial;

/*
 * Inserts one trial in its own transaction (committed on return).  The config
 * hash and spread = (p80 - p20) / median (0 when median is 0) are computed
 * here; created_at is the current time.  *id (may be NULL) gets the row id.
 */
fmqa_status db_trial_insert(db_t *db, const db_trial *trial, int64_t *id /* OUT */,
                            fmqa_err *err);

/* ------------------------------------------------------------ best */

/*
 * Offers trial_id (status ok, median > 0) as the best of its (device, template,
 * problem).  The stored entry is replaced only if this trial is faster; *replaced
 * (may be NULL) says whether it was.  default_median_us is the time of the
 * template's default config on the same problem (0 if unknown); a known value
 * is kept when a later offer passes 0.
 */
fmqa_status db_best_update(db_t *db, int64_t trial_id, double default_median_us,
                           bool *replaced /* OUT */, fmqa_err *err);

typedef struct db_best_entry {
    int64_t trial_id;
    int64_t problem_id;
    char config[DB_CONFIG_CAP];
    double median_us;
    double default_median_us;  /* 0 if unknown                                */
    int32_t batch_bucket;      /* buckets of the tuned problem                */
    int32_t kv_len_bucket;
    int32_t distance;          /* |log2 batch bucket diff| + |log2 kv_len
                                  bucket diff|; 0 = exact bucket               */
} db_best_entry;

/*
 * Best entry for exactly the problem's class and buckets.  device_key is
 * db_device_key() of the device; template_name and template_hash identify the
 * template version.  FMQA_ERR_NOT_FOUND if there is none.
 */
fmqa_status db_best_lookup_exact(db_t *db, const char *device_key, const char *template_name,
                                 const char *template_hash, const fmqa_problem *problem,
                                 db_best_entry *entry /* OUT */, fmqa_err *err);

/*
 * Every best entry of the problem's class (same device, template name and hash),
 * sorted by increasing distance, ties broken by larger kv_len bucket, then
 * larger batch bucket.  The exact bucket, when present, comes first with
 * distance 0.  The caller re-checks legality and takes the first legal one.
 * *entries is malloc'ed (free() it), NULL when *count is 0 (which is FMQA_OK).
 */
fmqa_status db_best_candidates(db_t *db, const char *device_key, const char *template_name,
                               const char *template_hash, const fmqa_problem *problem,
                               db_best_entry **entries /* OUT */, size_t *count /* OUT */,
                               fmqa_err *err);

/* ------------------------------------------------------------ cubins */

/*
 * Cubin cache keyed by the hash of (source, options, NVRTC version, arch), as
 * the generator computes it.  get: FMQA_ERR_NOT_FOUND on a miss; on a hit
 * *data is malloc'ed (caller frees), and last_used is refreshed when the
 * handle is read-write.  A hit whose data does not match its recorded size
 * or checksum is damaged: FMQA_ERR_DATABASE naming it, and the row is deleted
 * when the handle is read-write (the caller recompiles and puts it again).
 * put records the checksum.  put replaces an existing entry with the same key;
 * template_hash (may be NULL) lets db_prune drop cubins of old templates;
 * resources (may be NULL) is JSON text from ptxas.
 */
fmqa_status db_cubin_get(db_t *db, const char *key, void **data /* OUT */,
                         size_t *size /* OUT */, fmqa_err *err);
fmqa_status db_cubin_put(db_t *db, const char *key, const void *data, size_t size,
                         const char *arch, const char *nvrtc_version,
                         const char *template_hash, const char *resources,
                         fmqa_err *err);

/* ------------------------------------------------------------ sessions */

typedef enum db_session_status {
    DB_SESSION_RUNNING = 0,
    DB_SESSION_DONE = 1,
    DB_SESSION_INTERRUPTED = 2
} db_session_status;

const char *db_session_status_name(db_session_status status);

typedef struct db_session {
    int64_t id;                /* set by create / find                         */
    int64_t device_id;
    db_session_status status;
    char *strategy;            /* "exhaustive", "random", "local"             */
    int64_t budget;            /* trials allowed, 0 = unlimited               */
    uint64_t seed;
    char *problem_set;         /* the tuner's own text (problem specs)        */
    int64_t started_at;        /* unix seconds                                */
    int64_t finished_at;       /* 0 while running                             */
} db_session;

/* Frees the strings of s (not s itself). */
void db_session_free(db_session *s);

/* Creates a running session from s->device_id, strategy, budget, seed and
 * problem_set (borrowed); sets s->id, s->status and s->started_at. */
fmqa_status db_session_create(db_t *db, db_session *s /* IN/OUT */, fmqa_err *err);
/* Marks a session done or interrupted and records finished_at. */
fmqa_status db_session_finish(db_t *db, int64_t session_id, db_session_status status,
                              fmqa_err *err);
/* The most recent session of the device that is not done (running: the process
 * died; interrupted: it was stopped).  FMQA_ERR_NOT_FOUND if none.  *s gets
 * owned strings: db_session_free() it. */
fmqa_status db_session_find_resumable(db_t *db, int64_t device_id, db_session *s /* OUT */,
                                      fmqa_err *err);

/* A sorted set of config hashes. */
typedef struct db_hash_set {
    size_t count;
    char (*hex)[FMQA_HASH_HEX];
} db_hash_set;

void db_hash_set_free(db_hash_set *set);
bool db_hash_set_contains(const db_hash_set *set, const char *hash);

/* Config hashes already tried (any status) for (device, template, problem), in
 * session session_id, or in any session when session_id is 0. */
fmqa_status db_trials_done(db_t *db, int64_t session_id, int64_t device_id,
                           int64_t template_id, int64_t problem_id,
                           db_hash_set *set /* OUT */, fmqa_err *err);

/* ------------------------------------------------------------ listing */

/*
 * A result table for people and tools: column names and text cells (NULL for
 * SQL NULL), row-major.  numeric[c] says column c holds numbers (for JSON and
 * right alignment).  All owned; db_rows_free() releases them.
 */
typedef struct db_rows {
    int ncols;
    size_t nrows;
    char **names;
    bool *numeric;
    char **cells;  /* nrows * ncols */
} db_rows;

void db_rows_free(db_rows *rows);

typedef enum db_trial_sort {
    DB_SORT_CREATED = 0, /* newest first          */
    DB_SORT_MEDIAN = 1,  /* fastest first         */
    DB_SORT_ERROR = 2    /* largest rel_l2_err first */
} db_trial_sort;

typedef struct db_trial_filter {
    const char *device;     /* device id, key prefix or name substring; NULL = any */
    const char *template_name; /* exact template name; NULL = any            */
    int64_t problem_id;     /* 0 = any                                       */
    int status;             /* a db_trial_status, or -1 = any                */
    int64_t limit;          /* 0 = no limit                                  */
    db_trial_sort sort;
} db_trial_filter;

#define DB_TRIAL_FILTER_INIT { NULL, NULL, 0, -1, 0, DB_SORT_CREATED }

fmqa_status db_list_devices(db_t *db, db_rows *rows /* OUT */, fmqa_err *err);
fmqa_status db_list_problems(db_t *db, db_rows *rows /* OUT */, fmqa_err *err);
fmqa_status db_list_trials(db_t *db, const db_trial_filter *filter, db_rows *rows /* OUT */,
                           fmqa_err *err);
fmqa_status db_list_best(db_t *db, db_rows *rows /* OUT */, fmqa_err *err);
/* One row with every column of the trial joined with its device, template,
 * problem and session.  FMQA_ERR_NOT_FOUND if there is no such trial. */
fmqa_status db_show_trial(db_t *db, int64_t trial_id, db_rows *rows /* OUT */, fmqa_err *err);

/* ------------------------------------------------------------ maintenance */

/* Row counts per table, per-status trial counts and file size in bytes. */
typedef struct db_stats {
    int64_t devices, templates, problems, trials, best, cubins, sessions;
    int64_t trials_by_status[DB_TRIAL_STATUS_COUNT];
    int64_t cubin_bytes;
    int64_t file_bytes;      /* main file plus WAL                               */
    int schema_version;
} db_stats;

fmqa_status db_stats_get(db_t *db, db_stats *stats /* OUT */, fmqa_err *err);

/*
 * Export: one JSON object per line, {"table":"devices",...} with every column;
 * ids are exported but rows reference each other by natural key as well
 * (device key, template name+hash, problem key, session start), so an import
 * into another file remaps ids.  Cubin data is base64.  Tables appear in
 * dependency order: devices, templates, problems, sessions, trials, best, cubins.
 */
fmqa_status db_export(db_t *db, FILE *out, fmqa_err *err);

typedef struct db_import_stats {
    int64_t rows_read;
    int64_t rows_added;      /* rows inserted or updated (a faster best entry,
                                a finished session); the rest already existed */
} db_import_stats;

/* Imports db_export() output in one transaction: upserts by natural keys,
 * remaps ids, keeps the faster best entry.  A malformed line fails the whole
 * import with "LINE: reason" and changes nothing.  stats may be NULL. */
fmqa_status db_import(db_t *db, FILE *in, const char *name_for_errors,
                      db_import_stats *stats /* OUT */, fmqa_err *err);
/* Imports every row of another database file (opened read-only). */
fmqa_status db_merge(db_t *db, const char *other_path, db_import_stats *stats /* OUT */,
                     fmqa_err *err);

typedef struct db_prune_opts {
    const char *const *keep_template_hashes; /* NULL = do not prune by template */
    size_t n_keep;
    int older_than_days;                     /* > 0: drop trials older than this
                                                (best entries keep their trial) */
} db_prune_opts;

typedef struct db_prune_stats {
    int64_t trials, best, cubins, templates;  /* rows deleted                  */
} db_prune_stats;

/*
 * With keep_template_hashes: deletes every template whose hash is not in the
 * set, with its trials and best entries, and the cubins recorded with such a
 * template hash (cubins put with a NULL template hash are kept).  With
 * older_than_days: deletes older trials that no best entry points to, and
 * cubins not used for that long.  One transaction.  stats may be NULL.
 */
fmqa_status db_prune(db_t *db, const db_prune_opts *opts, db_prune_stats *stats /* OUT */,
                     fmqa_err *err);

/* VACUUM (rebuilds the file, returning free pages to the file system). */
fmqa_status db_vacuum(db_t *db, fmqa_err *err);

#endif /* FMQA_DB_H */
