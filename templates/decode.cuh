/*
 * decode.cuh -- decode attention (fmqa_decode) on tensor cores, flash-decoding
 * style, and the split-KV combine.  decode.lua chooses the defines and the
 * launch; docs/kernels.md explains the design and the numbers.
 *
 * Problem defines: HEAD_DIM (64, 96, 128, 256; dv = d), GROUP (query heads per
 * KV head), Q_TOKENS (1..16), Q_BF16, OUT_BF16, KV_FMT (0 f16, 1 bf16, 2 int8,
 * 3 fp8 e4m3), PAGED, PAGE_SIZE (power of two >= 16), CAUSAL, TREE, WINDOW,
 * RING, LSE.  Config defines: BLOCK_N (KV tokens per tile), WARPS_M (16-row
 * groups per CTA), WARPS_N (warps sharing a tile along N), STAGES (cp.async
 * pipeline depth).  SCORES: heavy-hitter scores (decode_scores.cuh).
 *
 * Work split.  Grid (splits, num_kv_heads * ROW_BLOCKS, batch).  The rows of a
 * KV head are r = t * GROUP + g (query token t, head hk * GROUP + g), M = GROUP *
 * Q_TOKENS of them; a CTA owns ROWS = 16 * WARPS_M consecutive rows, so every
 * K/V byte a CTA loads serves all its rows.  Warp w handles the 16 rows of
 * mw = w % WARPS_M and the tokens [nw * WN, nw * WN + WN) of each tile, nw = w /
 * WARPS_M, WN = BLOCK_N / WARPS_N: each warp keeps its own running max, sum and
 * O accumulator, and the WARPS_N partial results merge once, at the end.
 *
 * KV order.  A sequence's visible positions are read in "virtual" order v:
 * first the sinks [0, s0), then the window [lo, kv_len) (no window: s0 = 0,
 * lo = 0).  Split s takes v in [s * split_tokens, +split_tokens), the last
 * split everything to the end.  Positions outside these ranges are invisible
 * to every query token by the rules of fastmqa.h / ref.h, and are never read.
 *
 * Fragments (m16n8k16, see mma16816 in fmqa_ptx.cuh).  Tiles sit in shared
 * memory row per token, RB bytes a row (16 bytes of padding make ldmatrix
 * conflict-free).  All ldmatrix calls use the same lane address: row
 * lrow = ((lane>>3)&1)*8 + (lane&7), byte lcol = (lane>>4)*16, so that
 *  - Q (A operand, x4): matrices (rows 0-7|8-15) x (k 0-7|8-15) = a0..a3;
 *  - K, 16-bit (x4): (tokens 0-7|8-15) x (k 0-7|8-15): n-tile 0 = {r0, r2},
 *    n-tile 1 = {r1, r3};
 *  - V, 16-bit (x4.trans): (tokens 0-7|8-15) x (d 0-7|8-15): d-tile 0 =
 *    {r0, r1}, d-tile 1 = {r2, r3}; O column u of d-tile nt is d = 8 nt + u.
 * 8-bit caches are read as 16-bit pairs (x2, lanes 0-15: tokens 0-7|8-15 by 16
 * bytes), so a register holds four bytes b0..b3 and converts to the pairs
 * (b0,b2), (b1,b3) (q8x4_to_pairs):
 *  - K: a register is k 4c..4c+3 of token g (c = lane%4, 16-k chunk); b0 =
 *    (b0,b2) and b1 = (b1,b3) make logical k (2c, 2c+1, 2c+8, 2c+9) read
 *    physical k (4c, 4c+2, 4c+1, 4c+3).  Q is stored in shared memory with the
 *    same permutation (q_phys_col), so q . k is unchanged;
 *  - V (x2.trans): a register is (V[2c][2u], V[2c][2u+1], V[2c+1][2u],
 *    V[2c+1][2u+1]) with u = lane/4 over 16 d: (b0,b2) is the B fragment of
 *    d = 2u, (b1,b3) of d = 2u+1.  So O d-tile nt holds d = 16 (nt/2) + 2u +
 *    (nt%2) (o_col), undone when O is stored.
 * Scales: S is multiplied per column by sm_scale * log2(e) * k_scale[token];
 * P's columns by v_scale[token] before P V (the sum l uses the unscaled P).
 * fp8 values arrive divided by FP8_F16_FOLD (2^8 on sm_80/86, 1 on sm_89+),
 * which the scales multiply back.
 *
 * Softmax is in base 2 (exp2).  A row that sees nothing keeps m = -inf, l = 0
 * and writes o = 0, lse = -inf.  With num_splits > 1 the kernel writes, per
 * split, O normalised by its own sum to ws_o and m + log2(l) (base 2!) to
 * ws_lse; fmqa_decode_combine merges them.  An empty split writes 0 and -inf.
 */
#include "fmqa_params.h"
#include "fmqa_device.cuh"

using namespace fmqa_dev;

#define DEV static __device__ __forceinline__

