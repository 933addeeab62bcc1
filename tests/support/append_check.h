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
 * A case may rotate part of the row (rope_dim), be an MLA latent append
 * (latent: one K row of d = latent dv + rope part, no V, q rows of the rope
 * part; latent 2: the call gets the rope part from its own tensor, k_pe_new,
 * and k_new rows whose rope part is NaN, so reading it there fails), and take its angles from a cos/sin table (rope_table): Llama-3's
 * scaling of theta 10000 (pairs below a quarter of the rotated elements keep
 * their frequency, the rest divided by 8), computed in double, stored as
 * floats; with 2 the table is one position short of the furthest token, which
 * must then not be written.  A q_only case passes no new tokens (k_new and
 * the caches NULL): q is rotated and every cache byte keeps its poison.
 * A case with rope_pos writes token t at start[b] + t and rotates it (and q)
 * at rope_pos[b] + t, as after a compaction.
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
    uint32_t flags; /* FMQA_FLAG_PAGED, FMQA_FLAG_RING; FMQA_FLAG_PAGE_CSR or
                       FMQA_FLAG_SLOT_MAPPING: the shuffled table as a CSR
                       table (indptr from 1) or as one slot per token (every
                       5th token -1, not written), with K and its scales HND */
    int32_t page, window, sinks;
    int32_t start[3]; /* [batch] */
    int32_t rope_dim; /* problem.rope_dim (0: the whole row)                  */
    int latent;       /* FMQA_FLAG_LATENT; 2: the call passes the rope part
                         apart (k_pe_new), host buffers only                  */
    int rope_table;   /* 0 theta; 1 a cos/sin table; 2 one position short      */
    int q_only;       /* k_new NULL: the call rotates q alone, writes no cache  */
    fmqa_kv_scale_granularity scale; /* 8-bit caches: per head or per tensor
                                        (fixed, the test's: K's heads 1 float
                                        apart, V's 3; the ignored strides odd
                                        garbage), default per token and head */
    const int32_t *rope_pos; /* [batch] RoPE positions (fmqa_append_args.rope_pos:
                                a cache compacted by fmqa_compress), NULL =
                                start                                       */
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
    void *k_new, *v_new, *q;      /* inputs; q before the call                  */
    size_t k_new_bytes, v_new_bytes, q_bytes;
    void *q_ref, *q_out;          /* q after the reference, after the call      */
    int32_t *table;               /* [batch * pages_seq], NULL unless paged     */
    int32_t *csr;                 /* CSR: indptr [batch + 1], then the indices  */
    int32_t *slots;               /* SLOT_MAPPING: [batch * n_new]              */
    size_t csr_bytes, slots_bytes;
    void *k_lat, *k_pe;           /* latent 2: k_new rows with their rope part
                                     poisoned (NaN), and that part apart      */
    float *rope_cs;               /* [rope_cs_len, rot], NULL on the theta path */
    int64_t rope_cs_len;
    int64_t rot, dq;              /* rotated elements of K; elements of a q row */
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
/* The buffers of a call (host, or device copies of the run's): inputs, the
 * caches and scales, start positions, page table, RoPE table, RoPE positions. */
typedef struct append_bufs {
    void *k_new, *v_new, *q, *k, *v;
    float *k_scale, *v_scale;
    const int32_t *start_pos, *page_table;
    const float *rope_cos_sin;
    const int32_t *csr, *slots;   /* copies of the run's csr and slots          */
    const int32_t *rope_pos;
} append_bufs;
/* r->args with these buffers, as the case calls: no V for a latent cache, no
 * tokens or caches for a q_only one, q only when r->rope_q, scales only for an
 * 8-bit cache, the tables only when the case has them.  A latent 2 case's
 * rope part apart is set by append_run_host_args only. */
fmqa_append_args append_run_args(const append_run *r, const append_bufs *b);
/* append_run_args with host pointers to the inputs and to the `out` buffers. */
fmqa_append_args append_run_host_args(append_run *r);
void append_run_check(const append_run *r);
void append_run_free(append_run *r);

/*
 * The CPU emulator's run of one case (tests/support/append_emu.c): the
 * template's default config for the problem with the parameters of `config`
 * ("THREADS_PER_ROW=16,VEC=2", or "") overriding it, which valid() must
 * accept; compiled once, run with q passed and without (q_only cases: with
 * q only), each run checked by append_run_check.  Skips the test without a C++ compiler.
 */
void append_emu_case(const append_case *c, fmqa_dtype in, fmqa_dtype kv, fmqa_rope rope,
                     const char *config);

#endif
