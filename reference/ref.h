/*
 * ref.h -- the float64 CPU reference of every FastMQA op.  It is the definition
 * every GPU kernel must match: the tests, the tuner (verification of each kernel
 * variant) and fastmqa-bench (accuracy report) all compare against it.  Written
 * for clarity and exactness, not speed; docs/reference.md repeats the semantics.
 *
 * Invariants and conventions:
 *  - All arithmetic is in double.  Values that live on the GPU in 16 or 8 bits
 *    enter through the conversion and gather functions below, which are exact
 *    (decoding) or round to nearest, ties to even (encoding).
 *  - Dense logical arrays are row-major with the last dimension contiguous:
 *      q [B, Tq, H, Dqk]   k [B, T, Hkv, Dqk]   v [B, T, Hkv, Dv]
 *      o [B, Tq, H, Dv]    lse [B, Tq, H]
 *    where T is the capacity (ref_attn_shape.kv_len) and sequence b uses the
 *    positions 0 .. kv_lens[b]-1.  Query head h reads KV head h / G, G = H / Hkv.
 *  - Functions that can fail return fmqa_status and, when err is not NULL, set a
 *    message naming the offending field.  On failure no output is written.  They
 *    never exit or abort.  Nothing here allocates memory the caller must free;
 *    functions that need scratch allocate and free it internally (and report
 *    FMQA_ERR_OUT_OF_MEMORY).  Every pointer belongs to the caller.
 *  - No global state: every function is safe to call from several threads.
 *
 * Which past tokens a query sees (ref_visible(), the heart of the semantics).
 * Query token t of sequence b sits at position p = kv_lens[b] - Tq + t, so the
 * cache already holds the query tokens' own K and V (Tq <= kv_lens[b] always).
 * Prefill is the same with Tq = kv_lens[b].  Position j is visible to (b, t) iff
 * all of the following hold:
 *    1. 0 <= j < kv_lens[b];
 *    2. FMQA_FLAG_CAUSAL: j <= p;
 *    3. window > 0: j > p - window, or j < sink_tokens (the sinks stay visible);
 *    4. FMQA_FLAG_TREE_MASK: if j >= kv_lens[b] - Tq (a draft position), bit
 *       (j - (kv_lens[b] - Tq)) of tree_mask[b * Tq + t] is set; positions
 *       before the drafts are unaffected by the mask;
 *    5. FMQA_FLAG_RING: the position is still held by the ring cache, i.e.
 *       j < sink_tokens or j >= kv_lens[b] - (window + draft_slots).  (Only
 *       matters when Tq > draft_slots + 1: an early draft's window may reach
 *       positions the ring already overwrote; they are not visible.)
 *    6. split range (kv_begin, kv_end, used for split-KV partials): kv_begin <= j
 *       and (kv_end == 0 or j < kv_end).
 * A query that sees no position gets o = 0 and lse = -inf.
 *
 * Score and output: s_j = sm_scale * (q . k_j), then with softcap c > 0
 * s_j = c * tanh(s_j / c); with learned sinks, head h's denominator also holds
 * exp(sinks[h]) (no value): lse = ln(exp(sinks[h]) + sum_visible exp(s_j)), else
 * lse = ln(sum_visible exp(s_j)); o = sum_visible exp(s_j - lse) v_j.  A query
 * that sees nothing gets o = 0 and lse = sinks[h] (-inf without sinks).
 * sm_scale == 0 means 1 / sqrt(Dqk).
 *
 * What a decode reads (ref_readable()): position j of sequence b only if rules
 * 1 and 5 hold and (window == 0, or j < sink_tokens, or j > kv_lens[b] - Tq -
 * window): the sinks and the union of the query tokens' windows, whatever the
 * causal or tree mask.  Rows, scales and page-table entries of other positions
 * are never read (an engine may have freed their pages: entry -1).
 */
#ifndef FMQA_REF_H
#define FMQA_REF_H

