/*
 * db_fixture.c -- fills a tuning database with the rows a tuning run would
 * leave, so tests of the dispatcher and of the levels can ask it questions
 * without a GPU.
 */
#include <criterion/criterion.h>

#include "test_support.h"

void fmqa_test_db_best(struct db *db, const fmqa_device_info *d, const char *template_name,
                       const char *template_hash, const fmqa_problem *p, const char *config,
                       double us, double default_us)
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
    tr.status = DB_TRIAL_OK;
    tr.median_us = tr.p20_us = tr.p80_us = tr.min_us = us;
    tr.runs = 10;
    cr_assert_eq(db_trial_insert(db, &tr, &trial_id, &err), FMQA_OK, "%s", err.msg);
    cr_assert_eq(db_best_update(db, trial_id, default_us, NULL, &err), FMQA_OK, "%s", err.msg);
}
