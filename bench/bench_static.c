/*
 * bench_static.c -- `fastmqa-bench static`: what the CPU can tell about the
 * kernels of the benchmark shapes, without a GPU (docs/PERFORMANCE.md,
 * "Static figures").  For each shape and architecture preset (sm_80, sm_90,
 * and sm_90a where a template renders for it) the dispatcher's choice without
 * a database (the template default through the Lua plan) is rendered and
 * compiled with NVRTC exactly as the runtime does; then:
 *
 *   decode   registers, spills, shared memory, CTAs per SM and waves on the
 *            preset, bytes in flight per SM (CTAs/SM x (STAGES - 1) x tile),
 *            the main loop's SASS (instructions per KV byte, I_B = warps x
 *            instructions per tile / tile bytes; integer instructions per
 *            16-byte copy), dependent global round trips before the first KV
 *            copy, and the combine's CTAs, registers and round trips per thread;
 *   append   registers, spills, shared memory, CTAs per SM, waves (RoPE on);
 *   prefill  registers, spills, shared memory, CTAs per SM, waves, bytes in
 *            flight per SM and the main loop's SASS mix per K/V tile
 *            (instructions, HMMA, ldmatrix, copies, MUFU), for the prefill
 *            shapes (bench_prefill_select); and the tensor-core instructions
 *            of the whole kernel (HGMMA: wgmma, sm_90a's prefill_sm90; HMMA:
 *            mma.sync), counted statically.  mla rows count them too
 *            (HGMMA: mla_decode_sm90, the dispatcher's choice on sm_90a).
 *   mla      MLA decode (a few shapes of `fastmqa-bench mla` by default): the
 *            decode figures without the SASS ones (its MMAs sit in inner
 *            loops and its copies in branches, which the path model of
 *            tun_sass.c does not follow), its tile one latent row per token.
 *   scores   (--scores) decode with FMQA_FLAG_SCORES: the decode figures of
 *            that variant (its main loop keeps the logits), the
 *            epilogue's CTAs and the bytes the scores add per KV byte read,
 *            (8 M + 8) / (2 d EB [+ 8]) with M = group x query tokens
 *            (templates/decode_scores.cuh; fmqa_score_cost_bytes), per call
 *            and amortised over the level presets' score schedule for the
 *            shape (fmqa_score_schedule: score_steps of compress_every
 *            decode steps score).
 *   pscores  (--scores) each prefill shape with FMQA_FLAG_SCORES and a
 *            PSCORES_WINDOW-token observation window: the prefill figures of
 *            that variant, the scores kernel's registers, spills and CTAs,
 *            and what it adds to the prefill of the shape (full lengths) in
 *            bytes (K once, the scores read and written, the window rows'
 *            LSEs written and read) and in warp-instructions (its chunk
 *            loop's SASS x tiles x chunks), against the prefill's K/V tile
 *            bytes and main-loop instructions (templates/prefill_scores.cuh).
 *
 * The SASS figures need cuobjdump (tun_sass_disassemble); without it they are
 * null in JSON and "-" in the table, with a note.  tun_sass.c describes the
 * path model and its limits.  The decode figures read BLOCK_N, STAGES, WARPS_M
 * and M_TILES from the config; a template without BLOCK_N gets no tile figures.
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench.h"
#include "tun.h"

#define MAX_ARCHS 4

typedef struct kstat {      /* one compiled kernel entry on one preset       */
    int ok, regs, spill, smem, threads, ctas, ctas_per_sm;
    double waves;
} kstat;

typedef struct srow {
    int arch;
    const char *op;          /* "decode", "append", "prefill" or "mla"       */
    fmqa_problem p;
    char id[96];             /* the shape's id                                 */
    char config[GEN_CONFIG_TEXT_CAP];
    char cubin_arch[16];
    fmqa_status st;
    int skip;                /* sm_90a for a template that does not use it, or
                                an MLA shape's append row                      */
    char why[256];
    int splits;
    double balance;          /* mean / most work units a CTA (full lengths)  */
    kstat k, combine;
    double tile_bytes, inflight_kb;
    int sass;                /* the SASS figures below are valid              */
    tun_sass_loop loop;
    int bulk;                /* decode BULK = 1: a producer warp issues the copies */
    tun_sass_loop producer;  /* its loop (bulk), per tile                        */
    double ib;
    int prologue_trips, combine_trips, combine_slices;
    char sass_why[160];
    int hgmma, hmma;         /* prefill: static counts; -1 without cuobjdump   */
    double score_bytes;      /* scores rows: added bytes per KV byte, per call;
                                pscores rows: added bytes / the prefill's K/V bytes */
    int64_t score_every, score_steps; /* the presets' schedule for the shape  */
    kstat scores;            /* scores rows: the epilogue kernel; pscores: the
                                scores kernel                                  */
    tun_sass_loop sloop;     /* pscores: the scores kernel's chunk loop       */
    double score_insts;      /* pscores: added / the prefill's warp-instructions */
} srow;

/* The observation window of pscores rows: SnapKV's default (Li et al. 2024). */
#define PSCORES_WINDOW 32

