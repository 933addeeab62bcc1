/*
 * test_tune_inputs.c -- the host half of the tuner's test cases
 * (tun_case_create_host): for a fixed seed the inputs and the references are
 * byte-identical on 1, 2 and 3 threads (contiguous, paged, ring, tree-mask,
 * 8-bit, MLA, append and MLA latent append cases, with blocks that straddle sequences); a seed replays
 * and another seed differs; the per-sequence reference equals one ref_decode
 * over the whole batch; and the pool behind it (tun_parallel) runs every job
 * once and reports the lowest failing job whatever the thread count.
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "fmqa_params.h"
#include "host_case.h"
#include "rt.h"
#include "tun.h"

static fmqa_problem decode_problem(int32_t batch, int32_t kv_len, int32_t h, int32_t hk,
                                   int32_t d, fmqa_dtype kv)
{
    fmqa_problem p;
    fmqa_problem_init(&p);
    p.op = FMQA_OP_DECODE;
    p.batch = batch, p.kv_len = kv_len, p.q_tokens = 1;
    p.num_q_heads = h, p.num_kv_heads = hk, p.head_dim_qk = p.head_dim_v = d;
    p.q_dtype = p.out_dtype = FMQA_DTYPE_F16, p.kv_dtype = kv;
    p.flags = FMQA_FLAG_CAUSAL;
    return p;
}

/* Decode with 8-bit paged ring cache, three tree-masked drafts and a window
 * with sinks: every path of the drawing and of the sequence slicing. */
static fmqa_problem odd_problem(void)
{
    fmqa_problem p = decode_problem(5, 200, 4, 2, 32, FMQA_DTYPE_INT8);
    p.q_tokens = 3, p.window = 70, p.sink_tokens = 4, p.page_size = 16;
    p.flags |= FMQA_FLAG_PAGED | FMQA_FLAG_RING | FMQA_FLAG_TREE_MASK | FMQA_FLAG_LSE;
    return p;
}

/* MLA decode: 16 heads on one fp8 latent of 512 + 64, two drafts, 64-token
 * pages; V is the latent's first 512 values (no V tensor of its own). */
static fmqa_problem mla_problem(void)
{
    fmqa_problem p = decode_problem(3, 150, 16, 1, 576, FMQA_DTYPE_FP8_E4M3);
    p.op = FMQA_OP_MLA_DECODE, p.head_dim_v = 512, p.q_tokens = 2, p.page_size = 64;
    p.flags |= FMQA_FLAG_PAGED | FMQA_FLAG_LSE;
    return p;
}

static void expect_thread_independent(const fmqa_problem *p, const tun_case_opts *o,
                                      int want_images)
{
    tun_case *one = fmqa_test_host_case(p, 1234, o, 1);
    for (int threads = 2; threads <= 3; threads++) {
        tun_case *many = fmqa_test_host_case(p, 1234, o, threads);
        int images;
        cr_expect(fmqa_test_same_images(one, many, &images), "1 thread and %d threads differ",
                  threads);
        cr_expect_eq(images, want_images);
        tun_case_destroy(many);
    }
    tun_case_destroy(one);
}

Test(tune_inputs, f16_gqa_same_on_any_thread_count)
{
    /* 5 x 300 x 2 rows: 256-row blocks straddle sequences; random lengths. */
    fmqa_problem p = decode_problem(5, 300, 4, 2, 64, FMQA_DTYPE_F16);
    tun_case_opts o = TUN_CASE_OPTS_INIT;
    expect_thread_independent(&p, &o, 6);   /* q k v lens ref_o ref_lse */
}

Test(tune_inputs, int8_paged_ring_tree_same_on_any_thread_count)
{
    fmqa_problem p = odd_problem();
    tun_case_opts o = TUN_CASE_OPTS_INIT;
    /* q k v scales lens pages mask ref_o ref_lse full_o */
    expect_thread_independent(&p, &o, 11);
}

Test(tune_inputs, mla_same_on_any_thread_count)
{
    fmqa_problem p = mla_problem();
    tun_case_opts o = TUN_CASE_OPTS_INIT;
    /* q k k_scale lens pages ref_o ref_lse full_o: no V and no V scales */
    expect_thread_independent(&p, &o, 8);
    tun_case *c = fmqa_test_host_case(&p, 5, &o, 2);
    fmqa_decode_args a;
    tun_case_host_decode_args(c, &a);
    cr_expect(a.v == a.k && a.v_scale == a.k_scale, "MLA's V must be its latent");
    cr_expect_eq(a.v_stride_token, a.k_stride_token);
    tun_case_destroy(c);
}

