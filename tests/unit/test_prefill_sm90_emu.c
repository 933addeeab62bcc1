/*
 * test_prefill_sm90_emu.c -- the prefill_sm90 template's real source (TMA,
 * mbarriers, wgmma, setmaxnreg; templates/prefill_sm90.cuh) run on the CPU
 * through the emulator (sm_90a) against the float64 reference, sequence by
 * sequence (ref_attention, causal or not): lengths 1, 17, 128, 300 in one
 * ragged batch, groups 1, 2 and 8, head dims 64, 128 and 256, f16 and bf16.
 *
 * Each case: the template's default config for the problem (the Lua launch
 * plan), gen_render's source built with tests/emu/prefill_sm90_emu.cpp, and
 * the kernel parameters filled by the runtime itself from public
 * fmqa_prefill_args: rt_prefill_kernel_params_fill (argument checks, the
 * params, rt_tmap.c's maps and their boxes and strides) over an rt_cuda whose
 * cuTensorMapEncodeTiled is the emulator's model of it (emu_encode_tiled
 * below), so that a wrong map, box or stride in the runtime fails these cases
 * as it would fail on a GPU.  Inputs are fresh random values in a ragged batch (varlen by
 * cu_seqlens_q); q and k rows carry padding between tokens and v a
 * head-major layout unlike k's, so that a stride mixed up reads the wrong
 * row; padding and outputs are NaN, so a stray read or a missing write
 * fails; every buffer ends at an inaccessible page.
 *
 * Cost (2-core CI machine): one emulator build per case (~10 s of CPU) and
 * the runs (a few seconds each).
 */
#define _POSIX_C_SOURCE 200809L

#include <dlfcn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "fmqa_params.h"
#include "gen.h"
#include "ref.h"
#include "rt.h"
#include "rt_cuda.h"
#include "test_support.h"

typedef int (*emu_launch_fn)(const char *entry, const fmqa_prefill_sm90_params *p, const unsigned grid[3],
                             unsigned threads, unsigned dyn_smem);
typedef const char *(*emu_tmap_fn)(fmqa_tensor_map *out, const void *base, int rank, int esize, int swizzle,
                                   const unsigned long long *dims, const unsigned long long *strides,
                                   const unsigned *box);

/* The emulator's model of the driver's encoder, behind the driver's prototype:
 * what the model does not cover (interleave, element strides other than 1, a
 * NaN fill) is refused with CUDA_ERROR_NOT_SUPPORTED, what it rejects gets
 * CUDA_ERROR_INVALID_VALUE as from the driver; why is kept in tmap_why. */
static emu_tmap_fn tmap_model;
static char tmap_why[160];

static CUresult emu_encode_tiled(CUtensorMap *map, CUtensorMapDataType type, cuuint32_t rank, void *base,
                                 const cuuint64_t *dims, const cuuint64_t *strides, const cuuint32_t *box,
                                 const cuuint32_t *elem_strides, CUtensorMapInterleave interleave,
                                 CUtensorMapSwizzle swizzle, CUtensorMapL2promotion l2,
                                 CUtensorMapFloatOOBfill fill)
{
    (void)l2; /* a cache hint: no effect on what is read */
    static const int esize[] = {[CU_TENSOR_MAP_DATA_TYPE_UINT8] = 1, [CU_TENSOR_MAP_DATA_TYPE_UINT16] = 2,
                                [CU_TENSOR_MAP_DATA_TYPE_UINT32] = 4, [CU_TENSOR_MAP_DATA_TYPE_UINT64] = 8};
    static const int swz[] = {[CU_TENSOR_MAP_SWIZZLE_NONE] = 0, [CU_TENSOR_MAP_SWIZZLE_32B] = 32,
                              [CU_TENSOR_MAP_SWIZZLE_64B] = 64, [CU_TENSOR_MAP_SWIZZLE_128B] = 128};
    unsigned long long d[5], st[4];
    unsigned b[5];
    int plain = rank >= 1 && rank <= 5 && interleave == CU_TENSOR_MAP_INTERLEAVE_NONE &&
                fill == CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE && (unsigned)type < sizeof esize / sizeof *esize &&
                esize[type] && (unsigned)swizzle < sizeof swz / sizeof *swz;
    for (cuuint32_t i = 0; plain && i < rank; i++) {
        plain &= elem_strides[i] == 1;
        d[i] = dims[i], b[i] = box[i];
        if (i > 0)
            st[i - 1] = strides[i - 1];
    }
    if (!plain) {
        snprintf(tmap_why, sizeof tmap_why, "not modelled: rank %u, type %d, interleave %d, fill %d, element "
                 "strides", rank, (int)type, (int)interleave, (int)fill);
        return CUDA_ERROR_NOT_SUPPORTED;
    }
    const char *e = tmap_model((fmqa_tensor_map *)map, base, (int)rank, esize[type], swz[swizzle], d, st, b);
    snprintf(tmap_why, sizeof tmap_why, "%s", e ? e : "");
    return e ? CUDA_ERROR_INVALID_VALUE : CUDA_SUCCESS;
}