#include <stddef.h>
#include <stdint.h>

#include "fastmqa.h"
#include "fmqa_common.h"

/* ------------------------------------------------------------ conversions */

/*
 * Scalar encodings.  Encoders take a double (every float is one, so no separate
 * float versions are needed) and round once, to nearest with ties to even.
 *  f16:  IEEE binary16; overflow -> +-inf, subnormals kept, NaN -> 0x7E00 | sign.
 *  bf16: upper half of binary32 with RNE; overflow -> +-inf, NaN -> 0x7FC0 | sign.
 *  f32:  (float) cast, which is RNE.
 *  fp8 e4m3 (OCP FP8 spec): bias 7, no infinities, 0x7F / 0xFF are NaN, largest
 *        finite 448 (0x7E), smallest subnormal 2^-9 (0x01).  Finite values beyond
 *        448 in magnitude and +-inf saturate to +-448; NaN -> 0x7F | sign.
 *  int8: round to nearest even, then clamp to [-127, 127] (symmetric: -128 is
 *        never produced); NaN -> 0.
 * Decoders are exact.
 */
uint16_t ref_f16_from_double(double x);
double ref_f16_to_double(uint16_t bits);
uint16_t ref_bf16_from_double(double x);
double ref_bf16_to_double(uint16_t bits);
uint8_t ref_fp8_from_double(double x);
double ref_fp8_to_double(uint8_t bits);
int8_t ref_int8_from_double(double x);

/* x rounded to what a dtype can hold (F16, BF16, F32; INT8 / FP8_E4M3 as the
 * unscaled 8-bit number; any other value, e.g. 0, returns x unchanged).  Used to
 * make test inputs exactly representable. */
double ref_round_to(fmqa_dtype dtype, double x);

/*
 * Bulk conversion between a dtype's storage and doubles: n elements.  Storage
 * per dtype: F32 float, F16 / BF16 uint16_t bit patterns, INT8 int8_t,
 * FP8_E4M3 uint8_t bit patterns (8-bit values unscaled).
 */
fmqa_status ref_to_double(fmqa_dtype dtype, const void *src, int64_t n,
                          double *dst /* OUT [n] */, fmqa_err *err);
fmqa_status ref_from_double(fmqa_dtype dtype, const double *src, int64_t n,
                            void *dst /* OUT [n] elements of dtype */, fmqa_err *err);

/*
 * Per-token-per-head quantization of one K or V row of d elements (dtype INT8
 * or FP8_E4M3).  scale = max|x| / 127 (int8) or max|x| / 448 (fp8), rounded to
 * float because that is how it is stored; stored[i] = encode(x[i] / scale) with
 * the float scale.  A row of zeros gets scale 0 and stored zeros, so that
 * dequantization gives exact zeros.  Rows holding NaN or inf are rejected, and
 * so are finite rows whose scale would exceed FLT_MAX (max|x| > 127 FLT_MAX or
 * 448 FLT_MAX: double inputs only).  Dequantization is exact: value =
 * (double)scale * decode(stored).  For int8 the round-trip error is at most
 * scale / 2 per element when the scale is a normal float; a row with
 * max|x| < 127 * 2^-126 gets a subnormal or zero scale and the bound
 * scale / 2 + 127 * 2^-150 (its values may clamp at 127).
 */
/* The scale ref_quantize_row would store for x (no stored values written). */
fmqa_status ref_quant_scale(fmqa_dtype dtype, const double *x, int64_t d,
                            float *scale /* OUT */, fmqa_err *err);
fmqa_status ref_quantize_row(fmqa_dtype dtype, const double *x, int64_t d,
                             void *stored /* OUT [d] int8_t or uint8_t */,
                             float *scale /* OUT */, fmqa_err *err);
