/*
 * test_prefill_scores.c -- a prefill's observation-window scores
 * (FMQA_FLAG_SCORES with FMQA_OP_PREFILL; SnapKV): the argument checks, the
 * plan (workspace, second kernel, prefill_sm90's refusal), the tuner's
 * verification of the scores (tun_case_check_prefill), and the prefill
 * template's real kernels run on the CPU emulator against the float64
 * reference (ref_prefill_scores), no GPU needed.
 *
 * The caller's buffer starts with random values (a previous call's scores)
 * in every slot and NaN in the padding between rows, the workspace poisoned
 * (NaN), so the tests show that the kernels add rather than overwrite, touch
 * no slot at or past a sequence's length, and read each LSE only after the
 * main kernel wrote it; o and lse are checked as test_prefill_emu.c checks
 * them (the scores build of the main kernel still attends right).  Cases:
 * contiguous and paged, MHA / GQA / MQA, 8-bit caches, causal with sliding
 * windows and sinks, non-causal, windows longer than a sequence, ragged
 * batches with empty sequences, learned sinks and soft-capping, and window
 * rows spread over several row blocks of the main kernel and several chunks
 * of the scores kernel; two runs must agree bit for bit.
 *
 * Cost: about 65 s on the 2-core build machine (--jobs=2, under load), mostly
 * the host compiler building each case's emulator (2-3 s, 13 builds); the
 * argument, plan and tuner checks (ctest unit_prefill_scores_args) take under
 * a second.
 */
#define _POSIX_C_SOURCE 200809L

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "decode_emu.h"
#include "fmqa_params.h"
#include "gen.h"
#include "prefill_check.h"
#include "ref.h"
#include "rt.h"
#include "test_support.h"
#include "tun.h"

/* ---------------------------------------------------------------- arguments */

/* 2 sequences of up to 512 new tokens, 32 heads over 8 KV heads, d = 128,
 * with scores into a buffer [2, 8, 512 + 4]. */
static fmqa_problem scores_problem(void)
{
    fmqa_problem p;
    fmqa_problem_init(&p);
    p.op = FMQA_OP_PREFILL;
    p.batch = 2;
    p.num_q_heads = 32;
    p.num_kv_heads = 8;
    p.q_tokens = p.kv_len = 512;
    p.flags = FMQA_FLAG_CAUSAL | FMQA_FLAG_SCORES;
    return p;
}

static fmqa_prefill_args scores_args(void)
{
    static _Alignas(16) unsigned char buf[2 * 512 * 32 * 128 * 2];
    static float scores[2 * 8 * 516];
    static int32_t cu[3] = {0, 100, 612};
    fmqa_prefill_args a;
    memset(&a, 0, sizeof a);
    a.q = a.k = a.v = a.o = buf;
    a.cu_seqlens_q = cu;
    a.q_stride_head = a.o_stride_head = a.k_stride_head = a.v_stride_head = 128;
    a.q_stride_token = a.o_stride_token = 32 * 128;
    a.k_stride_token = a.v_stride_token = 8 * 128;
    a.scores = scores;
    a.scores_stride_head = 516, a.scores_stride_batch = 8 * 516;
    a.scores_window = 32;
    return a;
}

