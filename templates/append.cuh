/*
 * append.cuh -- the KV-append kernel: writes n_new new tokens per sequence into
 * a K/V cache (contiguous, paged or ring), applying RoPE to K (and, when p.q is
 * not NULL, to Q in place) and converting to the cache type: f16/bf16 by
 * round-to-nearest-even, int8/fp8 e4m3 by per-(token, head) quantization.
 * RoPE rotates ROPE_DIM elements of a row (partial rotary): the first ones, or
 * with LATENT (an MLA latent cache: one K row of latent + rope part per token,
 * no V rows, q rows holding only the rope part) the last ones; a latent row's
 * rope part may come from its own tensor (p.k_pe_new, k_new rows then hold
 * the latent alone).
 * It computes fmqa_append of include/fastmqa.h; ref_append in reference/ref.h is
 * its float64 definition.
 *
 * Work split.  The grid enumerates "rows" of head_dim elements, in three
 * consecutive regions: every K row (b, t, hk), then every V row, then every Q
 * row (b, t, h), the last only with RoPE (append.lua launches none without
 * it; rows past the end exit); the head index is fastest, so neighbouring
 * groups touch neighbouring memory and a region boundary is the only place a
 * warp diverges.
 * A group of THREADS_PER_ROW consecutive lanes owns one row.  A row is a plain
 * part and a rotated part of R elements (R = 0 for V and without RoPE); the
 * plain part is cut into chunks of VEC elements, the rotated part into two
 * halves of R/2 and each half into chunks; lane l owns chunks l, l +
 * THREADS_PER_ROW, ... of the plain part and of BOTH halves, so the NEOX
 * partners (i, i + R/2) and the GPTJ partners (2i, 2i + 1) are always in the
 * same thread.
 * Loads are VEC*2 bytes (16 for VEC = 8), stores VEC*2 or VEC bytes.
 *
 * Numerics (what ref_append must match):
 *  - inputs are f16/bf16, decoded exactly to fp32; everything is fp32 after.
 *  - angle of pair i at position pos, as half turns: t = pos * f[i] with
 *    f[i] = theta^(-2i/R) / pi, both in double (f once per CTA into shared
 *    memory, as exp(-2i/R * log(theta)) / pi: ~1e-15 relative).  The whole turns
 *    are dropped exactly (r = t - 2 * rint(t / 2), |r| <= 1, Sterbenz), then
 *    (sin, cos) = sincospif((float)r): <= 1 ulp, and its argument reduction is
 *    exact, so there is no Payne-Hanek slow path and no local memory.  Error
 *    against the exact angle pos * theta^(-2i/D): ~(1.5e-15 * t + 2^-24) * pi
 *    rad (f's double error, then the float r), i.e. ~2e-7 rad at pos 1e5 and
 *    ~3e-6 rad at pos 2^31 -- far inside fp16
 *    tolerance at every position, unlike an fp32 angle (pos * freq rounded to
 *    float errs by up to ~1.2e-7 * pos rad: 1.2e-2 rad at pos 1e5).  Cost: ~5
 *    double operations per pair, small next to the row's memory traffic on
 *    sm_80/90 (they are 1/64-rate on sm_86/89 parts).
 *  - with the caller's table (p.rope_cs, uniform over the grid) the pair's
 *    cos and sin are the floats of row pos, as given: no angle error of ours.
 *  - rotation (a, b) -> (a cos - b sin, b cos + a sin) in fp32 (FMA contraction
 *    allowed: ~1e-7 relative).  There is no intermediate rounding of K to 16
 *    bits: the f16/bf16 inputs are exact in fp32, the result is rounded once.
 *  - 16-bit cache / Q: the fp32 result rounded to nearest even (overflow: inf).
 *  - 8-bit cache: from the fp32 rotated values (no 16-bit rounding in between)
 *    amax = max|x|, scale = fl32(amax / QMAX) (QMAX 127 int8, 448 fp8), stored
 *    as the row's scale; code = encode(x / scale) of the exact quotient
 *    (quantize()), encode = rint + clamp to [-127, 127] (int8) or RNE
 *    saturating to +-448 (fp8 e4m3).  A zero row (or one whose scale
 *    underflows to 0) gets scale 0 and zero codes.  So for given x the scale
 *    and codes are those of ref_quantize_row bit for bit; rotated rows differ
 *    from the reference only through x (codes at ties of the reference's x /
 *    scale, scale by the rotation error).  Rows holding NaN/inf: unspecified.
 *    FIXED_SCALE (per-head or per-tensor scales, fmqa_kv_scale_granularity):
 *    scale is the caller's (the runtime zeroes the strides the granularity
 *    ignores, so the per-token address finds it), read and never written;
 *    codes as above, saturating; a scale <= 0 or NaN stores zero codes.
 *
 * Without new tokens (p.k_new NULL) the K and V rows exit at once and the
 * call only rotates q.
 *
 * Placement.  pos = start_pos[b] + t (RoPE at rope_pos[b] + t when given).  RING: slot = pos if pos < sinks, else
 * sinks + (pos - sinks) % window; a token that a later token of the same call
 * overwrites (t + window < n_new, pos >= sinks) is not written, so the result
 * is that of writing the tokens in order.  PAGED: page_table[b * pt_stride +
 * slot / PAGE_SIZE] names the block (page), slot % PAGE_SIZE the row in it;
 * CSR: page_indices[page_indptr[b] + slot / PAGE_SIZE] names it; SLOT_MAP:
 * slot_mapping[b * n_new + t] is the slot of the whole cache instead
 * (page slot / PAGE_SIZE), -1 = nothing written (vLLM's reshape_and_cache).
 * Rows with a negative position, a position at or past the table's length
 * (p.rope_cs_len, with a table), or a negative page entry, are left untouched
 * (cheap guards against corrupting memory; the kernel cannot report errors).
 * The kernel cannot bound slots by the cache capacity: the caller must.
 *
 * Preconditions the host checks (runtime/Lua): every row start (pointer +
 * strides) is aligned to VEC elements of its type; window > 0 with RING;
 * batch * n_new * (2 * Hkv + H) < 2^31 (32-bit row index).
 *
 * Defines (from append.lua): HEAD_DIM, HEAD_DIM_V, IN_BF16 (0/1: dtype of
 * k_new, v_new and q), KV_FMT (fmqa_dtype code of the cache: 1 f16, 2 bf16,
 * 4 int8, 5 fp8 e4m3), ROPE (fmqa_rope: 0 none, 1 neox, 2 gptj), ROPE_DIM
 * (rotated elements of a K row, 0 without RoPE), LATENT (0/1), PAGED,
 * PAGE_SIZE, CSR, SLOT_MAP (0/1: how pages are found, see Placement), RING,
 * FIXED_SCALE (0/1), and the tunables THREADS_PER_ROW,
 * ROWS_PER_CTA, VEC.
 */
