/*
 * prefill_sm90.cuh -- causal (or full) prefill attention for Hopper (sm_90a)
 * in the design of FlashAttention-3 (Shah et al., 2024), written over our
 * instruction layer: TMA loads into a ring of shared-memory stages guarded by
 * mbarriers, wgmma for S = Q K^T (both operands in shared memory) and for
 * O += P V (P from registers), a producer warpgroup and consumer warpgroups
 * whose register budgets setmaxnreg moves from the first to the others.
 *
 * CTA = 3 warpgroups, 384 threads, one q head, 128 rows of one sequence:
 *   warpgroup 0, the producer: one elected thread loads Q once and K, V of
 *     each kv tile into stage it % STAGES (K and V on their own "full"
 *     barriers, so S = Q K^T starts before V has landed), after the
 *     consumers released the stage on its "empty" barrier;
 *   warpgroups 1 and 2, the consumers: 64 rows each, S = Q K^T (m64 n=BLOCK_N
 *     k16 per 16 columns of d), the online softmax in registers (S's
 *     accumulator layout is the A-fragment layout of P, so P never touches
 *     shared memory), O += P V (m64 n=HEAD_DIM k16 per 16 kv rows), then
 *     every consumer thread arrives on the stage's empty barrier.
 * The kv tiles run from the last to the first, so the only tiles that need
 * masking (the diagonal one, and the one over the sequence's end) come first;
 * causal tiles entirely above the diagonal are never loaded.
 *
 * Tiles in shared memory are as TMA writes them with the 128-byte swizzle:
 * chunks of 64 columns of d, each [rows][128 bytes], rows 128 bytes apart
 * (fmqa_sm90.cuh's layout; the base aligned to 1024 bytes).  Q, K, V come
 * through the 3D tensor maps of fmqa_prefill_sm90_params (d, heads, rows).
 *
 * Compile-time (prefill_sm90.lua): HEAD_DIM (64, 128, 256), GROUP (q heads per
 * kv head), Q_BF16, OUT_BF16, CAUSAL, LSE, BLOCK_N (64, 128), STAGES (2..4).
 *
 * Within a consumer, FA3's intra-warpgroup overlap: S of the next tile is
 * issued before P V of this one, and its softmax runs while P V does (not at
 * d = 256: OVERLAP below).
 * Between the consumers, FA3's ping-pong: named barriers make them take turns
 * issuing their GEMMs, so one's softmax overlaps the other's GEMMs.
 */
#include "fmqa_params.h"
#include "fmqa_sm90.cuh"

using namespace fmqa_dev;

#define DEV static __device__ __forceinline__

#ifndef HEAD_DIM
#error "prefill_sm90.cuh: HEAD_DIM, GROUP, Q_BF16, OUT_BF16, CAUSAL, LSE, BLOCK_N, STAGES come from prefill_sm90.lua"
#endif

