/*
 * rt_cuda.h -- the CUDA driver API, loaded at run time.
 *
 * libfastmqa never links libcuda: it dlopen()s "libcuda.so.1" once and resolves
 * every function through cuGetProcAddress_v2 with the CUDA_VERSION of the
 * headers it was built with, so each pointer has exactly the ABI of the
 * prototype in cuda.h (cuda.h renames several functions to their _v2 forms with
 * macros; a plain dlsym("cuMemAlloc") would return the legacy ABI).  Loading is
 * thread-safe and happens at most once per process; a failure is remembered and
 * reported the same way to every later caller.  Without a driver the rest of
 * the library keeps working and GPU calls report FMQA_ERR_NO_DRIVER.
 */
#ifndef FMQA_RT_CUDA_H
#define FMQA_RT_CUDA_H

#include <cuda.h>

#include "fmqa_common.h"
#include "fmqa_params.h"

/*
 * X-macro of the driver functions we use, each with the ABI version of the
 * prototype cuda.h gives its name.  The field names go through cuda.h's
 * renaming macros (cuMemAlloc -> cuMemAlloc_v2), the strings (#f) do not, and
 * cuGetProcAddress returns, for a name and a version, the entry point of that
 * version's ABI.  Asking every name at CUDA_VERSION is wrong: where the driver
 * has a newer ABI that cuda.h does not map the name to, it returns that one
 * (at 13000, "cuCtxSynchronize" gives cuCtxSynchronize_v2(CUcontext), while
 * cuda.h declares cuCtxSynchronize(void); "cuGraphInstantiate" gives the
 * five-argument _v2 while cuda.h maps the name to cuGraphInstantiateWithFlags).
 * Both happened on a GPU: a context "destroyed" by a garbage argument and a
 * crash in graph instantiation.  rt_cuda.c checks at compile time that each
 * version's PFN typedef in cudaTypedefs.h is the type of the cuda.h prototype.
 */
#define RT_CUDA_FUNCTIONS(X)                                                        \
    X(cuInit, 2000) X(cuDriverGetVersion, 2020) X(cuDeviceGetCount, 2000)           \
    X(cuDeviceGet, 2000) X(cuDeviceGetName, 2000) X(cuDeviceGetAttribute, 2000)     \
    X(cuDeviceTotalMem, 3020) X(cuDevicePrimaryCtxRetain, 7000)                     \
    X(cuDevicePrimaryCtxRelease, 11000) X(cuCtxSetCurrent, 4000)                    \
    X(cuCtxGetCurrent, 4000) X(cuCtxPushCurrent, 4000) X(cuCtxPopCurrent, 4000)     \
    X(cuCtxSynchronize, 2000) X(cuModuleLoadData, 2000) X(cuModuleUnload, 2000)     \
    X(cuModuleGetFunction, 2000) X(cuFuncSetAttribute, 9000)                        \
    X(cuFuncGetAttribute, 2020) X(cuLaunchKernel, 4000) X(cuLaunchKernelEx, 11060)  \
    X(cuMemAlloc, 3020)                                                             \
    X(cuMemFree, 3020) X(cuMemGetInfo, 3020) X(cuMemcpyHtoD, 3020)                  \
    X(cuMemcpyDtoH, 3020) X(cuMemcpyDtoD, 3020) X(cuMemsetD8, 3020)                 \
    X(cuMemsetD32, 3020) X(cuMemsetD8Async, 3020) X(cuMemsetD32Async, 3020)         \
    X(cuMemcpyHtoDAsync, 3020) X(cuMemcpyDtoHAsync, 3020)                           \
    X(cuMemcpyDtoDAsync, 3020) X(cuStreamCreate, 2000) X(cuStreamDestroy, 4000)     \
    X(cuStreamSynchronize, 2000) X(cuStreamQuery, 2000) X(cuEventCreate, 2000)      \
    X(cuEventRecord, 2000) X(cuEventSynchronize, 2000)                              \
    X(cuEventElapsedTime, 12080) X(cuEventDestroy, 4000) X(cuEventQuery, 2000)      \
    X(cuStreamBeginCapture, 10010) X(cuStreamEndCapture, 10000)                     \
    X(cuGraphInstantiateWithFlags, 11040) X(cuGraphLaunch, 10000)                   \
    X(cuGraphExecDestroy, 10000) X(cuGraphDestroy, 10000) X(cuGetErrorName, 6000)   \
    X(cuGetErrorString, 6000) X(cuTensorMapEncodeTiled, 12000)

