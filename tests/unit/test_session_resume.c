/*
 * test_session_resume.c -- sessions have an owner (host, pid, heartbeat):
 * resuming refuses a session whose process still runs (a child process that
 * created it and waits) and takes over one whose process is gone, or whose
 * heartbeat is stale (an owner on another host), or that was interrupted.
 */
#define _POSIX_C_SOURCE 200809L
#include <criterion/criterion.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "db.h"
#include "test_support.h"

static char path[64];
static db_t *db;
static int64_t dev_id;

static void setup(void)
{
    db = fmqa_test_db_temp(path, "fmqa-resume", 0);
    fmqa_device_info dev;
    memset(&dev, 0, sizeof dev);
    strcpy(dev.name, "NVIDIA H100 80GB HBM3");
    dev.sm_count = 132;
    cr_assert_eq(db_device_upsert(db, &dev, &dev_id, NULL), FMQA_OK);
}

static void teardown(void)
{
    db_close(db);
    unlink(path);
}

TestSuite(resume, .init = setup, .fini = teardown);

/* A child process that creates a session, reports it through a pipe, and
 * waits to be killed (a tuner still running). */
static pid_t running_tuner(int64_t *session_id)
{
    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        db_t *mine = NULL;
        db_session s = {.device_id = dev_id, .strategy = "exhaustive"};
        if (db_open(path, DB_READ_WRITE, 0, &mine, NULL) != FMQA_OK ||
            db_session_create(mine, &s, NULL) != FMQA_OK)
            _exit(1);
        if (write(fds[1], &s.id, sizeof s.id) != (ssize_t)sizeof s.id)
            _exit(1);
        for (;;)
            pause();
    }
    close(fds[1]);
    cr_assert_eq(read(fds[0], session_id, sizeof *session_id), (ssize_t)sizeof *session_id);
    close(fds[0]);
    return pid;
}

static db_session resumable(void)
{
    db_session s;
    fmqa_err err;
    cr_assert_eq(db_session_find_resumable(db, dev_id, &s, &err), FMQA_OK, "%s", err.msg);
    return s;
}

Test(resume, a_live_session_is_refused_and_a_dead_one_taken_over)
{
    int64_t id;
    pid_t child = running_tuner(&id);
    db_session s = resumable();
    cr_assert_eq(s.id, id);
    cr_assert_eq(s.pid, (int64_t)child);
    cr_assert_not_null(s.host);
    db_session_free(&s);
    fmqa_err err;
    cr_assert_eq(db_session_claim(db, id, NULL, &err), FMQA_ERR_INVALID_ARGUMENT,
                 "a running session was taken over");
    cr_assert(strstr(err.msg, "is still running (pid"), "%s", err.msg);
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    db_session mine;
    cr_assert_eq(db_session_claim(db, id, &mine, &err), FMQA_OK, "%s", err.msg);
    cr_assert_eq(mine.pid, (int64_t)getpid());
    cr_assert_eq(mine.status, DB_SESSION_RUNNING);
    db_session_free(&mine);
    s = resumable();
    cr_assert_eq(s.pid, (int64_t)getpid(), "the owner was not recorded");
    db_session_free(&s);
}

/* Runs SQL on the file from a second connection (a process elsewhere). */
static void sql(const char *text)
{
    sqlite3 *c;
    cr_assert_eq(sqlite3_open(path, &c), SQLITE_OK);
    cr_assert_eq(sqlite3_exec(c, text, NULL, NULL, NULL), SQLITE_OK, "%s", sqlite3_errmsg(c));
    sqlite3_close(c);
}

Test(resume, another_hosts_session_is_live_until_its_heartbeat_is_stale)
{
    db_session s = {.device_id = dev_id, .strategy = "random"};
    fmqa_err err;
    cr_assert_eq(db_session_create(db, &s, &err), FMQA_OK, "%s", err.msg);
    sql("UPDATE sessions SET host = 'elsewhere', pid = 1, heartbeat_at = strftime('%s') - 10");
    cr_assert_eq(db_session_claim(db, s.id, NULL, &err), FMQA_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(err.msg, "on elsewhere"), "%s", err.msg);
    /* A heartbeat 10 s old is a live owner; one older than the bound is not. */
    char stale[160];
    snprintf(stale, sizeof stale,
             "UPDATE sessions SET heartbeat_at = strftime('%%s') - %d", DB_SESSION_STALE_S + 5);
    sql(stale);
    cr_assert_eq(db_session_claim(db, s.id, NULL, &err), FMQA_OK, "%s", err.msg);
}

Test(resume, interrupted_and_ownerless_sessions_are_taken_over)
{
    db_session s = {.device_id = dev_id, .strategy = "local"};
    fmqa_err err;
    cr_assert_eq(db_session_create(db, &s, &err), FMQA_OK, "%s", err.msg);
    cr_assert_eq(db_session_finish(db, s.id, DB_SESSION_INTERRUPTED, &err), FMQA_OK);
    cr_assert_eq(db_session_claim(db, s.id, NULL, &err), FMQA_OK, "%s", err.msg);
    /* A session from before owners were recorded (schema 1). */
    sql("UPDATE sessions SET host = NULL, pid = 0, heartbeat_at = 0, status = 'running'");
    cr_assert_eq(db_session_claim(db, s.id, NULL, &err), FMQA_OK, "%s", err.msg);
    cr_assert_eq(db_session_finish(db, s.id, DB_SESSION_DONE, &err), FMQA_OK);
    cr_assert_eq(db_session_claim(db, s.id, NULL, &err), FMQA_ERR_INVALID_ARGUMENT);
}
