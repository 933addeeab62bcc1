/*
 * test_append_emu.c -- the append template's real source run on the CPU
 * against the float64 reference, no GPU needed.
 *
 * Each variant goes through the same path as fmqa_append: rt_problem_check,
 * the template's Lua (default config, or one with parameters overridden,
 * checked by valid()) for the launch plan, gen_render for the source,
 * rt_append_params for the kernel parameters from public fmqa_append_args;
 * then the rendered source is compiled by the host C++ compiler with
 * tests/emu/cuda_emu.h (an emulation of what the kernel uses of CUDA: see
 * there) and runs over its grid on host memory.  Inputs, poisoned caches and
 * the checks are those of the GPU test (tests/support/append_check.h): rows
 * that must be written against ref_append_args, every other byte still
 * poisoned, q rotated in place when passed.  Each compiled variant runs twice,
 * with q passed and without.
 *
 * Coverage in ~27 compiles rather than the GPU test's 216: over the layouts
 * (contiguous d 64/96/128/256 with one dv != d, paged across page boundaries,
 * ring with sinks and wrap, more new tokens than ring slots, positions 1e5 and
 * 2^30) the variants take each (input dtype, cache dtype, RoPE) triple at
 * least once, and each config (default, THREADS_PER_ROW=16,VEC=2 and
 * THREADS_PER_ROW=4,VEC=4,ROWS_PER_CTA=8) meets every RoPE mode and cache
 * dtype.  Without a C++ compiler ($CXX or c++) the test is skipped.
 * $FASTMQA_TEMPLATE_DIR, if set, replaces the source tree's templates/ (to try
 * a changed kernel, or that a deliberately broken one fails).
 */
#define _POSIX_C_SOURCE 200809L

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "append_check.h"

static const char *const CONFIGS[3] = {
    "", "THREADS_PER_ROW=16,VEC=2", "THREADS_PER_ROW=4,VEC=4,ROWS_PER_CTA=8"};
static const fmqa_dtype IN[2] = {FMQA_DTYPE_F16, FMQA_DTYPE_BF16};
static const fmqa_dtype KV[4] = {FMQA_DTYPE_F16, FMQA_DTYPE_BF16, FMQA_DTYPE_INT8,
                                 FMQA_DTYPE_FP8_E4M3};

/* Variant k (0..23) of a layout: RoPE k % 3, cache dtype k % 4 (together all
 * twelve pairs over k < 12), input dtype k / 12 % 2; config (k + shift) % 3. */
static void run_variant(const append_case *ac, int k, int shift)
{
    append_emu_case(ac, IN[k / 12 % 2], KV[k % 4], (fmqa_rope)(k % 3),
                    CONFIGS[(k + shift) % 3]);
}

/* Layout i of the list takes variants 3i .. 3i+2 (mod 24), configs shifted by
 * i so that each config meets each RoPE mode. */
static void run_layouts(const append_case *cases, int n, int first)
{
    for (int i = 0; i < n; i++)
        for (int j = 0; j < 3; j++)
            run_variant(&cases[i], (3 * (first + i) + j) % 24, first + i);
}

#define PAGED FMQA_FLAG_PAGED
#define RING FMQA_FLAG_RING

/* The GPU test's layouts.  Starts: position 0, the last slots of the
 * capacity, an odd middle. */
static const append_case CONTIGUOUS[] = {
    {"contig d128", 3, 8, 2, 128, 128, 5, 64, 0, 0, 0, 0, {0, 59, 17}, 0, 0, 0, 0, FMQA_KV_SCALE_TOKEN_HEAD, NULL},
    {"contig d64 dv128 mqa", 2, 8, 1, 64, 128, 3, 40, 0, 0, 0, 0, {37, 1}, 0, 0, 0, 0, FMQA_KV_SCALE_TOKEN_HEAD, NULL},
    {"contig d96", 2, 4, 4, 96, 96, 2, 40, 0, 0, 0, 0, {38, 0}, 0, 0, 0, 0, FMQA_KV_SCALE_TOKEN_HEAD, NULL},
    {"contig d256", 1, 4, 2, 256, 256, 7, 16, 0, 0, 0, 0, {9}, 0, 0, 0, 0, FMQA_KV_SCALE_TOKEN_HEAD, NULL},
};
/* Tokens cross page boundaries (15 -> 16, 31 -> 32); ring sinks and the
 * wrap; 24 tokens into 16 ring slots; far positions. */
