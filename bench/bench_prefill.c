/*
 * bench_prefill.c -- `fastmqa-bench prefill`: causal prefill time and TFLOP/s
 * for the prefill shapes (bench_shapes.c: B = 4 x 4096 and B = 1 x 16384
 * tokens, 32 query heads over 32, 8 and 1 KV heads, d = 128 and 64, bf16).
 *
 * Each shape goes through the public path (fmqa_prefill: the dispatcher picks
 * the variant, tuned or the template default) on random bf16 inputs with the
 * new tokens as K and V (no cache); the output is poisoned (NaN) before the
 * first launch and must hold no poison after it (correctness against the
 * float64 reference is gpu_prefill's business: at these sizes the reference
 * takes minutes).  Then it is timed by tun_time (tun.h, "timing";
 * docs/PERFORMANCE.md), the method the tuner and `fastmqa-bench decode` use.
 * TFLOP/s = 4 B H T^2 d / 2 / median time (causal: half the square), quoted
 * beside the device's bf16 GEMM rate measured in the same run by the same
 * method (tun_gemm_rate: a cuBLAS GEMM of 8192^3, as `fastmqa-bench mla`), as
 * a fraction of it; without cuBLAS the fraction is "-" and the reason is said.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "tun.h"

typedef struct popts {
    const char *db_path, *shapes;
    int json;
} popts;

typedef struct prow {
    fmqa_status st;
    double us, spread, tflops;
    int64_t unwritten;     /* poison left in o after a launch */
    char choice[GEN_CONFIG_TEXT_CAP + 16];
    char why[256];
} prow;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: fastmqa-bench prefill [options]\n"
            "Causal prefill (fmqa_prefill, bf16, 32 query heads, K/V the new tokens) timed by\n"
            "the shared method; TFLOP/s = 4 B H T^2 d / 2 / time, beside the device's bf16\n"
            "GEMM rate (cuBLAS, 8192^3) measured in the same run.\n"
            "  --db PATH         tuning database the dispatcher reads (default: the default\n"
            "                    path; \"\" = template defaults only)\n"
            "  --shapes P,...    shapes whose id matches a pattern (fnmatch), e.g.\n"
            "                    'prefill-b4-*'; ids: prefill-b4-t4096-hkv8-d128, ...\n"
            "  --list            print the shape ids and their flops, then exit (no GPU)\n"
            "  --json            one JSON document instead of the table\n"
            "  --help\n"
            "Needs a GPU; exits 1 without one or when an output is left unwritten.\n");
}

/* 0 = run, 1 = done (--help, --list), 2 = bad usage. */
static int parse(int argc, char **argv, popts *o, int *list)
{
    memset(o, 0, sizeof *o);
    *list = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 1;
        } else if (!strcmp(a, "--json")) {
            o->json = 1;
        } else if (!strcmp(a, "--list")) {
            *list = 1;
        } else if ((!strcmp(a, "--db") || !strcmp(a, "--shapes")) && v) {
            *(!strcmp(a, "--db") ? &o->db_path : &o->shapes) = v;
            i++;
        } else {
            fprintf(stderr, "fastmqa-bench prefill: unknown option or missing value: %s\n", a);
            usage(stderr);
            return 2;
        }
    }
    return 0;
}

/* Device buffers of one shape: q, k, v, o packed [B T, heads, d], cu_seqlens_q. */
typedef struct pbufs {
    fmqa_ctx_t *ctx;
    CUdeviceptr q, k, v, o, cu;
    size_t o_bytes;
    fmqa_problem p;
    fmqa_prefill_args a;
} pbufs;

/* A driver call's result as a status (RT_CU returns instead). */
static fmqa_status cu_ok(fmqa_err *err, CUresult r, const char *what)
{
    return r == CUDA_SUCCESS ? FMQA_OK : rt_cuda_error(err, r, what);
}

/* Uniform bf16 values in [-1, 1) (fixed seed: the rate does not depend on them). */
static fmqa_status upload_random(const rt_cuda *cu, CUdeviceptr *d, size_t n, uint64_t seed,
                                 fmqa_err *err)
{
    uint16_t *h = malloc(n * sizeof *h);
    if (!h)
        return fmqa_err_set(err, FMQA_ERR_OUT_OF_MEMORY, "%zu input elements", n);
    ref_rng r;
    ref_rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++)
        h[i] = ref_bf16_from_double(2.0 * ref_rng_uniform(&r) - 1.0);
    fmqa_status st = cu_ok(err, cu->cuMemAlloc(d, n * 2), "cuMemAlloc (prefill input)");
    if (st == FMQA_OK)
        st = cu_ok(err, cu->cuMemcpyHtoD(*d, h, n * 2), "cuMemcpyHtoD");
    free(h);
    return st;
}