#include "fmqa_params.h"
#include "fmqa_device.cuh"

#if defined(__USE_FAST_MATH__) && __USE_FAST_MATH__ /* NVRTC defines it as 0 without the option */
#error "append.cuh: RoPE and quantization need the accurate sincospif and IEEE division; compile without --use_fast_math"
#endif
#if !defined(HEAD_DIM) || !defined(HEAD_DIM_V) || !defined(IN_BF16) || !defined(KV_FMT) || \
    !defined(ROPE) || !defined(PAGED) || !defined(PAGE_SIZE) || !defined(RING) ||            \
    !defined(FIXED_SCALE) || !defined(THREADS_PER_ROW) || !defined(ROWS_PER_CTA) ||            \
    !defined(VEC) || !defined(ROPE_DIM) || !defined(LATENT) || !defined(CSR) ||                \
    !defined(SLOT_MAP)
#error "append.cuh: a define from append.lua is missing"
#endif

#define FMT_F16 1
#define FMT_BF16 2
#define FMT_INT8 4
#define FMT_FP8 5
#define IN_FMT (IN_BF16 ? FMT_BF16 : FMT_F16)
#define PAGE_ROWS (PAGED ? PAGE_SIZE : 1) /* keeps / and % legal when not PAGED */

static_assert(VEC == 2 || VEC == 4 || VEC == 8, "VEC must be 2, 4 or 8");
static_assert(THREADS_PER_ROW >= 1 && THREADS_PER_ROW <= 32 &&
              (THREADS_PER_ROW & (THREADS_PER_ROW - 1)) == 0,
              "THREADS_PER_ROW must be a power of two <= 32 (a group never straddles warps)");
