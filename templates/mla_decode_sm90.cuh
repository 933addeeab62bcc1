/*
 * mla_decode_sm90.cuh -- Multi-head Latent Attention decode (fmqa_mla_decode)
 * for Hopper (sm_90a) on wgmma, in the design of DeepSeek's FlashMLA (its
 * sm90 decode kernel and the "seesaw" schedule of its deep-dive note),
 * written over our instruction layer.  Same problem, arguments, launch rules
 * and split-KV partials as mla_decode.cuh (see there for the problem);
 * mla_decode_sm90.lua chooses the defines and the launch, and refuses what
 * this kernel does not serve (windows, sinks, ring, tree, soft-capping), so
 * that mla_decode serves the rest.
 *
 * CTA = 2 warpgroups (256 threads), 64 query rows r = t * HEADS + h of one
 * sequence (HEADS x Q_TOKENS padded to 64: grid (splits, row blocks, batch)),
 * the keys of one split.  Shared memory holds Q once (64 x 576) and PIPE
 * stages of two latent blocks of BLOCK_N tokens each; a block serves as K
 * (all 576 columns) and as V (its first 512).  Warpgroup c owns the output
 * columns [256 c, +256) for all 64 rows (128 fp32 registers a thread), and
 * the scores of block c of each pair:
 *   WG0: S0 = Q K_A^T (m64 nBLOCK_N k16, 36 k-steps, both from shared
 *        memory); m0 = max(m, rowmax S0); P0 = 2^(S0 - m0); O_L rescaled;
 *        m0 to shared memory; O_L += P0 V_A[:, L] (P0 from registers: S's
 *        accumulator layout is wgmma's A fragment layout) -- issued, and
 *        running while ...
 *   WG1: S1 = Q K_B^T; m1 = max(m0, rowmax S1); P1 = 2^(S1 - m1) to shared
 *        memory; O_R rescaled; O_R += P1 V_B[:, R] (registers) -- running
 *        while ...
 *   WG0: P0 rescaled by 2^(m0 - m1) and stored to shared memory, O_L too
 *        once its GEMM retired; then O_L += P1 V_B[:, L] (P1 from shared
 *        memory), while WG1 does O_R += P0 V_A[:, R].
 * So the maximum travels WG0 -> WG1 -> WG0 once a pair (named barriers 1-3;
 * FlashMLA's seesaw), each softmax overlaps the other warpgroup's GEMMs, and
 * neither warpgroup computes a score twice.  P is stored where the block's
 * rope columns (512..575) were: only S reads them, and a P tile (64 rows x
 * BLOCK_N tokens x 2 bytes) is exactly their size.
 *
 * Loads: every thread issues cp.async copies of 16 bytes (zero-filled past
 * the split's end) into the canonical 128-byte-swizzled K-major layout of
 * fmqa_sm90.cuh (chunks of 64 columns, each [rows][128 bytes]), one page
 * lookup per row and thread, pair i + PIPE - 1 while pair i computes; then
 * cp.async.wait_group, fence.proxy.async (the copies are generic-proxy
 * writes that wgmma reads through the async proxy) and a CTA barrier.  Not
 * TMA: a tensor map per call would need new kernel parameters, and bulk
 * copies cannot swizzle.
 *
 * fp8 e4m3 latents (one float scale per token): the copies land raw in PIPE
 * stages of their own; at its turn a pair is dequantized by all threads
 * (value x scale, rounded once to the mma type) into one stage of 16-bit
 * tiles, so the GEMMs and the softmax are those of the 16-bit latents.
 *
 * Problem defines: HEADS, Q_TOKENS (1..4), Q_BF16, OUT_BF16, KV_FMT (0 f16,
 * 1 bf16, 3 fp8 e4m3: bf16 mma with bf16 q, else f16), PAGED, PAGE_SIZE,
 * CAUSAL, LSE.  Config: BLOCK_N (32 or 64 tokens a block; fp8: 32), PIPE
 * (pairs in flight, 1 or 2).  Softmax in base 2; a row that
 * sees nothing writes o = 0, lse = -inf; with num_splits > 1 each split
 * writes its O normalised by its own sum to ws_o and m + log2(l) to ws_lse,
 * [split, b, t, h, (512)], merged by fmqa_mla_decode_sm90_combine
 * (fmqa_combine.cuh's combine_row).
 */
