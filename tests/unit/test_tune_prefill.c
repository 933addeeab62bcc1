/*
 * test_tune_prefill.c -- the tuner's prefill cases without a GPU
 * (tun_case_create_host, tun_case_check_prefill): the inputs are those of
 * fmqa_prefill_args (they pass the runtime's argument checks), the same on 1,
 * 2 and 3 threads; the reference rows, computed one block of query rows at a
 * time, equal ref_prefill over the whole batch; the budget picks sequence 0's
 * last block first and never more than it affords; and the comparison passes
 * the reference itself and fails a wrong checked row, a NaN in a row it does
 * not check and an unwritten element.
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

static fmqa_problem prefill_problem(const char *spec)
{
    fmqa_problem p;
    fmqa_err err;
    cr_assert_eq(gen_problem_parse(spec, &p, &err), FMQA_OK, "%s: %s", spec, err.msg);
    return p;
}

/* Packed K and V: a ragged batch of 3 with GQA, bf16, LSE. */
#define PACKED_SPEC "op=prefill,batch=3,heads=4,kv_heads=2,d=64,tq=300,kv_len=300,q=bf16," \
                    "kv=bf16,out=bf16,flags=causal|lse"
/* Chunked prefill on a paged int8 cache with a window and sinks. */
#define CACHE_SPEC "op=prefill,batch=3,heads=4,kv_heads=1,d=64,tq=150,kv_len=400,q=f16," \
                   "kv=int8,out=f16,page=16,window=100,sinks=4,flags=causal|lse|paged|kv_cache"

/* The whole batch's ref_prefill ([total_q, H, dv] and [total_q, H]). */
static void whole_reference(const tun_case *c, double **o, double **lse, int64_t *total)
{
    const fmqa_problem *p = tun_case_problem(c);
    fmqa_prefill_args a;
    tun_case_host_prefill_args(c, &a);
    size_t pt_bytes;
    tun_case_host_image(c, TUN_HOST_PAGE_TABLE, &pt_bytes);
    *total = a.cu_seqlens_q[p->batch];
    *o = malloc((size_t)(*total * p->num_q_heads * p->head_dim_v) * sizeof **o);
    *lse = malloc((size_t)(*total * p->num_q_heads) * sizeof **lse);
    cr_assert(*o && *lse);
    fmqa_err err;
    cr_assert_eq(ref_prefill(p, &a, (int64_t)(pt_bytes / 4), *o, *lse, &err), FMQA_OK, "%s",
                 err.msg);
}

Test(tune_prefill, inputs_are_prefill_args_and_thread_independent)
{
    const char *specs[] = {PACKED_SPEC, CACHE_SPEC};
    for (int i = 0; i < 2; i++) {
        fmqa_problem p = prefill_problem(specs[i]);
        tun_case *one = fmqa_test_host_case(&p, 21, NULL, 1);
        for (int threads = 2; threads <= 3; threads++) {
            tun_case *many = fmqa_test_host_case(&p, 21, NULL, threads);
            cr_expect(fmqa_test_same_images(one, many, NULL), "%s: 1 and %d threads differ", specs[i], threads);
            tun_case_destroy(many);
        }
        /* the arguments pass fmqa_prefill's checks (the outputs have no host
         * image: host buffers stand in) */
        fmqa_prefill_args a;
        tun_case_host_prefill_args(one, &a);
        void *out = calloc((size_t)(a.total_q * p.num_q_heads * p.head_dim_v), 2);
        float *lse = calloc((size_t)(a.total_q * p.num_q_heads), 4);
        cr_assert(out && lse);
        a.o = out, a.lse = lse;
        rt_plan plan;
        memset(&plan, 0, sizeof plan);
        plan.problem = p;
        fmqa_prefill_params prm;
        fmqa_err err;
        cr_expect_eq(rt_prefill_params(&plan, &a, &prm, &err), FMQA_OK, "%s: %s", specs[i],
                     err.msg);
        /* sequence 0 has the extremes; cu_seqlens_q adds up the new tokens */
        size_t nb;
        const int32_t *cu = tun_case_host_image(one, TUN_HOST_CU_SEQLENS, &nb);
        cr_assert_eq(nb, (size_t)(p.batch + 1) * 4);
        cr_expect_eq(cu[1], p.q_tokens);
        cr_expect_eq(tun_case_lens(one)[0], p.kv_len);
        cr_expect_eq(a.total_q, cu[p.batch]);
        free(out), free(lse);
        tun_case_destroy(one);
    }
}

