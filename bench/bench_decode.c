/*
 * bench_decode.c -- `fastmqa-bench decode`: decode attention time and achieved
 * bandwidth for a fixed set of shapes, next to the device's read bandwidth
 * measured in the same run.
 *
 * Each shape goes through the public path (fmqa_decode: the dispatcher picks
 * the variant from the tuning database, so a tuned database makes this faster)
 * or, with --config, an explicit variant of the decode template.  Each is
 * verified once against the float64 reference on fresh inputs before it is
 * timed (tun_case_verify; the rel_l2 column), then timed with CUDA events and
 * the L2 flushed between samples (tun_time).  Every sequence holds kv_len
 * tokens, so KV bytes = B * kv_len * Hkv * (bytes of a K and a V row, plus the
 * scales of an 8-bit cache), and GB/s = KV bytes / median time.
 *
 * Also provides bench_decode_step_us(), the timer behind the levels table.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "plot.h"
#include "tun.h"

typedef struct shape {
    const char *name;
    int32_t batch, kv_len, heads, kv_heads, d;
    fmqa_dtype kv;
} shape;

#define MQA(b, t, kv) {"mqa", b, t, 32, 1, 128, kv}
static const shape shapes[] = {
    MQA(1, 131072, FMQA_DTYPE_F16), MQA(8, 32768, FMQA_DTYPE_F16),
    MQA(64, 4096, FMQA_DTYPE_F16), MQA(128, 1024, FMQA_DTYPE_F16),
    {"gqa8", 64, 4096, 32, 8, 128, FMQA_DTYPE_F16},
    MQA(1, 131072, FMQA_DTYPE_INT8), MQA(8, 32768, FMQA_DTYPE_INT8),
    MQA(64, 4096, FMQA_DTYPE_INT8), MQA(128, 1024, FMQA_DTYPE_INT8),
    MQA(1, 131072, FMQA_DTYPE_FP8_E4M3), MQA(8, 32768, FMQA_DTYPE_FP8_E4M3),
    MQA(64, 4096, FMQA_DTYPE_FP8_E4M3), MQA(128, 1024, FMQA_DTYPE_FP8_E4M3),
    {"h2048-mqa", 64, 1024, 32, 1, 64, FMQA_DTYPE_F16},
    {"h2048-mha", 64, 1024, 32, 32, 64, FMQA_DTYPE_F16},
};
#define N_SHAPES (sizeof shapes / sizeof shapes[0])

typedef struct row {
    double us, gbps, rel_l2;
    int pass;
    fmqa_status st;
    char choice[GEN_NAME_CAP + GEN_CONFIG_TEXT_CAP + 16];
    char why[256];
} row;

typedef struct bopts {
    const char *db_path;
    const char *config;
    const char *svg;
    int json;
} bopts;

static void usage(FILE *f)
{
    fprintf(f, "usage: fastmqa-bench decode [options]\n"
               "  --db PATH       tuning database the dispatcher reads (default: the default\n"
               "                  path; \"\" = template defaults only)\n"
               "  --config TEXT   force a decode config, e.g. BLOCK_N=64,SPLITS=4 (over the\n"
               "                  template default)\n"
               "  --json          one JSON document instead of the table\n"
               "  --svg FILE      also draw GB/s per shape against the read bandwidth (SVG)\n"
               "  --help          this text\n"
               "Needs a GPU; exits 1 without one or when a shape fails verification.\n");
}

static fmqa_problem to_problem(const shape *s)
{
    fmqa_problem p;
    fmqa_problem_init(&p);
    p.op = FMQA_OP_DECODE;
    p.batch = s->batch, p.kv_len = s->kv_len;
    p.num_q_heads = s->heads, p.num_kv_heads = s->kv_heads;
    p.head_dim_qk = p.head_dim_v = s->d;
    p.q_tokens = 1;
    p.q_dtype = p.out_dtype = FMQA_DTYPE_F16;
    p.kv_dtype = s->kv;
    p.flags = FMQA_FLAG_CAUSAL;
    return p;
}

/* The template default of the first decode template with `text` over it. */
static fmqa_status forced_plan(fmqa_ctx_t *ctx, const fmqa_problem *p, const char *text,
                               rt_plan **out, fmqa_err *err)
{
    gen_lib *lib;
    gen_config cfg, over;
    fmqa_status st = rt_templates(ctx, &lib, err);
    const gen_template *t = st == FMQA_OK ? gen_lib_next(lib, FMQA_OP_DECODE, NULL) : NULL;
    if (st == FMQA_OK && !t)
        st = fmqa_err_set(err, FMQA_ERR_NOT_FOUND, "no decode template is loaded");
    if (st == FMQA_OK)
        st = gen_default(t, p, &ctx->info, &cfg, err);
    if (st == FMQA_OK)
        st = gen_config_parse(text, &over, err);
    for (int i = 0; st == FMQA_OK && i < over.n; i++)
        st = gen_config_set(&cfg, over.p[i].name, over.p[i].value, err);
    return st == FMQA_OK ? rt_plan_build(ctx, t, &cfg, p, NULL, out, err) : st;
}

