/*
 * fmqa_device.cuh -- device helpers shared by the kernel templates: 16-bit float
 * conversions, 8-bit KV (int8, fp8 e4m3) -> f16/bf16 pairs, cp.async, ldmatrix,
 * mma.sync m16n8k16, exp2 and quad reductions.
 *
 * Everything is inline PTX so that a template needs no CUDA header (NVRTC
 * compiles faster and the identity hash covers all the code).  Needs sm_80+.
 * 16-bit floats travel as raw bits (unsigned short, or pairs in an unsigned
 * int with the lower-indexed element in the low half, as mma fragments want).
 *
 * 8-bit conversion is exact and works on four stored bytes b0..b3 of a 32-bit
 * register at once, giving the pairs (b0, b2) and (b1, b3): that is the pairing
 * decode.cuh needs (see the fragment notes there).  fp8 is decoded by moving its
 * bits into an f16 (exponent bias 7 -> 15), which yields value * 2^-8 exactly,
 * subnormals included; callers fold FP8_F16_FOLD (= 256) into their scales.
 */
#ifndef FMQA_DEVICE_CUH
#define FMQA_DEVICE_CUH

namespace fmqa_dev {

typedef unsigned int u32;
typedef unsigned short u16;

#define FMQA_DEV __device__ __forceinline__

/* The fp8 -> f16 bit move divides by 2^8; multiply it back through scales. */
constexpr float FP8_F16_FOLD = 256.0f;

FMQA_DEV float neg_inf() { return __int_as_float(0xff800000); }

/* ---------------------------------------------------------------- 16-bit floats */

FMQA_DEV float f16_to_f32(u16 h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}
FMQA_DEV float bf16_to_f32(u16 h) { return __uint_as_float((u32)h << 16); }
/* Raw 16-bit value of dtype BF16 (1) or f16 (0) to float. */
template <int BF16> FMQA_DEV float h_to_f32(u16 h) { return BF16 ? bf16_to_f32(h) : f16_to_f32(h); }

template <int BF16> FMQA_DEV u16 f32_to_h(float f) {
    u16 h;
    if (BF16)
        asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h) : "f"(f));
    else
        asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}

/* Packs (lo, hi) into one register, lo in the low half, round to nearest. */
template <int BF16> FMQA_DEV u32 pack2(float lo, float hi) {
    u32 r;
    if (BF16)
        asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    else
        asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}

/* f16 pair -> bf16 pair (exact for the 8-bit-derived values it is used on). */
FMQA_DEV u32 f16x2_to_bf16x2(u32 x) {
    return pack2<1>(f16_to_f32((u16)(x & 0xffff)), f16_to_f32((u16)(x >> 16)));
}

/* ---------------------------------------------------------------- 8-bit KV */

FMQA_DEV u32 prmt(u32 a, u32 b, u32 sel) {
    u32 r;
    asm("prmt.b32 %0, %1, %2, %3;" : "=r"(r) : "r"(a), "r"(b), "r"(sel));
    return r;
}

/* int8 bytes -> f16 pairs: 0x6400 | (x ^ 0x80) is the f16 1024 + x + 128. */
FMQA_DEV void int8x4_to_f16(u32 r, u32 &p02, u32 &p13) {
    const u32 u = r ^ 0x80808080u;
    const u32 magic = 0x64806480u; /* (1152, 1152) */
    u32 a = prmt(u, 0x64646464u, 0x4240u), b = prmt(u, 0x64646464u, 0x4341u);
    asm("sub.f16x2 %0, %1, %2;" : "=r"(p02) : "r"(a), "r"(magic));
    asm("sub.f16x2 %0, %1, %2;" : "=r"(p13) : "r"(b), "r"(magic));
}

/* fp8 e4m3 bytes -> f16 pairs holding value * 2^-8: byte x becomes the f16 bits
 * sign(x) << 15 | (x & 0x7f) << 7. */
FMQA_DEV u32 fp8_pair_bits(u32 hi_bytes /* x << 8 in each half */) {
    return (hi_bytes & 0x80008000u) | ((hi_bytes >> 1) & 0x3f803f80u);
}
FMQA_DEV void fp8x4_to_f16(u32 r, u32 &p02, u32 &p13) {
    p02 = fp8_pair_bits(prmt(r, 0u, 0x2404u));
    p13 = fp8_pair_bits(prmt(r, 0u, 0x3414u));
}

