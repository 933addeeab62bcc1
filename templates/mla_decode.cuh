/*
 * mla_decode.cuh -- Multi-head Latent Attention decode (fmqa_mla_decode),
 * DeepSeek style with absorbed weights, on tensor cores (mma.sync m16n8k16),
 * with split-KV partials merged by fmqa_combine.cuh's combine_row.  mla_decode.lua
 * chooses the defines and the launch; docs/kernels.md ("MLA decode") explains
 * the design.
 *
 * Problem.  Every token of a sequence has one latent row of DK = 576 values
 * shared by all query heads: c_kv (DC = 512) then k_pe (DR = 64).  Query row
 * (t, h) is [q_nope W_UK (512) | q_pe (64)]; score = sm_scale * q . row, and V
 * is the first 512 values of the same row.  So this is MQA with a group of
 * HEADS and head dims 576 / 512, where one shared-memory tile serves as K and
 * as V.  Q rows: r = t * HEADS + h, M = HEADS * Q_TOKENS of them; query token t
 * sits at position kv_len - Q_TOKENS + t and (CAUSAL) sees positions <= its own,
 * (WINDOW) only the last `window` of them and the first sink_tokens.  Which
 * positions are read, in which order, and where a ring cache (RING) keeps them
 * are decode's rules, shared through fmqa_seq.cuh: a piece takes a range of the
 * virtual order (sinks, then the window), so positions no query sees are never
 * read.  A learned sink logit per head (p.sinks) joins the softmax denominator
 * once: in store_rows for a segment read whole, else in the combine
 * (softmax_finish).
 *
 * Problem defines: HEADS, Q_TOKENS (1..16), Q_BF16, OUT_BF16, KV_FMT (0 f16, 1
 * bf16, 3 fp8 e4m3 with one float scale per token), PAGED, PAGE_SIZE, CSR (a
 * CSR page table, fmqa_pages.cuh), CAUSAL, WINDOW, RING, TREE (always 0:
 * fmqa_seq.cuh reads it), LSE, INVARIANT (batch-invariant schedule,
 * fmqa_sched.cuh).  Config defines: BLOCK_N (tokens per tile), WARPS_M (16-row groups per
 * CTA), WARPS_D (warps sharing the rows), STAGES (cp.async pipeline depth).
 *
 * Work split.  decode's persistent schedule (fmqa_sched.cuh): gridDim.x CTAs
 * share the batch's (sequence, row block) segments and their positions
 * evenly, a CTA walking its range as pieces (run_piece), each with its own
 * online softmax.  A piece owns ROWS = 16 WARPS_M rows, so every latent byte
 * it loads serves all of them (at H = 128 two row blocks read the cache
 * twice, the second time mostly from L2).  The 512-wide
 * O accumulator does not fit one warp's registers, so warp (mw, dw) = (w %
 * WARPS_M, w / WARPS_M) owns the 16 rows of mw and the value columns [dw CW,
 * +CW), CW = 512 / WARPS_D, for the whole piece.  Per tile:
 *   1. S: warp (mw, dw) computes the scores of its rows against the tokens
 *      [dw WN, +WN), WN = BLOCK_N / WARPS_D, over all 576 dims (no redundant
 *      MMA: the WARPS_D warps of a row group split the tile's tokens);
 *   2. the row maxima of the WARPS_D token slices meet in shared memory, so
 *      every warp of the rows agrees on the running max m (barrier);
 *   3. each warp rescales its O columns by the same alpha, turns its scores
 *      into P = 2^(S - m) and writes P (the mma type) to shared memory;
 *      its partial row sums l stay in registers (barrier);
 *   4. P V: each warp multiplies all BLOCK_N columns of P by its CW columns of
 *      the tile's latent rows.
 * The row sums of the WARPS_D warps add up once, at the end (they share m).
 * This is the split FlashMLA makes between its two warpgroups (each owns half
 * of the 512 output columns, P goes through shared memory); FlashMLA's sm_90
 * kernel overlaps one warpgroup's softmax with the other's GEMMs through
 * wgmma's asynchrony ("seesaw").  A wgmma variant belongs in its own source
 * beside this one (same Lua launch rules, docs/kernels.md).
 *
 * Fragments are those of decode.cuh (see there): tiles sit in shared memory
 * row per token, RB bytes a row (16 bytes of padding: ldmatrix without bank
 * conflicts); Q and P are A operands (ldmatrix x4), K the B operand (x4, or
 * x2 of fp8 bytes converted by q8x4_to_pairs against a permuted Q:
 * q_chunk_to_mma), V the B operand of P V (x4.trans, or x2.trans of fp8,
 * column order o_col).  fp8 scales: S is multiplied per column by sm_scale *
 * log2(e) * scale[token], P's columns by scale[token] before P V (l sums the
 * unscaled P); FP8_F16_FOLD is multiplied back there too.
 *
 * Softmax in base 2; a row that sees nothing writes o = 0, lse = -inf (the
 * sink's logit with a learned sink).  A piece
 * of a split segment writes its O normalised by its own sum to ws_o and m +
 * log2(l) to ws_lse, [slot, ROWS, (512)], which fmqa_mla_decode_combine merges
 * by the segment's ws_meta.
 */
