/*
 * decode.cuh -- decode attention (fmqa_decode) on tensor cores, flash-decoding
 * style, and the split-KV combine.  decode.lua chooses the defines and the
 * launch; docs/kernels.md explains the design and the numbers.
 *
 * Problem defines: HEAD_DIM (64, 96, 128, 256; dv = d), GROUP (query heads per
 * KV head), Q_TOKENS (1..16), Q_BF16, OUT_BF16, KV_FMT (0 f16, 1 bf16, 2 int8,
 * 3 fp8 e4m3), PAGED, PAGE_SIZE (power of two >= 16), CSR (the page table
 * in CSR form: fmqa_pages.cuh), CAUSAL, TREE, WINDOW,
 * RING, LSE, INVARIANT (batch-invariant schedule), SOFTCAP (scores capped to
 * c tanh(s / c), c = logit_softcap), SCORES (heavy-hitter scores,
 * decode_scores.cuh).  Config defines: BLOCK_N (KV tokens per tile), WARPS_M
 * (row groups per CTA), M_TILES (16-row m-tiles per warp), WARPS_N (warps
 * sharing a tile along N), STAGES (pipeline depth), BULK (how K/V tiles
 * arrive: 0 cp.async from every warp, 1 on sm_90+ a producer warp's
 * cp.async.bulk copies; "Load pipeline" below), VBIAS (int8 V read biased,
 * V_BIAS below).
 *
 * Work split.  A persistent grid of gridDim.x CTAs shares the work evenly
 * (fmqa_sched.cuh, "Work distribution" below); one piece of it is a range of one sequence's
 * positions for one row block of one KV head (a segment).  The rows of a
 * KV head are r = t * GROUP + g (query token t, head hk * GROUP + g), M = GROUP *
 * Q_TOKENS of them; a CTA owns ROWS = 16 * M_TILES * WARPS_M consecutive rows,
 * so every K/V byte a CTA loads serves all its rows.  Warp w handles the
 * M_TILES m-tiles (16 rows each) of row group mw = w % WARPS_M and the tokens
 * [nw * WN, nw * WN + WN) of each tile, nw = w / WARPS_M, WN = BLOCK_N /
 * WARPS_N: each warp keeps its own running max, sum and O accumulator per
 * m-tile, and the WARPS_N partial results merge once, at the end.  A warp
 * reads (ldmatrix) and converts (8-bit caches) each K/V fragment once and
 * feeds it to the mma of all its m-tiles: with WARPS_M = 1 (M_TILES = 2 for an
 * MQA group of 32 rows) every K/V byte is read from shared memory and
 * converted once per CTA.
 *
 * KV order.  A sequence's visible positions are read in the virtual order
 * of fmqa_seq.cuh (sinks, then the window; ring slots); a piece takes a range
 * of it, in tiles from its start (the last may be partial).
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
 * 8-bit caches are read as 16-bit pairs (x4: two 16-byte chunks, tokens
 * 0-7|8-15 of each), so a register holds four bytes b0..b3 and converts to
 * two pairs (q8x4_to_pairs):
 *  - K: a register is k 4c..4c+3 of token g (c = lane%4, 16-k chunk); b0 =
 *    (b0,b1) and b1 = (b2,b3) (adjacent pairs: native fp8 converts them in
 *    place) make logical k (2c, 2c+1, 2c+8, 2c+9) read physical k (4c, 4c+1,
 *    4c+2, 4c+3).  Q is stored in shared memory with the same permutation
 *    (q_chunk_to_mma K8 = 2, fmqa_device.cuh), so q . k is unchanged;
 *  - V (x4.trans): a register is (V[2c][2u], V[2c][2u+1], V[2c+1][2u],
 *    V[2c+1][2u+1]) with u = lane/4 over 16 d: (b0,b2) is the B fragment of
 *    d = 2u, (b1,b3) of d = 2u+1.  So O d-tile nt holds d = 16 (nt/2) + 2u +
 *    (nt%2) (o_col, fmqa_device.cuh), undone when O is stored.
 * Scales: S is multiplied per column by sm_scale * log2(e) * k_scale[token];
 * P's columns by v_scale[token] before P V (the sum l uses the unscaled P).
 * fp8 values arrive divided by FP8_F16_FOLD (2^8 on sm_80/86, 1 on sm_89+),
 * which the scales multiply back.
 *
 * Softmax is in base 2 (exp2).  A row that sees nothing keeps m = -FLT_MAX, l = 0
 * and writes o = 0, lse = -inf.  A piece of a split segment writes O
 * normalised by its own sum to ws_o and m + log2(l) (base 2!) to ws_lse;
 * fmqa_decode_combine merges them.  An empty piece writes 0 and -inf.
 * A learned sink logit (p.sinks) enters only the final normalisation
 * (softmax_finish): in store_rows for a segment that was not split, else in
 * the combine, never in a piece's partial, so it is counted once.
 */
#include "fmqa_params.h"
#include "fmqa_device.cuh"
#include "fmqa_combine.cuh"
#include "fmqa_pages.cuh"
#include "fmqa_sm90.cuh"
#include "fmqa_seq.cuh"
#include "fmqa_sched.cuh"

using namespace fmqa_dev;

#define DEV static __device__ __forceinline__

constexpr int D = HEAD_DIM;
constexpr int EB = KV_FMT >= 2 ? 1 : 2;                  /* bytes per KV element   */
constexpr int MMA_BF16 = KV_FMT == 1 || (KV_FMT >= 2 && Q_BF16);
constexpr int RB = D * EB + 16;                           /* smem bytes per KV row */
constexpr int CPR = D * EB / 16;                          /* 16-byte chunks per row */
constexpr int QRB = D * 2 + 16;                           /* smem bytes per Q row  */
constexpr int M = GROUP * Q_TOKENS;
constexpr int MT = M_TILES;                               /* m-tiles per warp       */
constexpr int ROWS = 16 * MT * WARPS_M;
constexpr int ROW_BLOCKS = (M + ROWS - 1) / ROWS;
constexpr int NTHREADS = 32 * WARPS_M * WARPS_N;
constexpr int WN = BLOCK_N / WARPS_N;                     /* tokens per warp a tile */
constexpr int NT_S = WN / 8;                              /* S n-tiles per warp     */
constexpr int NT_O = D / 8;                               /* O d-tiles              */
constexpr int Q_BYTES = ROWS * QRB;
constexpr int SCALE_BYTES = EB == 1 ? 2 * BLOCK_N * 4 : 0;
constexpr int STAGE_BYTES = 2 * BLOCK_N * RB + SCALE_BYTES;
constexpr int MERGE_BYTES = WARPS_M * MT * (WARPS_N - 1) * (NT_O * 4 + 4) * 32 * 4;
/* The mbarriers of the bulk pipeline (full, then empty, one each a stage)
 * follow the stages and the merge buffer that reuses them. */
