/*
 * test_compress_emu.c -- fmqa_compress's kernels (templates/compress.cuh) run
 * on the CPU emulator against the exact reference of the choice
 * (ref_compress_select), then decode on the compacted cache against the
 * float64 reference; no GPU needed.
 *
 * The cache is that of the decode emulator tests (tests/support/decode_emu.c:
 * K and V in different layouts, shuffled pages, NaN wherever no position
 * lives).  Scores are random, some cases drawn from four levels so that many
 * keys tie and the slot order decides.  After the call: every new length, every
 * kept index and every kept K, V, scale and score row equals the snapshot's row
 * at the reference's choice, and every other byte of the cache is unchanged
 * (no stray write, no source clobbered before it was read); then a decode of
 * the compacted cache (each KV head reading its own kept rows) is compared
 * with ref_decode of it.
 */
#define _POSIX_C_SOURCE 200809L

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "decode_emu.h"
#include "fmqa_params.h"
#include "gen.h"
#include "ref.h"
#include "rt.h"
#include "test_support.h"

typedef struct ccase {
    const char *spec;            /* the decode problem whose cache is compressed */
    fmqa_compress_policy policy;
    int32_t lens[8];
    const char *config;          /* compress template overrides ("" = none)      */
    int ties;                    /* scores from 4 levels                          */
} ccase;

static fmqa_status compress_fill(const rt_plan *plan, const void *a, void *prm, fmqa_err *err)
{
    return rt_compress_params(plan, a, prm, err);
}

static void *snapshot(const void *src, size_t bytes)
{
    void *d = malloc(bytes ? bytes : 1);
    cr_assert_not_null(d);
    if (bytes)
        memcpy(d, src, bytes);
    return d;
}

/* Element offset of slot's row of head hk, tensor strides s (batch|page, token, head). */
static int64_t row_at(const fmqa_emu_inputs *in, const fmqa_problem *p, int64_t b, int64_t hk,
                      int64_t slot, const int64_t s[3])
{
    int64_t outer = b, t = slot;
    if (p->flags & FMQA_FLAG_PAGED) {
        outer = in->a.page_table[b * in->per_seq + slot / p->page_size];
        t = slot % p->page_size;
    }
    return outer * s[0] + t * s[1] + hk * s[2];
}

/* Row `to` of the cache now equals row `from` of the snapshot (K, V, scales). */
static int same_row(const fmqa_emu_inputs *in, const fmqa_problem *p, int64_t b, int64_t hk,
                    int64_t to, int64_t from, const void *k0, const void *v0, const float *ks0,
                    const float *vs0)
{
    const fmqa_decode_args *a = &in->a;
    const int64_t ks[3] = {a->k_stride_batch, a->k_stride_token, a->k_stride_head};
    const int64_t vs[3] = {a->v_stride_batch, a->v_stride_token, a->v_stride_head};
    const int64_t kss[3] = {a->k_scale_stride_batch, a->k_scale_stride_token, a->k_scale_stride_head};
    const int64_t vss[3] = {a->v_scale_stride_batch, a->v_scale_stride_token, a->v_scale_stride_head};
    const size_t e = fmqa_dtype_size(p->kv_dtype), row = (size_t)p->head_dim_qk * e;
    int ok = !memcmp((const char *)a->k + row_at(in, p, b, hk, to, ks) * e,
                     (const char *)k0 + row_at(in, p, b, hk, from, ks) * e, row) &&
             !memcmp((const char *)a->v + row_at(in, p, b, hk, to, vs) * e,
                     (const char *)v0 + row_at(in, p, b, hk, from, vs) * e, row);
    if (a->k_scale)
        ok = ok && !memcmp(&a->k_scale[row_at(in, p, b, hk, to, kss)], &ks0[row_at(in, p, b, hk, from, kss)], 4) &&
             !memcmp(&a->v_scale[row_at(in, p, b, hk, to, vss)], &vs0[row_at(in, p, b, hk, from, vss)], 4);
    return ok;
}

/* Checks free_pages (the pages of the table columns past the kept rows, in
 * column order, then -1) and then reuses those pages as an engine would: their
 * K, V and scale bytes become NaN and their table entries -1, so the decode
 * that follows fails if it still reads one. */
