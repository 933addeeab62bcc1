/*
 * test_db_import.c -- imports and merges keep only what a trial proves: an
 * export with a wrong_result trial and a best row crowning it at 1.0 us (the
 * issue's crafted file), a best row whose config, time, template version or
 * error does not match an ok trial, are refused and counted; the dispatcher
 * keeps serving the proven entry; a local entry is never displaced; the best
 * listing says where each entry came from.
 */
#define _POSIX_C_SOURCE 200809L
#include <criterion/criterion.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "db.h"
#include "gen.h"
#include "rt.h"
#include "test_support.h"

static char dir[64];
static gen_lib *lib;
static const gen_template *tpl;
static fmqa_device_info dev;
static fmqa_problem prob;
static char good[GEN_CONFIG_TEXT_CAP], other[GEN_CONFIG_TEXT_CAP];

static void setup(void)
{
    strcpy(dir, "/tmp/fmqa_db_import_XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    lib = fmqa_test_open_templates();
    tpl = fmqa_test_template(lib, "decode", FMQA_OP_DECODE);
    dev = fmqa_test_device("sm_90");
    prob = fmqa_test_problem("op=decode,batch=8,heads=32,kv_heads=1,d=128,kv_len=4096");
    gen_config *space;
    size_t n;
    fmqa_err err;
    cr_assert_eq(gen_space(tpl, &prob, &dev, &space, &n, &err), FMQA_OK, "%s", err.msg);
    cr_assert_geq(n, 2);
    gen_config_text(&space[0], good, sizeof good);
    gen_config_text(&space[n - 1], other, sizeof other);
    free(space);
}

static void teardown(void)
{
    gen_lib_close(lib);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(db_import, .init = setup, .fini = teardown);

static const char *path_in_dir(const char *name)
{
    static char buf[4][256];
    static int which;
    which = (which + 1) % 4;
    snprintf(buf[which], sizeof buf[which], "%s/%s", dir, name);
    return buf[which];
}

/* A database whose best entry is `good` at 10 us. */
static db_t *tuned(const char *name)
{
    db_t *db = fmqa_test_db_open_rw(path_in_dir(name));
    fmqa_test_db_best(db, &dev, gen_template_name(tpl), gen_template_hash(tpl), &prob, good,
                      10.0, 20.0);
    return db;
}

static char *export_text(db_t *db)
{
    char *buf = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&buf, &n);
    fmqa_err err = {0};
    cr_assert_eq(db_export(db, f, &err), FMQA_OK, "%s", err.msg);
    fclose(f);
    return buf;
}

/* The string value of "name" in the first line of text that has it. */
static void json_field(const char *text, const char *name, char *out, size_t cap)
{
    char key[64];
    snprintf(key, sizeof key, "\"%s\":\"", name);
    const char *p = strstr(text, key);
    cr_assert_not_null(p, "no %s", name);
    p += strlen(key);
    size_t len = strcspn(p, "\"");
    cr_assert_lt(len, cap);
    memcpy(out, p, len);
    out[len] = '\0';
}

/* Appends to the export a trial (uid, status, config, median, error) and a
 * best row naming it with best_config and best_us. */
static char *craft(const char *exported, const char *uid, const char *status,
                   const char *config, double median, double rel_err, const char *hash,
                   const char *best_config, double best_us)
{
    char dev_key[80], problem_key[256], tname[64];
    json_field(exported, "device_key", dev_key, sizeof dev_key);
    json_field(exported, "problem_key", problem_key, sizeof problem_key);
    json_field(exported, "template_name", tname, sizeof tname);
    char *out = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&out, &n);
    fputs(exported, f);
    fprintf(f, "{\"table\":\"templates\",\"name\":\"%s\",\"hash\":\"%s\",\"first_seen\":1}\n",
            tname, hash);
    fprintf(f,
            "{\"table\":\"trials\",\"uid\":\"%s\",\"session_uid\":null,\"device_key\":\"%s\","
            "\"template_name\":\"%s\",\"template_hash\":\"%s\",\"problem_key\":\"%s\","
            "\"config\":\"%s\",\"config_hash\":\"x\",\"status\":\"%s\",\"median_us\":%.17g,"
            "\"p20_us\":%.17g,\"p80_us\":%.17g,\"min_us\":%.17g,\"spread\":0,\"runs\":10,"
            "\"rel_l2_err\":%.17g,\"max_abs_err\":0.5,\"created_at\":1}\n",
            uid, dev_key, tname, hash, problem_key, config, status, median, median, median,
            median, rel_err);
    fprintf(f,
            "{\"table\":\"best\",\"device_key\":\"%s\",\"template_name\":\"%s\","
            "\"template_hash\":\"%s\",\"problem_key\":\"%s\",\"trial_uid\":\"%s\","
            "\"config\":\"%s\",\"median_us\":%.17g,\"default_median_us\":20,\"updated_at\":1}\n",
            dev_key, tname, hash, problem_key, uid, best_config, best_us);
    fclose(f);
    return out;
}

