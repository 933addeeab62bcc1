/*
 * ref_convert.c -- exact number formats of the reference: f16, bf16, fp8 e4m3
 * and int8 encodings, bulk conversion of a dtype's storage to and from double,
 * and per-token-per-head 8-bit quantization.
 *
 * All three floating formats go through one description (struct fmt) and one
 * encoder: the magnitude is rounded once, to nearest with ties to even, on the
 * grid of the format (quantum 2^(E - mbits) with E clamped to emin so that
 * subnormals come out right), and only then compared with the largest finite
 * value.  Every step is exact in double: the formats have at most 11
 * significant bits, and scaling by powers of two loses nothing here.  Those
 * powers of two and exponents are read and built from the double's bits
 * (pow2, exponent_of) rather than with ldexp / frexp, which cost most of the
 * time of building large test inputs; every exponent involved lies well
 * inside double's normal range.
 */
#include "ref.h"

#include <float.h>
#include <math.h>
#include <string.h>

typedef struct fmt {
    int mbits;        /* stored mantissa bits                          */
    int ebits;        /* exponent bits                                 */
    int bias;
    double max;       /* largest finite magnitude                      */
    int saturate;     /* overflow (and inf) gives max, not inf         */
    uint32_t nan;     /* positive NaN bit pattern                      */
} fmt;

static const fmt F16 = {10, 5, 15, 65504.0, 0, 0x7E00u};
static const fmt BF16 = {7, 8, 127, 0x1.FEp127, 0, 0x7FC0u};
/* OCP e4m3: exponent field 15 holds normal numbers too; only S.1111.111 is NaN. */
static const fmt E4M3 = {3, 4, 7, 448.0, 1, 0x7Fu};

static int fmt_emin(const fmt *f)
{
    return 1 - f->bias;
}

/* 2^n for -1022 <= n <= 1023: a double whose only nonzero field is the
 * biased exponent.  The callers below stay within -1020 <= n <= 1020. */
static double pow2(int n)
{
    uint64_t bits = (uint64_t)(n + 1023) << 52;
    double d;
    memcpy(&d, &bits, sizeof d);
    return d;
}

/* floor(log2(a)) for a normal double a > 0 (frexp's exponent minus one).  A
 * subnormal double gives -1023, below every format's emin, which is where the
 * callers clamp it anyway. */
static int exponent_of(double a)
{
    uint64_t bits;
    memcpy(&bits, &a, sizeof bits);
    return (int)((bits >> 52) & 0x7FFu) - 1023;
}

/* |x| (finite) rounded to nearest even on the format's grid (no overflow
 * handling). */
static double round_mag(const fmt *f, double a)
{
    int E = exponent_of(a) < fmt_emin(f) ? fmt_emin(f) : exponent_of(a);
    return rint(a * pow2(f->mbits - E)) * pow2(E - f->mbits);
}

static uint32_t encode(const fmt *f, double x)
{
    /* Signs are taken without a branch: random data mispredicts it half the time. */
    uint32_t sign = (uint32_t)(signbit(x) != 0) << (f->ebits + f->mbits);
    if (isnan(x))
        return sign | f->nan;
    double a = isinf(x) ? INFINITY : round_mag(f, fabs(x));
    if (a > f->max) {
        if (f->saturate)
            a = f->max;
        else
            return sign | (((1u << f->ebits) - 1u) << f->mbits);
    }
    if (a == 0.0)
        return sign;
    int E = exponent_of(a);
    if (E < fmt_emin(f))   /* subnormal: exponent field 0, a = m * 2^(emin - mbits) */
        return sign | (uint32_t)(a * pow2(f->mbits - fmt_emin(f)));
    uint32_t mant = (uint32_t)(a * pow2(f->mbits - E) - pow2(f->mbits));
    return sign | ((uint32_t)(E + f->bias) << f->mbits) | mant;
}

