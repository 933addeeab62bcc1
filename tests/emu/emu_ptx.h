/*
 * emu_ptx.h -- the CPU emulator's model of templates/fmqa_ptx.cuh: the same
 * functions, each doing what its one PTX instruction does by the PTX ISA
 * (fragment layouts, rounding modes, saturation, zero fill), written from the
 * ISA and the number formats rather than from the device code, so that the two
 * check each other.  Included by cuda_emu.h (threads, warps and shared memory
 * are there); defines FMQA_PTX_CUH so that the template's own instruction layer
 * is skipped and fmqa_device.cuh compiles on top of this one.
 *
 * Not modelled, and refused: anything not declared here (a compile error),
 * the sm_89+ fp8 conversions when __CUDA_ARCH__ < 890 (a compile error, as
 * ptxas would give), cp.async sizes other than the copy size or 0, unaligned
 * ldmatrix rows or cp.async destinations, shared addresses outside the launch's
 * dynamic size (an abort with a message).  Rounding that the hardware leaves
 * approximate (ex2.approx) uses the host's exact function; mma accumulates in
 * double and rounds once (the hardware's internal order is unspecified).
 */
#ifndef FMQA_EMU_PTX_H
#define FMQA_EMU_PTX_H
#define FMQA_PTX_CUH /* this file replaces templates/fmqa_ptx.cuh */

