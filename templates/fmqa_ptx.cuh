/*
 * fmqa_ptx.cuh -- the instruction layer of the kernel templates: one inline
 * function per PTX instruction they use (cp.async, ldmatrix, mma.sync, cvt,
 * prmt, sub.f16x2, ex2.approx, shfl.sync, vote.sync, bar.sync / bar.arrive,
 * ld.global.nc, griddepcontrol, %dynamic_smem_size; for Hopper mbarrier,
 * cp.async.bulk[.tensor], fence.proxy.async, elect.sync, setmaxnreg, wgmma),
 * nothing else.
 *
 * Every function here is exactly one instruction (plus register moves), so
 * that the CPU emulator (tests/emu/emu_ptx.h) can model each one from the PTX
 * ISA and refuse what it does not model.  All logic built on these -- 8-bit
 * dequantization, fp8 encoding, bf16 bit tricks, quad reductions, fragment
 * layouts, softmax, loads -- lives in fmqa_device.cuh and the templates, which
 * NVRTC and the emulator compile from the same source.  The emulator defines
 * FMQA_PTX_CUH, so this file is skipped there; a function added here must be
 * added to emu_ptx.h too (the emulator build fails on a call it lacks, and
 * tests/unit/test_emu_ptx.c checks the two lists match).  No other template
 * file may use inline asm: the emulator turns `asm` into a compile error.
 *
 * Operands follow the PTX operand order (cvt.rn.f16x2.f32 d, a, b puts a in
 * the upper half), not C conventions: callers name which value goes where.
 * 16-bit floats travel as raw bits (unsigned short).  Needs sm_80+; the fp8
 * conversions need sm_89+ and exist only when __CUDA_ARCH__ >= 890; the
 * griddepcontrol pair and the Hopper part exist from __CUDA_ARCH__ >= 900, its
 * wgmma and setmaxnreg only for sm_90a (__CUDA_ARCH_FEAT_SM90_ALL).
 */
#ifndef FMQA_PTX_CUH
#define FMQA_PTX_CUH

namespace fmqa_dev {

typedef unsigned int u32;
typedef unsigned short u16;

#define FMQA_PTX __device__ __forceinline__

/* ---------------------------------------------------------------- special registers */

/* mov.u32 %dynamic_smem_size: bytes of dynamic shared memory of this launch. */
FMQA_PTX u32 dynamic_smem_size() {
    u32 r;
    asm("mov.u32 %0, %%dynamic_smem_size;" : "=r"(r));
    return r;
}

/* cvta.to.shared.u64: shared-window address of a generic pointer into shared
 * memory (fits 32 bits).  The compiler's builtin, not inline asm: it sees
 * through it, so smem + offset becomes a 32-bit shared address plus the
 * offset, where the asm made every caller build the 64-bit generic pointer
 * (the shared window's upper half, a 64-bit add) and convert it back, about
 * 7 instructions each time a tile's stage address is taken. */
FMQA_PTX u32 smem_addr(const void *p) { return (u32)__cvta_generic_to_shared(p); }

/* ---------------------------------------------------------------- conversions */

/* cvt.f32.f16 (exact). */
FMQA_PTX float f16_to_f32(u16 h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}

/* cvt.rn.f16.f32 / cvt.rn.bf16.f32: round to nearest even, overflow to inf. */
template <int BF16> FMQA_PTX u16 f32_to_h(float f) {
    u16 h;
    if (BF16)
        asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h) : "f"(f));
    else
        asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}

/* cvt.rn.f16x2.f32 / cvt.rn.bf16x2.f32 d, a, b: a rounded into the UPPER half
 * of d, b into the lower. */
template <int BF16> FMQA_PTX u32 cvt_rn_x2_f32(float a, float b) {
    u32 r;
    if (BF16)
        asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(a), "f"(b));
    else
        asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(a), "f"(b));
    return r;
}

