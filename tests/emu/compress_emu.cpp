/*
 * compress_emu.cpp -- runs a rendered compress template on the CPU through
 * cuda_emu.h.  Compiled at test time with -DEMU_SOURCE="<rendered file>" into a
 * shared object that tests/unit/test_compress_emu.c loads; emu_launch runs one
 * entry over a grid, exactly as cuLaunchKernel would.  compress.cuh declares a
 * static __shared__ array (the block reductions), hence EMU_STATIC_SHARED.
 */
#define EMU_STATIC_SHARED
#include "cuda_emu.h"

#include EMU_SOURCE

static void run_keys(const void *p) { fmqa_compress_keys(*(const fmqa_compress_params *)p); }
static void run_move(const void *p) { fmqa_compress_move(*(const fmqa_compress_params *)p); }

extern "C" int emu_launch(const char *entry, const fmqa_compress_params *p, const unsigned grid[3],
                          unsigned threads, unsigned dyn_smem) {
    if (!strcmp(entry, "fmqa_compress_keys"))
        emu_grid(run_keys, p, grid, threads, dyn_smem);
    else if (!strcmp(entry, "fmqa_compress_move"))
        emu_grid(run_move, p, grid, threads, dyn_smem);
    else
        return -1;
    return 0;
}
