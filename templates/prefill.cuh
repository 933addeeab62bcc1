/*
 * prefill.cuh -- prefill attention (fmqa_prefill) on tensor cores, in the way
 * of FlashAttention-2: a CTA owns a block of query rows and walks the KV tiles
 * its rows may see with an online softmax in registers, each warp owning whole
 * 16-row m-tiles, so softmax needs no cross-warp traffic.  prefill.lua chooses
 * the defines and the launch; docs/kernels.md explains the design.
 *
 * Problem defines: HEAD_DIM (64, 96, 128, 256; dv = d), GROUP (query heads per
 * KV head, 1..128), Q_BF16, OUT_BF16, KV_FMT (0 f16, 1 bf16, 2 int8, 3 fp8
 * e4m3), KV_CACHE (K/V from a cache holding the new tokens; else K/V packed
 * like q), PAGED, PAGE_SIZE, CAUSAL, WINDOW, LSE, SOFTCAP (scores capped to
 * c tanh(s / c), c = logit_softcap, as decode.cuh), SCORES (observation-
 * window scores, prefill_scores.cuh).  Config defines: BLOCK_M
 * (query rows per CTA), BLOCK_N (KV positions per tile), WARPS, STAGES
 * (cp.async pipeline depth); BLOCK_M = 16 * WARPS * MT, MT m-tiles a warp.
 *
 * Work split.  Grid (row blocks, num_kv_heads, batch).  The rows of sequence b
 * and KV head hk are r = t * GROUP + g (new token t, query head hk * GROUP +
 * g), M = Tq_b * GROUP of them (GQA/MQA packed into M: every K/V byte a CTA
 * loads serves the whole group, and a 1-token sequence still fills rows).
 * Row blocks are taken in reverse (the longest causal rows start first);
 * blocks past M exit at once.
 *
 * KV tiles.  A CTA's rows sit at positions [p_lo, p_hi].  They see at most
 * the sinks [0, s0) and [lo, end): end = p_hi + 1 (causal) or kv_len, lo =
 * p_lo - window + 1 (window) or 0, s0 = min(sink_tokens, lo).  Tiles are
 * BLOCK_N-aligned ranges of positions: those covering the sinks, then those
 * from lo (rounded down) to end, without repeating a sink tile.  Tiles past
 * `end` -- the fully masked causal tiles -- are never read; only tiles where
 * some row may not see some column pay for the per-element mask.
 *
 * Fragments (m16n8k16) and 8-bit caches follow decode.cuh ("Fragments"): Q,
 * K, V tiles row per token in shared memory with 16 bytes of padding, one
 * ldmatrix lane address for all; 8-bit K and V are read as byte pairs and
 * converted exactly (q8x4_to_pairs), Q stored permuted (q_chunk_to_mma) and O
 * columns unpermuted (o_col).  The 8-bit scales multiply S's columns (k_scale)
 * and P's columns before P V (v_scale); fp8 values arrive divided by
 * FP8_F16_FOLD, which the scales multiply back.
 *
 * Softmax is in base 2.  A learned sink logit (p.sinks) joins each row's
 * denominator at the end (softmax_finish).  A row that sees nothing writes
 * o = 0, lse = -inf (the sink's logit with sinks).
 */
#include "fmqa_params.h"
#include "fmqa_device.cuh"

using namespace fmqa_dev;

#define DEV static __device__ __forceinline__

constexpr int D = HEAD_DIM;
constexpr int EB = KV_FMT >= 2 ? 1 : 2;                  /* bytes per KV element    */
constexpr int MMA_BF16 = KV_FMT == 1 || (KV_FMT >= 2 && Q_BF16);
constexpr int RB = D * EB + 16;                           /* smem bytes per KV row  */
constexpr int CPR = D * EB / 16;                          /* 16-byte chunks per row */
constexpr int QRB = D * 2 + 16;                           /* smem bytes per Q row   */
constexpr int NTHREADS = 32 * WARPS;
constexpr int MT = BLOCK_M / (16 * WARPS);                /* m-tiles per warp       */
constexpr int NT_S = BLOCK_N / 8;                         /* S n-tiles              */
constexpr int NT_O = D / 8;                               /* O d-tiles              */
constexpr int Q_BYTES = BLOCK_M * QRB;
constexpr int SCALE_BYTES = EB == 1 ? 2 * BLOCK_N * 4 : 0;
constexpr int STAGE_BYTES = 2 * BLOCK_N * RB + SCALE_BYTES;
/* Must equal prefill.lua's shared_bytes(). */
constexpr int SMEM_BYTES = Q_BYTES + STAGES * STAGE_BYTES;
constexpr int PS = PAGED ? PAGE_SIZE : 16;
constexpr float KV_FOLD = KV_FMT == 3 ? FP8_F16_FOLD : 1.0f;

