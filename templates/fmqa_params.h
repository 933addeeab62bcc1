/*
 * fmqa_params.h -- the argument structs of the generated kernels.
 *
 * Included both by the host C compiler (runtime/, tuner/, tests/) and by NVRTC
 * (every template), so that both sides agree on the layout byte for byte.  Each
 * kernel takes exactly one of these structs by value as its only parameter.
 * Only types whose size is the same on both sides appear: pointers, long long,
 * int, float.  Strides are in elements, the head dimension is contiguous.
 *
 * Compile-time facts (head dims, group size, dtypes, tile sizes, ...) are not
 * here: they reach the kernel as -D defines chosen by the template's Lua file.
 * Append-only: add fields at the end and bump FMQA_PARAMS_VERSION, which is part
 * of every template's identity hash.
 */
#ifndef FMQA_PARAMS_H
#define FMQA_PARAMS_H

#define FMQA_PARAMS_VERSION 7

/* An encoded TMA tensor map: the driver's CUtensorMap (cuTensorMapEncodeTiled,
 * runtime/rt_cuda.c; 128 opaque bytes, 64-byte aligned), or the CPU
 * emulator's model of one.  Kernels take it inside their params struct, which
 * they declare __grid_constant__ so that its address is valid for TMA. */
typedef struct fmqa_tensor_map {
    unsigned long long opaque[16];
} __attribute__((aligned(64))) fmqa_tensor_map;

typedef struct fmqa_decode_params {
    const void *q;                 /* [b, t, h, d]                              */
    long long q_sb, q_st, q_sh;
    const void *k;                 /* [b|page, j, hk, d]                        */
    const void *v;
    long long k_sb, k_st, k_sh;
    long long v_sb, v_st, v_sh;
    const float *k_scale;          /* [b|page, j, hk]; 8-bit caches only        */
    const float *v_scale;
    long long ks_sb, ks_st, ks_sh;
    long long vs_sb, vs_st, vs_sh;
    const int *kv_lens;            /* [b]                                       */
    const int *page_table;         /* [b, pt_stride]                            */
    long long pt_stride;
    const unsigned long long *tree_mask; /* [b, t]                              */
    void *o;                       /* [b, t, h, dv]                             */
    long long o_sb, o_st, o_sh;
    float *lse;                    /* [b, t, h] or NULL                         */
    float *ws_o;                   /* split partials [slot, rows, dv] fp32      */
    float *ws_lse;                 /* split partials [slot, rows] fp32          */
    float sm_scale;                /* softmax scale                             */
    float sm_scale_log2;           /* sm_scale * log2(e)                        */
    int batch;
    int num_q_heads;
    int num_kv_heads;
    int kv_len_max;                /* problem kv_len: bound on kv_lens[b]       */
    int window;                    /* 0 = unlimited                             */
    int sink_tokens;               /* visible despite the window                */
    int num_splits;                /* workspace slots of split pieces; 1 = none */
    int split_tokens;              /* positions a split (MLA); decode: unused   */
    int *ws_meta;                  /* per segment (first slot, pieces)          */
    const float *sinks;            /* [h] learned sink logits (natural log) or NULL */
    float softcap_inv;             /* SOFTCAP: 2 / c (cap c = logit_softcap)     */
    float softcap_log2;            /* SOFTCAP: c * log2(e)                       */
    int ring_period;               /* RING: window + draft_slots                 */
    const int *page_indptr;        /* CSR: [b + 1]; pages of b from indptr[b]   */
    const int *page_indices;       /* CSR: page ids                             */
    const int *last_page_len;      /* CSR: [b]; length (n_b - 1) PS + this      */
    /* SCORES (decode_scores.cuh): the caller's buffer and the workspace the
     * kernels leave the logits and final LSEs in for fmqa_decode_scores. */
    int sc_nv;                     /* positions per row of ws_x                 */
    float *scores;                 /* [b, hk, slot], added to                   */
    long long sc_sb, sc_sh;
    float *ws_x;                   /* [b, hk, row, sc_nv] base-2 logits         */
    float *ws_sl;                  /* [b, t, h] final base-2 LSE (with sink)    */
} fmqa_decode_params;

typedef struct fmqa_append_params {
    const void *k_new;             /* [b, t, hk, d]                             */
    const void *v_new;
    long long kn_sb, kn_st, kn_sh;
    long long vn_sb, vn_st, vn_sh;
    void *q;                       /* [b, t, h, d], RoPE in place, or NULL      */
    long long q_sb, q_st, q_sh;
    void *k;                       /* cache, layouts as decode                  */
    void *v;
    long long k_sb, k_st, k_sh;
    long long v_sb, v_st, v_sh;
    float *k_scale;
    float *v_scale;
    long long ks_sb, ks_st, ks_sh;
    long long vs_sb, vs_st, vs_sh;
    const int *start_pos;          /* [b]                                       */
    const int *page_table;
    long long pt_stride;
    float rope_theta;
    int batch;
    int num_q_heads;
    int num_kv_heads;
    int n_new;                     /* new tokens per sequence                   */
    int window;                    /* ring slots after the sinks when RING:
                                      window + draft_slots                      */
    int sink_tokens;
    const float *rope_cs;          /* [rope_cs_len, rope_cs_stride]: cos, sin of
                                      the rotated pairs per position; NULL =
                                      rope_theta                                */
    long long rope_cs_stride;
    long long rope_cs_len;
    const int *page_indptr;        /* CSR: [b + 1]; pages of b from indptr[b]   */
    const int *page_indices;       /* CSR: page ids                             */
    const int *slot_mapping;       /* SLOT_MAP: [b * n_new + t] slot or -1      */
    const void *k_pe_new;          /* LATENT: [b, t, rope part] apart from the
                                      latent in k_new rows, or NULL            */
    long long kpn_sb, kpn_st;
    const int *rope_pos;           /* [b] RoPE positions, or NULL = start_pos   */
} fmqa_append_params;

