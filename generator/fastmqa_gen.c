/*
 * fastmqa_gen.c -- fastmqa-gen, the generator's command line: list the
 * templates, show the legal configs of one for a problem, render its CUDA
 * source, and compile variants with NVRTC (one, the default, or the whole space
 * on a thread pool) reporting cubin size, registers, spills, shared memory and
 * compile time.  Needs no GPU: the device is a preset chosen by --arch.
 *
 * It is a tool, so it may exit; exit status 0 = success, 1 = a template or
 * compile failed, 2 = bad usage.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gen.h"
#include "rt.h"

typedef struct opts {
    const char *cmd;
    const char *template_name;
    const char *templates;
    const char *problem;
    const char *config;
    const char *arch;
    int json, all, threads, help, limit;
} opts;

/* One row per command: the synopsis for the overview, the text for
 * `fastmqa-gen COMMAND --help`. */
static const struct command {
    const char *name, *synopsis, *brief, *help;
} commands[] = {
    {"list", "list", "templates: name, op, hash, load errors", "every template of the set: name, op, identity hash, file; a template that\n"
                     "failed to load gets a status line with its error (file.lua:LINE: ...)\n"
                     "and the exit status is 1.\n"},
    {"space", "space TEMPLATE --problem SPEC", "legal configs and their count",
     "every legal config of TEMPLATE for the problem on the --arch device, in\n"
     "canonical text, and their count.  An invalid problem, or one with no legal\n"
     "config, is an error (exit 1) that says why.\n"
     "options:\n"
     "  --problem SPEC    the problem (required)\n"},
    {"source", "source TEMPLATE --problem SPEC [--config TEXT]", "rendered CUDA source",
     "the rendered CUDA program NVRTC compiles: defines from specialize() and the\n"
     "config, then the sources behind #line directives.\n"
     "options:\n"
     "  --problem SPEC    the problem (required)\n"
     "  --config TEXT     the config (default: the template's default())\n"},
    {"compile", "compile TEMPLATE --problem SPEC [--config TEXT | --all [--threads N] [--limit N]]",
     "NVRTC: cubin size, registers, spills, smem, time",
     "compiles with NVRTC for --arch and reports cubin size, registers, spills,\n"
     "shared memory, stack and compile time per entry.\n"
     "options:\n"
     "  --problem SPEC    the problem (required)\n"
     "  --config TEXT     the config (default: the template's default())\n"
     "  --all             every legal config instead of one\n"
     "  --threads N       compiler threads with --all (default 2)\n"
     "  --limit N         with --all, only the first N configs\n"},
};
#define N_COMMANDS (sizeof commands / sizeof commands[0])

static const char common_help[] =
    "common options:\n"
    "  --templates DIR   template set (default $FASTMQA_TEMPLATE_DIR, else embedded)\n"
    "  --arch ARCH       device preset: sm_80, sm_86, sm_89, sm_90 (default), sm_90a\n"
    "  --json            machine-readable output\n"
    "  --help            this text (fastmqa-gen COMMAND --help: that command's)\n"
    "  --version         versions of the library, NVRTC, driver and database schema\n"
    "SPEC: op=decode,batch=8,heads=32,kv_heads=1,d=128,dv=128,tq=1,kv_len=4096,\n"
    "      q=f16,kv=f16,out=f16,page=0,window=0,sinks=0,rope=none,flags=causal|paged\n"
    "      (also softcap=C and draft_slots=N; docs/templates.md)\n"
    "TEXT: canonical config, e.g. BLOCK_N=64,STAGES=2 (default: the template's)\n";

static const struct command *find_command(const char *name)
{
    for (size_t i = 0; name && i < N_COMMANDS; i++)
        if (!strcmp(commands[i].name, name))
            return &commands[i];
    return NULL;
}

