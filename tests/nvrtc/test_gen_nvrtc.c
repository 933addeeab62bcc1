/*
 * test_gen_nvrtc.c -- the generator with NVRTC (no GPU needed): compile errors
 * point at the template file and line, ptxas resource usage is parsed, the
 * compiler pool compiles variants concurrently and serves repeats from its
 * caches (memory and hook), and every shipped template's default variant
 * compiles for sm_80 and sm_90.
 */
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "gen.h"

#define FIX FMQA_SOURCE_DIR "/tests/fixtures/"

typedef struct fixture {
    gen_lib *lib;
    const gen_template *t;
    fmqa_problem p;
    fmqa_device_info d;
} fixture;

static void setup(fixture *f, const char *dir, const char *name, const char *spec, const char *arch)
{
    fmqa_err err = {0};
    cr_assert_eq(gen_lib_open(dir, &f->lib, &err), FMQA_OK, "%s", err.msg);
    f->t = gen_lib_find(f->lib, name);
    cr_assert_not_null(f->t, "template %s not loaded from %s", name, dir);
    cr_assert_eq(gen_problem_parse(spec, &f->p, &err), FMQA_OK, "%s", err.msg);
    cr_assert_eq(gen_device_preset(arch, &f->d, &err), FMQA_OK, "%s", err.msg);
}

static void render(const fixture *f, const char *config, gen_source *s)
{
    gen_config c;
    fmqa_err err = {0};
    if (config)
        cr_assert_eq(gen_config_parse(config, &c, &err), FMQA_OK, "%s", err.msg);
    else
        cr_assert_eq(gen_default(f->t, &f->p, &f->d, &c, &err), FMQA_OK, "%s", err.msg);
    cr_assert_eq(gen_render(f->t, &c, &f->p, &f->d, s, &err), FMQA_OK, "%s", err.msg);
}

Test(gen_nvrtc, syntax_error_points_at_template_line)
{
    fixture f;
    setup(&f, FIX "templates_cudaerr", "cudaerr", "batch=1", "sm_80");
    gen_source s;
    gen_binary b;
    fmqa_err err = {0};
    render(&f, NULL, &s);
    cr_assert_eq(gen_compile(&s, &b, &err), FMQA_ERR_COMPILE);
    cr_expect_not_null(strstr(err.msg, "templates_cudaerr/cudaerr.cuh(4): error: expected an expression"),
                       "%s", err.msg);
    cr_expect_not_null(b.log);
    cr_expect_null(b.cubin);
    gen_binary_free(&b);
    gen_source_free(&s);
    gen_lib_close(f.lib);
}

Test(gen_nvrtc, resource_usage_is_parsed)
{
    fixture f;
    setup(&f, FIX "templates_sandbox", "probe", "batch=2,d=64", "sm_80");
    gen_source s;
    gen_binary b;
    fmqa_err err = {0};
    render(&f, "TILE=64,WARPS=2", &s);
    cr_assert_eq(gen_compile(&s, &b, &err), FMQA_OK, "%s", err.msg);
    cr_expect_gt(b.size, 1000);
    cr_expect_eq(memcmp(b.cubin, "\x7f" "ELF", 4), 0, "a cubin is an ELF file");
    cr_expect_str_eq(b.key, s.key);
    cr_assert_eq(b.n_resources, 2, "%s", b.log);
    int main_i = strcmp(b.resources[0].entry, "probe_main") == 0 ? 0 : 1;
    cr_expect_str_eq(b.resources[main_i].entry, "probe_main");
    cr_expect_str_eq(b.resources[1 - main_i].entry, "probe_tail");
    cr_expect_gt(b.resources[main_i].registers, 0);
    cr_expect_eq(b.resources[main_i].smem_bytes, 64 * 4, "__shared__ float tile[TILE]");
    cr_expect_eq(b.resources[main_i].spill_stores, 0);
    cr_expect_gt(b.compile_ms, 0.0);
    gen_binary_free(&b);
    gen_source_free(&s);
    gen_lib_close(f.lib);
}