static void release_freed_pages(fmqa_emu_inputs *in, const fmqa_problem *p, const int32_t *free_pages,
                                const int32_t *new_lens, const char *spec)
{
    const fmqa_decode_args *a = &in->a;
    int32_t *table = (int32_t *)(uintptr_t)a->page_table;
    const int64_t ps = p->page_size, per = in->per_seq;
    const size_t e = fmqa_dtype_size(p->kv_dtype);
    int64_t released = 0;
    for (int64_t b = 0; b < p->batch; b++) {
        const int64_t first = (new_lens[b] + ps - 1) / ps, last = (in->lens[b] + ps - 1) / ps;
        for (int64_t i = 0; i < per; i++) {
            const int32_t want = i < last - first ? table[b * per + first + i] : -1;
            cr_expect_eq(free_pages[b * per + i], want, "%s: b %lld: free_pages[%lld] = %d, want %d",
                         spec, (long long)b, (long long)i, free_pages[b * per + i], want);
        }
        for (int64_t c = first; c < last; c++) {
            const int64_t pg = table[b * per + c];
            memset((char *)(uintptr_t)a->k + pg * a->k_stride_batch * e, 0xff, a->k_stride_batch * e);
            memset((char *)(uintptr_t)a->v + pg * a->v_stride_batch * e, 0xff, a->v_stride_batch * e);
            if (a->k_scale) {
                memset((float *)(uintptr_t)a->k_scale + pg * a->k_scale_stride_batch, 0xff,
                       a->k_scale_stride_batch * 4);
                memset((float *)(uintptr_t)a->v_scale + pg * a->v_scale_stride_batch, 0xff,
                       a->v_scale_stride_batch * 4);
            }
            table[b * per + c] = -1;
            released++;
        }
    }
    cr_expect_gt(released, 0, "%s: no page released", spec);
}

