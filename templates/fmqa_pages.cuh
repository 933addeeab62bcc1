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

/* Sequence b's length. */
template <int PS>
static __device__ __forceinline__ int seq_len(const fmqa_decode_params &p, int b) {
    if (!CSR) return p.kv_lens[b];
    const int n = __ldg(p.page_indptr + b + 1) - __ldg(p.page_indptr + b);
    return n > 0 ? (n - 1) * PS + __ldg(p.last_page_len + b) : 0;
}

#endif
