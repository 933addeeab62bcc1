/*
 * test_gen_sandbox.c -- the generator without NVRTC: the Lua sandbox (escapes
 * removed, memory and instruction caps), field-named errors, configs and their
 * canonical text, legality, launch plans, problem specs, and `fastmqa-gen list`
 * on a directory of broken templates; require of the set's lib/NAME.lua
 * (templates_require: names only, file:line of errors in a library, the same
 * caps).  Fixtures: tests/fixtures/templates_*.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "gen.h"
#include "test_support.h"

#define FIX FMQA_SOURCE_DIR "/tests/fixtures/"

static gen_lib *open_fixture(const char *dir)
{
    gen_lib *lib = NULL;
    fmqa_err err = {0};
    cr_assert_eq(gen_lib_open(dir, &lib, &err), FMQA_OK, "%s", err.msg);
    return lib;
}

static fmqa_problem problem(const char *spec)
{
    fmqa_problem p;
    fmqa_err err = {0};
    cr_assert_eq(gen_problem_parse(spec, &p, &err), FMQA_OK, "%s", err.msg);
    return p;
}

static fmqa_device_info device(const char *arch)
{
    fmqa_device_info d;
    cr_assert_eq(gen_device_preset(arch, &d, NULL), FMQA_OK);
    return d;
}

Test(gen_sandbox, escapes_are_removed)
{
    gen_lib *lib = open_fixture(FIX "templates_sandbox");
    const gen_template *t = gen_lib_find(lib, "probe");
    cr_assert_not_null(t);
    fmqa_problem p = problem("batch=1,flags=causal");
    fmqa_device_info d = device("sm_90");
    gen_config c;
    gen_source s;
    fmqa_err err = {0};
    cr_assert_eq(gen_default(t, &p, &d, &c, &err), FMQA_OK, "%s", err.msg);
    cr_assert_eq(gen_render(t, &c, &p, &d, &s, &err), FMQA_OK, "%s", err.msg);
    static const char *const absent[] = {"LOAD", "LOADFILE", "DOFILE", "COLLECTGARBAGE", "DUMP",
                                         "IO", "OS"};
    char want[64];
    for (size_t i = 0; i < sizeof absent / sizeof absent[0]; i++) {
        snprintf(want, sizeof want, "#define HAS_%s 0\n", absent[i]);
        cr_expect_not_null(strstr(s.text, want), "missing %s", want);
    }
    cr_expect_not_null(strstr(s.text, "#define HAS_MATH 1\n"));
    cr_expect_not_null(strstr(s.text, "#define HAS_REQUIRE 1\n")); /* of lib/ only: gen_require */
    cr_expect_not_null(strstr(s.text, "#define HAS_STRING_REP 1\n"));
    cr_expect_not_null(strstr(s.text, "#define CAUSAL 1\n#define HAS_COLLECTGARBAGE"));
    cr_expect_not_null(strstr(s.text, "#define TILE 32\n#define WARPS 2\n"));
    cr_expect_not_null(strstr(s.text, "#line 1 \"templates_sandbox/probe.cuh\"\n"));
    cr_expect_str_eq(s.arch, "sm_90");
    cr_expect_eq(s.n_entries, 2);
    gen_source_free(&s);
    gen_lib_close(lib);
}

Test(gen_sandbox, instruction_cap_names_file_and_line)
{
    gen_lib *lib = open_fixture(FIX "templates_sandbox");
    const gen_template *t = gen_lib_find(lib, "probe");
    fmqa_problem p = problem("batch=7");
    fmqa_device_info d = device("sm_90");
    gen_config c;
    gen_config_parse("TILE=32,WARPS=2", &c, NULL);
    fmqa_err err = {0};
    cr_assert_eq(gen_check(t, &c, &p, &d, &err), FMQA_ERR_TEMPLATE);
    cr_expect_not_null(
        strstr(err.msg, "valid(): templates_sandbox/probe.lua:22: instruction limit"), "%s",
        err.msg);
    /* the lib stays usable after the runaway call */
    p.batch = 1;
    cr_expect_eq(gen_check(t, &c, &p, &d, &err), FMQA_OK, "%s", err.msg);
    gen_lib_close(lib);
}

