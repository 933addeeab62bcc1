/*
 * prefill_sm90_emu.cpp -- runs the rendered prefill_sm90 template on the CPU
 * through cuda_emu.h (sm_90a), for tests/unit/test_prefill_sm90_emu.c; also
 * encodes the emulator's tensor maps (the model of cuTensorMapEncodeTiled).
 */
#include "cuda_emu.h"

#include EMU_SOURCE

static void run_kernel(const void *p) { fmqa_prefill_sm90_kernel(*(const fmqa_prefill_sm90_params *)p); }

extern "C" int emu_launch(const char *entry, const fmqa_prefill_sm90_params *p, const unsigned grid[3],
                          unsigned threads, unsigned dyn_smem) {
    if (strcmp(entry, "fmqa_prefill_sm90_kernel")) return -1;
    emu_grid(run_kernel, p, grid, threads, dyn_smem);
    return 0;
}

extern "C" const char *emu_tmap(fmqa_tensor_map *out, const void *base, int rank, int esize, int swizzle,
                                const unsigned long long *dims, const unsigned long long *strides,
                                const unsigned *box) {
    return fmqa_dev::emu_tmap_encode(out, base, rank, esize, swizzle, dims, strides, box);
}