static_assert(D == 64 || D == 96 || D == 128 || D == 256, "HEAD_DIM");
static_assert(MT >= 1 && BLOCK_M == 16 * WARPS * MT, "BLOCK_M must be 16 * WARPS * MT");
static_assert(BLOCK_N % 16 == 0, "BLOCK_N");
static_assert(!PAGED || (KV_CACHE && PAGE_SIZE >= 16 && (PAGE_SIZE & (PAGE_SIZE - 1)) == 0), "PAGE_SIZE");
static_assert(KV_CACHE || EB == 2, "8-bit K/V only from a cache");
static_assert(STAGES >= 2, "STAGES");

/* One sequence as the kernel sees it (cu_seqlens_q and kv_lens clamped to the
 * problem's bounds, so that bad device arrays cannot send loads out of the
 * tensors the call validated). */
struct seq_info {
    int q0;     /* its first row in q, o, lse (and K/V without a cache) */
    int tq;     /* its new tokens                                       */
    int kv_len; /* positions it holds                                   */
    int first;  /* position of new token 0                              */
};

DEV seq_info seq_info_make(const fmqa_prefill_params &p, int b) {
    seq_info s;
    s.q0 = __ldg(p.cu_seqlens_q + b);
    s.tq = min(max(__ldg(p.cu_seqlens_q + b + 1) - s.q0, 0), p.q_tokens_max);
    s.kv_len = KV_CACHE ? min(max(__ldg(p.kv_lens + b), s.tq), p.kv_len_max) : s.tq;
    s.first = s.kv_len - s.tq;
    return s;
}

/* The KV tiles rows [r0, r1) of a sequence read (see "KV tiles" above). */
struct tile_range {
    int p_lo, p_hi;   /* positions of the CTA's first and last real token */
    int end;          /* no position >= end is read                       */
    int n_sink, w0;   /* sink tiles [0, n_sink), then tiles from w0        */
    int ntiles;
};

DEV tile_range tile_range_make(const fmqa_prefill_params &p, const seq_info &s, int r0, int r1) {
    tile_range t;
    t.p_lo = s.first + r0 / GROUP;
    t.p_hi = s.first + min((r1 - 1) / GROUP, s.tq - 1);
    t.end = CAUSAL ? t.p_hi + 1 : s.kv_len;
    int lo = 0, s0 = 0;
    if (WINDOW) {
        lo = max(t.p_lo - p.window + 1, 0);
        s0 = min(p.sink_tokens, lo);
    }
    t.n_sink = (s0 + BLOCK_N - 1) / BLOCK_N;
    t.w0 = max(lo / BLOCK_N, t.n_sink) * BLOCK_N;
    t.ntiles = t.n_sink + (t.end > t.w0 ? (t.end - t.w0 + BLOCK_N - 1) / BLOCK_N : 0);
    return t;
}

DEV int tile_start(const tile_range &t, int it) { return it < t.n_sink ? it * BLOCK_N : t.w0 + (it - t.n_sink) * BLOCK_N; }

/* True when some row of the CTA may not see some column of the tile. */
DEV bool tile_needs_mask(const fmqa_prefill_params &p, const tile_range &t, int j0) {
    if (j0 + BLOCK_N > (CAUSAL ? t.p_lo + 1 : t.end)) return true;
    return WINDOW && j0 <= t.p_hi - p.window;
}

/* Element offset of position j's row (head 0) in a K/V-shaped tensor with
 * outer (batch or page) stride sb and token stride st, or of its scale. */
