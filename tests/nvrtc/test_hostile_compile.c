/*
 * test_hostile_compile.c -- beside each hostile template of
 * tests/fixtures/hostile/<kind>/ (see tests/unit/test_gen_hostile.c), the
 * correct template not only loads but renders the same source as in a set
 * without hostile neighbours, and that source compiles with NVRTC: a template
 * that tried to escape the sandbox leaves the library fully usable.  (NVRTC
 * never sees the Lua state, so one compile of the common source suffices.)
 */
#include <dirent.h>
#include <stdio.h>
#include <string.h>

#include <criterion/criterion.h>

#include "gen.h"

#define HOSTILE FMQA_SOURCE_DIR "/tests/fixtures/hostile"

Test(hostile_compile, the_correct_template_compiles_beside_each_hostile_one, .timeout = 300)
{
    DIR *d = opendir(HOSTILE);
    cr_assert_not_null(d);
    fmqa_problem p;
    fmqa_device_info dev;
    cr_assert_eq(gen_problem_parse("op=append,batch=2", &p, NULL), FMQA_OK);
    cr_assert_eq(gen_device_preset("sm_80", &dev, NULL), FMQA_OK);
    int kinds = 0;
    static char first[65536];
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        if (e->d_name[0] == '.')
            continue;
        char dir[512];
        snprintf(dir, sizeof dir, HOSTILE "/%s", e->d_name);
        gen_lib *lib = NULL;
        fmqa_err err = {0};
        cr_assert_eq(gen_lib_open(dir, &lib, &err), FMQA_OK, "%s", err.msg);
        const gen_template *ok = gen_lib_find(lib, "ok");
        cr_assert_not_null(ok, "%s: the correct template did not load", e->d_name);
        gen_config c;
        gen_source s;
        cr_assert_eq(gen_default(ok, &p, &dev, &c, &err), FMQA_OK, "%s", err.msg);
        cr_assert_eq(gen_render(ok, &c, &p, &dev, &s, &err), FMQA_OK, "%s", err.msg);
        /* the chunk name differs per directory: compare what follows it */
        const char *body = strstr(s.text, "extern \"C\"");
        cr_assert_not_null(body, "%s", s.text);
        if (!kinds) {
            gen_binary b;
            cr_expect_eq(gen_compile(&s, &b, &err), FMQA_OK, "%s", err.msg);
            cr_expect_gt(b.size, 0);
            gen_binary_free(&b);
            snprintf(first, sizeof first, "%s", body);
        } else {
            cr_expect_str_eq(body, first, "%s renders another source", e->d_name);
        }
        gen_source_free(&s);
        gen_lib_close(lib);
        kinds++;
    }
    closedir(d);
    cr_expect_geq(kinds, 9);
}
