/*
 * test_limits.c -- every documented limit is enforced with a message naming the
 * limit and the value, and no size arithmetic on caller input overflows: the
 * decode query-token range, CUDA's grid axes, the alignment of every argument
 * for the width its kernel reads it with, output strides that overlap, int64
 * overflow of strides and sizes (the ASan+UBSan build runs these too), page
 * sizes of memory reports, and level problems that validate by construction.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include <criterion/criterion.h>

#include "fastmqa.h"
#include "fmqa_params.h"
#include "gen.h"
#include "rt.h"
#include "test_support.h"

static fmqa_problem parse(const char *spec)
{
    fmqa_problem p;
    fmqa_err err = {0};
    cr_assert_eq(gen_problem_parse(spec, &p, &err), FMQA_OK, "%s", err.msg);
    return p;
}

static void expect_invalid(fmqa_ctx_t *ctx, const char *spec, const char *msg)
{
    fmqa_problem p = parse(spec);
    cr_expect_eq(fmqa_problem_validate(ctx, &p), FMQA_ERR_INVALID_ARGUMENT, "%s validated", spec);
    cr_expect(strstr(fmqa_ctx_errmsg(ctx), msg), "%s: want '%s' in '%s'", spec, msg,
              fmqa_ctx_errmsg(ctx));
}

Test(limits, decode_query_tokens_are_1_to_16)
{
    fmqa_ctx_t *ctx = fmqa_test_ctx();
    expect_invalid(ctx, "op=decode,tq=17,kv_len=4096", "q_tokens: 17, decode serves 1 to 16");
    expect_invalid(ctx, "op=decode,tq=64,kv_len=4096", "q_tokens: 64, decode serves 1 to 16");
    expect_invalid(ctx, "op=decode,tq=4000,kv_len=4096", "q_tokens: 4000, decode serves 1 to 16");
    fmqa_problem p = parse("op=decode,tq=16,kv_len=4096");
    cr_expect_eq(fmqa_problem_validate(ctx, &p), FMQA_OK, "%s", fmqa_ctx_errmsg(ctx));
    p = parse("op=append,tq=4000,kv_len=4096"); /* append has no such limit */
    cr_expect_eq(fmqa_problem_validate(ctx, &p), FMQA_OK, "%s", fmqa_ctx_errmsg(ctx));
    fmqa_ctx_destroy(ctx);
}

/* Soft-capping and draft slots: what each needs, named in the message. */
Test(limits, softcap_and_draft_slots)
{
    fmqa_ctx_t *ctx = fmqa_test_ctx();
    fmqa_problem p = parse("op=decode,kv_len=4096,softcap=30");
    cr_expect_eq(fmqa_problem_validate(ctx, &p), FMQA_OK, "%s", fmqa_ctx_errmsg(ctx));
    p.logit_softcap = -1.0f;
    cr_expect_eq(fmqa_problem_validate(ctx, &p), FMQA_ERR_INVALID_ARGUMENT);
    cr_expect(strstr(fmqa_ctx_errmsg(ctx), "logit_softcap -1: must be 0 (off) or finite"), "%s",
              fmqa_ctx_errmsg(ctx));
    p.logit_softcap = INFINITY;
    cr_expect_eq(fmqa_problem_validate(ctx, &p), FMQA_ERR_INVALID_ARGUMENT);
    p.logit_softcap = NAN;
    cr_expect_eq(fmqa_problem_validate(ctx, &p), FMQA_ERR_INVALID_ARGUMENT);
    expect_invalid(ctx, "op=append,kv_len=4096,softcap=30", "only decode and prefill cap scores");
    expect_invalid(ctx, "op=decode,kv_len=4096,window=64,draft_slots=3,flags=causal",
                   "draft_slots 3 without FMQA_FLAG_RING");
    p = parse("op=decode,tq=4,kv_len=4096,window=64,draft_slots=3,flags=causal|ring");
    cr_expect_eq(fmqa_problem_validate(ctx, &p), FMQA_OK, "%s", fmqa_ctx_errmsg(ctx));
    p.q_tokens = 9; /* a longer step: served, rule 5 for its early tokens */
    cr_expect_eq(fmqa_problem_validate(ctx, &p), FMQA_OK, "%s", fmqa_ctx_errmsg(ctx));
    p = parse("op=append,tq=9,kv_len=4096,window=64,draft_slots=3,flags=ring");
    cr_expect_eq(fmqa_problem_validate(ctx, &p), FMQA_OK, "%s", fmqa_ctx_errmsg(ctx));
    p.draft_slots = -1;
    cr_expect_eq(fmqa_problem_validate(ctx, &p), FMQA_ERR_INVALID_ARGUMENT);
    p.draft_slots = INT32_MAX - 63;
    cr_expect_eq(fmqa_problem_validate(ctx, &p), FMQA_ERR_INVALID_ARGUMENT);
    cr_expect(strstr(fmqa_ctx_errmsg(ctx), "exceeds 2^31-1"), "%s", fmqa_ctx_errmsg(ctx));
    fmqa_ctx_destroy(ctx);
}

