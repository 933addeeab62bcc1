/*
 * gen_problem.c -- the compact problem spec shared by fastmqa-gen, -tune and
 * -bench ("op=decode,batch=8,heads=32,..."), and device presets that stand in
 * for a GPU when none is present.
 *
 * The parser is all-or-nothing: *out is written only when every token parsed,
 * and an error quotes the token it stopped at.
 */
#define _POSIX_C_SOURCE 200809L /* strtok_r */
#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nvrtc.h>

#include "gen.h"

typedef struct int_key {
    const char *key;
    size_t offset;
    int32_t min;
} int_key;

static const int_key int_keys[] = {
    {"batch", offsetof(fmqa_problem, batch), 1},
    {"heads", offsetof(fmqa_problem, num_q_heads), 1},
    {"kv_heads", offsetof(fmqa_problem, num_kv_heads), 1},
    {"d", offsetof(fmqa_problem, head_dim_qk), 1},
    {"dv", offsetof(fmqa_problem, head_dim_v), 1},
    {"tq", offsetof(fmqa_problem, q_tokens), 1},
    {"kv_len", offsetof(fmqa_problem, kv_len), 1},
    {"page", offsetof(fmqa_problem, page_size), 0},
    {"window", offsetof(fmqa_problem, window), 0},
    {"sinks", offsetof(fmqa_problem, sink_tokens), 0},
    {"draft_slots", offsetof(fmqa_problem, draft_slots), 0},
    {"rope_dim", offsetof(fmqa_problem, rope_dim), 0},
};

typedef struct dtype_key {
    const char *key;
    size_t offset;
} dtype_key;

static const dtype_key dtype_keys[] = {
    {"q", offsetof(fmqa_problem, q_dtype)},
    {"kv", offsetof(fmqa_problem, kv_dtype)},
    {"out", offsetof(fmqa_problem, out_dtype)},
};

static const char *const rope_names[] = {"none", "neox", "gptj"};
/* Problem flags by name, as specs write them (FMQA_FLAG_* of fastmqa.h). */
static const struct {
    const char *name;
    uint32_t bit;
} flag_names[] = {
    {"causal", FMQA_FLAG_CAUSAL}, {"paged", FMQA_FLAG_PAGED}, {"tree", FMQA_FLAG_TREE_MASK},
    {"lse", FMQA_FLAG_LSE},       {"ring", FMQA_FLAG_RING},   {"invariant", FMQA_FLAG_BATCH_INVARIANT},
    {"kv_cache", FMQA_FLAG_KV_CACHE}, {"latent", FMQA_FLAG_LATENT},
    {"csr", FMQA_FLAG_PAGE_CSR},  {"slot_mapping", FMQA_FLAG_SLOT_MAPPING}, {"scores", FMQA_FLAG_SCORES},
};

static int parse_flags(const char *v, uint32_t *flags)
{
    *flags = 0;
    if (strcmp(v, "none") == 0 || !*v)
        return 0;
    while (*v) {
        size_t n = strcspn(v, "|");
        int found = 0;
        for (size_t i = 0; i < sizeof flag_names / sizeof flag_names[0]; i++)
            if (strlen(flag_names[i].name) == n && strncmp(v, flag_names[i].name, n) == 0) {
                *flags |= flag_names[i].bit;
                found = 1;
            }
        if (!found)
            return -1;
        v += n + (v[n] == '|');
    }
    return 0;
}

static int parse_dtype(const char *v, fmqa_dtype *out)
{
    for (int t = FMQA_DTYPE_F16; t <= FMQA_DTYPE_FP8_E4M3; t++)
        if (strcmp(v, fmqa_dtype_name((fmqa_dtype)t)) == 0) {
            *out = (fmqa_dtype)t;
            return 0;
        }
    return -1;
}