Test(gen_sandbox, memory_cap)
{
    gen_lib *lib = open_fixture(FIX "templates_sandbox");
    const gen_template *t = gen_lib_find(lib, "probe");
    fmqa_problem p = problem("batch=9");
    fmqa_device_info d = device("sm_80");
    gen_config c;
    fmqa_err err = {0};
    cr_assert_eq(gen_default(t, &p, &d, &c, &err), FMQA_ERR_TEMPLATE);
    cr_expect_str_eq(err.msg, "default of probe: default(): memory limit (64 MiB) exceeded");
    p.batch = 1;
    cr_expect_eq(gen_default(t, &p, &d, &c, &err), FMQA_OK, "%s", err.msg);
    gen_lib_close(lib);
}

Test(gen_sandbox, lua_error_keeps_location)
{
    gen_lib *lib = open_fixture(FIX "templates_sandbox");
    const gen_template *t = gen_lib_find(lib, "probe");
    fmqa_problem p = problem("batch=3");
    fmqa_device_info d = device("sm_80");
    gen_config c;
    gen_config_parse("TILE=32,WARPS=2", &c, NULL);
    fmqa_err err = {0};
    cr_assert_eq(gen_check(t, &c, &p, &d, &err), FMQA_ERR_TEMPLATE);
    cr_expect_eq(strncmp(err.msg, "valid(): templates_sandbox/probe.lua:24: deliberate failure",
                         strlen("valid(): templates_sandbox/probe.lua:24: deliberate failure")),
                 0, "%s", err.msg);
    gen_lib_close(lib);
}

Test(gen_sandbox, bad_templates_keep_messages)
{
    gen_lib *lib = open_fixture(FIX "templates_bad");
    cr_assert_eq(gen_lib_count(lib), 4);
    const gen_template *bad = gen_lib_at(lib, 0);
    cr_expect_str_eq(gen_template_file(bad), "badtype.lua");
    cr_expect_eq(gen_template_status(bad), FMQA_ERR_TEMPLATE);
    cr_expect_str_eq(gen_template_message(bad),
                     "templates_bad/badtype.lua:6: space.BLOCK_N[2]: expected integer, got string");
    cr_expect_str_eq(gen_template_hash(bad), "");
    const gen_template *loop = gen_lib_at(lib, 1);
    cr_expect_str_eq(gen_template_message(loop),
                     "templates_bad/loop.lua:2: instruction limit (20 million) exceeded\n"
                     "stack traceback:\n\ttemplates_bad/loop.lua:2: in main chunk");
    const gen_template *ok = gen_lib_find(lib, "ok");
    cr_assert_not_null(ok);
    cr_expect_eq(gen_template_op(ok), FMQA_OP_APPEND);
    cr_expect_eq(strlen(gen_template_hash(ok)), 32);
    cr_expect_null(gen_lib_find(lib, "badtype"));
    cr_expect_eq(gen_lib_next(lib, FMQA_OP_APPEND, NULL), ok);
    cr_expect_null(gen_lib_next(lib, FMQA_OP_APPEND, ok));
    cr_expect_null(gen_lib_next(lib, FMQA_OP_DECODE, NULL));
    gen_lib_close(lib);
}

Test(gen_sandbox, missing_directory_is_an_io_error)
{
    gen_lib *lib = (gen_lib *)1;
    fmqa_err err = {0};
    cr_assert_eq(gen_lib_open(FIX "no_such_dir", &lib, &err), FMQA_ERR_IO);
    cr_expect_null(lib);
    cr_expect_not_null(strstr(err.msg, "no_such_dir: No such file or directory"), "%s", err.msg);
}

/* The load message of the template in `file` of the set (it must have failed). */
static const char *load_error(const gen_lib *lib, const char *file)
{
    for (int i = 0; i < gen_lib_count(lib); i++) {
        const gen_template *t = gen_lib_at(lib, i);
        if (strcmp(gen_template_file(t), file) == 0) {
            cr_assert_neq(gen_template_status(t), FMQA_OK, "%s loaded", file);
            return gen_template_message(t);
        }
    }
    cr_assert_fail("no template %s", file);
    return NULL;
}