constexpr int D = HEAD_DIM;
constexpr int EB = KV_FMT >= 2 ? 1 : 2;                  /* bytes per KV element   */
constexpr int MMA_BF16 = KV_FMT == 1 || (KV_FMT >= 2 && Q_BF16);
constexpr int RB = D * EB + 16;                           /* smem bytes per KV row */
constexpr int CPR = D * EB / 16;                          /* 16-byte chunks per row */
constexpr int QRB = D * 2 + 16;                           /* smem bytes per Q row  */
constexpr int M = GROUP * Q_TOKENS;
constexpr int ROWS = 16 * WARPS_M;
constexpr int ROW_BLOCKS = (M + ROWS - 1) / ROWS;
constexpr int NTHREADS = 32 * WARPS_M * WARPS_N;
constexpr int WN = BLOCK_N / WARPS_N;                     /* tokens per warp a tile */
constexpr int NT_S = WN / 8;                              /* S n-tiles per warp     */
constexpr int NT_O = D / 8;                               /* O d-tiles              */
constexpr int Q_BYTES = ROWS * QRB;
constexpr int SCALE_BYTES = EB == 1 ? 2 * BLOCK_N * 4 : 0;
constexpr int STAGE_BYTES = 2 * BLOCK_N * RB + SCALE_BYTES;
constexpr int MERGE_BYTES = WARPS_M * (WARPS_N - 1) * (NT_O * 4 + 4) * 32 * 4;
/* Must equal decode.lua's shared_bytes(). */
constexpr int SMEM_BYTES = Q_BYTES + (STAGES * STAGE_BYTES > MERGE_BYTES ? STAGES * STAGE_BYTES : MERGE_BYTES);
constexpr int PS = PAGED ? PAGE_SIZE : 16;                /* page size (if paged) */
constexpr float KV_FOLD = KV_FMT == 3 ? FP8_F16_FOLD : 1.0f;

static_assert(D == 64 || D == 96 || D == 128 || D == 256, "HEAD_DIM");
static_assert(WN % 16 == 0, "each warp needs whole 16-token chunks");
static_assert(Q_TOKENS >= 1 && Q_TOKENS <= 16, "Q_TOKENS");
static_assert(!PAGED || (PAGE_SIZE >= 16 && (PAGE_SIZE & (PAGE_SIZE - 1)) == 0), "PAGE_SIZE");
static_assert(STAGES >= 2, "STAGES");

/* Where a sequence's visible positions are and how they map to memory. */
struct seq_view {
    int kv_len, first_draft; /* query token t sits at first_draft + t          */
    int s0, lo, nvirt;       /* sinks [0, s0), window [lo, kv_len); v count    */
    int ring_j0, ring_s0;    /* RING: position ring_j0 lives in slot ring_s0   */
};

DEV seq_view seq_view_make(const fmqa_decode_params &p, int b) {
    seq_view s;
    s.kv_len = p.kv_lens[b];
    s.first_draft = s.kv_len - Q_TOKENS;
    s.lo = 0;
    s.s0 = 0;
    if (WINDOW) {
        /* The first query token sees j > first_draft - window; a ring also lost
         * everything before kv_len - window (ref.h rule 5). */
        s.lo = RING ? s.kv_len - p.window : s.first_draft - p.window + 1;
        s.lo = max(s.lo, 0);
        s.s0 = min(p.sink_tokens, s.lo);
    }
    s.nvirt = s.s0 + max(s.kv_len - s.lo, 0);
    s.ring_j0 = max(s.lo, p.sink_tokens);
    s.ring_s0 = RING ? p.sink_tokens + (s.ring_j0 - p.sink_tokens) % max(p.window, 1) : 0;
    return s;
}

DEV int pos_of(const seq_view &s, int v) { return v < s.s0 ? v : s.lo + (v - s.s0); }

/* Cache slot of position j (ref_cache_slot): the ring advances one slot per
 * position from ring_s0 and wraps once at most, since the window part spans at
 * most `window` positions. */
DEV int slot_of(const fmqa_decode_params &p, const seq_view &s, int j) {
    if (!RING || j < s.ring_j0) return j;
    int slot = s.ring_s0 + (j - s.ring_j0);
    return slot >= p.sink_tokens + p.window ? slot - p.window : slot;
}

/* Element offsets of slot's 8-bit scales (K and V) in their (batch|page,
 * token) part: a page lookup when paged. */
struct scale_offsets {
    long long k, v;
};

DEV scale_offsets scale_offsets_of(const fmqa_decode_params &p, int b, int slot) {
    long long outer = b, in = slot;
    if (PAGED) {
        outer = __ldg(p.page_table + b * p.pt_stride + (unsigned)slot / PS);
        in = slot & (PS - 1);
    }
    return {outer * p.ks_sb + in * p.ks_st, outer * p.vs_sb + in * p.vs_st};
}

/* A thread's K and V source for its 16-byte column c16 of head hk: the byte
 * address of that column in token 0 of the sequence's cache (contiguous) or of
 * page 0 (paged), computed once per CTA. */
struct kv_ptrs {
    const char *k, *v;
};
DEV kv_ptrs kv_base(const fmqa_decode_params &p, int b, int hk, int c16) {
    const long long outer = PAGED ? 0 : b;
    return {(const char *)p.k + (outer * p.k_sb + hk * p.k_sh) * EB + c16 * 16,
            (const char *)p.v + (outer * p.v_sb + hk * p.v_sh) * EB + c16 * 16};
}

