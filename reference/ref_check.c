/*
 * ref_check.c -- what the GPU tests, the tuner and the bench use to judge a
 * kernel against the reference: the error measures (relative L2 and max abs,
 * where NaN never passes), poison fill and count (did the kernel write every
 * element?), and a small deterministic RNG (xoshiro256** seeded by splitmix64)
 * so that a failing seed can be replayed exactly on any platform.
 */
#include "ref.h"

#include <math.h>
#include <string.h>
#include <time.h>

/* |out - ref| for one pair, or NaN when the pair is bad (NaN, or infinities
 * that do not match).  Equal infinities differ by 0. */
static double pair_diff(double out, double ref)
{
    if (isnan(out) || isnan(ref))
        return NAN;
    if (isinf(out) || isinf(ref))
        return out == ref ? 0.0 : NAN;
    return fabs(out - ref);
}

fmqa_status ref_compare(fmqa_dtype dtype, const void *out, const double *ref, int64_t n,
                        ref_cmp *res, fmqa_err *err)
{
    if (dtype != FMQA_DTYPE_F32 && dtype != FMQA_DTYPE_F16 && dtype != FMQA_DTYPE_BF16)
        return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT,
                            "ref_compare: output dtype %d is not f32, f16 or bf16", (int)dtype);
    if (!res || n < 0 || (n > 0 && (!out || !ref)))
        return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT, "ref_compare: NULL array or n < 0");
    ref_cmp r = {0.0, 0.0, n > 0 ? 0 : -1, 0, n};
    double diff2 = 0.0, ref2 = 0.0, worst = -1.0;
    size_t esize = fmqa_dtype_size(dtype);
    for (int64_t i = 0; i < n; i++) {
        double o, d;
        ref_to_double(dtype, (const char *)out + (size_t)i * esize, 1, &o, NULL);
        d = pair_diff(o, ref[i]);
        if (isnan(d)) {
            if (!r.bad++)
                r.worst = i;
            continue;
        }
        if (isfinite(ref[i])) {
            diff2 += d * d;
            ref2 += ref[i] * ref[i];
        }
        if (!r.bad && d > worst) {
            worst = d;
            r.worst = i;
        }
    }
    r.max_abs = r.bad ? INFINITY : fmax(worst, 0.0);
    r.rel_l2 = r.bad ? INFINITY : ref2 > 0.0 ? sqrt(diff2 / ref2) : diff2 > 0.0 ? INFINITY : 0.0;
    *res = r;
    return FMQA_OK;
}

int ref_cmp_ok(const ref_cmp *res, double rel_tol, double abs_tol)
{
    return res->bad == 0 && res->rel_l2 <= rel_tol && (abs_tol < 0.0 || res->max_abs <= abs_tol);
}

void ref_poison_fill(void *data, size_t elem_size, int64_t n, uint64_t pattern)
{
    /* The pattern's low elem_size bytes in host order: copy from a host integer. */
    for (int64_t i = 0; i < n; i++) {
        char *p = (char *)data + (size_t)i * elem_size;
        switch (elem_size) {
        case 1: { uint8_t x = (uint8_t)pattern; memcpy(p, &x, 1); break; }
        case 2: { uint16_t x = (uint16_t)pattern; memcpy(p, &x, 2); break; }
        case 4: { uint32_t x = (uint32_t)pattern; memcpy(p, &x, 4); break; }
        case 8: memcpy(p, &pattern, 8); break;
        }
    }
}

int64_t ref_poison_count(const void *data, size_t elem_size, int64_t n, uint64_t pattern)
{
    char probe[8];
    ref_poison_fill(probe, elem_size <= 8 ? elem_size : 0, 1, pattern);
    int64_t count = 0;
    for (int64_t i = 0; elem_size <= 8 && i < n; i++)
        count += memcmp((const char *)data + (size_t)i * elem_size, probe, elem_size) == 0;
    return count;
}

/* ---------------------------------------------------------------- RNG */

#define PI 3.14159265358979323846

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

void ref_rng_seed(ref_rng *r, uint64_t seed)
{
    for (int i = 0; i < 4; i++)
        r->s[i] = splitmix64(&seed);   /* never all zero: splitmix64 is a bijection */
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

uint64_t ref_rng_next(ref_rng *r)
{
    uint64_t *s = r->s, out = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return out;
}

double ref_rng_uniform(ref_rng *r)
{
    return (double)(ref_rng_next(r) >> 11) * 0x1.0p-53;
}

double ref_rng_gauss(ref_rng *r)
{
    double u1 = 1.0 - ref_rng_uniform(r), u2 = ref_rng_uniform(r);   /* u1 in (0, 1] */
    return sqrt(-2.0 * log(u1)) * cos(2.0 * PI * u2);
}

void ref_rng_fill(ref_rng *r, double *x, int64_t n, double stddev, fmqa_dtype dtype)
{
    for (int64_t i = 0; i < n; i++)
        x[i] = ref_round_to(dtype, stddev * ref_rng_gauss(r));
}

uint64_t ref_seed_from_time(void)
{
    struct timespec ts;
    timespec_get(&ts, TIME_UTC);
    uint64_t x = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
    return splitmix64(&x);
}
