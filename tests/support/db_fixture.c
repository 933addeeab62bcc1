/*
 * db_fixture.c -- fills a tuning database with the rows a tuning run would
 * leave, so tests of the dispatcher and of the levels can ask it questions
 * without a GPU.
 */
#define _POSIX_C_SOURCE 200809L /* mkstemp */

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "test_support.h"

static struct db *open_rw(const char *path, int busy_ms)
{
    db_t *db = NULL;
    fmqa_err err = {0};
    cr_assert_eq(db_open(path, DB_READ_WRITE, busy_ms, &db, &err), FMQA_OK, "%s", err.msg);
    return db;
}

struct db *fmqa_test_db_open_rw(const char *path)
{
    return open_rw(path, 0);
}

struct db *fmqa_test_db_temp(char *path, const char *prefix, int busy_ms)
{
    snprintf(path, 64, "/tmp/%s-XXXXXX", prefix);
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0, "mkstemp %s", path);
    close(fd);
    unlink(path); /* a name only: db_open creates the database */
    return open_rw(path, busy_ms);
}

int64_t fmqa_test_db_trial(struct db *db, const fmqa_device_info *d, const char *template_name,
                           const char *template_hash, const fmqa_problem *p, const char *config,
                           db_trial_status status, double median_us, double p20_us,
                           double p80_us)
{
    fmqa_err err;
    int64_t dev_id, tpl_id, prob_id, trial_id;
    cr_assert_eq(db_device_upsert(db, d, &dev_id, &err), FMQA_OK, "%s", err.msg);
    cr_assert_eq(db_template_upsert(db, template_name, template_hash, &tpl_id, &err), FMQA_OK,
                 "%s", err.msg);
    cr_assert_eq(db_problem_upsert(db, p, &prob_id, &err), FMQA_OK, "%s", err.msg);
    db_trial tr = {0};
    tr.device_id = dev_id, tr.template_id = tpl_id, tr.problem_id = prob_id;
    tr.config = config;
    tr.status = status;
    tr.median_us = tr.min_us = median_us;
    tr.p20_us = p20_us, tr.p80_us = p80_us;
    tr.runs = median_us > 0 ? 10 : 0;
    cr_assert_eq(db_trial_insert(db, &tr, &trial_id, &err), FMQA_OK, "%s", err.msg);
    return trial_id;
}

void fmqa_test_db_best(struct db *db, const fmqa_device_info *d, const char *template_name,
                       const char *template_hash, const fmqa_problem *p, const char *config,
                       double us, double default_us)
{
    fmqa_err err;
    int64_t trial_id = fmqa_test_db_trial(db, d, template_name, template_hash, p, config,
                                          DB_TRIAL_OK, us, us, us);
    cr_assert_eq(db_best_update(db, trial_id, default_us, NULL, &err), FMQA_OK, "%s", err.msg);
}
