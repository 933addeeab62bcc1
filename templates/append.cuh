/*
 * append.cuh -- the KV-append kernel: writes n_new new tokens per sequence into
 * a K/V cache (contiguous, paged or ring), applying RoPE to K (and, when p.q is
 * not NULL, to Q in place) and converting to the cache type: f16/bf16 by
 * round-to-nearest-even, int8/fp8 e4m3 by per-(token, head) quantization.
 * It computes fmqa_append of include/fastmqa.h; ref_append in reference/ref.h is
 * its float64 definition.
 *
 * Work split.  The grid enumerates "rows" of head_dim elements, in three
 * consecutive regions: every K row (b, t, hk), then every V row, then every Q
 * row (b, t, h), the last only with RoPE (append.lua launches none without
 * it; rows past the end exit); the head index is fastest, so neighbouring
 * groups touch neighbouring memory and a region boundary is the only place a
 * warp diverges.
 * A group of THREADS_PER_ROW consecutive lanes owns one row.  A row is split in
 * two halves of D/2 and each half into chunks of VEC elements; lane l owns
 * chunks l, l + THREADS_PER_ROW, ... of BOTH halves, so the NEOX partners
 * (i, i + D/2) and the GPTJ partners (2i, 2i + 1) are always in the same thread.
 * Loads are VEC*2 bytes (16 for VEC = 8), stores VEC*2 or VEC bytes.
 *
 * Numerics (what ref_append must match):
 *  - inputs are f16/bf16, decoded exactly to fp32; everything is fp32 after.
 *  - angle of pair i at position pos, as half turns: t = pos * f[i] with
 *    f[i] = theta^(-2i/D) / pi, both in double (f once per CTA into shared
 *    memory, as exp(-2i/D * log(theta)) / pi: ~1e-15 relative).  The whole turns
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
 *
 * Placement.  pos = start_pos[b] + t (RoPE at rope_pos[b] + t when given).  RING: slot = pos if pos < sinks, else
 * sinks + (pos - sinks) % window; a token that a later token of the same call
 * overwrites (t + window < n_new, pos >= sinks) is not written, so the result
 * is that of writing the tokens in order.  PAGED: page_table[b * pt_stride +
 * slot / PAGE_SIZE] names the block (page), slot % PAGE_SIZE the row in it.
 * Rows with a negative position, or a negative page entry, are left untouched
 * (cheap guards against corrupting memory; the kernel cannot report errors).
 * The kernel cannot bound slots by the cache capacity: the caller must.
 *
 * Preconditions the host checks (runtime/Lua): every row start (pointer +
 * strides) is aligned to VEC elements of its type; window > 0 with RING;
 * batch * n_new * (2 * Hkv + H) < 2^31 (32-bit row index).
 *
 * Defines (from append.lua): HEAD_DIM, HEAD_DIM_V, IN_BF16 (0/1: dtype of
 * k_new, v_new and q), KV_FMT (fmqa_dtype code of the cache: 1 f16, 2 bf16,
 * 4 int8, 5 fp8 e4m3), ROPE (fmqa_rope: 0 none, 1 neox, 2 gptj), PAGED,
 * PAGE_SIZE, RING, and the tunables THREADS_PER_ROW, ROWS_PER_CTA, VEC.
 */
#include "fmqa_params.h"
#include "fmqa_device.cuh"

#if defined(__USE_FAST_MATH__) && __USE_FAST_MATH__ /* NVRTC defines it as 0 without the option */
#error "append.cuh: RoPE and quantization need the accurate sincospif and IEEE division; compile without --use_fast_math"
#endif
#if !defined(HEAD_DIM) || !defined(HEAD_DIM_V) || !defined(IN_BF16) || !defined(KV_FMT) || \
    !defined(ROPE) || !defined(PAGED) || !defined(PAGE_SIZE) || !defined(RING) ||            \
    !defined(THREADS_PER_ROW) || !defined(ROWS_PER_CTA) || !defined(VEC)
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
static_assert((HEAD_DIM / 2) % VEC == 0 && (HEAD_DIM_V / 2) % VEC == 0,
              "VEC must divide both half head dims");
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

/* The fp32 values a lane holds of a D-element row: x[it][half][e] is element
 * half * D/2 + (lane + it * THREADS_PER_ROW) * VEC + e.  Chunks past the row
 * (lane beyond the last chunk) hold zeros, which leave max|x| unchanged. */
