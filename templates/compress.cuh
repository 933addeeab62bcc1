/*
 * compress.cuh -- KV-cache compression (fmqa_compress): choose the slots a
 * sequence keeps (sinks, recent slots, heavy hitters by pooled score) and move
 * them to the front of its cache in place.  compress.lua chooses the defines
 * and the launch; fastmqa.h gives the semantics, reference/ref_compress.c the
 * exact definition of the choice.
 *
 * Problem defines: HEAD_DIM (d = dv), KV_FMT (0 f16, 1 bf16, 2 int8, 3 fp8:
 * only the element size matters), PAGED, PAGE_SIZE.  Threads: NT.
 *
 * Two kernels, one after the other on the stream:
 *  - fmqa_compress_keys, grid (ceil(kv_len / NT), num_kv_heads, batch): the
 *    key of every slot, an unsigned that orders like the pooled float score
 *    (order_key), into ws_key [b, hk, slot].  Separate because a per-sequence
 *    choice reads every head's scores, which the second kernel moves.
 *  - fmqa_compress_move, grid (1, num_kv_heads, batch): one CTA per (sequence,
 *    head) chooses and moves.  Choice: the heavy-th largest key T among the
 *    candidates by a bisection over the 32 key bits (each step a block-wide
 *    count); keys > T are kept, and of the keys == T the first ones in slot
 *    order, as many as remain (a block-wide scan); sinks and recent slots
 *    always.  The kept slots, ascending, go to ws_sel (a scan gives each its
 *    destination).  Moves: kept row i comes from sel[i] >= i, so chunks of
 *    destinations in ascending order, each loaded entirely (registers) before
 *    a barrier and stored after it, never overwrite a source still to be
 *    read: a later chunk's sources lie at or after its destinations, beyond
 *    this chunk's.  Rows that stay where they are (sinks) are not touched.
 *    Paged, the kept rows fill the sequence's lowest table columns; the CTA
 *    of head 0 lists the pages of the columns after them (free_pages).
 * No atomics: every count is a shared-memory reduction, so the result is the
 * same on every run.
 */
#include "fmqa_params.h"
#include "fmqa_device.cuh"

using namespace fmqa_dev;

#define DEV static __device__ __forceinline__

constexpr int D = HEAD_DIM;
constexpr int EB = KV_FMT >= 2 ? 1 : 2;
constexpr int CPR = D * EB / 16;       /* 16-byte chunks per K (or V) row        */
constexpr int PS = PAGED ? PAGE_SIZE : 1;
constexpr int MOVE_ITEMS = 4;          /* 16-byte chunks a thread moves per round */
constexpr int MOVE_ROWS = NT * MOVE_ITEMS / (2 * CPR); /* rows per chunk of destinations */
static_assert(MOVE_ROWS >= 1 && MOVE_ROWS <= NT && (NT & (NT - 1)) == 0, "NT");

/* An unsigned that orders like the float: flip the sign bit of positives,
 * every bit of negatives. */
DEV unsigned order_key(float x) {
    const unsigned u = __float_as_uint(x);
    return (u & 0x80000000u) ? ~u : u | 0x80000000u;
}

DEV float raw_score(const fmqa_compress_params &p, int b, int hk, int j) {
    if (!p.per_sequence) return p.scores[b * p.sc_sb + hk * p.sc_sh + j];
    float s = 0.0f;
    for (int h = 0; h < p.num_kv_heads; ++h) s += p.scores[b * p.sc_sb + h * p.sc_sh + j];
    return s;
}

/* Sequence b's length, clamped into 0..kv_len_max: kv_lens is the caller's
 * device data, and one out of range must not move rows past the cache. */
DEV int seq_len(const fmqa_compress_params &p, int b) {
    return min(max(p.kv_lens[b], 0), p.kv_len_max);
}

