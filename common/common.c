/*
 * common.c -- the error record, the identity hash and string helpers declared in
 * fmqa_common.h, plus the public status, dtype and op names.  The hash is FNV-1a
 * in two 64-bit lanes with different offset bases, finished with a 64-bit mixer
 * (splitmix64) so that short inputs spread over all 128 bits.  It identifies
 * content in caches and the tuning database; it is not a defence against an
 * adversary who can write templates, and need not be.
 */
#define _POSIX_C_SOURCE 200809L
#include "fmqa_common.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

fmqa_status fmqa_err_setv(fmqa_err *err, fmqa_status status, const char *fmt, va_list ap)
{
    if (err) {
        err->status = status;
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    }
    return status;
}

fmqa_status fmqa_err_set(fmqa_err *err, fmqa_status status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fmqa_err_setv(err, status, fmt, ap);
    va_end(ap);
    return status;
}

fmqa_status fmqa_err_prefix(fmqa_err *err, const char *fmt, ...)
{
    if (!err)
        return FMQA_ERR_INTERNAL;
    char prefix[FMQA_ERRMSG_CAP], old[FMQA_ERRMSG_CAP];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof old);
    /* Bounded precisions: the message is cut, never overrun. */
    snprintf(err->msg, sizeof err->msg, "%.400s: %.600s", prefix, old);
    return err->status;
}

void fmqa_err_clear(fmqa_err *err)
{
    if (err) {
        err->status = FMQA_OK;
        err->msg[0] = '\0';
    }
}

#define FNV_PRIME 0x100000001b3ULL

void fmqa_hash_init(fmqa_hasher *h)
{
    h->a = 0xcbf29ce484222325ULL;
    h->b = 0x84222325cbf29ce4ULL;
}

void fmqa_hash_update(fmqa_hasher *h, const void *data, size_t len)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < len; i++) {
        h->a = (h->a ^ p[i]) * FNV_PRIME;
        h->b = (h->b ^ (unsigned char)(p[i] + 0x5bu)) * FNV_PRIME;
    }
}

void fmqa_hash_str(fmqa_hasher *h, const char *s)
{
    fmqa_hash_update(h, s ? s : "", (s ? strlen(s) : 0) + 1);
}

static uint64_t mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

void fmqa_hash_final(const fmqa_hasher *h, char out[FMQA_HASH_HEX])
{
    uint64_t a = mix64(h->a ^ mix64(h->b));
    uint64_t b = mix64(h->b ^ a);
    snprintf(out, FMQA_HASH_HEX, "%016llx%016llx", (unsigned long long)a,
             (unsigned long long)b);
}

void fmqa_hash_hex(const void *data, size_t len, char out[FMQA_HASH_HEX])
{
    fmqa_hasher h;
    fmqa_hash_init(&h);
    fmqa_hash_update(&h, data, len);
    fmqa_hash_final(&h, out);
}

char *fmqa_strdup(const char *s)
{
    if (!s)
        return NULL;
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

int fmqa_strlcpy(char *dst, const char *src, size_t cap)
{
    if (cap == 0)
        return -1;
    size_t n = strlen(src);
    if (n >= cap) {
        memcpy(dst, src, cap - 1);
        dst[cap - 1] = '\0';
        return -1;
    }
    memcpy(dst, src, n + 1);
    return 0;
}

int fmqa_parse_i64(const char *s, int64_t lo, int64_t hi, int64_t *out)
{
    char *end;
    if (!s || !*s || isspace((unsigned char)*s))
        return -1;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (*end || errno || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

int fmqa_parse_f64(const char *s, double lo, double hi, double *out)
{
    char *end;
    if (!s || !*s || isspace((unsigned char)*s))
        return -1;
    errno = 0;
    double v = strtod(s, &end);
    if (*end || errno || !isfinite(v) || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

int fmqa_prod64(const int64_t *factors, int n, int64_t *out)
{
    int64_t r = 1;
    for (int i = 0; i < n; i++)
        if (fmqa_mul64(r, factors[i], &r))
            return -1;
    *out = r;
    return 0;
}

double fmqa_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

const char *fmqa_status_string(fmqa_status status)
{
    switch (status) {
    case FMQA_OK: return "ok";
    case FMQA_ERR_INVALID_ARGUMENT: return "invalid argument";
    case FMQA_ERR_UNSUPPORTED: return "unsupported";
    case FMQA_ERR_NO_DRIVER: return "no CUDA driver";
    case FMQA_ERR_NO_DEVICE: return "no CUDA device";
    case FMQA_ERR_CUDA: return "CUDA error";
    case FMQA_ERR_COMPILE: return "kernel compilation failed";
    case FMQA_ERR_TEMPLATE: return "template error";
    case FMQA_ERR_DATABASE: return "tuning database error";
    case FMQA_ERR_OUT_OF_MEMORY: return "out of memory";
    case FMQA_ERR_NOT_FOUND: return "not found";
    case FMQA_ERR_IO: return "I/O error";
    case FMQA_ERR_INTERNAL: return "internal error";
    }
    return "unknown status";
}

const char *fmqa_dtype_name(fmqa_dtype dtype)
{
    switch (dtype) {
    case FMQA_DTYPE_F16: return "f16";
    case FMQA_DTYPE_BF16: return "bf16";
    case FMQA_DTYPE_F32: return "f32";
    case FMQA_DTYPE_INT8: return "int8";
    case FMQA_DTYPE_FP8_E4M3: return "fp8_e4m3";
    }
    return NULL;
}

size_t fmqa_dtype_size(fmqa_dtype dtype)
{
    switch (dtype) {
    case FMQA_DTYPE_F16:
    case FMQA_DTYPE_BF16: return 2;
    case FMQA_DTYPE_F32: return 4;
    case FMQA_DTYPE_INT8:
    case FMQA_DTYPE_FP8_E4M3: return 1;
    }
    return 0;
}

const char *fmqa_kv_scale_name(fmqa_kv_scale_granularity g)
{
    switch (g) {
    case FMQA_KV_SCALE_TOKEN_HEAD: return "token_head";
    case FMQA_KV_SCALE_HEAD: return "head";
    case FMQA_KV_SCALE_TENSOR: return "tensor";
    }
    return NULL;
}

const char *fmqa_op_name(fmqa_op op)
{
    switch (op) {
    case FMQA_OP_DECODE: return "decode";
    case FMQA_OP_PREFILL: return "prefill";
    case FMQA_OP_MLA_DECODE: return "mla_decode";
    case FMQA_OP_APPEND: return "append";
    case FMQA_OP_COMPRESS: return "compress";
    }
    return NULL;
}
