/*
 * test_prefill_sm90_compile.c -- prefill_sm90 and the Hopper instruction layer
 * through NVRTC, without a GPU:
 *  - the template's default config for head dims 64 / 128 / 256, f16 and bf16,
 *    groups 1, 8 and 32, causal or not, LSE or not, compiles for sm_90a with
 *    no spills and no stack frame;
 *  - its Lua: the launch plan (grid, 384 threads, shared bytes by hand), the
 *    size of its space at d = 128, and
 *    the reasons it gives for what it does not serve (another architecture,
 *    8-bit K/V, a window, a cache length unlike the query length);
 *  - a kernel calling every sm_90 / sm_90a wrapper of fmqa_ptx.cuh and the
 *    helpers of fmqa_sm90.cuh compiles for sm_90a, and the headers compile
 *    for sm_80 and sm_90 without them (the guards).
 * Seven NVRTC compiles of a few seconds each.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>
#include <nvrtc.h>

#include "gen.h"
#include "gen_internal.h"
#include "test_support.h"

Test(prefill_sm90_compile, defaults, .timeout = 900)
{
    /* 384 threads allow 168 registers each */
    static const fmqa_test_compile_want want = {.arch = "sm_90a", .n_entries = 1, .max_registers = 168};
    gen_lib *lib = fmqa_test_open_templates();
    const gen_template *t = fmqa_test_template(lib, "prefill_sm90", FMQA_OP_PREFILL);
    fmqa_device_info dev = fmqa_test_device("sm_90a");
    static const char *const specs[] = {
        "op=prefill,batch=4,heads=8,kv_heads=1,d=64,tq=4096,kv_len=4096,q=f16,kv=f16,out=f16,flags=causal|lse",
        "op=prefill,batch=4,heads=32,kv_heads=32,d=128,tq=4096,kv_len=4096,q=bf16,kv=bf16,out=bf16,flags=causal",
        "op=prefill,batch=1,heads=32,kv_heads=1,d=128,tq=16384,kv_len=16384,q=f16,kv=f16,out=f16,flags=lse",
        "op=prefill,batch=2,heads=32,kv_heads=4,d=256,tq=2048,kv_len=2048,q=bf16,kv=bf16,out=bf16,flags=causal|lse",
    };
    for (size_t i = 0; i < sizeof specs / sizeof specs[0]; i++) {
        fmqa_problem p = fmqa_test_problem(specs[i]);
        gen_config c;
        fmqa_err err;
        cr_assert_eq(gen_default(t, &p, &dev, &c, &err), FMQA_OK, "%s: %s", specs[i], err.msg);
        fmqa_test_compile_checked(t, &c, &p, &dev, specs[i], &want);
    }
    gen_lib_close(lib);
}

