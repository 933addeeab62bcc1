/*
 * test_ref_convert.c -- the reference number formats: known bit patterns of
 * f16, bf16 and OCP fp8 e4m3 (rounding ties to even, subnormals, saturation,
 * NaN), exhaustive decode/encode round trips, int8 rounding, and the
 * per-token-per-head quantization with its error bound.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "ref.h"
#include "test_support.h"

Test(ref_convert, fp8_e4m3_known_encodings)
{
    const struct { double x; uint8_t bits; } table[] = {
        {0.0, 0x00}, {-0.0, 0x80},
        {0x1p-9, 0x01},            /* smallest subnormal: m = 1, 2^(1-7-3)      */
        {7 * 0x1p-9, 0x07},        /* largest subnormal                          */
        {0x1p-6, 0x08},            /* smallest normal: exponent field 1          */
        {1.0, 0x38}, {-1.0, 0xB8}, {0.5, 0x30}, {1.125, 0x39}, {256.0, 0x78},
        {448.0, 0x7E}, {-448.0, 0xFE},   /* largest finite: 1.75 * 2^8          */
        {1.0625, 0x38},            /* tie between 1 (m=0) and 1.125 (m=1): even  */
        {1.1875, 0x3A},            /* tie between 1.125 (m=1) and 1.25 (m=2)     */
        {0x1p-10, 0x00},           /* tie between 0 and 2^-9: even is 0          */
        {3 * 0x1p-10, 0x02},       /* tie between 2^-9 and 2^-8: even is m = 2   */
        {464.0, 0x7E},             /* tie between 448 and (absent) 480: 448      */
        {500.0, 0x7E}, {1e9, 0x7E}, {-1e9, 0xFE}, /* saturation                 */
        {INFINITY, 0x7E}, {-INFINITY, 0xFE},
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
        cr_expect_eq(ref_fp8_from_double(table[i].x), table[i].bits, "fp8(%a) = 0x%02X, want 0x%02X",
                     table[i].x, ref_fp8_from_double(table[i].x), table[i].bits);
    cr_expect_eq(ref_fp8_from_double(NAN), 0x7F);
    cr_expect_eq(ref_fp8_from_double(-NAN), 0xFF);
    cr_expect(isnan(ref_fp8_to_double(0x7F)) && isnan(ref_fp8_to_double(0xFF)));
    cr_expect_eq(ref_fp8_to_double(0x7E), 448.0);
    cr_expect_eq(ref_fp8_to_double(0x01), 0x1p-9);
}

Test(ref_convert, fp8_exhaustive_round_trip)
{
    /* Every non-NaN code decodes to a value that encodes back to the same code,
     * and decoding is monotonic over the positive codes. */
    for (int b = 0; b < 256; b++) {
        if ((b & 0x7F) == 0x7F)
            continue;
        double v = ref_fp8_to_double((uint8_t)b);
        cr_assert_eq(ref_fp8_from_double(v), b, "code 0x%02X -> %a", b, v);
        if (b > 0 && b < 0x7F)
            cr_assert_gt(v, ref_fp8_to_double((uint8_t)(b - 1)));
    }
}