static void run_case(const ccase *cc)
{
    fmqa_err err;
    fmqa_problem dp, p;
    cr_assert_eq(gen_problem_parse(cc->spec, &dp, &err), FMQA_OK, "%s: %s", cc->spec, err.msg);
    p = dp;
    p.op = FMQA_OP_COMPRESS, p.num_q_heads = p.num_kv_heads, p.q_tokens = 1;
    p.flags &= FMQA_FLAG_PAGED;
    ref_rng r;
    uint64_t seed = fmqa_test_seed(cc->spec);
    ref_rng_seed(&r, seed);
    static fmqa_emu_inputs in;
    fmqa_emu_inputs_make(&dp, cc->lens, 0, &r, &in);
    const int64_t B = p.batch, Hk = p.num_kv_heads, T = p.kv_len, row = T + 4;
    const fmqa_compress_policy *pol = &cc->policy;

    fmqa_compress_args ca;
    memset(&ca, 0, sizeof ca);
    const fmqa_decode_args *a = &in.a;
    FMQA_TEST_COMPRESS_CACHE_OF(ca, a);
    ca.new_lens = fmqa_emu_poisoned(B * 4, 4);
    ca.policy = *pol;
    float *sc = NULL;
    if (pol->heavy > 0) {
        sc = fmqa_emu_poisoned(B * Hk * row * 4, 16);
        for (int64_t i = 0; i < B * Hk * row; i++) {
            double u = ref_rng_uniform(&r);
            sc[i] = (float)(cc->ties ? (double)(int)(u * 4) / 4 : u);
        }
        ca.scores = sc, ca.scores_stride_head = row, ca.scores_stride_batch = Hk * row;
    }
    ca.kept = fmqa_emu_poisoned(B * Hk * row * 4, 16);
    ca.kept_stride_head = row, ca.kept_stride_batch = Hk * row;
    if (p.flags & FMQA_FLAG_PAGED)
        ca.free_pages = fmqa_emu_poisoned(B * in.per_seq * 4, 4);

    void *k0 = snapshot(a->k, in.k_bytes), *v0 = snapshot(a->v, in.v_bytes);
    float *ks0 = a->k_scale ? snapshot(a->k_scale, in.scale_bytes) : NULL;
    float *vs0 = a->v_scale ? snapshot(a->v_scale, in.scale_bytes) : NULL;
    float *sc0 = sc ? snapshot(sc, B * Hk * row * 4) : NULL;
    char cfg[GEN_CONFIG_TEXT_CAP];
    fmqa_emu_run("compress", &p, cc->config, NULL, "compress_emu.cpp", compress_fill, &ca,
                 &ca.workspace, &ca.workspace_size, 0, cfg);

    int32_t *sel = malloc(T * sizeof *sel);
    int64_t wrong = 0, moved = 0;
    for (int64_t b = 0; b < B; b++) {
        const int64_t n = in.lens[b];
        for (int64_t hk = 0; hk < Hk; hk++) {
            int64_t nk;
            cr_assert_eq(ref_compress_select(pol, n, Hk, hk, sc0 ? sc0 + b * Hk * row : NULL, row, sel,
                                             &nk, &err),
                         FMQA_OK, "%s", err.msg);
            cr_expect_eq(ca.new_lens[b], nk, "%s: b %lld: new length %d, want %lld", cc->spec,
                         (long long)b, ca.new_lens[b], (long long)nk);
            for (int64_t i = 0; i < T; i++) {
                if ((p.flags & FMQA_FLAG_PAGED) && in.a.page_table[b * in.per_seq + i / p.page_size] < 0)
                    continue; /* an unmapped page (fmqa_emu_inputs_make): no row */
                const int64_t from = i < nk ? sel[i] : i; /* past the kept rows: unchanged */
                int ok = same_row(&in, &p, b, hk, i, from, k0, v0, ks0, vs0);
                if (i < nk) {
                    ok = ok && ca.kept[b * Hk * row + hk * row + i] == sel[i];
                    if (sc)
                        ok = ok && sc[b * Hk * row + hk * row + i] == sc0[b * Hk * row + hk * row + sel[i]];
                    moved += sel[i] != i;
                }
                if (!ok && wrong++ < 5)
                    cr_log_error("%s: b %lld hk %lld slot %lld: not the row of slot %lld", cc->spec,
                                 (long long)b, (long long)hk, (long long)i, (long long)from);
            }
        }
    }
    fprintf(stderr, "%s [%s] sinks %d recent %d heavy %d pooling %d/%d per_seq %d: %lld rows moved, "
            "%lld wrong (seed %llu)\n", cc->spec, cfg, pol->sink_tokens, pol->recent, pol->heavy,
            (int)pol->pooling, pol->pool, pol->per_sequence, (long long)moved, (long long)wrong,
            (unsigned long long)seed);
    cr_expect_eq(wrong, 0, "%s: %lld rows wrong after compaction", cc->spec, (long long)wrong);
    cr_expect_gt(moved, 0, "%s: the case moves nothing", cc->spec);

    if (ca.free_pages)
        release_freed_pages(&in, &p, ca.free_pages, ca.new_lens, cc->spec);

    /* Decode of the compacted cache: the query token is the last kept slot. */
    int32_t *lens = fmqa_emu_poisoned(B * 4, 4);
    memcpy(lens, ca.new_lens, B * 4);
    in.a.kv_lens = lens;
    fmqa_emu_decode(&dp, "", NULL, 0, &in, NULL);
    const int64_t rows = B * dp.q_tokens * dp.num_q_heads, no = rows * dp.head_dim_v;
    double *o = malloc(no * sizeof *o);
    cr_assert_eq(ref_decode(&dp, &in.a, in.n_pages, o, NULL, &err), FMQA_OK, "%s", err.msg);
    ref_cmp cmp;
    cr_assert_eq(ref_compare(dp.out_dtype, in.a.o, o, no, &cmp, &err), FMQA_OK, "%s", err.msg);
    const double tol = dp.kv_dtype == FMQA_DTYPE_BF16 || dp.q_dtype == FMQA_DTYPE_BF16 ? 8e-3 : 1e-3;
    cr_expect(ref_cmp_ok(&cmp, tol, -1), "%s: decode after compaction rel_l2 %g, %lld bad", cc->spec,
              cmp.rel_l2, (long long)cmp.bad);
    free(o), free(sel), free(k0), free(v0), free(ks0), free(vs0), free(sc0);
}

