/*
 * test_prefill_scores.c -- a prefill's observation-window scores
 * (FMQA_FLAG_SCORES with FMQA_OP_PREFILL; SnapKV): the argument checks, the
 * plan (workspace, second kernel, prefill_sm90's refusal), and the prefill
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
 * Cost: about 40 s of CPU on the 2-core build machine, mostly the host
 * compiler building each case's emulator (2-3 s, 11 builds).
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

/* ---------------------------------------------------------------- arguments */

static fmqa_ctx_t *make_ctx(void)
{
    fmqa_options o = FMQA_OPTIONS_INIT;
    o.db_path = ""; /* no database: tests must not touch ~/.cache */
    fmqa_ctx_t *ctx = NULL;
    cr_assert_eq(fmqa_ctx_create(&o, &ctx), FMQA_OK, "%s", fmqa_ctx_errmsg(ctx));
    return ctx;
}

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
    fmqa_ctx_t *ctx = make_ctx();
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
    gen_lib_close(lib);
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
    /* [b, hk, slot], 8 NaN floats of padding after each row */
    const int64_t slots = p.kv_len, row = slots + 8, n = (int64_t)p.batch * p.num_kv_heads * row;
    float *buf = fmqa_emu_poisoned(n * sizeof(float), 16), *start = malloc(n * sizeof *start);
    double *want = calloc(n, sizeof *want), *dense = calloc(n, sizeof *dense);
    cr_assert(start && want && dense);
    for (int64_t i = 0; i < n; i++)
        if (i % row < slots)
            buf[i] = (float)ref_rng_uniform(&r);
    memcpy(start, buf, n * sizeof *start);
    in.a.scores = buf;
    in.a.scores_stride_head = row, in.a.scores_stride_batch = p.num_kv_heads * row;
    in.a.scores_window = sc->window;
    char cfg[GEN_CONFIG_TEXT_CAP], what[GEN_PROBLEM_TEXT_CAP + GEN_CONFIG_TEXT_CAP + 64];
    run_prefill(&p, sc, &in, cfg);
    snprintf(what, sizeof what, "%s [%s] window %d (seed %llu)", sc->spec, cfg, sc->window,
             (unsigned long long)seed);
    prefill_inputs_check(&p, &in, in.a.o, in.a.lse, what);

    /* the reference: dense [b, hk, kv_len] masses, added to the start */
    cr_assert_eq(ref_prefill_scores(&p, &in.a, in.n_pages, dense, &err), FMQA_OK, "%s", err.msg);
    int64_t bad = 0, worst = -1;
    double max_rel = 0.0;
    for (int64_t i = 0; i < n; i++) {
        const int64_t j = i % row, b = i / row / p.num_kv_heads;
        const int32_t len = sc->cached[b] + sc->tq[b];
        if (j >= len) { /* padding and slots past the sequence: untouched */
            bad += memcmp(&buf[i], &start[i], sizeof *buf) != 0;
            continue;
        }
        const double w = start[i] + dense[i / row * slots + j];
        const double e = fabs(buf[i] - w) / fmax(w, 1e-3);
        if (isnan(e))
            bad++, worst = i;
        else if (e > max_rel)
            max_rel = e, worst = i;
    }
    /* 2^(x - L) of f32 logits and LSEs from f16 / bf16 operands, summed over
     * <= w G rows: observed ~2e-4 relative. */
    fprintf(stderr, "%s: scores max rel %.2e at %lld, %lld NaN or untouchable slots written\n",
            what, max_rel, (long long)worst, (long long)bad);
    cr_expect(bad == 0 && max_rel <= 2e-3, "%s: scores max rel %g at %lld (%g, start %g), %lld NaN "
              "or untouchable slots written", what, max_rel, (long long)worst,
              worst >= 0 ? buf[worst] : 0.0, worst >= 0 ? start[worst] : 0.0, (long long)bad);
    if (sc->twice) { /* bitwise repeatable: the same start, the same sums */
        float *first = malloc(n * sizeof *first);
        cr_assert(first);
        memcpy(first, buf, n * sizeof *first);
        memcpy(buf, start, n * sizeof *buf);
        run_prefill(&p, sc, &in, cfg);
        cr_expect(memcmp(first, buf, n * sizeof *buf) == 0, "%s: a second run differs", what);
        free(first);
    }
    free(start), free(want), free(dense);
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
         "flags=causal|lse|paged|kv_cache|scores", "BLOCK_N=32", {30, 9}, {100, 64}, 8, 0, 1},
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