/* Applies one key=value; -1 with a message on error. */
static fmqa_status apply(fmqa_problem *p, const char *key, const char *val, int *dv_set,
                         fmqa_err *err)
{
    for (size_t i = 0; i < sizeof int_keys / sizeof int_keys[0]; i++) {
        if (strcmp(key, int_keys[i].key) != 0)
            continue;
        char *end;
        errno = 0;
        long long v = strtoll(val, &end, 10);
        if (!*val || *end || errno || v < int_keys[i].min || v > INT32_MAX)
            return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT,
                                "problem: '%s=%s': expected an integer >= %d", key, val,
                                int_keys[i].min);
        *(int32_t *)((char *)p + int_keys[i].offset) = (int32_t)v;
        *dv_set |= strcmp(key, "dv") == 0;
        return FMQA_OK;
    }
    for (size_t i = 0; i < sizeof dtype_keys / sizeof dtype_keys[0]; i++)
        if (strcmp(key, dtype_keys[i].key) == 0) {
            if (parse_dtype(val, (fmqa_dtype *)((char *)p + dtype_keys[i].offset)) == 0)
                return FMQA_OK;
            return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT,
                                "problem: '%s=%s': expected f16, bf16, f32, int8 or fp8_e4m3",
                                key, val);
        }
    if (strcmp(key, "op") == 0) {
        for (int op = FMQA_OP_DECODE; op <= FMQA_OP_COMPRESS; op++)
            if (strcmp(val, fmqa_op_name((fmqa_op)op)) == 0) {
                p->op = (fmqa_op)op;
                return FMQA_OK;
            }
        return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT,
                            "problem: 'op=%s': expected decode, prefill, mla_decode, append or compress",
                            val);
    }
    if (strcmp(key, "kv_scale") == 0) {
        for (int g = FMQA_KV_SCALE_TOKEN_HEAD; g <= FMQA_KV_SCALE_TENSOR; g++)
            if (strcmp(val, fmqa_kv_scale_name((fmqa_kv_scale_granularity)g)) == 0) {
                p->kv_scale_granularity = (fmqa_kv_scale_granularity)g;
                return FMQA_OK;
            }
        return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT,
                            "problem: 'kv_scale=%s': expected token_head, head or tensor", val);
    }
    if (strcmp(key, "softcap") == 0) {
        char *end;
        errno = 0;
        float v = strtof(val, &end);
        if (!*val || *end || errno || !(v >= 0.0f) || !isfinite(v))
            return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT,
                                "problem: 'softcap=%s': expected a finite number >= 0", val);
        p->logit_softcap = v + 0.0f; /* -0 is 0: a spec reads back bit for bit */
        return FMQA_OK;
    }
    if (strcmp(key, "rope") == 0) {
        for (int r = 0; r < 3; r++)
            if (strcmp(val, rope_names[r]) == 0) {
                p->rope = (fmqa_rope)r;
                return FMQA_OK;
            }
        return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT,
                            "problem: 'rope=%s': expected none, neox or gptj", val);
    }
    if (strcmp(key, "flags") == 0) {
        if (parse_flags(val, &p->flags) == 0)
            return FMQA_OK;
        return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT,
                            "problem: 'flags=%s': expected '|'-separated causal, paged, tree, "
                            "lse, ring, invariant, kv_cache, latent, csr, slot_mapping, scores or none",
                            val);
    }
    return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT, "problem: '%s=%s': unknown key '%s'", key,
                        val, key);
}

static void problem_defaults(fmqa_problem *p)
{
    memset(p, 0, sizeof *p);
    p->op = FMQA_OP_DECODE;
    p->batch = p->num_q_heads = p->num_kv_heads = p->q_tokens = 1;
    p->head_dim_qk = 128;
    p->kv_len = 1024;
    p->q_dtype = p->kv_dtype = p->out_dtype = FMQA_DTYPE_F16;
    p->rope = FMQA_ROPE_NONE;
}

fmqa_status gen_problem_parse(const char *spec, fmqa_problem *out, fmqa_err *err)
{
    if (!spec)
        return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT, "problem: no spec");
    char buf[GEN_PROBLEM_TEXT_CAP];
    if (fmqa_strlcpy(buf, spec, sizeof buf) != 0)
        return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT, "problem: spec longer than %d bytes",
                            GEN_PROBLEM_TEXT_CAP - 1);
    fmqa_problem p;
    problem_defaults(&p);
    int dv_set = 0;
    for (char *save = NULL, *tok = strtok_r(buf, ", ", &save); tok;
         tok = strtok_r(NULL, ", ", &save)) {
        char *eq = strchr(tok, '=');
        if (!eq)
            return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT,
                                "problem: '%s': expected key=value", tok);
        *eq = '\0';
        fmqa_status st = apply(&p, tok, eq + 1, &dv_set, err);
        if (st != FMQA_OK)
            return st;
    }
    if (!dv_set)
        p.head_dim_v = p.head_dim_qk;
    *out = p;
    return FMQA_OK;
}

