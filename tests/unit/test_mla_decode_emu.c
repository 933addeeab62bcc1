/*
 * test_mla_decode_emu.c -- the mla_decode template's real source run on the
 * CPU (tests/emu/cuda_emu.h) against the float64 reference, no GPU needed.
 *
 * Each case runs through tests/support/mla_check.c (the path of
 * fmqa_mla_decode; padded strides, shuffled pages, NaN wherever no readable
 * position is, unmapped pages, NaN-poisoned outputs and workspace; compared
 * with ref_decode).
 * The emulator is slow (about 10^7 emulated MMA lanes a second): cases keep
 * heads x tokens small where the point allows; the long (4099) and wide
 * (H = 128) cases use few query rows or few positions.
 */
#include <string.h>

#include <criterion/criterion.h>

#include "mla_check.h"
#include "test_support.h"

#define DC 512

static void run_all(const mla_case *cases, size_t n)
{
    for (size_t i = 0; i < n; i++)
        mla_check_run("mla_decode", "mla_decode_emu.cpp", &cases[i]);
}

#define MLA "op=mla_decode,kv_heads=1,d=576,dv=512,"

/* Lengths 1, 17 and 1000 in one batch, 16 heads; bf16 and f16. */
Test(mla_decode_emu, lengths, .timeout = 900)
{
    static const mla_case cases[] = {
        {MLA "batch=3,heads=16,kv_len=1000,q=bf16,kv=bf16,out=bf16,flags=causal|lse", "", {1, 17, 1000}, NULL, 0},
        {MLA "batch=2,heads=16,tq=2,kv_len=130,flags=causal|lse", "SPLITS=1,WARPS_D=2,BLOCK_N=32", {130, 2}, NULL, 0},
    };
    run_all(cases, sizeof cases / sizeof cases[0]);
}

/* Paged caches (16 and 64 tokens a page, shuffled), 1 to 4 query tokens with
 * the causal mask among them, forced splits through the shared combine. */
Test(mla_decode_emu, pages_tokens_splits, .timeout = 900)
{
    static const mla_case cases[] = {
        {MLA "batch=2,heads=32,tq=2,kv_len=200,page=16,q=bf16,kv=bf16,out=bf16,flags=causal|paged|lse",
         "SPLITS=4,BLOCK_N=32,WARPS_D=2", {200, 17}, NULL, 0},
        {MLA "batch=2,heads=16,tq=3,kv_len=300,page=64,flags=causal|paged|lse", "SPLITS=2", {300, 3}, NULL, 0},
        {MLA "batch=1,heads=16,tq=4,kv_len=150,page=16,flags=paged|lse", "", {150}, NULL, 0},
        /* 64 threads for 72 chunks a row: two column passes; 32-row runs
         * cross 16-token pages */
        {MLA "batch=2,heads=16,kv_len=90,page=16,flags=causal|paged", "SPLITS=1,WARPS_M=1,WARPS_D=2,BLOCK_N=32",
         {90, 37}, NULL, 0},
    };
    run_all(cases, sizeof cases / sizeof cases[0]);
}

/* A CSR page table (FlashInfer's paged_kv, lengths from the table): split,
 * fp8, lengths that fill their last page and that do not. */
Test(mla_decode_emu, layout_csr, .timeout = 900)
{
    static const mla_case cases[] = {
        {MLA "batch=3,heads=16,tq=2,kv_len=200,page=16,flags=causal|paged|csr|lse", "SPLITS=2",
         {200, 17, 64}, NULL, 0},
        {MLA "batch=2,heads=16,kv_len=170,page=64,q=bf16,kv=fp8_e4m3,out=bf16,flags=causal|paged|csr|lse",
         "", {170, 128}, NULL, 0},
    };
    run_all(cases, sizeof cases / sizeof cases[0]);
}

/* fp8 latent with per-token scales: the sm_90 cvt path and the sm_80 bit path
 * (values * 2^-8 folded back through the scales). */
Test(mla_decode_emu, fp8, .timeout = 900)
{
    static const mla_case cases[] = {
        {MLA "batch=2,heads=16,tq=2,kv_len=170,page=64,q=bf16,kv=fp8_e4m3,out=bf16,flags=causal|paged|lse",
         "SPLITS=2", {170, 40}, NULL, 0},
        {MLA "batch=1,heads=16,kv_len=100,kv=fp8_e4m3,flags=causal|lse", "WARPS_D=2,BLOCK_N=32", {100}, "sm_80", 0},
    };
    run_all(cases, sizeof cases / sizeof cases[0]);
}

/* A long sequence (4099 positions, 64-token pages, fp8, 8 splits) and 128
 * heads (two 64-row CTAs per sequence). */
Test(mla_decode_emu, long_and_wide, .timeout = 900)
{
    static const mla_case cases[] = {
        {MLA "batch=1,heads=16,kv_len=4099,page=64,kv=fp8_e4m3,q=bf16,out=bf16,flags=causal|paged|lse",
         "SPLITS=8", {4099}, NULL, 0},
        {MLA "batch=1,heads=128,kv_len=40,q=bf16,kv=bf16,out=bf16,flags=causal|lse",
         "WARPS_M=4,WARPS_D=2,BLOCK_N=32,SPLITS=1", {40}, NULL, 0},
    };
    run_all(cases, sizeof cases / sizeof cases[0]);
}

