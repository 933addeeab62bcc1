/*
 * tun_time.c -- timing on the GPU by the method of tun.h ("timing"; the rules
 * themselves are in tun_method.c): warm-up, a probe, then samples that are
 * either one replay of a CUDA graph of many launches over rotated input copies,
 * or one launch after a flush queued before the start event (a read of twice
 * the L2, which leaves no dirty lines; a memset only when asked).  Also the
 * read kernel (compiled here with NVRTC) that does the read flush and measures
 * the device's read bandwidth by the same method.
 *
 * Invariants: every sample is taken on the timer's own non-blocking stream
 * and synchronized before the next, so samples never overlap; a stream
 * capture that fails is always ended so the stream stays usable.  The driver
 * API offers no current-clock query: timings carry the device's rated clocks.
 */
#include "tun.h"

#include <nvrtc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_SAMPLES 10000

struct tun_timer {
    fmqa_ctx_t *ctx;
    CUstream stream;
    CUevent start, stop;
    CUdeviceptr flush;
    size_t flush_bytes;
    CUmodule read_module;        /* read kernel, loaded on first use      */
    CUfunction read_fn;
    CUdeviceptr read_sink;
};

static const rt_cuda *cu_of(const tun_timer *t) { return t->ctx->cu; }

CUstream tun_timer_stream(const tun_timer *t) { return t->stream; }
fmqa_ctx_t *tun_timer_ctx(const tun_timer *t) { return t->ctx; }

static fmqa_status timer_init(tun_timer *t, fmqa_err *err)
{
    const rt_cuda *cu = cu_of(t);
    RT_CU(err, cu->cuStreamCreate(&t->stream, CU_STREAM_NON_BLOCKING), "cuStreamCreate");
    RT_CU(err, cu->cuEventCreate(&t->start, CU_EVENT_DEFAULT), "cuEventCreate");
    RT_CU(err, cu->cuEventCreate(&t->stop, CU_EVENT_DEFAULT), "cuEventCreate");
    t->flush_bytes = (size_t)(t->ctx->info.l2_bytes > 0 ? t->ctx->info.l2_bytes : 1 << 24) * 2;
    RT_CU(err, cu->cuMemAlloc(&t->flush, t->flush_bytes), "cuMemAlloc (L2 flush buffer)");
    return FMQA_OK;
}

fmqa_status tun_timer_create(fmqa_ctx_t *ctx, tun_timer **out, fmqa_err *err)
{
    if (!ctx || !out)
        return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT, "tun_timer_create: NULL argument");
    fmqa_status st = rt_enter(ctx, err);
    if (st != FMQA_OK)
        return st;
    tun_timer *t = calloc(1, sizeof *t);
    if (!t) {
        rt_leave(ctx);
        return fmqa_err_set(err, FMQA_ERR_OUT_OF_MEMORY, "out of memory");
    }
    t->ctx = ctx;
    st = timer_init(t, err);
    rt_leave(ctx);
    if (st != FMQA_OK) {
        tun_timer_destroy(t);
        return st;
    }
    *out = t;
    return FMQA_OK;
}

static void read_release(tun_timer *t);

void tun_timer_destroy(tun_timer *t)
{
    if (!t)
        return;
    const rt_cuda *cu = cu_of(t);
    if (rt_enter(t->ctx, NULL) == FMQA_OK) {
        if (t->stream)
            cu->cuStreamSynchronize(t->stream);
        read_release(t);
        if (t->flush)
            cu->cuMemFree(t->flush);
        if (t->start)
            cu->cuEventDestroy(t->start);
        if (t->stop)
            cu->cuEventDestroy(t->stop);
        if (t->stream)
            cu->cuStreamDestroy(t->stream);
        rt_leave(t->ctx);
    }
    free(t);
}

/* ---------------------------------------------------------------- read kernel */

/* Four independent 16-byte loads in flight per thread; the xor of everything
 * read is stored only if it hits a magic value, so no load is dead code. */