#include "fmqa_params.h"
#include "fmqa_device.cuh"
#include "fmqa_combine.cuh"
#include "fmqa_pages.cuh"
#include "fmqa_seq.cuh"
#include "fmqa_sched.cuh"

using namespace fmqa_dev;

#define DEV static __device__ __forceinline__

constexpr int DC = 512, DR = 64, DK = DC + DR;            /* latent, rope, row      */
constexpr int EB = KV_FMT == 3 ? 1 : 2;                   /* bytes per latent value */
constexpr int Q8 = EB == 1;
constexpr int MMA_BF16 = KV_FMT == 1 || (Q8 && Q_BF16);
constexpr int RB = DK * EB + 16;                          /* smem bytes per row     */
constexpr int CPR = DK * EB / 16;                         /* 16-byte chunks per row */
constexpr int QRB = DK * 2 + 16;                          /* smem bytes per Q row   */
constexpr int M = HEADS * Q_TOKENS;
constexpr int ROWS = 16 * WARPS_M;
constexpr int ROW_BLOCKS = (M + ROWS - 1) / ROWS;
constexpr int NTHREADS = 32 * WARPS_M * WARPS_D;
constexpr int WN = BLOCK_N / WARPS_D;                     /* S tokens per warp      */
constexpr int NT_S = WN / 8;
constexpr int CW = DC / WARPS_D;                          /* O columns per warp     */
constexpr int NT_O = CW / 8;
constexpr int PRB = BLOCK_N * 2 + 16;                     /* smem bytes per P row   */
constexpr int Q_BYTES = ROWS * QRB;
constexpr int P_BYTES = ROWS * PRB;
constexpr int RED_BYTES = ROWS * WARPS_D * 4;
constexpr int STAGE_BYTES = BLOCK_N * RB + (Q8 ? BLOCK_N * 4 : 0);
/* Must equal mla_decode.lua's shared_bytes(). */
constexpr int SMEM_BYTES = Q_BYTES + P_BYTES + RED_BYTES + STAGES * STAGE_BYTES;
constexpr int PS = PAGED ? PAGE_SIZE : 16;
constexpr float KV_FOLD = Q8 ? FP8_F16_FOLD : 1.0f;

static_assert(WN % 16 == 0, "each warp needs whole 16-token chunks of S");
static_assert(CW % 16 == 0, "each warp needs whole 16-column chunks of O");
static_assert(Q_TOKENS >= 1 && Q_TOKENS <= 16, "Q_TOKENS");
static_assert(!PAGED || (PAGE_SIZE >= 16 && (PAGE_SIZE & (PAGE_SIZE - 1)) == 0), "PAGE_SIZE");
static_assert(STAGES >= 2, "STAGES");
static_assert(KV_FMT == 0 || KV_FMT == 1 || KV_FMT == 3, "KV_FMT");

/* Element offset of cache slot j's row (and its scale) of sequence b: a page
 * lookup when paged, remembered in (pi, page) for the next row. */
DEV long long row_offset(const fmqa_decode_params &p, int b, int j, long long sb, long long st, int &pi,
                         long long &page) {
    if (!PAGED) return (long long)b * sb + (long long)j * st;
    if ((j / PS) != pi) {
        pi = j / PS;
        page = page_of<PS>(p, b, j);
    }
    return page * sb + (long long)(j & (PS - 1)) * st;
}

/* Who copies what.  The tile is BLOCK_N rows (virtual positions, fmqa_seq.cuh)
 * of CPR 16-byte chunks.  Thread q < LG * CPR copies chunk c = q % CPR of the
 * PER consecutive rows from (q / CPR) * PER, as runs of RUN rows: one address
 * computation (and page lookup) per run, then a 64-bit add per row, when the
 * run's slots are consecutive within a page (run_linear: always without a
 * window), else a lookup per row.  With fewer threads than chunks a row (64
 * threads, 72 chunks) a thread takes CP columns. */