namespace {

constexpr int BLOCK_M = 128;                  /* rows of a CTA: 64 per consumer */
constexpr int CHUNKS = HEAD_DIM / 64;         /* 64-column chunks of d          */
constexpr int Q_BYTES = BLOCK_M * HEAD_DIM * 2;
constexpr int KV_BYTES = BLOCK_N * HEAD_DIM * 2;
constexpr int SMEM_BYTES = 1024 + Q_BYTES + 2 * STAGES * KV_BYTES + 8 * (1 + 3 * STAGES);
constexpr int CONSUMERS = 2 * 128;            /* threads arriving on an empty barrier */
/* Intra-warpgroup overlap keeps a second P fragment live; at d = 256 (O is
 * 128 registers) that spills within the 168 registers ptxas allows 384
 * threads, so there the softmax waits for P V. */
constexpr bool OVERLAP = HEAD_DIM < 256;

static_assert(HEAD_DIM == 64 || HEAD_DIM == 128 || HEAD_DIM == 256, "HEAD_DIM 64, 128 or 256");
static_assert(BLOCK_N == 64 || BLOCK_N == 128, "BLOCK_N 64 or 128");

/* Shared addresses of the tiles and barriers (base aligned to 1024). */
struct layout {
    u32 q, k0, v0, bar;
    __device__ __forceinline__ u32 k(int s) const { return k0 + (u32)(s * KV_BYTES); }
    __device__ __forceinline__ u32 v(int s) const { return v0 + (u32)(s * KV_BYTES); }
    __device__ __forceinline__ u32 q_full() const { return bar; }
    __device__ __forceinline__ u32 k_full(int s) const { return bar + 8 * (1 + s); }
    __device__ __forceinline__ u32 v_full(int s) const { return bar + 8 * (1 + STAGES + s); }
    __device__ __forceinline__ u32 empty(int s) const { return bar + 8 * (1 + 2 * STAGES + s); }
};

/* The sequence, head and rows of this CTA. */
struct work {
    int start, len, h, kvh, m0, n_blocks;
};

DEV void producer(const fmqa_prefill_sm90_params &P, const layout &L, const work &w) {
    mbar_arrive_expect_tx(L.q_full(), Q_BYTES);
    for (int c = 0; c < CHUNKS; ++c)
        tma_load_3d(L.q + (u32)(c * BLOCK_M * 128), &P.tm_q, 64 * c, w.h, w.start + w.m0, L.q_full());
    for (int it = 0; it < w.n_blocks; ++it) {
        const int s = it % STAGES, n0 = (w.n_blocks - 1 - it) * BLOCK_N;
        if (it >= STAGES) mbar_wait(L.empty(s), (u32)((it / STAGES - 1) & 1));
        mbar_arrive_expect_tx(L.k_full(s), KV_BYTES);
        for (int c = 0; c < CHUNKS; ++c)
            tma_load_3d(L.k(s) + (u32)(c * BLOCK_N * 128), &P.tm_k, 64 * c, w.kvh, w.start + n0, L.k_full(s));
        mbar_arrive_expect_tx(L.v_full(s), KV_BYTES);
        for (int c = 0; c < CHUNKS; ++c)
            tma_load_3d(L.v(s) + (u32)(c * BLOCK_N * 128), &P.tm_v, 64 * c, w.kvh, w.start + n0, L.v_full(s));
    }
}

/* Row state of one thread: rows g and g + 8 of its warp's 16. */
struct rows {
    float m[2], l[2];
};

/* -inf where column n0 + col is past the sequence or (causal) past the row. */
DEV void mask(float (&S)[BLOCK_N / 2], int n0, int len, int row0) {
    const int q = (threadIdx.x & 31) % 4;
#pragma unroll
    for (int i = 0; i < BLOCK_N / 2; ++i) {
        const int col = n0 + 8 * (i / 4) + 2 * q + i % 2, row = row0 + 8 * ((i % 4) / 2);
        if (col >= len || (CAUSAL && col > row)) S[i] = neg_inf();
    }
}

/* Online softmax over one tile: new row maxima (quad shuffles), the factor
 * corr that rescales O and l to them, P = 2^(S log2e scale - m) packed into
 * the A fragments of P V.  O is left alone: the previous P V still
 * accumulates into it until its wgmma_wait (rescale() then). */
DEV void softmax(float (&S)[BLOCK_N / 2], rows &r, float scale_log2, u32 (&A)[BLOCK_N / 16][4],
                 float (&corr)[2]) {
    float base[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        float mx = r.m[h];
#pragma unroll
        for (int i = 0; i < BLOCK_N / 2; ++i)
            if ((i % 4) / 2 == h) mx = fmaxf(mx, S[i]);
        mx = fmaxf(mx, shfl_xor(mx, 1));
        mx = fmaxf(mx, shfl_xor(mx, 2));
        base[h] = mx == neg_inf() ? 0.0f : mx * scale_log2;
        corr[h] = ex2(r.m[h] * scale_log2 - base[h]); /* 0 while m was -inf */
        r.l[h] *= corr[h];
        r.m[h] = mx;
    }
#pragma unroll
    for (int i = 0; i < BLOCK_N / 2; ++i) {
        const int h = (i % 4) / 2;
        S[i] = ex2(fmaf(S[i], scale_log2, -base[h]));
        r.l[h] += S[i];
    }
#pragma unroll
    for (int kk = 0; kk < BLOCK_N / 16; ++kk)
#pragma unroll
        for (int j = 0; j < 4; ++j) A[kk][j] = pack2<Q_BF16>(S[8 * kk + 2 * j], S[8 * kk + 2 * j + 1]);
}

DEV void rescale(float (&O)[HEAD_DIM / 2], const float (&corr)[2]) {
#pragma unroll
    for (int i = 0; i < HEAD_DIM / 2; ++i) O[i] *= corr[(i % 4) / 2];
}

DEV void store(const fmqa_prefill_params &p, const float (&O)[HEAD_DIM / 2], rows &r, const work &w,
                         int row0) {
    const int q = (threadIdx.x & 31) % 4;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        float l = r.l[h];
        l += shfl_xor(l, 1);
        l += shfl_xor(l, 2);
        const int row = row0 + 8 * h;
        if (row >= w.len) continue;
        const long long t = w.start + row;
        float inv, lse2; /* a learned sink joins the denominator here */
        softmax_finish(r.m[h] * p.sm_scale_log2, l, p.sinks ? p.sinks[w.h] * LOG2E : neg_inf(), inv, lse2);
        u16 *o = (u16 *)p.o + t * p.o_st + w.h * p.o_sh;
#pragma unroll
        for (int i = 0; i < HEAD_DIM / 2; i += 4) {
            const u32 v = pack2<OUT_BF16>(O[i + 2 * h] * inv, O[i + 2 * h + 1] * inv);
            *(u32 *)(o + 8 * (i / 4) + 2 * q) = v;
        }
        if (LSE && p.lse && q == 0)
            p.lse[t * p.num_q_heads + w.h] = lse2 * 0.69314718055994531f;
    }
}