static const char read_source[] =
    "struct __align__(16) v4 { unsigned int x, y, z, w; };\n"
    "extern \"C\" __global__ void tun_read(const v4 *__restrict__ p, unsigned long long n,\n"
    "                                      unsigned int *sink) {\n"
    "    unsigned long long s = (unsigned long long)gridDim.x * blockDim.x;\n"
    "    unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;\n"
    "    unsigned int acc = 0;\n"
    "    for (; i + 3 * s < n; i += 4 * s) {\n"
    "        v4 a = p[i], b = p[i + s], c = p[i + 2 * s], d = p[i + 3 * s];\n"
    "        acc ^= a.x ^ a.y ^ a.z ^ a.w ^ b.x ^ b.y ^ b.z ^ b.w;\n"
    "        acc ^= c.x ^ c.y ^ c.z ^ c.w ^ d.x ^ d.y ^ d.z ^ d.w;\n"
    "    }\n"
    "    for (; i < n; i += s) { v4 a = p[i]; acc ^= a.x ^ a.y ^ a.z ^ a.w; }\n"
    "    if (acc == 0x9e3779b9u) *sink = acc;\n"
    "}\n";

static fmqa_status nvrtc_fail(nvrtcProgram prog, nvrtcResult r, fmqa_err *err)
{
    size_t n = 0;
    char log[512] = "";
    if (nvrtcGetProgramLogSize(prog, &n) == NVRTC_SUCCESS && n > 0 && n <= sizeof log)
        nvrtcGetProgramLog(prog, log);
    fmqa_err_set(err, FMQA_ERR_COMPILE, "read kernel: %s %s", nvrtcGetErrorString(r), log);
    nvrtcDestroyProgram(&prog);
    return FMQA_ERR_COMPILE;
}

static fmqa_status read_compile(tun_timer *t, void **cubin, fmqa_err *err)
{
    nvrtcProgram prog;
    char arch[48];
    /* The base architecture ("sm_90a" compiles the same kernel as "sm_90"). */
    snprintf(arch, sizeof arch, "--gpu-architecture=sm_%d%d", t->ctx->info.cc_major,
             t->ctx->info.cc_minor);
    const char *opts[] = {arch, "-default-device"};
    nvrtcResult r = nvrtcCreateProgram(&prog, read_source, "tun_read.cu", 0, NULL, NULL);
    if (r != NVRTC_SUCCESS)
        return fmqa_err_set(err, FMQA_ERR_COMPILE, "nvrtcCreateProgram: %s",
                            nvrtcGetErrorString(r));
    size_t size = 0;
    if ((r = nvrtcCompileProgram(prog, 2, opts)) != NVRTC_SUCCESS ||
        (r = nvrtcGetCUBINSize(prog, &size)) != NVRTC_SUCCESS)
        return nvrtc_fail(prog, r, err);
    if (!(*cubin = malloc(size))) {
        nvrtcDestroyProgram(&prog);
        return fmqa_err_set(err, FMQA_ERR_OUT_OF_MEMORY, "out of memory");
    }
    r = nvrtcGetCUBIN(prog, *cubin);
    nvrtcDestroyProgram(&prog);
    if (r != NVRTC_SUCCESS) {
        free(*cubin);
        return fmqa_err_set(err, FMQA_ERR_COMPILE, "nvrtcGetCUBIN: %s", nvrtcGetErrorString(r));
    }
    return FMQA_OK;
}

/* Unloads the read kernel (context entered); read_module == NULL afterwards
 * means "not prepared". */
static void read_release(tun_timer *t)
{
    const rt_cuda *cu = cu_of(t);
    if (t->read_module)
        cu->cuModuleUnload(t->read_module);
    if (t->read_sink)
        cu->cuMemFree(t->read_sink);
    t->read_module = NULL, t->read_fn = NULL, t->read_sink = 0;
}

