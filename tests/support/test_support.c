/*
 * test_support.c -- see test_support.h.
 */
#include "test_support.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <criterion/criterion.h>

int fmqa_test_gpu_available(char *why, size_t cap)
{
    const rt_cuda *cu;
    fmqa_err err;
    if (rt_cuda_get(&cu, &err) != FMQA_OK) {
        snprintf(why, cap, "%s", err.msg);
        return 0;
    }
    int n = 0;
    if (cu->cuDeviceGetCount(&n) != CUDA_SUCCESS || n == 0) {
        snprintf(why, cap, "the CUDA driver reports no device");
        return 0;
    }
    return 1;
}

uint64_t fmqa_test_seed(const char *test_name)
{
    const char *env = getenv("FASTMQA_TEST_SEED");
    uint64_t seed = env ? strtoull(env, NULL, 0)
                        : (uint64_t)time(NULL) * 2654435761u ^ (uint64_t)clock();
    fprintf(stderr, "%s: seed %llu (FASTMQA_TEST_SEED to replay)\n", test_name,
            (unsigned long long)seed);
    return seed;
}

fmqa_ctx_t *fmqa_test_ctx(void)
{
    fmqa_options o = FMQA_OPTIONS_INIT;
    o.db_path = ""; /* no database: tests must not touch ~/.cache */
    fmqa_ctx_t *ctx = NULL;
    cr_assert_eq(fmqa_ctx_create(&o, &ctx), FMQA_OK, "%s", fmqa_ctx_errmsg(ctx));
    return ctx;
}

#define CU_OK(call) cr_assert_eq((call), CUDA_SUCCESS, "%s failed", #call)

void fmqa_test_gpu_open(fmqa_test_gpu *g)
{
    fmqa_err err;
    cr_assert_eq(rt_cuda_get(&g->cu, &err), FMQA_OK, "%s", err.msg);
    CU_OK(g->cu->cuDeviceGet(&g->dev, 0));
    CU_OK(g->cu->cuDevicePrimaryCtxRetain(&g->ctx, g->dev));
    CU_OK(g->cu->cuCtxSetCurrent(g->ctx));
}

void fmqa_test_gpu_close(fmqa_test_gpu *g)
{
    g->cu->cuDevicePrimaryCtxRelease(g->dev);
}

CUdeviceptr fmqa_test_upload(fmqa_test_gpu *g, const void *host, size_t bytes)
{
    CUdeviceptr p = 0;
    CU_OK(g->cu->cuMemAlloc(&p, bytes ? bytes : 1));
    if (bytes)
        CU_OK(g->cu->cuMemcpyHtoD(p, host, bytes));
    return p;
}

CUdeviceptr fmqa_test_alloc_poisoned(fmqa_test_gpu *g, size_t bytes, uint8_t poison)
{
    CUdeviceptr p = 0;
    CU_OK(g->cu->cuMemAlloc(&p, bytes ? bytes : 1));
    CU_OK(g->cu->cuMemsetD8(p, poison, bytes ? bytes : 1));
    return p;
}

void fmqa_test_download(fmqa_test_gpu *g, void *host, CUdeviceptr src, size_t bytes)
{
    CU_OK(g->cu->cuCtxSynchronize());
    CU_OK(g->cu->cuMemcpyDtoH(host, src, bytes));
}

void fmqa_test_free(fmqa_test_gpu *g, CUdeviceptr p)
{
    if (p)
        g->cu->cuMemFree(p);
}
