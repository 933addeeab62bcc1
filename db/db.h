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
#define DB_SCHEMA_VERSION 3
#define DB_BUSY_TIMEOUT_MS 5000
/* A session whose heartbeat is older than this is dead, whatever its pid
 * (docs/database.md, "Sessions and their owner"). */
#define DB_SESSION_STALE_S 300
/* A best entry is displaced by another config of the same timing method and
 * tuner version only when that one is faster by more than this fraction, or by
 * half the larger spread of the two if that is more (docs/database.md). */
#define DB_BEST_MIN_MARGIN 0.01
/* Capacity of config text handed out in fixed buffers; matches fmqa_choice. */
#define DB_CONFIG_CAP 256
/* Capacity of a problem class key text (db_problem_class_key). */
#define DB_KEY_CAP 224

typedef struct db db_t;

typedef enum db_mode {
    DB_READ_ONLY = 0,  /* the file must exist; opened with SQLite's mode=ro,
                          and immutable=1 when its directory is read-only
                          (nothing is created beside it)                      */
    DB_READ_WRITE = 1, /* creates the file and its parent directories; runs
                          PRAGMA quick_check and the migrations on open       */
    DB_READ_WRITE_UNCHECKED = 2 /* DB_READ_WRITE without the quick_check, whose
                          cost grows with the file: the runtime's open        */
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
/*
 * Whether a read-write open of path could work: the file (if it exists) and
 * its directory (else the nearest existing ancestor) are writable.  Permission
 * bits that deny writing to everyone count as read-only even for root.
 */
bool db_path_writable(const char *path);

/* Checks the file: PRAGMA quick_check, or with full integrity_check and
 * foreign_key_check.  FMQA_ERR_DATABASE naming the first problem.  Its cost
 * grows with the file: fastmqa-db check and the tuner run it, the runtime
 * never does. */
fmqa_status db_check(db_t *db, bool full, fmqa_err *err);

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

/* The relative L2 error a verified result may have (DESIGN.md section 5):
 * 1e-2 for a bf16 output (append: bf16 inputs), 1e-3 otherwise. */
double db_verify_tol(fmqa_op op, fmqa_dtype q_dtype, fmqa_dtype out_dtype);

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
    int32_t timing_method;     /* the tuner's TUN_TIMING_METHOD; 0 = unknown  */
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
 * problem).  The stored entry is replaced when (docs/database.md, "Best
 * entries"): there is none; it was imported (a local measurement beats a
 * foreign one); its timing is stale (another timing method or tuner version
 * than the offered trial's); the offer re-measures the same config (the latest
 * measurement of a config is its truth, slower or not); or the offer is faster
 * beyond noise: median < incumbent * (1 - max(DB_BEST_MIN_MARGIN, larger
 * spread / 2)).  *replaced (may be NULL) says whether it was.  The entry keeps
 * the trial's config, median, spread, tuner version and timing method.
 * default_median_us is the time of the template's default config on the same
 * problem (0 if unknown); a known value is kept when a later offer passes 0.
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
    int32_t batch_steps;       /* |log2 batch bucket diff|                    */
    int32_t kv_len_steps;      /* |log2 kv_len bucket diff|                   */
    double spread;             /* of the trial: (p80 - p20) / median          */
    char tuner_version[64];    /* of the trial ("" if unknown)                */
    int32_t timing_method;     /* of the trial (0 = unknown)                  */
    bool imported;             /* came from db_import / db_merge              */
} db_best_entry;

/* Whether an entry's timing was taken by another timing method or tuner
 * version than the given ones (its config is still right; its time is not
 * comparable with new measurements). */
bool db_best_is_stale(const db_best_entry *e, int32_t timing_method,
                      const char *tuner_version);

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
 * resources (may be NULL) is the compile report as JSON (gen_binary_report:
 * template, config, compile_ms, and per kernel registers, spills, shared
 * memory and stack), listed by db_list_cubins.
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
    char *host;                /* owner: host name (NULL before schema 2)     */
    int64_t pid;               /* owner: process id on host                   */
    int64_t heartbeat_at;      /* owner: last sign of life, unix seconds      */
} db_session;