template <int D> struct row_shape {
    static constexpr int chunks = D / 2 / VEC;
    static constexpr int iters = (chunks + THREADS_PER_ROW - 1) / THREADS_PER_ROW;
};

template <int D>
static __device__ __forceinline__ bool chunk_valid(int lane, int it)
{
    return row_shape<D>::chunks % THREADS_PER_ROW == 0 ||
           lane + it * THREADS_PER_ROW < row_shape<D>::chunks;
}

template <int D>
static __device__ __forceinline__ void load_row(const unsigned short *src, int lane,
                                                float (&x)[row_shape<D>::iters][2][VEC])
{
#pragma unroll
    for (int it = 0; it < row_shape<D>::iters; ++it) {
        const int c = lane + it * THREADS_PER_ROW;
#pragma unroll
        for (int half = 0; half < 2; ++half) {
            __align__(16) unsigned short raw[VEC];
            if (chunk_valid<D>(lane, it))
                copy_vec<VEC>(raw, src + half * (D / 2) + c * VEC);
#pragma unroll
            for (int e = 0; e < VEC; ++e)
                x[it][half][e] = chunk_valid<D>(lane, it) ? decode16(raw[e]) : 0.0f;
        }
    }
}

static __device__ __forceinline__ void rotate_pair(float &a, float &b, double pos, double f)
{
    const double t = pos * f;
    float s, c;
    sincospif((float)fma(-2.0, rint(0.5 * t), t), &s, &c);
    const float ra = a * c - b * s;
    const float rb = b * c + a * s;
    a = ra;
    b = rb;
}

/* RoPE on a HEAD_DIM row held as load_row left it.  NEOX pairs element e of a
 * chunk with the same element of the other half; GPTJ pairs neighbours inside
 * a chunk (VEC is even), pair index = element index / 2. */
template <int MODE>
static __device__ __forceinline__ void rope_row(int lane, double pos, const double *f,
                                                float (&x)[row_shape<HEAD_DIM>::iters][2][VEC])
{
#pragma unroll
    for (int it = 0; it < row_shape<HEAD_DIM>::iters; ++it) {
        const int c = lane + it * THREADS_PER_ROW;
        if (MODE == 0 || !chunk_valid<HEAD_DIM>(lane, it))
            continue;
        if (MODE == 1) {
#pragma unroll
            for (int e = 0; e < VEC; ++e)
                rotate_pair(x[it][0][e], x[it][1][e], pos, f[c * VEC + e]);
        } else {
#pragma unroll
            for (int half = 0; half < 2; ++half)
#pragma unroll
                for (int m = 0; m < VEC / 2; ++m)
                    rotate_pair(x[it][half][2 * m], x[it][half][2 * m + 1], pos,
                                f[(half * (HEAD_DIM / 2) + c * VEC) / 2 + m]);
        }
    }
}

/* Lanes of the calling thread's row group, for the shuffles. */
static __device__ __forceinline__ unsigned group_mask(void)
{
    return (0xffffffffu >> (32 - THREADS_PER_ROW)) << (threadIdx.x % 32 / THREADS_PER_ROW * THREADS_PER_ROW);
}

/* max|x| over the row: the lane's values, then a butterfly inside the group. */
template <int D>
static __device__ __forceinline__ float row_amax(const float (&x)[row_shape<D>::iters][2][VEC])
{
    float m = 0.0f;
#pragma unroll
    for (int it = 0; it < row_shape<D>::iters; ++it)
#pragma unroll
        for (int half = 0; half < 2; ++half)
#pragma unroll
            for (int e = 0; e < VEC; ++e)
                m = fmaxf(m, fabsf(x[it][half][e]));
    const unsigned mask = group_mask();
#pragma unroll
    for (int o = THREADS_PER_ROW / 2; o > 0; o /= 2)
        m = fmaxf(m, fmqa_dev::shfl_xor(m, o, mask));
    return m;
}

/* Stores a row in format FMT at dst; 8-bit formats quantize and write the
 * row's scale to *scale (lane 0 of the group). */