Test(prefill_sm90_compile, lua_plan_and_reasons)
{
    gen_lib *lib = fmqa_test_open_templates();
    const gen_template *t = fmqa_test_template(lib, "prefill_sm90", FMQA_OP_PREFILL);
    fmqa_device_info dev = fmqa_test_device("sm_90a");
    fmqa_problem p = fmqa_test_problem(
        "op=prefill,batch=3,heads=16,kv_heads=2,d=128,tq=300,kv_len=300,q=f16,kv=f16,out=f16,flags=causal");
    gen_config c;
    gen_plan plan;
    fmqa_err err;
    cr_assert_eq(gen_default(t, &p, &dev, &c, &err), FMQA_OK, "%s", err.msg);
    cr_assert_eq(gen_launch_plan(t, &c, &p, &dev, &plan, &err), FMQA_OK, "%s", err.msg);
    int64_t bn = 0, st = 0;
    cr_assert(gen_config_get(&c, "BLOCK_N", &bn) && gen_config_get(&c, "STAGES", &st));
    cr_expect_eq(bn, 128);
    cr_expect_eq(st, 2);
    cr_assert_eq(plan.n_kernels, 1);
    const gen_kernel *k = &plan.kernels[0];
    cr_expect(k->grid[0] == 3 && k->grid[1] == 16 && k->grid[2] == 3, "grid %u,%u,%u", k->grid[0], k->grid[1],
              k->grid[2]);
    cr_expect_eq(k->block[0], 384);
    /* alignment slack + Q (128 x 128 x 2) + 2 stages of K and V (128 x 128 x 2) + 7 barriers */
    cr_expect_eq(k->shared, 1024 + 32768 + 2 * 2 * 32768 + 8 * 7);
    gen_config *all = NULL;
    size_t n = 0;
    cr_assert_eq(gen_space(t, &p, &dev, &all, &n, &err), FMQA_OK, "%s", err.msg);
    cr_expect_eq(n, 5, "BLOCK_N 64 x STAGES 2..4 and 128 x 2..3 fit 227 KB at d = 128, got %zu", n);
    free(all);
    const char *base = "op=prefill,batch=2,heads=8,kv_heads=1,d=128,tq=512,kv_len=512,out=f16,";
    char spec[256];
    snprintf(spec, sizeof spec, "%sq=f16,kv=f16,flags=causal", base);
    fmqa_test_expect_no_default(t, spec, "sm_80", "needs sm_90");
    snprintf(spec, sizeof spec, "%sq=f16,kv=int8,flags=causal", base);
    fmqa_test_expect_no_default(t, spec, "sm_90a", "kv_dtype");
    snprintf(spec, sizeof spec, "%sq=f16,kv=f16,window=128,flags=causal", base);
    fmqa_test_expect_no_default(t, spec, "sm_90a", "window");
    fmqa_test_expect_no_default(t, "op=prefill,batch=2,heads=8,kv_heads=1,d=128,tq=512,kv_len=1024,q=f16,kv=f16,out=f16",
                   "sm_90a", "kv_len must equal q_tokens");
    fmqa_test_expect_no_default(t, "op=prefill,batch=2,heads=8,kv_heads=1,d=96,tq=512,kv_len=512,q=f16,kv=f16,out=f16",
                   "sm_90a", "head_dim_qk must be 64, 128 or 256");
    gen_lib_close(lib);
}

/* ---------------------------------------------------------------- the instruction layer */

static const char *const KERNEL =
    "#include \"fmqa_params.h\"\n"
    "#include \"fmqa_sm90.cuh\"\n"
    "using namespace fmqa_dev;\n"
    "#if defined(__CUDA_ARCH_FEAT_SM90_ALL)\n"
    "extern \"C\" __global__ void __launch_bounds__(128) every(const __grid_constant__ fmqa_tensor_map m,\n"
    "                                                      const float *src, float *out) {\n"
    "    extern __shared__ __align__(1024) unsigned char smem[];\n"
    "    const u32 bar = smem_addr(smem + 65536), t = smem_addr(smem);\n"
    "    if (threadIdx.x == 0) { mbar_init(bar, 1); fence_mbarrier_init(); }\n"
    "    __syncthreads();\n"
    "    if (threadIdx.x < 32 && elect_one()) {\n"
    "        mbar_arrive_expect_tx(bar, 4 * 4096 + 64);\n"
    "        tma_load_2d(t, &m, 0, 0, bar);\n"
    "        tma_load_3d(t + 4096, &m, 0, 0, 0, bar);\n"
    "        tma_load_4d(t + 8192, &m, 0, 0, 0, 0, bar);\n"
    "        tma_load_2d(t + 12288, &m, 64, 0, bar);\n"
    "        bulk_g2s(t + 16384, src, 64, bar);\n"
    "    }\n"
    "    mbar_wait(bar, 0);\n"
    "    fence_proxy_async();\n"
    "    setmaxnreg_inc<232>();\n"
    "    float a[32], b[64], c[128];\n"
    "    u32 f[4] = {1u, 2u, 3u, 4u};\n"
    "    wgmma_fence();\n"
    "    wgmma_ss<64, 0, 0, 0>(a, desc_kmajor(t, 64, 0, 128), desc_kmajor(t, 64, 0, 128), 0);\n"
    "    wgmma_ss<128, 1, 1, 1>(b, desc_mnmajor(t, 64, 0, 64), desc_mnmajor(t, 64, 0, 64), 0);\n"
    "    wgmma_ss<256, 0, 0, 1>(c, desc_kmajor(t, 64, 0, 32), desc_mnmajor(t, 64, 0, 32), 0);\n"
    "    wgmma_rs<64, 1, 0>(a, f, desc_kmajor(t, 64, 0, 128), 1);\n"
    "    wgmma_rs<128, 0, 1>(b, f, wgmma_desc(t, 128, 1024, 0), 1);\n"
    "    wgmma_rs<256, 1, 1>(c, f, desc_mnmajor(t, 64, 0, 128), 1);\n"
    "    wgmma_commit();\n"
    "    wgmma_wait<1>(a);\n"
    "    wgmma_wait<0>(b);\n"
    "    wgmma_wait<0>(c);\n"
    "    float s = 0.0f;\n"
    "    for (int i = 0; i < 32; ++i) s += a[i] + b[i] + c[i];\n"
    "    out[threadIdx.x] = s;\n"
    "    mbar_arrive(bar);\n"
    "    setmaxnreg_dec<40>();\n"
    "}\n"
    "#else\n"
    "extern \"C\" __global__ void every(const float *src, float *out) { out[0] = src[0]; }\n"
    "#endif\n";

