/*
 * prefill_emu.cpp -- runs a rendered prefill template on the CPU through
 * cuda_emu.h.  Compiled at test time with -DEMU_SOURCE="<rendered file>" into a
 * shared object that tests/unit/test_prefill_emu.c (and test_prefill_scores_emu.c)
 * loads; emu_launch runs a kernel of the plan (fmqa_prefill_kernel or
 * fmqa_prefill_scores) over a grid, exactly as cuLaunchKernel would.
 */
#include "cuda_emu.h"

#include EMU_SOURCE

static void run_kernel(const void *p) { fmqa_prefill_kernel(*(const fmqa_prefill_params *)p); }
static void run_scores(const void *p) { fmqa_prefill_scores(*(const fmqa_prefill_params *)p); }

extern "C" int emu_launch(const char *entry, const fmqa_prefill_params *p, const unsigned grid[3],
                          unsigned threads, unsigned dyn_smem) {
    if (!strcmp(entry, "fmqa_prefill_kernel"))
        emu_grid(run_kernel, p, grid, threads, dyn_smem);
    else if (!strcmp(entry, "fmqa_prefill_scores"))
        emu_grid(run_scores, p, grid, threads, dyn_smem);
    else
        return -1;
    return 0;
}
