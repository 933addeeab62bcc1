/*
 * db_internal.h -- what the db_*.c files share: the handle, the lock, SQLite
 * error translation, statement and transaction helpers.  Not for other layers.
 *
 * Every public db_* function that touches the connection takes db->lock (a
 * recursive mutex, so a public function may call another) for its whole
 * duration; helpers here assume it is held.
 */
#ifndef FMQA_DB_INTERNAL_H
#define FMQA_DB_INTERNAL_H

#include <pthread.h>
#include <sqlite3.h>

#include "db.h"

struct db {
    sqlite3 *conn;
    char *path;
    db_mode mode;
    int busy_timeout_ms;
    pthread_mutex_t lock;
};

void db_lock(db_t *db);
void db_unlock(db_t *db);

/*
 * Translates a SQLite result code into an fmqa_err naming the file and what was
 * being done: busy/locked, read-only, not a database / corrupted and full disk
 * get their own wording; everything else carries sqlite3_errmsg.  Returns the
 * status (FMQA_ERR_DATABASE, or FMQA_ERR_INVALID_ARGUMENT for constraint
 * violations, which come from bad input).
 */
fmqa_status db_fail(db_t *db, int rc, fmqa_err *err, const char *what);

/* Prepares static SQL; on failure fills err (what = the SQL's purpose). */
fmqa_status db_prepare(db_t *db, const char *sql, sqlite3_stmt **st /* OUT */,
                       const char *what, fmqa_err *err);
/* Runs parameterless static SQL (BEGIN, COMMIT, DDL). */
fmqa_status db_exec(db_t *db, const char *sql, const char *what, fmqa_err *err);
/* Steps a statement expecting SQLITE_DONE (writes); resets it. */
fmqa_status db_step_done(db_t *db, sqlite3_stmt *st, const char *what, fmqa_err *err);

/* BEGIN IMMEDIATE: takes the write lock up front so a writer waits the busy
 * timeout at the start instead of failing half-way on a lock upgrade. */
fmqa_status db_begin_write(db_t *db, fmqa_err *err);
/* Commits when st is FMQA_OK, else rolls back; returns the final status. */
fmqa_status db_end(db_t *db, fmqa_status st, fmqa_err *err);
/* FMQA_ERR_INVALID_ARGUMENT unless the handle was opened read-write. */
fmqa_status db_require_write(db_t *db, const char *what, fmqa_err *err);

/* Binds a nullable string (NULL binds SQL NULL). */
int db_bind_text(sqlite3_stmt *st, int idx, const char *s);
/* Copies a text column (NULL for SQL NULL); FMQA_ERR_OUT_OF_MEMORY on failure. */
char *db_column_strdup(sqlite3_stmt *st, int col);

/* Current time, unix seconds. */
int64_t db_now(void);

/* Fills rows from every row a prepared (and bound) statement yields. */
fmqa_status db_rows_from_stmt(db_t *db, sqlite3_stmt *st, db_rows *rows /* OUT */,
                              const char *what, fmqa_err *err);

#endif /* FMQA_DB_INTERNAL_H */
