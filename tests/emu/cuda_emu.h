/*
 * cuda_emu.h -- a host emulator for the kernel templates, so that their real
 * source runs on the CPU without a GPU (tests/unit/test_decode_emu.c).
 *
 * A rendered template (gen_render's text) is compiled as C++ with this header
 * forced in first (-include).  The header defines FMQA_DEVICE_CUH, so the
 * template's own fmqa_device.cuh is skipped and the namespace fmqa_dev below
 * takes its place: the same functions, each emulating its PTX instruction as
 * the PTX ISA specifies it (ldmatrix, mma.sync m16n8k16, prmt, cvt, cp.async,
 * shfl).  Their bit-level bodies (int8 / fp8 conversion) repeat the device
 * header's, so the two must change together; everything in the template file
 * itself (index math, masks, softmax, pipeline, merge, stores) is the real code.
 *
 * Every CUDA thread of a CTA is a ucontext coroutine on one OS thread, switched
 * only at barriers, so runs are deterministic.  Warp collectives (ldmatrix, mma,
 * shfl) exchange through per-warp slots between two warp barriers and check
 * that all 32 lanes execute the same collective; shuffles with a partial mask
 * (append.cuh's row groups) meet only the lanes of their mask, each of which
 * must still be running.  cp.async copies are queued
 * and land only when a cp.async.wait_group retires their group (the latest the
 * hardware may deliver them), so a read before the wait sees the poison that
 * fills shared memory before each CTA.  Errors (divergence, deadlock, __trap,
 * a bad shared address, a misaligned 8- or 16-byte vector access) print and
 * abort.
 *
 * Shared memory: the dynamic buffer (`extern __shared__ ... smem[]`, decode.cuh)
 * is the array smem below.  Static `__shared__` arrays (append.cuh) must be one
 * array for all the threads of a CTA: a driver whose template declares them
 * defines EMU_STATIC_SHARED before including this header, which makes them
 * static locals in the section emu_shared (C++ cannot tell the two kinds
 * apart: `extern static` is ill-formed).  Both are filled with 0xFF before
 * every CTA.  The cuda_fp16.h / cuda_bf16.h / cuda_fp8.h next to this file are
 * empty: the types and conversions the templates use are defined here.
 */
#ifndef FMQA_CUDA_EMU_H
#define FMQA_CUDA_EMU_H
#define FMQA_DEVICE_CUH /* the emulation below replaces the device header */

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
#define __launch_bounds__(n)
#define __align__(n) __attribute__((aligned(n)))
/* decode.cuh's only inline asm reads %dynamic_smem_size into `dyn`. */
#define asm(...) (dyn = emu_dyn_smem)

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
static inline void __trap() { emu_fail("__trap"); }
static inline int min(int a, int b) { return a < b ? a : b; }
static inline int max(int a, int b) { return a > b ? a : b; }
template <class T> static inline T __ldg(const T *p) { return *p; }
/* CUDA's built-in vector types, as far as the templates use them.  A GPU
 * faults on a vector access that is not aligned to its size; x86 does not, so
 * copies of the 8- and 16-byte integer vectors check both addresses. */