Test(tune_inputs, append_same_on_any_thread_count)
{
    fmqa_problem p = decode_problem(3, 100, 8, 2, 64, FMQA_DTYPE_FP8_E4M3);
    p.op = FMQA_OP_APPEND, p.q_tokens = 4, p.rope = FMQA_ROPE_NEOX;
    tun_case_opts o = TUN_CASE_OPTS_INIT;
    o.rope_q = 1;
    expect_thread_independent(&p, &o, 8);   /* q k v scales k_new v_new lens */
}

/* An MLA latent append (512 + 64, fp8, q_pe rotated): the harness passes no V,
 * so fastmqa-tune can verify and time it. */
Test(tune_inputs, mla_latent_append_same_on_any_thread_count)
{
    fmqa_problem p = decode_problem(2, 64, 16, 1, 576, FMQA_DTYPE_FP8_E4M3);
    p.op = FMQA_OP_APPEND, p.q_tokens = 2, p.head_dim_v = 512, p.rope = FMQA_ROPE_GPTJ;
    p.flags = FMQA_FLAG_LATENT;
    tun_case_opts o = TUN_CASE_OPTS_INIT;
    o.rope_q = 1;
    expect_thread_independent(&p, &o, 8);   /* q k v scales k_new v_new lens */
    /* its arguments pass the checks of fmqa_append */
    tun_case *c = fmqa_test_host_case(&p, 5, &o, 1);
    fmqa_append_args a;
    tun_case_host_append_args(c, &a);
    rt_plan plan;
    memset(&plan, 0, sizeof plan);
    plan.problem = p;
    fmqa_append_params prm;
    fmqa_err err;
    cr_expect_eq(rt_append_params(&plan, &a, &prm, &err), FMQA_OK, "%s", err.msg);
    tun_case_destroy(c);
}

Test(tune_inputs, seed_replays_and_another_differs)
{
    fmqa_problem p = decode_problem(2, 64, 2, 1, 32, FMQA_DTYPE_BF16);
    tun_case *a = fmqa_test_host_case(&p, 7, NULL, 2), *b = fmqa_test_host_case(&p, 7, NULL, 1), *c = fmqa_test_host_case(&p, 8, NULL, 2);
    int images;
    cr_expect(fmqa_test_same_images(a, b, &images));
    size_t na, nc;
    const void *ka = tun_case_host_image(a, TUN_HOST_K, &na);
    const void *kc = tun_case_host_image(c, TUN_HOST_K, &nc);
    cr_assert_eq(na, nc);
    cr_expect_neq(memcmp(ka, kc, na), 0, "seeds 7 and 8 drew the same cache");
    tun_case_destroy(a), tun_case_destroy(b), tun_case_destroy(c);
}

/* The references, computed one sequence per job, equal one ref_decode call on
 * the whole batch bit for bit. */
Test(tune_inputs, per_sequence_reference_is_the_whole_reference)
{
    const fmqa_problem probs[] = {decode_problem(4, 150, 6, 3, 32, FMQA_DTYPE_F16),
                                  odd_problem(), mla_problem()};
    for (size_t i = 0; i < sizeof probs / sizeof probs[0]; i++) {
        const fmqa_problem *p = &probs[i];
        tun_case *c = fmqa_test_host_case(p, 99, NULL, 2);
        fmqa_decode_args a;
        tun_case_host_decode_args(c, &a);
        size_t no, nl;
        const double *o = tun_case_host_image(c, TUN_HOST_REF_O, &no);
        const double *lse = tun_case_host_image(c, TUN_HOST_REF_LSE, &nl);
        double *wo = malloc(no), *wl = malloc(nl);
        cr_assert(wo && wl);
        size_t pt_bytes;
        tun_case_host_image(c, TUN_HOST_PAGE_TABLE, &pt_bytes);
        fmqa_err err;
        cr_assert_eq(ref_decode(p, &a, (int64_t)(pt_bytes / 4), wo, wl, &err), FMQA_OK, "%s",
                     err.msg);
        cr_expect_eq(memcmp(o, wo, no), 0, "problem %zu: o differs", i);
        cr_expect_eq(memcmp(lse, wl, nl), 0, "problem %zu: lse differs", i);
        int finite = 0;
        for (size_t j = 0; j < no / 8; j++)
            finite += isfinite(o[j]) != 0;
        cr_expect_eq((size_t)finite, no / 8, "problem %zu: a reference output is not finite", i);
        free(wo), free(wl);
        tun_case_destroy(c);
    }
}

/* Engines' page tables (issue 16): fastmqa-tune builds CSR decodes (lengths
 * from the table, no kv_lens) whose per-sequence reference is the whole one,
 * and CSR / slot-mapping appends whose args carry no 2-D table. */