/* Everything affordable: every row is checked and the blocks' reference is
 * ref_prefill's over the whole batch. */
Test(tune_prefill, block_reference_is_the_whole_reference)
{
    const char *specs[] = {PACKED_SPEC, CACHE_SPEC};
    for (int i = 0; i < 2; i++) {
        fmqa_problem p = prefill_problem(specs[i]);
        tun_case *c = fmqa_test_host_case(&p, 5, NULL, 2);
        double *wo, *wl;
        int64_t total, n;
        whole_reference(c, &wo, &wl, &total);
        const int64_t *rows = tun_case_checked_rows(c, &n);
        cr_assert_eq(n, total, "%s: %lld of %lld rows checked", specs[i], (long long)n,
                     (long long)total);
        for (int64_t r = 0; r < n; r++)
            cr_assert_eq(rows[r], r);
        size_t no, nl;
        const double *o = tun_case_host_image(c, TUN_HOST_REF_O, &no);
        const double *lse = tun_case_host_image(c, TUN_HOST_REF_LSE, &nl);
        cr_assert_eq(no, (size_t)(total * p.num_q_heads * p.head_dim_v) * 8);
        cr_expect_eq(memcmp(o, wo, no), 0, "%s: o differs", specs[i]);
        cr_expect_eq(memcmp(lse, wl, nl), 0, "%s: lse differs", specs[i]);
        free(wo), free(wl);
        tun_case_destroy(c);
    }
}

/* A budget below the whole: sequence 0's last block always, within the budget
 * otherwise, whole blocks of 128 rows, and their rows equal the whole
 * reference's. */
Test(tune_prefill, budget_picks_the_last_block_first)
{
    fmqa_problem p = prefill_problem(PACKED_SPEC);
    tun_case_opts o = TUN_CASE_OPTS_INIT;
    const int32_t lens[3] = {300, 260, 7};
    o.lens = lens;
    /* sequence 0's last block: rows 256..299 against up to 300 keys */
    const double last0 = 44.0 * 300 * 4 * 128;
    o.ref_macs = last0 * 1.5;
    tun_case *c = fmqa_test_host_case(&p, 9, &o, 2);
    int64_t n, total;
    const int64_t *rows = tun_case_checked_rows(c, &n);
    double *wo, *wl;
    whole_reference(c, &wo, &wl, &total);
    cr_assert_lt(n, total);
    cr_assert_geq(n, 44);
    int has_last = 0;
    double macs = 0;
    for (int64_t i = 0; i < n; i++) {
        has_last += rows[i] >= 256 && rows[i] < 300;
        cr_assert(i == 0 || rows[i] > rows[i - 1], "rows ascend");
        /* keys up to the row's block end (its sequence's row 127, 255, 259, ...) */
        int64_t b = rows[i] < 300 ? 0 : rows[i] < 560 ? 1 : 2, t = rows[i] - (b ? b == 1 ? 300 : 560 : 0);
        int64_t end = (t / 128 + 1) * 128;
        end = end > lens[b] ? lens[b] : end;
        macs += (double)end * 4 * 128;
    }
    cr_expect_eq(has_last, 44, "sequence 0's last block is checked whole");
    cr_expect_leq(macs, o.ref_macs, "%g multiply-adds over the budget %g", macs, o.ref_macs);
    size_t no;
    const double *ro = tun_case_host_image(c, TUN_HOST_REF_O, &no);
    const int64_t hd = (int64_t)p.num_q_heads * p.head_dim_v;
    cr_assert_eq(no, (size_t)(n * hd) * 8);
    for (int64_t i = 0; i < n; i++)
        cr_expect_eq(memcmp(ro + i * hd, wo + rows[i] * hd, (size_t)hd * 8), 0, "row %lld",
                     (long long)rows[i]);
    free(wo), free(wl);
    tun_case_destroy(c);
}

