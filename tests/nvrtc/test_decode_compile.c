/*
 * test_decode_compile.c -- the decode template through the generator, without a
 * GPU.  Every specialization class is rendered with its default config and
 * compiled by NVRTC for sm_80 and sm_90: query/output f16 or bf16 x cache f16,
 * bf16, int8, fp8 e4m3 x head dims 64/96/128/256, with group sizes 1..128 and
 * the cache/mask features (paged, window + sinks, soft-capping, ring with
 * draft slots, 16 causal or tree query tokens, LSE) spread over the dtype combinations so that each feature
 * meets every head dim and both 16- and 8-bit caches.  ptxas must report no
 * spills and no stack frame for both entries (no local memory: register arrays
 * are indexed by constants only).  The Lua side is checked with launches,
 * defaults and space sizes computed by hand, and with the reasons it gives for
 * illegal problems and configs.  GPU correctness is the gpu tests' business.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "gen.h"
#include "test_support.h"

/* Placement and mask variants with their group sizes; class i (dtype pair i)
 * of head dim d uses entry (i + d / 32) % 6, so the pairing rotates with the
 * head dim and every variant meets 16-bit and 8-bit caches across the suite. */
static const char *const VARIANTS[] = {
    "tq=1,page=0,window=0,sinks=0,flags=causal",
    "tq=1,page=16,window=0,sinks=0,flags=causal|paged|lse",
    "tq=4,page=0,window=1000,sinks=4,softcap=50,flags=causal|lse",
    "tq=2,page=32,window=512,sinks=0,draft_slots=1,flags=causal|paged|ring",
    "tq=16,page=0,window=0,sinks=0,flags=causal|lse",
    "tq=16,page=64,window=0,sinks=0,flags=tree|paged|scores",
};
static const int GROUPS[] = {32, 8, 6, 4, 1, 128};

static void compile_classes(const char *arch, int d)
{
    static const char *const q[] = {"f16", "bf16"};
    static const char *const kv[] = {"f16", "bf16", "int8", "fp8_e4m3"};
    gen_lib *lib = fmqa_test_open_templates();
    const gen_template *t = fmqa_test_template(lib, "decode", FMQA_OP_DECODE);
    fmqa_device_info dev = fmqa_test_device(arch);
    for (int i = 0; i < 8; i++) {
        const int g = GROUPS[(i + d / 32) % 6];
        char spec[GEN_PROBLEM_TEXT_CAP];
        snprintf(spec, sizeof spec,
                 "op=decode,batch=3,heads=%d,kv_heads=2,d=%d,dv=%d,kv_len=4096,q=%s,kv=%s,"
                 "out=%s,%s",
                 2 * g, d, d, q[i / 4], kv[i % 4], q[i / 4], VARIANTS[(i + d / 32) % 6]);
        fmqa_problem p = fmqa_test_problem(spec);
        gen_config c = fmqa_test_default_with(t, &p, &dev, "");
        fmqa_test_compile_clean(t, &c, &p, &dev, spec, 3);
    }
    gen_lib_close(lib);
}

Test(decode_compile, classes_sm80_d64, .timeout = 600) { compile_classes("sm_80", 64); }
Test(decode_compile, classes_sm80_d96, .timeout = 600) { compile_classes("sm_80", 96); }
Test(decode_compile, classes_sm80_d128, .timeout = 600) { compile_classes("sm_80", 128); }
Test(decode_compile, classes_sm80_d256, .timeout = 600) { compile_classes("sm_80", 256); }
Test(decode_compile, classes_sm90_d64, .timeout = 600) { compile_classes("sm_90", 64); }
Test(decode_compile, classes_sm90_d96, .timeout = 600) { compile_classes("sm_90", 96); }
Test(decode_compile, classes_sm90_d128, .timeout = 600) { compile_classes("sm_90", 128); }
Test(decode_compile, classes_sm90_d256, .timeout = 600) { compile_classes("sm_90", 256); }