#include "fmqa_params.h"
#include "fmqa_sm90.cuh"
#include "fmqa_combine.cuh"

using namespace fmqa_dev;

#define DEV static __device__ __forceinline__

#ifndef HEADS
#error "mla_decode_sm90.cuh: HEADS, Q_TOKENS, Q_BF16, OUT_BF16, KV_FMT, PAGED, PAGE_SIZE, CAUSAL, LSE, BLOCK_N, PIPE come from mla_decode_sm90.lua"
#endif

namespace {

constexpr int DC = 512, DK = 576;                        /* latent (= V), row       */
constexpr int Q8 = KV_FMT == 3;                          /* fp8 e4m3 latent         */
constexpr int MMA_BF16 = KV_FMT == 1 || (Q8 && Q_BF16);
constexpr int M = HEADS * Q_TOKENS;
constexpr int ROWS = 64;                                 /* query rows of a CTA     */
constexpr int PIECES = DK / 8;                           /* 16-byte pieces a row    */
constexpr int RAW_PIECES = DK / 16;                      /* of an fp8 row           */
constexpr int Q_BYTES = ROWS * DK * 2;
constexpr int BLOCK_BYTES = BLOCK_N * DK * 2;
constexpr int P_SPAN = BLOCK_N * 2;                      /* bytes of a P row        */
constexpr int X_BYTES = 2 * 2 * ROWS * 4;                /* row maxima and sums     */
/* fp8: the 16-bit tiles of one pair, fed from PIPE stages of raw pairs (the
 * bytes, then a float scale per token). */
constexpr int TILE_STAGES = Q8 ? 1 : PIPE;
constexpr int RAW_BYTES = Q8 ? 2 * BLOCK_N * (DK + 4) : 0;
/* Must equal mla_decode_sm90.lua's shared_bytes(). */
constexpr int SMEM_BYTES = 1024 + Q_BYTES + 2 * TILE_STAGES * BLOCK_BYTES + PIPE * RAW_BYTES + X_BYTES;
constexpr int NTHREADS = 256;
constexpr int PS = PAGED ? PAGE_SIZE : 1;
constexpr int BAR_M0 = 1, BAR_P1 = 2, BAR_P0 = 3;        /* named barriers          */

static_assert(KV_FMT == 0 || KV_FMT == 1 || KV_FMT == 3, "KV_FMT: f16, bf16 or fp8 e4m3 latents");
static_assert(!Q8 || BLOCK_N == 32, "fp8: 32-token blocks (shared memory)");
static_assert(BLOCK_N == 32 || BLOCK_N == 64, "BLOCK_N 32 or 64");
static_assert(PIPE == 1 || PIPE == 2, "PIPE 1 or 2");
static_assert(Q_TOKENS >= 1 && Q_TOKENS <= 4, "Q_TOKENS");
static_assert(!PAGED || (PAGE_SIZE >= 16 && (PAGE_SIZE & (PAGE_SIZE - 1)) == 0), "PAGE_SIZE");
static_assert(BLOCK_BYTES % 1024 == 0, "blocks keep the 1024-byte swizzle atoms aligned");

/* Shared memory: Q, the blocks (stage s, half c), in each block the P tile
 * over its rope chunk, and the row exchange; shared-window addresses (base
 * aligned to 1024) and the generic pointer of the same bytes for plain
 * stores. */
struct layout {
    unsigned char *gen; /* the generic address of shared-window address win */
    u32 win, q, blocks, raw; /* raw: fp8 stages */
    float *xm, *xl; /* [2][ROWS]: m0 / m1 of each row; the two warpgroups' sums */
    __device__ __forceinline__ u32 block(int s, int c) const { return blocks + (u32)((2 * s + c) * BLOCK_BYTES); }
    __device__ __forceinline__ u32 p_tile(int s, int c) const { return block(s, c) + (u32)(8 * BLOCK_N * 128); }
    __device__ __forceinline__ u32 raw_stage(int s) const { return raw + (u32)(s * RAW_BYTES); }
    template <typename T> __device__ __forceinline__ T *at(u32 a) const { return (T *)(gen + (a - win)); }
};

/* Where 16-byte piece pc (columns 8 pc ..) of row n of a K-major tile of
 * `rows` rows lands: its 64-column chunk, then the 128-byte swizzle. */
DEV u32 piece_at(u32 tile, int rows, int n, int pc) {
    return smem_swizzle(tile + (u32)((pc / 8) * rows * 128 + n * 128 + (pc % 8) * 16), 128);
}

/* Element offset of position j's latent row (or its scale: strides sb, st) of
 * sequence b (a page lookup when paged, remembered in (pi, page)). */
DEV long long row_offset(const fmqa_decode_params &p, int b, int j, long long sb, long long st, int &pi,
                         long long &page) {
    if (!PAGED) return (long long)b * sb + (long long)j * st;
    if (j / PS != pi) {
        pi = j / PS;
        page = __ldg(p.page_table + b * p.pt_stride + pi);
    }
    return page * sb + (long long)(j & (PS - 1)) * st;
}

/* This thread's cp.async copies of the two blocks of pair [v0, v0 + 2
 * BLOCK_N) into stage s; positions >= v_end read as zeros.  Thread t < 3 x 72
 * takes piece column t % 72 of rows t / 72, + 3, + 6, ... (one page lookup a
 * row; consecutive threads copy consecutive pieces of a row). */
DEV void load_pair(const fmqa_decode_params &p, const layout &L, int s, int b, int v0, int v_end) {
    constexpr int PR = Q8 ? RAW_PIECES : PIECES, RPP = NTHREADS / PR;
    const int t = threadIdx.x, pc = t % PR;
    int pi = -1;
    long long page = 0;
    if (t < RPP * PR)
        for (int n = t / PR; n < 2 * BLOCK_N; n += RPP) {
            const bool ok = v0 + n < v_end;
            const char *src = (const char *)p.k;
            if (ok) src += row_offset(p, b, v0 + n, p.k_sb, p.k_st, pi, page) * (Q8 ? 1 : 2) + 16 * pc;
            const u32 dst = Q8 ? L.raw_stage(s) + (u32)(n * DK + 16 * pc)
                               : piece_at(L.block(s, n / BLOCK_N), BLOCK_N, n % BLOCK_N, pc);
            cp_async16(dst, src, ok ? 16 : 0);
        }
    if (Q8) {
        pi = -1;
        for (int n = t; n < 2 * BLOCK_N; n += NTHREADS) {
            const bool ok = v0 + n < v_end;
            const float *src = ok ? p.k_scale + row_offset(p, b, v0 + n, p.ks_sb, p.ks_st, pi, page) : p.k_scale;
            cp_async4(L.raw_stage(s) + (u32)(2 * BLOCK_N * DK + 4 * n), src, ok ? 4 : 0);
        }
    }
}

/* fp8: the raw pair of stage s, times each token's scale, as the mma type
 * into the 16-bit tiles (stage 0): 16 values a thread and step, then
 * fence.proxy.async for wgmma.  Positions past the end hold zeros and scale 0. */
DEV void dequantize_pair(const layout &L, int s) {
    const float *scale = L.at<float>(L.raw_stage(s) + (u32)(2 * BLOCK_N * DK));
    for (int i = threadIdx.x; i < 2 * BLOCK_N * RAW_PIECES; i += NTHREADS) {
        const int n = i / RAW_PIECES, pc = i % RAW_PIECES;
        const uint4 raw = *L.at<uint4>(L.raw_stage(s) + (u32)(n * DK + 16 * pc));
        const float sc = scale[n];
        const u32 w[4] = {raw.x, raw.y, raw.z, raw.w};
        u32 out[8];
#pragma unroll
        for (int j = 0; j < 4; ++j)
#pragma unroll
            for (int hi = 0; hi < 2; ++hi) {
                const u32 h2 = hi ? cvt_f16x2_e4m3x2<1>(w[j]) : cvt_f16x2_e4m3x2<0>(w[j]);
                out[2 * j + hi] = pack2<MMA_BF16>(f16_to_f32((u16)(h2 & 0xffff)) * sc, f16_to_f32((u16)(h2 >> 16)) * sc);
            }
        const u32 blk = L.block(0, n / BLOCK_N);
        uint4 lo, hi;
        lo.x = out[0], lo.y = out[1], lo.z = out[2], lo.w = out[3];
        hi.x = out[4], hi.y = out[5], hi.z = out[6], hi.w = out[7];
        *L.at<uint4>(piece_at(blk, BLOCK_N, n % BLOCK_N, 2 * pc)) = lo;
        *L.at<uint4>(piece_at(blk, BLOCK_N, n % BLOCK_N, 2 * pc + 1)) = hi;
    }
    fence_proxy_async();
}

/* Q rows [rb ROWS, +ROWS) as the mma type into the swizzled Q tile (zeros past
 * M): 16-column chunks, both loads of every chunk issued before any store. */
DEV void load_q(const fmqa_decode_params &p, const layout &L, int b, int rb) {
    constexpr int CH = DK / 16, CHUNKS = ROWS * CH, QPER = CHUNKS / NTHREADS;
    static_assert(CHUNKS % NTHREADS == 0, "Q chunks a thread");
    u32 w[QPER][2][4];
#pragma unroll
    for (int k = 0; k < QPER; ++k) {
        const int i = threadIdx.x + k * NTHREADS, r = rb * ROWS + i / CH;
        if (r < M) {
            const u16 *q = (const u16 *)p.q + b * p.q_sb + (r / HEADS) * p.q_st + (r % HEADS) * p.q_sh + 16 * (i % CH);
            ld_nc_v4(w[k][0], q);
            ld_nc_v4(w[k][1], q + 8);
        } else {
#pragma unroll
            for (int j = 0; j < 8; ++j) w[k][j / 4][j % 4] = 0u;
        }
    }
#pragma unroll
    for (int k = 0; k < QPER; ++k) {
        const int i = threadIdx.x + k * NTHREADS, row = i / CH, ch = i % CH;
        uint4 lo, hi;
        q_chunk_to_mma<Q_BF16, MMA_BF16, 0>(w[k], lo, hi);
        *L.at<uint4>(piece_at(L.q, ROWS, row, 2 * ch)) = lo;
        *L.at<uint4>(piece_at(L.q, ROWS, row, 2 * ch + 1)) = hi;
    }
}

/* A thread's rows and state.  Thread (warp w of its warpgroup, g = lane / 4,
 * q = lane % 4) holds rows 16 w + g + 8 h (h = 0, 1) of the CTA's 64 and, in
 * a wgmma accumulator, element i at row h = (i % 4) / 2, column 8 (i / 4) + 2
 * q + i % 2.  m: the running maximum (base 2, scaled), the same in both
 * warpgroups after every pair; l: the sum of the P this warpgroup made. */
struct rowstate {
    float O[128];
    float m[2], l[2];
    int row[2], t[2]; /* CTA row, query token (padding rows: the last) */
};

/* S = Q K^T of the block at `tile` (its K landed), scaled to base 2 and
 * masked: positions >= v_end, and (CAUSAL) past the row's own token. */
DEV void scores(float (&S)[BLOCK_N / 2], const layout &L, u32 tile, const fmqa_decode_params &p, int v0, int v_end,
                int first_draft, const rowstate &st) {
    wgmma_fence();
#pragma unroll 4
    for (int ks = 0; ks < DK / 16; ++ks)
        wgmma_ss<BLOCK_N, MMA_BF16, 0, 0>(S, desc_kmajor(L.q, ROWS, ks, 128), desc_kmajor(tile, BLOCK_N, ks, 128),
                                          ks > 0);
    wgmma_commit();
    wgmma_wait<0>(S);
    const int q = threadIdx.x % 4;
    const bool masked = v0 + BLOCK_N > v_end || (CAUSAL && v0 + BLOCK_N - 1 > first_draft);
#pragma unroll
    for (int i = 0; i < BLOCK_N / 2; ++i) {
        const int h = (i % 4) / 2, col = v0 + 8 * (i / 4) + 2 * q + i % 2;
        float x = S[i] * p.sm_scale_log2;
        if (masked && (col >= v_end || (CAUSAL && col > first_draft + st.t[h]))) x = neg_inf();
        S[i] = x;
    }
}

DEV float row_max(const float (&S)[BLOCK_N / 2], int h, float m) {
#pragma unroll
    for (int i = 0; i < BLOCK_N / 2; ++i)
        if ((i % 4) / 2 == h) m = fmaxf(m, S[i]);
    return quad_max(m);
}

DEV float base_of(float m) { return m == neg_inf() ? 0.0f : m; } /* keeps -inf - -inf out */

/* P = 2^(S - base) in place; l = l alpha + its row sums; O *= alpha, alpha =
 * 2^(m - base); then m = m_new. */
DEV void exponentiate(float (&S)[BLOCK_N / 2], rowstate &st, const float (&m_new)[2]) {
    float base[2], alpha[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        base[h] = base_of(m_new[h]);
        alpha[h] = ex2(st.m[h] - base[h]);
        st.l[h] *= alpha[h];
        st.m[h] = m_new[h];
    }
#pragma unroll
    for (int i = 0; i < BLOCK_N / 2; ++i) {
        const int h = (i % 4) / 2;
        S[i] = ex2(S[i] - base[h]);
        st.l[h] += S[i];
    }
#pragma unroll
    for (int i = 0; i < 128; ++i) st.O[i] *= alpha[(i % 4) / 2];
}

/* P as the A fragments of wgmma (16 tokens a k-slice). */
DEV void fragments(const float (&P)[BLOCK_N / 2], u32 (&A)[BLOCK_N / 16][4]) {
#pragma unroll
    for (int kk = 0; kk < BLOCK_N / 16; ++kk)
#pragma unroll
        for (int j = 0; j < 4; ++j) A[kk][j] = pack2<MMA_BF16>(P[8 * kk + 2 * j], P[8 * kk + 2 * j + 1]);
}

/* P (times f per row) into the P tile at tile: K-major, rows of P_SPAN bytes
 * under the swizzle of that span, as the other warpgroup's wgmma reads it;
 * then fence.proxy.async, so that its async-proxy reads see the stores. */
DEV void store_p(const layout &L, u32 tile, const float (&P)[BLOCK_N / 2], const rowstate &st, const float (&f)[2]) {
    const int q = threadIdx.x % 4;
#pragma unroll
    for (int i = 0; i < BLOCK_N / 2; i += 2) {
        const int h = (i % 4) / 2, col = 8 * (i / 4) + 2 * q;
        const u32 a = smem_swizzle(tile + (u32)(st.row[h] * P_SPAN + col * 2), P_SPAN);
        *L.at<u32>(a) = pack2<MMA_BF16>(P[i] * f[h], P[i + 1] * f[h]);
    }
    fence_proxy_async();
}

/* O += P V over a block's BLOCK_N tokens and this warpgroup's 256 columns:
 * P from registers (rs) or from the P tile at p_tile (ss); issued and
 * committed, not waited for. */
DEV void pv_regs(rowstate &st, const u32 (&A)[BLOCK_N / 16][4], u32 v) {
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < BLOCK_N / 16; ++kk) wgmma_rs<256, MMA_BF16, 1>(st.O, A[kk], desc_mnmajor(v, BLOCK_N, kk, 128), 1);
    wgmma_commit();
}
DEV void pv_smem(rowstate &st, u32 p_tile, u32 v) {
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < BLOCK_N / 16; ++kk)
        wgmma_ss<256, MMA_BF16, 0, 1>(st.O, desc_kmajor(p_tile, ROWS, kk, P_SPAN), desc_mnmajor(v, BLOCK_N, kk, 128), 1);
    wgmma_commit();
}