typedef struct sopts {
    const char *shapes, *archs, *config;
    char *custom[32];
    int n_custom, json, list, threads, invariant, scores;
} sopts;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: fastmqa-bench static [options]\n"
            "Static figures of the kernels the dispatcher picks without a database (template\n"
            "defaults) for the benchmark shapes, from NVRTC and the SASS; no GPU needed.\n"
            "  --shapes P,...    shapes whose id matches a pattern (fnmatch), as in decode;\n"
            "                    prefill shapes: prefill-b4-t4096-hkv8-d128, ... (all by default)\n"
            "  --shape B,T,Hkv,KV[,d]  a custom shape (repeatable)\n"
            "  --arch A,...      presets (default sm_80,sm_90,sm_90a; sm_90a rows appear only\n"
            "                    where a template compiles for it)\n"
            "  --threads N       NVRTC compile threads (default 2)\n"
            "  --invariant       decode problems with FMQA_FLAG_BATCH_INVARIANT\n"
            "  --config TEXT     parameters overriding the chosen config of each row whose\n"
            "                    template has them (e.g. BULK=1: decode's sm_90 bulk pipeline);\n"
            "                    a row whose template refuses the result shows why\n"
            "  --scores          also decode with FMQA_FLAG_SCORES (heavy-hitter scores)\n"
            "                    and prefill with it (a 32-token observation window)\n"
            "  --list            print the shape ids (KV bytes, prefill flops), then exit\n"
            "  --json            one JSON document instead of the table\n"
            "  --help\n"
            "SASS figures need cuobjdump ($CUOBJDUMP, PATH, or pip's nvidia-cuda-cuobjdump).\n"
            "docs/PERFORMANCE.md defines every column.\n");
}

/* CTAs one SM holds: registers (per warp, rounded up to 256), shared memory
 * (1 KB reserved per CTA), threads (2048) and 32 CTAs. */
static int ctas_per_sm(const fmqa_device_info *d, int regs, int smem, int threads)
{
    int warps = (threads + 31) / 32;
    int per_warp = (regs * 32 + 255) / 256 * 256;
    int by_regs = per_warp ? d->regs_per_sm / (per_warp * warps) : 32;
    int by_smem = d->smem_per_sm / (smem + 1024);
    int by_threads = 2048 / (warps * 32);
    int n = by_regs < by_smem ? by_regs : by_smem;
    n = n < by_threads ? n : by_threads;
    return n < 32 ? n : 32;
}

static kstat kernel_stat(const fmqa_device_info *d, const gen_kernel *k, const gen_binary *b)
{
    kstat s = {0};
    for (int i = 0; i < b->n_resources; i++) {
        const gen_resource *r = &b->resources[i];
        if (strcmp(r->entry, k->entry))
            continue;
        s.ok = 1;
        s.regs = r->registers;
        s.spill = r->spill_stores + r->spill_loads;
        s.smem = (int)k->shared + r->smem_bytes;
    }
    s.threads = (int)(k->block[0] * k->block[1] * k->block[2]);
    s.ctas = (int)(k->grid[0] * k->grid[1] * k->grid[2]);
    s.ctas_per_sm = s.ok ? ctas_per_sm(d, s.regs, s.smem, s.threads) : 0;
    s.waves = s.ctas_per_sm ? (double)s.ctas / ((double)d->sm_count * s.ctas_per_sm) : 0;
    return s;
}

static int64_t cfg(const gen_config *c, const char *name)
{
    int64_t v = 0;
    return gen_config_get(c, name, &v) ? v : 0;
}

/* Bytes of one KV row a tile holds: K and V, or MLA's one latent row. */
static int row_values(const fmqa_problem *p)
{
    return p->op == FMQA_OP_MLA_DECODE ? p->head_dim_qk : p->head_dim_qk + p->head_dim_v;
}

/* The SASS figures of a decode or MLA row (main loop, prologue, combine). */
static void decode_sass(const gen_binary *b, const fmqa_problem *p, const gen_config *c,
                        const char *entry, const char *combine_entry, srow *r)
{
    char *text = NULL;
    tun_sass *s = NULL;
    fmqa_err err = {0};
    int eb = fmqa_dtype_size(p->kv_dtype), bn = (int)cfg(c, "BLOCK_N");
    int threads = r->k.threads ? r->k.threads : 1;
    /* BULK = 1 (decode.cuh, "Load pipeline"): the last warp copies every row
     * of K and V, one bulk copy each; the compute warps copy nothing */
    r->bulk = cfg(c, "BULK") == 1;
    int compute_warps = threads / 32 - r->bulk;
    /* A thread's share of the tile's copies in 4-byte words: K and V, and
     * for 8-bit caches their two fp32 scales a token (decode.cuh spreads
     * those over all threads; a path that skips them is not the mean) */
    int words = r->bulk ? 0 : (bn * row_values(p) * eb + (eb == 1 ? 8 * bn : 0)) / 4 / threads;
    /* Before the first copy a thread loads its kv_lens entries for the
     * schedule's scan (decode.cuh, sched_locate): ceil(B / threads) of them,
     * twice when the batch takes more than one step; Q comes after the first
     * copies. */
    int steps = (p->batch + threads - 1) / threads;
    int q_bytes = 4 * steps * (steps > 1 ? 2 : 1);
    fmqa_status st = tun_sass_disassemble(b->cubin, b->size, &text, &err);
    if (st == FMQA_OK)
        st = tun_sass_parse(text, &s, &err);
    if (st == FMQA_OK)
        st = tun_sass_main_loop_words(s, entry, words, &r->loop, &err);
    if (st == FMQA_OK && r->bulk)
        st = tun_sass_bulk_loop(s, entry, 2 * bn, (double)bn * row_values(p) * eb, &r->producer, &err);
    if (st == FMQA_OK)
        st = tun_sass_round_trips(s, entry, TUN_SASS_TO_FIRST_COPY, q_bytes,
                                  &r->prologue_trips, &err);
    if (st == FMQA_OK && r->combine.ok) {
        /* fmqa_combine.cuh: a CTA of a row's column slice gives each float4
         * column threads / columns groups; a thread copies its group's pieces
         * in batches of FMQA_C_BATCH = 8 16-byte cp.async. */
        int cols = p->head_dim_v / 4 / (r->combine_slices ? r->combine_slices : 1);
        int groups = r->combine.threads / (cols > 0 ? cols : 1);
        int mine = (r->splits + (groups > 0 ? groups : 1) - 1) / (groups > 0 ? groups : 1);
        int per_thread = (mine + 7) / 8 * 8;
        st = tun_sass_round_trips(s, combine_entry, TUN_SASS_TO_EXIT, per_thread,
                                  &r->combine_trips, &err);
    }
    r->sass = st == FMQA_OK;
    if (r->sass)
        r->ib = (compute_warps * r->loop.insts + (r->bulk ? r->producer.insts : 0)) / r->tile_bytes;
    else
        fmqa_strlcpy(r->sass_why, err.msg, sizeof r->sass_why);
    tun_sass_free(s);
    free(text);
}

