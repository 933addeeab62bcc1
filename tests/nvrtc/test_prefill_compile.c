/*
 * test_prefill_compile.c -- the prefill template through the generator,
 * without a GPU.  Six specialization classes per head dim (64, 96, 128, 256)
 * are rendered with their default config and compiled by NVRTC, half for
 * sm_80 and half for sm_90: K/V as new tokens (f16, bf16) or from a cache (f16, bf16, int8, fp8
 * e4m3; contiguous or paged), with group sizes 1..128, window + sinks, causal
 * or not, LSE and observation-window scores (both kernels) spread over them;
 * then the register-heaviest configs valid() admits.  ptxas must report no
 * spills and no stack frame.  The Lua side is
 * checked with a launch and defaults computed by hand and with the reasons it
 * gives for illegal problems and configs.  GPU correctness is the gpu tests'
 * business, CPU correctness unit_prefill_emu's.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "gen.h"
#include "test_support.h"

/* Class i of head dim d takes group GROUPS[(i + d / 32) % 6], so group sizes
 * rotate over the classes with the head dim; an architecture compiles every
 * other class (sm_80 those with i + d / 32 even), which alternate with the
 * head dim, so each class meets both (half the NVRTC time of all of them). */
static const char *const CLASSES[] = {
    "q=f16,kv=f16,out=f16,tq=2048,kv_len=2048,flags=causal|lse",
    "q=bf16,kv=bf16,out=bf16,tq=2048,kv_len=2048,window=256,sinks=4,flags=causal",
    "q=f16,kv=f16,out=bf16,tq=512,kv_len=4096,page=16,flags=causal|paged|kv_cache",
    "q=bf16,kv=bf16,out=bf16,tq=512,kv_len=4096,flags=lse|kv_cache|scores",
    "q=f16,kv=int8,out=f16,tq=512,kv_len=4096,page=64,window=1024,sinks=8,flags=causal|paged|lse|kv_cache|scores",
    "q=bf16,kv=fp8_e4m3,out=bf16,tq=512,kv_len=4096,flags=causal|lse|kv_cache",
};
static const int GROUPS[] = {1, 8, 6, 32, 128, 4};

static void compile_classes(const char *arch, int d)
{
    gen_lib *lib = fmqa_test_open_templates();
    const gen_template *t = fmqa_test_template(lib, "prefill", FMQA_OP_PREFILL);
    fmqa_device_info dev = fmqa_test_device(arch);
    const int odd = strcmp(arch, "sm_80") != 0;
    for (int i = 0; i < 6; i++) {
        if ((i + d / 32) % 2 != odd)
            continue;
        const int g = GROUPS[(i + d / 32) % 6];
        char spec[GEN_PROBLEM_TEXT_CAP];
        snprintf(spec, sizeof spec, "op=prefill,batch=4,heads=%d,kv_heads=2,d=%d,%s", 2 * g, d,
                 CLASSES[i]);
        fmqa_problem p = fmqa_test_problem(spec);
        gen_config c = fmqa_test_default_with(t, &p, &dev, "");
        fmqa_test_compile_clean(t, &c, &p, &dev, spec, 2);
    }
    gen_lib_close(lib);
}

Test(prefill_compile, classes_sm80_d64, .timeout = 600) { compile_classes("sm_80", 64); }
Test(prefill_compile, classes_sm80_d96, .timeout = 600) { compile_classes("sm_80", 96); }
Test(prefill_compile, classes_sm80_d128, .timeout = 600) { compile_classes("sm_80", 128); }
Test(prefill_compile, classes_sm80_d256, .timeout = 600) { compile_classes("sm_80", 256); }
Test(prefill_compile, classes_sm90_d64, .timeout = 600) { compile_classes("sm_90", 64); }
Test(prefill_compile, classes_sm90_d96, .timeout = 600) { compile_classes("sm_90", 96); }
Test(prefill_compile, classes_sm90_d128, .timeout = 600) { compile_classes("sm_90", 128); }
Test(prefill_compile, classes_sm90_d256, .timeout = 600) { compile_classes("sm_90", 256); }

