/*
 * test_append_compile.c -- the append template through the generator, without a
 * GPU.  Specialization classes are rendered with their default config and
 * compiled by NVRTC, and ptxas must report no spills and no stack frame (no
 * local memory at all: the RoPE angle reduction is designed to need none).  The
 * classes form a pairwise covering set: cache f16/bf16/int8/fp8 x rope
 * none/neox/gptj x input f16/bf16 x contiguous/paged/ring x head dim
 * 64/96/128/256 x V head dim x sm_80/sm_90, every pair of values of two of
 * these factors in some class (but placement x V head dim), in 16 classes.
 * For the heaviest class the tuner's space is sampled where registers are
 * tightest: for each (VEC, THREADS_PER_ROW) the largest block, on sm_80 and
 * sm_90 in turn.  All compile on a pool of two threads (CI has two cores).
 * The Lua side is checked with hand-computed launches, defaults and the
 * reasons it gives for illegal problems and configs.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "compile_check.h"
#include "gen.h"
#include "test_support.h"

/* ---------------------------------------------------------------- compiles */

/* GF(4) product (2 = x, 3 = x + 1, x^2 = x + 1); the sum is XOR. */
static int gf4_mul(int a, int b)
{
    static const int t[4][4] = {{0, 0, 0, 0}, {0, 1, 2, 3}, {0, 2, 3, 1}, {0, 3, 1, 2}};
    return t[a][b];
}

/*
 * Class (i, j), 0 <= i, j < 4, of the covering set.  The columns i, j, i + j,
 * i + 2j, i + 3j over GF(4) are an orthogonal array: any two of them take all
 * 16 value pairs over the 16 classes.  Head dim and cache take i and j; rope
 * and placement i + j and i + 2j mod 3; the V head dim i + 2j too; input dtype
 * and architecture the two bits of i + 3j.  Mapping a column onto fewer values
 * keeps every pair.
 */
static void submit_class(gen_compiler *comp, const gen_template *t, int i, int j,
                         fmqa_compile_job *job)
{
    static const int hd[] = {64, 96, 128, 256};
    static const char *const kv[] = {"f16", "bf16", "int8", "fp8_e4m3"};
    static const char *const rope[] = {"none", "neox", "gptj"};
    static const char *const place[] = {"page=0,window=0,sinks=0,flags=none",
                                        "page=16,window=0,sinks=0,flags=paged",
                                        "page=0,window=100,sinks=4,flags=ring"};
    static const char *const in[] = {"f16", "bf16"};
    static const char *const arch[] = {"sm_80", "sm_90"};
    const int c3 = i ^ gf4_mul(2, j), c4 = i ^ gf4_mul(3, j);
    char spec[GEN_PROBLEM_TEXT_CAP];
    snprintf(spec, sizeof spec,
             "op=append,batch=3,heads=8,kv_heads=2,d=%d,dv=%d,tq=5,kv_len=4096,q=%s,kv=%s,"
             "out=%s,rope=%s,%s",
             hd[i], hd[c3], in[c4 & 1], kv[j], in[c4 & 1], rope[(i ^ j) % 3], place[c3 % 3]);
    fmqa_problem p = fmqa_test_problem(spec);
    fmqa_device_info dev = fmqa_test_device(arch[c4 >> 1]);
    gen_config c;
    fmqa_err err;
    cr_assert_eq(gen_default(t, &p, &dev, &c, &err), FMQA_OK, "%s: %s", spec, err.msg);
    fmqa_compile_submit(comp, t, &c, &p, &dev, spec, job);
}

/* The widest rows hold the most registers, the largest blocks cap them
 * lowest (64 a thread at 1024 threads).  Lanes of 4 and 8 threads (32 to 64
 * values each) compile for sm_90, wider groups for sm_80: sm_80 has no fp8
 * conversion instruction, and its inlined software conversion makes the
 * long-lane compiles 2-3x slower (7 s against 3 s) for the same picture
 * (~96 registers, no spills, when all 57 were compiled for both).  Returns
 * the jobs queued (at most cap). */