/* S of kv tile it (stage it % STAGES; its K landed), no commit. */
DEV void issue_s(float (&S)[BLOCK_N / 2], const layout &L, u32 q_tile, int it) {
    const int s = it % STAGES;
#pragma unroll
    for (int ks = 0; ks < HEAD_DIM / 16; ++ks)
        wgmma_ss<BLOCK_N, Q_BF16, 0, 0>(S, desc_kmajor(q_tile, BLOCK_M, ks, 128), desc_kmajor(L.k(s), BLOCK_N, ks, 128),
                                         ks > 0);
}

DEV u32 phase(int it) { return (u32)((it / STAGES) & 1); }

/* The consumers' ping-pong: named barrier 1 + c is consumer c's turn to issue
 * its GEMMs (128 threads sync on it, the other consumer's 128 arrive); after
 * issuing, a consumer passes the turn. */
DEV void take_turn(int c) { bar_sync(1 + c, 256); }
DEV void pass_turn(int c) { bar_arrive(2 - c, 256); }

/* Masks S of kv tile it where needed (past the sequence, above the diagonal),
 * then its softmax. */
DEV void tile_softmax(float (&S)[BLOCK_N / 2], const work &w, int c, int it, int row0, rows &r, float scale_log2,
                      u32 (&A)[BLOCK_N / 16][4], float (&corr)[2]) {
    const int n0 = (w.n_blocks - 1 - it) * BLOCK_N;
    if (n0 + BLOCK_N > w.len || (CAUSAL && n0 + BLOCK_N - 1 > w.m0 + 64 * c)) mask(S, n0, w.len, row0);
    softmax(S, r, scale_log2, A, corr);
}

/* A consumer warpgroup.  FA3's intra-warpgroup overlap: while O += P_i V_i
 * runs, S_{i+1} = Q K_{i+1}^T (issued first) completes and its softmax runs;
 * O is rescaled once P_i V_i is done.  And its ping-pong: the two consumers
 * take turns issuing GEMMs, so that one's softmax runs while the other's
 * GEMMs occupy the tensor cores.  Consumer 1 lets consumer 0 go first and
 * skips its last pass, so every arrival meets a sync. */