/* The register-heaviest corners valid() admits: d = 256 with 32 tokens a warp
 * (64 spills: see illegal_... below), d = 128 with 128 tokens a warp, and d =
 * 128 with two m-tiles a warp (2 x 72 + 100; int8 2 x 76 + 100, its K bias
 * and scale columns, with soft-capping, learned-sink windows and a ring: the
 * corner that spilled 8 bytes while smem_addr was inline asm), all with 8-bit
 * conversion and the tree mask. */
Test(decode_compile, heavy_configs, .timeout = 600)
{
    static const struct {
        const char *spec, *config;
    } cases[] = {
        {"op=decode,batch=3,heads=256,kv_heads=2,d=256,dv=256,tq=16,kv_len=4096,q=bf16,"
         "kv=fp8_e4m3,out=bf16,flags=tree|lse",
         "BLOCK_N=64,BULK=0,M_TILES=1,SPLITS=2,STAGES=2,VBIAS=0,WARPS_M=2,WARPS_N=2"},
        {"op=decode,batch=3,heads=64,kv_heads=2,d=128,dv=128,tq=16,kv_len=4096,kv=int8,"
         "page=16,flags=causal|paged|tree",
         "BLOCK_N=128,BULK=0,M_TILES=1,SPLITS=4,STAGES=4,VBIAS=0,WARPS_M=2,WARPS_N=1"},
        {"op=decode,batch=3,heads=64,kv_heads=2,d=128,dv=128,tq=16,kv_len=4096,q=bf16,"
         "kv=fp8_e4m3,out=bf16,page=16,flags=tree|paged|lse",
         "BLOCK_N=64,BULK=0,M_TILES=2,SPLITS=2,STAGES=4,VBIAS=0,WARPS_M=1,WARPS_N=4"},
        {"op=decode,batch=3,heads=64,kv_heads=2,d=128,dv=128,tq=1,kv_len=4096,kv=int8,"
         "window=100,sinks=4,softcap=30,flags=causal|ring|lse",
         "BLOCK_N=64,BULK=0,M_TILES=2,SPLITS=2,STAGES=4,VBIAS=0,WARPS_M=1,WARPS_N=4"},
    };
    gen_lib *lib = fmqa_test_open_templates();
    const gen_template *t = fmqa_test_template(lib, "decode", FMQA_OP_DECODE);
    const char *const archs[] = {"sm_80", "sm_90"};
    for (int a = 0; a < 2; a++) {
        fmqa_device_info dev = fmqa_test_device(archs[a]);
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
            fmqa_problem p = fmqa_test_problem(cases[i].spec);
            gen_config c = fmqa_test_default_with(t, &p, &dev, cases[i].config);
            fmqa_test_compile_clean(t, &c, &p, &dev, cases[i].spec, 3);
        }
    }
    gen_lib_close(lib);
}

static gen_plan plan_of(const gen_template *t, const gen_config *c, const fmqa_problem *p,
                        const fmqa_device_info *d)
{
    gen_plan plan;
    fmqa_err err;
    cr_assert_eq(gen_launch_plan(t, c, p, d, &plan, &err), FMQA_OK, "%s", err.msg);
    return plan;
}

static int64_t get(const gen_config *c, const char *name)
{
    int64_t v = -1;
    cr_assert(gen_config_get(c, name, &v), "config lacks %s", name);
    return v;
}

/* MQA, 64 sequences of 4096 on an H100 preset (132 SMs, 233472 bytes of shared
 * memory an SM).  Default: one row warp of two m-tiles (32 rows), 4 token
 * warps, 64-token tiles, 3 stages.  Shared: Q 32 * (2*128 + 16) = 8704 +
 * max(3 stages * 2 * 64 * (256 + 16) = 104448, merge 1*2*3*(64+4)*32*4 =
 * 52224) = 113152, so 233472 / 114176 = 2 CTAs an SM: a persistent grid of
 * 264 CTAs.  64 segments (one row block a sequence), 264 + 64 - 1 = 327 slots
 * of 32 rows: partial O 327 * 32 * 128 * 4 = 5357568 bytes, LSE 327 * 32 * 4 =
 * 41856, then 64 (first, pieces) pairs.  A segment has at most ceil(264 / 64)
 * + 1 = 6 pieces; the combine's 2048 rows cover the SMs and 6 pieces fit one
 * batch of 8: one column slice, launched with PDL on sm_90. */