static size_t submit_heaviest(gen_compiler *comp, const gen_template *t,
                              fmqa_compile_job *jobs, size_t cap)
{
    static const char spec[] =
        "op=append,batch=3,heads=8,kv_heads=2,d=256,dv=256,tq=5,kv_len=4096,q=bf16,kv=fp8_e4m3,"
        "out=bf16,rope=gptj,page=16,window=100,sinks=4,flags=paged|ring";
    fmqa_problem p = fmqa_test_problem(spec);
    fmqa_device_info devs[2] = {fmqa_test_device("sm_80"), fmqa_test_device("sm_90")};
    gen_config *cs = NULL;
    size_t n = 0, queued = 0;
    fmqa_err err;
    cr_assert_eq(gen_space(t, &p, &devs[1], &cs, &n, &err), FMQA_OK, "%s", err.msg);
    /* By hand: VEC 2 and 4 allow TPR 4..32, VEC 8 TPR 4..16 (idle lanes,
     * 64 values a lane); ROWS_PER_CTA for 32..1024 threads: TPR 4: 4, 8: 5,
     * 16: 6, 32: 6.  21 + 21 + 15 = 57, of which 4 + 4 + 3 largest blocks. */
    cr_expect_eq(n, 57, "%zu legal configs", n);
    for (size_t i = 0; i < n; i++)
        if (fmqa_config_largest_block(cs, n, &cs[i])) {
            int64_t tpr;
            gen_config_get(&cs[i], "THREADS_PER_ROW", &tpr);
            cr_assert_lt(queued, cap);
            fmqa_compile_submit(comp, t, &cs[i], &p, &devs[tpr >= 16 ? 0 : 1], "heaviest class",
                                &jobs[queued]);
            queued++;
        }
    cr_expect_eq(queued, 11);
    free(cs);
    return queued;
}

Test(append_compile, covering_classes_and_heaviest_space)
{
    gen_lib *lib = fmqa_test_open_templates();
    const gen_template *t = fmqa_test_template(lib, "append", FMQA_OP_APPEND);
    gen_compiler *comp;
    fmqa_err err;
    cr_assert_eq(gen_compiler_create(2, NULL, &comp, &err), FMQA_OK, "%s", err.msg);
    fmqa_compile_job jobs[16 + 16];
    size_t n = submit_heaviest(comp, t, jobs, 16);
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++)
            submit_class(comp, t, i, j, &jobs[n++]);
    for (size_t k = 0; k < n; k++)
        fmqa_compile_expect_clean(&jobs[k], "fmqa_append_kernel");
    gen_compiler_destroy(comp);
    gen_lib_close(lib);
}