constexpr int pow2_floor(int x) { return x >= 2 ? 2 * pow2_floor(x / 2) : 1; }
constexpr int LG = NTHREADS >= CPR ? pow2_floor(NTHREADS / CPR < BLOCK_N ? NTHREADS / CPR : BLOCK_N) : 1;
constexpr int CP = (CPR + NTHREADS - 1) / NTHREADS;
constexpr int PER = BLOCK_N / LG;
constexpr int RUN = PAGED && PS < PER ? PS : PER;
static_assert(PER % RUN == 0 && LG * PER == BLOCK_N, "tile copy layout");

/* Rows [g PER, +PER) of chunk c of tile [v0, v0 + BLOCK_N) of sequence b
 * (seen as s); zeros at virtual positions >= v_end (FULL: none is). */
template <bool FULL>
DEV void load_rows(const fmqa_decode_params &p, const seq_view &s, int b, int v0, int v_end, int g, int c, u32 dst) {
    const long long step = p.k_st * EB;
    int pi = -1;
    long long page = 0;
#pragma unroll
    for (int j = 0; j < PER / RUN; ++j) {
        const int row = g * PER + j * RUN, v = v0 + row;
        const int first = slot_of(p, s, pos_of(s, v));
        if ((FULL || v < v_end) && run_linear(p, s, v, RUN, first)) {
            const char *a = (const char *)p.k + row_offset(p, b, first, p.k_sb, p.k_st, pi, page) * EB + c * 16;
#pragma unroll
            for (int k = 0; k < RUN; ++k) {
                const bool ok = FULL || v + k < v_end;
                cp_async16(dst + (row + k) * RB + c * 16, ok ? a : (const char *)p.k, ok ? 16 : 0);
                a += step;
            }
        } else { /* a seam, a ring wrap or a page boundary: rare, kept rolled (registers) */
#pragma unroll 1
            for (int k = 0; k < RUN; ++k) {
                const bool ok = FULL || v + k < v_end;
                const char *a = (const char *)p.k;
                if (ok) a += row_offset(p, b, slot_of(p, s, pos_of(s, v + k)), p.k_sb, p.k_st, pi, page) * EB + c * 16;
                cp_async16(dst + (row + k) * RB + c * 16, a, ok ? 16 : 0);
            }
        }
    }
}

/* Issues the cp.async copies of tile [v0, v0 + BLOCK_N) of sequence b (zeros
 * at virtual positions >= v_end) and, for fp8, its scales. */
DEV void load_tile(const fmqa_decode_params &p, const seq_view &s, int b, int v0, int v_end, unsigned char *stage) {
    const u32 dst = smem_addr(stage);
#pragma unroll
    for (int pass = 0; pass < CP; ++pass) {
        const int q = threadIdx.x + pass * NTHREADS, g = q / CPR;
        if (q >= LG * CPR) break;
        if (v0 + BLOCK_N <= v_end)
            load_rows<true>(p, s, b, v0, v_end, g, q - g * CPR, dst);
        else
            load_rows<false>(p, s, b, v0, v_end, g, q - g * CPR, dst);
    }
    if (Q8) {
        int pi = -1;
        long long page = 0;
        for (int row = threadIdx.x; row < BLOCK_N; row += NTHREADS) {
            const bool ok = v0 + row < v_end;
            const float *src =
                ok ? p.k_scale + row_offset(p, b, slot_of(p, s, pos_of(s, v0 + row)), p.ks_sb, p.ks_st, pi, page)
                   : p.k_scale;
            cp_async4(dst + BLOCK_N * RB + row * 4, src, ok ? 4 : 0);
        }
    }
}

/* Q rows of this CTA into shared memory as the mma type (zero rows past M;
 * load_q_rows, fmqa_device.cuh). */
DEV void load_q(const fmqa_decode_params &p, int b, int rb, unsigned char *qs) {
    load_q_rows<Q_BF16, MMA_BF16, Q8, DK, ROWS, NTHREADS, QRB>(qs, [&](int row) -> const u16 * {
        const int r = rb * ROWS + row;
        return r < M ? (const u16 *)p.q + b * p.q_sb + (r / HEADS) * p.q_st + (r % HEADS) * p.q_sh : nullptr;
    });
}