static void expect_prefix(const char *msg, const char *prefix)
{
    cr_expect(strncmp(msg, prefix, strlen(prefix)) == 0, "\"%s\" does not begin \"%s\"", msg,
              prefix);
}

/* gen_check of the config (text) for the problem (spec) on sm_80: asserts the
 * status and returns the message (static, until the next call). */
static const char *check_message(const gen_template *t, const char *spec, const char *config,
                                 fmqa_status want)
{
    static fmqa_err err;
    fmqa_problem p = problem(spec);
    fmqa_device_info d = device("sm_80");
    gen_config c;
    cr_assert_eq(gen_config_parse(config, &c, NULL), FMQA_OK, "%s", config);
    memset(&err, 0, sizeof err);
    cr_assert_eq(gen_check(t, &c, &p, &d, &err), want, "%s [%s]: %s", spec, config, err.msg);
    return err.msg;
}

Test(gen_require, a_template_uses_libraries_that_use_libraries)
{
    gen_lib *lib = open_fixture(FIX "templates_require");
    const gen_template *t = gen_lib_find(lib, "uses");
    cr_assert_not_null(t, "%s", load_error(lib, "uses.lua"));
    cr_expect_null(gen_lib_find(lib, "util"), "a library is not a template");
    fmqa_problem p = problem("batch=2,heads=8,kv_heads=2,tq=2,kv_len=100");
    fmqa_device_info d = device("sm_80");
    gen_config c;
    gen_source s;
    gen_plan plan;
    fmqa_err err = {0};
    cr_assert_eq(gen_config_parse("TILE=16", &c, NULL), FMQA_OK);
    cr_assert_eq(gen_render(t, &c, &p, &d, &s, &err), FMQA_OK, "%s", err.msg);
    cr_expect_not_null(strstr(s.text, "#define HAS_IO 0\n#define HAS_OS 0\n#define ROWS 8\n"
                                      "#define TILES 2\n"), "%s", s.text);
    gen_source_free(&s);
    cr_assert_eq(gen_launch_plan(t, &c, &p, &d, &plan, &err), FMQA_OK, "%s", err.msg);
    cr_expect_eq(plan.kernels[0].grid[0], 7); /* util.ceil_div(100, 16) through shapes */
    cr_expect_str_eq(check_message(t, "kv_len=40", "TILE=64", FMQA_ERR_UNSUPPORTED),
                     "uses TILE=64: TILE beyond kv_len");
    gen_lib_close(lib);
}

Test(gen_require, names_only_never_a_path)
{
    gen_lib *lib = open_fixture(FIX "templates_require");
    expect_prefix(load_error(lib, "escape.lua"),
                  "templates_require/escape.lua:8: require: '../uses' is not a library name (the "
                  "file is lib/NAME.lua of the template set");
    expect_prefix(load_error(lib, "missing.lua"),
                  "templates_require/missing.lua:2: require: no library 'absent' "
                  "(templates_require/lib/absent.lua) in ");
    gen_lib_close(lib);
}

Test(gen_require, errors_in_a_library_name_its_file_and_line)
{
    gen_lib *lib = open_fixture(FIX "templates_require");
    expect_prefix(load_error(lib, "explodes.lua"),
                  "templates_require/lib/explodes.lua:3: attempt to perform arithmetic");
    const gen_template *t = gen_lib_find(lib, "uses");
    cr_assert_not_null(t);
    expect_prefix(check_message(t, "batch=3", "TILE=16", FMQA_ERR_TEMPLATE),
                  "valid(): templates_require/lib/broken.lua:4: library failure");
    gen_lib_close(lib);
}