#if __CUDA_ARCH__ >= 890
/* cvt.rn.f16x2.e4m3x2 d, a (sm_89+) on half HI of x (a = bytes 2 HI, 2 HI + 1
 * of x): the two e4m3 bytes exactly, the lower-addressed one into the lower
 * half of d.  The mov only names the half (SASS reads x.H1 in place). */
template <int HI> FMQA_PTX u32 cvt_f16x2_e4m3x2(u32 x) {
    u32 r;
    if (HI)
        asm("{ .reg .b16 lo, hi; mov.b32 {lo, hi}, %1; cvt.rn.f16x2.e4m3x2 %0, hi; }" : "=r"(r) : "r"(x));
    else
        asm("{ .reg .b16 lo, hi; mov.b32 {lo, hi}, %1; cvt.rn.f16x2.e4m3x2 %0, lo; }" : "=r"(r) : "r"(x));
    return r;
}

/* cvt.rn.satfinite.e4m3x2.f32 d, a, b (sm_89+): a into the UPPER byte of d, b
 * into the lower; round to nearest even, beyond +-448 saturates to +-448, NaN
 * gives 0x7f. */
FMQA_PTX u16 cvt_e4m3x2_f32(float a, float b) {
    u16 r;
    asm("cvt.rn.satfinite.e4m3x2.f32 %0, %1, %2;" : "=h"(r) : "f"(a), "f"(b));
    return r;
}
#endif

/* prmt.b32 d, a, b, c (default mode): byte i of d is byte (nibble i of c) & 7
 * of the eight bytes {b, a} (a = bytes 0-3); nibble bit 3 replicates that
 * byte's sign bit instead. */
FMQA_PTX u32 prmt(u32 a, u32 b, u32 c) {
    u32 r;
    asm("prmt.b32 %0, %1, %2, %3;" : "=r"(r) : "r"(a), "r"(b), "r"(c));
    return r;
}

/* sub.rn.f16x2 d, a, b: both halves, round to nearest even. */
FMQA_PTX u32 sub_f16x2(u32 a, u32 b) {
    u32 r;
    asm("sub.rn.f16x2 %0, %1, %2;" : "=r"(r) : "r"(a), "r"(b));
    return r;
}

/* ---------------------------------------------------------------- math, shuffles */

/* ex2.approx.ftz.f32: 2^x (2^-inf = 0; subnormal inputs and results flush to 0). */
FMQA_PTX float ex2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

/* shfl.sync.bfly.b32 d, x, lanemask, 0x1f, membermask: x of lane (lane ^
 * lanemask); every lane of membermask executes it, the caller among them. */
FMQA_PTX float shfl_xor(float x, int lanemask, u32 membermask = 0xffffffffu) {
    float r;
    asm volatile("shfl.sync.bfly.b32 %0, %1, %2, 0x1f, %3;" : "=f"(r) : "f"(x), "r"(lanemask), "r"(membermask));
    return r;
}

/* vote.sync.any.pred d, pred, membermask: true in every lane of membermask
 * when pred is true in any of them; every lane of membermask executes it. */
FMQA_PTX int vote_any(int pred, u32 membermask = 0xffffffffu) {
    int r;
    asm volatile("{ .reg .pred p, q; setp.ne.s32 p, %1, 0; vote.sync.any.pred q, p, %2; selp.s32 %0, 1, 0, q; }"
                 : "=r"(r) : "r"(pred), "r"(membermask));
    return r;
}

/* ---------------------------------------------------------------- grid dependencies */

#if __CUDA_ARCH__ >= 900
/* griddepcontrol.launch_dependents (sm_90+): once every CTA of this grid has
 * executed it or exited, a grid launched after it in the stream with
 * programmatic stream serialization may begin to launch.  A hint: it orders
 * no memory. */
FMQA_PTX void griddep_launch_dependents() { asm volatile("griddepcontrol.launch_dependents;" ::: "memory"); }