/* rows = batch * tq * (2 * kv_heads + heads) = 3 * 5 * (4 + 8) = 180 with RoPE. */
Test(append_compile, default_and_launch_by_hand)
{
    gen_lib *lib = fmqa_test_open_templates();
    const gen_template *t = fmqa_test_template(lib, "append", FMQA_OP_APPEND);
    fmqa_device_info dev = fmqa_test_device("sm_90");
    static const struct {
        int d;
        int64_t tpr, rows, vec;
    } want[] = {{64, 4, 32, 8}, {96, 8, 16, 8}, {128, 8, 16, 8}, {256, 16, 8, 8}};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        char spec[256];
        snprintf(spec, sizeof spec,
                 "op=append,batch=3,heads=8,kv_heads=2,d=%d,tq=5,q=f16,kv=int8,rope=neox",
                 want[i].d);
        fmqa_problem p = fmqa_test_problem(spec);
        gen_config c;
        gen_plan plan;
        fmqa_err err;
        int64_t tpr = 0, rows = 0, vec = 0;
        cr_assert_eq(gen_default(t, &p, &dev, &c, &err), FMQA_OK, "%s", err.msg);
        gen_config_get(&c, "THREADS_PER_ROW", &tpr);
        gen_config_get(&c, "ROWS_PER_CTA", &rows);
        gen_config_get(&c, "VEC", &vec);
        cr_expect(tpr == want[i].tpr && rows == want[i].rows && vec == want[i].vec,
                  "d=%d: default TPR=%lld ROWS=%lld VEC=%lld", want[i].d, (long long)tpr,
                  (long long)rows, (long long)vec);
        cr_assert_eq(gen_launch_plan(t, &c, &p, &dev, &plan, &err), FMQA_OK, "%s", err.msg);
        cr_assert_eq(plan.n_kernels, 1);
        cr_expect_str_eq(plan.kernels[0].entry, "fmqa_append_kernel");
        cr_expect_eq(plan.kernels[0].block[0], 128u);
        cr_expect_eq(plan.kernels[0].grid[0], (uint32_t)((180 + rows - 1) / rows));
        cr_expect_eq(plan.kernels[0].grid[1], 1u);
        cr_expect_eq(plan.workspace, 0);
        cr_expect_eq(plan.splits, 1);
        /* Without RoPE no CTAs for the q rows: 3 * 5 * 4 = 60 rows. */
        p.rope = FMQA_ROPE_NONE;
        cr_assert_eq(gen_launch_plan(t, &c, &p, &dev, &plan, &err), FMQA_OK, "%s", err.msg);
        cr_expect_eq(plan.kernels[0].grid[0], (uint32_t)((60 + rows - 1) / rows));
    }
    gen_lib_close(lib);
}

Test(append_compile, defines_reach_the_source)
{
    gen_lib *lib = fmqa_test_open_templates();
    const gen_template *t = fmqa_test_template(lib, "append", FMQA_OP_APPEND);
    fmqa_device_info dev = fmqa_test_device("sm_80");
    fmqa_problem p = fmqa_test_problem("op=append,batch=2,heads=4,kv_heads=1,d=128,dv=64,tq=1,q=bf16,"
                           "kv=fp8_e4m3,rope=gptj,page=32,window=64,sinks=2,flags=paged|ring");
    gen_config c;
    gen_source src;
    fmqa_err err;
    cr_assert_eq(gen_default(t, &p, &dev, &c, &err), FMQA_OK, "%s", err.msg);
    cr_assert_eq(gen_render(t, &c, &p, &dev, &src, &err), FMQA_OK, "%s", err.msg);
    static const char *const defs[] = {"#define HEAD_DIM 128\n", "#define HEAD_DIM_V 64\n",
                                       "#define IN_BF16 1\n",    "#define KV_FMT 5\n",
                                       "#define ROPE 2\n",       "#define PAGED 1\n",
                                       "#define PAGE_SIZE 32\n", "#define RING 1\n"};
    for (size_t i = 0; i < sizeof defs / sizeof defs[0]; i++)
        cr_expect_not_null(strstr(src.text, defs[i]), "missing %s", defs[i]);
    cr_expect_eq(src.n_entries, 1);
    cr_expect_str_eq(src.entries[0], "fmqa_append_kernel");
    gen_source_free(&src);
    gen_lib_close(lib);
}

