/*
 * test_mla_append_compile.c -- the append template's MLA latent rows (issue
 * 12) and partial rotary (issue 16) through the generator and NVRTC, without
 * a GPU: specializations compile with no spills and no stack, the latent
 * launch has no V rows, and the defines carry the rotated part.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "compile_check.h"
#include "gen.h"
#include "test_support.h"

/* MLA latent rows (issue 12: 576 = 512 + 64 rope part, fp8 and 16-bit, paged
 * and contiguous) and partial rotary (issue 16: 64 of 128 with a ring, 20 of
 * 80 with VEC 2) by default config on sm_80 and sm_90, and for the fp8 latent
 * the largest block of every (VEC, THREADS_PER_ROW) the space allows on
 * sm_90: no spills, no stack. */
Test(mla_append_compile, latent_and_rope_partial_compile_clean)
{
    static const struct {
        const char *spec, *arch;
    } classes[] = {
        {"op=append,batch=4,heads=128,kv_heads=1,d=576,dv=512,tq=2,kv_len=4096,q=bf16,"
         "kv=fp8_e4m3,out=bf16,rope=gptj,page=64,flags=paged|latent", "sm_80"},
        {"op=append,batch=4,heads=16,kv_heads=1,d=576,dv=512,tq=4,kv_len=4096,q=f16,kv=bf16,"
         "out=f16,rope=neox,flags=latent", "sm_90"},
        {"op=append,batch=3,heads=8,kv_heads=2,d=128,tq=5,kv_len=4096,q=f16,kv=int8,out=f16,"
         "rope=neox,rope_dim=64,window=100,sinks=4,flags=ring", "sm_80"},
        {"op=append,batch=3,heads=8,kv_heads=1,d=80,tq=5,kv_len=4096,q=bf16,kv=fp8_e4m3,"
         "out=bf16,rope=gptj,rope_dim=20", "sm_90"},
    };
    gen_lib *lib = fmqa_test_open_templates();
    const gen_template *t = fmqa_test_template(lib, "append", FMQA_OP_APPEND);
    gen_compiler *comp;
    fmqa_err err;
    cr_assert_eq(gen_compiler_create(2, NULL, &comp, &err), FMQA_OK, "%s", err.msg);
    fmqa_compile_job jobs[32];
    size_t n = 0;
    for (size_t i = 0; i < sizeof classes / sizeof classes[0]; i++) {
        fmqa_problem p = fmqa_test_problem(classes[i].spec);
        fmqa_device_info dev = fmqa_test_device(classes[i].arch);
        gen_config c;
        cr_assert_eq(gen_default(t, &p, &dev, &c, &err), FMQA_OK, "%s: %s", classes[i].spec,
                     err.msg);
        fmqa_compile_submit(comp, t, &c, &p, &dev, classes[i].spec, &jobs[n++]);
    }
    fmqa_problem p = fmqa_test_problem(classes[0].spec);
    fmqa_device_info dev = fmqa_test_device("sm_90");
    gen_config *cs = NULL;
    size_t nc = 0;
    cr_assert_eq(gen_space(t, &p, &dev, &cs, &nc, &err), FMQA_OK, "%s", err.msg);
    for (size_t i = 0; i < nc; i++)
        if (fmqa_config_largest_block(cs, nc, &cs[i])) {
            cr_assert_lt(n, sizeof jobs / sizeof jobs[0]);
            fmqa_compile_submit(comp, t, &cs[i], &p, &dev, "latent fp8 space", &jobs[n++]);
        }
    cr_expect_geq(n, 8, "%zu compiles", n);
    free(cs);
    for (size_t k = 0; k < n; k++)
        fmqa_compile_expect_clean(&jobs[k], "fmqa_append_kernel");
    gen_compiler_destroy(comp);
    gen_lib_close(lib);
}

/* The latent launch has no V rows: K + Q rows = 4 * 2 * (1 + 128); the
 * defines carry the rotated elements and where they sit. */
Test(mla_append_compile, launch_and_defines)
{
    gen_lib *lib = fmqa_test_open_templates();
    const gen_template *t = fmqa_test_template(lib, "append", FMQA_OP_APPEND);
    fmqa_device_info dev = fmqa_test_device("sm_90");
    fmqa_problem p = fmqa_test_problem("op=append,batch=4,heads=128,kv_heads=1,d=576,dv=512,"
                                       "tq=2,q=bf16,kv=fp8_e4m3,rope=gptj,flags=latent");
    gen_config c;
    gen_plan plan;
    gen_source src;
    fmqa_err err;
    int64_t rows = 0;
    cr_assert_eq(gen_default(t, &p, &dev, &c, &err), FMQA_OK, "%s", err.msg);
    gen_config_get(&c, "ROWS_PER_CTA", &rows);
    cr_assert_eq(gen_launch_plan(t, &c, &p, &dev, &plan, &err), FMQA_OK, "%s", err.msg);
    cr_expect_eq(plan.kernels[0].grid[0], (uint32_t)((4 * 2 * 129 + rows - 1) / rows));
    cr_assert_eq(gen_render(t, &c, &p, &dev, &src, &err), FMQA_OK, "%s", err.msg);
    cr_expect_not_null(strstr(src.text, "#define ROPE_DIM 64\n"));
    cr_expect_not_null(strstr(src.text, "#define LATENT 1\n"));
    gen_source_free(&src);
    /* partial rotary: the problem's rope_dim; none without RoPE */
    p = fmqa_test_problem("op=append,d=128,q=f16,kv=f16,rope=neox,rope_dim=32");
    cr_assert_eq(gen_default(t, &p, &dev, &c, &err), FMQA_OK, "%s", err.msg);
    cr_assert_eq(gen_render(t, &c, &p, &dev, &src, &err), FMQA_OK, "%s", err.msg);
    cr_expect_not_null(strstr(src.text, "#define ROPE_DIM 32\n"));
    cr_expect_not_null(strstr(src.text, "#define LATENT 0\n"));
    gen_source_free(&src);
    gen_lib_close(lib);
}
