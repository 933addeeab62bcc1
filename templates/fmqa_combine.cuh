/*
 * fmqa_combine.cuh -- the split-KV combine, shared by the attention templates
 * that split a sequence's keys across CTAs (decode.cuh; MLA decode may reuse
 * it): one output row merged from n partial results.
 *
 * A partial s of a row is its output normalised by its own softmax sum, o_s
 * (fp32, DV columns), and lse_s = m_s + log2(l_s) in base 2 (-inf and o_s = 0
 * when it saw nothing).  The merge is o = sum_s 2^(lse_s - L) o_s / sum_s
 * 2^(lse_s - L), L = max_s lse_s.  A CTA of FMQA_C_THREADS threads takes one
 * row and one of gridDim.y equal slices of its DV / 4 float4 columns.  Thread
 * (group g, column c) walks the partials g, g + groups, ... in batches of
 * FMQA_C_BATCH: every load of a batch (lse and o of each partial) is issued
 * before any is used, and a running maximum rescales what came before (online
 * softmax), so one batch is one round trip whatever n is.  The groups then
 * meet in shared memory.  No load is guarded by its weight: an empty partial
 * wrote o = 0 and lse = -inf, whose weight 2^(-inf - base) is 0, and base is 0
 * when every lse is -inf, so nothing here makes a NaN.  The order of every
 * sum depends on n and gridDim.y only (a batch-invariant caller fixes both by
 * the sequence).
 *
 * Needs fmqa_device.cuh (cp.async, ex2, shuffles, f32_to_h, softmax_finish).
 */
#ifndef FMQA_COMBINE_CUH
#define FMQA_COMBINE_CUH

