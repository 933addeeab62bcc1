/*
 * test_convert_emu.c -- the number conversions of templates/fmqa_device.cuh,
 * run through the CPU emulator for sm_80 (fp8 by bit moves, software fp8
 * encoding) and sm_90 (the native cvt instructions), against the reference
 * codecs of reference/ref_convert.c:
 *  - every int8 and every fp8 e4m3 code, in each of the four byte positions of
 *    a register, through q8x4_to_pairs to f16 and to bf16 pairs (the pairing
 *    (b0, b2), (b1, b3); values exact, fp8 times 1 / FP8_F16_FOLD; NaN codes
 *    NaN, except on the sm_80 bit path, which reads them as +-480: no encoder
 *    writes them), and every int8 code through int8x4_to_f16_biased (decode's
 *    K with f16 queries: 1152 + x exactly, same pairing);
 *  - f32 -> e4m3 (append's encoder) on every code's value, every midpoint
 *    between neighbouring codes (the ties), the floats either side of each
 *    midpoint, and beyond the range (saturation, infinities, NaN);
 *  - pack2's halves (lo in the low half) and h_to_f32.
 * Each architecture's build takes a few seconds; the checks are instant.
 */
#define _POSIX_C_SOURCE 200809L

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <criterion/criterion.h>

#include "ref.h"
#include "test_support.h"

typedef void (*pairs_fn)(int fmt, int bf16, unsigned r, unsigned *p02, unsigned *p13);
typedef void (*biased_fn)(unsigned r, unsigned *p02, unsigned *p13);
typedef float (*fold_fn)(void);
typedef unsigned char (*e4m3_fn)(float x);
typedef unsigned (*pack2_fn)(int bf16, float lo, float hi);
typedef float (*h_to_f32_fn)(int bf16, unsigned short h);

typedef struct conv {
    int arch;
    pairs_fn pairs;
    biased_fn biased;
    fold_fn fold;
    e4m3_fn e4m3;
    pack2_fn pack2;
    h_to_f32_fn h_to_f32;
} conv;

static conv build(int arch)
{
    char dir[] = "/tmp/fmqa-convemu-XXXXXX";
    char name[16];
    snprintf(name, sizeof name, "sm_%d", arch / 10);
    void *h = fmqa_test_emu_build_plain("convert_emu.cpp", name, dir);
    conv c = {arch,
              (pairs_fn)fmqa_test_emu_symbol(h, "emu_q8x4_to_pairs"),
              (biased_fn)fmqa_test_emu_symbol(h, "emu_int8x4_to_f16_biased"),
              (fold_fn)fmqa_test_emu_symbol(h, "emu_fp8_fold"),
              (e4m3_fn)fmqa_test_emu_symbol(h, "emu_f32_to_e4m3"),
              (pack2_fn)fmqa_test_emu_symbol(h, "emu_pack2"),
              (h_to_f32_fn)fmqa_test_emu_symbol(h, "emu_h_to_f32")};
    return c;
}

static double half_value(int bf16, unsigned short h)
{
    return bf16 ? ref_bf16_to_double(h) : ref_f16_to_double(h);
}

/* Code x at byte position pos of a register whose other bytes are distinct
 * codes: all four outputs must be the reference's values of their bytes.
 * fmt 2 int8, 3 fp8, 4 int8 through the biased path (f16 only). */
static void check_register(const conv *c, int fmt, int bf16, unsigned r)
{
    unsigned p02, p13;
    if (fmt == 4)
        c->biased(r, &p02, &p13);
    else
        c->pairs(fmt, bf16, r, &p02, &p13);
    const unsigned out[4] = {p02 & 0xffff, p13 & 0xffff, p02 >> 16, p13 >> 16}; /* bytes 0..3 */
    const double fold = fmt == 3 ? c->fold() : 1.0;
    for (int i = 0; i < 4; i++) {
        const uint8_t b = (uint8_t)(r >> (8 * i));
        double want = fmt == 2 ? (double)(int8_t)b
                      : fmt == 4 ? 1152.0 + (int8_t)b
                                 : ref_fp8_to_double(b) / fold;
        if (fmt == 3 && isnan(want) && c->arch < 890) /* the bit move knows no NaN: S.1111.111 = 480 */
            want = (b & 0x80 ? -480.0 : 480.0) / fold;
        const double got = half_value(bf16, (unsigned short)out[i]);
        if (isnan(want))
            cr_assert(isnan(got), "sm_%d %s->%s: code 0x%02x (byte %d of 0x%08x) gave %g, not NaN",
                      c->arch / 10, fmt == 3 ? "fp8" : "int8", bf16 ? "bf16" : "f16", b, i, r, got);
        else
            cr_assert(got == want && signbit(got) == signbit(want),
                      "sm_%d %s->%s: code 0x%02x (byte %d of 0x%08x) gave %.9g, want %.9g",
                      c->arch / 10, fmt == 3 ? "fp8" : fmt == 4 ? "int8+1152" : "int8",
                      bf16 ? "bf16" : "f16", b, i, r, got, want);
    }
}