Test(decode_compile, mqa_default_and_launch_by_hand)
{
    gen_lib *lib = fmqa_test_open_templates();
    const gen_template *t = fmqa_test_template(lib, "decode", FMQA_OP_DECODE);
    fmqa_device_info dev = fmqa_test_device("sm_90");
    fmqa_problem p = fmqa_test_problem("op=decode,batch=64,heads=32,kv_heads=1,d=128,dv=128,tq=1,kv_len=4096,"
                           "flags=causal");
    gen_config c;
    fmqa_err err;
    cr_assert_eq(gen_default(t, &p, &dev, &c, &err), FMQA_OK, "%s", err.msg);
    cr_expect_eq(get(&c, "BLOCK_N"), 64);
    cr_expect_eq(get(&c, "WARPS_M"), 1);
    cr_expect_eq(get(&c, "M_TILES"), 2);
    cr_expect_eq(get(&c, "WARPS_N"), 4);
    cr_expect_eq(get(&c, "STAGES"), 3);
    cr_expect_eq(get(&c, "SPLITS"), 0);
    gen_plan plan = plan_of(t, &c, &p, &dev);
    cr_assert_eq(plan.n_kernels, 2);
    cr_expect_str_eq(plan.kernels[0].entry, "fmqa_decode_kernel");
    cr_expect_eq(plan.kernels[0].grid[0], 264);
    cr_expect_eq(plan.kernels[0].grid[1], 1);
    cr_expect_eq(plan.kernels[0].grid[2], 1);
    cr_expect_eq(plan.kernels[0].block[0], 128);
    cr_expect_eq(plan.kernels[0].shared, 113152);
    cr_expect_eq(plan.kernels[0].pdl, 0u);
    cr_expect_str_eq(plan.kernels[1].entry, "fmqa_decode_combine");
    /* One CTA per output row, 64 x 32; shared memory: 4 warps x 4 bytes, 128
     * threads x (a float4 sum + 8 float4 and 8 float landing slots). */
    cr_expect_eq(plan.kernels[1].grid[0], 2048);
    cr_expect_eq(plan.kernels[1].grid[1], 1);
    cr_expect_eq(plan.kernels[1].block[0], 128);
    cr_expect_eq(plan.kernels[1].shared, 16 + 128 * (16 + 8 * 16 + 8 * 4));
    cr_expect_eq(plan.kernels[1].pdl, 1u);
    cr_expect_eq(plan.splits, 327);
    int64_t lse_at = 0, meta_at = 0, pieces = 0;
    cr_expect(gen_plan_scalar(&plan, "ws_lse_offset", &lse_at));
    cr_expect(gen_plan_scalar(&plan, "ws_meta_offset", &meta_at));
    cr_expect(gen_plan_scalar(&plan, "pieces", &pieces));
    cr_expect_eq(lse_at, 5357568);
    cr_expect_eq(meta_at, 5357568 + 41856);
    cr_expect_eq(plan.workspace, 5357568 + 41856 + 64 * 8);
    cr_expect_eq(pieces, 6);
    /* sm_80 (108 SMs, 1 CTA an SM by shared memory): 108 CTAs, no PDL. */
    fmqa_device_info a100 = fmqa_test_device("sm_80");
    plan = plan_of(t, &c, &p, &a100);
    cr_expect_eq(plan.kernels[0].grid[0], 108);
    cr_expect_eq(plan.kernels[1].pdl, 0u);
    gen_lib_close(lib);
}

