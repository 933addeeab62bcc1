/*
 * test_append_compile.c -- the append template through the generator, without a
 * GPU: specialization classes (cache f16/bf16/int8/fp8 x rope none/neox/gptj
 * in full, input f16/bf16 and contiguous/paged/ring rotating through them, x
 * head dims 64/96/128/256) are rendered with their default config and
 * compiled by NVRTC for sm_80 and sm_90,
 * and ptxas must report no spills and no stack frame (no local memory at all:
 * the RoPE angle reduction is designed to need none).  Every third config of
 * the heaviest class's space is compiled too (sm_90): the tuner tries them.
 * The Lua side is checked with hand-computed launches, defaults and the
 * reasons it gives for illegal problems and configs.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "gen.h"

static gen_lib *open_lib(void)
{
    gen_lib *lib = NULL;
    fmqa_err err;
    cr_assert_eq(gen_lib_open(FMQA_SOURCE_DIR "/templates", &lib, &err), FMQA_OK, "%s", err.msg);
    return lib;
}

static const gen_template *append_template(gen_lib *lib)
{
    const gen_template *t = gen_lib_find(lib, "append");
    if (!t)
        for (int i = 0; i < gen_lib_count(lib); i++)
            if (strcmp(gen_template_file(gen_lib_at(lib, i)), "append.lua") == 0)
                cr_assert_fail("append.lua did not load: %s",
                         gen_template_message(gen_lib_at(lib, i)));
    cr_assert_not_null(t, "no append template");
    cr_assert_eq(gen_template_op(t), FMQA_OP_APPEND);
    return t;
}

static fmqa_problem parse(const char *spec)
{
    fmqa_problem p;
    fmqa_err err;
    cr_assert_eq(gen_problem_parse(spec, &p, &err), FMQA_OK, "%s: %s", spec, err.msg);
    return p;
}

static fmqa_device_info device(const char *arch)
{
    fmqa_device_info d;
    fmqa_err err;
    cr_assert_eq(gen_device_preset(arch, &d, &err), FMQA_OK, "%s", err.msg);
    return d;
}

/* Renders and compiles one config; asserts the kernel has no local memory. */
static void compile_clean(const gen_template *t, const gen_config *c, const fmqa_problem *p,
                          const fmqa_device_info *d, const char *what)
{
    fmqa_err err;
    gen_source src;
    gen_binary bin;
    char text[GEN_CONFIG_TEXT_CAP];
    gen_config_text(c, text, sizeof text);
    cr_assert_eq(gen_render(t, c, p, d, &src, &err), FMQA_OK, "%s [%s]: %s", what, text, err.msg);
    cr_assert_eq(gen_compile(&src, &bin, &err), FMQA_OK, "%s [%s]: %s", what, text, err.msg);
    cr_assert_eq(bin.n_resources, 1, "%s [%s]: no ptxas report in the log:\n%s", what, text,
                 bin.log ? bin.log : "");
    const gen_resource *r = &bin.resources[0];
    cr_expect_str_eq(r->entry, "fmqa_append_kernel");
    cr_expect(r->spill_stores == 0 && r->spill_loads == 0 && r->stack_bytes == 0,
              "%s %s [%s]: spills %d/%d bytes, stack %d bytes, %d registers", what, src.arch,
              text, r->spill_stores, r->spill_loads, r->stack_bytes, r->registers);
    gen_binary_free(&bin);
    gen_source_free(&src);
}

/* Every class for one head dim on one architecture, default configs. */
static void compile_classes(const char *arch, int d)
{
    static const char *const in[] = {"f16", "bf16"};
    static const char *const kv[] = {"f16", "bf16", "int8", "fp8_e4m3"};
    static const char *const rope[] = {"none", "neox", "gptj"};
    static const char *const place[] = {"page=0,window=0,sinks=0,flags=none",
                                        "page=16,window=0,sinks=0,flags=paged",
                                        "page=0,window=100,sinks=4,flags=ring"};
    gen_lib *lib = open_lib();
    const gen_template *t = append_template(lib);
    fmqa_device_info dev = device(arch);
    /* Cache type x rope in full; input dtype and placement rotate through them
     * (a compile takes ~1.5 s on a loaded core: the full product, 576
     * compiles, passed once for sm_80 d96 in 2 minutes but is too slow here). */
    for (size_t b = 0; b < 4; b++)
        for (size_t r = 0; r < 3; r++) {
                    size_t a = (b + r) % 2, pl = (b + r) % 3;
                    char spec[GEN_PROBLEM_TEXT_CAP];
                    snprintf(spec, sizeof spec,
                             "op=append,batch=3,heads=8,kv_heads=2,d=%d,dv=%d,tq=5,kv_len=4096,"
                             "q=%s,kv=%s,out=%s,rope=%s,%s",
                             d, d, in[a], kv[b], in[a], rope[r], place[pl]);
                    fmqa_problem p = parse(spec);
                    gen_config c;
                    fmqa_err err;
                    cr_assert_eq(gen_default(t, &p, &dev, &c, &err), FMQA_OK, "%s: %s", spec,
                                 err.msg);
                    compile_clean(t, &c, &p, &dev, spec);
        }
    gen_lib_close(lib);
}

