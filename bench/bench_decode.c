/*
 * bench_decode.c -- `fastmqa-bench decode`: decode attention time and achieved
 * bandwidth for the benchmark shapes (bench_shapes.c), next to the device's
 * read bandwidth measured in the same run by the same method; and
 * `fastmqa-bench bw`, the read kernel alone over a chosen byte count.
 *
 * Each shape goes through the public path (fmqa_decode: the dispatcher picks
 * the variant from the tuning database, so a tuned database makes this faster)
 * or, with --config, an explicit variant of the decode template.  Each is
 * verified once against the float64 reference on fresh inputs (the rel_l2
 * column; the reference is the slow part), then timed by tun_time (tun.h,
 * "timing"; docs/PERFORMANCE.md) once per requested timing mode on the same
 * inputs.  Every sequence holds kv_len tokens, so KV bytes = B * kv_len * Hkv *
 * (bytes of a K and a V row, plus the scales of an 8-bit cache), and GB/s = KV
 * bytes / median time.
 *
 * Also provides bench_decode_step_us(), the timer behind the levels table.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "plot.h"
#include "tun.h"

#define MAX_MODES 6

/* One timing mode: the flush and the launches per sample (0 = the method's). */
typedef struct mode {
    tun_flush flush;
    int launches;
} mode;

typedef struct timed {
    double us, spread, gbps;
    tun_time_plan plan;
} timed;

typedef struct row {
    double rel_l2;
    int pass, splits, ctas, combine_ctas, copies;
    fmqa_status st;
    timed t[MAX_MODES];
    char choice[GEN_NAME_CAP + GEN_CONFIG_TEXT_CAP + 16];
    char why[256];
} row;

typedef struct bopts {
    const char *db_path, *config, *shapes, *svg;
    char *custom[32];
    int n_custom, json, list, copies, graph, n_modes;
    mode modes[MAX_MODES];
} bopts;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: fastmqa-bench decode [options]\n"
            "  --db PATH         tuning database the dispatcher reads (default: the default\n"
            "                    path; \"\" = template defaults only)\n"
            "  --config TEXT     force a decode config, e.g. BLOCK_N=64,SPLITS=4 (over the\n"
            "                    template default)\n"
            "  --shapes P,...    shapes whose id matches a pattern (fnmatch), e.g.\n"
            "                    'mqa-f16-*,gqa8-*'; ids as bench/peers/peers.py --list\n"
            "  --shape B,T,Hkv,KV[,d]  a custom shape (32 query heads, KV f16|bf16|int8|fp8);\n"
            "                    repeatable; alone it replaces the default set\n"
            "  --flush M[:N],... timing modes, each timed on the same verified inputs:\n"
            "                    auto (the method: graphs over rotated copies, or a read\n"
            "                    flush when the copies fit in L2), none, read, memset; :N =\n"
            "                    N launches per sample (1 = single launches, N > 1 = a\n"
            "                    graph of N); default auto\n"
            "  --graph N         launches per sample where a mode gives no :N\n"
            "  --copies C        input copies rotated over (1..%d; default: enough to\n"
            "                    exceed twice the L2)\n"
            "  --list            print the shape ids and their KV bytes, then exit (no GPU)\n"
            "  --json            one JSON document instead of the table\n"
            "  --svg FILE        also draw GB/s per shape and mode against the read\n"
            "                    bandwidth (SVG)\n"
            "  --help\n"
            "Needs a GPU; exits 1 without one or when a shape fails verification.\n"
            "docs/PERFORMANCE.md explains the timing method.\n",
            TUN_MAX_COPIES);
}

/* The template default of the first template of the problem's op (decode or
 * MLA decode) with `text` over it. */