DEV long long row_offset(const fmqa_prefill_params &p, const seq_info &s, int b, int j, long long sb, long long st) {
    if (!KV_CACHE) return (long long)(s.q0 + j) * st;
    if (PAGED) {
        const long long page = __ldg(p.page_table + b * p.pt_stride + (unsigned)j / PS);
        return page * sb + (long long)(j & (PS - 1)) * st;
    }
    return (long long)b * sb + (long long)j * st;
}

/* Issues the cp.async copies of the tile at positions [j0, j0 + BLOCK_N) of
 * KV head hk: K rows, then V rows, then (8-bit) the K and V scales (V_TOO =
 * false: K and its scales only, for the scores); rows at or past `end` are
 * zero-filled without a read.  A thread copies 16-byte column i % CPR of rows
 * i / CPR, + NTHREADS / CPR, ... */
template <bool V_TOO = true>
DEV void load_tile(const fmqa_prefill_params &p, const seq_info &s, int b, int hk, int j0, int end,
                   unsigned char *stage) {
    constexpr int RPP = NTHREADS / CPR; /* rows per pass */
    const u32 dst = smem_addr(stage);
    const int c16 = threadIdx.x % CPR;
    const char *kb = (const char *)p.k + hk * p.k_sh * EB + c16 * 16;
    const char *vb = (const char *)p.v + hk * p.v_sh * EB + c16 * 16;
#pragma unroll
    for (int k = 0; k < (BLOCK_N + RPP - 1) / RPP; ++k) {
        const int row = threadIdx.x / CPR + k * RPP, j = j0 + row;
        if (row >= BLOCK_N || (RPP * CPR < NTHREADS && threadIdx.x >= RPP * CPR)) break;
        const bool ok = j < end;
        const u32 at = dst + row * RB + c16 * 16;
        cp_async16(at, ok ? kb + row_offset(p, s, b, j, p.k_sb, p.k_st) * EB : (const char *)p.k, ok ? 16 : 0);
        if (V_TOO)
            cp_async16(at + BLOCK_N * RB, ok ? vb + row_offset(p, s, b, j, p.v_sb, p.v_st) * EB : (const char *)p.v,
                       ok ? 16 : 0);
    }
    if (EB == 1) {
#pragma unroll
        for (int k = 0; k < (BLOCK_N + NTHREADS - 1) / NTHREADS; ++k) {
            const int row = threadIdx.x + k * NTHREADS, j = j0 + row;
            if (row >= BLOCK_N) break;
            const bool ok = j < end;
            const u32 sc = dst + 2 * BLOCK_N * RB + row * 4;
            cp_async4(sc, ok ? p.k_scale + row_offset(p, s, b, j, p.ks_sb, p.ks_st) + hk * p.ks_sh : p.k_scale,
                      ok ? 4 : 0);
            if (V_TOO)
                cp_async4(sc + BLOCK_N * 4,
                          ok ? p.v_scale + row_offset(p, s, b, j, p.vs_sb, p.vs_st) + hk * p.vs_sh : p.v_scale,
                          ok ? 4 : 0);
        }
    }
}

/* The CTA's Q rows into shared memory as the mma type (zeros past M;
 * load_q_rows, fmqa_device.cuh). */
DEV void load_q(const fmqa_prefill_params &p, const seq_info &s, int hk, int r0, unsigned char *qs) {
    const int m = s.tq * GROUP;
    load_q_rows<Q_BF16, MMA_BF16, EB == 1, D, BLOCK_M, NTHREADS, QRB>(qs, [&](int row) -> const u16 * {
        const int r = r0 + row, t = r / GROUP, h = hk * GROUP + r % GROUP;
        return r < m ? (const u16 *)p.q + (long long)(s.q0 + t) * p.q_st + h * p.q_sh : nullptr;
    });
}

/* Per-warp online-softmax state of its MT m-tiles: O accumulators, running
 * maxima (base-2 logits) and this thread's partial sums of its two rows g and
 * g + 8 (summed over the quad at the end). */
struct softmax_state {
    float o[MT][NT_O][4];
    float m[MT][2], l[MT][2];
};

/* The warp's logits of one tile: S = Q K^T for its MT m-tiles (K fragments
 * loaded once for all), scaled to base 2 (and by the 8-bit K scales),
 * soft-capped, and with `masked` -inf where a row may not see a column; rows
 * at positions qpos.  sacc as m16n8k16 accumulators: element 2 h + e of
 * [mt][nt] is row mt * 16 + lane / 4 + 8 h, column nt * 8 + 2 (lane % 4) + e. */