Test(prefill_scores_args, bad_arguments_are_named_before_any_gpu_work)
{
    struct {
        const char *what, *msg;
        fmqa_prefill_args a;
        uint32_t drop; /* flags taken off the problem */
    } cases[] = {
        {"no buffer", "args.scores is NULL", scores_args(), 0},
        {"an empty window", "scores_window 0", scores_args(), 0},
        {"a negative window", "scores_window -3", scores_args(), 0},
        {"rows shorter than kv_len", "would overlap", scores_args(), 0},
        {"a misaligned buffer", "scores is not 4-byte", scores_args(), 0},
        {"a buffer without the flag", "no FMQA_FLAG_SCORES", scores_args(), FMQA_FLAG_SCORES},
        {"a window without the flag", "no FMQA_FLAG_SCORES", scores_args(), FMQA_FLAG_SCORES},
    };
    cases[0].a.scores = NULL;
    cases[1].a.scores_window = 0;
    cases[2].a.scores_window = -3;
    cases[3].a.scores_stride_head = 511;
    cases[4].a.scores = (float *)((char *)cases[4].a.scores + 2);
    cases[6].a.scores = NULL;
    fmqa_ctx_t *ctx = fmqa_test_ctx();
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fmqa_problem p = scores_problem();
        p.flags &= ~cases[i].drop;
        cr_expect_eq(fmqa_prefill(ctx, &p, &cases[i].a, NULL), FMQA_ERR_INVALID_ARGUMENT, "%s",
                     cases[i].what);
        cr_expect(strstr(fmqa_ctx_errmsg(ctx), cases[i].msg), "%s: message '%s'", cases[i].what,
                  fmqa_ctx_errmsg(ctx));
    }
    /* the flag is a decode and prefill flag, no other op's */
    fmqa_problem p = scores_problem();
    p.op = FMQA_OP_APPEND;
    cr_expect_eq(fmqa_problem_validate(ctx, &p), FMQA_ERR_INVALID_ARGUMENT);
    cr_expect(strstr(fmqa_ctx_errmsg(ctx), "FMQA_FLAG_SCORES is a decode and prefill flag"), "%s",
              fmqa_ctx_errmsg(ctx));
    p = scores_problem();
    cr_expect_eq(fmqa_problem_validate(ctx, &p), FMQA_OK, "%s", fmqa_ctx_errmsg(ctx));
    fmqa_ctx_destroy(ctx);
}

/* prefill's plan gains the LSE workspace and the scores kernel; prefill_sm90
 * refuses the flag, so the dispatcher (which takes only valid templates)
 * serves it with prefill. */
Test(prefill_scores_args, plan_and_sm90_refusal)
{
    gen_lib *lib = NULL;
    fmqa_err err;
    cr_assert_eq(gen_lib_open(fmqa_test_template_dir(), &lib, &err), FMQA_OK, "%s", err.msg);
    fmqa_device_info dev = fmqa_test_device("sm_90");
    fmqa_problem p = scores_problem();
    const gen_template *t = gen_lib_find(lib, "prefill");
    gen_config c;
    cr_assert_eq(gen_default(t, &p, &dev, &c, &err), FMQA_OK, "%s", err.msg);
    gen_plan l;
    cr_assert_eq(gen_launch_plan(t, &c, &p, &dev, &l, &err), FMQA_OK, "%s", err.msg);
    cr_assert_eq(l.n_kernels, 2);
    cr_expect_str_eq(l.kernels[1].entry, "fmqa_prefill_scores");
    cr_expect_eq(l.workspace, (int64_t)p.batch * p.q_tokens * p.num_q_heads * 4);
    int64_t bn;
    cr_assert(gen_config_get(&c, "BLOCK_N", &bn));
    cr_expect_eq(l.kernels[1].grid[0], (unsigned)((p.kv_len + bn - 1) / bn));
    cr_expect_eq(l.kernels[1].grid[1], (unsigned)p.num_kv_heads);
    cr_expect_eq(l.kernels[1].grid[2], (unsigned)p.batch);
    p.flags &= ~FMQA_FLAG_SCORES;
    cr_assert_eq(gen_launch_plan(t, &c, &p, &dev, &l, &err), FMQA_OK, "%s", err.msg);
    cr_expect_eq(l.n_kernels, 1);
    cr_expect_eq(l.workspace, 0);
    p.flags |= FMQA_FLAG_SCORES;
    const gen_template *t90 = gen_lib_find(lib, "prefill_sm90");
    fmqa_device_info h = fmqa_test_device("sm_90a");
    cr_expect_neq(gen_default(t90, &p, &h, &c, &err), FMQA_OK);
    cr_expect(strstr(err.msg, "no observation-window scores"), "%s", err.msg);
    /* the dispatcher: prefill_sm90 for the bf16 problem on sm_90a, prefill
     * once it carries the flag */
    p.q_dtype = p.kv_dtype = p.out_dtype = FMQA_DTYPE_BF16;
    const gen_template *chosen;
    fmqa_choice ch;
    for (int scores = 0; scores < 2; scores++) {
        p.flags = FMQA_FLAG_CAUSAL | (scores ? FMQA_FLAG_SCORES : 0);
        cr_assert_eq(rt_choose(lib, NULL, &h, &p, &chosen, &c, &ch, &err), FMQA_OK, "%s", err.msg);
        cr_expect_str_eq(ch.template_name, scores ? "prefill" : "prefill_sm90");
    }
    gen_lib_close(lib);
}

