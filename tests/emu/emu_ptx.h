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
 * the sm_89+ fp8 conversions when __CUDA_ARCH__ < 890 and the Hopper part
 * below 900 (wgmma, setmaxnreg: without __CUDA_ARCH_FEAT_SM90_ALL) (compile
 * errors, as ptxas would give), cp.async sizes other than the copy size or 0,
 * unaligned ldmatrix rows or cp.async destinations, shared addresses outside
 * the launch's dynamic size, and for Hopper: mbarrier misuse (use before init,
 * re-init, more arrivals than the count, tx out of range), copies on a
 * barrier whose init no fence published, bulk sizes or alignments the ISA
 * forbids, tensor maps the driver would reject, copies or wgmma still in
 * flight at CTA exit, wgmma without a wgmma.fence since the last wait, a
 * descriptor's base offset, wgmma whose operands or groups differ across the
 * warpgroup, reading an accumulator still pending, warpgroup instructions
 * not executed by all 128 threads (an abort with a message).  wgmma sums each
 * instruction's 16 products in double and rounds once, like mma.sync here.  Rounding that the hardware leaves
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

/* Named barriers 1..15: a count of arrivals per generation; every arrival
 * of one generation names the same thread count. */
struct emu_named_bar {
    int count, gen, n;
};
static emu_named_bar emu_nbar[16];
inline void emu_named(u32 id, u32 n, bool wait) {
    if (id == 0 || id > 15) emu_fail("named barrier id outside 1..15 (0 is __syncthreads's)");
    if (n == 0 || n % 32 || (int)n > emu_nthreads) emu_fail("named barrier count not a multiple of 32 up to the CTA");
    emu_named_bar &b = emu_nbar[id];
    if (b.count == 0) b.n = (int)n;
    else if (b.n != (int)n) emu_fail("named barrier: arrivals name different thread counts");
    const int g = b.gen;
    if (++b.count == b.n) {
        b.count = 0;
        b.gen++;
        emu_spins = 0;
    } else if (wait) {
        emu_block(&b.gen, g, "a named barrier (bar.sync)");
    }
}
inline void bar_sync(u32 id, u32 n) { emu_named(id, n, true); }
inline void bar_arrive(u32 id, u32 n) { emu_named(id, n, false); }

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

/* ------------------------------------------------------------ grid dependencies */

#if __CUDA_ARCH__ >= 900
/* griddepcontrol (sm_90+; absent below, as for ptxas).  The emulator runs
 * the grids of a stream one after another, each to its end (emu_grid), so a
 * dependent grid never launches early and every prerequisite grid has
 * completed, its memory visible, before a dependent one starts: wait has
 * nothing left to wait for and launch_dependents, a scheduling hint that
 * orders no memory, changes nothing. */
inline void griddep_launch_dependents() {}
inline void griddep_wait() {}
#endif

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


/* ================================================================ Hopper
 *
 * State the hardware keeps outside registers, per CTA: mbarriers (a table by
 * shared address: phase, pending arrivals, transaction count), bulk copies in
 * flight, and per thread the wgmma operations not yet retired.  Copies poison
 * their destination when issued (the hardware may write it any time until the
 * complete_tx) and land at the latest moment the ISA allows: when a thread
 * waits on their mbarrier's phase.  wgmma computes at the wgmma.wait_group
 * that retires it, reading shared memory then (a stage refilled too early
 * shows), and poisons its accumulator with NaN until then.
 */
#if __CUDA_ARCH__ >= 900

typedef unsigned long long u64;

struct emu_mbar {
    u32 addr;
    int expected, pending, phase; /* phase: completed phases; parity = phase & 1 */
    long tx;
    int init_thread, fenced;
};
struct emu_bulk {
    u32 dst, bytes, bar;
    const unsigned char *src; /* plain bulk copy, or */
    const void *map;          /* a tensor map with its coordinates */
    int coord[5];
};
static std::deque<emu_mbar> emu_mbars; /* references stay valid */
static std::vector<emu_bulk> emu_bulks;

