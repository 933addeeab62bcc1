/*
 * fmqa_device.cuh -- device helpers shared by the kernel templates, built on
 * the instruction layer fmqa_ptx.cuh: 16-bit float conversions, 8-bit KV (int8,
 * fp8 e4m3) -> f16/bf16 pairs, f32 -> fp8 e4m3 encoding, the Q and O fragment
 * permutations that go with 8-bit pairs, staging Q rows in shared memory
 * (load_q_rows), and quad reductions.
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
 * register at once, giving the pairs (b0, b2) and (b1, b3) (the pairing a V
 * fragment needs: see the fragment notes in decode.cuh), or with ADJ = 1 the
 * adjacent pairs (b0, b1) and (b2, b3) (a K fragment may take either, its Q
 * permuted to match: q_chunk_to_mma; native fp8 then needs no byte move).  fp8 uses the native
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
 * 1024 + x + 128 (the byte 0x64 taken from INT8_F16_BIAS, a register a caller
 * that also multiplies by 1152 keeps anyway).  A caller that can fold the offset elsewhere (decode's S =
 * Q K^T: Q . 1152 per row; O: the A operands times 1152) saves the
 * subtraction.  ADJ: pairs (b0, b1), (b2, b3). */
template <int ADJ = 0> FMQA_DEV void int8x4_to_f16_biased(u32 r, u32 &p02, u32 &p13) {
    const u32 u = r ^ 0x80808080u;
    p02 = prmt(u, INT8_F16_BIAS, ADJ ? 0x5150u : 0x5250u);
    p13 = prmt(u, INT8_F16_BIAS, ADJ ? 0x5352u : 0x5351u);
}

/* int8 bytes -> f16 pairs, exact: the biased pairs minus 1152. */
template <int ADJ = 0> FMQA_DEV void int8x4_to_f16(u32 r, u32 &p02, u32 &p13) {
    int8x4_to_f16_biased<ADJ>(r, p02, p13);
    p02 = sub_f16x2(p02, INT8_F16_BIAS);
    p13 = sub_f16x2(p13, INT8_F16_BIAS);
}

#if FMQA_FP8_NATIVE
/* fp8 e4m3 bytes -> f16 pairs, exact: (b0, b2) and (b1, b3) gathered into the
 * two halves of one register, one cvt each; ADJ: the halves as they are. */
template <int ADJ = 0> FMQA_DEV void fp8x4_to_f16(u32 r, u32 &p02, u32 &p13) {
    const u32 s = ADJ ? r : prmt(r, 0u, 0x3120u); /* bytes b0 b2 b1 b3 */
    p02 = cvt_f16x2_e4m3x2<0>(s);
    p13 = cvt_f16x2_e4m3x2<1>(s);
}
#else
/* fp8 e4m3 bytes -> f16 pairs holding value * 2^-8: byte x becomes the f16 bits
 * sign(x) << 15 | (x & 0x7f) << 7. */
FMQA_DEV u32 fp8_pair_bits(u32 hi_bytes /* x << 8 in each half */) {
    return (hi_bytes & 0x80008000u) | ((hi_bytes >> 1) & 0x3f803f80u);
}
template <int ADJ = 0> FMQA_DEV void fp8x4_to_f16(u32 r, u32 &p02, u32 &p13) {
    p02 = fp8_pair_bits(prmt(r, 0u, ADJ ? 0x1404u : 0x2404u));
    p13 = fp8_pair_bits(prmt(r, 0u, ADJ ? 0x3424u : 0x3414u));
}
#endif

/* Four stored bytes -> the pairs (b0, b2) and (b1, b3) (ADJ: (b0, b1) and
 * (b2, b3)) as 16-bit floats of the mma type.  FMT: 2 int8, 3 fp8 e4m3 (times
 * 2^-8 / FP8_F16_FOLD). */