static fmqa_status bufs_make(fmqa_ctx_t *ctx, const bench_prefill_shape *s, pbufs *b,
                             fmqa_err *err)
{
    const rt_cuda *cu = ctx->cu;
    const int64_t rows = (int64_t)s->batch * s->tokens, H = 32, Hk = s->kv_heads, d = s->d;
    memset(b, 0, sizeof *b);
    b->ctx = ctx;
    b->p = bench_prefill_problem(s);
    b->o_bytes = (size_t)(rows * H * d * 2);
    int32_t *cu_host = malloc((size_t)(s->batch + 1) * sizeof *cu_host);
    if (!cu_host)
        return fmqa_err_set(err, FMQA_ERR_OUT_OF_MEMORY, "out of memory");
    for (int i = 0; i <= s->batch; i++)
        cu_host[i] = i * s->tokens;
    fmqa_status st = upload_random(cu, &b->q, (size_t)(rows * H * d), 1, err);
    if (st == FMQA_OK)
        st = upload_random(cu, &b->k, (size_t)(rows * Hk * d), 2, err);
    if (st == FMQA_OK)
        st = upload_random(cu, &b->v, (size_t)(rows * Hk * d), 3, err);
    if (st == FMQA_OK)
        st = cu_ok(err, cu->cuMemAlloc(&b->o, b->o_bytes), "cuMemAlloc (o)");
    if (st == FMQA_OK)
        st = cu_ok(err, cu->cuMemsetD8(b->o, 0xff, b->o_bytes), "cuMemsetD8 (poison o)");
    if (st == FMQA_OK)
        st = cu_ok(err, cu->cuMemAlloc(&b->cu, (size_t)(s->batch + 1) * 4), "cuMemAlloc (cu)");
    if (st == FMQA_OK)
        st = cu_ok(err, cu->cuMemcpyHtoD(b->cu, cu_host, (size_t)(s->batch + 1) * 4),
                   "cuMemcpyHtoD (cu_seqlens_q)");
    free(cu_host);
    fmqa_prefill_args *a = &b->a;
    a->q = (const void *)(uintptr_t)b->q, a->o = (void *)(uintptr_t)b->o;
    a->k = (const void *)(uintptr_t)b->k, a->v = (const void *)(uintptr_t)b->v;
    a->q_stride_token = a->o_stride_token = H * d, a->q_stride_head = a->o_stride_head = d;
    a->k_stride_token = a->v_stride_token = Hk * d, a->k_stride_head = a->v_stride_head = d;
    a->cu_seqlens_q = (const int32_t *)(uintptr_t)b->cu;
    return st;
}

static void bufs_free(pbufs *b)
{
    const CUdeviceptr all[] = {b->q, b->k, b->v, b->o, b->cu};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (all[i])
            b->ctx->cu->cuMemFree(all[i]);
}

static fmqa_status run_once(void *user, int i, CUstream stream, fmqa_err *err)
{
    pbufs *b = user;
    (void)i;
    if (fmqa_prefill(b->ctx, &b->p, &b->a, (fmqa_stream_t)stream) != FMQA_OK)
        return fmqa_err_set(err, FMQA_ERR_CUDA, "fmqa_prefill: %s", fmqa_ctx_errmsg(b->ctx));
    return FMQA_OK;
}

/* Poison left in o after one launch (elements never written). */
static fmqa_status unwritten(pbufs *b, CUstream s, int64_t *n, fmqa_err *err)
{
    uint16_t *h = malloc(b->o_bytes);
    if (!h)
        return fmqa_err_set(err, FMQA_ERR_OUT_OF_MEMORY, "out of memory");
    const rt_cuda *cu = b->ctx->cu;
    fmqa_status st = run_once(b, 0, s, err);
    if (st == FMQA_OK)
        st = cu_ok(err, cu->cuStreamSynchronize(s), "cuStreamSynchronize");
    if (st == FMQA_OK)
        st = cu_ok(err, cu->cuMemcpyDtoH(h, b->o, b->o_bytes), "cuMemcpyDtoH (o)");
    if (st == FMQA_OK)
        *n = ref_poison_count(h, 2, (int64_t)(b->o_bytes / 2), REF_POISON_16);
    free(h);
    return st;
}

static fmqa_status measure(fmqa_ctx_t *ctx, tun_timer *timer, const bench_prefill_shape *s,
                           prow *out, fmqa_err *err)
{
    pbufs b;
    fmqa_status st = rt_enter(ctx, err);
    if (st != FMQA_OK)
        return st;
    st = bufs_make(ctx, s, &b, err);
    fmqa_choice ch;
    if (st == FMQA_OK && fmqa_plan(ctx, &b.p, &ch) != FMQA_OK)
        st = fmqa_err_set(err, FMQA_ERR_CUDA, "fmqa_plan: %s", fmqa_ctx_errmsg(ctx));
    if (st == FMQA_OK) {
        snprintf(out->choice, sizeof out->choice, "%s %s",
                 ch.source == FMQA_CHOICE_TUNED ? "tuned" :
                 ch.source == FMQA_CHOICE_NEAREST ? "nearest" : "default", ch.config);
        st = unwritten(&b, tun_timer_stream(timer), &out->unwritten, err);
    }
    tun_timing tm;
    tun_time_opts to = TUN_TIME_OPTS_INIT;
    to.bytes = (double)b.o_bytes * (2 + 2.0 * s->kv_heads / 32); /* q, o, k, v */
    if (st == FMQA_OK && (st = tun_time(timer, run_once, &b, &to, &tm, err)) == FMQA_OK) {
        out->us = tm.stats.median, out->spread = tm.stats.spread;
        out->tflops = bench_prefill_flops(s) / (tm.stats.median * 1e6);
    }
    bufs_free(&b);
    rt_leave(ctx);
    return st;
}

