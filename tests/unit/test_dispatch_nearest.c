/*
 * test_dispatch_nearest.c -- reuse of a nearby tuned shape is bounded: the
 * issue's database (one decode entry at batch 1, kv_len 64) must not serve
 * batch 256 (too far) nor batch 1 at kv_len 131072 (4 CTAs on 132 SMs where
 * the default launches many); both get the default with a reason, while a
 * shape within reach still reuses the entry.  Shipped decode template, a
 * described sm_90 device, no GPU.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "db.h"
#include "gen.h"
#include "rt.h"
#include "test_support.h"

/* A persistent grid of 4 CTAs: as many as the default gives batch 2 at kv_len
 * 256 (two tiles a CTA), a handful at kv_len 131072. */
#define TUNED "BLOCK_N=32,BULK=0,M_TILES=1,SPLITS=4,STAGES=2,VBIAS=0,WARPS_M=2,WARPS_N=1"

static gen_lib *lib;
static const gen_template *tpl;
static db_t *db;
static fmqa_device_info dev;
static char path[64];

static fmqa_problem shape(int batch, int kv_len)
{
    char spec[160];
    snprintf(spec, sizeof spec, "op=decode,batch=%d,heads=32,kv_heads=1,d=128,kv_len=%d", batch,
             kv_len);
    return fmqa_test_problem(spec);
}

static void setup(void)
{
    fmqa_err err;
    strcpy(path, "/tmp/fmqa-nearest-XXXXXX");
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    close(fd);
    unlink(path);
    lib = fmqa_test_open_templates();
    tpl = fmqa_test_template(lib, "decode", FMQA_OP_DECODE);
    dev = fmqa_test_device("sm_90");
    cr_assert_eq(db_open(path, DB_READ_WRITE, 0, &db, &err), FMQA_OK, "%s", err.msg);
    fmqa_problem p = shape(1, 64);
    gen_config c;
    cr_assert_eq(gen_config_parse(TUNED, &c, &err), FMQA_OK, "%s", err.msg);
    cr_assert_eq(gen_check(tpl, &c, &p, &dev, &err), FMQA_OK, "%s", err.msg);
    fmqa_test_db_best(db, &dev, "decode", gen_template_hash(tpl), &p, TUNED, 3.0, 4.0);
}

static void teardown(void)
{
    db_close(db);
    gen_lib_close(lib);
    unlink(path);
}

TestSuite(nearest, .init = setup, .fini = teardown);

static fmqa_choice choose(fmqa_problem p)
{
    const gen_template *t;
    gen_config c;
    fmqa_choice choice;
    fmqa_err err;
    cr_assert_eq(rt_choose(lib, db, &dev, &p, &t, &c, &choice, &err), FMQA_OK, "%s", err.msg);
    return choice;
}

Test(nearest, the_tuned_bucket_itself_is_served)
{
    fmqa_choice c = choose(shape(1, 60));
    cr_assert_eq(c.source, FMQA_CHOICE_TUNED);
    cr_assert_str_eq(c.config, TUNED);
    cr_assert_str_eq(c.reason, "tuned bucket (batch 1, kv_len 64)");
}

Test(nearest, a_shape_within_reach_reuses_the_entry)
{
    fmqa_choice c = choose(shape(2, 256)); /* 1 batch step, 2 kv_len steps */
    cr_assert_eq(c.source, FMQA_CHOICE_NEAREST, "%s", c.reason);
    cr_assert_str_eq(c.config, TUNED);
    cr_assert_str_eq(c.reason, "nearest tuned bucket (batch 1, kv_len 64)");
}

Test(nearest, batch_256_is_too_far_and_gets_the_default)
{
    fmqa_choice c = choose(shape(256, 64));
    cr_assert_eq(c.source, FMQA_CHOICE_DEFAULT, "served %s", c.config);
    cr_assert(strstr(c.reason, "8 batch and 0 kv_len power-of-two steps away (at most 2 each)"),
              "%s", c.reason);
}

Test(nearest, a_long_sequence_is_too_far_and_gets_the_default)
{
    fmqa_choice c = choose(shape(1, 131072));
    cr_assert_eq(c.source, FMQA_CHOICE_DEFAULT, "served %s", c.config);
    cr_assert(strstr(c.reason, "11 kv_len power-of-two steps away"), "%s", c.reason);
}

Test(nearest, a_launch_that_leaves_sms_idle_gets_the_default)
{
    /* An entry two kv_len steps away (32768), 4 CTAs: within reach, but at
     * kv_len 131072 it would keep a handful of SMs busy. */
    fmqa_problem tuned = shape(1, 32768);
    fmqa_test_db_best(db, &dev, "decode", gen_template_hash(tpl), &tuned, TUNED, 30.0, 20.0);
    fmqa_choice c = choose(shape(1, 131072));
    cr_assert_eq(c.source, FMQA_CHOICE_DEFAULT, "served %s", c.config);
    cr_assert(strstr(c.reason, "the nearest tuned bucket (batch 1, kv_len 32768) would launch"),
              "%s", c.reason);
    cr_assert(strstr(c.reason, "CTAs on 132 SMs where the default launches"), "%s", c.reason);
    cr_assert_neq(strcmp(c.config, TUNED), 0);
}
