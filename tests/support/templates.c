/*
 * templates.c -- helpers for tests that drive the shipped templates through
 * the generator: open the set, find a template (failing with its load error),
 * parse a problem spec or a config, describe a device without a GPU, expect a
 * config refused with a reason, compile a config clean of local memory (and,
 * where asked, for one architecture, under a register cap, with HGMMA).  Each
 * asserts (or expects) on failure, naming the input.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "test_support.h"
#include "tun.h"

gen_lib *fmqa_test_open_templates(void)
{
    gen_lib *lib = NULL;
    fmqa_err err;
    cr_assert_eq(gen_lib_open(fmqa_test_template_dir(), &lib, &err), FMQA_OK, "%s: %s",
                 fmqa_test_template_dir(), err.msg);
    return lib;
}

const gen_template *fmqa_test_template(gen_lib *lib, const char *name, fmqa_op op)
{
    const gen_template *t = gen_lib_find(lib, name);
    if (!t)
        for (int i = 0; i < gen_lib_count(lib); i++)
            if (strcmp(gen_template_name(gen_lib_at(lib, i)), name) == 0)
                cr_assert_fail("%s.lua did not load: %s", name,
                               gen_template_message(gen_lib_at(lib, i)));
    cr_assert_not_null(t, "no %s template", name);
    cr_assert_eq(gen_template_op(t), op);
    return t;
}

fmqa_problem fmqa_test_problem(const char *spec)
{
    fmqa_problem p;
    fmqa_err err;
    cr_assert_eq(gen_problem_parse(spec, &p, &err), FMQA_OK, "%s: %s", spec, err.msg);
    return p;
}

gen_config fmqa_test_config(const char *text)
{
    gen_config c;
    fmqa_err err;
    cr_assert_eq(gen_config_parse(text, &c, &err), FMQA_OK, "%s: %s", text, err.msg);
    return c;
}

fmqa_device_info fmqa_test_device(const char *arch)
{
    fmqa_device_info d;
    fmqa_err err;
    char preset[16];
    snprintf(preset, sizeof preset, "%.*s", (int)strcspn(arch, "@"), arch);
    cr_assert_eq(gen_device_preset(preset, &d, &err), FMQA_OK, "%s: %s", arch, err.msg);
    if (arch[strlen(preset)] == '@')
        d.sm_count = atoi(arch + strlen(preset) + 1);
    return d;
}

gen_config fmqa_test_default_with(const gen_template *t, const fmqa_problem *p,
                                  const fmqa_device_info *d, const char *over)
{
    gen_config c, o = fmqa_test_config(over);
    fmqa_err err;
    char spec[GEN_PROBLEM_TEXT_CAP];
    gen_problem_format(p, spec, sizeof spec);
    cr_assert_eq(gen_default(t, p, d, &c, &err), FMQA_OK, "%s: %s", spec, err.msg);
    for (int i = 0; i < o.n; i++)
        cr_assert_eq(gen_config_set(&c, o.p[i].name, o.p[i].value, &err), FMQA_OK, "%s", err.msg);
    if (o.n)
        cr_assert_eq(gen_check(t, &c, p, d, &err), FMQA_OK, "%s [%s]: %s", spec, over, err.msg);
    return c;
}

/* Expects HGMMA in the cubin's SASS (wgmma reached the machine code); says so
 * on stderr instead when cuobjdump is missing. */
static void expect_hgmma(const gen_binary *bin, const char *what, const char *text)
{
    fmqa_err err;
    char *sass = NULL;
    fmqa_status st = tun_sass_disassemble(bin->cubin, bin->size, &sass, &err);
    if (st == FMQA_ERR_NOT_FOUND) {
        fprintf(stderr, "%s: HGMMA not checked: %s\n", what, err.msg);
        return;
    }
    cr_assert_eq(st, FMQA_OK, "%s: %s", what, err.msg);
    int n = 0;
    for (const char *s = sass; (s = strstr(s, "HGMMA")) != NULL; s += 5)
        n++;
    cr_expect_gt(n, 0, "%s [%s]: no HGMMA in the SASS", what, text);
    free(sass);
}

void fmqa_test_compile_checked(const gen_template *t, const gen_config *c, const fmqa_problem *p,
                               const fmqa_device_info *d, const char *what,
                               const fmqa_test_compile_want *want)
{
    fmqa_err err;
    gen_source src;
    gen_binary bin;
    char text[GEN_CONFIG_TEXT_CAP];
    const int max_registers = want->max_registers ? want->max_registers : 255;
    gen_config_text(c, text, sizeof text);
    cr_assert_eq(gen_render(t, c, p, d, &src, &err), FMQA_OK, "%s [%s]: %s", what, text, err.msg);
    if (want->arch)
        cr_assert_str_eq(src.arch, want->arch, "%s renders for %s", what, src.arch);
    cr_assert_eq(gen_compile(&src, &bin, &err), FMQA_OK, "%s [%s]: %s", what, text, err.msg);
    cr_assert_eq(bin.n_resources, want->n_entries, "%s [%s]: ptxas reported %d entries:\n%s", what,
                 text, bin.n_resources, bin.log ? bin.log : "");
    for (int i = 0; i < bin.n_resources; i++) {
        const gen_resource *r = &bin.resources[i];
        fprintf(stderr, "%s [%s] %s: %d registers, spills %d/%d, stack %d\n", what, text, r->entry,
                r->registers, r->spill_stores, r->spill_loads, r->stack_bytes);
        cr_expect(r->spill_stores == 0 && r->spill_loads == 0 && r->stack_bytes == 0,
                  "%s %s [%s] %s: spills %d/%d bytes, stack %d bytes, %d registers", what,
                  src.arch, text, r->entry, r->spill_stores, r->spill_loads, r->stack_bytes,
                  r->registers);
        cr_expect(r->registers > 0 && r->registers <= max_registers,
                  "%s %s: %d registers (at most %d allowed)", what, r->entry, r->registers,
                  max_registers);
    }
    if (want->hgmma)
        expect_hgmma(&bin, what, text);
    gen_binary_free(&bin);
    gen_source_free(&src);
}

void fmqa_test_compile_clean(const gen_template *t, const gen_config *c, const fmqa_problem *p,
                             const fmqa_device_info *d, const char *what, int n_entries)
{
    const fmqa_test_compile_want want = {.n_entries = n_entries};
    fmqa_test_compile_checked(t, c, p, d, what, &want);
}

void fmqa_test_expect_reason(const gen_template *t, const char *spec, const char *config_text,
                             const char *reason)
{
    fmqa_device_info dev = fmqa_test_device("sm_90");
    fmqa_problem p = fmqa_test_problem(spec);
    gen_config c = fmqa_test_config(config_text);
    fmqa_err err = {0};
    cr_expect_eq(gen_check(t, &c, &p, &dev, &err), FMQA_ERR_UNSUPPORTED, "%s [%s]", spec,
                 config_text);
    cr_expect(strstr(err.msg, reason) != NULL, "%s [%s]: message \"%s\" lacks \"%s\"", spec,
              config_text, err.msg, reason);
}

void fmqa_test_expect_no_default(const gen_template *t, const char *spec, const char *arch,
                                 const char *why)
{
    fmqa_device_info dev = fmqa_test_device(arch);
    fmqa_problem p = fmqa_test_problem(spec);
    gen_config c;
    fmqa_err err = {0};
    cr_expect_neq(gen_default(t, &p, &dev, &c, &err), FMQA_OK, "%s on %s was accepted", spec, arch);
    cr_expect(strstr(err.msg, why) != NULL, "%s on %s: '%s' lacks '%s'", spec, arch, err.msg, why);
}