/* Decode's and MLA decode's grids are persistent (P CTAs on x), so neither
 * the batch nor the query rows meet CUDA's y and z limits; prefill's grid
 * still does (mla_decode_sm90's too: its valid() refuses, test_dispatch.c).
 * What bounds a decode is the int slot numbers of its workspace's segment
 * table, reachable in batch-invariant mode only (one slot per chunk). */
Test(limits, decode_grid_axes_fit_cuda)
{
    fmqa_ctx_t *ctx = fmqa_test_ctx();
    fmqa_problem p = parse("op=decode,batch=65536,heads=1,kv_heads=1,d=64,kv_len=16");
    cr_expect_eq(fmqa_problem_validate(ctx, &p), FMQA_OK, "%s", fmqa_ctx_errmsg(ctx));
    p = parse("op=decode,batch=1000000,heads=32,kv_heads=1,d=64,kv_len=16");
    cr_expect_eq(fmqa_problem_validate(ctx, &p), FMQA_OK, "%s", fmqa_ctx_errmsg(ctx));
    p = parse("op=decode,batch=1,heads=65536,kv_heads=65536,d=64,kv_len=16");
    cr_expect_eq(fmqa_problem_validate(ctx, &p), FMQA_OK, "%s", fmqa_ctx_errmsg(ctx));
    p = parse("op=mla_decode,batch=65536,heads=16,kv_heads=1,d=576,dv=512,kv_len=16");
    cr_expect_eq(fmqa_problem_validate(ctx, &p), FMQA_OK, "%s", fmqa_ctx_errmsg(ctx));
    p = parse("op=mla_decode,batch=1,heads=8192,kv_heads=1,d=576,dv=512,tq=8,kv_len=16");
    cr_expect_eq(fmqa_problem_validate(ctx, &p), FMQA_OK, "%s", fmqa_ctx_errmsg(ctx));
    expect_invalid(ctx, "op=prefill,batch=65536,heads=8,kv_heads=8,d=64,tq=16,kv_len=16",
                   "prefill launches one grid z index per sequence");
    /* Batch-invariant: 2^19 sequences x 32 KV heads x 1 row block x 256
     * chunks = 2^32 slots; 2^18 sequences give 2^31, one too many; at kv_len
     * 32768 (128 chunks) 2^30, accepted; without the flag, any of these. */
    expect_invalid(ctx, "op=decode,batch=524288,heads=32,kv_heads=32,d=64,kv_len=65536,"
                        "flags=invariant",
                   "exceed the 2^31-1 workspace slots a batch-invariant decode numbers");
    expect_invalid(ctx, "op=decode,batch=262144,heads=32,kv_heads=32,d=64,kv_len=65536,"
                        "flags=invariant",
                   "up to 256 chunks a sequence");
    p = parse("op=decode,batch=262144,heads=32,kv_heads=32,d=64,kv_len=32768,"
              "flags=invariant");
    cr_expect_eq(fmqa_problem_validate(ctx, &p), FMQA_OK, "%s", fmqa_ctx_errmsg(ctx));
    p.flags &= ~FMQA_FLAG_BATCH_INVARIANT;
    p.kv_len = 65536;
    cr_expect_eq(fmqa_problem_validate(ctx, &p), FMQA_OK, "%s", fmqa_ctx_errmsg(ctx));
    fmqa_ctx_destroy(ctx);
}

/* Every launch plan a template returns is checked against CUDA's per-axis
 * limits, whatever the problem validation let through. */