DEV void tile_logits(const fmqa_prefill_params &p, const seq_info &s, const int (&qpos)[MT][2], u32 q_base,
                     const unsigned char *stage, int j0, bool masked, float (&sacc)[MT][NT_S][4]) {
    const int lane = threadIdx.x & 31;
    const int lrow = ((lane >> 3) & 1) * 8 + (lane & 7), lcol = (lane >> 4) * 16;
    const int cq = lane & 3;
    const u32 k_base = smem_addr(stage) + lrow * RB;
    const float *kscale = (const float *)(stage + 2 * BLOCK_N * RB);

#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int nt = 0; nt < NT_S; ++nt) sacc[mt][nt][0] = sacc[mt][nt][1] = sacc[mt][nt][2] = sacc[mt][nt][3] = 0.0f;

#pragma unroll
    for (int kc = 0; kc < D / 16; ++kc) {
        u32 a[MT][4];
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) ldsm_x4(a[mt], q_base + mt * 16 * QRB + kc * 32 + lcol);
#pragma unroll
        for (int pp = 0; pp < NT_S / 2; ++pp) {
            const u32 addr = k_base + pp * 16 * RB;
            u32 b[4];
            if (EB == 2) {
                u32 r[4];
                ldsm_x4(r, addr + kc * 32 + lcol);
                b[0] = r[0], b[1] = r[2], b[2] = r[1], b[3] = r[3];
            } else {
                u32 r[2];
                ldsm_x2(r, addr + kc * 16);
                q8x4_to_pairs<KV_FMT, MMA_BF16>(r[0], b[0], b[1]);
                q8x4_to_pairs<KV_FMT, MMA_BF16>(r[1], b[2], b[3]);
            }
#pragma unroll
            for (int mt = 0; mt < MT; ++mt) {
                mma16816<MMA_BF16>(sacc[mt][2 * pp], a[mt], b[0], b[1]);
                mma16816<MMA_BF16>(sacc[mt][2 * pp + 1], a[mt], b[2], b[3]);
            }
        }
    }

    /* Scale to base-2 logits, mask. */
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int nt = 0; nt < NT_S; ++nt)
#pragma unroll
            for (int e = 0; e < 2; ++e) {
                const int col = nt * 8 + 2 * cq + e, j = j0 + col;
                const float sc = EB == 1 ? p.sm_scale_log2 * KV_FOLD * kscale[col] : p.sm_scale_log2;
#pragma unroll
                for (int h = 0; h < 2; ++h) {
                    float x = sacc[mt][nt][2 * h + e] * sc;
                    if (SOFTCAP) x = p.softcap_log2 * tanh_from_ex2(x * p.softcap_inv);
                    if (masked) {
                        bool ok = CAUSAL ? j <= qpos[mt][h] : j < s.kv_len;
                        if (WINDOW) ok = ok && (j > qpos[mt][h] - p.window || j < p.sink_tokens);
                        if (!ok) x = neg_inf();
                    }
                    sacc[mt][nt][2 * h + e] = x;
                }
            }
}

/* One tile for one warp: its logits (tile_logits), online softmax, O += P V.
 * V fragments are loaded once and used for all MT m-tiles. */
