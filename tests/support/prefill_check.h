/*
 * prefill_check.h -- the host side of an fmqa_prefill test, shared by the GPU
 * test (tests/gpu/test_prefill.c) and the CPU emulation of the kernel
 * (tests/unit/test_prefill_emu.c), so that both run the same inputs and
 * assert the same things.
 *
 * prefill_inputs_make builds one case on the host: cu_seqlens_q and kv_lens
 * from the per-sequence counts, fresh random q (token rows padded by 8
 * elements), K and V either packed new tokens (K rows padded, V laid out
 * [hk][token][d + 8]) or a cache (K [outer][slot][hk][d], V
 * [outer][hk][slot][d + 16 bytes], scales likewise unlike each other; paged:
 * a shuffled page table with unused pages), so that a stride mixed up reads
 * the wrong row.  Every buffer is guarded (fmqa_test_guarded): what no
 * position holds, the padding and the outputs o and lse are NaN, and a read
 * past a buffer faults.  The args hold host pointers; prefill_inputs_buffer
 * lists the buffers so that a GPU test can upload them and point a copy of
 * the args at the device.  prefill_inputs_check compares o and lse with
 * ref_prefill (NaN never passes: an unwritten element fails) and prints one
 * line per case.
 */
#ifndef FMQA_PREFILL_CHECK_H
#define FMQA_PREFILL_CHECK_H

#include <stddef.h>
#include <stdint.h>

#include "fastmqa.h"
#include "ref.h"

#define PREFILL_MAX_SEQS 8
#define PREFILL_MAX_BUFS 16

typedef struct prefill_inputs {
    fmqa_prefill_args a;  /* host pointers                                 */
    int64_t total;        /* cu_seqlens_q[batch]                           */
    int64_t n_pages;      /* pages of a paged cache, else 0               */
    int n_bufs;           /* the buffers a's pointer fields point at       */
    size_t field[PREFILL_MAX_BUFS]; /* offsetof the field in fmqa_prefill_args */
    size_t bytes[PREFILL_MAX_BUFS];
    float *scores_start;  /* prefill_inputs_scores: the buffer as it started */
} prefill_inputs;

/* tq[b] new tokens per sequence; with FMQA_FLAG_KV_CACHE cached[b] positions
 * before them (kv_lens[b] = cached[b] + tq[b]).  Asserts on failure. */
void prefill_inputs_make(const fmqa_problem *p, const int32_t *tq, const int32_t *cached,
                         ref_rng *r, prefill_inputs *in /* OUT */);

/* Gives in learned sink logits, one per query head, drawn from [-4, 8) as
 * decode's emulator inputs. */
void prefill_inputs_sinks(const fmqa_problem *p, ref_rng *r, prefill_inputs *in);

/* FMQA_FLAG_SCORES: gives in a scores buffer [B, Hkv, kv_len + 8] (listed for
 * upload) holding random earlier scores in every slot and NaN in the 8
 * floats of padding after each row, and the observation window. */
void prefill_inputs_scores(const fmqa_problem *p, int32_t window, ref_rng *r, prefill_inputs *in);

/* scores (as in->a.scores is laid out, after the call) against the start
 * plus ref_prefill_scores: within 2e-3 relative (floor 1e-3) in each
 * sequence's slots, bitwise the start past them and in the padding.  what
 * names the case. */
void prefill_inputs_check_scores(const fmqa_problem *p, const prefill_inputs *in,
                                 const float *scores, const char *what);

/* o (out_dtype storage [total, H, dv]) and lse ([total, H] floats, read with
 * FMQA_FLAG_LSE) against ref_prefill on in's host inputs: relative L2 within
 * 1e-3 (f16) or 8e-3 (bf16 anywhere), LSE within 1e-4.  what names the case. */
void prefill_inputs_check(const fmqa_problem *p, const prefill_inputs *in, const void *o,
                          const float *lse, const char *what);

#endif
