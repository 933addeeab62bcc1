/*
 * cuda_emu.h -- a host emulator for the kernel templates, so that their real
 * source runs on the CPU without a GPU (tests/unit/test_*_emu.c).
 *
 * A rendered template (gen_render's text) is compiled as C++ with this header
 * forced in first.  What is emulated is the machine, never the templates'
 * logic: the PTX instructions of the instruction layer templates/fmqa_ptx.cuh
 * (modelled in emu_ptx.h, which takes that file's place), the CUDA built-ins
 * that are one instruction each (below: __syncthreads = bar.sync 0, __trap,
 * __ldg = ld.global.nc, __log2f = lg2.approx, __fdiv_rn = div.rn.f32, the bit
 * casts, min/max/fmaxf/rintf/fmaf/... which host libm computes exactly as the
 * IEEE operations they are), CUDA's vector types, and threads, warps, CTAs and
 * shared memory.  fmqa_device.cuh and the templates compile unchanged.  The
 * only library function is sincospif (append.cuh's RoPE), computed in double
 * (CUDA's is within 1 ulp; append's tests allow for it), and append's double
 * exp/log come from host libm.  Inline asm anywhere outside fmqa_ptx.cuh is a
 * compile error (`asm` is defined to an undeclared name), and so is any CUDA
 * intrinsic not defined here.  -D__CUDA_ARCH__ (800, 860, 890, 900, ...)
 * chooses the architecture: code under `#if __CUDA_ARCH__ >= 890` is emulated
 * only when asked for, and an instruction the architecture lacks aborts.
 *
 * Every CUDA thread of a CTA is a ucontext coroutine on one OS thread, switched
 * only at barriers, warp and warpgroup collectives and mbarrier waits, so runs
 * are deterministic.  A waiting thread sleeps (the scheduler does not resume
 * it) until what it waits for changes, so a wait nobody can end is reported as
 * a deadlock naming what it waited at.  CTAs run
 * one at a time in descending index order, the reverse of the order a kernel
 * that races between CTAs is most likely to assume.  Warps
 * drift apart as far as the program allows: the scheduler runs one warp until
 * all its lanes wait at a CTA barrier (or exit) before the next, forward
 * through the warps in even CTAs and backward in odd ones, so a missing
 * __syncthreads lets a warp read a tile its neighbours have not loaded (still
 * poison) or overwrite one they still read.  Warp collectives (ldmatrix, mma,
 * shfl) exchange through per-warp slots between two warp barriers and check
 * that all lanes of their mask execute the same collective; a mask must hold
 * the calling lane and no exited lane.  cp.async copies are queued and land
 * only when a cp.async.wait_group retires their group (the latest the hardware
 * may deliver them), so a read before the wait sees the poison (0xFF: NaN as
 * f16, bf16, f32 and f64) that fills shared memory before each CTA.  Errors
 * (divergence, deadlock, __trap, a bad or out-of-range shared address, a
 * misaligned vector, cp.async or ldmatrix address, an unmodelled instruction)
 * print and abort.
 *
 * Shared memory: the dynamic buffer (`extern __shared__ ... smem[]`, decode.cuh)
 * is the array smem below.  Static `__shared__` arrays (append.cuh) must be one
 * array for all the threads of a CTA: a driver whose template declares them
 * defines EMU_STATIC_SHARED before including this header, which makes them
 * static locals in the section emu_shared (C++ cannot tell the two kinds
 * apart: `extern static` is ill-formed).
 */
#ifndef FMQA_CUDA_EMU_H
#define FMQA_CUDA_EMU_H

#ifndef __CUDA_ARCH__
#error "cuda_emu.h: compile with -D__CUDA_ARCH__=<arch x 10>, e.g. 900"
#endif

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <ucontext.h>
#include <vector>

#define __device__
#define __global__
#ifdef EMU_STATIC_SHARED
#define __shared__ static __attribute__((section("emu_shared")))
#else
#define __shared__
#endif
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __grid_constant__
#define __align__(n) __attribute__((aligned(n)))
/* Inline asm belongs in templates/fmqa_ptx.cuh, which emu_ptx.h replaces. */
#define asm emu_error_inline_asm_outside_fmqa_ptx_cuh

