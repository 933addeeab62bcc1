/*
 * test_mla_decode_emu.c -- the mla_decode template's real source run on the
 * CPU (tests/emu/cuda_emu.h) against the float64 reference, no GPU needed.
 *
 * Each case takes the path of fmqa_mla_decode: mla_decode.lua's default
 * config (or one with parameters overridden) gives the launch plan,
 * gen_render the source, rt_mla_decode_args + rt_decode_params the kernel
 * parameters from public fmqa_mla_decode_args; each kernel of the plan runs
 * over its grid in the emulator.  The latent cache, its scales and the
 * queries have padded strides (a wrong stride reads another row), pages are
 * shuffled, every row no readable position holds is NaN (0xFF: behind every
 * window, overwritten in a ring, or beyond the length), pages holding none
 * are unmapped (-1), and the outputs and the workspace are NaN too, so a
 * stray read or a missing write fails.  o and lse are
 * compared with ref_decode of the same arguments (V = the latent's first 512).
 * The emulator is slow (about 10^7 emulated MMA lanes a second): cases keep
 * heads x tokens small where the point allows; the long (4099) and wide
 * (H = 128) cases use few query rows or few positions.
 */
#define _POSIX_C_SOURCE 200809L

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "fmqa_params.h"
#include "gen.h"
#include "ref.h"
#include "rt.h"
#include "test_support.h"

typedef int (*emu_launch_fn)(const char *entry, const fmqa_decode_params *p,
                             const unsigned grid[3], unsigned threads, unsigned dyn_smem);

/* One case: problem spec, config overrides ("" = default), the first
 * MAX_LENS sequences' lengths (0, and every later one: drawn in [q_tokens,
 * kv_len]), the device preset (NULL: sm_90; "sm_90@2": with 2 SMs)
 * and learned sinks (1: one logit per head drawn from [-4, 8), those near 8
 * outweighing every score). */
#define MAX_LENS 8

typedef struct mcase {
    const char *spec;
    const char *config;
    int32_t lens[MAX_LENS];
    const char *arch;
    int sinks;
} mcase;

#define DK 576
#define DC 512

static void *poisoned(size_t bytes, size_t align) { return fmqa_test_guarded(bytes, align, 0xff); }

/* Public MLA arguments over guarded host buffers (never freed: the process
 * ends).  Rows are padded: kv by 16 bytes, scales by one float, q heads by
 * 8 elements.  Positions live in their cache slots (ref_cache_slot: a ring
 * wraps). */
