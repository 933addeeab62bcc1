/*
 * gpu_main.c -- the main of every gpu-labelled test.  Without a usable CUDA
 * driver and GPU it prints why and exits 77, which ctest reports as skipped, so
 * a machine without a GPU never counts these tests as passed.
 */
#include <stdio.h>

#include <criterion/criterion.h>

#include "test_support.h"

int main(int argc, char **argv)
{
    char why[512];
    if (!fmqa_test_gpu_available(why, sizeof why)) {
        printf("SKIPPED: no GPU: %s\n", why);
        return 77;
    }
    struct criterion_test_set *tests = criterion_initialize();
    int result = 0;
    if (criterion_handle_args(argc, argv, true))
        result = !criterion_run_all_tests(tests);
    criterion_finalize(tests);
    return result;
}