static void import_text(db_t *db, const char *text, db_import_stats *st)
{
    FILE *f = fmemopen((void *)text, strlen(text), "r");
    fmqa_err err = {0};
    cr_assert_eq(db_import(db, f, "crafted.jsonl", st, &err), FMQA_OK, "%s", err.msg);
    fclose(f);
}

/* What the dispatcher serves for prob on dev from db. */
static fmqa_choice serve(db_t *db)
{
    const gen_template *t;
    gen_config c;
    fmqa_choice choice;
    fmqa_err err;
    cr_assert_eq(rt_choose(lib, db, &dev, &prob, &t, &c, &choice, &err), FMQA_OK, "%s",
                 err.msg);
    return choice;
}

Test(db_import, a_best_row_crowning_a_wrong_result_is_refused)
{
    db_t *a = tuned("a.db");
    char *exported = export_text(a);
    db_close(a);
    char *text = craft(exported, "crafted", "wrong_result", other, 0.0, 0.5,
                       gen_template_hash(tpl), other, 1.0);
    db_t *b = fmqa_test_db_open_rw(path_in_dir("b.db"));
    db_import_stats st;
    import_text(b, text, &st);
    cr_assert_eq(st.best_rejected, 1);
    cr_assert(strstr(st.rejected, "crafted.jsonl:"), "%s", st.rejected);
    cr_assert(strstr(st.rejected, "status wrong_result"), "%s", st.rejected);
    fmqa_choice c = serve(b);
    cr_assert_eq(c.source, FMQA_CHOICE_TUNED);
    cr_assert_str_eq(c.config, good, "served %s", c.config);
    cr_assert_float_eq(c.tuned_time_us, 10.0, 1e-9);
    /* The wrong trial itself is history and is kept. */
    db_stats s;
    cr_assert_eq(db_stats_get(b, &s, NULL), FMQA_OK);
    cr_assert_eq(s.trials_by_status[DB_TRIAL_WRONG_RESULT], 1);
    cr_assert_eq(s.best, 1);
    db_close(b);
    free(text);
    free(exported);
}