/* Same device, 264 CTA slots for the MQA defaults (2 an SM).  B = 1, T =
 * 131072: 2048 tiles on 264 CTAs, 264 slots, and the combine's 32 rows take 16
 * slices of 2 float4 columns (64 groups: 264 pieces in one batch of 8 a
 * thread).  GQA with 8 KV heads and batch 64: 512 segments of 16 rows, 264 +
 * 511 slots, at most 2 pieces a segment.  A ring of 4 sinks + 1024 holds 1028
 * positions (17 tiles), 64 segments: 327 slots.  d = 64, 8 heads, B = 1: 3
 * CTAs an SM would be 396, but 4096 positions are only 64 tiles: 32 CTAs of
 * two tiles each (MIN_CTA_TILES); 8 rows x 16 slices of one float4 column (d
 * = 64 has no more).  d = 64 MQA, B = 64, T = 1024: shared memory would let 3
 * CTAs share an SM, the registers (~180 a thread, ptxas 172) only 2: 264
 * CTAs, not 396 (1.5 waves), 264 + 63 slots. */
Test(decode_compile, schedule_by_hand)
{
    gen_lib *lib = fmqa_test_open_templates();
    const gen_template *t = fmqa_test_template(lib, "decode", FMQA_OP_DECODE);
    fmqa_device_info dev = fmqa_test_device("sm_90");
    static const struct {
        const char *spec;
        int ctas, slots, kernels;
        int64_t workspace;
        uint32_t slices; /* combine column slices */
    } cases[] = {
        {"op=decode,batch=1,heads=32,kv_heads=1,d=128,tq=1,kv_len=131072,flags=causal", 264, 264,
         2, 264LL * 32 * 129 * 4 + 8, 16},
        {"op=decode,batch=64,heads=32,kv_heads=8,d=128,tq=1,kv_len=4096,flags=causal", 264, 775, 2,
         775LL * 16 * 129 * 4 + 512 * 8, 1},
        {"op=decode,batch=64,heads=32,kv_heads=1,d=128,tq=1,kv_len=100000,window=1024,sinks=4,"
         "flags=causal|ring",
         264, 327, 2, 327LL * 32 * 129 * 4 + 64 * 8, 1},
        {"op=decode,batch=1,heads=8,kv_heads=1,d=64,tq=1,kv_len=4096,flags=causal", 32, 32,
         2, 32LL * 16 * 65 * 4 + 8, 16},
        {"op=decode,batch=64,heads=32,kv_heads=1,d=64,tq=1,kv_len=1024,flags=causal", 264, 327,
         2, 327LL * 32 * 65 * 4 + 64 * 8, 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fmqa_problem p = fmqa_test_problem(cases[i].spec);
        gen_config c;
        fmqa_err err;
        cr_assert_eq(gen_default(t, &p, &dev, &c, &err), FMQA_OK, "%s", err.msg);
        gen_plan plan = plan_of(t, &c, &p, &dev);
        cr_expect_eq(plan.splits, cases[i].slots, "%s: %d slots", cases[i].spec, plan.splits);
        cr_expect_eq(plan.n_kernels, cases[i].kernels, "%s", cases[i].spec);
        cr_expect_eq(plan.kernels[0].grid[0], (uint32_t)cases[i].ctas, "%s", cases[i].spec);
        cr_expect_eq(plan.workspace, cases[i].workspace, "%s", cases[i].spec);
        if (cases[i].kernels == 2)
            cr_expect_eq(plan.kernels[1].grid[1], cases[i].slices, "%s: %u slices", cases[i].spec,
                         plan.kernels[1].grid[1]);
    }
    /* An explicit SPLITS=4: 4 CTAs whatever the device; 2 x 2 segments, 4 + 4
     * - 1 slots. */
    fmqa_problem p = fmqa_test_problem("op=decode,batch=2,heads=8,kv_heads=2,d=64,tq=1,kv_len=1000,flags=causal");
    gen_config c = fmqa_test_config("BLOCK_N=64,BULK=0,M_TILES=1,SPLITS=4,STAGES=2,VBIAS=0,WARPS_M=1,WARPS_N=2");
    gen_plan plan = plan_of(t, &c, &p, &dev);
    cr_expect_eq(plan.splits, 7);
    cr_expect_eq(plan.kernels[0].grid[0], 4);
    cr_expect_eq(plan.kernels[0].grid[1], 1);
    cr_expect_eq(plan.kernels[0].block[0], 64);
    /* Batch-invariant: 64 tiles are 8 chunks of 8 whatever the device, 64
     * segments x 8 slots; the combine's slices are dv / 32 = 4. */
    p = fmqa_test_problem("op=decode,batch=64,heads=32,kv_heads=1,d=128,tq=1,kv_len=4096,flags=causal|invariant");
    fmqa_err err;
    cr_assert_eq(gen_default(t, &p, &dev, &c, &err), FMQA_OK, "%s", err.msg);
    plan = plan_of(t, &c, &p, &dev);
    cr_expect_eq(plan.splits, 64 * 8);
    cr_expect_eq(plan.kernels[1].grid[1], 4);
    gen_lib_close(lib);
}

/* The default's m-tiles a CTA (WARPS_M x M_TILES) are a power of two (the
 * space has no 3): 33..48 rows (G = 40 MQA; G = 12 with 3 drafts) would need
 * 3; 4 leaves one of padding only, so the default takes 2 (two row blocks of
 * 32).  64 rows take 4 (two m-tiles a warp with 32 tokens would need 2 x 80 +
 * 100 registers: one a warp); d = 256 caps at 2. */
Test(decode_compile, default_row_warps_in_space)
{
    gen_lib *lib = fmqa_test_open_templates();
    const gen_template *t = fmqa_test_template(lib, "decode", FMQA_OP_DECODE);
    static const struct {
        const char *spec;
        int m_tiles; /* WARPS_M x M_TILES */
    } cases[] = {
        {"op=decode,batch=2,heads=40,kv_heads=1,d=128,tq=1,kv_len=4096,flags=causal", 2},
        {"op=decode,batch=2,heads=12,kv_heads=1,d=64,tq=3,kv_len=4096,flags=causal", 2},
        {"op=decode,batch=2,heads=48,kv_heads=1,d=128,tq=1,kv_len=4096,kv=int8", 2},
        {"op=decode,batch=2,heads=64,kv_heads=1,d=128,tq=1,kv_len=4096,flags=causal", 4},
        {"op=decode,batch=2,heads=40,kv_heads=1,d=256,tq=1,kv_len=4096,flags=causal", 2},
    };
    const char *const archs[] = {"sm_80", "sm_90"};
    for (int a = 0; a < 2; a++) {
        fmqa_device_info dev = fmqa_test_device(archs[a]);
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
            fmqa_problem p = fmqa_test_problem(cases[i].spec);
            gen_config c;
            fmqa_err err;
            cr_assert_eq(gen_default(t, &p, &dev, &c, &err), FMQA_OK, "%s %s: %s", archs[a],
                         cases[i].spec, err.msg);
            cr_expect_eq(get(&c, "WARPS_M") * get(&c, "M_TILES"), cases[i].m_tiles, "%s %s",
                         archs[a], cases[i].spec);
        }
    }
    gen_lib_close(lib);
}

