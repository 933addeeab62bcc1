/*
 * test_append_emu.c -- the append template's real source run on the CPU
 * against the float64 reference, no GPU needed.
 *
 * Each variant goes through the same path as fmqa_append: rt_problem_check,
 * the template's Lua (default config, or one with parameters overridden,
 * checked by valid()) for the launch plan, gen_render for the source,
 * rt_append_params for the kernel parameters from public fmqa_append_args;
 * then the rendered source is compiled by the host C++ compiler with
 * tests/emu/cuda_emu.h (an emulation of what the kernel uses of CUDA: see
 * there) and runs over its grid on host memory.  Inputs, poisoned caches and
 * the checks are those of the GPU test (tests/support/append_check.h): rows
 * that must be written against ref_append_args, every other byte still
 * poisoned, q rotated in place when passed.  Each compiled variant runs twice,
 * with q passed and without.
 *
 * Coverage in ~27 compiles rather than the GPU test's 216: over the layouts
 * (contiguous d 64/96/128/256 with one dv != d, paged across page boundaries,
 * ring with sinks and wrap, more new tokens than ring slots, positions 1e5 and
 * 2^30) the variants take each (input dtype, cache dtype, RoPE) triple at
 * least once, and each config (default, THREADS_PER_ROW=16,VEC=2 and
 * THREADS_PER_ROW=4,VEC=4,ROWS_PER_CTA=8) meets every RoPE mode and cache
 * dtype.  Without a C++ compiler ($CXX or c++) the test is skipped.
 * $FASTMQA_TEMPLATE_DIR, if set, replaces the source tree's templates/ (to try
 * a changed kernel, or that a deliberately broken one fails).
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

static const char *const CONFIGS[3] = {
    "", "THREADS_PER_ROW=16,VEC=2", "THREADS_PER_ROW=4,VEC=4,ROWS_PER_CTA=8"};
static const fmqa_dtype IN[2] = {FMQA_DTYPE_F16, FMQA_DTYPE_BF16};
static const fmqa_dtype KV[4] = {FMQA_DTYPE_F16, FMQA_DTYPE_BF16, FMQA_DTYPE_INT8,
                                 FMQA_DTYPE_FP8_E4M3};

/* Renders the config, compiles it with the emulator into dir and returns
 * emu_launch (as tests/unit/test_decode_emu.c does for decode). */
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
                     fmqa_dtype in, fmqa_dtype kv, fmqa_rope rope, int rope_q,
                     const int32_t *rope_pos, const char *cfg)
{
    append_run r;
    append_run_init_at(&r, ac, in, kv, rope, rope_q, rope_pos);
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

/* Variant k (0..23) of a layout: RoPE k % 3, cache dtype k % 4 (together all
 * twelve pairs over k < 12), input dtype k / 12 % 2; config (k + shift) % 3. */
static void run_variant(const append_case *ac, int k, int shift)
{
    const fmqa_rope rope = (fmqa_rope)(k % 3);
    const fmqa_dtype in = IN[k / 12 % 2], kv = KV[k % 4];
    const char *text = CONFIGS[(k + shift) % 3];
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
    emu_launch_fn launch =
        (emu_launch_fn)fmqa_test_emu_build(t, &plan.config, &plan.problem, &dev, "append_emu.cpp", dir);
    char cfg[GEN_CONFIG_TEXT_CAP];
    gen_config_text(&plan.config, cfg, sizeof cfg);
    run_once(launch, &plan, ac, in, kv, rope, 1, NULL, cfg);
    run_once(launch, &plan, ac, in, kv, rope, 0, NULL, cfg);
    /* A cache compacted by fmqa_compress: written at start, rotated later on. */
    const int32_t rope_pos[3] = {ac->start[0] + 1000, ac->start[1] + 77, ac->start[2] + 3};
    if (rope != FMQA_ROPE_NONE && !(ac->flags & FMQA_FLAG_RING))
        run_once(launch, &plan, ac, in, kv, rope, 1, rope_pos, cfg);

    char rm[1100];
    snprintf(rm, sizeof rm, "rm -rf %s", dir);
    (void)system(rm);
    gen_lib_close(lib);
}

/* Layout i of the list takes variants 3i .. 3i+2 (mod 24), configs shifted by
 * i so that each config meets each RoPE mode. */
static void run_layouts(const append_case *cases, int n, int first)
{
    for (int i = 0; i < n; i++)
        for (int j = 0; j < 3; j++)
            run_variant(&cases[i], (3 * (first + i) + j) % 24, first + i);
}

#define PAGED FMQA_FLAG_PAGED
#define RING FMQA_FLAG_RING

/* The GPU test's layouts.  Starts: position 0, the last slots of the
 * capacity, an odd middle. */
static const append_case CONTIGUOUS[] = {
    {"contig d128", 3, 8, 2, 128, 128, 5, 64, 0, 0, 0, 0, {0, 59, 17}},
    {"contig d64 dv128 mqa", 2, 8, 1, 64, 128, 3, 40, 0, 0, 0, 0, {37, 1}},
    {"contig d96", 2, 4, 4, 96, 96, 2, 40, 0, 0, 0, 0, {38, 0}},
    {"contig d256", 1, 4, 2, 256, 256, 7, 16, 0, 0, 0, 0, {9}},
};
/* Tokens cross page boundaries (15 -> 16, 31 -> 32); ring sinks and the
 * wrap; 24 tokens into 16 ring slots; far positions. */
static const append_case PAGED_RING[] = {
    {"paged16 d128", 3, 8, 2, 128, 128, 5, 64, PAGED, 16, 0, 0, {13, 59, 29}},
    {"paged32 d64", 2, 4, 2, 64, 64, 9, 96, PAGED, 32, 0, 0, {28, 0}},
    {"ring w16 s4", 3, 8, 2, 128, 128, 5, 4096, RING, 0, 16, 4, {0, 2, 1000}},
    {"ring n24>w16", 2, 4, 1, 128, 128, 24, 4096, RING, 0, 16, 4, {3, 100}},
    {"ring paged pos 1e5, 2^30", 2, 8, 2, 128, 128, 3, 1 << 30, RING | PAGED, 16, 32, 4,
     {100000, (1 << 30) - 8}},
};

Test(append_emu, contiguous, .timeout = 900)
{
    run_layouts(CONTIGUOUS, 4, 0);
}

Test(append_emu, paged_ring, .timeout = 900)
{
    run_layouts(PAGED_RING, 5, 4);
}
