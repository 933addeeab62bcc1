/*
 * test_db_cli_failures.c -- fastmqa-db (as a subprocess) under failure: a
 * maintenance command never creates a database that did not exist, and an
 * export that fails part way (here the file size limit, standing in for a
 * full disk) leaves the previous file as it was and no partial or temporary
 * file behind; an import that refuses a best row says so in its exit status.
 */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "db.h"

#define TOOL FMQA_BINARY_DIR "/db/fastmqa-db"

static char dir[64];

static void setup(void)
{
    strcpy(dir, "/tmp/fmqa_db_cli_XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
}

static void teardown(void)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_expect_eq(system(cmd), 0);
}

TestSuite(db_cli, .init = setup, .fini = teardown);

static int run(const char *cmd, char *out, size_t cap)
{
    char full[2048];
    snprintf(full, sizeof full, "%s 2>&1", cmd);
    FILE *p = popen(full, "r");
    cr_assert_not_null(p);
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = 0;
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Files in the test directory whose name starts with prefix. */
static int files_named(const char *prefix)
{
    DIR *d = opendir(dir);
    int n = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;)
        n += strncmp(e->d_name, prefix, strlen(prefix)) == 0;
    closedir(d);
    return n;
}

Test(db_cli, maintenance_never_creates_a_database)
{
    static const char *const cmds[] = {"vacuum", "prune --older-than 1", "stats", "export"};
    char cmd[512], out[4096], path[128];
    snprintf(path, sizeof path, "%s/missing.db", dir);
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        snprintf(cmd, sizeof cmd, "%s %s --db %s", TOOL, cmds[i], path);
        cr_expect_neq(run(cmd, out, sizeof out), 0, "%s succeeded: %s", cmds[i], out);
        cr_expect(strstr(out, "No such file or directory"), "%s: %s", cmds[i], out);
        cr_expect_eq(access(path, F_OK), -1, "%s created %s", cmds[i], path);
    }
    cr_expect_eq(files_named("missing"), 0);
}

Test(db_cli, a_failed_export_keeps_the_old_file_and_leaves_nothing)
{
    char path[128], target[128], cmd[1024], out[4096];
    snprintf(path, sizeof path, "%s/t.db", dir);
    snprintf(target, sizeof target, "%s/out.jsonl", dir);
    db_t *db;
    cr_assert_eq(db_open(path, DB_READ_WRITE, 0, &db, NULL), FMQA_OK);
    static char blob[8192];
    memset(blob, 'x', sizeof blob);
    cr_assert_eq(db_cubin_put(db, "k", blob, sizeof blob, "sm_90", "12.4", NULL, NULL, NULL),
                 FMQA_OK);
    db_close(db);
    FILE *f = fopen(target, "w");
    fputs("the previous export\n", f);
    fclose(f);
    /* 4 KiB file size limit; SIGXFSZ ignored so that write fails with EFBIG */
    snprintf(cmd, sizeof cmd, "trap '' XFSZ; ulimit -f 4; %s export %s --db %s", TOOL, target,
             path);
    cr_expect_neq(run(cmd, out, sizeof out), 0, "the export succeeded: %s", out);
    char back[64] = "";
    f = fopen(target, "r");
    cr_assert_not_null(f);
    cr_expect_not_null(fgets(back, sizeof back, f));
    fclose(f);
    cr_expect_str_eq(back, "the previous export\n");
    cr_expect_eq(files_named("out.jsonl"), 1, "a temporary file was left behind");
    /* without the limit it replaces the file */
    snprintf(cmd, sizeof cmd, "%s export %s --db %s", TOOL, target, path);
    cr_expect_eq(run(cmd, out, sizeof out), 0, "%s", out);
    f = fopen(target, "r");
    cr_expect_not_null(fgets(back, sizeof back, f));
    fclose(f);
    cr_expect_str_neq(back, "the previous export\n");
    cr_expect_eq(files_named("out.jsonl"), 1, "a temporary file was left behind");
}

Test(db_cli, an_import_that_refuses_a_best_row_exits_3)
{
    char path[128], jsonl[128], cmd[1024], out[4096];
    snprintf(path, sizeof path, "%s/t.db", dir);
    snprintf(jsonl, sizeof jsonl, "%s/in.jsonl", dir);
    FILE *f = fopen(jsonl, "w");
    cr_assert_not_null(f);
    fputs("{\"table\":\"best\",\"trial_uid\":\"nope\",\"config\":\"a\",\"median_us\":1}\n", f);
    fclose(f);
    snprintf(cmd, sizeof cmd, "%s import %s --db %s", TOOL, jsonl, path);
    cr_expect_eq(run(cmd, out, sizeof out), 3, "%s", out);
    cr_expect(strstr(out, "1 best entry refused"), "%s", out);
    cr_expect(strstr(out, "its trial is not in the import nor in the file"), "%s", out);
    /* the same database merged into another refuses the same row: nothing to
       refuse there (the row never arrived), so the merge is complete */
    char other[128];
    snprintf(other, sizeof other, "%s/o.db", dir);
    snprintf(cmd, sizeof cmd, "%s merge %s --db %s", TOOL, path, other);
    cr_expect_eq(run(cmd, out, sizeof out), 0, "%s", out);
}