inline emu_mbar &emu_mbar_at(u32 bar) {
    if (bar % 8) emu_fail("misaligned mbarrier (8 bytes)");
    emu_at(bar, 8);
    for (emu_mbar &m : emu_mbars)
        if (m.addr == bar) return m;
    emu_fail("mbarrier used before mbarrier.init");
    return emu_mbars.front();
}
/* A phase completes when all arrivals are in and the transaction count is 0. */
inline void emu_mbar_settle(emu_mbar &m) {
    if (m.pending < 0) emu_fail("mbarrier: more arrivals than its count in one phase");
    if (m.tx < -((1L << 20) - 1) || m.tx > (1L << 20) - 1) emu_fail("mbarrier: transaction count out of range");
    if (m.pending == 0 && m.tx == 0) {
        m.phase++;
        m.pending = m.expected;
        emu_spins = 0;
    }
}

inline void mbar_init(u32 bar, u32 count) {
    if (bar % 8) emu_fail("misaligned mbarrier (8 bytes)");
    emu_at(bar, 8);
    if (count < 1 || count > (1u << 20) - 1) emu_fail("mbarrier.init: count outside 1..2^20-1");
    for (const emu_mbar &m : emu_mbars)
        if (m.addr == bar) emu_fail("mbarrier.init of a live mbarrier (mbarrier.inval is not modelled)");
    emu_mbars.push_back({bar, (int)count, (int)count, 0, 0, (int)threadIdx.x, 0});
}
inline void mbar_arrive(u32 bar) {
    emu_mbar &m = emu_mbar_at(bar);
    m.pending--;
    emu_mbar_settle(m);
}
inline void mbar_arrive_expect_tx(u32 bar, u32 bytes) {
    emu_mbar &m = emu_mbar_at(bar);
    m.tx += bytes;
    m.pending--;
    emu_mbar_settle(m);
}
/* The copies in flight to bar land, in issue order (emu_bulk_land below). */
inline void emu_bulk_land(const emu_bulk &c);
inline void emu_land_for(u32 bar) {
    std::vector<emu_bulk> keep, land;
    for (const emu_bulk &c : emu_bulks) (c.bar == bar ? land : keep).push_back(c);
    emu_bulks.swap(keep);
    for (const emu_bulk &c : land) {
        emu_bulk_land(c);
        emu_mbar &m = emu_mbar_at(c.bar);
        m.tx -= c.bytes;
        emu_mbar_settle(m);
    }
}
/* try_wait.parity: the phase of that parity has completed when the current
 * phase's parity differs.  Otherwise the copies owed to it land; if that does
 * not complete it, the thread sleeps until it completes and then reports the
 * time limit (0), as the hardware may: callers must loop. */
inline int mbar_try_wait(u32 bar, u32 parity) {
    if (parity > 1) emu_fail("mbarrier.try_wait.parity: parity other than 0 or 1");
    emu_mbar &m = emu_mbar_at(bar);
    if ((u32)(m.phase & 1) != parity) return 1;
    emu_land_for(bar);
    if ((u32)(m.phase & 1) != parity) return 1;
    emu_block(&m.phase, m.phase, "an mbarrier phase (mbarrier.try_wait)");
    return 0;
}
/* Both fences make this thread's mbarrier.init visible to the async proxy;
 * a copy may complete_tx only on a barrier so published. */
inline void emu_fence_inits() {
    for (emu_mbar &m : emu_mbars)
        if (m.init_thread == (int)threadIdx.x) m.fenced = 1;
}
inline void fence_mbarrier_init() { emu_fence_inits(); }
inline void fence_proxy_async() { emu_fence_inits(); }

/* ------------------------------------------------------------ bulk and tensor copies */

/* The host side of a tensor map (what cuTensorMapEncodeTiled was given), kept
 * in the 128 opaque bytes of the map (tests/emu drivers encode it with
 * emu_tmap_encode). */