/* Where slot's row of the thread's column lies: one page lookup when paged. */
DEV kv_ptrs kv_row(const fmqa_decode_params &p, const kv_ptrs &base, int b, int slot) {
    long long k = (long long)slot * p.k_st, v = (long long)slot * p.v_st;
    if (PAGED) {
        const long long page = __ldg(p.page_table + b * p.pt_stride + (unsigned)slot / PS);
        const int in = slot & (PS - 1);
        k = page * p.k_sb + in * p.k_st;
        v = page * p.v_sb + in * p.v_st;
    }
    return {base.k + k * EB, base.v + v * EB};
}

/* Who copies what.  Thread i < LG * CPR copies 16-byte column c16 = i % CPR of
 * the PER consecutive rows from (i / CPR) * PER of every tile, as runs of RUN
 * rows (a page holds a whole run of aligned positions): one address
 * computation (and page lookup) per run, then one 64-bit add per row and
 * tensor.  LG is a power of two, so PER divides BLOCK_N. */
constexpr int pow2_floor(int x) { return x >= 2 ? 2 * pow2_floor(x / 2) : 1; }
constexpr int LG = pow2_floor(NTHREADS / CPR < BLOCK_N ? NTHREADS / CPR : BLOCK_N);
constexpr int PER = BLOCK_N / LG;
constexpr int RUN = PAGED && PS < PER ? PS : PER;
static_assert(NTHREADS >= CPR && PER % RUN == 0, "tile copy layout");

/* Copies rows [v, v + RUN) of a tile (zeros past v_end; FULL: none is) to
 * their K row chunk at shared address dst and V chunk BLOCK_N rows later.
 * When the run's positions sit in consecutive slots of one page (always,
 * without window or paging), addresses advance by the token strides; across
 * a sink/window seam, a ring wrap or a page boundary every row is looked up. */
template <bool FULL>
DEV void load_run(const fmqa_decode_params &p, const seq_view &s, const kv_ptrs &base, const kv_ptrs &at, int b,
                  int v, int v_end, u32 dst) {
    const long long kst = p.k_st * EB, vst = p.v_st * EB;
    const int first = slot_of(p, s, pos_of(s, v));
    bool linear = FULL || v < v_end;
    if (WINDOW || PAGED) {
        const int last = slot_of(p, s, pos_of(s, v + RUN - 1));
        linear = linear && last - first == RUN - 1 && (!PAGED || (first & -PS) == (last & -PS));
    }
    if (linear) {
        kv_ptrs a = WINDOW || PAGED ? kv_row(p, base, b, first) : at;
#pragma unroll
        for (int k = 0; k < RUN; ++k) {
            const bool ok = FULL || v + k < v_end;
            cp_async16(dst + k * RB, ok ? a.k : (const char *)p.k, ok ? 16 : 0);
            cp_async16(dst + (BLOCK_N + k) * RB, ok ? a.v : (const char *)p.v, ok ? 16 : 0);
            a.k += kst, a.v += vst;
        }
    } else {
#pragma unroll
        for (int k = 0; k < RUN; ++k) {
            const bool ok = FULL || v + k < v_end;
            const kv_ptrs a = kv_row(p, base, b, ok ? slot_of(p, s, pos_of(s, v + k)) : 0);
            cp_async16(dst + k * RB, ok ? a.k : (const char *)p.k, ok ? 16 : 0);
            cp_async16(dst + (BLOCK_N + k) * RB, ok ? a.v : (const char *)p.v, ok ? 16 : 0);
        }
    }
}

template <bool FULL>
DEV void load_kv(const fmqa_decode_params &p, const seq_view &s, const kv_ptrs &base, const kv_ptrs &at, int b,
                 int v0, int v_end, u32 dst) {
    const int i = threadIdx.x, g = i / CPR;
    if (LG * CPR < NTHREADS && i >= LG * CPR) return;
#pragma unroll
    for (int j = 0; j < PER / RUN; ++j) {
        const int row = g * PER + j * RUN;
        load_run<FULL>(p, s, base, at, b, v0 + row, v_end, dst + row * RB + (i - g * CPR) * 16);
    }
}

/* Issues the cp.async copies of tile [v0, v0 + BLOCK_N) (zeros past v_end).
 * base is kv_base() of this thread; without window or paging, at is where the
 * thread's first row of this tile lies (kv_row of v0 + its first row), moved
 * on to the next tile's here: the steady state then adds a stride per row. */
DEV void load_tile(const fmqa_decode_params &p, const seq_view &s, const kv_ptrs &base, kv_ptrs &at, int b,
                   int hk, int v0, int v_end, unsigned char *stage) {
    const u32 dst = smem_addr(stage);
    if (v0 + BLOCK_N <= v_end)
        load_kv<true>(p, s, base, at, b, v0, v_end, dst);
    else
        load_kv<false>(p, s, base, at, b, v0, v_end, dst);
    at.k += (long long)BLOCK_N * p.k_st * EB;
    at.v += (long long)BLOCK_N * p.v_st * EB;
    if (EB == 1) {
#pragma unroll
        for (int k = 0; k < (BLOCK_N + NTHREADS - 1) / NTHREADS; ++k) {
            const int row = threadIdx.x + k * NTHREADS, v = v0 + row;
            if (row >= BLOCK_N) break;
            const int ok = v < v_end;
            const scale_offsets o = scale_offsets_of(p, b, ok ? slot_of(p, s, pos_of(s, v)) : 0);
            const u32 sc = dst + 2 * BLOCK_N * RB + row * 4;
            cp_async4(sc, ok ? p.k_scale + o.k + hk * p.ks_sh : p.k_scale, ok ? 4 : 0);
            cp_async4(sc + BLOCK_N * 4, ok ? p.v_scale + o.v + hk * p.vs_sh : p.v_scale, ok ? 4 : 0);
        }
    }
}