static void decode_figures(const fmqa_device_info *d, const fmqa_problem *p, const gen_config *c,
                           const gen_plan *plan, const gen_binary *b, srow *r)
{
    r->k = kernel_stat(d, &plan->kernels[0], b);
    /* kernel 1 is the combine when there is one (not the scores epilogue) */
    if (plan->n_kernels > 1 && strstr(plan->kernels[1].entry, "_combine")) {
        r->combine = kernel_stat(d, &plan->kernels[1], b);
        r->combine_slices = (int)plan->kernels[1].grid[1];
    }
    /* The most pieces a segment is merged from (lib/sched.lua's scalar), else
     * the workspace slots. */
    int64_t pieces;
    r->splits = gen_plan_scalar(plan, "pieces", &pieces) ? (int)pieces : plan->splits;
    /* Units of the persistent schedule (lib/sched.lua) at full lengths, in
     * ranges of ceil(U / CTAs): how busy the average CTA is against the
     * busiest; 1 without the scalar (one unit a CTA). */
    int64_t units;
    int64_t ctas = r->k.ctas > 0 ? r->k.ctas : 1;
    r->balance = gen_plan_scalar(plan, "units", &units) && units > 0
                     ? (double)units / (double)(ctas * ((units + ctas - 1) / ctas))
                     : 1.0;
    int eb = fmqa_dtype_size(p->kv_dtype), bn = (int)cfg(c, "BLOCK_N");
    const int scales = p->op == FMQA_OP_MLA_DECODE ? 4 : 8; /* per token: one or two floats */
    r->tile_bytes = (double)bn * row_values(p) * eb + (eb == 1 ? (double)scales * bn : 0);
    if (p->flags & FMQA_FLAG_SCORES) { /* decode_scores.cuh: 4 M written, 4 M read, 8 */
        int64_t added, read;
        fmqa_score_cost_bytes(p, &added, &read);
        r->score_bytes = (double)added / (double)read;
        fmqa_score_schedule(p, &r->score_every, &r->score_steps);
        r->scores = kernel_stat(d, &plan->kernels[plan->n_kernels - 1], b);
    }
    /* tiles loading while one computes: STAGES - 1, or mla_decode_sm90's
     * PIPE - 1 pairs of blocks; a ring of bulk copies (BULK = 1) refills a
     * stage as soon as it is read: all STAGES tiles in flight */
    int64_t pipe = 0, ahead = gen_config_get(c, "PIPE", &pipe) ? 2 * (pipe - 1)
                                                               : cfg(c, "STAGES") - 1 + (cfg(c, "BULK") == 1);
    r->inflight_kb = r->k.ctas_per_sm * (double)ahead * r->tile_bytes / 1024.0;
    if (p->op == FMQA_OP_MLA_DECODE) /* its MMAs sit in inner loops, its copies in branches */
        snprintf(r->sass_why, sizeof r->sass_why,
                 "the SASS path model (tun_sass.c) follows decode's loop shape, not MLA's");
    else if (bn > 0 && r->k.ok)
        decode_sass(b, p, c, plan->kernels[0].entry,
                    r->combine.ok ? plan->kernels[1].entry : "", r);
    else
        snprintf(r->sass_why, sizeof r->sass_why, "no BLOCK_N in the config");
}

/* Static tensor-core instruction counts of a cubin's SASS (HGMMA, HMMA). */
static void mma_mix(const gen_binary *b, srow *r)
{
    char *text = NULL;
    fmqa_err err;
    r->hgmma = r->hmma = -1;
    if (tun_sass_disassemble(b->cubin, b->size, &text, &err) != FMQA_OK) {
        fmqa_strlcpy(r->sass_why, err.msg, sizeof r->sass_why);
        return;
    }
    r->hgmma = r->hmma = 0;
    for (const char *t = text; (t = strstr(t, "MMA")) != NULL; t += 3) {
        r->hgmma += t - text >= 2 && !strncmp(t - 2, "HGMMA", 5);
        r->hmma += t - text >= 1 && !strncmp(t - 1, "HMMA", 4);
    }
    free(text);
}

/* A prefill row: the kernel, its K/V tile and the SASS mix of its main loop:
 * with cp.async (prefill) the path on which a thread copies its share of the
 * K and V tile per iteration; with TMA (prefill_sm90, whose plan gives
 * tma_box_n: one thread issues the copies) the consumer warps' path that
 * issues the tile's wgmma, HEAD_DIM / 16 for S = Q K^T and BLOCK_N / 16 for
 * P V, and only the consumer warpgroups (all but the first) run it. */
