/*
 * bench_shapes.c -- the benchmark shapes `fastmqa-bench decode`, `mla` and
 * `static` share, their ids (the ids of bench/peers/peers.py, e.g.
 * "mqa-f16-b64-t4096"; "mla-h128-bf16-b64-t4096-q2"), selection by fnmatch
 * patterns, and custom shapes given on the command line as "B,T,Hkv,KV[,d]";
 * and the prefill shapes of `fastmqa-bench prefill` and `static`
 * ("prefill-b4-t4096-hkv8-d128").
 * The MLA shapes are FlashMLA's published ones (its README and
 * tests/test_flash_mla.py: batch 64 and 128, 16 to 128 heads, 1024 to 16384
 * positions, 1 and 2 query tokens, bf16), and the fp8 latent where the
 * kernel is memory-bound (16 and 32 heads).
 */
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

#define MQA(b, t, kv) {"mqa", b, t, 32, 1, 128, kv, 0, 0}
static const bench_shape shapes[] = {
    MQA(1, 131072, FMQA_DTYPE_F16), MQA(8, 32768, FMQA_DTYPE_F16),
    MQA(64, 4096, FMQA_DTYPE_F16), MQA(128, 1024, FMQA_DTYPE_F16),
    {"gqa8", 64, 4096, 32, 8, 128, FMQA_DTYPE_F16, 0, 0},
    MQA(1, 131072, FMQA_DTYPE_INT8), MQA(8, 32768, FMQA_DTYPE_INT8),
    MQA(64, 4096, FMQA_DTYPE_INT8), MQA(128, 1024, FMQA_DTYPE_INT8),
    MQA(1, 131072, FMQA_DTYPE_FP8_E4M3), MQA(8, 32768, FMQA_DTYPE_FP8_E4M3),
    MQA(64, 4096, FMQA_DTYPE_FP8_E4M3), MQA(128, 1024, FMQA_DTYPE_FP8_E4M3),
    {"h2048-mqa", 64, 1024, 32, 1, 64, FMQA_DTYPE_F16, 0, 0},
    {"h2048-mha", 64, 1024, 32, 32, 64, FMQA_DTYPE_F16, 0, 0},
};
#define N_SHAPES (sizeof shapes / sizeof shapes[0])

/* MLA shape i of N_MLA: (batch, heads, kv_len, q_tokens) over the published
 * grid in bf16, then fp8 at 16 and 32 heads. */
static const char *const MLA_FAMILIES[] = {"mla-h16", "mla-h32", "mla-h64", "mla-h128"};
#define N_MLA_BF16 (2 * 4 * 5 * 2)
#define N_MLA (N_MLA_BF16 + 2 * 2 * 5 * 2)

static bench_shape mla_shape(int i)
{
    const int fp8 = i >= N_MLA_BF16, k = fp8 ? i - N_MLA_BF16 : i, nh = fp8 ? 2 : 4;
    const int tq = k % 2 + 1, len = 1024 << (k / 2 % 5), h = k / 10 % nh, b = 64 << (k / 10 / nh);
    return (bench_shape){MLA_FAMILIES[h], b, len, 16 << h, 1, 576,
                         fp8 ? FMQA_DTYPE_FP8_E4M3 : FMQA_DTYPE_BF16, tq, 1};
}

/* The few: batch 64, 4096 positions, one query token, every head count in
 * bf16 and 16 heads in fp8. */
static int mla_few(const bench_shape *s)
{
    return s->batch == 64 && s->kv_len == 4096 && s->q_tokens == 1 &&
           (s->kv == FMQA_DTYPE_BF16 || s->heads == 16);
}

static const struct {
    const char *name;
    fmqa_dtype t;
} kv_names[] = {{"f16", FMQA_DTYPE_F16}, {"bf16", FMQA_DTYPE_BF16},
                {"int8", FMQA_DTYPE_INT8}, {"fp8", FMQA_DTYPE_FP8_E4M3}};

const char *bench_kv_name(fmqa_dtype t)
{
    for (size_t i = 0; i < sizeof kv_names / sizeof kv_names[0]; i++)
        if (kv_names[i].t == t)
            return kv_names[i].name;
    return "?";
}