/* Frees the strings of s (not s itself). */
void db_session_free(db_session *s);

/* Creates a running session from s->device_id, strategy, budget, seed and
 * problem_set (borrowed), owned by this process (host name, pid, heartbeat
 * now); sets s->id, s->status, s->started_at and s->heartbeat_at (s->host
 * stays as given). */
fmqa_status db_session_create(db_t *db, db_session *s /* IN/OUT */, fmqa_err *err);
/* Marks a session done or interrupted and records finished_at. */
fmqa_status db_session_finish(db_t *db, int64_t session_id, db_session_status status,
                              fmqa_err *err);
/* The most recent session of the device that is not done (running: its
 * process may have died or may still run; interrupted: it was stopped).
 * FMQA_ERR_NOT_FOUND if none.  *s gets owned strings: db_session_free() it. */
fmqa_status db_session_find_resumable(db_t *db, int64_t device_id, db_session *s /* OUT */,
                                      fmqa_err *err);

/*
 * Takes over an unfinished session for this process, in one write transaction
 * that re-reads its owner (two resumers cannot both win).  A running session
 * whose owner may be alive is refused with FMQA_ERR_INVALID_ARGUMENT and a
 * message naming its host, pid and heartbeat age.  Its owner is dead when it
 * is on this host and the pid is gone, or its heartbeat is older than
 * DB_SESSION_STALE_S, or it records no owner (schema 1).  An interrupted
 * session is always taken over.  On success the session is running, owned by
 * this process, and *s (may be NULL) is refreshed like find_resumable's.
 */
fmqa_status db_session_claim(db_t *db, int64_t session_id, db_session *s /* OUT */,
                             fmqa_err *err);

/* Refreshes the heartbeat of a session this process owns (best effort for
 * the caller: an error only means this beat was not written). */
fmqa_status db_session_heartbeat(db_t *db, int64_t session_id, fmqa_err *err);

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
/* The compile report of every stored cubin, newest first: template, config,
 * arch, registers (most of any entry), spill bytes, static shared memory,
 * compile time and size, from the resources JSON the runtime and the tuner
 * store (gen_binary_report); unknown fields are NULL.  template_name NULL =
 * any; limit <= 0 = all. */
fmqa_status db_list_cubins(db_t *db, const char *template_name, int64_t limit,
                           db_rows *rows /* OUT */, fmqa_err *err);
/* Every trial of a problem (problem_id 0: of every problem) for plotting:
 * problem_id, problem (key), device_id, device, template, trial, config,
 * status, median_us, p20_us, p80_us, is_best, is_default (the trial's config
 * is the template default's: the ok trial whose median the best entry kept as
 * the default's time).  Sorted by problem, device, template, then configs
 * fastest first (by their best ok median; configs without one last). */
fmqa_status db_list_plot_trials(db_t *db, int64_t problem_id, db_rows *rows /* OUT */,
                                fmqa_err *err);
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
    int64_t best_rejected;   /* best rows refused (not proven by their trial) */
    char rejected[512];      /* why the first one was refused, "" if none     */
} db_import_stats;

/* Imports db_export() output in one transaction: upserts by natural keys,
 * remaps ids.  A malformed line fails the whole import with "LINE: reason"
 * and changes nothing.  A best row is accepted only when its trial (in the
 * input or already in the file) is ok, timed, verified within the tolerance of
 * db_verify_tol, of the row's device, template version and problem, and has
 * the row's config and median; the entry then holds the trial's values and is
 * marked imported from name_for_errors now.  Refused rows are counted in
 * stats, not imported, and do not fail the import.  An imported entry never
 * displaces a local one; it displaces an imported one only by being faster.
 * stats may be NULL. */
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
