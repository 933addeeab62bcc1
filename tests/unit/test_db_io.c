/*
 * test_db_io.c -- moving rows between databases and maintenance: export then
 * import round-trips every row (the second export is byte-identical to the
 * first but for the provenance of best entries), merge never displaces a
 * local best entry, keeps the faster imported one and is idempotent, a malformed
 * import changes nothing and names its line, prune by template hash and by age.
 */
#define _POSIX_C_SOURCE 200809L
#include <criterion/criterion.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "db.h"
#include "test_support.h"

static char dir[64];

static void make_dir(void)
{
    strcpy(dir, "/tmp/fmqa_db_io_XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
}

TestSuite(db_io, .init = make_dir);

static const char *path_in_dir(const char *name)
{
    static char buf[4][256];
    static int which;
    which = (which + 1) % 4;
    snprintf(buf[which], sizeof buf[which], "%s/%s", dir, name);
    return buf[which];
}

typedef struct fixture {
    int64_t dev, tmpl_old, tmpl_new, prob;
    char dev_key[FMQA_HASH_HEX];
    int64_t best_trial;
} fixture;

/* A device, two template versions, a problem, a session, trials of every
 * status, a best entry and two cubins; median times scaled by `scale`. */
static fixture fill(db_t *db, double scale)
{
    fixture f;
    fmqa_device_info d;
    memset(&d, 0, sizeof d);
    strcpy(d.name, "NVIDIA H100 80GB HBM3");
    strcpy(d.arch, "sm_90a");
    d.cc_major = 9;
    d.sm_count = 132;
    d.l2_bytes = 52428800;
    d.driver_version = 13000;
    d.nvrtc_major = 13;
    fmqa_problem p;
    memset(&p, 0, sizeof p);
    p.op = FMQA_OP_DECODE;
    p.batch = 4;
    p.num_q_heads = 16;
    p.num_kv_heads = 2;
    p.head_dim_qk = p.head_dim_v = 64;
    p.q_tokens = 1;
    p.kv_len = 1000;
    p.q_dtype = p.kv_dtype = p.out_dtype = FMQA_DTYPE_BF16;
    cr_assert_eq(db_device_upsert(db, &d, &f.dev, NULL), FMQA_OK);
    db_device_key(&d, f.dev_key);
    cr_assert_eq(db_template_upsert(db, "decode", "old", &f.tmpl_old, NULL), FMQA_OK);
    cr_assert_eq(db_template_upsert(db, "decode", "new", &f.tmpl_new, NULL), FMQA_OK);
    cr_assert_eq(db_problem_upsert(db, &p, &f.prob, NULL), FMQA_OK);
    db_session s = {.device_id = f.dev, .strategy = "exhaustive", .seed = 9,
                    .problem_set = "quoted \"text\"\nand a newline"};
    cr_assert_eq(db_session_create(db, &s, NULL), FMQA_OK);
    for (int i = 0; i < DB_TRIAL_STATUS_COUNT * 2; i++) {
        char cfg[32];
        snprintf(cfg, sizeof cfg, "BLOCK_N=%d", 16 << (i % 4));
        double med = (i % DB_TRIAL_STATUS_COUNT) == DB_TRIAL_OK ? scale * (10.0 + i) : 0.0;
        db_trial t = {.session_id = i % 2 ? s.id : 0, .device_id = f.dev,
                      .template_id = i < DB_TRIAL_STATUS_COUNT ? f.tmpl_old : f.tmpl_new,
                      .problem_id = f.prob, .config = cfg,
                      .status = (db_trial_status)(i % DB_TRIAL_STATUS_COUNT),
                      .median_us = med, .p20_us = med * 0.95, .p80_us = med * 1.1,
                      .min_us = med * 0.9, .runs = 50, .rel_l2_err = 1e-4 * i,
                      .compile_ms = 123.456, .tuner_version = "0.1.0",
                      .message = i == 1 ? "error: expected ';'\n\tat line 3 \\ é" : NULL};
        int64_t id;
        cr_assert_eq(db_trial_insert(db, &t, &id, NULL), FMQA_OK);
        if (med > 0 && t.template_id == f.tmpl_new) {
            cr_assert_eq(db_best_update(db, id, 2 * med, NULL, NULL), FMQA_OK);
            f.best_trial = id;
        }
    }
    unsigned char bin[257];
    for (int i = 0; i < 257; i++)
        bin[i] = (unsigned char)i;
    cr_assert_eq(db_cubin_put(db, "cubin-old", bin, 257, "sm_90a", "13.0", "old", NULL, NULL),
                 FMQA_OK);
    cr_assert_eq(db_cubin_put(db, "cubin-new", bin, 100, "sm_90a", "13.0", "new", "{}", NULL),
                 FMQA_OK);
    return f;
}

/* Exports into a malloc'ed string. */
static char *export_text(db_t *db, size_t *len)
{
    char *buf = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&buf, &n);
    fmqa_err err = {0};
    cr_assert_eq(db_export(db, f, &err), FMQA_OK, "%s", err.msg);
    fclose(f);
    if (len)
        *len = n;
    return buf;
}