static_assert((ROPE == 0) == (ROPE_DIM == 0) && ROPE_DIM % 4 == 0 && ROPE_DIM <= HEAD_DIM,
              "ROPE_DIM: the rotated elements of a K row, 0 exactly without RoPE");
static_assert((HEAD_DIM - ROPE_DIM) % VEC == 0 && (ROPE_DIM / 2) % VEC == 0 &&
              (LATENT ? ((HEAD_DIM - HEAD_DIM_V) / 2) % VEC == 0 : HEAD_DIM_V % VEC == 0),
              "VEC must divide the plain part and half the rotated part of every row (a latent "
              "row's rope part is its second part even without RoPE)");
static_assert(!LATENT || ROPE_DIM == 0 || ROPE_DIM == HEAD_DIM - HEAD_DIM_V,
              "a latent row rotates its rope part, the elements after the latent");
static_assert(KV_FMT == FMT_F16 || KV_FMT == FMT_BF16 || KV_FMT == FMT_INT8 || KV_FMT == FMT_FP8,
              "KV_FMT must be an fmqa_dtype code of a cache type");
static_assert(ROPE >= 0 && ROPE <= 2, "ROPE must be 0, 1 or 2");
static_assert(!PAGED || (PAGE_SIZE >= 16 && (PAGE_SIZE & (PAGE_SIZE - 1)) == 0),
              "PAGE_SIZE must be a power of two >= 16");

/* ------------------------------------------------------------ storage */

/* Raw vector of BYTES bytes, so that one load/store moves a whole chunk. */
template <int BYTES> struct raw_vec;
template <> struct raw_vec<16> { typedef uint4 type; };
template <> struct raw_vec<8> { typedef uint2 type; };
template <> struct raw_vec<4> { typedef unsigned int type; };
template <> struct raw_vec<2> { typedef unsigned short type; };

template <int N, typename T>
static __device__ __forceinline__ void copy_vec(T *dst, const T *src)
{
    typedef typename raw_vec<N * (int)sizeof(T)>::type R;
    *reinterpret_cast<R *>(dst) = *reinterpret_cast<const R *>(src);
}

/* Element storage of a format: bit patterns for 16-bit, codes for 8-bit. */
template <int FMT> struct fmt_traits { typedef unsigned short storage; };
template <> struct fmt_traits<FMT_INT8> { typedef unsigned char storage; };
template <> struct fmt_traits<FMT_FP8> { typedef unsigned char storage; };

static __device__ __forceinline__ float decode16(unsigned short bits)
{
    return fmqa_dev::h_to_f32<IN_BF16>(bits);
}

template <int FMT>
static __device__ __forceinline__ unsigned short encode16(float x)
{
    return fmqa_dev::f32_to_h<FMT == FMT_BF16>(x);
}

/* x is already divided by the scale. */
template <int FMT>
static __device__ __forceinline__ unsigned char encode8(float x)
{
    if (FMT == FMT_INT8)
        return (unsigned char)(signed char)(int)fminf(fmaxf(rintf(x), -127.0f), 127.0f);
    return fmqa_dev::f32_to_e4m3(x);
}

/* The code of the exact quotient q = x / sc, as ref_quantize_row rounds it.
 * r = fl32(q) is the float nearest q and every tie of the code grid is a float,
 * so no tie lies strictly between q and r: r encodes as q does unless r is
 * itself a tie (frequent with 16-bit inputs: x * QMAX / amax is often exactly
 * k + 1/2 while sc = fl32(amax / QMAX) is not exact).  Then r moves one float
 * toward q, whose side the residual x - r * sc (exact with an FMA) tells. */
