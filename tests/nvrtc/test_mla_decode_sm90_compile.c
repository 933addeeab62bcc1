/*
 * test_mla_decode_sm90_compile.c -- the mla_decode_sm90 template through the
 * generator, without a GPU:
 *  - default configs (32-token blocks, two stages) of f16, bf16 and fp8 latents,
 *    q in either type, 16 / 64 / 128 heads, 1 to 4 query tokens, contiguous
 *    and paged, causal and LSE spread over them, and the other block size
 *    (64-token blocks, one stage), compile for sm_90a with no spills and no
 *    stack frame for both entries, and the kernel's SASS holds HGMMA (wgmma
 *    reached the cubin: cuobjdump; skipped with a message without it);
 *  - its Lua: the launch plan by hand (grid, 256 threads, shared bytes,
 *    splits in whole block pairs, the workspace), the dispatcher's choice on
 *    sm_90a (this template over mla_decode, untuned, fp8 too) and on sm_80
 *    (mla_decode), and the reasons it gives for what it does not serve.
 * Six NVRTC compiles of several seconds each.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "gen.h"
#include "rt.h"
#include "test_support.h"

#define MLA "op=mla_decode,kv_heads=1,d=576,dv=512,"

Test(mla_decode_sm90_compile, defaults, .timeout = 900)
{
    /* no spills or stack in either entry; HGMMA in the SASS */
    static const fmqa_test_compile_want want = {.arch = "sm_90a", .n_entries = 2, .hgmma = 1};
    gen_lib *lib = fmqa_test_open_templates();
    const gen_template *t = fmqa_test_template(lib, "mla_decode_sm90", FMQA_OP_MLA_DECODE);
    fmqa_device_info dev = fmqa_test_device("sm_90a");
    static const char *const specs[][2] = {
        {MLA "batch=64,heads=128,kv_len=4096,q=bf16,kv=bf16,out=bf16,flags=causal|lse", ""},
        {MLA "batch=64,heads=16,tq=2,kv_len=4096,page=64,q=f16,kv=f16,out=f16,flags=causal|paged|lse", ""},
        {MLA "batch=8,heads=64,tq=4,kv_len=1024,page=16,q=f16,kv=bf16,out=bf16,flags=causal|paged", ""},
        {MLA "batch=64,heads=128,tq=2,kv_len=4096,q=bf16,kv=bf16,out=bf16,flags=causal|lse", "BLOCK_N=64,PIPE=1"},
        {MLA "batch=2,heads=32,kv_len=8192,page=64,q=bf16,kv=f16,out=f16,flags=paged|lse", "BLOCK_N=64,PIPE=1"},
        {MLA "batch=64,heads=128,tq=2,kv_len=4096,page=64,q=bf16,kv=fp8_e4m3,out=bf16,flags=causal|paged|lse", ""},
    };
    for (size_t i = 0; i < sizeof specs / sizeof specs[0]; i++) {
        fmqa_problem p = fmqa_test_problem(specs[i][0]);
        gen_config c = fmqa_test_default_with(t, &p, &dev, specs[i][1]);
        fmqa_test_compile_checked(t, &c, &p, &dev, specs[i][0], &want);
    }
    gen_lib_close(lib);
}

/* The template the dispatcher takes, untuned, for p on arch. */
static const char *chosen(gen_lib *lib, const char *spec, const char *arch)
{
    fmqa_device_info dev = fmqa_test_device(arch);
    fmqa_problem p = fmqa_test_problem(spec);
    const gen_template *t = NULL;
    gen_config c;
    fmqa_choice ch;
    fmqa_err err;
    cr_assert_eq(rt_choose(lib, NULL, &dev, &p, &t, &c, &ch, &err), FMQA_OK, "%s: %s", spec, err.msg);
    return gen_template_name(t);
}