/* Quantization with a given scale (per-head or per-tensor scales, fixed by the
 * caller): stored[i] = encode(x[i] / scale) of the exact quotient, rounded to
 * nearest even and saturating to +-127 (int8) or +-448 (fp8).  scale must be
 * finite and > 0, x finite.  stored NULL: only checks. */
fmqa_status ref_quantize_row_fixed(fmqa_dtype dtype, const double *x, int64_t d, float scale,
                                   void *stored /* OUT [d] int8_t or uint8_t */,
                                   fmqa_err *err);
double ref_dequantize(fmqa_dtype dtype, const void *stored, int64_t i, float scale);

/* ------------------------------------------------------------ attention */

typedef struct ref_attn_shape {
    int64_t batch;           /* B                                              */
    int64_t q_tokens;        /* Tq: query tokens per sequence                  */
    int64_t kv_len;          /* T: capacity of k / v per sequence              */
    int64_t num_q_heads;     /* H                                              */
    int64_t num_kv_heads;    /* Hkv, divides H                                 */
    int64_t head_dim_qk;     /* Dqk                                            */
    int64_t head_dim_v;      /* Dv                                             */
    const int32_t *kv_lens;  /* [B], Tq <= kv_lens[b] <= T; NULL = all T       */
    uint32_t flags;          /* FMQA_FLAG_CAUSAL | TREE_MASK | RING (others
                                are ignored)                                   */
    const uint64_t *tree_mask; /* [B, Tq] with FMQA_FLAG_TREE_MASK (Tq <= 64) */
    int32_t window;          /* 0 = unlimited; RING needs window > 0           */
    int32_t sink_tokens;     /* with a window: first positions always visible  */
    int64_t kv_begin;        /* split range [kv_begin, kv_end); 0, 0 = all     */
    int64_t kv_end;
    double sm_scale;         /* 0 = 1 / sqrt(head_dim_qk)                      */
    const float *sinks;      /* [H] learned sink logits, natural log; NULL = none */
    double softcap;          /* > 0: scores capped to softcap tanh(s / softcap) */
    int32_t draft_slots;     /* RING: ring slots beyond the window             */
} ref_attn_shape;

/* Checks a shape (sizes, divisibility, kv_lens, tree mask size, window).  The
 * functions below call it first. */
fmqa_status ref_attn_shape_check(const ref_attn_shape *s, fmqa_err *err);

/* Position of query token t of sequence b: kv_lens[b] - Tq + t. */
int64_t ref_query_pos(const ref_attn_shape *s, int64_t b, int64_t t);

/* 1 if query token t of sequence b sees position j (rules 1-6 above), else 0.
 * The shape must have passed ref_attn_shape_check. */
int ref_visible(const ref_attn_shape *s, int64_t b, int64_t t, int64_t j);

/* 1 if a decode of sequence b reads position j (see "What a decode reads"
 * above): every visible position is readable, whatever the masks. */
int ref_readable(const ref_attn_shape *s, int64_t b, int64_t j);

/*
 * Attention for decode and prefill, MHA / GQA / MQA (any G), on the dense
 * logical arrays described at the top.  lse may be NULL.  k and v positions
 * that are not visible are never read (they may hold NaN).
 */
fmqa_status ref_attention(const ref_attn_shape *s, const double *q, const double *k,
                          const double *v, double *o /* OUT [B,Tq,H,Dv] */,
                          double *lse /* OUT [B,Tq,H], may be NULL */, fmqa_err *err);

/*
 * Heavy-hitter scores (H2O): for every sequence b, KV head hk and position j,
 *   scores[b, hk, j] += sum over query tokens t and the G heads h of hk of
 *                       exp(s[b,t,h,j] - lse[b,t,h])   (j visible to (b, t))
 * the attention mass j received, each row normalised by its own log-sum-exp.
 * scores [B, Hkv, T] is added to (IN/OUT); invisible positions are untouched.
 * k positions that are not visible are never read.
 */
