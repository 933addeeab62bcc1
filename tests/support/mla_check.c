/*
 * mla_check.c -- one MLA decode case on the CPU emulator against ref_decode
 * (mla_check.h).
 */
#define _POSIX_C_SOURCE 200809L

#include "mla_check.h"

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
        lens[b] = b < MLA_MAX_LENS && given[b] ? given[b] : (int32_t)(Tq + ref_rng_next(r) % (T - Tq + 1));
    a->kv_lens = lens;
    a->kv_stride_token = row, a->kv_stride_batch = ps * row;
    void *kv = poisoned(outer * ps * row * ke, 16);
    float *ks = poisoned(outer * srow * 4, 4);
    a->kv_scale_stride_token = 1, a->kv_scale_stride_batch = srow;
    if (paged) { /* a shuffled page order */
        int32_t *table = poisoned(B * per_seq * sizeof *table, 4);
        fmqa_test_shuffle_pages(table, B * per_seq, r);
        a->page_table = table, a->page_table_stride = per_seq;
    }
    const ref_cache_view view = {.dtype = p->kv_dtype,
                                 .flags = p->flags & (FMQA_FLAG_RING | FMQA_FLAG_PAGED),
                                 .window = p->window, .sink_tokens = p->sink_tokens,
                                 .draft_slots = p->draft_slots};
    const ref_attn_shape rs = {B, Tq, T, H, 1, DK, DC, lens, p->flags, NULL, p->window,
                               p->sink_tokens, 0, 0, 0.0, NULL, 0.0, p->draft_slots};
    if (paged) /* pages holding no readable position are unmapped */
        fmqa_test_unmap_unread((int32_t *)a->page_table, per_seq, ps, &rs, &view);
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
    uint16_t *q = poisoned(nq * 2, 16);
    fmqa_test_fill_random(r, p->q_dtype, q, nq);
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

void mla_check_run_into(const char *name, const char *driver, const mla_case *mc, uint64_t seed,
                        fmqa_mla_decode_args *out)
{
    gen_lib *lib = fmqa_test_open_templates();
    const gen_template *t = fmqa_test_template(lib, name, FMQA_OP_MLA_DECODE);
    fmqa_err err;
    const char *arch = mc->arch ? mc->arch : "sm_90";
    fmqa_device_info dev = fmqa_test_device(arch);
    fmqa_problem p = fmqa_test_problem(mc->spec);
    gen_config c = fmqa_test_default_with(t, &p, &dev, mc->config);
    rt_plan plan;
    memset(&plan, 0, sizeof plan);
    plan.problem = p;
    cr_assert_eq(gen_launch_plan(t, &c, &p, &dev, &plan.launch, &err), FMQA_OK, "%s", err.msg);
    char dir[] = "/tmp/fmqa-emu-XXXXXX";
    emu_launch_fn launch =
        (emu_launch_fn)fmqa_test_emu_build(t, &c, &p, &dev, driver, dir);

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
    fprintf(stderr, "%s %s%s [%s] %s splits %d: o rel_l2 %.2e max %.2e bad %lld (seed %llu)\n",
            name, mc->spec, mc->sinks ? " +sinks" : "", cfg, arch, plan.launch.splits, cmp.rel_l2,
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

void mla_check_run(const char *name, const char *driver, const mla_case *c)
{
    mla_check_run_into(name, driver, c, 0, NULL);
}
