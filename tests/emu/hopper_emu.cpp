/*
 * hopper_emu.cpp -- small kernels over the Hopper instruction layer
 * (templates/fmqa_ptx.cuh's sm_90 / sm_90a part and templates/fmqa_sm90.cuh),
 * run through the CPU emulator for tests/unit/test_hopper_emu.c: a wgmma GEMM
 * fed by TMA (swizzled) or by plain stores (no swizzle) or from registers,
 * TMA boxes at tensor edges, mbarrier phases and transaction counts, named
 * barriers taking turns, and kernels that break a rule the emulator must
 * refuse.  Built for sm_90a
 * (-D__CUDA_ARCH__=900 -D__CUDA_ARCH_FEAT_SM90_ALL).
 */
#include "cuda_emu.h"

#include "fmqa_params.h"
#include "fmqa_sm90.cuh"

using namespace fmqa_dev;

extern "C" const char *hop_tmap_encode(fmqa_tensor_map *out, const void *base, int rank, int esize, int swizzle,
                                       const unsigned long long *dims, const unsigned long long *strides,
                                       const unsigned *box) {
    return emu_tmap_encode(out, base, rank, esize, swizzle, dims, strides, box);
}

/* ------------------------------------------------------------ GEMM */

/* D[64][n] = A[64][64] B[64][n]: A row-major (or, ta, stored [k][m]); B
 * stored [n][k] (tb = 0, K-major) or [k][n] (tb = 1).  Swizzle w: tiles by TMA
 * with maps ma, mb (box W/2 columns); w = 0: written by the threads as
 * interleaved core matrices (LBO 128, SBO 1024: 8 along K per 8-row group).  rs: A from
 * registers, read from global by each thread per the fragment layout.  Two
 * accumulators (k 0..31 in group 0, k 32..63 in group 1) retired by two waits. */
struct hop_gemm {
    fmqa_tensor_map ma, mb;
    const u16 *a, *b;
    float *d;
    int n, bf16, w, rs, ta, tb;
};

constexpr u32 TILE_A = 0, TILE_B = 8192, BAR = 8192 + 32768;

/* The interleaved (no-swizzle) tile of an operand: element (mn, k) of a
 * K-major one in core matrix (mn / 8, k / 8), 8 of them per 8-row group; of
 * an MN-major one transposed within the core matrix. */
static u32 core_offset(int mn, int k, int mn_major) {
    const u32 core = (u32)((mn / 8) * 8 + k / 8) * 128;
    return core + (mn_major ? (k % 8) * 16 + (mn % 8) * 2 : (mn % 8) * 16 + (k % 8) * 2);
}

static void fill_plain(u32 tile, const u16 *g, int rows, int cols, int mn_major_tile) {
    /* g is [rows][cols]; for a K-major tile rows = MN, else rows = K */
    for (int e = threadIdx.x; e < rows * cols; e += blockDim.x) {
        const int r = e / cols, c = e % cols;
        const int mn = mn_major_tile ? c : r, k = mn_major_tile ? r : c;
        memcpy(emu_at(tile + core_offset(mn, k, mn_major_tile), 2), &g[e], 2);
    }
}