static double decode(const fmt *f, uint32_t bits)
{
    uint32_t mmask = (1u << f->mbits) - 1u, emask = (1u << f->ebits) - 1u;
    uint32_t mant = bits & mmask, efield = (bits >> f->mbits) & emask;
    double sign = 1.0 - 2.0 * (double)((bits >> (f->ebits + f->mbits)) & 1u);   /* as in encode */
    if (efield == emask && f->saturate && mant == mmask)
        return NAN;
    if (efield == emask && !f->saturate)
        return mant ? NAN : sign * INFINITY;
    if (efield == 0)
        return sign * (double)mant * pow2(fmt_emin(f) - f->mbits);
    return sign * (double)(mant | (1u << f->mbits)) * pow2((int)efield - f->bias - f->mbits);
}

uint16_t ref_f16_from_double(double x) { return (uint16_t)encode(&F16, x); }
double ref_f16_to_double(uint16_t bits) { return decode(&F16, bits); }
uint16_t ref_bf16_from_double(double x) { return (uint16_t)encode(&BF16, x); }
double ref_bf16_to_double(uint16_t bits) { return decode(&BF16, bits); }
uint8_t ref_fp8_from_double(double x) { return (uint8_t)encode(&E4M3, x); }
double ref_fp8_to_double(uint8_t bits) { return decode(&E4M3, bits); }

int8_t ref_int8_from_double(double x)
{
    if (isnan(x))
        return 0;
    double r = rint(x);   /* default rounding mode: nearest, ties to even */
    return (int8_t)(r > 127.0 ? 127.0 : r < -127.0 ? -127.0 : r);
}

double ref_round_to(fmqa_dtype dtype, double x)
{
    switch (dtype) {
    case FMQA_DTYPE_F16: return ref_f16_to_double(ref_f16_from_double(x));
    case FMQA_DTYPE_BF16: return ref_bf16_to_double(ref_bf16_from_double(x));
    case FMQA_DTYPE_F32: return (double)(float)x;
    case FMQA_DTYPE_INT8: return (double)ref_int8_from_double(x);
    case FMQA_DTYPE_FP8_E4M3: return ref_fp8_to_double(ref_fp8_from_double(x));
    }
    return x;
}

static fmqa_status check_bulk(fmqa_dtype dtype, const void *a, const void *b, int64_t n,
                              const char *fn, fmqa_err *err)
{
    if (fmqa_dtype_size(dtype) == 0)
        return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT, "%s: unknown dtype %d", fn, (int)dtype);
    if (n < 0)
        return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT, "%s: n = %lld < 0", fn, (long long)n);
    if (n > 0 && (!a || !b))
        return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT, "%s: NULL array", fn);
    return FMQA_OK;
}

fmqa_status ref_to_double(fmqa_dtype dtype, const void *src, int64_t n, double *dst, fmqa_err *err)
{
    fmqa_status st = check_bulk(dtype, src, dst, n, "ref_to_double", err);
    if (st != FMQA_OK)
        return st;
    for (int64_t i = 0; i < n; i++) {
        switch (dtype) {
        case FMQA_DTYPE_F16: dst[i] = ref_f16_to_double(((const uint16_t *)src)[i]); break;
        case FMQA_DTYPE_BF16: dst[i] = ref_bf16_to_double(((const uint16_t *)src)[i]); break;
        case FMQA_DTYPE_F32: dst[i] = ((const float *)src)[i]; break;
        case FMQA_DTYPE_INT8: dst[i] = ((const int8_t *)src)[i]; break;
        case FMQA_DTYPE_FP8_E4M3: dst[i] = ref_fp8_to_double(((const uint8_t *)src)[i]); break;
        }
    }
    return FMQA_OK;
}

fmqa_status ref_from_double(fmqa_dtype dtype, const double *src, int64_t n, void *dst, fmqa_err *err)
{
    fmqa_status st = check_bulk(dtype, src, dst, n, "ref_from_double", err);
    if (st != FMQA_OK)
        return st;
    for (int64_t i = 0; i < n; i++) {
        switch (dtype) {
        case FMQA_DTYPE_F16: ((uint16_t *)dst)[i] = ref_f16_from_double(src[i]); break;
        case FMQA_DTYPE_BF16: ((uint16_t *)dst)[i] = ref_bf16_from_double(src[i]); break;
        case FMQA_DTYPE_F32: ((float *)dst)[i] = (float)src[i]; break;
        case FMQA_DTYPE_INT8: ((int8_t *)dst)[i] = ref_int8_from_double(src[i]); break;
        case FMQA_DTYPE_FP8_E4M3: ((uint8_t *)dst)[i] = ref_fp8_from_double(src[i]); break;
        }
    }
    return FMQA_OK;
}

