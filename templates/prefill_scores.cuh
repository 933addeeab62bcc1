/*
 * prefill_scores.cuh -- observation-window scores of prefill (FMQA_FLAG_SCORES;
 * SnapKV, Li et al. 2024): the kernel fmqa_prefill_scores, launched after
 * fmqa_prefill_kernel.  Included by prefill.cuh (it uses its constants and
 * tile machinery); with SCORES = 0 the kernel is empty.
 *
 * Position j of KV head hk receives sum_r 2^(x_rj - L_r) over the window rows
 * r of hk: r = t * GROUP + g for the sequence's last w = min(sc_window, Tq)
 * new tokens t (x: base-2 logit, soft-capped where SOFTCAP; L_r: the row's
 * final base-2 log-sum-exp, learned sink included).  L_r is known only when
 * the CTA holding row r has walked all of its tiles, and a KV position's mass
 * sums rows that several row blocks (CTAs) hold, so the main kernel only
 * leaves each window row's L_r in the workspace (ws_sl [total_q, h], from
 * store_rows) and this kernel makes a second pass over K: one CTA per (KV
 * tile, KV head, sequence) recomputes the window rows' logits of its tile
 * with the main kernel's tile_logits (the same masks, scales and caps),
 * BLOCK_M rows at a time, and sums 2^(x - L) over the rows: within a thread,
 * over the 8 row groups of a warp by shuffles, over the warps through shared
 * memory, in a fixed order, so the result is bitwise repeatable without
 * atomics.  Each position has one owning thread, which adds its sum to the
 * caller's buffer at slot j.
 *
 * Why a second pass rather than decode's logits workspace (decode_scores.cuh):
 * keeping the logits costs 4 bytes per (window row, position) written and
 * read again, 8 w GROUP bytes per position and KV head (2 KB at w = 32, G =
 * 8), against the D EB bytes of K the second pass reads (256 at d = 128, f16);
 * its recomputed MACs are w / Tq of the prefill's own.  The workspace holds
 * only the LSEs: 4 bytes per (row of q, head).  The window's Q rows (w G D 2
 * bytes a KV head, 64 KB at w = 32, G = 8, d = 128) are re-read by every KV
 * tile's CTA, from L2.  fastmqa-bench static --scores prints the figures.
 *
 * Tiles: those the window rows' CTA would read (tile_range_make over the
 * window rows), so a position no window row may see -- behind a sliding
 * window, past the sinks -- is never read; tiles outside that range exit.
 */

/* fmqa_prefill_scores' shared memory: the Q rows of a chunk, one stage (its
 * V rows unused), the chunk rows' L, the warps' column sums and the CTA's
 * running column sums.  Must equal prefill.lua's scores_shared_bytes(). */
constexpr int SC_SMEM_BYTES = Q_BYTES + STAGE_BYTES + (BLOCK_M + (WARPS + 1) * BLOCK_N) * 4;

/* The window rows' masses in the warp's logits of one tile, summed over its
 * rows into part[column] (L: the final LSE of the chunk's rows, -inf for a
 * row that scores nothing). */
DEV void warp_masses(const float (&sacc)[MT][NT_S][4], const float *L, float *part) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
#pragma unroll
    for (int nt = 0; nt < NT_S; ++nt)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
            float v = 0.0f;
#pragma unroll
            for (int mt = 0; mt < MT; ++mt)
#pragma unroll
                for (int h = 0; h < 2; ++h) {
                    const float l = L[warp * 16 * MT + mt * 16 + (lane >> 2) + 8 * h];
                    if (l != neg_inf()) v += ex2(sacc[mt][nt][2 * h + e] - l);
                }
            v += shfl_xor(v, 4); /* the 8 lanes sharing the column */
            v += shfl_xor(v, 8);
            v += shfl_xor(v, 16);
            if (lane < 4) part[warp * BLOCK_N + nt * 8 + 2 * lane + e] = v;
        }
}

/* Grid (ceil(kv_len / BLOCK_N), num_kv_heads, batch), NTHREADS threads,
 * SC_SMEM_BYTES of dynamic shared memory (prefill.lua). */
extern "C" __global__ void __launch_bounds__(NTHREADS) fmqa_prefill_scores(const fmqa_prefill_params p) {
    extern __shared__ __align__(128) unsigned char smem[];
    if (!SCORES) return;
    if (dynamic_smem_size() < (u32)SC_SMEM_BYTES) __trap(); /* the launch disagrees with prefill.lua */
    const int hk = blockIdx.y, b = blockIdx.z, j0 = blockIdx.x * BLOCK_N;
    const seq_info s = seq_info_make(p, b);
    const int m = s.tq * GROUP, rw0 = max(s.tq - p.sc_window, 0) * GROUP;
    if (rw0 >= m) return; /* no new tokens */
    const tile_range tr = tile_range_make(p, s, rw0, m);
    if (!(j0 < tr.n_sink * BLOCK_N || (j0 >= tr.w0 && j0 < tr.end))) return; /* no window row reads it */
    unsigned char *qs = smem, *stage = smem + Q_BYTES;
    float *L = (float *)(stage + STAGE_BYTES), *part = L + BLOCK_M, *acc = part + WARPS * BLOCK_N;
    load_tile<false>(p, s, b, hk, j0, tr.end, stage);
    cp_async_commit();
    for (int c = threadIdx.x; c < BLOCK_N; c += NTHREADS) acc[c] = 0.0f;
    const u32 q_base = warp_q_base(qs);
    for (int r0 = rw0; r0 < m; r0 += BLOCK_M) {
        __syncthreads(); /* the previous chunk's Q, L and part are consumed */
        load_q(p, s, hk, r0, qs);
        for (int i = threadIdx.x; i < BLOCK_M; i += NTHREADS) {
            const int r = r0 + i;
            L[i] = r < m ? p.ws_sl[(long long)(s.q0 + r / GROUP) * p.num_q_heads + hk * GROUP + r % GROUP]
                         : neg_inf();
        }
        cp_async_wait<0>();
        __syncthreads(); /* Q, L and the K tile visible to all */
        int qpos[MT][2];
        row_positions(s, r0 + (threadIdx.x >> 5) * 16 * MT, qpos);
        float sacc[MT][NT_S][4];
        tile_logits(p, s, qpos, q_base, stage, j0, true, sacc);
        warp_masses(sacc, L, part);
        __syncthreads();
        for (int c = threadIdx.x; c < BLOCK_N; c += NTHREADS)
            for (int w = 0; w < WARPS; ++w) acc[c] += part[w * BLOCK_N + c];
    }
    /* acc[c] is this thread's own: no barrier before the adds */
    for (int c = threadIdx.x; c < BLOCK_N && j0 + c < s.kv_len; c += NTHREADS)
        p.scores[b * p.sc_sb + hk * p.sc_sh + j0 + c] += acc[c];
}