Test(gen_require, libraries_meet_the_same_limits)
{
    gen_lib *lib = open_fixture(FIX "templates_require");
    expect_prefix(load_error(lib, "spin.lua"),
                  "templates_require/lib/spin.lua:2: instruction limit (20 million) exceeded");
    const char *msg = load_error(lib, "cycle.lua");
    cr_expect_not_null(strstr(msg, "require: library 'cycle_a' requires itself"), "%s", msg);
    const gen_template *late = gen_lib_find(lib, "late");
    cr_assert_not_null(late, "%s", load_error(lib, "late.lua"));
    expect_prefix(check_message(late, "batch=1", "", FMQA_ERR_TEMPLATE),
                  "valid(): templates_require/late.lua:7: require: only while a template file "
                  "loads");
    gen_lib_close(lib);
}

Test(gen_config, canonical_text_and_hash)
{
    gen_config a, b;
    char ta[GEN_CONFIG_TEXT_CAP], tb[GEN_CONFIG_TEXT_CAP];
    char ha[FMQA_HASH_HEX], hb[FMQA_HASH_HEX];
    cr_assert_eq(gen_config_parse(" WARPS=4 , BLOCK_N=64,STAGES=-2", &a, NULL), FMQA_OK);
    gen_config_init(&b);
    gen_config_set(&b, "STAGES", -2, NULL);
    gen_config_set(&b, "BLOCK_N", 64, NULL);
    gen_config_set(&b, "WARPS", 4, NULL);
    gen_config_text(&a, ta, sizeof ta);
    gen_config_text(&b, tb, sizeof tb);
    cr_expect_str_eq(ta, "BLOCK_N=64,STAGES=-2,WARPS=4");
    cr_expect_str_eq(tb, ta);
    cr_expect(gen_config_equal(&a, &b));
    gen_config_hash(&a, ha);
    gen_config_hash(&b, hb);
    cr_expect_str_eq(ha, hb);
    char direct[FMQA_HASH_HEX];
    fmqa_hash_hex(ta, strlen(ta), direct);
    cr_expect_str_eq(ha, direct);
    gen_config_set(&b, "WARPS", 8, NULL);
    gen_config_hash(&b, hb);
    cr_expect_str_neq(ha, hb);
    int64_t v = 0;
    cr_expect(gen_config_get(&b, "WARPS", &v) && v == 8);
    gen_config empty;
    cr_assert_eq(gen_config_parse("", &empty, NULL), FMQA_OK);
    cr_expect_eq(empty.n, 0);
}

Test(gen_config, parse_errors_quote_the_token)
{
    gen_config c;
    fmqa_err err = {0};
    cr_expect_eq(gen_config_parse("A=1,B", &c, &err), FMQA_ERR_INVALID_ARGUMENT);
    cr_expect_str_eq(err.msg, "config: 'B': expected NAME=VALUE");
    cr_expect_eq(gen_config_parse("A=1,A=2", &c, &err), FMQA_ERR_INVALID_ARGUMENT);
    cr_expect_str_eq(err.msg, "config: 'A=2': A given twice");
    cr_expect_eq(gen_config_parse("A=x1", &c, &err), FMQA_ERR_INVALID_ARGUMENT);
    cr_expect_str_eq(err.msg, "config: 'A=x1': 'x1' is not an integer");
    cr_expect_eq(gen_config_parse("9A=1", &c, &err), FMQA_ERR_INVALID_ARGUMENT);
    cr_expect_str_eq(err.msg, "config: '9A=1': '9A' is not a parameter name");
    cr_expect_eq(gen_config_parse("A=1,", &c, &err), FMQA_ERR_INVALID_ARGUMENT);
}