struct emu_dim3 {
    unsigned x, y, z;
};
static emu_dim3 threadIdx, blockIdx, blockDim, gridDim;
static unsigned emu_dyn_smem;
constexpr int EMU_SMEM = 232448;
extern "C" alignas(128) unsigned char smem[EMU_SMEM];
alignas(128) unsigned char smem[EMU_SMEM];
/* Bounds of the static __shared__ arrays (none: both null). */
extern "C" unsigned char __start_emu_shared[] __attribute__((weak, visibility("hidden")));
extern "C" unsigned char __stop_emu_shared[] __attribute__((weak, visibility("hidden")));

static void emu_fail(const char *what) {
    fprintf(stderr, "emu: %s (block %u,%u,%u thread %u)\n", what, blockIdx.x, blockIdx.y, blockIdx.z,
            threadIdx.x);
    abort();
}

/* ------------------------------------------------------------ CUDA built-ins */

static inline void __trap() { emu_fail("__trap"); }
static inline int min(int a, int b) { return a < b ? a : b; }
static inline int max(int a, int b) { return a > b ? a : b; }
template <class T> static inline T __ldg(const T *p) { return *p; }
/* CUDA's built-in vector types, as far as the templates use them.  A GPU
 * faults on a vector access that is not aligned to its size; x86 does not, so
 * copies of the 8- and 16-byte integer vectors check both addresses. */
static inline void emu_check_align(const void *p, unsigned n) {
    if ((uintptr_t)p % n) emu_fail("misaligned vector access");
}
template <class T, unsigned N> struct emu_checked_vec {
    emu_checked_vec &operator=(const emu_checked_vec &o) {
        emu_check_align(this, N);
        emu_check_align(&o, N);
        memcpy(static_cast<void *>(static_cast<T *>(this)), static_cast<const void *>(&o), N);
        return *this;
    }
};
struct float4 {
    float x, y, z, w;
};
struct uint2 : emu_checked_vec<uint2, 8> {
    unsigned x, y;
};
struct uint4 : emu_checked_vec<uint4, 16> {
    unsigned x, y, z, w;
};
static inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
static inline uint2 make_uint2(unsigned x, unsigned y) {
    uint2 r;
    r.x = x, r.y = y;
    return r;
}
static inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) {
    uint4 r;
    r.x = x, r.y = y, r.z = z, r.w = w;
    return r;
}
static inline float __int_as_float(int i) { float f; memcpy(&f, &i, 4); return f; }
static inline float __uint_as_float(unsigned i) { float f; memcpy(&f, &i, 4); return f; }
static inline int __float_as_int(float f) { int i; memcpy(&i, &f, 4); return i; }
static inline unsigned __float_as_uint(float f) { unsigned i; memcpy(&i, &f, 4); return i; }
/* lg2.approx.f32 (max error 2^-22.6 relative): host log2f. */
static inline float emu_log2f(float x) { return log2f(x); }
#define __log2f emu_log2f
/* div.rn.f32: IEEE division, as the host's. */
static inline float __fdiv_rn(float a, float b) { return a / b; }

/* sincospif (CUDA math library, 1 ulp): sin(pi x), cos(pi x) with the whole
 * half turns dropped exactly and the rest (|y| <= 1/4) in double, so exact at
 * multiples of 1/2 and within 0.5 ulp plus a hair elsewhere. */
static inline void sincospif(float x, float *s, float *c) {
    double d = x;
    d -= 2.0 * nearbyint(d / 2.0); /* exact: |d| <= 1 */
    const int n = (int)nearbyint(2.0 * d);
    const double y = d - n / 2.0, sy = sin(M_PI * y), cy = cos(M_PI * y);
    const double ss[4] = {sy, cy, -sy, -cy}, cc[4] = {cy, -sy, -cy, sy};
    *s = (float)ss[n & 3];
    *c = (float)cc[n & 3];
}

/* ------------------------------------------------------------ scheduler */

