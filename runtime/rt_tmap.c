/*
 * rt_tmap.c -- TMA tensor maps for the sm_90 kernels: rt_tmap_encode over the
 * driver's cuTensorMapEncodeTiled, and the maps prefill_sm90 takes, described
 * apart from their encoding so that the CPU emulator's tests encode the very
 * same descriptions with its model of the driver.
 */
#include <string.h>

#include "rt_cuda.h"

fmqa_status rt_tmap_encode(const rt_cuda *cu, const rt_tmap_desc *d, fmqa_tensor_map *out, fmqa_err *err)
{
    _Static_assert(sizeof(fmqa_tensor_map) == sizeof(CUtensorMap), "fmqa_tensor_map is a CUtensorMap");
    static const CUtensorMapDataType types[9] = {
        [1] = CU_TENSOR_MAP_DATA_TYPE_UINT8, [2] = CU_TENSOR_MAP_DATA_TYPE_UINT16,
        [4] = CU_TENSOR_MAP_DATA_TYPE_UINT32, [8] = CU_TENSOR_MAP_DATA_TYPE_UINT64};
    static const CUtensorMapSwizzle swizzles[5] = {CU_TENSOR_MAP_SWIZZLE_NONE, CU_TENSOR_MAP_SWIZZLE_32B,
                                                   CU_TENSOR_MAP_SWIZZLE_64B, 0, CU_TENSOR_MAP_SWIZZLE_128B};
    if (d->rank < 1 || d->rank > 5 || d->elem_bytes < 1 || d->elem_bytes > 8 || !types[d->elem_bytes] ||
        (d->swizzle != 0 && d->swizzle != 32 && d->swizzle != 64 && d->swizzle != 128))
        return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT,
                            "tensor map: rank %d, element size %d, swizzle %d (1..5; 1, 2, 4, 8; 0, 32, 64, 128)",
                            d->rank, d->elem_bytes, d->swizzle);
    cuuint64_t dims[5], strides[4];
    cuuint32_t box[5], ones[5] = {1, 1, 1, 1, 1};
    for (int i = 0; i < d->rank; i++) {
        dims[i] = d->dims[i];
        box[i] = d->box[i];
        if (i > 0)
            strides[i - 1] = d->strides[i - 1];
    }
    const CUresult r = cu->cuTensorMapEncodeTiled(
        (CUtensorMap *)out, types[d->elem_bytes], (cuuint32_t)d->rank, (void *)d->base, dims, strides, box, ones,
        CU_TENSOR_MAP_INTERLEAVE_NONE, swizzles[d->swizzle / 32], CU_TENSOR_MAP_L2_PROMOTION_L2_128B,
        CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
    if (r == CUDA_ERROR_INVALID_VALUE)
        return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT,
                            "tensor map rejected by the driver: base %p (16-byte aligned?), strides multiples "
                            "of 16, box 1..256 with box[0] * %d bytes a multiple of 16 within the %d-byte swizzle",
                            d->base, d->elem_bytes, d->swizzle);
    return r == CUDA_SUCCESS ? FMQA_OK : rt_cuda_error(err, r, "cuTensorMapEncodeTiled");
}

void rt_prefill_sm90_descs(const fmqa_prefill_params *p, long long total_q, int head_dim, int block_n,
                           rt_tmap_desc out[3])
{
    const void *base[3] = {p->q, p->k, p->v};
    const long long sh[3] = {p->q_sh, p->k_sh, p->v_sh}, st[3] = {p->q_st, p->k_st, p->v_st};
    const long long heads[3] = {p->num_q_heads, p->num_kv_heads, p->num_kv_heads};
    for (int i = 0; i < 3; i++) {
        rt_tmap_desc *d = &out[i];
        memset(d, 0, sizeof *d);
        d->base = base[i];
        d->rank = 3;
        d->elem_bytes = 2;
        d->swizzle = 128;
        d->dims[0] = (unsigned long long)head_dim;
        d->dims[1] = (unsigned long long)heads[i];
        d->dims[2] = (unsigned long long)total_q;
        d->strides[0] = (unsigned long long)sh[i] * 2;
        d->strides[1] = (unsigned long long)st[i] * 2;
        d->box[0] = 64;
        d->box[1] = 1;
        d->box[2] = i == 0 ? 128u : (unsigned)block_n;
    }
}

fmqa_status rt_prefill_sm90_maps(const rt_cuda *cu, const fmqa_prefill_params *p, long long total_q,
                                 int head_dim, int block_n, fmqa_prefill_sm90_params *out, fmqa_err *err)
{
    rt_tmap_desc d[3];
    rt_prefill_sm90_descs(p, total_q, head_dim, block_n, d);
    fmqa_tensor_map *maps[3] = {&out->tm_q, &out->tm_k, &out->tm_v};
    for (int i = 0; i < 3; i++) {
        fmqa_status st = rt_tmap_encode(cu, &d[i], maps[i], err);
        if (st != FMQA_OK)
            return st;
    }
    out->p = *p;
    return FMQA_OK;
}