/* Sliding windows with sink tokens and ring caches (decode's rules through
 * fmqa_seq.cuh), 1 to 4 query tokens, learned sinks with and without splits
 * (joined in the kernel or in the combine).  A short sequence that the window
 * does not cut sits beside a long one; the ring cases wrap (kv_len several
 * times the ring) and their 32- and 64-row copy runs cross the sink/window
 * seam, the wrap and 16-token pages; 8 heads put two query tokens in one
 * 16-row tile. */
Test(mla_decode_emu, windows_sinks_ring, .timeout = 900)
{
    static const mla_case cases[] = {
        {MLA "batch=2,heads=16,kv_len=200,window=48,sinks=4,flags=causal|lse", "SPLITS=2,BLOCK_N=32,WARPS_D=2",
         {200, 30}, NULL, 1},
        {MLA "batch=2,heads=16,tq=2,kv_len=300,window=100,sinks=5,draft_slots=1,page=16,"
             "flags=causal|paged|ring|lse", "SPLITS=4,BLOCK_N=32,WARPS_D=2", {300, 45}, NULL, 0},
        {MLA "batch=1,heads=16,tq=3,kv_len=257,window=33,sinks=2,draft_slots=2,kv=fp8_e4m3,"
             "flags=causal|ring|lse", "SPLITS=1,BLOCK_N=64", {257}, "sm_80", 1},
        {MLA "batch=2,heads=16,tq=4,kv_len=400,window=100,sinks=3,page=64,q=bf16,kv=bf16,out=bf16,"
             "flags=causal|paged|lse", "SPLITS=4,BLOCK_N=32,WARPS_D=2", {400, 4}, NULL, 1},
        /* 8 heads: rows g and g + 8 of a 16-row tile belong to different
         * query tokens, whose windows differ */
        {MLA "batch=1,heads=8,tq=3,kv_len=100,window=20,sinks=2,flags=causal|lse", "BLOCK_N=32,WARPS_D=2",
         {100}, NULL, 0},
    };
    run_all(cases, sizeof cases / sizeof cases[0]);
}

/* The persistent schedule (fmqa_sched.cuh, decode's): lengths 1 and 4099
 * (1000) in one batch of more sequences than the device's 2 (3) SMs, so
 * pieces cross sequences and the long one splits across every CTA;
 * contiguous bf16 and paged fp8 (64-token pages: copy runs as units). */
Test(mla_decode_emu, sched_ragged, .timeout = 900)
{
    static const mla_case cases[] = {
        {MLA "batch=5,heads=16,kv_len=4099,q=bf16,kv=bf16,out=bf16,flags=causal|lse", "",
         {1, 4099, 1, 1, 17}, "sm_90@2", 0},
        {MLA "batch=6,heads=32,kv_len=1000,page=64,kv=fp8_e4m3,flags=causal|paged|lse", "",
         {1, 1, 1000, 1, 2, 1}, "sm_90@3", 0},
    };
    run_all(cases, sizeof cases / sizeof cases[0]);
}

/* FMQA_FLAG_BATCH_INVARIANT: the same batch (lengths 600, 1 and 300, the
 * same inputs; 600 is two 8-tile chunks) on 132 and on 3 SMs gives the same
 * o and lse bits (each run also checked against the reference); without the
 * flag the two runs differ, or the test would prove nothing. */
Test(mla_decode_emu, batch_invariant, .timeout = 900)
{
#define INV_SPEC(f) MLA "batch=3,heads=16,kv_len=600,flags=causal|lse" f
    static const mla_case runs[] = {
        {INV_SPEC("|invariant"), "", {600, 1, 300}, "sm_90", 0},
        {INV_SPEC("|invariant"), "", {600, 1, 300}, "sm_90@3", 0},
        {INV_SPEC(""), "", {600, 1, 300}, "sm_90", 0},
        {INV_SPEC(""), "", {600, 1, 300}, "sm_90@3", 0},
    };
    fmqa_mla_decode_args m[4];
    const uint64_t seed = fmqa_test_seed("mla_decode_emu::batch_invariant") | 1;
    for (int i = 0; i < 4; i++)
        mla_check_run_into("mla_decode", "mla_decode_emu.cpp", &runs[i], seed, &m[i]);
    const size_t rows = 3 * 16;
    for (int i = 0; i < 4; i += 2) {
        const int same = !memcmp(m[i].o, m[i + 1].o, rows * DC * 2) && !memcmp(m[i].lse, m[i + 1].lse, rows * 4);
        if (i == 0)
            cr_expect(same, "batch-invariant: o or lse differ between 132 and 3 SMs");
        else
            cr_expect(!same, "the free schedule gave the same bits on 132 and 3 SMs: the test shows nothing");
    }
#undef INV_SPEC
}