template <int FMT, int BF16, int ADJ = 0> FMQA_DEV void q8x4_to_pairs(u32 r, u32 &p02, u32 &p13) {
    if (FMT == 2)
        int8x4_to_f16<ADJ>(r, p02, p13);
    else
        fp8x4_to_f16<ADJ>(r, p02, p13);
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

/* ---------------------------------------------------------------- fragments */

/* Two 16-byte loads of Q (16 elements, pairs low first) of type QB (1 bf16)
 * as the mma type MB, into the two 16-byte halves a shared-memory Q row chunk
 * holds.  K8 = 1: the chunk faces an 8-bit K read as byte pairs (b0, b2),
 * (b1, b3) (q8x4_to_pairs), so logical column l holds physical column 2l (l <
 * 8) or 2(l - 8) + 1: the even and the odd halves of the pairs, gathered with
 * prmt (decode.cuh, "Fragments").  K8 = 2: K read as adjacent pairs (ADJ), so
 * logical pair j holds physical pair 2j (j < 4) or 2(j - 4) + 1: whole
 * registers moved. */
template <int QB, int MB, int K8>
FMQA_DEV void q_chunk_to_mma(const u32 (&w)[2][4], uint4 &lo, uint4 &hi) {
    u32 x[8];
#pragma unroll
    for (int j = 0; j < 8; ++j) {
        x[j] = w[j / 4][j % 4];
        if (QB != MB)
            x[j] = pack2<MB>(h_to_f32<QB>((u16)(x[j] & 0xffff)), h_to_f32<QB>((u16)(x[j] >> 16)));
    }
    if (!K8) {
        lo.x = x[0], lo.y = x[1], lo.z = x[2], lo.w = x[3];
        hi.x = x[4], hi.y = x[5], hi.z = x[6], hi.w = x[7];
    } else if (K8 == 2) {
        lo.x = x[0], lo.y = x[2], lo.z = x[4], lo.w = x[6];
        hi.x = x[1], hi.y = x[3], hi.z = x[5], hi.w = x[7];
    } else {
        lo.x = prmt(x[0], x[1], 0x5410u), lo.y = prmt(x[2], x[3], 0x5410u);
        lo.z = prmt(x[4], x[5], 0x5410u), lo.w = prmt(x[6], x[7], 0x5410u);
        hi.x = prmt(x[0], x[1], 0x7632u), hi.y = prmt(x[2], x[3], 0x7632u);
        hi.z = prmt(x[4], x[5], 0x7632u), hi.w = prmt(x[6], x[7], 0x7632u);
    }
}

/* The Q rows of a CTA into shared memory as the mma type, for every template
 * that stages Q (decode, mla_decode, prefill).  ROWS rows of D columns, QRB
 * bytes a shared row; q_row(r) gives row r's first element in global memory
 * (r in [0, ROWS)), or nullptr for a padding row (stored as zeros).  The
 * NTHREADS threads take 16-column chunks, two 16-byte non-coherent loads
 * each, all of a thread's loads issued before any is used (one round trip);
 * q_chunk_to_mma converts and, K8, permutes each chunk. */
template <int QB, int MB, int K8, int D, int ROWS, int NTHREADS, int QRB, class QRow>
FMQA_DEV void load_q_rows(unsigned char *qs, QRow q_row) {
    constexpr int CH = D / 16, CHUNKS = ROWS * CH, QPER = (CHUNKS + NTHREADS - 1) / NTHREADS;
    u32 w[QPER][2][4];
#pragma unroll
    for (int k = 0; k < QPER; ++k) {
        const int i = threadIdx.x + k * NTHREADS;
        const u16 *q = i < CHUNKS ? q_row(i / CH) : nullptr;
        if (q) {
            ld_nc_v4(w[k][0], q + 16 * (i % CH));
            ld_nc_v4(w[k][1], q + 16 * (i % CH) + 8);
        } else {
#pragma unroll
            for (int j = 0; j < 8; ++j) w[k][j / 4][j % 4] = 0u;
        }
    }
#pragma unroll
    for (int k = 0; k < QPER; ++k) {
        const int i = threadIdx.x + k * NTHREADS;
        if (i >= CHUNKS) break;
        uint4 lo, hi;
        q_chunk_to_mma<QB, MB, K8>(w[k], lo, hi);
        uint4 *dst = (uint4 *)(qs + (i / CH) * QRB + (i % CH) * 32);
        dst[0] = lo;
        dst[1] = hi;
    }
}

/* Column u of O d-tile nt is head-dim element o_col<K8>(nt, u): with an 8-bit
 * V read as byte pairs, d-tile nt holds d = 16 (nt / 2) + 2u + nt % 2. */
template <int K8> FMQA_DEV int o_col(int nt, int u) { return K8 ? 16 * (nt >> 1) + 2 * u + (nt & 1) : 8 * nt + u; }

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

/* x, as a value ptxas cannot recompute (a shuffle from the lane itself): it
 * stays in a register.  For per-thread constants of a loop (addresses from
 * the thread index) that ptxas, short of registers, would otherwise rebuild
 * every iteration at a cost of several instructions; one SHFL at setup. */
FMQA_DEV u32 kept(u32 x) { return __float_as_uint(shfl_xor(__uint_as_float(x), 0)); }

/* ---------------------------------------------------------------- softmax transforms */

constexpr float LOG2E = 1.4426950408889634f;

/* tanh(y) given u = 2 y log2(e), as 1 - 2 / (2^u + 1) with ex2.approx: the
 * absolute error stays within a few float ulps of 1 over the whole range (2^u
 * = inf gives 1, 0 gives -1), where tanh.approx.f32 has a relative error of
 * about 2^-11, i.e. up to cap * 2^-11 on a capped score (docs/reference.md). */
FMQA_DEV float tanh_from_ex2(float u) { return 1.0f - 2.0f / (ex2(u) + 1.0f); }

/* The end of one softmax row: running maximum m and sum l (base 2; l = 0: the
 * row saw nothing), and a learned sink logit s2 (base 2, -inf = none) that
 * joins the denominator and carries no value.  inv normalises the row's O;
 * lse2 = log2(sink + sum), -inf for an empty row without a sink.  With s2 =
 * -inf this is exactly inv = 1 / l, lse2 = m + log2(l). */
FMQA_DEV void softmax_finish(float m, float l, float s2, float &inv, float &lse2) {
    const float mm = fmaxf(m, s2), base = mm == neg_inf() ? 0.0f : mm;
    const float a = l > 0.0f ? ex2(m - base) : 0.0f;
    const float den = l * a + ex2(s2 - base);
    inv = den > 0.0f ? a / den : 0.0f;
    lse2 = den > 0.0f ? base + __log2f(den) : neg_inf();
}

#undef FMQA_DEV

} /* namespace fmqa_dev */

#endif /* FMQA_DEVICE_CUH */