/* ---------------------------------------------------------------- quantization */

fmqa_status ref_quant_scale(fmqa_dtype dtype, const double *x, int64_t d, float *scale,
                            fmqa_err *err)
{
    double qmax = dtype == FMQA_DTYPE_INT8 ? 127.0 : dtype == FMQA_DTYPE_FP8_E4M3 ? 448.0 : 0.0;
    if (qmax == 0.0)
        return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT,
                            "ref_quantize_row: dtype %d is not int8 or fp8_e4m3", (int)dtype);
    if (d <= 0 || !x)
        return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT,
                            "ref_quantize_row: empty row (d = %lld)", (long long)d);
    double amax = 0.0;
    for (int64_t i = 0; i < d; i++) {
        if (!isfinite(x[i]))
            return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT,
                                "ref_quantize_row: x[%lld] is not finite", (long long)i);
        amax = fmax(amax, fabs(x[i]));
    }
    if (amax / qmax > FLT_MAX)
        return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT,
                            "ref_quantize_row: max|x| = %g gives a scale beyond float", amax);
    *scale = (float)(amax / qmax);
    return FMQA_OK;
}

fmqa_status ref_quantize_row(fmqa_dtype dtype, const double *x, int64_t d, void *stored,
                             float *scale, fmqa_err *err)
{
    float s;
    fmqa_status st = ref_quant_scale(dtype, x, d, &s, err);
    if (st != FMQA_OK)
        return st;
    if (!stored || !scale)
        return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT, "ref_quantize_row: NULL output");
    /* s == 0 (zero row, or one so small its scale underflows float): store zeros. */
    for (int64_t i = 0; i < d; i++) {
        double y = s == 0.0f ? 0.0 : x[i] / (double)s;
        if (dtype == FMQA_DTYPE_INT8)
            ((int8_t *)stored)[i] = ref_int8_from_double(y);
        else
            ((uint8_t *)stored)[i] = ref_fp8_from_double(y);
    }
    *scale = s;
    return FMQA_OK;
}

fmqa_status ref_quantize_row_fixed(fmqa_dtype dtype, const double *x, int64_t d, float scale,
                                   void *stored, fmqa_err *err)
{
    if (dtype != FMQA_DTYPE_INT8 && dtype != FMQA_DTYPE_FP8_E4M3)
        return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT,
                            "ref_quantize_row_fixed: dtype %d is not int8 or fp8_e4m3", (int)dtype);
    if (!(scale > 0.0f) || !isfinite(scale))
        return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT,
                            "ref_quantize_row_fixed: scale %g is not finite and > 0", (double)scale);
    if (d <= 0 || !x)
        return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT,
                            "ref_quantize_row_fixed: empty row (d = %lld)", (long long)d);
    for (int64_t i = 0; i < d; i++) {
        if (!isfinite(x[i]))
            return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT,
                                "ref_quantize_row_fixed: x[%lld] is not finite", (long long)i);
        const double y = x[i] / (double)scale; /* saturation in the encoders */
        if (!stored)
            continue;
        if (dtype == FMQA_DTYPE_INT8)
            ((int8_t *)stored)[i] = ref_int8_from_double(y);
        else
            ((uint8_t *)stored)[i] = ref_fp8_from_double(y);
    }
    return FMQA_OK;
}

double ref_dequantize(fmqa_dtype dtype, const void *stored, int64_t i, float scale)
{
    double v = dtype == FMQA_DTYPE_INT8 ? (double)((const int8_t *)stored)[i]
                                        : ref_fp8_to_double(((const uint8_t *)stored)[i]);
    return (double)scale * v;
}
