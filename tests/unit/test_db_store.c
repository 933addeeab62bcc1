/*
 * test_db_store.c -- the tuning database in one process: schema creation,
 * reopening, migration from an empty v0 file, refusal of newer schemas, of
 * foreign, random and damaged files and of read-only files opened for writing;
 * keys and buckets; upserts; trials; best entries and the nearest-bucket
 * ordering; sessions; the cubin cache.
 */
#define _POSIX_C_SOURCE 200809L
#include <criterion/criterion.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "db.h"
#include "test_support.h"

static char dir[64];

static void make_dir(void)
{
    strcpy(dir, "/tmp/fmqa_db_store_XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
}

static const char *path_in_dir(const char *name)
{
    static char buf[2][256];
    static int which;
    which ^= 1;
    snprintf(buf[which], sizeof buf[which], "%s/%s", dir, name);
    return buf[which];
}

TestSuite(db_store, .init = make_dir);

static fmqa_device_info test_device(const char *name)
{
    fmqa_device_info d;
    memset(&d, 0, sizeof d);
    snprintf(d.name, sizeof d.name, "%s", name);
    snprintf(d.arch, sizeof d.arch, "sm_90");
    d.cc_major = 9;
    d.sm_count = 132;
    d.l2_bytes = 50 << 20;
    d.smem_per_block_optin = 232448;
    d.driver_version = 13000;
    d.nvrtc_major = 13;
    return d;
}

static fmqa_problem test_problem(int batch, int kv_len)
{
    fmqa_problem p;
    fmqa_problem_init(&p);
    p.op = FMQA_OP_DECODE;
    p.batch = batch;
    p.num_q_heads = 32;
    p.num_kv_heads = 1;
    p.head_dim_qk = p.head_dim_v = 128;
    p.q_tokens = 1;
    p.kv_len = kv_len;
    p.q_dtype = p.kv_dtype = p.out_dtype = FMQA_DTYPE_F16;
    p.flags = FMQA_FLAG_CAUSAL;
    return p;
}

/* Ids of one device, one template and one problem. */
typedef struct ids {
    int64_t dev, tmpl, prob;
    char dev_key[FMQA_HASH_HEX];
} ids;

static ids add_basics(db_t *db)
{
    ids r;
    fmqa_device_info d = test_device("Test GPU");
    fmqa_problem p = test_problem(8, 4096);
    cr_assert_eq(db_device_upsert(db, &d, &r.dev, NULL), FMQA_OK);
    cr_assert_eq(db_template_upsert(db, "decode", "hash1", &r.tmpl, NULL), FMQA_OK);
    cr_assert_eq(db_problem_upsert(db, &p, &r.prob, NULL), FMQA_OK);
    db_device_key(&d, r.dev_key);
    return r;
}

static int64_t add_trial(db_t *db, const ids *k, int64_t prob, const char *config,
                         db_trial_status status, double median)
{
    db_trial t = {.device_id = k->dev, .template_id = k->tmpl, .problem_id = prob,
                  .config = config, .status = status, .median_us = median,
                  .p20_us = median * 0.9, .p80_us = median * 1.2, .runs = 100};
    int64_t id = 0;
    fmqa_err err = {0};
    cr_assert_eq(db_trial_insert(db, &t, &id, &err), FMQA_OK, "%s", err.msg);
    return id;
}

static int64_t count_rows(const char *path, const char *sql)
{
    sqlite3 *c;
    sqlite3_stmt *st;
    cr_assert_eq(sqlite3_open_v2(path, &c, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    cr_assert_eq(sqlite3_prepare_v2(c, sql, -1, &st, NULL), SQLITE_OK, "%s", sqlite3_errmsg(c));
    cr_assert_eq(sqlite3_step(st), SQLITE_ROW);
    int64_t v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(c);
    return v;
}

static void write_file(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(data, 1, n, f), n);
    fclose(f);
}

static size_t read_file(const char *path, char *buf, size_t cap)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f);
    size_t n = fread(buf, 1, cap, f);
    fclose(f);
    return n;
}