/* G = 1, one token, d = 64 (16-row warps only: WARPS_M = 1): BLOCK_N 32 allows
 * WARPS_N 1, 2; 64: 1, 2, 4; 128: 1, 2, 4, 8 (16 tokens a warp at least); x 3
 * STAGES; x all 9 SPLITS (persistent CTAs: any count is legal).  (2 + 3 + 4) *
 * 3 * 9 = 243;
 * all fit in shared memory (largest: 2304 + 4*2*128*144 = 149760 bytes) on
 * both presets.  sm_90 doubles them: BULK 0 and 1 (sm_80 refuses BULK = 1). */
Test(decode_compile, space_size_by_hand)
{
    gen_lib *lib = fmqa_test_open_templates();
    const gen_template *t = fmqa_test_template(lib, "decode", FMQA_OP_DECODE);
    fmqa_problem p = fmqa_test_problem("op=decode,batch=2,heads=4,kv_heads=4,d=64,tq=1,kv_len=4096,flags=causal");
    const char *const archs[] = {"sm_80", "sm_90"};
    for (int a = 0; a < 2; a++) {
        fmqa_device_info dev = fmqa_test_device(archs[a]);
        gen_config *cs = NULL;
        size_t n = 0;
        fmqa_err err;
        cr_assert_eq(gen_space(t, &p, &dev, &cs, &n, &err), FMQA_OK, "%s", err.msg);
        cr_expect_eq(n, a == 0 ? 243u : 486u, "%s: %zu legal configs", archs[a], n);
        free(cs);
    }
    gen_lib_close(lib);
}