static void prefill_figures(const fmqa_device_info *d, const fmqa_problem *p, const gen_config *c,
                            const gen_plan *plan, const gen_binary *b, srow *r)
{
    r->k = kernel_stat(d, &plan->kernels[0], b);
    int eb = fmqa_dtype_size(p->kv_dtype), bn = (int)cfg(c, "BLOCK_N");
    int threads = r->k.threads ? r->k.threads : 1;
    int64_t box_n;
    const int tma = gen_plan_scalar(plan, "tma_box_n", &box_n);
    const int warps = tma ? (threads - 128) / 32 : threads / 32;
    r->tile_bytes = (double)bn * (p->head_dim_qk + p->head_dim_v) * eb + (eb == 1 ? 8.0 * bn : 0);
    r->inflight_kb = r->k.ctas_per_sm * (cfg(c, "STAGES") - 1) * r->tile_bytes / 1024.0;
    int copies = (bn * (p->head_dim_qk + p->head_dim_v) * eb / 16 + threads - 1) / threads;
    char *text = NULL;
    tun_sass *s = NULL;
    fmqa_err err = {0};
    fmqa_status st = tun_sass_disassemble(b->cubin, b->size, &text, &err);
    if (st == FMQA_OK)
        st = tun_sass_parse(text, &s, &err);
    if (st == FMQA_OK)
        st = tma ? tun_sass_main_loop_mma(s, plan->kernels[0].entry,
                                          (p->head_dim_qk + bn) / 16, &r->loop, &err)
                 : tun_sass_main_loop(s, plan->kernels[0].entry, copies, &r->loop, &err);
    r->sass = st == FMQA_OK;
    if (r->sass)
        r->ib = warps * r->loop.insts / r->tile_bytes;
    else
        fmqa_strlcpy(r->sass_why, err.msg, sizeof r->sass_why);
    tun_sass_free(s);
    free(text);
}

/* A pscores row: the scores kernel (plan kernel 1) and its share of one
 * (sequence, KV head) of the shape at full length: tiles the prefill's row
 * blocks read (causal: up to each block's last position), tiles and
 * BLOCK_M-row chunks of the window the scores kernel computes. */
static void pscores_figures(const fmqa_device_info *d, const fmqa_problem *p, const gen_config *c,
                            const gen_plan *plan, const gen_binary *b, srow *r)
{
    r->scores = kernel_stat(d, &plan->kernels[1], b);
    const int64_t g = p->num_q_heads / p->num_kv_heads, bm = cfg(c, "BLOCK_M"), bn = cfg(c, "BLOCK_N");
    const int64_t tq = p->q_tokens, kv = p->kv_len, first = kv - tq, rows = tq * g;
    const int64_t w = tq < PSCORES_WINDOW ? tq : PSCORES_WINDOW, eb = fmqa_dtype_size(p->kv_dtype);
    if (bm <= 0 || bn <= 0)
        return;
    double tiles = 0;
    for (int64_t r0 = 0; r0 < rows; r0 += bm) {
        const int64_t t_hi = (r0 + bm - 1) / g < tq - 1 ? (r0 + bm - 1) / g : tq - 1;
        tiles += (double)(((p->flags & FMQA_FLAG_CAUSAL) ? first + t_hi + 1 : kv) + bn - 1) / bn;
    }
    const double s_tiles = (double)((kv + bn - 1) / bn), chunks = (double)((w * g + bm - 1) / bm);
    const double k_bytes = s_tiles * (bn * p->head_dim_qk * eb + (eb == 1 ? 4 * bn : 0));
    r->score_bytes = (k_bytes + 8.0 * kv + 8.0 * w * g) / (tiles * r->tile_bytes);
    const int64_t mt = bm / (16 * (r->scores.threads / 32 ? r->scores.threads / 32 : 1));
    char *text = NULL;
    tun_sass *s = NULL;
    fmqa_err err = {0};
    fmqa_status st = tun_sass_disassemble(b->cubin, b->size, &text, &err);
    if (st == FMQA_OK)
        st = tun_sass_parse(text, &s, &err);
    if (st == FMQA_OK) /* a warp's chunk: MT m-tiles x d / 16 x BLOCK_N / 8 HMMA for S */
        st = tun_sass_main_loop_mma(s, plan->kernels[1].entry,
                                    (int)(mt * p->head_dim_qk / 16 * bn / 8), &r->sloop, &err);
    if (st == FMQA_OK && r->sass && r->loop.insts > 0)
        r->score_insts = r->sloop.insts * s_tiles * chunks / (r->loop.insts * tiles);
    else if (st != FMQA_OK)
        fmqa_strlcpy(r->sass_why, err.msg, sizeof r->sass_why), r->sass = 0;
    tun_sass_free(s);
    free(text);
}

static fmqa_problem append_problem(const bench_shape *s)
{
    fmqa_problem p = bench_shape_problem(s);
    p.op = FMQA_OP_APPEND;
    p.rope = FMQA_ROPE_NEOX;
    p.flags = 0;
    return p;
}

/* A row of decode shape s (op "decode" or "append"). */
static srow shape_row(const bench_shape *s, int arch, const char *op)
{
    srow r = {.arch = arch, .op = op};
    r.p = strcmp(op, "append") ? bench_shape_problem(s) : append_problem(s);
    bench_shape_id(s, r.id, sizeof r.id);
    return r;
}

/* A row of prefill shape s (op "prefill", or "pscores": with
 * FMQA_FLAG_SCORES). */
static srow prefill_row(const bench_prefill_shape *s, int arch, const char *op)
{
    srow r = {.arch = arch, .op = op, .p = bench_prefill_problem(s)};
    if (!strcmp(op, "pscores"))
        r.p.flags |= FMQA_FLAG_SCORES;
    bench_prefill_shape_id(s, r.id, sizeof r.id);
    return r;
}

