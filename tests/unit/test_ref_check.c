/*
 * test_ref_check.c -- the judging helpers: relative L2 / max abs by hand, NaN
 * and unmatched infinities never passing, matched -inf (empty query lse)
 * passing, poison counting, and the RNG (known splitmix64 value, determinism,
 * moments, exactly representable fills).
 */
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "ref.h"
#include "test_support.h"

Test(ref_check, compare_by_hand)
{
    /* out {1, 2} vs ref {1, 2.5}: max abs 0.5, rel L2 0.5 / sqrt(1 + 6.25). */
    const float out[2] = {1.0f, 2.0f};
    const double ref[2] = {1.0, 2.5};
    ref_cmp c;
    cr_assert_eq(ref_compare(FMQA_DTYPE_F32, out, ref, 2, &c, NULL), FMQA_OK);
    cr_expect_float_eq(c.max_abs, 0.5, 1e-15);
    cr_expect_float_eq(c.rel_l2, 0.5 / sqrt(7.25), 1e-15);
    cr_expect(c.worst == 1 && c.bad == 0 && c.n == 2);
    cr_expect(ref_cmp_ok(&c, 0.2, -1) && !ref_cmp_ok(&c, 0.1, -1) && !ref_cmp_ok(&c, 1, 0.4));
    /* f16 output as bit patterns: 0x3C00 = 1, 0x4000 = 2. */
    const uint16_t h[2] = {0x3C00, 0x4000};
    const double exact[2] = {1.0, 2.0};
    cr_assert_eq(ref_compare(FMQA_DTYPE_F16, h, exact, 2, &c, NULL), FMQA_OK);
    cr_expect(c.rel_l2 == 0.0 && c.max_abs == 0.0);
}

Test(ref_check, nan_never_passes_matched_infinity_does)
{
    const float out[3] = {1.0f, NAN, -INFINITY};
    const double ref[3] = {1.0, 2.0, -INFINITY};
    ref_cmp c;
    cr_assert_eq(ref_compare(FMQA_DTYPE_F32, out, ref, 3, &c, NULL), FMQA_OK);
    cr_expect(c.bad == 1 && c.worst == 1 && isinf(c.rel_l2) && isinf(c.max_abs));
    cr_expect(!ref_cmp_ok(&c, INFINITY, -1), "NaN must fail even with an infinite tolerance");
    const float ok[3] = {1.0f, 2.0f, -INFINITY};
    cr_assert_eq(ref_compare(FMQA_DTYPE_F32, ok, ref, 3, &c, NULL), FMQA_OK);
    cr_expect(c.bad == 0 && c.rel_l2 == 0.0 && ref_cmp_ok(&c, 0, 0));
    const float inf_vs_finite[1] = {INFINITY};
    cr_assert_eq(ref_compare(FMQA_DTYPE_F32, inf_vs_finite, ref, 1, &c, NULL), FMQA_OK);
    cr_expect(c.bad == 1 && !ref_cmp_ok(&c, 1e9, -1));
    /* A zero reference with a nonzero output has infinite relative error. */
    const float one[1] = {1.0f};
    const double zero[1] = {0.0};
    cr_assert_eq(ref_compare(FMQA_DTYPE_F32, one, zero, 1, &c, NULL), FMQA_OK);
    cr_expect(c.bad == 0 && isinf(c.rel_l2) && c.max_abs == 1.0);
}

Test(ref_check, poison_is_counted_and_fails_compare)
{
    uint16_t o[10];
    ref_poison_fill(o, 2, 10, REF_POISON_16);
    cr_expect_eq(ref_poison_count(o, 2, 10, REF_POISON_16), 10);
    o[0] = o[4] = o[9] = 0x3C00;
    cr_expect_eq(ref_poison_count(o, 2, 10, REF_POISON_16), 7);
    cr_expect(isnan(ref_f16_to_double(REF_POISON_16)) && isnan(ref_bf16_to_double(REF_POISON_16)));
    double ref[10];
    for (int i = 0; i < 10; i++)
        ref[i] = 1.0;
    ref_cmp c;
    cr_assert_eq(ref_compare(FMQA_DTYPE_F16, o, ref, 10, &c, NULL), FMQA_OK);
    cr_expect_eq(c.bad, 7, "each unwritten element counts as bad");
    float f[3];
    ref_poison_fill(f, 4, 3, REF_POISON_32);
    cr_expect(isnan(f[2]) && ref_poison_count(f, 4, 3, REF_POISON_32) == 3);
}

Test(ref_check, rng_known_deterministic_and_normal)
{
    ref_rng a, b;
    ref_rng_seed(&a, 0);
    cr_expect_eq(a.s[0], 0xE220A8397B1DCDAFull, "splitmix64(0) first output");
    ref_rng_seed(&b, 0);
    for (int i = 0; i < 100; i++)
        cr_assert_eq(ref_rng_next(&a), ref_rng_next(&b));
    ref_rng_seed(&a, 12345);
    double sum = 0, sum2 = 0, umin = 1, umax = 0;
    enum { N = 200000 };
    for (int i = 0; i < N; i++) {
        double g = ref_rng_gauss(&a), u = ref_rng_uniform(&a);
        sum += g, sum2 += g * g;
        umin = fmin(umin, u), umax = fmax(umax, u);
    }
    cr_expect_lt(fabs(sum / N), 0.01, "mean %g", sum / N);
    cr_expect_lt(fabs(sum2 / N - 1), 0.02, "variance %g", sum2 / N);
    cr_expect(umin >= 0 && umax < 1 && umin < 1e-4 && umax > 1 - 1e-4);
    double x[64];
    ref_rng_seed(&a, fmqa_test_seed("ref_check.fill"));
    ref_rng_fill(&a, x, 64, 3.0, FMQA_DTYPE_BF16);
    for (int i = 0; i < 64; i++)
        cr_assert_eq(ref_bf16_to_double(ref_bf16_from_double(x[i])), x[i]);
}
