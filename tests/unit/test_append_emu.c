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

/* One compiled variant of a case, run with q passed and without. */
static void run_case(const append_case *ac, fmqa_dtype in, fmqa_dtype kv, fmqa_rope rope,
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
    emu_launch_fn launch =
        (emu_launch_fn)fmqa_test_emu_build(t, &plan.config, &plan.problem, &dev, "append_emu.cpp", dir);
    char cfg[GEN_CONFIG_TEXT_CAP];
    gen_config_text(&plan.config, cfg, sizeof cfg);
    run_once(launch, &plan, ac, in, kv, rope, 1, cfg);
    run_once(launch, &plan, ac, in, kv, rope, 0, cfg);

    char rm[1100];
    snprintf(rm, sizeof rm, "rm -rf %s", dir);
    (void)system(rm);
    gen_lib_close(lib);
}

/* Variant k (0..23) of a layout: RoPE k % 3, cache dtype k % 4 (together all
 * twelve pairs over k < 12), input dtype k / 12 % 2; config (k + shift) % 3. */
static void run_variant(const append_case *ac, int k, int shift)
{
    run_case(ac, IN[k / 12 % 2], KV[k % 4], (fmqa_rope)(k % 3), CONFIGS[(k + shift) % 3]);
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
    {"contig d128", 3, 8, 2, 128, 128, 5, 64, 0, 0, 0, 0, {0, 59, 17}, 0, 0, 0},
    {"contig d64 dv128 mqa", 2, 8, 1, 64, 128, 3, 40, 0, 0, 0, 0, {37, 1}, 0, 0, 0},
    {"contig d96", 2, 4, 4, 96, 96, 2, 40, 0, 0, 0, 0, {38, 0}, 0, 0, 0},
    {"contig d256", 1, 4, 2, 256, 256, 7, 16, 0, 0, 0, 0, {9}, 0, 0, 0},
};
/* Tokens cross page boundaries (15 -> 16, 31 -> 32); ring sinks and the
 * wrap; 24 tokens into 16 ring slots; far positions. */
static const append_case PAGED_RING[] = {
    {"paged16 d128", 3, 8, 2, 128, 128, 5, 64, PAGED, 16, 0, 0, {13, 59, 29}, 0, 0, 0},
    {"paged32 d64", 2, 4, 2, 64, 64, 9, 96, PAGED, 32, 0, 0, {28, 0}, 0, 0, 0},
    {"ring w16 s4", 3, 8, 2, 128, 128, 5, 4096, RING, 0, 16, 4, {0, 2, 1000}, 0, 0, 0},
    {"ring n24>w16", 2, 4, 1, 128, 128, 24, 4096, RING, 0, 16, 4, {3, 100}, 0, 0, 0},
    {"ring paged pos 1e5, 2^30", 2, 8, 2, 128, 128, 3, 1 << 30, RING | PAGED, 16, 32, 4,
     {100000, (1 << 30) - 8}, 0, 0, 0},
};

Test(append_emu, contiguous, .timeout = 900)
{
    run_layouts(CONTIGUOUS, 4, 0);
}

Test(append_emu, paged_ring, .timeout = 900)
{
    run_layouts(PAGED_RING, 5, 4);
}

/* ------------------------------------------------------------ MLA (issue 12) */

#define BF16 FMQA_DTYPE_BF16
#define F16 FMQA_DTYPE_F16
#define FP8 FMQA_DTYPE_FP8_E4M3
#define NEOX FMQA_ROPE_NEOX
#define GPTJ FMQA_ROPE_GPTJ

/* Latent rows of 512 + 64 (one KV head, no V; q is q_pe): contiguous and
 * paged with shuffled pages across page boundaries, DeepSeek-V3's 128 heads
 * with its YaRN-style angles from a table. */
static const append_case MLA[] = {
    {"mla contig", 2, 16, 1, 576, 512, 3, 64, 0, 0, 0, 0, {0, 61}, 0, 1, 0},
    {"mla paged16", 3, 16, 1, 576, 512, 4, 96, PAGED, 16, 0, 0, {13, 0, 62}, 0, 1, 0},
    {"mla paged64 h128 table", 2, 128, 1, 576, 512, 2, 256, PAGED, 64, 0, 0, {63, 190}, 0, 1,
     1},
};

Test(append_emu, mla_contiguous, .timeout = 900)
{
    run_case(&MLA[0], BF16, BF16, GPTJ, "");
    run_case(&MLA[0], F16, FP8, NEOX, "THREADS_PER_ROW=16,VEC=4");
}

Test(append_emu, mla_paged, .timeout = 900)
{
    run_case(&MLA[1], BF16, FP8, GPTJ, "");
    run_case(&MLA[1], F16, F16, NEOX, "THREADS_PER_ROW=16,VEC=8,ROWS_PER_CTA=4");
    run_case(&MLA[1], BF16, FP8, FMQA_ROPE_NONE, "");
    run_case(&MLA[2], BF16, FP8, GPTJ, "");
}

/* ------------------------------------------------------------ RoPE (issue 16) */

/* Partial rotary (the first rope_dim elements: 64 of 128; StableLM's 20 of
 * 80, whose 10 pairs allow only VEC 2) and angles from a cos/sin table (one
 * covering every token; one a position short, whose last token must stay
 * unwritten). */
static const append_case ROPE_CASES[] = {
    {"rope partial d128 r64", 2, 8, 2, 128, 128, 3, 64, 0, 0, 0, 0, {0, 50}, 64, 0, 0},
    {"rope partial d80 r20 ring", 2, 4, 1, 80, 80, 5, 4096, RING, 0, 16, 4, {0, 300}, 20, 0, 0},
    {"rope table d128 paged", 2, 8, 2, 128, 128, 4, 64, PAGED, 16, 0, 0, {5, 40}, 0, 0, 1},
    {"rope table short r32", 2, 4, 1, 64, 64, 4, 64, 0, 0, 0, 0, {10, 30}, 32, 0, 2},
};

Test(append_emu, rope_partial, .timeout = 900)
{
    run_case(&ROPE_CASES[0], F16, FMQA_DTYPE_INT8, NEOX, "");
    run_case(&ROPE_CASES[0], BF16, F16, GPTJ, "THREADS_PER_ROW=4,VEC=4,ROWS_PER_CTA=8");
    run_case(&ROPE_CASES[1], BF16, FP8, GPTJ, "");
    run_case(&ROPE_CASES[1], F16, BF16, NEOX, "");
}

Test(append_emu, rope_table, .timeout = 900)
{
    run_case(&ROPE_CASES[2], BF16, FMQA_DTYPE_INT8, NEOX, "");
    run_case(&ROPE_CASES[2], F16, F16, GPTJ, "THREADS_PER_ROW=16,VEC=2");
    run_case(&ROPE_CASES[3], F16, F16, NEOX, "");
}