static void make_inputs(const fmqa_problem *p, const int32_t *given, int sinks, ref_rng *r,
                        fmqa_mla_decode_args *a, int64_t *n_pages)
{
    const int64_t B = p->batch, T = p->kv_len, H = p->num_q_heads, Tq = p->q_tokens;
    const int paged = (p->flags & FMQA_FLAG_PAGED) != 0;
    const int64_t slots = fmqa_cache_slots(p);
    const int64_t ps = paged ? p->page_size : slots, per_seq = (slots + ps - 1) / ps;
    const int64_t outer = paged ? B * per_seq + 2 : B; /* two pages never used */
    const size_t ke = fmqa_dtype_size(p->kv_dtype);
    const int q8 = p->kv_dtype == FMQA_DTYPE_FP8_E4M3;
    const int64_t row = DK + 16 / (int64_t)ke, srow = ps + 1;
    memset(a, 0, sizeof *a);
    *n_pages = paged ? outer : 0;
    int32_t *lens = poisoned(B * sizeof *lens, 4);
    for (int64_t b = 0; b < B; b++)
        lens[b] = b < MAX_LENS && given[b] ? given[b] : (int32_t)(Tq + ref_rng_next(r) % (T - Tq + 1));
    a->kv_lens = lens;
    a->kv_stride_token = row, a->kv_stride_batch = ps * row;
    void *kv = poisoned(outer * ps * row * ke, 16);
    float *ks = poisoned(outer * srow * 4, 4);
    a->kv_scale_stride_token = 1, a->kv_scale_stride_batch = srow;
    if (paged) { /* a shuffled page order */
        int32_t *table = poisoned(B * per_seq * sizeof *table, 4);
        for (int64_t i = 0; i < B * per_seq; i++)
            table[i] = (int32_t)i;
        for (int64_t i = B * per_seq - 1; i > 0; i--) {
            int64_t j = ref_rng_next(r) % (i + 1);
            int32_t t = table[i];
            table[i] = table[j], table[j] = t;
        }
        a->page_table = table, a->page_table_stride = per_seq;
    }
    const ref_cache_view view = {.dtype = p->kv_dtype,
                                 .flags = p->flags & (FMQA_FLAG_RING | FMQA_FLAG_PAGED),
                                 .window = p->window, .sink_tokens = p->sink_tokens,
                                 .draft_slots = p->draft_slots};
    const ref_attn_shape rs = {B, Tq, T, H, 1, DK, DC, lens, p->flags, NULL, p->window,
                               p->sink_tokens, 0, 0, 0.0, NULL, 0.0, p->draft_slots};
    if (paged) { /* pages holding no readable position are unmapped */
        int32_t *table = (int32_t *)a->page_table;
        unsigned char *mapped = calloc((size_t)(B * per_seq), 1);
        for (int64_t b = 0; b < B; b++)
            for (int64_t j = 0; j < lens[b]; j++)
                if (ref_readable(&rs, b, j))
                    mapped[b * per_seq + ref_cache_slot(&view, j) / ps] = 1;
        for (int64_t i = 0; i < B * per_seq; i++)
            if (!mapped[i])
                table[i] = -1;
        free(mapped);
    }
    fmqa_err err;
    for (int64_t b = 0; b < B; b++)
        for (int64_t j = 0; j < lens[b]; j++) {
            if (!ref_readable(&rs, b, j))
                continue; /* behind every window, or overwritten by a later position */
            const int64_t slot = ref_cache_slot(&view, j);
            int64_t o = paged ? a->page_table[b * per_seq + slot / ps] : b;
            int64_t t = paged ? slot % ps : slot;
            int64_t at = o * a->kv_stride_batch + t * a->kv_stride_token;
            double x[DK];
            ref_rng_fill(r, x, DK, 1.0, 0);
            if (q8)
                cr_assert_eq(ref_quantize_row(p->kv_dtype, x, DK, (uint8_t *)kv + at,
                                              &ks[o * srow + t], &err), FMQA_OK, "%s", err.msg);
            else
                cr_assert_eq(ref_from_double(p->kv_dtype, x, DK, (uint16_t *)kv + at, &err),
                             FMQA_OK, "%s", err.msg);
        }
    a->kv = kv;
    if (q8)
        a->kv_scale = ks;
    if (p->flags & FMQA_FLAG_PAGE_CSR) { /* lengths from the table */
        const fmqa_test_csr t = fmqa_test_csr_of(B, ps, lens, a->page_table, per_seq);
        a->page_indptr = t.indptr, a->page_indices = t.indices, a->last_page_len = t.last_page_len;
        a->page_table = NULL, a->page_table_stride = 0, a->kv_lens = NULL;
    }

    const int64_t qh = DK + 8, nq = B * Tq * H * qh, no = B * Tq * H * DC;
    double *qd = malloc(nq * sizeof *qd);
    uint16_t *q = poisoned(nq * 2, 16);
    ref_rng_fill(r, qd, nq, 1.0, p->q_dtype);
    cr_assert_eq(ref_from_double(p->q_dtype, qd, nq, q, &err), FMQA_OK, "%s", err.msg);
    free(qd);
    a->q = q;
    a->q_stride_head = qh, a->q_stride_token = H * qh, a->q_stride_batch = Tq * H * qh;
    a->o = poisoned(no * 2, 16);
    a->o_stride_head = DC, a->o_stride_token = H * DC, a->o_stride_batch = Tq * H * DC;
    a->lse = poisoned(B * Tq * H * 4, 4);
    a->sm_scale = 0.0f; /* 1/sqrt(576) */
    if (sinks) {
        float *s = poisoned(H * sizeof *s, 4);
        for (int64_t h = 0; h < H; h++)
            s[h] = (float)((double)(ref_rng_next(r) % 1536) / 128.0 - 4.0);
        a->sinks = s;
    }
}

