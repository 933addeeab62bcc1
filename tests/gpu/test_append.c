/*
 * test_append.c -- fmqa_append on the GPU against ref_append_args, entry by
 * entry, with the checks of tests/support/append_check.h (shared with the CPU
 * emulation, tests/unit/test_append_emu.c): fresh random inputs, caches
 * filled with a poison byte, the public call and the float64 reference on
 * identical copies; every row that must be written matches the reference
 * (unrotated rows bit for bit, rotated ones within the rotation's error
 * bound), every other byte still holds the poison, q is rotated in place when
 * passed.  Positions include 0, page and ring boundaries, more new tokens than
 * ring slots, and 1e5 / 2^30 (the RoPE angle claim of append.cuh).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "append_check.h"
#include "test_support.h"

/* Device copies of a cache's initial bytes and scales. */
typedef struct dev_side {
    CUdeviceptr data, scale;
} dev_side;

static dev_side upload_side(fmqa_test_gpu *g, const append_side *s)
{
    dev_side d = {fmqa_test_upload(g, s->init, s->bytes), 0};
    if (s->scale_bytes)
        d.scale = fmqa_test_upload(g, s->sinit, s->scale_bytes);
    return d;
}

/* Downloads into s->out / s->sout and frees the device copies. */
static void fetch_side(fmqa_test_gpu *g, append_side *s, dev_side *d)
{
    fmqa_test_download(g, s->out, d->data, s->bytes);
    if (s->scale_bytes)
        fmqa_test_download(g, s->sout, d->scale, s->scale_bytes);
    fmqa_test_free(g, d->data);
    fmqa_test_free(g, d->scale);
}

static void run_case(fmqa_ctx_t *ctx, fmqa_test_gpu *g, const append_case *c, fmqa_dtype in,
                     fmqa_dtype kv, fmqa_rope rope, int rope_q)
{
    append_run r;
    append_run_init(&r, c, in, kv, rope, rope_q);
    dev_side ks = upload_side(g, &r.k), vs = upload_side(g, &r.v);
    CUdeviceptr d_k_new = fmqa_test_upload(g, r.k_new, r.k_new_bytes);
    CUdeviceptr d_v_new = fmqa_test_upload(g, r.v_new, r.v_new_bytes);
    CUdeviceptr d_q = fmqa_test_upload(g, r.q, r.q_bytes);
    CUdeviceptr d_start = fmqa_test_upload(g, c->start, (size_t)c->batch * sizeof(int32_t));
    CUdeviceptr d_table =
        r.table ? fmqa_test_upload(g, r.table, (size_t)(c->batch * r.pages_seq) * 4) : 0;
    CUdeviceptr d_rope =
        r.rope_cs ? fmqa_test_upload(g, r.rope_cs, (size_t)(r.rope_cs_len * r.rot) * 4) : 0;
    CUdeviceptr d_csr = r.csr ? fmqa_test_upload(g, r.csr, r.csr_bytes) : 0;
    CUdeviceptr d_slots = r.slots ? fmqa_test_upload(g, r.slots, r.slots_bytes) : 0;
    CUdeviceptr d_rope_pos =
        c->rope_pos ? fmqa_test_upload(g, c->rope_pos, (size_t)c->batch * sizeof(int32_t)) : 0;

    const append_bufs b = {(void *)d_k_new, (void *)d_v_new, (void *)d_q, (void *)ks.data,
                           (void *)vs.data, (float *)ks.scale, (float *)vs.scale,
                           (const int32_t *)d_start, (const int32_t *)d_table,
                           (const float *)d_rope, (const int32_t *)d_csr,
                           (const int32_t *)d_slots,
                           (const int32_t *)d_rope_pos};
    fmqa_append_args da = append_run_args(&r, &b);
    cr_assert_eq(fmqa_append(ctx, &r.p, &da, NULL), FMQA_OK, "%s: %s", r.name,
                 fmqa_ctx_errmsg(ctx));
    fetch_side(g, &r.k, &ks);
    fetch_side(g, &r.v, &vs);
    fmqa_test_download(g, r.q_out, d_q, r.q_bytes);
    append_run_check(&r);

    fmqa_test_free(g, d_k_new), fmqa_test_free(g, d_v_new), fmqa_test_free(g, d_q);
    fmqa_test_free(g, d_start), fmqa_test_free(g, d_table), fmqa_test_free(g, d_rope);
    fmqa_test_free(g, d_csr), fmqa_test_free(g, d_slots);
    fmqa_test_free(g, d_rope_pos);
    append_run_free(&r);
}

/* ------------------------------------------------------------ cases */

static void run_matrix(const append_case *c)
{
    static const fmqa_dtype in[] = {FMQA_DTYPE_F16, FMQA_DTYPE_BF16};
    static const fmqa_dtype kv[] = {FMQA_DTYPE_F16, FMQA_DTYPE_BF16, FMQA_DTYPE_INT8,
                                    FMQA_DTYPE_FP8_E4M3};
    static const fmqa_rope rope[] = {FMQA_ROPE_NONE, FMQA_ROPE_NEOX, FMQA_ROPE_GPTJ};
    fmqa_ctx_t *ctx = fmqa_test_ctx();
    fmqa_test_gpu g;
    fmqa_test_gpu_open(&g);
    for (int a = 0; a < 2; a++)
        for (int b = 0; b < 4; b++)
            for (int r = 0; r < 3; r++)
                run_case(ctx, &g, c, in[a], kv[b], rope[r], b != 1); /* q rotated or not */
    fmqa_test_gpu_close(&g);
    fmqa_ctx_destroy(ctx);
}

#define PAGED FMQA_FLAG_PAGED
#define RING FMQA_FLAG_RING