constexpr int BAR_OFF = Q_BYTES + (STAGES * STAGE_BYTES > MERGE_BYTES ? STAGES * STAGE_BYTES : MERGE_BYTES);
/* Must equal decode.lua's shared_bytes(). */
constexpr int SMEM_BYTES = BAR_OFF + (BULK ? 16 * STAGES : 0);
/* The CTA: the compute warps, and with BULK the producer warp after them. */
constexpr int CTA_THREADS = NTHREADS + (BULK ? 32 : 0);
constexpr int PS = PAGED ? PAGE_SIZE : 16;                /* page size (if paged) */
constexpr float KV_FOLD = KV_FMT == 3 ? FP8_F16_FOLD : 1.0f;
/* int8 K with f16 operands is read as 1152 + k (int8x4_to_f16_biased: no
 * subtraction); S then starts from -1152 * (sum of the row's Q) instead of 0
 * (softmax_state::s0, set once per CTA by s_start). */
constexpr int K_BIAS = KV_FMT == 2 && !MMA_BF16;
/* So is V: O accumulates sum_j a_j (1152 + v_j), a_j = p_j * v_scale_j the
 * f16 A operands of P V, and softmax_state::vc accumulates 1152 * sum_j a_j
 * from the same operands by one more mma an m-tile and 16 tokens (B = the
 * constant pair 1152, no loads), rescaled with O and subtracted from it at the
 * end of the piece (v_unbias).  The same f16 products feed both, so the
 * offset cancels up to fp32 accumulation error, which grows with the piece
 * where the tensor cores truncate: hence only with VBIAS, which decode.lua
 * allows where a warp accumulates at most 256 tokens in one piece. */
constexpr int V_BIAS = K_BIAS && VBIAS;

static_assert(D == 64 || D == 96 || D == 128 || D == 256, "HEAD_DIM");
static_assert(WN % 16 == 0, "each warp needs whole 16-token chunks");
static_assert(Q_TOKENS >= 1 && Q_TOKENS <= 16, "Q_TOKENS");
static_assert(!PAGED || (PAGE_SIZE >= 16 && (PAGE_SIZE & (PAGE_SIZE - 1)) == 0), "PAGE_SIZE");
static_assert(STAGES >= 2, "STAGES");
#if BULK && __CUDA_ARCH__ < 900
#error "BULK needs sm_90 (cp.async.bulk, mbarrier transaction counts): decode.lua refuses it below"
#endif

/* A barrier of the compute warps (NTHREADS threads): with BULK the producer
 * warp runs its own loop and meets them only at the start of a piece. */
DEV void consumers_sync() {
#if BULK
    bar_sync(1, NTHREADS);
#else
    __syncthreads();
#endif
}

/* Element offsets of slot's 8-bit scales (K and V) in their (batch|page,
 * token) part: a page lookup when paged. */
struct scale_offsets {
    long long k, v;
};

DEV scale_offsets scale_offsets_of(const fmqa_decode_params &p, int b, int slot) {
    long long outer = b, in = slot;
    if (PAGED) {
        outer = page_of<PS>(p, b, slot);
        in = slot & (PS - 1);
    }
    return {outer * p.ks_sb + in * p.ks_st, outer * p.vs_sb + in * p.vs_st};
}

/* Where slot's K and V scales of head hk are. */
struct scale_ptrs {
    const float *k, *v;
};
DEV scale_ptrs scale_ptrs_of(const fmqa_decode_params &p, int b, int hk, int slot) {
    const scale_offsets o = scale_offsets_of(p, b, slot);
    return {p.k_scale + o.k + hk * p.ks_sh, p.v_scale + o.v + hk * p.vs_sh};
}

