/*
 * test_prefill_emu.c -- the prefill template's real source run on the CPU
 * against the float64 reference (ref_prefill), no GPU needed.
 *
 * Each case goes the way of fmqa_prefill: the template's Lua (default config,
 * or one with parameters overridden) gives the launch plan, gen_render the
 * source, rt_prefill_params the kernel parameters from public
 * fmqa_prefill_args; the rendered source is compiled by the host C++ compiler
 * with tests/emu/cuda_emu.h and the kernel runs over its grid on the inputs of
 * tests/support/prefill_check.h (fresh random values, layouts that catch a
 * mixed-up stride, NaN wherever nothing may be read, NaN outputs, guard
 * pages), checked against ref_prefill as the GPU test checks them.  Without
 * a C++ compiler ($CXX or c++) the test is skipped.
 *
 * Cost: about 50 s of CPU for the 19 cases (measured on the 2-core build
 * machine), mostly the host compiler building each case's emulator (2-3 s);
 * the 1000-token case runs about 10 s.  4099 tokens (16 times that) are left
 * to gpu_prefill.
 */
#define _POSIX_C_SOURCE 200809L

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "fmqa_params.h"
#include "gen.h"
#include "ref.h"
#include "rt.h"
#include "prefill_check.h"
#include "test_support.h"

typedef int (*emu_launch_fn)(const char *entry, const fmqa_prefill_params *p,
                             const unsigned grid[3], unsigned threads, unsigned dyn_smem);

/* One case: a problem spec (batch, tq = the largest new-token count, kv_len =
 * the largest cache length), parameters overriding the default config ("" =
 * default), the new tokens of each sequence, with FMQA_FLAG_KV_CACHE the
 * cached positions before them, the device preset (NULL: sm_90), and
 * whether learned sink logits (args.sinks) join the softmax. */
typedef struct pcase {
    const char *spec;
    const char *config;
    int32_t tq[PREFILL_MAX_SEQS];
    int32_t cached[PREFILL_MAX_SEQS];
    const char *arch;
    int learned_sinks;
} pcase;

static void run_case(const pcase *pc)
{
    gen_lib *lib = NULL;
    fmqa_err err;
    cr_assert_eq(gen_lib_open(fmqa_test_template_dir(), &lib, &err), FMQA_OK, "%s", err.msg);
    const gen_template *t = gen_lib_find(lib, "prefill");
    cr_assert_not_null(t);
    fmqa_device_info dev;
    const char *arch = pc->arch ? pc->arch : "sm_90";
    cr_assert_eq(gen_device_preset(arch, &dev, &err), FMQA_OK, "%s: %s", arch, err.msg);
    fmqa_problem p;
    cr_assert_eq(gen_problem_parse(pc->spec, &p, &err), FMQA_OK, "%s: %s", pc->spec, err.msg);
    cr_assert_eq(rt_problem_check(&p, &err), FMQA_OK, "%s: %s", pc->spec, err.msg);
    gen_config c, over;
    cr_assert_eq(gen_default(t, &p, &dev, &c, &err), FMQA_OK, "%s", err.msg);
    if (pc->config[0]) {
        cr_assert_eq(gen_config_parse(pc->config, &over, &err), FMQA_OK, "%s", err.msg);
        for (int i = 0; i < gen_template_param_count(t); i++) {
            const char *name = gen_template_param_name(t, i);
            int64_t v;
            if (gen_config_get(&over, name, &v))
                cr_assert_eq(gen_config_set(&c, name, v, &err), FMQA_OK, "%s", err.msg);
        }
    }
    rt_plan plan;
    memset(&plan, 0, sizeof plan);
    plan.problem = p;
    cr_assert_eq(gen_launch_plan(t, &c, &p, &dev, &plan.launch, &err), FMQA_OK, "%s", err.msg);
    char dir[] = "/tmp/fmqa-emu-XXXXXX";
    emu_launch_fn launch = (emu_launch_fn)fmqa_test_emu_build(t, &c, &p, &dev, "prefill_emu.cpp", dir);

    ref_rng r;
    uint64_t seed = fmqa_test_seed(pc->spec);
    ref_rng_seed(&r, seed);
    prefill_inputs in;
    prefill_inputs_make(&p, pc->tq, pc->cached, &r, &in);
    if (pc->learned_sinks)
        prefill_inputs_sinks(&p, &r, &in);
    fmqa_prefill_params prm;
    cr_assert_eq(rt_prefill_params(&plan, &in.a, &prm, &err), FMQA_OK, "%s", err.msg);
    cr_assert_eq(plan.launch.n_kernels, 1);
    const gen_kernel *k = &plan.launch.kernels[0];
    unsigned grid[3] = {k->grid[0], k->grid[1], k->grid[2]};
    cr_assert_eq(launch(k->entry, &prm, grid, k->block[0], k->shared), 0);
    char cfg[GEN_CONFIG_TEXT_CAP], what[GEN_PROBLEM_TEXT_CAP + GEN_CONFIG_TEXT_CAP + 64];
    gen_config_text(&c, cfg, sizeof cfg);
    snprintf(what, sizeof what, "%s [%s] %s (seed %llu)", pc->spec, cfg, arch,
             (unsigned long long)seed);
    prefill_inputs_check(&p, &in, in.a.o, in.a.lse, what);
    char rm[1100];
    snprintf(rm, sizeof rm, "rm -rf %s", dir);
    (void)system(rm);
    gen_lib_close(lib);
}

