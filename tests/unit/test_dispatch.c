/*
 * test_dispatch.c -- the dispatcher's three answers (tuned, nearest legal
 * bucket, template default) on a fixture template and a fixture database, for
 * a described device (no GPU needed); and among the real prefill templates,
 * the untuned default of the device's architecture and the tuned fastest.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "db.h"
#include "gen.h"
#include "rt.h"
#include "test_support.h"

static gen_lib *lib;
static db_t *db;
static fmqa_device_info dev;
static char path[] = "/tmp/fmqa-dispatch-XXXXXX";

static fmqa_problem problem(int32_t batch, int32_t kv_len)
{
    fmqa_problem p;
    fmqa_problem_init(&p);
    p.batch = batch;
    p.num_q_heads = 32;
    p.kv_len = kv_len;
    return p;
}

/* One ok trial of `config` for the problem, offered as the best. */
static void tune(const gen_template *t, const fmqa_device_info *d, const char *hash,
                 fmqa_problem p, const char *config, double us)
{
    fmqa_test_db_best(db, d, gen_template_name(t), hash, &p, config, us, 2 * us);
}

static void setup(void)
{
    fmqa_err err;
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    close(fd);
    unlink(path);
    cr_assert_eq(gen_lib_open(FMQA_SOURCE_DIR "/tests/fixtures/dispatch", &lib, &err), FMQA_OK,
                 "%s", err.msg);
    cr_assert_eq(db_open(path, DB_READ_WRITE, 0, &db, &err), FMQA_OK, "%s", err.msg);
    cr_assert_eq(gen_device_preset("sm_90", &dev, &err), FMQA_OK, "%s", err.msg);
    const gen_template *t = gen_lib_find(lib, "toy");
    cr_assert_not_null(t, "%s", gen_template_message(gen_lib_at(lib, 0)));
    /* Tuned: batch 8 at kv 64 (BLOCK=64) and at kv 4096 (BLOCK=32). */
    tune(t, &dev, gen_template_hash(t), problem(8, 64), "BLOCK=64", 5.0);
    tune(t, &dev, gen_template_hash(t), problem(8, 4096), "BLOCK=32", 50.0);
}

static void teardown(void)
{
    db_close(db);
    gen_lib_close(lib);
    unlink(path);
}

static fmqa_choice choose(fmqa_problem p, const fmqa_device_info *d)
{
    fmqa_err err;
    const gen_template *t;
    gen_config c;
    fmqa_choice choice;
    cr_assert_eq(rt_choose(lib, db, d, &p, &t, &c, &choice, &err), FMQA_OK, "%s", err.msg);
    cr_assert_str_eq(choice.template_name, "toy");
    return choice;
}

TestSuite(dispatch, .init = setup, .fini = teardown);

Test(dispatch, exact_bucket_is_tuned)
{
    fmqa_choice c = choose(problem(8, 4000), &dev); /* bucket 8 x 4096 */
    cr_assert_eq(c.source, FMQA_CHOICE_TUNED);
    cr_assert_str_eq(c.config, "BLOCK=32");
    cr_assert_float_eq(c.tuned_time_us, 50.0, 1e-9);
}

Test(dispatch, nearest_bucket_when_no_exact_entry)
{
    fmqa_choice c = choose(problem(16, 2048), &dev); /* 1 + 1 from 8 x 4096 */
    cr_assert_eq(c.source, FMQA_CHOICE_NEAREST);
    cr_assert_str_eq(c.config, "BLOCK=32");
    c = choose(problem(4, 128), &dev); /* 1 + 1 from 8 x 64, 1 + 5 from 8 x 4096 */
    cr_assert_eq(c.source, FMQA_CHOICE_NEAREST);
    cr_assert_str_eq(c.config, "BLOCK=64");
}

