/*
 * append_emu.cpp -- runs a rendered append template on the CPU through
 * cuda_emu.h.  Compiled at test time with -DEMU_SOURCE="<rendered file>" into a
 * shared object that tests/unit/test_append_emu.c loads; emu_launch runs the
 * template's one entry over a grid, exactly as cuLaunchKernel would.
 * append.cuh declares a static __shared__ array (the RoPE frequencies), hence
 * EMU_STATIC_SHARED (see cuda_emu.h).
 */
#define EMU_STATIC_SHARED
#include "cuda_emu.h"

#include EMU_SOURCE

static void run_kernel(const void *p) { fmqa_append_kernel(*(const fmqa_append_params *)p); }

extern "C" int emu_launch(const char *entry, const fmqa_append_params *p, const unsigned grid[3],
                          unsigned threads, unsigned dyn_smem) {
    if (strcmp(entry, "fmqa_append_kernel")) return -1;
    emu_grid(run_kernel, p, grid, threads, dyn_smem);
    return 0;
}