struct emu_thread {
    ucontext_t ctx;
    int done;
    int cta_gen; /* generation of the CTA barrier it waits at, or -1 */
    /* cp.async: queued copies and the group count each belongs to */
    struct copy { unsigned dst; const void *src; int n, total, group; };
    std::vector<copy> pending;
    int groups;
    /* blocked until *wait_on != wait_val (a barrier's generation, an
     * mbarrier's phase): the scheduler does not resume it before */
    const int *wait_on;
    int wait_val;
    const char *wait_what;
};
static std::vector<emu_thread> emu_thr;
static ucontext_t emu_main;
static int emu_cur, emu_nthreads;
static long emu_spins;

static void emu_yield() {
    if (++emu_spins > 100000000L) emu_fail("deadlock: a barrier never completes");
    swapcontext(&emu_thr[emu_cur].ctx, &emu_main);
}

/* Blocks the calling thread until *p != v: the scheduler resumes it only
 * then, so that waiting costs nothing and a wait nobody can end is a deadlock
 * (reported with what) rather than a spin. */
static void emu_block(const int *p, int v, const char *what) {
    emu_thread &t = emu_thr[emu_cur];
    t.wait_on = p, t.wait_val = v, t.wait_what = what;
    while (*p == v) emu_yield();
    t.wait_on = nullptr;
}

/* A barrier of n threads; a warp collective also names its lanes (warp: the
 * first thread of the warp), none of which may exit while the others wait. */
struct emu_barrier {
    int count = 0, gen = 0;
    void wait(int n, unsigned warp = 0, unsigned lanes = 0, const char *what = "a warp collective") {
        const int g = gen;
        for (int l = 0; l < 32; ++l)
            if (lanes >> l & 1 && emu_thr[warp + l].done) emu_fail("a collective's mask names an exited lane");
        if (++count == n) {
            count = 0;
            ++gen;
            emu_spins = 0;
        } else {
            emu_block(&gen, g, what);
        }
    }
};
static emu_barrier emu_cta_bar, emu_warp_bar[32];
static inline void __syncthreads() {
    emu_thr[emu_cur].cta_gen = emu_cta_bar.gen;
    emu_cta_bar.wait(emu_nthreads, 0, 0, "a CTA barrier (__syncthreads)");
    emu_thr[emu_cur].cta_gen = -1;
}

/* Per-warp exchange slots. */
struct emu_slot {
    int op;
    unsigned addr, a[4], b[2], mask;
    float c[4], f;
};
static emu_slot emu_slots[1024];
/* Barriers of partial warps, one per mask in use (disjoint row groups). */
struct emu_mask_bar {
    unsigned mask;
    emu_barrier bar;
};
static std::deque<emu_mask_bar> emu_mask_bars[32]; /* references stay valid */

static emu_slot &emu_my() { return emu_slots[threadIdx.x]; }
static emu_slot &emu_lane(int l) { return emu_slots[(threadIdx.x & ~31u) + l]; }
static emu_barrier &emu_bar_of(unsigned mask) {
    if (mask == 0xffffffffu) return emu_warp_bar[threadIdx.x / 32];
    std::deque<emu_mask_bar> &v = emu_mask_bars[threadIdx.x / 32];
    for (emu_mask_bar &m : v)
        if (m.mask == mask) return m.bar;
    v.push_back({mask, emu_barrier()});
    return v.back().bar;
}
static void emu_meet(unsigned mask) {
    emu_bar_of(mask).wait(__builtin_popcount(mask), threadIdx.x & ~31u, mask);
}
/* A collective of the lanes in mask: the calling lane must be one of them, and
 * they all meet here with the same op and mask (a lane that has exited would
 * never come: that is an error, not a wait). */
static void emu_enter(int op, unsigned mask = 0xffffffffu) {
    if (!(mask >> (threadIdx.x & 31) & 1)) emu_fail("a collective's mask lacks the calling lane");
    emu_my().op = op;
    emu_my().mask = mask;
    emu_meet(mask);
    for (int l = 0; l < 32; ++l)
        if (mask >> l & 1 && (emu_lane(l).op != op || emu_lane(l).mask != mask))
            emu_fail("warp divergence at a collective");
}
static void emu_leave(unsigned mask = 0xffffffffu) { emu_meet(mask); }

