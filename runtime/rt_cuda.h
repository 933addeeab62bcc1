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

/* X-macro of the driver functions we use.  The field names go through cuda.h's
 * renaming macros, the strings (#f) do not: exactly what cuGetProcAddress wants. */
#define RT_CUDA_FUNCTIONS(X)                                                    \
    X(cuInit) X(cuDriverGetVersion) X(cuDeviceGetCount) X(cuDeviceGet)          \
    X(cuDeviceGetName) X(cuDeviceGetAttribute) X(cuDeviceTotalMem)              \
    X(cuDevicePrimaryCtxRetain) X(cuDevicePrimaryCtxRelease)                    \
    X(cuCtxSetCurrent) X(cuCtxGetCurrent) X(cuCtxPushCurrent) X(cuCtxPopCurrent)\
    X(cuCtxSynchronize) X(cuModuleLoadData) X(cuModuleUnload)                   \
    X(cuModuleGetFunction) X(cuFuncSetAttribute) X(cuFuncGetAttribute)          \
    X(cuLaunchKernel) X(cuMemAlloc) X(cuMemFree) X(cuMemGetInfo)                \
    X(cuMemcpyHtoD) X(cuMemcpyDtoH) X(cuMemcpyDtoD) X(cuMemsetD8)               \
    X(cuMemsetD32) X(cuMemsetD8Async) X(cuMemsetD32Async)                       \
    X(cuMemcpyHtoDAsync) X(cuMemcpyDtoHAsync) X(cuMemcpyDtoDAsync)              \
    X(cuStreamCreate) X(cuStreamDestroy) X(cuStreamSynchronize)                 \
    X(cuStreamQuery) X(cuEventCreate) X(cuEventRecord) X(cuEventSynchronize)    \
    X(cuEventElapsedTime) X(cuEventDestroy) X(cuEventQuery)                     \
    X(cuStreamBeginCapture) X(cuStreamEndCapture) X(cuGraphInstantiate)         \
    X(cuGraphLaunch) X(cuGraphExecDestroy) X(cuGraphDestroy)                    \
    X(cuGetErrorName) X(cuGetErrorString)

typedef struct rt_cuda {
#define RT_CUDA_FIELD(f) __typeof__(f) *f;
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

#endif /* FMQA_RT_CUDA_H */