fmqa_status ref_attention_scores(const ref_attn_shape *s, const double *q, const double *k,
                                 double *scores /* IN/OUT [B, Hkv, T] */, fmqa_err *err);

/*
 * Split-KV combine: n_splits partial results over disjoint position ranges,
 *   o_parts [n_splits, rows, dv], lse_parts [n_splits, rows]
 * become lse = ln(sum_i exp(lse_i)) and o = sum_i exp(lse_i - lse) o_i.  A part
 * with lse_i = -inf (saw nothing) contributes nothing; if all are -inf the row
 * gets o = 0, lse = -inf, as for an unsplit query that sees nothing.
 */
fmqa_status ref_combine(int64_t n_splits, int64_t rows, int64_t dv, const double *o_parts,
                        const double *lse_parts, double *o /* OUT [rows, dv] */,
                        double *lse /* OUT [rows], may be NULL */, fmqa_err *err);

/* ------------------------------------------------------------ caches */

/*
 * A physical tensor of rows of head_dim elements, addressed as in
 * fmqa_decode_args (strides in elements):
 *  - slot of position j: with FMQA_FLAG_RING, j if j < sink_tokens, else
 *    sink_tokens + (j - sink_tokens) % (window + draft_slots); otherwise j.
 *  - contiguous: row (b, j, h) starts at b*stride_batch + slot*stride_token +
 *    h*stride_head.
 *  - FMQA_FLAG_PAGED: page = page_table[b*page_table_stride + slot/page_size];
 *    row at page*stride_batch + (slot % page_size)*stride_token + h*stride_head.
 *  - 8-bit dtypes: the row's scale is at the same address computed with the
 *    scale_stride_* (batch meaning page when paged); value = scale * stored.
 *    fixed_scale: the scales are the caller's (per head or per tensor: the
 *    strides that granularity ignores are 0), so ref_append quantizes with
 *    them (ref_quantize_row_fixed) and does not write them.
 * The same view describes q and o tensors (flags 0, "token" = query token).
 * data and scale are written only by ref_append; everything else reads them.
 */
typedef struct ref_cache_view {
    fmqa_dtype dtype;        /* storage as in ref_to_double                    */
    void *data;
    int64_t stride_batch, stride_token, stride_head;
    float *scale;            /* INT8 / FP8_E4M3 only, else NULL                */
    int64_t scale_stride_batch, scale_stride_token, scale_stride_head;
    int fixed_scale;         /* scales given, not computed (see above)         */
    uint32_t flags;          /* FMQA_FLAG_PAGED | FMQA_FLAG_RING               */
    const int32_t *page_table; /* [B, page_table_stride] with PAGED            */
    int64_t page_table_stride;
    int32_t page_size;       /* tokens per page with PAGED                     */
    int32_t window;          /* ring slots after the sinks with RING: window + */
    int32_t sink_tokens;
    int32_t draft_slots;     /* draft_slots                                    */
} ref_cache_view;

/* Slot of position j (ring mapping, or j). */
int64_t ref_cache_slot(const ref_cache_view *c, int64_t j);

/*
 * Gathers a physical tensor into the dense logical array
 *   out [batch, tokens, heads, head_dim]
 * decoding 16-bit values and dequantizing 8-bit ones exactly.  Positions the
 * cache does not hold (j >= kv_lens[b], ring slots already overwritten: sinks <=
 * j < kv_lens[b] - window - draft_slots) are set to NaN so that any use of them
 * shows.
 * kv_lens may be NULL (all positions held).  Page table entries are checked
 * against n_pages when n_pages > 0.
 */
fmqa_status ref_cache_gather(const ref_cache_view *c, int64_t batch, int64_t tokens,
                             int64_t heads, int64_t head_dim, const int32_t *kv_lens,
                             int64_t n_pages, double *out /* OUT */, fmqa_err *err);

/* ------------------------------------------------------------ compression */