static void import_text(db_t *db, const char *text, db_import_stats *st, fmqa_status want,
                        fmqa_err *err)
{
    FILE *f = fmemopen((void *)text, strlen(text), "r");
    cr_assert_eq(db_import(db, f, "test.jsonl", st, err), want, "%s", err->msg);
    fclose(f);
}

static db_stats stats(db_t *db)
{
    db_stats s;
    cr_assert_eq(db_stats_get(db, &s, NULL), FMQA_OK);
    return s;
}

Test(db_io, export_import_round_trips_every_row)
{
    db_t *a = fmqa_test_db_open_rw(path_in_dir("a.db"));
    fill(a, 1.0);
    size_t n1;
    char *t1 = export_text(a, &n1);
    db_stats sa = stats(a);
    cr_assert_eq(sa.trials, 12);
    cr_assert_eq(sa.best, 1);
    cr_assert_eq(sa.sessions, 1);
    cr_assert_eq(sa.cubins, 2);
    cr_assert_eq(sa.cubin_bytes, 357);
    /* One line per row. */
    size_t lines = 0;
    for (const char *p = t1; *p; p++)
        lines += *p == '\n';
    cr_assert_eq(lines, (size_t)(sa.devices + sa.templates + sa.problems + sa.sessions +
                                 sa.trials + sa.best + sa.cubins));

    db_t *b = fmqa_test_db_open_rw(path_in_dir("b.db"));
    db_import_stats is;
    fmqa_err err = {0};
    import_text(b, t1, &is, FMQA_OK, &err);
    cr_assert_eq(is.rows_read, (int64_t)lines);
    cr_assert_eq(is.rows_added, (int64_t)lines);
    size_t n2;
    char *t2 = export_text(b, &n2);
    /* The best entry now says where it came from; everything else is equal. */
    char *best1 = strstr(t1, "{\"table\":\"best\""), *best2 = strstr(t2, "{\"table\":\"best\"");
    cr_assert(best1 && best2);
    cr_assert(strstr(best1, "\"origin\":\"local\",\"origin_file\":null"));
    cr_assert(strstr(best2, "\"origin\":\"import\",\"origin_file\":\"test.jsonl\""), "%s", best2);
    cr_assert_eq(best1 - t1, best2 - t2);
    cr_assert_eq(strncmp(t1, t2, (size_t)(best1 - t1)), 0, "content differs after the round trip");
    cr_assert_str_eq(strchr(best1, '\n'), strchr(best2, '\n'));
    /* The cubin bytes survived base64. */
    void *data;
    size_t size;
    cr_assert_eq(db_cubin_get(b, "cubin-old", &data, &size, NULL), FMQA_OK);
    cr_assert_eq(size, 257);
    for (int i = 0; i < 257; i++)
        cr_assert_eq(((unsigned char *)data)[i], (unsigned char)i);
    free(data);
    /* Importing again adds nothing. */
    import_text(b, t1, &is, FMQA_OK, &err);
    cr_assert_eq(is.rows_added, 0);
    free(t1);
    free(t2);
    db_close(a);
    db_close(b);
}

Test(db_io, malformed_import_names_the_line_and_changes_nothing)
{
    db_t *db = fmqa_test_db_open_rw(path_in_dir("m.db"));
    fmqa_err err = {0};
    import_text(db,
                "{\"table\":\"templates\",\"name\":\"t1\",\"hash\":\"h\",\"first_seen\":1}\n"
                "\n"
                "{\"table\":\"templates\",\"name\":\"t2\" \"hash\":\"h\"}\n",
                NULL, FMQA_ERR_INVALID_ARGUMENT, &err);
    cr_assert_str_eq(err.msg, "test.jsonl:3:34: expected ',' or '}'");
    import_text(db, "{\"table\":\"nope\"}\n", NULL, FMQA_ERR_INVALID_ARGUMENT, &err);
    cr_assert_str_eq(err.msg, "test.jsonl:1: field \"table\": unknown table");
    /* A trial whose device is unknown violates NOT NULL: the line is named. */
    import_text(db,
                "{\"table\":\"trials\",\"uid\":\"u\",\"device_key\":\"x\",\"config\":\"A=1\"}",
                NULL, FMQA_ERR_INVALID_ARGUMENT, &err);
    cr_assert(strstr(err.msg, "test.jsonl:1: trials row:"), "%s", err.msg);
    cr_assert(strstr(err.msg, "NOT NULL"), "%s", err.msg);
    cr_assert_eq(stats(db).templates, 0, "a failed import left rows behind");
    db_close(db);
}