#define MAX_SEQS 8

typedef struct scase {
    const char *spec; /* batch, heads, d, dtypes, flags; tq = kv_len = the longest */
    int lens[MAX_SEQS];
    int learned_sinks; /* args.sinks: one learned logit per query head */
} scase;

static void *poisoned(size_t bytes) { return fmqa_test_guarded(bytes, 16, 0xff); }

static void run_case(const scase *sc)
{
    gen_lib *lib = NULL;
    fmqa_err err;
    cr_assert_eq(gen_lib_open(fmqa_test_template_dir(), &lib, &err), FMQA_OK, "%s", err.msg);
    const gen_template *t = gen_lib_find(lib, "prefill_sm90");
    cr_assert_not_null(t);
    fmqa_device_info dev;
    cr_assert_eq(gen_device_preset("sm_90a", &dev, &err), FMQA_OK, "%s", err.msg);
    fmqa_problem p;
    cr_assert_eq(gen_problem_parse(sc->spec, &p, &err), FMQA_OK, "%s: %s", sc->spec, err.msg);
    gen_config c;
    cr_assert_eq(gen_default(t, &p, &dev, &c, &err), FMQA_OK, "%s", err.msg);
    gen_plan plan;
    cr_assert_eq(gen_launch_plan(t, &c, &p, &dev, &plan, &err), FMQA_OK, "%s", err.msg);
    char dir[] = "/tmp/fmqa-pf90-XXXXXX";
    emu_launch_fn launch = (emu_launch_fn)fmqa_test_emu_build(t, &c, &p, &dev, "prefill_sm90_emu.cpp", dir);
    char so[64];
    snprintf(so, sizeof so, "%s/emu.so", dir);
    void *h = dlopen(so, RTLD_NOW | RTLD_NOLOAD);
    cr_assert_not_null(h, "%s", dlerror());
    tmap_model = (emu_tmap_fn)fmqa_test_emu_symbol(h, "emu_tmap");

    const int B = p.batch, H = p.num_q_heads, Hk = p.num_kv_heads, D = p.head_dim_qk;
    const fmqa_dtype dt = p.q_dtype;
    int *cu = poisoned((size_t)(B + 1) * sizeof *cu);
    cu[0] = 0;
    for (int b = 0; b < B; b++)
        cu[b + 1] = cu[b] + sc->lens[b];
    const long long total = cu[B];
    const long long q_st = (long long)H * D + 8, k_st = (long long)Hk * D + 8, v_st = D + 8, v_sh = total * v_st;
    uint16_t *q = poisoned((size_t)(total * q_st * 2)), *k = poisoned((size_t)(total * k_st * 2)),
             *v = poisoned((size_t)(Hk * v_sh * 2)), *o = poisoned((size_t)(total * H * D * 2));
    float *lse = poisoned((size_t)(total * H * 4));
    ref_rng r;
    ref_rng_seed(&r, fmqa_test_seed(sc->spec));
    double *row = malloc((size_t)D * sizeof *row);
    /* dense copies for the reference: [total][heads][D] */
    double *qd = malloc((size_t)(total * H * D) * sizeof *qd), *kd = malloc((size_t)(total * Hk * D) * sizeof *kd),
           *vd = malloc((size_t)(total * Hk * D) * sizeof *vd);
    for (long long tk = 0; tk < total; tk++) {
        for (int hh = 0; hh < H; hh++) {
            ref_rng_fill(&r, row, D, 1.0, dt);
            ref_from_double(dt, row, D, q + tk * q_st + hh * D, &err);
            memcpy(qd + (tk * H + hh) * D, row, (size_t)D * sizeof *row);
        }
        for (int hh = 0; hh < Hk; hh++) {
            ref_rng_fill(&r, row, D, 1.0, dt);
            ref_from_double(dt, row, D, k + tk * k_st + hh * D, &err);
            memcpy(kd + (tk * Hk + hh) * D, row, (size_t)D * sizeof *row);
            ref_rng_fill(&r, row, D, 1.0, dt);
            ref_from_double(dt, row, D, v + hh * v_sh + tk * v_st, &err);
            memcpy(vd + (tk * Hk + hh) * D, row, (size_t)D * sizeof *row);
        }
    }

    /* The public arguments, turned into the kernel's by the runtime. */
    fmqa_prefill_args a;
    memset(&a, 0, sizeof a);
    a.q = q, a.q_stride_token = q_st, a.q_stride_head = D;
    a.k = k, a.k_stride_token = k_st, a.k_stride_head = D;
    a.v = v, a.v_stride_token = v_st, a.v_stride_head = v_sh;
    a.cu_seqlens_q = cu;
    a.o = o, a.o_stride_token = (long long)H * D, a.o_stride_head = D;
    a.lse = (p.flags & FMQA_FLAG_LSE) ? lse : NULL;
    a.total_q = total;
    float *sinks = sc->learned_sinks ? poisoned((size_t)H * sizeof *sinks) : NULL;
    for (int hh = 0; sinks && hh < H; hh++)
        sinks[hh] = (float)((double)(ref_rng_next(&r) % 1536) / 128.0 - 4.0);
    a.sinks = sinks;
    rt_plan rp;
    memset(&rp, 0, sizeof rp);
    rp.problem = p, rp.tpl = t, rp.config = c, rp.launch = plan;
    rt_cuda drv;
    memset(&drv, 0, sizeof drv);
    drv.cuTensorMapEncodeTiled = emu_encode_tiled;
    rt_prefill_kernel_params P;
    cr_assert_eq(rt_prefill_kernel_params_fill(&drv, &rp, &a, &P, &err), FMQA_OK, "%s (the model: %s)", err.msg,
                 tmap_why);
    cr_assert_eq(plan.n_kernels, 1);
    const gen_kernel *kn = &plan.kernels[0];
    const unsigned grid[3] = {kn->grid[0], kn->grid[1], kn->grid[2]};
    cr_assert_eq(launch(kn->entry, &P.tma, grid, kn->block[0], kn->shared), 0);

    /* the reference, one sequence at a time */
    double *want = malloc((size_t)(total * H * D) * sizeof *want), *want_lse = malloc((size_t)(total * H) * sizeof *want_lse);
    for (int b = 0; b < B; b++) {
        const long long s0 = cu[b], L = sc->lens[b];
        if (!L)
            continue;
        ref_attn_shape s;
        memset(&s, 0, sizeof s);
        s.batch = 1, s.q_tokens = L, s.kv_len = L, s.num_q_heads = H, s.num_kv_heads = Hk;
        s.head_dim_qk = D, s.head_dim_v = D, s.flags = p.flags & FMQA_FLAG_CAUSAL, s.sinks = sinks;
        cr_assert_eq(ref_attention(&s, qd + s0 * H * D, kd + s0 * Hk * D, vd + s0 * Hk * D, want + s0 * H * D,
                                   want_lse + s0 * H, &err),
                     FMQA_OK, "%s", err.msg);
    }
    ref_cmp cmp;
    cr_assert_eq(ref_compare(dt, o, want, total * H * D, &cmp, &err), FMQA_OK, "%s", err.msg);
    const double tol = dt == FMQA_DTYPE_BF16 ? 1e-2 : 2e-3;
    fprintf(stderr, "%s: o rel_l2 %.2e max %.2e bad %lld\n", sc->spec, cmp.rel_l2, cmp.max_abs, (long long)cmp.bad);
    cr_expect(ref_cmp_ok(&cmp, tol, -1), "%s: o rel_l2 %g, max %g at %lld, %lld bad", sc->spec, cmp.rel_l2,
              cmp.max_abs, (long long)cmp.worst, (long long)cmp.bad);
    if (p.flags & FMQA_FLAG_LSE) {
        cr_assert_eq(ref_compare(FMQA_DTYPE_F32, lse, want_lse, total * H, &cmp, &err), FMQA_OK);
        cr_expect(ref_cmp_ok(&cmp, 1e-4, -1), "%s: lse rel_l2 %g, max %g at %lld, %lld bad", sc->spec, cmp.rel_l2,
                  cmp.max_abs, (long long)cmp.worst, (long long)cmp.bad);
    }
    free(row), free(qd), free(kd), free(vd), free(want), free(want_lse);
    char rm[128];
    snprintf(rm, sizeof rm, "rm -rf %s", dir);
    (void)system(rm);
    gen_lib_close(lib);
}