DEV void consumer(const fmqa_prefill_sm90_params &P, const layout &L, const work &w, int c) {
    const int warp = (threadIdx.x / 32) % 4, g = (threadIdx.x & 31) / 4;
    const int row0 = w.m0 + 64 * c + 16 * warp + g; /* first of its two rows, in the sequence */
    const u32 q_tile = L.q + (u32)(64 * c * 128);    /* its 64 rows of each Q chunk */
    const float scale_log2 = P.p.sm_scale_log2;
    float O[HEAD_DIM / 2], S[BLOCK_N / 2], corr[2];
#pragma unroll
    for (int i = 0; i < HEAD_DIM / 2; ++i) O[i] = 0.0f;
    rows r = {{neg_inf(), neg_inf()}, {0.0f, 0.0f}};
    u32 A[BLOCK_N / 16][4];
    if (c == 1) pass_turn(1);
    mbar_wait(L.q_full(), 0);
    mbar_wait(L.k_full(0), 0);
    take_turn(c);
    wgmma_fence();
    issue_s(S, L, q_tile, 0);
    wgmma_commit();
    pass_turn(c);
    wgmma_wait<0>(S);
    tile_softmax(S, w, c, 0, row0, r, scale_log2, A, corr);
    for (int it = 0; it < w.n_blocks; ++it) {
        const int s = it % STAGES;
        const bool next = it + 1 < w.n_blocks;
        if (next) mbar_wait(L.k_full((it + 1) % STAGES), phase(it + 1));
        mbar_wait(L.v_full(s), phase(it));
        take_turn(c);
        wgmma_fence();
        if (next) {
            issue_s(S, L, q_tile, it + 1);
            wgmma_commit();
        }
#pragma unroll
        for (int kk = 0; kk < BLOCK_N / 16; ++kk)
            wgmma_rs<HEAD_DIM, Q_BF16, 1>(O, A[kk], desc_mnmajor(L.v(s), BLOCK_N, kk, 128), 1);
        wgmma_commit();
        if (c == 0 || next) pass_turn(c);
        if (OVERLAP) {
            u32 A_next[BLOCK_N / 16][4];
            if (next) {
                wgmma_wait<1>(S);
                tile_softmax(S, w, c, it + 1, row0, r, scale_log2, A_next, corr);
            }
            wgmma_wait<0>(O);
            mbar_arrive(L.empty(s));
            if (next) {
                rescale(O, corr);
#pragma unroll
                for (int kk = 0; kk < BLOCK_N / 16; ++kk)
#pragma unroll
                    for (int j = 0; j < 4; ++j) A[kk][j] = A_next[kk][j];
            }
        } else {
            wgmma_wait<0>(O);
            mbar_arrive(L.empty(s));
            if (next) {
                wgmma_wait<0>(S); /* retired with O; ties S for the compiler */
                tile_softmax(S, w, c, it + 1, row0, r, scale_log2, A, corr);
                rescale(O, corr);
            }
        }
    }
    store(P.p, O, r, w, row0);
}

} /* namespace */

extern "C" __global__ void __launch_bounds__(384, 1)
    fmqa_prefill_sm90_kernel(const __grid_constant__ fmqa_prefill_sm90_params P) {
    const fmqa_prefill_params &p = P.p;
    if (dynamic_smem_size() < (u32)SMEM_BYTES) __trap(); /* the launch disagrees with prefill_sm90.lua */
    extern __shared__ __align__(128) unsigned char smem[];
    const u32 base = (smem_addr(smem) + 1023) & ~1023u; /* the swizzle needs 1024-byte atoms */
    const layout L = {base, base + Q_BYTES, base + Q_BYTES + STAGES * KV_BYTES,
                      base + Q_BYTES + 2 * STAGES * KV_BYTES};
    work w;
    w.start = p.cu_seqlens_q[blockIdx.z];
    w.len = p.cu_seqlens_q[blockIdx.z + 1] - w.start;
    w.h = blockIdx.y, w.kvh = blockIdx.y / GROUP, w.m0 = blockIdx.x * BLOCK_M;
    if (w.m0 >= w.len) return; /* the whole CTA, before any barrier */
    const int kv_end = CAUSAL ? min(w.len, w.m0 + BLOCK_M) : w.len;
    w.n_blocks = (kv_end + BLOCK_N - 1) / BLOCK_N;
    if (threadIdx.x == 0) {
        mbar_init(L.q_full(), 1);
        for (int s = 0; s < STAGES; ++s) {
            mbar_init(L.k_full(s), 1);
            mbar_init(L.v_full(s), 1);
            mbar_init(L.empty(s), CONSUMERS);
        }
        fence_mbarrier_init();
    }
    __syncthreads();
    const int wg = threadIdx.x / 128;
    if (wg == 0) {
        setmaxnreg_dec<24>();
        if (threadIdx.x < 32 && elect_one()) producer(P, L, w);
    } else {
        setmaxnreg_inc<240>();
        consumer(P, L, w, wg - 1);
    }
}
