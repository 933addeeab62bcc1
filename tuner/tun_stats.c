/*
 * tun_stats.c -- summary statistics of timing samples.  Percentiles
 * interpolate linearly between order statistics at rank q * (n - 1), the
 * common "type 7" definition, so that the median of an even count is the mean
 * of the middle two.  The samples are copied and sorted; the input is
 * untouched.
 */
#include "tun.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double quantile(const double *sorted, int n, double q)
{
    double rank = q * (n - 1);
    int lo = (int)floor(rank);
    int hi = lo + 1 < n ? lo + 1 : lo;
    return sorted[lo] + (rank - lo) * (sorted[hi] - sorted[lo]);
}

fmqa_status tun_stats_compute(const double *samples, int n, tun_stats *out, fmqa_err *err)
{
    if (!samples || !out || n < 1)
        return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT,
                            "tun_stats_compute: need at least one sample (n = %d)", n);
    double sum = 0;
    for (int i = 0; i < n; i++) {
        if (!isfinite(samples[i]))
            return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT,
                                "tun_stats_compute: sample %d is not finite", i);
        sum += samples[i];
    }
    double *s = malloc((size_t)n * sizeof *s);
    if (!s)
        return fmqa_err_set(err, FMQA_ERR_OUT_OF_MEMORY, "out of memory");
    memcpy(s, samples, (size_t)n * sizeof *s);
    qsort(s, (size_t)n, sizeof *s, cmp_double);
    tun_stats r = {
        .n = n, .median = quantile(s, n, 0.5), .p20 = quantile(s, n, 0.2),
        .p80 = quantile(s, n, 0.8), .min = s[0], .max = s[n - 1], .mean = sum / n,
    };
    r.spread = r.median > 0 ? (r.p80 - r.p20) / r.median : 0;
    free(s);
    *out = r;
    return FMQA_OK;
}