/* Where slot's scale of head hk lies in tensor t (0 K, 1 V). */
DEV const float *scale_of(const fmqa_decode_params &p, int b, int hk, int slot, int t) {
    const scale_ptrs sp = scale_ptrs_of(p, b, hk, slot);
    return t ? sp.v : sp.k;
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

/* Bytes from a token's K (V) row to the next one's (consecutive slots of a page). */
struct kv_step {
    long long k, v;
};
DEV kv_step kv_step_of(const fmqa_decode_params &p) { return {p.k_st * EB, p.v_st * EB}; }

/* Where slot's row of the thread's column lies: one page lookup when paged. */
DEV kv_ptrs kv_row(const fmqa_decode_params &p, const kv_ptrs &base, int b, int slot) {
    long long k = (long long)slot * p.k_st, v = (long long)slot * p.v_st;
    if (PAGED) {
        const long long page = page_of<PS>(p, b, slot);
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
/* 8-bit caches: the 2 * RUN scales of a run (K's, then V's; 4 bytes each) are
 * copied by the CPR threads that copy its rows, entries c16, c16 + CPR, ...,
 * so that every thread of the CTA does the same work (the default MQA configs
 * give each thread one 4-byte copy a tile), not a few warps all of it. */
constexpr int SPT = EB == 1 ? (2 * RUN + CPR - 1) / CPR : 0; /* scale entries a thread takes a run */

/* Scale entry k of this thread in a run: which tensor (0 K, 1 V) and row of
 * the run; false when the thread has no k-th entry. */
DEV bool scale_entry(int k, int &t, int &row) {
    const int e = threadIdx.x % CPR + k * CPR;
    t = e >= RUN;
    row = e - t * RUN;
    return e < 2 * RUN;
}

/* Where this thread's copies of a tile come from in the steady state without
 * window or paging (linear addresses): its first K and V row, and each of its
 * scale entries (tile_at_of); load_tile moves them on a tile. */
struct tile_at {
    kv_ptrs kv;
    const float *s[SPT > 0 ? SPT : 1];
    long long ss[SPT > 0 ? SPT : 1]; /* what s moves by a tile */
};

/* tile_at for the thread's rows from position v (= its slot: no window, no
 * paging). */
DEV tile_at tile_at_of(const fmqa_decode_params &p, const kv_ptrs &base, int b, int hk, int v) {
    tile_at a;
    a.kv = kv_row(p, base, b, v);
#pragma unroll
    for (int k = 0; k < SPT; ++k) {
        int t, row;
        a.s[k] = scale_entry(k, t, row) ? scale_of(p, b, hk, v + row, t) : p.k_scale;
        a.ss[k] = BLOCK_N * (t ? p.vs_st : p.ks_st);
    }
    return a;
}

/* The scale copies of a run of rows [v, v + RUN) (zeros past v_end; FULL:
 * none is) into the stage's scale rows at shared address dsc; linear: the
 * rows sit in consecutive slots of one page from `first`, so an entry's
 * address is at's (no window, no paging) or `first`'s plus a stride, else
 * every row is looked up. */
template <bool FULL>
DEV void load_run_scales(const fmqa_decode_params &p, const seq_view &s, const tile_at &at, int b, int hk, int v,
                         int v_end, int first, bool linear, u32 dsc) {
#pragma unroll
    for (int k = 0; k < SPT; ++k) {
        int t, row;
        if (!scale_entry(k, t, row)) break;
        const bool ok = FULL || v + row < v_end;
        const float *src = p.k_scale;
        if (ok && linear)
            src = WINDOW || PAGED ? scale_of(p, b, hk, first, t) + row * (t ? p.vs_st : p.ks_st) : at.s[k];
        else if (ok)
            src = scale_of(p, b, hk, slot_of(p, s, pos_of(s, v + row)), t);
        cp_async4(dsc + t * BLOCK_N * 4 + row * 4, src, ok ? 4 : 0);
    }
}

/* Copies rows [v, v + RUN) of a tile (zeros past v_end; FULL: none is) to
 * their K row chunk at shared address dst and V chunk BLOCK_N rows later,
 * and (8-bit) this thread's share of their scales to the scale rows at dsc.
 * When the run's positions sit in consecutive slots of one page (always,
 * without window or paging), addresses advance by the token strides; across
 * a sink/window seam, a ring wrap or a page boundary every row is looked up. */
template <bool FULL>
DEV void load_run(const fmqa_decode_params &p, const seq_view &s, const kv_ptrs &base, const tile_at &at, int b,
                  int hk, int v, int v_end, u32 dst, u32 dsc) {
    const kv_step step = kv_step_of(p);
    const int first = slot_of(p, s, pos_of(s, v));
    const bool linear = (FULL || v < v_end) && run_linear(p, s, v, RUN, first);
    if (EB == 1) load_run_scales<FULL>(p, s, at, b, hk, v, v_end, first, linear, dsc);
    if (linear) {
        kv_ptrs a = WINDOW || PAGED ? kv_row(p, base, b, first) : at.kv;
#pragma unroll
        for (int k = 0; k < RUN; ++k) {
            const bool ok = FULL || v + k < v_end;
            cp_async16(dst + k * RB, ok ? a.k : (const char *)p.k, ok ? 16 : 0);
            cp_async16(dst + (BLOCK_N + k) * RB, ok ? a.v : (const char *)p.v, ok ? 16 : 0);
            a.k += step.k, a.v += step.v;
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
DEV void load_kv(const fmqa_decode_params &p, const seq_view &s, const kv_ptrs &base, const tile_at &at, int b,
                 int hk, int v0, int v_end, u32 dst) {
    const int i = threadIdx.x, g = i / CPR;
    if (LG * CPR < NTHREADS && i >= LG * CPR) return;
#pragma unroll
    for (int j = 0; j < PER / RUN; ++j) {
        const int row = g * PER + j * RUN;
        load_run<FULL>(p, s, base, at, b, hk, v0 + row, v_end, dst + row * RB + (i - g * CPR) * 16,
                       dst + 2 * BLOCK_N * RB + row * 4);
    }
}

/* Issues the cp.async copies of tile [v0, v0 + BLOCK_N) (zeros past v_end).
 * base is kv_base() of this thread; without window or paging, at is where the
 * thread's first row of this tile lies (kv_row of v0 + its first row), moved
 * on to the next tile's here: the steady state then adds a stride per row. */
DEV void load_tile(const fmqa_decode_params &p, const seq_view &s, const kv_ptrs &base, tile_at &at, int b,
                   int hk, int v0, int v_end, unsigned char *stage) {
    const u32 dst = smem_addr(stage);
    if (v0 + BLOCK_N <= v_end)
        load_kv<true>(p, s, base, at, b, hk, v0, v_end, dst);
    else
        load_kv<false>(p, s, base, at, b, hk, v0, v_end, dst);
    at.kv.k += (long long)BLOCK_N * p.k_st * EB;
    at.kv.v += (long long)BLOCK_N * p.v_st * EB;
#pragma unroll
    for (int k = 0; k < SPT; ++k) at.s[k] += at.ss[k];
}

/* Load pipeline with BULK = 1 (sm_90+).  A producer warp (the CTA's last,
 * threads NTHREADS..) fills a ring of STAGES stages that the compute warps
 * (consumers) take in order.  Stage i has two mbarriers: full[i], completed by
 * 33 arrivals (the arrive.expect_tx of the lane that issues the copies, then
 * a plain arrive of every producer lane once its stores are done) and the
 * copies' transaction bytes; empty[i], by
 * one arrival of each consumer thread once it has read the stage.  The
 * producer waits on empty before refilling a stage, the consumers on full:
 * no CTA-wide barrier inside a piece, and STAGES tiles in flight.  The ring
 * runs on across the CTA's pieces (kv_ring), so its barriers are initialised
 * once per kernel.
 *
 * Each row of K and of V is one cp.async.bulk of its D * EB bytes, into the
 * same padded rows (RB bytes apart) the compute reads with ldmatrix.  Plain bulk copies, not
 * tensor maps: they keep that layout (the 16 bytes of padding make ldmatrix
 * conflict-free; a map's swizzle would need another fragment addressing), a
 * row is the largest contiguous piece anyway when K and V rows of a KV head
 * are interleaved with the other heads' ([token][head][d]), pages, ring wraps
 * and the sink/window seam need no box arithmetic, and the runtime encodes no
 * map per call.  An address is computed once a run of rows (kv_row: one page
 * lookup when paged) for CPR 16-byte chunks of K and as many of V a row.
 * 8-bit scales (4 bytes a row, below a bulk copy's 16) travel through
 * registers: loaded before the copies are issued, stored after, published by
 * the lanes' arrive.  Rows past v_end are zeros (generic stores, published
 * the same way; the storing lane's fence.proxy.async orders them before any
 * later bulk copy into that row, issued after the producer's next wait on
 * that stage's empty barrier). */
struct kv_ring {
    int n;     /* tiles through the ring so far */
    int stage; /* stage of tile n                */
    u32 phase; /* parity of that stage's use by tile n */
};

/* The stage after st (a mask when STAGES is a power of two: one
 * instruction less a tile). */
DEV int stage_after(int st) {
    return STAGES & (STAGES - 1) ? (st + 1 == STAGES ? 0 : st + 1) : (st + 1) & (STAGES - 1);
}

DEV void ring_advance(kv_ring &r) {
    ++r.n;
    r.stage = stage_after(r.stage);
    if (r.stage == 0) r.phase ^= 1u;
}

#if BULK
constexpr int RPL = BLOCK_N / 32; /* rows a producer lane takes the scales or zeros of */
static_assert(BLOCK_N % 32 == 0, "BULK: as many rows for every producer lane");

DEV u32 bar_full(unsigned char *smem, int st) { return smem_addr(smem + BAR_OFF) + 8 * st; }
DEV u32 bar_empty(unsigned char *smem, int st) { return smem_addr(smem + BAR_OFF) + 8 * (STAGES + st); }

/* Thread 0, once per kernel, before a CTA barrier: the ring's mbarriers,
 * published to the async proxy. */
DEV void ring_init(unsigned char *smem) {
    if (threadIdx.x != 0) return;
    for (int i = 0; i < STAGES; ++i) {
        mbar_init(bar_full(smem, i), 32 + 1);
        mbar_init(bar_empty(smem, i), NTHREADS);
    }
    fence_mbarrier_init();
}

/* The run of positions from v (in slot `slot`) whose slots follow one another
 * within one page, at most n long: runs end where the sinks meet the window,
 * where a ring wraps and where a page ends. */
DEV int run_len(const fmqa_decode_params &p, const seq_view &s, int v, int slot, int n) {
    if (WINDOW && v < s.s0) n = min(n, s.s0 - v);
    if (RING) n = min(n, p.sink_tokens + p.ring_period - slot);
    if (PAGED) n = min(n, PS - (slot & (PS - 1)));
    return n;
}

/* The producer warp's part of tile [v0, v0 + BLOCK_N) into stage, completing
 * on the mbarrier full.  One elected lane issues the bulk copies run by run
 * (run_len): an address a run (kv_row), then a stride added per row, values
 * ptxas keeps in uniform registers, so that a copy is one UBLKCP (copies
 * issued by every lane from its own registers cost a loop over the lanes,
 * ~10 instructions a copy).  Lane l loads the 8-bit scales of rows l, l + 32,
 * ... and stores them, or zeros for rows past v_end. */
DEV void produce_tile(const fmqa_decode_params &p, const seq_view &s, const kv_ptrs &base, int b, int hk, int v0,
                      int v_end, unsigned char *stage, u32 full) {
    const int lane = threadIdx.x & 31, n = min(BLOCK_N, v_end - v0); /* rows with data */
    float ksc[RPL], vsc[RPL];
#pragma unroll
    for (int k = 0; k < RPL; ++k) {
        const int row = lane + 32 * k;
        ksc[k] = vsc[k] = 0.0f;
        if (EB == 1 && row < n) {
            const scale_ptrs sp = scale_ptrs_of(p, b, hk, slot_of(p, s, pos_of(s, v0 + row)));
            ksc[k] = __ldg(sp.k);
            vsc[k] = __ldg(sp.v);
        }
    }
    if (elect_one()) {
        mbar_arrive_expect_tx(full, 2u * D * EB * n);
        const u32 dst = smem_addr(stage);
        const kv_step step = kv_step_of(p);
        for (int r = 0; r < n;) {
            const int v = v0 + r, slot = slot_of(p, s, pos_of(s, v));
            const int end = r + run_len(p, s, v, slot, n - r);
            kv_ptrs a = kv_row(p, base, b, slot);
            for (; r < end; ++r, a.k += step.k, a.v += step.v) {
                bulk_g2s(dst + r * RB, a.k, D * EB, full);
                bulk_g2s(dst + (BLOCK_N + r) * RB, a.v, D * EB, full);
            }
        }
    }
    bool zeroed = false;
#pragma unroll
    for (int k = 0; k < RPL; ++k) {
        const int row = lane + 32 * k;
        if (row >= n) {
            unsigned char *kr = stage + row * RB, *vr = kr + BLOCK_N * RB;
            const uint4 z = make_uint4(0u, 0u, 0u, 0u);
#pragma unroll
            for (int c = 0; c < CPR; ++c) ((uint4 *)kr)[c] = z, ((uint4 *)vr)[c] = z;
            zeroed = true;
        }
        if (EB == 1) {
            float *sc = (float *)(stage + 2 * BLOCK_N * RB);
            sc[row] = ksc[k];
            sc[BLOCK_N + row] = vsc[k];
        }
    }
    if (zeroed) fence_proxy_async();
    mbar_arrive(full);
}

/* The producer warp's part of a piece: its ntiles tiles from v_begin. */
DEV void produce_piece(const fmqa_decode_params &p, const seq_view &s, int b, int hk, int v_begin, int v_end,
                       int ntiles, unsigned char *smem, kv_ring &r) {
    const kv_ptrs base = kv_base(p, b, hk, 0);
    for (int it = 0; it < ntiles; ++it) {
        if (r.n >= STAGES) mbar_wait(bar_empty(smem, r.stage), r.phase ^ 1u); /* its previous tile was read */
        produce_tile(p, s, base, b, hk, v_begin + it * BLOCK_N, v_end, smem + Q_BYTES + r.stage * STAGE_BYTES,
                     bar_full(smem, r.stage));
        ring_advance(r);
    }
}
#endif

/* Q rows of this CTA into shared memory as the mma type, zero rows past M
 * (load_q_rows, fmqa_device.cuh).  For 8-bit caches the chunk's columns are
 * permuted (q_chunk_to_mma; see "Fragments" above). */
DEV void load_q(const fmqa_decode_params &p, int b, int hk, int rb, unsigned char *qs) {
    load_q_rows<Q_BF16, MMA_BF16, EB == 1 ? 2 : 0, D, ROWS, NTHREADS, QRB>(qs, [&](int row) -> const u16 * {
        const int r = rb * ROWS + row, t = r / GROUP, h = hk * GROUP + r % GROUP;
        return r < M ? (const u16 *)p.q + b * p.q_sb + t * p.q_st + h * p.q_sh : nullptr;
    });
}

/* Per-warp online-softmax state of one m-tile: O accumulator (d-tile
 * fragments), running max (from -FLT_MAX, not -inf: a row that sees nothing
 * yet keeps a finite softmax base, so masked scores give ex2(-inf) = 0, not
 * ex2(-inf - -inf) = NaN, without a compare per tile) and this thread's
 * partial sum of its two rows (summed over the quad at the end); s0, the C fragment S starts from (K_BIAS:
 * every column of a row holds the same value, so each tile's mma reads it as is);
 * vc, the C fragment of V's offset in O (V_BIAS: vc[0] for row g, vc[2] for
 * row g + 8; every column holds the same value). */
struct softmax_state {
    float o[NT_O][4];
    float m[2], l[2];
    float s0[4];
    float vc[4];
};

/* V_BIAS: O without V's offset, at the end of a piece (before the warps
 * merge). */
DEV void v_unbias(softmax_state &st) {
#pragma unroll
    for (int nt = 0; nt < NT_O; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) st.o[nt][e] -= st.vc[e & 2];
}

/* 8-bit K or V bytes to B fragment pairs: biased (1152 + x, int8 with f16
 * operands) where the caller folds the offset out, else exact; ADJ: adjacent
 * pairs (K; "Fragments" above). */
template <int BIASED, int ADJ> DEV void kv8x4_to_pairs(u32 r, u32 &p02, u32 &p13) {
    if (BIASED)
        int8x4_to_f16_biased<ADJ>(r, p02, p13);
    else
        q8x4_to_pairs<KV_FMT, MMA_BF16, ADJ>(r, p02, p13);
}

/* This lane's ldmatrix addresses ("Fragments" above: row lrow, byte lcol):
 * in Q (shared address of its first m-tile) and in a stage (offset of its
 * first K row; V's is BLOCK_N rows on), computed once a piece and kept
 * (without, ptxas recomputes them from the thread index every tile: ~11
 * instructions a tile in the 8-bit loops). */
struct lane_addr {
    u32 q, kv;
};
DEV lane_addr lane_addr_of(unsigned char *qs, int mw, int nw) {
    const int lane = threadIdx.x & 31, lrow = ((lane >> 3) & 1) * 8 + (lane & 7), lcol = (lane >> 4) * 16;
    return {kept(smem_addr(qs) + (mw * MT * 16 + lrow) * QRB + lcol), kept((nw * WN + lrow) * RB + lcol)};
}

/* K_BIAS: s0 = -1152 * (sum of the row's Q) for the thread's two rows of each
 * m-tile, by the mma that computes S (Q rows in shared memory, published),
 * with B = the pair (-1152, -1152). */
DEV void s_start(u32 q_base, softmax_state (&st)[MT]) {
#pragma unroll
    for (int i = 0; i < MT; ++i) {
        float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
        for (int kc = 0; kc < D / 16; ++kc) {
            u32 a[4];
            ldsm_x4(a, q_base + i * 16 * QRB + kc * 32);
            mma16816<0>(acc, a, INT8_F16_BIAS ^ 0x80008000u, INT8_F16_BIAS ^ 0x80008000u);
        }
#pragma unroll
        for (int e = 0; e < 4; ++e) st[i].s0[e] = acc[e];
    }
}

#include "decode_scores.cuh"

/* One tile for one warp and its MT m-tiles: S = Q K^T, mask, online softmax,
 * O += P V.  Each K/V fragment is read (and, 8-bit, converted) once and used
 * by the mma of every m-tile.  sr: where the warp's logits go (SCORES). */
DEV void warp_tile(const fmqa_decode_params &p, const seq_view &s, const row_info (&ri)[MT][2], const lane_addr &la,
                   const unsigned char *stage, int v0, int v_end, bool masked, int nw, softmax_state (&st)[MT],
                   const score_rows &sr) {
    const int lane = threadIdx.x & 31;
    const int cq = lane & 3;
    const u32 q_base = la.q, k_base = smem_addr(stage) + la.kv;
    const u32 v_base = k_base + BLOCK_N * RB;
    const float *kscale = (const float *)(stage + 2 * BLOCK_N * RB);
    const float *vscale = kscale + BLOCK_N;

    float sacc[MT][NT_S][4];
#pragma unroll
    for (int i = 0; i < MT; ++i)
#pragma unroll
        for (int nt = 0; nt < NT_S; ++nt) {
#pragma unroll
            for (int e = 0; e < 4; ++e) sacc[i][nt][e] = K_BIAS ? st[i].s0[e] : 0.0f;
        }

    /* 8-bit K: chunks kc, kc + 1 (even kc) of one x4 load; with more than 16
     * tokens a warp one x2 a chunk (x4 would hold 4 more registers a 16
     * tokens across two chunks: the heavy configs spilled) */
    constexpr bool K_X4 = NT_S == 2;
    u32 k8[NT_S / 2][4];
#pragma unroll
    for (int kc = 0; kc < D / 16; ++kc) {
        u32 a[MT][4];
#pragma unroll
        for (int i = 0; i < MT; ++i) ldsm_x4(a[i], q_base + i * 16 * QRB + kc * 32);
#pragma unroll
        for (int pp = 0; pp < NT_S / 2; ++pp) {
            const u32 addr = k_base + pp * 16 * RB;
            u32 bf[4]; /* B fragments: n-tile 2 pp = (bf[0], bf[1]), 2 pp + 1 = (bf[2], bf[3]) */
            if (EB == 2) {
                u32 r[4];
                ldsm_x4(r, addr + kc * 32);
                bf[0] = r[0], bf[1] = r[2], bf[2] = r[1], bf[3] = r[3];
            } else {
                if (!K_X4) {
                    u32 r[2];
                    ldsm_x2(r, addr + kc * 16);
                    k8[pp][0] = r[0], k8[pp][1] = r[1];
                } else if (kc % 2 == 0) {
                    ldsm_x4(k8[pp], addr + kc * 16);
                }
                const int h = K_X4 ? 2 * (kc % 2) : 0;
#pragma unroll
                for (int j = 0; j < 2; ++j) kv8x4_to_pairs<K_BIAS, 1>(k8[pp][h + j], bf[2 * j], bf[2 * j + 1]);
            }
#pragma unroll
            for (int i = 0; i < MT; ++i) {
                mma16816<MMA_BF16>(sacc[i][2 * pp], a[i], bf[0], bf[1]);
                mma16816<MMA_BF16>(sacc[i][2 * pp + 1], a[i], bf[2], bf[3]);
            }
        }
    }

    /* Scale to base-2 logits; the column's scale serves every row. */
#pragma unroll
    for (int nt = 0; nt < NT_S; ++nt)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
            const int col = nw * WN + nt * 8 + 2 * cq + e;
            const float sc = EB == 1 ? p.sm_scale_log2 * KV_FOLD * kscale[col] : p.sm_scale_log2;
#pragma unroll
#pragma unroll
            for (int i = 0; i < MT; ++i)
#pragma unroll
                for (int h = 0; h < 2; ++h) {
                    float x = sacc[i][nt][2 * h + e] * sc;
                    if (SOFTCAP) x = p.softcap_log2 * tanh_from_ex2(x * p.softcap_inv);
                    sacc[i][nt][2 * h + e] = x;
                }
        }
    /* Mask only the tiles that need it: a block of its own, so that the
     * unmasked tiles do not pay for the predicates. */
    if (masked) {
#pragma unroll
        for (int nt = 0; nt < NT_S; ++nt)
#pragma unroll
            for (int e = 0; e < 2; ++e) {
                const int v = v0 + nw * WN + nt * 8 + 2 * cq + e;
#pragma unroll
                for (int i = 0; i < MT; ++i)
#pragma unroll
                    for (int h = 0; h < 2; ++h)
                        if (v >= v_end || !visible(p, s, ri[i][h], pos_of(s, v))) sacc[i][nt][2 * h + e] = neg_inf();
            }
    }
    if (SCORES) scores_keep(p, sr, v0 + nw * WN, v_end, sacc);
    /* New running maxima.  O and l are rescaled only when some row's maximum
     * moved (a warp vote: the usual case after the first tiles is that none
     * did, and then alpha would be exactly 1). */
    float base[MT][2], m_old[MT][2];
    bool moved = false;
#pragma unroll
    for (int i = 0; i < MT; ++i)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            float mx = fmaxf(sacc[i][0][2 * h], sacc[i][0][2 * h + 1]);
#pragma unroll
            for (int nt = 1; nt < NT_S; ++nt) mx = fmaxf(mx, fmaxf(sacc[i][nt][2 * h], sacc[i][nt][2 * h + 1]));
            const float m_new = fmaxf(st[i].m[h], quad_max(mx));
            base[i][h] = m_new; /* finite: m starts at -FLT_MAX (softmax_state) */
            m_old[i][h] = st[i].m[h];
            moved = moved || m_new != m_old[i][h];
            st[i].m[h] = m_new;
        }
    if (vote_any(moved)) {
#pragma unroll
        for (int i = 0; i < MT; ++i)
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                const float alpha = ex2(m_old[i][h] - base[i][h]);
                st[i].l[h] *= alpha;
                if (V_BIAS) st[i].vc[2 * h] *= alpha;
#pragma unroll
                for (int nt = 0; nt < NT_O; ++nt) {
                    st[i].o[nt][2 * h] *= alpha;
                    st[i].o[nt][2 * h + 1] *= alpha;
                }
            }
    }

    /* P (scaled per column by v_scale for 8-bit caches) as A fragments. */
#pragma unroll
    for (int pp = 0; pp < NT_S / 2; ++pp) {
        u32 a[MT][4];
#pragma unroll
        for (int half = 0; half < 2; ++half) {
            const int nt = 2 * pp + half;
            const int col = nw * WN + nt * 8 + 2 * cq;
            const float vs0 = EB == 1 ? KV_FOLD * vscale[col] : 1.0f;
            const float vs1 = EB == 1 ? KV_FOLD * vscale[col + 1] : 1.0f;
#pragma unroll
            for (int i = 0; i < MT; ++i)
#pragma unroll
                for (int h = 0; h < 2; ++h) {
                    const float p0 = ex2(sacc[i][nt][2 * h] - base[i][h]);
                    const float p1 = ex2(sacc[i][nt][2 * h + 1] - base[i][h]);
                    st[i].l[h] += p0 + p1;
                    a[i][2 * half + h] = pack2<MMA_BF16>(p0 * vs0, p1 * vs1);
                }
        }
        if (V_BIAS) {
#pragma unroll
            for (int i = 0; i < MT; ++i) mma16816<0>(st[i].vc, a[i], INT8_F16_BIAS, INT8_F16_BIAS);
        }
        const u32 addr = v_base + pp * 16 * RB;
        u32 v8[4]; /* 8-bit V: d columns 16 j.. and 16 (j + 1).. (even j) of one x4 load */
#pragma unroll
        for (int j = 0; j < D / 16; ++j) {
            u32 bf[4]; /* B fragments: d-tile 2 j = (bf[0], bf[1]), 2 j + 1 = (bf[2], bf[3]) */
            if (EB == 2) {
                u32 r[4];
                ldsm_x4_t(r, addr + j * 32);
                bf[0] = r[0], bf[1] = r[1], bf[2] = r[2], bf[3] = r[3];
            } else {
                if (j % 2 == 0) ldsm_x4_t(v8, addr + j * 16);
                kv8x4_to_pairs<V_BIAS, 0>(v8[2 * (j % 2)], bf[0], bf[2]);
                kv8x4_to_pairs<V_BIAS, 0>(v8[2 * (j % 2) + 1], bf[1], bf[3]);
            }
#pragma unroll
            for (int i = 0; i < MT; ++i) {
                mma16816<MMA_BF16>(st[i].o[2 * j], a[i], bf[0], bf[1]);
                mma16816<MMA_BF16>(st[i].o[2 * j + 1], a[i], bf[2], bf[3]);
            }
        }
    }
}

/* Warps nw > 0 hand their state of m-tile mt (of the CTA's WARPS_M * MT) to
 * warp nw = 0 of the same rows through shared memory (laid out per fragment
 * register and lane: conflict-free), which merges it into its own.  Needs the
 * pipeline drained: it reuses that memory. */
DEV void merge_warps(unsigned char *smem, int mt, int nw, softmax_state &st) {
    if (WARPS_N == 1) return;
    const int lane = threadIdx.x & 31;
    float *buf = (float *)smem + mt * (WARPS_N - 1) * (NT_O * 4 + 4) * 32;
    if (nw > 0) {
        float *w = buf + (nw - 1) * (NT_O * 4 + 4) * 32 + lane;
#pragma unroll
        for (int i = 0; i < NT_O * 4; ++i) w[i * 32] = st.o[i / 4][i % 4];
        w[NT_O * 4 * 32] = st.m[0];
        w[(NT_O * 4 + 1) * 32] = st.m[1];
        w[(NT_O * 4 + 2) * 32] = st.l[0];
        w[(NT_O * 4 + 3) * 32] = st.l[1];
    }
    consumers_sync();
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

/* Writes the merged rows of m-tile mt: o (and lse) directly (slot < 0), or the
 * partials of a piece of the segment to workspace slot `slot` ([slot][ROWS]
 * rows). */
DEV void store_rows(const fmqa_decode_params &p, int b, int hk, int rb, int mt, long long slot,
                    softmax_state &st) {
    const int lane = threadIdx.x & 31;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        const float l = quad_sum(st.l[h]);
        const int r = rb * ROWS + mt * 16 + (lane >> 2) + 8 * h;
        if (r >= M) continue;
        const int t = r / GROUP, head = hk * GROUP + r % GROUP;
        /* The sink joins the denominator once: here, or in the combine. */
        const float s2 = p.sinks && slot < 0 ? p.sinks[head] * LOG2E : neg_inf();
        float inv, lse2;
        softmax_finish(st.m[h], l, s2, inv, lse2);
        const long long row = ((long long)b * Q_TOKENS + t) * p.num_q_heads + head;
        if (slot >= 0) {
            const long long srow = slot * ROWS + (r - rb * ROWS);
            float *wo = p.ws_o + srow * D;
#pragma unroll
            for (int nt = 0; nt < NT_O; ++nt)
#pragma unroll
                for (int e = 0; e < 2; ++e) wo[o_col<EB == 1>(nt, 2 * (lane & 3) + e)] = st.o[nt][2 * h + e] * inv;
            if ((lane & 3) == 0) p.ws_lse[srow] = lse2;
        } else {
            u16 *o = (u16 *)p.o + b * p.o_sb + t * p.o_st + head * p.o_sh;
#pragma unroll
            for (int nt = 0; nt < NT_O; ++nt)
#pragma unroll
                for (int e = 0; e < 2; ++e)
                    o[o_col<EB == 1>(nt, 2 * (lane & 3) + e)] = f32_to_h<OUT_BF16>(st.o[nt][2 * h + e] * inv);
            if (LSE && (lane & 3) == 0) p.lse[row] = lse2 * 0.69314718055994531f;
            if (SCORES && (lane & 3) == 0) p.ws_sl[row] = lse2; /* decode_scores.cuh */
        }
    }
}

/* One piece of work: positions [v_begin, v_end) of sequence b (seen as s) for
 * the rows of row block rb of KV head hk, written to the output (slot < 0) or
 * as partials to workspace slot `slot`.  Starts with a barrier: the previous
 * piece's warps may still read the shared memory this one fills.  ring: the
 * bulk pipeline's position (BULK), carried from piece to piece. */
DEV void run_piece(const fmqa_decode_params &p, unsigned char *smem, const seq_view &s, int b, int hk, int rb,
                   int v_begin, int v_end, long long slot, kv_ring &ring) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int mw = warp % WARPS_M, nw = warp / WARPS_M;
    unsigned char *qs = smem, *stages = smem + Q_BYTES;
    const int ntiles = v_end > v_begin ? (v_end - v_begin + BLOCK_N - 1) / BLOCK_N : 0;
#if BULK
    fence_proxy_async(); /* this thread's generic writes to the stages (scan, merge) before copies refill them */
    __syncthreads();
    if (threadIdx.x >= NTHREADS) {
        produce_piece(p, s, b, hk, v_begin, v_end, ntiles, smem, ring);
        return;
    }
#else
    __syncthreads();

    const kv_ptrs kvb = kv_base(p, b, hk, threadIdx.x % CPR);
    /* Without window or paging: where this thread's first row of the first
     * tile lies (pointer arithmetic only; a page table is never read here). */
    tile_at kv_at = {kvb, {}, {}};
    if (!WINDOW && !PAGED) kv_at = tile_at_of(p, kvb, b, hk, v_begin + threadIdx.x / CPR * PER);
    /* The first KV copies go out right after kv_lens (one round trip; a page
     * table adds its own), before Q and the tree masks are read. */
#pragma unroll
    for (int i = 0; i < STAGES - 1; ++i) {
        if (i < ntiles) load_tile(p, s, kvb, kv_at, b, hk, v_begin + i * BLOCK_N, v_end, stages + i * STAGE_BYTES);
        cp_async_commit();
    }
#endif
    load_q(p, b, hk, rb, qs);

    row_info ri[MT][2];
    softmax_state st[MT];
#pragma unroll
    for (int i = 0; i < MT; ++i) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const int r = rb * ROWS + (mw * MT + i) * 16 + (lane >> 2) + 8 * h;
            const int t = min(r / GROUP, Q_TOKENS - 1); /* padding rows borrow a real token */
            ri[i][h].qpos = s.first_draft + t;
            ri[i][h].tree = TREE ? p.tree_mask[b * Q_TOKENS + t] : 0ull;
        }
#pragma unroll
        for (int nt = 0; nt < NT_O; ++nt) st[i].o[nt][0] = st[i].o[nt][1] = st[i].o[nt][2] = st[i].o[nt][3] = 0.0f;
        st[i].m[0] = st[i].m[1] = -3.402823466e38f;
        st[i].l[0] = st[i].l[1] = 0.0f;
        st[i].s0[0] = st[i].s0[1] = st[i].s0[2] = st[i].s0[3] = 0.0f;
        st[i].vc[0] = st[i].vc[1] = st[i].vc[2] = st[i].vc[3] = 0.0f;
    }
    /* Warps whose rows are all padding only help load (cp.async) or keep
     * their place in the ring (BULK: they still wait and release). */
    const bool active = rb * ROWS + mw * MT * 16 < M;
    const score_rows sr = score_rows_of(b, hk, rb * ROWS + mw * MT * 16, p);
    const lane_addr la = lane_addr_of(qs, mw, nw);
    /* Q in shared memory (the cp.async loop's first barrier publishes it too) */
    if (BULK || K_BIAS) consumers_sync();
    if (K_BIAS && active) s_start(la.q, st);
#if !BULK
    int st_next = STAGES - 1;
    ring.stage = 0; /* the cp.async pipeline starts over in every piece */
#endif
    const int n_clean = clean_tiles(s, v_begin, v_end);
    for (int it = 0; it < ntiles; ++it) {
#if BULK
        mbar_wait(bar_full(smem, ring.stage), ring.phase); /* tile `it` has landed */
#else
        cp_async_wait<STAGES - 2>();
        __syncthreads(); /* tile `it` visible to all; tile it-1's stage is free */
        if (it + STAGES - 1 < ntiles)
            load_tile(p, s, kvb, kv_at, b, hk, v_begin + (it + STAGES - 1) * BLOCK_N, v_end,
                      stages + st_next * STAGE_BYTES);
        cp_async_commit();
        st_next = stage_after(st_next);
#endif
        const int v0 = v_begin + it * BLOCK_N;
        if (active)
            warp_tile(p, s, ri, la, stages + ring.stage * STAGE_BYTES, v0, v_end,
                      WINDOW ? tile_needs_mask(p, s, v0, v_end) : it >= n_clean, nw, st, sr);
#if BULK
        mbar_arrive(bar_empty(smem, ring.stage)); /* this thread is done with the stage */
#endif
        ring_advance(ring);
    }
#if !BULK
    cp_async_wait<0>();
#endif
    consumers_sync(); /* every warp is done with the stages: the merge reuses them */
#pragma unroll
    for (int i = 0; i < MT; ++i) {
        if (V_BIAS) v_unbias(st[i]);
        merge_warps(stages, mw * MT + i, nw, st[i]);
        if (nw == 0 && active) store_rows(p, b, hk, rb, mw * MT + i, slot, st[i]);
    }
}