template <int D, int FMT>
static __device__ __forceinline__ void store_row(typename fmt_traits<FMT>::storage *dst,
                                                 float *scale, int lane,
                                                 const float (&x)[row_shape<D>::iters][2][VEC])
{
    const bool q8 = FMT == FMT_INT8 || FMT == FMT_FP8;
    float sc = 0.0f;
    if (q8) {
        sc = __fdiv_rn(row_amax<D>(x), FMT == FMT_INT8 ? 127.0f : 448.0f);
        if (lane == 0)
            *scale = sc;
    }
#pragma unroll
    for (int it = 0; it < row_shape<D>::iters; ++it) {
        const int c = lane + it * THREADS_PER_ROW;
        if (!chunk_valid<D>(lane, it))
            continue;
#pragma unroll
        for (int half = 0; half < 2; ++half) {
            __align__(16) typename fmt_traits<FMT>::storage out[VEC];
#pragma unroll
            for (int e = 0; e < VEC; ++e) {
                if (q8)
                    out[e] = sc > 0.0f ? quantize<FMT>(x[it][half][e], sc) : 0;
                else
                    out[e] = encode16<FMT>(x[it][half][e]);
            }
            copy_vec<VEC>(dst + half * (D / 2) + c * VEC, out);
        }
    }
}

/* Loads a D row from src, RoPEs it with MODE, stores it as FMT. */
template <int D, int MODE, int FMT>
static __device__ __forceinline__ void process_row(const unsigned short *src,
                                                   typename fmt_traits<FMT>::storage *dst,
                                                   float *scale, int lane, int pos,
                                                   const double *f)
{
    float x[row_shape<D>::iters][2][VEC];
    load_row<D>(src, lane, x);
    if constexpr (MODE != 0) /* D is HEAD_DIM then: V rows (D = HEAD_DIM_V) never rotate */
        rope_row<MODE>(lane, (double)pos, f, x);
    store_row<D, FMT>(dst, scale, lane, x);
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
    if (PAGED) {
        const int page = p.page_table[(long long)b * p.pt_stride + slot / PAGE_ROWS];
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

extern "C" __global__ void __launch_bounds__(THREADS_PER_ROW * ROWS_PER_CTA)
fmqa_append_kernel(const fmqa_append_params p)
{
    __shared__ double freq[ROPE ? HEAD_DIM / 2 : 1]; /* half turns per position */
    if (ROPE) {
        const double log_theta = log(p.rope_theta > 0.0f ? (double)p.rope_theta : 10000.0);
        for (int i = threadIdx.x; i < HEAD_DIM / 2; i += blockDim.x)
            freq[i] = exp(-(double)(2 * i) / HEAD_DIM * log_theta) / 3.141592653589793;
        __syncthreads();
    }

    const int lane = threadIdx.x % THREADS_PER_ROW;
    int row = blockIdx.x * ROWS_PER_CTA + threadIdx.x / THREADS_PER_ROW;
    const int tokens = p.batch * p.n_new;
    const int kv_rows = tokens * p.num_kv_heads;
    int region = 0; /* 0 K, 1 V, 2 Q */
    while (region < 2 && row >= kv_rows) {
        row -= kv_rows;
        ++region;
    }
    const int heads = region == 2 ? p.num_q_heads : p.num_kv_heads;
    if (row >= tokens * heads || (region == 2 && (ROPE == 0 || p.q == nullptr)))
        return;
    const int h = row % heads;
    const int b = row / heads / p.n_new;
    const int t = row / heads % p.n_new;
    const int pos = p.start_pos[b] + t;
    if (pos < 0)
        return;
    const int rpos = p.rope_pos ? p.rope_pos[b] + t : pos; /* a compacted cache */

    if (region == 2) {
        unsigned short *q = static_cast<unsigned short *>(p.q) + b * p.q_sb + t * p.q_st + h * p.q_sh;
        process_row<HEAD_DIM, ROPE, IN_FMT>(q, q, nullptr, lane, rpos, freq);
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
        cache_t *dst = static_cast<cache_t *>(p.k) + blk * p.k_sb + tok * p.k_st + h * p.k_sh;
        float *scale = q8 ? p.k_scale + (blk * p.ks_sb + tok * p.ks_st + h * p.ks_sh) : nullptr;
        process_row<HEAD_DIM, ROPE, KV_FMT>(src, dst, scale, lane, rpos, freq);
    } else {
        const unsigned short *src =
            static_cast<const unsigned short *>(p.v_new) + b * p.vn_sb + t * p.vn_st + h * p.vn_sh;
        cache_t *dst = static_cast<cache_t *>(p.v) + blk * p.v_sb + tok * p.v_st + h * p.v_sh;
        float *scale = q8 ? p.v_scale + (blk * p.vs_sb + tok * p.vs_st + h * p.vs_sh) : nullptr;
        process_row<HEAD_DIM_V, 0, KV_FMT>(src, dst, scale, lane, pos, freq);
    }
}