typedef struct runner {
    tun_case *tc;
    const rt_plan *plan;   /* NULL: the public entry point */
} runner;

static fmqa_status run_once(void *user, int i, CUstream stream, fmqa_err *err)
{
    runner *r = user;
    return r->plan ? tun_case_run_plan(r->tc, r->plan, i, stream, err)
                   : tun_case_run_api(r->tc, i, stream, err);
}

/* Builds, verifies and times one problem into out (choice, rel_l2, pass, time). */
static fmqa_status measure(fmqa_ctx_t *ctx, tun_timer *timer, const fmqa_problem *p,
                           const char *config, row *out, fmqa_err *err)
{
    rt_plan *plan = NULL;
    size_t ws = 0;
    fmqa_status st = FMQA_OK;
    int32_t *lens = malloc((size_t)p->batch * sizeof *lens);
    if (!lens)
        return fmqa_err_set(err, FMQA_ERR_OUT_OF_MEMORY, "out of memory");
    for (int b = 0; b < p->batch; b++)
        lens[b] = p->kv_len;
    fmqa_choice ch = {0};
    if (config) {
        st = forced_plan(ctx, p, config, &plan, err);
        if (st == FMQA_OK)
            ws = (size_t)plan->launch.workspace, ch = plan->choice;
    } else if ((st = fmqa_decode_workspace_size(ctx, p, &ws)) != FMQA_OK ||
               (st = fmqa_plan(ctx, p, &ch)) != FMQA_OK) {
        fmqa_err_set(err, st, "%s", fmqa_ctx_errmsg(ctx));
    }
    snprintf(out->choice, sizeof out->choice, "%s%s %s", config ? "forced " : "",
             ch.source == FMQA_CHOICE_TUNED ? "tuned" :
             ch.source == FMQA_CHOICE_NEAREST ? "nearest" : "default", ch.config);
    tun_case_opts co = TUN_CASE_OPTS_INIT;
    co.lens = lens, co.copies = 0;
    tun_case *tc = NULL;
    if (st == FMQA_OK)
        st = tun_case_create(ctx, p, ref_seed_from_time(), &co, ws, &tc, err);
    runner r = {tc, plan};
    CUstream s = tun_timer_stream(timer);
    tun_report rep;
    if (st == FMQA_OK && (st = tun_case_poison(tc, s, err)) == FMQA_OK &&
        (st = run_once(&r, 0, s, err)) == FMQA_OK &&
        (st = tun_case_verify(tc, s, &rep, err)) == FMQA_OK) {
        out->rel_l2 = rep.out.rel_l2, out->pass = rep.pass;
        tun_time_opts to = TUN_TIME_OPTS_INIT;
        tun_timing tm;
        st = tun_time(timer, run_once, &r, &to, &tm, err);
        if (st == FMQA_OK) {
            out->us = tm.stats.median;
            out->gbps = tun_case_kv_bytes(tc) / (tm.stats.median * 1e3);
        }
    }
    tun_case_destroy(tc);
    rt_plan_free(ctx, plan);
    free(lens);
    return st;
}