/* The overview, or one command's help when cmd names one. */
static int usage(FILE *f, const char *cmd, int rc)
{
    const struct command *c = find_command(cmd);
    if (c) {
        fprintf(f, "usage: fastmqa-gen %s\n\n%s\n%s", c->synopsis, c->help, common_help);
        return rc;
    }
    fputs("usage: fastmqa-gen <command> [options]\ncommands:\n", f);
    for (size_t i = 0; i < N_COMMANDS; i++)
        fprintf(f, "  %-8s %s\n    %s\n", commands[i].name, commands[i].brief,
                commands[i].synopsis);
    fputs(common_help, f);
    return rc;
}

static int parse_args(int argc, char **argv, opts *o)
{
    memset(o, 0, sizeof *o);
    o->threads = 2;
    o->arch = "sm_90";
    o->templates = getenv("FASTMQA_TEMPLATE_DIR");
    if (o->templates && !*o->templates)
        o->templates = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char **val = NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h"))
            o->help = 1;
        else if (!strcmp(a, "--json"))
            o->json = 1;
        else if (!strcmp(a, "--all"))
            o->all = 1;
        else if (!strcmp(a, "--templates"))
            val = &o->templates;
        else if (!strcmp(a, "--problem"))
            val = &o->problem;
        else if (!strcmp(a, "--config"))
            val = &o->config;
        else if (!strcmp(a, "--arch"))
            val = &o->arch;
        else if (!strcmp(a, "--limit") || !strcmp(a, "--threads")) {
            int64_t n;
            if (++i == argc || fmqa_parse_i64(argv[i], 1, INT32_MAX, &n)) {
                fprintf(stderr, "fastmqa-gen: %s needs a positive integer, got '%s'\n", a,
                        i < argc ? argv[i] : "");
                return -1;
            }
            *(a[2] == 'l' ? &o->limit : &o->threads) = (int)n;
        } else if (a[0] == '-') {
            fprintf(stderr, "fastmqa-gen: unknown option %s\n", a);
            return -1;
        } else if (!o->cmd)
            o->cmd = a;
        else if (!o->template_name)
            o->template_name = a;
        else {
            fprintf(stderr, "fastmqa-gen: unexpected argument %s\n", a);
            return -1;
        }
        if (val) {
            if (++i == argc) {
                fprintf(stderr, "fastmqa-gen: %s needs a value\n", a);
                return -1;
            }
            *val = argv[i];
        }
    }
    return 0;
}

/* JSON string with escapes. */
static void jstr(const char *s)
{
    putchar('"');
    for (; s && *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            printf("\\%c", ch);
        else if (ch == '\n')
            fputs("\\n", stdout);
        else if (ch < 0x20)
            printf("\\u%04x", ch);
        else
            putchar(ch);
    }
    putchar('"');
}

static const char *first_line(const char *s, char *buf, size_t cap)
{
    size_t n = strcspn(s, "\n");
    snprintf(buf, cap, "%.*s", (int)(n < cap ? n : cap - 1), s);
    return buf;
}

static int cmd_list(gen_lib *lib, const opts *o)
{
    int failed = 0, n = gen_lib_count(lib);
    if (o->json)
        printf("{\"origin\":"), jstr(gen_lib_origin(lib)), printf(",\"templates\":[");
    else
        printf("%-20s %-11s %-32s %s\n", "NAME", "OP", "HASH", "FILE");
    for (int i = 0; i < n; i++) {
        const gen_template *t = gen_lib_at(lib, i);
        int ok = gen_template_status(t) == FMQA_OK;
        failed += !ok;
        char line[1024];
        if (o->json) {
            printf("%s{\"file\":", i ? "," : "");
            jstr(gen_template_file(t));
            printf(",\"name\":");
            jstr(gen_template_name(t));
            printf(",\"ok\":%s,\"op\":", ok ? "true" : "false");
            jstr(ok ? fmqa_op_name(gen_template_op(t)) : "");
            printf(",\"hash\":");
            jstr(gen_template_hash(t));
            printf(",\"error\":");
            jstr(gen_template_message(t));
            putchar('}');
        } else if (ok) {
            printf("%-20s %-11s %-32s %s\n", gen_template_name(t),
                   fmqa_op_name(gen_template_op(t)), gen_template_hash(t), gen_template_file(t));
        } else {
            printf("%s: error: %s\n", gen_template_file(t),
                   first_line(gen_template_message(t), line, sizeof line));
        }
    }
    if (o->json)
        printf("]}\n");
    return failed ? 1 : 0;
}

