/*
 * test_mla_decode_compile.c -- the mla_decode template through the generator,
 * without a GPU.  Its specialization classes (query/output f16 or bf16 x
 * latent f16, bf16 or fp8 e4m3), each with its default config, are rendered
 * and compiled by NVRTC for sm_80 and sm_90, with the head counts 16, 32, 64
 * and 128, 1 to 4 query tokens, contiguous, paged (16, 64) and ring caches,
 * windows with and without sink tokens, and the causal and LSE flags spread
 * over them; so is the register-heaviest config valid() admits (2 warps over
 * the 512 columns: 128 accumulator floats a thread, 64-token tiles, fp8
 * conversion), plain and with a paged ring and a window.  ptxas must report
 * no spills and no stack frame for both entries.  The template is not
 * arch-specific: on an sm_90a device it renders for sm_90, so the sm_90
 * compiles are the sm_90a ones (checked without compiling).  The Lua side is
 * checked with a launch computed by hand and with the reasons it gives for
 * what it does not serve.  Each compile takes several seconds (the kernel
 * unrolls 36 k-chunks of S and 16-32 column chunks of P V): 16 in all.
 */
#include <stdio.h>
#include <string.h>

#include <criterion/criterion.h>

#include "gen.h"
#include "test_support.h"

#define MLA "op=mla_decode,kv_heads=1,d=576,dv=512,"

/* (q/out dtype, latent dtype) classes; class i gets heads HEADS[i % 4],
 * i % 4 + 1 query tokens and cache layout and flags PLACES[i]. */
static const char *const CLASSES[][2] = {
    {"f16", "f16"}, {"bf16", "bf16"}, {"f16", "fp8_e4m3"},
    {"bf16", "fp8_e4m3"}, {"bf16", "f16"}, {"f16", "bf16"},
};
static const int HEADS[] = {16, 32, 64, 128};
static const char *const PLACES[] = {
    "page=0,flags=causal|lse",
    "page=64,flags=causal|paged",
    "page=16,flags=paged|lse",
    "page=0,window=1024,sinks=4,flags=causal|lse",
    "page=64,window=1024,sinks=4,draft_slots=3,flags=causal|paged|ring|lse",
    "page=0,window=256,flags=causal|ring",
};

static void compile_classes(const char *arch)
{
    gen_lib *lib = fmqa_test_open_templates();
    const gen_template *t = fmqa_test_template(lib, "mla_decode", FMQA_OP_MLA_DECODE);
    fmqa_device_info dev = fmqa_test_device(arch);
    for (int i = 0; i < 6; i++) {
        char spec[GEN_PROBLEM_TEXT_CAP];
        snprintf(spec, sizeof spec, MLA "batch=4,heads=%d,tq=%d,kv_len=4096,q=%s,out=%s,kv=%s,%s",
                 HEADS[i % 4], i % 4 + 1, CLASSES[i][0], CLASSES[i][0], CLASSES[i][1],
                 PLACES[i]);
        fmqa_problem p = fmqa_test_problem(spec);
        gen_config c = fmqa_test_default_with(t, &p, &dev, "");
        fmqa_test_compile_clean(t, &c, &p, &dev, spec, 2);
    }
    gen_lib_close(lib);
}

Test(mla_decode_compile, classes_sm80, .timeout = 600) { compile_classes("sm_80"); }
Test(mla_decode_compile, classes_sm90, .timeout = 600) { compile_classes("sm_90"); }

Test(mla_decode_compile, heavy_config, .timeout = 600)
{
    gen_lib *lib = fmqa_test_open_templates();
    const gen_template *t = fmqa_test_template(lib, "mla_decode", FMQA_OP_MLA_DECODE);
    const char *const archs[] = {"sm_80", "sm_90"};
    const char *const specs[] = {
        MLA "batch=4,heads=128,tq=2,kv_len=4096,q=bf16,out=bf16,kv=fp8_e4m3,page=64,"
            "flags=causal|paged|lse",
        MLA "batch=4,heads=128,tq=2,kv_len=4096,q=bf16,out=bf16,kv=fp8_e4m3,page=16,window=1024,"
            "sinks=4,draft_slots=1,flags=causal|paged|ring|lse",
    };
    for (int i = 0; i < 4; i++) {
        const char *spec = specs[i % 2];
        fmqa_device_info dev = fmqa_test_device(archs[i / 2]);
        fmqa_problem p = fmqa_test_problem(spec);
        gen_config c =
            fmqa_test_default_with(t, &p, &dev, "BLOCK_N=64,SPLITS=4,STAGES=2,WARPS_D=2,WARPS_M=4");
        fmqa_test_compile_clean(t, &c, &p, &dev, spec, 2);
    }
    gen_lib_close(lib);
}

