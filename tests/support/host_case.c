/*
 * host_case.c -- host-built tuner cases for tests (host_case.h).
 */
#include "host_case.h"

#include <string.h>

#include <criterion/criterion.h>

tun_case *fmqa_test_host_case(const fmqa_problem *p, uint64_t seed, const tun_case_opts *o,
                              int threads)
{
    tun_case *c = NULL;
    fmqa_err err;
    fmqa_err_clear(&err);
    cr_assert_eq(tun_case_create_host(p, seed, o, threads, &c, &err), FMQA_OK, "%s", err.msg);
    return c;
}

int fmqa_test_same_images(const tun_case *a, const tun_case *b, int *images)
{
    int n = 0;
    if (!images)
        images = &n;
    *images = 0;
    for (int i = 0; i < TUN_HOST_N; i++) {
        size_t na, nb;
        const void *x = tun_case_host_image(a, (tun_host_image)i, &na);
        const void *y = tun_case_host_image(b, (tun_host_image)i, &nb);
        if (na != nb || !x != !y || (x && memcmp(x, y, na)))
            return 0;
        *images += x != NULL;
    }
    return 1;
}
