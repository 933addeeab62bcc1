/*
 * templates.c -- helpers for tests that drive the shipped templates through
 * the generator: open the set, find a template (failing with its load error),
 * parse a problem spec or a config, describe a device without a GPU, expect a
 * config refused with a reason, compile a config clean of local memory.  Each
 * asserts (or expects) on failure, naming the input.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "test_support.h"

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

void fmqa_test_compile_clean(const gen_template *t, const gen_config *c, const fmqa_problem *p,
                             const fmqa_device_info *d, const char *what, int n_entries)
{
    fmqa_err err;
    gen_source src;
    gen_binary bin;
    char text[GEN_CONFIG_TEXT_CAP];
    gen_config_text(c, text, sizeof text);
    cr_assert_eq(gen_render(t, c, p, d, &src, &err), FMQA_OK, "%s [%s]: %s", what, text, err.msg);
    cr_assert_eq(gen_compile(&src, &bin, &err), FMQA_OK, "%s [%s]: %s", what, text, err.msg);
    cr_assert_eq(bin.n_resources, n_entries, "%s [%s]: ptxas reported %d entries:\n%s", what,
                 text, bin.n_resources, bin.log ? bin.log : "");
    for (int i = 0; i < bin.n_resources; i++) {
        const gen_resource *r = &bin.resources[i];
        cr_expect(r->spill_stores == 0 && r->spill_loads == 0 && r->stack_bytes == 0,
                  "%s %s [%s] %s: spills %d/%d bytes, stack %d bytes, %d registers", what,
                  src.arch, text, r->entry, r->spill_stores, r->spill_loads, r->stack_bytes,
                  r->registers);
        cr_expect(r->registers > 0 && r->registers <= 255, "%s %s: %d registers", what, r->entry,
                  r->registers);
    }
    gen_binary_free(&bin);
    gen_source_free(&src);
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