DEV void warp_tile(const fmqa_prefill_params &p, const seq_info &s, const int (&qpos)[MT][2], u32 q_base,
                   const unsigned char *stage, int j0, bool masked, softmax_state &st) {
    const int lane = threadIdx.x & 31;
    const int lrow = ((lane >> 3) & 1) * 8 + (lane & 7), lcol = (lane >> 4) * 16;
    const int cq = lane & 3;
    const u32 v_base = smem_addr(stage) + lrow * RB + BLOCK_N * RB;
    const float *vscale = (const float *)(stage + 2 * BLOCK_N * RB) + BLOCK_N;

    float sacc[MT][NT_S][4];
    tile_logits(p, s, qpos, q_base, stage, j0, masked, sacc);

    /* New running max, rescale O and l. */
    float base[MT][2];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
        float mx[2] = {neg_inf(), neg_inf()};
#pragma unroll
        for (int nt = 0; nt < NT_S; ++nt)
#pragma unroll
            for (int e = 0; e < 4; ++e) mx[e >> 1] = fmaxf(mx[e >> 1], sacc[mt][nt][e]);
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const float m_new = fmaxf(st.m[mt][h], quad_max(mx[h]));
            base[mt][h] = m_new == neg_inf() ? 0.0f : m_new; /* keeps -inf - -inf out */
            const float alpha = ex2(st.m[mt][h] - base[mt][h]);
            st.m[mt][h] = m_new;
            st.l[mt][h] *= alpha;
#pragma unroll
            for (int nt = 0; nt < NT_O; ++nt) {
                st.o[mt][nt][2 * h] *= alpha;
                st.o[mt][nt][2 * h + 1] *= alpha;
            }
        }
    }

    /* P (scaled per column by v_scale for 8-bit caches) as A fragments, 16
     * positions at a time, times V. */
#pragma unroll
    for (int pp = 0; pp < NT_S / 2; ++pp) {
        u32 a[MT][4];
#pragma unroll
        for (int half = 0; half < 2; ++half) {
            const int nt = 2 * pp + half, col = nt * 8 + 2 * cq;
            const float vs0 = EB == 1 ? KV_FOLD * vscale[col] : 1.0f;
            const float vs1 = EB == 1 ? KV_FOLD * vscale[col + 1] : 1.0f;
#pragma unroll
            for (int mt = 0; mt < MT; ++mt)
#pragma unroll
                for (int h = 0; h < 2; ++h) {
                    const float p0 = ex2(sacc[mt][nt][2 * h] - base[mt][h]);
                    const float p1 = ex2(sacc[mt][nt][2 * h + 1] - base[mt][h]);
                    st.l[mt][h] += p0 + p1;
                    a[mt][2 * half + h] = pack2<MMA_BF16>(p0 * vs0, p1 * vs1);
                }
        }
        const u32 addr = v_base + pp * 16 * RB;
#pragma unroll
        for (int i = 0; i < D / 16; ++i) {
            u32 b[4];
            if (EB == 2) {
                ldsm_x4_t(b, addr + i * 32 + lcol);
            } else {
                u32 r[2];
                ldsm_x2_t(r, addr + i * 16);
                q8x4_to_pairs<KV_FMT, MMA_BF16>(r[0], b[0], b[2]);
                q8x4_to_pairs<KV_FMT, MMA_BF16>(r[1], b[1], b[3]);
            }
#pragma unroll
            for (int mt = 0; mt < MT; ++mt) {
                mma16816<MMA_BF16>(st.o[mt][2 * i], a[mt], b[0], b[1]);
                mma16816<MMA_BF16>(st.o[mt][2 * i + 1], a[mt], b[2], b[3]);
            }
        }
    }
}

/* Writes the warp's rows of o (and lse). */
DEV void store_rows(const fmqa_prefill_params &p, const seq_info &s, int hk, int wr0, softmax_state &st) {
    const int lane = threadIdx.x & 31, m = s.tq * GROUP;
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const float l = quad_sum(st.l[mt][h]);
            const int r = wr0 + mt * 16 + (lane >> 2) + 8 * h;
            if (r >= m) continue;
            const int t = r / GROUP, head = hk * GROUP + r % GROUP;
            float inv, lse2;
            softmax_finish(st.m[mt][h], l, p.sinks ? p.sinks[head] * LOG2E : neg_inf(), inv, lse2);
            u16 *o = (u16 *)p.o + (long long)(s.q0 + t) * p.o_st + head * p.o_sh;
#pragma unroll
            for (int nt = 0; nt < NT_O; ++nt) {
                const float x0 = st.o[mt][nt][2 * h] * inv, x1 = st.o[mt][nt][2 * h + 1] * inv;
                const int c0 = o_col<EB == 1>(nt, 2 * (lane & 3));
                if (EB == 2) { /* columns c0, c0 + 1: one 4-byte store */
                    *(u32 *)(o + c0) = pack2<OUT_BF16>(x0, x1);
                } else {
                    o[c0] = f32_to_h<OUT_BF16>(x0);
                    o[o_col<EB == 1>(nt, 2 * (lane & 3) + 1)] = f32_to_h<OUT_BF16>(x1);
                }
            }
            if (LSE && (lane & 3) == 0)
                p.lse[(long long)(s.q0 + t) * p.num_q_heads + head] = lse2 * 0.69314718055994531f;
            if (SCORES && (lane & 3) == 0 && t >= s.tq - p.sc_window) /* prefill_scores.cuh */
                p.ws_sl[(long long)(s.q0 + t) * p.num_q_heads + head] = lse2;
        }
}