Test(limits, launch_plans_respect_cuda_grid_limits)
{
    gen_lib *lib = NULL;
    fmqa_err err = {0};
    cr_assert_eq(gen_lib_open(FMQA_SOURCE_DIR "/tests/fixtures/templates_sandbox", &lib, &err),
                 FMQA_OK, "%s", err.msg);
    const gen_template *t = gen_lib_find(lib, "probe");
    fmqa_problem p = parse("batch=1,heads=65536,kv_heads=65536,d=64,kv_len=16");
    fmqa_device_info d;
    gen_device_preset("sm_90", &d, NULL);
    gen_config c;
    gen_config_parse("TILE=32,WARPS=2", &c, NULL);
    gen_plan plan;
    cr_assert_eq(gen_launch_plan(t, &c, &p, &d, &plan, &err), FMQA_ERR_TEMPLATE);
    cr_expect(strstr(err.msg, "launch().kernels[1].grid[2]: 65536 is outside CUDA's limit for the "
                              "y axis (1 to 65535)"),
              "%s", err.msg);
    gen_lib_close(lib);
}

/* Sizes at the edges of int32 for every field, all ops: validation never
 * overflows (UBSan aborts if it does) and whatever it accepts keeps the bounds
 * it promises, recomputed here in 128-bit arithmetic. */
Test(limits, validation_is_overflow_proof)
{
    static const int32_t edge[] = {1, 16, 65535, 65536, 1 << 24, INT32_MAX};
    const size_t n = sizeof edge / sizeof edge[0];
    fmqa_ctx_t *ctx = fmqa_test_ctx();
    long accepted = 0;
    for (int op = FMQA_OP_DECODE; op <= FMQA_OP_APPEND; op++)
        for (size_t a = 0; a < n; a++)
            for (size_t b = 0; b < n; b++)
                for (size_t c = 0; c < n; c++)
                    for (size_t e = 0; e < n; e++)
                        for (int ring = 0; ring < 2; ring++) {
                            fmqa_problem p;
                            fmqa_problem_init(&p);
                            p.op = (fmqa_op)op;
                            p.batch = edge[a];
                            p.num_q_heads = p.num_kv_heads = edge[b];
                            p.q_tokens = edge[c] < 64 ? edge[c] : 1;
                            p.kv_len = edge[e];
                            p.head_dim_qk = p.head_dim_v = 64;
                            if (ring) {
                                p.flags = FMQA_FLAG_RING;
                                p.window = edge[e];
                                p.sink_tokens = edge[c];
                            }
                            if (fmqa_problem_validate(ctx, &p) != FMQA_OK)
                                continue;
                            accepted++;
                            __int128 slots = ring ? (__int128)p.sink_tokens + p.window : p.kv_len;
                            __int128 seq = slots * p.num_kv_heads * 64;
                            __int128 qo = (__int128)p.batch * p.q_tokens * p.num_q_heads * 64;
                            cr_expect(seq <= INT32_MAX && qo <= INT32_MAX && slots <= INT32_MAX,
                                      "op %d batch %d heads %d tq %d kv_len %d ring %d accepted",
                                      op, p.batch, p.num_q_heads, p.q_tokens, p.kv_len, ring);
                            if (op == FMQA_OP_PREFILL)
                                cr_expect(p.batch <= 65535 && p.num_kv_heads <= 65535);
                        }
    cr_expect_gt(accepted, 0);
    fmqa_ctx_destroy(ctx);
}

/* ------------------------------------------------------------ arguments */

static _Alignas(16) char arena[1 << 16];

/* The problem: int8 paged cache with tree mask and LSE, every
 * pointer and stride right for the kernels. */
#define ALIGN_SPEC                                                                          \
    "op=decode,batch=2,heads=4,kv_heads=1,d=64,tq=2,kv_len=64,page=16,kv=int8,"             \
    "flags=causal|paged|tree|lse"

