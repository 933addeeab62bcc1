/*
 * fmqa_sm90.cuh -- Hopper building blocks over the instruction layer
 * (fmqa_ptx.cuh), shared by the sm_90a templates (prefill_sm90,
 * mla_decode_sm90, and the decode TMA paths that reuse them): wgmma
 * shared-memory matrix descriptors, the swizzle of an address, and the
 * mbarrier wait loop.  Compiled by NVRTC and by the CPU
 * emulator alike; needs __CUDA_ARCH__ >= 900 (descriptors: sm_90a).
 *
 * Tiles live in shared memory as TMA writes them: rows of a swizzle span W
 * (32, 64 or 128 bytes; 16-bit elements, so W / 2 columns per chunk), 8-row
 * groups 8 W apart, chunks of W / 2 columns one after another (chunk stride
 * = rows * W).  The tile base is aligned to 8 W, so the swizzle the hardware
 * applies to address bits agrees between TMA and wgmma.
 */
#ifndef FMQA_SM90_CUH
#define FMQA_SM90_CUH

#include "fmqa_device.cuh"

namespace fmqa_dev {

#if __CUDA_ARCH__ >= 900

#define FMQA_DEV __device__ __forceinline__

/* Waits for the phase of the given parity of the mbarrier at bar. */
FMQA_DEV void mbar_wait(u32 bar, u32 parity) {
    while (!mbar_try_wait(bar, parity)) {
    }
}

/* Shared address a as the hardware places it under the swizzle of span w
 * bytes (32, 64, 128; 0: none): Swizzle<B,4,3>, bits 4.. xor bits 7.. (B =
 * 1, 2, 3), on the address of a tile whose base is aligned to 8 w.  For the
 * plain stores (and cp.async copies) that must meet TMA's or wgmma's view. */
FMQA_DEV u32 smem_swizzle(u32 a, int w) { return w ? a ^ (((a >> 7) & (u32)(w / 16 - 1)) << 4) : a; }

/* The descriptor's swizzle field for a span of w bytes (0: none). */
FMQA_DEV u64 desc_swizzle_mode(int w) { return w == 128 ? 1 : w == 64 ? 2 : w == 32 ? 3 : 0; }

/* wgmma matrix descriptor: start address, leading and stride byte offsets
 * (bytes; multiples of 16), swizzle span w; base offset 0. */
FMQA_DEV u64 wgmma_desc(u32 addr, u32 lbo, u32 sbo, int w) {
    return (u64)((addr & 0x3ffff) >> 4) | (u64)((lbo & 0x3ffff) >> 4) << 16 | (u64)((sbo & 0x3ffff) >> 4) << 32 |
           desc_swizzle_mode(w) << 62;
}

/* Descriptor of the 16-deep k-slice ks (k = 16 ks .. 16 ks + 15) of a K-major
 * tile (MN rows, K contiguous) in the layout above: chunk ks / (W / 32), 32
 * bytes per slice inside it. */
FMQA_DEV u64 desc_kmajor(u32 tile, int rows, int ks, int w) {
    const int per = w / 32;
    return wgmma_desc(tile + (u32)((ks / per) * rows * w + (ks % per) * 32), 16, 8 * w, w);
}

/* Descriptor of k-slice ks of an MN-major tile (K rows, MN contiguous; e.g. V
 * as [kv][d] for P V): 16 rows per slice, chunks of W / 2 columns rows * W
 * apart (the leading offset), 8-row groups 8 W apart (the stride offset). */
FMQA_DEV u64 desc_mnmajor(u32 tile, int rows, int ks, int w) {
    return wgmma_desc(tile + (u32)(ks * 16 * w), (u32)(rows * w), 8 * w, w);
}

#undef FMQA_DEV

#endif

} /* namespace fmqa_dev */

#endif /* FMQA_SM90_CUH */