/* Soft-capped scores and learned sinks together (the SOFTCAP define and the
 * sinks' finish), on both architectures, without spills. */
Test(prefill_compile, softcap_and_sinks, .timeout = 600)
{
    static const char spec[] = "op=prefill,batch=4,heads=16,kv_heads=2,d=128,q=bf16,kv=bf16,out=bf16,"
                               "tq=512,kv_len=4096,window=1024,sinks=4,softcap=30,page=16,"
                               "flags=causal|paged|lse|kv_cache";
    gen_lib *lib = fmqa_test_open_templates();
    const gen_template *t = fmqa_test_template(lib, "prefill", FMQA_OP_PREFILL);
    static const char *const arch[] = {"sm_80", "sm_90"};
    for (int i = 0; i < 2; i++) {
        fmqa_device_info dev = fmqa_test_device(arch[i]);
        fmqa_problem p = fmqa_test_problem(spec);
        gen_config c = fmqa_test_default_with(t, &p, &dev, "");
        fmqa_test_compile_clean(t, &c, &p, &dev, spec, 2);
    }
    gen_lib_close(lib);
}

/* The register-heaviest corners valid() admits (about 228 to 244 by its
 * estimate): two m-tiles a warp at d = 64 with 64-position tiles, d = 128
 * with 128-position tiles, d = 256 with 32; 8-bit conversion and windows. */
Test(prefill_compile, heavy_configs, .timeout = 600)
{
    static const struct {
        const char *spec, *config;
    } cases[] = {
        {"op=prefill,batch=2,heads=16,kv_heads=2,d=64,tq=1024,kv_len=4096,kv=fp8_e4m3,q=bf16,"
         "out=bf16,window=512,sinks=4,flags=causal|lse|kv_cache",
         "BLOCK_M=128,BLOCK_N=64,STAGES=3,WARPS=4"},
        {"op=prefill,batch=2,heads=8,kv_heads=8,d=128,tq=1024,kv_len=4096,kv=int8,page=16,"
         "flags=causal|paged|kv_cache",
         "BLOCK_M=128,BLOCK_N=128,STAGES=2,WARPS=8"},
        {"op=prefill,batch=2,heads=8,kv_heads=1,d=256,tq=1024,kv_len=1024,q=bf16,kv=bf16,"
         "out=bf16,window=300,sinks=2,flags=causal|lse",
         "BLOCK_M=64,BLOCK_N=32,STAGES=3,WARPS=4"},
    };
    gen_lib *lib = fmqa_test_open_templates();
    const gen_template *t = fmqa_test_template(lib, "prefill", FMQA_OP_PREFILL);
    const char *const archs[] = {"sm_80", "sm_90"};
    for (int a = 0; a < 2; a++) {
        fmqa_device_info dev = fmqa_test_device(archs[a]);
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
            fmqa_problem p = fmqa_test_problem(cases[i].spec);
            gen_config c = fmqa_test_default_with(t, &p, &dev, cases[i].config);
            fmqa_test_compile_clean(t, &c, &p, &dev, cases[i].spec, 2);
        }
    }
    gen_lib_close(lib);
}

static int64_t get(const gen_config *c, const char *name)
{
    int64_t v = -1;
    cr_assert(gen_config_get(c, name, &v), "config lacks %s", name);
    return v;
}

/* B = 4, T = 4096, H = 32 over 8 KV heads, d = 128 on the H100 preset: the
 * default is 128 rows (8 warps, one m-tile each), 64-position tiles, 2
 * stages; rows per KV head 4 x 4096 = 16384 -> 128 row blocks; shared
 * memory 128 x 272 + 2 x 2 x 64 x 272 = 104448 bytes.  A problem of 16 rows
 * takes 64-row blocks. */
