/*
 * fmqa_sched.cuh -- the persistent split-KV schedule of the decode family
 * (decode.cuh, mla_decode.cuh) and the combine launch's side of it; its Lua
 * side (CTAs, pieces, workspace) is templates/lib/sched.lua.
 *
 * The grid is persistent: gridDim.x CTAs (the Lua: the device's SMs x the
 * CTAs one SM holds) share the flat list of work units (b, kv head x row
 * block, unit) in that order, where a sequence's units are its virtual
 * positions (fmqa_seq.cuh; UNIT of them: 1, or a copy run when paged, so that
 * runs stay within pages), at least one, so that every segment -- one (b, hk,
 * rb) -- has an owner that writes its output; in batch-invariant mode
 * (INVARIANT) its chunks (chunk_tiles).  CTA c of P takes units [c U / P,
 * (c + 1) U / P) of U: every CTA gets the same number of KV bytes to within
 * one unit, at any batch size and mix of lengths (a piece may start and end
 * inside a tile: the tiles of a piece run from its start, the last one
 * masked).  The lengths live on the device, so every CTA builds the list
 * itself (one kv_lens load per thread and a scan in shared memory): no
 * schedule kernel, and graph replays with new lengths stay right.
 *
 * A CTA walks its range as pieces: maximal runs of one segment's units (in
 * batch-invariant mode single chunks).  A segment whose units all fall in one
 * piece writes its output; otherwise each piece writes its partial o and lse
 * to a workspace slot ([slot][ROWS] rows), and the CTA that holds the
 * segment's first unit records (first slot, pieces) in ws_meta for the
 * combine ((0, 1) for a segment it covers whole: nothing to merge).  A
 * segment's slots are consecutive: piece (CTA c, segment j) takes slot c + j
 * (one-to-one, since c and j never both step back; at most P + S - 1 slots
 * for S segments), a chunk its flat unit index.
 *
 * Needs fmqa_params.h, fmqa_device.cuh, fmqa_combine.cuh, fmqa_pages.cuh,
 * fmqa_seq.cuh and the including template's defines BLOCK_N, INVARIANT,
 * Q_TOKENS, OUT_BF16 and LSE; the rest comes in sched_cfg.
 */
#ifndef FMQA_SCHED_CUH
#define FMQA_SCHED_CUH

