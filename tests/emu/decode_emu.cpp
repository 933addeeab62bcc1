/*
 * decode_emu.cpp -- runs a rendered decode template on the CPU through
 * cuda_emu.h.  Compiled at test time with -DEMU_SOURCE="<rendered file>" into a
 * shared object that tests/unit/test_decode_emu.c loads; emu_launch runs one
 * entry of the template over a grid, exactly as cuLaunchKernel would.
 */
#include "cuda_emu.h"

#include EMU_SOURCE

static void run_kernel(const void *p) { fmqa_decode_kernel(*(const fmqa_decode_params *)p); }
static void run_combine(const void *p) { fmqa_decode_combine(*(const fmqa_decode_params *)p); }
static void run_scores(const void *p) { fmqa_decode_scores(*(const fmqa_decode_params *)p); }

extern "C" int emu_launch(const char *entry, const fmqa_decode_params *p, const unsigned grid[3],
                          unsigned threads, unsigned dyn_smem) {
    if (!strcmp(entry, "fmqa_decode_kernel"))
        emu_grid(run_kernel, p, grid, threads, dyn_smem);
    else if (!strcmp(entry, "fmqa_decode_combine"))
        emu_grid(run_combine, p, grid, threads, dyn_smem);
    else if (!strcmp(entry, "fmqa_decode_scores"))
        emu_grid(run_scores, p, grid, threads, dyn_smem);
    else
        return -1;
    return 0;
}