fmqa_status bench_decode_step_us(fmqa_ctx_t *ctx, const fmqa_problem *problem, double *us)
{
    fmqa_err err;
    tun_timer *timer = NULL;
    row r = {0};
    fmqa_status st = tun_timer_create(ctx, &timer, &err);
    if (st == FMQA_OK)
        st = measure(ctx, timer, problem, NULL, &r, &err);
    tun_timer_destroy(timer);
    if (st == FMQA_OK && !r.pass)
        st = FMQA_ERR_INTERNAL;  /* a wrong kernel has no meaningful time */
    if (st == FMQA_OK)
        *us = r.us;
    return st;
}

static const char *kv_name(fmqa_dtype t) { return fmqa_dtype_name(t); }

static void print_table(const fmqa_device_info *dev, double bw, const row *rows)
{
    tun_device_report(stdout, dev);
    printf("measured read bandwidth (same run): %.0f GB/s\n", bw);
    printf("%-10s %-8s %5s %7s %4s %4s %4s %11s %8s %6s %9s %-4s %s\n", "shape", "kv", "B",
           "T", "H", "Hkv", "d", "median_us", "GB/s", "%bw", "rel_l2", "ok", "variant");
    for (size_t i = 0; i < N_SHAPES; i++) {
        const shape *s = &shapes[i];
        const row *r = &rows[i];
        printf("%-10s %-8s %5d %7d %4d %4d %4d ", s->name, kv_name(s->kv), s->batch, s->kv_len,
               s->heads, s->kv_heads, s->d);
        if (r->st != FMQA_OK)
            printf("error: %s\n", r->why);
        else
            printf("%11.2f %8.0f %5.1f%% %9.2e %-4s %s\n", r->us, r->gbps,
                   100 * r->gbps / bw, r->rel_l2, r->pass ? "yes" : "NO", r->choice);
    }
}

static void print_json(const fmqa_device_info *dev, double bw, const row *rows)
{
    printf("{\"device\":\"%s\",\"arch\":\"%s\",\"read_bandwidth_gbps\":%.1f,\"shapes\":[",
           dev->name, dev->arch, bw);
    for (size_t i = 0; i < N_SHAPES; i++) {
        const shape *s = &shapes[i];
        const row *r = &rows[i];
        printf("%s{\"shape\":\"%s\",\"kv\":\"%s\",\"batch\":%d,\"kv_len\":%d,\"heads\":%d,"
               "\"kv_heads\":%d,\"d\":%d,",
               i ? "," : "", s->name, kv_name(s->kv), s->batch, s->kv_len, s->heads,
               s->kv_heads, s->d);
        if (r->st != FMQA_OK)
            printf("\"error\":\"%s\"}", fmqa_status_string(r->st));
        else
            printf("\"median_us\":%.3f,\"gbps\":%.1f,\"bw_fraction\":%.4f,\"rel_l2\":%.3e,"
                   "\"pass\":%s,\"variant\":\"%s\"}",
                   r->us, r->gbps, r->gbps / bw, r->rel_l2, r->pass ? "true" : "false",
                   r->choice);
    }
    printf("]}\n");
}

/* The --svg chart: one FastMQA mark per shape against the read bandwidth; a
 * shape that failed or gave a wrong result sits in the band. */
static int write_svg(FILE *f, const fmqa_device_info *dev, double bw, const row *rows)
{
    static char names[N_SHAPES][96];
    plot_bandwidth pts[N_SHAPES];
    char title[320];
    for (size_t i = 0; i < N_SHAPES; i++) {
        const shape *s = &shapes[i];
        const row *r = &rows[i];
        snprintf(names[i], sizeof names[i], "%s %s B=%d T=%d", s->name, kv_name(s->kv),
                 s->batch, s->kv_len);
        pts[i] = (plot_bandwidth){names[i], "FastMQA",
                                  r->st == FMQA_OK && r->pass ? r->gbps : 0,
                                  r->st != FMQA_OK ? r->why : r->pass ? r->choice
                                                                      : "wrong result"};
    }
    snprintf(title, sizeof title, "fastmqa-bench decode on %s (%s)", dev->name, dev->arch);
    return plot_bandwidth_svg(f, title, "median of CUDA-event timings, L2 flushed; KV bytes / time",
                              bw, pts, N_SHAPES);
}

