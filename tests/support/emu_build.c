/*
 * emu_build.c -- builds kernel code for the CPU emulator (tests/emu/cuda_emu.h)
 * and loads it: the shared first half of the *_emu tests.  A rendered template
 * (or, for the conversion tests, the template directory itself) goes to a
 * fresh directory, the host C++ compiler builds it with a driver from
 * tests/emu into a shared object for the emulated architecture, and a symbol
 * of it is returned.  Also the guarded host buffers those tests hand to the
 * emulated kernels and the page tables they build (shuffled, unmapped where
 * nothing is read, as CSR).
 */
#define _POSIX_C_SOURCE 200809L
#define _DEFAULT_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

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

const char *fmqa_test_template_dir(void)
{
    const char *env = getenv("FASTMQA_TEMPLATE_DIR");
    return env && env[0] ? env : FMQA_TEST_SOURCE_DIR "/templates";
}

/* Compiles tests/emu/<driver> with -I include_dir (which holds what the
 * driver includes) for arch ("sm_90a": __CUDA_ARCH__ = 900 and the sm_90a
 * feature macro NVRTC defines, __CUDA_ARCH_FEAT_SM90_ALL) into dir/emu.so and
 * returns its dlopen handle. */
static void *compile_and_load(const char *driver, const char *include_dir, const char *arch,
                              const char *dir)
{
    int num = 0;
    char suffix = 0;
    cr_assert_geq(sscanf(arch, "sm_%d%c", &num, &suffix), 1, "bad architecture %s", arch);
    const char *cxx = getenv("CXX") ? getenv("CXX") : "c++";
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "command -v %s >/dev/null", cxx);
    if (system(cmd) != 0)
        cr_skip_test("no C++ compiler (%s) to build the emulator", cxx);
    /* -I include_dir first (the rendered fmqa_params.h, the templates); then
     * tests/emu, whose cuda_emu.h stands for the GPU.  Warnings are errors,
     * but for CUDA's #pragma unroll and append.cuh's division by ROPE_DIM in
     * a branch dead when it is 0. */
    snprintf(cmd, sizeof cmd,
             "%s -std=c++17 -O1 -fno-strict-aliasing -shared -fPIC -Wall -Wextra -Werror "
             "-Wno-unknown-pragmas -Wno-div-by-zero -Wno-psabi -D__CUDA_ARCH__=%d %s -I%s "
             "-I%s/tests/emu -DEMU_SOURCE='\"kernel.cu\"' %s/tests/emu/%s -o %s/emu.so",
             cxx, num * 10, suffix == 'a' ? "-D__CUDA_ARCH_FEAT_SM90_ALL" : "", include_dir,
             FMQA_TEST_SOURCE_DIR, FMQA_TEST_SOURCE_DIR, driver, dir);
    cr_assert_eq(system(cmd), 0, "emulator build failed: %s", cmd);
    char so[1100];
    snprintf(so, sizeof so, "%s/emu.so", dir);
    void *h = dlopen(so, RTLD_NOW | RTLD_LOCAL);
    cr_assert_not_null(h, "dlopen: %s", dlerror());
    return h;
}

void *fmqa_test_emu_symbol(void *handle, const char *sym)
{
    void *fn = dlsym(handle, sym);
    cr_assert_not_null(fn, "no %s in the emulator build", sym);
    return fn;
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
    void *h = compile_and_load(driver, dir, d->arch, dir);
    return fmqa_test_emu_symbol(h, "emu_launch");
}

void *fmqa_test_emu_build_plain(const char *driver, const char *arch, char *dir)
{
    cr_assert_not_null(mkdtemp(dir), "mkdtemp");
    return compile_and_load(driver, fmqa_test_template_dir(), arch, dir);
}

void *fmqa_test_guarded(size_t bytes, size_t align, uint8_t fill)
{
    const size_t page = (size_t)sysconf(_SC_PAGESIZE);
    const size_t span = (bytes + align - 1) / align * align, body = (span + page - 1) / page * page;
    unsigned char *m = mmap(NULL, body + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    cr_assert_neq(m, MAP_FAILED, "mmap of %zu bytes", body + page);
    cr_assert_eq(mprotect(m + body, page, PROT_NONE), 0, "mprotect");
    unsigned char *p = m + body - span;
    memset(p, fill, span);
    return p;
}

void fmqa_test_fill_random(ref_rng *r, fmqa_dtype t, void *dst, int64_t n)
{
    fmqa_err err;
    double *x = malloc(n * sizeof *x);
    cr_assert_not_null(x);
    ref_rng_fill(r, x, n, 1.0, t);
    cr_assert_eq(ref_from_double(t, x, n, dst, &err), FMQA_OK, "%s", err.msg);
    free(x);
}

void fmqa_test_shuffle_pages(int32_t *table, int64_t n, ref_rng *r)
{
    for (int64_t i = 0; i < n; i++)
        table[i] = (int32_t)i;
    for (int64_t i = n - 1; i > 0; i--) { /* Fisher-Yates */
        int64_t j = ref_rng_next(r) % (i + 1);
        int32_t t = table[i];
        table[i] = table[j], table[j] = t;
    }
}

void fmqa_test_unmap_unread(int32_t *table, int64_t per_seq, int64_t ps, const ref_attn_shape *s,
                            const ref_cache_view *view)
{
    unsigned char *mapped = calloc((size_t)(s->batch * per_seq), 1);
    cr_assert_not_null(mapped);
    for (int64_t b = 0; b < s->batch; b++)
        for (int64_t j = 0; j < s->kv_lens[b]; j++)
            if (ref_readable(s, b, j))
                mapped[b * per_seq + ref_cache_slot(view, j) / ps] = 1;
    for (int64_t i = 0; i < s->batch * per_seq; i++)
        if (!mapped[i])
            table[i] = -1;
    free(mapped);
}

fmqa_test_csr fmqa_test_csr_of(int64_t batch, int64_t ps, const int32_t *lens,
                               const int32_t *table, int64_t per_seq)
{
    const int64_t base = 2;
    int64_t total = base;
    for (int64_t b = 0; b < batch; b++)
        total += (lens[b] + ps - 1) / ps;
    int32_t *indptr = fmqa_test_guarded((size_t)(batch + 1) * sizeof *indptr, 4, 0xff);
    int32_t *last = fmqa_test_guarded((size_t)batch * sizeof *last, 4, 0xff);
    int32_t *indices = fmqa_test_guarded((size_t)total * sizeof *indices, 4, 0xff);
    indptr[0] = (int32_t)base;
    for (int64_t b = 0; b < batch; b++) {
        const int64_t n = (lens[b] + ps - 1) / ps;
        memcpy(indices + indptr[b], table + b * per_seq, (size_t)n * sizeof *indices);
        indptr[b + 1] = indptr[b] + (int32_t)n;
        last[b] = (int32_t)(lens[b] - (n - 1) * ps);
    }
    return (fmqa_test_csr){indptr, indices, last};
}
