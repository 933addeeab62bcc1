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

#define FMQA_PARAMS_VERSION 2

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
    float *ws_o;                   /* split partials [split, b, t, h, dv] fp32  */
    float *ws_lse;                 /* split partials [split, b, t, h] fp32      */
    float sm_scale;                /* softmax scale                             */
    float sm_scale_log2;           /* sm_scale * log2(e)                        */
    int batch;
    int num_q_heads;
    int num_kv_heads;
    int kv_len_max;                /* problem kv_len: bound on kv_lens[b]       */
    int window;                    /* 0 = unlimited                             */
    int sink_tokens;               /* visible despite the window                */
    int num_splits;                /* KV splits; 1 = no combine pass            */
    int split_tokens;              /* KV tokens per split (multiple of tile)    */
    /* SCORES (decode.cuh, "Scores"): the caller's buffer and the workspace
     * the kernel leaves its probabilities in for fmqa_decode_scores. */
    float *scores;                 /* [b, hk, slot], added to                   */
    long long sc_sb, sc_sh;
    unsigned short *ws_p;          /* [b, hk, row, sc_nv] f16 probabilities     */
    float *ws_pm;                  /* [b, hk, row, sc_nv / 16] their tile bases */
    int sc_nv;                     /* kv_len_max rounded up to 16               */
    int sc_pad;                    /* keeps the struct's size a multiple of 8   */
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
    int window;                    /* ring slots after the sinks when RING      */
    int sink_tokens;
    int pad;
    const int *rope_pos;           /* [b] RoPE positions, or NULL = start_pos   */
} fmqa_append_params;

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
} fmqa_compress_params;

#endif /* FMQA_PARAMS_H */
