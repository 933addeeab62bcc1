/*
 * test_bench_cli.c -- fastmqa-bench's options as a process (FMQA_BINARY_DIR/
 * bench/fastmqa-bench), without a GPU and without compiling: help texts, shape
 * selection by id and custom shapes, timing modes, copies and graph sizes, the
 * prefill shape list; bad
 * values exit 2 naming the problem.  Valid options reach the GPU check, which
 * exits 1 on this machine (0 where a GPU runs them is not asked for here).
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "test_support.h"

#define BENCH FMQA_BINARY_DIR "/bench/fastmqa-bench"

static int run(const char *args, char *out, size_t cap)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s %s", BENCH, args);
    return fmqa_test_run(cmd, out, cap);
}

static void expect_usage_error(const char *args, const char *says)
{
    char out[8192];
    cr_expect_eq(run(args, out, sizeof out), 2, "%s: %s", args, out);
    cr_expect(strstr(out, says) != NULL, "%s: expected '%s' in:\n%s", args, says, out);
}

Test(bench_cli, help_lists_commands_and_options)
{
    char out[8192];
    cr_expect_eq(run("--help", out, sizeof out), 0);
    cr_expect(strstr(out, "static") && strstr(out, "bw") && strstr(out, "decode"), "%s", out);
    cr_expect_eq(run("decode --help", out, sizeof out), 0);
    cr_expect(strstr(out, "--flush") && strstr(out, "--copies") && strstr(out, "--shape "),
              "%s", out);
    cr_expect_eq(run("static --help", out, sizeof out), 0);
    cr_expect(strstr(out, "--arch") && strstr(out, "cuobjdump") && strstr(out, "--config"), "%s", out);
    cr_expect_eq(run("bw --help", out, sizeof out), 0);
    cr_expect_eq(run("mla --help", out, sizeof out), 0);
    cr_expect(strstr(out, "FlashMLA") && strstr(out, "--shapes") && strstr(out, "GEMM"), "%s",
              out);
    cr_expect_eq(run("prefill --help", out, sizeof out), 0);
    cr_expect(strstr(out, "TFLOP/s") && strstr(out, "--shapes") && strstr(out, "--list"), "%s",
              out);
}

/* The prefill shapes of issue 13 with their causal flops, without a GPU. */
Test(bench_cli, prefill_list_needs_no_gpu)
{
    char out[8192];
    cr_assert_eq(run("prefill --list", out, sizeof out), 0, "%s", out);
    /* 4 B H T^2 d / 2: 4 x 4 x 32 x 4096^2 x 128 / 2 = 0.550 TFLOP; B = 1, T = 16384: 4x */
    cr_expect(strstr(out, "prefill-b4-t4096-hkv8-d128        0.550 TFLOP"), "%s", out);
    cr_expect(strstr(out, "prefill-b1-t16384-hkv1-d64        1.100 TFLOP"), "%s", out);
    int lines = 0;
    for (const char *c = out; *c; c++)
        lines += *c == '\n';
    cr_expect_eq(lines, 12, "%s", out);
    cr_assert_eq(run("prefill --list --shapes 'prefill-b1-*-d64'", out, sizeof out), 0);
    cr_expect(strstr(out, "prefill-b1-t16384-hkv32-d64") && !strstr(out, "d128"), "%s", out);
}

Test(bench_cli, bad_values_are_usage_errors)
{
    expect_usage_error("decode --flush bogus", "--flush");
    expect_usage_error("decode --flush memset:0", "--flush");
    expect_usage_error("decode --flush a,b,c,d,e,f,g", "--flush");
    expect_usage_error("decode --copies 9", "--copies");
    expect_usage_error("decode --copies 0", "--copies");
    expect_usage_error("decode --graph 0", "--graph");
    expect_usage_error("decode --shapes 'nothing-*'", "matches no shape");
    expect_usage_error("decode --shape 64,4096", "B,T,Hkv,KV");
    expect_usage_error("decode --shape 64,4096,3,f16", "B,T,Hkv,KV");
    expect_usage_error("decode --shape 64,4096,1,f32", "B,T,Hkv,KV");
    expect_usage_error("decode --frobnicate", "unknown option");
    expect_usage_error("static --arch sm_70", "unknown --arch");
    expect_usage_error("static --shapes 'zzz'", "matches no shape");
    expect_usage_error("static --threads 0", "--threads");
    expect_usage_error("static --config BULK", "--config BULK");
    expect_usage_error("static --config", "--config");
    expect_usage_error("bw --bytes 1x", "--bytes");
    expect_usage_error("bw --flush none,nope", "--flush");
    expect_usage_error("mla --shapes 'mqa-*'", "matches no shape");
    expect_usage_error("mla --frobnicate", "unknown option");
    expect_usage_error("mla --config", "missing value");
    expect_usage_error("prefill --shapes 'mqa-*'", "matches no shape");
    expect_usage_error("prefill --db", "missing value");
    expect_usage_error("prefill --frobnicate", "unknown option");
}