struct emu_tmap {
    u32 magic, rank, esize, swizzle; /* swizzle in bytes: 0, 32, 64, 128 */
    const unsigned char *base;
    u64 dims[5], strides[4]; /* strides[i]: bytes between steps of dim i + 1 */
    u32 box[5];
};
static_assert(sizeof(emu_tmap) <= 128, "emu_tmap must fit a CUtensorMap");
constexpr u32 EMU_TMAP_MAGIC = 0x544d4150;

/* cuTensorMapEncodeTiled's rules for what it accepts (interleave none,
 * elementStrides 1, OOB fill zero): returns a message, or null when valid. */
inline const char *emu_tmap_check(const emu_tmap &t) {
    if (t.rank < 1 || t.rank > 5) return "tensor rank outside 1..5";
    if (t.esize != 1 && t.esize != 2 && t.esize != 4 && t.esize != 8) return "element size not 1, 2, 4 or 8";
    if ((uintptr_t)t.base % 16) return "global address not 16-byte aligned";
    if (t.swizzle != 0 && t.swizzle != 32 && t.swizzle != 64 && t.swizzle != 128) return "swizzle not 0, 32, 64, 128";
    for (u32 i = 0; i < t.rank; ++i) {
        if (t.dims[i] < 1 || t.dims[i] > (1ull << 32)) return "globalDim outside 1..2^32";
        if (t.box[i] < 1 || t.box[i] > 256) return "boxDim outside 1..256";
        if (i > 0 && (t.strides[i - 1] % 16 || t.strides[i - 1] >= (1ull << 40)))
            return "globalStride not a multiple of 16 below 2^40";
    }
    if (t.box[0] * t.esize % 16) return "boxDim[0] * elementSize not a multiple of 16 bytes";
    if (t.swizzle && t.box[0] * t.esize > t.swizzle) return "boxDim[0] * elementSize exceeds the swizzle span";
    return nullptr;
}
/* Writes the map into out (128 bytes, 64-byte aligned); returns the check's
 * message, or null. */
inline const char *emu_tmap_encode(void *out, const void *base, int rank, int esize, int swizzle,
                                   const unsigned long long *dims, const unsigned long long *strides,
                                   const unsigned *box) {
    emu_tmap t = {};
    t.magic = EMU_TMAP_MAGIC, t.rank = (u32)rank, t.esize = (u32)esize, t.swizzle = (u32)swizzle;
    t.base = (const unsigned char *)base;
    for (int i = 0; i < rank && i < 5; ++i) {
        t.dims[i] = dims[i], t.box[i] = box[i];
        if (i > 0) t.strides[i - 1] = strides[i - 1];
    }
    if ((uintptr_t)out % 64) return "tensor map not 64-byte aligned";
    if (const char *e = emu_tmap_check(t)) return e;
    memset(out, 0, 128);
    memcpy(out, &t, sizeof t);
    return nullptr;
}

/* The swizzle of shared address a (the ISA's Swizzle<B,4,3> on the byte
 * address: bits 4.. xor bits 7.., B = 1, 2, 3 for 32, 64, 128 bytes). */
inline u32 emu_swizzle(u32 a, u32 bytes) { return bytes ? a ^ (((a >> 7) & (bytes / 16 - 1)) << 4) : a; }