/* The template, problem and device a subcommand works on. */
typedef struct target {
    const gen_template *t;
    fmqa_problem p;
    fmqa_device_info d;
} target;

static int resolve(gen_lib *lib, const opts *o, target *x)
{
    fmqa_err err = {0};
    if (!o->template_name || !o->problem) {
        fprintf(stderr, "fastmqa-gen %s: needs TEMPLATE and --problem SPEC\n", o->cmd);
        return 2;
    }
    x->t = gen_lib_find(lib, o->template_name);
    if (!x->t) {
        fprintf(stderr, "fastmqa-gen: no loaded template named '%s' in %s\n", o->template_name,
                gen_lib_origin(lib));
        return 1;
    }
    if (gen_problem_parse(o->problem, &x->p, &err) != FMQA_OK ||
        gen_device_preset(o->arch, &x->d, &err) != FMQA_OK) {
        fprintf(stderr, "fastmqa-gen: %s\n", err.msg);
        return 2;
    }
    if (rt_problem_check(&x->p, &err) != FMQA_OK) {
        fprintf(stderr, "fastmqa-gen: invalid problem %s: %s\n", o->problem, err.msg);
        return 1;
    }
    return 0;
}

static int get_config(const opts *o, const target *x, gen_config *c)
{
    fmqa_err err = {0};
    fmqa_status st = o->config ? gen_config_parse(o->config, c, &err)
                               : gen_default(x->t, &x->p, &x->d, c, &err);
    if (st == FMQA_OK && o->config)
        st = gen_check(x->t, c, &x->p, &x->d, &err);
    if (st != FMQA_OK) {
        fprintf(stderr, "fastmqa-gen: %s\n", err.msg);
        return 1;
    }
    return 0;
}

static int cmd_space(const opts *o, const target *x)
{
    fmqa_err err = {0};
    gen_config *list = NULL, dflt;
    size_t n = 0;
    if (gen_space(x->t, &x->p, &x->d, &list, &n, &err) != FMQA_OK) {
        fprintf(stderr, "fastmqa-gen: %s\n", err.msg);
        return 1;
    }
    char text[GEN_CONFIG_TEXT_CAP], dtext[GEN_CONFIG_TEXT_CAP] = "";
    if (gen_default(x->t, &x->p, &x->d, &dflt, &err) == FMQA_OK)
        gen_config_text(&dflt, dtext, sizeof dtext);
    if (n == 0) {
        fprintf(stderr, "fastmqa-gen: %s has no legal config for this problem on %s (%s)\n",
                gen_template_name(x->t), x->d.arch,
                dtext[0] ? "its default is legal only outside the space" : err.msg);
        free(list);
        return 1;
    }
    if (o->json) {
        printf("{\"template\":");
        jstr(gen_template_name(x->t));
        printf(",\"arch\":");
        jstr(x->d.arch);
        printf(",\"count\":%zu,\"default\":", n);
        jstr(dtext);
        printf(",\"configs\":[");
    }
    for (size_t i = 0; i < n; i++) {
        gen_config_text(&list[i], text, sizeof text);
        if (o->json)
            printf("%s", i ? "," : ""), jstr(text);
        else
            printf("%s%s\n", text, strcmp(text, dtext) == 0 ? "   (default)" : "");
    }
    if (o->json)
        printf("]}\n");
    else
        printf("%zu legal configs of %s for %s\n", n, gen_template_name(x->t), x->d.arch);
    free(list);
    return 0;
}

