/*
 * decode_emu.c -- the decode template on the CPU emulator (decode_emu.h): the
 * inputs of a case and one decode call through the same path as fmqa_decode
 * (the template's Lua gives the plan, gen_render the source,
 * rt_decode_params the kernel parameters, then each kernel of the plan runs
 * over its grid in tests/emu/decode_emu.cpp).
 */
#define _POSIX_C_SOURCE 200809L

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "decode_emu.h"
#include "fmqa_params.h"
#include "gen.h"
#include "rt.h"
#include "test_support.h"

/* Every driver's emu_launch takes its template's params struct by pointer. */
typedef int (*emu_launch_fn)(const char *entry, const void *params, const unsigned grid[3],
                             unsigned threads, unsigned dyn_smem);

void *fmqa_emu_poisoned(size_t bytes, size_t align)
{
    return fmqa_test_guarded(bytes, align, 0xff);
}

/* Writes one random row of position j into the cache (16-bit or quantized:
 * with its own scale, written to scales[sat], or with per-head or per-tensor
 * scales with the given scales[sat], saturating). */
static void put_row(const fmqa_problem *p, ref_rng *r, void *base, int64_t at, float *scales,
                    int64_t sat)
{
    const int d = p->head_dim_qk;
    double x[256];
    ref_rng_fill(r, x, d, 1.0, 0);
    fmqa_err err;
    if (p->kv_scale_granularity != FMQA_KV_SCALE_TOKEN_HEAD) {
        cr_assert_eq(ref_quantize_row_fixed(p->kv_dtype, x, d, scales[sat], (uint8_t *)base + at,
                                            &err),
                     FMQA_OK, "%s", err.msg);
    } else if (p->kv_dtype == FMQA_DTYPE_INT8 || p->kv_dtype == FMQA_DTYPE_FP8_E4M3) {
        cr_assert_eq(ref_quantize_row(p->kv_dtype, x, d, (uint8_t *)base + at, &scales[sat], &err),
                     FMQA_OK, "%s", err.msg);
    } else {
        cr_assert_eq(ref_from_double(p->kv_dtype, x, d, (uint16_t *)base + at, &err), FMQA_OK,
                     "%s", err.msg);
    }
}

/*
 * K and V get different layouts, and so do their scales, so that an address
 * computed with the other cache's strides reads the wrong row:
 *   K [outer][token][head][d], scales [outer][token][head];
 *   V [outer][head][token][d + 16 bytes of padding], scales [outer][head][token].
 * outer is the sequence, or the page when paged.  Per-head scales: K's heads 1
 * float apart, V's 3; per-tensor: one float each; the strides a granularity
 * ignores are odd garbage.  The fixed scales let some values saturate.
 * With a CSR page table (FMQA_FLAG_PAGE_CSR) K and its scales are HND like V
 * (FlashInfer's other page layout), and the 2-D table becomes page_indptr
 * (from 2, not 0), page_indices (each sequence's pages up to its length, -1
 * for freed ones) and last_page_len, with kv_lens and page_table NULL.
 */