/* Starts: position 0, the last slots of the capacity, an odd middle. */
Test(append, contiguous) { run_matrix(&(append_case){"contig d128", 3, 8, 2, 128, 128, 5, 64, 0, 0, 0, 0, {0, 59, 17}, 0, 0, 0, 0}); }
Test(append, contiguous_d64_dv_differs) { run_matrix(&(append_case){"contig d64 dv128 mqa", 2, 8, 1, 64, 128, 3, 40, 0, 0, 0, 0, {37, 1}, 0, 0, 0, 0}); }
Test(append, contiguous_d96) { run_matrix(&(append_case){"contig d96", 2, 4, 4, 96, 96, 2, 40, 0, 0, 0, 0, {38, 0}, 0, 0, 0, 0}); }
Test(append, contiguous_d256) { run_matrix(&(append_case){"contig d256", 1, 4, 2, 256, 256, 7, 16, 0, 0, 0, 0, {9}, 0, 0, 0, 0}); }
/* Tokens cross page boundaries (15 -> 16, 31 -> 32). */
Test(append, paged) { run_matrix(&(append_case){"paged16 d128", 3, 8, 2, 128, 128, 5, 64, PAGED, 16, 0, 0, {13, 59, 29}, 0, 0, 0, 0}); }
Test(append, paged_d64) { run_matrix(&(append_case){"paged32 d64", 2, 4, 2, 64, 64, 9, 96, PAGED, 32, 0, 0, {28, 0}, 0, 0, 0, 0}); }
/* Sinks and the wrap; 24 tokens into 16 ring slots; far positions. */
Test(append, ring) { run_matrix(&(append_case){"ring w16 s4", 3, 8, 2, 128, 128, 5, 4096, RING, 0, 16, 4, {0, 2, 1000}, 0, 0, 0, 0}); }
Test(append, ring_overwrite_in_call) { run_matrix(&(append_case){"ring n24>w16", 2, 4, 1, 128, 128, 24, 4096, RING, 0, 16, 4, {3, 100}, 0, 0, 0, 0}); }
Test(append, ring_paged_far_positions) { run_matrix(&(append_case){"ring paged pos 1e5, 2^30", 2, 8, 2, 128, 128, 3, 1 << 30, RING | PAGED, 16, 32, 4, {100000, (1 << 30) - 8}, 0, 0, 0, 0}); }

/* ------------------------------------------------------------ MLA and RoPE */

/* One (input, cache, RoPE) triple of a case, q rotated (and not, unless the
 * case passes no tokens). */
static void run_one(const append_case *c, fmqa_dtype in, fmqa_dtype kv, fmqa_rope rope)
{
    fmqa_ctx_t *ctx = fmqa_test_ctx();
    fmqa_test_gpu g;
    fmqa_test_gpu_open(&g);
    run_case(ctx, &g, c, in, kv, rope, 1);
    if (!c->q_only)
        run_case(ctx, &g, c, in, kv, rope, 0);
    fmqa_test_gpu_close(&g);
    fmqa_ctx_destroy(ctx);
}

#define BF16 FMQA_DTYPE_BF16
#define FP8 FMQA_DTYPE_FP8_E4M3

/* MLA latent rows (issue 12): 512 + 64, no V, q_pe in place; the cases of
 * tests/unit/test_mla_append.c. */
Test(append, mla_latent)
{
    const append_case contig = {"mla contig", 2, 16, 1, 576, 512, 3, 64, 0, 0, 0, 0, {0, 61},
                                0, 1, 0, 0, FMQA_KV_SCALE_TOKEN_HEAD, NULL};
    const append_case paged = {"mla paged64 h128 table", 2, 128, 1, 576, 512, 2, 256, PAGED,
                               64, 0, 0, {63, 190}, 0, 1, 1, 0, FMQA_KV_SCALE_TOKEN_HEAD, NULL};
    const append_case q_pe = {"mla q_pe alone", 2, 32, 1, 576, 512, 2, 64, 0, 0, 0, 0, {5, 40},
                              0, 1, 0, 1, FMQA_KV_SCALE_TOKEN_HEAD, NULL};
    run_one(&contig, BF16, BF16, FMQA_ROPE_GPTJ);
    run_one(&contig, FMQA_DTYPE_F16, FP8, FMQA_ROPE_NEOX);
    run_one(&paged, BF16, FP8, FMQA_ROPE_GPTJ);
    run_one(&q_pe, BF16, FP8, FMQA_ROPE_GPTJ);
}

/* RoPE beyond one theta (issue 16): partial rotary and cos/sin tables; the
 * cases of tests/unit/test_rope.c. */
Test(append, rope_partial_and_table)
{
    const append_case partial = {"rope partial d80 r20 ring", 2, 4, 1, 80, 80, 5, 4096, RING,
                                 0, 16, 4, {0, 300}, 20, 0, 0, 0, FMQA_KV_SCALE_TOKEN_HEAD, NULL};
    const append_case table = {"rope table d128 paged", 2, 8, 2, 128, 128, 4, 64, PAGED, 16,
                               0, 0, {5, 40}, 0, 0, 1, 0, FMQA_KV_SCALE_TOKEN_HEAD, NULL};
    const append_case shorter = {"rope table short r32", 2, 4, 1, 64, 64, 4, 64, 0, 0, 0, 0,
                                 {10, 30}, 32, 0, 2, 0, FMQA_KV_SCALE_TOKEN_HEAD, NULL};
    run_one(&partial, BF16, FP8, FMQA_ROPE_GPTJ);
    run_one(&table, BF16, FMQA_DTYPE_INT8, FMQA_ROPE_NEOX);
    run_one(&shorter, FMQA_DTYPE_F16, FMQA_DTYPE_F16, FMQA_ROPE_NEOX);
}