static int cmd_source(const opts *o, const target *x)
{
    fmqa_err err = {0};
    gen_config c;
    gen_source s;
    gen_plan plan;
    if (get_config(o, x, &c))
        return 1;
    if (gen_render(x->t, &c, &x->p, &x->d, &s, &err) != FMQA_OK ||
        gen_launch_plan(x->t, &c, &x->p, &x->d, &plan, &err) != FMQA_OK) {
        gen_source_free(&s);
        fprintf(stderr, "fastmqa-gen: %s\n", err.msg);
        return 1;
    }
    if (o->json) {
        printf("{\"name\":");
        jstr(s.name);
        printf(",\"key\":\"%s\",\"arch\":\"%s\",\"config\":", s.key, s.arch);
        jstr(s.config);
        printf(",\"options\":[");
        for (int i = 0; i < s.n_options; i++)
            printf("%s", i ? "," : ""), jstr(s.options[i]);
        printf("],\"text\":");
        jstr(s.text);
        printf("}\n");
    } else {
        printf("// key %s, arch %s, config %s\n// options:", s.key, s.arch, s.config);
        for (int i = 0; i < s.n_options; i++)
            printf(" %s", s.options[i]);
        printf("\n");
        for (int i = 0; i < plan.n_kernels; i++) {
            const gen_kernel *k = &plan.kernels[i];
            printf("// launch %s grid (%u,%u,%u) block (%u,%u,%u) shared %u\n", k->entry,
                   k->grid[0], k->grid[1], k->grid[2], k->block[0], k->block[1], k->block[2],
                   k->shared);
        }
        printf("// workspace %lld bytes, splits %d\n%s", (long long)plan.workspace, plan.splits,
               s.text);
    }
    gen_source_free(&s);
    return 0;
}

static void print_binary(const opts *o, const char *config, fmqa_status st, const gen_binary *b,
                         const char *msg, int first)
{
    char line[1024];
    if (o->json) {
        printf("%s{\"config\":", first ? "" : ",");
        jstr(config);
        printf(",\"ok\":%s", st == FMQA_OK ? "true" : "false");
        if (st == FMQA_OK) {
            printf(",\"key\":\"%s\",\"cubin_bytes\":%zu,\"compile_ms\":%.1f,\"kernels\":[",
                   b->key, b->size, b->compile_ms);
            for (int i = 0; i < b->n_resources; i++) {
                const gen_resource *r = &b->resources[i];
                printf("%s{\"entry\":\"%s\",\"registers\":%d,\"spill_stores\":%d,"
                       "\"spill_loads\":%d,\"smem\":%d,\"stack\":%d}",
                       i ? "," : "", r->entry, r->registers, r->spill_stores, r->spill_loads,
                       r->smem_bytes, r->stack_bytes);
            }
            printf("]");
        } else {
            printf(",\"error\":");
            jstr(msg);
        }
        printf("}");
        return;
    }
    if (st != FMQA_OK) {
        printf("%-40s FAILED: %s\n", config, o->all ? first_line(msg, line, sizeof line) : msg);
        return;
    }
    printf("%-40s %8zu B %8.1f ms\n", config, b->size, b->compile_ms);
    for (int i = 0; i < b->n_resources; i++) {
        const gen_resource *r = &b->resources[i];
        printf("    %-32s regs %3d  spill st/ld %d/%d B  smem %d B  stack %d B\n", r->entry,
               r->registers, r->spill_stores, r->spill_loads, r->smem_bytes, r->stack_bytes);
    }
}

typedef struct batch {
    gen_config *configs;
    size_t n;
    gen_job **jobs;
} batch;