Test(ref_convert, f16_known_encodings)
{
    const struct { double x; uint16_t bits; } table[] = {
        {1.0, 0x3C00}, {-2.0, 0xC000}, {0.1, 0x2E66}, {1.0 / 3.0, 0x3555},
        {65504.0, 0x7BFF},          /* largest finite                           */
        {65519.0, 0x7BFF},          /* below the halfway point to 2^16          */
        {65520.0, 0x7C00},          /* halfway, ties to even = 2^16: overflow   */
        {0x1p-24, 0x0001},          /* smallest subnormal                       */
        {0x1p-25, 0x0000},          /* tie between 0 and 2^-24: even            */
        {3 * 0x1p-25, 0x0002},      /* tie between 1 and 2 quanta: even         */
        {0x1p-14, 0x0400},          /* smallest normal                          */
        {1.0 + 0x1p-11, 0x3C00},    /* tie, even mantissa 0                     */
        {1.0 + 3 * 0x1p-11, 0x3C02},/* tie, even mantissa 2                     */
        {INFINITY, 0x7C00}, {-INFINITY, 0xFC00}, {-0.0, 0x8000},
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
        cr_expect_eq(ref_f16_from_double(table[i].x), table[i].bits, "f16(%a) = 0x%04X, want 0x%04X",
                     table[i].x, ref_f16_from_double(table[i].x), table[i].bits);
    cr_expect_eq(ref_f16_from_double(NAN), 0x7E00);
    cr_expect(isnan(ref_f16_to_double(0x7C01)));
    cr_expect_eq(ref_f16_to_double(0xFC00), -INFINITY);
}

Test(ref_convert, f16_bf16_exhaustive_round_trip)
{
    for (uint32_t b = 0; b < 65536; b++) {
        double h = ref_f16_to_double((uint16_t)b), bf = ref_bf16_to_double((uint16_t)b);
        if (!isnan(h))
            cr_assert_eq(ref_f16_from_double(h), b, "f16 0x%04X -> %a", b, h);
        if (!isnan(bf))
            cr_assert_eq(ref_bf16_from_double(bf), b, "bf16 0x%04X -> %a", b, bf);
    }
}

Test(ref_convert, bf16_known_and_against_bit_rounding)
{
    cr_expect_eq(ref_bf16_from_double(1.0), 0x3F80);
    cr_expect_eq(ref_bf16_from_double(-2.0), 0xC000);
    cr_expect_eq(ref_bf16_from_double(3.14159265358979), 0x4049);   /* 3.140625 */
    cr_expect_eq(ref_bf16_from_double(1.0 + 0x1p-8), 0x3F80);       /* tie: even */
    cr_expect_eq(ref_bf16_from_double(1.0 + 3 * 0x1p-8), 0x3F82);
    cr_expect_eq(ref_bf16_from_double(0x1p-133), 0x0001);           /* subnormal */
    cr_expect_eq(ref_bf16_from_double(0x1.FEp127), 0x7F7F);         /* max finite */
    cr_expect_eq(ref_bf16_from_double(3.4028234663852886e38), 0x7F80); /* FLT_MAX -> inf */
    cr_expect_eq(ref_bf16_from_double(NAN), 0x7FC0);
    /* For finite floats, RNE to bf16 is the classic integer trick on the bits. */
    ref_rng r;
    ref_rng_seed(&r, fmqa_test_seed("ref_convert.bf16_bits"));
    for (int i = 0; i < 100000; i++) {
        uint32_t u = (uint32_t)ref_rng_next(&r);
        float f;
        memcpy(&f, &u, 4);
        if (!isfinite(f))
            continue;
        uint16_t want = (uint16_t)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
        cr_assert_eq(ref_bf16_from_double(f), want, "bits 0x%08X", u);
    }
}

Test(ref_convert, int8_rounding_and_clamp)
{
    cr_expect_eq(ref_int8_from_double(2.5), 2);    /* ties to even */
    cr_expect_eq(ref_int8_from_double(3.5), 4);
    cr_expect_eq(ref_int8_from_double(-2.5), -2);
    cr_expect_eq(ref_int8_from_double(-2.6), -3);
    cr_expect_eq(ref_int8_from_double(200.0), 127);
    cr_expect_eq(ref_int8_from_double(-200.0), -127); /* symmetric: never -128 */
    cr_expect_eq(ref_int8_from_double(NAN), 0);
}

Test(ref_convert, quantize_hand_rows)
{
    /* max|x| = 127 -> int8 scale exactly 1; -63.5 is a tie -> -64 (even). */
    const double x[4] = {127.0, -63.5, 1.0, 0.0};
    int8_t q[4];
    float s = -1;
    cr_assert_eq(ref_quantize_row(FMQA_DTYPE_INT8, x, 4, q, &s, NULL), FMQA_OK);
    cr_expect_eq(s, 1.0f);
    cr_expect(q[0] == 127 && q[1] == -64 && q[2] == 1 && q[3] == 0);
    /* max|x| = 448 -> fp8 scale 1; -1 = 0xB8, 2^-4 = exponent field 3 = 0x18. */
    const double y[4] = {448.0, -1.0, 0.0625, 0.0};
    uint8_t f[4];
    cr_assert_eq(ref_quantize_row(FMQA_DTYPE_FP8_E4M3, y, 4, f, &s, NULL), FMQA_OK);
    cr_expect_eq(s, 1.0f);
    cr_expect(f[0] == 0x7E && f[1] == 0xB8 && f[2] == 0x18 && f[3] == 0x00);
    cr_expect_eq(ref_dequantize(FMQA_DTYPE_FP8_E4M3, f, 1, s), -1.0);
    /* A zero row: scale 0, stored zeros, exact zero dequantization. */
    const double z[3] = {0.0, -0.0, 0.0};
    cr_assert_eq(ref_quantize_row(FMQA_DTYPE_INT8, z, 3, q, &s, NULL), FMQA_OK);
    cr_expect(s == 0.0f && q[0] == 0 && q[1] == 0 && q[2] == 0);
    cr_expect_eq(ref_dequantize(FMQA_DTYPE_INT8, q, 1, s), 0.0);
}

Test(ref_convert, quantize_round_trip_bounds)
{
    ref_rng r;
    ref_rng_seed(&r, fmqa_test_seed("ref_convert.quantize_round_trip"));
    enum { D = 128 };
    double x[D];
    uint8_t st[D];
    float s;
    for (int row = 0; row < 200; row++) {
        ref_rng_fill(&r, x, D, 0.1 + 10 * ref_rng_uniform(&r), 0);
        cr_assert_eq(ref_quantize_row(FMQA_DTYPE_INT8, x, D, st, &s, NULL), FMQA_OK);
        for (int i = 0; i < D; i++) {
            double e = fabs(x[i] - ref_dequantize(FMQA_DTYPE_INT8, st, i, s));
            cr_assert_leq(e, s / 2 * (1 + 1e-12), "int8 error %g > scale/2 = %g", e, s / 2.0);
        }
        cr_assert_eq(ref_quantize_row(FMQA_DTYPE_FP8_E4M3, x, D, st, &s, NULL), FMQA_OK);
        for (int i = 0; i < D; i++) {
            /* 3 mantissa bits: relative half-ulp 2^-4, or half a subnormal step. */
            double e = fabs(x[i] - ref_dequantize(FMQA_DTYPE_FP8_E4M3, st, i, s));
            cr_assert_leq(e, fmax(fabs(x[i]) * 0x1p-4, s * 0x1p-10) * (1 + 1e-12));
        }
    }
}

Test(ref_convert, errors_name_the_problem)
{
    fmqa_err err = {0};
    double x[2] = {1.0, NAN};
    int8_t q[2];
    float s;
    cr_expect_eq(ref_quantize_row(FMQA_DTYPE_INT8, x, 2, q, &s, &err), FMQA_ERR_INVALID_ARGUMENT);
    cr_expect(strstr(err.msg, "x[1] is not finite"), "%s", err.msg);
    cr_expect_eq(ref_quantize_row(FMQA_DTYPE_F16, x, 1, q, &s, &err), FMQA_ERR_INVALID_ARGUMENT);
    cr_expect(strstr(err.msg, "not int8 or fp8_e4m3"), "%s", err.msg);
    cr_expect_eq(ref_to_double((fmqa_dtype)99, x, 1, x, &err), FMQA_ERR_INVALID_ARGUMENT);
    cr_expect(strstr(err.msg, "unknown dtype 99"), "%s", err.msg);
}

Test(ref_convert, bulk_and_round_to)
{
    const double x[3] = {1.0, 0.1, -65520.0};
    uint16_t h[3];
    double back[3];
    cr_assert_eq(ref_from_double(FMQA_DTYPE_F16, x, 3, h, NULL), FMQA_OK);
    cr_expect(h[0] == 0x3C00 && h[1] == 0x2E66 && h[2] == 0xFC00);
    cr_assert_eq(ref_to_double(FMQA_DTYPE_F16, h, 3, back, NULL), FMQA_OK);
    cr_expect_eq(back[1], ref_round_to(FMQA_DTYPE_F16, 0.1));
    cr_expect_eq(back[2], -INFINITY);
    cr_expect_eq(ref_round_to(FMQA_DTYPE_F32, 0.1), (double)0.1f);
    cr_expect_eq(ref_round_to((fmqa_dtype)0, 0.1), 0.1);
}

/* Rows too small for a normal float scale (docs/reference.md, "Number
 * formats"): the scale is subnormal or 0, so "error <= scale / 2" alone is
 * false, and the documented bound scale / 2 + 127 * 2^-150 holds; a finite
 * row whose scale would exceed FLT_MAX is rejected, naming the scale. */
Test(ref_convert, quantize_tiny_and_huge_rows)
{
    int exceeded = 0;
    for (int e = -155; e <= -120; e++)
        for (int m = 0; m < 16; m++) {
            double x[4] = {ldexp(1.0 + m / 16.0, e) * 127.0, ldexp(0.37 + m / 32.0, e),
                           -ldexp(0.9, e + 3), ldexp(m / 17.0, e + 5)};
            int8_t q[4];
            float s;
            cr_assert_eq(ref_quantize_row(FMQA_DTYPE_INT8, x, 4, q, &s, NULL), FMQA_OK);
            for (int i = 0; i < 4; i++) {
                double err = fabs(x[i] - ref_dequantize(FMQA_DTYPE_INT8, q, i, s));
                cr_assert(err <= (double)s / 2 + 127 * 0x1p-150, "2^%d row, x[%d] = %g: error "
                          "%g, scale %g", e, i, x[i], err, (double)s);
                exceeded |= err > (double)s / 2;
            }
        }
    cr_expect(exceeded, "no subnormal-scale row exceeded scale / 2: the test lost its point");
    const double huge[2] = {1.0, 127.0 * 0x1.fffffep127 * 1.5};
    int8_t q[2];
    float s;
    fmqa_err err = {0};
    cr_expect_eq(ref_quantize_row(FMQA_DTYPE_INT8, huge, 2, q, &s, &err), FMQA_ERR_INVALID_ARGUMENT);
    cr_expect(strstr(err.msg, "beyond float"), "%s", err.msg);
    const double fits[1] = {3.4e38};   /* the largest float input quantizes */
    cr_expect_eq(ref_quantize_row(FMQA_DTYPE_FP8_E4M3, fits, 1, q, &s, NULL), FMQA_OK);
}
