/*
 * bench.h -- what the subcommands of fastmqa-bench share: the dispatch table
 * entry, each subcommand's entry point, and the decode-timing hook that the
 * levels table calls when a GPU is present.
 *
 * A subcommand is a function with main's signature, called with argv[0] set to
 * the subcommand's name; it returns the process exit status (0 ok, 1 failure or
 * a failed check, 2 bad usage) and prints its own errors.  To add one, write
 * bench/bench_<name>.c with `int bench_<name>_main(int, char **)`, declare it
 * here and add one line to the table in bench_main.c.
 */
#ifndef FMQA_BENCH_H
#define FMQA_BENCH_H

#include <stddef.h>
#include <stdint.h>

#include "fastmqa.h"
#include "fmqa_common.h"

typedef struct bench_command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *help; /* one line for `fastmqa-bench --help` */
} bench_command;

/* A benchmark shape: 32-head decode of one f16 query token per sequence, every
 * sequence at kv_len, causal (bench_shapes.c); or, with mla set, an MLA decode
 * (latent 512 + rope 64, bf16 queries and outputs, q_tokens drafts). */
typedef struct bench_shape {
    const char *family;   /* "mqa", "gqa8", "h2048-mqa", "mla-h128", ...         */
    int32_t batch, kv_len, heads, kv_heads, d;
    fmqa_dtype kv;
    int32_t q_tokens;     /* 0 = 1                                               */
    int mla;              /* FMQA_OP_MLA_DECODE: d = 576, dv = 512, one latent   */
} bench_shape;

/* Which shapes bench_shapes_select draws from (a bit set).  Patterns match
 * within the chosen sets; without patterns or custom shapes the selection is
 * every decode shape (DECODE), every MLA shape (MLA: FlashMLA's published set,
 * batch 64 and 128, 16 to 128 heads, 1024 to 16384 positions, 1 and 2 query
 * tokens, bf16, and fp8 where memory-bound) or a few MLA shapes (MLA_FEW: 16
 * to 128 heads at batch 64 and 4096 positions, and fp8 at 16 heads). */
#define BENCH_SET_DECODE 1u
#define BENCH_SET_MLA 2u
#define BENCH_SET_MLA_FEW 4u

/* "f16", "bf16", "int8", "fp8" (peers.py's names). */
const char *bench_kv_name(fmqa_dtype t);
/* "mqa-f16-b64-t4096": family, kv, batch, kv_len; "-q2" when q_tokens > 1. */
void bench_shape_id(const bench_shape *s, char *buf /* OUT */, size_t cap);
fmqa_problem bench_shape_problem(const bench_shape *s);
/* The shapes of `sets` whose id matches one of the comma-separated fnmatch
 * patterns (NULL: the sets' defaults unless custom ones are given), then the
 * custom decode shapes "B,T,Hkv,KV[,d]".  Returns the count and *out
 * (malloc'ed, free() it), or -1 after printing why (prefixed by who). */
int bench_shapes_select(unsigned sets, const char *patterns, char **custom, int n_custom,
                        bench_shape **out /* OUT */, const char *who);

/* Bytes of cache one launch of the shape reads, every sequence at kv_len: K
 * and V rows (8-bit: plus a float scale each per token and KV head); MLA: the
 * latent row (fp8: plus its float scale). */
double bench_shape_kv_bytes(const bench_shape *s);
/* `--list` of decode, mla and static: one line per shape, its id and the KV
 * bytes one launch reads ("mqa-f16-b64-t4096   0.134 GB KV"). */
void bench_shapes_print(const bench_shape *s, int n);

/* 1 when the id of a shape of `sets` matches one of the patterns. */
int bench_shapes_any(unsigned sets, const char *patterns);

/* A prefill benchmark shape: causal, bf16, 32 query heads, every sequence
 * `tokens` new tokens (bench_shapes.c). */
typedef struct bench_prefill_shape {
    int32_t batch, tokens, kv_heads, d;
} bench_prefill_shape;

/* "prefill-b4-t4096-hkv8-d128". */
void bench_prefill_shape_id(const bench_prefill_shape *s, char *buf /* OUT */, size_t cap);
fmqa_problem bench_prefill_problem(const bench_prefill_shape *s);
/* 4 B H T^2 d / 2: the flops of causal attention (QK^T and PV, half the square). */
double bench_prefill_flops(const bench_prefill_shape *s);
/* `--list` of prefill and static: one line per shape, its id and its flops. */
void bench_prefill_shapes_print(const bench_prefill_shape *s, int n);
/* The prefill shapes whose id matches a pattern (NULL: all of them unless
 * n_custom decode shapes were asked for instead).  Returns the count, 0
 * included, and *out (malloc'ed, free() it), or -1 out of memory. */
int bench_prefill_select(const char *patterns, int n_custom, bench_prefill_shape **out);

/* The context (database db_path) and device of a GPU subcommand, or 1 after
 * saying on stderr why there is none (bench_decode.c). */
int bench_open_gpu(const char *who, const char *db_path, fmqa_ctx_t **ctx /* OUT */,
                   fmqa_device_info *dev /* OUT */);

/* `fastmqa-bench prefill`: bench_prefill.c. */
int bench_prefill_main(int argc, char **argv);

/* `fastmqa-bench levels`: bench_levels.c. */
int bench_levels_main(int argc, char **argv);
/* `fastmqa-bench decode`: bench_decode.c. */
int bench_decode_main(int argc, char **argv);
/* `fastmqa-bench bw`: bench_decode.c (the read kernel by the timing method). */
int bench_bw_main(int argc, char **argv);
/* `fastmqa-bench static`: bench_static.c (figures without a GPU). */
int bench_static_main(int argc, char **argv);
/* `fastmqa-bench mla`: bench_mla.c (MLA decode against both roofs). */
int bench_mla_main(int argc, char **argv);

struct tun_timer;
/* One problem through the decode benchmark's path (bench_decode.c): the
 * dispatcher's variant (or `config` over the first template of the problem's
 * op), verified once against the reference on fresh inputs, every sequence at
 * kv_len, then timed by the method's automatic mode on the timer's stream. */
typedef struct bench_timing {
    double us, spread;     /* median per launch, (p80 - p20) / median         */
    double kv_bytes;       /* cache bytes one launch reads                    */
    double rel_l2;
    int pass, splits, ctas;
    char variant[128];     /* "default BLOCK_N=64,...", "forced ..."          */
} bench_timing;
fmqa_status bench_time_problem(fmqa_ctx_t *ctx, struct tun_timer *timer, const fmqa_problem *p,
                               const char *config, bench_timing *out /* OUT */, fmqa_err *err);

/*
 * Decode-timing hook of the levels table (column "decode_us/step"): the median
 * time of one decode step of `problem` on ctx's GPU, in microseconds, into *us.
 * bench_levels.c calls it only after fmqa_device_query() succeeded;
 * bench_decode.c implements it with the decode benchmark's own timing.
 * problem->batch is 1, kv_len the
 * model's max_seq_len, q_tokens the level's spec_tokens; the timer chooses its
 * own cache contents (kv_lens = kv_len).
 */
fmqa_status bench_decode_step_us(fmqa_ctx_t *ctx, const fmqa_problem *problem,
                                 double *us /* OUT */);

#endif /* FMQA_BENCH_H */