Test(append_compile, classes_sm80_d64) { compile_classes("sm_80", 64); }
Test(append_compile, classes_sm80_d96) { compile_classes("sm_80", 96); }
Test(append_compile, classes_sm80_d128) { compile_classes("sm_80", 128); }
Test(append_compile, classes_sm80_d256) { compile_classes("sm_80", 256); }
Test(append_compile, classes_sm90_d64) { compile_classes("sm_90", 64); }
Test(append_compile, classes_sm90_d96) { compile_classes("sm_90", 96); }
Test(append_compile, classes_sm90_d128) { compile_classes("sm_90", 128); }
Test(append_compile, classes_sm90_d256) { compile_classes("sm_90", 256); }

/* The widest rows hold the most registers: legal configs of the heaviest class
 * stay out of local memory (all 57 passed on sm_80 and sm_90 once, in 7
 * minutes; the test keeps every third on sm_90). */
Test(append_compile, sampled_space_heaviest_class)
{
    gen_lib *lib = open_lib();
    const gen_template *t = append_template(lib);
    fmqa_problem p = parse("op=append,batch=3,heads=8,kv_heads=2,d=256,dv=256,tq=5,kv_len=4096,"
                           "q=bf16,kv=fp8_e4m3,out=bf16,rope=gptj,page=16,window=100,sinks=4,"
                           "flags=paged|ring");
    const char *const archs[] = {"sm_90"};
    for (int a = 0; a < 1; a++) {
        fmqa_device_info dev = device(archs[a]);
        gen_config *cs = NULL;
        size_t n = 0;
        fmqa_err err;
        cr_assert_eq(gen_space(t, &p, &dev, &cs, &n, &err), FMQA_OK, "%s", err.msg);
        /* By hand: VEC 2 and 4 allow TPR 4..32, VEC 8 TPR 4..16 (idle lanes,
         * 64 values a lane); ROWS_PER_CTA for 32..1024 threads: TPR 4: 4, 8: 5,
         * 16: 6, 32: 6.  21 + 21 + 15 = 57. */
        cr_expect_eq(n, 57, "%zu legal configs", n);
        for (size_t i = 0; i < n; i += 3)
            compile_clean(t, &cs[i], &p, &dev, archs[a]);
        free(cs);
    }
    gen_lib_close(lib);
}

/* rows = batch * tq * (2 * kv_heads + heads) = 3 * 5 * (4 + 8) = 180. */
Test(append_compile, default_and_launch_by_hand)
{
    gen_lib *lib = open_lib();
    const gen_template *t = append_template(lib);
    fmqa_device_info dev = device("sm_90");
    static const struct {
        int d;
        int64_t tpr, rows, vec;
    } want[] = {{64, 4, 32, 8}, {96, 8, 16, 8}, {128, 8, 16, 8}, {256, 16, 8, 8}};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        char spec[256];
        snprintf(spec, sizeof spec,
                 "op=append,batch=3,heads=8,kv_heads=2,d=%d,tq=5,q=f16,kv=int8,rope=neox",
                 want[i].d);
        fmqa_problem p = parse(spec);
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
    }
    gen_lib_close(lib);
}

Test(append_compile, defines_reach_the_source)
{
    gen_lib *lib = open_lib();
    const gen_template *t = append_template(lib);
    fmqa_device_info dev = device("sm_80");
    fmqa_problem p = parse("op=append,batch=2,heads=4,kv_heads=1,d=128,dv=64,tq=1,q=bf16,"
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
    gen_lib *lib = open_lib();
    const gen_template *t = append_template(lib);
    fmqa_device_info dev = device("sm_90");
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
        fmqa_problem p = parse(bad[i].spec);
        cr_expect_eq(gen_check(t, &c, &p, &dev, &err), FMQA_ERR_UNSUPPORTED, "%s", bad[i].spec);
        cr_expect_not_null(strstr(err.msg, bad[i].reason), "%s: message '%s'", bad[i].spec,
                           err.msg);
    }
    /* d = 64 with VEC = 8 has 4 chunks per half row: 32 lanes would idle 28. */
    fmqa_problem p = parse("op=append,d=64,q=f16,kv=f16");
    gen_config_set(&c, "THREADS_PER_ROW", 32, &err);
    cr_expect_eq(gen_check(t, &c, &p, &dev, &err), FMQA_ERR_UNSUPPORTED);
    cr_expect_not_null(strstr(err.msg, "exceeds the 4 chunks"), "%s", err.msg);
    /* d = 256 with VEC = 2, 2 lanes: 64 chunks per half, 32 passes, 128 values. */
    p = parse("op=append,d=256,q=f16,kv=f16");
    gen_config_set(&c, "THREADS_PER_ROW", 2, &err);
    gen_config_set(&c, "VEC", 2, &err);
    cr_expect_eq(gen_check(t, &c, &p, &dev, &err), FMQA_ERR_UNSUPPORTED);
    cr_expect_not_null(strstr(err.msg, "128 values"), "%s", err.msg);
    gen_lib_close(lib);
}