/* A fraction of the GEMM rate: fmt's figure of x / gemm * scale, or `none`
 * when the rate was not measured. */
static const char *gemm_fraction(char *buf, size_t cap, const char *fmt, double x, double gemm,
                                 double scale, const char *none)
{
    if (gemm > 0)
        snprintf(buf, cap, fmt, scale * x / gemm);
    else
        snprintf(buf, cap, "%s", none);
    return buf;
}

static void print_rows(const fmqa_device_info *dev, double gemm, const char *gemm_why,
                       const bench_prefill_shape *s, int n, const prow *rows, int json)
{
    char id[96], frac[32];
    if (json) {
        printf("{\"device\":\"%s\",\"timing_method\":%d,\"gemm_bf16_tflops\":", dev->name,
               TUN_TIMING_METHOD);
        if (gemm > 0)
            printf("%.1f,\"rows\":[", gemm);
        else
            printf("null,\"rows\":[");
    } else {
        printf("%s, timing method %d; bf16 GEMM rate: ", dev->name, TUN_TIMING_METHOD);
        if (gemm > 0)
            printf("%.0f TFLOP/s (same run)\n", gemm);
        else
            printf("- (%s)\n", gemm_why);
        printf("%-28s %10s %7s %9s %6s %s\n", "shape", "us", "spread", "TFLOP/s", "%gemm",
               "variant");
    }
    for (int i = 0; i < n; i++) {
        const prow *r = &rows[i];
        bench_prefill_shape_id(&s[i], id, sizeof id);
        if (json) {
            gemm_fraction(frac, sizeof frac, "%.4f", r->tflops, gemm, 1, "null");
            printf("%s{\"shape\":\"%s\",\"status\":\"%s\",\"us\":%.3f,\"spread\":%.4f,"
                   "\"tflops\":%.2f,\"gemm_fraction\":%s,\"unwritten\":%lld,\"variant\":\"%s\"}",
                   i ? "," : "", id, fmqa_status_string(r->st), r->us, r->spread, r->tflops,
                   frac, (long long)r->unwritten, r->choice);
        } else if (r->st != FMQA_OK) {
            printf("%-28s error: %s\n", id, r->why);
        } else {
            gemm_fraction(frac, sizeof frac, "%5.1f%%", r->tflops, gemm, 100, "     -");
            printf("%-28s %10.1f %6.1f%% %9.1f %s %s%s\n", id, r->us, 100 * r->spread,
                   r->tflops, frac, r->choice, r->unwritten ? " (OUTPUT UNWRITTEN)" : "");
        }
    }
    if (json)
        printf("]}\n");
}

int bench_prefill_main(int argc, char **argv)
{
    popts o;
    int list;
    int pr = parse(argc, argv, &o, &list);
    if (pr)
        return pr == 1 ? 0 : 2;
    bench_prefill_shape *shapes = NULL;
    int n = bench_prefill_select(o.shapes, 0, &shapes);
    if (n <= 0) {
        fprintf(stderr, "fastmqa-bench prefill: --shapes '%s' matches no shape (ids: "
                        "prefill-b4-t4096-hkv8-d128, ...; --list shows them)\n",
                o.shapes ? o.shapes : "");
        free(shapes);
        return 2;
    }
    if (list) {
        bench_prefill_shapes_print(shapes, n);
        free(shapes);
        return 0;
    }
    fmqa_ctx_t *ctx = NULL;
    fmqa_device_info dev;
    prow *rows = calloc((size_t)n, sizeof *rows);
    if (!rows || bench_open_gpu("prefill", o.db_path, &ctx, &dev)) {
        free(rows), free(shapes);
        return 1;
    }
    tun_timer *timer = NULL;
    fmqa_err err = {0}, gerr = {0};
    int failed = 0;
    double gemm = 0;
    fmqa_status st = tun_timer_create(ctx, &timer, &err);
    if (st == FMQA_OK && tun_gemm_rate(timer, &gemm, &gerr) != FMQA_OK)
        fprintf(stderr, "  bf16 GEMM rate not measured: %s\n", gerr.msg);
    for (int i = 0; i < n && st == FMQA_OK; i++) {
        fmqa_err e = {0};
        rows[i].st = measure(ctx, timer, &shapes[i], &rows[i], &e);
        fmqa_strlcpy(rows[i].why, e.msg, sizeof rows[i].why);
        failed |= rows[i].st != FMQA_OK || rows[i].unwritten != 0;
    }
    if (st != FMQA_OK) {
        fprintf(stderr, "fastmqa-bench prefill: %s\n", err.msg);
        failed = 1;
    } else {
        print_rows(&dev, gemm, gerr.msg, shapes, n, rows, o.json);
    }
    tun_timer_destroy(timer);
    fmqa_ctx_destroy(ctx);
    free(rows), free(shapes);
    return failed ? 1 : 0;
}
