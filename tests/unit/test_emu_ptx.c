/*
 * test_emu_ptx.c -- the CPU emulator models every instruction wrapper of
 * templates/fmqa_ptx.cuh, and nothing the device layer lacks: the functions
 * declared there (lines opening with FMQA_PTX, or a template header and
 * FMQA_PTX) must be exactly the public functions of tests/emu/emu_ptx.h
 * (lines opening with `inline`, or a template header and `inline`; names
 * starting with emu_ are the model's internals).  A wrapper the kernels do not
 * call yet would otherwise go unnoticed until they do.  Also: the templates'
 * identity hashes cover the instruction layer, which they include only
 * through fmqa_device.cuh.
 */
#define _POSIX_C_SOURCE 200809L

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "gen.h"

#define MAX_NAMES 64

typedef struct names {
    int n;
    char v[MAX_NAMES][64];
} names;

/* Adds the function name of each line of path that opens with `key` (after an
 * optional "template <...> "). */
static void scan(const char *path, const char *key, names *out)
{
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "cannot read %s", path);
    char line[512];
    out->n = 0;
    while (fgets(line, sizeof line, f)) {
        const char *s = line;
        if (strncmp(s, "template <", 10) == 0) {
            s = strchr(s, '>');
            if (!s)
                continue;
            s += 1 + (s[1] == ' ');
        }
        if (strncmp(s, key, strlen(key)) != 0 || s[strlen(key)] != ' ')
            continue;
        const char *paren = strchr(s, '(');
        if (!paren)
            continue;
        const char *e = paren, *b = paren;
        while (b > s && (isalnum((unsigned char)b[-1]) || b[-1] == '_'))
            b--;
        if (e == b || strncmp(b, "emu_", 4) == 0)
            continue;
        cr_assert_lt(out->n, MAX_NAMES);
        snprintf(out->v[out->n++], sizeof out->v[0], "%.*s", (int)(e - b), b);
    }
    fclose(f);
}

static int has(const names *n, const char *name)
{
    for (int i = 0; i < n->n; i++)
        if (strcmp(n->v[i], name) == 0)
            return 1;
    return 0;
}

Test(emu_ptx, models_every_wrapper)
{
    names dev, emu;
    scan(FMQA_SOURCE_DIR "/templates/fmqa_ptx.cuh", "FMQA_PTX", &dev);
    scan(FMQA_SOURCE_DIR "/tests/emu/emu_ptx.h", "inline", &emu);
    cr_assert_gt(dev.n, 10, "found only %d wrappers in fmqa_ptx.cuh", dev.n);
    for (int i = 0; i < dev.n; i++)
        cr_expect(has(&emu, dev.v[i]), "tests/emu/emu_ptx.h does not model %s", dev.v[i]);
    for (int i = 0; i < emu.n; i++)
        cr_expect(has(&dev, emu.v[i]), "tests/emu/emu_ptx.h models %s, which fmqa_ptx.cuh lacks", emu.v[i]);
}

/* The decode and append hashes of the template directory dir. */
static void hashes(const char *dir, char (*out)[64])
{
    gen_lib *lib = NULL;
    fmqa_err err;
    cr_assert_eq(gen_lib_open(dir, &lib, &err), FMQA_OK, "%s", err.msg);
    const char *tname[2] = {"decode", "append"};
    for (int i = 0; i < 2; i++) {
        const gen_template *t = gen_lib_find(lib, tname[i]);
        cr_assert_not_null(t, "no %s template", tname[i]);
        snprintf(out[i], 64, "%s", gen_template_hash(t));
    }
    gen_lib_close(lib);
}

Test(emu_ptx, hash_covers_instruction_layer)
{
    char dir[] = "/tmp/fmqa-ptxhash-XXXXXX", cmd[512], before[2][64], after[2][64];
    cr_assert_not_null(mkdtemp(dir));
    snprintf(cmd, sizeof cmd, "cp -r %s/templates/. %s/ && echo '/* changed */' >> %s/fmqa_ptx.cuh",
             FMQA_SOURCE_DIR, dir, dir);
    hashes(FMQA_SOURCE_DIR "/templates", before);
    cr_assert_eq(system(cmd), 0, "%s", cmd);
    hashes(dir, after);
    for (int i = 0; i < 2; i++)
        cr_expect_str_neq(before[i], after[i], "template %d's hash ignores fmqa_ptx.cuh", i);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    (void)system(cmd);
}