void bench_shape_id(const bench_shape *s, char *buf, size_t cap)
{
    int n = snprintf(buf, cap, "%s-%s-b%d-t%d", s->family, bench_kv_name(s->kv), s->batch,
                     s->kv_len);
    if (s->q_tokens > 1 && n > 0 && (size_t)n < cap)
        snprintf(buf + n, cap - (size_t)n, "-q%d", s->q_tokens);
}

fmqa_problem bench_shape_problem(const bench_shape *s)
{
    fmqa_problem p;
    fmqa_problem_init(&p);
    p.op = FMQA_OP_DECODE;
    p.batch = s->batch, p.kv_len = s->kv_len;
    p.num_q_heads = s->heads, p.num_kv_heads = s->kv_heads;
    p.head_dim_qk = p.head_dim_v = s->d;
    p.q_tokens = 1;
    p.q_dtype = p.out_dtype = FMQA_DTYPE_F16;
    p.kv_dtype = s->kv;
    p.flags = FMQA_FLAG_CAUSAL;
    if (s->mla) { /* DeepSeek's: bf16 activations, V the latent's first 512 */
        p.op = FMQA_OP_MLA_DECODE;
        p.head_dim_v = 512;
        p.q_dtype = p.out_dtype = FMQA_DTYPE_BF16;
    }
    if (s->q_tokens > 1)
        p.q_tokens = s->q_tokens;
    return p;
}

double bench_shape_kv_bytes(const bench_shape *s)
{
    const double esz = (double)fmqa_dtype_size(s->kv), eight = esz == 1;
    const double row = s->mla ? s->d * esz + 4 * eight : s->kv_heads * (2 * s->d * esz + 8 * eight);
    return (double)s->batch * s->kv_len * row;
}

void bench_shapes_print(const bench_shape *s, int n)
{
    char id[96];
    for (int i = 0; i < n; i++) {
        bench_shape_id(&s[i], id, sizeof id);
        printf("%-30s %10.3f GB KV\n", id, bench_shape_kv_bytes(&s[i]) / 1e9);
    }
}

/* One custom shape "B,T,Hkv,KV[,d]" (32 query heads). */
static int parse_custom(const char *text, bench_shape *out)
{
    char kv[16] = "";
    int b, t, hkv, d = 128, n = sscanf(text, "%d,%d,%d,%15[a-z0-9],%d", &b, &t, &hkv, kv, &d);
    if (n < 4 || b < 1 || t < 1 || hkv < 1 || 32 % hkv || d < 1)
        return -1;
    for (size_t i = 0; i < sizeof kv_names / sizeof kv_names[0]; i++)
        if (!strcmp(kv, kv_names[i].name)) {
            *out = (bench_shape){hkv == 1 ? "mqa" : hkv == 32 ? "mha" : "gqa", b, t, 32, hkv,
                                 d, kv_names[i].t, 0, 0};
            return 0;
        }
    return -1;
}

/* 1 when id matches one of the comma-separated fnmatch patterns. */
static int id_matches(const char *id, const char *patterns)
{
    char pat[96];
    for (const char *p = patterns; *p;) {
        size_t n = strcspn(p, ",");
        snprintf(pat, sizeof pat, "%.*s", (int)(n < sizeof pat ? n : sizeof pat - 1), p);
        if (n && !fnmatch(pat, id, 0))
            return 1;
        p += n + (p[n] == ',');
    }
    return 0;
}

static int matches(const bench_shape *s, const char *patterns)
{
    char id[96];
    bench_shape_id(s, id, sizeof id);
    return id_matches(id, patterns);
}

int bench_shapes_any(unsigned sets, const char *patterns)
{
    for (size_t i = 0; (sets & BENCH_SET_DECODE) && i < N_SHAPES; i++)
        if (matches(&shapes[i], patterns))
            return 1;
    for (int i = 0; (sets & (BENCH_SET_MLA | BENCH_SET_MLA_FEW)) && i < N_MLA; i++) {
        bench_shape m = mla_shape(i);
        if (matches(&m, patterns))
            return 1;
    }
    return 0;
}