/* BULK = 1 (decode.cuh, "Load pipeline": the producer warp's cp.async.bulk
 * copies, mbarriers, the consumers' named barrier) compiled for sm_90 without
 * spills or a stack frame over both cache widths, every head dim, paged,
 * window + ring + sinks, tree masks and 128-token tiles (4 rows a producer
 * lane); refused on sm_80 with the reason. */
Test(decode_compile, bulk_sm90, .timeout = 600)
{
    static const struct {
        const char *spec, *config;
    } cases[] = {
        {"op=decode,batch=64,heads=32,kv_heads=1,d=128,dv=128,tq=1,kv_len=4096,flags=causal", "BULK=1"},
        {"op=decode,batch=3,heads=16,kv_heads=2,d=64,dv=64,tq=4,kv_len=4096,kv=int8,page=16,"
         "window=512,sinks=4,flags=causal|paged|ring|lse", "BULK=1"},
        {"op=decode,batch=3,heads=12,kv_heads=2,d=96,dv=96,tq=2,kv_len=4096,q=bf16,kv=fp8_e4m3,out=bf16,"
         "flags=tree|lse", "BULK=1,BLOCK_N=128"},
        {"op=decode,batch=3,heads=8,kv_heads=2,d=256,dv=256,tq=1,kv_len=4096,q=bf16,kv=bf16,out=bf16,"
         "page=32,flags=causal|paged", "BULK=1"},
    };
    gen_lib *lib = fmqa_test_open_templates();
    const gen_template *t = fmqa_test_template(lib, "decode", FMQA_OP_DECODE);
    fmqa_device_info h100 = fmqa_test_device("sm_90"), a100 = fmqa_test_device("sm_80");
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fmqa_problem p = fmqa_test_problem(cases[i].spec);
        gen_config c = fmqa_test_default_with(t, &p, &h100, cases[i].config);
        fmqa_err err;
        fmqa_test_compile_clean(t, &c, &p, &h100, cases[i].spec, 3);
        cr_expect_eq(gen_check(t, &c, &p, &a100, &err), FMQA_ERR_UNSUPPORTED);
        cr_expect(strstr(err.msg, "needs sm_90") != NULL, "sm_80: %s", err.msg);
    }
    gen_lib_close(lib);
}