static fmqa_status read_load(tun_timer *t, fmqa_err *err)
{
    const rt_cuda *cu = cu_of(t);
    void *cubin = NULL;
    fmqa_status st = read_compile(t, &cubin, err);
    if (st != FMQA_OK)
        return st;
    CUresult r = cu->cuModuleLoadData(&t->read_module, cubin);
    free(cubin);
    if (r != CUDA_SUCCESS)
        return rt_cuda_error(err, r, "cuModuleLoadData (read kernel)");
    RT_CU(err, cu->cuModuleGetFunction(&t->read_fn, t->read_module, "tun_read"),
          "cuModuleGetFunction (tun_read)");
    RT_CU(err, cu->cuMemAlloc(&t->read_sink, 16), "cuMemAlloc");
    return FMQA_OK;
}

/* All or nothing (context entered): a half-prepared timer would otherwise
 * count as prepared and launch with a null sink next time. */
static fmqa_status read_prepare(tun_timer *t, fmqa_err *err)
{
    if (t->read_module)
        return FMQA_OK;
    fmqa_status st = read_load(t, err);
    if (st != FMQA_OK)
        read_release(t);
    return st;
}

/* Queues the read kernel over [buf, buf + bytes). */
static fmqa_status read_launch(tun_timer *t, CUdeviceptr buf, size_t bytes, CUstream stream,
                               fmqa_err *err)
{
    unsigned long long n = bytes / 16;
    void *args[] = {&buf, &n, &t->read_sink};
    unsigned blocks = (unsigned)(t->ctx->info.sm_count > 0 ? t->ctx->info.sm_count : 64) * 8;
    RT_CU(err, cu_of(t)->cuLaunchKernel(t->read_fn, blocks, 1, 1, 256, 1, 1, 0, stream, args,
                                        NULL),
          "cuLaunchKernel (tun_read)");
    return FMQA_OK;
}

/* ---------------------------------------------------------------- samples */

typedef struct launch_arg {
    tun_launch_fn fn;
    void *user;
    CUgraphExec exec;     /* NULL: single launches                              */
    tun_time_plan plan;
} launch_arg;

/* Queues the plan's flush (context entered): outside the timed events, and
 * finished long before the timed launch starts only in stream order. */
static fmqa_status flush_l2(tun_timer *t, tun_flush f, unsigned i, fmqa_err *err)
{
    if (f == TUN_FLUSH_MEMSET)
        RT_CU(err, cu_of(t)->cuMemsetD32Async(t->flush, i, t->flush_bytes / 4, t->stream),
              "cuMemsetD32Async (L2 flush)");
    if (f == TUN_FLUSH_READ)
        return read_launch(t, t->flush, t->flush_bytes, t->stream, err);
    return FMQA_OK;
}

/* Microseconds per launch of sample i: the flush, then the launch or the graph
 * replay between the timer's two events. */
static fmqa_status sample(tun_timer *t, launch_arg *a, int i, double *us, fmqa_err *err)
{
    const rt_cuda *cu = cu_of(t);
    fmqa_status st = flush_l2(t, a->plan.flush, (unsigned)i, err);
    if (st != FMQA_OK)
        return st;
    RT_CU(err, cu->cuEventRecord(t->start, t->stream), "cuEventRecord");
    if (a->exec)
        RT_CU(err, cu->cuGraphLaunch(a->exec, t->stream), "cuGraphLaunch");
    else if ((st = a->fn(a->user, i, t->stream, err)) != FMQA_OK)
        return st;
    RT_CU(err, cu->cuEventRecord(t->stop, t->stream), "cuEventRecord");
    RT_CU(err, cu->cuEventSynchronize(t->stop), "cuEventSynchronize (timed kernel)");
    float ms = 0;
    RT_CU(err, cu->cuEventElapsedTime(&ms, t->start, t->stop), "cuEventElapsedTime");
    *us = ms * 1000.0 / (a->exec ? a->plan.launches : 1);
    return FMQA_OK;
}

/* Captures plan.launches launches (run indices 0..n-1, so inputs rotate inside
 * the graph) into an executable graph. */
