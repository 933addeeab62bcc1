/*
 * test_db_readonly.c -- the database as a read-only or absent file, and what
 * opening it costs the runtime.
 *
 *  - A tuned database in a read-only directory (a file shipped inside a
 *    read-only image): every read-only fastmqa-db command and the runtime's
 *    lookup work, and nothing is created beside the file.  The tests run as
 *    root, who passes every access() check, so the directory is made 0555:
 *    FastMQA treats permission bits that deny writing to everyone as
 *    read-only even for root, and opens with immutable=1.  The check is real
 *    as root: a plain SQLite mode=ro open there creates -shm and -wal files
 *    in the directory, which the assertions on its listing catch.
 *  - A path that does not exist: read-only commands fail without creating
 *    it; a context that only validates problems and reports memory creates
 *    nothing; the first plan lookup does.
 *  - The runtime's open and lookup read a bounded number of pages (SQLite's
 *    cache misses) however large the file: no integrity check, nothing that
 *    scales with the trials table.  The tuner's checked open reads it all.
 */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "db_internal.h"
#include "rt.h"
#include "test_support.h"

#define DBTOOL FMQA_BINARY_DIR "/db/fastmqa-db"
#define TOYS FMQA_SOURCE_DIR "/tests/fixtures/dispatch"

static char dir[] = "/tmp/fmqa_db_ro_XXXXXX";
static char path[256];
static fmqa_device_info dev;

static fmqa_problem problem(void)
{
    fmqa_problem p;
    fmqa_problem_init(&p);
    p.batch = 8, p.num_q_heads = 32, p.kv_len = 64;
    return p;
}

/* A context on `path` with the dispatcher's fixture template "toy". */
static fmqa_ctx_t *context(void)
{
    fmqa_options o = FMQA_OPTIONS_INIT;
    o.db_path = path, o.template_dir = TOYS;
    fmqa_ctx_t *ctx = NULL;
    cr_assert_eq(fmqa_ctx_create(&o, &ctx), FMQA_OK, "%s", fmqa_ctx_errmsg(ctx));
    return ctx;
}

/* What the runtime chooses for problem() through the context's database. */
static fmqa_choice_source lookup(fmqa_ctx_t *ctx, db_t **db_out)
{
    gen_lib *lib;
    const gen_template *t;
    gen_config c;
    fmqa_choice choice;
    fmqa_err err;
    fmqa_problem p = problem();
    cr_assert_eq(rt_templates(ctx, &lib, &err), FMQA_OK, "%s", err.msg);
    db_t *db = rt_database(ctx);
    cr_assert_eq(rt_choose(lib, db, &dev, &p, &t, &c, &choice, &err), FMQA_OK, "%s", err.msg);
    if (db_out)
        *db_out = db;
    return choice.source;
}

/* A tuned file: the fixture's best entry for problem() on dev, plus `pad`
 * trials of ~400 bytes each (the bulk a long tuning history leaves). */
static void make_db(int pad)
{
    db_t *db;
    fmqa_err err;
    gen_lib *lib;
    cr_assert_eq(gen_lib_open(TOYS, &lib, &err), FMQA_OK, "%s", err.msg);
    const gen_template *t = gen_lib_find(lib, "toy");
    fmqa_problem p = problem();
    cr_assert_eq(db_open(path, DB_READ_WRITE, 0, &db, &err), FMQA_OK, "%s", err.msg);
    fmqa_test_db_best(db, &dev, "toy", gen_template_hash(t), &p, "BLOCK=32", 5.0, 9.0);
    gen_lib_close(lib);
    if (pad)
        cr_assert_eq(sqlite3_exec(db->conn,
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000)"
            " INSERT INTO trials(uid, device_id, template_id, problem_id, config, config_hash,"
            "  status, message, created_at)"
            " SELECT 'pad' || i, device_id, template_id, problem_id, 'BLOCK=16',"
            "  hex(randomblob(16)), 'pruned', hex(randomblob(200)), 0"
            " FROM n, (SELECT * FROM trials LIMIT 1)", NULL, NULL, NULL), SQLITE_OK, "%s",
            sqlite3_errmsg(db->conn));
    db_close(db);
}

/* The directory's entries, sorted, space-separated. */
static void listing(char *out, size_t cap)
{
    struct dirent **names;
    int n = scandir(dir, &names, NULL, alphasort);
    cr_assert_geq(n, 0);
    out[0] = 0;
    for (int i = 0; i < n; i++) {
        if (names[i]->d_name[0] != '.')
            snprintf(out + strlen(out), cap - strlen(out), "%s ", names[i]->d_name);
        free(names[i]);
    }
    free(names);
}

static void setup(void)
{
    fmqa_err err;
    cr_assert_not_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/tune.db", dir);
    cr_assert_eq(gen_device_preset("sm_90", &dev, &err), FMQA_OK, "%s", err.msg);
}

static void teardown(void)
{
    char cmd[300];
    chmod(dir, 0755);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_expect_eq(system(cmd), 0);
}

TestSuite(db_readonly, .init = setup, .fini = teardown, .timeout = 120);

