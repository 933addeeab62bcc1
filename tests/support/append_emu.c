/*
 * append_emu.c -- the append template's real source run on the CPU emulator
 * (tests/emu/append_emu.cpp) for one append_case, through the same path as
 * fmqa_append: rt_problem_check, the template's Lua for the config and launch
 * plan, rt_append_params for the kernel parameters from the public args.
 * See append_check.h (append_emu_case).
 */
#define _POSIX_C_SOURCE 200809L

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "append_check.h"
#include "fmqa_params.h"
#include "gen.h"
#include "rt.h"
#include "test_support.h"

typedef int (*emu_launch_fn)(const char *entry, const fmqa_append_params *p,
                             const unsigned grid[3], unsigned threads, unsigned dyn_smem);

/* The template's default config for p with the parameters of text overriding
 * it, which valid() must accept. */
static void make_config(const gen_template *t, const fmqa_problem *p, const fmqa_device_info *dev,
                        const char *text, gen_config *c)
{
    fmqa_err err;
    cr_assert_eq(gen_default(t, p, dev, c, &err), FMQA_OK, "%s", err.msg);
    if (!text[0])
        return;
    gen_config over;
    cr_assert_eq(gen_config_parse(text, &over, &err), FMQA_OK, "%s", err.msg);
    for (int i = 0; i < gen_template_param_count(t); i++) {
        const char *name = gen_template_param_name(t, i);
        int64_t v;
        if (gen_config_get(&over, name, &v))
            cr_assert_eq(gen_config_set(c, name, v, &err), FMQA_OK, "%s", err.msg);
    }
    cr_assert_eq(gen_check(t, c, p, dev, &err), FMQA_OK, "[%s]: %s", text, err.msg);
}

/* One run on the CPU: fresh inputs, rt_append_params, the plan's kernels. */
static void run_once(emu_launch_fn launch, const rt_plan *plan, const append_case *ac,
                     fmqa_dtype in, fmqa_dtype kv, fmqa_rope rope, int rope_q, const char *cfg)
{
    append_run r;
    append_run_init(&r, ac, in, kv, rope, rope_q);
    const fmqa_append_args a = append_run_host_args(&r);
    fmqa_append_params prm;
    fmqa_err err;
    cr_assert_eq(rt_append_params(plan, &a, &prm, &err), FMQA_OK, "%s: %s", r.name, err.msg);
    for (int i = 0; i < plan->launch.n_kernels; i++) {
        const gen_kernel *k = &plan->launch.kernels[i];
        cr_assert_eq(k->block[1] * k->block[2], 1);
        cr_assert_eq(launch(k->entry, &prm, k->grid, k->block[0], k->shared), 0, "%s", k->entry);
    }
    fprintf(stderr, "[%s] ", cfg);
    append_run_check(&r);
    append_run_free(&r);
}

void append_emu_case(const append_case *ac, fmqa_dtype in, fmqa_dtype kv, fmqa_rope rope,
                     const char *text)
{
    gen_lib *lib = NULL;
    fmqa_err err;
    cr_assert_eq(gen_lib_open(fmqa_test_template_dir(), &lib, &err), FMQA_OK, "%s: %s",
                 fmqa_test_template_dir(), err.msg);
    const gen_template *t = gen_lib_find(lib, "append");
    cr_assert_not_null(t);
    fmqa_device_info dev;
    cr_assert_eq(gen_device_preset("sm_90", &dev, &err), FMQA_OK, "%s", err.msg);

    rt_plan plan;
    memset(&plan, 0, sizeof plan);
    append_case_problem(ac, in, kv, rope, &plan.problem);
    cr_assert_eq(rt_problem_check(&plan.problem, &err), FMQA_OK, "%s", err.msg);
    make_config(t, &plan.problem, &dev, text, &plan.config);
    cr_assert_eq(gen_launch_plan(t, &plan.config, &plan.problem, &dev, &plan.launch, &err),
                 FMQA_OK, "%s", err.msg);
    char dir[] = "/tmp/fmqa-appemu-XXXXXX";
    emu_launch_fn launch = (emu_launch_fn)fmqa_test_emu_build(t, &plan.config, &plan.problem,
                                                              &dev, "append_emu.cpp", dir);
    char cfg[GEN_CONFIG_TEXT_CAP];
    gen_config_text(&plan.config, cfg, sizeof cfg);
    run_once(launch, &plan, ac, in, kv, rope, 1, cfg);
    if (!ac->q_only) /* a call without tokens needs q */
        run_once(launch, &plan, ac, in, kv, rope, 0, cfg);

    char rm[1100];
    snprintf(rm, sizeof rm, "rm -rf %s", dir);
    (void)system(rm);
    gen_lib_close(lib);
}

