/*
 * test_cubin_store.c -- the cubin cache the dispatcher and the tuner share
 * (runtime/rt_cubin.c over db_cubin_get/put): stores the database refuses are
 * counted and reported, never silent; a cubin whose size or checksum does not
 * match is dropped (a miss, so the compiler builds it again), counted, and its
 * row deleted.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <sqlite3.h>

#include "db.h"
#include "rt.h"

static char dir[64];

static void setup(void)
{
    strcpy(dir, "/tmp/fmqa_cubin_store_XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
}

static void teardown(void)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_expect_eq(system(cmd), 0);
}

static gen_binary binary(const char *key, const char *bytes)
{
    gen_binary b;
    memset(&b, 0, sizeof b);
    fmqa_strlcpy(b.key, key, sizeof b.key);
    fmqa_strlcpy(b.arch, "sm_90", sizeof b.arch);
    b.cubin = (void *)bytes;
    b.size = strlen(bytes);
    return b;
}

static void sql(const char *path, const char *text)
{
    sqlite3 *c;
    cr_assert_eq(sqlite3_open(path, &c), SQLITE_OK);
    cr_assert_eq(sqlite3_exec(c, text, NULL, NULL, NULL), SQLITE_OK, "%s", sqlite3_errmsg(c));
    sqlite3_close(c);
}

TestSuite(cubin_store, .init = setup, .fini = teardown);

Test(cubin_store, damaged_cubins_are_dropped_and_counted)
{
    char path[128], line[2048];
    snprintf(path, sizeof path, "%s/t.db", dir);
    db_t *db;
    cr_assert_eq(db_open(path, DB_READ_WRITE, 0, &db, NULL), FMQA_OK);
    rt_cubin_store s;
    rt_cubin_store_init(&s, db, NULL);
    gen_cache_hook hook = rt_cubin_hook(&s);
    gen_binary a = binary("key-a", "ELF cubin a"), b = binary("key-b", "ELF cubin b");
    hook.put(hook.user, &a);
    hook.put(hook.user, &b);
    gen_binary got;
    cr_assert(hook.get(hook.user, "key-a", &got));
    cr_expect_eq(got.size, a.size);
    cr_expect_eq(memcmp(got.cubin, a.cubin, a.size), 0);
    free(got.cubin);

    /* same size, other bytes: the checksum catches it; truncation: the size */
    sql(path, "UPDATE cubins SET data = CAST('ELF cubin X' AS BLOB) WHERE key = 'key-a';"
              "UPDATE cubins SET data = CAST('ELF' AS BLOB) WHERE key = 'key-b';");
    cr_expect_not(hook.get(hook.user, "key-a", &got), "a damaged cubin was served");
    cr_expect_not(hook.get(hook.user, "key-b", &got), "a truncated cubin was served");
    fmqa_err err = {0};
    void *data;
    size_t size;
    cr_expect_eq(db_cubin_get(db, "key-a", &data, &size, &err), FMQA_ERR_NOT_FOUND,
                 "the damaged row stays: %s", err.msg);
    cr_expect_eq(rt_cubin_store_summary(&s, line, sizeof line), 0);
    cr_expect(strstr(line, "cubin cache: 2 stored, 0 not kept by the database, 2 damaged dropped; "
                           "last failure: cubin key-b is damaged: 3 bytes, 11 recorded"),
              "%s", line);
    /* the recompiled cubin takes its place */
    hook.put(hook.user, &a);
    cr_assert(hook.get(hook.user, "key-a", &got));
    free(got.cubin);
    rt_cubin_store_fini(&s);
    db_close(db);
}

Test(cubin_store, stores_a_locked_database_refuses_are_reported)
{
    char path[128], line[2048];
    snprintf(path, sizeof path, "%s/t.db", dir);
    db_t *db;
    cr_assert_eq(db_open(path, DB_READ_WRITE, 1, &db, NULL), FMQA_OK);
    rt_cubin_store s;
    rt_cubin_store_init(&s, db, NULL);
    gen_cache_hook hook = rt_cubin_hook(&s);
    sqlite3 *other;
    cr_assert_eq(sqlite3_open(path, &other), SQLITE_OK);
    cr_assert_eq(sqlite3_exec(other, "BEGIN EXCLUSIVE", NULL, NULL, NULL), SQLITE_OK);
    gen_binary a = binary("key-a", "ELF cubin a");
    hook.put(hook.user, &a);
    hook.put(hook.user, &a);
    sqlite3_exec(other, "ROLLBACK", NULL, NULL, NULL);
    sqlite3_close(other);
    cr_expect_eq(rt_cubin_store_summary(&s, line, sizeof line), 2);
    cr_expect(strstr(line, "cubin cache: 0 stored, 2 not kept by the database, 0 damaged dropped; "
                           "last failure: "),
              "%s", line);
    cr_expect(strstr(line, "locked"), "%s", line);
    hook.put(hook.user, &a);
    cr_expect_eq(rt_cubin_store_summary(&s, line, sizeof line), 2);
    cr_expect(strstr(line, "1 stored"), "%s", line);
    rt_cubin_store_fini(&s);
    db_close(db);
}

/* Rows without a checksum (stored before schema 3, or imported) are still
 * served, checked by size. */
Test(cubin_store, rows_without_a_checksum_are_checked_by_size)
{
    char path[128];
    snprintf(path, sizeof path, "%s/t.db", dir);
    db_t *db;
    cr_assert_eq(db_open(path, DB_READ_WRITE, 0, &db, NULL), FMQA_OK);
    db_close(db);
    sql(path, "INSERT INTO cubins(key, arch, nvrtc_version, size, data, created_at, last_used)"
              " VALUES('old', 'sm_90', '12.4', 4, CAST('ELF!' AS BLOB), 0, 0);");
    cr_assert_eq(db_open(path, DB_READ_WRITE, 0, &db, NULL), FMQA_OK);
    void *data;
    size_t size;
    fmqa_err err = {0};
    cr_assert_eq(db_cubin_get(db, "old", &data, &size, &err), FMQA_OK, "%s", err.msg);
    cr_expect_eq(size, 4);
    free(data);
    db_close(db);
}