Test(db_readonly, tuned_file_in_read_only_directory)
{
    char out[16384], cmd[512], before[512], after[512];
    make_db(0);
    listing(before, sizeof before);
    cr_assert_str_eq(before, "tune.db ", "a closed database leaves only its file");
    cr_assert_eq(chmod(dir, 0555), 0);
    cr_assert(!db_path_writable(path), "0555 directory seen as writable");

    const char *reads[] = {"stats", "best", "devices", "problems", "trials", "compiles", "check"};
    for (size_t i = 0; i < sizeof reads / sizeof reads[0]; i++) {
        snprintf(cmd, sizeof cmd, "%s %s --db %s", DBTOOL, reads[i], path);
        int rc = fmqa_test_run(cmd, out, sizeof out);
        cr_expect_eq(rc, 0, "fastmqa-db %s: exit %d: %s", reads[i], rc, out);
    }
    snprintf(cmd, sizeof cmd, "%s best --db %s", DBTOOL, path);
    fmqa_test_run(cmd, out, sizeof out);
    cr_expect(strstr(out, "BLOCK=32"), "%s", out);
    /* A command that writes says why it cannot. */
    snprintf(cmd, sizeof cmd, "%s prune --older-than 1 --db %s", DBTOOL, path);
    cr_expect_eq(fmqa_test_run(cmd, out, sizeof out), 1, "%s", out);
    cr_expect(strstr(out, "the directory is read-only"), "%s", out);

    /* The runtime: read-only handle, the tuned entry found. */
    fmqa_ctx_t *ctx = context();
    cr_expect_eq(lookup(ctx, NULL), FMQA_CHOICE_TUNED);
    fmqa_ctx_destroy(ctx);

    listing(after, sizeof after);
    cr_expect_str_eq(after, before, "files appeared in a read-only directory");
}

Test(db_readonly, missing_file_is_created_only_when_a_plan_needs_it)
{
    char out[4096], cmd[512], files[512];
    snprintf(cmd, sizeof cmd, "%s stats --db %s", DBTOOL, path);
    cr_expect_eq(fmqa_test_run(cmd, out, sizeof out), 1, "%s", out);
    cr_expect(strstr(out, "No such file"), "%s", out);

    fmqa_ctx_t *ctx = context();
    fmqa_problem p = problem();
    cr_expect_eq(fmqa_problem_validate(ctx, &p), FMQA_OK, "%s", fmqa_ctx_errmsg(ctx));
    fmqa_model_config m = {4096, 32, 1, 128, 0, 0, 4096, FMQA_DTYPE_F16};
    fmqa_level_policy pol;
    fmqa_memory_report rep;
    cr_expect_eq(fmqa_level_policy_preset(ctx, FMQA_LEVEL_BALANCED, &m, &pol), FMQA_OK);
    cr_expect_eq(fmqa_memory_report_compute(ctx, &m, &pol, 8, 0, &rep), FMQA_OK);
    gen_lib *lib;
    fmqa_err err;
    cr_expect_eq(rt_templates(ctx, &lib, &err), FMQA_OK, "%s", err.msg);
    listing(files, sizeof files);
    cr_expect_str_eq(files, "", "created before a plan needed the database");

    cr_expect_eq(lookup(ctx, NULL), FMQA_CHOICE_DEFAULT);
    listing(files, sizeof files);
    cr_expect(strstr(files, "tune.db "), "a plan's lookup opens (creates) it: '%s'", files);
    fmqa_ctx_destroy(ctx);
}

/* Pages SQLite read from the file on this connection so far. */
static int pages_read(db_t *db)
{
    int cur = 0, high = 0;
    cr_assert_eq(sqlite3_db_status(db->conn, SQLITE_DBSTATUS_CACHE_MISS, &cur, &high, 0),
                 SQLITE_OK);
    return cur;
}

/* Pages the runtime reads to open the file and look problem() up. */
static int runtime_pages(fmqa_choice_source *source)
{
    db_t *db;
    fmqa_ctx_t *ctx = context();
    *source = lookup(ctx, &db);
    int n = pages_read(db);
    fmqa_ctx_destroy(ctx);
    return n;
}

Test(db_readonly, runtime_open_and_lookup_do_not_grow_with_the_file)
{
    fmqa_choice_source src;
    make_db(0);
    int small = runtime_pages(&src);
    cr_expect_eq(src, FMQA_CHOICE_TUNED);
    unlink(path);
    make_db(1);
    struct stat sb;
    cr_assert_eq(stat(path, &sb), 0);
    long file_pages = (long)(sb.st_size / 4096);
    cr_assert_gt(file_pages, 1500, "fixture too small: %ld pages", file_pages);
    int big = runtime_pages(&src);
    cr_expect_eq(src, FMQA_CHOICE_TUNED);
    cr_expect_leq(big, small + 4, "runtime read %d pages of a %ld-page file (%d of a small one)",
                  big, file_pages, small);
    /* The measure sees an integrity check: the tuner's open reads the file. */
    db_t *db;
    fmqa_err err;
    cr_assert_eq(db_open(path, DB_READ_WRITE, 0, &db, &err), FMQA_OK, "%s", err.msg);
    cr_expect_gt(pages_read(db), file_pages / 2, "checked open read only %d pages",
                 pages_read(db));
    db_close(db);
}