/* A warp's online-softmax state: its O columns (n-tile fragments), the running
 * max of its two rows (the same in every warp of the rows) and this thread's
 * partial sums over the warp's tokens. */
struct softmax_state {
    float o[NT_O][4];
    float m[2], l[2];
};

/* Step 1: S = Q K^T of the warp's 16 rows and WN tokens from k_base. */
DEV void scores(u32 q_base, u32 k_base, int lcol, float (&sacc)[NT_S][4]) {
#pragma unroll
    for (int nt = 0; nt < NT_S; ++nt) sacc[nt][0] = sacc[nt][1] = sacc[nt][2] = sacc[nt][3] = 0.0f;
#pragma unroll 4
    for (int kc = 0; kc < DK / 16; ++kc) {
        u32 a[4];
        ldsm_x4(a, q_base + kc * 32 + lcol);
#pragma unroll
        for (int pp = 0; pp < NT_S / 2; ++pp) {
            const u32 addr = k_base + pp * 16 * RB;
            if (!Q8) {
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
}

/* Step 4: O += P V over the tile's BLOCK_N tokens for the warp's CW columns;
 * p_base / v_base are this lane's ldmatrix rows of P and of the tile. */
DEV void pv(u32 p_base, u32 v_base, int lcol, softmax_state &st) {
#pragma unroll
    for (int kc = 0; kc < BLOCK_N / 16; ++kc) {
        u32 a[4];
        ldsm_x4(a, p_base + kc * 32 + lcol);
        const u32 addr = v_base + kc * 16 * RB;
#pragma unroll
        for (int i = 0; i < CW / 16; ++i) {
            if (!Q8) {
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

/* Shared-memory pieces of the CTA: Q rows, P rows, the row exchange
 * [ROWS][WARPS_D] floats, then the pipeline stages. */
struct cta_smem {
    unsigned char *q, *p, *stages;
    float *red;
};

/* Steps 1-3 for one warp and tile: scores, masked and scaled to base 2; the
 * row maxima through red (one barrier for the whole CTA, which every thread
 * passes); rescale; P into shared memory. */
DEV void softmax_tile(const fmqa_decode_params &p, const cta_smem &sm, const unsigned char *stage, const seq_view &s,
                      const row_info (&ri)[2], int v0, int v_end, int mw, int dw, bool active, softmax_state &st) {
    const int lane = threadIdx.x & 31, cq = lane & 3, g = lane >> 2;
    const int lrow = ((lane >> 3) & 1) * 8 + (lane & 7), lcol = (lane >> 4) * 16;
    const float *scale = (const float *)(stage + BLOCK_N * RB);
    float sacc[NT_S][4], mx[2] = {neg_inf(), neg_inf()};
    const bool masked = tile_needs_mask(p, s, v0, v_end);
    if (active) {
        scores(smem_addr(sm.q) + (mw * 16 + lrow) * QRB, smem_addr(stage) + (dw * WN + lrow) * RB, lcol, sacc);
#pragma unroll
        for (int nt = 0; nt < NT_S; ++nt)
#pragma unroll
            for (int e = 0; e < 2; ++e) {
                const int col = dw * WN + nt * 8 + 2 * cq + e;
                const float sc = Q8 ? p.sm_scale_log2 * KV_FOLD * scale[col] : p.sm_scale_log2;
#pragma unroll
                for (int h = 0; h < 2; ++h) {
                    float x = sacc[nt][2 * h + e] * sc;
                    if (masked && (v0 + col >= v_end || !visible(p, s, ri[h], pos_of(s, v0 + col)))) x = neg_inf();
                    sacc[nt][2 * h + e] = x;
                    mx[h] = fmaxf(mx[h], x);
                }
            }
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            mx[h] = quad_max(mx[h]);
            if (cq == 0) sm.red[(mw * 16 + g + 8 * h) * WARPS_D + dw] = mx[h];
        }
    }
    __syncthreads(); /* every slice's maximum is in red */
    if (!active) return;
    float base[2], m_old[2];
    bool moved = false;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        float m_new = st.m[h];
#pragma unroll
        for (int k = 0; k < WARPS_D; ++k) m_new = fmaxf(m_new, sm.red[(mw * 16 + g + 8 * h) * WARPS_D + k]);
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
            for (int nt = 0; nt < NT_O; ++nt) st.o[nt][2 * h] *= alpha, st.o[nt][2 * h + 1] *= alpha;
        }
    }
#pragma unroll
    for (int nt = 0; nt < NT_S; ++nt) {
        const int col = dw * WN + nt * 8 + 2 * cq;
        const float s0 = Q8 ? KV_FOLD * scale[col] : 1.0f, s1 = Q8 ? KV_FOLD * scale[col + 1] : 1.0f;
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const float p0 = ex2(sacc[nt][2 * h] - base[h]), p1 = ex2(sacc[nt][2 * h + 1] - base[h]);
            st.l[h] += p0 + p1;
            *(u32 *)(sm.p + (mw * 16 + g + 8 * h) * PRB + col * 2) = pack2<MMA_BF16>(p0 * s0, p1 * s1);
        }
    }
}

/* The WARPS_D partial sums of each row add up through red; then o (and lse)
 * for a whole segment (slot < 0), or the piece's partials in workspace slot
 * `slot` ([slot][ROWS] rows).  Needs the pipeline drained and a barrier since
 * red was last read. */
DEV void store_rows(const fmqa_decode_params &p, const cta_smem &sm, int b, int rb, int mw, int dw, long long slot,
                    bool active, softmax_state &st) {
    const int lane = threadIdx.x & 31, g = lane >> 2, cq = lane & 3;
    if (active)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const float l = quad_sum(st.l[h]);
            if (cq == 0) sm.red[(mw * 16 + g + 8 * h) * WARPS_D + dw] = l;
        }
    __syncthreads();
    if (!active) return;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        const int rloc = mw * 16 + g + 8 * h, r = rb * ROWS + rloc;
        if (r >= M) continue;
        float l = 0.0f;
        for (int k = 0; k < WARPS_D; ++k) l += sm.red[rloc * WARPS_D + k];
        const int t = r / HEADS, head = r % HEADS;
        /* A learned sink joins the denominator once: here, or in the combine. */
        const float s2 = p.sinks && slot < 0 ? p.sinks[head] * LOG2E : neg_inf();
        float inv, lse2;
        softmax_finish(st.m[h], l, s2, inv, lse2);
        if (slot >= 0) {
            const long long srow = slot * ROWS + rloc;
            float *wo = p.ws_o + srow * DC + dw * CW;
#pragma unroll
            for (int nt = 0; nt < NT_O; ++nt)
#pragma unroll
                for (int e = 0; e < 2; ++e) wo[o_col<Q8>(nt, 2 * cq + e)] = st.o[nt][2 * h + e] * inv;
            if (cq == 0 && dw == 0) p.ws_lse[srow] = lse2;
        } else {
            u16 *o = (u16 *)p.o + b * p.o_sb + t * p.o_st + head * p.o_sh + dw * CW;
#pragma unroll
            for (int nt = 0; nt < NT_O; ++nt)
#pragma unroll
                for (int e = 0; e < 2; ++e) o[o_col<Q8>(nt, 2 * cq + e)] = f32_to_h<OUT_BF16>(st.o[nt][2 * h + e] * inv);
            if (LSE && cq == 0 && dw == 0)
                p.lse[((long long)b * Q_TOKENS + t) * HEADS + head] = lse2 * 0.69314718055994531f;
        }
    }
}

/* One piece of work (fmqa_sched.cuh): positions [v_begin, v_end) of sequence
 * b (seen as s) for the rows of row block rb, to the output (slot < 0) or to
 * workspace slot `slot`.  Starts with a barrier: the previous piece's warps
 * (or the schedule's scan) may still read the shared memory this one fills. */
DEV void run_piece(const fmqa_decode_params &p, const cta_smem &sm, const seq_view &s, int b, int rb, int v_begin,
                   int v_end, long long slot) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int mw = warp % WARPS_M, dw = warp / WARPS_M;
    const int ntiles = v_end > v_begin ? (v_end - v_begin + BLOCK_N - 1) / BLOCK_N : 0;
    __syncthreads();
    /* The first latent tiles go out before Q is read. */
#pragma unroll
    for (int i = 0; i < STAGES - 1; ++i) {
        if (i < ntiles) load_tile(p, s, b, v_begin + i * BLOCK_N, v_end, sm.stages + i * STAGE_BYTES);
        cp_async_commit();
    }
    load_q(p, b, rb, sm.q); /* published by the loop's first barrier */

    softmax_state st; /* every piece starts its own online softmax */
#pragma unroll
    for (int nt = 0; nt < NT_O; ++nt) st.o[nt][0] = st.o[nt][1] = st.o[nt][2] = st.o[nt][3] = 0.0f;
    st.m[0] = st.m[1] = neg_inf();
    st.l[0] = st.l[1] = 0.0f;
    const bool active = rb * ROWS + mw * 16 < M; /* a warp of padding rows only loads */
    row_info ri[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) { /* padding rows borrow the last query token */
        ri[h].qpos = s.first_draft + min((rb * ROWS + mw * 16 + (lane >> 2) + 8 * h) / HEADS, Q_TOKENS - 1);
        ri[h].tree = 0ull;
    }
    const int lrow = ((lane >> 3) & 1) * 8 + (lane & 7), lcol = (lane >> 4) * 16;
    int st_cur = 0, st_next = STAGES - 1;
    for (int it = 0; it < ntiles; ++it) {
        cp_async_wait<STAGES - 2>();
        __syncthreads(); /* tile `it` visible; P, red and tile it-1's stage free */
        if (it + STAGES - 1 < ntiles)
            load_tile(p, s, b, v_begin + (it + STAGES - 1) * BLOCK_N, v_end, sm.stages + st_next * STAGE_BYTES);
        cp_async_commit();
        const unsigned char *stage = sm.stages + st_cur * STAGE_BYTES;
        softmax_tile(p, sm, stage, s, ri, v_begin + it * BLOCK_N, v_end, mw, dw, active, st);
        __syncthreads(); /* P complete */
        if (active)
            pv(smem_addr(sm.p) + (mw * 16 + lrow) * PRB, smem_addr(stage) + lrow * RB + dw * CW * EB, lcol, st);
        st_cur = st_cur + 1 == STAGES ? 0 : st_cur + 1;
        st_next = st_next + 1 == STAGES ? 0 : st_next + 1;
    }
    cp_async_wait<0>();
    __syncthreads();
    store_rows(p, sm, b, rb, mw, dw, slot, active, st);
}