Test(tune_inputs, layout_csr_and_slot_mapping_cases)
{
    fmqa_problem p = decode_problem(5, 150, 8, 2, 64, FMQA_DTYPE_INT8);
    p.flags |= FMQA_FLAG_PAGED | FMQA_FLAG_PAGE_CSR | FMQA_FLAG_LSE, p.page_size = 32;
    tun_case *c = fmqa_test_host_case(&p, 7, NULL, 2);
    fmqa_decode_args a;
    tun_case_host_decode_args(c, &a);
    cr_expect(a.page_indptr && a.page_indices && a.last_page_len && !a.kv_lens && !a.page_table);
    size_t no, nl, pt_bytes;
    const double *o = tun_case_host_image(c, TUN_HOST_REF_O, &no);
    const double *lse = tun_case_host_image(c, TUN_HOST_REF_LSE, &nl);
    tun_case_host_image(c, TUN_HOST_PAGE_TABLE, &pt_bytes);
    double *wo = malloc(no), *wl = malloc(nl);
    cr_assert(wo && wl);
    fmqa_err err;
    cr_assert_eq(ref_decode(&p, &a, (int64_t)(pt_bytes / 4), wo, wl, &err), FMQA_OK, "%s",
                 err.msg);
    cr_expect_eq(memcmp(o, wo, no), 0, "o differs");
    cr_expect_eq(memcmp(lse, wl, nl), 0, "lse differs");
    free(wo), free(wl);
    tun_case_destroy(c);

    const uint32_t forms[2] = {FMQA_FLAG_PAGE_CSR, FMQA_FLAG_SLOT_MAPPING};
    for (int i = 0; i < 2; i++) {
        fmqa_problem ap = decode_problem(3, 100, 8, 2, 64, FMQA_DTYPE_F16);
        ap.op = FMQA_OP_APPEND, ap.q_tokens = 4, ap.rope = FMQA_ROPE_NEOX, ap.page_size = 16;
        ap.flags = FMQA_FLAG_PAGED | forms[i];
        tun_case *ac = fmqa_test_host_case(&ap, 3, NULL, 2);
        fmqa_append_args aa;
        tun_case_host_append_args(ac, &aa);
        cr_expect(!aa.page_table && (i ? aa.slot_mapping != NULL : aa.page_indptr != NULL),
                  "form %d", i);
        tun_case_destroy(ac);
    }
}

/* ---------------------------------------------------------------- pool */

typedef struct counts {
    int hits[100];
    int64_t fail_from;       /* jobs >= fail_from fail */
} counts;

static fmqa_status count_job(void *user, int64_t job, fmqa_err *err)
{
    counts *c = user;
    __atomic_add_fetch(&c->hits[job], 1, __ATOMIC_RELAXED);
    if (job >= c->fail_from)
        return fmqa_err_set(err, FMQA_ERR_INTERNAL, "job %lld failed", (long long)job);
    return FMQA_OK;
}

Test(tune_inputs, pool_runs_every_job_once)
{
    for (int threads = 1; threads <= 4; threads++) {
        counts c = {{0}, 100};
        cr_assert_eq(tun_parallel(threads, 100, count_job, &c, NULL), FMQA_OK);
        for (int i = 0; i < 100; i++)
            cr_expect_eq(c.hits[i], 1, "%d threads: job %d ran %d times", threads, i, c.hits[i]);
    }
    cr_expect_eq(tun_parallel(4, 0, count_job, NULL, NULL), FMQA_OK);
}

Test(tune_inputs, pool_reports_the_lowest_failing_job)
{
    for (int threads = 1; threads <= 4; threads++) {
        counts c = {{0}, 37};
        fmqa_err err;
        cr_expect_eq(tun_parallel(threads, 100, count_job, &c, &err), FMQA_ERR_INTERNAL);
        cr_expect_str_eq(err.msg, "job 37 failed");
        for (int i = 0; i <= 37; i++)
            cr_expect_eq(c.hits[i], 1, "%d threads: job %d ran %d times", threads, i, c.hits[i]);
    }
}

Test(tune_inputs, thread_count_from_the_environment)
{
    setenv("FASTMQA_HOST_THREADS", "3", 1);
    cr_expect_eq(tun_host_threads(), 3);
    setenv("FASTMQA_HOST_THREADS", "1", 1);
    cr_expect_eq(tun_host_threads(), 1);
    setenv("FASTMQA_HOST_THREADS", "0", 1);      /* ignored: the CPU count */
    int dflt = tun_host_threads();
    cr_expect(dflt >= 1 && dflt <= TUN_HOST_THREADS_CAP);
    setenv("FASTMQA_HOST_THREADS", "4x", 1);
    cr_expect_eq(tun_host_threads(), dflt);
    unsetenv("FASTMQA_HOST_THREADS");
    cr_expect_eq(tun_host_threads(), dflt);
}