/* Positions of the warp's rows (from row wr0): row mt * 16 + lane / 4 + 8 h
 * is token r / GROUP; padding rows borrow the last real token. */
DEV void row_positions(const seq_info &s, int wr0, int (&qpos)[MT][2]) {
    const int lane = threadIdx.x & 31;
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int h = 0; h < 2; ++h) qpos[mt][h] = s.first + min((wr0 + mt * 16 + (lane >> 2) + 8 * h) / GROUP, s.tq - 1);
}

/* The ldmatrix address of this lane's Q row in the warp's first m-tile. */
DEV u32 warp_q_base(const unsigned char *qs) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    return smem_addr(qs) + (warp * 16 * MT + ((lane >> 3) & 1) * 8 + (lane & 7)) * QRB;
}

/* At least one CTA an SM: without it ptxas caps d = 96 at 128 registers (two
 * CTAs of 256 threads) and spills. */
extern "C" __global__ void __launch_bounds__(NTHREADS, 1) fmqa_prefill_kernel(const fmqa_prefill_params p) {
    extern __shared__ __align__(128) unsigned char smem[];
    if (dynamic_smem_size() < (u32)SMEM_BYTES) __trap(); /* the launch disagrees with prefill.lua */
    const int rb = gridDim.x - 1 - blockIdx.x, hk = blockIdx.y, b = blockIdx.z;
    const seq_info s = seq_info_make(p, b);
    const int r0 = rb * BLOCK_M;
    if (r0 >= s.tq * GROUP) return; /* the whole CTA: no barrier was reached */
    const int warp = threadIdx.x >> 5;
    unsigned char *qs = smem, *stages = smem + Q_BYTES;
    const tile_range tr = tile_range_make(p, s, r0, r0 + BLOCK_M);

    /* The first KV copies go out before Q is read. */
#pragma unroll
    for (int i = 0; i < STAGES - 1; ++i) {
        if (i < tr.ntiles) load_tile(p, s, b, hk, tile_start(tr, i), tr.end, stages + i * STAGE_BYTES);
        cp_async_commit();
    }
    load_q(p, s, hk, r0, qs); /* published by the loop's first barrier */

    const int wr0 = r0 + warp * 16 * MT; /* the warp's first row */
    int qpos[MT][2];
    row_positions(s, wr0, qpos);
    softmax_state st;
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
        for (int nt = 0; nt < NT_O; ++nt) st.o[mt][nt][0] = st.o[mt][nt][1] = st.o[mt][nt][2] = st.o[mt][nt][3] = 0.0f;
        st.m[mt][0] = st.m[mt][1] = neg_inf();
        st.l[mt][0] = st.l[mt][1] = 0.0f;
    }
    const u32 q_base = warp_q_base(qs);
    int st_cur = 0, st_next = STAGES - 1;
    for (int it = 0; it < tr.ntiles; ++it) {
        cp_async_wait<STAGES - 2>();
        __syncthreads(); /* tile `it` visible to all; tile it-1's stage is free */
        if (it + STAGES - 1 < tr.ntiles)
            load_tile(p, s, b, hk, tile_start(tr, it + STAGES - 1), tr.end, stages + st_next * STAGE_BYTES);
        cp_async_commit();
        const int j0 = tile_start(tr, it);
        /* Warps of padding rows compute too (their rows are never stored): the
         * CTA waits for its busiest warp anyway. */
        warp_tile(p, s, qpos, q_base, stages + st_cur * STAGE_BYTES, j0, tile_needs_mask(p, tr, j0), st);
        st_cur = st_cur + 1 == STAGES ? 0 : st_cur + 1;
        st_next = st_next + 1 == STAGES ? 0 : st_next + 1;
    }
    store_rows(p, s, hk, wr0, st);
}

#include "prefill_scores.cuh"