template <int FMT>
static __device__ __forceinline__ unsigned char quantize(float x, float sc)
{
    float r = __fdiv_rn(x, sc);
    /* r in units of the code spacing: 1 for int8, 2^(E - 3) for e4m3 with E
     * the exponent of r, at least -6 (the subnormal spacing 2^-9); |r| <= ~449
     * keeps the power of two 2^(3 - E) normal. */
    const int E = max(((__float_as_int(r) >> 23) & 0xff) - 127, -6);
    const float m = FMT == FMT_INT8 ? r : r * __int_as_float((127 + 3 - E) << 23);
    if (fabsf(m - truncf(m)) == 0.5f) {
        const float e = fmaf(-r, sc, x);
        if (e != 0.0f) /* r != 0 at a tie: one float up or down in magnitude */
            r = __int_as_float(__float_as_int(r) + ((e > 0.0f) == (r > 0.0f) ? 1 : -1));
    }
    return encode8<FMT>(r);
}

/* ------------------------------------------------------------ one row */

/* A segment of N elements in chunks of VEC: lane l of a THREADS_PER_ROW group
 * owns chunks l, l + THREADS_PER_ROW, ...  slots sizes its arrays (at least 1:
 * C++ has no empty arrays; an empty segment has no passes). */
template <int N> struct seg {
    static constexpr int chunks = N / VEC;
    static constexpr int iters = (chunks + THREADS_PER_ROW - 1) / THREADS_PER_ROW;
    static constexpr int slots = iters > 0 ? iters : 1;
};

template <int N>
static __device__ __forceinline__ bool chunk_valid(int lane, int it)
{
    return seg<N>::chunks % THREADS_PER_ROW == 0 || lane + it * THREADS_PER_ROW < seg<N>::chunks;
}

/* The fp32 values a lane holds of a row of D elements whose R rotated ones
 * start at element ROT_AT (0 or D - R) and whose D - R plain ones fill the
 * rest: plain[it][e] is plain element (lane + it * THREADS_PER_ROW) * VEC + e,
 * rot[it][half][e] rotated element half * R/2 + (lane + it * THREADS_PER_ROW)
 * * VEC + e, so that the NEOX partners (i, i + R/2) and the GPTJ partners
 * (2i, 2i + 1) are always in the same thread.  Chunks past a segment hold
 * zeros, which leave max|x| unchanged. */
template <int D, int R, int ROT_AT> struct row_regs {
    static_assert(R >= 0 && R <= D && (ROT_AT == 0 || ROT_AT == D - R), "rotated part");
    static constexpr int plain_at = ROT_AT == 0 ? R : 0;
    typedef seg<D - R> P;
    typedef seg<R / 2> H;
    float plain[P::slots][VEC];
    float rot[H::slots][2][VEC];
};

/* VEC 16-bit values at src (zeros for an invalid chunk), decoded to fp32. */
static __device__ __forceinline__ void load_chunk(const unsigned short *src, bool valid,
                                                  float (&x)[VEC])
{
    __align__(16) unsigned short raw[VEC];
    if (valid)
        copy_vec<VEC>(raw, src);
#pragma unroll
    for (int e = 0; e < VEC; ++e)
        x[e] = valid ? decode16(raw[e]) : 0.0f;
}

/* The plain elements come from the row at src, the R rotated ones from rot
 * (src + ROT_AT, or a latent row's rope part held apart: p.k_pe_new). */
template <int D, int R, int ROT_AT>
static __device__ __forceinline__ void load_row(const unsigned short *src,
                                                const unsigned short *rot, int lane,
                                                row_regs<D, R, ROT_AT> &w)
{
    typedef row_regs<D, R, ROT_AT> W;
#pragma unroll
    for (int it = 0; it < W::P::iters; ++it) {
        const int c = lane + it * THREADS_PER_ROW;
        load_chunk(src + W::plain_at + c * VEC, chunk_valid<D - R>(lane, it), w.plain[it]);
    }
#pragma unroll
    for (int it = 0; it < W::H::iters; ++it) {
        const int c = lane + it * THREADS_PER_ROW;
#pragma unroll
        for (int half = 0; half < 2; ++half)
            load_chunk(rot + half * (R / 2) + c * VEC, chunk_valid<R / 2>(lane, it),
                       w.rot[it][half]);
    }
}