/* griddepcontrol.wait (sm_90+): waits until every prerequisite grid has
 * completed and its memory operations are performed and visible to this grid;
 * returns at once when the grid was launched without programmatic
 * serialization (stream order already ensured it). */
FMQA_PTX void griddep_wait() { asm volatile("griddepcontrol.wait;" ::: "memory"); }
#endif
/* bar.sync id, n / bar.arrive id, n: named barrier id (1..15; 0 is
 * __syncthreads) of n threads (a multiple of 32): sync waits until n threads
 * arrived or synced on it, arrive counts without waiting.  Lets groups of
 * warps take turns (prefill_sm90's consumers). */
FMQA_PTX void bar_sync(u32 id, u32 n) { asm volatile("bar.sync %0, %1;" ::"r"(id), "r"(n) : "memory"); }
FMQA_PTX void bar_arrive(u32 id, u32 n) { asm volatile("bar.arrive %0, %1;" ::"r"(id), "r"(n) : "memory"); }

/* ---------------------------------------------------------------- memory */

/* ld.global.nc.v4.u32: 16 bytes through the read-only path; p 16-byte
 * aligned, and the data must not change while the kernel runs. */
FMQA_PTX void ld_nc_v4(u32 (&r)[4], const void *p) {
    asm("ld.global.nc.v4.u32 {%0,%1,%2,%3}, [%4];" : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "l"(p));
}

/* cp.async.cg.shared.global [dst], [src], 16, src_bytes: copies src_bytes (0
 * or 16) and zero-fills the rest; src must be valid even for 0.  Lands at the
 * latest when a cp.async.wait_group retires its group. */
FMQA_PTX void cp_async16(u32 dst, const void *src, int src_bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(dst), "l"(src), "r"(src_bytes));
}
/* cp.async.ca.shared.global [dst], [src], 4, src_bytes. */
FMQA_PTX void cp_async4(u32 dst, const void *src, int src_bytes) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;" ::"r"(dst), "l"(src), "r"(src_bytes));
}
/* cp.async.commit_group: closes the group of this thread's copies issued since. */
FMQA_PTX void cp_async_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
/* cp.async.wait_group N: waits until at most N of this thread's groups are pending. */
template <int N> FMQA_PTX void cp_async_wait() { asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory"); }

/* ldmatrix.sync.aligned.m8n8.xN[.trans].shared.b16: lane l gives the (16-byte
 * aligned) row address for row l % 8 of matrix l / 8 (x1: lanes 0-7, x2: 0-15,
 * x4: all).  Register j of thread i holds, of matrix j, row i/4, 16-bit columns
 * 2(i%4), 2(i%4)+1 (low half first); with .trans, rows 2(i%4), 2(i%4)+1 of
 * column i/4. */
FMQA_PTX void ldsm_x1(u32 (&r)[1], u32 addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x1.shared.b16 {%0}, [%1];" : "=r"(r[0]) : "r"(addr));
}
FMQA_PTX void ldsm_x1_t(u32 (&r)[1], u32 addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x1.trans.shared.b16 {%0}, [%1];" : "=r"(r[0]) : "r"(addr));
}
FMQA_PTX void ldsm_x2(u32 (&r)[2], u32 addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];" : "=r"(r[0]), "=r"(r[1]) : "r"(addr));
}
FMQA_PTX void ldsm_x2_t(u32 (&r)[2], u32 addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];"
                 : "=r"(r[0]), "=r"(r[1]) : "r"(addr));
}
FMQA_PTX void ldsm_x4(u32 (&r)[4], u32 addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr));
}
FMQA_PTX void ldsm_x4_t(u32 (&r)[4], u32 addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr));
}

/* ---------------------------------------------------------------- mma */