/* The tuner's prefill case with scores: its arguments carry the buffer
 * (zeros) and TUN_SCORES_WINDOW and pass rt_prefill_params; its check passes
 * the reference's own scores and fails a wrong covered score, a NaN in a
 * sequence the budget leaves out, and a missing buffer. */
Test(prefill_scores_args, tuner_verifies_scores)
{
    fmqa_problem p;
    fmqa_err err;
    const char *spec = "op=prefill,batch=3,heads=4,kv_heads=1,d=64,tq=150,kv_len=400,kv=int8,"
                       "page=16,window=100,sinks=4,flags=causal|lse|paged|kv_cache|scores";
    cr_assert_eq(gen_problem_parse(spec, &p, &err), FMQA_OK, "%s", err.msg);
    tun_case_opts o = TUN_CASE_OPTS_INIT;
    o.ref_macs = 1; /* o: sequence 0's last block; scores: sequence 0 only */
    tun_case *c = NULL;
    cr_assert_eq(tun_case_create_host(&p, 5, &o, 2, &c, &err), FMQA_OK, "%s", err.msg);
    fmqa_prefill_args a;
    tun_case_host_prefill_args(c, &a);
    const int64_t slots = (int64_t)p.batch * p.num_kv_heads * p.kv_len;
    cr_assert_not_null(a.scores);
    cr_expect_eq(a.scores_window, TUN_SCORES_WINDOW);
    cr_expect_eq(a.scores_stride_head, p.kv_len);
    for (int64_t i = 0; i < slots; i++)
        cr_assert_eq(a.scores[i], 0.0f, "scores start at zero");
    const int64_t total = a.cu_seqlens_q[p.batch], H = p.num_q_heads;
    void *out = calloc((size_t)(total * H * p.head_dim_v), 2);
    float *lse = calloc((size_t)(total * H), 4), *sc = calloc((size_t)slots, 4);
    double *wo = malloc((size_t)(total * H * p.head_dim_v) * 8), *wl = malloc((size_t)(total * H) * 8);
    double *ws = calloc((size_t)slots, 8);
    cr_assert(out && lse && sc && wo && wl && ws);
    a.o = out, a.lse = lse;
    rt_plan plan;
    memset(&plan, 0, sizeof plan);
    plan.problem = p;
    fmqa_prefill_params prm;
    cr_expect_eq(rt_prefill_params(&plan, &a, &prm, &err), FMQA_OK, "%s", err.msg);
    size_t pt;
    tun_case_host_image(c, TUN_HOST_PAGE_TABLE, &pt);
    cr_assert_eq(ref_prefill(&p, &a, (int64_t)(pt / 4), wo, wl, &err), FMQA_OK, "%s", err.msg);
    cr_assert_eq(ref_prefill_scores(&p, &a, (int64_t)(pt / 4), ws, &err), FMQA_OK, "%s", err.msg);
    cr_assert_eq(ref_from_double(p.out_dtype, wo, total * H * p.head_dim_v, out, &err), FMQA_OK);
    for (int64_t i = 0; i < total * H; i++)
        lse[i] = (float)wl[i];
    for (int64_t i = 0; i < slots; i++)
        sc[i] = (float)ws[i];
    size_t covered;
    cr_assert_not_null(tun_case_host_image(c, TUN_HOST_REF_SCORES, &covered));
    cr_expect_eq(covered, (size_t)(p.num_kv_heads * p.kv_len) * 8, "sequence 0 only");
    tun_report r;
    cr_assert_eq(tun_case_check_prefill(c, out, lse, sc, &r, &err), FMQA_OK, "%s", err.msg);
    cr_expect(r.pass && r.scores.n == p.num_kv_heads * p.kv_len, "the reference fails: %s", r.summary);
    int64_t j = 0; /* the largest covered score, doubled */
    for (int64_t i = 1; i < p.num_kv_heads * p.kv_len; i++)
        j = sc[i] > sc[j] ? i : j;
    sc[j] *= 2;
    cr_assert_eq(tun_case_check_prefill(c, out, lse, sc, &r, &err), FMQA_OK, "%s", err.msg);
    cr_expect(!r.pass && r.scores.rel_l2 > r.rel_tol, "a wrong score passes: %s", r.summary);
    sc[j] /= 2;
    sc[slots - 1] = NAN; /* sequence 2: not covered */
    cr_assert_eq(tun_case_check_prefill(c, out, lse, sc, &r, &err), FMQA_OK, "%s", err.msg);
    cr_expect(!r.pass && r.scores.bad == 1, "a NaN score passes: %s", r.summary);
    cr_expect_eq(tun_case_check_prefill(c, out, lse, NULL, &r, &err), FMQA_ERR_INVALID_ARGUMENT);
    free(out), free(lse), free(sc), free(wo), free(wl), free(ws);
    tun_case_destroy(c);
}