static int parse(int argc, char **argv, bopts *o)
{
    memset(o, 0, sizeof *o);
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 1;
        } else if (!strcmp(argv[i], "--json")) {
            o->json = 1;
        } else if (!strcmp(argv[i], "--db") && i + 1 < argc) {
            o->db_path = argv[++i];
        } else if (!strcmp(argv[i], "--svg") && i + 1 < argc) {
            o->svg = argv[++i];
        } else if (!strcmp(argv[i], "--config") && i + 1 < argc) {
            o->config = argv[++i];
        } else {
            fprintf(stderr, "fastmqa-bench decode: unknown option or missing value: %s\n",
                    argv[i]);
            usage(stderr);
            return 2;
        }
    }
    return 0;
}

int bench_decode_main(int argc, char **argv)
{
    bopts o;
    int pr = parse(argc, argv, &o);
    if (pr)
        return pr == 1 ? 0 : 2;
    fmqa_options fo = FMQA_OPTIONS_INIT;
    fo.db_path = o.db_path;
    fmqa_ctx_t *ctx = NULL;
    fmqa_device_info dev;
    fmqa_err err;
    if (fmqa_ctx_create(&fo, &ctx) != FMQA_OK || fmqa_device_query(ctx, &dev) != FMQA_OK) {
        fprintf(stderr, "fastmqa-bench decode: no GPU (%s); this benchmark needs one\n",
                fmqa_ctx_errmsg(ctx));
        fmqa_ctx_destroy(ctx);
        return 1;
    }
    FILE *svg = o.svg ? fopen(o.svg, "w") : NULL;
    if (o.svg && !svg) {
        perror(o.svg);
        fmqa_ctx_destroy(ctx);
        return 1;
    }
    tun_timer *timer = NULL;
    double bw = 0;
    static row rows[N_SHAPES];
    int failed = 0;
    fmqa_status st = tun_timer_create(ctx, &timer, &err);
    if (st == FMQA_OK)
        st = tun_read_bandwidth(timer, &bw, &err);
    if (st == FMQA_OK && !o.json)
        fprintf(stderr, "  read bandwidth %.0f GB/s\n", bw);
    for (size_t i = 0; i < N_SHAPES && st == FMQA_OK; i++) {
        fmqa_problem p = to_problem(&shapes[i]);
        fmqa_err e = {0};
        rows[i].st = measure(ctx, timer, &p, o.config, &rows[i], &e);
        fmqa_strlcpy(rows[i].why, e.msg, sizeof rows[i].why);
        failed |= rows[i].st != FMQA_OK || !rows[i].pass;
        /* The table comes at the end; the progress line already has the figures,
         * so a run cut short still reports what it measured. */
        if (!o.json)
            fprintf(stderr, "  %zu/%zu %s %s B=%d T=%d: %.2f us, %.0f GB/s, rel_l2 %.2e%s\n",
                    i + 1, N_SHAPES, shapes[i].name, kv_name(shapes[i].kv), shapes[i].batch,
                    shapes[i].kv_len, rows[i].us, rows[i].gbps, rows[i].rel_l2,
                    rows[i].st != FMQA_OK ? " (error)" : rows[i].pass ? "" : " (WRONG)");
    }
    if (st != FMQA_OK) {
        fprintf(stderr, "fastmqa-bench decode: %s\n", err.msg);
        failed = 1;
    } else if (o.json) {
        print_json(&dev, bw, rows);
    } else {
        print_table(&dev, bw, rows);
    }
    if (svg && ((st == FMQA_OK && write_svg(svg, &dev, bw, rows)) + fclose(svg))) {
        fprintf(stderr, "fastmqa-bench decode: %s: could not write the chart\n", o.svg);
        failed = 1;
    }
    tun_timer_destroy(timer);
    fmqa_ctx_destroy(ctx);
    return failed ? 1 : 0;
}
