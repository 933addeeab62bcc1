/*
 * decode_scores.cuh -- heavy-hitter scores of decode (FMQA_FLAG_SCORES): the
 * hook decode's tile loop calls and the epilogue kernel fmqa_decode_scores.
 * Included by decode.cuh (it uses its constants, seq_view, pos_of, slot_of);
 * with SCORES = 0 the hook compiles to nothing and the epilogue is empty.
 *
 * Position j of KV head hk receives sum_r 2^(x_rj - L_r) over the M = GROUP *
 * Q_TOKENS rows r of hk (x: base-2 logit, L_r: the row's final base-2
 * log-sum-exp, over every split).  L_r is known only after the last tile (and
 * after all splits), and the sum over r weights each row by its own L_r, so it
 * cannot be formed while the tiles stream by.  The decode kernel therefore
 * leaves what it already has: P_rj = 2^(x_rj - m), the probability relative to
 * its warp's running maximum m at that tile (computed anyway for P V), rounded
 * to f16, and m once per 16 positions.  The epilogue, launched after decode
 * (and its combine), forms L_r from the split LSEs (ws_lse) and adds
 * sum_r P_rj 2^(m_r - L_r) into the caller's buffer: one thread per (b, hk,
 * position), rows in a fixed order, no atomics, so the result is deterministic.
 *
 * Workspace (after the split partials): ws_lse [split, b, t, h] always (the
 * unsplit kernel writes its row LSE there too), ws_p [b, hk, r, NV] f16 and
 * ws_pm [b, hk, r, NV / 16] floats, NV = the most positions a sequence's
 * kernel reads (decode.lua eff_len) rounded up to 16.
 *
 * Cost per cached position and KV head: decode writes 2 M bytes (P) + M / 4
 * (bases); the epilogue reads those and reads and writes the 4-byte score:
 * 4.5 M + 8 bytes beside the 2 D EB bytes of K and V decode reads (512 at d =
 * 128, f16).  In decode's tile loop, per pair of probabilities: one 32-bit
 * store and, unless P is already f16 for the mma (16-bit f16 caches), one
 * f16x2 conversion.  fastmqa-bench static prints both per problem.
 */

/* Keeps one pair of a row's probabilities (columns col, col + 1 of the tile,
 * positions v, v + 1; p01 two f16) and, at the first column of each 16, the
 * warp's running maximum m they are relative to.  v is even, and a multiple
 * of 16 when col is (splits and tiles are multiples of 16 positions). */
DEV void scores_keep(const fmqa_decode_params &p, int v, int v_end, int col, int h, u32 p01, float m) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int r = blockIdx.y % ROW_BLOCKS * ROWS + warp % WARPS_M * 16 + (lane >> 2) + 8 * h;
    if (r >= M || v >= v_end) return;
    const long long row = ((long long)blockIdx.z * p.num_kv_heads + blockIdx.y / ROW_BLOCKS) * M + r;
    *(u32 *)(p.ws_p + row * p.sc_nv + v) = p01; /* v + 1 < sc_nv: sc_nv is even */
    if ((col & 15) == 0) p.ws_pm[row * (p.sc_nv / 16) + v / 16] = m;
}

/* Epilogue: grid (ceil(NV / SC_THREADS), num_kv_heads, batch), M floats of
 * shared memory (decode.lua). */
constexpr int SC_THREADS = 128;

extern "C" __global__ void __launch_bounds__(SC_THREADS) fmqa_decode_scores(const fmqa_decode_params p) {
    extern __shared__ __align__(16) unsigned char smem[];
    if (!SCORES) return;
    float *L = (float *)smem; /* [M] final base-2 LSE of the KV head's rows */
    const int b = blockIdx.z, hk = blockIdx.y;
    const int rows_all = p.batch * Q_TOKENS * p.num_q_heads;
    for (int r = threadIdx.x; r < M; r += SC_THREADS) {
        const int row = (b * Q_TOKENS + r / GROUP) * p.num_q_heads + hk * GROUP + r % GROUP;
        float mx = neg_inf(), sum = 0.0f;
        for (int s = 0; s < p.num_splits; ++s) mx = fmaxf(mx, p.ws_lse[(long long)s * rows_all + row]);
        const float base = mx == neg_inf() ? 0.0f : mx;
        for (int s = 0; s < p.num_splits; ++s) sum += ex2(p.ws_lse[(long long)s * rows_all + row] - base);
        L[r] = mx == neg_inf() ? neg_inf() : mx + __log2f(sum);
    }
    __syncthreads();
    const seq_view s = seq_view_make(p, b);
    const int v = blockIdx.x * SC_THREADS + threadIdx.x;
    if (v >= s.nvirt) return;
    const long long first = ((long long)b * p.num_kv_heads + hk) * M;
    float acc = 0.0f;
    for (int r = 0; r < M; ++r) {
        if (L[r] == neg_inf()) continue; /* a row that sees nothing gives nothing */
        const long long row = first + r;
        const float pr = h_to_f32<0>(p.ws_p[row * p.sc_nv + v]);
        acc += pr * ex2(p.ws_pm[row * (p.sc_nv / 16) + v / 16] - L[r]);
    }
    p.scores[b * p.sc_sb + hk * p.sc_sh + slot_of(p, s, pos_of(s, v))] += acc;
}