/* Sets the parameters of over that template t has in c; then checks c. */
static fmqa_status override(const gen_template *t, const gen_config *over, const fmqa_problem *p,
                            const fmqa_device_info *d, gen_config *c, fmqa_err *err)
{
    for (int i = 0; i < over->n; i++) {
        int64_t v;
        fmqa_status st = gen_config_get(c, over->p[i].name, &v)
                             ? gen_config_set(c, over->p[i].name, over->p[i].value, err)
                             : FMQA_OK;
        if (st != FMQA_OK)
            return st;
    }
    return gen_check(t, c, p, d, err);
}

/* Chooses (then overrides with over, unless NULL), plans, renders and
 * compiles one row; NVRTC runs on this thread. */
static void build_row(gen_lib *lib, const char *arch, const gen_config *over, srow *r)
{
    fmqa_device_info d;
    fmqa_err err = {0};
    fmqa_problem p = r->p;
    const int prefill = !strcmp(r->op, "prefill") || !strcmp(r->op, "pscores");
    const gen_template *t = NULL;
    gen_config c;
    fmqa_choice ch;
    gen_plan plan;
    gen_source src = {0};
    gen_binary b = {0};
    fmqa_status st = gen_device_preset(arch, &d, &err);
    if (st == FMQA_OK)
        st = rt_choose(lib, NULL, &d, &p, &t, &c, &ch, &err);
    if (prefill && st == FMQA_ERR_UNSUPPORTED) {
        r->skip = 1; /* no prefill template for this preset */
        return;
    }
    if (st == FMQA_OK && over)
        st = override(t, over, &p, &d, &c, &err);
    if (st == FMQA_OK)
        st = gen_launch_plan(t, &c, &p, &d, &plan, &err);
    if (st == FMQA_OK)
        st = gen_render(t, &c, &p, &d, &src, &err);
    if (st == FMQA_OK) {
        gen_config_text(&c, r->config, sizeof r->config);
        snprintf(r->cubin_arch, sizeof r->cubin_arch, "%s", src.arch);
        /* sm_90a only where the template renders for it; else the row is dropped */
        if (strcmp(arch, "sm_90a") || !strcmp(src.arch, "sm_90a"))
            st = gen_compile(&src, &b, &err);
        else
            r->skip = 1;
    }
    if (st == FMQA_OK && !r->skip && (!strcmp(r->op, "decode") || !strcmp(r->op, "mla") ||
                                      !strcmp(r->op, "scores")))
        decode_figures(&d, &p, &c, &plan, &b, r);
    else if (st == FMQA_OK && !r->skip && prefill)
        prefill_figures(&d, &p, &c, &plan, &b, r);
    if (st == FMQA_OK && !r->skip && !strcmp(r->op, "pscores"))
        pscores_figures(&d, &p, &c, &plan, &b, r);
    else if (st == FMQA_OK && !r->skip)
        r->k = kernel_stat(&d, &plan.kernels[0], &b);
    if (st == FMQA_OK && !r->skip && (prefill || !strcmp(r->op, "mla")))
        mma_mix(&b, r);
    r->st = st;
    if (st != FMQA_OK)
        fmqa_strlcpy(r->why, err.msg, sizeof r->why);
    gen_source_free(&src);
    gen_binary_free(&b);
}

/* ---------------------------------------------------------------- output */

static void json_num(const char *key, double v, int valid, const char *fmt, int comma)
{
    printf("\"%s\":", key);
    if (valid)
        printf(fmt, v);
    else
        printf("null");
    if (comma)
        putchar(',');
}