static fmqa_status forced_plan(fmqa_ctx_t *ctx, const fmqa_problem *p, const char *text,
                               rt_plan **out, fmqa_err *err)
{
    gen_lib *lib;
    gen_config cfg, over;
    fmqa_status st = rt_templates(ctx, &lib, err);
    const gen_template *t = st == FMQA_OK ? gen_lib_next(lib, p->op, NULL) : NULL;
    if (st == FMQA_OK && !t)
        st = fmqa_err_set(err, FMQA_ERR_NOT_FOUND, "no %s template is loaded", fmqa_op_name(p->op));
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

/* Splits and CTAs of the plan that runs (the forced one or the dispatcher's). */
static void geometry(const rt_plan *plan, row *out)
{
    const gen_plan *g = &plan->launch;
    out->splits = g->splits;
    out->ctas = (int)(g->kernels[0].grid[0] * g->kernels[0].grid[1] * g->kernels[0].grid[2]);
    out->combine_ctas = g->n_kernels > 1 ? (int)(g->kernels[1].grid[0] * g->kernels[1].grid[1] *
                                                 g->kernels[1].grid[2])
                                         : 0;
}

/* The plan and workspace of a problem, the choice text and geometry in out. */
static fmqa_status plan_of(fmqa_ctx_t *ctx, const fmqa_problem *p, const char *config,
                           rt_plan **forced, size_t *ws, row *out, fmqa_err *err)
{
    const rt_plan *plan = NULL;
    fmqa_status st = config ? forced_plan(ctx, p, config, forced, err)
                            : rt_plan_get(ctx, p, &plan, err);
    if (st != FMQA_OK)
        return st;
    if (config)
        plan = *forced;
    *ws = (size_t)plan->launch.workspace;
    geometry(plan, out);
    const fmqa_choice *ch = &plan->choice;
    snprintf(out->choice, sizeof out->choice, "%s%s %s", config ? "forced " : "",
             ch->source == FMQA_CHOICE_TUNED ? "tuned" :
             ch->source == FMQA_CHOICE_NEAREST ? "nearest" : "default", ch->config);
    return FMQA_OK;
}

static fmqa_status time_modes(tun_timer *timer, runner *r, const bopts *o, row *out,
                              fmqa_err *err)
{
    fmqa_status st = FMQA_OK;
    for (int m = 0; m < o->n_modes && st == FMQA_OK; m++) {
        tun_time_opts to = TUN_TIME_OPTS_INIT;
        to.flush = o->modes[m].flush;
        to.graph_launches = o->modes[m].launches ? o->modes[m].launches : o->graph;
        to.bytes = tun_case_copy_bytes(r->tc), to.copies = tun_case_copies(r->tc);
        tun_timing tm;
        if ((st = tun_time(timer, run_once, r, &to, &tm, err)) == FMQA_OK)
            out->t[m] = (timed){tm.stats.median, tm.stats.spread,
                                tun_case_kv_bytes(r->tc) / (tm.stats.median * 1e3), tm.plan};
    }
    return st;
}

/* Builds, verifies and times one problem into out. */
static fmqa_status measure(fmqa_ctx_t *ctx, tun_timer *timer, const fmqa_problem *p,
                           const bopts *o, row *out, fmqa_err *err)
{
    rt_plan *forced = NULL;
    size_t ws = 0;
    int32_t *lens = malloc((size_t)p->batch * sizeof *lens);
    if (!lens)
        return fmqa_err_set(err, FMQA_ERR_OUT_OF_MEMORY, "out of memory");
    for (int b = 0; b < p->batch; b++)
        lens[b] = p->kv_len;
    fmqa_status st = plan_of(ctx, p, o->config, &forced, &ws, out, err);
    tun_case_opts co = TUN_CASE_OPTS_INIT;
    co.lens = lens, co.copies = o->copies;
    tun_case *tc = NULL;
    if (st == FMQA_OK)
        st = tun_case_create(ctx, p, ref_seed_from_time(), &co, ws, &tc, err);
    runner r = {tc, forced};
    CUstream s = tun_timer_stream(timer);
    tun_report rep;
    if (st == FMQA_OK && (st = tun_case_poison(tc, s, err)) == FMQA_OK &&
        (st = run_once(&r, 0, s, err)) == FMQA_OK &&
        (st = tun_case_verify(tc, s, &rep, err)) == FMQA_OK) {
        out->rel_l2 = rep.out.rel_l2, out->pass = rep.pass, out->copies = tun_case_copies(tc);
        st = time_modes(timer, &r, o, out, err);
    }
    tun_case_destroy(tc);
    rt_plan_free(ctx, forced);
    free(lens);
    return st;
}

fmqa_status bench_time_problem(fmqa_ctx_t *ctx, tun_timer *timer, const fmqa_problem *p,
                               const char *config, bench_timing *out, fmqa_err *err)
{
    row r;
    bopts o = {0};
    o.n_modes = 1, o.config = config;
    memset(&r, 0, sizeof r);
    fmqa_status st = measure(ctx, timer, p, &o, &r, err);
    if (st != FMQA_OK)
        return st;
    *out = (bench_timing){r.t[0].us, r.t[0].spread, r.t[0].gbps * r.t[0].us * 1e3, r.rel_l2,
                          r.pass, r.splits, r.ctas, ""};
    fmqa_strlcpy(out->variant, r.choice, sizeof out->variant);
    return FMQA_OK;
}

fmqa_status bench_decode_step_us(fmqa_ctx_t *ctx, const fmqa_problem *problem, double *us)
{
    fmqa_err err;
    tun_timer *timer = NULL;
    row r;
    bopts o = {0};
    o.n_modes = 1;
    memset(&r, 0, sizeof r);
    fmqa_status st = tun_timer_create(ctx, &timer, &err);
    if (st == FMQA_OK)
        st = measure(ctx, timer, problem, &o, &r, &err);
    tun_timer_destroy(timer);
    if (st == FMQA_OK && !r.pass)
        st = FMQA_ERR_INTERNAL;  /* a wrong kernel has no meaningful time */
    if (st == FMQA_OK)
        *us = r.t[0].us;
    return st;
}

static void mode_name(const mode *m, char *buf, size_t cap)
{
    if (m->launches)
        snprintf(buf, cap, "%s:%d", tun_flush_name(m->flush), m->launches);
    else
        snprintf(buf, cap, "%s", tun_flush_name(m->flush));
}

static void print_table(const fmqa_device_info *dev, double bw, const bopts *o,
                        const bench_shape *shapes, int n, const row *rows)
{
    tun_device_report(stdout, dev);
    printf("measured read bandwidth (same run, same method): %.0f GB/s; timing method %d\n",
           bw, TUN_TIMING_METHOD);
    for (int m = 0; m < o->n_modes; m++) {
        char mn[32];
        mode_name(&o->modes[m], mn, sizeof mn);
        printf("\nmode %s\n%-24s %6s %5s %6s %3s %11s %7s %8s %6s %-12s %9s %-4s %s\n", mn,
               "shape", "splits", "CTAs", "comb", "cp", "median_us", "spread", "GB/s", "%bw",
               "sample", "rel_l2", "ok", "variant");
        for (int i = 0; i < n; i++) {
            char id[96], smp[32];
            const row *r = &rows[i];
            bench_shape_id(&shapes[i], id, sizeof id);
            if (shapes[i].d != 128 || shapes[i].heads != 32)
                snprintf(id + strlen(id), sizeof id - strlen(id), "-d%d", shapes[i].d);
            printf("%-24s ", id);
            if (r->st != FMQA_OK) {
                printf("error: %s\n", r->why);
                continue;
            }
            const timed *t = &r->t[m];
            snprintf(smp, sizeof smp, "%s x%d", tun_flush_name(t->plan.flush), t->plan.launches);
            printf("%6d %5d %6d %3d %11.2f %6.1f%% %8.0f %5.1f%% %-12s %9.2e %-4s %s\n",
                   r->splits, r->ctas, r->combine_ctas, r->copies, t->us, 100 * t->spread,
                   t->gbps, 100 * t->gbps / bw, smp, r->rel_l2, r->pass ? "yes" : "NO",
                   r->choice);
        }
    }
}

static void print_json(const fmqa_device_info *dev, double bw, const bopts *o,
                       const bench_shape *shapes, int n, const row *rows)
{
    printf("{\"device\":\"%s\",\"arch\":\"%s\",\"timing_method\":%d,"
           "\"read_bandwidth_gbps\":%.1f,\"shapes\":[",
           dev->name, dev->arch, TUN_TIMING_METHOD, bw);
    for (int i = 0; i < n; i++) {
        const bench_shape *s = &shapes[i];
        const row *r = &rows[i];
        char id[96];
        bench_shape_id(s, id, sizeof id);
        printf("%s{\"id\":\"%s\",\"kv\":\"%s\",\"batch\":%d,\"kv_len\":%d,\"heads\":%d,"
               "\"kv_heads\":%d,\"d\":%d,",
               i ? "," : "", id, bench_kv_name(s->kv), s->batch, s->kv_len, s->heads,
               s->kv_heads, s->d);
        if (r->st != FMQA_OK) {
            printf("\"error\":\"%s\"}", fmqa_status_string(r->st));
            continue;
        }
        printf("\"splits\":%d,\"ctas\":%d,\"combine_ctas\":%d,\"copies\":%d,\"rel_l2\":%.3e,"
               "\"pass\":%s,\"variant\":\"%s\",\"timings\":[",
               r->splits, r->ctas, r->combine_ctas, r->copies, r->rel_l2,
               r->pass ? "true" : "false", r->choice);
        for (int m = 0; m < o->n_modes; m++) {
            const timed *t = &r->t[m];
            char mn[32];
            mode_name(&o->modes[m], mn, sizeof mn);
            printf("%s{\"mode\":\"%s\",\"flush\":\"%s\",\"launches\":%d,\"median_us\":%.3f,"
                   "\"spread\":%.4f,\"gbps\":%.1f,\"bw_fraction\":%.4f}",
                   m ? "," : "", mn, tun_flush_name(t->plan.flush), t->plan.launches, t->us,
                   t->spread, t->gbps, t->gbps / bw);
        }
        printf("]}");
    }
    printf("]}\n");
}

/* The --svg chart: one series per timing mode, one mark per shape against the
 * read bandwidth; a shape that failed or gave a wrong result sits in the band. */
static int write_svg(FILE *f, const fmqa_device_info *dev, double bw, const bopts *o,
                     const bench_shape *shapes, int n, const row *rows)
{
    size_t np = (size_t)n * (size_t)o->n_modes;
    plot_bandwidth *pts = calloc(np ? np : 1, sizeof *pts);
    char (*names)[96] = calloc(n ? (size_t)n : 1, sizeof *names);
    char (*who)[48] = calloc((size_t)o->n_modes, sizeof *who);
    char title[320];
    int rc = -1;
    if (pts && names && who) {
        for (int m = 0; m < o->n_modes; m++) {
            char mn[32];
            mode_name(&o->modes[m], mn, sizeof mn);
            snprintf(who[m], sizeof who[m], "FastMQA, %s", mn);
        }
        for (int i = 0; i < n; i++) {
            const row *r = &rows[i];
            bench_shape_id(&shapes[i], names[i], sizeof names[i]);
            for (int m = 0; m < o->n_modes; m++)
                pts[(size_t)i * o->n_modes + m] = (plot_bandwidth){
                    names[i], who[m], r->st == FMQA_OK && r->pass ? r->t[m].gbps : 0,
                    r->st != FMQA_OK ? r->why : r->pass ? r->choice : "wrong result"};
        }
        snprintf(title, sizeof title, "fastmqa-bench decode on %s (%s)", dev->name, dev->arch);
        rc = plot_bandwidth_svg(f, title, "median per-launch time by the timing method; KV bytes / time",
                                bw, pts, np);
    }
    free(pts), free(names), free(who);
    return rc;
}

/* "auto,memset:1,none:20" into o->modes. */
static int parse_modes(const char *text, bopts *o)
{
    o->n_modes = 0;
    for (const char *p = text; *p;) {
        size_t n = strcspn(p, ",");
        char item[32], *colon;
        snprintf(item, sizeof item, "%.*s", (int)(n < sizeof item ? n : sizeof item - 1), p);
        mode m = {TUN_FLUSH_AUTO, 0};
        if ((colon = strchr(item, ':')) != NULL) {
            *colon = 0;
            int64_t launches;
            if (fmqa_parse_i64(colon + 1, 1, INT32_MAX, &launches))
                return -1;
            m.launches = (int)launches;
        }
        if (o->n_modes == MAX_MODES || tun_flush_parse(item, &m.flush, NULL) != FMQA_OK)
            return -1;
        o->modes[o->n_modes++] = m;
        p += n + (p[n] == ',');
    }
    return o->n_modes ? 0 : -1;
}

static int bad_value(const char *opt, const char *val)
{
    fprintf(stderr, "fastmqa-bench decode: bad value for %s: '%s'\n", opt, val);
    usage(stderr);
    return 2;
}

/* 0 = run, 1 = --help done, 2 = bad usage. */
static int parse(int argc, char **argv, bopts *o)
{
    memset(o, 0, sizeof *o);
    o->n_modes = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 1;
        } else if (!strcmp(a, "--json") || !strcmp(a, "--list")) {
            *(a[2] == 'j' ? &o->json : &o->list) = 1;
            continue;
        } else if (!v) {
            fprintf(stderr, "fastmqa-bench decode: unknown option or missing value: %s\n", a);
            usage(stderr);
            return 2;
        }
        i++;
        if (!strcmp(a, "--db"))
            o->db_path = v;
        else if (!strcmp(a, "--config"))
            o->config = v;
        else if (!strcmp(a, "--svg"))
            o->svg = v;
        else if (!strcmp(a, "--shapes"))
            o->shapes = v;
        else if (!strcmp(a, "--shape") && o->n_custom < 32)
            o->custom[o->n_custom++] = argv[i];
        else if (!strcmp(a, "--flush")) {
            if (parse_modes(v, o))
                return bad_value(a, v);
        } else if (!strcmp(a, "--graph") || !strcmp(a, "--copies")) {
            int64_t n, most = a[2] == 'g' ? INT32_MAX : TUN_MAX_COPIES;
            if (fmqa_parse_i64(v, 1, most, &n))
                return bad_value(a, v);
            *(a[2] == 'g' ? &o->graph : &o->copies) = (int)n;
        } else {
            fprintf(stderr, "fastmqa-bench decode: unknown option: %s\n", a);
            usage(stderr);
            return 2;
        }
    }
    return 0;
}