#include "emu_ptx.h"

/* ------------------------------------------------------------ launching */

static void (*emu_body)(const void *);
static const void *emu_params;
static void emu_entry() {
    emu_body(emu_params);
    emu_thr[emu_cur].done = 1;
    swapcontext(&emu_thr[emu_cur].ctx, &emu_main);
}

static bool emu_runnable(unsigned i) {
    const emu_thread &t = emu_thr[i];
    return !t.done && !(t.cta_gen >= 0 && t.cta_gen == emu_cta_bar.gen) && !(t.wait_on && *t.wait_on == t.wait_val);
}

/* Runs the lanes of warp w until each has exited or waits at a CTA barrier;
 * returns whether any ran. */
static bool emu_run_warp(unsigned w) {
    bool any = false;
    for (bool ran = true; ran;) {
        ran = false;
        for (unsigned i = 32 * w; i < 32 * w + 32; ++i) {
            if (!emu_runnable(i)) continue;
            emu_cur = i;
            threadIdx.x = i;
            swapcontext(&emu_main, &emu_thr[i].ctx);
            ran = any = true;
        }
    }
    return any;
}

/* One CTA: warps forward (even CTA index) or backward (odd), see the top. */
static void emu_run_cta(unsigned threads, size_t stack, std::vector<char> &stacks, unsigned cta) {
    memset(smem, 0xff, sizeof smem);
    if (&__start_emu_shared[0] != &__stop_emu_shared[0]) /* arrays compared as addresses */
        memset(__start_emu_shared, 0xff, __stop_emu_shared - __start_emu_shared);
    emu_thr.assign(threads, emu_thread());
    emu_cta_bar = emu_barrier();
    fmqa_dev::emu_cta_begin();
    for (unsigned i = 0; i < threads; ++i) {
        emu_thread &t = emu_thr[i];
        t.cta_gen = -1;
        getcontext(&t.ctx);
        t.ctx.uc_stack.ss_sp = &stacks[i * stack];
        t.ctx.uc_stack.ss_size = stack;
        t.ctx.uc_link = nullptr;
        makecontext(&t.ctx, emu_entry, 0);
    }
    const unsigned warps = threads / 32;
    for (bool any = true; any;) {
        any = false;
        for (unsigned k = 0; k < warps; ++k)
            any |= emu_run_warp(cta % 2 ? warps - 1 - k : k);
    }
    for (unsigned i = 0; i < threads; ++i)
        if (!emu_thr[i].done) {
            threadIdx.x = i;
            char what[160];
            snprintf(what, sizeof what, "deadlock: waits at %s that never completes",
                     emu_thr[i].wait_on ? emu_thr[i].wait_what : "a CTA barrier");
            emu_fail(what);
        }
    fmqa_dev::emu_cta_end();
}

/* Runs body(params) for every thread of every CTA of the grid, CTA by CTA
 * from the last to the first (so a kernel that counts on CTAs running in
 * index order, e.g. two CTAs writing one place, shows it), with shared memory
 * (dynamic and static) filled with 0xFF first. */
static inline void emu_grid(void (*body)(const void *), const void *params, const unsigned grid[3],
                     unsigned threads, unsigned dyn_smem) {
    static std::vector<char> stacks;
    const size_t stack = 256 * 1024;
    if (threads % 32 || threads > 1024 || dyn_smem > EMU_SMEM) emu_fail("bad launch");
    stacks.resize(stack * threads);
    emu_body = body, emu_params = params, emu_dyn_smem = dyn_smem, emu_nthreads = threads;
    blockDim = {threads, 1, 1}, gridDim = {grid[0], grid[1], grid[2]};
    for (unsigned long k = (unsigned long)grid[0] * grid[1] * grid[2]; k-- > 0;) {
        blockIdx = {(unsigned)(k % grid[0]), (unsigned)(k / grid[0] % grid[1]),
                    (unsigned)(k / grid[0] / grid[1])};
        emu_run_cta(threads, stack, stacks, (unsigned)k);
    }
}

#endif /* FMQA_CUDA_EMU_H */
