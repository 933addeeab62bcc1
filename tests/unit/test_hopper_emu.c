/*
 * test_hopper_emu.c -- the emulator's model of the Hopper instructions
 * (tests/emu/emu_ptx.h, sm_90 / sm_90a part) against what the PTX ISA defines,
 * through the kernels of tests/emu/hopper_emu.cpp:
 *  - wgmma GEMMs (m64nNk16, f16 and bf16, N 32 / 64 / 128 / 256) against a plain
 *    CPU GEMM for every swizzle mode (none, 32, 64, 128 bytes), A from shared
 *    memory (K- and MN-major) and from registers, B K- and MN-major; operands
 *    by TMA (swizzled) or by plain stores in the interleaved layout; two
 *    accumulators in two commit groups retired by wait_group 1 then 0;
 *  - TMA boxes (2D, 3D, 4D; swizzle none, 32, 64, 128) at tensor edges and
 *    negative coordinates, against the box computed here: zero outside the
 *    tensor, elements in box order, 16-byte chunks swizzled by address;
 *    a plain bulk copy beside them;
 *  - mbarrier phases with arrivals and transaction counts; named barriers
 *    (bar.sync / bar.arrive) making two warps take turns;
 *  - kernels breaking one rule each, which must abort with a message.
 * One sm_90a emulator build per test (three, ~5 s of CPU each); the runs
 * take about a second.
 */
#define _POSIX_C_SOURCE 200809L

#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "fmqa_params.h"
#include "ref.h"
#include "test_support.h"

/* The driver's argument structs (tests/emu/hopper_emu.cpp), field for field. */
typedef struct hop_gemm {
    fmqa_tensor_map ma, mb;
    const uint16_t *a, *b;
    float *d;
    int n, bf16, w, rs, ta, tb;
} hop_gemm;
typedef struct hop_box {
    fmqa_tensor_map map;
    int rank, c[4];
    unsigned bytes;
    unsigned char *out;
    const unsigned char *src;
    unsigned char *bulk_out;
} hop_box;
typedef struct hop_phase {
    const unsigned char *src;
    int *out;
} hop_phase;

typedef const char *(*encode_fn)(fmqa_tensor_map *out, const void *base, int rank, int esize, int swizzle,
                                 const unsigned long long *dims, const unsigned long long *strides,
                                 const unsigned *box);

static void *build(void)
{
    char dir[] = "/tmp/fmqa-hopperemu-XXXXXX";
    return fmqa_test_emu_build_plain("hopper_emu.cpp", "sm_90a", dir);
}

static void encode(void *h, fmqa_tensor_map *m, const void *base, int rank, int esize, int swizzle,
                   const unsigned long long *dims, const unsigned long long *strides, const unsigned *box)
{
    const char *e = ((encode_fn)fmqa_test_emu_symbol(h, "hop_tmap_encode"))(m, base, rank, esize, swizzle,
                                                                            dims, strides, box);
    cr_assert_null(e, "tensor map rejected: %s", e);
}

/* ------------------------------------------------------------ wgmma */

static uint16_t to_h(int bf16, double x) { return bf16 ? ref_bf16_from_double(x) : ref_f16_from_double(x); }
static double from_h(int bf16, uint16_t h) { return bf16 ? ref_bf16_to_double(h) : ref_f16_to_double(h); }

