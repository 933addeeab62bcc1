/*
 * test_scores_emu.c -- heavy-hitter scores (FMQA_FLAG_SCORES) of the decode
 * template run on the CPU emulator against the float64 reference
 * (ref_decode_scores), no GPU needed.
 *
 * The caller's buffer starts with random values (a previous step's scores)
 * wherever a score may land and NaN in the padding between rows, so the test
 * shows that the kernels add rather than overwrite, touch nothing outside the
 * sequence's slots, and accumulate steps: the same call made twice must add
 * the masses twice.  Cases force split-KV (the final LSE spans splits), cover
 * groups and several query tokens (the mass sums over heads and tokens),
 * windows with sinks (masses only on visible positions), rings (masses on
 * slots), paged (2-D and CSR tables) and 8-bit caches, warps sharing a tile, learned sinks and
 * soft-capping (the LSE the masses are normalised by), and the persistent
 * schedule cutting segments into pieces that start and end inside tiles
 * (few SMs, odd CTA counts, batch-invariant chunks).
 */
#define _POSIX_C_SOURCE 200809L

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "decode_emu.h"
#include "gen.h"
#include "ref.h"
#include "test_support.h"

typedef struct scase {
    const char *spec;   /* must carry flags=...|scores                       */
    const char *config;
    int32_t lens[8];
    const char *arch;   /* NULL: sm_90; "sm_90@3": 3 SMs (fmqa_emu_run)     */
    int sinks;          /* learned sink logits (fmqa_emu_inputs_make)        */
} scase;

/* Added to sequence 0's kv_lens for the kernels only (not the reference): a
 * length past kv_len, which they clamp to it (length_past_kv_len_is_clamped;
 * each test runs in a process of its own). */
static int32_t over_kv_len;

/* Scores buffer [b, hk, slot] with 8 NaN floats of padding after each row. */
static void run_case(const scase *sc)
{
    fmqa_err err;
    fmqa_problem p;
    cr_assert_eq(gen_problem_parse(sc->spec, &p, &err), FMQA_OK, "%s: %s", sc->spec, err.msg);
    cr_assert(p.flags & FMQA_FLAG_SCORES);
    ref_rng r;
    uint64_t seed = fmqa_test_seed(sc->spec);
    ref_rng_seed(&r, seed);
    static fmqa_emu_inputs in;
    fmqa_emu_inputs_make(&p, sc->lens, sc->sinks, &r, &in);
    const int64_t slots = fmqa_cache_slots(&p);
    const int64_t row = slots + 8, n = (int64_t)p.batch * p.num_kv_heads * row;
    float *buf = fmqa_emu_poisoned(n * sizeof(float), 16);
    double *want = calloc(n, sizeof *want);
    for (int64_t i = 0; i < n; i++)
        if (i % row < slots) {
            buf[i] = (float)ref_rng_uniform(&r);
            want[i] = buf[i];
        } else {
            want[i] = NAN; /* untouched padding: both NaN */
        }
    in.a.scores = buf;
    in.a.scores_stride_head = row, in.a.scores_stride_batch = p.num_kv_heads * row;
    char cfg[GEN_CONFIG_TEXT_CAP];
    int splits = 0;
    int32_t *lens = (int32_t *)in.a.kv_lens; /* NULL with a CSR table */
    for (int step = 0; step < 2; step++) {
        if (over_kv_len)
            lens[0] += over_kv_len;
        splits = fmqa_emu_decode(&p, sc->config, sc->arch, 0, &in, cfg);
        if (over_kv_len)
            lens[0] -= over_kv_len;
        /* the reference adds into the dense [b, hk, slot] part of want */
        double *dense = calloc((size_t)p.batch * p.num_kv_heads * slots, sizeof *dense);
        cr_assert_eq(ref_decode_scores(&p, &in.a, in.n_pages, dense, &err), FMQA_OK, "%s", err.msg);
        for (int64_t i = 0; i < n; i++)
            if (i % row < slots)
                want[i] += dense[i / row * slots + i % row];
        free(dense);
    }
    /* Each mass is 2^(x - L) of an f32 logit and LSE (the kernel's, from f16
     * or bf16 operands): observed ~2e-4 relative over <= Tq * G rows and two
     * steps. */
    int64_t bad = 0, worst = -1;
    double max_rel = 0.0;
    for (int64_t i = 0; i < n; i++) {
        if (isnan(want[i])) {
            bad += !isnan(buf[i]);
            continue;
        }
        double e = fabs(buf[i] - want[i]) / fmax(want[i], 1e-3);
        if (isnan(e))
            bad++, worst = i; /* a NaN score (e.g. a row's LSE never written) */
        else if (e > max_rel)
            max_rel = e, worst = i;
    }
    fprintf(stderr, "%s [%s] splits %d: scores max rel %.2e at %lld, %lld NaN or padding written (seed %llu)\n",
            sc->spec, cfg, splits, max_rel, (long long)worst, (long long)bad,
            (unsigned long long)seed);
    cr_expect(bad == 0 && max_rel <= 2e-3, "%s [%s]: scores max rel %g at %lld (%g vs %g), %lld "
              "NaN or padding written", sc->spec, cfg, max_rel, (long long)worst,
              worst >= 0 ? buf[worst] : 0.0, worst >= 0 ? want[worst] : 0.0, (long long)bad);
    free(want);
}