/* One pair of blocks [v0, +BLOCK_N) (A, stage s half 0) and [v0 + BLOCK_N,
 * +BLOCK_N) (B, half 1) for warpgroup c: the seesaw of the header.  Leaves O
 * retired and both blocks unread. */
DEV void pair(const fmqa_decode_params &p, const layout &L, int c, int s, int v0, int v_end, int first_draft,
              rowstate &st) {
    float S[BLOCK_N / 2], m_new[2];
    u32 A[BLOCK_N / 16][4];
    const u32 v_own = L.block(s, c) + (u32)(4 * c * BLOCK_N * 128), v_other = L.block(s, 1 - c) + (u32)(4 * c * BLOCK_N * 128);
    const bool lead = threadIdx.x % 4 == 0;
    scores(S, L, L.block(s, c), p, v0 + c * BLOCK_N, v_end, first_draft, st);
    if (c == 0) {
        for (int h = 0; h < 2; ++h) m_new[h] = row_max(S, h, st.m[h]);
        const float m0[2] = {m_new[0], m_new[1]};
        exponentiate(S, st, m_new);
        if (lead) L.xm[st.row[0]] = m0[0], L.xm[st.row[1]] = m0[1];
        bar_arrive(BAR_M0, 2 * 128);
        fragments(S, A);
        pv_regs(st, A, v_own);
        bar_sync(BAR_P1, 2 * 128); /* m1 and P1 */
        float corr[2];
        for (int h = 0; h < 2; ++h) {
            st.m[h] = L.xm[ROWS + st.row[h]];
            corr[h] = ex2(m0[h] - base_of(st.m[h])); /* 0 while m0 is -inf */
            st.l[h] *= corr[h];
        }
        store_p(L, L.p_tile(s, 0), S, st, corr);
        bar_arrive(BAR_P0, 2 * 128);
        wgmma_wait<0>(st.O);
#pragma unroll
        for (int i = 0; i < 128; ++i) st.O[i] *= corr[(i % 4) / 2];
    } else {
        float mx[2];
        for (int h = 0; h < 2; ++h) mx[h] = row_max(S, h, neg_inf());
        bar_sync(BAR_M0, 2 * 128);
        for (int h = 0; h < 2; ++h) m_new[h] = fmaxf(L.xm[st.row[h]], mx[h]); /* m0 >= m */
        exponentiate(S, st, m_new);
        if (lead) L.xm[ROWS + st.row[0]] = m_new[0], L.xm[ROWS + st.row[1]] = m_new[1];
        const float one[2] = {1.0f, 1.0f};
        store_p(L, L.p_tile(s, 1), S, st, one);
        bar_arrive(BAR_P1, 2 * 128);
        fragments(S, A);
        pv_regs(st, A, v_own);
        bar_sync(BAR_P0, 2 * 128);
    }
    pv_smem(st, L.p_tile(s, 1 - c), v_other);
    wgmma_wait<0>(st.O);
}

