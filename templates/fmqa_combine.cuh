/*
 * fmqa_combine.cuh -- the split-KV combine kernel shared by the attention
 * templates that write split partials (decode.cuh, mla_decode.cuh): the
 * partial O rows [split, b, t, h, D] and base-2 LSEs [split, b, t, h] of
 * fmqa_decode_params.ws_o / ws_lse become o (and lse).
 *
 * The including template defines, before including this file: D (the width
 * of an output row), Q_TOKENS, OUT_BF16 and LSE (its problem defines), the
 * DEV qualifier macro, and `using namespace fmqa_dev`.  The launch rules
 * (grid, C_SMEM_BYTES) are those of decode.lua's combine_slices() and
 * combine_shared_bytes(), repeated in every Lua file that launches it.
 */
#ifndef FMQA_COMBINE_CUH
#define FMQA_COMBINE_CUH

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

#endif /* FMQA_COMBINE_CUH */