/* mma.sync.aligned.m16n8k16.row.col.f32.{f16,bf16}.{f16,bf16}.f32: c += a * b.
 * With g = lane/4, q = lane%4:
 *   a[0]: (row g, k 2q..2q+1)   a[1]: (row g+8, k 2q..)   a[2]: (row g, k 2q+8..)
 *   a[3]: (row g+8, k 2q+8..)   b0: (k 2q..2q+1, col g)   b1: (k 2q+8.., col g)
 *   c[0..1]: (row g, cols 2q, 2q+1)   c[2..3]: (row g+8, same cols). */
template <int BF16> FMQA_PTX void mma16816(float (&c)[4], const u32 (&a)[4], u32 b0, u32 b1) {
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


/* ================================================================ Hopper (sm_90, sm_90a)
 *
 * mbarriers, bulk and tensor (TMA) copies, proxy fences and elect.sync need
 * sm_90; wgmma and setmaxnreg need sm_90a (the arch-specific feature set,
 * __CUDA_ARCH_FEAT_SM90_ALL, which NVRTC defines for --gpu-architecture=
 * sm_90a only).  Shared addresses are 32-bit shared-window addresses
 * (smem_addr).  An mbarrier is 8 bytes, 8-byte aligned.
 */
#if __CUDA_ARCH__ >= 900

typedef unsigned long long u64;

/* mbarrier.init.shared::cta.b64 [bar], count: phase 0, count arrivals
 * expected, transaction count 0. */
FMQA_PTX void mbar_init(u32 bar, u32 count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(bar), "r"(count) : "memory");
}
/* mbarrier.arrive.shared::cta.b64 _, [bar]: one arrival (release, CTA). */
FMQA_PTX void mbar_arrive(u32 bar) {
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(bar) : "memory");
}
/* mbarrier.arrive.expect_tx.shared::cta.b64 _, [bar], bytes: raises the
 * transaction count by bytes, then one arrival.  The phase completes when all
 * arrivals are in and the complete_tx of the copies brought it back to 0. */
FMQA_PTX void mbar_arrive_expect_tx(u32 bar, u32 bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(bar), "r"(bytes) : "memory");
}
/* mbarrier.try_wait.parity.shared::cta.b64 p, [bar], parity: 1 once the phase
 * of that parity has completed (acquire, CTA); may return 0 after a
 * system-dependent time limit, so callers loop. */
FMQA_PTX int mbar_try_wait(u32 bar, u32 parity) {
    u32 r;
    asm volatile("{ .reg .pred p; mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2; selp.u32 %0, 1, 0, p; }"
                 : "=r"(r) : "r"(bar), "r"(parity) : "memory");
    return (int)r;
}
/* fence.mbarrier_init.release.cluster: makes prior mbarrier.init visible to
 * the async proxy (the copies that complete_tx on them). */
FMQA_PTX void fence_mbarrier_init() { asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory"); }
/* fence.proxy.async.shared::cta: orders this thread's generic-proxy shared
 * memory accesses with later async-proxy ones (wgmma operands, bulk copies). */
FMQA_PTX void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;" ::: "memory"); }

/* cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [dst],
 * [src], bytes, [bar]: bytes (a multiple of 16; dst, src 16-byte aligned)
 * land in shared memory some time before the copy's complete_tx of bytes on
 * bar. */
FMQA_PTX void bulk_g2s(u32 dst, const void *src, u32 bytes, u32 bar) {
    asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];"
                 ::"r"(dst), "l"(src), "r"(bytes), "r"(bar) : "memory");
}
/* cp.async.bulk.tensor.{2,3,4}d.shared::cluster.global.tile.mbarrier::
 * complete_tx::bytes [dst], [tmap, {c0, ...}], [bar]: the box of the tensor
 * map (a __grid_constant__ parameter or global memory, 64-byte aligned) whose
 * first element is at coordinates c0 (innermost), c1, ...; elements outside
 * the tensor read as zero; lands in dst (128-byte aligned) in box order,
 * swizzled as the map says, then complete_tx of the whole box's bytes. */
