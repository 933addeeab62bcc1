/*
 * test_template_hash.c -- a template's identity hash covers every file the
 * compiler reads for it.  On a copy of the shipped templates, editing each
 * file a real preprocessor (the host's cpp -M) says a template's sources
 * read must change that template's hash; on a synthetic set, every #include
 * form counts (after a blank line, after a comment, `# include`, <name>,
 * spliced lines, nested, guarded) and commented-out or quoted ones do not;
 * the Lua libraries a template requires count, others do not.
 */
#define _POSIX_C_SOURCE 200809L
#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gen.h"

static char dir[64];

static void make_dir(void)
{
    strcpy(dir, "/tmp/fmqa_hash_XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
}

static void remove_dir(void)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(template_hash, .init = make_dir, .fini = remove_dir);

static void write_file(const char *name, const char *text, const char *mode)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, mode);
    cr_assert_not_null(f, "%s", path);
    fputs(text, f);
    fclose(f);
}

/* The hash of every template of the set in dir, in lib order. */
static int hashes(char out[][FMQA_HASH_HEX], char names[][GEN_NAME_CAP], int cap)
{
    gen_lib *lib;
    fmqa_err err;
    cr_assert_eq(gen_lib_open(dir, &lib, &err), FMQA_OK, "%s", err.msg);
    int n = gen_lib_count(lib);
    cr_assert_leq(n, cap);
    for (int i = 0; i < n; i++) {
        const gen_template *t = gen_lib_at(lib, i);
        cr_assert_str_neq(gen_template_hash(t), "", "%s", gen_template_message(t));
        fmqa_strlcpy(out[i], gen_template_hash(t), FMQA_HASH_HEX);
        if (names)
            fmqa_strlcpy(names[i], gen_template_name(t), GEN_NAME_CAP);
    }
    gen_lib_close(lib);
    return n;
}

/* Copies the shipped templates (and their lib/) into dir; returns the names
 * of the entries of templates/ (static). */
static int copy_shipped(char files[][256], int cap)
{
    DIR *d = opendir(FMQA_SOURCE_DIR "/templates");
    cr_assert_not_null(d);
    int n = 0;
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] == '.')
            continue;
        cr_assert_lt(n, cap);
        fmqa_strlcpy(files[n], e->d_name, 256);
        char cmd[1024];
        snprintf(cmd, sizeof cmd, "cp -r '%s/templates/%s' '%s/'", FMQA_SOURCE_DIR, e->d_name, dir);
        cr_assert_eq(system(cmd), 0);
        n++;
    }
    closedir(d);
    return n;
}

/* Whether the host preprocessor says `source` reads `file` (cpp -M -MG without
 * system headers: the toolkit's are listed, not read).  -1 when there is no
 * cpp. */
static int cpp_reads(const char *source, const char *file)
{
    char cmd[1024], line[8192];
    snprintf(cmd, sizeof cmd, "cd '%s' && cpp -x c++ -nostdinc -M -MG -I. '%s' 2>/dev/null", dir, source);
    FILE *p = popen(cmd, "r");
    if (!p)
        return -1;
    int found = 0, any = 0;
    while (fgets(line, sizeof line, p)) {
        any = 1;
        for (char *tok = strtok(line, " \\\n"); tok; tok = strtok(NULL, " \\\n"))
            found |= strcmp(tok, file) == 0 ||
                     (strncmp(tok, "./", 2) == 0 && strcmp(tok + 2, file) == 0);
    }
    pclose(p); /* fails on a template's #error for missing defines; the list is complete */
    return any ? found : -1;
}

Test(template_hash, editing_any_file_the_compiler_reads_changes_the_hash)
{
    static char files[64][256];
    int nf = copy_shipped(files, 64);
    char before[16][FMQA_HASH_HEX], after[16][FMQA_HASH_HEX], names[16][GEN_NAME_CAP];
    int nt = hashes(before, names, 16);
    cr_assert_geq(nt, 2);
    int checked = 0;
    for (int f = 0; f < nf; f++) {
        if (!strstr(files[f], ".h") && !strstr(files[f], ".cuh"))
            continue;
        write_file(files[f], "\n// an edit\n", "a");
        cr_assert_eq(hashes(after, NULL, 16), nt);
        for (int t = 0; t < nt; t++) {
            char source[GEN_NAME_CAP + 8];
            snprintf(source, sizeof source, "%.60s.cuh", names[t]);
            int reads = strcmp(source, files[f]) == 0 ? 1 : cpp_reads(source, files[f]);
            if (reads < 0)
                cr_skip_test("no host preprocessor (cpp) to tell which files %s reads", source);
            if (reads) {
                cr_expect_str_neq(before[t], after[t], "editing %s left %s's hash unchanged",
                                  files[f], names[t]);
                checked++;
            }
            memcpy(before[t], after[t], FMQA_HASH_HEX);
        }
    }
    /* At least decode and append each read fmqa_params.h besides themselves. */
    cr_assert_geq(checked, 4);
}

