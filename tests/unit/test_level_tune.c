/*
 * test_level_tune.c -- the aggressive level's 8-bit format chosen from tuning
 * measurements (rt_level_pick_format, behind fmqa_level_policy_tune), on the
 * shipped decode template, a fixture database and a described device.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "db.h"
#include "rt.h"
#include "test_support.h"

static gen_lib *lib;
static db_t *db;
static fmqa_device_info dev;
static fmqa_model_config model;
static char path[] = "/tmp/fmqa-level-tune-XXXXXX";

static void setup(void)
{
    fmqa_err err;
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    close(fd);
    unlink(path);
    lib = fmqa_test_open_templates();
    dev = fmqa_test_device("sm_90");
    cr_assert_eq(db_open(path, DB_READ_WRITE, 0, &db, &err), FMQA_OK, "%s", err.msg);
    memset(&model, 0, sizeof model);
    model.hidden_size = 4096, model.num_q_heads = 32, model.num_kv_heads = 1;
    model.max_seq_len = 4096, model.dtype = FMQA_DTYPE_F16;
}

static void teardown(void)
{
    db_close(db);
    gen_lib_close(lib);
    unlink(path);
}

static fmqa_level_policy aggressive(fmqa_dtype kv)
{
    fmqa_level_policy pol;
    cr_assert_eq(fmqa_level_policy_preset(NULL, FMQA_LEVEL_AGGRESSIVE, &model, &pol), FMQA_OK);
    pol.kv_dtype = kv;
    return pol;
}

/* A tuned best entry (the template default's config, legal by construction)
 * for the aggressive level's problem in format kv, at batch, on device d. */
static void tune(fmqa_dtype kv, int32_t batch, const fmqa_device_info *d, double us)
{
    fmqa_err err;
    fmqa_level_policy pol = aggressive(kv);
    fmqa_problem p;
    cr_assert_eq(fmqa_level_problem(NULL, &model, &pol, batch, &p), FMQA_OK);
    const gen_template *t = fmqa_test_template(lib, "decode", FMQA_OP_DECODE);
    gen_config c;
    char config[GEN_CONFIG_TEXT_CAP];
    cr_assert_eq(gen_default(t, &p, d, &c, &err), FMQA_OK, "%s", err.msg);
    gen_config_text(&c, config, sizeof config);
    fmqa_test_db_best(db, d, "decode", gen_template_hash(t), &p, config, us, 0.0);
}

static fmqa_dtype pick(fmqa_dtype start, int32_t batch, int *changed)
{
    fmqa_err err;
    fmqa_level_policy pol = aggressive(start);
    cr_assert_eq(rt_level_pick_format(lib, db, &dev, &model, batch, &pol, changed, &err),
                 FMQA_OK, "%s", err.msg);
    return pol.kv_dtype;
}

TestSuite(level_tune, .init = setup, .fini = teardown);

Test(level_tune, the_faster_tuned_format_wins)
{
    int changed;
    tune(FMQA_DTYPE_INT8, 8, &dev, 30.0);
    tune(FMQA_DTYPE_FP8_E4M3, 8, &dev, 25.0);
    cr_expect_eq(pick(FMQA_DTYPE_INT8, 8, &changed), FMQA_DTYPE_FP8_E4M3);
    cr_expect(changed);
    cr_expect_eq(pick(FMQA_DTYPE_FP8_E4M3, 8, &changed), FMQA_DTYPE_FP8_E4M3);
    cr_expect(!changed);
    /* A nearby batch uses the nearest tuned bucket, as the dispatcher would.
     * A smaller one: the int8 entry's VBIAS = 1 is legal only while a warp's
     * piece stays short (decode.lua), which a larger batch may break, and then
     * the dispatcher, and this choice, rightly ignore the entry. */
    cr_expect_eq(pick(FMQA_DTYPE_INT8, 4, &changed), FMQA_DTYPE_FP8_E4M3);
}

Test(level_tune, int8_stays_when_it_is_faster)
{
    int changed;
    tune(FMQA_DTYPE_INT8, 8, &dev, 20.0);
    tune(FMQA_DTYPE_FP8_E4M3, 8, &dev, 25.0);
    cr_expect_eq(pick(FMQA_DTYPE_FP8_E4M3, 8, &changed), FMQA_DTYPE_INT8);
    cr_expect(changed);
}

Test(level_tune, one_format_tuned_or_another_device_changes_nothing)
{
    int changed = 1;
    tune(FMQA_DTYPE_FP8_E4M3, 8, &dev, 1.0);
    cr_expect_eq(pick(FMQA_DTYPE_INT8, 8, &changed), FMQA_DTYPE_INT8);
    cr_expect(!changed);
    fmqa_device_info other = dev;
    other.sm_count = 114;
    tune(FMQA_DTYPE_INT8, 8, &other, 50.0);
    cr_expect_eq(pick(FMQA_DTYPE_INT8, 8, &changed), FMQA_DTYPE_INT8,
                 "int8 measured on another device does not count here");
}

Test(level_tune, a_16_bit_policy_is_left_alone)
{
    fmqa_err err;
    int changed = 1;
    tune(FMQA_DTYPE_INT8, 8, &dev, 30.0);
    tune(FMQA_DTYPE_FP8_E4M3, 8, &dev, 25.0);
    fmqa_level_policy pol;
    cr_assert_eq(fmqa_level_policy_preset(NULL, FMQA_LEVEL_BALANCED, &model, &pol), FMQA_OK);
    cr_assert_eq(rt_level_pick_format(lib, db, &dev, &model, 8, &pol, &changed, &err), FMQA_OK);
    cr_expect_eq(pol.kv_dtype, FMQA_DTYPE_F16);
    cr_expect(!changed);
}

Test(level_tune, the_public_call_checks_its_input_and_needs_the_device)
{
    char why[256];
    fmqa_ctx_t *ctx = fmqa_test_ctx();
    fmqa_level_policy pol = aggressive(FMQA_DTYPE_INT8);
    cr_expect_eq(fmqa_level_policy_tune(ctx, &model, 0, &pol, NULL), FMQA_ERR_INVALID_ARGUMENT);
    cr_expect(strstr(fmqa_ctx_errmsg(ctx), "batch 0"), "%s", fmqa_ctx_errmsg(ctx));
    if (!fmqa_test_gpu_available(why, sizeof why)) {
        fmqa_status st = fmqa_level_policy_tune(ctx, &model, 8, &pol, NULL);
        cr_expect(st == FMQA_ERR_NO_DRIVER || st == FMQA_ERR_NO_DEVICE, "%d", st);
        cr_expect_eq(pol.kv_dtype, FMQA_DTYPE_INT8, "nothing changes on failure");
    }
    fmqa_ctx_destroy(ctx);
}