Test(decode_compile, illegal_problems_and_configs_say_why)
{
    gen_lib *lib = fmqa_test_open_templates();
    const gen_template *t = fmqa_test_template(lib, "decode", FMQA_OP_DECODE);
    const char *ok_cfg = "BLOCK_N=64,BULK=0,M_TILES=1,SPLITS=1,STAGES=2,VBIAS=0,WARPS_M=1,WARPS_N=2";
    fmqa_test_expect_reason(t, "op=decode,heads=8,kv_heads=1,d=80,tq=1,flags=causal", ok_cfg,
                            "head_dim_qk must be 64, 96, 128 or 256, got 80");
    fmqa_test_expect_reason(t, "op=decode,heads=8,kv_heads=1,d=128,dv=64,tq=1", ok_cfg,
                            "head_dim_v must equal head_dim_qk");
    fmqa_test_expect_reason(t, "op=decode,heads=8,kv_heads=1,d=128,tq=17,kv_len=100", ok_cfg,
                            "q_tokens must be in [1, 16], got 17");
    fmqa_test_expect_reason(t, "op=decode,heads=256,kv_heads=1,d=64,tq=1", ok_cfg,
                            "group size num_q_heads / num_kv_heads must be <= 128, got 256");
    fmqa_test_expect_reason(t, "op=decode,heads=8,kv_heads=1,d=64,tq=1,kv=f32", ok_cfg,
                            "kv_dtype must be f16, bf16, int8 or fp8_e4m3, got f32");
    fmqa_test_expect_reason(t, "op=decode,heads=8,kv_heads=1,d=64,tq=1,page=24,flags=paged", ok_cfg,
                            "page_size must be a power of two >= 16 when paged, got 24");
    /* 8 rows fill one 16-row warp: a second would be padding only */
    fmqa_test_expect_reason(t, "op=decode,heads=8,kv_heads=1,d=64,tq=1",
                            "BLOCK_N=64,BULK=0,M_TILES=1,SPLITS=1,STAGES=2,VBIAS=0,WARPS_M=2,WARPS_N=1",
                            "padding rows only");
    /* 16 rows fill one m-tile: a warp's second would be padding only */
    fmqa_test_expect_reason(t, "op=decode,heads=16,kv_heads=1,d=64,tq=1",
                            "BLOCK_N=64,BULK=0,M_TILES=2,SPLITS=1,STAGES=2,VBIAS=0,WARPS_M=1,WARPS_N=4",
                            "padding rows only");
    fmqa_test_expect_reason(t, "op=decode,heads=32,kv_heads=1,d=64,tq=1",
                            "BLOCK_N=32,BULK=0,M_TILES=1,SPLITS=1,STAGES=2,VBIAS=0,WARPS_M=1,WARPS_N=4",
                            "not a multiple of 16");
    /* 16*(512+16) + 4 * 2*128*(512+16) = 549120 bytes */
    fmqa_test_expect_reason(t, "op=decode,heads=32,kv_heads=1,d=256,tq=1",
                            "BLOCK_N=128,BULK=0,M_TILES=1,SPLITS=1,STAGES=4,VBIAS=0,WARPS_M=1,WARPS_N=8",
                            "549120 bytes of shared memory exceed");
    /* d/2 + 64/2 + 100 = 260 registers (ptxas spills there) */
    fmqa_test_expect_reason(t, "op=decode,heads=32,kv_heads=1,d=256,tq=1",
                            "BLOCK_N=64,BULK=0,M_TILES=1,SPLITS=1,STAGES=2,VBIAS=0,WARPS_M=1,WARPS_N=1",
                            "about 260 registers");
    /* int8, two m-tiles of 32 tokens a warp: 2 x (128/2 + 32/2 + 4) + 100 = 268 */
    fmqa_test_expect_reason(t, "op=decode,heads=32,kv_heads=1,d=128,tq=1,kv=int8",
                            "BLOCK_N=64,BULK=0,M_TILES=2,SPLITS=1,STAGES=2,VBIAS=0,WARPS_M=1,WARPS_N=2",
                            "about 268 registers");
    /* two m-tiles: 2 x (128/2 + 32/2) + 100 = 260 */
    fmqa_test_expect_reason(t, "op=decode,heads=32,kv_heads=1,d=128,tq=1",
                            "BLOCK_N=64,BULK=0,M_TILES=2,SPLITS=1,STAGES=2,VBIAS=0,WARPS_M=1,WARPS_N=2",
                            "about 260 registers");
    /* 512 threads at 64/2 + 8 + 100 = 140 registers need 71680 > 65536 */
    fmqa_test_expect_reason(t, "op=decode,heads=64,kv_heads=1,d=64,tq=1",
                            "BLOCK_N=64,BULK=0,M_TILES=1,SPLITS=1,STAGES=2,VBIAS=0,WARPS_M=4,WARPS_N=4",
                            "140 registers x 512 threads");
    gen_lib_close(lib);
}

/* VBIAS = 1 (int8 V read as 1152 + v) only where a warp accumulates at most
 * 256 tokens in one piece (decode.lua, vbias_check): one CTA, one warp of
 * 64-token tiles takes a whole sequence, so kv_len 256 is the last length
 * allowed; a serving shape (GQA 8 KV heads, batch 64, 32K context) gets
 * VBIAS = 0 by default, a short one VBIAS = 1; bf16 queries never. */