Test(gen_variant, space_check_and_plan)
{
    gen_lib *lib = open_fixture(FIX "templates_sandbox");
    const gen_template *t = gen_lib_find(lib, "probe");
    fmqa_problem p = problem("batch=4,heads=8,kv_heads=2");
    fmqa_device_info d = device("sm_80");
    gen_config *list = NULL;
    size_t n = 0;
    fmqa_err err = {0};
    /* TILE >= 16*WARPS: (16,1) (32,1) (32,2) (64,1) (64,2) (64,4); TILE*1024 <= 166912 */
    cr_assert_eq(gen_space(t, &p, &d, &list, &n, &err), FMQA_OK, "%s", err.msg);
    cr_assert_eq(n, 6);
    char text[GEN_CONFIG_TEXT_CAP];
    gen_config_text(&list[0], text, sizeof text);
    cr_expect_str_eq(text, "TILE=16,WARPS=1");
    gen_config_text(&list[5], text, sizeof text);
    cr_expect_str_eq(text, "TILE=64,WARPS=4");
    free(list);

    gen_config c;
    gen_config_parse("TILE=16,WARPS=4", &c, NULL);
    cr_expect_eq(gen_check(t, &c, &p, &d, &err), FMQA_ERR_UNSUPPORTED);
    cr_expect_str_eq(err.msg, "probe TILE=16,WARPS=4: TILE must be at least 16*WARPS");
    gen_config_parse("TILE=32,WARPS=2,COLOR=1", &c, NULL);
    cr_expect_eq(gen_check(t, &c, &p, &d, &err), FMQA_ERR_INVALID_ARGUMENT);
    cr_expect_str_eq(err.msg, "config: COLOR: template probe has no parameter COLOR (its "
                                "parameters: TILE, WARPS)");
    gen_config_parse("TILE=48,WARPS=2", &c, NULL);
    cr_expect_eq(gen_check(t, &c, &p, &d, &err), FMQA_ERR_INVALID_ARGUMENT);
    cr_expect_str_eq(err.msg, "config: TILE=48 is not in the space of template probe (TILE: "
                                "16, 32, 64)");
    gen_config_parse("TILE=32", &c, NULL);
    cr_expect_eq(gen_check(t, &c, &p, &d, &err), FMQA_ERR_INVALID_ARGUMENT);
    cr_expect_str_eq(err.msg, "config: WARPS is missing (WARPS: 1, 2, 4)");

    gen_plan plan;
    gen_config_parse("TILE=64,WARPS=4", &c, NULL);
    cr_assert_eq(gen_launch_plan(t, &c, &p, &d, &plan, &err), FMQA_OK, "%s", err.msg);
    cr_expect_eq(plan.n_kernels, 2);
    cr_expect_str_eq(plan.kernels[0].entry, "probe_main");
    cr_expect_eq(plan.kernels[0].grid[0], 4);
    cr_expect_eq(plan.kernels[0].grid[1], 2);
    cr_expect_eq(plan.kernels[0].grid[2], 1);
    cr_expect_eq(plan.kernels[0].block[0], 128);
    cr_expect_eq(plan.kernels[0].shared, 512);
    cr_expect_str_eq(plan.kernels[1].entry, "probe_tail");
    cr_expect_eq(plan.workspace, 1024);
    cr_expect_eq(plan.splits, 2);
    int64_t st = 0;
    cr_expect(gen_plan_scalar(&plan, "split_tokens", &st) && st == 256);

    p.batch = 5;
    cr_expect_eq(gen_launch_plan(t, &c, &p, &d, &plan, &err), FMQA_ERR_TEMPLATE);
    cr_expect_str_eq(err.msg, "templates_sandbox/probe.lua:29: launch().kernels[1].grid[2]: "
                              "expected integer, got string");
    gen_lib_close(lib);
}