/* Problems the template refuses, with the reason it gives. */
Test(append_compile, illegal_problems_and_configs)
{
    gen_lib *lib = fmqa_test_open_templates();
    const gen_template *t = fmqa_test_template(lib, "append", FMQA_OP_APPEND);
    fmqa_device_info dev = fmqa_test_device("sm_90");
    static const struct {
        const char *spec, *reason;
    } bad[] = {
        {"op=append,d=128,q=f16,kv=int8,page=24,flags=paged", "page_size must be a power of two"},
        {"op=append,d=128,q=f16,kv=f16,window=0,flags=ring", "ring cache needs window > 0"},
        {"op=append,d=72,q=f16,kv=f16", "head_dim_qk must be a multiple of 16"},
        {"op=append,d=128,dv=600,q=f16,kv=f16", "head_dim_v must be a multiple of 16"},
        {"op=append,d=128,q=f16,kv=f32", "kv_dtype must be"},
        {"op=append,d=128,q=f32,kv=f16", "q_dtype"},
    };
    gen_config c;
    fmqa_err err;
    gen_config_init(&c);
    gen_config_set(&c, "THREADS_PER_ROW", 8, &err);
    gen_config_set(&c, "ROWS_PER_CTA", 16, &err);
    gen_config_set(&c, "VEC", 8, &err);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        fmqa_problem p = fmqa_test_problem(bad[i].spec);
        cr_expect_eq(gen_check(t, &c, &p, &dev, &err), FMQA_ERR_UNSUPPORTED, "%s", bad[i].spec);
        cr_expect_not_null(strstr(err.msg, bad[i].reason), "%s: message '%s'", bad[i].spec,
                           err.msg);
    }
    /* d = 64 with VEC = 8 has 4 chunks per half row: 32 lanes would idle 28. */
    fmqa_problem p = fmqa_test_problem("op=append,d=64,q=f16,kv=f16");
    gen_config_set(&c, "THREADS_PER_ROW", 32, &err);
    cr_expect_eq(gen_check(t, &c, &p, &dev, &err), FMQA_ERR_UNSUPPORTED);
    cr_expect_not_null(strstr(err.msg, "exceeds the 4 chunks"), "%s", err.msg);
    /* d = 256 with VEC = 2, 2 lanes: 64 chunks per half, 32 passes, 128 values. */
    p = fmqa_test_problem("op=append,d=256,q=f16,kv=f16");
    gen_config_set(&c, "THREADS_PER_ROW", 2, &err);
    gen_config_set(&c, "VEC", 2, &err);
    cr_expect_eq(gen_check(t, &c, &p, &dev, &err), FMQA_ERR_UNSUPPORTED);
    cr_expect_not_null(strstr(err.msg, "128 values"), "%s", err.msg);
    gen_lib_close(lib);
}

/* Engines' page tables (issue 16): FlashInfer's CSR table and vLLM's slot
 * mapping compile clean, and reach the source as defines. */
Test(append_compile, layout_csr_and_slot_mapping, .timeout = 600)
{
    static const char *const specs[] = {
        "op=append,batch=3,heads=8,kv_heads=2,d=128,tq=5,kv_len=4096,q=bf16,kv=fp8_e4m3,"
        "rope=neox,page=16,flags=paged|csr",
        "op=append,batch=3,heads=8,kv_heads=2,d=128,tq=1,kv_len=4096,q=f16,kv=int8,rope=gptj,"
        "page=32,flags=paged|slot_mapping",
    };
    static const char *const defs[] = {"#define CSR 1\n", "#define SLOT_MAP 1\n"};
    gen_lib *lib = fmqa_test_open_templates();
    const gen_template *t = fmqa_test_template(lib, "append", FMQA_OP_APPEND);
    fmqa_device_info dev = fmqa_test_device("sm_90");
    for (int i = 0; i < 2; i++) {
        fmqa_problem p = fmqa_test_problem(specs[i]);
        gen_config c;
        gen_source src;
        fmqa_err err;
        cr_assert_eq(gen_default(t, &p, &dev, &c, &err), FMQA_OK, "%s: %s", specs[i], err.msg);
        cr_assert_eq(gen_render(t, &c, &p, &dev, &src, &err), FMQA_OK, "%s", err.msg);
        cr_expect_not_null(strstr(src.text, defs[i]), "missing %s", defs[i]);
        gen_source_free(&src);
        fmqa_test_compile_clean(t, &c, &p, &dev, specs[i], 1);
    }
    gen_lib_close(lib);
}
