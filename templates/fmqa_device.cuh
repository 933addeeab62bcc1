/*
 * fmqa_device.cuh -- device helpers shared by the kernel templates, built on
 * the instruction layer fmqa_ptx.cuh: 16-bit float conversions, 8-bit KV (int8,
 * fp8 e4m3) -> f16/bf16 pairs, f32 -> fp8 e4m3 encoding, the query and output
 * column orders of the mma operands, and quad reductions.
 *
 * Nothing here is inline asm: NVRTC and the CPU emulator (tests/emu) compile
 * this file from the same source, the emulator replacing only fmqa_ptx.cuh by
 * its model of each instruction, so the logic below is what the CPU tests run.
 * A template needs no CUDA header (NVRTC compiles faster and the identity hash
 * covers all the code).  Needs sm_80+.  16-bit floats travel as raw bits
 * (unsigned short, or pairs in an unsigned int with the lower-indexed element
 * in the low half, as mma fragments want).
 *
 * 8-bit conversion is exact and works on four stored bytes b0..b3 of a 32-bit
 * register at once, giving the pairs (b0, b2) and (b1, b3): that is the pairing
 * decode.cuh needs (see the fragment notes there).  fp8 uses the native
 * cvt.rn.f16x2.e4m3x2 on sm_89+ (exact values); sm_80/86 move its bits into an
 * f16 (exponent bias 7 -> 15), which yields value * 2^-8 exactly, subnormals
 * included.  Callers fold FP8_F16_FOLD (256 on sm_80/86, 1 on sm_89+) into
 * their scales.
 */
#ifndef FMQA_DEVICE_CUH
#define FMQA_DEVICE_CUH

#include "fmqa_ptx.cuh"