inline void emu_bulk_land(const emu_bulk &c) {
    if (c.src) {
        memcpy(emu_at(c.dst, c.bytes), c.src, c.bytes);
        return;
    }
    const emu_tmap &t = *(const emu_tmap *)c.map;
    u64 n = 1, idx[5] = {0, 0, 0, 0, 0};
    for (u32 i = 0; i < t.rank; ++i) n *= t.box[i];
    for (u64 e = 0; e < n; ++e) {
        u64 rest = e, off = 0;
        bool in = true;
        for (u32 i = 0; i < t.rank; ++i) {
            idx[i] = rest % t.box[i], rest /= t.box[i];
            const long long g = (long long)c.coord[i] + (long long)idx[i];
            in = in && g >= 0 && (u64)g < t.dims[i];
            if (in) off += i == 0 ? (u64)g * t.esize : (u64)g * t.strides[i - 1];
        }
        unsigned char *d = emu_at(emu_swizzle(c.dst + (u32)(e * t.esize), t.swizzle), t.esize);
        if (in) memcpy(d, t.base + off, t.esize);
        else memset(d, 0, t.esize);
    }
}
inline void emu_bulk_issue(emu_bulk c) {
    emu_mbar &m = emu_mbar_at(c.bar);
    if (!m.fenced) emu_fail("bulk copy completing on an mbarrier whose init was not fenced for the async proxy");
    memset(emu_at(c.dst, c.bytes), 0xff, c.bytes);
    emu_bulks.push_back(c);
    for (const emu_thread &t : emu_thr) /* a thread already waits on its phase: land now */
        if (t.wait_on == &m.phase) {
            emu_land_for(c.bar);
            break;
        }
}
inline void bulk_g2s(u32 dst, const void *src, u32 bytes, u32 bar) {
    if (bytes == 0 || bytes % 16) emu_fail("cp.async.bulk: size not a positive multiple of 16");
    if (dst % 16 || (uintptr_t)src % 16) emu_fail("cp.async.bulk: address not 16-byte aligned");
    emu_bulk_issue({dst, bytes, bar, (const unsigned char *)src, nullptr, {0, 0, 0, 0, 0}});
}
inline void emu_tma(u32 dst, const void *map, u32 rank, const int *coord, u32 bar) {
    if ((uintptr_t)map % 64) emu_fail("tensor map not 64-byte aligned");
    const emu_tmap &t = *(const emu_tmap *)map;
    if (t.magic != EMU_TMAP_MAGIC) emu_fail("cp.async.bulk.tensor: not an encoded tensor map");
    if (t.rank != rank) emu_fail("cp.async.bulk.tensor: dimension differs from the tensor map's rank");
    if (dst % 128) emu_fail("cp.async.bulk.tensor: shared destination not 128-byte aligned");
    emu_bulk c = {dst, t.esize, bar, nullptr, map, {0, 0, 0, 0, 0}};
    for (u32 i = 0; i < rank; ++i) c.bytes *= t.box[i], c.coord[i] = coord[i];
    emu_bulk_issue(c);
}
inline void tma_load_2d(u32 dst, const void *tmap, int c0, int c1, u32 bar) {
    const int c[] = {c0, c1};
    emu_tma(dst, tmap, 2, c, bar);
}
inline void tma_load_3d(u32 dst, const void *tmap, int c0, int c1, int c2, u32 bar) {
    const int c[] = {c0, c1, c2};
    emu_tma(dst, tmap, 3, c, bar);
}
inline void tma_load_4d(u32 dst, const void *tmap, int c0, int c1, int c2, int c3, u32 bar) {
    const int c[] = {c0, c1, c2, c3};
    emu_tma(dst, tmap, 4, c, bar);
}

/* elect.sync: which lane is elected is unspecified (but fixed per mask); the
 * model elects the highest, so code that assumes lane 0 shows. */
inline int elect_one(u32 membermask = 0xffffffffu) {
    emu_enter(3, membermask);
    const int r = (int)(threadIdx.x & 31) == 31 - __builtin_clz(membermask);
    emu_leave(membermask);
    return r;
}

#endif /* __CUDA_ARCH__ >= 900 */

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)

/* ------------------------------------------------------------ warpgroups */

/* A warpgroup collective: the 128 threads of the caller's warpgroup meet
 * with the same op (else divergence). */