Test(dispatch, illegal_nearest_config_is_skipped)
{
    tune(gen_lib_find(lib, "toy"), &dev, gen_template_hash(gen_lib_find(lib, "toy")),
         problem(8, 128), "BLOCK=32", 8.0);
    /* kv 40 lies in the 64 bucket, whose BLOCK=64 does not fit 40 tokens: the
     * next candidate (8 x 128, BLOCK=32) is legal. */
    fmqa_choice c = choose(problem(8, 40), &dev);
    cr_assert_eq(c.source, FMQA_CHOICE_NEAREST);
    cr_assert_str_eq(c.config, "BLOCK=32");
    cr_assert_str_eq(c.reason, "nearest tuned bucket (batch 8, kv_len 128)");
    /* kv 20: no tuned config within reach fits, the default does. */
    c = choose(problem(8, 20), &dev);
    cr_assert_eq(c.source, FMQA_CHOICE_DEFAULT);
    cr_assert_str_eq(c.config, "BLOCK=16");
    cr_assert(strstr(c.reason, "not legal for this shape"), "%s", c.reason);
}

Test(dispatch, other_class_device_or_template_version_gets_the_default)
{
    fmqa_problem p = problem(8, 4096);
    p.num_kv_heads = 8; /* another problem class */
    cr_assert_eq(choose(p, &dev).source, FMQA_CHOICE_DEFAULT);

    fmqa_device_info other = dev;
    other.sm_count = 114; /* an H100 PCIe is another device */
    cr_assert_eq(choose(problem(8, 4096), &other).source, FMQA_CHOICE_DEFAULT);

    /* Entries of an older template version are never used. */
    teardown();
    fmqa_err err;
    strcpy(path, "/tmp/fmqa-dispatch-XXXXXX");
    int fd = mkstemp(path);
    close(fd);
    unlink(path);
    cr_assert_eq(gen_lib_open(FMQA_SOURCE_DIR "/tests/fixtures/dispatch", &lib, &err), FMQA_OK);
    cr_assert_eq(db_open(path, DB_READ_WRITE, 0, &db, &err), FMQA_OK, "%s", err.msg);
    tune(gen_lib_find(lib, "toy"), &dev, "0123456789abcdef0123456789abcdef", problem(8, 4096),
         "BLOCK=64", 5.0);
    cr_assert_eq(choose(problem(8, 4096), &dev).source, FMQA_CHOICE_DEFAULT);
}

Test(dispatch, no_template_for_the_op_is_unsupported)
{
    fmqa_err err;
    fmqa_problem p = problem(8, 4096);
    p.op = FMQA_OP_MLA_DECODE;
    const gen_template *t;
    gen_config c;
    fmqa_choice choice;
    cr_assert_eq(rt_choose(lib, db, &dev, &p, &t, &c, &choice, &err), FMQA_ERR_UNSUPPORTED);
    cr_assert(strstr(err.msg, "no mla_decode template"), "%s", err.msg);
}

/* Untuned, the real library's op templates compete on their defaults: the
 * one built for the device's architecture wins where it is legal (prefill_sm90
 * on a Hopper, prefill on an A100 or for what prefill_sm90 refuses), and ops
 * with one template keep it. */
static const char *default_template(const char *arch, const char *spec)
{
    static char name[64];
    fmqa_err err;
    gen_lib *real;
    fmqa_device_info d;
    fmqa_problem p;
    const gen_template *t;
    gen_config c;
    fmqa_choice choice;
    cr_assert_eq(gen_lib_open(FMQA_SOURCE_DIR "/templates", &real, &err), FMQA_OK, "%s", err.msg);
    cr_assert_eq(gen_device_preset(arch, &d, &err), FMQA_OK, "%s", err.msg);
    cr_assert_eq(gen_problem_parse(spec, &p, &err), FMQA_OK, "%s: %s", spec, err.msg);
    cr_assert_eq(rt_choose(real, NULL, &d, &p, &t, &c, &choice, &err), FMQA_OK, "%s: %s", spec, err.msg);
    cr_assert_eq(choice.source, FMQA_CHOICE_DEFAULT);
    fmqa_strlcpy(name, choice.template_name, sizeof name);
    gen_lib_close(real);
    return name;
}

