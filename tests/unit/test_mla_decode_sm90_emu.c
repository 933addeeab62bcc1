/*
 * test_mla_decode_sm90_emu.c -- the mla_decode_sm90 template's real source
 * (wgmma, sm_90a) run on the CPU emulator against the float64 reference,
 * no GPU needed (tests/support/mla_check.c: padded strides, shuffled pages,
 * pages past a sequence's end unmapped, NaN-poisoned outputs and
 * workspace).  Heads 16, 32 and 128 (two 64-row CTAs), 1 and 2 query tokens
 * with the causal mask among them, lengths 1, 17 and 1000 (an odd number of
 * blocks: a pair's second block past the end), forced splits through the
 * shared combine, both block sizes and pipeline depths, f16, bf16 and fp8
 * latents, q in the other type than the latent.  The emulator computes every
 * wgmma in double: about 10^7 products a second.
 */
#include <criterion/criterion.h>

#include "mla_check.h"

#define MLA "op=mla_decode,kv_heads=1,d=576,dv=512,"

static void run_all(const mla_case *cases, size_t n)
{
    for (size_t i = 0; i < n; i++)
        mla_check_run("mla_decode_sm90", "mla_decode_sm90_emu.cpp", &cases[i]);
}

/* Lengths 1, 17 and 1000 in one batch; default config (32-token blocks, two
 * stages) and one stage of 64-token blocks. */
Test(mla_decode_sm90_emu, lengths, .timeout = 900)
{
    static const mla_case cases[] = {
        {MLA "batch=3,heads=16,kv_len=1000,q=bf16,kv=bf16,out=bf16,flags=causal|lse", "", {1, 17, 1000}, "sm_90a", 0},
        {MLA "batch=2,heads=32,tq=2,kv_len=300,flags=causal|lse", "BLOCK_N=64,PIPE=1,SPLITS=1", {300, 17},
         "sm_90a", 0},
    };
    run_all(cases, sizeof cases / sizeof cases[0]);
}

/* Paged (64 and 16 tokens a page, shuffled tables), forced splits merged by
 * the combine, q f16 against a bf16 latent. */
Test(mla_decode_sm90_emu, pages_splits, .timeout = 900)
{
    static const mla_case cases[] = {
        {MLA "batch=2,heads=16,tq=2,kv_len=400,page=64,q=f16,kv=bf16,out=bf16,flags=causal|paged|lse",
         "SPLITS=4", {400, 130}, "sm_90a", 0},
        {MLA "batch=2,heads=32,kv_len=200,page=16,flags=paged|lse", "BLOCK_N=64,PIPE=1,SPLITS=2", {200, 1},
         "sm_90a", 0},
    };
    run_all(cases, sizeof cases / sizeof cases[0]);
}

/* fp8 e4m3 latents with per-token scales, dequantized into 16-bit tiles:
 * one and two raw stages, paged and contiguous, f16 and bf16 q. */
Test(mla_decode_sm90_emu, fp8, .timeout = 900)
{
    static const mla_case cases[] = {
        {MLA "batch=2,heads=16,tq=2,kv_len=300,page=64,q=bf16,kv=fp8_e4m3,out=bf16,flags=causal|paged|lse",
         "SPLITS=2", {300, 40}, "sm_90a", 0},
        {MLA "batch=1,heads=32,kv_len=150,kv=fp8_e4m3,flags=causal|lse", "PIPE=1,SPLITS=1", {150}, "sm_90a", 0},
    };
    run_all(cases, sizeof cases / sizeof cases[0]);
}

/* 128 heads: two row blocks of 64, each CTA the full 64 rows. */
Test(mla_decode_sm90_emu, wide, .timeout = 900)
{
    static const mla_case cases[] = {
        {MLA "batch=1,heads=128,tq=2,kv_len=100,page=64,q=bf16,kv=bf16,out=bf16,flags=causal|paged|lse",
         "SPLITS=2", {100}, "sm_90a", 0},
    };
    run_all(cases, sizeof cases / sizeof cases[0]);
}
