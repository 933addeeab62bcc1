/*
 * append_check.h -- the host side of an fmqa_append test, shared by the GPU
 * test (tests/gpu/test_append.c) and the CPU emulation of the kernel
 * (tests/unit/test_append_emu.c), so that both assert the same things.
 *
 * append_run_init builds one case: fresh random k_new / v_new / q (Gaussian,
 * rounded to the input dtype, token stride padded by 16 elements; for an
 * 8-bit cache every K and V head row also holds exact rounding ties of
 * its quantization, see plant_ties), caches and
 * scales filled with a poison byte, a shuffled page table that never uses
 * pages 0 and 1, and runs ref_append_args on copies.  The caller then runs the
 * call under test on `out` copies of the same initial bytes (k.out, v.out and
 * their scales, q_out), by pointers to them (append_run_host_args) or by
 * uploading `init` and downloading into `out`, and append_run_check compares:
 *  - every row the call must write (ring tokens overwritten later in the same
 *    call excluded) matches the reference.  Unrotated rows (V, K without RoPE)
 *    bit for bit, 8-bit scales and codes included: one rounding of an exact
 *    value is all there is.  Rotated rows (K, and q when passed) within the
 *    rotation's error bound e(pos) (rope_err) times the pair's norm: 16-bit
 *    values within one ulp plus that (near cancellation a ulp is smaller than
 *    the fp32 rotation error), 8-bit scales within sqrt(2) e relative and
 *    codes equal except adjacent codes where the reference's x / scale lies
 *    within QMAX * 3e of their rounding tie;
 *  - every other byte of the caches and scales still holds the poison;
 *  - q is rotated like K when passed with RoPE, unchanged otherwise.
 * Failures cr_assert (cr_expect for the counts of one-ulp differences).
 */
#ifndef FMQA_APPEND_CHECK_H
#define FMQA_APPEND_CHECK_H

#include <stddef.h>
#include <stdint.h>

#include "fastmqa.h"

/* A shape, a layout and per-sequence start positions. */
typedef struct append_case {
    const char *name;
    int32_t batch, heads, kv_heads, d, dv, n_new, kv_len;
    uint32_t flags; /* FMQA_FLAG_PAGED, FMQA_FLAG_RING */
    int32_t page, window, sinks;
    int32_t start[3]; /* [batch] */
} append_case;

/* One cache (K or V): its bytes and scales before the call (init), after the
 * reference (ref) and after the call under test (out). */
typedef struct append_side {
    size_t bytes, scale_bytes; /* scale_bytes 0 for a 16-bit cache */
    uint8_t *init, *ref, *out;
    float *sinit, *sref, *sout;
} append_side;

typedef struct append_run {
    char name[160];
    const append_case *c;
    fmqa_problem p;
    fmqa_dtype in, kv;
    fmqa_rope rope;
    int rope_q;                   /* q passed to the call (else NULL)           */
    const int32_t *rope_pos;      /* [batch] RoPE positions, NULL = start       */
    void *k_new, *v_new, *q;      /* inputs; q before the call                  */
    size_t k_new_bytes, v_new_bytes, q_bytes;
    void *q_ref, *q_out;          /* q after the reference, after the call      */
    int32_t *table;               /* [batch * pages_seq], NULL unless paged     */
    int64_t n_blk, blk_rows, pages_seq;
    append_side k, v;
    /* Strides and rope_theta of the call; every pointer NULL (the caller's). */
    fmqa_append_args args;
} append_run;

/* The fmqa_problem of a case with these dtypes and RoPE mode. */
void append_case_problem(const append_case *c, fmqa_dtype in, fmqa_dtype kv, fmqa_rope rope,
                         fmqa_problem *p /* OUT */);
void append_run_init(append_run *r /* OUT */, const append_case *c, fmqa_dtype in, fmqa_dtype kv,
                     fmqa_rope rope, int rope_q);
/* The same with fmqa_append_args.rope_pos (a compacted cache): rows rotated at
 * rope_pos[b] + t, written at start[b] + t. */
void append_run_init_at(append_run *r /* OUT */, const append_case *c, fmqa_dtype in,
                        fmqa_dtype kv, fmqa_rope rope, int rope_q, const int32_t *rope_pos);
/* r->args with host pointers to the inputs and to the `out` buffers. */
fmqa_append_args append_run_host_args(append_run *r);
void append_run_check(const append_run *r);
void append_run_free(append_run *r);

#endif