/* Where the angles come from: the caller's table row at the position (cs:
 * cos of the R/2 pairs, then their sin), or theta's frequencies in half turns
 * per position (freq) and the position. */
struct rope_src {
    const float *cs;
    const double *freq;
    double pos;
};

static __device__ __forceinline__ void rotate_pair(float &a, float &b, const rope_src &rs,
                                                   int half_r, int i)
{
    float s, c;
    if (rs.cs) {
        c = rs.cs[i];
        s = rs.cs[half_r + i];
    } else {
        const double t = rs.pos * rs.freq[i];
        sincospif((float)fma(-2.0, rint(0.5 * t), t), &s, &c);
    }
    const float ra = a * c - b * s;
    const float rb = b * c + a * s;
    a = ra;
    b = rb;
}

/* RoPE on the rotated part of a row held as load_row left it.  NEOX pairs
 * element e of a chunk with the same element of the other half; GPTJ pairs
 * neighbours inside a chunk (VEC is even), pair index = element index / 2. */
template <int MODE, int D, int R, int ROT_AT>
static __device__ __forceinline__ void rope_row(int lane, const rope_src &rs,
                                                row_regs<D, R, ROT_AT> &w)
{
#pragma unroll
    for (int it = 0; it < row_regs<D, R, ROT_AT>::H::iters; ++it) {
        const int c = lane + it * THREADS_PER_ROW;
        if (MODE == 0 || !chunk_valid<R / 2>(lane, it))
            continue;
        if (MODE == 1) {
#pragma unroll
            for (int e = 0; e < VEC; ++e)
                rotate_pair(w.rot[it][0][e], w.rot[it][1][e], rs, R / 2, c * VEC + e);
        } else {
#pragma unroll
            for (int half = 0; half < 2; ++half)
#pragma unroll
                for (int m = 0; m < VEC / 2; ++m)
                    rotate_pair(w.rot[it][half][2 * m], w.rot[it][half][2 * m + 1], rs, R / 2,
                                (half * (R / 2) + c * VEC) / 2 + m);
        }
    }
}

/* Lanes of the calling thread's row group, for the shuffles. */
static __device__ __forceinline__ unsigned group_mask(void)
{
    return (0xffffffffu >> (32 - THREADS_PER_ROW)) << (threadIdx.x % 32 / THREADS_PER_ROW * THREADS_PER_ROW);
}

/* max|x| over the row: the lane's values, then a butterfly inside the group. */
template <int D, int R, int ROT_AT>
static __device__ __forceinline__ float row_amax(const row_regs<D, R, ROT_AT> &w)
{
    typedef row_regs<D, R, ROT_AT> W;
    float m = 0.0f;
#pragma unroll
    for (int it = 0; it < W::P::iters; ++it)
#pragma unroll
        for (int e = 0; e < VEC; ++e)
            m = fmaxf(m, fabsf(w.plain[it][e]));
#pragma unroll
    for (int it = 0; it < W::H::iters; ++it)
#pragma unroll
        for (int half = 0; half < 2; ++half)
#pragma unroll
            for (int e = 0; e < VEC; ++e)
                m = fmaxf(m, fabsf(w.rot[it][half][e]));
    const unsigned mask = group_mask();
#pragma unroll
    for (int o = THREADS_PER_ROW / 2; o > 0; o /= 2)
        m = fmaxf(m, fmqa_dev::shfl_xor(m, o, mask));
    return m;
}

/* Encodes VEC values as FMT (8-bit: divided by sc > 0, else zeros) to dst. */
template <int FMT>
static __device__ __forceinline__ void store_chunk(typename fmt_traits<FMT>::storage *dst,
                                                   float sc, const float (&x)[VEC])
{
    const bool q8 = FMT == FMT_INT8 || FMT == FMT_FP8;
    __align__(16) typename fmt_traits<FMT>::storage out[VEC];
#pragma unroll
    for (int e = 0; e < VEC; ++e) {
        if (q8)
            out[e] = sc > 0.0f ? quantize<FMT>(x[e], sc) : 0;
        else
            out[e] = encode16<FMT>(x[e]);
    }
    copy_vec<VEC>(dst, out);
}