/* ---------------------------------------------------------------- emulator */

/* One case: a problem spec (flags carry scores), config overrides ("" =
 * default), new tokens and cached positions per sequence, the observation
 * window, learned sinks, and whether a second run must agree bit for bit. */
typedef struct scase {
    const char *spec;
    const char *config;
    int32_t tq[PREFILL_MAX_SEQS];
    int32_t cached[PREFILL_MAX_SEQS];
    int32_t window;
    int learned_sinks;
    int twice;
} scase;

static fmqa_status prefill_fill(const rt_plan *plan, const void *args, void *prm, fmqa_err *err)
{
    return rt_prefill_params(plan, args, prm, err);
}

/* One call through the emulator; the config text into cfg. */
static void run_prefill(const fmqa_problem *p, const scase *sc, prefill_inputs *in, char *cfg)
{
    fmqa_emu_run("prefill", p, sc->config, NULL, "prefill_emu.cpp", prefill_fill, &in->a,
                 &in->a.workspace, &in->a.workspace_size, 0, cfg);
}

static void run_case(const scase *sc)
{
    fmqa_err err;
    fmqa_problem p;
    cr_assert_eq(gen_problem_parse(sc->spec, &p, &err), FMQA_OK, "%s: %s", sc->spec, err.msg);
    cr_assert(p.flags & FMQA_FLAG_SCORES);
    cr_assert_eq(rt_problem_check(&p, &err), FMQA_OK, "%s: %s", sc->spec, err.msg);
    ref_rng r;
    uint64_t seed = fmqa_test_seed(sc->spec);
    ref_rng_seed(&r, seed);
    prefill_inputs in;
    prefill_inputs_make(&p, sc->tq, sc->cached, &r, &in);
    if (sc->learned_sinks)
        prefill_inputs_sinks(&p, &r, &in);
    prefill_inputs_scores(&p, sc->window, &r, &in);
    char cfg[GEN_CONFIG_TEXT_CAP], what[GEN_PROBLEM_TEXT_CAP + GEN_CONFIG_TEXT_CAP + 64];
    run_prefill(&p, sc, &in, cfg);
    snprintf(what, sizeof what, "%s [%s] window %d (seed %llu)", sc->spec, cfg, sc->window,
             (unsigned long long)seed);
    prefill_inputs_check(&p, &in, in.a.o, in.a.lse, what);
    prefill_inputs_check_scores(&p, &in, in.a.scores, what);
    if (sc->twice) { /* bitwise repeatable: the same start, the same sums */
        const size_t n = (size_t)p.batch * p.num_kv_heads * (p.kv_len + 8);
        float *first = malloc(n * sizeof *first);
        cr_assert_not_null(first);
        memcpy(first, in.a.scores, n * sizeof *first);
        memcpy(in.a.scores, in.scores_start, n * sizeof *first);
        run_prefill(&p, sc, &in, cfg);
        cr_expect(memcmp(first, in.a.scores, n * sizeof *first) == 0, "%s: a second run differs", what);
        free(first);
    }
}