static void run_all(const scase *cases, size_t n)
{
    for (size_t i = 0; i < n; i++)
        run_case(&cases[i]);
}

Test(scores_emu, split_groups_tokens, .timeout = 900)
{
    static const scase cases[] = {
        /* split-KV forced, G = 4; the short sequence leaves splits empty */
        {"op=decode,batch=3,kv_heads=2,heads=8,d=64,kv_len=200,flags=causal|scores", "SPLITS=4,BLOCK_N=32,WARPS_N=2",
         {200, 3, 0}, NULL, 0},
        /* unsplit, 3 query tokens x G = 6 rows, warps sharing tiles, bf16 */
        {"op=decode,batch=2,kv_heads=1,heads=6,d=64,tq=3,kv_len=150,q=bf16,kv=bf16,out=bf16,"
         "flags=causal|lse|scores", "SPLITS=1,BLOCK_N=64,WARPS_N=2", {150, 40}, NULL, 0},
        /* MHA, tree mask, 8-bit cache, splits */
        {"op=decode,batch=2,kv_heads=4,heads=4,d=64,tq=4,kv_len=130,kv=int8,flags=tree|scores",
         "SPLITS=2", {130, 77}, NULL, 0},
    };
    run_all(cases, sizeof cases / sizeof cases[0]);
}

Test(scores_emu, windows_sinks_rings_pages, .timeout = 900)
{
    static const scase cases[] = {
        {"op=decode,batch=2,kv_heads=1,heads=4,d=64,tq=2,kv_len=300,window=50,sinks=4,"
         "flags=causal|scores", "SPLITS=2,BLOCK_N=32,WARPS_N=2", {300, 70}, NULL, 0},
        {"op=decode,batch=2,kv_heads=2,heads=4,d=64,tq=1,kv_len=300,window=40,sinks=5,page=16,"
         "kv=fp8_e4m3,flags=causal|paged|ring|scores", "SPLITS=2,BLOCK_N=32,WARPS_N=1", {300, 44}, NULL, 0},
        {"op=decode,batch=2,kv_heads=2,heads=16,d=128,kv_len=180,page=32,flags=causal|paged|scores",
         "SPLITS=4,WARPS_M=1,BLOCK_N=32,WARPS_N=2", {180, 97}, NULL, 0},
        /* a CSR page table: the lengths are the table's (kv_lens is NULL) */
        {"op=decode,batch=3,kv_heads=2,heads=8,d=64,kv_len=160,page=16,flags=causal|paged|csr|scores",
         "SPLITS=2,BLOCK_N=32,WARPS_N=2", {160, 37, 16}, NULL, 0},
    };
    run_all(cases, sizeof cases / sizeof cases[0]);
}

/* kv_lens is device data the host cannot check: a length past kv_len (here by
 * 1000, into the next sequence's rows and past the buffer) must neither read
 * nor add scores past the sequence's cache; the kernels clamp it to kv_len. */
Test(scores_emu, length_past_kv_len_is_clamped, .timeout = 900)
{
    static const scase cases[] = {
        {"op=decode,batch=2,kv_heads=2,heads=8,d=64,kv_len=160,flags=causal|scores",
         "SPLITS=2,BLOCK_N=32,WARPS_N=2", {160, 160}, NULL, 0},
    };
    over_kv_len = 1000;
    run_all(cases, sizeof cases / sizeof cases[0]);
}

/* The persistent schedule: 16 or 8 CTAs cut every segment at positions that
 * are no multiple of anything (pieces start and end inside tiles and 16-
 * position groups); the sm_90@3 default grid; batch-invariant chunks.  With
 * learned sinks, soft-capping and a ring with draft slots. */
Test(scores_emu, pieces_sinks_softcap, .timeout = 900)
{
    static const scase cases[] = {
        {"op=decode,batch=3,kv_heads=2,heads=8,d=64,kv_len=211,flags=causal|lse|scores",
         "SPLITS=16,BLOCK_N=32,WARPS_N=2", {211, 9, 150}, NULL, 1},
        {"op=decode,batch=2,kv_heads=1,heads=4,d=64,tq=2,kv_len=190,softcap=20,"
         "flags=causal|scores", "SPLITS=8,BLOCK_N=64,WARPS_N=1", {190, 61}, NULL, 0},
        {"op=decode,batch=4,kv_heads=2,heads=4,d=64,kv_len=160,page=16,kv=int8,"
         "flags=causal|paged|scores", "", {160, 1, 33, 97}, "sm_90@3", 1},
        {"op=decode,batch=2,kv_heads=1,heads=6,d=64,tq=3,kv_len=600,window=40,sinks=4,"
         "draft_slots=2,flags=causal|ring|scores", "SPLITS=4,BLOCK_N=32,WARPS_N=1", {600, 47}, NULL, 1},
        {"op=decode,batch=2,kv_heads=2,heads=8,d=64,kv_len=700,flags=causal|invariant|scores",
         "BLOCK_N=32,WARPS_N=2", {700, 301}, NULL, 0},
    };
    run_all(cases, sizeof cases / sizeof cases[0]);
}