namespace fmqa_dev {

#define FMQA_DEV __device__ __forceinline__

constexpr int FMQA_C_THREADS = 128;
constexpr int FMQA_C_BATCH = 8;

/* Dynamic shared memory of a combine CTA: one float per warp, a float4 per
 * thread, and per thread the landing slots of a batch (a float4 and a float
 * each).  A template's Lua file must give the same figure. */
constexpr int FMQA_C_SMEM_BYTES =
    4 * (FMQA_C_THREADS / 32) + 16 * FMQA_C_THREADS * (FMQA_C_BATCH + 1) + 4 * FMQA_C_THREADS * FMQA_C_BATCH;

/* x reduced over the CTA with max or +; red holds one value per warp. */
template <bool MAX> FMQA_DEV float combine_reduce(float x, float *red) {
#pragma unroll
    for (int k = 16; k > 0; k >>= 1) {
        const float y = shfl_xor(x, k);
        x = MAX ? fmaxf(x, y) : x + y;
    }
    if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = x;
    __syncthreads();
    x = red[0];
#pragma unroll
    for (int w = 1; w < FMQA_C_THREADS / 32; ++w) x = MAX ? fmaxf(x, red[w]) : x + red[w];
    __syncthreads(); /* red is reused by the next reduction */
    return x;
}

FMQA_DEV float combine_base(float m) { return m == neg_inf() ? 0.0f : m; }

/* Programmatic dependent launch, sm_90+ (fmqa_ptx.cuh's griddepcontrol): the
 * producer of the partials lets its dependent grid (the combine, launched with
 * programmatic stream serialization) start launching while it runs; the
 * combine waits for the producer's end before it reads a partial.  Below
 * sm_90 the runtime launches the combine in plain stream order and both are
 * nothing. */
FMQA_DEV void pdl_launch_dependents() {
#if __CUDA_ARCH__ >= 900
    griddep_launch_dependents();
#endif
}

FMQA_DEV void pdl_wait() {
#if __CUDA_ARCH__ >= 900
    griddep_wait();
#endif
}

/* Merges the n >= 1 partials of one row: partial s has its o at o + s *
 * o_stride floats (16-byte aligned, o_stride a multiple of 4) and its lse at
 * lse[s * lse_stride]; sink2 is a learned sink logit in base 2 that joins the
 * denominator and carries no value (-inf: none; softmax_finish).  Writes this
 * CTA's column slice of the merged row to out (DV 16-bit values, 8-byte
 * aligned; BF16 chooses bf16) and returns the row's lse in base 2 (-inf when
 * no partial saw anything and there is no sink), the same in every thread.  smem: FMQA_C_SMEM_BYTES, 16-byte aligned.  Every thread of
 * the CTA must call it (it has barriers). */
template <int DV, int BF16>
FMQA_DEV float combine_row(const float *o, long long o_stride, const float *lse, long long lse_stride, int n,
                           float sink2, u16 *out, unsigned char *smem) {
    constexpr int COLS = DV / 4;
    float *red = (float *)smem;                          /* [warps] reductions */
    /* [FMQA_C_THREADS] group sums, then [FMQA_C_THREADS][FMQA_C_BATCH] float4
     * and float landing slots of the partial loads; 16-byte aligned */
    float4 *part = (float4 *)(red + FMQA_C_THREADS / 32);
    const int tid = threadIdx.x;
    const int cols = COLS / gridDim.y;                   /* float4 columns a CTA */
    const int groups = FMQA_C_THREADS / cols;
    const int g = tid / cols, c = tid - g * cols;
    const bool on = g < groups;                          /* DV = 96 leaves a few out */

    float m = neg_inf(), wsum = 0.0f;
    float4 acc = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    const float4 *src = (const float4 *)o + blockIdx.y * cols + c;
    const long long stride4 = o_stride / 4;              /* float4s per partial */
    const float4 *vbuf = part + FMQA_C_THREADS + tid * FMQA_C_BATCH; /* this thread's landing slots */
    const float *lbuf = (const float *)(part + FMQA_C_THREADS * (FMQA_C_BATCH + 1)) + tid * FMQA_C_BATCH;
    for (int s0 = on ? g : n; s0 < n; s0 += groups * FMQA_C_BATCH) {
        /* cp.async, not loads: the compiler may not sink a copy below the
         * first use of another, so the whole batch is in flight at once.
         * Partials past n copy nothing (zeros). */
#pragma unroll
        for (int u = 0; u < FMQA_C_BATCH; ++u) {
            const int s = min(s0 + u * groups, n - 1), k = s0 + u * groups < n;
            cp_async16(smem_addr(vbuf + u), src + s * stride4, 16 * k);
            cp_async4(smem_addr(lbuf + u), lse + s * lse_stride, 4 * k);
        }
        cp_async_commit();
        cp_async_wait<0>(); /* a thread reads only its own slots: no barrier */
        float l[FMQA_C_BATCH], mx = m;
#pragma unroll
        for (int u = 0; u < FMQA_C_BATCH; ++u) {
            l[u] = s0 + u * groups < n ? lbuf[u] : neg_inf();
            mx = fmaxf(mx, l[u]);
        }
        const float base = combine_base(mx), f = ex2(m - base);
        m = mx;
        wsum *= f;
        acc.x *= f, acc.y *= f, acc.z *= f, acc.w *= f;
#pragma unroll
        for (int u = 0; u < FMQA_C_BATCH; ++u) {
            const float w = ex2(l[u] - base);
            const float4 v = vbuf[u];
            wsum += w;
            acc.x += w * v.x, acc.y += w * v.y, acc.z += w * v.z, acc.w += w * v.w;
        }
    }
    /* Every group to the CTA's maximum L, then the sums. */
    const float L = combine_reduce<true>(m, red);
    const float f = ex2(m - combine_base(L));
    acc.x *= f, acc.y *= f, acc.z *= f, acc.w *= f;
    part[tid] = acc;
    wsum = combine_reduce<false>(on && c == 0 ? wsum * f : 0.0f, red); /* its barriers publish part */
    float inv, lse2; /* with the learned sink, if any, in the denominator */
    softmax_finish(L, wsum, sink2, inv, lse2);
    if (g == 0) {
        for (int k = 1; k < groups; ++k) {
            const float4 x = part[k * cols + c];
            acc.x += x.x, acc.y += x.y, acc.z += x.z, acc.w += x.w;
        }
        const u32 lo = f32_to_h<BF16>(acc.x * inv) | (u32)f32_to_h<BF16>(acc.y * inv) << 16;
        const u32 hi = f32_to_h<BF16>(acc.z * inv) | (u32)f32_to_h<BF16>(acc.w * inv) << 16;
        *(uint2 *)(out + 4 * (blockIdx.y * cols + c)) = make_uint2(lo, hi);
    }
    return lse2;
}

#undef FMQA_DEV

} /* namespace fmqa_dev */

#endif /* FMQA_COMBINE_CUH */