static fmqa_decode_args aligned_args(void)
{
    fmqa_decode_args a;
    memset(&a, 0, sizeof a);
    a.q = arena;
    a.q_stride_head = 64, a.q_stride_token = 4 * 64, a.q_stride_batch = 2 * 4 * 64;
    a.o = arena + 4096;
    a.o_stride_head = 64, a.o_stride_token = 4 * 64, a.o_stride_batch = 2 * 4 * 64;
    a.k = arena + 8192, a.v = arena + 16384; /* [page, 16, 1, 64] int8 */
    a.k_stride_head = a.v_stride_head = 64;
    a.k_stride_token = a.v_stride_token = 64;
    a.k_stride_batch = a.v_stride_batch = 16 * 64;
    a.k_scale = (const float *)(arena + 24576), a.v_scale = (const float *)(arena + 28672);
    a.k_scale_stride_token = a.v_scale_stride_token = 1;
    a.k_scale_stride_head = a.v_scale_stride_head = 1;
    a.k_scale_stride_batch = a.v_scale_stride_batch = 16;
    a.kv_lens = (const int32_t *)(arena + 32768);
    a.page_table = (const int32_t *)(arena + 33024);
    a.page_table_stride = 4;
    a.tree_mask = (const uint64_t *)(arena + 33280);
    a.lse = (float *)(arena + 33536);
    return a;
}

static void expect_rejected(fmqa_ctx_t *ctx, const fmqa_decode_args *a, const char *msg)
{
    fmqa_problem p = parse(ALIGN_SPEC);
    cr_expect_eq(fmqa_decode(ctx, &p, a, NULL), FMQA_ERR_INVALID_ARGUMENT, "%s", msg);
    cr_expect(strstr(fmqa_ctx_errmsg(ctx), msg), "want '%s' in '%s'", msg, fmqa_ctx_errmsg(ctx));
}

#define OFFSET(type, ptr, bytes) ((type)((const char *)(ptr) + (bytes)))

Test(limits, every_pointer_is_aligned_for_its_kernel_access)
{
    fmqa_ctx_t *ctx = fmqa_test_ctx();
    fmqa_decode_args a = aligned_args();
    a.k_scale = OFFSET(const float *, a.k_scale, 2);
    expect_rejected(ctx, &a, "args.k_scale is not 4-byte aligned");
    a = aligned_args();
    a.v_scale = OFFSET(const float *, a.v_scale, 2);
    expect_rejected(ctx, &a, "args.v_scale is not 4-byte aligned");
    a = aligned_args();
    a.lse = OFFSET(float *, a.lse, 2);
    expect_rejected(ctx, &a, "args.lse is not 4-byte aligned");
    a = aligned_args();
    a.tree_mask = OFFSET(const uint64_t *, a.tree_mask, 4);
    expect_rejected(ctx, &a, "args.tree_mask is not 8-byte aligned");
    a = aligned_args();
    a.sinks = OFFSET(const float *, a.kv_lens, 2);
    expect_rejected(ctx, &a, "args.sinks is not 4-byte aligned");
    a = aligned_args();
    a.kv_lens = OFFSET(const int32_t *, a.kv_lens, 2);
    expect_rejected(ctx, &a, "args.kv_lens is not 4-byte aligned");
    a = aligned_args();
    a.page_table = OFFSET(const int32_t *, a.page_table, 2);
    expect_rejected(ctx, &a, "args.page_table is not 4-byte aligned");
    a = aligned_args();
    a.q = OFFSET(const void *, a.q, 8);
    expect_rejected(ctx, &a, "args.q is not 16-byte aligned");
    a = aligned_args();
    a.workspace = arena + 40000 + 4;
    expect_rejected(ctx, &a, "args.workspace is not 16-byte aligned");

    char why[256];
    if (!fmqa_test_gpu_available(why, sizeof why)) { /* the aligned set passes every check */
        fmqa_problem p = parse(ALIGN_SPEC);
        a = aligned_args();
        fmqa_status st = fmqa_decode(ctx, &p, &a, NULL);
        cr_expect(st == FMQA_ERR_NO_DRIVER || st == FMQA_ERR_NO_DEVICE, "%d: %s", st,
                  fmqa_ctx_errmsg(ctx));
    }
    fmqa_ctx_destroy(ctx);
}

