/*
 * fastmqa_db.c -- fastmqa-db, the command-line tool that inspects and maintains
 * the tuning database: list devices, problems, trials and best entries, show
 * one trial, export/import JSON lines, merge another file, prune, statistics,
 * vacuum.
 *
 * Reading commands open the file read-only (they never block a running
 * tuner); the others open it read-write.  Output is an aligned table for
 * people, or with --json one JSON object per line (JSON lines, not an array),
 * or with --csv RFC 4180 CSV with a header line.  Any error prints
 * "fastmqa-db: message" on stderr and exits 1; usage errors exit 2; an import
 * or merge that refused some best rows (and applied the rest) exits 3.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "db.h"
#include "fastmqa_db_plot.h"
#include "rt.h"

/* 3: import or merge applied the file but refused some best rows, so a script
 * that imports a colleague's results learns that not all of them arrived. */
enum { EXIT_USAGE = 2, EXIT_PARTIAL = 3 };
enum format { FMT_TABLE, FMT_JSON, FMT_CSV };

/* Parsed command line; option values are borrowed from argv. */
typedef struct opts {
    const char *db_path;
    enum format format;
    const char *arg;      /* the one positional argument, if any */
    const char *device, *template_name, *problem, *status, *limit, *sort;
    const char *keep_templates, *older_than;
} opts;

typedef struct command {
    const char *name;
    const char *args;     /* usage after the name                         */
    const char *summary;
    const char *options;  /* the command's own --options, space separated */
    db_mode mode;
    int (*run)(db_t *db, const opts *o);
} command;

static int fail(const char *msg)
{
    fprintf(stderr, "fastmqa-db: %s\n", msg);
    return EXIT_FAILURE;
}

/* ------------------------------------------------------------ output */

static void print_json_string(const char *s)
{
    putchar('"');
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            printf("\\%c", *s);
        else if ((unsigned char)*s < 0x20)
            printf("\\u%04x", (unsigned char)*s);
        else
            putchar(*s);
    }
    putchar('"');
}

static void print_csv_cell(const char *s)
{
    if (!s)
        return;
    if (!strpbrk(s, ",\"\r\n")) {
        fputs(s, stdout);
        return;
    }
    putchar('"');
    for (; *s; s++) {
        if (*s == '"')
            putchar('"');
        putchar(*s);
    }
    putchar('"');
}

static const char *cell(const db_rows *r, size_t row, int col)
{
    return r->cells[row * (size_t)r->ncols + (size_t)col];
}

static void print_table(const db_rows *r)
{
    size_t *w = calloc((size_t)r->ncols, sizeof *w);
    if (!w)
        return;
    for (int c = 0; c < r->ncols; c++) {
        w[c] = strlen(r->names[c]);
        for (size_t i = 0; i < r->nrows; i++) {
            size_t n = cell(r, i, c) ? strlen(cell(r, i, c)) : 1;
            w[c] = n > w[c] ? n : w[c];
        }
    }
    for (int c = 0; c < r->ncols; c++)
        printf("%s%-*s", c ? "  " : "", c + 1 < r->ncols ? (int)w[c] : 0, r->names[c]);
    putchar('\n');
    for (size_t i = 0; i < r->nrows; i++) {
        for (int c = 0; c < r->ncols; c++) {
            const char *v = cell(r, i, c) ? cell(r, i, c) : "-";
            int width = r->numeric[c] ? (int)w[c] : c + 1 < r->ncols ? -(int)w[c] : 0;
            printf("%s%*s", c ? "  " : "", width, v);
        }
        putchar('\n');
    }
    free(w);
}

/* One record as "name  value" lines, for show and stats. */
static void print_vertical(const db_rows *r)
{
    size_t w = 0;
    for (int c = 0; c < r->ncols; c++)
        w = strlen(r->names[c]) > w ? strlen(r->names[c]) : w;
    for (size_t i = 0; i < r->nrows; i++)
        for (int c = 0; c < r->ncols; c++)
            printf("%-*s  %s\n", (int)w, r->names[c], cell(r, i, c) ? cell(r, i, c) : "-");
}

