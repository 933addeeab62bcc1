/*
 * decode_scores.cuh -- heavy-hitter scores of decode (FMQA_FLAG_SCORES): the
 * hook decode's tile loop calls and the epilogue kernel fmqa_decode_scores.
 * Included by decode.cuh (it uses its constants, seq_view, pos_of, slot_of);
 * with SCORES = 0 the hook compiles to nothing and the epilogue is empty.
 *
 * Position j of KV head hk receives sum_r 2^(x_rj - L_r) over the M = GROUP *
 * Q_TOKENS rows r of hk (x: base-2 logit, soft-capped where SOFTCAP; L_r: the
 * row's final base-2 log-sum-exp over every piece of its segment and the
 * learned sink).  L_r is known only after the last piece of the segment, and
 * the sum over r weights each row by its own L_r, so it cannot be formed while
 * the tiles stream by.  The decode kernel therefore leaves what it has: each
 * row's logits, as floats, in ws_x [b, hk, r, sc_nv] (v: the position's
 * virtual index, "KV order" in decode.cuh), whichever piece of the persistent
 * schedule reads them (pieces start and end at any position, so a logit is
 * kept alone, never relative to a running maximum a neighbouring piece does
 * not share).  The final L_r goes to ws_sl [b, t, h]: from store_rows for a
 * segment one piece covers, from fmqa_decode_combine for a split one.  The
 * epilogue, launched after decode and its combine, adds sum_r 2^(x_rj - L_r)
 * into the caller's buffer: one thread per (b, hk, position), rows in a fixed
 * order, no atomics, so the result is deterministic.
 *
 * Cost per cached position and KV head: decode writes 4 M bytes, the epilogue
 * reads them and reads and writes the 4-byte score: 8 M + 8 bytes beside the
 * 2 D EB bytes of K and V decode reads (512 at d = 128, f16).  fastmqa-bench
 * static prints it per problem (docs/kernels.md, "Scores").
 */

/* Where a warp's rows keep their logits: the ws_x row of its first m-tile's
 * first row, and that row's index r0 among the KV head's M rows. */
struct score_rows {
    long long row0;
    int r0;
};

DEV score_rows score_rows_of(int b, int hk, int r0, const fmqa_decode_params &p) {
    return {((long long)b * p.num_kv_heads + hk) * M + r0, r0};
}

/* Keeps the warp's logits of one tile (sacc as warp_tile holds them: masked
 * positions -inf), columns [v_warp, v_warp + WN) of virtual positions, those
 * before v_end; rows past M are padding and keep nothing. */
DEV void scores_keep(const fmqa_decode_params &p, const score_rows &sr, int v_warp, int v_end,
                     const float (&sacc)[MT][NT_S][4]) {
    const int lane = threadIdx.x & 31, cq = lane & 3;
#pragma unroll
    for (int i = 0; i < MT; ++i)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const int dr = i * 16 + (lane >> 2) + 8 * h;
            if (sr.r0 + dr >= M) continue;
            float *x = p.ws_x + (sr.row0 + dr) * p.sc_nv;
#pragma unroll
            for (int nt = 0; nt < NT_S; ++nt)
#pragma unroll
                for (int e = 0; e < 2; ++e) {
                    const int v = v_warp + nt * 8 + 2 * cq + e;
                    if (v < v_end) x[v] = sacc[i][nt][2 * h + e];
                }
        }
}

/* Epilogue: grid (ceil(sc_nv / SC_THREADS), num_kv_heads, batch), M floats of
 * shared memory (decode.lua). */
constexpr int SC_THREADS = 128;

extern "C" __global__ void __launch_bounds__(SC_THREADS) fmqa_decode_scores(const fmqa_decode_params p) {
    extern __shared__ __align__(16) unsigned char smem[];
    if (!SCORES) return;
    float *L = (float *)smem; /* [M] final base-2 LSE of the KV head's rows */
    const int b = blockIdx.z, hk = blockIdx.y;
    for (int r = threadIdx.x; r < M; r += SC_THREADS)
        L[r] = p.ws_sl[(b * Q_TOKENS + r / GROUP) * p.num_q_heads + hk * GROUP + r % GROUP];
    __syncthreads();
    const seq_view s = seq_view_of(p, seq_len<PS>(p, b)); /* kv_lens is NULL with CSR */
    const int v = blockIdx.x * SC_THREADS + threadIdx.x;
    if (v >= s.nvirt) return;
    const long long first = ((long long)b * p.num_kv_heads + hk) * M;
    float acc = 0.0f;
    for (int r = 0; r < M; ++r)
        if (L[r] != neg_inf()) /* a row that sees nothing (and no sink) gives nothing */
            acc += ex2(p.ws_x[(first + r) * p.sc_nv + v] - L[r]);
    p.scores[b * p.sc_sb + hk * p.sc_sh + slot_of(p, s, pos_of(s, v))] += acc;
}