/* A CSR page table (issue 16): page ids and lengths from the CSR arrays. */
Test(mla_decode_compile, layout_csr, .timeout = 600)
{
    gen_lib *lib = fmqa_test_open_templates();
    const gen_template *t = fmqa_test_template(lib, "mla_decode", FMQA_OP_MLA_DECODE);
    const char *spec = MLA "batch=4,heads=16,tq=1,kv_len=4096,q=bf16,out=bf16,kv=bf16,"
                           "page=64,flags=causal|paged|csr|lse";
    fmqa_device_info dev = fmqa_test_device("sm_80");
    fmqa_problem p = fmqa_test_problem(spec);
    gen_config c = fmqa_test_default_with(t, &p, &dev, "");
    fmqa_test_compile_clean(t, &c, &p, &dev, spec, 2);
    gen_lib_close(lib);
}

static int64_t get(const gen_config *c, const char *name)
{
    int64_t v = -1;
    cr_assert(gen_config_get(c, name, &v), "config lacks %s", name);
    return v;
}

/* H100 preset (132 SMs, 232448 bytes opt-in, 233472 an SM).
 * DeepSeek-V3 shape, bf16, B = 64, H = 128: 4 x 64-row warps need Q 64 * 1168
 * = 74752 + P 64 * 144 = 9216 + exchange 64 * 4 * 4 = 1024 + 2 stages of 64 *
 * 1168 = 149504: 234496 bytes, too many; 2 row warps: 37376 + 4608 + 512 +
 * 149504 = 192000.  The persistent schedule (lib/sched.lua): one CTA an SM,
 * 132 CTAs share 4 row blocks x 64 sequences = 256 segments of 4096
 * positions, so a segment spans at most 2 pieces; slots 132 + 256 - 1 = 387
 * of 32 rows: partial O 387 x 32 x 512 x 4 bytes, partial LSE 387 x 32 x 4,
 * then (first slot, pieces) for each of the 256 segments; the combine (on
 * sm_90 with programmatic dependent launch) has 8192 rows, one slice.
 * B = 1, H = 16, fp8, 16384 positions: 1 row warp, 4 stages of 64 * 592 +
 * 256 = 38144: 18688 + 2304 + 256 + 152576 = 173824.  CTAs min(132 slots,
 * 256 tiles / 4) = 64, each a piece of the one segment: 64 slots of 16 rows,
 * workspace 64 x 16 x 513 x 4 + 8; the combine halves its 128 float4 columns
 * until 16 rows x slices cover the SMs: 16 slices. */
Test(mla_decode_compile, defaults_and_launch_by_hand)
{
    gen_lib *lib = fmqa_test_open_templates();
    const gen_template *t = fmqa_test_template(lib, "mla_decode", FMQA_OP_MLA_DECODE);
    fmqa_device_info dev = fmqa_test_device("sm_90");
    fmqa_err err;
    gen_config c;
    gen_plan plan;
    fmqa_problem p = fmqa_test_problem(MLA "batch=64,heads=128,tq=1,kv_len=4096,q=bf16,kv=bf16,"
                                           "out=bf16,flags=causal");
    cr_assert_eq(gen_default(t, &p, &dev, &c, &err), FMQA_OK, "%s", err.msg);
    cr_expect_eq(get(&c, "BLOCK_N"), 64);
    cr_expect_eq(get(&c, "WARPS_M"), 2);
    cr_expect_eq(get(&c, "WARPS_D"), 4);
    cr_expect_eq(get(&c, "STAGES"), 2);
    cr_assert_eq(gen_launch_plan(t, &c, &p, &dev, &plan, &err), FMQA_OK, "%s", err.msg);
    cr_assert_eq(plan.n_kernels, 2);
    cr_expect_str_eq(plan.kernels[0].entry, "fmqa_mla_decode_kernel");
    cr_expect_eq(plan.kernels[0].grid[0], 132);
    cr_expect_eq(plan.kernels[0].grid[1], 1);
    cr_expect_eq(plan.kernels[0].grid[2], 1);
    cr_expect_eq(plan.kernels[0].block[0], 256);
    cr_expect_eq(plan.kernels[0].shared, 192000);
    cr_expect_eq(plan.splits, 387);
    int64_t v = 0;
    cr_expect(gen_plan_scalar(&plan, "pieces", &v) && v == 2);
    cr_expect(gen_plan_scalar(&plan, "ws_lse_offset", &v) && v == 387LL * 32 * 512 * 4);
    cr_expect(gen_plan_scalar(&plan, "ws_meta_offset", &v) && v == 387LL * 32 * 513 * 4);
    cr_expect_eq(plan.workspace, 387LL * 32 * 513 * 4 + 256 * 8);
    cr_expect_eq(plan.kernels[1].grid[0], 8192);
    cr_expect_eq(plan.kernels[1].grid[1], 1);
    cr_expect_eq(plan.kernels[1].pdl, 1);

    p = fmqa_test_problem(MLA "batch=1,heads=16,tq=1,kv_len=16384,kv=fp8_e4m3,flags=causal|lse");
    cr_assert_eq(gen_default(t, &p, &dev, &c, &err), FMQA_OK, "%s", err.msg);
    cr_expect_eq(get(&c, "STAGES"), 4);
    cr_expect_eq(get(&c, "WARPS_M"), 1);
    cr_assert_eq(gen_launch_plan(t, &c, &p, &dev, &plan, &err), FMQA_OK, "%s", err.msg);
    cr_assert_eq(plan.n_kernels, 2);
    cr_expect_eq(plan.kernels[0].shared, 173824);
    cr_expect_eq(plan.kernels[0].grid[0], 64);
    cr_expect_eq(plan.kernels[0].block[0], 128);
    cr_expect_eq(plan.splits, 64);
    cr_expect_eq(plan.workspace, 64LL * 16 * 513 * 4 + 8);
    cr_expect_str_eq(plan.kernels[1].entry, "fmqa_mla_decode_combine");
    cr_expect_eq(plan.kernels[1].grid[0], 16);
    cr_expect_eq(plan.kernels[1].grid[1], 16);
    cr_expect(gen_plan_scalar(&plan, "pieces", &v) && v == 64);
    cr_expect(!gen_plan_scalar(&plan, "split_tokens", &v), "split_tokens is the uniform splits' scalar");
    gen_lib_close(lib);
}