/* ------------------------------------------------------------ schema */

Test(db_store, fresh_create_makes_parents_schema_and_wal)
{
    const char *path = path_in_dir("a/b/tune.db");
    db_t *db = fmqa_test_db_open_rw(path);
    db_close(db);
    cr_assert_eq(count_rows(path, "PRAGMA user_version"), DB_SCHEMA_VERSION);
    cr_assert_eq(count_rows(path, "PRAGMA application_id"), 0x464D5141);
    cr_assert_eq(count_rows(path, "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND"
                                  " name IN ('devices','templates','problems','trials','best',"
                                  "'cubins','sessions')"), 7);
    sqlite3 *c;
    sqlite3_open(path, &c);
    sqlite3_stmt *st;
    sqlite3_prepare_v2(c, "PRAGMA journal_mode", -1, &st, NULL);
    cr_assert_eq(sqlite3_step(st), SQLITE_ROW);
    cr_assert_str_eq((const char *)sqlite3_column_text(st, 0), "wal");
    sqlite3_finalize(st);
    sqlite3_close(c);
}

Test(db_store, reopen_keeps_rows_and_read_only_reads_them)
{
    const char *path = path_in_dir("t.db");
    db_t *db = fmqa_test_db_open_rw(path);
    ids k = add_basics(db);
    add_trial(db, &k, k.prob, "BLOCK_N=64", DB_TRIAL_OK, 10.0);
    db_close(db);
    db = fmqa_test_db_open_rw(path);
    ids k2 = add_basics(db); /* upserts find the same rows */
    cr_assert_eq(k2.dev, k.dev);
    cr_assert_eq(k2.tmpl, k.tmpl);
    cr_assert_eq(k2.prob, k.prob);
    db_close(db);
    fmqa_err err = {0};
    cr_assert_eq(db_open(path, DB_READ_ONLY, 0, &db, &err), FMQA_OK, "%s", err.msg);
    db_stats s;
    cr_assert_eq(db_stats_get(db, &s, NULL), FMQA_OK);
    cr_assert_eq(s.trials, 1);
    cr_assert_eq(s.trials_by_status[DB_TRIAL_OK], 1);
    cr_assert_eq(s.devices, 1);
    /* Writes through a read-only handle are refused with a message. */
    int64_t id;
    cr_assert_eq(db_template_upsert(db, "x", "y", &id, &err), FMQA_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(err.msg, "opened read-only"), "%s", err.msg);
    db_close(db);
}

Test(db_store, empty_v0_file_is_migrated)
{
    const char *path = path_in_dir("empty.db");
    write_file(path, "", 0);
    db_t *db = NULL;
    fmqa_err err = {0};
    /* Read-only cannot upgrade it and says so. */
    cr_assert_eq(db_open(path, DB_READ_ONLY, 0, &db, &err), FMQA_ERR_DATABASE);
    cr_assert(strstr(err.msg, "open it read-write once to upgrade"), "%s", err.msg);
    cr_assert(strstr(err.msg, "fastmqa-db import /dev/null"), "says how: %s", err.msg);
    cr_assert_null(db);
    db = fmqa_test_db_open_rw(path);
    db_close(db);
    cr_assert_eq(count_rows(path, "PRAGMA user_version"), DB_SCHEMA_VERSION);
}

