/*
 * fmqa_pages.cuh -- where the pages of a paged cache are, and how long a
 * sequence is, for the templates that read fmqa_decode_params (decode,
 * mla_decode).  The including template defines CSR (0/1, from its Lua):
 * without it a sequence's page j is page_table[b * pt_stride + j] and its
 * length kv_lens[b]; with it (FMQA_FLAG_PAGE_CSR, FlashInfer's paged_kv) page j
 * is page_indices[page_indptr[b] + j] and the length (n_b - 1) * PS +
 * last_page_len[b] of its n_b pages (0 without pages).  PS is the page size.
 * The arrays are the caller's, trusted as kv_lens are (fastmqa.h).
 */
#ifndef FMQA_PAGES_CUH
#define FMQA_PAGES_CUH

#include "fmqa_params.h"

#ifndef CSR
#error "fmqa_pages.cuh: the template's Lua must define CSR"
#endif

/* The page holding slot of sequence b (pages of PS tokens). */
template <int PS>
static __device__ __forceinline__ long long page_of(const fmqa_decode_params &p, int b, int slot) {
    if (CSR) return __ldg(p.page_indices + __ldg(p.page_indptr + b) + (unsigned)slot / PS);
    return __ldg(p.page_table + b * p.pt_stride + (unsigned)slot / PS);
}

/* Sequence b's length, clamped into 0..kv_len_max (a CSR last page into
 * 1..PS): the lengths are the caller's device data, which the host cannot
 * check, and one out of range must not make a kernel read rows, or add
 * scores, past the sequence's cache (docs/reference.md, "Device data the
 * library does not read"). */
template <int PS>
static __device__ __forceinline__ int seq_len(const fmqa_decode_params &p, int b) {
    long long len = CSR ? 0 : p.kv_lens[b];
    if (CSR) {
        const int n = __ldg(p.page_indptr + b + 1) - __ldg(p.page_indptr + b);
        len = n > 0 ? (long long)(n - 1) * PS + min(max(__ldg(p.last_page_len + b), 1), PS) : 0;
    }
    return (int)min(max(len, 0ll), (long long)p.kv_len_max);
}

#endif