int bench_shapes_select(unsigned sets, const char *patterns, char **custom, int n_custom,
                        bench_shape **out, const char *who)
{
    bench_shape *v = malloc((N_SHAPES + N_MLA + (size_t)n_custom) * sizeof *v);
    int n = 0;
    if (!v)
        return fprintf(stderr, "%s: out of memory\n", who), -1;
    for (size_t i = 0; (sets & BENCH_SET_DECODE) && i < N_SHAPES; i++)
        if (patterns ? matches(&shapes[i], patterns) : !n_custom)
            v[n++] = shapes[i];
    for (int i = 0; (sets & (BENCH_SET_MLA | BENCH_SET_MLA_FEW)) && i < N_MLA; i++) {
        bench_shape m = mla_shape(i);
        if (patterns ? matches(&m, patterns)
                     : !n_custom && ((sets & BENCH_SET_MLA) || mla_few(&m)))
            v[n++] = m;
    }
    for (int i = 0; i < n_custom; i++)
        if (parse_custom(custom[i], &v[n++])) {
            fprintf(stderr, "%s: --shape '%s': expected B,T,Hkv,KV[,d] with KV one of "
                            "f16, bf16, int8, fp8 and Hkv dividing 32\n", who, custom[i]);
            free(v);
            return -1;
        }
    if (!n) {
        fprintf(stderr, "%s: --shapes '%s' matches no shape (ids: %s)\n", who,
                patterns ? patterns : "",
                sets & BENCH_SET_DECODE ? "mqa-f16-b1-t131072, gqa8-f16-b64-t4096, "
                                          "h2048-mha-f16-b64-t1024, ..."
                                        : "mla-h128-bf16-b64-t4096, mla-h16-fp8-b128-t16384-q2, ...");
        free(v);
        return -1;
    }
    *out = v;
    return n;
}

/* ---------------------------------------------------------------- prefill */

/* Causal bf16 prefill, 32 query heads: B = 4 x 4096 and B = 1 x 16384 tokens,
 * 32, 8 and 1 KV heads, d = 128 and 64 (issue 13's list). */
#define PF(b, t) {b, t, 32, 128}, {b, t, 8, 128}, {b, t, 1, 128}, \
                 {b, t, 32, 64}, {b, t, 8, 64}, {b, t, 1, 64}
static const bench_prefill_shape prefill_shapes[] = {PF(4, 4096), PF(1, 16384)};
#define N_PREFILL (sizeof prefill_shapes / sizeof prefill_shapes[0])

void bench_prefill_shape_id(const bench_prefill_shape *s, char *buf, size_t cap)
{
    snprintf(buf, cap, "prefill-b%d-t%d-hkv%d-d%d", s->batch, s->tokens, s->kv_heads, s->d);
}

fmqa_problem bench_prefill_problem(const bench_prefill_shape *s)
{
    fmqa_problem p;
    fmqa_problem_init(&p);
    p.op = FMQA_OP_PREFILL;
    p.batch = s->batch;
    p.q_tokens = p.kv_len = s->tokens;
    p.num_q_heads = 32, p.num_kv_heads = s->kv_heads;
    p.head_dim_qk = p.head_dim_v = s->d;
    p.q_dtype = p.kv_dtype = p.out_dtype = FMQA_DTYPE_BF16;
    p.flags = FMQA_FLAG_CAUSAL;
    return p;
}

void bench_prefill_shapes_print(const bench_prefill_shape *s, int n)
{
    char id[96];
    for (int i = 0; i < n; i++) {
        bench_prefill_shape_id(&s[i], id, sizeof id);
        printf("%-28s %10.3f TFLOP\n", id, bench_prefill_flops(&s[i]) / 1e12);
    }
}

double bench_prefill_flops(const bench_prefill_shape *s)
{
    return 4.0 * s->batch * 32 * (double)s->tokens * s->tokens * s->d / 2;
}

int bench_prefill_select(const char *patterns, int n_custom, bench_prefill_shape **out)
{
    bench_prefill_shape *v = malloc(N_PREFILL * sizeof *v);
    int n = 0;
    char id[96];
    if (!v)
        return -1;
    for (size_t i = 0; i < N_PREFILL; i++) {
        bench_prefill_shape_id(&prefill_shapes[i], id, sizeof id);
        if (patterns ? id_matches(id, patterns) : !n_custom)
            v[n++] = prefill_shapes[i];
    }
    *out = v;
    return n;
}
