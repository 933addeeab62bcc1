/*
 * convert_emu.cpp -- the number conversions of templates/fmqa_device.cuh
 * (8-bit KV -> f16/bf16 pairs, f32 -> fp8 e4m3, 16-bit packing) on the CPU
 * through the emulator, for tests/unit/test_convert_emu.c.  Compiled with -I
 * the template directory and -D__CUDA_ARCH__, so each architecture's path of
 * the device code (fp8: bit moves before sm_89, cvt after) is what runs.
 */
#include "cuda_emu.h"

#include "fmqa_device.cuh"

using namespace fmqa_dev;

/* q8x4_to_pairs<fmt, bf16>(r): fmt 2 int8, 3 fp8. */
extern "C" void emu_q8x4_to_pairs(int fmt, int bf16, unsigned r, unsigned *p02, unsigned *p13) {
    if (fmt == 2 && !bf16) q8x4_to_pairs<2, 0>(r, *p02, *p13);
    else if (fmt == 2) q8x4_to_pairs<2, 1>(r, *p02, *p13);
    else if (!bf16) q8x4_to_pairs<3, 0>(r, *p02, *p13);
    else q8x4_to_pairs<3, 1>(r, *p02, *p13);
}

/* int8x4_to_f16_biased(r): f16 pairs of 1152 + x (decode's K with f16 Q). */
extern "C" void emu_int8x4_to_f16_biased(unsigned r, unsigned *p02, unsigned *p13) {
    int8x4_to_f16_biased(r, *p02, *p13);
}

extern "C" float emu_fp8_fold(void) { return FP8_F16_FOLD; }

extern "C" unsigned char emu_f32_to_e4m3(float x) { return f32_to_e4m3(x); }

extern "C" unsigned emu_pack2(int bf16, float lo, float hi) { return bf16 ? pack2<1>(lo, hi) : pack2<0>(lo, hi); }

extern "C" float emu_h_to_f32(int bf16, unsigned short h) { return bf16 ? h_to_f32<1>(h) : h_to_f32<0>(h); }