static emu_barrier emu_wg_bar[8];
static int emu_wg_op[1024];
inline void emu_wg_meet(int op) {
    if (emu_nthreads % 128) emu_fail("warpgroup instruction in a CTA whose size is not a multiple of 128");
    const unsigned wg = threadIdx.x / 128;
    emu_wg_op[threadIdx.x] = op;
    emu_wg_bar[wg].wait(128, 0, 0, "a warpgroup collective (wgmma, setmaxnreg)");
    for (unsigned t = 128 * wg; t < 128 * wg + 128; ++t)
        if (emu_wg_op[t] != op) emu_fail("warpgroup divergence: its threads execute different wgmma/setmaxnreg");
    emu_wg_bar[wg].wait(128, 0, 0, "a warpgroup collective (wgmma, setmaxnreg)");
}

/* setmaxnreg: no effect on the CPU; the value is checked (also at compile
 * time) and the whole warpgroup must execute it. */
template <int N> inline void setmaxnreg_inc() {
    static_assert(N >= 24 && N <= 256 && N % 8 == 0, "setmaxnreg: 24..256, multiple of 8");
    emu_wg_meet(1000 + N);
}
template <int N> inline void setmaxnreg_dec() {
    static_assert(N >= 24 && N <= 256 && N % 8 == 0, "setmaxnreg: 24..256, multiple of 8");
    emu_wg_meet(2000 + N);
}

/* One wgmma.mma_async of one thread, until retired. */
struct emu_wgmma {
    int n, bf16, rs, ta, tb, scale_d, group; /* group -1: not committed */
    u64 da, db;
    u32 a[4];
    float *d;        /* the accumulator, written when retired */
    int chained;     /* input is the result of the previous pending op on d */
    float cin[128];
};
struct emu_wg_thread {
    std::vector<emu_wgmma> ops;
    int groups, fenced;
};
static std::vector<emu_wg_thread> emu_wg;

inline emu_wg_thread &emu_wg_me() { return emu_wg[threadIdx.x]; }

inline void wgmma_fence() {
    emu_wg_meet(1);
    emu_wg_me().fenced = 1;
}
inline void wgmma_commit() {
    emu_wg_meet(2);
    emu_wg_thread &w = emu_wg_me();
    for (emu_wgmma &o : w.ops)
        if (o.group < 0) o.group = w.groups;
    w.groups++;
}

template <int N, int BF16> inline void emu_wgmma_issue(emu_wgmma o, float *d, int scale_d) {
    emu_wg_thread &w = emu_wg_me();
    if (!w.fenced) emu_fail("wgmma.mma_async without a wgmma.fence since the last wgmma.wait_group");
    for (u64 desc : {o.da, o.db})
        if ((desc >> 49 & 7) != 0) emu_fail("wgmma descriptor: matrix base offset other than 0 is not modelled");
    o.n = N, o.bf16 = BF16, o.scale_d = scale_d != 0, o.group = -1, o.d = d, o.chained = 0;
    for (const emu_wgmma &p : w.ops)
        if (p.d == d) o.chained = 1;
    for (int i = 0; i < N / 2; ++i) o.cin[i] = d[i], d[i] = NAN;
    w.ops.push_back(o);
}
template <int N, int BF16, int TRANS_A, int TRANS_B>
inline void wgmma_ss(float (&d)[N / 2], u64 desc_a, u64 desc_b, int scale_d) {
    static_assert(N == 32 || N == 64 || N == 128 || N == 256, "wgmma_ss: n32, n64, n128, n256");
    emu_wgmma o = {};
    o.rs = 0, o.ta = TRANS_A, o.tb = TRANS_B, o.da = desc_a, o.db = desc_b;
    emu_wgmma_issue<N, BF16>(o, d, scale_d);
}
template <int N, int BF16, int TRANS_B>
inline void wgmma_rs(float (&d)[N / 2], const u32 (&a)[4], u64 desc_b, int scale_d) {
    static_assert(N == 32 || N == 64 || N == 128 || N == 256, "wgmma_rs: n32, n64, n128, n256");
    emu_wgmma o = {};
    o.rs = 1, o.tb = TRANS_B, o.db = desc_b;
    memcpy(o.a, a, sizeof o.a);
    emu_wgmma_issue<N, BF16>(o, d, scale_d);
}