namespace fmqa_dev {

#define FMQA_DEV __device__ __forceinline__

#if __CUDA_ARCH__ >= 890
#define FMQA_FP8_NATIVE 1
#else
#define FMQA_FP8_NATIVE 0
#endif

/* What the fp8 -> f16 conversion divides by; multiply it back through scales. */
constexpr float FP8_F16_FOLD = FMQA_FP8_NATIVE ? 1.0f : 256.0f;

FMQA_DEV float neg_inf() { return __int_as_float(0xff800000); }

/* ---------------------------------------------------------------- 16-bit floats */

FMQA_DEV float bf16_to_f32(u16 h) { return __uint_as_float((u32)h << 16); }
/* Raw 16-bit value of dtype BF16 (1) or f16 (0) to float. */
template <int BF16> FMQA_DEV float h_to_f32(u16 h) { return BF16 ? bf16_to_f32(h) : f16_to_f32(h); }

/* Packs (lo, hi) into one register, lo in the low half, round to nearest. */
template <int BF16> FMQA_DEV u32 pack2(float lo, float hi) { return cvt_rn_x2_f32<BF16>(hi, lo); }

/* f16 pair -> bf16 pair (exact for the 8-bit-derived values it is used on). */
FMQA_DEV u32 f16x2_to_bf16x2(u32 x) {
    return pack2<1>(f16_to_f32((u16)(x & 0xffff)), f16_to_f32((u16)(x >> 16)));
}

/* ---------------------------------------------------------------- 8-bit KV */

/* The f16 pair (1152, 1152): what int8x4_to_f16_biased adds to each value. */
constexpr u32 INT8_F16_BIAS = 0x64806480u;

/* int8 bytes -> f16 pairs of 1152 + x, exact: 0x6400 | (x ^ 0x80) is the f16
 * 1024 + x + 128.  A caller that can fold the offset elsewhere (decode's S =
 * Q K^T: Q . 1152 per row) saves the subtraction. */
FMQA_DEV void int8x4_to_f16_biased(u32 r, u32 &p02, u32 &p13) {
    const u32 u = r ^ 0x80808080u;
    p02 = prmt(u, 0x64646464u, 0x4240u);
    p13 = prmt(u, 0x64646464u, 0x4341u);
}

/* int8 bytes -> f16 pairs, exact: the biased pairs minus 1152. */
FMQA_DEV void int8x4_to_f16(u32 r, u32 &p02, u32 &p13) {
    int8x4_to_f16_biased(r, p02, p13);
    p02 = sub_f16x2(p02, INT8_F16_BIAS);
    p13 = sub_f16x2(p13, INT8_F16_BIAS);
}

#if FMQA_FP8_NATIVE
/* fp8 e4m3 bytes -> f16 pairs, exact: (b0, b2) and (b1, b3) gathered into the
 * two halves of one register, one cvt each. */
FMQA_DEV void fp8x4_to_f16(u32 r, u32 &p02, u32 &p13) {
    const u32 s = prmt(r, 0u, 0x3120u); /* bytes b0 b2 b1 b3 */
    p02 = cvt_f16x2_e4m3x2<0>(s);
    p13 = cvt_f16x2_e4m3x2<1>(s);
}
#else
/* fp8 e4m3 bytes -> f16 pairs holding value * 2^-8: byte x becomes the f16 bits
 * sign(x) << 15 | (x & 0x7f) << 7. */
FMQA_DEV u32 fp8_pair_bits(u32 hi_bytes /* x << 8 in each half */) {
    return (hi_bytes & 0x80008000u) | ((hi_bytes >> 1) & 0x3f803f80u);
}
FMQA_DEV void fp8x4_to_f16(u32 r, u32 &p02, u32 &p13) {
    p02 = fp8_pair_bits(prmt(r, 0u, 0x2404u));
    p13 = fp8_pair_bits(prmt(r, 0u, 0x3414u));
}
#endif

/* Four stored bytes -> the pairs (b0, b2) and (b1, b3) as 16-bit floats of the
 * mma type.  FMT: 2 int8, 3 fp8 e4m3 (times 2^-8 / FP8_F16_FOLD). */
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

/* f32 -> fp8 e4m3 code: round to nearest even, +-448 beyond (also for inf),
 * NaN -> 0x7f.  sm_89+ has the instruction; sm_80/86 round the mantissa by
 * hand: keep 3 bits (normal) or the multiples of 2^-9 (subnormal). */
FMQA_DEV unsigned char f32_to_e4m3(float x) {
#if FMQA_FP8_NATIVE
    return (unsigned char)(cvt_e4m3x2_f32(0.0f, x) & 0xff);
#else
    const u32 u = __float_as_uint(x), a = u & 0x7fffffffu, sign = (u >> 24) & 0x80u;
    if (a > 0x7f800000u) return 0x7f;
    if (a >= 0x43e00000u) return (unsigned char)(sign | 0x7e); /* >= 448 */
    const int e = (int)(a >> 23) - 127;
    const u32 m = (a & 0x7fffffu) | 0x800000u; /* 1.f * 2^23 (a float subnormal rounds to 0 anyway) */
    const int shift = e < -6 ? 14 - e : 20;    /* keep value * 2^9 (subnormal) or 1.mmm */
    if (shift > 24) return (unsigned char)sign; /* below 2^-10: rounds to 0 */
    u32 q = m >> shift;
    const u32 rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
    q += rem > half || (rem == half && (q & 1));
    if (e < -6) return (unsigned char)(sign | q); /* 8 = the least normal, coded alike */
    return (unsigned char)(sign | (q == 16 ? (u32)(e + 8) << 3 : (u32)(e + 7) << 3 | (q - 8)));
#endif
}

/* ---------------------------------------------------------------- mma operands */

/* One 16-column chunk of a query row, as loaded (eight registers of 16-bit
 * pairs, bf16 when SRC_BF16), to the two 16-byte halves of its shared-memory chunk as
 * the mma type (bf16 when DST_BF16).  Against an 8-bit cache (PERM) logical column l of the
 * chunk holds physical column 2l (l < 8) or 2(l - 8) + 1: the even and odd
 * halves of the pairs, gathered with prmt, so that the logical k order of a
 * K operand made by q8x4_to_pairs (physical 4c, 4c+2, 4c+1, 4c+3) meets the
 * matching query columns. */
template <int SRC_BF16, int DST_BF16, int PERM> FMQA_DEV void q_chunk_to_mma(u32 (&x)[8], uint4 &lo, uint4 &hi) {
#pragma unroll
    for (int j = 0; j < 8; ++j)
        if (SRC_BF16 != DST_BF16)
            x[j] = pack2<DST_BF16>(h_to_f32<SRC_BF16>((u16)(x[j] & 0xffff)), h_to_f32<SRC_BF16>((u16)(x[j] >> 16)));
    if (!PERM) {
        lo.x = x[0], lo.y = x[1], lo.z = x[2], lo.w = x[3];
        hi.x = x[4], hi.y = x[5], hi.z = x[6], hi.w = x[7];
    } else {
        lo.x = prmt(x[0], x[1], 0x5410u), lo.y = prmt(x[2], x[3], 0x5410u);
        lo.z = prmt(x[4], x[5], 0x5410u), lo.w = prmt(x[6], x[7], 0x5410u);
        hi.x = prmt(x[0], x[1], 0x7632u), hi.y = prmt(x[2], x[3], 0x7632u);
        hi.z = prmt(x[4], x[5], 0x7632u), hi.w = prmt(x[6], x[7], 0x7632u);
    }
}

/* Column u (0..7) of accumulator n-tile nt of P V is value column pv_col(nt,
 * u): V from ldmatrix x4.trans of 16-bit rows gives 8 nt + u; V from x2.trans
 * of 8-bit rows (PERM; q8x4_to_pairs: the pair (b0, b2) of d = 2u, (b1, b3) of
 * d = 2u + 1 in each 16-column chunk) gives 16 (nt / 2) + 2u + nt % 2. */
template <int PERM> FMQA_DEV int pv_col(int nt, int u) { return PERM ? 16 * (nt >> 1) + 2 * u + (nt & 1) : 8 * nt + u; }

/* ---------------------------------------------------------------- reductions */

/* Reductions over the 4 lanes of a quad (lanes sharing lane / 4). */
FMQA_DEV float quad_max(float x) {
    x = fmaxf(x, shfl_xor(x, 1));
    return fmaxf(x, shfl_xor(x, 2));
}
FMQA_DEV float quad_sum(float x) {
    x += shfl_xor(x, 1);
    return x + shfl_xor(x, 2);
}

#undef FMQA_DEV

} /* namespace fmqa_dev */

#endif /* FMQA_DEVICE_CUH */