/* Stores a row in format FMT at dst; 8-bit formats quantize and write the
 * row's scale to *scale (lane 0 of the group), or with FIXED_SCALE quantize
 * with *scale. */
template <int FMT, int D, int R, int ROT_AT>
static __device__ __forceinline__ void store_row(typename fmt_traits<FMT>::storage *dst,
                                                 float *scale, int lane,
                                                 const row_regs<D, R, ROT_AT> &w)
{
    typedef row_regs<D, R, ROT_AT> W;
    const bool q8 = FMT == FMT_INT8 || FMT == FMT_FP8;
    float sc = 0.0f;
    if (q8 && FIXED_SCALE) {
        sc = *scale;
    } else if (q8) {
        sc = __fdiv_rn(row_amax(w), FMT == FMT_INT8 ? 127.0f : 448.0f);
        if (lane == 0)
            *scale = sc;
    }
#pragma unroll
    for (int it = 0; it < W::P::iters; ++it) {
        const int c = lane + it * THREADS_PER_ROW;
        if (chunk_valid<D - R>(lane, it))
            store_chunk<FMT>(dst + W::plain_at + c * VEC, sc, w.plain[it]);
    }
#pragma unroll
    for (int it = 0; it < W::H::iters; ++it) {
        const int c = lane + it * THREADS_PER_ROW;
        if (!chunk_valid<R / 2>(lane, it))
            continue;
#pragma unroll
        for (int half = 0; half < 2; ++half)
            store_chunk<FMT>(dst + ROT_AT + half * (R / 2) + c * VEC, sc, w.rot[it][half]);
    }
}

/* Loads a D row from src (its R elements at ROT_AT from rot), RoPEs those
 * with ROPE, stores the row as FMT at dst (R = 0: a plain row, never
 * rotated). */
template <int D, int R, int ROT_AT, int FMT>
static __device__ __forceinline__ void process_row(const unsigned short *src,
                                                   const unsigned short *rot,
                                                   typename fmt_traits<FMT>::storage *dst,
                                                   float *scale, int lane, const rope_src &rs)
{
    row_regs<D, R, ROT_AT> w;
    load_row(src, rot, lane, w);
    if constexpr (R != 0)
        rope_row<ROPE>(lane, rs, w);
    store_row<FMT>(dst, scale, lane, w);
}

/* ------------------------------------------------------------ placement */

/* Where token t (position pos) of sequence b goes: block (b, or the page) and
 * row inside it.  false: nothing to write (see the file comment). */
static __device__ __forceinline__ bool cache_place(const fmqa_append_params &p, int b, int t,
                                                   int pos, long long *blk, long long *tok)
{
    int slot = pos;
    if (RING && pos >= p.sink_tokens) {
        if (p.window <= 0 || t + p.window < p.n_new)
            return false;
        slot = p.sink_tokens + (pos - p.sink_tokens) % p.window;
    }
    if (SLOT_MAP) {
        slot = p.slot_mapping[(long long)b * p.n_new + t];
        if (slot < 0)
            return false;
        *blk = slot / PAGE_ROWS;
        *tok = slot % PAGE_ROWS;
    } else if (PAGED) {
        const int page = CSR ? p.page_indices[p.page_indptr[b] + slot / PAGE_ROWS]
                             : p.page_table[(long long)b * p.pt_stride + slot / PAGE_ROWS];
        if (page < 0)
            return false;
        *blk = page;
        *tok = slot % PAGE_ROWS;
    } else {
        *blk = b;
        *tok = slot;
    }
    return true;
}

/* ------------------------------------------------------------ kernel */

/* K rows: the rotated part first, or a latent row's rope part last, which is
 * its own segment even without RoPE (copied then), so that it may come from
 * p.k_pe_new. */
#define K_ROT_DIM (LATENT ? HEAD_DIM - HEAD_DIM_V : ROPE_DIM)
#define K_ROT_AT (LATENT ? HEAD_DIM_V : 0)
/* Q rows: a latent cache's q is its rope part only. */
#define Q_DIM (LATENT ? ROPE_DIM : HEAD_DIM)

