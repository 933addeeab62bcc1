/*
 * fuzz_import.c -- the export/import reader (db_import): any bytes are
 * imported or refused with a message, in one transaction, into a database
 * that stays usable (statistics and an export still work).  One database
 * file per process, recreated every 256 inputs.
 */
#define _GNU_SOURCE /* fmemopen */
#include <stdio.h>
#include <unistd.h>

#include "db.h"
#include "fuzz.h"

static db_t *db;
static char path[64];
static int uses;

static void reopen(void)
{
    if (db) {
        db_close(db);
        char side[96];
        unlink(path);
        snprintf(side, sizeof side, "%s-wal", path);
        unlink(side);
        snprintf(side, sizeof side, "%s-shm", path);
        unlink(side);
    }
    snprintf(path, sizeof path, "/tmp/fmqa_fuzz_import_%d.db", (int)getpid());
    fmqa_err err = {0};
    if (db_open(path, DB_READ_WRITE, 0, &db, &err) != FMQA_OK) {
        fprintf(stderr, "fuzz_import: %s\n", err.msg);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!db || ++uses % 256 == 0)
        reopen();
    if (size == 0)
        return 0;
    FILE *in = fmemopen((void *)data, size, "r");
    if (!in)
        return 0;
    db_import_stats st;
    fmqa_err err = {0};
    if (db_import(db, in, "fuzz", &st, &err) != FMQA_OK)
        FUZZ_ASSERT(err.msg[0] != '\0');
    fclose(in);
    db_stats s;
    FUZZ_ASSERT(db_stats_get(db, &s, &err) == FMQA_OK);
    FILE *out = fopen("/dev/null", "w");
    FUZZ_ASSERT(db_export(db, out, &err) == FMQA_OK);
    fclose(out);
    return 0;
}
