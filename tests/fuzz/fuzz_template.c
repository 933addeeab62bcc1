/*
 * fuzz_template.c -- template loading from Lua source: the input is written as
 * the Lua file of a template set (beside a one-line CUDA source it may name,
 * and the shipped CUDA sources, headers and libraries of templates/, so that
 * the shipped templates among the seeds load and run) and loaded; a template that loads has its default
 * config checked, planned and rendered.  Whatever the source does, every call
 * returns (the sandbox's caps), a failure carries a message, and the set stays
 * usable.
 */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fuzz.h"
#include "gen.h"

static char dir[64];

static void write_file(const char *name, const void *data, size_t size)
{
    char path[128];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, size, f) != size)
        abort();
    fclose(f);
}

/* Copies the files of FMQA_TEMPLATE_DIR/sub (sub "" or "lib/") whose names
 * end in ext into dir/sub. */
static void copy_shipped(const char *sub, const char *ext)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", FMQA_TEMPLATE_DIR, sub);
    DIR *d = opendir(path);
    if (!d)
        abort();
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        size_t len = strlen(e->d_name), el = strlen(ext);
        if (e->d_name[0] == '.' || len <= el || strcmp(e->d_name + len - el, ext) != 0)
            continue;
        static char text[1 << 20];
        snprintf(path, sizeof path, "%s/%s%s", FMQA_TEMPLATE_DIR, sub, e->d_name);
        FILE *f = fopen(path, "rb");
        size_t n = f ? fread(text, 1, sizeof text, f) : 0;
        if (!f || n == sizeof text)
            abort();
        fclose(f);
        snprintf(path, sizeof path, "%s%s", sub, e->d_name);
        write_file(path, text, n);
    }
    closedir(d);
}

/* Runs the template's functions on one problem and device. */
static void exercise(const gen_template *t)
{
    fmqa_problem p;
    fmqa_device_info d;
    gen_config c;
    gen_plan plan;
    gen_source s;
    fmqa_err err = {0};
    FUZZ_ASSERT(gen_problem_parse("op=decode,batch=2,heads=8,kv_heads=2,d=64", &p, NULL) == FMQA_OK);
    FUZZ_ASSERT(gen_device_preset("sm_90", &d, NULL) == FMQA_OK);
    if (gen_default(t, &p, &d, &c, &err) != FMQA_OK) {
        FUZZ_ASSERT(err.msg[0] != '\0');
        return;
    }
    if (gen_launch_plan(t, &c, &p, &d, &plan, &err) != FMQA_OK)
        FUZZ_ASSERT(err.msg[0] != '\0');
    if (gen_render(t, &c, &p, &d, &s, &err) == FMQA_OK)
        gen_source_free(&s);
    else
        FUZZ_ASSERT(err.msg[0] != '\0');
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!dir[0]) {
        snprintf(dir, sizeof dir, "/tmp/fmqa_fuzz_template_%d", (int)getpid());
        mkdir(dir, 0700);
        static const char cuh[] = "extern \"C\" __global__ void fuzz_kernel() {}\n";
        write_file("fuzz.cuh", cuh, sizeof cuh - 1);
        char lib[96];
        snprintf(lib, sizeof lib, "%s/lib", dir);
        mkdir(lib, 0700);
        copy_shipped("", ".cuh");
        copy_shipped("", ".h");
        copy_shipped("lib/", ".lua");
    }
    if (size > (1 << 16))
        return 0;
    write_file("fuzz.lua", data, size);
    gen_lib *lib = NULL;
    fmqa_err err = {0};
    FUZZ_ASSERT(gen_lib_open(dir, &lib, &err) == FMQA_OK);
    for (int i = 0; i < gen_lib_count(lib); i++) {
        const gen_template *t = gen_lib_at(lib, i);
        if (gen_template_status(t) == FMQA_OK)
            exercise(t);
        else
            FUZZ_ASSERT(gen_template_message(t)[0] != '\0');
    }
    gen_lib_close(lib);
    return 0;
}