Test(db_io, merge_keeps_local_best_and_the_faster_import)
{
    db_t *a = fmqa_test_db_open_rw(path_in_dir("ma.db"));
    db_t *b = fmqa_test_db_open_rw(path_in_dir("mb.db"));
    fixture fa = fill(a, 1.0);
    fixture fb = fill(b, 0.5); /* same keys, other uids, twice as fast */
    db_close(b);
    db_import_stats is;
    fmqa_err err = {0};
    cr_assert_eq(db_merge(a, path_in_dir("mb.db"), &is, &err), FMQA_OK, "%s", err.msg);
    db_stats s = stats(a);
    cr_assert_eq(s.devices, 1);
    cr_assert_eq(s.templates, 2);
    cr_assert_eq(s.problems, 1);
    cr_assert_eq(s.sessions, 2);
    cr_assert_eq(s.trials, 24);
    cr_assert_eq(s.best, 1);
    cr_assert_eq(s.cubins, 2);
    db_best_entry e;
    fmqa_problem p;
    memset(&p, 0, sizeof p);
    p.op = FMQA_OP_DECODE;
    p.batch = 4;
    p.num_q_heads = 16;
    p.num_kv_heads = 2;
    p.head_dim_qk = p.head_dim_v = 64;
    p.q_tokens = 1;
    p.kv_len = 1000;
    p.q_dtype = p.kv_dtype = p.out_dtype = FMQA_DTYPE_BF16;
    cr_assert_eq(db_best_lookup_exact(a, fa.dev_key, "decode", "new", &p, &e, &err), FMQA_OK,
                 "%s", err.msg);
    /* b's entry is faster, but a's own measurement is never displaced by one
     * from elsewhere (a local re-tune re-measures both). */
    cr_assert_float_eq(e.median_us, 10.0 + 6, 1e-9, "got %g", e.median_us);
    cr_assert_eq(e.trial_id, fa.best_trial);
    cr_assert_not(e.imported);
    (void)fb;
    cr_assert_eq(db_merge(a, path_in_dir("mb.db"), &is, NULL), FMQA_OK);
    cr_assert_eq(is.rows_added, 0);
    cr_assert_eq(stats(a).trials, 24);
    cr_assert_eq(db_merge(a, path_in_dir("missing.db"), &is, &err), FMQA_ERR_NOT_FOUND);
    db_close(a);
    /* Into a file of its own, the faster of two imported entries wins. */
    db_t *c = fmqa_test_db_open_rw(path_in_dir("mc.db"));
    cr_assert_eq(db_merge(c, path_in_dir("ma.db"), &is, &err), FMQA_OK, "%s", err.msg);
    cr_assert_eq(db_merge(c, path_in_dir("mb.db"), &is, &err), FMQA_OK, "%s", err.msg);
    cr_assert_eq(db_best_lookup_exact(c, fa.dev_key, "decode", "new", &p, &e, &err), FMQA_OK);
    cr_assert_float_eq(e.median_us, 0.5 * (10.0 + 6), 1e-9, "got %g", e.median_us);
    cr_assert(e.imported);
    db_close(c);
}

Test(db_io, prune_by_template_and_age)
{
    const char *path = path_in_dir("p.db");
    db_t *db = fmqa_test_db_open_rw(path);
    fill(db, 1.0);
    const char *keep[] = {"new"};
    db_prune_opts o = {.keep_template_hashes = keep, .n_keep = 1};
    db_prune_stats ps;
    fmqa_err err = {0};
    cr_assert_eq(db_prune(db, &o, &ps, &err), FMQA_OK, "%s", err.msg);
    cr_assert_eq(ps.templates, 1);
    cr_assert_eq(ps.trials, 6);
    cr_assert_eq(ps.best, 0);
    cr_assert_eq(ps.cubins, 1);
    db_stats s = stats(db);
    cr_assert_eq(s.templates, 1);
    cr_assert_eq(s.trials, 6);
    cr_assert_eq(s.best, 1);
    cr_assert_eq(s.cubins, 1);

    /* Age the rows by 10 days behind the library's back. */
    sqlite3 *c;
    sqlite3_open(path, &c);
    sqlite3_busy_timeout(c, 2000);
    cr_assert_eq(sqlite3_exec(c, "UPDATE trials SET created_at = created_at - 864000;"
                                 "UPDATE cubins SET last_used = last_used - 864000",
                              NULL, NULL, NULL), SQLITE_OK, "%s", sqlite3_errmsg(c));
    sqlite3_close(c);
    db_prune_opts young = {.older_than_days = 30};
    cr_assert_eq(db_prune(db, &young, &ps, NULL), FMQA_OK);
    cr_assert_eq(ps.trials, 0);
    db_prune_opts old = {.older_than_days = 7};
    cr_assert_eq(db_prune(db, &old, &ps, NULL), FMQA_OK);
    cr_assert_eq(ps.trials, 5, "every old trial but the best one's");
    cr_assert_eq(ps.cubins, 1);
    s = stats(db);
    cr_assert_eq(s.trials, 1);
    cr_assert_eq(s.best, 1);
    cr_assert_eq(db_vacuum(db, &err), FMQA_OK, "%s", err.msg);
    db_close(db);
}