/* Four stored bytes -> the pairs (b0, b2) and (b1, b3) as 16-bit floats of the
 * mma type.  FMT: 2 int8, 3 fp8 e4m3 (times 2^-8). */
template <int FMT, int BF16> FMQA_DEV void q8x4_to_pairs(u32 r, u32 &p02, u32 &p13) {
    if (FMT == 2)
        int8x4_to_f16(r, p02, p13);
    else
        fp8x4_to_f16(r, p02, p13);
    if (BF16) {
        p02 = f16x2_to_bf16x2(p02);
        p13 = f16x2_to_bf16x2(p13);
    }
}

/* ---------------------------------------------------------------- memory */

FMQA_DEV u32 smem_addr(const void *p) {
    u32 r;
    asm("{ .reg .u64 a; cvta.to.shared.u64 a, %1; cvt.u32.u64 %0, a; }" : "=r"(r) : "l"(p));
    return r;
}

/* 16-byte global -> shared copy; src_bytes 0 writes zeros (src must still be a
 * valid address). */
FMQA_DEV void cp_async16(u32 dst, const void *src, int src_bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(dst), "l"(src), "r"(src_bytes));
}
FMQA_DEV void cp_async4(u32 dst, const void *src, int src_bytes) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;" ::"r"(dst), "l"(src), "r"(src_bytes));
}
/* 16 bytes from global memory through the read-only path (p 16-byte aligned;
 * the data must not change while the kernel runs). */
FMQA_DEV void ld_nc_v4(u32 (&r)[4], const void *p) {
    asm("ld.global.nc.v4.u32 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "l"(p));
}
FMQA_DEV void cp_async_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
template <int N> FMQA_DEV void cp_async_wait() { asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory"); }

/* ldmatrix: lane l gives the row address for matrix l / 8 (x4: lanes 0-31,
 * x2: lanes 0-15).  Non-transposed, thread i receives row i/4, 16-bit columns
 * 2(i%4), 2(i%4)+1; transposed, rows 2(i%4), 2(i%4)+1 of column i/4. */
FMQA_DEV void ldsm_x4(u32 (&r)[4], u32 addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr));
}
FMQA_DEV void ldsm_x4_t(u32 (&r)[4], u32 addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr));
}
FMQA_DEV void ldsm_x2(u32 (&r)[2], u32 addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];" : "=r"(r[0]), "=r"(r[1]) : "r"(addr));
}
FMQA_DEV void ldsm_x2_t(u32 (&r)[2], u32 addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];"
                 : "=r"(r[0]), "=r"(r[1]) : "r"(addr));
}

/* ---------------------------------------------------------------- mma */

/* c += a * b, m16n8k16, f32 accumulate.  With g = lane/4, q = lane%4:
 *   a[0]: (row g, k 2q..2q+1)   a[1]: (row g+8, k 2q..)   a[2]: (row g, k 2q+8..)
 *   a[3]: (row g+8, k 2q+8..)   b0: (k 2q..2q+1, col g)   b1: (k 2q+8.., col g)
 *   c[0..1]: (row g, cols 2q, 2q+1)   c[2..3]: (row g+8, same cols). */
template <int BF16> FMQA_DEV void mma16816(float (&c)[4], const u32 (&a)[4], u32 b0, u32 b1) {
    if (BF16)
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, "
                     "{%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                     : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    else
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, "
                     "{%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                     : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/* ---------------------------------------------------------------- math */

/* 2^x; 2^-inf = 0. */
FMQA_DEV float ex2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

/* Reductions over the 4 lanes of a quad (lanes sharing lane / 4). */
FMQA_DEV float quad_max(float x) {
    x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
    return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
}
FMQA_DEV float quad_sum(float x) {
    x += __shfl_xor_sync(0xffffffffu, x, 1);
    return x + __shfl_xor_sync(0xffffffffu, x, 2);
}

#undef FMQA_DEV

} /* namespace fmqa_dev */

#endif /* FMQA_DEVICE_CUH */
