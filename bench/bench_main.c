/*
 * bench_main.c -- fastmqa-bench: dispatches `fastmqa-bench <command> [options]`
 * to one of the subcommands in the table below (see bench.h for how to add one).
 * Without a command, or with --help, it lists the commands.
 */
#include <stdio.h>
#include <string.h>

#include "bench.h"
#include "rt.h"

static const bench_command commands[] = {
    {"levels", bench_levels_main,
     "optimization levels: memory, accuracy against float64, decode time"},
    {"decode", bench_decode_main, "decode time and GB/s against the measured read bandwidth"},
    {"prefill", bench_prefill_main, "causal prefill time and TFLOP/s (fmqa_prefill)"},
    {"static", bench_static_main,
     "figures without a GPU: registers, occupancy, waves, SASS per KV byte, round trips"},
    {"bw", bench_bw_main, "the read kernel alone, by the same timing method (flush modes)"},
    {"mla", bench_mla_main,
     "MLA decode over FlashMLA's shapes against read bandwidth and the bf16 GEMM rate"},
};

static void usage(FILE *f)
{
    fprintf(f, "usage: fastmqa-bench <command> [options]   (fastmqa-bench <command> --help)\n"
               "commands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].help);
    fprintf(f, "options:\n"
               "  --help     this text\n"
               "  --version  versions of the library, NVRTC, driver and database schema\n");
}

int main(int argc, char **argv)
{
    if (rt_version_option(argc, argv, "fastmqa-bench"))
        return 0;
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(stdout);
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name))
            return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "fastmqa-bench: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
