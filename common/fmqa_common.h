/*
 * fmqa_common.h -- internal helpers shared by every layer of libfastmqa: the
 * error record that internal functions fill (status plus a message that names
 * file, line and field where it can), identity hashing, small string tools and
 * the strict parsing of numbers given on command lines.
 *
 * Internal functions report failure as fmqa_status and, when given a non-NULL
 * fmqa_err, a message.  The public layer (runtime/) copies that message into the
 * context's per-thread last-error slot.  Nothing here allocates on error paths.
 */
#ifndef FMQA_COMMON_H
#define FMQA_COMMON_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "fastmqa.h"

#define FMQA_ERRMSG_CAP 1024

typedef struct fmqa_err {
    fmqa_status status;
    char msg[FMQA_ERRMSG_CAP];
} fmqa_err;

/* Records status and a printf-style message in err (if not NULL); returns status
 * so callers can write `return fmqa_err_set(err, FMQA_ERR_IO, "...")`. */
fmqa_status fmqa_err_set(fmqa_err *err, fmqa_status status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
fmqa_status fmqa_err_setv(fmqa_err *err, fmqa_status status, const char *fmt, va_list ap);
/* Prepends "prefix: " to the message already in err; returns err->status. */
fmqa_status fmqa_err_prefix(fmqa_err *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void fmqa_err_clear(fmqa_err *err);

/* 128-bit non-cryptographic identity hash (two FNV-1a-64 lanes with different
 * offsets, then mixed), as 32 lowercase hex digits plus NUL.  Incremental form
 * for hashing several buffers as one. */
#define FMQA_HASH_HEX 33
typedef struct fmqa_hasher {
    uint64_t a, b;
} fmqa_hasher;
void fmqa_hash_init(fmqa_hasher *h);
void fmqa_hash_update(fmqa_hasher *h, const void *data, size_t len);
/* Hashes the string and its terminating NUL, so ("ab","c") != ("a","bc"). */
void fmqa_hash_str(fmqa_hasher *h, const char *s);
void fmqa_hash_final(const fmqa_hasher *h, char out[FMQA_HASH_HEX]);
void fmqa_hash_hex(const void *data, size_t len, char out[FMQA_HASH_HEX]);

/* strdup that returns NULL on NULL input. */
char *fmqa_strdup(const char *s);
/* snprintf into a fixed buffer; returns 0 if it fit, -1 if truncated. */
int fmqa_strlcpy(char *dst, const char *src, size_t cap);

/* Numbers given on command lines and in environment variables: all of s, a
 * decimal integer (fmqa_parse_i64) or a finite number (fmqa_parse_f64, as
 * strtod reads it, no NaN or infinity), within [lo, hi].  0 on success; -1 for
 * NULL, empty, leading blanks, trailing junk ("5x"), overflow or a value
 * outside the range, leaving *out unchanged. */
int fmqa_parse_i64(const char *s, int64_t lo, int64_t hi, int64_t *out);
int fmqa_parse_f64(const char *s, double lo, double hi, double *out);

/* Static name of a KV scale granularity ("token_head", "head", "tensor"), as
 * problem specs spell it, or NULL if unknown. */
const char *fmqa_kv_scale_name(fmqa_kv_scale_granularity g);

/*
 * Checked int64 arithmetic, for every size, stride, offset and count computed
 * from caller input.  Each stores the exact result and returns 0, or returns -1
 * when it does not fit int64 (*out is then unspecified).  fmqa_prod64 is the
 * product of n factors.
 */
static inline int fmqa_add64(int64_t a, int64_t b, int64_t *out)
{
    return __builtin_add_overflow(a, b, out) ? -1 : 0;
}
static inline int fmqa_mul64(int64_t a, int64_t b, int64_t *out)
{
    return __builtin_mul_overflow(a, b, out) ? -1 : 0;
}
int fmqa_prod64(const int64_t *factors, int n, int64_t *out);

/* Cache slots one sequence has: sinks + window + draft_slots for a ring
 * (FMQA_FLAG_RING), else kv_len.  The ring part, window + draft_slots, is what
 * positions after the sinks wrap around (fmqa_ring_period). */
static inline int64_t fmqa_ring_period(const fmqa_problem *p)
{
    return (int64_t)p->window + p->draft_slots;
}
static inline int64_t fmqa_cache_slots(const fmqa_problem *p)
{
    return (p->flags & FMQA_FLAG_RING) ? p->sink_tokens + fmqa_ring_period(p) : p->kv_len;
}

/* Ring addressing, for every holder of (flags, sinks, period = window +
 * draft_slots): with FMQA_FLAG_RING in flags, position j of a sequence lives
 * in slot j while j < sinks, else in slot sinks + (j - sinks) % period, and a
 * sequence of len positions still holds j when j < sinks or j >= len - period
 * (the rest were overwritten); without it, slot j holds position j and every
 * position is held.  Whether j < len is the caller's. */
static inline int64_t fmqa_ring_slot(uint32_t flags, int64_t sinks, int64_t period, int64_t j)
{
    return !(flags & FMQA_FLAG_RING) || j < sinks ? j : sinks + (j - sinks) % period;
}
static inline int fmqa_ring_holds(uint32_t flags, int64_t sinks, int64_t period, int64_t len,
                                  int64_t j)
{
    return !(flags & FMQA_FLAG_RING) || j < sinks || j >= len - period;
}

/* Elements of an append problem's K row that RoPE rotates (0 without RoPE):
 * the rope part head_dim_qk - head_dim_v with FMQA_FLAG_LATENT (last in the
 * row), else rope_dim, 0 meaning all of head_dim_qk (first in the row).  The
 * runtime, the reference and append.lua agree on it. */
static inline int32_t fmqa_rope_extent(const fmqa_problem *p)
{
    if (p->rope == FMQA_ROPE_NONE)
        return 0;
    if (p->flags & FMQA_FLAG_LATENT)
        return p->head_dim_qk - p->head_dim_v;
    return p->rope_dim > 0 ? p->rope_dim : p->head_dim_qk;
}

/*
 * The byte model of decode's FMQA_FLAG_SCORES (docs/kernels.md, "Scores"), per
 * cached position and KV head: *added = 8 M + 8 bytes the option adds (4 M of
 * logits written by the main loop and read by the epilogue, the 4-byte score
 * read and written) against *read = (head_dim_qk + head_dim_v) EB bytes of K
 * and V decode reads (+ 8 for the two per-token floats of an 8-bit cache with
 * per-token scales); M = num_q_heads / num_kv_heads * q_tokens rows.  The
 * per-call cost is added / read; `fastmqa-bench static --scores` prints it and
 * fmqa_level_policy_preset amortises it.  A decode problem's fields only.
 */
static inline void fmqa_score_cost_bytes(const fmqa_problem *p, int64_t *added, int64_t *read)
{
    int64_t eb = fmqa_dtype_size(p->kv_dtype);
    int64_t m = (int64_t)(p->num_q_heads / p->num_kv_heads) * p->q_tokens;
    int per_token_scales = eb == 1 && p->kv_scale_granularity == FMQA_KV_SCALE_TOKEN_HEAD;
    *added = 8 * m + 8;
    *read = ((int64_t)p->head_dim_qk + p->head_dim_v) * eb + (per_token_scales ? 8 : 0);
}

/* The presets' score schedule for decode problem p (fmqa_level_policy_preset;
 * `fastmqa-bench static --scores` prints it): FMQA_LEVEL_COMPRESS_EVERY steps
 * between compactions and the most score steps whose amortised cost stays
 * within FMQA_LEVEL_SCORE_COST_PCT percent, else one score step every
 * ceil(c / 3%) steps.  Integer arithmetic, so the bound holds exactly:
 * added * steps * 100 <= 3 * read * every.  *every < 2^43 for any valid
 * problem (added < 2^39, read >= 2). */
static inline void fmqa_score_schedule(const fmqa_problem *p, int64_t *every, int64_t *steps)
{
    int64_t added, read;
    fmqa_score_cost_bytes(p, &added, &read);
    const int64_t allowed = FMQA_LEVEL_SCORE_COST_PCT * read; /* of 100 * added */
    int64_t s = allowed * FMQA_LEVEL_COMPRESS_EVERY / (100 * added);
    if (s >= 1) {
        *every = FMQA_LEVEL_COMPRESS_EVERY;
        *steps = s < FMQA_LEVEL_COMPRESS_EVERY ? s : FMQA_LEVEL_COMPRESS_EVERY;
    } else {
        *every = (100 * added + allowed - 1) / allowed;
        *steps = 1;
    }
}

/* Monotonic wall clock in milliseconds. */
double fmqa_now_ms(void);

#endif /* FMQA_COMMON_H */