/* Work distribution: fmqa_sched.cuh's persistent schedule, as decode's: units
 * of UNIT positions (PAGED: a copy run, so that runs stay within pages), one
 * KV head, ROW_BLOCKS row blocks a sequence. */
constexpr int UNIT = PAGED ? RUN : 1;
using sched = sched_cfg<NTHREADS, UNIT, ROW_BLOCKS, ROWS, PS>;
static_assert(SMEM_BYTES - Q_BYTES >= sched_scratch_bytes<sched>(), "scan scratch");

/* One CTA an SM, as decode's: the shared memory of the default configs holds
 * no second one anyway, and with a window ptxas otherwise kept 256-thread
 * CTAs at 128 registers and spilled (4 bytes) rather than take 130. */
extern "C" __global__ void __launch_bounds__(NTHREADS, 1) fmqa_mla_decode_kernel(const fmqa_decode_params p) {
    extern __shared__ __align__(128) unsigned char smem[];
    if (dynamic_smem_size() < (u32)SMEM_BYTES) __trap(); /* the launch disagrees with mla_decode.lua */
    pdl_launch_dependents(); /* the combine may launch; it waits for this grid's end */
    const cta_smem sm = {smem, smem + Q_BYTES, smem + Q_BYTES + P_BYTES + RED_BYTES,
                         (float *)(smem + Q_BYTES + P_BYTES)};
    sched_run<sched>(p, smem + Q_BYTES,
                     [&](const seq_view &s, int b, int, int rb, int v_begin, int v_end, long long slot) {
                         run_piece(p, sm, s, b, rb, v_begin, v_end, slot);
                     });
}

/* Merges the pieces of split segments (fmqa_sched.cuh's sched_combine over
 * fmqa_combine.cuh's combine_row): grid (rows, slices), a CTA of
 * FMQA_C_THREADS threads per (b, t, h) row and column slice of its 512
 * values (mla_decode.lua picks the slices as decode.lua does). */
extern "C" __global__ void __launch_bounds__(FMQA_C_THREADS) fmqa_mla_decode_combine(const fmqa_decode_params p) {
    extern __shared__ __align__(128) unsigned char smem[];
    if (dynamic_smem_size() < (u32)FMQA_C_SMEM_BYTES) __trap(); /* the launch disagrees with mla_decode.lua */
    pdl_wait(); /* the kernel's grid has ended and its writes are visible */
    sched_combine<sched, DC, HEADS>(p, smem, [](int, float) {});
}