namespace fmqa_dev {

typedef unsigned int u32;
typedef unsigned short u16;

/* ------------------------------------------------------------ number formats */

/* IEEE binary16 and bfloat16 bits -> double, and f32 -> bits rounded to
 * nearest even (overflow to inf, NaN kept quiet). */
inline double emu_f16_value(u16 h) {
    const int e = (h >> 10) & 31, m = h & 1023;
    const double v = e == 0 ? ldexp(m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexp(m | 1024, e - 25);
    return h & 0x8000 ? -v : v;
}
inline double emu_bf16_value(u16 h) { return __uint_as_float((u32)h << 16); }
inline u16 emu_f16_bits(float f) { return __builtin_bit_cast(u16, (_Float16)f); }
inline u16 emu_bf16_bits(float f) {
    u32 u;
    memcpy(&u, &f, 4);
    if (std::isnan(f)) return (u16)((u >> 16) | 0x40);
    u += 0x7fff + ((u >> 16) & 1);
    return (u16)(u >> 16);
}
template <int BF16> inline double emu_h_value(u16 h) { return BF16 ? emu_bf16_value(h) : emu_f16_value(h); }

/* ------------------------------------------------------------ special registers */

inline u32 dynamic_smem_size() { return emu_dyn_smem; }

inline u32 smem_addr(const void *p) {
    const long off = (const unsigned char *)p - smem;
    if (off < 0 || off > EMU_SMEM) emu_fail("cvta.to.shared of a non-shared pointer");
    return (u32)off;
}
inline unsigned char *emu_at(u32 addr, int n) {
    if (addr + n > emu_dyn_smem) emu_fail("shared access beyond the dynamic size");
    return smem + addr;
}

/* ------------------------------------------------------------ conversions */

inline float f16_to_f32(u16 h) { return (float)emu_f16_value(h); }
template <int BF16> inline u16 f32_to_h(float f) { return BF16 ? emu_bf16_bits(f) : emu_f16_bits(f); }
template <int BF16> inline u32 cvt_rn_x2_f32(float a, float b) {
    return (u32)f32_to_h<BF16>(a) << 16 | f32_to_h<BF16>(b);
}

#if __CUDA_ARCH__ >= 890
/* e4m3: bias 7, no infinities, S.1111.111 is NaN, subnormal spacing 2^-9. */
inline u16 emu_e4m3_to_f16(unsigned char x) {
    const int e = (x >> 3) & 15, m = x & 7;
    double v = e == 0 ? ldexp(m, -9) : ldexp(8 + m, e - 10);
    if (e == 15 && m == 7) v = NAN;
    return emu_f16_bits((float)(x & 0x80 ? -v : v)); /* exact: f16 holds every e4m3 value */
}
template <int HI> inline u32 cvt_f16x2_e4m3x2(u32 x) {
    const u32 a = HI ? x >> 16 : x & 0xffffu;
    return (u32)emu_e4m3_to_f16((unsigned char)(a >> 8)) << 16 | emu_e4m3_to_f16((unsigned char)a);
}
/* .rn.satfinite: nearest even; beyond the largest finite (448 = S.1111.110),
 * infinities included, the largest finite of that sign; NaN -> 0x7f. */
inline unsigned char emu_f32_to_e4m3(float x) {
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
inline u16 cvt_e4m3x2_f32(float a, float b) { return (u16)(emu_f32_to_e4m3(a) << 8 | emu_f32_to_e4m3(b)); }
#endif

/* prmt.b32 default mode: selector nibble i picks byte (nibble & 7) of {b, a};
 * nibble bit 3 replicates that byte's sign. */
inline u32 prmt(u32 a, u32 b, u32 c) {
    const unsigned long long x = (unsigned long long)b << 32 | a;
    u32 r = 0;
    for (int i = 0; i < 4; ++i) {
        const int s = (c >> (4 * i)) & 15;
        u32 byte = (x >> (8 * (s & 7))) & 0xff;
        if (s & 8) byte = byte & 0x80 ? 0xff : 0;
        r |= byte << (8 * i);
    }
    return r;
}
/* sub.rn.f16x2: the f16 difference of each half, rounded once (double holds
 * it exactly). */
inline u32 sub_f16x2(u32 a, u32 b) {
    const double lo = emu_f16_value(a & 0xffff) - emu_f16_value(b & 0xffff);
    const double hi = emu_f16_value(a >> 16) - emu_f16_value(b >> 16);
    return (u32)emu_f16_bits((float)hi) << 16 | emu_f16_bits((float)lo);
}

/* ------------------------------------------------------------ math, shuffles */

/* ex2.approx.ftz.f32: subnormal inputs and results flush to (signed) zero. */
inline float ex2(float x) {
    if (std::fpclassify(x) == FP_SUBNORMAL) x = 0.0f;
    const float y = exp2f(x);
    return std::fpclassify(y) == FP_SUBNORMAL ? 0.0f : y;
}

/* shfl.sync.bfly.b32 with c = 0x1f (one 32-lane segment): lane ^ lanemask,
 * which must be in membermask (undefined on the GPU: an error here). */
inline float shfl_xor(float x, int lanemask, u32 membermask = 0xffffffffu) {
    const int src = (threadIdx.x & 31) ^ (lanemask & 31);
    emu_my().f = x;
    emu_enter(1, membermask);
    if (!(membermask >> src & 1)) emu_fail("shuffle from a lane outside the mask");
    const float r = emu_lane(src).f;
    emu_leave(membermask);
    return r;
}

/* vote.sync.any.pred: every lane of membermask gets the OR of their
 * predicates; the caller must be in membermask. */
inline int vote_any(int pred, u32 membermask = 0xffffffffu) {
    emu_my().a[0] = pred != 0;
    emu_enter(2, membermask);
    int r = 0;
    for (int l = 0; l < 32; ++l)
        if (membermask >> l & 1) r |= emu_lane(l).a[0];
    emu_leave(membermask);
    return r;
}

/* ------------------------------------------------------------ memory */

/* ld.global.nc.v4.u32: a 16-byte load; the address must be 16-byte aligned
 * (a misaligned vector access faults on the GPU). */
inline void ld_nc_v4(u32 (&r)[4], const void *p) {
    if ((uintptr_t)p % 16) emu_fail("misaligned ld.global.nc.v4");
    memcpy(r, p, 16);
}

inline void emu_cp(u32 dst, const void *src, int n, int total) {
    if (dst % total) emu_fail("misaligned cp.async destination");
    if ((uintptr_t)src % total) emu_fail("misaligned cp.async source");
    if (n != 0 && n != total) emu_fail("cp.async src-size other than 0 or the copy size is not modelled");
    emu_thread &t = emu_thr[emu_cur];
    t.pending.push_back({dst, src, n, total, t.groups});
}
inline void cp_async16(u32 dst, const void *src, int n) { emu_cp(dst, src, n, 16); }
inline void cp_async4(u32 dst, const void *src, int n) { emu_cp(dst, src, n, 4); }
inline void cp_async_commit() { emu_thr[emu_cur].groups++; }
/* The copies of groups older than the N newest land now (reading the source
 * now: a source past its buffer faults here). */
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

/* ldmatrix m8n8 .b16: lane l gets, of matrix j (rows addressed by lanes
 * 8j..8j+7), the 32 bits at row l/4, byte 4(l%4); transposed, the 16-bit
 * elements (row 2(l%4), col l/4) and (row 2(l%4)+1, col l/4).  Lanes past 8 NM
 * give no address. */
template <int NM, int TRANS> inline void emu_ldsm(u32 *r, u32 addr) {
    const int l = threadIdx.x & 31;
    if (l < 8 * NM && addr % 16) emu_fail("misaligned ldmatrix row");
    emu_my().addr = addr;
    emu_enter(10 + NM * 2 + TRANS);
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
inline void ldsm_x1(u32 (&r)[1], u32 addr) { emu_ldsm<1, 0>(r, addr); }
inline void ldsm_x1_t(u32 (&r)[1], u32 addr) { emu_ldsm<1, 1>(r, addr); }
inline void ldsm_x2(u32 (&r)[2], u32 addr) { emu_ldsm<2, 0>(r, addr); }
inline void ldsm_x2_t(u32 (&r)[2], u32 addr) { emu_ldsm<2, 1>(r, addr); }
inline void ldsm_x4(u32 (&r)[4], u32 addr) { emu_ldsm<4, 0>(r, addr); }
inline void ldsm_x4_t(u32 (&r)[4], u32 addr) { emu_ldsm<4, 1>(r, addr); }

/* ------------------------------------------------------------ mma */

/* mma.sync.m16n8k16.row.col.f32.{f16,bf16}: fragments as in the PTX ISA
 * (groupID g = lane/4, q = lane%4). */
template <int BF16> inline double emu_half(u32 reg, int hi) { return emu_h_value<BF16>((u16)(hi ? reg >> 16 : reg)); }
template <int BF16> inline void mma16816(float (&c)[4], const u32 (&a)[4], u32 b0, u32 b1) {
    emu_slot &me = emu_my();
    for (int i = 0; i < 4; ++i) me.a[i] = a[i], me.c[i] = c[i];
    me.b[0] = b0, me.b[1] = b1;
    emu_enter(20 + BF16);
    double A[16][16], B[16][8];
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
        for (int k = 0; k < 16; ++k) acc += A[row][k] * B[k][col];
        d[i] = (float)acc;
    }
    emu_leave();
    for (int i = 0; i < 4; ++i) c[i] = d[i];
}

} /* namespace fmqa_dev */

#endif /* FMQA_EMU_PTX_H */