static void run_all(const scase *cases, size_t n)
{
    for (size_t i = 0; i < n; i++)
        run_case(&cases[i]);
}

/* New tokens only (slot = token index) and chunked prefill on contiguous and
 * paged caches, f16 / bf16 / int8 / fp8; GQA, MQA, MHA; ragged batches with
 * a 1-token and an empty sequence; windows longer than a sequence. */
Test(prefill_scores_emu, layouts_groups_dtypes, .timeout = 900)
{
    static const scase cases[] = {
        {"op=prefill,batch=4,heads=8,kv_heads=2,d=64,tq=70,kv_len=70,flags=causal|lse|scores", "BLOCK_N=32",
         {70, 23, 1, 0}, {0}, 16, 0, 1},
        {"op=prefill,batch=2,heads=4,kv_heads=4,d=64,tq=30,kv_len=130,page=32,kv=int8,"
         "flags=causal|lse|paged|kv_cache|scores", "BLOCK_N=32", {30, 9}, {100, 64}, 8, 0, 0},
        {"op=prefill,batch=2,heads=6,kv_heads=1,d=128,tq=33,kv_len=150,page=16,q=bf16,kv=bf16,out=bf16,"
         "flags=causal|lse|paged|kv_cache|scores", "", {33, 20}, {117, 3}, 25, 0, 0},
        {"op=prefill,batch=2,heads=8,kv_heads=2,d=64,tq=20,kv_len=90,kv=fp8_e4m3,"
         "flags=causal|lse|kv_cache|scores", "BLOCK_N=64", {20, 5}, {70, 2}, 64, 0, 0},
    };
    run_all(cases, sizeof cases / sizeof cases[0]);
}

/* Masks: a sliding window with sinks (tiles behind the window are never
 * read), non-causal attention, soft-capping and learned sinks (the LSE the
 * masses are normalised by); the window's rows over several row blocks of
 * the main kernel and several BLOCK_M chunks of the scores kernel. */
Test(prefill_scores_emu, masks_sinks_chunks, .timeout = 900)
{
    static const scase cases[] = {
        {"op=prefill,batch=2,heads=4,kv_heads=1,d=64,tq=50,kv_len=220,window=70,sinks=33,page=16,"
         "flags=causal|lse|paged|kv_cache|scores", "BLOCK_N=32,BLOCK_M=64,WARPS=4", {50, 8}, {170, 90}, 24, 1, 0},
        {"op=prefill,batch=2,heads=2,kv_heads=1,d=64,tq=150,kv_len=150,window=40,sinks=4,flags=causal|lse|scores",
         "BLOCK_N=32", {150, 77}, {0}, 30, 0, 0},
        {"op=prefill,batch=2,heads=2,kv_heads=2,d=64,tq=40,kv_len=40,flags=lse|scores", "", {40, 7}, {0}, 9, 0, 0},
        {"op=prefill,batch=2,heads=16,kv_heads=2,d=64,tq=60,kv_len=100,softcap=0.75,flags=causal|lse|kv_cache|scores",
         "BLOCK_M=64,WARPS=2,BLOCK_N=32", {60, 13}, {40, 0}, 40, 1, 1},
    };
    run_all(cases, sizeof cases / sizeof cases[0]);
}

/* ---------------------------------------------------------------- SnapKV end to end */

static fmqa_status compress_fill(const rt_plan *plan, const void *a, void *prm, fmqa_err *err)
{
    return rt_compress_params(plan, a, prm, err);
}

static fmqa_status decode_fill(const rt_plan *plan, const void *a, void *prm, fmqa_err *err)
{
    return rt_decode_params(plan, a, prm, err);
}