FMQA_PTX void tma_load_2d(u32 dst, const void *tmap, int c0, int c1, u32 bar) {
    asm volatile("cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
                 " [%0], [%1, {%2, %3}], [%4];" ::"r"(dst), "l"(tmap), "r"(c0), "r"(c1), "r"(bar) : "memory");
}
FMQA_PTX void tma_load_3d(u32 dst, const void *tmap, int c0, int c1, int c2, u32 bar) {
    asm volatile("cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
                 " [%0], [%1, {%2, %3, %4}], [%5];"
                 ::"r"(dst), "l"(tmap), "r"(c0), "r"(c1), "r"(c2), "r"(bar) : "memory");
}
FMQA_PTX void tma_load_4d(u32 dst, const void *tmap, int c0, int c1, int c2, int c3, u32 bar) {
    asm volatile("cp.async.bulk.tensor.4d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
                 " [%0], [%1, {%2, %3, %4, %5}], [%6];"
                 ::"r"(dst), "l"(tmap), "r"(c0), "r"(c1), "r"(c2), "r"(c3), "r"(bar) : "memory");
}

/* elect.sync _|p, membermask: 1 in exactly one lane of membermask (the
 * lowest), 0 in the others; every lane of membermask executes it. */
FMQA_PTX int elect_one(u32 membermask = 0xffffffffu) {
    u32 r;
    asm volatile("{ .reg .pred p; elect.sync _|p, %1; selp.u32 %0, 1, 0, p; }" : "=r"(r) : "r"(membermask));
    return (int)r;
}

#endif /* __CUDA_ARCH__ >= 900 */

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)

/* setmaxnreg.{inc,dec}.sync.aligned.u32 N: this warpgroup's per-thread
 * register limit becomes N (24..256, a multiple of 8); all four warps execute
 * it. */
template <int N> FMQA_PTX void setmaxnreg_inc() {
    static_assert(N >= 24 && N <= 256 && N % 8 == 0, "setmaxnreg: 24..256, multiple of 8");
    asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;" ::"n"(N));
}
template <int N> FMQA_PTX void setmaxnreg_dec() {
    static_assert(N >= 24 && N <= 256 && N % 8 == 0, "setmaxnreg: 24..256, multiple of 8");
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;" ::"n"(N));
}

/* wgmma.fence.sync.aligned: before the first wgmma.mma_async that uses
 * registers (accumulators, A fragments) this warpgroup wrote since. */
FMQA_PTX void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;" ::: "memory"); }
/* wgmma.commit_group.sync.aligned: closes the group of this warpgroup's
 * wgmma.mma_async issued since the last commit. */
FMQA_PTX void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory"); }

#define FMQA_WG_D16 "{" \
    "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15" "}"
#define FMQA_WG_OUT16(d) \
    "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), \
    "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15])
#define FMQA_WG_D32 "{" \
    "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, " \
    "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31" "}"
#define FMQA_WG_OUT32(d) \
    "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), \
    "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), \
    "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), \
    "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
#define FMQA_WG_D64 "{" \
    "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, " \
    "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, " \
    "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, " \
    "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63" "}"
#define FMQA_WG_OUT64(d) \
    "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), \
    "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), \
    "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), \
    "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), \
    "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), \
    "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), \
    "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), \
    "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
#define FMQA_WG_D128 "{" \
    "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, " \
    "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, " \
    "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, " \
    "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, " \
    "%64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, " \
    "%80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, " \
    "%96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, " \
    "%112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127" "}"