/* One GEMM: A logical [64][64], B logical [64 k][n], stored as the mode asks. */
static void check_gemm(void *h, int w, int rs, int ta, int tb, int n, int bf16, unsigned seed)
{
    uint16_t *a = aligned_alloc(64, 64 * 64 * 2), *b = aligned_alloc(64, (size_t)64 * n * 2);
    float *d = aligned_alloc(64, (size_t)64 * n * 4);
    double *A = malloc(64 * 64 * sizeof *A), *B = malloc((size_t)64 * n * sizeof *B);
    srand(seed);
    for (int m = 0; m < 64; m++)
        for (int k = 0; k < 64; k++) {
            const uint16_t v = to_h(bf16, (rand() % 2001 - 1000) / 1000.0);
            A[m * 64 + k] = from_h(bf16, v);
            a[ta ? k * 64 + m : m * 64 + k] = v;
        }
    for (int k = 0; k < 64; k++)
        for (int j = 0; j < n; j++) {
            const uint16_t v = to_h(bf16, (rand() % 2001 - 1000) / 1000.0);
            B[k * n + j] = from_h(bf16, v);
            b[tb ? k * n + j : j * 64 + k] = v;
        }
    for (int i = 0; i < 64 * n; i++)
        d[i] = NAN;
    hop_gemm p;
    memset(&p, 0, sizeof p);
    p.a = a, p.b = b, p.d = d, p.n = n, p.bf16 = bf16, p.w = w, p.rs = rs, p.ta = ta, p.tb = tb;
    if (w) {
        const unsigned long long dims_a[2] = {64, 64}, str_a[1] = {128};
        const unsigned box_a[2] = {(unsigned)w / 2, 64};
        encode(h, &p.ma, a, 2, 2, w, dims_a, str_a, box_a);
        const unsigned long long dims_b[2] = {tb ? (unsigned long long)n : 64, tb ? 64 : (unsigned long long)n},
                                 str_b[1] = {tb ? (unsigned long long)n * 2 : 128};
        const unsigned box_b[2] = {(unsigned)w / 2, tb ? 64 : (unsigned)n};
        encode(h, &p.mb, b, 2, 2, w, dims_b, str_b, box_b);
    }
    int (*run)(const hop_gemm *) = (int (*)(const hop_gemm *))fmqa_test_emu_symbol(h, "hop_gemm_run");
    cr_assert_eq(run(&p), 0, "n%d %s not built", n, bf16 ? "bf16" : "f16");
    for (int m = 0; m < 64; m++)
        for (int j = 0; j < n; j++) {
            double want = 0, mag = 0;
            for (int k = 0; k < 64; k++) {
                want += A[m * 64 + k] * B[k * n + j];
                mag += fabs(A[m * 64 + k] * B[k * n + j]);
            }
            const double got = d[m * n + j];
            cr_assert(fabs(got - want) <= 1e-6 * (1.0 + mag),
                      "swizzle %d, A %s%s, B %s, m64n%dk16 %s: D[%d][%d] = %.9g, want %.9g", w,
                      rs ? "registers" : "shared", rs ? "" : ta ? " MN-major" : " K-major",
                      tb ? "MN-major" : "K-major", n, bf16 ? "bf16" : "f16", m, j, got, want);
        }
    free(a), free(b), free(d), free(A), free(B);
}

Test(hopper_emu, wgmma_gemm, .timeout = 600)
{
    void *h = build();
    static const int shapes[4][2] = {{64, 0}, {64, 1}, {128, 1}, {256, 0}}; /* n, bf16 */
    static const int modes[6][3] = {{0, 0, 0}, {0, 0, 1}, {0, 1, 0}, {0, 1, 1}, {1, 0, 0}, {1, 0, 1}};
    int i = 0;
    for (int w = 0; w <= 128; w = w ? 2 * w : 32)
        for (int m = 0; m < 6; m++, i++) {
            const int *s = shapes[(i + w / 32) % 4];
            check_gemm(h, w, modes[m][0], modes[m][1], modes[m][2], s[0], s[1], 100u + (unsigned)i);
        }
    /* n32 with a K-major B (mla_decode_sm90's scores of 32-token blocks) */
    for (int w = 0; w <= 128; w = w ? 2 * w : 32)
        check_gemm(h, w, w == 64, w == 32, 0, 32, 1, 200u + (unsigned)w);
}

/* ------------------------------------------------------------ TMA */

/* The box of a tensor with distinct 1..n values, computed here: element e of
 * the box (index order, innermost first) at byte e * esize of the box, whose
 * 16-byte chunks swizzle by the address bits (the box lands at 1024). */