/* Renders every config of b, submits them all, then prints in order. */
static int compile_batch(const opts *o, const target *x, batch *b)
{
    fmqa_err err = {0};
    gen_compiler *comp;
    if (gen_compiler_create(o->all ? o->threads : 1, NULL, &comp, &err) != FMQA_OK) {
        fprintf(stderr, "fastmqa-gen: %s\n", err.msg);
        return 1;
    }
    int failed = 0;
    double t0 = fmqa_now_ms();
    for (size_t i = 0; i < b->n; i++) {
        gen_source s;
        if (gen_render(x->t, &b->configs[i], &x->p, &x->d, &s, &err) != FMQA_OK ||
            gen_compiler_submit(comp, &s, NULL, NULL, &b->jobs[i], &err) != FMQA_OK) {
            gen_source_free(&s);
            fprintf(stderr, "fastmqa-gen: %s\n", err.msg);
            failed++;
        }
    }
    if (o->json)
        printf("{\"template\":\"%s\",\"arch\":\"%s\",\"results\":[", gen_template_name(x->t),
               x->d.arch);
    for (size_t i = 0; i < b->n; i++) {
        if (!b->jobs[i])
            continue;
        const gen_binary *bin = NULL;
        char text[GEN_CONFIG_TEXT_CAP];
        gen_config_text(&b->configs[i], text, sizeof text);
        fmqa_status st = gen_job_wait(b->jobs[i], &bin, &err);
        failed += st != FMQA_OK;
        print_binary(o, text, st, bin, err.msg, i == 0);
        gen_job_release(b->jobs[i]);
    }
    double wall = fmqa_now_ms() - t0;
    if (o->json)
        printf("],\"count\":%zu,\"failed\":%d,\"threads\":%d,\"wall_ms\":%.1f}\n", b->n, failed,
               o->all ? o->threads : 1, wall);
    else
        printf("%zu variants of %s for %s, %d failed, %.1f ms wall on %d thread(s)\n", b->n,
               gen_template_name(x->t), x->d.arch, failed, wall, o->all ? o->threads : 1);
    gen_compiler_destroy(comp);
    return failed ? 1 : 0;
}

static int cmd_compile(const opts *o, const target *x)
{
    fmqa_err err = {0};
    batch b = {0};
    gen_config one;
    if (o->all) {
        if (gen_space(x->t, &x->p, &x->d, &b.configs, &b.n, &err) != FMQA_OK) {
            fprintf(stderr, "fastmqa-gen: %s\n", err.msg);
            return 1;
        }
        if (o->limit && (size_t)o->limit < b.n) /* the first N: a fixed, repeatable sample */
            b.n = (size_t)o->limit;
    } else {
        if (get_config(o, x, &one))
            return 1;
        b.configs = &one;
        b.n = 1;
    }
    b.jobs = calloc(b.n + 1, sizeof *b.jobs);
    int rc = b.jobs ? compile_batch(o, x, &b) : 1;
    free(b.jobs);
    if (o->all)
        free(b.configs);
    return rc;
}

int main(int argc, char **argv)
{
    if (rt_version_option(argc, argv, "fastmqa-gen"))
        return 0;
    opts o;
    if (parse_args(argc, argv, &o) != 0)
        return usage(stderr, o.cmd, 2);
    if (o.help || !o.cmd)
        return usage(o.help ? stdout : stderr, o.cmd, o.help ? 0 : 2);
    if (!find_command(o.cmd)) {
        fprintf(stderr, "fastmqa-gen: unknown command '%s'\n", o.cmd);
        return usage(stderr, NULL, 2);
    }
    fmqa_err err = {0};
    gen_lib *lib;
    if (gen_lib_open(o.templates, &lib, &err) != FMQA_OK) {
        fprintf(stderr, "fastmqa-gen: %s\n", err.msg);
        return 1;
    }
    int rc;
    target x;
    if (!strcmp(o.cmd, "list"))
        rc = cmd_list(lib, &o);
    else if ((rc = resolve(lib, &o, &x)) == 0)
        rc = !strcmp(o.cmd, "space")    ? cmd_space(&o, &x)
             : !strcmp(o.cmd, "source") ? cmd_source(&o, &x)
                                        : cmd_compile(&o, &x);
    gen_lib_close(lib);
    return rc;
}