template <int N, int BF16, int RS, int TA, int TB> static void gemm_kernel(const hop_gemm &p) {
    const int w = p.w, tid = threadIdx.x;
    const int rows_a = 64, rows_b = TB ? 64 : N; /* rows of the stored tiles: K for MN-major */
    if (tid == 0) {
        mbar_init(smem_addr(smem + BAR), 1);
        fence_mbarrier_init();
    }
    __syncthreads();
    if (w) {
        if (tid < 32 && elect_one()) {
            const u32 bar = smem_addr(smem + BAR);
            const int ca = 64 / (w / 2), cb = (TB ? N : 64) / (w / 2); /* chunks of W / 2 columns */
            mbar_arrive_expect_tx(bar, (RS ? 0 : 64 * 64 * 2) + N * 64 * 2);
            if (!RS)
                for (int c = 0; c < ca; ++c) tma_load_2d(TILE_A + c * rows_a * w, &p.ma, c * (w / 2), 0, bar);
            for (int c = 0; c < cb; ++c) tma_load_2d(TILE_B + c * rows_b * w, &p.mb, c * (w / 2), 0, bar);
        }
        mbar_wait(smem_addr(smem + BAR), 0);
    } else {
        if (!RS) fill_plain(TILE_A, p.a, 64, 64, TA);
        fill_plain(TILE_B, p.b, TB ? 64 : N, TB ? N : 64, TB);
        fence_proxy_async();
        __syncthreads();
    }
    float d0[N / 2], d1[N / 2];
    wgmma_fence();
    for (int ks = 0; ks < 4; ++ks) {
        float(&d)[N / 2] = ks < 2 ? d0 : d1;
        u64 db;
        if (w) db = TB ? desc_mnmajor(TILE_B, rows_b, ks, w) : desc_kmajor(TILE_B, rows_b, ks, w);
        else db = wgmma_desc(TILE_B + ks * 2 * 128, 128, 8 * 128, 0);
        if (RS) {
            const int warp = tid / 32, g = (tid % 32) / 4, q = tid % 4;
            u32 a[4];
            for (int r = 0; r < 4; ++r) {
                const int row = 16 * warp + g + 8 * (r % 2), k = 16 * ks + 2 * q + 8 * (r / 2);
                a[r] = p.a[row * 64 + k] | (u32)p.a[row * 64 + k + 1] << 16;
            }
            wgmma_rs<N, BF16, TB>(d, a, db, ks % 2);
        } else {
            u64 da;
            if (w) da = TA ? desc_mnmajor(TILE_A, 64, ks, w) : desc_kmajor(TILE_A, 64, ks, w);
            else da = wgmma_desc(TILE_A + ks * 2 * 128, 128, 8 * 128, 0);
            wgmma_ss<N, BF16, TA, TB>(d, da, db, ks % 2);
        }
        if (ks % 2) wgmma_commit();
    }
    wgmma_wait<1>(d0);
    wgmma_wait<0>(d1);
    const int warp = tid / 32, g = (tid % 32) / 4, q = tid % 4;
    for (int i = 0; i < N / 2; ++i) {
        const int row = 16 * warp + g + 8 * ((i % 4) / 2), col = 8 * (i / 4) + 2 * q + i % 2;
        p.d[row * N + col] = d0[i] + d1[i];
    }
}

template <int N, int BF16> static void (*pick(int rs, int ta, int tb))(const hop_gemm &) {
    if (rs) return tb ? gemm_kernel<N, BF16, 1, 0, 1> : gemm_kernel<N, BF16, 1, 0, 0>;
    if (ta) return tb ? gemm_kernel<N, BF16, 0, 1, 1> : gemm_kernel<N, BF16, 0, 1, 0>;
    return tb ? gemm_kernel<N, BF16, 0, 0, 1> : gemm_kernel<N, BF16, 0, 0, 0>;
}
static void (*gemm_fn)(const hop_gemm &);
static void run_gemm(const void *p) { gemm_fn(*(const hop_gemm *)p); }

/* n 32 (bf16), 64 (f16 and bf16), 128 (bf16), 256 (f16); -1 for another. */
extern "C" int hop_gemm_run(const hop_gemm *p) {
    if (p->n == 32 && p->bf16) gemm_fn = pick<32, 1>(p->rs, p->ta, p->tb);
    else if (p->n == 64) gemm_fn = p->bf16 ? pick<64, 1>(p->rs, p->ta, p->tb) : pick<64, 0>(p->rs, p->ta, p->tb);
    else if (p->n == 128 && p->bf16) gemm_fn = pick<128, 1>(p->rs, p->ta, p->tb);
    else if (p->n == 256 && !p->bf16) gemm_fn = pick<256, 0>(p->rs, p->ta, p->tb);
    else return -1;
    const unsigned grid[3] = {1, 1, 1};
    emu_grid(run_gemm, p, grid, 128, BAR + 64);
    return 0;
}