Test(db_import, best_rows_must_match_an_ok_verified_trial)
{
    db_t *a = tuned("a.db");
    char *exported = export_text(a);
    db_close(a);
    const char *h = gen_template_hash(tpl);
    struct {
        const char *uid, *why;
        double median, err;
        const char *hash, *best_config;
        double best_us;
    } cases[] = {
        {"config", "config differs", 9.0, 1e-4, h, good, 9.0},     /* crowns another config */
        {"time", "median differs", 9.0, 1e-4, h, other, 1.0},      /* claims a better time  */
        {"error", "exceeds the tolerance", 9.0, 0.5, h, other, 9.0},
        {"untimed", "no time", 0.0, 1e-4, h, other, 0.0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        db_t *b = fmqa_test_db_open_rw(path_in_dir("b.db"));
        char *text = craft(exported, cases[i].uid, "ok", other, cases[i].median, cases[i].err,
                           cases[i].hash, cases[i].best_config, cases[i].best_us);
        db_import_stats st;
        import_text(b, text, &st);
        cr_expect_eq(st.best_rejected, 1, "%s", cases[i].uid);
        cr_expect(strstr(st.rejected, cases[i].why), "%s: %s", cases[i].uid, st.rejected);
        cr_expect_str_eq(serve(b).config, good, "%s", cases[i].uid);
        db_close(b);
        unlink(path_in_dir("b.db"));
        free(text);
    }
    /* An honest faster entry of a template version this library does not have
     * is imported but never served: its hash differs. */
    db_t *b = fmqa_test_db_open_rw(path_in_dir("c.db"));
    char *text = craft(exported, "old-version", "ok", other, 1.0, 1e-4, "an-older-hash", other,
                       1.0);
    db_import_stats st;
    import_text(b, text, &st);
    cr_assert_eq(st.best_rejected, 0, "%s", st.rejected);
    cr_assert_str_eq(serve(b).config, good);
    db_close(b);
    free(text);
    free(exported);
}

Test(db_import, an_import_never_displaces_a_local_entry_and_says_where_it_came_from)
{
    db_t *a = tuned("a.db");
    char *exported = export_text(a);
    char *text = craft(exported, "faster", "ok", other, 5.0, 1e-4, gen_template_hash(tpl),
                       other, 5.0);
    db_t *b = tuned("b.db"); /* b's own measurement: good at 10 us */
    db_import_stats st;
    import_text(b, text, &st);
    cr_assert_eq(st.best_rejected, 0, "%s", st.rejected);
    cr_assert_str_eq(serve(b).config, good, "a local entry was displaced");
    /* Into a file without its own entry, the faster proven import wins and is
     * listed with its origin. */
    db_t *c = fmqa_test_db_open_rw(path_in_dir("c.db"));
    import_text(c, text, &st);
    cr_assert_str_eq(serve(c).config, other);
    db_rows rows;
    cr_assert_eq(db_list_best(c, &rows, NULL), FMQA_OK);
    cr_assert_eq(rows.nrows, 1);
    int col = -1;
    for (int i = 0; i < rows.ncols; i++)
        if (strcmp(rows.names[i], "source") == 0)
            col = i;
    cr_assert_geq(col, 0, "no source column");
    cr_assert(strstr(rows.cells[col], "imported from crafted.jsonl at "), "%s", rows.cells[col]);
    db_rows_free(&rows);
    cr_assert_eq(db_list_best(b, &rows, NULL), FMQA_OK);
    cr_assert_str_eq(rows.cells[col], "local");
    db_rows_free(&rows);
    db_close(a);
    db_close(b);
    db_close(c);
    free(text);
    free(exported);
}

Test(db_import, merge_refuses_a_best_entry_pointing_at_a_failed_trial)
{
    db_t *a = tuned("a.db");
    db_close(a);
    /* Tamper with the file itself: the best entry now names a wrong_result
     * trial of another config at 1.0 us. */
    sqlite3 *c;
    cr_assert_eq(sqlite3_open(path_in_dir("a.db"), &c), SQLITE_OK);
    cr_assert_eq(sqlite3_exec(c,
        "INSERT INTO trials(uid, device_id, template_id, problem_id, config, config_hash,"
        " status, median_us, rel_l2_err, created_at) SELECT 'bad', device_id, template_id,"
        " problem_id, 'X=1', 'x', 'wrong_result', 1.0, 0.5, 1 FROM trials LIMIT 1;"
        "UPDATE best SET trial_id = (SELECT id FROM trials WHERE uid = 'bad'), config = 'X=1',"
        " median_us = 1.0;", NULL, NULL, NULL), SQLITE_OK, "%s", sqlite3_errmsg(c));
    sqlite3_close(c);
    db_t *b = fmqa_test_db_open_rw(path_in_dir("b.db"));
    db_import_stats st;
    fmqa_err err;
    cr_assert_eq(db_merge(b, path_in_dir("a.db"), &st, &err), FMQA_OK, "%s", err.msg);
    cr_assert_eq(st.best_rejected, 1);
    cr_assert(strstr(st.rejected, "status wrong_result"), "%s", st.rejected);
    cr_assert_eq(serve(b).source, FMQA_CHOICE_DEFAULT);
    db_close(b);
}