/* Lengths 1, 17, 128 and 300 in one ragged batch; MQA-style group 8; d 64; f16; causal, LSE;
 * learned sink logits in the denominator and the LSE. */
Test(prefill_sm90_emu, ragged_group8_d64_sinks, .timeout = 1200)
{
    const scase sc = {"op=prefill,batch=4,heads=8,kv_heads=1,d=64,tq=300,kv_len=300,q=f16,kv=f16,out=f16,"
                      "flags=causal|lse",
                      {1, 17, 128, 300}, 1};
    run_case(&sc);
}

/* Group 1 (MHA), d 128, bf16, causal; a sequence ending mid-tile. */
Test(prefill_sm90_emu, mha_d128_bf16, .timeout = 1200)
{
    const scase sc = {"op=prefill,batch=2,heads=2,kv_heads=2,d=128,tq=300,kv_len=300,q=bf16,kv=bf16,out=bf16,"
                      "flags=causal|lse",
                      {300, 17}, 0};
    run_case(&sc);
}

/* Not causal, d 256 (BLOCK_N 64, P V as m64n256k16), group 2, a tile's tail. */
Test(prefill_sm90_emu, full_d256, .timeout = 1200)
{
    const scase sc = {"op=prefill,batch=1,heads=2,kv_heads=1,d=256,tq=130,kv_len=130,q=bf16,kv=bf16,out=bf16", {130}, 0};
    run_case(&sc);
}