static void check_all_codes(const conv *c)
{
    if (c->arch < 890)
        cr_assert_eq(c->fold(), 256.0f, "the sm_80 bit path yields value * 2^-8");
    for (int fmt = 2; fmt <= 4; fmt++)
        for (int bf16 = 0; bf16 <= (fmt == 4 ? 0 : 1); bf16++)
            for (unsigned x = 0; x < 256; x++)
                for (int pos = 0; pos < 4; pos++) {
                    /* neighbours: other codes, different per position */
                    unsigned r = 0;
                    for (int i = 0; i < 4; i++)
                        r |= (i == pos ? x : (x * 37u + 91u * (unsigned)i + 13u) & 0xffu) << (8 * i);
                    check_register(c, fmt, bf16, r);
                }
}

static void check_e4m3(const conv *c, float x)
{
    const uint8_t got = c->e4m3(x), want = ref_fp8_from_double(x);
    if (isnan(x))
        cr_assert_eq(got & 0x7f, 0x7f, "sm_%d f32_to_e4m3(NaN) = 0x%02x", c->arch / 10, got);
    else
        cr_assert_eq(got, want, "sm_%d f32_to_e4m3(%.9g = %a) = 0x%02x, want 0x%02x", c->arch / 10,
                     (double)x, (double)x, got, want);
}

static void check_encode(const conv *c)
{
    for (int s = 0; s < 2; s++) {
        const double sign = s ? -1.0 : 1.0;
        for (unsigned code = 0; code < 0x7e; code++) {
            const double v = ref_fp8_to_double((uint8_t)code), next = ref_fp8_to_double((uint8_t)(code + 1));
            const float mid = (float)((v + next) / 2); /* exact: a float */
            check_e4m3(c, (float)(sign * v));
            check_e4m3(c, (float)(sign * mid));
            check_e4m3(c, sign * nextafterf(mid, INFINITY));
            check_e4m3(c, sign * nextafterf(mid, 0.0f));
        }
        const float beyond[] = {448.0f, 449.0f, 464.0f, 465.0f, 480.0f, 1e30f, INFINITY,
                                0x1p-10f, 0x1p-11f, 0x1.8p-10f, 0x1p-126f, 0x1p-149f};
        for (size_t i = 0; i < sizeof beyond / sizeof beyond[0]; i++)
            check_e4m3(c, (float)sign * beyond[i]);
    }
    check_e4m3(c, NAN);
}

static void check_pack(const conv *c)
{
    for (int bf16 = 0; bf16 <= 1; bf16++) {
        const unsigned r = c->pack2(bf16, 1.5f, -2.25f);
        cr_assert_eq(half_value(bf16, (unsigned short)(r & 0xffff)), 1.5, "pack2: lo goes low");
        cr_assert_eq(half_value(bf16, (unsigned short)(r >> 16)), -2.25, "pack2: hi goes high");
        /* a tie of each format rounds to even */
        const float tie = bf16 ? 1.0f + 0x1p-8f : 1.0f + 0x1p-11f;
        const unsigned t = c->pack2(bf16, tie, -tie);
        cr_assert_eq(half_value(bf16, (unsigned short)(t & 0xffff)), 1.0);
        cr_assert_eq(half_value(bf16, (unsigned short)(t >> 16)), -1.0);
        for (unsigned h = 0; h < 0x10000; h += 7) {
            const double want = half_value(bf16, (unsigned short)h);
            const float got = c->h_to_f32(bf16, (unsigned short)h);
            cr_assert(isnan(want) ? isnan(got) : (double)got == want, "h_to_f32<%d>(0x%04x)", bf16, h);
        }
    }
}

Test(convert_emu, sm80_bit_paths, .timeout = 300)
{
    const conv c = build(800);
    check_all_codes(&c);
    check_encode(&c);
    check_pack(&c);
}

Test(convert_emu, sm90_native_cvt, .timeout = 300)
{
    const conv c = build(900);
    check_all_codes(&c);
    check_encode(&c);
    check_pack(&c);
}