/* A template "t" whose source is t.cuh (its Lua file begins with `prelude`). */
static void toy_template_with(const char *prelude)
{
    char text[1024];
    snprintf(text, sizeof text, "%s%s", prelude,
               "return { name = 't', op = 'decode', sources = { 't.cuh' }, entries = { 'k' },\n"
               "  space = { B = { 1 } },\n"
               "  launch = function(c, p, d) return { kernels = { { entry = 'k', grid = { 1, 1, 1 },"
               " block = { 32, 1, 1 }, shared = 0 } }, workspace = 0, splits = 1 } end,\n"
               "  default = function(p, d) return { B = 1 } end }\n");
    write_file("t.lua", text, "w");
}

static void toy_template(void)
{
    toy_template_with("");
}

/* 1 when editing `file` (a comment added) changes t's hash. */
static int edit_changes_hash(const char *file)
{
    char a[4][FMQA_HASH_HEX], b[4][FMQA_HASH_HEX];
    hashes(a, NULL, 4);
    write_file(file, strstr(file, ".lua") ? "\n-- an edit\n" : "\n/* an edit */\n", "a");
    hashes(b, NULL, 4);
    return strcmp(a[0], b[0]) != 0;
}

Test(template_hash, every_include_form_counts_and_comments_do_not)
{
    toy_template();
    write_file("t.cuh",
               "// a kernel\n"
               "\n"
               "#include \"blank.h\"\n"
               "/* a comment\n   over lines */ #include \"comment.h\"\n"
               "  #  include <angle.h>\n"
               "#include \\\n  \"spliced.h\"\n"
               "#ifndef GUARD\n#define GUARD\n#include \"guarded.h\"\n#endif\n"
               "#include \"outer.h\"\n"
               "// #include \"line_comment.h\"\n"
               "/* #include \"block_comment.h\" */\n"
               "const char *s = \"\\\n#include \\\"quoted.h\\\"\";\n"
               "extern \"C\" __global__ void k() {}\n",
               "w");
    const char *counted[] = {"blank.h", "comment.h", "angle.h", "spliced.h", "guarded.h",
                             "outer.h", "inner.h"};
    const char *ignored[] = {"line_comment.h", "block_comment.h", "quoted.h"};
    write_file("outer.h", "#pragma once\n\n#include \"inner.h\"\n", "w");
    for (size_t i = 0; i < sizeof counted / sizeof *counted; i++)
        if (strcmp(counted[i], "outer.h") != 0)
            write_file(counted[i], "#pragma once\n", "w");
    for (size_t i = 0; i < sizeof ignored / sizeof *ignored; i++)
        write_file(ignored[i], "#pragma once\n", "w");
    for (size_t i = 0; i < sizeof counted / sizeof *counted; i++)
        cr_expect(edit_changes_hash(counted[i]), "%s is included but not hashed", counted[i]);
    for (size_t i = 0; i < sizeof ignored / sizeof *ignored; i++)
        cr_expect_not(edit_changes_hash(ignored[i]), "%s is not included but hashed",
                      ignored[i]);
}

Test(template_hash, a_computed_include_counts_every_file)
{
    toy_template();
    write_file("t.cuh", "#define HEADER \"chosen.h\"\n#include HEADER\n", "w");
    write_file("chosen.h", "\n", "w");
    write_file("other.h", "\n", "w");
    cr_expect(edit_changes_hash("chosen.h"));
    cr_expect(edit_changes_hash("other.h"));
}

Test(template_hash, the_libraries_a_template_requires_count)
{
    char lib[512];
    snprintf(lib, sizeof lib, "%s/lib", dir);
    cr_assert_eq(mkdir(lib, 0700), 0);
    toy_template_with("local a = require('a')\n");
    write_file("t.cuh", "\n", "w");
    write_file("lib/a.lua", "local b = require('b')\nreturn { b = b }\n", "w");
    write_file("lib/b.lua", "return {}\n", "w");
    write_file("lib/unused.lua", "return {}\n", "w");
    cr_expect(edit_changes_hash("lib/a.lua"));
    cr_expect(edit_changes_hash("lib/b.lua"), "a library's library is not hashed");
    cr_expect_not(edit_changes_hash("lib/unused.lua"), "a library nobody requires is hashed");
}
