/*
 * rt_cuda.c -- dlopen of libcuda.so.1, symbol resolution, error text, and the
 * device description.  The table is filled under pthread_once; its outcome
 * (success, or a status plus message) is immutable afterwards, so readers need
 * no lock.  The library handle is never closed: unloading the driver under a
 * live process is never safe.
 */
#define _GNU_SOURCE
#include "rt_cuda.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include <cudaTypedefs.h>
#include <nvrtc.h>

static rt_cuda g_cuda;
static fmqa_err g_load_err;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

typedef CUresult (*get_proc_fn)(const char *, void **, int, cuuint64_t,
                                CUdriverProcAddressQueryResult *);

/* The ABI versions in RT_CUDA_FUNCTIONS are those of the cuda.h prototypes. */
#define RT_CUDA_CHECK_ABI(f, version)                                                   \
    _Static_assert(__builtin_types_compatible_p(__typeof__(&f), PFN_##f##_v##version),  \
                   #f " at ABI " #version " is not the prototype cuda.h declares");
RT_CUDA_FUNCTIONS(RT_CUDA_CHECK_ABI)
#undef RT_CUDA_CHECK_ABI

static fmqa_status resolve_all(get_proc_fn get_proc)
{
#define RT_CUDA_RESOLVE(f, version)                                                     \
    {                                                                                   \
        CUdriverProcAddressQueryResult q_;                                              \
        void *p_ = NULL;                                                                \
        if (get_proc(#f, &p_, version, CU_GET_PROC_ADDRESS_DEFAULT, &q_) !=             \
                CUDA_SUCCESS ||                                                         \
            !p_)                                                                        \
            return fmqa_err_set(&g_load_err, FMQA_ERR_NO_DRIVER,                        \
                                "libcuda.so.1 has no %s (ABI of CUDA %d.%d): driver too old", \
                                #f, version / 1000, version % 1000 / 10);               \
        memcpy(&g_cuda.f, &p_, sizeof p_);                                              \
    }
    RT_CUDA_FUNCTIONS(RT_CUDA_RESOLVE)
#undef RT_CUDA_RESOLVE
    return FMQA_OK;
}

static void load_once(void)
{
    void *lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        fmqa_err_set(&g_load_err, FMQA_ERR_NO_DRIVER,
                     "no CUDA driver: cannot load libcuda.so.1 (%s)", dlerror());
        return;
    }
    void *sym = dlsym(lib, "cuGetProcAddress_v2");
    if (!sym) {
        fmqa_err_set(&g_load_err, FMQA_ERR_NO_DRIVER,
                     "CUDA driver too old: libcuda.so.1 lacks cuGetProcAddress_v2 (needs 12.0+)");
        return;
    }
    get_proc_fn get_proc;
    memcpy(&get_proc, &sym, sizeof sym);
    if (resolve_all(get_proc) != FMQA_OK)
        return;
    CUresult res = g_cuda.cuInit(0);
    if (res != CUDA_SUCCESS) {
        rt_cuda_error(&g_load_err, res, "cuInit");
        if (res == CUDA_ERROR_NO_DEVICE)
            g_load_err.status = FMQA_ERR_NO_DEVICE;
        else if (g_load_err.status == FMQA_ERR_CUDA)
            g_load_err.status = FMQA_ERR_NO_DRIVER;
        return;
    }
    g_cuda.cuDriverGetVersion(&g_cuda.driver_version);
    fmqa_err_clear(&g_load_err);
}

fmqa_status rt_cuda_get(const rt_cuda **out, fmqa_err *err)
{
    pthread_once(&g_once, load_once);
    if (g_load_err.status != FMQA_OK) {
        if (err)
            *err = g_load_err;
        return g_load_err.status;
    }
    *out = &g_cuda;
    return FMQA_OK;
}

fmqa_status rt_cuda_error(fmqa_err *err, CUresult res, const char *what)
{
    const char *name = NULL, *text = NULL;
    /* The table may be half-filled when cuInit itself fails: guard each use. */
    if (g_cuda.cuGetErrorName)
        g_cuda.cuGetErrorName(res, &name);
    if (g_cuda.cuGetErrorString)
        g_cuda.cuGetErrorString(res, &text);
    fmqa_status st = (res == CUDA_ERROR_NO_DEVICE || res == CUDA_ERROR_INVALID_DEVICE)
                         ? FMQA_ERR_NO_DEVICE
                         : FMQA_ERR_CUDA;
    return fmqa_err_set(err, st, "%s failed: %s (%s)", what, name ? name : "CUDA error",
                        text ? text : "no description");
}

static int attr(const rt_cuda *cu, CUdevice dev, CUdevice_attribute a)
{
    int v = 0;
    if (cu->cuDeviceGetAttribute(&v, a, dev) != CUDA_SUCCESS)
        return 0;
    return v;
}

fmqa_status rt_cuda_describe(const rt_cuda *cu, int ordinal, fmqa_device_info *info,
                             fmqa_err *err)
{
    CUdevice dev;
    memset(info, 0, sizeof *info);
    RT_CU(err, cu->cuDeviceGet(&dev, ordinal), "cuDeviceGet");
    RT_CU(err, cu->cuDeviceGetName(info->name, sizeof info->name, dev), "cuDeviceGetName");
    size_t total = 0;
    RT_CU(err, cu->cuDeviceTotalMem(&total, dev), "cuDeviceTotalMem");
    info->ordinal = ordinal;
    info->total_memory = (int64_t)total;
    info->cc_major = attr(cu, dev, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR);
    info->cc_minor = attr(cu, dev, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR);
    info->sm_count = attr(cu, dev, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT);
    info->l2_bytes = attr(cu, dev, CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE);
    info->smem_per_block_optin =
        attr(cu, dev, CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN);
    info->smem_per_sm = attr(cu, dev, CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_MULTIPROCESSOR);
    info->regs_per_sm = attr(cu, dev, CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_MULTIPROCESSOR);
    info->max_threads_per_block = attr(cu, dev, CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK);
    info->clock_khz = attr(cu, dev, CU_DEVICE_ATTRIBUTE_CLOCK_RATE);
    info->mem_clock_khz = attr(cu, dev, CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE);
    info->mem_bus_width = attr(cu, dev, CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH);
    info->driver_version = cu->driver_version;
    nvrtcVersion(&info->nvrtc_major, &info->nvrtc_minor);
    /* sm_90a is the Hopper target with wgmma/setmaxnreg; templates that need it
     * ask for it, plain sm_XX is the default. */
    snprintf(info->arch, sizeof info->arch, "sm_%d%d", info->cc_major, info->cc_minor);
    return FMQA_OK;
}