/*
 * The slots fmqa_compress keeps for one sequence and KV head hk (fastmqa.h,
 * "compress"): n slots, scores of every head of the sequence at scores + h *
 * head_stride (floats, as the caller's buffer holds them; may be NULL when
 * policy->heavy == 0).  Keys are computed in float in the kernel's order
 * (per-sequence sums head 0 first, AVG sums ascending, then one division), so
 * the choice is exact: the heavy candidates with the largest keys, equal keys
 * by smaller slot.  Writes kept[0 .. *n_kept) ascending, *n_kept = min(n,
 * budget).  The policy is checked as fmqa_compress checks it.
 */
fmqa_status ref_compress_select(const fmqa_compress_policy *policy, int64_t n,
                                int64_t num_kv_heads, int64_t hk, const float *scores,
                                int64_t head_stride, int32_t *kept /* OUT [min(n, budget)] */,
                                int64_t *n_kept /* OUT */, fmqa_err *err);

/* ------------------------------------------------------------ RoPE */

/*
 * Rotary embedding of one row x[0..d-1] (d even) at position pos, base theta
 * (0 = 10000).  Pair i (0 <= i < d/2) has frequency theta^(-2i/d) and angle
 * pos * freq; it is (x[i], x[i + d/2]) for FMQA_ROPE_NEOX and (x[2i], x[2i+1])
 * for FMQA_ROPE_GPTJ, rotated as (a, b) -> (a cos - b sin, b cos + a sin).
 * FMQA_ROPE_NONE leaves x unchanged.
 */
fmqa_status ref_rope_row(fmqa_rope mode, double *x /* IN/OUT [d] */, int64_t d, double pos,
                         double theta, fmqa_err *err);
/* The same with the angles given by a table row cs (fmqa_append_args's
 * rope_cos_sin at the position): pair i rotated by cos = cs[i], sin =
 * cs[d/2 + i], taken as they are (a YaRN attention factor folded into them
 * scales the pair). */
fmqa_status ref_rope_row_cs(fmqa_rope mode, double *x /* IN/OUT [d] */, int64_t d,
                            const float *cs, fmqa_err *err);

/*
 * Append: writes n_new tokens per sequence into the K and V caches at positions
 * start_pos[b] + t, as fmqa_append does: RoPE (mode, theta or the table) on the
 * rotated part of K at its position, then each (token, head) row is stored in
 * the cache's dtype (16-bit: rounded to nearest even; 8-bit: ref_quantize_row,
 * scale written) at the slot / page of the views.  If q is not NULL, RoPE is
 * applied to it in place at the same positions (in double: the kernel then
 * rounds to q_dtype).
 *   k_new [B, n_new, Hkv, Dk], v_new [B, n_new, Hkv, Dv], q [B, n_new, H, Dq]
 * with Dq = Dk, or the rotated part's size with latent.
 * The rotated part is the first rope_dim elements of a row (ref_rope_row over
 * them: frequencies theta^(-2i/rope_dim)), or with latent (an MLA latent
 * cache) the last rope_dim elements of a K row, q rows holding only them, and
 * no V at all (v_new and the v cache are not used and may be NULL).  k_new
 * NULL: q alone is rotated, the caches are not used.  With a
 * table (rope_cos_sin), the angles of position pos are its row pos
 * (ref_rope_row_cs) and a token at pos >= rope_cos_sin_len is not written
 * (nor its q rows rotated).
 */
typedef struct ref_append_shape {
    int64_t batch, n_new, num_q_heads, num_kv_heads, head_dim_k, head_dim_v;
    const int32_t *start_pos; /* [B], >= 0                                     */
    fmqa_rope rope;
    double rope_theta;        /* 0 = 10000                                     */
    int64_t n_pages;          /* > 0: page table entries are checked < n_pages */
    int64_t rope_dim;         /* rotated elements, 0 = head_dim_k (not latent) */
    int latent;               /* MLA latent cache: rotated part last, no V     */
    const float *rope_cos_sin;  /* [rope_cos_sin_len, stride] or NULL = theta  */
    int64_t rope_cos_sin_stride, rope_cos_sin_len;
    const int32_t *slot_mapping; /* [B * n_new] or NULL: token (b, t) goes to
                                    page slot / page_size (the views' page
                                    size), row slot % page_size, whatever its
                                    position; -1: K and V not written (q still
                                    rotated).  Replaces the page table.     */
    const int32_t *rope_pos;  /* [B] RoPE at rope_pos[b] + t; NULL = start_pos */
} ref_append_shape;