extern "C" __global__ void __launch_bounds__(NT) fmqa_compress_keys(const fmqa_compress_params p) {
    const int b = blockIdx.z, hk = blockIdx.y, j = blockIdx.x * NT + threadIdx.x;
    const int n = seq_len(p, b);
    if (j >= n || p.heavy == 0 || n <= p.sink_tokens + p.recent + p.heavy) return;
    float x;
    if (p.pooling == 0) {
        x = raw_score(p, b, hk, j);
    } else {
        const int lo = max(j - p.pool, 0), hi = min(j + p.pool, n - 1);
        x = p.pooling == 1 ? raw_score(p, b, hk, lo) : 0.0f;
        for (int i = lo; i <= hi; ++i) {
            const float r = raw_score(p, b, hk, i);
            x = p.pooling == 1 ? fmaxf(x, r) : x + r;
        }
        if (p.pooling == 2) x = x / (float)(2 * p.pool + 1);
    }
    p.ws_key[((long long)b * p.num_kv_heads + hk) * p.kv_len_max + j] = order_key(x);
}

/* Sum of x over the CTA (red: NT ints of shared memory). */
DEV int block_sum(int x, int *red) {
    red[threadIdx.x] = x;
    __syncthreads();
    for (int k = NT / 2; k > 0; k >>= 1) {
        if ((int)threadIdx.x < k) red[threadIdx.x] += red[threadIdx.x + k];
        __syncthreads();
    }
    const int s = red[0];
    __syncthreads();
    return s;
}

/* Exclusive prefix sum of x over the CTA's threads (Hillis-Steele); *total
 * gets the sum. */
DEV int block_scan(int x, int *red, int *total) {
    red[threadIdx.x] = x;
    __syncthreads();
    for (int k = 1; k < NT; k <<= 1) {
        const int y = (int)threadIdx.x >= k ? red[threadIdx.x - k] : 0;
        __syncthreads();
        red[threadIdx.x] += y;
        __syncthreads();
    }
    const int incl = red[threadIdx.x];
    *total = red[NT - 1];
    __syncthreads();
    return incl - x;
}

/* Candidates in [c0, c1) with key >= t, over the CTA. */
DEV int count_at_least(const unsigned *key, int c0, int c1, unsigned t, int *red) {
    int c = 0;
    for (int j = c0 + threadIdx.x; j < c1; j += NT) c += key[j] >= t;
    return block_sum(c, red);
}

/* Element offset of slot's row of head hk (tensor strides sb, st, sh). */
DEV long long row_at(const fmqa_compress_params &p, int b, int hk, int slot, long long sb, long long st,
                     long long sh) {
    if (!PAGED) return b * sb + slot * st + hk * sh;
    const long long page = p.page_table[b * p.pt_stride + slot / PS];
    return page * sb + (slot % PS) * st + hk * sh;
}

/* Moves kept row i from slot sel[i] for i in [first, n), chunk by chunk. */
DEV void move_rows(const fmqa_compress_params &p, int b, int hk, const int *sel, int first, int n) {
    for (int d0 = first; d0 < n; d0 += MOVE_ROWS) {
        uint4 x[MOVE_ITEMS];
        float sc[3] = {0.0f, 0.0f, 0.0f}; /* set below where used; zeroed so no path reads garbage */
        int src = 0;
#pragma unroll
        for (int k = 0; k < MOVE_ITEMS; ++k) {
            const int item = threadIdx.x + k * NT, row = item / (2 * CPR), c = item % (2 * CPR);
            const int d = d0 + row;
            if (row >= MOVE_ROWS || d >= n || sel[d] == d) continue;
            const bool is_v = c >= CPR;
            const long long off = is_v ? row_at(p, b, hk, sel[d], p.v_sb, p.v_st, p.v_sh)
                                       : row_at(p, b, hk, sel[d], p.k_sb, p.k_st, p.k_sh);
            const char *base = is_v ? (const char *)p.v : (const char *)p.k;
            x[k] = *(const uint4 *)(base + off * EB + (c % CPR) * 16);
        }
        const int d = d0 + (int)threadIdx.x;
        const bool mine = threadIdx.x < MOVE_ROWS && d < n;
        if (mine) {
            src = sel[d];
            if (EB == 1) {
                sc[0] = p.k_scale[row_at(p, b, hk, src, p.ks_sb, p.ks_st, p.ks_sh)];
                sc[1] = p.v_scale[row_at(p, b, hk, src, p.vs_sb, p.vs_st, p.vs_sh)];
            }
            if (p.scores) sc[2] = p.scores[b * p.sc_sb + hk * p.sc_sh + src];
        }
        __syncthreads(); /* every source of this chunk is read */
#pragma unroll
        for (int k = 0; k < MOVE_ITEMS; ++k) {
            const int item = threadIdx.x + k * NT, row = item / (2 * CPR), c = item % (2 * CPR);
            const int dd = d0 + row;
            if (row >= MOVE_ROWS || dd >= n || sel[dd] == dd) continue;
            const bool is_v = c >= CPR;
            const long long off = is_v ? row_at(p, b, hk, dd, p.v_sb, p.v_st, p.v_sh)
                                       : row_at(p, b, hk, dd, p.k_sb, p.k_st, p.k_sh);
            char *base = is_v ? (char *)p.v : (char *)p.k;
            *(uint4 *)(base + off * EB + (c % CPR) * 16) = x[k];
        }
        if (mine) {
            if (EB == 1 && src != d) {
                p.k_scale[row_at(p, b, hk, d, p.ks_sb, p.ks_st, p.ks_sh)] = sc[0];
                p.v_scale[row_at(p, b, hk, d, p.vs_sb, p.vs_st, p.vs_sh)] = sc[1];
            }
            if (p.scores) p.scores[b * p.sc_sb + hk * p.sc_sh + d] = sc[2];
        }
        __syncthreads(); /* this chunk is stored before the next one reads */
    }
}

