/*
 * test_db_stale.c -- winners stay true: a best entry records its spread, tuner
 * version and timing method; a faster time within the noise (0.01 us faster
 * with 100x the spread) does not displace a tight incumbent, a clear win does;
 * the incumbent re-measured slower keeps its slower time; timings of another
 * timing method or tuner version are stale and give way to fresh ones.
 */
#define _POSIX_C_SOURCE 200809L
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "db.h"
#include "test_support.h"

static char path[64];
static db_t *db;
static int64_t dev_id, tpl_id, prob_id;
static fmqa_device_info dev;
static fmqa_problem prob;
static char dev_key[FMQA_HASH_HEX];

static void setup(void)
{
    db = fmqa_test_db_temp(path, "fmqa-stale", 0);
    memset(&dev, 0, sizeof dev);
    strcpy(dev.name, "NVIDIA H100 80GB HBM3");
    strcpy(dev.arch, "sm_90");
    dev.cc_major = 9;
    dev.sm_count = 132;
    db_device_key(&dev, dev_key);
    fmqa_problem_init(&prob);
    prob.batch = 8;
    prob.num_q_heads = 32;
    prob.kv_len = 4096;
    cr_assert_eq(db_device_upsert(db, &dev, &dev_id, NULL), FMQA_OK);
    cr_assert_eq(db_template_upsert(db, "decode", "h", &tpl_id, NULL), FMQA_OK);
    cr_assert_eq(db_problem_upsert(db, &prob, &prob_id, NULL), FMQA_OK);
}

static void teardown(void)
{
    db_close(db);
    unlink(path);
}

TestSuite(stale, .init = setup, .fini = teardown);

/* Records an ok trial (median us, spread = (p80 - p20) / median) and offers
 * it; returns whether it became the best. */
static bool offer(const char *config, double us, double spread, int method, const char *version)
{
    db_trial t = {.device_id = dev_id, .template_id = tpl_id, .problem_id = prob_id,
                  .config = config, .status = DB_TRIAL_OK, .median_us = us,
                  .p20_us = us * (1 - spread / 2), .p80_us = us * (1 + spread / 2),
                  .min_us = us * 0.9, .runs = 50, .tuner_version = version,
                  .timing_method = method};
    int64_t id;
    bool replaced = false;
    fmqa_err err;
    cr_assert_eq(db_trial_insert(db, &t, &id, &err), FMQA_OK, "%s", err.msg);
    cr_assert_eq(db_best_update(db, id, 0, &replaced, &err), FMQA_OK, "%s", err.msg);
    return replaced;
}

static db_best_entry best(void)
{
    db_best_entry e;
    fmqa_err err;
    cr_assert_eq(db_best_lookup_exact(db, dev_key, "decode", "h", &prob, &e, &err), FMQA_OK,
                 "%s", err.msg);
    return e;
}

Test(stale, a_win_within_the_noise_does_not_displace_a_tight_incumbent)
{
    cr_assert(offer("A=1", 10.0, 0.01, 1, "v1"));
    cr_assert_not(offer("A=2", 9.99, 1.0, 1, "v1"), "0.01 us faster with 100x the spread won");
    db_best_entry e = best();
    cr_assert_str_eq(e.config, "A=1");
    cr_assert_float_eq(e.spread, 0.01, 1e-9);
    cr_assert_str_eq(e.tuner_version, "v1");
    cr_assert_eq(e.timing_method, 1);
    cr_assert_not(offer("A=3", 9.95, 0.01, 1, "v1"), "0.5%% faster is within the margin");
    cr_assert(offer("A=4", 9.0, 0.02, 1, "v1"), "10%% faster must win");
    cr_assert_str_eq(best().config, "A=4");
}

Test(stale, the_incumbent_re_measured_slower_keeps_the_slower_time)
{
    cr_assert(offer("A=1", 9.99, 0.01, 1, "v1"));
    cr_assert(offer("A=1", 14.0, 0.01, 1, "v1"), "a re-measurement must replace the old time");
    db_best_entry e = best();
    cr_assert_float_eq(e.median_us, 14.0, 1e-9);
    /* Now a config at 12 us beats it. */
    cr_assert(offer("A=2", 12.0, 0.01, 1, "v1"));
    cr_assert_str_eq(best().config, "A=2");
}

Test(stale, another_timing_method_or_tuner_version_makes_old_timings_stale)
{
    cr_assert(offer("A=1", 9.99, 0.01, 1, "v1"));
    db_best_entry e = best();
    cr_assert_not(db_best_is_stale(&e, 1, "v1"));
    cr_assert(db_best_is_stale(&e, 2, "v1"));
    cr_assert(db_best_is_stale(&e, 1, "v2"));
    /* A newer tuner measures the incumbent at 14 us: that is its time now. */
    cr_assert(offer("A=1", 14.0, 0.01, 1, "v2"));
    cr_assert_float_eq(best().median_us, 14.0, 1e-9);
    /* A new timing method: the first fresh time replaces the stale one, even
     * a slower one of another config. */
    cr_assert(offer("A=2", 20.0, 0.01, 2, "v2"));
    e = best();
    cr_assert_str_eq(e.config, "A=2");
    cr_assert_eq(e.timing_method, 2);
    cr_assert_not(db_best_is_stale(&e, 2, "v2"));
}