fmqa_status ref_append(const ref_append_shape *s, const double *k_new, const double *v_new,
                       double *q /* IN/OUT, may be NULL */, const ref_cache_view *k_cache,
                       const ref_cache_view *v_cache, fmqa_err *err);

/* ------------------------------------------------------------ public-API level */

/*
 * The reference of fmqa_decode / fmqa_append on host copies: every pointer in
 * args must be a host pointer to the same data the GPU call gets (q, caches,
 * scales, kv_lens, page table, tree mask).  ref_decode writes dense double
 * o [B, Tq, H, Dv] and lse [B, Tq, H] (lse may be NULL) and ignores args->o,
 * lse and workspace.  ref_append_args writes the host caches in args and
 * RoPEs args->q in place (rounded back to q_dtype); a latent append's rope
 * part comes from args->k_pe_new when it is set (k_new rows: the latent).  n_pages bounds the page
 * table when paged (0 = unchecked).  ref_decode reads only the positions
 * ref_readable() names (others' rows and page-table entries may be anything,
 * -1 included) and takes problem->logit_softcap, draft_slots and args->sinks.
 * With FMQA_FLAG_PAGE_CSR the CSR table (page_indptr, page_indices and, for
 * ref_decode, last_page_len; kv_lens NULL) is checked and read as the 2-D
 * table ref_csr_table makes; FMQA_FLAG_SLOT_MAPPING appends by
 * args->slot_mapping (ref_append_shape.slot_mapping; slots must lie below
 * n_pages * page_size when n_pages > 0, and be distinct, else which write
 * lands is unspecified).
 * ref_decode also serves FMQA_OP_MLA_DECODE: pass v = k with v's strides equal
 * to k's, and each V row is the first head_dim_v (= d_c) entries of the latent
 * K row; with an 8-bit cache the latent has one scale, so v_scale must be
 * k_scale with the same strides (anything else is rejected).
 */
fmqa_status ref_decode(const fmqa_problem *p, const fmqa_decode_args *args, int64_t n_pages,
                       double *o /* OUT */, double *lse /* OUT, may be NULL */,
                       fmqa_err *err);
/* The reference of FMQA_FLAG_SCORES: adds ref_attention_scores of the call to
 * scores [B, Hkv, slots] (dense, slots = kv_len, or sink_tokens + window +
 * draft_slots with
 * FMQA_FLAG_RING: each position's mass lands on its slot). */
fmqa_status ref_decode_scores(const fmqa_problem *p, const fmqa_decode_args *args, int64_t n_pages,
                              double *scores /* IN/OUT */, fmqa_err *err);
fmqa_status ref_append_args(const fmqa_problem *p, const fmqa_append_args *args,
                            int64_t n_pages, fmqa_err *err);

/*
 * A CSR page table (FMQA_FLAG_PAGE_CSR, fastmqa.h) as the 2-D table it
 * stands for: sequence b's n_b = indptr[b + 1] - indptr[b] pages from
 * indices[indptr[b]] become row b of *table [batch, *stride] (*stride = the
 * most pages a sequence has, at least 1; unused entries -1) and, when
 * last_page_len is not NULL, its length (n_b - 1) * page_size +
 * last_page_len[b] (0 without pages) lens[b].  Errors name the bad entry:
 * indptr[0] < 0 or decreasing, an index < -1 or >= n_pages (when n_pages >
 * 0; -1 marks a freed page that must then never be read), last_page_len[b]
 * outside 1..page_size for a sequence with pages, more pages than max_pages.
 * *table (malloc'ed, the caller frees it) is set only on success.
 */
