/*
 * tun_gemm.c -- the device's bf16 tensor-core rate, measured: a cuBLAS GEMM
 * (bf16 inputs, fp32 accumulation, 8192^3) timed by the timing method on the
 * timer's stream.  It is the compute roof fastmqa-bench mla reports a
 * compute-bound kernel against, as tun_read_bandwidth is the memory roof.
 *
 * cuBLAS is loaded with dlopen (libcublas.so.13, .12, then libcublas.so) and
 * only by the tools that ask for the rate: neither libfastmqa nor the tuner
 * library link it, and without it the rate is FMQA_ERR_NOT_FOUND, which the
 * benchmark reports and skips.  The prototypes are cuBLAS's own
 * (cublas_api.h), taken by __typeof__ so that they cannot drift.
 */
#define _GNU_SOURCE
#include "tun.h"

#include <dlfcn.h>
#include <stdint.h>

#include <cublas_api.h>

#include "rt.h"

#define GEMM_N 8192 /* square: 1.1 TFLOP a launch, ~1-2 ms on an H100 */

typedef struct cublas_api {
    void *lib;
    __typeof__(cublasCreate_v2) *create;
    __typeof__(cublasDestroy_v2) *destroy;
    __typeof__(cublasSetStream_v2) *set_stream;
    __typeof__(cublasGemmEx) *gemm;
} cublas_api;

static fmqa_status load_cublas(cublas_api *b, fmqa_err *err)
{
    static const char *const names[] = {"libcublas.so.13", "libcublas.so.12", "libcublas.so"};
    for (size_t i = 0; i < sizeof names / sizeof names[0] && !b->lib; i++)
        b->lib = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
    if (!b->lib)
        return fmqa_err_set(err, FMQA_ERR_NOT_FOUND, "cuBLAS not found (libcublas.so.13/.12): %s",
                            dlerror());
    *(void **)&b->create = dlsym(b->lib, "cublasCreate_v2");
    *(void **)&b->destroy = dlsym(b->lib, "cublasDestroy_v2");
    *(void **)&b->set_stream = dlsym(b->lib, "cublasSetStream_v2");
    *(void **)&b->gemm = dlsym(b->lib, "cublasGemmEx");
    if (!b->create || !b->destroy || !b->set_stream || !b->gemm)
        return fmqa_err_set(err, FMQA_ERR_NOT_FOUND, "cuBLAS lacks cublasGemmEx or its handle calls");
    return FMQA_OK;
}

typedef struct gemm_arg {
    const cublas_api *api;
    cublasHandle_t h;
    CUdeviceptr a, b, c;
} gemm_arg;

static fmqa_status gemm_once(void *user, int i, CUstream stream, fmqa_err *err)
{
    (void)i; /* compute-bound: one copy of the operands */
    const gemm_arg *g = user;
    const float one = 1.0f, zero = 0.0f;
    if (g->api->set_stream(g->h, (cudaStream_t)stream) != CUBLAS_STATUS_SUCCESS ||
        g->api->gemm(g->h, CUBLAS_OP_T, CUBLAS_OP_N, GEMM_N, GEMM_N, GEMM_N, &one,
                     (const void *)(uintptr_t)g->a, CUDA_R_16BF, GEMM_N,
                     (const void *)(uintptr_t)g->b, CUDA_R_16BF, GEMM_N, &zero,
                     (void *)(uintptr_t)g->c, CUDA_R_16BF, GEMM_N, CUBLAS_COMPUTE_32F,
                     CUBLAS_GEMM_DEFAULT) != CUBLAS_STATUS_SUCCESS)
        return fmqa_err_set(err, FMQA_ERR_CUDA, "cublasGemmEx (bf16, %d^3) failed", GEMM_N);
    return FMQA_OK;
}

fmqa_status tun_gemm_rate(tun_timer *t, double *tflops, fmqa_err *err)
{
    if (!t || !tflops)
        return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT, "tun_gemm_rate: NULL argument");
    cublas_api api = {0};
    fmqa_status st = load_cublas(&api, err);
    fmqa_ctx_t *ctx = tun_timer_ctx(t);
    if (st == FMQA_OK)
        st = rt_enter(ctx, err);
    if (st != FMQA_OK) {
        if (api.lib)
            dlclose(api.lib);
        return st;
    }
    const rt_cuda *cu = ctx->cu;
    const size_t bytes = (size_t)GEMM_N * GEMM_N * 2;
    gemm_arg g = {&api, NULL, 0, 0, 0};
    CUresult cr = cu->cuMemAlloc(&g.a, bytes);
    if (cr == CUDA_SUCCESS)
        cr = cu->cuMemAlloc(&g.b, bytes);
    if (cr == CUDA_SUCCESS)
        cr = cu->cuMemAlloc(&g.c, bytes);
    /* bf16 pairs of 1.0 and of 0.5: finite products, non-zero operands */
    if (cr == CUDA_SUCCESS)
        cr = cu->cuMemsetD32(g.a, 0x3f803f80u, bytes / 4);
    if (cr == CUDA_SUCCESS)
        cr = cu->cuMemsetD32(g.b, 0x3f003f00u, bytes / 4);
    if (cr != CUDA_SUCCESS)
        st = rt_cuda_error(err, cr, "cuMemAlloc/cuMemsetD32 (GEMM operands)");
    if (st == FMQA_OK && api.create(&g.h) != CUBLAS_STATUS_SUCCESS)
        st = fmqa_err_set(err, FMQA_ERR_CUDA, "cublasCreate failed");
    tun_timing tm;
    if (st == FMQA_OK) {
        tun_time_opts o = TUN_TIME_OPTS_INIT;
        o.runs = 20, o.flush = TUN_FLUSH_NONE, o.graph_launches = 1;
        st = tun_time(t, gemm_once, &g, &o, &tm, err);
    }
    if (st == FMQA_OK)
        *tflops = 2.0 * GEMM_N * (double)GEMM_N * GEMM_N / (tm.stats.median * 1e6);
    if (g.h)
        api.destroy(g.h);
    if (g.a)
        cu->cuMemFree(g.a);
    if (g.b)
        cu->cuMemFree(g.b);
    if (g.c)
        cu->cuMemFree(g.c);
    rt_leave(ctx);
    dlclose(api.lib);
    return st;
}
