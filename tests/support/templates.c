/*
 * templates.c -- helpers for tests that drive the shipped templates through
 * the generator: open the set, find a template (failing with its load error),
 * parse a problem spec, describe a device without a GPU.  Each asserts on
 * failure, naming the input.
 */
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

fmqa_device_info fmqa_test_device(const char *arch)
{
    fmqa_device_info d;
    fmqa_err err;
    cr_assert_eq(gen_device_preset(arch, &d, &err), FMQA_OK, "%s", err.msg);
    return d;
}