fmqa_status ref_csr_table(int64_t batch, int32_t page_size, int64_t max_pages,
                          const int32_t *indptr, const int32_t *indices,
                          const int32_t *last_page_len, int64_t n_pages,
                          int32_t **table /* OUT */, int64_t *stride /* OUT */,
                          int32_t *lens /* OUT [batch], may be NULL */, fmqa_err *err);

/* The reference of fmqa_prefill on host copies (as ref_decode): writes dense
 * double o [total_q, H, Dv] and lse [total_q, H] (may be NULL), total_q =
 * cu_seqlens_q[batch].  Sequence b's tokens are rows cu_seqlens_q[b] .. of q
 * and, without FMQA_FLAG_KV_CACHE, of k and v; with it, the cache holds
 * kv_lens[b] positions, the new tokens last.  cu_seqlens_q and kv_lens are
 * checked against the problem's bounds (fastmqa.h). */
fmqa_status ref_prefill(const fmqa_problem *p, const fmqa_prefill_args *args, int64_t n_pages,
                        double *o /* OUT */, double *lse /* OUT, may be NULL */,
                        fmqa_err *err);
/* The reference of a prefill's FMQA_FLAG_SCORES (fastmqa.h, "Observation-
 * window scores"): adds ref_attention_scores of each sequence's last
 * min(args->scores_window, Tq_b) new tokens (the observation window; all of
 * them when fewer) to scores [B, Hkv, kv_len] (dense, slot = position).  Its
 * args->scores and strides are ignored; scores_window must be >= 1. */
fmqa_status ref_prefill_scores(const fmqa_problem *p, const fmqa_prefill_args *args,
                               int64_t n_pages, double *scores /* IN/OUT */, fmqa_err *err);

/* ------------------------------------------------------------ MLA */

/*
 * MLA decode with absorbed weights (DeepSeek style).  The shape is that of the
 * absorbed problem: num_kv_heads = 1, head_dim_v = d_c (latent), head_dim_qk =
 * d_c + d_r (latent + rope part).  Per token the cache holds c_kv [d_c] and
 * k_rope [d_r], shared by all heads; per head the query is q_abs [d_c] (=
 * W_UK^T q_nope) and q_rope [d_r].
 *   score_j = sm_scale * (q_abs . c_kv_j + q_rope . k_rope_j)
 *   o_latent = softmax . c_kv   (V is the latent itself)
 * sm_scale 0 means 1/sqrt(d_c + d_r); DeepSeek passes 1/sqrt(d_nope + d_r).
 *   q_abs [B,Tq,H,d_c] q_rope [B,Tq,H,d_r] c_kv [B,T,d_c] k_rope [B,T,d_r]
 */
fmqa_status ref_mla_decode(const ref_attn_shape *s, const double *q_abs, const double *q_rope,
                           const double *c_kv, const double *k_rope,
                           double *o_latent /* OUT [B,Tq,H,d_c] */,
                           double *lse /* OUT, may be NULL */, fmqa_err *err);

/* Up-projections of MLA: k_nope = W_UK[h] c, v = W_UV[h] c. */
typedef struct ref_mla_weights {
    int64_t num_heads, latent_dim, nope_dim, v_dim;
    const double *w_uk;   /* [H, nope_dim, latent_dim] */
    const double *w_uv;   /* [H, v_dim, latent_dim]    */
} ref_mla_weights;

/* q_abs[n,h] = W_UK[h]^T q_nope[n,h]: q_nope [n, H, nope_dim] -> [n, H, d_c]. */
fmqa_status ref_mla_absorb_q(const ref_mla_weights *w, int64_t n, const double *q_nope,
                             double *q_abs /* OUT */, fmqa_err *err);
