/*
 * fmqa_seq.cuh -- which cache positions a decode query sees and where their
 * rows lie, shared by the templates of the decode family (decode.cuh,
 * mla_decode.cuh): the virtual KV order of a sequence (sinks, then the
 * window), the slots of a ring cache, the visibility of a position to one
 * query row, and whether a run of rows can be copied by stepping a pointer.
 * The rules are those of fastmqa.h (fmqa_decode_args) and reference/ref.h.
 *
 * KV order.  A sequence's visible positions are read in "virtual" order v:
 * first the sinks [0, s0), then the window [lo, kv_len) (no window: s0 = 0,
 * lo = 0).  A kernel takes ranges of v, in tiles (the last may be partial).
 * Positions outside these ranges are invisible to every query token by the
 * rules of fastmqa.h / ref.h, and are never read.
 *
 * Needs fmqa_params.h, fmqa_device.cuh and the including template's problem
 * defines Q_TOKENS, CAUSAL, TREE, WINDOW, RING, PAGED, PAGE_SIZE and its config
 * define BLOCK_N (tokens per tile).
 */
#ifndef FMQA_SEQ_CUH
#define FMQA_SEQ_CUH

namespace fmqa_dev {

#define FMQA_DEV __device__ __forceinline__

/* Where a sequence's visible positions are and how they map to memory. */
struct seq_view {
    int kv_len, first_draft; /* query token t sits at first_draft + t          */
    int s0, lo, nvirt;       /* sinks [0, s0), window [lo, kv_len); v count    */
    int ring_j0, ring_s0;    /* RING: position ring_j0 lives in slot ring_s0   */
};

FMQA_DEV seq_view seq_view_of(const fmqa_decode_params &p, int kv_len) {
    seq_view s;
    s.kv_len = kv_len;
    s.first_draft = s.kv_len - Q_TOKENS;
    s.lo = 0;
    s.s0 = 0;
    if (WINDOW) {
        /* The first query token sees j > first_draft - window; a ring also lost
         * everything before kv_len - (window + draft_slots) (ref.h rule 5). */
        s.lo = s.first_draft - p.window + 1;
        if (RING) s.lo = max(s.lo, s.kv_len - p.ring_period);
        s.lo = max(s.lo, 0);
        s.s0 = min(p.sink_tokens, s.lo);
    }
    s.nvirt = s.s0 + max(s.kv_len - s.lo, 0);
    s.ring_j0 = max(s.lo, p.sink_tokens);
    s.ring_s0 = RING ? p.sink_tokens + (s.ring_j0 - p.sink_tokens) % max(p.ring_period, 1) : 0;
    return s;
}

FMQA_DEV int pos_of(const seq_view &s, int v) { return v < s.s0 ? v : s.lo + (v - s.s0); }

/* Cache slot of position j (ref_cache_slot): the ring advances one slot per
 * position from ring_s0 and wraps once at most, since the window part spans at
 * most ring_period = window + draft_slots positions. */
FMQA_DEV int slot_of(const fmqa_decode_params &p, const seq_view &s, int j) {
    if (!RING || j < s.ring_j0) return j;
    int slot = s.ring_s0 + (j - s.ring_j0);
    return slot >= p.sink_tokens + p.ring_period ? slot - p.ring_period : slot;
}

/* Whether the n rows of virtual positions [v, v + n) lie in consecutive slots
 * from `first` = slot_of(pos_of(v)) within one page, so that a copy may step
 * by the token stride: always without a window or paging (callers keep their
 * runs inside pages); across a sink/window seam, a ring wrap or a page
 * boundary not. */
FMQA_DEV bool run_linear(const fmqa_decode_params &p, const seq_view &s, int v, int n, int first) {
    if (!WINDOW && !PAGED) return true;
    const int last = slot_of(p, s, pos_of(s, v + n - 1));
    return last - first == n - 1 && (!PAGED || (first & -PAGE_SIZE) == (last & -PAGE_SIZE));
}

/* What one thread knows about one of its query rows. */
struct row_info {
    int qpos;                /* position of the row's query token */
    unsigned long long tree; /* its tree mask (TREE)              */
};

FMQA_DEV bool visible(const fmqa_decode_params &p, const seq_view &s, const row_info &ri, int j) {
    bool ok = true;
    if (CAUSAL) ok = ok && j <= ri.qpos;
    if (WINDOW) ok = ok && (j > ri.qpos - p.window || j < p.sink_tokens);
    if (TREE && j >= s.first_draft) ok = ok && ((ri.tree >> (j - s.first_draft)) & 1ull);
    return ok;
}

/* True when some query row may not see some position of the tile [v0, v0 +
 * BLOCK_N): only such tiles pay for the per-element mask. */
FMQA_DEV bool tile_needs_mask(const fmqa_decode_params &p, const seq_view &s, int v0, int v_end) {
    if (v0 + BLOCK_N > v_end) return true;
    const int v_last = v0 + BLOCK_N - 1;
    if ((CAUSAL || TREE) && pos_of(s, v_last) >= s.first_draft + (TREE ? 0 : 1)) return true;
    if (WINDOW) {
        const int vf = max(v0, s.s0); /* first window-part column, if any */
        if (vf <= v_last && pos_of(s, vf) <= s.kv_len - 1 - p.window) return true;
    }
    return false;
}

/* How many tiles of a piece from v_begin need no mask, when those are a
 * prefix of it: without a window pos_of(v) = v and tile_needs_mask grows
 * with v0, so a loop compares its tile index with this count instead of
 * asking per tile.  -1 with a window (the sink/window seam may need a mask in
 * mid-piece): ask tile_needs_mask. */
FMQA_DEV int clean_tiles(const seq_view &s, int v_begin, int v_end) {
    if (WINDOW) return -1;
    int lim = v_end;
    if (CAUSAL || TREE) lim = min(lim, s.first_draft + (TREE ? 0 : 1));
    return max(lim - v_begin, 0) / BLOCK_N;
}

#undef FMQA_DEV

} /* namespace fmqa_dev */

#endif /* FMQA_SEQ_CUH */