/* ------------------------------------------------------------ TMA boxes */

/* One box of map at coordinates c (rank 2..4) into shared memory at 1024,
 * copied out raw (bytes, swizzle included) to out; also a 48-byte plain bulk
 * copy of src to bulk_out, both on one mbarrier. */
struct hop_box {
    fmqa_tensor_map map;
    int rank, c[4];
    unsigned bytes;
    unsigned char *out;
    const unsigned char *src;
    unsigned char *bulk_out;
};
static void box_kernel(const hop_box &p) {
    const u32 bar = smem_addr(smem + 8), box = smem_addr(smem + 1024), lin = smem_addr(smem + 128);
    if (threadIdx.x == 0) {
        mbar_init(bar, 1);
        fence_proxy_async();
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        mbar_arrive_expect_tx(bar, p.bytes + 48);
        if (p.rank == 2) tma_load_2d(box, &p.map, p.c[0], p.c[1], bar);
        if (p.rank == 3) tma_load_3d(box, &p.map, p.c[0], p.c[1], p.c[2], bar);
        if (p.rank == 4) tma_load_4d(box, &p.map, p.c[0], p.c[1], p.c[2], p.c[3], bar);
        bulk_g2s(lin, p.src, 48, bar);
    }
    mbar_wait(bar, 0);
    for (unsigned i = threadIdx.x; i < p.bytes; i += blockDim.x) p.out[i] = smem[1024 + i];
    for (unsigned i = threadIdx.x; i < 48; i += blockDim.x) p.bulk_out[i] = smem[128 + i];
}
static void run_box(const void *p) { box_kernel(*(const hop_box *)p); }
extern "C" void hop_box_run(const hop_box *p) {
    const unsigned grid[3] = {1, 1, 1};
    emu_grid(run_box, p, grid, 64, 1024 + p->bytes);
}

/* ------------------------------------------------------------ mbarrier phases */

/* Three phases of one mbarrier of count 2 (warp 1's elected lane arrives with
 * expect_tx and issues a 32-byte copy per phase, warp 2's arrives plainly),
 * waited by warp 0 with the phase's parity, which records per phase the first
 * 8 bytes copied, try_wait of that parity once more (complete: 1) and the
 * phase.  out: 3 x 4 ints. */
struct hop_phase {
    const unsigned char *src; /* 3 x 32 bytes */
    int *out;
};
static void phase_kernel(const hop_phase &p) {
    const u32 bar = smem_addr(smem + 8), buf = smem_addr(smem + 256);
    const int warp = threadIdx.x / 32;
    if (threadIdx.x == 0) {
        mbar_init(bar, 2);
        fence_mbarrier_init();
    }
    __syncthreads();
    for (int ph = 0; ph < 3; ++ph) {
        if (warp == 1 && elect_one()) {
            mbar_arrive_expect_tx(bar, 32);
            bulk_g2s(buf + 32 * ph, p.src + 32 * ph, 32, bar);
        }
        if (warp == 2 && elect_one()) mbar_arrive(bar);
        if (warp == 0) {
            mbar_wait(bar, ph & 1);
            if (threadIdx.x == 0) {
                int v[2];
                memcpy(v, smem + 256 + 32 * ph, 8);
                p.out[4 * ph + 0] = v[0];
                p.out[4 * ph + 1] = v[1];
                p.out[4 * ph + 2] = mbar_try_wait(bar, ph & 1);
                p.out[4 * ph + 3] = ph;
            }
        }
        __syncthreads(); /* warps 1, 2 arrive on the next phase only after it */
    }
}
static void run_phase(const void *p) { phase_kernel(*(const hop_phase *)p); }
extern "C" void hop_phase_run(const hop_phase *p) {
    const unsigned grid[3] = {1, 1, 1};
    emu_grid(run_phase, p, grid, 96, 512);
}