/* o[n,h] = W_UV[h] o_latent[n,h]: [n, H, d_c] -> [n, H, v_dim]. */
fmqa_status ref_mla_up_v(const ref_mla_weights *w, int64_t n, const double *o_latent,
                         double *o /* OUT */, fmqa_err *err);

/*
 * The naive (unabsorbed) MLA: per head, k = [W_UK c_kv | k_rope], v = W_UV c_kv,
 * q = [q_nope | q_rope], ordinary MHA.  s is the absorbed shape (as above, its
 * sm_scale default is the same) and the result equals ref_mla_decode followed
 * by ref_mla_up_v up to rounding.  q_nope [B,Tq,H,nope_dim], o [B,Tq,H,v_dim].
 */
fmqa_status ref_mla_naive(const ref_attn_shape *s, const ref_mla_weights *w,
                          const double *q_nope, const double *q_rope, const double *c_kv,
                          const double *k_rope, double *o /* OUT */,
                          double *lse /* OUT, may be NULL */, fmqa_err *err);

/* ------------------------------------------------------------ comparison */

/*
 * Comparison of n output elements (storage of dtype F32, F16 or BF16, as in
 * ref_to_double) with the reference.  NaN never passes: a NaN in either array,
 * or an infinity not matched by the same infinity, counts in bad and makes
 * rel_l2 and max_abs infinite.  Equal infinities (lse = -inf of an empty
 * query) count as equal.  rel_l2 = ||out - ref||_2 / ||ref||_2 over the finite
 * pairs (0 when both norms are 0, inf when only ||ref|| is 0).
 */
typedef struct ref_cmp {
    double rel_l2;
    double max_abs;
    int64_t worst;    /* index of the largest |out - ref| (or first bad), -1 if n 0 */
    int64_t bad;      /* NaN / unmatched infinity count                         */
    int64_t n;
} ref_cmp;

fmqa_status ref_compare(fmqa_dtype dtype, const void *out, const double *ref, int64_t n,
                        ref_cmp *res /* OUT */, fmqa_err *err);
/* 1 when bad == 0, rel_l2 <= rel_tol and max_abs <= abs_tol (abs_tol < 0: not
 * checked). */
int ref_cmp_ok(const ref_cmp *res, double rel_tol, double abs_tol);

/* Poison: fill and count elements equal to a bit pattern (elem_size 1, 2, 4 or
 * 8 bytes; the pattern's low elem_size bytes, host byte order).  The patterns
 * below are NaN in their type, so an unwritten element also fails ref_compare. */
#define REF_POISON_16 0xFFFFu       /* f16 and bf16 NaN */
#define REF_POISON_32 0xFFFFFFFFu   /* f32 NaN          */
void ref_poison_fill(void *data, size_t elem_size, int64_t n, uint64_t pattern);
int64_t ref_poison_count(const void *data, size_t elem_size, int64_t n, uint64_t pattern);

/* ------------------------------------------------------------ RNG */

/* xoshiro256** seeded through splitmix64: deterministic for a seed on every
 * platform.  Tests seed from ref_seed_from_time() and print the seed. */
typedef struct ref_rng {
    uint64_t s[4];
} ref_rng;

void ref_rng_seed(ref_rng *r, uint64_t seed);
uint64_t ref_rng_next(ref_rng *r);
double ref_rng_uniform(ref_rng *r);   /* [0, 1), 53 random bits   */
double ref_rng_gauss(ref_rng *r);     /* standard normal (Box-Muller) */
/* n draws of stddev * N(0,1), each rounded by ref_round_to(dtype) so that it
 * is exactly representable; dtype 0 keeps the full doubles. */
void ref_rng_fill(ref_rng *r, double *x, int64_t n, double stddev, fmqa_dtype dtype);
uint64_t ref_seed_from_time(void);

#endif /* FMQA_REF_H */