int bench_open_gpu(const char *who, const char *db_path, fmqa_ctx_t **ctx,
                   fmqa_device_info *dev)
{
    fmqa_options fo = FMQA_OPTIONS_INIT;
    fo.db_path = db_path;
    if (fmqa_ctx_create(&fo, ctx) != FMQA_OK || fmqa_device_query(*ctx, dev) != FMQA_OK) {
        fprintf(stderr, "fastmqa-bench %s: no GPU (%s); this benchmark needs one "
                        "(fastmqa-bench static needs none)\n", who, fmqa_ctx_errmsg(*ctx));
        fmqa_ctx_destroy(*ctx);
        return 1;
    }
    return 0;
}

static void progress(int i, int n, const bench_shape *s, const row *r)
{
    char id[96];
    bench_shape_id(s, id, sizeof id);
    fprintf(stderr, "  %d/%d %s: %.2f us, %.0f GB/s, rel_l2 %.2e%s\n", i + 1, n, id,
            r->t[0].us, r->t[0].gbps, r->rel_l2,
            r->st != FMQA_OK ? " (error)" : r->pass ? "" : " (WRONG)");
}

int bench_decode_main(int argc, char **argv)
{
    bopts o;
    int pr = parse(argc, argv, &o);
    if (pr)
        return pr == 1 ? 0 : 2;
    bench_shape *shapes = NULL;
    int n = bench_shapes_select(BENCH_SET_DECODE, o.shapes, o.custom, o.n_custom, &shapes,
                                "fastmqa-bench decode");
    if (n < 0)
        return 2;
    if (o.list) {
        bench_shapes_print(shapes, n);
        free(shapes);
        return 0;
    }
    fmqa_ctx_t *ctx = NULL;
    fmqa_device_info dev;
    fmqa_err err;
    row *rows = calloc((size_t)n, sizeof *rows);
    if (!rows || bench_open_gpu("decode", o.db_path, &ctx, &dev)) {
        free(rows), free(shapes);
        return 1;
    }
    FILE *svg = o.svg ? fopen(o.svg, "w") : NULL;
    if (o.svg && !svg) {
        perror(o.svg);
        fmqa_ctx_destroy(ctx);
        free(rows), free(shapes);
        return 1;
    }
    tun_timer *timer = NULL;
    double bw = 0;
    int failed = 0;
    fmqa_status st = tun_timer_create(ctx, &timer, &err);
    if (st == FMQA_OK)
        st = tun_read_bandwidth(timer, &bw, &err);
    if (st == FMQA_OK && !o.json)
        fprintf(stderr, "  read bandwidth %.0f GB/s\n", bw);
    for (int i = 0; i < n && st == FMQA_OK; i++) {
        fmqa_problem p = bench_shape_problem(&shapes[i]);
        fmqa_err e = {0};
        rows[i].st = measure(ctx, timer, &p, &o, &rows[i], &e);
        fmqa_strlcpy(rows[i].why, e.msg, sizeof rows[i].why);
        failed |= rows[i].st != FMQA_OK || !rows[i].pass;
        /* The table comes at the end; the progress line already has the figures,
         * so a run cut short still reports what it measured. */
        if (!o.json)
            progress(i, n, &shapes[i], &rows[i]);
    }
    if (st != FMQA_OK) {
        fprintf(stderr, "fastmqa-bench decode: %s\n", err.msg);
        failed = 1;
    } else if (o.json) {
        print_json(&dev, bw, &o, shapes, n, rows);
    } else {
        print_table(&dev, bw, &o, shapes, n, rows);
    }
    if (svg && ((st == FMQA_OK && write_svg(svg, &dev, bw, &o, shapes, n, rows)) + fclose(svg))) {
        fprintf(stderr, "fastmqa-bench decode: %s: could not write the chart\n", o.svg);
        failed = 1;
    }
    tun_timer_destroy(timer);
    fmqa_ctx_destroy(ctx);
    free(rows), free(shapes);
    return failed ? 1 : 0;
}