void fmqa_emu_inputs_make(const fmqa_problem *p, const int32_t *lens, int sinks, ref_rng *r,
                          fmqa_emu_inputs *in)
{
    const int64_t B = p->batch, T = p->kv_len, H = p->num_q_heads, Hk = p->num_kv_heads;
    const int64_t D = p->head_dim_qk, Tq = p->q_tokens;
    const int paged = (p->flags & FMQA_FLAG_PAGED) != 0;
    const int64_t slots = fmqa_cache_slots(p);
    const int64_t ps = paged ? p->page_size : slots;
    const int64_t per_seq = (slots + ps - 1) / ps;
    const int64_t outer = paged ? B * per_seq + 3 : B; /* a few pages never used */
    const size_t ke = fmqa_dtype_size(p->kv_dtype);
    const int64_t vrow = D + 16 / (int64_t)ke; /* V row stride, elements */
    fmqa_decode_args *a = &in->a;
    memset(a, 0, sizeof *a);
    in->n_pages = paged ? outer : 0;
    in->per_seq = per_seq;
    for (int64_t b = 0; b < B; b++)
        in->lens[b] = lens[0] < 0 ? (int32_t)(T - (B - 1 - b) % -lens[0])
                      : b < 8 && lens[b] ? lens[b]
                                : (int32_t)(Tq + ref_rng_next(r) % (T - Tq + 1));

    const int csr = (p->flags & FMQA_FLAG_PAGE_CSR) != 0;
    a->k_stride_head = D, a->k_stride_token = Hk * D, a->k_stride_batch = ps * Hk * D;
    if (csr) /* HND */
        a->k_stride_head = ps * D, a->k_stride_token = D;
    a->v_stride_head = ps * vrow, a->v_stride_token = vrow, a->v_stride_batch = Hk * ps * vrow;
    void *k = fmqa_emu_poisoned(outer * ps * Hk * D * ke, 16), *v = fmqa_emu_poisoned(outer * ps * Hk * vrow * ke, 16);
    const fmqa_kv_scale_granularity g = p->kv_scale_granularity;
    const int64_t scale_floats = g == FMQA_KV_SCALE_TOKEN_HEAD ? outer * ps * Hk
                                 : g == FMQA_KV_SCALE_HEAD     ? 3 * Hk
                                                               : 1;
    float *ks = fmqa_emu_poisoned(scale_floats * 4, 4), *vs = fmqa_emu_poisoned(scale_floats * 4, 4);
    in->k_bytes = outer * ps * Hk * D * ke, in->v_bytes = outer * ps * Hk * vrow * ke;
    in->scale_bytes = scale_floats * 4;
    a->k_scale_stride_head = 1, a->k_scale_stride_token = Hk, a->k_scale_stride_batch = ps * Hk;
    if (csr)
        a->k_scale_stride_head = ps, a->k_scale_stride_token = 1;
    a->v_scale_stride_head = ps, a->v_scale_stride_token = 1, a->v_scale_stride_batch = Hk * ps;
    if (g != FMQA_KV_SCALE_TOKEN_HEAD) {
        const int64_t garbage = 1000003;
        a->k_scale_stride_batch = a->k_scale_stride_token = garbage;
        a->v_scale_stride_batch = a->v_scale_stride_token = garbage;
        a->k_scale_stride_head = g == FMQA_KV_SCALE_HEAD ? 1 : garbage;
        a->v_scale_stride_head = g == FMQA_KV_SCALE_HEAD ? 3 : garbage;
        const double qmax = p->kv_dtype == FMQA_DTYPE_INT8 ? 127.0 : 448.0;
        for (int64_t h = 0; h < (g == FMQA_KV_SCALE_HEAD ? Hk : 1); h++) {
            ks[h] = (float)((1.25 + 0.25 * (double)h) / qmax);
            vs[3 * h] = (float)((1.5 + 0.125 * (double)h) / qmax);
        }
    }
    int32_t *table = NULL;
    if (paged) { /* a shuffled page order */
        table = fmqa_emu_poisoned(B * per_seq * sizeof *table, 4);
        fmqa_test_shuffle_pages(table, B * per_seq, r);
        a->page_table = table, a->page_table_stride = per_seq;
    }
    ref_cache_view view = {.dtype = p->kv_dtype, .flags = p->flags & (FMQA_FLAG_RING | FMQA_FLAG_PAGED),
                           .window = p->window, .sink_tokens = p->sink_tokens,
                           .draft_slots = p->draft_slots};
    /* Only the rows a decode may read hold data (fastmqa.h: the sinks and the
     * query tokens' windows); pages holding none of them are unmapped (-1), as
     * an engine that frees what fell behind the window leaves them. */
    const ref_attn_shape rs = {B, Tq, T, H, Hk, D, D, in->lens, p->flags, NULL, p->window,
                               p->sink_tokens, 0, 0, 0.0, NULL, 0.0, p->draft_slots};
    if (paged)
        fmqa_test_unmap_unread(table, per_seq, ps, &rs, &view);
    for (int64_t b = 0; b < B; b++)
        for (int64_t j = 0; j < in->lens[b]; j++) {
            if (!ref_readable(&rs, b, j))
                continue; /* behind every window, or overwritten by a later position */
            int64_t slot = ref_cache_slot(&view, j);
            int64_t o = paged ? table[b * per_seq + slot / ps] : b, t = paged ? slot % ps : slot;
            for (int64_t h = 0; h < Hk; h++) {
                const int fixed = g != FMQA_KV_SCALE_TOKEN_HEAD, hs = g == FMQA_KV_SCALE_HEAD;
                put_row(p, r, k, o * a->k_stride_batch + t * a->k_stride_token + h * a->k_stride_head, ks,
                        fixed ? hs * h
                              : o * a->k_scale_stride_batch + t * a->k_scale_stride_token +
                                    h * a->k_scale_stride_head);
                put_row(p, r, v, o * a->v_stride_batch + t * a->v_stride_token + h * a->v_stride_head, vs,
                        fixed ? hs * 3 * h : o * a->v_scale_stride_batch + t + h * a->v_scale_stride_head);
            }
        }
    a->k = k, a->v = v;
    if (ke == 1)
        a->k_scale = ks, a->v_scale = vs;

    const int64_t nq = B * Tq * H * D;
    uint16_t *q = fmqa_emu_poisoned(nq * 2, 16);
    fmqa_test_fill_random(r, p->q_dtype, q, nq);
    a->q = q;
    a->q_stride_head = D, a->q_stride_token = H * D, a->q_stride_batch = Tq * H * D;
    a->o = fmqa_emu_poisoned(nq * 2, 16);
    a->o_stride_head = D, a->o_stride_token = H * D, a->o_stride_batch = Tq * H * D;
    a->lse = fmqa_emu_poisoned(B * Tq * H * 4, 4);
    if (sinks) {
        float *s = fmqa_emu_poisoned(H * sizeof *s, 4);
        for (int64_t h = 0; h < H; h++)
            s[h] = (float)((double)(ref_rng_next(r) % 1536) / 128.0 - 4.0);
        a->sinks = s;
    }
    int32_t *kv_lens = fmqa_emu_poisoned(B * sizeof *kv_lens, 4);
    memcpy(kv_lens, in->lens, B * sizeof *kv_lens);
    a->kv_lens = kv_lens;
    if (csr) {
        const fmqa_test_csr t = fmqa_test_csr_of(B, ps, in->lens, table, per_seq);
        a->page_indptr = t.indptr, a->page_indices = t.indices, a->last_page_len = t.last_page_len;
        a->page_table = NULL, a->page_table_stride = 0, a->kv_lens = NULL;
    }
    if (p->flags & FMQA_FLAG_TREE_MASK) {
        uint64_t *m = fmqa_emu_poisoned(B * Tq * sizeof *m, 8);
        for (int64_t i = 0; i < B * Tq; i++) /* random drafts; row 0 of a sequence sees none */
            m[i] = i % Tq == 0 ? 0 : (ref_rng_next(r) & ((1ull << Tq) - 1)) | 1ull << (i % Tq);
        a->tree_mask = m;
    }
}