/* Runs one case against the reference, on inputs drawn from `seed` (0: a
 * fresh one); *out (if given) gets its arguments, outputs included. */
static void run_case_into(const mcase *mc, uint64_t seed, fmqa_mla_decode_args *out)
{
    gen_lib *lib = NULL;
    fmqa_err err;
    cr_assert_eq(gen_lib_open(fmqa_test_template_dir(), &lib, &err), FMQA_OK, "%s", err.msg);
    const gen_template *t = gen_lib_find(lib, "mla_decode");
    cr_assert_not_null(t, "no mla_decode template");
    const char *arch = mc->arch ? mc->arch : "sm_90";
    fmqa_device_info dev = fmqa_test_device(arch);
    fmqa_problem p;
    cr_assert_eq(gen_problem_parse(mc->spec, &p, &err), FMQA_OK, "%s: %s", mc->spec, err.msg);
    gen_config c, over;
    cr_assert_eq(gen_default(t, &p, &dev, &c, &err), FMQA_OK, "%s", err.msg);
    if (mc->config[0]) {
        cr_assert_eq(gen_config_parse(mc->config, &over, &err), FMQA_OK, "%s", err.msg);
        for (int i = 0; i < gen_template_param_count(t); i++) {
            int64_t v;
            if (gen_config_get(&over, gen_template_param_name(t, i), &v))
                cr_assert_eq(gen_config_set(&c, gen_template_param_name(t, i), v, &err), FMQA_OK,
                             "%s", err.msg);
        }
    }
    rt_plan plan;
    memset(&plan, 0, sizeof plan);
    plan.problem = p;
    cr_assert_eq(gen_launch_plan(t, &c, &p, &dev, &plan.launch, &err), FMQA_OK, "%s", err.msg);
    char dir[] = "/tmp/fmqa-emu-XXXXXX";
    emu_launch_fn launch =
        (emu_launch_fn)fmqa_test_emu_build(t, &c, &p, &dev, "mla_decode_emu.cpp", dir);

    ref_rng r;
    if (!seed)
        seed = fmqa_test_seed(mc->spec);
    ref_rng_seed(&r, seed);
    fmqa_mla_decode_args m;
    int64_t n_pages;
    make_inputs(&p, mc->lens, mc->sinks, &r, &m, &n_pages);
    m.workspace = poisoned(plan.launch.workspace, 16);
    m.workspace_size = plan.launch.workspace;
    fmqa_decode_args a;
    rt_mla_decode_args(&p, &m, &a);
    fmqa_decode_params prm;
    cr_assert_eq(rt_decode_params(&plan, &a, &prm, &err), FMQA_OK, "%s", err.msg);
    for (int i = 0; i < plan.launch.n_kernels; i++) {
        const gen_kernel *k = &plan.launch.kernels[i];
        unsigned grid[3] = {k->grid[0], k->grid[1], k->grid[2]};
        cr_assert_eq(launch(k->entry, &prm, grid, k->block[0], k->shared), 0);
    }

    const int64_t rows = (int64_t)p.batch * p.q_tokens * p.num_q_heads, n = rows * DC;
    double *o = malloc(n * sizeof *o), *lse = malloc(rows * sizeof *lse);
    cr_assert_eq(ref_decode(&p, &a, n_pages, o, lse, &err), FMQA_OK, "%s", err.msg);
    ref_cmp cmp;
    cr_assert_eq(ref_compare(p.out_dtype, m.o, o, n, &cmp, &err), FMQA_OK, "%s", err.msg);
    /* As decode: P and Q rounded to the mma type; bf16 ~8x coarser. */
    const double tol = p.out_dtype == FMQA_DTYPE_BF16 || p.kv_dtype == FMQA_DTYPE_BF16 ||
                               p.q_dtype == FMQA_DTYPE_BF16 ? 8e-3 : 1e-3;
    char cfg[GEN_CONFIG_TEXT_CAP];
    gen_config_text(&c, cfg, sizeof cfg);
    fprintf(stderr, "%s%s [%s] %s splits %d: o rel_l2 %.2e max %.2e bad %lld (seed %llu)\n",
            mc->spec, mc->sinks ? " +sinks" : "", cfg, arch, plan.launch.splits, cmp.rel_l2,
            cmp.max_abs, (long long)cmp.bad, (unsigned long long)seed);
    cr_expect(ref_cmp_ok(&cmp, tol, -1), "%s [%s]: o rel_l2 %g, max %g at %lld, %lld bad",
              mc->spec, cfg, cmp.rel_l2, cmp.max_abs, (long long)cmp.worst, (long long)cmp.bad);
    if (p.flags & FMQA_FLAG_LSE) {
        cr_assert_eq(ref_compare(FMQA_DTYPE_F32, m.lse, lse, rows, &cmp, &err), FMQA_OK);
        cr_expect(ref_cmp_ok(&cmp, 1e-4, -1), "%s [%s]: lse rel_l2 %g, max %g, %lld bad",
                  mc->spec, cfg, cmp.rel_l2, cmp.max_abs, (long long)cmp.bad);
    }
    free(o);
    free(lse);
    if (out)
        *out = m;
    char rm[1100];
    snprintf(rm, sizeof rm, "rm -rf %s", dir);
    (void)system(rm);
    gen_lib_close(lib);
}