/* Row b of free_pages: the pages of table columns [ceil(keep / PS), ceil(n /
 * PS)), which hold no kept row after the moves, then -1 (paged only). */
DEV void release_pages(const fmqa_compress_params &p, int b, int keep, int n) {
    if (!PAGED || !p.free_pages) return;
    const int first = (keep + PS - 1) / PS, freed = (n + PS - 1) / PS - first;
    for (int i = threadIdx.x; i < p.pt_stride; i += NT)
        p.free_pages[b * p.pt_stride + i] = i < freed ? p.page_table[b * p.pt_stride + first + i] : -1;
}

extern "C" __global__ void __launch_bounds__(NT) fmqa_compress_move(const fmqa_compress_params p) {
    __shared__ int red[NT];
    const int b = blockIdx.z, hk = blockIdx.y;
    const int n = seq_len(p, b), budget = p.sink_tokens + p.recent + p.heavy;
    const long long at = ((long long)b * p.num_kv_heads + hk) * p.kv_len_max;
    int *sel = p.ws_sel + at;
    const unsigned *key = p.ws_key + at;
    const int keep = min(n, budget);
    if (hk == 0 && threadIdx.x == 0) p.new_lens[b] = keep;
    if (hk == 0) release_pages(p, b, keep, n);
    if (n <= budget) { /* everything stays */
        for (int i = threadIdx.x; p.kept && i < n; i += NT) p.kept[b * p.kept_sb + hk * p.kept_sh + i] = i;
        return;
    }
    const int c0 = p.sink_tokens, c1 = n - p.recent;
    /* T: the largest key with at least `heavy` candidates at or above it. */
    unsigned t = 0;
    if (p.heavy > 0)
        for (int bit = 31; bit >= 0; --bit) {
            const unsigned probe = t | (1u << bit);
            if (count_at_least(key, c0, c1, probe, red) >= p.heavy) t = probe;
        }
    const int above = p.heavy > 0 ? (t == 0xffffffffu ? 0 : count_at_least(key, c0, c1, t + 1, red)) : 0;
    const int ties = p.heavy - above; /* keys == t kept, first slots first */
    int base = 0, tie_base = 0;
    for (int j0 = 0; j0 < n; j0 += NT) {
        const int j = j0 + threadIdx.x;
        const bool cand = j >= c0 && j < c1;
        const bool tie = p.heavy > 0 && cand && key[j] == t;
        int tie_total, total;
        const int tie_rank = tie_base + block_scan(tie, red, &tie_total);
        const bool kept = j < n && (!cand || (p.heavy > 0 && (key[j] > t || (tie && tie_rank < ties))));
        const int dst = base + block_scan(kept, red, &total);
        if (kept) {
            sel[dst] = j;
            if (p.kept) p.kept[b * p.kept_sb + hk * p.kept_sh + dst] = j;
        }
        base += total;
        tie_base += tie_total;
    }
    __syncthreads(); /* sel complete */
    move_rows(p, b, hk, sel, p.sink_tokens, keep);
}