/* ---------------------------------------------------------------- bw */

static void bw_usage(FILE *f)
{
    fprintf(f, "usage: fastmqa-bench bw [--bytes N[k|M|G]] [--flush M[:N],...] [--copies C]\n"
               "The read kernel (16-byte loads) over N bytes (default 8 x L2, >= 256 MiB)\n"
               "per launch, timed by the method (docs/PERFORMANCE.md) once per mode; modes as\n"
               "in fastmqa-bench decode (e.g. memset:1,read:1 shows what a memset flush costs a\n"
               "reader).  Needs a GPU.\n");
}

/* N[k|M|G] bytes, at most 1 TB; 0 when malformed. */
static size_t parse_bytes(const char *v)
{
    char num[64];
    size_t n = strlen(v);
    const char unit = n ? v[n - 1] : 0;
    const double mul = unit == 'k' ? 1e3 : unit == 'M' ? 1e6 : unit == 'G' ? 1e9 : 1;
    double x;
    if (n >= sizeof num)
        return 0;
    memcpy(num, v, n + 1);
    if (mul > 1)
        num[n - 1] = '\0';
    return fmqa_parse_f64(num, 1, 1e12 / mul, &x) ? 0 : (size_t)(x * mul);
}

int bench_bw_main(int argc, char **argv)
{
    bopts o;
    size_t bytes = 0;
    int64_t n;
    memset(&o, 0, sizeof o);
    o.n_modes = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : "";
        if (!strcmp(a, "--help") || !strcmp(a, "-h"))
            return bw_usage(stdout), 0;
        if (!strcmp(a, "--bytes") && (bytes = parse_bytes(v)) >= 16)
            i++;
        else if (!strcmp(a, "--flush") && !parse_modes(v, &o))
            i++;
        else if (!strcmp(a, "--copies") && !fmqa_parse_i64(v, 1, TUN_MAX_COPIES, &n))
            o.copies = (int)n, i++;
        else
            return fprintf(stderr, "fastmqa-bench bw: bad option or value: %s %s\n", a, v),
                   bw_usage(stderr), 2;
    }
    fmqa_ctx_t *ctx = NULL;
    fmqa_device_info dev;
    if (bench_open_gpu("bw", NULL, &ctx, &dev))
        return 1;
    if (!bytes)
        bytes = 8 * (size_t)dev.l2_bytes > ((size_t)256 << 20) ? 8 * (size_t)dev.l2_bytes
                                                              : ((size_t)256 << 20);
    tun_timer *timer = NULL;
    fmqa_err err;
    fmqa_status st = tun_timer_create(ctx, &timer, &err);
    printf("%s: read kernel over %.1f MB per launch; timing method %d\n", dev.name, bytes / 1e6,
           TUN_TIMING_METHOD);
    for (int m = 0; m < o.n_modes && st == FMQA_OK; m++) {
        tun_time_opts to = TUN_TIME_OPTS_INIT;
        to.flush = o.modes[m].flush, to.graph_launches = o.modes[m].launches;
        to.copies = o.copies;
        tun_timing tm;
        double gbps;
        char mn[32];
        mode_name(&o.modes[m], mn, sizeof mn);
        if ((st = tun_read_time(timer, bytes, &to, &tm, &gbps, &err)) == FMQA_OK)
            printf("mode %-10s sample %s x%d: median %.2f us, spread %.1f%%, %.0f GB/s\n", mn,
                   tun_flush_name(tm.plan.flush), tm.plan.launches, tm.stats.median,
                   100 * tm.stats.spread, gbps);
    }
    if (st != FMQA_OK)
        fprintf(stderr, "fastmqa-bench bw: %s\n", err.msg);
    tun_timer_destroy(timer);
    fmqa_ctx_destroy(ctx);
    return st == FMQA_OK ? 0 : 1;
}