/* What the template does not serve is UNSUPPORTED with what it does serve. */
Test(mla_decode_compile, refusals_name_what_is_served)
{
    gen_lib *lib = fmqa_test_open_templates();
    const gen_template *t = fmqa_test_template(lib, "mla_decode", FMQA_OP_MLA_DECODE);
    fmqa_device_info dev = fmqa_test_device("sm_90");
    static const struct {
        const char *spec, *reason;
    } cases[] = {
        {"op=mla_decode,kv_heads=1,d=320,dv=256,batch=2,heads=16,kv_len=100",
         "latent 512 + rope 64 only (head_dim_qk 576, head_dim_v 512), got 320 / 256"},
        {MLA "batch=2,heads=16,kv_len=100,kv=int8", "kv_dtype must be f16, bf16 or fp8_e4m3"},
        {"op=mla_decode,kv_heads=2,d=576,dv=512,batch=2,heads=16,kv_len=100",
         "num_kv_heads must be 1"},
        {MLA "batch=2,heads=16,tq=2,kv_len=100,flags=tree", "causal mask among the query tokens or none, "
                                                         "not a tree mask"},
    };
    gen_config c = fmqa_test_config("BLOCK_N=64,SPLITS=0,STAGES=2,WARPS_D=4,WARPS_M=1");
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fmqa_problem p = fmqa_test_problem(cases[i].spec);
        fmqa_err err;
        cr_expect_eq(gen_check(t, &c, &p, &dev, &err), FMQA_ERR_UNSUPPORTED, "%s", cases[i].spec);
        cr_expect(strstr(err.msg, cases[i].reason) != NULL, "%s: message \"%s\" lacks \"%s\"",
                  cases[i].spec, err.msg, cases[i].reason);
    }
    /* A warp of padding rows only: 16 heads x 1 token in 2 row warps. */
    fmqa_problem p = fmqa_test_problem(MLA "batch=2,heads=16,kv_len=100");
    gen_config c2 = fmqa_test_config("BLOCK_N=64,SPLITS=0,STAGES=2,WARPS_D=4,WARPS_M=2");
    fmqa_err err;
    cr_expect_eq(gen_check(t, &c2, &p, &dev, &err), FMQA_ERR_UNSUPPORTED);
    cr_expect(strstr(err.msg, "padding rows only") != NULL, "%s", err.msg);
    gen_lib_close(lib);
}

/* mma.sync needs nothing of sm_90a: an sm_90a device gets the sm_90 build
 * (the same source and cubin as classes_sm90 compiles). */
Test(mla_decode_compile, sm90a_builds_sm90)
{
    gen_lib *lib = fmqa_test_open_templates();
    const gen_template *t = fmqa_test_template(lib, "mla_decode", FMQA_OP_MLA_DECODE);
    fmqa_device_info dev = fmqa_test_device("sm_90a");
    fmqa_problem p = fmqa_test_problem(MLA "batch=4,heads=128,kv_len=4096,q=bf16,out=bf16,kv=bf16,"
                                           "window=1024,sinks=4,flags=causal|ring");
    gen_config c;
    gen_source src;
    fmqa_err err;
    cr_assert_eq(gen_default(t, &p, &dev, &c, &err), FMQA_OK, "%s", err.msg);
    cr_assert_eq(gen_render(t, &c, &p, &dev, &src, &err), FMQA_OK, "%s", err.msg);
    cr_expect_str_eq(src.arch, "sm_90");
    gen_source_free(&src);
    gen_lib_close(lib);
}
