/*
 * mla_decode_sm90_emu.cpp -- runs a rendered mla_decode_sm90 template on the
 * CPU through cuda_emu.h (sm_90a), for tests/unit/test_mla_decode_sm90_emu.c
 * (through tests/support/mla_check.c).
 */
#include "cuda_emu.h"

#include EMU_SOURCE

static void run_kernel(const void *p) { fmqa_mla_decode_sm90_kernel(*(const fmqa_decode_params *)p); }
static void run_combine(const void *p) { fmqa_mla_decode_sm90_combine(*(const fmqa_decode_params *)p); }

extern "C" int emu_launch(const char *entry, const fmqa_decode_params *p, const unsigned grid[3],
                          unsigned threads, unsigned dyn_smem) {
    if (!strcmp(entry, "fmqa_mla_decode_sm90_kernel"))
        emu_grid(run_kernel, p, grid, threads, dyn_smem);
    else if (!strcmp(entry, "fmqa_mla_decode_sm90_combine"))
        emu_grid(run_combine, p, grid, threads, dyn_smem);
    else
        return -1;
    return 0;
}
