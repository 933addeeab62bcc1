/*
 * compile_check.c -- see compile_check.h.
 */
#include "compile_check.h"

#include <stdio.h>

#include <criterion/criterion.h>

void fmqa_compile_submit(gen_compiler *comp, const gen_template *t, const gen_config *c,
                         const fmqa_problem *p, const fmqa_device_info *d, const char *what,
                         fmqa_compile_job *j)
{
    fmqa_err err;
    gen_source src;
    char text[GEN_CONFIG_TEXT_CAP];
    gen_config_text(c, text, sizeof text);
    snprintf(j->what, sizeof j->what, "%s %s [%s]", what, d->arch, text);
    cr_assert_eq(gen_render(t, c, p, d, &src, &err), FMQA_OK, "%s: %s", j->what, err.msg);
    cr_assert_eq(gen_compiler_submit(comp, &src, NULL, NULL, &j->job, &err), FMQA_OK, "%s: %s",
                 j->what, err.msg);
}

void fmqa_compile_expect_clean(fmqa_compile_job *j, const char *entry)
{
    fmqa_err err;
    const gen_binary *bin;
    cr_assert_eq(gen_job_wait(j->job, &bin, &err), FMQA_OK, "%s: %s", j->what, err.msg);
    cr_assert_eq(bin->n_resources, 1, "%s: no ptxas report in the log:\n%s", j->what,
                 bin->log ? bin->log : "");
    const gen_resource *r = &bin->resources[0];
    cr_expect_str_eq(r->entry, entry);
    cr_expect(r->spill_stores == 0 && r->spill_loads == 0 && r->stack_bytes == 0,
              "%s: spills %d/%d bytes, stack %d bytes, %d registers", j->what, r->spill_stores,
              r->spill_loads, r->stack_bytes, r->registers);
    gen_job_release(j->job);
}

int fmqa_config_largest_block(const gen_config *cs, size_t n, const gen_config *c)
{
    int64_t vec, tpr, rows, v, t, r;
    gen_config_get(c, "VEC", &vec);
    gen_config_get(c, "THREADS_PER_ROW", &tpr);
    gen_config_get(c, "ROWS_PER_CTA", &rows);
    for (size_t i = 0; i < n; i++) {
        gen_config_get(&cs[i], "VEC", &v);
        gen_config_get(&cs[i], "THREADS_PER_ROW", &t);
        gen_config_get(&cs[i], "ROWS_PER_CTA", &r);
        if (v == vec && t == tpr && r > rows)
            return 0;
    }
    return 1;
}