static void check_box(void *h, int rank, int esize, int swizzle, const unsigned long long *dims,
                      const unsigned long long *strides, const unsigned *box, const int *c)
{
    size_t span = dims[rank - 1] * (rank > 1 ? strides[rank - 2] : (unsigned long long)esize);
    unsigned char *t = aligned_alloc(64, (span + 63) / 64 * 64);
    memset(t, 0xee, span);
    unsigned long long n = 1;
    for (int i = 0; i < rank; i++)
        n *= dims[i];
    for (unsigned long long e = 0; e < n; e++) { /* value e + 1, little-endian, in esize bytes */
        unsigned long long rest = e, off = 0;
        for (int i = 0; i < rank; i++) {
            const unsigned long long x = rest % dims[i];
            rest /= dims[i];
            off += i == 0 ? x * (unsigned long long)esize : x * strides[i - 1];
        }
        const unsigned long long v = e + 1;
        memcpy(t + off, &v, (size_t)esize);
    }
    hop_box p;
    memset(&p, 0, sizeof p);
    encode(h, &p.map, t, rank, esize, swizzle, dims, strides, box);
    unsigned long long nbox = 1;
    for (int i = 0; i < rank; i++)
        nbox *= box[i], p.c[i] = c[i];
    p.rank = rank;
    p.bytes = (unsigned)(nbox * (unsigned long long)esize);
    p.out = malloc(p.bytes);
    unsigned char src[48] __attribute__((aligned(16))), bulk[48];
    for (int i = 0; i < 48; i++)
        src[i] = (unsigned char)(7 * i + 3);
    p.src = src, p.bulk_out = bulk;
    ((void (*)(const hop_box *))fmqa_test_emu_symbol(h, "hop_box_run"))(&p);
    cr_assert_eq(memcmp(bulk, src, 48), 0, "plain bulk copy");
    for (unsigned long long e = 0; e < nbox; e++) {
        unsigned long long rest = e, v = 0, in = 1, lin = 0, scale = 1;
        for (int i = 0; i < rank; i++) {
            const long long g = c[i] + (long long)(rest % box[i]);
            rest /= box[i];
            in = in && g >= 0 && (unsigned long long)g < dims[i];
            lin += (unsigned long long)(g < 0 ? 0 : g) * scale;
            scale *= dims[i];
        }
        if (in)
            v = lin + 1;
        unsigned long long byte = 1024 + e * (unsigned long long)esize;
        if (swizzle)
            byte ^= ((byte >> 7) & (unsigned long long)(swizzle / 16 - 1)) << 4;
        unsigned long long got = 0, mask = esize == 8 ? ~0ull : (1ull << (8 * esize)) - 1;
        memcpy(&got, p.out + (byte - 1024), (size_t)esize);
        cr_assert_eq(got, v & mask, "%dD box at (%d, %d, %d, %d), swizzle %d: element %llu = %llu, want %llu",
                     rank, c[0], c[1], rank > 2 ? c[2] : 0, rank > 3 ? c[3] : 0, swizzle, e, got, v & mask);
    }
    free(p.out);
    free(t);
}

static void check_boxes(void *h)
{
    /* 3D, 16-bit, rows padded to 48 elements, planes of 8 rows */
    const unsigned long long d3[3] = {40, 7, 5}, s3[2] = {96, 768};
    const unsigned b3[3] = {16, 4, 3};
    const int c3[][3] = {{0, 0, 0}, {32, 5, 3}, {-8, -2, -1}, {24, 3, 4}, {-15, 6, -2}};
    for (int sw = 0; sw <= 32; sw += 32)
        for (size_t i = 0; i < sizeof c3 / sizeof c3[0]; i++)
            check_box(h, 3, 2, sw, d3, s3, b3, c3[i]);
    /* 2D, rows of 128 bytes of a 100-element row: the 64- and 128-byte swizzles */
    const unsigned long long d2[2] = {100, 9}, s2[1] = {256};
    const int c2[][2] = {{0, 0}, {64, 6}, {-32, -3}, {40, 2}};
    for (int sw = 64; sw <= 128; sw *= 2) {
        const unsigned b2[2] = {(unsigned)sw / 2, 5};
        for (size_t i = 0; i < sizeof c2 / sizeof c2[0]; i++)
            check_box(h, 2, 2, sw, d2, s2, b2, c2[i]);
    }
    /* 4D, 32-bit */
    const unsigned long long d4[4] = {8, 3, 2, 2}, s4[3] = {32, 96, 192};
    const unsigned b4[4] = {8, 2, 2, 2};
    const int c4[][4] = {{0, 2, -1, 1}, {0, 0, 0, 0}, {-4, 1, 1, -1}};
    for (size_t i = 0; i < sizeof c4 / sizeof c4[0]; i++)
        check_box(h, 4, 4, 0, d4, s4, b4, c4[i]);
}