/* SnapKV on the emulator: a prompt prefilled into its cache with the scores
 * of its last `window` tokens, fmqa_compress keeping sinks, the recent window
 * and the best max-pooled scores per KV head, then a decode step on the
 * compacted cache.  The kept slots are the reference's choice on the scores
 * the prefill left (ref_compress_select), and the decode equals ref_decode
 * of the compacted cache, i.e. attention over the kept positions. */
static void snapkv_case(const char *spec, const int32_t *tq, int32_t window,
                        fmqa_compress_policy pol)
{
    fmqa_err err;
    fmqa_problem p;
    cr_assert_eq(gen_problem_parse(spec, &p, &err), FMQA_OK, "%s: %s", spec, err.msg);
    cr_assert_eq(p.flags & (FMQA_FLAG_KV_CACHE | FMQA_FLAG_SCORES), FMQA_FLAG_KV_CACHE | FMQA_FLAG_SCORES);
    ref_rng r;
    ref_rng_seed(&r, fmqa_test_seed(spec));
    static const int32_t none[PREFILL_MAX_SEQS];
    prefill_inputs in;
    prefill_inputs_make(&p, tq, none, &r, &in); /* the whole prompt is new */
    const int64_t B = p.batch, Hk = p.num_kv_heads, T = p.kv_len, row = T + 8;
    float *sc = fmqa_emu_poisoned(B * Hk * row * 4, 16);
    for (int64_t i = 0; i < B * Hk * row; i++)
        sc[i] = 0.0f;
    fmqa_prefill_args *a = &in.a;
    a->scores = sc, a->scores_stride_head = row, a->scores_stride_batch = Hk * row;
    a->scores_window = window;
    char cfg[GEN_CONFIG_TEXT_CAP];
    fmqa_emu_run("prefill", &p, "", NULL, "prefill_emu.cpp", prefill_fill, a, &a->workspace,
                 &a->workspace_size, 0, cfg);
    prefill_inputs_check(&p, &in, a->o, a->lse, spec);
    float *sc0 = malloc(B * Hk * row * 4);
    cr_assert_not_null(sc0);
    memcpy(sc0, sc, B * Hk * row * 4);

    /* fmqa_compress on the prefill's cache and scores */
    fmqa_problem cp = p;
    cp.op = FMQA_OP_COMPRESS, cp.num_q_heads = cp.num_kv_heads, cp.q_tokens = 1;
    cp.flags &= FMQA_FLAG_PAGED;
    fmqa_compress_args ca;
    memset(&ca, 0, sizeof ca);
    FMQA_TEST_COMPRESS_CACHE_OF(ca, a);
    ca.new_lens = fmqa_emu_poisoned(B * 4, 4);
    ca.policy = pol;
    ca.scores = sc, ca.scores_stride_head = row, ca.scores_stride_batch = Hk * row;
    ca.kept = fmqa_emu_poisoned(B * Hk * row * 4, 16);
    ca.kept_stride_head = row, ca.kept_stride_batch = Hk * row;
    if (cp.flags & FMQA_FLAG_PAGED)
        ca.free_pages = fmqa_emu_poisoned(B * a->page_table_stride * 4, 4);
    fmqa_emu_run("compress", &cp, "", NULL, "compress_emu.cpp", compress_fill, &ca, &ca.workspace,
                 &ca.workspace_size, 0, NULL);
    int32_t *sel = malloc(T * sizeof *sel);
    cr_assert_not_null(sel);
    int64_t wrong = 0, dropped = 0, held = 0;
    for (int64_t b = 0; b < B; b++)
        for (int64_t hk = 0; hk < Hk; hk++) {
            int64_t nk;
            cr_assert_eq(ref_compress_select(&pol, a->kv_lens[b], Hk, hk, sc0 + b * Hk * row, row, sel, &nk,
                                             &err), FMQA_OK, "%s", err.msg);
            cr_expect_eq(ca.new_lens[b], nk, "%s: b %lld", spec, (long long)b);
            for (int64_t i = 0; i < nk; i++)
                wrong += ca.kept[b * Hk * row + hk * row + i] != sel[i];
            dropped += a->kv_lens[b] - nk, held += a->kv_lens[b];
        }
    cr_expect_eq(wrong, 0, "%s: %lld kept slots differ from the reference's choice", spec, (long long)wrong);
    cr_expect_gt(dropped, 0, "%s: nothing evicted", spec);

    /* a decode step of one new query token per sequence on the compacted cache */
    fmqa_problem dp = p;
    dp.op = FMQA_OP_DECODE, dp.q_tokens = 1;
    dp.flags = FMQA_FLAG_CAUSAL | (p.flags & FMQA_FLAG_PAGED);
    cr_assert_eq(rt_problem_check(&dp, &err), FMQA_OK, "%s", err.msg);
    const int64_t H = dp.num_q_heads, D = dp.head_dim_qk;
    fmqa_decode_args da;
    memset(&da, 0, sizeof da);
    double *x = malloc(B * H * D * sizeof *x), *want = malloc(B * H * D * sizeof *want);
    uint16_t *q = fmqa_emu_poisoned(B * H * D * 2, 16), *o = fmqa_emu_poisoned(B * H * D * 2, 16);
    cr_assert(x && want);
    ref_rng_fill(&r, x, B * H * D, 1.0, 0);
    cr_assert_eq(ref_from_double(dp.q_dtype, x, B * H * D, q, &err), FMQA_OK, "%s", err.msg);
    da.q = q, da.q_stride_head = D, da.q_stride_token = H * D, da.q_stride_batch = H * D;
    da.o = o, da.o_stride_head = D, da.o_stride_token = H * D, da.o_stride_batch = H * D;
    da.k = a->k, da.v = a->v;
    da.k_stride_batch = a->k_stride_batch, da.k_stride_token = a->k_stride_token;
    da.k_stride_head = a->k_stride_head;
    da.v_stride_batch = a->v_stride_batch, da.v_stride_token = a->v_stride_token;
    da.v_stride_head = a->v_stride_head;
    da.k_scale = a->k_scale, da.v_scale = a->v_scale;
    da.k_scale_stride_batch = a->k_scale_stride_batch, da.k_scale_stride_token = a->k_scale_stride_token;
    da.k_scale_stride_head = a->k_scale_stride_head;
    da.v_scale_stride_batch = a->v_scale_stride_batch, da.v_scale_stride_token = a->v_scale_stride_token;
    da.v_scale_stride_head = a->v_scale_stride_head;
    da.page_table = a->page_table, da.page_table_stride = a->page_table_stride;
    da.kv_lens = ca.new_lens;
    fmqa_emu_run("decode", &dp, "", NULL, "decode_emu.cpp", decode_fill, &da, &da.workspace,
                 &da.workspace_size, 0, NULL);
    cr_assert_eq(ref_decode(&dp, &da, in.n_pages, want, NULL, &err), FMQA_OK, "%s", err.msg);
    ref_cmp cmp;
    cr_assert_eq(ref_compare(dp.out_dtype, o, want, B * H * D, &cmp, &err), FMQA_OK, "%s", err.msg);
    fprintf(stderr, "%s window %d: %lld of %lld positions evicted, decode after compaction rel_l2 %.2e\n",
            spec, window, (long long)dropped, (long long)held, cmp.rel_l2);
    cr_expect(ref_cmp_ok(&cmp, 1e-3, -1), "%s: decode after compaction rel_l2 %g, %lld bad", spec, cmp.rel_l2,
              (long long)cmp.bad);
    free(sc0), free(sel), free(x), free(want);
}

Test(prefill_scores_emu, snapkv_end_to_end, .timeout = 900)
{
    static const int32_t tq[2] = {150, 90};
    /* SnapKV's shape: the observation window kept as the recent slots, max
     * pooling of radius 3 (kernel 7), heavy hitters per KV head */
    snapkv_case("op=prefill,batch=2,heads=8,kv_heads=2,d=64,tq=150,kv_len=150,page=16,kv=int8,"
                "flags=causal|lse|paged|kv_cache|scores", tq, 16, (fmqa_compress_policy){4, 16, 40, FMQA_POOL_MAX, 3, 0});
}