static void run_all(const pcase *cases, size_t n)
{
    for (size_t i = 0; i < n; i++)
        run_case(&cases[i]);
}

/* Lengths 1, 17, 128 alone and mixed in one ragged batch (new tokens only). */
Test(prefill_emu, ragged_lengths, .timeout = 900)
{
    static const pcase cases[] = {
        {"op=prefill,batch=1,heads=8,kv_heads=1,d=64,tq=1,kv_len=1,flags=causal|lse", "", {1}, {0}, NULL, 0},
        {"op=prefill,batch=1,heads=6,kv_heads=1,d=128,tq=17,kv_len=17,flags=causal|lse", "", {17}, {0}, NULL, 0},
        {"op=prefill,batch=1,heads=2,kv_heads=2,d=64,tq=128,kv_len=128,q=bf16,kv=bf16,out=bf16,flags=causal|lse",
         "", {128}, {0}, NULL, 0},
        {"op=prefill,batch=4,heads=8,kv_heads=1,d=64,tq=128,kv_len=128,flags=causal|lse", "", {17, 1, 128, 0}, {0}, NULL, 0},
    };
    run_all(cases, sizeof cases / sizeof cases[0]);
}

/* Chunked prefill: new tokens after a cached prefix, contiguous and paged,
 * 16-bit and 8-bit (fp8 on the sm_80 bit path and the sm_89+ cvt path). */
Test(prefill_emu, chunked_cache, .timeout = 900)
{
    static const pcase cases[] = {
        {"op=prefill,batch=3,heads=8,kv_heads=2,d=64,tq=40,kv_len=200,flags=causal|lse|kv_cache", "",
         {40, 1, 17}, {160, 0, 70}, NULL, 0},
        {"op=prefill,batch=2,heads=6,kv_heads=1,d=128,tq=33,kv_len=150,page=16,q=bf16,kv=bf16,out=bf16,"
         "flags=causal|lse|paged|kv_cache", "", {33, 20}, {117, 3}, NULL, 0},
        {"op=prefill,batch=2,heads=8,kv_heads=1,d=64,tq=30,kv_len=130,page=32,kv=int8,flags=causal|lse|paged|kv_cache",
         "BLOCK_N=32", {30, 9}, {100, 64}, NULL, 0},
        {"op=prefill,batch=2,heads=4,kv_heads=2,d=96,tq=24,kv_len=100,page=16,kv=fp8_e4m3,flags=causal|paged|kv_cache",
         "", {24, 5}, {76, 31}, "sm_80", 0},
        {"op=prefill,batch=1,heads=4,kv_heads=1,d=64,tq=20,kv_len=90,q=bf16,out=bf16,kv=fp8_e4m3,flags=causal|lse|kv_cache",
         "BLOCK_N=32,STAGES=3", {20}, {70}, NULL, 0},
    };
    run_all(cases, sizeof cases / sizeof cases[0]);
}

/* Group sizes 1, 6, 8, 32 (rows of a KV head packed into M) and head dims 64
 * to 256, with BLOCK_M / WARPS / stages the defaults do not take. */
Test(prefill_emu, groups_and_head_dims, .timeout = 900)
{
    static const pcase cases[] = {
        {"op=prefill,batch=2,heads=3,kv_heads=3,d=256,tq=50,kv_len=50,flags=causal|lse", "", {50, 13}, {0}, NULL, 0},
        {"op=prefill,batch=1,heads=32,kv_heads=1,d=64,tq=9,kv_len=9,flags=causal|lse", "BLOCK_M=64,WARPS=2", {9}, {0}, NULL, 0},
        {"op=prefill,batch=1,heads=16,kv_heads=2,d=96,tq=24,kv_len=24,q=bf16,kv=bf16,out=f16,flags=causal|lse",
         "BLOCK_M=128,WARPS=8,BLOCK_N=128", {24}, {0}, NULL, 0},
        {"op=prefill,batch=2,heads=12,kv_heads=2,d=128,tq=30,kv_len=30,flags=causal",
         "BLOCK_M=64,WARPS=4,BLOCK_N=32,STAGES=3", {30, 29}, {0}, NULL, 0},
    };
    run_all(cases, sizeof cases / sizeof cases[0]);
}