static fmqa_status capture(tun_timer *t, launch_arg *a, fmqa_err *err)
{
    const rt_cuda *cu = cu_of(t);
    CUgraph graph = NULL;
    RT_CU(err, cu->cuStreamBeginCapture(t->stream, CU_STREAM_CAPTURE_MODE_THREAD_LOCAL),
          "cuStreamBeginCapture");
    fmqa_status st = FMQA_OK;
    for (int i = 0; i < a->plan.launches && st == FMQA_OK; i++)
        st = a->fn(a->user, i, t->stream, err);
    CUresult r = cu->cuStreamEndCapture(t->stream, &graph);
    if (st == FMQA_OK && r != CUDA_SUCCESS)
        st = rt_cuda_error(err, r, "cuStreamEndCapture");
    if (st == FMQA_OK) {
        r = cu->cuGraphInstantiateWithFlags(&a->exec, graph, 0);
        if (r != CUDA_SUCCESS)
            st = rt_cuda_error(err, r, "cuGraphInstantiateWithFlags");
    }
    if (graph)
        cu->cuGraphDestroy(graph);
    return st;
}

static fmqa_status run_samples(tun_timer *t, launch_arg *a, const tun_time_opts *o,
                               double *samples, int *n, tun_timing *out, fmqa_err *err)
{
    double total_ms = 0;
    int runs = o->runs < MAX_SAMPLES ? o->runs : MAX_SAMPLES;
    for (*n = 0; *n < runs;) {
        double us;
        fmqa_status st = sample(t, a, *n, &us, err);
        if (st != FMQA_OK)
            return st;
        samples[(*n)++] = us;
        total_ms += us * (a->exec ? a->plan.launches : 1) / 1000.0;
        if (o->prune_us > 0 && *n == o->prune_runs) {
            tun_stats s;
            if (tun_stats_compute(samples, *n, &s, NULL) == FMQA_OK && s.median > o->prune_us) {
                out->pruned = 1;
                break;
            }
        }
        if (o->max_ms > 0 && total_ms > o->max_ms && *n >= 3)
            break;
    }
    return FMQA_OK;
}

static fmqa_status time_entered(tun_timer *t, launch_arg *a, const tun_time_opts *o,
                                double *samples, tun_timing *out, fmqa_err *err)
{
    const rt_cuda *cu = cu_of(t);
    fmqa_status st = FMQA_OK;
    for (int i = 0; i < o->warmup && st == FMQA_OK; i++)
        st = a->fn(a->user, i, t->stream, err);
    if (st != FMQA_OK)
        return st;
    RT_CU(err, cu->cuStreamSynchronize(t->stream), "cuStreamSynchronize (warm-up)");
    /* The probe: one launch after a read flush, for the graph size. */
    double probe;
    a->plan.flush = TUN_FLUSH_READ, a->plan.launches = 1;
    if ((st = read_prepare(t, err)) != FMQA_OK || (st = sample(t, a, 0, &probe, err)) != FMQA_OK ||
        (st = tun_time_plan_make(o, t->ctx->info.l2_bytes, probe, &a->plan, err)) != FMQA_OK)
        return st;
    out->plan = a->plan;
    int n = 0;
    if (a->plan.launches > 1 && (st = capture(t, a, err)) != FMQA_OK)
        return st;
    /* One untimed replay: the first one also uploads the graph. */
    CUresult cr = a->exec ? cu->cuGraphLaunch(a->exec, t->stream) : CUDA_SUCCESS;
    if (cr != CUDA_SUCCESS)
        st = rt_cuda_error(err, cr, "cuGraphLaunch (first replay)");
    if (st == FMQA_OK)
        st = run_samples(t, a, o, samples, &n, out, err);
    if (a->exec)
        cu->cuGraphExecDestroy(a->exec);
    return st == FMQA_OK ? tun_stats_compute(samples, n, &out->stats, err) : st;
}