static void print_json_row(const srow *r, const char **archs)
{
    printf("{\"shape\":\"%s\",\"d\":%d,\"kv_heads\":%d,\"arch\":\"%s\",\"kernel\":\"%s\",", r->id,
           r->p.head_dim_qk, r->p.num_kv_heads, archs[r->arch], r->op);
    if (r->st != FMQA_OK) {
        printf("\"error\":\"%s\"}", fmqa_status_string(r->st));
        return;
    }
    printf("\"config\":\"%s\",\"cubin_arch\":\"%s\",\"registers\":%d,\"spill_bytes\":%d,"
           "\"smem_bytes\":%d,\"threads\":%d,\"ctas\":%d,\"ctas_per_sm\":%d,\"waves\":%.3f",
           r->config, r->cubin_arch, r->k.regs, r->k.spill, r->k.smem, r->k.threads, r->k.ctas,
           r->k.ctas_per_sm, r->k.waves);
    if (!strcmp(r->op, "scores"))
        printf(",\"score_bytes_per_kv_byte\":%.4f,\"score_compress_every\":%" PRId64
               ",\"score_steps\":%" PRId64 ",\"score_amortised_per_kv_byte\":%.4f,"
               "\"score_epilogue_ctas\":%d,\"score_epilogue_registers\":%d",
               r->score_bytes, r->score_every, r->score_steps,
               r->score_bytes * (double)r->score_steps / (double)r->score_every, r->scores.ctas,
               r->scores.regs);
    if (!strcmp(r->op, "decode") || !strcmp(r->op, "mla") || !strcmp(r->op, "scores")) {
        int sv = r->sass;
        printf(",\"splits\":%d,\"balance\":%.3f,\"tile_bytes\":%.0f,\"inflight_kb_per_sm\":%.1f,",
               r->splits, r->balance, r->tile_bytes, r->inflight_kb);
        json_num("insts_per_tile", r->loop.insts, sv, "%.0f", 1);
        json_num("insts_per_kv_byte", r->ib, sv, "%.4f", 1);
        json_num("hmma_per_tile", r->loop.mma, sv, "%.0f", 1);
        json_num("ldsm_per_tile", r->loop.ldsm, sv, "%.0f", 1);
        json_num("copies_per_tile", r->loop.copies, sv, "%.0f", 1);
        json_num("int_per_tile", r->loop.integer, sv, "%.0f", 1);
        json_num("fp_per_tile", r->loop.fp, sv, "%.0f", 1);
        json_num("conv_per_tile", r->loop.conv, sv, "%.0f", 1);
        json_num("addr_insts_per_16b_load", r->bulk ? r->producer.addr_per_copy : r->loop.addr_per_copy, sv,
                 "%.1f", 1);
        if (r->bulk) {
            json_num("producer_insts_per_tile", r->producer.insts, sv, "%.0f", 1);
            json_num("producer_int_per_tile", r->producer.integer, sv, "%.0f", 1);
            json_num("producer_bulk_copies_per_tile", r->producer.copies, sv, "%.0f", 1);
            printf("\"producer_path_exact\":%s,", sv && r->producer.exact ? "true" : "false");
        }
        printf("\"loop_path_exact\":%s,", sv && r->loop.exact ? "true" : "false");
        json_num("dependent_loads_before_first_kv", r->prologue_trips, sv, "%.0f", 1);
        json_num("combine_ctas", r->combine.ctas, r->combine.ok, "%.0f", 1);
        json_num("combine_registers", r->combine.regs, r->combine.ok, "%.0f", 1);
        json_num("combine_dependent_loads_per_thread", r->combine_trips, sv && r->combine.ok,
                 "%.0f", 0);
        if (!sv)
            printf(",\"sass_note\":\"%s\"", r->sass_why);
    } else if (!strcmp(r->op, "prefill") || !strcmp(r->op, "pscores")) {
        int sv = r->sass;
        if (!strcmp(r->op, "pscores")) {
            printf(",\"score_window\":%d,\"score_bytes_per_prefill_byte\":%.5f,"
                   "\"score_kernel_ctas\":%d,\"score_kernel_registers\":%d,"
                   "\"score_kernel_spill_bytes\":%d,",
                   PSCORES_WINDOW, r->score_bytes, r->scores.ctas, r->scores.regs, r->scores.spill);
            json_num("score_insts_per_prefill_inst", r->score_insts, sv, "%.5f", 1);
            json_num("score_insts_per_chunk_tile", r->sloop.insts, sv, "%.0f", 0);
        }
        printf(",\"tile_bytes\":%.0f,\"inflight_kb_per_sm\":%.1f,", r->tile_bytes,
               r->inflight_kb);
        json_num("insts_per_tile", r->loop.insts, sv, "%.0f", 1);
        json_num("hmma_per_tile", r->loop.mma, sv, "%.0f", 1);
        json_num("ldsm_per_tile", r->loop.ldsm, sv, "%.0f", 1);
        json_num("copies_per_tile", r->loop.copies, sv, "%.0f", 1);
        json_num("fp_per_tile", r->loop.fp, sv, "%.0f", 1);
        json_num("mufu_per_tile", r->loop.mufu, sv, "%.0f", 1);
        printf("\"loop_path_exact\":%s", sv && r->loop.exact ? "true" : "false");
        if (!sv)
            printf(",\"sass_note\":\"%s\"", r->sass_why);
    }
    if (!strcmp(r->op, "prefill") || !strcmp(r->op, "pscores") || !strcmp(r->op, "mla")) {
        printf(",");
        json_num("hgmma_static", r->hgmma, r->hgmma >= 0, "%.0f", 1);
        json_num("hmma_static", r->hmma, r->hmma >= 0, "%.0f", 0);
    }
    printf("}");
}

static void print_json(const srow *rows, int n, const char **archs)
{
    char date[32];
    time_t now = time(NULL);
    strftime(date, sizeof date, "%Y-%m-%d", gmtime(&now));
    printf("{\"static\":true,\"date\":\"%s\",\"version\":\"%s\",\"rows\":[", date,
           FMQA_VERSION_STRING);
    for (int i = 0, first = 1; i < n; i++) {
        if (rows[i].skip)
            continue;
        printf("%s", first ? "" : ",");
        first = 0;
        print_json_row(&rows[i], archs);
    }
    printf("]}\n");
}

static void cell(int valid, const char *fmt, double v, int width)
{
    if (valid)
        printf(fmt, width, v);
    else
        printf("%*s", width, "-");
}