int gen_problem_format(const fmqa_problem *p, char *buf, size_t cap)
{
    char flags[160] = "";
    for (size_t i = 0; i < sizeof flag_names / sizeof flag_names[0]; i++)
        if (p->flags & flag_names[i].bit)
            snprintf(flags + strlen(flags), sizeof flags - strlen(flags), "%s%s",
                     flags[0] ? "|" : "", flag_names[i].name);
    const char *op = fmqa_op_name(p->op), *q = fmqa_dtype_name(p->q_dtype),
               *kv = fmqa_dtype_name(p->kv_dtype), *o = fmqa_dtype_name(p->out_dtype);
    const char *rope = (unsigned)p->rope < 3 ? rope_names[p->rope] : "?";
    int w = snprintf(buf, cap,
                     "op=%s,batch=%d,heads=%d,kv_heads=%d,d=%d,dv=%d,tq=%d,kv_len=%d,q=%s,kv=%s,"
                     "out=%s,page=%d,window=%d,sinks=%d,rope=%s,flags=%s",
                     op ? op : "?", p->batch, p->num_q_heads, p->num_kv_heads, p->head_dim_qk,
                     p->head_dim_v, p->q_tokens, p->kv_len, q ? q : "?", kv ? kv : "?",
                     o ? o : "?", p->page_size, p->window, p->sink_tokens, rope,
                     flags[0] ? flags : "none");
    /* Fields added after 0.1.0 only when not their default, so that specs (and
     * database keys) written before them read the same; %.9g gives back the
     * same float. */
    if (w >= 0 && (size_t)w < cap && p->kv_scale_granularity != FMQA_KV_SCALE_TOKEN_HEAD) {
        const char *g = fmqa_kv_scale_name(p->kv_scale_granularity);
        w += snprintf(buf + w, cap - (size_t)w, ",kv_scale=%s", g ? g : "?");
    }
    if (w >= 0 && (size_t)w < cap && p->logit_softcap != 0.0f)
        w += snprintf(buf + w, cap - (size_t)w, ",softcap=%.9g", (double)p->logit_softcap);
    if (w >= 0 && (size_t)w < cap && p->draft_slots != 0)
        w += snprintf(buf + w, cap - (size_t)w, ",draft_slots=%d", p->draft_slots);
    if (w >= 0 && (size_t)w < cap && p->rope_dim != 0) /* only when set: older texts stay */
        w += snprintf(buf + w, cap - (size_t)w, ",rope_dim=%d", p->rope_dim);
    return w < 0 || (size_t)w >= cap ? -1 : 0;
}

/* ------------------------------------------------------------ device presets */

typedef struct preset {
    const char *arch;
    const char *name;
    int cc_major, cc_minor, sm_count;
    int64_t memory, l2;
    int32_t smem_optin, smem_sm, clock_khz, mem_clock_khz, bus_bits;
} preset;

static const preset presets[] = {
    {"sm_80", "NVIDIA A100-SXM4-80GB", 8, 0, 108, 85899345920LL, 41943040, 166912, 167936,
     1410000, 1593000, 5120},
    {"sm_86", "NVIDIA RTX A6000", 8, 6, 84, 51527024640LL, 6291456, 101376, 102400, 1800000,
     8001000, 384},
    {"sm_89", "NVIDIA L40S", 8, 9, 142, 48305799168LL, 100663296, 101376, 102400, 2520000,
     9001000, 384},
    {"sm_90", "NVIDIA H100 80GB HBM3", 9, 0, 132, 85520809984LL, 52428800, 232448, 233472,
     1980000, 2619000, 5120},
    {"sm_90a", "NVIDIA H100 80GB HBM3", 9, 0, 132, 85520809984LL, 52428800, 232448, 233472,
     1980000, 2619000, 5120},
};

fmqa_status gen_device_preset(const char *arch, fmqa_device_info *out, fmqa_err *err)
{
    for (size_t i = 0; arch && i < sizeof presets / sizeof presets[0]; i++) {
        const preset *s = &presets[i];
        if (strcmp(arch, s->arch) != 0)
            continue;
        memset(out, 0, sizeof *out);
        snprintf(out->name, sizeof out->name, "%s (preset %s)", s->name, s->arch);
        out->cc_major = s->cc_major;
        out->cc_minor = s->cc_minor;
        out->sm_count = s->sm_count;
        out->total_memory = s->memory;
        out->l2_bytes = s->l2;
        out->smem_per_block_optin = s->smem_optin;
        out->smem_per_sm = s->smem_sm;
        out->regs_per_sm = 65536;
        out->max_threads_per_block = 1024;
        out->clock_khz = s->clock_khz;
        out->mem_clock_khz = s->mem_clock_khz;
        out->mem_bus_width = s->bus_bits;
        if (nvrtcVersion(&out->nvrtc_major, &out->nvrtc_minor) != NVRTC_SUCCESS)
            out->nvrtc_major = out->nvrtc_minor = 0;
        snprintf(out->arch, sizeof out->arch, "%s", s->arch);
        return FMQA_OK;
    }
    return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT,
                        "unknown architecture '%s' (presets: sm_80, sm_86, sm_89, sm_90, sm_90a)",
                        arch ? arch : "(null)");
}