/* Shared address of element (mn, k) of a 16-deep operand through a matrix
 * descriptor: the ISA's canonical layouts (T = 8 16-bit elements = 16 bytes;
 * W = swizzle span in bytes):
 *   K-major,  none: ((8,m),(T,2)):((1T,SBO),(1,LBO))
 *   K-major,  W:    ((8,m),(T,2)):((W/16 T,SBO),(1,T))
 *   MN-major, none: ((T,1,m),(8,k)):((1,T,SBO),(1T,LBO))
 *   MN-major, W:    ((T,W/16,m),(8,k)):((1,T,LBO),(W/16 T,SBO))
 * then the swizzle on the byte address. */
inline u32 emu_desc_addr(u64 desc, int mn, int k, int mn_major) {
    const u32 start = (u32)(desc & 0x3fff) << 4, lbo = (u32)(desc >> 16 & 0x3fff) << 4,
              sbo = (u32)(desc >> 32 & 0x3fff) << 4;
    static const u32 span[4] = {0, 128, 64, 32};
    const u32 w = span[desc >> 62];
    u32 a;
    if (!mn_major && !w) a = start + (mn / 8) * sbo + (k / 8) * lbo + (mn % 8) * 16 + (k % 8) * 2;
    else if (!mn_major) a = start + (mn / 8) * sbo + (mn % 8) * w + k * 2;
    else if (!w) a = start + (mn / 8) * sbo + (k / 8) * lbo + (k % 8) * 16 + (mn % 8) * 2;
    else a = start + (mn / (w / 2)) * lbo + (mn % (w / 2)) * 2 + (k % 8) * w + (k / 8) * sbo;
    return emu_swizzle(a, w);
}
template <int BF16> inline double emu_desc_elem(u64 desc, int mn, int k, int mn_major) {
    u16 h;
    memcpy(&h, emu_at(emu_desc_addr(desc, mn, k, mn_major), 2), 2);
    return emu_h_value<BF16>(h);
}

/* Retires the ops of the warpgroup's threads in groups older than the n
 * newest: one thread computes every thread's results (A 64 x 16 from shared
 * memory or the 128 threads' fragments, B 16 x N), in issue order, each
 * product summed in double and rounded once. */