/* ------------------------------------------------------------ named barriers */

/* Two warps take three turns each on named barriers 1 and 2 (warp 1 lets warp
 * 0 go first and skips its last pass); lane 0 logs the warp at each turn. */
static int turn_log[6], turn_pos;
static void turn_kernel(const void *) {
    const int w = threadIdx.x / 32;
    if (w == 1) bar_arrive(1, 64);
    for (int k = 0; k < 3; ++k) {
        bar_sync(1 + w, 64);
        if (threadIdx.x % 32 == 0) turn_log[turn_pos++] = w;
        if (w == 0 || k < 2) bar_arrive(2 - w, 64);
    }
}
extern "C" const int *hop_turns_run(void) {
    turn_pos = 0;
    const unsigned grid[3] = {1, 1, 1};
    emu_grid(turn_kernel, nullptr, grid, 64, 64);
    return turn_log;
}

/* ------------------------------------------------------------ refusals */

/* Kernels that break one rule each; the emulator must abort with a message
 * (the test runs each in a child process). */
static int refusal;
static void refuse_kernel(const void *) {
    const u32 bar = smem_addr(smem + 8);
    static const unsigned char src[64] __attribute__((aligned(16))) = {1};
    if (refusal == 0) { /* copy on a barrier whose init was never fenced */
        if (threadIdx.x == 0) {
            mbar_init(bar, 1);
            mbar_arrive_expect_tx(bar, 16);
            bulk_g2s(256, src, 16, bar);
        }
    } else if (refusal == 1) { /* two arrivals on a count-1 barrier with tx pending */
        if (threadIdx.x == 0) {
            mbar_init(bar, 1);
            mbar_arrive_expect_tx(bar, 16);
            mbar_arrive(bar);
        }
    } else if (refusal == 2) { /* wgmma without wgmma.fence */
        float d[32] = {};
        wgmma_ss<64, 0, 0, 0>(d, wgmma_desc(0, 16, 1024, 128), wgmma_desc(0, 16, 1024, 128), 0);
    } else if (refusal == 3) { /* reading the accumulator of a pending group */
        float d[32] = {};
        wgmma_fence();
        wgmma_ss<64, 0, 0, 0>(d, wgmma_desc(0, 16, 1024, 128), wgmma_desc(0, 16, 1024, 128), 0);
        wgmma_commit();
        wgmma_wait<1>(d);
    } else if (refusal == 4) { /* one warp of the warpgroup skips the fence */
        if (threadIdx.x >= 32) wgmma_fence();
    } else if (refusal == 5) { /* CTA exits with a copy in flight */
        if (threadIdx.x == 0) {
            mbar_init(bar, 1);
            fence_mbarrier_init();
            mbar_arrive_expect_tx(bar, 16);
            bulk_g2s(256, src, 16, bar);
        }
    } else if (refusal == 6) { /* a wait nobody ends */
        if (threadIdx.x == 0) mbar_init(bar, 2);
        __syncthreads();
        if (threadIdx.x == 0) mbar_arrive(bar);
        mbar_wait(bar, 0);
    } else if (refusal == 8) { /* an arrive on a named barrier nobody syncs on */
        if (threadIdx.x < 32) bar_arrive(1, 64);
    } else if (refusal == 7) { /* base offset in a descriptor */
        float d[32] = {};
        wgmma_fence();
        wgmma_ss<64, 0, 0, 0>(d, wgmma_desc(0, 16, 1024, 128) | 1ull << 49, wgmma_desc(0, 16, 1024, 128), 0);
    }
}
extern "C" void hop_refuse_run(int which) {
    refusal = which;
    const unsigned grid[3] = {1, 1, 1};
    emu_grid(refuse_kernel, nullptr, grid, 128, 4096);
}