static void run_all(const mcase *cases, size_t n)
{
    for (size_t i = 0; i < n; i++)
        run_case_into(&cases[i], 0, NULL);
}

#define MLA "op=mla_decode,kv_heads=1,d=576,dv=512,"

/* Lengths 1, 17 and 1000 in one batch, 16 heads; bf16 and f16. */
Test(mla_decode_emu, lengths, .timeout = 900)
{
    static const mcase cases[] = {
        {MLA "batch=3,heads=16,kv_len=1000,q=bf16,kv=bf16,out=bf16,flags=causal|lse", "", {1, 17, 1000}, NULL, 0},
        {MLA "batch=2,heads=16,tq=2,kv_len=130,flags=causal|lse", "SPLITS=1,WARPS_D=2,BLOCK_N=32", {130, 2}, NULL, 0},
    };
    run_all(cases, sizeof cases / sizeof cases[0]);
}

/* Paged caches (16 and 64 tokens a page, shuffled), 1 to 4 query tokens with
 * the causal mask among them, forced splits through the shared combine. */
Test(mla_decode_emu, pages_tokens_splits, .timeout = 900)
{
    static const mcase cases[] = {
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
    static const mcase cases[] = {
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
    static const mcase cases[] = {
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
    static const mcase cases[] = {
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
    static const mcase cases[] = {
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
    static const mcase cases[] = {
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
    static const mcase runs[] = {
        {INV_SPEC("|invariant"), "", {600, 1, 300}, "sm_90", 0},
        {INV_SPEC("|invariant"), "", {600, 1, 300}, "sm_90@3", 0},
        {INV_SPEC(""), "", {600, 1, 300}, "sm_90", 0},
        {INV_SPEC(""), "", {600, 1, 300}, "sm_90@3", 0},
    };
    fmqa_mla_decode_args m[4];
    const uint64_t seed = fmqa_test_seed("mla_decode_emu::batch_invariant") | 1;
    for (int i = 0; i < 4; i++)
        run_case_into(&runs[i], seed, &m[i]);
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