/* The two warpgroups' sums meet in xl; then o (and lse), or this split's
 * partials, for the warpgroup's 256 columns. */
DEV void store_rows(const fmqa_decode_params &p, const layout &L, int b, int rb, int split, int c, rowstate &st) {
    const int q = threadIdx.x % 4;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        const float l = quad_sum(st.l[h]);
        if (q == 0) L.xl[c * ROWS + st.row[h]] = l;
    }
    __syncthreads();
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        const int r = rb * ROWS + st.row[h];
        if (r >= M) continue;
        const float l = L.xl[st.row[h]] + L.xl[ROWS + st.row[h]];
        const float inv = l > 0.0f ? 1.0f / l : 0.0f;
        const float lse2 = l > 0.0f ? st.m[h] + __log2f(l) : neg_inf();
        const int t = r / HEADS, head = r % HEADS;
        const long long orow = ((long long)b * Q_TOKENS + t) * HEADS + head;
        if (p.num_splits > 1) {
            const long long srow = (long long)split * p.batch * M + orow;
            float *wo = p.ws_o + srow * DC + 256 * c;
#pragma unroll
            for (int i = 2 * h; i < 128; i += 4) {
                const int col = 8 * (i / 4) + 2 * q;
                wo[col] = st.O[i] * inv;
                wo[col + 1] = st.O[i + 1] * inv;
            }
            if (q == 0 && c == 0) p.ws_lse[srow] = lse2;
        } else {
            u16 *o = (u16 *)p.o + b * p.o_sb + t * p.o_st + head * p.o_sh + 256 * c;
#pragma unroll
            for (int i = 2 * h; i < 128; i += 4)
                *(u32 *)(o + 8 * (i / 4) + 2 * q) = pack2<OUT_BF16>(st.O[i] * inv, st.O[i + 1] * inv);
            if (LSE && q == 0 && c == 0) p.lse[orow] = lse2 * 0.69314718055994531f;
        }
    }
}

} /* namespace */