fmqa_status tun_time(tun_timer *t, tun_launch_fn fn, void *user, const tun_time_opts *o,
                     tun_timing *out, fmqa_err *err)
{
    if (!t || !fn || !o || !out || o->runs < 1 || o->warmup < 0)
        return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT,
                            "tun_time: NULL argument or runs < 1 / warmup < 0");
    tun_time_plan check;
    fmqa_status st = tun_time_plan_make(o, 0, 0, &check, err);
    if (st != FMQA_OK)
        return st;
    tun_timing res;
    memset(&res, 0, sizeof res);
    res.method = TUN_TIMING_METHOD;
    res.sm_clock_mhz = t->ctx->info.clock_khz / 1000;
    res.mem_clock_mhz = t->ctx->info.mem_clock_khz / 1000;
    double *samples = malloc((size_t)(o->runs < MAX_SAMPLES ? o->runs : MAX_SAMPLES) *
                             sizeof *samples);
    if (!samples)
        return fmqa_err_set(err, FMQA_ERR_OUT_OF_MEMORY, "out of memory");
    launch_arg a = {fn, user, NULL, {TUN_FLUSH_NONE, 1, 0}};
    if ((st = rt_enter(t->ctx, err)) == FMQA_OK) {
        st = time_entered(t, &a, o, samples, &res, err);
        rt_leave(t->ctx);
    }
    free(samples);
    if (st == FMQA_OK)
        *out = res;
    return st;
}

/* ---------------------------------------------------------------- bandwidth */

typedef struct read_arg {
    tun_timer *t;
    CUdeviceptr buf;
    size_t bytes;
    int copies;
} read_arg;

static fmqa_status read_copy(void *user, int i, CUstream stream, fmqa_err *err)
{
    read_arg *r = user;
    return read_launch(r->t, r->buf + (CUdeviceptr)((size_t)(i % r->copies) * r->bytes),
                       r->bytes, stream, err);
}

fmqa_status tun_read_time(tun_timer *t, size_t bytes, const tun_time_opts *o, tun_timing *out,
                          double *gbps, fmqa_err *err)
{
    if (!t || !o || !out || !gbps || bytes < 16)
        return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT,
                            "tun_read_time: NULL argument or fewer than 16 bytes");
    bytes &= ~(size_t)15;
    tun_time_opts ro = *o;
    ro.bytes = (double)bytes;
    ro.copies = o->copies > 0 ? o->copies : tun_rotation_copies(ro.bytes, t->ctx->info.l2_bytes);
    read_arg r = {t, 0, bytes, ro.copies};
    const rt_cuda *cu = cu_of(t);
    fmqa_status st = rt_enter(t->ctx, err);
    if (st != FMQA_OK)
        return st;
    CUresult cr = cu->cuMemAlloc(&r.buf, bytes * (size_t)ro.copies);
    if (cr == CUDA_SUCCESS)
        cr = cu->cuMemsetD32(r.buf, 0x01020304u, bytes * (size_t)ro.copies / 4);
    st = cr != CUDA_SUCCESS ? rt_cuda_error(err, cr, "cuMemAlloc/cuMemsetD32 (read buffer)")
                            : read_prepare(t, err);
    if (st == FMQA_OK)
        st = tun_time(t, read_copy, &r, &ro, out, err);
    if (r.buf)
        cu->cuMemFree(r.buf);
    rt_leave(t->ctx);
    if (st == FMQA_OK)
        *gbps = (double)bytes / (out->stats.median * 1e3);
    return st;
}

fmqa_status tun_read_bandwidth(tun_timer *t, double *gbps, fmqa_err *err)
{
    if (!t || !gbps)
        return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT, "tun_read_bandwidth: NULL argument");
    size_t l2 = (size_t)(t->ctx->info.l2_bytes > 0 ? t->ctx->info.l2_bytes : 0);
    size_t bytes = 8 * l2 > ((size_t)256 << 20) ? 8 * l2 : ((size_t)256 << 20);
    tun_time_opts o = TUN_TIME_OPTS_INIT;
    o.warmup = 3, o.runs = 20, o.max_ms = 0;
    tun_timing tm;
    return tun_read_time(t, bytes, &o, &tm, gbps, err);
}