template <int BF16> inline void emu_wgmma_compute(const emu_wgmma *const *ops) {
    const emu_wgmma &o = *ops[0];
    static double A[64][16], B[16][256];
    for (int m = 0; m < 64; ++m)
        for (int k = 0; k < 16; ++k) {
            if (!o.rs) {
                A[m][k] = emu_desc_elem<BF16>(o.da, m, k, o.ta);
                continue;
            }
            /* thread of row m: warp m/16, g = m%8; register by (row half, k half) */
            const int g = m % 8, q = (k % 8) / 2, t = (m / 16) * 32 + g * 4 + q;
            const u32 reg = ops[t]->a[(m % 16) / 8 + 2 * (k / 8)];
            A[m][k] = emu_h_value<BF16>((u16)(k % 2 ? reg >> 16 : reg));
        }
    for (int k = 0; k < 16; ++k)
        for (int n = 0; n < o.n; ++n) B[k][n] = emu_desc_elem<BF16>(o.db, n, k, o.tb);
    for (unsigned t = 0; t < 128; ++t) {
        emu_wgmma &u = *const_cast<emu_wgmma *>(ops[t]);
        const int w = t / 32, g = (t % 32) / 4, q = t % 4;
        for (int i = 0; i < o.n / 2; ++i) {
            const int row = 16 * w + g + 8 * ((i % 4) / 2), col = 8 * (i / 4) + 2 * q + i % 2;
            double acc = u.scale_d ? u.cin[i] : 0.0;
            for (int k = 0; k < 16; ++k) acc += A[row][k] * B[k][col];
            u.cin[i] = (float)acc; /* the result, in place */
        }
    }
}
inline bool emu_wgmma_same(const emu_wgmma &x, const emu_wgmma &y) {
    return x.n == y.n && x.bf16 == y.bf16 && x.rs == y.rs && x.ta == y.ta && x.tb == y.tb &&
           x.scale_d == y.scale_d && x.group == y.group && x.db == y.db && (x.rs || x.da == y.da);
}
inline void emu_wgmma_retire(int keep) {
    const unsigned wg = threadIdx.x / 128, t0 = 128 * wg;
    emu_wg_thread &lead = emu_wg[t0];
    size_t n = 0;
    while (n < lead.ops.size() && lead.ops[n].group >= 0 && lead.ops[n].group < lead.groups - keep) ++n;
    for (unsigned t = t0; t < t0 + 128; ++t) {
        const emu_wg_thread &w = emu_wg[t];
        if (w.groups != lead.groups || w.ops.size() < n) emu_fail("wgmma groups differ across the warpgroup");
        for (size_t i = 0; i < n; ++i)
            if (!emu_wgmma_same(w.ops[i], lead.ops[i])) emu_fail("wgmma operands differ across the warpgroup");
    }
    for (size_t i = 0; i < n; ++i) {
        const emu_wgmma *ops[128];
        for (unsigned t = 0; t < 128; ++t) {
            emu_wgmma &u = emu_wg[t0 + t].ops[i];
            if (u.chained) emu_fail("internal: chained wgmma without its predecessor");
            ops[t] = &u;
        }
        if (lead.ops[i].bf16) emu_wgmma_compute<1>(ops);
        else emu_wgmma_compute<0>(ops);
        /* the result goes to the accumulator, or to the next pending op on it */
        for (unsigned t = t0; t < t0 + 128; ++t) {
            std::vector<emu_wgmma> &v = emu_wg[t].ops;
            size_t j = i + 1;
            while (j < v.size() && v[j].d != v[i].d) ++j;
            if (j < v.size()) {
                memcpy(v[j].cin, v[i].cin, sizeof v[j].cin);
                v[j].chained = 0;
            } else {
                memcpy(v[i].d, v[i].cin, sizeof(float) * v[i].n / 2);
            }
        }
    }
    for (unsigned t = t0; t < t0 + 128; ++t) emu_wg[t].ops.erase(emu_wg[t].ops.begin(), emu_wg[t].ops.begin() + n);
}
template <int N, int R> inline void wgmma_wait(float (&d)[R]) {
    static_assert(R == 16 || R == 32 || R == 64 || R == 128, "wgmma_wait: accumulators of n32, n64, n128, n256");
    emu_wg_meet(3000 + N);
    emu_wg_thread &w = emu_wg_me();
    if (threadIdx.x % 128 == 0) emu_wgmma_retire(N);
    emu_wg_meet(4000 + N);
    for (const emu_wgmma &o : w.ops)
        if (o.d == d) emu_fail("wgmma_wait: the accumulator it names is still pending");
    w.fenced = 0;
}

#endif /* __CUDA_ARCH_FEAT_SM90_ALL */

/* Per-CTA state of the model: reset before each CTA, checked after it. */
inline void emu_cta_begin() {
    for (emu_named_bar &b : emu_nbar) b = emu_named_bar();
#if __CUDA_ARCH__ >= 900
    emu_mbars.clear();
    emu_bulks.clear();
#endif
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    emu_wg.assign(emu_nthreads, emu_wg_thread());
#endif
}
inline void emu_cta_end() {
    for (const emu_named_bar &b : emu_nbar)
        if (b.count) emu_fail("CTA exits with a named barrier partly arrived (an arrive nobody syncs on)");
#if __CUDA_ARCH__ >= 900
    if (!emu_bulks.empty()) emu_fail("CTA exits with bulk copies in flight");
#endif
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    for (const emu_wg_thread &w : emu_wg)
        if (!w.ops.empty()) emu_fail("CTA exits with wgmma operations not retired by wgmma.wait_group");
#endif
}

} /* namespace fmqa_dev */

#endif /* FMQA_EMU_PTX_H */