static const append_case PAGED_RING[] = {
    {"paged16 d128", 3, 8, 2, 128, 128, 5, 64, PAGED, 16, 0, 0, {13, 59, 29}, 0, 0, 0, 0, FMQA_KV_SCALE_TOKEN_HEAD, NULL},
    {"paged32 d64", 2, 4, 2, 64, 64, 9, 96, PAGED, 32, 0, 0, {28, 0}, 0, 0, 0, 0, FMQA_KV_SCALE_TOKEN_HEAD, NULL},
    {"ring w16 s4", 3, 8, 2, 128, 128, 5, 4096, RING, 0, 16, 4, {0, 2, 1000}, 0, 0, 0, 0, FMQA_KV_SCALE_TOKEN_HEAD, NULL},
    {"ring n24>w16", 2, 4, 1, 128, 128, 24, 4096, RING, 0, 16, 4, {3, 100}, 0, 0, 0, 0, FMQA_KV_SCALE_TOKEN_HEAD, NULL},
    {"ring paged pos 1e5, 2^30", 2, 8, 2, 128, 128, 3, 1 << 30, RING | PAGED, 16, 32, 4,
     {100000, (1 << 30) - 8}, 0, 0, 0, 0, FMQA_KV_SCALE_TOKEN_HEAD, NULL},
};

Test(append_emu, contiguous, .timeout = 900)
{
    run_layouts(CONTIGUOUS, 4, 0);
}

Test(append_emu, paged_ring, .timeout = 900)
{
    run_layouts(PAGED_RING, 5, 4);
}

/* Engines' cache layouts (fastmqa.h): FlashInfer's CSR page table and vLLM's
 * slot mapping (every 5th token -1: not written, its q still rotated), K and
 * its scales HND beside NHD V; tokens cross page boundaries. */
static const append_case LAYOUTS[] = {
    {"csr paged16 d128", 3, 8, 2, 128, 128, 5, 64, PAGED | FMQA_FLAG_PAGE_CSR, 16, 0, 0,
     {13, 59, 29}, 0, 0, 0, 0, FMQA_KV_SCALE_TOKEN_HEAD, NULL},
    {"slots paged32 d64", 2, 4, 2, 64, 64, 9, 96, PAGED | FMQA_FLAG_SLOT_MAPPING, 32, 0, 0,
     {28, 0}, 0, 0, 0, 0, FMQA_KV_SCALE_TOKEN_HEAD, NULL},
};

Test(append_emu, layout_csr_slot_mapping, .timeout = 900)
{
    run_layouts(LAYOUTS, 2, 9);
}

/* Per-head and per-tensor scales (the caller's, fixed): codes of x / scale
 * saturating, no scale written, the strides the granularity ignores odd
 * garbage, K's and V's per-head scales at different strides.  Variants with
 * 8-bit caches only: int8 unrotated, fp8 NEOX, int8 GPTJ from bf16, fp8
 * unrotated from bf16 (k = 2, 7, 14, 15). */
static const append_case SCALES[] = {
    {"contig d128 head scales", 3, 8, 2, 128, 128, 5, 64, 0, 0, 0, 0, {0, 59, 17},
     0, 0, 0, 0, FMQA_KV_SCALE_HEAD, NULL},
    {"paged16 d64 tensor scale", 2, 4, 2, 64, 64, 9, 96, PAGED, 16, 0, 0, {13, 0},
     0, 0, 0, 0, FMQA_KV_SCALE_TENSOR, NULL},
    {"ring w16 s4 head scales", 2, 8, 2, 128, 128, 24, 4096, RING, 0, 16, 4, {3, 100},
     0, 0, 0, 0, FMQA_KV_SCALE_HEAD, NULL},
    {"contig d96 tensor scale", 2, 4, 4, 96, 96, 2, 40, 0, 0, 0, 0, {38, 0},
     0, 0, 0, 0, FMQA_KV_SCALE_TENSOR, NULL},
};

Test(append_emu, fixed_scales, .timeout = 900)
{
    static const int variants[] = {2, 7, 14, 15};
    for (int i = 0; i < 4; i++)
        run_variant(&SCALES[i], variants[i], i);
}

/* A cache compacted by fmqa_compress: tokens written at start[b] + t, K and q
 * rotated at rope_pos[b] + t (their true positions, far past their slots).
 * Variants: f16 NEOX, int8 GPTJ, fp8 NEOX from bf16, bf16 GPTJ from bf16
 * (k = 4, 2, 19, 17). */
static const int32_t COMPACT_POS3[3] = {1000, 136, 20}, COMPACT_POS2[2] = {4093, 77};
static const append_case COMPACTED[] = {
    {"contig d128 rope_pos", 3, 8, 2, 128, 128, 5, 64, 0, 0, 0, 0, {0, 59, 17},
     0, 0, 0, 0, FMQA_KV_SCALE_TOKEN_HEAD, COMPACT_POS3},
    {"paged16 d64 rope_pos", 2, 4, 2, 64, 64, 9, 96, PAGED, 16, 0, 0, {13, 0},
     0, 0, 0, 0, FMQA_KV_SCALE_TOKEN_HEAD, COMPACT_POS2},
};

Test(append_emu, compacted_rope_pos, .timeout = 900)
{
    static const int variants[] = {4, 2, 19, 17};
    for (int i = 0; i < 4; i++)
        run_variant(&COMPACTED[i % 2], variants[i], i);
}