/* Prefill (fmqa_prefill in fastmqa.h has the semantics).  Rows are packed per
 * sequence: token i of sequence b is row cu_seqlens_q[b] + i of q, o and lse,
 * and, without a cache (kv_lens == NULL), of k and v, where it is position i.
 * With a cache (kv_lens != NULL) k, v and the scales are addressed as decode's
 * (batch or page, slot, head) and token i sits at position kv_lens[b] - Tq_b +
 * i.  The kernel trusts cu_seqlens_q and kv_lens as fastmqa.h states. */
typedef struct fmqa_prefill_params {
    const void *q;                 /* [total_q, h, d]                           */
    long long q_st, q_sh;
    const void *k;                 /* cache: [b|page, j, hk, d]; else [total_q, hk, d] */
    const void *v;
    long long k_sb, k_st, k_sh;    /* k_sb, v_sb: cache only                    */
    long long v_sb, v_st, v_sh;
    const float *k_scale;          /* [b|page, j, hk]; 8-bit caches only        */
    const float *v_scale;
    long long ks_sb, ks_st, ks_sh;
    long long vs_sb, vs_st, vs_sh;
    const int *cu_seqlens_q;       /* [b + 1]                                   */
    const int *kv_lens;            /* [b] with a cache, else NULL               */
    const int *page_table;         /* [b, pt_stride] when paged                 */
    long long pt_stride;
    void *o;                       /* [total_q, h, dv]                          */
    long long o_st, o_sh;
    float *lse;                    /* [total_q, h] natural log, or NULL         */
    void *workspace;               /* the plan's workspace bytes, or NULL       */
    float sm_scale;                /* softmax scale                             */
    float sm_scale_log2;           /* sm_scale * log2(e)                        */
    int batch;
    int num_q_heads;
    int num_kv_heads;
    int q_tokens_max;              /* problem q_tokens: bound on Tq_b           */
    int kv_len_max;                /* problem kv_len: bound on kv_lens[b]       */
    int window;                    /* 0 = unlimited                             */
    int sink_tokens;               /* visible despite the window                */
    float softcap_inv;             /* SOFTCAP: 2 / c (cap c = logit_softcap)     */
    float softcap_log2;            /* SOFTCAP: c * log2(e)                       */
    const float *sinks;            /* [h] learned sink logits (natural log) or NULL */
    /* SCORES (prefill_scores.cuh): the caller's buffer, the observation
     * window and the workspace the window rows' final LSEs go to. */
    float *scores;                 /* [b, hk, slot], added to                   */
    long long sc_sb, sc_sh;
    int sc_window;                 /* last new tokens of a sequence that score  */
    float *ws_sl;                  /* [total_q, h] final base-2 LSE (with sink) */
} fmqa_prefill_params;

/* prefill_sm90's argument (templates/prefill_sm90.cuh): the prefill params,
 * new-token K/V only (kv_lens NULL), and TMA maps of q, k and v as 3D
 * tensors (d, heads, total_q rows; strides from the params) with boxes of
 * (64, 1, 128) for q and (64, 1, BLOCK_N) for k and v, 128-byte swizzle
 * (rt_prefill_sm90_maps in runtime/rt_cuda.c encodes them).  The kernel takes
 * it __grid_constant__. */
typedef struct fmqa_prefill_sm90_params {
    fmqa_tensor_map tm_q, tm_k, tm_v;
    fmqa_prefill_params p;
} fmqa_prefill_sm90_params;

/* fmqa_compress (compress.cuh): policy fields as fmqa_compress_policy. */
typedef struct fmqa_compress_params {
    void *k;                       /* cache, layouts as decode                  */
    void *v;
    long long k_sb, k_st, k_sh;
    long long v_sb, v_st, v_sh;
    float *k_scale;
    float *v_scale;
    long long ks_sb, ks_st, ks_sh;
    long long vs_sb, vs_st, vs_sh;
    const int *page_table;
    long long pt_stride;
    const int *kv_lens;            /* [b]                                       */
    int *new_lens;                 /* [b]                                       */
    float *scores;                 /* [b, hk, slot] or NULL                     */
    long long sc_sb, sc_sh;
    int *kept;                     /* [b, hk, slot] or NULL                     */
    long long kept_sb, kept_sh;
    unsigned *ws_key;              /* [b, hk, kv_len] ordered keys              */
    int *ws_sel;                   /* [b, hk, kv_len] kept slots                */
    int batch;
    int num_kv_heads;
    int kv_len_max;
    int sink_tokens, recent, heavy, pooling, pool, per_sequence;
    int pad;
    int *free_pages;               /* [b, pt_stride] released pages, or NULL    */
} fmqa_compress_params;

#endif /* FMQA_PARAMS_H */