#define FMQA_WG_OUT128(d) \
    "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), \
    "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), \
    "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), \
    "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), \
    "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), \
    "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), \
    "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), \
    "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]), \
    "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]), \
    "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]), \
    "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]), \
    "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]), \
    "+f"(d[96]), "+f"(d[97]), "+f"(d[98]), "+f"(d[99]), "+f"(d[100]), "+f"(d[101]), "+f"(d[102]), "+f"(d[103]), \
    "+f"(d[104]), "+f"(d[105]), "+f"(d[106]), "+f"(d[107]), "+f"(d[108]), "+f"(d[109]), "+f"(d[110]), "+f"(d[111]), \
    "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), "+f"(d[115]), "+f"(d[116]), "+f"(d[117]), "+f"(d[118]), "+f"(d[119]), \
    "+f"(d[120]), "+f"(d[121]), "+f"(d[122]), "+f"(d[123]), "+f"(d[124]), "+f"(d[125]), "+f"(d[126]), "+f"(d[127])


/* wgmma.wait_group.sync.aligned N: waits until at most N of this warpgroup's
 * groups are pending.  d is the accumulator the caller reads next, tied to the
 * instruction so that the compiler reads it only after (N / 2 registers of an
 * m64nNk16 accumulator: 16, 32, 64, 128). */
template <int N, int R> FMQA_PTX void wgmma_wait(float (&d)[R]) {
    static_assert(R == 16 || R == 32 || R == 64 || R == 128, "wgmma_wait: accumulators of n32, n64, n128, n256");
    if constexpr (R == 16)
        asm volatile("wgmma.wait_group.sync.aligned %16;" : FMQA_WG_OUT16(d) : "n"(N) : "memory");
    else if constexpr (R == 32)
        asm volatile("wgmma.wait_group.sync.aligned %32;" : FMQA_WG_OUT32(d) : "n"(N) : "memory");
    else if constexpr (R == 64)
        asm volatile("wgmma.wait_group.sync.aligned %64;" : FMQA_WG_OUT64(d) : "n"(N) : "memory");
    else
        asm volatile("wgmma.wait_group.sync.aligned %128;" : FMQA_WG_OUT128(d) : "n"(N) : "memory");
}

/* wgmma.mma_async.sync.aligned.m64nNk16.f32.{f16,bf16}.{f16,bf16} d, a-desc,
 * b-desc, p, 1, 1, TRANS_A, TRANS_B (p = scale_d != 0): d = A B + (p ? d : 0),
 * A 64 x 16 and B 16 x N from shared memory through matrix descriptors
 * (fmqa_sm90.cuh builds them); TRANS = 0 K-major, 1 MN-major.  Accumulator of
 * thread t (warp w = t/32 of the warpgroup, g = lane/4, q = lane%4): d[i] is
 * row 16w + g + 8((i%4)/2), column 8(i/4) + 2q + i%2.  Reading d before the
 * wgmma_wait that retires its group is undefined. */