/* Sliding windows with sinks: the window edge and the end of the sinks
 * cross tiles; without a causal mask as well. */
Test(prefill_emu, windows_and_sinks, .timeout = 900)
{
    static const pcase cases[] = {
        {"op=prefill,batch=2,heads=2,kv_heads=1,d=64,tq=150,kv_len=150,window=40,sinks=4,flags=causal|lse",
         "BLOCK_N=32", {150, 77}, {0}, NULL, 0},
        {"op=prefill,batch=2,heads=4,kv_heads=1,d=64,tq=50,kv_len=220,window=70,sinks=33,page=16,"
         "flags=causal|lse|paged|kv_cache", "BLOCK_N=32,BLOCK_M=64,WARPS=4", {50, 8}, {170, 90}, NULL, 0},
        {"op=prefill,batch=2,heads=2,kv_heads=2,d=64,tq=40,kv_len=40,flags=lse", "", {40, 7}, {0}, NULL, 0},
        {"op=prefill,batch=1,heads=2,kv_heads=1,d=64,tq=30,kv_len=100,window=16,sinks=2,kv=int8,flags=lse|kv_cache",
         "BLOCK_N=32", {30}, {70}, NULL, 0},
        /* 8 consecutive prefixes put the first row's window start (prefix -
         * 39) at every offset 61..68 of a 32-position tile, 63 its last. */
        {"op=prefill,batch=8,heads=2,kv_heads=2,d=64,tq=5,kv_len=112,window=40,sinks=3,flags=causal|lse|kv_cache",
         "BLOCK_N=32", {5, 5, 5, 5, 5, 5, 5, 5}, {100, 101, 102, 103, 104, 105, 106, 107}, NULL, 0},
    };
    run_all(cases, sizeof cases / sizeof cases[0]);
}

/* A long sequence: 1000 new tokens (16 row blocks, up to 16 tiles each). */
Test(prefill_emu, long_sequence, .timeout = 900)
{
    static const pcase cases[] = {
        {"op=prefill,batch=1,heads=2,kv_heads=1,d=64,tq=1000,kv_len=1000,flags=causal|lse", "", {1000}, {0}, NULL, 0},
    };
    run_all(cases, sizeof cases / sizeof cases[0]);
}

/* Soft-capped scores (Gemma 2/3: s -> c tanh(s / c)): a cap small enough to
 * bind on most scores (sm_scale 1/8 puts them within a few units), causal,
 * with a window and sinks, chunked on a paged cache, GQA, f16 and bf16. */
Test(prefill_emu, softcap_scores, .timeout = 900)
{
    static const pcase cases[] = {
        {"op=prefill,batch=2,heads=8,kv_heads=2,d=64,tq=70,kv_len=70,softcap=0.75,flags=causal|lse", "BLOCK_N=32",
         {70, 23}, {0}, NULL, 0},
        {"op=prefill,batch=2,heads=6,kv_heads=1,d=128,tq=33,kv_len=150,page=16,window=40,sinks=5,softcap=1.5,"
         "q=bf16,kv=bf16,out=bf16,flags=causal|lse|paged|kv_cache", "", {33, 20}, {117, 3}, NULL, 0},
    };
    run_all(cases, sizeof cases / sizeof cases[0]);
}

/* Learned sink logits (gpt-oss): one per query head in the denominator and
 * the LSE, no value.  Causal and not, a window with sink tokens (rows that
 * see only the sinks' logit besides a few), chunked on a paged int8 cache,
 * GQA, f16 and bf16, soft-capped as well, and on the sm_80 preset. */
Test(prefill_emu, sinks_learned_logits, .timeout = 900)
{
    static const pcase cases[] = {
        {"op=prefill,batch=2,heads=8,kv_heads=2,d=64,tq=40,kv_len=40,flags=causal|lse", "BLOCK_N=32",
         {40, 3}, {0}, NULL, 1},
        {"op=prefill,batch=2,heads=4,kv_heads=1,d=64,tq=50,kv_len=220,window=70,sinks=33,page=16,"
         "q=bf16,kv=bf16,out=bf16,flags=causal|lse|paged|kv_cache", "BLOCK_N=32,BLOCK_M=64,WARPS=4",
         {50, 8}, {170, 90}, NULL, 1},
        {"op=prefill,batch=1,heads=2,kv_heads=1,d=64,tq=30,kv_len=100,window=16,sinks=2,kv=int8,softcap=2,"
         "flags=lse|kv_cache", "BLOCK_N=32", {30}, {70}, "sm_80", 1},
    };
    run_all(cases, sizeof cases / sizeof cases[0]);
}