/* o and lse as a perfect kernel writes them: the whole reference rounded. */
static void perfect(const tun_case *c, void **o, float **lse, int64_t *total)
{
    const fmqa_problem *p = tun_case_problem(c);
    double *wo, *wl;
    whole_reference(c, &wo, &wl, total);
    int64_t n = *total * p->num_q_heads * p->head_dim_v, nl = *total * p->num_q_heads;
    *o = malloc((size_t)n * fmqa_dtype_size(p->out_dtype));
    *lse = malloc((size_t)nl * sizeof **lse);
    cr_assert(*o && *lse);
    fmqa_err err;
    cr_assert_eq(ref_from_double(p->out_dtype, wo, n, *o, &err), FMQA_OK, "%s", err.msg);
    for (int64_t i = 0; i < nl; i++)
        (*lse)[i] = (float)wl[i];
    free(wo), free(wl);
}

static tun_report check(const tun_case *c, const void *o, const float *lse)
{
    tun_report r;
    fmqa_err err;
    cr_assert_eq(tun_case_check_prefill(c, o, lse, NULL, &r, &err), FMQA_OK, "%s", err.msg);
    return r;
}

Test(tune_prefill, check_fails_wrong_nan_and_unwritten_outputs)
{
    fmqa_problem p = prefill_problem(PACKED_SPEC);
    tun_case_opts o = TUN_CASE_OPTS_INIT;
    o.ref_macs = 1; /* sequence 0's last block only */
    tun_case *c = fmqa_test_host_case(&p, 3, &o, 2);
    void *out;
    float *lse;
    int64_t total, n;
    perfect(c, &out, &lse, &total);
    const int64_t *rows = tun_case_checked_rows(c, &n);
    cr_assert_lt(n, total);
    tun_report r = check(c, out, lse);
    cr_expect(r.pass, "the reference itself fails: %s", r.summary);

    const int64_t hd = (int64_t)p.num_q_heads * p.head_dim_v;
    uint16_t *o16 = out;
    /* a checked row scaled: wrong result */
    uint16_t keep[256];
    memcpy(keep, o16 + rows[0] * hd, (size_t)hd * 2);
    for (int64_t i = 0; i < hd; i++)
        o16[rows[0] * hd + i] ^= 0x0080; /* flips a bf16 exponent bit */
    r = check(c, out, lse);
    cr_expect(!r.pass && r.out.rel_l2 > r.rel_tol, "a wrong checked row passes: %s", r.summary);
    memcpy(o16 + rows[0] * hd, keep, (size_t)hd * 2);

    /* a NaN in row 0, which is not checked */
    cr_assert_neq(rows[0], 0);
    o16[5] = 0x7FC0;
    r = check(c, out, lse);
    cr_expect(!r.pass && r.out.bad == 1 && r.poisoned == 0, "a NaN outside the checked rows: %s",
              r.summary);
    /* an element left poisoned, and an LSE too */
    o16[5] = 0xFFFF;
    memset(lse + 3, 0xFF, 4);
    r = check(c, out, lse);
    cr_expect(!r.pass && r.poisoned == 2, "unwritten elements: %s", r.summary);
    free(out), free(lse);
    tun_case_destroy(c);
}

Test(tune_prefill, bad_lengths_are_refused)
{
    fmqa_problem p = prefill_problem(CACHE_SPEC);
    tun_case_opts o = TUN_CASE_OPTS_INIT;
    const int32_t lens[3] = {400, 10, 200}, q_lens[3] = {150, 20, 0};
    o.lens = lens, o.q_lens = q_lens;
    tun_case *c = NULL;
    fmqa_err err;
    cr_assert_eq(tun_case_create_host(&p, 1, &o, 1, &c, &err), FMQA_ERR_INVALID_ARGUMENT);
    cr_expect(strstr(err.msg, "sequence 1: 20 new tokens"), "%s", err.msg);
    cr_assert_null(c);
}