Test(limits, output_rows_must_not_overlap)
{
    fmqa_ctx_t *ctx = fmqa_test_ctx();
    fmqa_decode_args a = aligned_args();
    a.o_stride_batch = a.o_stride_token = a.o_stride_head = 0;
    expect_rejected(ctx, &a, "args.o stride 0 (0 elements) is smaller than the 64 elements");
    a = aligned_args();
    a.o_stride_head = 32; /* heads of 64 elements, 32 apart */
    expect_rejected(ctx, &a, "args.o stride 2 (32 elements) is smaller than the 64 elements");
    a = aligned_args();
    a.o_stride_token = 128; /* tokens overlap the 4 heads of the previous token */
    expect_rejected(ctx, &a, "args.o stride 1 (128 elements) is smaller than the 256 elements");
    fmqa_ctx_destroy(ctx);
}

Test(limits, strides_that_overflow_int64_are_rejected)
{
    fmqa_ctx_t *ctx = fmqa_test_ctx();
    fmqa_decode_args a = aligned_args();
    a.q_stride_batch = (int64_t)1 << 62; /* x 2 bytes per element overflows */
    expect_rejected(ctx, &a, "args.q stride 0");
    a = aligned_args();
    a.q_stride_batch = (INT64_MAX / 16) * 8; /* a multiple of 16 bytes; 2 elements past 2^63 */
    expect_rejected(ctx, &a, "reach past 2^63 bytes");
    a = aligned_args();
    a.k_stride_batch = (int64_t)1 << 40; /* any int32 page id times this overflows */
    expect_rejected(ctx, &a, "args.k: strides");
    a = aligned_args();
    a.page_table_stride = INT64_MAX - 1;
    expect_rejected(ctx, &a, "args.page_table_stride");
    fmqa_ctx_destroy(ctx);
}

/* ------------------------------------------------------------ levels */

Test(limits, memory_reports_need_power_of_two_pages)
{
    fmqa_model_config m = {4096, 32, 8, 0, 0, 0, 8192, FMQA_DTYPE_F16};
    fmqa_level_policy pol;
    cr_assert_eq(fmqa_level_policy_preset(NULL, FMQA_LEVEL_BALANCED, &m, &pol), FMQA_OK);
    fmqa_memory_report r;
    fmqa_ctx_t *ctx = fmqa_test_ctx();
    pol.page_size = 24;
    cr_expect_eq(fmqa_memory_report_compute(ctx, &m, &pol, 1, 0, &r), FMQA_ERR_INVALID_ARGUMENT);
    cr_expect(strstr(fmqa_ctx_errmsg(ctx), "policy.page_size 24: expected 0 (contiguous) or a "
                                           "power of two >= 16"),
              "%s", fmqa_ctx_errmsg(ctx));
    pol.page_size = 8;
    cr_expect_eq(fmqa_memory_report_compute(ctx, &m, &pol, 1, 0, &r), FMQA_ERR_INVALID_ARGUMENT);
    pol.page_size = 64;
    cr_expect_eq(fmqa_memory_report_compute(ctx, &m, &pol, 1, 0, &r), FMQA_OK, "%s",
                 fmqa_ctx_errmsg(ctx));
    m.num_kv_heads = m.num_q_heads = 1 << 30; /* 2 x Hkv x d bytes overflow int64 */
    m.hidden_size = 1 << 30;
    m.head_dim = INT32_MAX;
    cr_expect_eq(fmqa_memory_report_compute(ctx, &m, &pol, 1, 0, &r), FMQA_ERR_INVALID_ARGUMENT);
    cr_expect(strstr(fmqa_ctx_errmsg(ctx), "overflow int64"), "%s", fmqa_ctx_errmsg(ctx));
    fmqa_ctx_destroy(ctx);
}

/* Over a grid of models, every level, edited policies and batches: whatever
 * fmqa_level_problem returns, fmqa_problem_validate accepts. */