Test(gen_nvrtc, parse_resources_from_a_known_log)
{
    const char *log = "ptxas info    : 0 bytes gmem\n"
                      "ptxas info    : Compiling entry function 'k1' for 'sm_90'\n"
                      "ptxas info    : Function properties for k1\n"
                      "ptxas         .     24 bytes stack frame, 8 bytes spill stores, 12 bytes spill loads\n"
                      "ptxas info    : Used 168 registers, used 1 barriers, 2048 bytes smem, 400 bytes cmem[0]\n"
                      "ptxas info    : Compiling entry function 'k2' for 'sm_90'\n"
                      "ptxas info    : Function properties for k2\n"
                      "ptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n"
                      "ptxas info    : Used 32 registers, used 0 barriers, 360 bytes cmem[0]\n";
    gen_resource r[4];
    cr_assert_eq(gen_parse_resources(log, r, 4), 2);
    cr_expect_str_eq(r[0].entry, "k1");
    cr_expect_eq(r[0].registers, 168);
    cr_expect_eq(r[0].stack_bytes, 24);
    cr_expect_eq(r[0].spill_stores, 8);
    cr_expect_eq(r[0].spill_loads, 12);
    cr_expect_eq(r[0].smem_bytes, 2048);
    cr_expect_str_eq(r[1].entry, "k2");
    cr_expect_eq(r[1].registers, 32);
    cr_expect_eq(r[1].smem_bytes, 0);
}

typedef struct store {
    int gets, puts, n;
    gen_binary saved[8];
} store;

static int store_get(void *user, const char *key, gen_binary *out)
{
    store *st = user;
    __atomic_add_fetch(&st->gets, 1, __ATOMIC_SEQ_CST);
    for (int i = 0; i < st->n; i++)
        if (strcmp(st->saved[i].key, key) == 0)
            return gen_binary_copy(&st->saved[i], out) == FMQA_OK;
    return 0;
}

static void store_put(void *user, const gen_binary *bin)
{
    store *st = user;
    __atomic_add_fetch(&st->puts, 1, __ATOMIC_SEQ_CST);
}

static int done_calls;
static void on_done(void *user, gen_job *job, fmqa_status status, const gen_binary *bin,
                    const fmqa_err *err)
{
    __atomic_add_fetch(&done_calls, 1, __ATOMIC_SEQ_CST);
}

Test(gen_nvrtc, pool_compiles_and_caches)
{
    fixture f;
    setup(&f, FIX "templates_sandbox", "probe", "batch=2", "sm_80");
    static const char *const configs[] = {"TILE=16,WARPS=1", "TILE=32,WARPS=1", "TILE=32,WARPS=2",
                                          "TILE=64,WARPS=4"};
    enum { N = 4 };
    store st = {0};
    gen_cache_hook hook = {&st, store_get, store_put};
    gen_compiler *comp;
    fmqa_err err = {0};
    cr_assert_eq(gen_compiler_create(2, &hook, &comp, &err), FMQA_OK);
    gen_job *jobs[N];
    for (int i = 0; i < N; i++) {
        gen_source s;
        render(&f, configs[i], &s);
        cr_assert_eq(gen_compiler_submit(comp, &s, on_done, NULL, &jobs[i], &err), FMQA_OK);
        cr_expect_null(s.text, "ownership moved to the job");
    }
    gen_compiler_wait_all(comp);
    cr_expect_eq(done_calls, N);
    for (int i = 0; i < N; i++) {
        const gen_binary *b;
        cr_assert(gen_job_done(jobs[i]));
        cr_assert_eq(gen_job_wait(jobs[i], &b, &err), FMQA_OK, "%s", err.msg);
        cr_expect_eq(b->cached, 0);
        cr_expect_str_eq(b->key, gen_job_key(jobs[i]));
        cr_assert_lt(st.n, 8);
        gen_binary_copy(b, &st.saved[st.n++]);
    }
    cr_expect_eq(st.puts, N);
    cr_expect_eq(st.gets, N);
    /* the same source again: the memory cache answers with the same cubin */
    gen_source s;
    gen_binary again;
    render(&f, configs[2], &s);
    cr_assert_eq(gen_compiler_compile(comp, &s, &again, &err), FMQA_OK, "%s", err.msg);
    cr_expect_eq(again.cached, 1);
    cr_expect_eq(again.size, st.saved[2].size);
    cr_expect_eq(memcmp(again.cubin, st.saved[2].cubin, again.size), 0);
    cr_expect_eq(st.gets, N, "a memory hit does not reach the hook");
    uint64_t hits, misses;
    gen_compiler_stats(comp, &hits, &misses);
    cr_expect_eq(hits, 1);
    cr_expect_eq(misses, N);
    gen_binary_free(&again);
    for (int i = 0; i < N; i++)
        gen_job_release(jobs[i]);
    gen_compiler_destroy(comp);

    /* a fresh compiler finds it through the hook (the persistent cache) */
    cr_assert_eq(gen_compiler_create(1, &hook, &comp, &err), FMQA_OK);
    cr_assert_eq(gen_compiler_compile(comp, &s, &again, &err), FMQA_OK, "%s", err.msg);
    cr_expect_eq(again.cached, 1);
    cr_expect_eq(memcmp(again.cubin, st.saved[2].cubin, again.size), 0);
    gen_compiler_stats(comp, &hits, &misses);
    cr_expect_eq(misses, 0);
    gen_binary_free(&again);
    gen_compiler_destroy(comp);
    gen_source_free(&s);
    for (int i = 0; i < st.n; i++)
        gen_binary_free(&st.saved[i]);
    gen_lib_close(f.lib);
}