#define POL(s, r, h, pl, pr, ps) {(s), (r), (h), (pl), (pr), (ps)}

Test(compress_emu, contiguous, .timeout = 900)
{
    static const ccase cases[] = {
        /* per head, max pooling; the middle sequence fits the budget */
        {"op=decode,batch=3,kv_heads=2,heads=8,d=64,kv_len=200,flags=causal",
         POL(4, 16, 40, FMQA_POOL_MAX, 2, 0), {200, 50, 151}, "", 0},
        /* ties everywhere, no pooling, bf16 d = 128, 128 threads */
        {"op=decode,batch=2,kv_heads=2,heads=2,d=128,kv_len=300,q=bf16,kv=bf16,out=bf16,flags=causal",
         POL(2, 8, 70, FMQA_POOL_NONE, 0, 0), {300, 97}, "NT=128", 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        run_case(&cases[i]);
}

Test(compress_emu, paged_8bit, .timeout = 900)
{
    static const ccase cases[] = {
        /* one choice per sequence, average pooling, int8 scales move too */
        {"op=decode,batch=3,kv_heads=2,heads=4,d=64,kv_len=180,page=16,kv=int8,flags=causal|paged",
         POL(4, 20, 30, FMQA_POOL_AVG, 1, 1), {180, 77, 33}, "", 1},
        /* sinks and recent slots only (StreamingLLM), no scores, fp8 */
        {"op=decode,batch=2,kv_heads=1,heads=4,d=64,kv_len=150,page=32,kv=fp8_e4m3,flags=causal|paged",
         POL(4, 40, 0, FMQA_POOL_NONE, 0, 0), {150, 60}, "NT=128", 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        run_case(&cases[i]);
}

/* free_pages, the argument checks (no launch): paged only, and apart from
 * the page table the moves read while it is written. */
Test(compress_args, free_pages)
{
    fmqa_err err;
    rt_plan plan;
    memset(&plan, 0, sizeof plan);
    cr_assert_eq(gen_problem_parse("op=compress,batch=2,kv_heads=2,heads=2,d=64,kv_len=64,page=16,"
                                   "flags=paged", &plan.problem, &err), FMQA_OK, "%s", err.msg);
    plan.launch.splits = 1, plan.launch.workspace = 8 * 2 * 2 * 64;
    static _Alignas(16) char cache[8 * 64 * 2 * 64 * 2], ws[8 * 2 * 2 * 64];
    static int32_t table[2 * 4 + 4], lens[2], new_lens[2];
    fmqa_compress_args a;
    memset(&a, 0, sizeof a);
    a.k = a.v = cache;
    a.k_stride_batch = a.v_stride_batch = 64 * 2 * 64, a.k_stride_token = a.v_stride_token = 2 * 64;
    a.k_stride_head = a.v_stride_head = 64;
    a.page_table = table, a.page_table_stride = 4, a.kv_lens = lens, a.new_lens = new_lens;
    a.policy.sink_tokens = 4, a.policy.recent = 8;
    a.workspace = ws, a.workspace_size = sizeof ws;
    fmqa_compress_params o;
    a.free_pages = table + 4; /* overlaps the table's second row */
    cr_expect_eq(rt_compress_params(&plan, &a, &o, &err), FMQA_ERR_INVALID_ARGUMENT);
    cr_expect(strstr(err.msg, "free_pages overlaps"), "%s", err.msg);
    static int32_t freed[2 * 4];
    a.free_pages = freed;
    cr_expect_eq(rt_compress_params(&plan, &a, &o, &err), FMQA_OK, "%s", err.msg);
    cr_expect_eq(o.free_pages, freed);
    plan.problem.flags = 0, plan.problem.page_size = 0;
    a.page_table = NULL, a.page_table_stride = 0;
    cr_expect_eq(rt_compress_params(&plan, &a, &o, &err), FMQA_ERR_INVALID_ARGUMENT);
    cr_expect(strstr(err.msg, "free_pages"), "%s", err.msg);
}