extern "C" __global__ void __launch_bounds__(256, 1) fmqa_mla_decode_sm90_kernel(const fmqa_decode_params p) {
    extern __shared__ __align__(128) unsigned char smem[];
    if (dynamic_smem_size() < (u32)SMEM_BYTES) __trap(); /* the launch disagrees with mla_decode_sm90.lua */
    const u32 win = smem_addr(smem), base = (win + 1023) & ~1023u; /* the swizzle needs 1024-byte atoms */
    const u32 raw = base + Q_BYTES + 2 * TILE_STAGES * BLOCK_BYTES;
    unsigned char *x = smem + (raw + PIPE * RAW_BYTES - win);
    const layout L = {smem, win, base, base + Q_BYTES, raw, (float *)x, (float *)x + 2 * ROWS};
    const int split = blockIdx.x, rb = blockIdx.y, b = blockIdx.z, c = threadIdx.x / 128;

    /* kv_lens is the caller's device data: one past the cache reads no row past it */
    const int kv_len = min(max(p.kv_lens[b], 0), p.kv_len_max), first_draft = kv_len - Q_TOKENS;
    const int v_begin = split * p.split_tokens;
    const int v_end = split == p.num_splits - 1 ? kv_len : min(kv_len, v_begin + p.split_tokens);
    const int npairs = v_end > v_begin ? (v_end - v_begin + 2 * BLOCK_N - 1) / (2 * BLOCK_N) : 0;
    /* The first pairs go out before Q is read. */
#pragma unroll
    for (int i = 0; i < PIPE - 1; ++i) {
        if (i < npairs) load_pair(p, L, i, b, v_begin + 2 * i * BLOCK_N, v_end);
        cp_async_commit();
    }
    load_q(p, L, b, rb);
    fence_proxy_async(); /* Q's stores, for wgmma; published by the loop's first barrier */

    rowstate st;
    const int w = (threadIdx.x % 128) / 32, g = (threadIdx.x % 32) / 4;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        st.row[h] = 16 * w + g + 8 * h;
        st.t[h] = min((rb * ROWS + st.row[h]) / HEADS, Q_TOKENS - 1);
        st.m[h] = neg_inf();
        st.l[h] = 0.0f;
    }