/* Work distribution: fmqa_sched.cuh's persistent schedule, units of UNIT
 * positions (PAGED: a copy run, so that runs stay within pages). */
constexpr int UNIT = PAGED ? RUN : 1;
using sched = sched_cfg<CTA_THREADS, UNIT, ROW_BLOCKS, ROWS, PS>;
static_assert(BAR_OFF - Q_BYTES >= sched_scratch_bytes<sched>(), "scan scratch");

extern "C" __global__ void __launch_bounds__(CTA_THREADS, 1) fmqa_decode_kernel(const fmqa_decode_params p) {
    extern __shared__ __align__(128) unsigned char smem[];
    if (dynamic_smem_size() < (u32)SMEM_BYTES) __trap(); /* the launch disagrees with decode.lua */
    pdl_launch_dependents(); /* the combine may launch; it waits for this grid's end */
#if BULK
    ring_init(smem); /* published by the scan's barriers */
#endif
    kv_ring ring = {0, 0, 0u};
    sched_run<sched>(p, smem + Q_BYTES,
                     [&](const seq_view &s, int b, int hk, int rb, int v_begin, int v_end, long long slot) {
                         run_piece(p, smem, s, b, hk, rb, v_begin, v_end, slot, ring);
                     });
}

/* Merges the pieces of split segments (fmqa_combine.cuh): grid (rows, slices),
 * a CTA of FMQA_C_THREADS threads per (b, t, h) row and column slice
 * (decode.lua picks the slices so that the grid covers the SMs even at batch
 * 1, or in batch-invariant mode by D alone).  Rows of a segment that was not
 * split were written by the kernel; their CTAs return at once. */
extern "C" __global__ void __launch_bounds__(FMQA_C_THREADS) fmqa_decode_combine(const fmqa_decode_params p) {
    extern __shared__ __align__(128) unsigned char smem[];
    if (dynamic_smem_size() < (u32)FMQA_C_SMEM_BYTES) __trap(); /* the launch disagrees with decode.lua */
    pdl_wait(); /* the kernel's grid has ended and its writes are visible */
    sched_combine<sched, D, GROUP>(p, smem, [&](int row, float lse2) {
        if (SCORES) p.ws_sl[row] = lse2; /* decode_scores.cuh */
    });
}