#define FMQA_WGMMA_SS(N, R, T, IA, IB, IS, ITA, ITB)                                                   \
    asm volatile("{ .reg .pred p; setp.ne.b32 p, %" #IS ", 0; wgmma.mma_async.sync.aligned.m64n" #N       \
                 "k16.f32." T "." T " " FMQA_WG_D##R ", %" #IA ", %" #IB ", p, 1, 1, %" #ITA ", %" #ITB "; }" \
                 : FMQA_WG_OUT##R(d) : "l"(desc_a), "l"(desc_b), "r"(scale_d), "n"(TRANS_A), "n"(TRANS_B))
template <int N, int BF16, int TRANS_A, int TRANS_B>
FMQA_PTX void wgmma_ss(float (&d)[N / 2], u64 desc_a, u64 desc_b, int scale_d) {
    static_assert(N == 32 || N == 64 || N == 128 || N == 256, "wgmma_ss: n32, n64, n128, n256");
    if constexpr (N == 32 && BF16) FMQA_WGMMA_SS(32, 16, "bf16", 16, 17, 18, 19, 20);
    else if constexpr (N == 32) FMQA_WGMMA_SS(32, 16, "f16", 16, 17, 18, 19, 20);
    else if constexpr (N == 64 && BF16) FMQA_WGMMA_SS(64, 32, "bf16", 32, 33, 34, 35, 36);
    else if constexpr (N == 64) FMQA_WGMMA_SS(64, 32, "f16", 32, 33, 34, 35, 36);
    else if constexpr (N == 128 && BF16) FMQA_WGMMA_SS(128, 64, "bf16", 64, 65, 66, 67, 68);
    else if constexpr (N == 128) FMQA_WGMMA_SS(128, 64, "f16", 64, 65, 66, 67, 68);
    else if constexpr (BF16) FMQA_WGMMA_SS(256, 128, "bf16", 128, 129, 130, 131, 132);
    else FMQA_WGMMA_SS(256, 128, "f16", 128, 129, 130, 131, 132);
}
#undef FMQA_WGMMA_SS

/* wgmma.mma_async.sync.aligned.m64nNk16.f32.{f16,bf16}.{f16,bf16} d, {a},
 * b-desc, p, 1, 1, TRANS_B: as wgmma_ss with A from registers, in each warp
 * the layout of mma.sync m16n8k16's A (rows 16w..16w+15 of the warpgroup's
 * 64): a[0] (row g, k 2q..2q+1), a[1] (row g+8, same k), a[2] (row g,
 * k 2q+8..), a[3] (row g+8, k 2q+8..); the low half holds the lower k. */
#define FMQA_WGMMA_RS(N, R, T, AREGS, IB, IS, ITB)                                                     \
    asm volatile("{ .reg .pred p; setp.ne.b32 p, %" #IS ", 0; wgmma.mma_async.sync.aligned.m64n" #N       \
                 "k16.f32." T "." T " " FMQA_WG_D##R ", " AREGS ", %" #IB ", p, 1, 1, %" #ITB "; }"          \
                 : FMQA_WG_OUT##R(d)                                                                       \
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(scale_d), "n"(TRANS_B))
template <int N, int BF16, int TRANS_B>
FMQA_PTX void wgmma_rs(float (&d)[N / 2], const u32 (&a)[4], u64 desc_b, int scale_d) {
    static_assert(N == 32 || N == 64 || N == 128 || N == 256, "wgmma_rs: n32, n64, n128, n256");
    if constexpr (N == 32 && BF16) FMQA_WGMMA_RS(32, 16, "bf16", "{%16, %17, %18, %19}", 20, 21, 22);
    else if constexpr (N == 32) FMQA_WGMMA_RS(32, 16, "f16", "{%16, %17, %18, %19}", 20, 21, 22);
    else if constexpr (N == 64 && BF16) FMQA_WGMMA_RS(64, 32, "bf16", "{%32, %33, %34, %35}", 36, 37, 38);
    else if constexpr (N == 64) FMQA_WGMMA_RS(64, 32, "f16", "{%32, %33, %34, %35}", 36, 37, 38);
    else if constexpr (N == 128 && BF16) FMQA_WGMMA_RS(128, 64, "bf16", "{%64, %65, %66, %67}", 68, 69, 70);
    else if constexpr (N == 128) FMQA_WGMMA_RS(128, 64, "f16", "{%64, %65, %66, %67}", 68, 69, 70);
    else if constexpr (BF16) FMQA_WGMMA_RS(256, 128, "bf16", "{%128, %129, %130, %131}", 132, 133, 134);
    else FMQA_WGMMA_RS(256, 128, "f16", "{%128, %129, %130, %131}", 132, 133, 134);
}
#undef FMQA_WGMMA_RS
#undef FMQA_WG_D16
#undef FMQA_WG_D32
#undef FMQA_WG_D64
#undef FMQA_WG_D128
#undef FMQA_WG_OUT16
#undef FMQA_WG_OUT32
#undef FMQA_WG_OUT64
#undef FMQA_WG_OUT128

#endif /* __CUDA_ARCH_FEAT_SM90_ALL */

#undef FMQA_PTX

} /* namespace fmqa_dev */

#endif /* FMQA_PTX_CUH */