Test(prefill_compile, default_and_launch_by_hand)
{
    gen_lib *lib = fmqa_test_open_templates();
    const gen_template *t = fmqa_test_template(lib, "prefill", FMQA_OP_PREFILL);
    fmqa_device_info dev = fmqa_test_device("sm_90");
    fmqa_problem p = fmqa_test_problem(
        "op=prefill,batch=4,heads=32,kv_heads=8,d=128,tq=4096,kv_len=4096,q=bf16,kv=bf16,"
        "out=bf16,flags=causal");
    gen_config c;
    fmqa_err err;
    cr_assert_eq(gen_default(t, &p, &dev, &c, &err), FMQA_OK, "%s", err.msg);
    cr_expect_eq(get(&c, "BLOCK_M"), 128);
    cr_expect_eq(get(&c, "WARPS"), 8);
    cr_expect_eq(get(&c, "BLOCK_N"), 64);
    cr_expect_eq(get(&c, "STAGES"), 2);
    gen_plan plan;
    cr_assert_eq(gen_launch_plan(t, &c, &p, &dev, &plan, &err), FMQA_OK, "%s", err.msg);
    cr_assert_eq(plan.n_kernels, 1);
    cr_expect_eq(plan.kernels[0].grid[0], 128);
    cr_expect_eq(plan.kernels[0].grid[1], 8);
    cr_expect_eq(plan.kernels[0].grid[2], 4);
    cr_expect_eq(plan.kernels[0].block[0], 256);
    cr_expect_eq(plan.kernels[0].shared, 104448);
    cr_expect_eq(plan.workspace, 0);
    fmqa_problem small = fmqa_test_problem("op=prefill,batch=1,heads=4,kv_heads=1,d=128,tq=4,kv_len=4");
    cr_assert_eq(gen_default(t, &small, &dev, &c, &err), FMQA_OK, "%s", err.msg);
    cr_expect_eq(get(&c, "BLOCK_M"), 64);
    gen_lib_close(lib);
}

Test(prefill_compile, illegal_problems_and_configs_say_why)
{
    gen_lib *lib = fmqa_test_open_templates();
    const gen_template *t = fmqa_test_template(lib, "prefill", FMQA_OP_PREFILL);
    const char *ok_cfg = "BLOCK_M=64,BLOCK_N=64,STAGES=2,WARPS=4";
    fmqa_test_expect_reason(t, "op=prefill,heads=8,kv_heads=1,d=80,tq=64,kv_len=64", ok_cfg,
                            "head_dim_qk must be 64, 96, 128 or 256, got 80");
    fmqa_test_expect_reason(t, "op=prefill,heads=256,kv_heads=1,d=64,tq=64,kv_len=64", ok_cfg,
                            "group size num_q_heads / num_kv_heads must be <= 128, got 256");
    fmqa_test_expect_reason(t,
                            "op=prefill,heads=8,kv_heads=1,d=64,tq=64,kv_len=64,window=8,flags=ring",
                            ok_cfg, "neither a ring cache nor a tree mask");
    fmqa_test_expect_reason(t, "op=prefill,heads=8,kv_heads=1,d=64,tq=64,kv_len=64,kv=int8", ok_cfg,
                            "kv_dtype must be q_dtype, got int8");
    fmqa_test_expect_reason(t, "op=prefill,heads=8,kv_heads=1,d=64,tq=64,kv_len=100", ok_cfg,
                            "without kv_cache kv_len must equal q_tokens");
    /* BLOCK_M 64 is 16 x 8 warps x 0.5 */
    fmqa_test_expect_reason(t, "op=prefill,heads=8,kv_heads=1,d=64,tq=64,kv_len=64",
                            "BLOCK_M=64,BLOCK_N=64,STAGES=2,WARPS=8",
                            "must be 16 x WARPS (8) x 1 or 2");
    /* 2 x (128/2 + 64/2) + 100 = 292 */
    fmqa_test_expect_reason(t, "op=prefill,heads=8,kv_heads=1,d=128,tq=64,kv_len=64",
                            "BLOCK_M=128,BLOCK_N=64,STAGES=2,WARPS=4", "about 292 registers");
    /* 128 x 272 + 3 x 2 x 128 x 272 = 243712 bytes */
    fmqa_test_expect_reason(t, "op=prefill,heads=8,kv_heads=1,d=128,tq=64,kv_len=64",
                            "BLOCK_M=128,BLOCK_N=128,STAGES=3,WARPS=8",
                            "243712 bytes of shared memory exceed");
    gen_lib_close(lib);
}