Test(gen_problem, parse_and_format_round_trip)
{
    fmqa_problem p = problem("op=decode,batch=8,heads=32,kv_heads=1,d=128,dv=128,tq=1,"
                             "kv_len=4096,q=f16,kv=int8,out=bf16,page=16,window=0,sinks=0,"
                             "flags=causal|paged");
    cr_expect_eq(p.op, FMQA_OP_DECODE);
    cr_expect_eq(p.batch, 8);
    cr_expect_eq(p.num_q_heads, 32);
    cr_expect_eq(p.kv_dtype, FMQA_DTYPE_INT8);
    cr_expect_eq(p.out_dtype, FMQA_DTYPE_BF16);
    cr_expect_eq(p.page_size, 16);
    cr_expect_eq(p.flags, FMQA_FLAG_CAUSAL | FMQA_FLAG_PAGED);
    char buf[GEN_PROBLEM_TEXT_CAP];
    cr_assert_eq(gen_problem_format(&p, buf, sizeof buf), 0);
    cr_expect_str_eq(buf, "op=decode,batch=8,heads=32,kv_heads=1,d=128,dv=128,tq=1,kv_len=4096,"
                          "q=f16,kv=int8,out=bf16,page=16,window=0,sinks=0,rope=none,"
                          "flags=causal|paged");
    fmqa_problem q = problem(buf);
    cr_expect_eq(memcmp(&p, &q, sizeof p), 0);
    /* Soft-capping and draft slots print only when set, and read back exactly. */
    p = problem("op=decode,kv_len=300,window=64,softcap=0.1,draft_slots=3,flags=causal|ring");
    cr_assert_eq(gen_problem_format(&p, buf, sizeof buf), 0);
    cr_expect(strstr(buf, ",softcap=0.100000001,draft_slots=3"), "%s", buf);
    q = problem(buf);
    cr_expect_eq(memcmp(&p, &q, sizeof p), 0);
    fmqa_err err = {0};
    cr_expect_eq(gen_problem_parse("softcap=-2", &q, &err), FMQA_ERR_INVALID_ARGUMENT);
    cr_expect_str_eq(err.msg, "problem: 'softcap=-2': expected a finite number >= 0");
    fmqa_problem dflt = problem("d=64");
    cr_expect_eq(dflt.head_dim_v, 64);
    cr_expect_eq(dflt.kv_len, 1024);
}

Test(gen_problem, errors_name_the_token)
{
    fmqa_problem p;
    fmqa_err err = {0};
    cr_expect_eq(gen_problem_parse("batch=8,heads=0", &p, &err), FMQA_ERR_INVALID_ARGUMENT);
    cr_expect_str_eq(err.msg, "problem: 'heads=0': expected an integer >= 1");
    cr_expect_eq(gen_problem_parse("kv=f64", &p, &err), FMQA_ERR_INVALID_ARGUMENT);
    cr_expect_str_eq(err.msg, "problem: 'kv=f64': expected f16, bf16, f32, int8 or fp8_e4m3");
    cr_expect_eq(gen_problem_parse("flags=causal|sideways", &p, &err), FMQA_ERR_INVALID_ARGUMENT);
    cr_expect_not_null(strstr(err.msg, "'flags=causal|sideways'"));
    cr_expect_eq(gen_problem_parse("color=red", &p, &err), FMQA_ERR_INVALID_ARGUMENT);
    cr_expect_str_eq(err.msg, "problem: 'color=red': unknown key 'color'");
    cr_expect_eq(gen_problem_parse("batch", &p, &err), FMQA_ERR_INVALID_ARGUMENT);
    cr_expect_str_eq(err.msg, "problem: 'batch': expected key=value");
    fmqa_device_info d;
    cr_expect_eq(gen_device_preset("sm_90", &d, NULL), FMQA_OK);
    cr_expect_eq(d.sm_count, 132);
    cr_expect_eq(d.smem_per_block_optin, 232448);
    cr_expect_eq(gen_device_preset("sm_80", &d, NULL), FMQA_OK);
    cr_expect_eq(d.sm_count, 108);
    cr_expect_eq(d.smem_per_block_optin, 166912);
    cr_expect_eq(gen_device_preset("sm_42", &d, &err), FMQA_ERR_INVALID_ARGUMENT);
}

Test(gen_tool, list_reports_broken_templates)
{
    char cmd[1024], out[8192] = "";
    snprintf(cmd, sizeof cmd, "%s/generator/fastmqa-gen list --templates %s", FMQA_BINARY_DIR,
             FIX "templates_bad");
    cr_expect_eq(fmqa_test_run(cmd, out, sizeof out), 1, "%s", out);
    cr_expect_not_null(strstr(out, "badtype.lua: error: templates_bad/badtype.lua:6: "), "%s", out);
    cr_expect_not_null(strstr(out, "loop.lua: error: templates_bad/loop.lua:2: instruction limit"),
                       "%s", out);
    cr_expect_not_null(strstr(out, "syntax.lua: error: templates_bad/syntax.lua:3: "), "%s", out);
    cr_expect_not_null(strstr(out, "\nok "), "%s", out);
}