Test(db_store, newer_schema_is_refused_and_file_unmodified)
{
    const char *path = path_in_dir("new.db");
    db_close(fmqa_test_db_open_rw(path));
    sqlite3 *c;
    sqlite3_open(path, &c);
    cr_assert_eq(sqlite3_exec(c, "PRAGMA journal_mode = DELETE; PRAGMA user_version = 99",
                              NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(c);
    static char before[1 << 20], after[1 << 20];
    size_t n1 = read_file(path, before, sizeof before);
    db_t *db = NULL;
    fmqa_err err = {0};
    for (int mode = 0; mode < 2; mode++) {
        cr_assert_eq(db_open(path, (db_mode)mode, 0, &db, &err), FMQA_ERR_DATABASE);
        char want[128];
        snprintf(want, sizeof want, "schema version 99 is newer than this library knows (%d)",
                 DB_SCHEMA_VERSION);
        cr_assert(strstr(err.msg, want), "%s", err.msg);
    }
    size_t n2 = read_file(path, after, sizeof after);
    cr_assert_eq(n1, n2);
    cr_assert_eq(memcmp(before, after, n1), 0);
    cr_assert_eq(access(path_in_dir("new.db-wal"), F_OK), -1, "a WAL file was created");
}

Test(db_store, foreign_sqlite_file_is_refused)
{
    const char *path = path_in_dir("other.db");
    sqlite3 *c;
    sqlite3_open(path, &c);
    sqlite3_exec(c, "CREATE TABLE notes(x)", NULL, NULL, NULL);
    sqlite3_close(c);
    db_t *db = NULL;
    fmqa_err err = {0};
    cr_assert_eq(db_open(path, DB_READ_WRITE, 0, &db, &err), FMQA_ERR_DATABASE);
    cr_assert(strstr(err.msg, "not a FastMQA database (application_id 0x0"), "%s", err.msg);
    cr_assert_eq(count_rows(path, "SELECT count(*) FROM sqlite_master"), 1);
}

Test(db_store, random_bytes_are_rejected_in_both_modes)
{
    const char *path = path_in_dir("rand.bin");
    char junk[8192];
    srand(7);
    for (size_t i = 0; i < sizeof junk; i++)
        junk[i] = (char)rand();
    write_file(path, junk, sizeof junk);
    for (int mode = 0; mode < 2; mode++) {
        db_t *db = NULL;
        fmqa_err err = {0};
        cr_assert_eq(db_open(path, (db_mode)mode, 0, &db, &err), FMQA_ERR_DATABASE);
        cr_assert(strstr(err.msg, "not a FastMQA database or the file is corrupted"), "%s",
                  err.msg);
        cr_assert(strstr(err.msg, path), "message names the file: %s", err.msg);
    }
}

Test(db_store, overwritten_middle_is_rejected)
{
    const char *path = path_in_dir("damaged.db");
    db_t *db = fmqa_test_db_open_rw(path);
    ids k = add_basics(db);
    char config[160];
    for (int i = 0; i < 300; i++) {
        snprintf(config, sizeof config, "BLOCK_N=%d,PAD=%0100d", i, i);
        add_trial(db, &k, k.prob, config, DB_TRIAL_OK, 1.0 + i);
    }
    db_close(db);
    struct stat sb;
    cr_assert_eq(stat(path, &sb), 0);
    cr_assert_gt(sb.st_size, 16 * 4096, "fixture too small: %lld", (long long)sb.st_size);
    /* Garbage over whole pages in the middle: b-tree pages no longer parse. */
    FILE *f = fopen(path, "r+b");
    long pages = (long)(sb.st_size / 4096);
    fseek(f, (pages / 2) * 4096, SEEK_SET);
    for (int i = 0; i < 3 * 4096; i++)
        fputc(0xA5 ^ (i * 31), f);
    fclose(f);
    fmqa_err err = {0};
    cr_assert_eq(db_open(path, DB_READ_WRITE, 0, &db, &err), FMQA_ERR_DATABASE);
    cr_assert(strstr(err.msg, "not a FastMQA database or the file is corrupted"), "%s",
              err.msg);
}

/* A copy cut short (a full disk, an interrupted transfer): the read-write open
 * refuses it; a read-only handle, which skips the integrity check to stay
 * cheap, reports the damage on the first read instead of crashing. */
Test(db_store, truncated_file_is_rejected)
{
    const char *path = path_in_dir("cut.db");
    db_t *db = fmqa_test_db_open_rw(path);
    ids k = add_basics(db);
    char config[160];
    for (int i = 0; i < 300; i++) {
        snprintf(config, sizeof config, "BLOCK_N=%d,PAD=%0100d", i, i);
        add_trial(db, &k, k.prob, config, DB_TRIAL_OK, 1.0 + i);
    }
    db_close(db);
    struct stat sb;
    cr_assert_eq(stat(path, &sb), 0);
    cr_assert_eq(truncate(path, sb.st_size / 2 / 4096 * 4096), 0);
    fmqa_err err = {0};
    cr_assert_eq(db_open(path, DB_READ_WRITE, 0, &db, &err), FMQA_ERR_DATABASE);
    cr_assert(strstr(err.msg, "corrupted"), "%s", err.msg);
    cr_assert_null(db);
    db_stats stats;
    if (db_open(path, DB_READ_ONLY, 0, &db, &err) == FMQA_OK) {
        db_rows rows = {0};
        fmqa_status st = db_list_trials(db, NULL, &rows, &err);
        if (st == FMQA_OK)
            st = db_stats_get(db, &stats, &err);
        cr_assert_eq(st, FMQA_ERR_DATABASE, "a truncated file read without complaint");
        db_rows_free(&rows);
        db_close(db);
    }
    /* Cut inside the 100-byte header: not even recognisable. */
    cr_assert_eq(truncate(path, 60), 0);
    cr_assert_eq(db_open(path, DB_READ_ONLY, 0, &db, &err), FMQA_ERR_DATABASE);
    cr_assert(strstr(err.msg, path), "%s", err.msg);
}

Test(db_store, read_only_file_opened_for_writing)
{
    const char *path = path_in_dir("ro.db");
    db_close(fmqa_test_db_open_rw(path));
    cr_assert_eq(chmod(path, 0444), 0);
    db_t *db = NULL;
    fmqa_err err = {0};
    cr_assert_eq(db_open(path, DB_READ_WRITE, 0, &db, &err), FMQA_ERR_IO);
    cr_assert(strstr(err.msg, "the file is read-only; open it read-only or make it writable"),
              "%s", err.msg);
    cr_assert_eq(db_open(path, DB_READ_ONLY, 0, &db, &err), FMQA_OK, "%s", err.msg);
    db_close(db);
}

Test(db_store, missing_file_read_only_is_not_found)
{
    db_t *db = (db_t *)1;
    fmqa_err err = {0};
    cr_assert_eq(db_open(path_in_dir("none.db"), DB_READ_ONLY, 0, &db, &err),
                 FMQA_ERR_NOT_FOUND);
    cr_assert_null(db);
    cr_assert(strstr(err.msg, "No such file"), "%s", err.msg);
    cr_assert_eq(access(path_in_dir("none.db"), F_OK), -1);
}

/* ------------------------------------------------------------ keys */

Test(db_store, buckets_are_next_powers_of_two)
{
    const int32_t in[] = {-5, 0, 1, 2, 3, 4, 5, 1000, 4096, 4097, 1 << 30};
    const int32_t out[] = {1, 1, 1, 2, 4, 4, 8, 1024, 4096, 8192, 1 << 30};
    for (size_t i = 0; i < sizeof in / sizeof in[0]; i++)
        cr_assert_eq(db_bucket(in[i]), out[i], "bucket(%d)", in[i]);
}

Test(db_store, keys)
{
    fmqa_problem p = test_problem(8, 4096);
    char key[DB_KEY_CAP];
    db_problem_class_key(&p, key);
    cr_assert_str_eq(key, "decode q=f16 kv=f16 out=f16 h=32 hkv=1 d=128/128 tq=1 page=0 win=0 "
                          "sink=0 rope=0 flags=0x1");
    fmqa_problem q = test_problem(3, 100); /* batch and kv_len are not in the class */
    char key2[DB_KEY_CAP];
    db_problem_class_key(&q, key2);
    cr_assert_str_eq(key, key2);
    /* Soft-capping and draft slots join the class only when set: old keys stay,
     * and problems that differ in them never share a tuned entry. */
    q.logit_softcap = 50.0f;
    db_problem_class_key(&q, key2);
    cr_assert_str_eq(key2, "decode q=f16 kv=f16 out=f16 h=32 hkv=1 d=128/128 tq=1 page=0 win=0 "
                           "sink=0 rope=0 flags=0x1 softcap=0x1.9p+5");
    q.logit_softcap = 30.0f, q.draft_slots = 3;
    char key3[DB_KEY_CAP];
    db_problem_class_key(&q, key3);
    cr_assert_str_neq(key2, key3);
    cr_assert(strstr(key3, " drafts=3"), "%s", key3);
    fmqa_device_info a = test_device("GPU A"), b = a;
    char ka[FMQA_HASH_HEX], kb[FMQA_HASH_HEX];
    b.ordinal = 3; /* not identity */
    b.clock_khz = 1;
    db_device_key(&a, ka);
    db_device_key(&b, kb);
    cr_assert_str_eq(ka, kb);
    b.driver_version = 13010; /* identity */
    db_device_key(&b, kb);
    cr_assert_str_neq(ka, kb);
    cr_assert_eq(strlen(ka), 32);
}

Test(db_store, problem_upsert_buckets_and_rejects_bad_enums)
{
    db_t *db = fmqa_test_db_open_rw(path_in_dir("p.db"));
    fmqa_problem a = test_problem(5, 3000), b = test_problem(8, 4096);
    int64_t ia, ib, ic;
    cr_assert_eq(db_problem_upsert(db, &a, &ia, NULL), FMQA_OK);
    cr_assert_eq(db_problem_upsert(db, &b, &ib, NULL), FMQA_OK);
    cr_assert_eq(ia, ib, "batch 5 / kv 3000 share the bucket of 8 / 4096");
    b.kv_len = 4097;
    cr_assert_eq(db_problem_upsert(db, &b, &ic, NULL), FMQA_OK);
    cr_assert_neq(ic, ia);
    fmqa_err err = {0};
    b.kv_dtype = (fmqa_dtype)42;
    cr_assert_eq(db_problem_upsert(db, &b, &ic, &err), FMQA_ERR_INVALID_ARGUMENT);
    cr_assert_str_eq(err.msg, "problem.kv_dtype: unknown value 42");
    db_close(db);
}

/* ------------------------------------------------------------ trials, best */

Test(db_store, trial_insert_computes_hash_and_spread_and_validates)
{
    const char *path = path_in_dir("tr.db");
    db_t *db = fmqa_test_db_open_rw(path);
    ids k = add_basics(db);
    int64_t id = add_trial(db, &k, k.prob, "BLOCK_N=64,WARPS=4", DB_TRIAL_OK, 10.0);
    db_rows r;
    cr_assert_eq(db_show_trial(db, id, &r, NULL), FMQA_OK);
    char hash[FMQA_HASH_HEX];
    db_config_hash("BLOCK_N=64,WARPS=4", hash);
    for (int c = 0; c < r.ncols; c++) {
        if (!strcmp(r.names[c], "config_hash"))
            cr_assert_str_eq(r.cells[c], hash);
        if (!strcmp(r.names[c], "spread")) /* (12 - 9) / 10 */
            cr_assert_float_eq(atof(r.cells[c]), 0.3, 1e-12);
        if (!strcmp(r.names[c], "status"))
            cr_assert_str_eq(r.cells[c], "ok");
        if (!strcmp(r.names[c], "device"))
            cr_assert_str_eq(r.cells[c], "Test GPU");
    }
    db_rows_free(&r);
    fmqa_err err = {0};
    cr_assert_eq(db_show_trial(db, 999, &r, &err), FMQA_ERR_NOT_FOUND);
    db_trial t = {.device_id = k.dev, .template_id = k.tmpl, .problem_id = k.prob,
                  .config = "X=1", .status = (db_trial_status)9};
    cr_assert_eq(db_trial_insert(db, &t, NULL, &err), FMQA_ERR_INVALID_ARGUMENT);
    cr_assert_str_eq(err.msg, "trial.status: unknown value 9");
    char longcfg[300];
    memset(longcfg, 'A', sizeof longcfg - 1);
    longcfg[299] = 0;
    t.status = DB_TRIAL_OK;
    t.config = longcfg;
    cr_assert_eq(db_trial_insert(db, &t, NULL, &err), FMQA_ERR_INVALID_ARGUMENT);
    cr_assert_str_eq(err.msg, "trial.config: 299 characters, at most 255");
    t.config = "X=1";
    t.problem_id = 12345; /* foreign key */
    cr_assert_eq(db_trial_insert(db, &t, NULL, &err), FMQA_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(err.msg, "FOREIGN KEY"), "%s", err.msg);
    db_close(db);
    cr_assert_eq(count_rows(path, "SELECT count(*) FROM trials"), 1);
}

Test(db_store, best_keeps_the_faster_and_the_default_time)
{
    db_t *db = fmqa_test_db_open_rw(path_in_dir("b.db"));
    ids k = add_basics(db);
    int64_t slow = add_trial(db, &k, k.prob, "A=1", DB_TRIAL_OK, 20.0);
    int64_t fast = add_trial(db, &k, k.prob, "A=2", DB_TRIAL_OK, 12.5);
    int64_t bad = add_trial(db, &k, k.prob, "A=3", DB_TRIAL_WRONG_RESULT, 1.0);
    bool replaced = false;
    fmqa_err err = {0};
    cr_assert_eq(db_best_update(db, slow, 30.0, &replaced, NULL), FMQA_OK);
    cr_assert(replaced);
    cr_assert_eq(db_best_update(db, fast, 0.0, &replaced, NULL), FMQA_OK);
    cr_assert(replaced);
    cr_assert_eq(db_best_update(db, slow, 0.0, &replaced, NULL), FMQA_OK);
    cr_assert_not(replaced);
    cr_assert_eq(db_best_update(db, bad, 0.0, &replaced, &err), FMQA_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(err.msg, "status wrong_result"), "%s", err.msg);
    db_best_entry e;
    fmqa_problem p = test_problem(7, 4000); /* same buckets: 8, 4096 */
    cr_assert_eq(db_best_lookup_exact(db, k.dev_key, "decode", "hash1", &p, &e, &err), FMQA_OK,
                 "%s", err.msg);
    cr_assert_eq(e.trial_id, fast);
    cr_assert_str_eq(e.config, "A=2");
    cr_assert_float_eq(e.median_us, 12.5, 1e-12);
    cr_assert_float_eq(e.default_median_us, 30.0, 1e-12);
    cr_assert_eq(e.distance, 0);
    /* A different template hash is a different template: no stale answer. */
    cr_assert_eq(db_best_lookup_exact(db, k.dev_key, "decode", "hash2", &p, &e, &err),
                 FMQA_ERR_NOT_FOUND);
    db_close(db);
}

Test(db_store, nearest_bucket_ordering_and_exact_wins)
{
    db_t *db = fmqa_test_db_open_rw(path_in_dir("n.db"));
    ids k = add_basics(db);
    const int shapes[3][2] = {{1, 1024}, {8, 4096}, {64, 65536}};
    int64_t trial[3];
    for (int i = 0; i < 3; i++) {
        fmqa_problem p = test_problem(shapes[i][0], shapes[i][1]);
        int64_t pid;
        cr_assert_eq(db_problem_upsert(db, &p, &pid, NULL), FMQA_OK);
        char cfg[32];
        snprintf(cfg, sizeof cfg, "SHAPE=%d", i);
        trial[i] = add_trial(db, &k, pid, cfg, DB_TRIAL_OK, 5.0 + i);
        cr_assert_eq(db_best_update(db, trial[i], 0, NULL, NULL), FMQA_OK);
    }
    /* Another class (8 KV heads) must never be offered. */
    fmqa_problem other = test_problem(8, 8192);
    other.num_kv_heads = 8;
    int64_t opid;
    cr_assert_eq(db_problem_upsert(db, &other, &opid, NULL), FMQA_OK);
    cr_assert_eq(db_best_update(db, add_trial(db, &k, opid, "X=1", DB_TRIAL_OK, 1.0), 0, NULL,
                                NULL), FMQA_OK);

    fmqa_problem q = test_problem(8, 8192); /* buckets 8, 8192: log2 3, 13 */
    db_best_entry e, *v = NULL;
    size_t n = 0;
    cr_assert_eq(db_best_lookup_exact(db, k.dev_key, "decode", "hash1", &q, &e, NULL),
                 FMQA_ERR_NOT_FOUND);
    cr_assert_eq(db_best_candidates(db, k.dev_key, "decode", "hash1", &q, &v, &n, NULL), FMQA_OK);
    cr_assert_eq(n, 3);
    /* (8,4096): 0 + 1; (64,65536): 3 + 3; (1,1024): 3 + 3, tie -> larger kv first. */
    cr_assert_eq(v[0].trial_id, trial[1]);
    cr_assert_eq(v[0].distance, 1);
    cr_assert_eq(v[0].kv_len_bucket, 4096);
    cr_assert_eq(v[1].trial_id, trial[2]);
    cr_assert_eq(v[1].distance, 6);
    cr_assert_eq(v[2].trial_id, trial[0]);
    cr_assert_eq(v[2].distance, 6);
    free(v);

    int64_t pid;
    cr_assert_eq(db_problem_upsert(db, &q, &pid, NULL), FMQA_OK);
    int64_t exact = add_trial(db, &k, pid, "SHAPE=exact", DB_TRIAL_OK, 50.0);
    cr_assert_eq(db_best_update(db, exact, 0, NULL, NULL), FMQA_OK);
    cr_assert_eq(db_best_candidates(db, k.dev_key, "decode", "hash1", &q, &v, &n, NULL), FMQA_OK);
    cr_assert_eq(n, 4);
    cr_assert_eq(v[0].trial_id, exact, "the exact bucket wins even though it is slower");
    cr_assert_eq(v[0].distance, 0);
    free(v);
    cr_assert_eq(db_best_lookup_exact(db, k.dev_key, "decode", "hash1", &q, &e, NULL), FMQA_OK);
    cr_assert_str_eq(e.config, "SHAPE=exact");
    cr_assert_eq(db_best_candidates(db, "nodevice", "decode", "hash1", &q, &v, &n, NULL), FMQA_OK);
    cr_assert_eq(n, 0);
    cr_assert_null(v);
    db_close(db);
}

/* ------------------------------------------------------------ sessions, cubins */

Test(db_store, sessions_resume_and_done_sets)
{
    db_t *db = fmqa_test_db_open_rw(path_in_dir("s.db"));
    ids k = add_basics(db);
    db_session s = {.device_id = k.dev, .strategy = "random", .budget = 50, .seed = 1234,
                    .problem_set = "op=decode,batch=8"};
    cr_assert_eq(db_session_create(db, &s, NULL), FMQA_OK);
    cr_assert_gt(s.id, 0);
    cr_assert_eq(s.status, DB_SESSION_RUNNING);
    db_trial t = {.session_id = s.id, .device_id = k.dev, .template_id = k.tmpl,
                  .problem_id = k.prob, .config = "A=1", .status = DB_TRIAL_TIMEOUT};
    cr_assert_eq(db_trial_insert(db, &t, NULL, NULL), FMQA_OK);
    t.config = "A=2";
    cr_assert_eq(db_trial_insert(db, &t, NULL, NULL), FMQA_OK);
    add_trial(db, &k, k.prob, "A=3", DB_TRIAL_OK, 3.0); /* outside the session */

    db_session found = {0};
    cr_assert_eq(db_session_find_resumable(db, k.dev, &found, NULL), FMQA_OK);
    cr_assert_eq(found.id, s.id);
    cr_assert_str_eq(found.strategy, "random");
    cr_assert_str_eq(found.problem_set, "op=decode,batch=8");
    cr_assert_eq(found.seed, 1234u);
    cr_assert_eq(found.budget, 50);
    db_session_free(&found);

    db_hash_set set;
    char h1[FMQA_HASH_HEX], h2[FMQA_HASH_HEX], h3[FMQA_HASH_HEX];
    db_config_hash("A=1", h1);
    db_config_hash("A=2", h2);
    db_config_hash("A=3", h3);
    cr_assert_eq(db_trials_done(db, s.id, k.dev, k.tmpl, k.prob, &set, NULL), FMQA_OK);
    cr_assert_eq(set.count, 2);
    cr_assert(db_hash_set_contains(&set, h1));
    cr_assert(db_hash_set_contains(&set, h2));
    cr_assert_not(db_hash_set_contains(&set, h3));
    db_hash_set_free(&set);
    cr_assert_eq(db_trials_done(db, 0, k.dev, k.tmpl, k.prob, &set, NULL), FMQA_OK);
    cr_assert_eq(set.count, 3);
    db_hash_set_free(&set);

    cr_assert_eq(db_session_finish(db, s.id, DB_SESSION_INTERRUPTED, NULL), FMQA_OK);
    cr_assert_eq(db_session_find_resumable(db, k.dev, &found, NULL), FMQA_OK);
    cr_assert_eq(found.status, DB_SESSION_INTERRUPTED);
    cr_assert_gt(found.finished_at, 0);
    db_session_free(&found);
    cr_assert_eq(db_session_finish(db, s.id, DB_SESSION_DONE, NULL), FMQA_OK);
    fmqa_err err = {0};
    cr_assert_eq(db_session_find_resumable(db, k.dev, &found, &err), FMQA_ERR_NOT_FOUND);
    cr_assert_eq(db_session_finish(db, 77, DB_SESSION_DONE, &err), FMQA_ERR_NOT_FOUND);
    db_close(db);
}

Test(db_store, cubin_cache_round_trip)
{
    const char *path = path_in_dir("c.db");
    db_t *db = fmqa_test_db_open_rw(path);
    unsigned char bin[1000];
    for (size_t i = 0; i < sizeof bin; i++)
        bin[i] = (unsigned char)(i * 7);
    void *data = NULL;
    size_t size = 0;
    fmqa_err err = {0};
    cr_assert_eq(db_cubin_get(db, "k1", &data, &size, &err), FMQA_ERR_NOT_FOUND);
    cr_assert_eq(db_cubin_put(db, "k1", bin, sizeof bin, "sm_90", "13.0", "hash1",
                              "{\"registers\":64}", &err), FMQA_OK, "%s", err.msg);
    cr_assert_eq(db_cubin_get(db, "k1", &data, &size, &err), FMQA_OK);
    cr_assert_eq(size, sizeof bin);
    cr_assert_eq(memcmp(data, bin, size), 0);
    free(data);
    bin[0] = 0xFF; /* put replaces */
    cr_assert_eq(db_cubin_put(db, "k1", bin, 10, "sm_90", "13.0", NULL, NULL, NULL), FMQA_OK);
    cr_assert_eq(db_cubin_get(db, "k1", &data, &size, NULL), FMQA_OK);
    cr_assert_eq(size, 10);
    cr_assert_eq(((unsigned char *)data)[0], 0xFF);
    free(data);
    cr_assert_eq(db_cubin_put(db, "k2", bin, 0, "sm_90", "13.0", NULL, NULL, &err),
                 FMQA_ERR_INVALID_ARGUMENT);
    db_close(db);
    cr_assert_eq(count_rows(path, "SELECT count(*) FROM cubins"), 1);
}