int fmqa_emu_run(const char *tpl, const fmqa_problem *p, const char *config, const char *arch,
                 const char *driver, fmqa_emu_fill_fn fill, const void *args, void **workspace,
                 size_t *workspace_size, unsigned combine_slices, char *cfg)
{
    gen_lib *lib = NULL;
    fmqa_err err;
    cr_assert_eq(gen_lib_open(fmqa_test_template_dir(), &lib, &err), FMQA_OK, "%s: %s",
                 fmqa_test_template_dir(), err.msg);
    const gen_template *t = gen_lib_find(lib, tpl);
    cr_assert_not_null(t, "no template %s", tpl);
    /* "sm_90@3": the sm_90 preset with 3 SMs (they size decode's persistent grid) */
    fmqa_device_info dev = fmqa_test_device(arch ? arch : "sm_90");
    gen_config c, over;
    cr_assert_eq(gen_default(t, p, &dev, &c, &err), FMQA_OK, "%s", err.msg);
    if (config && config[0]) {
        cr_assert_eq(gen_config_parse(config, &over, &err), FMQA_OK, "%s", err.msg);
        for (int i = 0; i < gen_template_param_count(t); i++) {
            const char *name = gen_template_param_name(t, i);
            int64_t v;
            if (gen_config_get(&over, name, &v))
                cr_assert_eq(gen_config_set(&c, name, v, &err), FMQA_OK, "%s", err.msg);
        }
    }
    if (cfg)
        gen_config_text(&c, cfg, GEN_CONFIG_TEXT_CAP);
    rt_plan plan;
    memset(&plan, 0, sizeof plan);
    plan.problem = *p;
    cr_assert_eq(gen_launch_plan(t, &c, p, &dev, &plan.launch, &err), FMQA_OK, "%s", err.msg);
    char dir[] = "/tmp/fmqa-emu-XXXXXX";
    emu_launch_fn launch = (emu_launch_fn)fmqa_test_emu_build(t, &c, p, &dev, driver, dir);
    *workspace = fmqa_emu_poisoned(plan.launch.workspace, 16);
    *workspace_size = plan.launch.workspace;
    _Alignas(16) unsigned char prm[1024];
    cr_assert_eq(fill(&plan, args, prm, &err), FMQA_OK, "%s", err.msg);
    for (int i = 0; i < plan.launch.n_kernels; i++) {
        const gen_kernel *k = &plan.launch.kernels[i];
        cr_assert_eq(k->block[1] * k->block[2], 1);
        unsigned grid[3] = {k->grid[0], k->grid[1], k->grid[2]};
        if (combine_slices && !strcmp(k->entry, "fmqa_decode_combine"))
            grid[1] = combine_slices;
        cr_assert_eq(launch(k->entry, prm, grid, k->block[0], k->shared), 0, "%s", k->entry);
    }
    char rm[1100];
    snprintf(rm, sizeof rm, "rm -rf %s", dir);
    (void)system(rm);
    gen_lib_close(lib);
    return plan.launch.splits;
}

static fmqa_status decode_fill(const rt_plan *plan, const void *args, void *prm, fmqa_err *err)
{
    return rt_decode_params(plan, args, prm, err);
}

int fmqa_emu_decode(const fmqa_problem *p, const char *config, const char *arch,
                    unsigned combine_slices, fmqa_emu_inputs *in, char *cfg)
{
    return fmqa_emu_run("decode", p, config, arch, "decode_emu.cpp", decode_fill, &in->a,
                        &in->a.workspace, &in->a.workspace_size, combine_slices, cfg);
}
