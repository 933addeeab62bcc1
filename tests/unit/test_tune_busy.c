/*
 * test_tune_busy.c -- no result is lost to a busy database: while a second
 * connection holds the write lock longer than the busy timeout, the tuner's
 * recorder keeps trials in memory and writes them, in order and with their
 * best entry, once the lock frees; if it never frees within the bound, ending
 * the session fails as incomplete, the session stays resumable (never done)
 * and its set of tried configs (what --resume skips) lacks the lost ones.
 */
#define _POSIX_C_SOURCE 200809L
#include <criterion/criterion.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tun.h"
#include "test_support.h"

static char path[64];
static db_t *db;
static sqlite3 *holder; /* the second connection */
static int64_t dev_id, tpl_id, prob_id;
static db_session session;

static void setup(void)
{
    db = fmqa_test_db_temp(path, "fmqa-busy", 100);
    fmqa_device_info dev;
    memset(&dev, 0, sizeof dev);
    strcpy(dev.name, "NVIDIA H100 80GB HBM3");
    dev.sm_count = 132;
    fmqa_problem p;
    fmqa_problem_init(&p);
    p.batch = 8;
    p.num_q_heads = 32;
    p.kv_len = 4096;
    cr_assert_eq(db_device_upsert(db, &dev, &dev_id, NULL), FMQA_OK);
    cr_assert_eq(db_template_upsert(db, "decode", "h", &tpl_id, NULL), FMQA_OK);
    cr_assert_eq(db_problem_upsert(db, &p, &prob_id, NULL), FMQA_OK);
    session = (db_session){.device_id = dev_id, .strategy = "exhaustive"};
    fmqa_err err;
    cr_assert_eq(db_session_create(db, &session, &err), FMQA_OK, "%s", err.msg);
    cr_assert_eq(sqlite3_open(path, &holder), SQLITE_OK);
}

static void teardown(void)
{
    sqlite3_close(holder);
    db_close(db);
    unlink(path);
}

TestSuite(busy, .init = setup, .fini = teardown);

static void lock_db(void)
{
    cr_assert_eq(sqlite3_exec(holder, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
}

static void *unlock_later(void *arg)
{
    (void)arg;
    struct timespec ts = {0, 500 * 1000 * 1000}; /* five busy timeouts */
    nanosleep(&ts, NULL);
    sqlite3_exec(holder, "COMMIT", NULL, NULL, NULL);
    return NULL;
}

static db_trial trial(const char *config, double us)
{
    db_trial t = {.session_id = session.id, .device_id = dev_id, .template_id = tpl_id,
                  .problem_id = prob_id, .config = config, .status = DB_TRIAL_OK,
                  .median_us = us, .p20_us = us, .p80_us = us, .min_us = us, .runs = 10,
                  .tuner_version = TUN_VERSION, .timing_method = TUN_TIMING_METHOD,
                  .message = "measured"};
    return t;
}

static db_hash_set tried(void)
{
    db_hash_set set;
    cr_assert_eq(db_trials_done(db, session.id, dev_id, tpl_id, prob_id, &set, NULL), FMQA_OK);
    return set;
}

static int contains(const db_hash_set *set, const char *config)
{
    char hash[FMQA_HASH_HEX];
    db_config_hash(config, hash);
    return db_hash_set_contains(set, hash);
}

Test(busy, results_wait_in_memory_until_the_lock_frees)
{
    tun_recorder *r;
    fmqa_err err;
    cr_assert_eq(tun_recorder_create(db, session.id, &r, &err), FMQA_OK);
    lock_db();
    int stored = 1;
    db_trial a = trial("A=1", 10.0), b = trial("A=2", 5.0);
    cr_assert_eq(tun_record(r, &a, 0, &stored, &err), FMQA_OK, "%s", err.msg);
    cr_assert_not(stored);
    cr_assert_eq(tun_record(r, &b, 0, &stored, &err), FMQA_OK, "%s", err.msg);
    cr_assert_eq(tun_recorder_pending(r), 2);
    pthread_t th;
    pthread_create(&th, NULL, unlock_later, NULL);
    cr_assert_eq(tun_recorder_drain(r, 10.0, &err), FMQA_OK, "%s", err.msg);
    pthread_join(th, NULL);
    cr_assert_eq(tun_recorder_pending(r), 0);
    db_hash_set set = tried();
    cr_assert(contains(&set, "A=1") && contains(&set, "A=2"));
    db_hash_set_free(&set);
    db_rows rows;
    cr_assert_eq(db_list_best(db, &rows, NULL), FMQA_OK);
    cr_assert_eq(rows.nrows, 1);
    cr_assert_str_eq(rows.cells[7], "A=2", "best config column: %s", rows.cells[7]);
    db_rows_free(&rows);
    cr_assert_eq(tun_recorder_finish(r, 0, 1.0, &err), FMQA_OK, "%s", err.msg);
    db_session s;
    cr_assert_eq(db_session_find_resumable(db, dev_id, &s, NULL), FMQA_ERR_NOT_FOUND,
                 "a finished session is still resumable");
    tun_recorder_destroy(r);
}

Test(busy, a_lock_that_never_frees_leaves_the_session_incomplete_and_resumable)
{
    tun_recorder *r;
    fmqa_err err;
    cr_assert_eq(tun_recorder_create(db, session.id, &r, &err), FMQA_OK);
    db_trial a = trial("A=1", 10.0);
    int stored = 0;
    cr_assert_eq(tun_record(r, &a, 0, &stored, &err), FMQA_OK, "%s", err.msg);
    cr_assert(stored);
    lock_db();
    db_trial b = trial("A=2", 5.0);
    cr_assert_eq(tun_record(r, &b, 0, &stored, &err), FMQA_OK, "%s", err.msg);
    cr_assert_eq(tun_recorder_finish(r, 0, 0.5, &err), FMQA_ERR_DATABASE);
    cr_assert(strstr(err.msg, "incomplete: 1 result could not be stored"), "%s", err.msg);
    cr_assert(strstr(err.msg, "locked"), "%s", err.msg);
    tun_recorder_destroy(r); /* the process ends here */
    sqlite3_exec(holder, "COMMIT", NULL, NULL, NULL);
    db_session s;
    fmqa_err e2;
    cr_assert_eq(db_session_find_resumable(db, dev_id, &s, &e2), FMQA_OK, "%s", e2.msg);
    cr_assert_eq(s.id, session.id);
    cr_assert_eq(s.status, DB_SESSION_RUNNING, "an incomplete session was marked finished");
    db_session_free(&s);
    /* --resume skips what was stored and redoes what was lost. */
    db_hash_set set = tried();
    cr_assert(contains(&set, "A=1"));
    cr_assert_not(contains(&set, "A=2"));
    db_hash_set_free(&set);
}