static void print_table(const srow *rows, int n, const char **archs)
{
    printf("static figures (no GPU): NVRTC cubins of the template defaults, device presets\n");
    printf("%-26s %-6s %-7s %4s %5s %6s %5s %5s %6s %5s %8s %6s %6s %5s %4s %5s %5s %s\n", "shape",
           "arch", "kernel", "regs", "spill", "smem", "CTA/S", "CTAs", "waves", "bal", "flightKB",
           "I_B", "insts", "addr", "pro", "cCTA", "cdep", "config");
    for (int i = 0; i < n; i++) {
        const srow *r = &rows[i];
        char id[112];
        if (r->skip)
            continue;
        /* decode ids leave d out; the table shows it when it is not 128 */
        snprintf(id, sizeof id, "%s", r->id);
        if (strcmp(r->op, "prefill") && strcmp(r->op, "pscores") && strcmp(r->op, "mla") &&
            r->p.head_dim_qk != 128)
            snprintf(id + strlen(id), sizeof id - strlen(id), "-d%d", r->p.head_dim_qk);
        printf("%-26s %-6s %-7s ", id, archs[r->arch], r->op);
        if (r->st != FMQA_OK) {
            printf("error: %s\n", r->why);
            continue;
        }
        int dec = !strcmp(r->op, "decode") || !strcmp(r->op, "mla") || !strcmp(r->op, "scores");
        int pre = !strcmp(r->op, "prefill") || !strcmp(r->op, "pscores");
        int sv = (dec || pre) && r->sass;
        printf("%4d %5d %6d %5d %5d %6.2f ", r->k.regs, r->k.spill, r->k.smem, r->k.ctas_per_sm,
               r->k.ctas, r->k.waves);
        cell(dec, "%*.2f", r->balance, 5);
        cell(dec || pre, " %*.0f", r->inflight_kb, 8);
        cell(sv, " %*.3f", r->ib, 6);
        cell(sv, " %*.0f", r->loop.insts, 6);
        cell(sv, " %*.1f", r->bulk ? r->producer.addr_per_copy : r->loop.addr_per_copy, 5);
        cell(dec && sv, " %*.0f", r->prologue_trips, 4);
        cell(dec && r->combine.ok, " %*.0f", r->combine.ctas, 5);
        cell(sv && r->combine.ok, " %*.0f", r->combine_trips, 5);
        printf(" %s%s", r->config, sv && !r->loop.exact ? " (loop path approximate)" : "");
        if (pre && sv)
            printf(" [tile: MMA %.0f, MUFU %.0f, FP %.0f]", r->loop.mma, r->loop.mufu, r->loop.fp);
        if ((pre || !strcmp(r->op, "mla")) && r->hgmma >= 0)
            printf(" [SASS: HGMMA %d, HMMA %d]", r->hgmma, r->hmma);
        printf("\n");
        if ((dec || pre) && !r->sass)
            printf("%-26s   SASS figures missing: %s\n", "", r->sass_why);
        else if (dec && r->bulk)
            printf("%-26s   producer warp: %.0f instructions a tile (%.0f integer, %.0f bulk copies)%s\n", "",
                   r->producer.insts, r->producer.integer, r->producer.copies,
                   r->producer.exact ? "" : " (path approximate)");
        if (!strcmp(r->op, "scores"))
            printf("%-26s   scores: +%.1f%% bytes per KV byte read per call, +%.2f%% amortised "
                   "(%" PRId64 " of %" PRId64 " steps score); epilogue %d CTAs, %d registers\n",
                   "", 100 * r->score_bytes,
                   100 * r->score_bytes * (double)r->score_steps / (double)r->score_every,
                   r->score_steps, r->score_every, r->scores.ctas, r->scores.regs);
        if (!strcmp(r->op, "pscores")) {
            printf("%-26s   scores of a %d-token window: +%.2f%% bytes, ", "", PSCORES_WINDOW,
                   100 * r->score_bytes);
            if (sv)
                printf("+%.2f%% warp-instructions (%.0f a chunk and tile)", 100 * r->score_insts,
                       r->sloop.insts);
            else
                printf("instructions -");
            printf(" of the prefill's; kernel %d CTAs, %d registers, %d spill bytes\n",
                   r->scores.ctas, r->scores.regs, r->scores.spill);
        }
    }
    printf("I_B: warp-instructions per KV byte of the main loop (prefill: per K/V tile byte);\n"
           "insts: per warp per tile (BULK=1: per compute warp; the producer warp's line\n"
           "follows, and I_B counts both);\n"
           "bal: mean / most work units of a CTA (tiles; batch-invariant: chunks);\n"
           "addr: integer instructions per 16-byte copy; pro: dependent global loads before\n"
           "the first KV copy; cCTA, cdep: the combine's CTAs and dependent loads per thread;\n"
           "prefill and mla rows: tensor-core SASS counted (prefill: causal, batch x kv_len tokens).\n");
    for (int i = 0; i < n; i++)
        if (!strcmp(rows[i].op, "scores") && rows[i].st == FMQA_OK && !rows[i].skip) {
            printf("scores: bytes the option adds per KV byte decode reads (docs/kernels.md,\n"
                   "\"Scores\"); amortised: the level presets decode with scores on S of every\n"
                   "E steps, the last before each compaction (fmqa_level_step), E = %d and the\n"
                   "most S within %d%%, or S = 1 and E = ceil(per call / %d%%).  A byte model.\n",
                   FMQA_LEVEL_COMPRESS_EVERY, FMQA_LEVEL_SCORE_COST_PCT, FMQA_LEVEL_SCORE_COST_PCT);
            break;
        }
}

/* ---------------------------------------------------------------- main */

static int parse(int argc, char **argv, sopts *o)
{
    int64_t threads = 2;
    memset(o, 0, sizeof *o);
    o->archs = "sm_80,sm_90,sm_90a";
    o->threads = 2;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h"))
            return usage(stdout), 1;
        if (!strcmp(a, "--json") || !strcmp(a, "--invariant")) {
            *(a[2] == 'j' ? &o->json : &o->invariant) = 1;
            continue;
        }
        if (!strcmp(a, "--scores") || !strcmp(a, "--list")) {
            *(a[2] == 's' ? &o->scores : &o->list) = 1;
            continue;
        }
        if (!v || (strcmp(a, "--shapes") && strcmp(a, "--shape") && strcmp(a, "--arch") &&
                   strcmp(a, "--threads") && strcmp(a, "--config")) ||
            (!strcmp(a, "--shape") && o->n_custom == 32) ||
            (!strcmp(a, "--threads") && fmqa_parse_i64(v, 1, INT32_MAX, &threads))) {
            fprintf(stderr, "fastmqa-bench static: bad option or value: %s\n", a);
            return usage(stderr), 2;
        }
        i++;
        if (!strcmp(a, "--shapes"))
            o->shapes = v;
        else if (!strcmp(a, "--shape"))
            o->custom[o->n_custom++] = argv[i];
        else if (!strcmp(a, "--arch"))
            o->archs = v;
        else if (!strcmp(a, "--config"))
            o->config = v;
        else
            o->threads = (int)threads;
    }
    return 0;
}