Test(dispatch_default, the_device_architectures_own_template_first)
{
    const char *prefill = "op=prefill,batch=4,heads=32,kv_heads=8,d=128,tq=4096,kv_len=4096,q=bf16,"
                          "kv=bf16,out=bf16,flags=causal";
    cr_assert_str_eq(default_template("sm_90a", prefill), "prefill_sm90");
    cr_assert_str_eq(default_template("sm_80", prefill), "prefill");
    cr_assert_str_eq(default_template("sm_90a", "op=prefill,batch=1,heads=32,kv_heads=8,d=128,tq=512,kv_len=512,"
                                                 "q=bf16,kv=bf16,out=bf16,window=64,flags=causal"), "prefill");
    /* prefill_sm90 does not soft-cap: the sm_80 template serves a capped problem */
    cr_assert_str_eq(default_template("sm_90a", "op=prefill,batch=1,heads=32,kv_heads=8,d=128,tq=512,kv_len=512,"
                                                 "q=bf16,kv=bf16,out=bf16,softcap=30,flags=causal"), "prefill");
    cr_assert_str_eq(default_template("sm_90a", "op=decode,batch=8,kv_len=4096"), "decode");
    cr_assert_str_eq(default_template("sm_80", "op=decode,batch=8,kv_len=4096"), "decode");
}

/* Tuned, prefill's two templates compete on their measured times (issue 13:
 * "the dispatcher picks it where the tuner found it faster"): the faster
 * exact entry wins whichever template it belongs to, and an exact entry beats
 * a nearest one of the other template. */
static fmqa_choice tuned_prefill(gen_lib *real, const fmqa_device_info *d, db_t *tdb,
                                 const fmqa_problem *p)
{
    const gen_template *t;
    gen_config c;
    fmqa_choice choice;
    fmqa_err err;
    cr_assert_eq(rt_choose(real, tdb, d, p, &t, &c, &choice, &err), FMQA_OK, "%s", err.msg);
    return choice;
}

/* An entry of template `name` at its default config for p, timed us. */
static void tune_default(gen_lib *real, const fmqa_device_info *d, const char *name,
                         const fmqa_problem *p, double us)
{
    const gen_template *t = gen_lib_find(real, name);
    cr_assert_not_null(t);
    gen_config c;
    char text[GEN_CONFIG_TEXT_CAP];
    fmqa_err err;
    cr_assert_eq(gen_default(t, p, d, &c, &err), FMQA_OK, "%s: %s", name, err.msg);
    gen_config_text(&c, text, sizeof text);
    fmqa_test_db_best(db, d, name, gen_template_hash(t), p, text, us, us);
}

