/*
 * emu_build.c -- builds a rendered kernel template for the CPU emulator
 * (tests/emu/cuda_emu.h) and loads it: the shared first half of the *_emu
 * tests.  The rendered source and its headers go to a fresh directory, the
 * host C++ compiler builds them with the op's driver (tests/emu/<op>_emu.cpp)
 * into a shared object, and its emu_launch entry point is returned.
 */
#define _POSIX_C_SOURCE 200809L
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "test_support.h"

static void write_file(const char *dir, const char *name, const char *text)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f, "cannot write %s", path);
    fputs(text, f);
    fclose(f);
}

void *fmqa_test_emu_build(const gen_template *t, const gen_config *c, const fmqa_problem *p,
                          const fmqa_device_info *d, const char *driver, char *dir)
{
    gen_source src;
    fmqa_err err;
    cr_assert_eq(gen_render(t, c, p, d, &src, &err), FMQA_OK, "%s", err.msg);
    cr_assert_not_null(mkdtemp(dir), "mkdtemp");
    write_file(dir, "kernel.cu", src.text);
    for (int i = 0; i < src.n_headers; i++)
        write_file(dir, src.header_names[i], src.header_texts[i]);
    gen_source_free(&src);
    const char *cxx = getenv("CXX") ? getenv("CXX") : "c++";
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "command -v %s >/dev/null", cxx);
    if (system(cmd) != 0)
        cr_skip_test("no C++ compiler (%s) to build the emulator", cxx);
    /* -I dir first: the rendered fmqa_params.h; then tests/emu, whose empty
     * cuda_fp16.h & co. stand for the toolkit's. */
    snprintf(cmd, sizeof cmd,
             "%s -std=c++17 -O1 -fno-strict-aliasing -shared -fPIC -w -I%s -I%s/tests/emu "
             "-DEMU_SOURCE='\"kernel.cu\"' %s/tests/emu/%s -o %s/emu.so",
             cxx, dir, FMQA_TEST_SOURCE_DIR, FMQA_TEST_SOURCE_DIR, driver, dir);
    cr_assert_eq(system(cmd), 0, "emulator build failed: %s", cmd);
    char so[1100];
    snprintf(so, sizeof so, "%s/emu.so", dir);
    void *h = dlopen(so, RTLD_NOW | RTLD_LOCAL);
    cr_assert_not_null(h, "dlopen: %s", dlerror());
    void *fn = dlsym(h, "emu_launch");
    cr_assert_not_null(fn, "no emu_launch in %s", so);
    return fn;
}