static void print_rows(const db_rows *r, enum format f, int vertical)
{
    if (f == FMT_TABLE) {
        vertical ? print_vertical(r) : print_table(r);
        return;
    }
    if (f == FMT_CSV) {
        for (int c = 0; c < r->ncols; c++) {
            fputs(c ? "," : "", stdout);
            print_csv_cell(r->names[c]);
        }
        putchar('\n');
    }
    for (size_t i = 0; i < r->nrows; i++) {
        if (f == FMT_JSON)
            putchar('{');
        for (int c = 0; c < r->ncols; c++) {
            const char *v = cell(r, i, c);
            fputs(c ? "," : "", stdout);
            if (f == FMT_CSV) {
                print_csv_cell(v);
                continue;
            }
            print_json_string(r->names[c]);
            putchar(':');
            if (!v)
                fputs("null", stdout);
            else if (r->numeric[c])
                fputs(v, stdout);
            else
                print_json_string(v);
        }
        puts(f == FMT_JSON ? "}" : "");
    }
}

/* ------------------------------------------------------------ number parsing */

static int parse_i64(const char *s, const char *what, int64_t *out)
{
    if (fmqa_parse_i64(s, 0, INT64_MAX, out)) {
        fprintf(stderr, "fastmqa-db: %s: expected a non-negative integer, got '%s'\n", what,
                s ? s : "");
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------ commands */

typedef fmqa_status (*list_fn)(db_t *, db_rows *, fmqa_err *);

static int show_list(db_t *db, const opts *o, list_fn fn)
{
    db_rows rows;
    fmqa_err err = {0};
    if (fn(db, &rows, &err))
        return fail(err.msg);
    print_rows(&rows, o->format, 0);
    db_rows_free(&rows);
    return 0;
}

static int cmd_devices(db_t *db, const opts *o) { return show_list(db, o, db_list_devices); }
static int cmd_problems(db_t *db, const opts *o) { return show_list(db, o, db_list_problems); }
static int cmd_best(db_t *db, const opts *o) { return show_list(db, o, db_list_best); }

static int cmd_trials(db_t *db, const opts *o)
{
    db_trial_filter f = DB_TRIAL_FILTER_INIT;
    fmqa_err err = {0};
    f.device = o->device;
    f.template_name = o->template_name;
    if ((o->problem && parse_i64(o->problem, "--problem", &f.problem_id)) ||
        (o->limit && parse_i64(o->limit, "--limit", &f.limit)))
        return EXIT_USAGE;
    if (o->status) {
        db_trial_status st;
        if (db_trial_status_parse(o->status, &st, &err))
            return fail(err.msg);
        f.status = (int)st;
    }
    if (o->sort) {
        static const char *const sorts[] = {"created", "median", "error"};
        int i = 0;
        while (i < 3 && strcmp(o->sort, sorts[i]) != 0)
            i++;
        if (i == 3)
            return fail("--sort: expected median, created or error");
        f.sort = (db_trial_sort)i;
    }
    db_rows rows;
    if (db_list_trials(db, &f, &rows, &err))
        return fail(err.msg);
    print_rows(&rows, o->format, 0);
    db_rows_free(&rows);
    return 0;
}

static int cmd_compiles(db_t *db, const opts *o)
{
    int64_t limit = 0;
    db_rows rows = {0};
    fmqa_err err = {0};
    if (o->limit && parse_i64(o->limit, "--limit", &limit))
        return EXIT_USAGE;
    if (db_list_cubins(db, o->template_name, limit, &rows, &err))
        return fail(err.msg);
    print_rows(&rows, o->format, 0);
    db_rows_free(&rows);
    return 0;
}

static int cmd_plot(db_t *db, const opts *o)
{
    int64_t problem = 0;
    fmqa_err err = {0};
    if (o->problem && parse_i64(o->problem, "--problem", &problem))
        return EXIT_USAGE;
    if (db_plot_write(db, o->arg ? o->arg : ".", problem, stdout, &err))
        return fail(err.msg);
    return 0;
}

static int cmd_check(db_t *db, const opts *o)
{
    fmqa_err err = {0};
    if (db_check(db, true, &err))
        return fail(err.msg);
    printf("%s: ok (integrity_check, foreign_key_check)\n", o->db_path);
    return 0;
}

static int cmd_show(db_t *db, const opts *o)
{
    int64_t id;
    if (!o->arg)
        return fail("show: which trial? (fastmqa-db show TRIAL_ID)");
    if (parse_i64(o->arg, "TRIAL_ID", &id))
        return EXIT_USAGE;
    db_rows rows;
    fmqa_err err = {0};
    if (db_show_trial(db, id, &rows, &err))
        return fail(err.msg);
    print_rows(&rows, o->format, 1);
    db_rows_free(&rows);
    return 0;
}

static int cmd_stats(db_t *db, const opts *o)
{
    db_stats s;
    fmqa_err err = {0};
    if (db_stats_get(db, &s, &err))
        return fail(err.msg);
    enum { N = 10 + DB_TRIAL_STATUS_COUNT };
    char *names[N], *cells[N];
    bool numeric[N];
    const int64_t v[10] = {s.schema_version, s.file_bytes, s.devices, s.templates, s.problems,
                           s.sessions, s.trials, s.best, s.cubins, s.cubin_bytes};
    static const char *const label[10] = {"schema_version", "file_bytes", "devices",
                                          "templates", "problems", "sessions", "trials",
                                          "best", "cubins", "cubin_bytes"};
    for (int i = 0; i < N; i++) {
        char name[64], num[32];
        if (i < 10)
            snprintf(name, sizeof name, "%s", label[i]);
        else
            snprintf(name, sizeof name, "trials_%s",
                     db_trial_status_name((db_trial_status)(i - 10)));
        snprintf(num, sizeof num, "%lld",
                 (long long)(i < 10 ? v[i] : s.trials_by_status[i - 10]));
        names[i] = strdup(name);
        cells[i] = strdup(num);
        numeric[i] = true;
    }
    db_rows rows = {N, 1, names, numeric, cells};
    print_rows(&rows, o->format, 1);
    for (int i = 0; i < N; i++) {
        free(names[i]);
        free(cells[i]);
    }
    return 0;
}

/* Writes the export next to FILE and renames it into place when complete, so
 * a failed export (full disk, error) leaves FILE as it was and no partial
 * file. */
static int cmd_export(db_t *db, const opts *o)
{
    fmqa_err err = {0};
    if (!o->arg || strcmp(o->arg, "-") == 0)
        return db_export(db, stdout, &err) ? fail(err.msg) : 0;
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.XXXXXX", o->arg) >= (int)sizeof tmp)
        return fail("export path too long");
    int fd = mkstemp(tmp);
    mode_t mask = umask(0); /* the file gets the mode fopen would give it */
    umask(mask);
    if (fd >= 0)
        fchmod(fd, 0666 & ~mask);
    FILE *out = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (!out) {
        fprintf(stderr, "fastmqa-db: %s: %s\n", tmp, strerror(errno));
        if (fd >= 0) {
            close(fd);
            unlink(tmp);
        }
        return EXIT_FAILURE;
    }
    fmqa_status s = db_export(db, out, &err);
    if ((fflush(out) != 0 || fsync(fd) != 0) && !s)
        s = fmqa_err_set(&err, FMQA_ERR_IO, "%s: %s", o->arg, strerror(errno));
    if (fclose(out) != 0 && !s)
        s = fmqa_err_set(&err, FMQA_ERR_IO, "%s: %s", o->arg, strerror(errno));
    if (!s && rename(tmp, o->arg) != 0)
        s = fmqa_err_set(&err, FMQA_ERR_IO, "%s: %s", o->arg, strerror(errno));
    if (s)
        unlink(tmp);
    return s ? fail(err.msg) : 0;
}

/* Prints what an import or merge did; its exit status (0, or EXIT_PARTIAL when
 * best rows were refused). */
static int print_import(const db_import_stats *st, const char *verb, const char *from)
{
    printf("%s %s: %lld rows read, %lld added or updated\n", verb, from,
           (long long)st->rows_read, (long long)st->rows_added);
    if (st->best_rejected)
        fprintf(stderr,
                "fastmqa-db: %lld best entr%s refused (not proven by an ok, verified trial of "
                "the same device, template and problem); first: %s\n",
                (long long)st->best_rejected, st->best_rejected == 1 ? "y" : "ies",
                st->rejected);
    return st->best_rejected ? EXIT_PARTIAL : 0;
}

static int cmd_import(db_t *db, const opts *o)
{
    if (!o->arg)
        return fail("import: which file? (fastmqa-db import FILE, - for stdin)");
    int from_stdin = strcmp(o->arg, "-") == 0;
    FILE *in = from_stdin ? stdin : fopen(o->arg, "r");
    if (!in) {
        fprintf(stderr, "fastmqa-db: %s: %s\n", o->arg, strerror(errno));
        return EXIT_FAILURE;
    }
    db_import_stats st;
    fmqa_err err = {0};
    fmqa_status s = db_import(db, in, from_stdin ? "stdin" : o->arg, &st, &err);
    if (!from_stdin)
        fclose(in);
    if (s)
        return fail(err.msg);
    return print_import(&st, "imported", o->arg);
}

static int cmd_merge(db_t *db, const opts *o)
{
    if (!o->arg)
        return fail("merge: which file? (fastmqa-db merge OTHER.db)");
    db_import_stats st;
    fmqa_err err = {0};
    if (db_merge(db, o->arg, &st, &err))
        return fail(err.msg);
    return print_import(&st, "merged", o->arg);
}

/* Splits "a,b,c" in place into the pointers of list (at most cap). */
static size_t split_commas(char *s, const char **list, size_t cap)
{
    size_t n = 0;
    for (char *tok = strtok(s, ","); tok && n < cap; tok = strtok(NULL, ","))
        list[n++] = tok;
    return n;
}

static int cmd_prune(db_t *db, const opts *o)
{
    if (!o->keep_templates && !o->older_than)
        return fail("prune: give --keep-templates HASH,... and/or --older-than DAYS");
    db_prune_opts po = {0};
    int64_t days = 0;
    if (o->older_than && parse_i64(o->older_than, "--older-than", &days))
        return EXIT_USAGE;
    po.older_than_days = (int)days;
    char *keep = o->keep_templates ? strdup(o->keep_templates) : NULL;
    const char *list[1024];
    if (keep) {
        po.n_keep = split_commas(keep, list, sizeof list / sizeof list[0]);
        po.keep_template_hashes = list;
    }
    db_prune_stats st;
    fmqa_err err = {0};
    fmqa_status s = db_prune(db, &po, &st, &err);
    free(keep);
    if (s)
        return fail(err.msg);
    printf("pruned %lld templates, %lld trials, %lld best entries, %lld cubins\n",
           (long long)st.templates, (long long)st.trials, (long long)st.best,
           (long long)st.cubins);
    return 0;
}

static int cmd_vacuum(db_t *db, const opts *o)
{
    fmqa_err err = {0};
    if (db_vacuum(db, &err))
        return fail(err.msg);
    printf("vacuumed %s\n", db_path(db));
    return 0;
}

static const command COMMANDS[] = {
    {"devices", "", "list devices", "", DB_READ_ONLY, cmd_devices},
    {"problems", "", "list problem classes and buckets", "", DB_READ_ONLY, cmd_problems},
    {"trials", "", "list trials (newest first)",
     "--device ID|KEY|NAME --template NAME --problem ID --status STATUS --limit N "
     "--sort median|created|error", DB_READ_ONLY, cmd_trials},
    {"best", "", "list the best variant per device, template and problem", "",
     DB_READ_ONLY, cmd_best},
    {"show", "TRIAL_ID", "everything about one trial", "", DB_READ_ONLY, cmd_show},
    {"export", "[FILE|-]", "write every row as JSON lines (default stdout)", "",
     DB_READ_ONLY, cmd_export},
    {"import", "FILE|-", "read JSON lines from export, upserting by natural keys", "",
     DB_READ_WRITE, cmd_import},
    {"merge", "OTHER.db", "import every row of another database file", "", DB_READ_WRITE,
     cmd_merge},
    {"prune", "", "delete rows of old templates and/or old trials and cubins",
     "--keep-templates HASH,... --older-than DAYS", DB_READ_WRITE, cmd_prune},
    {"compiles", "", "compile report of every stored cubin: registers, spills, time",
     "--template NAME --limit N", DB_READ_ONLY, cmd_compiles},
    {"stats", "", "row counts, trials per status, file size", "", DB_READ_ONLY, cmd_stats},
    {"plot", "[DIR]", "an SVG chart of each problem's trials per device (into DIR, default .)",
     "--problem ID", DB_READ_ONLY, cmd_plot},
    {"check", "", "full integrity check of the file (reads all of it)", "", DB_READ_ONLY,
     cmd_check},
    {"vacuum", "", "rebuild the file to reclaim free space", "", DB_READ_WRITE, cmd_vacuum},
};
#define N_COMMANDS (sizeof COMMANDS / sizeof COMMANDS[0])

/* Only the commands that add rows may create the database file; the others
 * (vacuum, prune and every reading command) need an existing one. */
static int may_create(const command *c)
{
    return c->run == cmd_import || c->run == cmd_merge;
}

/* ------------------------------------------------------------ command line */

static void usage(FILE *f)
{
    fprintf(f, "usage: fastmqa-db COMMAND [ARGS] [--db PATH] [--json|--csv]\n\n"
               "Inspects and maintains the FastMQA tuning database.\n\ncommands:\n");
    for (size_t i = 0; i < N_COMMANDS; i++)
        fprintf(f, "  %-9s %-10s %s\n", COMMANDS[i].name, COMMANDS[i].args, COMMANDS[i].summary);
    fprintf(f, "\ncommon options:\n"
               "  --db PATH   database file (default: $XDG_CACHE_HOME/fastmqa/tune.db,\n"
               "              else $HOME/.cache/fastmqa/tune.db)\n"
               "  --json      one JSON object per line (JSON lines)\n"
               "  --csv       CSV with a header line\n"
               "  --help      this text; fastmqa-db COMMAND --help for one command\n"
               "  --version   versions of the library, NVRTC, driver and database schema\n"
               "\nexit status: 0 ok; 1 error; 2 usage error; 3 import or merge applied the\n"
               "file but refused some best rows (reason on stderr)\n");
}

static void command_usage(const command *c)
{
    printf("usage: fastmqa-db %s %s [--db PATH] [--json|--csv]\n\n%s.\n", c->name, c->args,
           c->summary);
    if (*c->options) {
        /* One option (with its value) per line: split before each " --". */
        printf("\noptions:\n  ");
        for (const char *p = c->options; *p; p++) {
            if (p[0] == ' ' && p[1] == '-' && p[2] == '-')
                printf("\n  ");
            else
                putchar(*p);
        }
        putchar('\n');
    }
    printf("\nopens the database %s.\n", c->mode == DB_READ_ONLY ? "read-only" : "read-write");
}

/* The option's value slot in o if command c accepts it, else NULL. */
static const char **option_slot(opts *o, const command *c, const char *name)
{
    struct { const char *name; const char **slot; } all[] = {
        {"--db", &o->db_path}, {"--device", &o->device}, {"--template", &o->template_name},
        {"--problem", &o->problem}, {"--status", &o->status}, {"--limit", &o->limit},
        {"--sort", &o->sort}, {"--keep-templates", &o->keep_templates},
        {"--older-than", &o->older_than}};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        if (strcmp(all[i].name, name) != 0)
            continue;
        /* Whole-word match in the command's option list ("--db" is everyone's). */
        const char *at = strstr(c->options, name);
        size_t n = strlen(name);
        if (i == 0 || (at && (at[n] == ' ' || at[n] == '\0')))
            return all[i].slot;
    }
    return NULL;
}

/* Parses argv after the command name; returns -1 on a usage error, 1 for --help. */
static int parse_args(int argc, char **argv, const command *c, opts *o)
{
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        const char **slot;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0)
            return 1;
        if (strcmp(a, "--json") == 0 || strcmp(a, "--csv") == 0) {
            o->format = a[2] == 'j' ? FMT_JSON : FMT_CSV;
        } else if (a[0] == '-' && a[1] == '-') {
            if (!(slot = option_slot(o, c, a))) {
                fprintf(stderr, "fastmqa-db %s: unknown option %s\n", c->name, a);
                return -1;
            }
            if (i + 1 == argc) {
                fprintf(stderr, "fastmqa-db %s: %s needs a value\n", c->name, a);
                return -1;
            }
            *slot = argv[++i];
        } else if (!o->arg && *c->args) {
            o->arg = a;
        } else {
            fprintf(stderr, "fastmqa-db %s: unexpected argument '%s'\n", c->name, a);
            return -1;
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (rt_version_option(argc, argv, "fastmqa-db"))
        return 0;
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? EXIT_USAGE : 0;
    }
    const command *c = NULL;
    for (size_t i = 0; i < N_COMMANDS; i++)
        if (strcmp(argv[1], COMMANDS[i].name) == 0)
            c = &COMMANDS[i];
    if (!c) {
        fprintf(stderr, "fastmqa-db: unknown command '%s' (see fastmqa-db --help)\n", argv[1]);
        return EXIT_USAGE;
    }
    opts o = {0};
    int r = parse_args(argc - 2, argv + 2, c, &o);
    if (r) {
        if (r > 0)
            command_usage(c);
        return r > 0 ? 0 : EXIT_USAGE;
    }
    char def[4096];
    if (!o.db_path) {
        if (fmqa_default_db_path(def, sizeof def) != FMQA_OK)
            return fail("no default database path ($HOME unset?): pass --db PATH");
        o.db_path = def;
    }
    db_t *db = NULL;
    fmqa_err err = {0};
    if (!may_create(c) && access(o.db_path, F_OK) != 0) {
        fprintf(stderr, "fastmqa-db: %s: %s (%s never creates a database)\n", o.db_path,
                strerror(errno), c->name);
        return EXIT_FAILURE;
    }
    if (db_open(o.db_path, c->mode, 0, &db, &err))
        return fail(err.msg);
    r = c->run(db, &o);
    db_close(db);
    return r;
}