/* Q rows of this CTA into shared memory as the mma type, zero rows past M.  A
 * thread takes 16-column chunks, two 16-byte loads each, all of them issued
 * before any is used.  For 8-bit caches logical column l of a chunk holds
 * physical column 2l (l < 8) or 2(l - 8) + 1 (see "Fragments" above): the even
 * and the odd halves of the pairs, gathered with prmt. */
DEV void load_q(const fmqa_decode_params &p, int b, int hk, int rb, unsigned char *qs) {
    constexpr int CH = D / 16, CHUNKS = ROWS * CH, QPER = (CHUNKS + NTHREADS - 1) / NTHREADS;
    u32 w[QPER][2][4];
#pragma unroll
    for (int k = 0; k < QPER; ++k) {
        const int i = threadIdx.x + k * NTHREADS, row = i / CH, r = rb * ROWS + row;
        if (i < CHUNKS && r < M) {
            const int t = r / GROUP, h = hk * GROUP + r % GROUP;
            const u16 *q = (const u16 *)p.q + b * p.q_sb + t * p.q_st + h * p.q_sh + 16 * (i % CH);
            ld_nc_v4(w[k][0], q);
            ld_nc_v4(w[k][1], q + 8);
        } else {
#pragma unroll
            for (int j = 0; j < 8; ++j) w[k][j / 4][j % 4] = 0u;
        }
    }
#pragma unroll
    for (int k = 0; k < QPER; ++k) {
        const int i = threadIdx.x + k * NTHREADS;
        if (i >= CHUNKS) break;
        u32 x[8];
#pragma unroll
        for (int j = 0; j < 8; ++j) {
            x[j] = w[k][j / 4][j % 4];
            if (Q_BF16 != MMA_BF16)
                x[j] = pack2<MMA_BF16>(h_to_f32<Q_BF16>((u16)(x[j] & 0xffff)), h_to_f32<Q_BF16>((u16)(x[j] >> 16)));
        }
        uint4 lo, hi;
        if (EB == 2) {
            lo.x = x[0], lo.y = x[1], lo.z = x[2], lo.w = x[3];
            hi.x = x[4], hi.y = x[5], hi.z = x[6], hi.w = x[7];
        } else {
            lo.x = prmt(x[0], x[1], 0x5410u), lo.y = prmt(x[2], x[3], 0x5410u);
            lo.z = prmt(x[4], x[5], 0x5410u), lo.w = prmt(x[6], x[7], 0x5410u);
            hi.x = prmt(x[0], x[1], 0x7632u), hi.y = prmt(x[2], x[3], 0x7632u);
            hi.z = prmt(x[4], x[5], 0x7632u), hi.w = prmt(x[6], x[7], 0x7632u);
        }
        uint4 *dst = (uint4 *)(qs + (i / CH) * QRB + (i % CH) * 32);
        dst[0] = lo;
        dst[1] = hi;
    }
}

/* Column u of O d-tile nt is head-dim element o_col(nt, u). */
DEV int o_col(int nt, int u) { return EB == 2 ? 8 * nt + u : 16 * (nt >> 1) + 2 * u + (nt & 1); }

/* What one thread knows about each of its two rows (g and g+8 of its m-tile). */
struct row_info {
    int qpos;                /* position of the row's query token */
    unsigned long long tree; /* its tree mask                     */
};

DEV bool visible(const fmqa_decode_params &p, const seq_view &s, const row_info &ri, int j) {
    bool ok = true;
    if (CAUSAL) ok = ok && j <= ri.qpos;
    if (WINDOW) ok = ok && (j > ri.qpos - p.window || j < p.sink_tokens);
    if (TREE && j >= s.first_draft) ok = ok && ((ri.tree >> (j - s.first_draft)) & 1ull);
    return ok;
}

/* True when some row of the CTA may not see some position of the tile: only
 * such tiles pay for the per-element mask. */
DEV bool tile_needs_mask(const fmqa_decode_params &p, const seq_view &s, int v0, int v_end) {
    if (v0 + BLOCK_N > v_end) return true;
    const int v_last = v0 + BLOCK_N - 1;
    if ((CAUSAL || TREE) && pos_of(s, v_last) >= s.first_draft + (TREE ? 0 : 1)) return true;
    if (WINDOW) {
        const int vf = max(v0, s.s0); /* first window-part column, if any */
        if (vf <= v_last && pos_of(s, vf) <= s.kv_len - 1 - p.window) return true;
    }
    return false;
}