static void check_map_rules(void *h)
{
    encode_fn enc = (encode_fn)fmqa_test_emu_symbol(h, "hop_tmap_encode");
    fmqa_tensor_map m;
    static unsigned char t[4096] __attribute__((aligned(64)));
    const unsigned long long dims[2] = {64, 16}, good[1] = {128}, odd[1] = {120};
    const unsigned box[2] = {64, 8}, wide[2] = {128, 8}, narrow[2] = {4, 8};
    cr_assert_null(enc(&m, t, 2, 2, 128, dims, good, box));
    cr_assert_not_null(enc(&m, t, 2, 2, 64, dims, good, box), "a 128-byte box row under a 64-byte swizzle");
    cr_assert_not_null(enc(&m, t, 2, 2, 0, dims, odd, box), "a stride not a multiple of 16");
    cr_assert_not_null(enc(&m, t, 2, 2, 0, dims, good, narrow), "an 8-byte box row");
    cr_assert_not_null(enc(&m, t + 8, 2, 2, 0, dims, good, box), "a misaligned base");
    const unsigned long long big[2] = {512, 16}, bstr[1] = {1024};
    const unsigned huge[2] = {64, 300};
    cr_assert_not_null(enc(&m, t, 2, 2, 0, big, bstr, huge), "a box dimension over 256");
    cr_assert_null(enc(&m, t, 2, 2, 0, big, bstr, wide));
}

/* ------------------------------------------------------------ mbarrier */

static void check_phases(void *h)
{
    unsigned char src[96] __attribute__((aligned(16)));
    for (int i = 0; i < 96; i++)
        src[i] = (unsigned char)(i * 5 + 1);
    int out[12];
    memset(out, 0xff, sizeof out);
    hop_phase p = {src, out};
    ((void (*)(const hop_phase *))fmqa_test_emu_symbol(h, "hop_phase_run"))(&p);
    for (int ph = 0; ph < 3; ph++) {
        int want[2];
        memcpy(want, src + 32 * ph, 8);
        cr_expect_eq(out[4 * ph], want[0], "phase %d: the copy had not landed when the phase completed", ph);
        cr_expect_eq(out[4 * ph + 1], want[1], "phase %d: second word", ph);
        cr_expect_eq(out[4 * ph + 2], 1, "phase %d: try_wait of its parity after completion", ph);
        cr_expect_eq(out[4 * ph + 3], ph, "phase %d not reached", ph);
    }
}

/* TMA and mbarriers share one build. */
Test(hopper_emu, tma_mbarrier, .timeout = 600)
{
    void *h = build();
    check_boxes(h);
    check_map_rules(h);
    check_phases(h);
    const int *turns = ((const int *(*)(void))fmqa_test_emu_symbol(h, "hop_turns_run"))();
    for (int i = 0; i < 6; i++)
        cr_expect_eq(turns[i], i % 2, "named barriers: turn %d went to warp %d", i, turns[i]);
}

/* ------------------------------------------------------------ refusals */

Test(hopper_emu, refusals, .timeout = 600)
{
    void *h = build();
    void (*run)(int) = (void (*)(int))fmqa_test_emu_symbol(h, "hop_refuse_run");
    static const char *want[] = {"not fenced",   "more arrivals",          "without a wgmma.fence",
                                 "still pending", "deadlock",               "in flight",
                                 "deadlock: waits at an mbarrier phase", "base offset", "partly arrived"};
    for (int i = 0; i < (int)(sizeof want / sizeof want[0]); i++) {
        int fd[2];
        cr_assert_eq(pipe(fd), 0);
        fflush(NULL);
        const pid_t pid = fork();
        cr_assert_geq(pid, 0, "fork");
        if (pid == 0) {
            dup2(fd[1], 2);
            close(fd[0]);
            run(i);
            _exit(0);
        }
        close(fd[1]);
        char msg[512] = "";
        size_t got = 0;
        ssize_t r;
        while (got < sizeof msg - 1 && (r = read(fd[0], msg + got, sizeof msg - 1 - got)) > 0)
            got += (size_t)r;
        msg[got] = 0;
        close(fd[0]);
        int status = 0;
        waitpid(pid, &status, 0);
        cr_expect(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT, "refusal %d: not aborted (%s)", i, msg);
        cr_expect(strstr(msg, want[i]) != NULL, "refusal %d: message '%s' lacks '%s'", i, msg, want[i]);
    }
}
