/*
 * bench_mla.c -- `fastmqa-bench mla`: MLA decode (fmqa_mla_decode) over
 * FlashMLA's published shapes (bench_shapes.c), each beside both roofs
 * measured in the same run by the same method: the device's read bandwidth
 * (tun_read_bandwidth) and its bf16 tensor-core rate (tun_gemm_rate, a cuBLAS
 * GEMM).  Each shape is verified once against the float64 reference, then
 * timed (bench_time_problem: the decode benchmark's path).  Every sequence
 * holds kv_len tokens, so
 *   GB/s     = B * kv_len * (576 x element size, + 4 for fp8 scales) / time,
 *   TFLOP/s  = 2 * B * q_tokens * H * kv_len * (576 + 512) / time
 * (FlashMLA's count: the causal mask among the q_tokens drafts is ignored).
 * The targets: >= 90% of the read bandwidth where memory-bound (H <=
 * 32), >= 70% of the GEMM rate at H = 128.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "tun.h"

typedef struct mopts {
    const char *db_path, *config, *shapes;
    int json, list;
} mopts;

typedef struct mrow {
    fmqa_status st;
    bench_timing t;
    double gbps, tflops;
    char why[256];
} mrow;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: fastmqa-bench mla [options]\n"
            "MLA decode (latent 512 + rope 64) over FlashMLA's shapes: batch 64 and 128, 16 to\n"
            "128 heads, 1024 to 16384 positions, 1 and 2 query tokens, bf16 (and fp8 at 16\n"
            "and 32 heads); median time, GB/s and TFLOP/s beside the read bandwidth and the\n"
            "bf16 GEMM rate (cuBLAS) measured in the same run by the same method.\n"
            "  --db PATH         tuning database the dispatcher reads (default: the default\n"
            "                    path; \"\" = template defaults only)\n"
            "  --config TEXT     force an mla_decode config, e.g. BLOCK_N=64,WARPS_D=4 (over\n"
            "                    the template default)\n"
            "  --shapes P,...    shapes whose id matches a pattern (fnmatch), e.g.\n"
            "                    'mla-h128-bf16-b64-*,mla-h16-fp8-*'; ids like\n"
            "                    mla-h64-bf16-b128-t8192-q2\n"
            "  --list            print the shape ids and their KV bytes, then exit (no GPU)\n"
            "  --json            one JSON document instead of the table\n"
            "  --help\n"
            "Needs a GPU; exits 1 without one or when a shape fails verification.\n"
            "docs/PERFORMANCE.md explains the timing method.\n");
}

/* 0 = run, 1 = --help done, 2 = bad usage. */
static int parse(int argc, char **argv, mopts *o)
{
    memset(o, 0, sizeof *o);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h"))
            return usage(stdout), 1;
        if (!strcmp(a, "--json") || !strcmp(a, "--list")) {
            *(a[2] == 'j' ? &o->json : &o->list) = 1;
            continue;
        }
        if (!v || (strcmp(a, "--db") && strcmp(a, "--config") && strcmp(a, "--shapes"))) {
            fprintf(stderr, "fastmqa-bench mla: unknown option or missing value: %s\n", a);
            return usage(stderr), 2;
        }
        i++;
        if (!strcmp(a, "--db"))
            o->db_path = v;
        else if (!strcmp(a, "--config"))
            o->config = v;
        else
            o->shapes = v;
    }
    return 0;
}

static double flops(const bench_shape *s)
{
    return 2.0 * s->batch * (s->q_tokens ? s->q_tokens : 1) * s->heads * (double)s->kv_len *
           (576 + 512);
}

static void print_table(const fmqa_device_info *dev, double bw, double gemm, const char *gemm_why,
                        const bench_shape *shapes, int n, const mrow *rows)
{
    tun_device_report(stdout, dev);
    printf("measured read bandwidth: %.0f GB/s; bf16 GEMM rate: ", bw);
    if (gemm > 0)
        printf("%.0f TFLOP/s", gemm);
    else
        printf("- (%s)", gemm_why);
    printf(" (same run, timing method %d)\n", TUN_TIMING_METHOD);
    printf("%-30s %6s %5s %10s %7s %7s %6s %8s %6s %9s %-3s %s\n", "shape", "splits", "CTAs",
           "median_us", "spread", "GB/s", "%bw", "TFLOP/s", "%gemm", "rel_l2", "ok", "variant");
    for (int i = 0; i < n; i++) {
        char id[96];
        const mrow *r = &rows[i];
        bench_shape_id(&shapes[i], id, sizeof id);
        printf("%-30s ", id);
        if (r->st != FMQA_OK) {
            printf("error: %s\n", r->why);
            continue;
        }
        printf("%6d %5d %10.2f %6.1f%% %7.0f %5.1f%% %8.1f ", r->t.splits, r->t.ctas, r->t.us,
               100 * r->t.spread, r->gbps, 100 * r->gbps / bw, r->tflops);
        if (gemm > 0)
            printf("%5.1f%% ", 100 * r->tflops / gemm);
        else
            printf("%6s ", "-");
        printf("%9.2e %-3s %s\n", r->t.rel_l2, r->t.pass ? "yes" : "NO", r->t.variant);
    }
}