/* The shipped templates: the default variant compiles for the arch. */
static void compile_default(const char *name, const char *spec, const char *arch)
{
    fixture f;
    setup(&f, FMQA_SOURCE_DIR "/templates", name, spec, arch);
    gen_source s;
    gen_binary b;
    fmqa_err err = {0};
    render(&f, NULL, &s);
    cr_expect_str_eq(s.arch, arch);
    fmqa_status st = gen_compile(&s, &b, &err);
    cr_assert_eq(st, FMQA_OK, "%s", err.msg);
    cr_expect_gt(b.size, 0);
    cr_expect_eq(b.n_resources, s.n_entries, "every entry reported by ptxas");
    for (int i = 0; i < b.n_resources; i++)
        cr_expect_gt(b.resources[i].registers, 0, "%s", b.resources[i].entry);
    gen_binary_free(&b);
    gen_source_free(&s);
    gen_lib_close(f.lib);
}

#define DECODE "op=decode,batch=4,heads=32,kv_heads=1,d=128,dv=128,tq=1,kv_len=4096,flags=causal"
#define APPEND "op=append,batch=4,heads=32,kv_heads=8,d=128,dv=128,tq=1,kv_len=4096,rope=neox"

Test(gen_shipped, decode_default_sm80) { compile_default("decode", DECODE, "sm_80"); }
Test(gen_shipped, decode_default_sm90) { compile_default("decode", DECODE, "sm_90"); }
Test(gen_shipped, append_default_sm80) { compile_default("append", APPEND, "sm_80"); }
Test(gen_shipped, append_default_sm90) { compile_default("append", APPEND, "sm_90"); }

Test(gen_shipped, every_template_loads_and_embedded_matches_tree)
{
    gen_lib *dir, *emb;
    fmqa_err err = {0};
    cr_assert_eq(gen_lib_open(FMQA_SOURCE_DIR "/templates", &dir, &err), FMQA_OK, "%s", err.msg);
    cr_assert_eq(gen_lib_open(NULL, &emb, &err), FMQA_OK, "%s", err.msg);
    cr_expect_str_eq(gen_lib_origin(emb), "embedded");
    cr_assert_eq(gen_lib_count(dir), gen_lib_count(emb));
    for (int i = 0; i < gen_lib_count(dir); i++) {
        const gen_template *a = gen_lib_at(dir, i), *b = gen_lib_at(emb, i);
        cr_expect_eq(gen_template_status(a), FMQA_OK, "%s", gen_template_message(a));
        cr_expect_str_eq(gen_template_hash(a), gen_template_hash(b), "%s", gen_template_name(a));
    }
    gen_lib_close(dir);
    gen_lib_close(emb);
}