Test(decode_compile, vbias_bound)
{
    gen_lib *lib = fmqa_test_open_templates();
    const gen_template *t = fmqa_test_template(lib, "decode", FMQA_OP_DECODE);
    const char *one_warp = "BLOCK_N=64,BULK=0,M_TILES=1,SPLITS=1,STAGES=2,VBIAS=1,WARPS_M=1,WARPS_N=1";
    const fmqa_device_info dev = fmqa_test_device("sm_90");
    fmqa_problem p = fmqa_test_problem("op=decode,heads=8,kv_heads=1,d=64,tq=1,kv_len=256,kv=int8");
    gen_config c = fmqa_test_config(one_warp);
    fmqa_err err;
    cr_expect_eq(gen_check(t, &c, &p, &dev, &err), FMQA_OK, "%s", err.msg);
    fmqa_test_expect_reason(t, "op=decode,heads=8,kv_heads=1,d=64,tq=1,kv_len=257,kv=int8", one_warp,
                            "up to 320 tokens in one piece, over 256");
    fmqa_test_expect_reason(t, "op=decode,heads=8,kv_heads=1,d=64,tq=1,kv_len=256,q=bf16,out=bf16,kv=int8",
                            one_warp, "VBIAS = 1 needs an int8 cache with f16 queries");
    fmqa_test_expect_reason(t, "op=decode,heads=8,kv_heads=1,d=64,tq=1,kv_len=256,kv=fp8_e4m3", one_warp,
                            "VBIAS = 1 needs an int8 cache with f16 queries");
    static const struct {
        const char *spec;
        int64_t vbias;
    } defaults[] = {
        {"op=decode,batch=64,heads=64,kv_heads=8,d=128,tq=1,kv_len=32768,kv=int8,flags=causal", 0},
        {"op=decode,batch=1,heads=32,kv_heads=1,d=128,tq=1,kv_len=1024,kv=int8,flags=causal", 1},
        {"op=decode,batch=1,heads=32,kv_heads=1,d=128,tq=1,kv_len=1024,flags=causal", 0},
    };
    for (size_t i = 0; i < sizeof defaults / sizeof defaults[0]; i++) {
        p = fmqa_test_problem(defaults[i].spec);
        cr_assert_eq(gen_default(t, &p, &dev, &c, &err), FMQA_OK, "%s: %s", defaults[i].spec, err.msg);
        int64_t v = -1;
        cr_expect(gen_config_get(&c, "VBIAS", &v) && v == defaults[i].vbias, "%s: VBIAS = %lld", defaults[i].spec,
                  (long long)v);
    }
    fmqa_test_expect_reason(t, defaults[0].spec,
                            "BLOCK_N=64,BULK=0,M_TILES=1,SPLITS=0,STAGES=4,VBIAS=1,WARPS_M=1,WARPS_N=4",
                            "truncating fp32 mma accumulation");
    gen_lib_close(lib);
}

/* Engines' page tables (issue 16): a CSR table (page ids and lengths from
 * page_indptr, page_indices, last_page_len) compiles clean with 16- and
 * 8-bit caches, a window and drafts, on both architectures. */
Test(decode_compile, layout_csr, .timeout = 600)
{
    static const struct {
        const char *arch, *spec;
    } cases[] = {
        {"sm_80", "op=decode,batch=3,heads=32,kv_heads=4,d=128,tq=1,kv_len=4096,page=16,"
                  "flags=causal|paged|csr|lse"},
        {"sm_90", "op=decode,batch=3,heads=8,kv_heads=1,d=128,tq=3,kv_len=4096,kv=int8,page=64,"
                  "window=512,sinks=4,flags=causal|paged|csr"},
    };
    gen_lib *lib = fmqa_test_open_templates();
    const gen_template *t = fmqa_test_template(lib, "decode", FMQA_OP_DECODE);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fmqa_device_info dev = fmqa_test_device(cases[i].arch);
        fmqa_problem p = fmqa_test_problem(cases[i].spec);
        gen_config c = fmqa_test_default_with(t, &p, &dev, "");
        fmqa_test_compile_clean(t, &c, &p, &dev, cases[i].spec, 3);
    }
    gen_lib_close(lib);
}