static char *read_header(const char *name)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", fmqa_test_template_dir(), name);
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "%s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    cr_assert_eq(fread(s, 1, (size_t)n, f), (size_t)n);
    s[n] = 0;
    fclose(f);
    return s;
}

/* Compiles KERNEL for arch to a cubin; returns NVRTC's result, the log in log. */
static nvrtcResult compile_layer(const char *arch, char *log, size_t cap)
{
    static const char *const names[] = {"fmqa_sm90.cuh", "fmqa_device.cuh", "fmqa_ptx.cuh", "fmqa_params.h"};
    const char *texts[4];
    for (int i = 0; i < 4; i++)
        texts[i] = read_header(names[i]);
    nvrtcProgram prog;
    cr_assert_eq(nvrtcCreateProgram(&prog, KERNEL, "hopper_layer.cu", 4, texts, names), NVRTC_SUCCESS);
    char opt_arch[64], opt_inc[4096];
    snprintf(opt_arch, sizeof opt_arch, "--gpu-architecture=%s", arch);
    snprintf(opt_inc, sizeof opt_inc, "-I%s", gen_cuda_include_dir());
    const char *opts[] = {opt_arch, "-default-device", "-std=c++17", opt_inc};
    nvrtcResult r = nvrtcCompileProgram(prog, 4, opts);
    size_t n = 0;
    nvrtcGetProgramLogSize(prog, &n);
    log[0] = 0;
    if (n <= cap)
        nvrtcGetProgramLog(prog, log);
    size_t cubin = 0;
    if (r == NVRTC_SUCCESS)
        cr_expect(nvrtcGetCUBINSize(prog, &cubin) == NVRTC_SUCCESS && cubin > 0, "%s: no cubin", arch);
    nvrtcDestroyProgram(&prog);
    for (int i = 0; i < 4; i++)
        free((void *)texts[i]);
    return r;
}

Test(prefill_sm90_compile, instruction_layer, .timeout = 600)
{
    static char log[1 << 16];
    for (int i = 0; i < 3; i++) {
        const char *arch = (const char *[]){"sm_90a", "sm_90", "sm_80"}[i];
        cr_expect_eq(compile_layer(arch, log, sizeof log), NVRTC_SUCCESS, "%s:\n%s", arch, log);
    }
}