static void print_json(const fmqa_device_info *dev, double bw, double gemm,
                       const bench_shape *shapes, int n, const mrow *rows)
{
    printf("{\"device\":\"%s\",\"arch\":\"%s\",\"timing_method\":%d,"
           "\"read_bandwidth_gbps\":%.1f,\"gemm_bf16_tflops\":",
           dev->name, dev->arch, TUN_TIMING_METHOD, bw);
    if (gemm > 0)
        printf("%.1f", gemm);
    else
        printf("null");
    printf(",\"shapes\":[");
    for (int i = 0; i < n; i++) {
        const bench_shape *s = &shapes[i];
        const mrow *r = &rows[i];
        char id[96];
        bench_shape_id(s, id, sizeof id);
        printf("%s{\"id\":\"%s\",\"kv\":\"%s\",\"batch\":%d,\"heads\":%d,\"q_tokens\":%d,"
               "\"kv_len\":%d,",
               i ? "," : "", id, bench_kv_name(s->kv), s->batch, s->heads,
               s->q_tokens ? s->q_tokens : 1, s->kv_len);
        if (r->st != FMQA_OK) {
            printf("\"error\":\"%s\"}", fmqa_status_string(r->st));
            continue;
        }
        printf("\"splits\":%d,\"ctas\":%d,\"median_us\":%.3f,\"spread\":%.4f,\"gbps\":%.1f,"
               "\"bw_fraction\":%.4f,\"tflops\":%.2f,\"gemm_fraction\":",
               r->t.splits, r->t.ctas, r->t.us, r->t.spread, r->gbps, r->gbps / bw, r->tflops);
        if (gemm > 0)
            printf("%.4f", r->tflops / gemm);
        else
            printf("null");
        printf(",\"rel_l2\":%.3e,\"pass\":%s,\"variant\":\"%s\"}", r->t.rel_l2,
               r->t.pass ? "true" : "false", r->t.variant);
    }
    printf("]}\n");
}

int bench_mla_main(int argc, char **argv)
{
    mopts o;
    int pr = parse(argc, argv, &o);
    if (pr)
        return pr == 1 ? 0 : 2;
    bench_shape *shapes = NULL;
    int n = bench_shapes_select(BENCH_SET_MLA, o.shapes, NULL, 0, &shapes, "fastmqa-bench mla");
    if (n < 0)
        return 2;
    if (o.list) {
        bench_shapes_print(shapes, n);
        free(shapes);
        return 0;
    }
    fmqa_options fo = FMQA_OPTIONS_INIT;
    fmqa_ctx_t *ctx = NULL;
    fmqa_device_info dev;
    fo.db_path = o.db_path;
    if (fmqa_ctx_create(&fo, &ctx) != FMQA_OK || fmqa_device_query(ctx, &dev) != FMQA_OK) {
        fprintf(stderr, "fastmqa-bench mla: no GPU (%s); this benchmark needs one "
                        "(fastmqa-bench static needs none)\n", fmqa_ctx_errmsg(ctx));
        fmqa_ctx_destroy(ctx);
        free(shapes);
        return 1;
    }
    mrow *rows = calloc((size_t)n, sizeof *rows);
    tun_timer *timer = NULL;
    fmqa_err err = {0}, gerr = {0};
    double bw = 0, gemm = 0;
    int failed = !rows;
    fmqa_status st = rows ? tun_timer_create(ctx, &timer, &err) : FMQA_ERR_OUT_OF_MEMORY;
    if (st == FMQA_OK)
        st = tun_read_bandwidth(timer, &bw, &err);
    if (st == FMQA_OK && tun_gemm_rate(timer, &gemm, &gerr) != FMQA_OK)
        fprintf(stderr, "  bf16 GEMM rate not measured: %s\n", gerr.msg);
    if (st == FMQA_OK && !o.json)
        fprintf(stderr, "  read bandwidth %.0f GB/s, bf16 GEMM %.0f TFLOP/s\n", bw, gemm);
    for (int i = 0; i < n && st == FMQA_OK; i++) {
        fmqa_problem p = bench_shape_problem(&shapes[i]);
        fmqa_err e = {0};
        mrow *r = &rows[i];
        r->st = bench_time_problem(ctx, timer, &p, o.config, &r->t, &e);
        fmqa_strlcpy(r->why, e.msg, sizeof r->why);
        if (r->st == FMQA_OK)
            r->gbps = r->t.kv_bytes / (r->t.us * 1e3), r->tflops = flops(&shapes[i]) / (r->t.us * 1e6);
        failed |= r->st != FMQA_OK || !r->t.pass;
        if (!o.json) {
            char id[96];
            bench_shape_id(&shapes[i], id, sizeof id);
            fprintf(stderr, "  %d/%d %s: %.2f us, %.0f GB/s, %.1f TFLOP/s%s\n", i + 1, n, id,
                    r->t.us, r->gbps, r->tflops,
                    r->st != FMQA_OK ? " (error)" : r->t.pass ? "" : " (WRONG)");
        }
    }
    if (st != FMQA_OK) {
        fprintf(stderr, "fastmqa-bench mla: %s\n", err.msg);
        failed = 1;
    } else if (o.json) {
        print_json(&dev, bw, gemm, shapes, n, rows);
    } else {
        print_table(&dev, bw, gemm, gerr.msg, shapes, n, rows);
    }
    tun_timer_destroy(timer);
    fmqa_ctx_destroy(ctx);
    free(rows), free(shapes);
    return failed ? 1 : 0;
}