extern "C" __global__ void __launch_bounds__(THREADS_PER_ROW * ROWS_PER_CTA)
fmqa_append_kernel(const fmqa_append_params p)
{
    __shared__ double freq[ROPE ? ROPE_DIM / 2 : 1]; /* half turns per position */
    if (ROPE && p.rope_cs == nullptr) { /* uniform: the whole grid takes one path */
        const double log_theta = log(p.rope_theta > 0.0f ? (double)p.rope_theta : 10000.0);
        for (int i = threadIdx.x; i < ROPE_DIM / 2; i += blockDim.x)
            freq[i] = exp(-(double)(2 * i) / ROPE_DIM * log_theta) / 3.141592653589793;
        __syncthreads();
    }

    const int lane = threadIdx.x % THREADS_PER_ROW;
    int row = blockIdx.x * ROWS_PER_CTA + threadIdx.x / THREADS_PER_ROW;
    const int tokens = p.batch * p.n_new;
    const int kv_rows = tokens * p.num_kv_heads;
    const int v_rows = LATENT ? 0 : kv_rows; /* a latent cache has no V */
    int region = 0;                          /* 0 K, 1 V, 2 Q */
    if (row >= kv_rows) {
        row -= kv_rows;
        region = 1;
        if (row >= v_rows) {
            row -= v_rows;
            region = 2;
        }
    }
    const int heads = region == 2 ? p.num_q_heads : p.num_kv_heads;
    if (row >= tokens * heads || (region == 2 && (ROPE == 0 || p.q == nullptr)) ||
        (region < 2 && p.k_new == nullptr)) /* a call that only rotates q */
        return;
    const int h = row % heads;
    const int b = row / heads / p.n_new;
    const int t = row / heads % p.n_new;
    const int pos = p.start_pos[b] + t;
    const int rpos = p.rope_pos ? p.rope_pos[b] + t : pos; /* a compacted cache */
    if (pos < 0 || (ROPE && p.rope_cs != nullptr && (rpos < 0 || rpos >= p.rope_cs_len)))
        return;
    const rope_src rs = {ROPE && p.rope_cs ? p.rope_cs + rpos * p.rope_cs_stride : nullptr, freq,
                         (double)rpos};

    if (region == 2) {
        unsigned short *q = static_cast<unsigned short *>(p.q) + b * p.q_sb + t * p.q_st + h * p.q_sh;
        process_row<Q_DIM, ROPE_DIM, 0, IN_FMT>(q, q, q, nullptr, lane, rs);
        return;
    }
    long long blk, tok;
    if (!cache_place(p, b, t, pos, &blk, &tok))
        return;
    typedef fmt_traits<KV_FMT>::storage cache_t;
    const bool q8 = KV_FMT == FMT_INT8 || KV_FMT == FMT_FP8;
    if (region == 0) {
        const unsigned short *src =
            static_cast<const unsigned short *>(p.k_new) + b * p.kn_sb + t * p.kn_st + h * p.kn_sh;
        const unsigned short *rot = LATENT && p.k_pe_new != nullptr
            ? static_cast<const unsigned short *>(p.k_pe_new) + b * p.kpn_sb + t * p.kpn_st
            : src + K_ROT_AT;
        cache_t *dst = static_cast<cache_t *>(p.k) + blk * p.k_sb + tok * p.k_st + h * p.k_sh;
        float *scale = q8 ? p.k_scale + (blk * p.ks_sb + tok * p.ks_st + h * p.ks_sh) : nullptr;
        process_row<HEAD_DIM, K_ROT_DIM, K_ROT_AT, KV_FMT>(src, rot, dst, scale, lane, rs);
    } else {
        const unsigned short *src =
            static_cast<const unsigned short *>(p.v_new) + b * p.vn_sb + t * p.vn_st + h * p.vn_sh;
        cache_t *dst = static_cast<cache_t *>(p.v) + blk * p.v_sb + tok * p.v_st + h * p.v_sh;
        float *scale = q8 ? p.v_scale + (blk * p.vs_sb + tok * p.vs_st + h * p.vs_sh) : nullptr;
        process_row<HEAD_DIM_V, 0, 0, KV_FMT>(src, src, dst, scale, lane, rs);
    }
}