/* Per-warp online-softmax state: O accumulator (d-tile fragments), running max
 * and this thread's partial sum of its two rows (summed over the quad at the
 * end). */
struct softmax_state {
    float o[NT_O][4];
    float m[2], l[2];
};

#include "decode_scores.cuh"

/* One tile for one warp: S = Q K^T, mask, online softmax, O += P V. */
DEV void warp_tile(const fmqa_decode_params &p, const seq_view &s, const row_info (&ri)[2], u32 q_base,
                   const unsigned char *stage, int v0, int v_end, bool masked, int nw, softmax_state &st) {
    const int lane = threadIdx.x & 31;
    const int lrow = ((lane >> 3) & 1) * 8 + (lane & 7), lcol = (lane >> 4) * 16;
    const int cq = lane & 3;
    const u32 k_base = smem_addr(stage) + (nw * WN + lrow) * RB;
    const u32 v_base = k_base + BLOCK_N * RB;
    const float *kscale = (const float *)(stage + 2 * BLOCK_N * RB);
    const float *vscale = kscale + BLOCK_N;

    float sacc[NT_S][4];
#pragma unroll
    for (int nt = 0; nt < NT_S; ++nt) sacc[nt][0] = sacc[nt][1] = sacc[nt][2] = sacc[nt][3] = 0.0f;

#pragma unroll
    for (int kc = 0; kc < D / 16; ++kc) {
        u32 a[4];
        ldsm_x4(a, q_base + kc * 32 + lcol);
#pragma unroll
        for (int pp = 0; pp < NT_S / 2; ++pp) {
            const u32 addr = k_base + pp * 16 * RB;
            if (EB == 2) {
                u32 r[4];
                ldsm_x4(r, addr + kc * 32 + lcol);
                mma16816<MMA_BF16>(sacc[2 * pp], a, r[0], r[2]);
                mma16816<MMA_BF16>(sacc[2 * pp + 1], a, r[1], r[3]);
            } else {
                u32 r[2], b0, b1;
                ldsm_x2(r, addr + kc * 16);
                q8x4_to_pairs<KV_FMT, MMA_BF16>(r[0], b0, b1);
                mma16816<MMA_BF16>(sacc[2 * pp], a, b0, b1);
                q8x4_to_pairs<KV_FMT, MMA_BF16>(r[1], b0, b1);
                mma16816<MMA_BF16>(sacc[2 * pp + 1], a, b0, b1);
            }
        }
    }

    /* Scale to base-2 logits, mask, new running max. */
    float mx[2] = {neg_inf(), neg_inf()};
#pragma unroll
    for (int nt = 0; nt < NT_S; ++nt) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
            const int col = nw * WN + nt * 8 + 2 * cq + e;
            const float sc = EB == 1 ? p.sm_scale_log2 * KV_FOLD * kscale[col] : p.sm_scale_log2;
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                float x = sacc[nt][2 * h + e] * sc;
                if (masked) {
                    const int v = v0 + col;
                    if (v >= v_end || !visible(p, s, ri[h], pos_of(s, v))) x = neg_inf();
                }
                sacc[nt][2 * h + e] = x;
                mx[h] = fmaxf(mx[h], x);
            }
        }
    }
    /* O and l are rescaled only when some row's maximum moved (a warp vote:
     * the usual case after the first tiles is that none did, and then alpha
     * would be exactly 1). */
    float base[2], m_old[2];
    bool moved = false;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        const float m_new = fmaxf(st.m[h], quad_max(mx[h]));
        base[h] = m_new == neg_inf() ? 0.0f : m_new; /* keeps -inf - -inf out */
        m_old[h] = st.m[h];
        moved = moved || m_new != m_old[h];
        st.m[h] = m_new;
    }
    if (vote_any(moved)) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const float alpha = ex2(m_old[h] - base[h]);
            st.l[h] *= alpha;
#pragma unroll
            for (int nt = 0; nt < NT_O; ++nt) {
                st.o[nt][2 * h] *= alpha;
                st.o[nt][2 * h + 1] *= alpha;
            }
        }
    }

    /* P (scaled per column by v_scale for 8-bit caches) as A fragments. */
#pragma unroll
    for (int pp = 0; pp < NT_S / 2; ++pp) {
        u32 a[4];
#pragma unroll
        for (int half = 0; half < 2; ++half) {
            const int nt = 2 * pp + half;
            const int col = nw * WN + nt * 8 + 2 * cq;
            const float vs0 = EB == 1 ? KV_FOLD * vscale[col] : 1.0f;
            const float vs1 = EB == 1 ? KV_FOLD * vscale[col + 1] : 1.0f;
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                const float p0 = ex2(sacc[nt][2 * h] - base[h]), p1 = ex2(sacc[nt][2 * h + 1] - base[h]);
                st.l[h] += p0 + p1;
                a[2 * half + h] = pack2<MMA_BF16>(p0 * vs0, p1 * vs1);
                if (SCORES)
                    scores_keep(p, v0 + col, v_end, col, h, EB == 2 && !MMA_BF16 ? a[2 * half + h] : pack2<0>(p0, p1),
                                st.m[h]);
            }
        }
        const u32 addr = v_base + pp * 16 * RB;