/* Splits "sm_80,sm_90" into names checked against the presets. */
static int split_archs(const char *text, char names[MAX_ARCHS][16], const char **out)
{
    int n = 0;
    for (const char *p = text; *p && n < MAX_ARCHS;) {
        size_t len = strcspn(p, ",");
        fmqa_device_info d;
        snprintf(names[n], 16, "%.*s", (int)(len < 15 ? len : 15), p);
        if (gen_device_preset(names[n], &d, NULL) != FMQA_OK) {
            fprintf(stderr, "fastmqa-bench static: unknown --arch '%s' (sm_80, sm_86, sm_89, "
                            "sm_90, sm_90a)\n", names[n]);
            return -1;
        }
        out[n] = names[n];
        n++;
        p += len + (p[len] == ',');
    }
    return n;
}

typedef struct work {
    gen_lib *lib;
    const char **archs;
    const gen_config *over; /* --config, or NULL */
    srow *rows;
} work;

static fmqa_status build_job(void *user, int64_t i, fmqa_err *err)
{
    work *w = user;
    srow *r = &w->rows[i];
    (void)err;
    if (!r->skip)
        build_row(w->lib, w->archs[r->arch], w->over, r);
    return FMQA_OK;
}

int bench_static_main(int argc, char **argv)
{
    sopts o;
    int pr = parse(argc, argv, &o);
    if (pr)
        return pr == 1 ? 0 : 2;
    char names[MAX_ARCHS][16];
    const char *archs[MAX_ARCHS];
    int na = split_archs(o.archs, names, archs);
    bench_shape *shapes = NULL;
    bench_prefill_shape *pshapes = NULL;
    const unsigned sets = BENCH_SET_DECODE | BENCH_SET_MLA_FEW;
    int np = na > 0 ? bench_prefill_select(o.shapes, o.n_custom, &pshapes) : 0;
    /* Decode and MLA shapes unless the patterns name prefill shapes only. */
    int ns = na <= 0 ? -1
             : np > 0 && o.shapes && !bench_shapes_any(sets, o.shapes) && !o.n_custom
                 ? 0
                 : bench_shapes_select(sets, o.shapes, o.custom, o.n_custom, &shapes,
                                       "fastmqa-bench static");
    if (ns < 0 || np < 0) {
        free(pshapes);
        return 2;
    }
    if (o.list) {
        bench_shapes_print(shapes, ns);
        bench_prefill_shapes_print(pshapes, np);
        free(shapes);
        free(pshapes);
        return 0;
    }
    const int per = o.scores ? 3 : 2; /* rows a shape and arch: decode (mla), append, scores */
    const int pper = o.scores ? 2 : 1; /* prefill rows: prefill, pscores */
    int n = (ns * per + np * pper) * na, failed = 0;
    srow *rows = calloc((size_t)n, sizeof *rows);
    gen_lib *lib = NULL;
    fmqa_err err = {0};
    gen_config over;
    if (o.config && gen_config_parse(o.config, &over, &err) != FMQA_OK) {
        fprintf(stderr, "fastmqa-bench static: --config %s: %s\n", o.config, err.msg);
        free(rows), free(shapes), free(pshapes);
        return 2;
    }
    const char *dir = getenv("FASTMQA_TEMPLATE_DIR");
    fmqa_status st = rows ? gen_lib_open(dir && *dir ? dir : NULL, &lib, &err)
                          : fmqa_err_set(&err, FMQA_ERR_OUT_OF_MEMORY, "out of memory");
    /* per rows a shape and arch: decode (mla for an MLA shape, which has no
     * append or scores row), append and, with --scores, decode with
     * FMQA_FLAG_SCORES; then the prefill shapes */
    static const char *const ops[] = {"decode", "append", "scores"};
    for (int i = 0; rows && i < ns * per * na; i++) {
        const bench_shape *s = &shapes[i / (per * na)];
        const int k = i % per;
        rows[i] = shape_row(s, i / per % na, k == 0 && s->mla ? "mla" : ops[k]);
        rows[i].skip = s->mla && k > 0;
        if (!strcmp(rows[i].op, "decode") && o.invariant)
            rows[i].p.flags |= FMQA_FLAG_BATCH_INVARIANT;
        if (k == 2)
            rows[i].p.flags |= FMQA_FLAG_SCORES;
    }
    for (int i = 0; rows && i < np * pper * na; i++)
        rows[ns * per * na + i] =
            prefill_row(&pshapes[i / (pper * na)], i / pper % na, i % pper ? "pscores" : "prefill");
    work w = {lib, archs, o.config ? &over : NULL, rows};
    if (st == FMQA_OK)
        st = tun_parallel(o.threads, n, build_job, &w, &err);
    if (st != FMQA_OK) {
        fprintf(stderr, "fastmqa-bench static: %s\n", err.msg);
        failed = 1;
    } else {
        for (int i = 0; i < n; i++)
            failed |= rows[i].st != FMQA_OK;
        if (o.json)
            print_json(rows, n, archs);
        else
            print_table(rows, n, archs);
    }
    gen_lib_close(lib);
    free(rows), free(shapes), free(pshapes);
    return failed ? 1 : 0;
}
