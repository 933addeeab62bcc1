/*
 * fmqa_ptx.cuh -- the instruction layer of the kernel templates: one inline
 * function per PTX instruction they use (cp.async, ldmatrix, mma.sync, cvt,
 * prmt, sub.f16x2, ex2.approx, shfl.sync, vote.sync, ld.global.nc,
 * %dynamic_smem_size), nothing else.
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
 * conversions need sm_89+ and exist only when __CUDA_ARCH__ >= 890.
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
 * memory (fits 32 bits). */
FMQA_PTX u32 smem_addr(const void *p) {
    unsigned long long a;
    asm("cvta.to.shared.u64 %0, %1;" : "=l"(a) : "l"(p));
    return (u32)a;
}

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

#undef FMQA_PTX

} /* namespace fmqa_dev */

#endif /* FMQA_PTX_CUH */