static void emu_check_align(const void *p, unsigned n) {
    if ((uintptr_t)p % n) emu_fail("misaligned vector access");
}
template <class T, unsigned N> struct emu_checked_vec {
    emu_checked_vec &operator=(const emu_checked_vec &o) {
        emu_check_align(this, N);
        emu_check_align(&o, N);
        memcpy(static_cast<T *>(this), static_cast<const T *>(&o), N);
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
static inline float __int_as_float(int i) { float f; memcpy(&f, &i, 4); return f; }
static inline float __uint_as_float(unsigned i) { float f; memcpy(&f, &i, 4); return f; }
static inline int __float_as_int(float f) { int i; memcpy(&i, &f, 4); return i; }
static inline unsigned __float_as_uint(float f) { unsigned i; memcpy(&i, &f, 4); return i; }
static inline float emu_log2f(float x) { return log2f(x); }
#define __log2f emu_log2f

/* ------------------------------------------------------------ scheduler */

struct emu_thread {
    ucontext_t ctx;
    int done;
    /* cp.async: queued copies and the group count each belongs to */
    struct copy { unsigned dst; const void *src; int n, total, group; };
    std::vector<copy> pending;
    int groups;
};
static std::vector<emu_thread> emu_thr;
static ucontext_t emu_main;
static int emu_cur, emu_nthreads;
static long emu_spins;

static void emu_yield() {
    if (++emu_spins > 100000000L) emu_fail("deadlock: a barrier never completes");
    swapcontext(&emu_thr[emu_cur].ctx, &emu_main);
}

/* A barrier of n threads; a warp collective also names its lanes (warp: the
 * first thread of the warp), none of which may exit while the others wait. */
struct emu_barrier {
    int count = 0, gen = 0;
    void wait(int n, unsigned warp = 0, unsigned lanes = 0) {
        const int g = gen;
        if (++count == n) {
            count = 0;
            ++gen;
            emu_spins = 0;
        } else {
            while (gen == g) {
                for (int l = 0; l < 32; ++l)
                    if (lanes >> l & 1 && emu_thr[warp + l].done) emu_fail("a collective's mask names an exited lane");
                emu_yield();
            }
        }
    }
};
static emu_barrier emu_cta_bar, emu_warp_bar[32];
static inline void __syncthreads() { emu_cta_bar.wait(emu_nthreads); }

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

/* shfl.sync of a 32-bit value from lane src (already resolved for the mode);
 * src outside the mask is undefined on the GPU, so an error here. */
template <class T> static inline T emu_shfl(unsigned mask, T x, int src) {
    static_assert(sizeof(T) == 4, "32-bit shuffles only");
    memcpy(&emu_my().f, &x, 4);
    emu_enter(1, mask);
    if (!(mask >> src & 1)) emu_fail("shuffle from a lane outside the mask");
    T r;
    memcpy(&r, &emu_lane(src).f, 4);
    emu_leave(mask);
    return r;
}
/* Source lanes as the PTX ISA defines them for width-lane segments: a source
 * outside the caller's segment returns the caller's own value. */
static inline int emu_seg(int width) { return (threadIdx.x & 31) & ~(width - 1); }
template <class T> static inline T __shfl_xor_sync(unsigned mask, T x, int k, int width = 32) {
    const int l = threadIdx.x & 31, s = l ^ k;
    return emu_shfl(mask, x, s >= emu_seg(width) + width ? l : s);
}
template <class T> static inline T __shfl_down_sync(unsigned mask, T x, unsigned k, int width = 32) {
    const int l = threadIdx.x & 31, s = l + (int)k;
    return emu_shfl(mask, x, s >= emu_seg(width) + width ? l : s);
}
template <class T> static inline T __shfl_up_sync(unsigned mask, T x, unsigned k, int width = 32) {
    const int l = threadIdx.x & 31, s = l - (int)k;
    return emu_shfl(mask, x, s < emu_seg(width) ? l : s);
}
template <class T> static inline T __shfl_sync(unsigned mask, T x, int src, int width = 32) {
    return emu_shfl(mask, x, emu_seg(width) + (src & (width - 1)));
}

/* vote.sync.any.pred: every lane of the mask gets the OR of their predicates. */
static inline int __any_sync(unsigned mask, int pred) {
    emu_my().a[0] = pred != 0;
    emu_enter(2, mask);
    int r = 0;
    for (int l = 0; l < 32; ++l)
        if (mask >> l & 1) r |= emu_lane(l).a[0];
    emu_leave(mask);
    return r;
}

/* ------------------------------------------------------------ device header */

namespace fmqa_dev {

typedef unsigned int u32;
typedef unsigned short u16;
constexpr float FP8_F16_FOLD = 256.0f;

inline float neg_inf() { return __int_as_float(0xff800000); }

inline float f16_to_f32(u16 h) {
    const int e = (h >> 10) & 31, m = h & 1023;
    float v = e == 0 ? ldexpf((float)m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexpf((float)(m | 1024), e - 25);
    return h & 0x8000 ? -v : v;
}
inline float bf16_to_f32(u16 h) { return __uint_as_float((u32)h << 16); }
template <int BF16> inline float h_to_f32(u16 h) { return BF16 ? bf16_to_f32(h) : f16_to_f32(h); }

inline u16 f32_to_f16_rn(float f) { return __builtin_bit_cast(u16, (_Float16)f); }
inline u16 f32_to_bf16_rn(float f) {
    u32 u;
    memcpy(&u, &f, 4);
    if (std::isnan(f)) return (u16)((u >> 16) | 0x40);
    u += 0x7fff + ((u >> 16) & 1);
    return (u16)(u >> 16);
}
template <int BF16> inline u16 f32_to_h(float f) { return BF16 ? f32_to_bf16_rn(f) : f32_to_f16_rn(f); }
template <int BF16> inline u32 pack2(float lo, float hi) {
    return (u32)f32_to_h<BF16>(lo) | (u32)f32_to_h<BF16>(hi) << 16;
}
inline u32 f16x2_to_bf16x2(u32 x) { return pack2<1>(f16_to_f32((u16)(x & 0xffff)), f16_to_f32((u16)(x >> 16))); }

/* prmt.b32 default mode: selector nibble i picks byte (nibble & 7) of {b, a}. */
inline u32 prmt(u32 a, u32 b, u32 sel) {
    const unsigned long long x = (unsigned long long)b << 32 | a;
    u32 r = 0;
    for (int i = 0; i < 4; ++i) {
        const int s = (sel >> (4 * i)) & 15;
        u32 byte = (x >> (8 * (s & 7))) & 0xff;
        if (s & 8) byte = byte & 0x80 ? 0xff : 0;
        r |= byte << (8 * i);
    }
    return r;
}
inline u32 sub_f16x2(u32 a, u32 b) {
    return pack2<0>(f16_to_f32(a & 0xffff) - f16_to_f32(b & 0xffff), f16_to_f32(a >> 16) - f16_to_f32(b >> 16));
}

/* Same bodies as fmqa_device.cuh, with asm replaced by the emulated instruction. */
inline void int8x4_to_f16(u32 r, u32 &p02, u32 &p13) {
    const u32 u = r ^ 0x80808080u;
    const u32 magic = 0x64806480u;
    u32 a = prmt(u, 0x64646464u, 0x4240u), b = prmt(u, 0x64646464u, 0x4341u);
    p02 = sub_f16x2(a, magic);
    p13 = sub_f16x2(b, magic);
}
inline u32 fp8_pair_bits(u32 hi_bytes) { return (hi_bytes & 0x80008000u) | ((hi_bytes >> 1) & 0x3f803f80u); }
inline void fp8x4_to_f16(u32 r, u32 &p02, u32 &p13) {
    p02 = fp8_pair_bits(prmt(r, 0u, 0x2404u));
    p13 = fp8_pair_bits(prmt(r, 0u, 0x3414u));
}
template <int FMT, int BF16> inline void q8x4_to_pairs(u32 r, u32 &p02, u32 &p13) {
    if (FMT == 2)
        int8x4_to_f16(r, p02, p13);
    else
        fp8x4_to_f16(r, p02, p13);
    if (BF16) {
        p02 = f16x2_to_bf16x2(p02);
        p13 = f16x2_to_bf16x2(p13);
    }
}

inline u32 smem_addr(const void *p) {
    const long off = (const unsigned char *)p - smem;
    if (off < 0 || off > EMU_SMEM) emu_fail("smem_addr of a non-shared pointer");
    return (u32)off;
}
inline unsigned char *emu_at(u32 addr, int n) {
    if (addr + n > emu_dyn_smem) emu_fail("shared access beyond the dynamic size");
    return smem + addr;
}

inline void emu_cp(u32 dst, const void *src, int n, int total) {
    if (dst % total) emu_fail("misaligned cp.async destination");
    emu_thread &t = emu_thr[emu_cur];
    t.pending.push_back({dst, src, n, total, t.groups});
}
inline void cp_async16(u32 dst, const void *src, int n) { emu_cp(dst, src, n, 16); }
inline void cp_async4(u32 dst, const void *src, int n) { emu_cp(dst, src, n, 4); }
/* ld.global.nc.v4.u32: a 16-byte vector load, which faults unless aligned. */
inline void ld_nc_v4(u32 (&r)[4], const void *p) {
    emu_check_align(p, 16);
    memcpy(r, p, 16);
}
inline void cp_async_commit() { emu_thr[emu_cur].groups++; }
template <int N> inline void cp_async_wait() {
    emu_thread &t = emu_thr[emu_cur];
    std::vector<emu_thread::copy> keep;
    for (const auto &c : t.pending) {
        if (c.group < t.groups - N) {
            unsigned char *d = emu_at(c.dst, c.total);
            memset(d, 0, c.total);
            if (c.n) memcpy(d, c.src, c.n);
        } else {
            keep.push_back(c);
        }
    }
    t.pending.swap(keep);
}

/* ldmatrix: lane l gets, of matrix j (rows addressed by lanes 8j..8j+7), the
 * 32 bits at row l/4, byte 4(l%4); transposed, the 16-bit elements (2(l%4), l/4)
 * and (2(l%4)+1, l/4). */
template <int NM, int TRANS> inline void emu_ldsm(u32 *r, u32 addr) {
    if (addr % 16) emu_fail("misaligned ldmatrix row");
    emu_my().addr = addr;
    emu_enter(10 + NM * 2 + TRANS);
    const int l = threadIdx.x & 31;
    for (int j = 0; j < NM; ++j) {
        if (!TRANS) {
            memcpy(&r[j], emu_at(emu_lane(8 * j + l / 4).addr + 4 * (l % 4), 4), 4);
        } else {
            u16 lo, hi;
            memcpy(&lo, emu_at(emu_lane(8 * j + 2 * (l % 4)).addr + 2 * (l / 4), 2), 2);
            memcpy(&hi, emu_at(emu_lane(8 * j + 2 * (l % 4) + 1).addr + 2 * (l / 4), 2), 2);
            r[j] = lo | (u32)hi << 16;
        }
    }
    emu_leave();
}
inline void ldsm_x4(u32 (&r)[4], u32 addr) { emu_ldsm<4, 0>(r, addr); }
inline void ldsm_x4_t(u32 (&r)[4], u32 addr) { emu_ldsm<4, 1>(r, addr); }
inline void ldsm_x2(u32 (&r)[2], u32 addr) { emu_ldsm<2, 0>(r, addr); }
inline void ldsm_x2_t(u32 (&r)[2], u32 addr) { emu_ldsm<2, 1>(r, addr); }

/* mma.sync.m16n8k16 row.col f32: fragments as in the PTX ISA (groupID g =
 * lane/4, q = lane%4). */
template <int BF16> inline float emu_half(u32 reg, int hi) { return h_to_f32<BF16>((u16)(hi ? reg >> 16 : reg)); }
template <int BF16> inline void mma16816(float (&c)[4], const u32 (&a)[4], u32 b0, u32 b1) {
    emu_slot &me = emu_my();
    for (int i = 0; i < 4; ++i) me.a[i] = a[i], me.c[i] = c[i];
    me.b[0] = b0, me.b[1] = b1;
    emu_enter(20 + BF16);
    float A[16][16], B[16][8];
    for (int l = 0; l < 32; ++l) {
        const emu_slot &s = emu_lane(l);
        const int g = l / 4, q = l % 4;
        for (int e = 0; e < 2; ++e) {
            A[g][2 * q + e] = emu_half<BF16>(s.a[0], e);
            A[g + 8][2 * q + e] = emu_half<BF16>(s.a[1], e);
            A[g][2 * q + 8 + e] = emu_half<BF16>(s.a[2], e);
            A[g + 8][2 * q + 8 + e] = emu_half<BF16>(s.a[3], e);
            B[2 * q + e][g] = emu_half<BF16>(s.b[0], e);
            B[2 * q + 8 + e][g] = emu_half<BF16>(s.b[1], e);
        }
    }
    const int l = threadIdx.x & 31, g = l / 4, q = l % 4;
    float d[4];
    for (int i = 0; i < 4; ++i) {
        const int row = g + 8 * (i / 2), col = 2 * q + i % 2;
        double acc = me.c[i];
        for (int k = 0; k < 16; ++k) acc += (double)A[row][k] * B[k][col];
        d[i] = (float)acc;
    }
    emu_leave();
    for (int i = 0; i < 4; ++i) c[i] = d[i];
}

inline float ex2(float x) { return exp2f(x); }
inline float quad_max(float x) {
    x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
    return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
}
inline float quad_sum(float x) {
    x += __shfl_xor_sync(0xffffffffu, x, 1);
    return x + __shfl_xor_sync(0xffffffffu, x, 2);
}

} /* namespace fmqa_dev */

/* ------------------------------------------------------------ CUDA math headers */

/* cuda_fp16.h / cuda_bf16.h: storage types and the conversions, RNE. */
struct __half {
    unsigned short x;
};
struct __nv_bfloat16 {
    unsigned short x;
};
static inline __half __ushort_as_half(unsigned short b) { return {b}; }
static inline unsigned short __half_as_ushort(__half h) { return h.x; }
static inline float __half2float(__half h) { return fmqa_dev::f16_to_f32(h.x); }
static inline __half __float2half_rn(float f) { return {fmqa_dev::f32_to_f16_rn(f)}; }
static inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short b) { return {b}; }
static inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 h) { return h.x; }
static inline float __bfloat162float(__nv_bfloat16 h) { return fmqa_dev::bf16_to_f32(h.x); }
static inline __nv_bfloat16 __float2bfloat16_rn(float f) { return {fmqa_dev::f32_to_bf16_rn(f)}; }

/* cuda_fp8.h: cvt.rn.satfinite.e4m3x2.f32 as the PTX ISA defines it, written
 * from the format (bias 7, subnormal spacing 2^-9, largest finite 448 =
 * 0x7e, NaN 0x7f) rather than from the reference's encoder, so that the two
 * check each other. */
typedef unsigned char __nv_fp8_storage_t;
enum __nv_saturation_t { __NV_NOSAT, __NV_SATFINITE };
enum __nv_fp8_interpretation_t { __NV_E4M3, __NV_E5M2 };
static inline __nv_fp8_storage_t __nv_cvt_float_to_fp8(float x, __nv_saturation_t sat,
                                                       __nv_fp8_interpretation_t fmt) {
    if (sat != __NV_SATFINITE || fmt != __NV_E4M3) emu_fail("only satfinite e4m3 is emulated");
    if (std::isnan(x)) return 0x7f;
    const unsigned char sign = std::signbit(x) ? 0x80 : 0;
    const double a = fabs((double)x);
    if (a >= 448.0) return sign | 0x7e;
    int e;
    frexp(a, &e); /* a = m 2^e, m in [0.5, 1): exponent of a is e - 1 */
    if (a == 0.0 || e - 1 < -6)
        return sign | (unsigned char)nearbyint(ldexp(a, 9)); /* subnormal (8: the least normal) */
    const int q = (int)nearbyint(ldexp(a, 4 - e));        /* 8..16: 1.mmm in eighths */
    const int E = e - 1 + (q == 16), m = q == 16 ? 0 : q - 8;
    return sign | (unsigned char)((E + 7) << 3 | m);
}

/* IEEE division, round to nearest (host float division is). */
static inline float __fdiv_rn(float a, float b) { return a / b; }

/* sin(pi x), cos(pi x): whole half turns dropped exactly, the rest (|y| <= 1/4)
 * in double, so exact at multiples of 1/2 and within 0.5 ulp plus a hair
 * elsewhere (CUDA's: 1 ulp). */
static inline void sincospif(float x, float *s, float *c) {
    double d = x;
    d -= 2.0 * nearbyint(d / 2.0); /* exact: |d| <= 1 */
    const int n = (int)nearbyint(2.0 * d);
    const double y = d - n / 2.0, sy = sin(M_PI * y), cy = cos(M_PI * y);
    const double ss[4] = {sy, cy, -sy, -cy}, cc[4] = {cy, -sy, -cy, sy};
    *s = (float)ss[n & 3];
    *c = (float)cc[n & 3];
}

/* ------------------------------------------------------------ launching */

static void (*emu_body)(const void *);
static const void *emu_params;
static void emu_entry() {
    emu_body(emu_params);
    emu_thr[emu_cur].done = 1;
    swapcontext(&emu_thr[emu_cur].ctx, &emu_main);
}

/* Runs body(params) for every thread of every CTA of the grid, CTA by CTA,
 * with shared memory (dynamic and static) filled with 0xFF (NaN as f16, bf16,
 * f32 and f64) first. */
static void emu_grid(void (*body)(const void *), const void *params, const unsigned grid[3],
                     unsigned threads, unsigned dyn_smem) {
    static std::vector<char> stacks;
    const size_t stack = 256 * 1024;
    if (threads % 32 || threads > 1024 || dyn_smem > EMU_SMEM) emu_fail("bad launch");
    stacks.resize(stack * threads);
    emu_body = body, emu_params = params, emu_dyn_smem = dyn_smem, emu_nthreads = threads;
    blockDim = {threads, 1, 1}, gridDim = {grid[0], grid[1], grid[2]};
    for (blockIdx.z = 0; blockIdx.z < grid[2]; ++blockIdx.z)
        for (blockIdx.y = 0; blockIdx.y < grid[1]; ++blockIdx.y)
            for (blockIdx.x = 0; blockIdx.x < grid[0]; ++blockIdx.x) {
                memset(smem, 0xff, sizeof smem);
                if (__start_emu_shared != __stop_emu_shared)
                    memset(__start_emu_shared, 0xff, __stop_emu_shared - __start_emu_shared);
                emu_thr.assign(threads, emu_thread());
                for (unsigned i = 0; i < threads; ++i) {
                    emu_thread &t = emu_thr[i];
                    getcontext(&t.ctx);
                    t.ctx.uc_stack.ss_sp = &stacks[i * stack];
                    t.ctx.uc_stack.ss_size = stack;
                    t.ctx.uc_link = nullptr;
                    makecontext(&t.ctx, emu_entry, 0);
                }
                for (int live = threads; live > 0;) {
                    live = 0;
                    for (unsigned i = 0; i < threads; ++i) {
                        if (emu_thr[i].done) continue;
                        emu_cur = i;
                        threadIdx.x = i;
                        swapcontext(&emu_main, &emu_thr[i].ctx);
                        live += !emu_thr[i].done;
                    }
                }
            }
}

#endif /* FMQA_CUDA_EMU_H */