typedef struct rt_cuda {
#define RT_CUDA_FIELD(f, version) __typeof__(f) *f;
    RT_CUDA_FUNCTIONS(RT_CUDA_FIELD)
#undef RT_CUDA_FIELD
    int driver_version; /* cuDriverGetVersion, e.g. 13000 */
} rt_cuda;

/*
 * Loads the driver (once per process) and calls cuInit(0).  On success *out
 * points at the process-wide table, valid until exit.  On failure returns
 * FMQA_ERR_NO_DRIVER (library missing or too old) or FMQA_ERR_NO_DEVICE
 * (cuInit reports no device) with the reason in err; every later call returns
 * the same.  Thread-safe.
 */
fmqa_status rt_cuda_get(const rt_cuda **out /* OUT */, fmqa_err *err);

/* Formats a failed driver call into err: "what: CUDA_ERROR_X (text)".
 * Returns FMQA_ERR_CUDA, or NO_DEVICE for CUDA_ERROR_NO_DEVICE / INVALID_DEVICE. */
fmqa_status rt_cuda_error(fmqa_err *err, CUresult res, const char *what);

/* Checks a driver call: `RT_CU(err, cu->cuMemAlloc(&p, n), "cuMemAlloc")`
 * returns from the enclosing function on failure. */
#define RT_CU(err, call, what)                                                  \
    do {                                                                        \
        CUresult rt_cu_res_ = (call);                                           \
        if (rt_cu_res_ != CUDA_SUCCESS)                                         \
            return rt_cuda_error((err), rt_cu_res_, (what));                    \
    } while (0)

/* Describes device `ordinal` (which must exist) into info: identity, limits,
 * clocks, driver and NVRTC versions, arch.  Needs the current thread to have
 * no particular context. */
fmqa_status rt_cuda_describe(const rt_cuda *cu, int ordinal, fmqa_device_info *info /* OUT */,
                             fmqa_err *err);

/*
 * A tiled TMA tensor map over a tensor in device memory, for the sm_90
 * kernels' cp.async.bulk.tensor loads (templates/fmqa_sm90.cuh): what
 * cuTensorMapEncodeTiled takes, less what is fixed here (interleave none,
 * element strides 1, out-of-bounds elements read as zero, L2 promotion 128
 * bytes).  The CPU emulator models the same parameters (tests/emu/emu_ptx.h,
 * emu_tmap_encode), with the driver's rules; runtime/rt_tmap.c.
 */
typedef struct rt_tmap_desc {
    const void *base;              /* device address, 16-byte aligned           */
    int rank;                      /* 1..5                                      */
    int elem_bytes;                /* 1, 2, 4 or 8                              */
    int swizzle;                   /* bytes: 0, 32, 64, 128 (box[0] * elem_bytes
                                      must not exceed it)                       */
    unsigned long long dims[5];    /* elements, innermost first                 */
    unsigned long long strides[4]; /* bytes between steps of dims[1..rank-1];
                                      multiples of 16                           */
    unsigned box[5];               /* box extent per dim, 1..256; box[0] *
                                      elem_bytes a multiple of 16               */
} rt_tmap_desc;

/* Encodes d into *out (64-byte aligned; the map is read by the GPU from the
 * kernel's parameters).  FMQA_ERR_INVALID_ARGUMENT with the reason for what
 * the driver rejects (CUDA_ERROR_INVALID_VALUE). */
fmqa_status rt_tmap_encode(const rt_cuda *cu, const rt_tmap_desc *d, fmqa_tensor_map *out /* OUT */,
                           fmqa_err *err);

/* prefill_sm90's maps (templates/prefill_sm90.cuh) over p's q, k, v: 3D
 * (head_dim, heads, total_q rows) with p's head and token strides, 16-bit
 * elements, 128-byte swizzle, boxes (64, 1, 128) for q and (64, 1, block_n)
 * for k and v.  Strides must be multiples of 8 elements and the tensors
 * 16-byte aligned (the driver's rules).  _descs only describes them (the CPU
 * emulator's tests encode these); _maps encodes them into out and copies p
 * into out->p. */
void rt_prefill_sm90_descs(const fmqa_prefill_params *p, long long total_q, int head_dim, int block_n,
                           rt_tmap_desc out[3] /* OUT */);
fmqa_status rt_prefill_sm90_maps(const rt_cuda *cu, const fmqa_prefill_params *p, long long total_q,
                                 int head_dim, int block_n, fmqa_prefill_sm90_params *out /* OUT */,
                                 fmqa_err *err);

#endif /* FMQA_RT_CUDA_H */