Test(bench_cli, valid_options_reach_the_gpu_check)
{
    if (system("nvidia-smi >/dev/null 2>&1") == 0)
        cr_skip_test("a GPU is present: these would run the benchmark");
    char out[8192];
    const char *ok[] = {
        "decode --shapes 'mqa-f16-b64-*,gqa8-*' --flush memset:1,read:1,none:20,auto --copies 4",
        "decode --shape 64,2048,1,int8 --shape 1,1000,8,fp8,64 --graph 10",
        "bw --bytes 134M --flush memset:1,read:1 --copies 2",
        "mla --shapes 'mla-h128-bf16-b64-*,mla-h16-fp8-*-q2' --config WARPS_D=2",
        "prefill --shapes 'prefill-b4-*' --json",
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        cr_expect_eq(run(ok[i], out, sizeof out), 1, "%s: %s", ok[i], out);
        cr_expect(strstr(out, "no GPU") != NULL, "%s: %s", ok[i], out);
    }
}

/* decode, mla and static list their shapes as prefill does, without a GPU:
 * the id and what one launch reads (B x T x Hkv x 2 x d x 2 bytes for f16;
 * 8-bit: d bytes and a float scale per row; MLA: one 576-row, fp8 plus its
 * scale), and --shapes filters the list. */
Test(bench_cli, decode_mla_and_static_list_their_shapes_without_a_gpu)
{
    static char out[16384];
    cr_assert_eq(run("decode --list", out, sizeof out), 0, "%s", out);
    /* 64 x 4096 x 1 x 2 x 128 x 2 = 0.134 GB; int8: 64 x 4096 x (256 + 8) = 0.069 GB */
    cr_expect(strstr(out, "mqa-f16-b64-t4096                   0.134 GB KV\n"), "%s", out);
    cr_expect(strstr(out, "mqa-int8-b64-t4096                  0.069 GB KV\n"), "%s", out);
    cr_assert_eq(run("decode --list --shapes 'gqa8-*'", out, sizeof out), 0, "%s", out);
    cr_expect_str_eq(out, "gqa8-f16-b64-t4096                  1.074 GB KV\n");
    /* 64 x 4096 x 576 x 2 = 0.302 GB; fp8: 64 x 4096 x (576 + 4) = 0.152 GB */
    cr_assert_eq(run("mla --list --shapes 'mla-h16-*-b64-t4096'", out, sizeof out), 0, "%s", out);
    cr_expect_str_eq(out, "mla-h16-bf16-b64-t4096              0.302 GB KV\n"
                          "mla-h16-fp8-b64-t4096               0.152 GB KV\n");
    cr_assert_eq(run("static --list --shapes 'h2048-*,prefill-b4-*'", out, sizeof out), 0,
                 "%s", out);
    cr_expect(strstr(out, "h2048-mqa-f16-b64-t1024") && strstr(out, "h2048-mha-f16-b64-t1024") &&
                  strstr(out, "prefill-b4-t4096-hkv8-d128        0.550 TFLOP"),
              "%s", out);
    cr_expect_eq(run("mla --help", out, sizeof out), 0);
    cr_expect(strstr(out, "--list"), "%s", out);
    cr_expect_eq(run("decode --help", out, sizeof out), 0);
    cr_expect(strstr(out, "--list"), "%s", out);
}