/* Learned sinks reach the case's reference (and so the tuner's and the gpu
 * tests' verification): the same inputs with sinks give lse = ln(exp(lse0) +
 * exp(sink)) per row and o scaled by exp(lse0 - lse). */
Test(tune_inputs, sinks_join_the_reference)
{
    fmqa_problem p = decode_problem(2, 70, 4, 2, 32, FMQA_DTYPE_F16);
    p.flags |= FMQA_FLAG_LSE;
    const float sinks[4] = {-3.0f, 0.5f, 4.0f, 9.0f};
    tun_case_opts o = TUN_CASE_OPTS_INIT;
    tun_case *a = fmqa_test_host_case(&p, 11, &o, 1);
    o.sinks = sinks;
    tun_case *b = fmqa_test_host_case(&p, 11, &o, 1);
    size_t n, m;
    const double *la = tun_case_host_image(a, TUN_HOST_REF_LSE, &n);
    const double *lb = tun_case_host_image(b, TUN_HOST_REF_LSE, &m);
    const double *oa = tun_case_host_image(a, TUN_HOST_REF_O, &n);
    const double *ob = tun_case_host_image(b, TUN_HOST_REF_O, &m);
    for (int r = 0; r < 2 * 4; r++) {
        double want = log(exp(la[r]) + exp((double)sinks[r % 4]));
        cr_expect(fabs(lb[r] - want) < 1e-12, "row %d: lse %.17g, want %.17g", r, lb[r], want);
        for (int i = 0; i < 32; i++)
            cr_expect(fabs(ob[r * 32 + i] - oa[r * 32 + i] * exp(la[r] - lb[r])) < 1e-12,
                      "row %d, column %d", r, i);
    }
    tun_case_destroy(a), tun_case_destroy(b);
}

/* A problem with FMQA_FLAG_SCORES gets a score buffer [b, hk, slot] (slots of
 * the cache: a ring's sinks + window + draft slots), so that fastmqa-tune can
 * time and verify it: fmqa_decode's argument checks, which run before any
 * device is needed, accept the case's arguments and refuse them without the
 * buffer. */
Test(tune_inputs, scores_problem_gets_a_score_buffer)
{
    fmqa_ctx_t *ctx = NULL;
    cr_assert_eq(fmqa_ctx_create(NULL, &ctx), FMQA_OK);
    fmqa_problem plain = decode_problem(2, 70, 4, 2, 32, FMQA_DTYPE_F16), ring = plain;
    plain.flags |= FMQA_FLAG_SCORES;
    ring.flags |= FMQA_FLAG_SCORES | FMQA_FLAG_RING;
    ring.window = 20, ring.sink_tokens = 4, ring.draft_slots = 1;
    const fmqa_problem *ps[2] = {&plain, &ring};
    const int64_t slots[2] = {70, 4 + 20 + 1};
    for (int i = 0; i < 2; i++) {
        tun_case_opts o = TUN_CASE_OPTS_INIT;
        tun_case *c = fmqa_test_host_case(ps[i], 3, &o, 1);
        fmqa_decode_args a;
        tun_case_host_decode_args(c, &a);
        cr_assert_not_null(a.scores, "case %d", i);
        cr_expect_eq(a.scores_stride_head, slots[i], "case %d", i);
        cr_expect_eq(a.scores_stride_batch, 2 * slots[i], "case %d", i);
        for (int64_t j = 0; j < 2 * 2 * slots[i]; j++)
            cr_expect_eq(a.scores[j], 0.0f, "case %d: scores start at zero", i);
        void *out = aligned_alloc(16, 2 * 4 * 32 * 2); /* outputs have no host image */
        a.o = out;
        fmqa_status st = fmqa_decode(ctx, ps[i], &a, NULL);
        cr_expect_neq(st, FMQA_ERR_INVALID_ARGUMENT, "case %d: %s", i, fmqa_ctx_errmsg(ctx));
        a.scores = NULL;
        cr_expect_eq(fmqa_decode(ctx, ps[i], &a, NULL), FMQA_ERR_INVALID_ARGUMENT, "case %d", i);
        cr_expect(strstr(fmqa_ctx_errmsg(ctx), "scores"), "%s", fmqa_ctx_errmsg(ctx));
        free(out);
        tun_case_destroy(c);
    }
    fmqa_ctx_destroy(ctx);
}