Test(limits, level_problems_validate_by_construction)
{
    static const int32_t heads[] = {1, 8, 32, 128, 4096, 65536};
    static const int32_t dims[] = {64, 128, 256, 2048};
    static const int32_t seq[] = {1, 2, 16, 4096, 1 << 20, INT32_MAX};
    static const int32_t batches[] = {1, 64, 65535, 65536, INT32_MAX};
    static const int32_t spec[] = {1, 4, 16};
    static const int32_t pages[] = {0, 16, 64};
    fmqa_ctx_t *ctx = fmqa_test_ctx();
    long returned = 0, refused = 0;
    for (size_t h = 0; h < sizeof heads / sizeof heads[0]; h++)
        for (size_t dd = 0; dd < sizeof dims / sizeof dims[0]; dd++)
            for (size_t s = 0; s < sizeof seq / sizeof seq[0]; s++)
                for (int mla = 0; mla < 2; mla++)
                    for (int lvl = FMQA_LEVEL_CONSERVATIVE; lvl <= FMQA_LEVEL_AGGRESSIVE; lvl++)
                        for (size_t sp = 0; sp < sizeof spec / sizeof spec[0]; sp++)
                            for (size_t pg = 0; pg < sizeof pages / sizeof pages[0]; pg++)
                                for (size_t b = 0; b < sizeof batches / sizeof batches[0]; b++) {
                                    fmqa_model_config m = {0};
                                    m.num_q_heads = heads[h];
                                    m.num_kv_heads = heads[h] > 8 ? 8 : 1;
                                    m.head_dim = dims[dd];
                                    m.hidden_size = heads[h] * 64;
                                    m.max_seq_len = seq[s];
                                    m.dtype = FMQA_DTYPE_BF16;
                                    if (mla)
                                        m.mla_latent_dim = dims[dd], m.mla_rope_dim = 64;
                                    fmqa_level_policy pol;
                                    if (fmqa_level_policy_preset(ctx, (fmqa_level)lvl, &m,
                                                                 &pol) != FMQA_OK)
                                        continue;
                                    pol.spec_tokens = spec[sp];
                                    pol.page_size = pages[pg];
                                    fmqa_problem p;
                                    if (fmqa_level_problem(ctx, &m, &pol, batches[b], &p) !=
                                        FMQA_OK) {
                                        refused++;
                                        continue;
                                    }
                                    returned++;
                                    cr_expect_eq(fmqa_problem_validate(ctx, &p), FMQA_OK,
                                                 "H %d d %d seq %d mla %d level %d spec %d "
                                                 "page %d batch %d: %s",
                                                 m.num_q_heads, m.head_dim, m.max_seq_len, mla,
                                                 lvl, pol.spec_tokens, pol.page_size,
                                                 batches[b], fmqa_ctx_errmsg(ctx));
                                }
    cr_expect_gt(returned, 100);
    cr_expect_gt(refused, 0);
    fmqa_ctx_destroy(ctx);
}

/* Per-head and per-tensor 8-bit scales: only for 8-bit caches of decode and
 * append, known values only; the strides they ignore are not checked (odd
 * garbage passes), the ones they use are (a misaligned head stride does not
 * matter: floats), and the pointers must still be there. */
Test(limits, kv_scale_granularity_is_checked)
{
    fmqa_ctx_t *ctx = fmqa_test_ctx();
    expect_invalid(ctx, "op=decode,kv_len=64,kv_scale=head",
                   "problem.kv_scale_granularity: head scales need an 8-bit cache, kv_dtype is f16");
    expect_invalid(ctx, "op=append,kv=bf16,kv_len=64,kv_scale=tensor",
                   "tensor scales need an 8-bit cache, kv_dtype is bf16");
    expect_invalid(ctx, "op=prefill,kv=int8,kv_len=64,kv_scale=tensor",
                   "tensor scales are for decode and append, not prefill");
    fmqa_problem p = parse("op=decode,kv=fp8_e4m3,kv_len=64");
    p.kv_scale_granularity = (fmqa_kv_scale_granularity)3;
    cr_expect_eq(fmqa_problem_validate(ctx, &p), FMQA_ERR_INVALID_ARGUMENT);
    cr_expect(strstr(fmqa_ctx_errmsg(ctx), "kv_scale_granularity: 3 is not"), "%s",
              fmqa_ctx_errmsg(ctx));
    p = parse("op=append,kv=int8,kv_len=64,kv_scale=head");
    cr_expect_eq(fmqa_problem_validate(ctx, &p), FMQA_OK, "%s", fmqa_ctx_errmsg(ctx));

    p = parse(ALIGN_SPEC ",kv_scale=tensor");
    fmqa_decode_args a = aligned_args();
    a.k_scale_stride_batch = a.k_scale_stride_token = a.k_scale_stride_head = 1000003;
    a.v_scale_stride_batch = -7;
    a.v_scale_stride_token = INT64_MAX;
    char why[256];
    if (!fmqa_test_gpu_available(why, sizeof why)) { /* ignored strides pass every check */
        fmqa_status st = fmqa_decode(ctx, &p, &a, NULL);
        cr_expect(st == FMQA_ERR_NO_DRIVER || st == FMQA_ERR_NO_DEVICE, "%d: %s", st,
                  fmqa_ctx_errmsg(ctx));
    }
    a.v_scale = NULL;
    cr_expect_eq(fmqa_decode(ctx, &p, &a, NULL), FMQA_ERR_INVALID_ARGUMENT);
    cr_expect(strstr(fmqa_ctx_errmsg(ctx), "args.v_scale is NULL but the cache is 8-bit"), "%s",
              fmqa_ctx_errmsg(ctx));
    a = aligned_args();
    p = parse(ALIGN_SPEC ",kv_scale=head");
    a.k_scale_stride_head = (int64_t)1 << 40; /* used per head: 1 KV head, so extent 1 */
    a.k_scale_stride_batch = -1;
    if (!fmqa_test_gpu_available(why, sizeof why)) {
        fmqa_status st = fmqa_decode(ctx, &p, &a, NULL);
        cr_expect(st == FMQA_ERR_NO_DRIVER || st == FMQA_ERR_NO_DEVICE, "%d: %s", st,
                  fmqa_ctx_errmsg(ctx));
    }
    fmqa_ctx_destroy(ctx);
}