namespace fmqa_dev {

#define FMQA_DEV __device__ __forceinline__

/* The including template's schedule: THREADS a CTA (all of them, producers
 * too), UNIT positions a unit outside batch-invariant mode, ROW_BLOCKS row
 * blocks of ROWS query rows a KV head, PS the page size (fmqa_pages.cuh). */
template <int THREADS_, int UNIT_, int ROW_BLOCKS_, int ROWS_, int PS_>
struct sched_cfg {
    static constexpr int THREADS = THREADS_, UNIT = UNIT_, ROW_BLOCKS = ROW_BLOCKS_, ROWS = ROWS_, PS = PS_;
};

constexpr int INV_MIN_TILES = 8; /* lib/sched.lua's too */
constexpr int INV_MAX_CHUNKS = 256;

/* Tiles per unit of a sequence of `tiles` tiles: 1, or in batch-invariant mode
 * a function of the sequence alone (never of the batch or the device). */
FMQA_DEV int chunk_tiles(int tiles) {
    return INVARIANT ? max(INV_MIN_TILES, (tiles + INV_MAX_CHUNKS - 1) / INV_MAX_CHUNKS) : 1;
}

struct seq_units {
    int per, units; /* positions per unit, units (>= 1) */
};

template <class C>
FMQA_DEV seq_units units_of(const seq_view &s) {
    seq_units u;
    u.per = INVARIANT ? chunk_tiles(max(1, (s.nvirt + BLOCK_N - 1) / BLOCK_N)) * BLOCK_N : C::UNIT;
    u.units = max(1, (s.nvirt + u.per - 1) / u.per);
    return u;
}

/* Inclusive prefix sum of x over the CTA (Hillis-Steele in buf[THREADS]);
 * *total gets the sum of all. */
template <int THREADS>
FMQA_DEV long long block_scan(long long x, long long *buf, long long *total) {
    const int tid = threadIdx.x;
    buf[tid] = x;
    __syncthreads();
    for (int k = 1; k < THREADS; k <<= 1) {
        const long long y = tid >= k ? buf[tid - k] : 0;
        __syncthreads();
        x += y;
        buf[tid] = x;
        __syncthreads();
    }
    *total = buf[THREADS - 1];
    __syncthreads(); /* buf is reused by the next scan */
    return x;
}

struct sched_range {
    long long lo, hi, total; /* this CTA's units [lo, hi) of `total`            */
    long long u_b;           /* flat index of sequence b's first unit            */
    int b, len;              /* the sequence that holds unit lo, its kv_lens[b]  */
};

/* Sequence i (length len) holds flat units [incl - n, incl): if lo is among
 * them, it is where the CTA starts. */
FMQA_DEV void sched_mark(long long *found, int i, int len, long long incl, long long n, long long lo) {
    if (n > 0 && incl - n <= lo && lo < incl) found[0] = i, found[1] = len, found[2] = incl - n;
}

/* Units of sequence i (0 past the batch) and its length. */
template <class C>
FMQA_DEV long long seq_units_at(const fmqa_decode_params &p, int i, int &len) {
    len = i < p.batch ? seq_len<C::PS>(p, i) : 0;
    return i < p.batch ? (long long)p.num_kv_heads * C::ROW_BLOCKS * units_of<C>(seq_view_of(p, len)).units : 0;
}

/* Shared memory sched_locate needs. */
template <class C>
constexpr int sched_scratch_bytes() {
    return 8 * C::THREADS + 24;
}

/* This CTA's range and where it starts; the same in every thread.  scratch:
 * sched_scratch_bytes() of shared memory.  A batch of up to THREADS
 * sequences takes one kv_lens load per thread; a larger one a second pass. */
template <class C>
FMQA_DEV sched_range sched_locate(const fmqa_decode_params &p, unsigned char *scratch) {
    long long *buf = (long long *)scratch, *found = buf + C::THREADS;
    long long total = 0, incl = 0, n = 0, t;
    int len = 0;
    for (int base = 0; base < p.batch; base += C::THREADS) {
        n = seq_units_at<C>(p, base + threadIdx.x, len);
        incl = total + block_scan<C::THREADS>(n, buf, &t);
        total += t;
    }
    sched_range r;
    r.total = total;
    r.lo = blockIdx.x * total / gridDim.x;
    r.hi = (blockIdx.x + 1) * total / gridDim.x;
    if (p.batch <= C::THREADS) {
        sched_mark(found, threadIdx.x, len, incl, n, r.lo);
    } else {
        long long carry = 0;
        for (int base = 0; base < p.batch; base += C::THREADS) {
            n = seq_units_at<C>(p, base + threadIdx.x, len);
            incl = carry + block_scan<C::THREADS>(n, buf, &t);
            carry += t;
            sched_mark(found, base + threadIdx.x, len, incl, n, r.lo);
        }
    }
    __syncthreads();
    r.b = (int)found[0], r.len = (int)found[1], r.u_b = found[2];
    return r; /* the first piece's barrier comes before scratch is reused */
}

/* The CTA whose range holds unit x (the largest c with c U / P <= x). */
FMQA_DEV long long cta_of(long long x, long long total) { return ((x + 1) * gridDim.x - 1) / total; }

/* Runs this CTA's pieces: piece(s, b, hk, rb, v_begin, v_end, slot) for
 * positions [v_begin, v_end) of sequence b (seen as s), the rows of row block
 * rb of KV head hk, written to the output (slot < 0) or as partials to
 * workspace slot `slot`; records ws_meta.  A piece must begin with a barrier
 * (scratch, and the previous piece's shared memory, may still be read). */
template <class C, class F>
FMQA_DEV void sched_run(const fmqa_decode_params &p, unsigned char *scratch, F &&piece) {
    const sched_range w = sched_locate<C>(p, scratch);
    const int hrn = p.num_kv_heads * C::ROW_BLOCKS;
    int b = w.b, len = w.len;
    long long u_b = w.u_b;
    /* An empty range (U < P) inside a segment still owes it a piece: an empty
     * one (o = 0, lse = -inf), since the combine reads the slots of every CTA
     * from the segment's first to its last. */
    if (w.lo == w.hi && INVARIANT) return;
    for (long long u = w.lo;;) {
        const seq_view s = seq_view_of(p, len);
        const seq_units su = units_of<C>(s);
        const int hr = (int)((u - u_b) / su.units);
        const long long seg = u_b + (long long)hr * su.units; /* the segment's first unit */
        const int k0 = (int)(u - seg);
        const int k1 = INVARIANT ? k0 + 1 : (int)(min(w.hi, seg + su.units) - seg);
        if (k1 == k0 && k0 == 0) return; /* empty, at a segment's start: owes nothing */
        const bool whole = k0 == 0 && k1 == su.units;
        const long long j = (long long)b * hrn + hr;
        const long long slot = whole ? -1 : INVARIANT ? u : blockIdx.x + j;
        if (k0 == 0 && threadIdx.x == 0 && p.num_splits > 1) {
            p.ws_meta[2 * j] = whole ? 0 : (int)slot;
            p.ws_meta[2 * j + 1] = whole ? 1 : INVARIANT ? su.units
                                                         : (int)(cta_of(seg + su.units - 1, w.total) - blockIdx.x + 1);
        }
        piece(s, b, hr / C::ROW_BLOCKS, hr % C::ROW_BLOCKS, k0 * su.per, min(s.nvirt, k1 * su.per), slot);
        u = seg + k1;
        if (u >= w.hi) return;
        if (k1 == su.units && hr + 1 == hrn) {
            u_b = u;
            len = seq_len<C::PS>(p, ++b);
        }
    }
}

/* The combine's CTA for output row blockIdx.x = (b, t, h) and column slice
 * blockIdx.y (fmqa_combine.cuh's combine_row over the segment's pieces, DV
 * values a row, HPK query heads a KV head); rows of a segment that was not
 * split were written by the kernel: their CTAs return at once.  Called after
 * the kernel's grid has ended (pdl_wait).  merged(row, lse2): what a template
 * keeps of a merged row's base-2 LSE besides the LSE output (decode's scores),
 * called by one thread of the row's first slice. */
template <class C, int DV, int HPK, class Merged>
FMQA_DEV void sched_combine(const fmqa_decode_params &p, unsigned char *smem, Merged merged) {
    const int row = blockIdx.x;
    const int h = row % p.num_q_heads, t = row / p.num_q_heads % Q_TOKENS;
    const int b = row / (p.num_q_heads * Q_TOKENS);
    const int r = t * HPK + h % HPK, rloc = r % C::ROWS;
    const long long j = ((long long)b * p.num_kv_heads + h / HPK) * C::ROW_BLOCKS + r / C::ROWS;
    const uint2 m = *(const uint2 *)(p.ws_meta + 2 * j); /* one load: (first slot, pieces) */
    const int first = (int)m.x, n = (int)m.y;
    if (n <= 1) return;
    u16 *o = (u16 *)p.o + b * p.o_sb + t * p.o_st + h * p.o_sh;
    const long long at = (long long)first * C::ROWS + rloc;
    const float sink2 = p.sinks ? p.sinks[h] * LOG2E : neg_inf(); /* joins the denominator here */
    const float lse2 = combine_row<DV, OUT_BF16>(p.ws_o + at * DV, (long long)C::ROWS * DV, p.ws_lse + at, C::ROWS, n,
                                                sink2, o, smem);
    if (threadIdx.x == 0 && blockIdx.y == 0) {
        if (LSE) p.lse[row] = lse2 * 0.69314718055994531f;
        merged(row, lse2);
    }
}

#undef FMQA_DEV

} /* namespace fmqa_dev */

#endif