#pragma unroll
    for (int i = 0; i < 128; ++i) st.O[i] = 0.0f;
    for (int it = 0; it < npairs; ++it) {
        const int s = it % PIPE;
        if (PIPE == 1) {
            if (it > 0) __syncthreads(); /* pair it - 1 read by both warpgroups */
            load_pair(p, L, s, b, v_begin + 2 * it * BLOCK_N, v_end);
            cp_async_commit();
        }
        cp_async_wait<PIPE == 1 ? 0 : PIPE - 2>();
        fence_proxy_async();
        __syncthreads(); /* pair `it` landed; the stage of pair it - 1 free */
        if (PIPE > 1) {
            const int nx = it + PIPE - 1;
            if (nx < npairs) load_pair(p, L, nx % PIPE, b, v_begin + 2 * nx * BLOCK_N, v_end);
            cp_async_commit();
        }
        if (Q8) {
            dequantize_pair(L, s);
            __syncthreads(); /* the pair's 16-bit tiles complete */
        }
        pair(p, L, c, Q8 ? 0 : s, v_begin + 2 * it * BLOCK_N, v_end, first_draft, st);
    }
    cp_async_wait<0>();
    store_rows(p, L, b, rb, split, c, st);
}

/* Merges split partials (fmqa_combine.cuh's combine_row), as mla_decode's
 * combine: grid (rows, slices), one (b, t, h) row and column slice a CTA. */
extern "C" __global__ void __launch_bounds__(FMQA_C_THREADS) fmqa_mla_decode_sm90_combine(const fmqa_decode_params p) {
    extern __shared__ __align__(128) unsigned char smem[];
    if (dynamic_smem_size() < (u32)FMQA_C_SMEM_BYTES) __trap(); /* the launch disagrees with mla_decode_sm90.lua */
    const int rows = p.batch * M, row = blockIdx.x; /* < 2^31: fastmqa checks */
    const int b = row / M, t = row / HEADS % Q_TOKENS, h = row % HEADS;
    u16 *o = (u16 *)p.o + b * p.o_sb + t * p.o_st + h * p.o_sh;
    const float lse2 = combine_row<DC, OUT_BF16>(p.ws_o + (long long)row * DC, (long long)rows * DC, p.ws_lse + row,
                                                 rows, p.num_splits, neg_inf(), o, smem);
    if (LSE && threadIdx.x == 0 && blockIdx.y == 0) p.lse[row] = lse2 * 0.69314718055994531f;
}
