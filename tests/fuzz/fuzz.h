/*
 * fuzz.h -- shared by the libFuzzer harnesses in tests/fuzz: the entry point
 * each defines, and a reader that turns the fuzzer's bytes into values (past
 * the end it yields zeros, so every input is a complete case).
 *
 * Each harness builds two ways: with clang -fsanitize=fuzzer (FASTMQA_FUZZ=ON,
 * scripts/test.sh runs it for a bounded time from tests/fuzz/corpus/<name>)
 * and, in every other build, with replay_main.c, which runs the committed
 * corpus and every input that once crashed it (tests/fuzz/regress/<name>) as
 * the ctest fuzz_<name> (label unit).
 */
#ifndef FMQA_FUZZ_H
#define FMQA_FUZZ_H

#include <stddef.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct fuzz_bytes {
    const uint8_t *p;
    size_t n;
} fuzz_bytes;

/* Copies len bytes (zeros past the end) into dst. */
static inline void fuzz_take(fuzz_bytes *in, void *dst, size_t len)
{
    size_t k = in->n < len ? in->n : len;
    memcpy(dst, in->p, k);
    memset((char *)dst + k, 0, len - k);
    in->p += k;
    in->n -= k;
}

static inline int64_t fuzz_i64(fuzz_bytes *in)
{
    int64_t v;
    fuzz_take(in, &v, sizeof v);
    return v;
}

static inline uint8_t fuzz_u8(fuzz_bytes *in)
{
    uint8_t v;
    fuzz_take(in, &v, 1);
    return v;
}

/* A property the code under test promised was broken: crash loudly, so the
 * fuzzer keeps the input. */
#define FUZZ_ASSERT(cond)                                                              \
    do {                                                                               \
        if (!(cond)) {                                                                 \
            fprintf(stderr, "%s:%d: property violated: %s\n", __FILE__, __LINE__, #cond); \
            abort();                                                                   \
        }                                                                              \
    } while (0)

#endif /* FMQA_FUZZ_H */