Test(dispatch, prefill_templates_compete_on_their_tuned_times)
{
    gen_lib *real;
    fmqa_device_info h;
    fmqa_problem p, far;
    fmqa_err err;
    cr_assert_eq(gen_lib_open(FMQA_SOURCE_DIR "/templates", &real, &err), FMQA_OK, "%s", err.msg);
    cr_assert_eq(gen_device_preset("sm_90a", &h, &err), FMQA_OK, "%s", err.msg);
    cr_assert_eq(gen_problem_parse("op=prefill,batch=4,heads=32,kv_heads=8,d=128,tq=4096,"
                                   "kv_len=4096,q=bf16,kv=bf16,out=bf16,flags=causal", &p, &err),
                 FMQA_OK, "%s", err.msg);
    /* Untuned, the Hopper template serves. */
    cr_assert_str_eq(tuned_prefill(real, &h, db, &p).template_name, "prefill_sm90");
    /* The tuner found the mma.sync template faster: it serves. */
    tune_default(real, &h, "prefill_sm90", &p, 900.0);
    tune_default(real, &h, "prefill", &p, 700.0);
    fmqa_choice c = tuned_prefill(real, &h, db, &p);
    cr_assert_str_eq(c.template_name, "prefill");
    cr_assert_eq(c.source, FMQA_CHOICE_TUNED);
    cr_assert_float_eq(c.tuned_time_us, 700.0, 1e-9);
    /* Re-measured faster, the Hopper template takes over. */
    tune_default(real, &h, "prefill_sm90", &p, 500.0);
    c = tuned_prefill(real, &h, db, &p);
    cr_assert_str_eq(c.template_name, "prefill_sm90");
    cr_assert_float_eq(c.tuned_time_us, 500.0, 1e-9);
    /* At batch 8 prefill_sm90 has only its nearest entry (batch 4) and prefill an
     * exact one, slower: the exact one serves. */
    far = p;
    far.batch = 8;
    tune_default(real, &h, "prefill", &far, 1400.0);
    c = tuned_prefill(real, &h, db, &far);
    cr_assert_str_eq(c.template_name, "prefill");
    cr_assert_eq(c.source, FMQA_CHOICE_TUNED);
    gen_lib_close(real);
}

/* MLA decode of more sequences than CUDA's grid z holds (65535): validation
 * lets it through (MLA decode's persistent grid has only an x axis),
 * mla_decode_sm90, whose grid z is the batch, refuses it, and the dispatcher
 * falls back to mla_decode, whose launch plan fits CUDA's limits. */
Test(dispatch_default, mla_decode_beyond_grid_z_falls_back_to_the_persistent_grid)
{
    const char *small = "op=mla_decode,batch=64,heads=16,kv_heads=1,d=576,dv=512,kv_len=4096,"
                        "q=bf16,kv=bf16,out=bf16,flags=causal";
    const char *big = "op=mla_decode,batch=70000,heads=16,kv_heads=1,d=576,dv=512,kv_len=4096,"
                      "q=bf16,kv=bf16,out=bf16,flags=causal";
    cr_assert_str_eq(default_template("sm_90a", small), "mla_decode_sm90");
    cr_assert_str_eq(default_template("sm_90a", big), "mla_decode");
    gen_lib *real;
    fmqa_device_info d;
    fmqa_problem p;
    fmqa_err err;
    gen_config c;
    gen_plan plan;
    cr_assert_eq(gen_lib_open(FMQA_SOURCE_DIR "/templates", &real, &err), FMQA_OK, "%s", err.msg);
    cr_assert_eq(gen_device_preset("sm_90a", &d, &err), FMQA_OK, "%s", err.msg);
    cr_assert_eq(gen_problem_parse(big, &p, &err), FMQA_OK, "%s", err.msg);
    const gen_template *sm90 = gen_lib_find(real, "mla_decode_sm90");
    fmqa_status st = gen_default(sm90, &p, &d, &c, &err);
    if (st == FMQA_OK)
        st = gen_check(sm90, &c, &p, &d, &err);
    cr_expect_eq(st, FMQA_ERR_UNSUPPORTED);
    cr_expect(strstr(err.msg, "one grid z index per sequence"), "%s", err.msg);
    const gen_template *t = gen_lib_find(real, "mla_decode");
    cr_assert_eq(gen_default(t, &p, &d, &c, &err), FMQA_OK, "%s", err.msg);
    cr_assert_eq(gen_launch_plan(t, &c, &p, &d, &plan, &err), FMQA_OK, "%s", err.msg);
    for (int k = 0; k < plan.n_kernels; k++)
        cr_expect(plan.kernels[k].grid[1] <= 65535 && plan.kernels[k].grid[2] <= 65535,
                  "kernel %d grid (%u, %u, %u)", k, plan.kernels[k].grid[0],
                  plan.kernels[k].grid[1], plan.kernels[k].grid[2]);
    gen_lib_close(real);
}