#pragma unroll
        for (int i = 0; i < D / 16; ++i) {
            if (EB == 2) {
                u32 r[4];
                ldsm_x4_t(r, addr + i * 32 + lcol);
                mma16816<MMA_BF16>(st.o[2 * i], a, r[0], r[1]);
                mma16816<MMA_BF16>(st.o[2 * i + 1], a, r[2], r[3]);
            } else {
                u32 r[2], e0, o0, e1, o1;
                ldsm_x2_t(r, addr + i * 16);
                q8x4_to_pairs<KV_FMT, MMA_BF16>(r[0], e0, o0);
                q8x4_to_pairs<KV_FMT, MMA_BF16>(r[1], e1, o1);
                mma16816<MMA_BF16>(st.o[2 * i], a, e0, e1);
                mma16816<MMA_BF16>(st.o[2 * i + 1], a, o0, o1);
            }
        }
    }
}

/* Warps nw > 0 hand their state to warp nw = 0 of the same rows through shared
 * memory (laid out per fragment register and lane: conflict-free), which merges
 * it into its own.  Needs the pipeline drained: it reuses that memory. */
DEV void merge_warps(unsigned char *smem, int mw, int nw, softmax_state &st) {
    if (WARPS_N == 1) return;
    const int lane = threadIdx.x & 31;
    float *buf = (float *)smem + mw * (WARPS_N - 1) * (NT_O * 4 + 4) * 32;
    if (nw > 0) {
        float *w = buf + (nw - 1) * (NT_O * 4 + 4) * 32 + lane;
#pragma unroll
        for (int i = 0; i < NT_O * 4; ++i) w[i * 32] = st.o[i / 4][i % 4];
        w[NT_O * 4 * 32] = st.m[0];
        w[(NT_O * 4 + 1) * 32] = st.m[1];
        w[(NT_O * 4 + 2) * 32] = st.l[0];
        w[(NT_O * 4 + 3) * 32] = st.l[1];
    }
    __syncthreads();
    if (nw > 0) return;
    for (int k = 0; k < WARPS_N - 1; ++k) {
        const float *w = buf + k * (NT_O * 4 + 4) * 32 + lane;
        float fs[2], fo[2];
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const float mo = w[(NT_O * 4 + h) * 32];
            const float m_new = fmaxf(st.m[h], mo);
            const float base = m_new == neg_inf() ? 0.0f : m_new;
            fs[h] = ex2(st.m[h] - base);
            fo[h] = ex2(mo - base);
            st.m[h] = m_new;
            st.l[h] = st.l[h] * fs[h] + w[(NT_O * 4 + 2 + h) * 32] * fo[h];
        }
#pragma unroll
        for (int i = 0; i < NT_O * 4; ++i) {
            const int h = (i % 4) / 2;
            st.o[i / 4][i % 4] = st.o[i / 4][i % 4] * fs[h] + w[i * 32] * fo[h];
        }
    }
}

/* Writes the merged rows: o (and lse) directly, or this split's partials. */
DEV void store_rows(const fmqa_decode_params &p, int b, int hk, int rb, int mw, int split,
                    softmax_state &st) {
    const int lane = threadIdx.x & 31;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        const float l = quad_sum(st.l[h]);
        const int r = rb * ROWS + mw * 16 + (lane >> 2) + 8 * h;
        if (r >= M) continue;
        const int t = r / GROUP, head = hk * GROUP + r % GROUP;
        const float inv = l > 0.0f ? 1.0f / l : 0.0f;
        const float lse2 = l > 0.0f ? st.m[h] + __log2f(l) : neg_inf();
        const long long row = ((long long)b * Q_TOKENS + t) * p.num_q_heads + head;
        if (p.num_splits > 1) {
            const long long srow = (long long)split * p.batch * Q_TOKENS * p.num_q_heads + row;
            float *wo = p.ws_o + srow * D;
#pragma unroll
            for (int nt = 0; nt < NT_O; ++nt)
#pragma unroll
                for (int e = 0; e < 2; ++e) wo[o_col(nt, 2 * (lane & 3) + e)] = st.o[nt][2 * h + e] * inv;
            if ((lane & 3) == 0) p.ws_lse[srow] = lse2;
        } else {
            u16 *o = (u16 *)p.o + b * p.o_sb + t * p.o_st + head * p.o_sh;
#pragma unroll
            for (int nt = 0; nt < NT_O; ++nt)
#pragma unroll
                for (int e = 0; e < 2; ++e)
                    o[o_col(nt, 2 * (lane & 3) + e)] = f32_to_h<OUT_BF16>(st.o[nt][2 * h + e] * inv);
            if (LSE && (lane & 3) == 0) p.lse[row] = lse2 * 0.69314718055994531f;
            if (SCORES && (lane & 3) == 0) p.ws_lse[row] = lse2; /* decode_scores.cuh */
        }
    }
}