/* What the kernels get for soft-capping, draft slots and learned sinks: the
 * ring period window + draft_slots for decode and for append (both must map
 * positions to the same slots), the cap's constants, the sinks pointer. */
Test(limits, params_carry_ring_period_softcap_and_sinks)
{
    rt_plan plan;
    memset(&plan, 0, sizeof plan);
    plan.problem = parse("op=decode,batch=2,heads=4,kv_heads=1,d=64,tq=2,kv_len=64,page=16,"
                         "kv=int8,window=16,sinks=2,draft_slots=3,softcap=8,"
                         "flags=causal|paged|ring|lse");
    plan.launch.splits = 1;
    fmqa_decode_args a = aligned_args();
    a.tree_mask = NULL;
    a.sinks = (const float *)(arena + 34048);
    fmqa_decode_params dp;
    fmqa_err err = {0};
    cr_assert_eq(rt_decode_params(&plan, &a, &dp, &err), FMQA_OK, "%s", err.msg);
    cr_expect_eq(dp.ring_period, 19);
    cr_expect_eq(dp.window, 16);
    cr_expect_eq(dp.sinks, a.sinks);
    cr_expect_float_eq(dp.softcap_inv, 0.25f, 1e-7f);
    cr_expect_float_eq(dp.softcap_log2, 8.0f * 1.44269504f, 1e-5f);
    plan.problem.op = FMQA_OP_APPEND, plan.problem.logit_softcap = 0;
    plan.problem.flags &= FMQA_FLAG_PAGED | FMQA_FLAG_RING;
    fmqa_append_args ap;
    memset(&ap, 0, sizeof ap);
    ap.k_new = arena, ap.v_new = arena + 4096;
    ap.k_new_stride_head = ap.v_new_stride_head = 64;
    ap.k_new_stride_token = ap.v_new_stride_token = 64;
    ap.k_new_stride_batch = ap.v_new_stride_batch = 2 * 64;
    ap.k = (void *)a.k, ap.v = (void *)a.v;
    ap.k_stride_head = ap.v_stride_head = ap.k_stride_token = ap.v_stride_token = 64;
    ap.k_stride_batch = ap.v_stride_batch = 16 * 64;
    ap.k_scale = (float *)a.k_scale, ap.v_scale = (float *)a.v_scale;
    ap.k_scale_stride_token = ap.v_scale_stride_token = 1;
    ap.k_scale_stride_head = ap.v_scale_stride_head = 1;
    ap.k_scale_stride_batch = ap.v_scale_stride_batch = 16;
    ap.start_pos = a.kv_lens, ap.page_table = a.page_table, ap.page_table_stride = 4;
    fmqa_append_params pp;
    cr_assert_eq(rt_append_params(&plan, &ap, &pp, &err), FMQA_OK, "%s", err.msg);
    cr_expect_eq(pp.window, 19, "append's ring period");
}