Test(mla_decode_sm90_compile, lua_plan_choice_and_reasons)
{
    gen_lib *lib = fmqa_test_open_templates();
    const gen_template *t = fmqa_test_template(lib, "mla_decode_sm90", FMQA_OP_MLA_DECODE);
    fmqa_device_info dev = fmqa_test_device("sm_90a");
    fmqa_problem p = fmqa_test_problem(MLA "batch=3,heads=128,tq=2,kv_len=1000,q=bf16,kv=bf16,out=bf16,flags=causal");
    gen_config c;
    gen_plan plan;
    fmqa_err err;
    cr_assert_eq(gen_default(t, &p, &dev, &c, &err), FMQA_OK, "%s", err.msg);
    int64_t bn = 0, pipe = 0, st = 0;
    cr_assert(gen_config_get(&c, "BLOCK_N", &bn) && gen_config_get(&c, "PIPE", &pipe));
    cr_expect(bn == 32 && pipe == 2, "default BLOCK_N %lld, PIPE %lld", (long long)bn, (long long)pipe);
    cr_assert_eq(gen_launch_plan(t, &c, &p, &dev, &plan, &err), FMQA_OK, "%s", err.msg);
    /* 3 sequences x 4 row blocks (256 rows) = 12 CTAs on 132 SMs: 11 splits
     * wanted, at least 2 pairs (128 positions) each: 7 of 2 x 64 positions
     * rounded up to 192 -> ceil(1000 / 192) = 6 splits */
    cr_assert_eq(plan.n_kernels, 2);
    const gen_kernel *k = &plan.kernels[0];
    cr_expect(k->grid[0] == 6 && k->grid[1] == 4 && k->grid[2] == 3, "grid %u,%u,%u", k->grid[0],
              k->grid[1], k->grid[2]);
    cr_expect_eq(k->block[0], 256);
    /* slack + Q (64 x 576 x 2) + 2 stages of 2 blocks (32 x 576 x 2) + maxima and sums */
    cr_expect_eq(k->shared, 1024 + 73728 + 4 * 36864 + 1024);
    cr_expect(gen_plan_scalar(&plan, "split_tokens", &st) && st == 192, "split_tokens %lld", (long long)st);
    const int64_t rows = 3 * 2 * 128;
    cr_expect_eq(plan.splits, 6);
    cr_expect_eq(plan.workspace, 6 * rows * 512 * 4 + 6 * rows * 4);
    cr_expect_str_eq(plan.kernels[1].entry, "fmqa_mla_decode_sm90_combine");

    cr_expect_str_eq(chosen(lib, MLA "batch=4,heads=16,kv_len=512,q=bf16,kv=bf16,out=bf16", "sm_90a"),
                     "mla_decode_sm90");
    cr_expect_str_eq(chosen(lib, MLA "batch=4,heads=16,kv_len=512,q=bf16,kv=bf16,out=bf16", "sm_80"),
                     "mla_decode");
    cr_expect_str_eq(chosen(lib, MLA "batch=4,heads=16,kv_len=512,q=bf16,kv=fp8_e4m3,out=bf16", "sm_90a"),
                     "mla_decode_sm90");

    const char *base = MLA "batch=2,kv_len=512,out=bf16,q=bf16,";
    char spec[256];
    snprintf(spec, sizeof spec, "%sheads=16,kv=bf16", base);
    fmqa_test_expect_no_default(t, spec, "sm_80", "needs sm_90");
    fmqa_problem fp8 = fmqa_test_problem(MLA "batch=2,kv_len=512,out=bf16,q=bf16,heads=16,kv=fp8_e4m3");
    gen_config big = c;
    fmqa_err why = {0};
    cr_assert_eq(gen_config_set(&big, "BLOCK_N", 64, &err), FMQA_OK, "%s", err.msg);
    cr_assert_eq(gen_config_set(&big, "PIPE", 1, &err), FMQA_OK, "%s", err.msg);
    cr_expect_eq(gen_check(t, &big, &fp8, &dev, &why), FMQA_ERR_UNSUPPORTED, "fp8 with 64-token blocks was accepted");
    cr_expect(strstr(why.msg, "32-token blocks") != NULL, "%s", why.msg);
    snprintf(spec, sizeof spec, "%sheads=8,kv=bf16", base);
    fmqa_test_expect_no_default(t, spec, "sm_90a", "16 to 128 heads");
    snprintf(spec, sizeof spec, "%sheads=16,tq=8,kv=bf16", base);
    fmqa_test_expect_no_default(t, spec, "sm_90a", "1 to 4 query tokens");
    snprintf(spec, sizeof spec, "%sheads=16,kv=bf16,window=128", base);
    fmqa_test_expect_no_default(t, spec, "sm_90a", "no window");
    /* its own uniform splits and 2-D page lookups: mla_decode serves these */
    snprintf(spec, sizeof spec, "%sheads=16,kv=bf16,flags=invariant", base);
    fmqa_test_expect_no_default(t, spec, "sm_90a", "batch-invariant");
    snprintf(spec, sizeof spec, "%sheads=16,kv=bf16,page=64,flags=paged|csr", base);
    fmqa_test_expect_no_default(t, spec, "sm_90a", "CSR page table");
    cr_expect_str_eq(chosen(lib, MLA "batch=4,heads=16,kv_len=512,q=bf16,kv=bf16,out=bf16,flags=invariant", "sm_90a"),
                     "mla_decode");
    gen_lib_close(lib);
}