extern "C" __global__ void __launch_bounds__(NTHREADS) fmqa_decode_kernel(const fmqa_decode_params p) {
    extern __shared__ __align__(128) unsigned char smem[];
    if (dynamic_smem_size() < (u32)SMEM_BYTES) __trap(); /* the launch disagrees with decode.lua */
    const int split = blockIdx.x, b = blockIdx.z;
    const int hk = blockIdx.y / ROW_BLOCKS, rb = blockIdx.y % ROW_BLOCKS;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int mw = warp % WARPS_M, nw = warp / WARPS_M;
    unsigned char *qs = smem, *stages = smem + Q_BYTES;

    const seq_view s = seq_view_make(p, b);
    const int v_begin = split * p.split_tokens;
    const int v_end = split == p.num_splits - 1 ? s.nvirt : min(s.nvirt, v_begin + p.split_tokens);
    const int ntiles = v_end > v_begin ? (v_end - v_begin + BLOCK_N - 1) / BLOCK_N : 0;

    const kv_ptrs kvb = kv_base(p, b, hk, threadIdx.x % CPR);
    /* Without window or paging: where this thread's first row of the first
     * tile lies (pointer arithmetic only; a page table is never read here). */
    kv_ptrs kv_at = kvb;
    if (!WINDOW && !PAGED) kv_at = kv_row(p, kvb, b, v_begin + threadIdx.x / CPR * PER);
    /* The first KV copies go out right after kv_lens (one round trip; a page
     * table adds its own), before Q and the tree masks are read. */
#pragma unroll
    for (int i = 0; i < STAGES - 1; ++i) {
        if (i < ntiles) load_tile(p, s, kvb, kv_at, b, hk, v_begin + i * BLOCK_N, v_end, stages + i * STAGE_BYTES);
        cp_async_commit();
    }
    load_q(p, b, hk, rb, qs); /* published by the loop's first barrier */

    row_info ri[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        const int r = rb * ROWS + mw * 16 + (lane >> 2) + 8 * h;
        const int t = min(r / GROUP, Q_TOKENS - 1); /* padding rows borrow a real token */
        ri[h].qpos = s.first_draft + t;
        ri[h].tree = TREE ? p.tree_mask[b * Q_TOKENS + t] : 0ull;
    }
    softmax_state st;
#pragma unroll
    for (int nt = 0; nt < NT_O; ++nt) st.o[nt][0] = st.o[nt][1] = st.o[nt][2] = st.o[nt][3] = 0.0f;
    st.m[0] = st.m[1] = neg_inf();
    st.l[0] = st.l[1] = 0.0f;
    /* Warps whose 16 rows are all padding only help load. */
    const bool active = rb * ROWS + mw * 16 < M;
    const u32 q_base = smem_addr(qs) + (mw * 16 + ((lane >> 3) & 1) * 8 + (lane & 7)) * QRB;
    int st_cur = 0, st_next = STAGES - 1;
    for (int it = 0; it < ntiles; ++it) {
        cp_async_wait<STAGES - 2>();
        __syncthreads(); /* tile `it` visible to all; tile it-1's stage is free */
        if (it + STAGES - 1 < ntiles)
            load_tile(p, s, kvb, kv_at, b, hk, v_begin + (it + STAGES - 1) * BLOCK_N, v_end,
                      stages + st_next * STAGE_BYTES);
        cp_async_commit();
        const int v0 = v_begin + it * BLOCK_N;
        if (active)
            warp_tile(p, s, ri, q_base, stages + st_cur * STAGE_BYTES, v0, v_end, tile_needs_mask(p, s, v0, v_end),
                      nw, st);
        st_cur = st_cur + 1 == STAGES ? 0 : st_cur + 1;
        st_next = st_next + 1 == STAGES ? 0 : st_next + 1;
    }
    cp_async_wait<0>();
    __syncthreads();
    merge_warps(stages, mw, nw, st);
    if (nw == 0 && active) store_rows(p, b, hk, rb, mw, split, st);
}

/* Merges split partials: o = sum_s 2^(lse_s - L) o_s / sum_s 2^(lse_s - L),
 * L = max_s lse_s.  Grid (rows, slices): a CTA of C_THREADS threads takes one
 * (b, t, h) row and one of gridDim.y equal slices of its D / 4 float4 columns
 * (decode.lua picks the slices so that the grid covers the SMs even at batch
 * 1).  Thread (group g, column c) walks the splits g, g + groups, ...  in
 * batches of C_BATCH: every load of a batch (lse and o of each split) is
 * issued before any is used, and a running maximum rescales what came before
 * (online softmax), so one batch is one round trip whatever S is.  The groups
 * then meet in shared memory.  No load is guarded by its weight: an empty
 * split wrote o = 0 and lse = -inf, whose weight 2^(-inf - base) is 0, and
 * base is 0 when every lse is -inf, so nothing here makes a NaN. */
constexpr int C_THREADS = 128;
constexpr int C_COLS = D / 4;
constexpr int C_BATCH = 8;

/* x reduced over the CTA with op; red holds one value per warp. */
template <bool MAX> DEV float block_reduce(float x, float *red) {
#pragma unroll
    for (int k = 16; k > 0; k >>= 1) {
        const float y = shfl_xor(x, k);
        x = MAX ? fmaxf(x, y) : x + y;
    }
    if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = x;
    __syncthreads();
    x = red[0];
#pragma unroll
    for (int w = 1; w < C_THREADS / 32; ++w) x = MAX ? fmaxf(x, red[w]) : x + red[w];
    __syncthreads(); /* red is reused by the next reduction */
    return x;
}

DEV float no_nan_base(float m) { return m == neg_inf() ? 0.0f : m; }

/* Must equal decode.lua's combine_shared_bytes(). */
constexpr int C_SMEM_BYTES = 4 * (C_THREADS / 32) + 16 * C_THREADS * (C_BATCH + 1) + 4 * C_THREADS * C_BATCH;

extern "C" __global__ void __launch_bounds__(C_THREADS) fmqa_decode_combine(const fmqa_decode_params p) {
    extern __shared__ __align__(128) unsigned char smem[];
    if (dynamic_smem_size() < (u32)C_SMEM_BYTES) __trap(); /* the launch disagrees with decode.lua */
    float *red = (float *)smem;                         /* [warps] reductions       */
    /* [C_THREADS] group sums, then [C_THREADS][C_BATCH] float4 and float
     * landing slots of the split loads; 16-byte aligned */
    float4 *part = (float4 *)(red + C_THREADS / 32);
    const int tid = threadIdx.x;
    const int rows = p.batch * Q_TOKENS * p.num_q_heads; /* < 2^31: fastmqa checks */
    const int row = blockIdx.x;
    const int S = p.num_splits;
    const int cols = C_COLS / gridDim.y;                 /* float4 columns a CTA  */
    const int groups = C_THREADS / cols;
    const int g = tid / cols, c = tid - g * cols;
    const bool on = g < groups;                          /* D = 96 leaves a few out */

    float m = neg_inf(), wsum = 0.0f;
    float4 acc = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    const float *lse_s = p.ws_lse + row;
    const float4 *src = (const float4 *)p.ws_o + (long long)row * C_COLS + blockIdx.y * cols + c;
    const long long split_stride = (long long)rows * C_COLS; /* float4s per split */
    const float4 *vbuf = part + C_THREADS + tid * C_BATCH;   /* this thread's landing slots */
    const float *lbuf = (const float *)(part + C_THREADS * (C_BATCH + 1)) + tid * C_BATCH;
    for (int s0 = on ? g : S; s0 < S; s0 += groups * C_BATCH) {
        /* cp.async, not loads: the compiler may not sink a copy below the
         * first use of another, so the whole batch is in flight at once.
         * Splits past S copy nothing (zeros). */
#pragma unroll
        for (int u = 0; u < C_BATCH; ++u) {
            const int s = min(s0 + u * groups, S - 1), n = s0 + u * groups < S;
            cp_async16(smem_addr(vbuf + u), src + s * split_stride, 16 * n);
            cp_async4(smem_addr(lbuf + u), lse_s + (long long)s * rows, 4 * n);
        }
        cp_async_commit();
        cp_async_wait<0>(); /* a thread reads only its own slots: no barrier */
        float l[C_BATCH], mx = m;
#pragma unroll
        for (int u = 0; u < C_BATCH; ++u) {
            l[u] = s0 + u * groups < S ? lbuf[u] : neg_inf();
            mx = fmaxf(mx, l[u]);
        }
        const float base = no_nan_base(mx), f = ex2(m - base);
        m = mx;
        wsum *= f;
        acc.x *= f, acc.y *= f, acc.z *= f, acc.w *= f;
#pragma unroll
        for (int u = 0; u < C_BATCH; ++u) {
            const float w = ex2(l[u] - base);
            const float4 v = vbuf[u];
            wsum += w;
            acc.x += w * v.x, acc.y += w * v.y, acc.z += w * v.z, acc.w += w * v.w;
        }
    }
    /* Every group to the CTA's maximum L, then the sums. */
    const float L = block_reduce<true>(m, red);
    const float f = ex2(m - no_nan_base(L));
    acc.x *= f, acc.y *= f, acc.z *= f, acc.w *= f;
    part[tid] = acc;
    wsum = block_reduce<false>(on && c == 0 ? wsum * f : 0.0f, red); /* its barriers publish part */
    if (g == 0) {
        const float inv = wsum > 0.0f ? 1.0f / wsum : 0.0f;
        for (int k = 1; k < groups; ++k) {
            const float4 x = part[k * cols + c];
            acc.x += x.x, acc.y += x.y, acc.z += x.z, acc.w += x.w;
        }
        const int h = row % p.num_q_heads, t = row / p.num_q_heads % Q_TOKENS;
        const int b = row / (p.num_q_heads * Q_TOKENS);
        u16 *o = (u16 *)p.o + b * p.o_sb + t * p.o_st + h * p.o_sh + 4 * (blockIdx.y * cols + c);
        const u32 lo = f32_to_h<OUT_BF16>(acc.x * inv) | (u32)f32_to_h<OUT_BF16>(acc.y * inv) << 16;
        const u32 hi = f32_to_h<OUT_BF16>(acc.z * inv) | (u32)f32_to_h<OUT_BF16>(acc.w * inv) << 16;
        *(uint2 *)o = make_uint2(lo, hi); /* o and its strides are 16-byte aligned */
    }
    if (LSE && tid == 0 && blockIdx.y == 0)
        p.lse[row] = wsum > 0.0f ? (L + __log2f(wsum)) * 0.69314718055994531f : neg_inf();
}
