/*
 * tun_sass.c -- static figures from the SASS of a compiled kernel (the text
 * `cuobjdump -sass` prints), for `fastmqa-bench static` (docs/PERFORMANCE.md,
 * "Static figures").
 *
 * A function's instructions are parsed into an array; a "region" is a range of
 * it walked by a dynamic program over (instruction, budget units used) that
 * finds the steady-state path: forward branches may go either way, an inner
 * loop (a backward branch inside the region) is one node taken k >= 1 times
 * along the same path, exits leave no path.  Among the paths that end where
 * the region ends, the one whose budget units (e.g. 16-byte copies per thread
 * per tile) come closest to the budget wins, then (main loop) the one with the
 * most MMAs, then the one with the fewest instructions: the unmasked tile of
 * a warp that computes (not one that skips its tile because its rows are all
 * padding), the full load loop, no remainder where the budget is a whole
 * number of unrolled passes.  The chosen path is expanded
 * into a dynamic trace that the figures are counted on.  Round trips are
 * counted on a trace by a scoreboard model: an instruction that reads or
 * writes a register a global load (LDG) has not yet delivered waits for it,
 * and every load issued before it then counts as delivered; a DEPBAR after
 * cp.async copies (cp.async.wait_group) is one round trip for them.
 *
 * Limits (stated with the figures): every warp is assumed to take the same
 * path, so a part only some warps run counts only if the budget asks for it
 * (decode's budget is in words of all its copies, 8-bit scales included, and
 * decode.cuh gives every thread the same share of them); CALLed subroutines
 * count as one instruction.
 */
#define _POSIX_C_SOURCE 200809L /* popen, mkstemp, fdopen */

#include "tun.h"

#include <ctype.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define INF INT_MAX

typedef enum ikind {
    K_OTHER, K_MMA, K_LDSM, K_COPY, K_LDG, K_INT, K_FP, K_CONV, K_MUFU, K_SHFL, K_SYNC, K_BRANCH,
    K_SHARED, K_STG, K_NOP
} ikind;

typedef struct insn {
    uint32_t addr;
    ikind kind;
    int pred;            /* guarded by a predicate (@P0, @!P1, ...)          */
    char guard[8];       /* the guard without '@' ("P0", "!P1"), or ""      */
    int width;           /* bytes moved by a load or copy (0 = not one)      */
    int is_bra, is_exit, is_dead;   /* BRA; EXIT; RET / BPT / BRX (no path) */
    int target;          /* index of a branch target, -1 if none or outside  */
    char op[48];         /* opcode with modifiers                            */
    char args[160];      /* operands                                         */
} insn;

typedef struct sfunc {
    char name[128];
    insn *v;
    int n;
} sfunc;

struct tun_sass {
    sfunc *f;
    int n;
};

/* ---------------------------------------------------------------- parsing */

static int has_mod(const char *op, const char *mod)
{
    for (const char *p = strchr(op, '.'); p; p = strchr(p + 1, '.')) {
        size_t n = strcspn(p + 1, ".");
        if (n == strlen(mod) && !strncmp(p + 1, mod, n))
            return 1;
    }
    return 0;
}

static int width_of(const char *op)
{
    if (has_mod(op, "128"))
        return 16;
    if (has_mod(op, "64"))
        return 8;
    if (has_mod(op, "U16") || has_mod(op, "S16"))
        return 2;
    if (has_mod(op, "U8") || has_mod(op, "S8"))
        return 1;
    return 4;
}

static int in_list(const char *base, const char *const *list)
{
    for (; *list; list++)
        if (!strcmp(base, *list))
            return 1;
    return 0;
}

static ikind kind_of(const char *base)
{
    static const char *const mma[] = {"HMMA", "IMMA", "HGMMA", "QGMMA", "IGMMA", "DMMA", NULL};
    static const char *const copy[] = {"LDGSTS", "UTMALDG", "UBLKCP", NULL};
    static const char *const fp[] = {"FADD", "FMUL", "FFMA", "FMNMX", "FSEL", "FSETP", "FCHK",
                                     "FADD2", "FMUL2", "FFMA2", "FMNMX2", "FSWZADD", NULL};
    static const char *const conv[] = {"F2FP", "F2F", "I2F", "F2I", "I2FP", "F2IP", "PRMT",
                                       "HADD2", "HMUL2", "HFMA2", "HMNMX2", "HSET2", NULL};
    static const char *const sync[] = {"BAR", "DEPBAR", "LDGDEPBAR", "BSSY", "BSYNC", "WARPSYNC",
                                       "SYNCS", "MEMBAR", "ERRBAR", "YIELD", "ARRIVES", NULL};
    static const char *const shared[] = {"LDS", "STS", "ATOMS", NULL};
    if (in_list(base, mma)) return K_MMA;
    if (!strcmp(base, "LDSM")) return K_LDSM;
    if (in_list(base, copy)) return K_COPY;
    if (!strcmp(base, "LDG") || !strcmp(base, "LD")) return K_LDG;
    if (!strcmp(base, "STG") || !strcmp(base, "RED") || !strcmp(base, "ATOMG")) return K_STG;
    if (in_list(base, fp)) return K_FP;
    if (in_list(base, conv)) return K_CONV;
    if (!strcmp(base, "MUFU")) return K_MUFU;
    if (!strcmp(base, "SHFL")) return K_SHFL;
    if (in_list(base, sync)) return K_SYNC;
    if (in_list(base, shared)) return K_SHARED;
    if (!strcmp(base, "NOP")) return K_NOP;
    if (!strcmp(base, "BRA") || !strcmp(base, "EXIT") || !strcmp(base, "CALL") ||
        !strcmp(base, "RET") || !strcmp(base, "BRX") || !strcmp(base, "BPT"))
        return K_BRANCH;
    /* The integer and uniform datapaths: addresses, indices, predicates, moves. */
    if (base[0] == 'I' || base[0] == 'U' || base[0] == 'P' || base[0] == 'V' ||
        !strcmp(base, "LEA") || !strcmp(base, "SHF") || !strcmp(base, "LOP3") ||
        !strcmp(base, "SEL") || !strcmp(base, "MOV") || !strcmp(base, "CS2R") ||
        !strcmp(base, "S2R") || !strcmp(base, "S2UR") || !strcmp(base, "LDC") ||
        !strcmp(base, "POPC") || !strcmp(base, "FLO") || !strcmp(base, "BREV") ||
        !strcmp(base, "R2P") || !strcmp(base, "R2UR") || !strcmp(base, "BMSK") ||
        !strcmp(base, "SGXT"))
        return K_INT;
    return K_OTHER;
}

/* One instruction line: "/ *0230* /  @!P0 LDG.E R6, desc[UR8][R8.64] ;". */
static int parse_line(const char *line, insn *out)
{
    const char *p = strstr(line, "/*");
    char *end;
    if (!p)
        return 0;
    unsigned long addr = strtoul(p + 2, &end, 16);
    if (end == p + 2 || strncmp(end, "*/", 2))
        return 0;
    p = end + 2;
    while (isspace((unsigned char)*p))
        p++;
    memset(out, 0, sizeof *out);
    out->addr = (uint32_t)addr;
    out->target = -1;
    if (*p == '@') {
        out->pred = 1;
        snprintf(out->guard, sizeof out->guard, "%.*s", (int)strcspn(p + 1, " \t"), p + 1);
        p += strcspn(p, " \t");
        while (isspace((unsigned char)*p))
            p++;
    }
    size_t n = strcspn(p, " \t;");
    if (!n || !isupper((unsigned char)*p))
        return 0;
    snprintf(out->op, sizeof out->op, "%.*s", (int)n, p);
    p += n;
    n = strcspn(p, ";");
    snprintf(out->args, sizeof out->args, "%.*s", (int)(n < sizeof out->args ? n : sizeof out->args - 1), p);
    char base[48];
    snprintf(base, sizeof base, "%.*s", (int)strcspn(out->op, "."), out->op);
    out->kind = kind_of(base);
    out->width = out->kind == K_COPY || out->kind == K_LDG ? width_of(out->op) : 0;
    out->is_bra = !strcmp(base, "BRA");
    out->is_exit = !strcmp(base, "EXIT");
    out->is_dead = !strcmp(base, "RET") || !strcmp(base, "BRX") || !strcmp(base, "BPT");
    return 1;
}

static uint32_t target_addr(const insn *in, int *ok)
{
    const char *p = strstr(in->args, "0x");
    *ok = p != NULL;
    return p ? (uint32_t)strtoul(p, NULL, 16) : 0;
}

static fmqa_status resolve_targets(sfunc *f, fmqa_err *err)
{
    for (int i = 0; i < f->n; i++) {
        insn *in = &f->v[i];
        if (!in->is_bra)
            continue;
        int ok;
        uint32_t a = target_addr(in, &ok);
        if (!ok)
            return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT,
                                "SASS %s: branch at 0x%x without a target address", f->name,
                                in->addr);
        for (int j = 0; j < f->n; j++)
            if (f->v[j].addr == a)
                in->target = j;
    }
    return FMQA_OK;
}

static fmqa_status push(void **v, int *n, int *cap, size_t size, fmqa_err *err)
{
    if (*n < *cap)
        return FMQA_OK;
    int c = *cap ? 2 * *cap : 64;
    void *nv = realloc(*v, (size_t)c * size);
    if (!nv)
        return fmqa_err_set(err, FMQA_ERR_OUT_OF_MEMORY, "out of memory");
    *v = nv, *cap = c;
    return FMQA_OK;
}

fmqa_status tun_sass_parse(const char *text, tun_sass **out, fmqa_err *err)
{
    tun_sass *s = calloc(1, sizeof *s);
    int fcap = 0, icap = 0;
    fmqa_status st = s ? FMQA_OK : fmqa_err_set(err, FMQA_ERR_OUT_OF_MEMORY, "out of memory");
    for (const char *line = text; st == FMQA_OK && line && *line;) {
        const char *nl = strchr(line, '\n');
        size_t len = nl ? (size_t)(nl - line) : strlen(line);
        char buf[512];
        snprintf(buf, sizeof buf, "%.*s", (int)(len < sizeof buf ? len : sizeof buf - 1), line);
        const char *fn = strstr(buf, "Function : ");
        insn in;
        if (fn) {
            if ((st = push((void **)&s->f, &s->n, &fcap, sizeof *s->f, err)) == FMQA_OK) {
                sfunc *f = &s->f[s->n++];
                memset(f, 0, sizeof *f);
                snprintf(f->name, sizeof f->name, "%s", fn + 11);
                f->name[strcspn(f->name, " \t\r")] = 0;
                icap = 0;
            }
        } else if (s->n && parse_line(buf, &in)) {
            sfunc *f = &s->f[s->n - 1];
            if ((st = push((void **)&f->v, &f->n, &icap, sizeof *f->v, err)) == FMQA_OK)
                f->v[f->n++] = in;
        }
        line = nl ? nl + 1 : NULL;
    }
    for (int i = 0; st == FMQA_OK && i < s->n; i++)
        st = resolve_targets(&s->f[i], err);
    if (st == FMQA_OK && !s->n)
        st = fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT, "no 'Function :' in the SASS text");
    if (st != FMQA_OK) {
        tun_sass_free(s);
        return st;
    }
    *out = s;
    return FMQA_OK;
}

void tun_sass_free(tun_sass *s)
{
    if (!s)
        return;
    for (int i = 0; i < s->n; i++)
        free(s->f[i].v);
    free(s->f);
    free(s);
}

int tun_sass_has_function(const tun_sass *s, const char *name)
{
    for (int i = 0; i < s->n; i++)
        if (!strcmp(s->f[i].name, name))
            return 1;
    return 0;
}

/* ---------------------------------------------------------------- paths */

/* What a path counts against the budget: 16-byte copies (main loop), the
 * bytes of all cp.async copies in 4-byte words (a main loop whose tile also
 * holds smaller copies: decode's 8-bit scales), 16-byte global loads
 * (combine), global load bytes (prologue), MMAs (the main loop of a kernel
 * whose copies are TMA's, issued by one thread) or bulk copies (UBLKCP,
 * whatever their size: a producer loop). */
typedef enum unit_kind { U_COPY16, U_COPY_WORDS, U_LDG16, U_LOAD16, U_LDG_BYTES, U_MMA, U_BULK } unit_kind;

static int units_of(const insn *in, unit_kind u)
{
    switch (u) {
    case U_COPY16: return in->kind == K_COPY && in->width == 16;
    case U_COPY_WORDS: return in->kind == K_COPY && strncmp(in->op, "UBLKCP", 6) ? in->width / 4 : 0;
    case U_LDG16: return in->kind == K_LDG && in->width == 16;
    case U_LOAD16: return (in->kind == K_LDG || in->kind == K_COPY) && in->width == 16;
    case U_LDG_BYTES: return in->kind == K_LDG ? in->width : 0;
    case U_MMA: return in->kind == K_MMA;
    case U_BULK: return in->kind == K_COPY && !strncmp(in->op, "UBLKCP", 6);
    }
    return 0;
}

typedef enum end_mode { END_AT_LAST, END_BEFORE_LAST, END_EXIT } end_mode;

/* Values given to predicates that a loop writes, if at all, only before the
 * first branch they guard: such branches go the same way along one pass (the
 * "is there a next tile" flag that guards the next tile's GEMM, its softmax
 * and its rescale), instead of each either way independently. */
#define MAX_FIXED 4
typedef struct pfix {
    int n;
    char name[MAX_FIXED][8];
    int val[MAX_FIXED];
} pfix;

typedef struct region region;

/* An inner loop [head, tail]: its one-pass table, computed on first use. */
typedef struct loop {
    int head, tail;
    region *pass;
} loop;

typedef struct cell {
    int cost;            /* step_cost sum to get here, INF = unreachable     */
    int from, from_u;    /* previous index and units                          */
    int loop, k;         /* >= 0: arrived through loop `loop` taken k times   */
} cell;

struct region {
    const sfunc *f;
    int s, e, budget;
    unit_kind unit;
    end_mode mode;
    const pfix *fix;     /* NULL: every guarded branch may go either way      */
    cell *t;             /* (e - s + 2) x (budget + 1); row e - s + 1 = end   */
    loop *loops;
    int n_loops;
};

static cell *at(region *r, int i, int u) { return &r->t[(size_t)(i - r->s) * (r->budget + 1) + u]; }

static void relax(region *r, int to, int v, int cost, int from, int from_u, int lp, int k)
{
    if (v > r->budget || to > r->e + 1)
        return;
    cell *c = at(r, to, v);
    if (cost < c->cost)
        *c = (cell){cost, from, from_u, lp, k};
}

static region *region_new(const sfunc *f, int s, int e, int budget, unit_kind unit,
                          end_mode mode, const pfix *fix);

/* Finds the outermost inner loops of r: 0, or -1 when out of memory. */
static int find_loops(region *r)
{
    r->loops = calloc((size_t)(r->e - r->s + 1), sizeof *r->loops);
    if (!r->loops)
        return -1;
    for (int b = r->e - (r->mode == END_AT_LAST); b >= r->s; b--) {
        const insn *in = &r->f->v[b];
        int t = in->target;
        if (!in->is_bra || t < r->s || t > b || (t == r->s && b == r->e))
            continue;
        int inside = 0;
        for (int i = 0; i < r->n_loops; i++)
            inside |= r->loops[i].head <= t && b <= r->loops[i].tail;
        if (!inside)
            r->loops[r->n_loops++] = (loop){t, b, NULL};
    }
    return 0;
}

static loop *loop_at(region *r, int head)
{
    for (int i = 0; i < r->n_loops; i++)
        if (r->loops[i].head == head)
            return &r->loops[i];
    return NULL;
}

static int end_cost(region *r, int u) { return at(r, r->e + 1, u)->cost; }

/* Whether a guarded branch is taken under fix: 1, 0, or -1 (not fixed). */
static int fixed_way(const pfix *fix, const insn *in)
{
    if (!fix || !in->is_bra || !in->pred)
        return -1;
    const int neg = in->guard[0] == '!';
    for (int k = 0; k < fix->n; k++)
        if (!strcmp(in->guard + neg, fix->name[k]))
            return neg ? !fix->val[k] : fix->val[k];
    return -1;
}

/* What an instruction adds to a path's cost: 1, but an MMA on the main loop's
 * walk (copy budget) MMA_PREF less, so that among paths with the same copies
 * the one that computes the tile wins over one that skips it (a guard such as
 * decode's `if (active)` is a forward branch the walk may take either way). */
#define MMA_PREF 4096
static int step_cost(const region *r, const insn *in)
{
    return r->unit == U_COPY16 && in->kind == K_MMA ? 1 - MMA_PREF : 1;
}

/* The moves out of instruction i with units u: to the end, along a forward
 * branch, or to the next instruction.  Exits and backward branches other than
 * a loop's own lead nowhere (not the steady state). */
static void step(region *r, int i, int u)
{
    const insn *in = &r->f->v[i];
    int sc = step_cost(r, in), c = at(r, i, u)->cost + sc, v = u + units_of(in, r->unit);
    if (i == r->e && r->mode == END_AT_LAST) {
        relax(r, r->e + 1, v, c, i, u, -1, 0);
        return;
    }
    if (i == r->e && r->mode == END_BEFORE_LAST) {
        relax(r, r->e + 1, u, c - sc, i, u, -1, 0);
        return;
    }
    if (in->is_exit && !in->pred) {
        if (r->mode == END_EXIT)
            relax(r, r->e + 1, v, c, i, u, -1, 0);
        return;
    }
    if ((in->is_dead && !in->pred) || (i == r->e && r->mode == END_EXIT))
        return;
    int t = in->target, way = fixed_way(r->fix, in); /* 1 taken, 0 not, -1 either */
    if (in->is_bra && t > i && t <= r->e && way != 0)
        relax(r, t, v, c, i, u, -1, 0);
    if (!in->is_bra || (in->pred && way != 1))
        relax(r, i + 1, v, c, i, u, -1, 0);
}

static void take_loop(region *r, int li, int u)
{
    loop *l = &r->loops[li];
    if (!l->pass)
        l->pass = region_new(r->f, l->head, l->tail, r->budget, r->unit, END_AT_LAST, r->fix);
    if (!l->pass)
        return;
    int base = at(r, l->head, u)->cost;
    for (int pu = 0; pu <= r->budget - u; pu++) {
        int pc = end_cost(l->pass, pu);
        if (pc == INF)
            continue;
        for (int k = 1; u + k * pu <= r->budget && (k == 1 || pu > 0); k++)
            relax(r, l->tail + 1, u + k * pu, base + k * pc, l->head, u, li, k);
    }
}

static void region_free(region *r)
{
    if (!r)
        return;
    for (int i = 0; i < r->n_loops; i++)
        region_free(r->loops[i].pass);
    free(r->loops);
    free(r->t);
    free(r);
}

static region *region_new(const sfunc *f, int s, int e, int budget, unit_kind unit,
                          end_mode mode, const pfix *fix)
{
    region *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    *r = (region){f, s, e, budget, unit, mode, fix, NULL, NULL, 0};
    size_t cells = (size_t)(e - s + 2) * (size_t)(budget + 1);
    r->t = malloc(cells * sizeof *r->t);
    if (!r->t) {
        free(r);
        return NULL;
    }
    for (size_t i = 0; i < cells; i++)
        r->t[i] = (cell){INF, -1, 0, -1, 0};
    if (find_loops(r)) {
        region_free(r);
        return NULL;
    }
    at(r, s, 0)->cost = 0;
    for (int i = s; i <= e; i++) {
        loop *l = loop_at(r, i);
        for (int u = 0; u <= budget; u++) {
            if (at(r, i, u)->cost == INF)
                continue;
            if (l)
                take_loop(r, (int)(l - r->loops), u);
            else
                step(r, i, u);
        }
        if (l)
            i = l->tail;  /* the body is reached only through the loop node */
    }
    return r;
}

/* The units the chosen path ends with: closest to the budget, then the
 * lowest cost (step_cost); -1 when no path ends. */
static int best_end(region *r, int want)
{
    int best = -1;
    for (int u = 0; u <= r->budget; u++) {
        int c = end_cost(r, u);
        if (c == INF)
            continue;
        if (best < 0 || abs(u - want) < abs(best - want) ||
            (abs(u - want) == abs(best - want) && c < end_cost(r, best)))
            best = u;
    }
    return best;
}

/* A dynamic trace: instruction indices in execution order. */
typedef struct trace {
    int *v;
    int n, cap;
} trace;

static int trace_add(trace *t, int i)
{
    fmqa_err err;
    if (push((void **)&t->v, &t->n, &t->cap, sizeof *t->v, &err) != FMQA_OK)
        return -1;
    t->v[t->n++] = i;
    return 0;
}

/* Appends the path of r ending with units u, in execution order. */
static int expand(region *r, int u, trace *t)
{
    /* Walk back from the end collecting (cell, units on arrival), then replay. */
    typedef struct seg { cell c; int to_u; } seg;
    int n = 0, cap = 64, i = r->e + 1, rc = 0;
    seg *v = malloc((size_t)cap * sizeof *v);
    while (v && i != r->s) {
        cell *c = at(r, i, u);
        if (c->from < 0)
            break;
        if (n == cap) {
            seg *nv = realloc(v, (size_t)(cap *= 2) * sizeof *v);
            if (!nv)
                break;
            v = nv;
        }
        v[n++] = (seg){*c, u};
        i = c->from, u = c->from_u;
    }
    if (!v || i != r->s)
        rc = -1;
    for (int j = n - 1; j >= 0 && rc == 0; j--) {
        const cell *c = &v[j].c;
        if (c->loop >= 0) {
            int pu = (v[j].to_u - c->from_u) / c->k;
            for (int k = 0; k < c->k && rc == 0; k++)
                rc = expand(r->loops[c->loop].pass, pu, t);
        } else if (!(r->mode == END_BEFORE_LAST && c->from == r->e)) {
            rc = trace_add(t, c->from);
        }
    }
    free(v);
    return rc;
}

/* ---------------------------------------------------------------- figures */

static const sfunc *find_fn(const tun_sass *s, const char *name, fmqa_err *err)
{
    for (int i = 0; i < s->n; i++)
        if (!strcmp(s->f[i].name, name))
            return &s->f[i];
    fmqa_err_set(err, FMQA_ERR_NOT_FOUND, "SASS has no function %s", name);
    return NULL;
}

/* The steady path of [s, e] as a trace; *units (OUT) what it counted. */
static fmqa_status walk(const sfunc *f, int s, int e, int budget, unit_kind unit, end_mode mode,
                        const pfix *fix, trace *t, int *units, fmqa_err *err)
{
    region *r = region_new(f, s, e, budget < 0 ? 0 : budget, unit, mode, fix);
    if (!r)
        return fmqa_err_set(err, FMQA_ERR_OUT_OF_MEMORY, "out of memory");
    int u = best_end(r, budget);
    fmqa_status st = FMQA_OK;
    if (u < 0)
        st = fmqa_err_set(err, FMQA_ERR_NOT_FOUND, "SASS %s: no path from 0x%x to 0x%x", f->name,
                          f->v[s].addr, f->v[e].addr);
    else if (expand(r, u, t))
        st = fmqa_err_set(err, FMQA_ERR_OUT_OF_MEMORY, "out of memory");
    region_free(r);
    if (st == FMQA_OK)
        *units = u;
    return st;
}

/* 1 when the unconditional backward BRA at b is the return of an out-of-line
 * slow path, not a loop: ptxas moves an mbarrier's retry loop out of line
 * ("@!P0 BRA stub" at t - 1; the stub spins, then "BRA t" back to the
 * instruction after that branch), so the range [t, b] is no loop: it is
 * entered at the stub from before t.  Its entry branch is never taken on
 * the steady path (the wait succeeds at once). */
static int stub_return(const sfunc *f, int b)
{
    const insn *in = &f->v[b];
    int t = in->target;
    if (!in->is_bra || in->pred || t < 1 || t > b)
        return 0;
    const insn *entry = &f->v[t - 1];
    return entry->is_bra && entry->pred && entry->target > t && entry->target <= b;
}

static int mma_in(const sfunc *f, int t, int b)
{
    int mma = 0;
    for (int i = t; i <= b; i++)
        mma += f->v[i].kind == K_MMA;
    return mma;
}

/* The back edge whose range holds the most MMAs, or a loop nested in it that
 * holds at least half of them (the innermost such): an outer loop over pieces
 * of work holds the tile loop's MMAs plus a few of its own (decode's int8
 * S start values, once per piece), and the tile loop is the steady state.
 * Stub returns (stub_return) are no loops. */
static int main_loop(const sfunc *f, int *head)
{
    int best = -1, best_mma = 0;
    for (int b = 0; b < f->n; b++) {
        int t = f->v[b].target;
        if (!f->v[b].is_bra || t < 0 || t > b || stub_return(f, b))
            continue;
        int mma = mma_in(f, t, b);
        if (mma > best_mma || (mma == best_mma && mma > 0 && b - t < best - *head))
            best = b, *head = t, best_mma = mma;
    }
    for (int inner = best; inner >= 0;) {
        int lo = *head, hi = best, in_mma = 0;
        inner = -1;
        for (int b = lo; b <= hi; b++) {
            int t = f->v[b].target;
            if (!f->v[b].is_bra || t < lo || t > b || (t == lo && b == hi) || stub_return(f, b))
                continue;
            int mma = mma_in(f, t, b);
            if (2 * mma >= best_mma && mma > in_mma)
                inner = b, in_mma = mma;
        }
        if (inner >= 0)
            best = inner, *head = f->v[inner].target, best_mma = in_mma;
    }
    return best;
}

/* mark[i] = 1 for every instruction of a basic block that issues a 16-byte
 * copy (malloc'ed, NULL when out of memory). */
static char *copy_blocks(const sfunc *f)
{
    char *lead = calloc((size_t)f->n + 1, 1), *mark = calloc((size_t)f->n, 1);
    if (!lead || !mark) {
        free(lead), free(mark);
        return NULL;
    }
    lead[0] = 1;
    for (int i = 0; i < f->n; i++) {
        if (f->v[i].target >= 0)
            lead[f->v[i].target] = 1;
        if (f->v[i].is_bra || f->v[i].is_exit)
            lead[i + 1] = 1;
    }
    for (int b = 0; b < f->n;) {
        int e = b + 1, has = units_of(&f->v[b], U_COPY16);
        while (e < f->n && !lead[e])
            has |= units_of(&f->v[e++], U_COPY16);
        memset(mark + b, has, (size_t)(e - b));
        b = e;
    }
    free(lead);
    return mark;
}

static void count(const sfunc *f, const trace *t, const char *mark, tun_sass_loop *o)
{
    for (int j = 0; j < t->n; j++) {
        const insn *in = &f->v[t->v[j]];
        if (in->kind == K_NOP)
            continue;
        o->insts++;
        double *slot[] = {[K_OTHER] = &o->other, [K_MMA] = &o->mma, [K_LDSM] = &o->ldsm,
                          [K_COPY] = &o->copies, [K_LDG] = &o->ldg, [K_INT] = &o->integer,
                          [K_FP] = &o->fp, [K_CONV] = &o->conv, [K_MUFU] = &o->mufu,
                          [K_SHFL] = &o->shfl, [K_SYNC] = &o->sync, [K_BRANCH] = &o->branch,
                          [K_SHARED] = &o->shared, [K_STG] = &o->other};
        (*slot[in->kind])++;
        if (in->kind == K_COPY)
            o->copy_bytes += in->width;
        if (in->kind == K_INT && mark[t->v[j]])
            o->addr_per_copy++;
    }
}

/* 1 when instruction `in` writes predicate `name`: SASS writes predicates in
 * its leading operands (ISETP P0, PT, ...; PLOP3 P5, PT, ...; the carry of
 * LEA R12, P4, ...), reads them after (SEL ..., P0; a branch's condition);
 * R2P writes them all (PR). */
static int writes_pred(const insn *in, const char *name)
{
    if (in->is_bra)
        return 0;
    const char *p = in->args;
    for (int pos = 0; pos < 2 && *p; pos++) {
        while (*p == ' ' || *p == '\t')
            p++;
        size_t n = strcspn(p, ",");
        if ((n == 2 && !strncmp(p, "PR", 2)) || (n == strlen(name) && !strncmp(p, name, n)))
            return 1;
        p += n + (p[n] == ',');
    }
    return 0;
}

/* The predicates guarding branches of [head, tail] that nothing after the
 * first such branch writes (at most MAX_FIXED, the first ones). */
static void pass_guards(const sfunc *f, int head, int tail, pfix *fix)
{
    memset(fix, 0, sizeof *fix);
    for (int i = head; i <= tail && fix->n < MAX_FIXED; i++) {
        const insn *in = &f->v[i];
        if (!in->is_bra || !in->pred)
            continue;
        const char *name = in->guard + (in->guard[0] == '!');
        int seen = 0, written = 0;
        for (int k = 0; k < fix->n; k++)
            seen |= !strcmp(fix->name[k], name);
        for (int j = i; j <= tail && !seen && !written; j++)
            written = writes_pred(&f->v[j], name);
        if (!seen && !written)
            snprintf(fix->name[fix->n++], sizeof fix->name[0], "%s", name);
    }
}

/* walk over the main loop; for the MMA budget once per value of its pass
 * guards (see pfix), keeping the path closest to the budget, then the
 * shortest. */
static fmqa_status loop_walk(const sfunc *f, int head, int tail, int budget, unit_kind unit,
                             trace *t, int *u, fmqa_err *err)
{
    pfix fix;
    if (unit != U_MMA)
        return walk(f, head, tail, budget, unit, END_AT_LAST, NULL, t, u, err);
    pass_guards(f, head, tail, &fix);
    fmqa_status st = FMQA_ERR_NOT_FOUND;
    for (int m = 0; m < 1 << fix.n; m++) {
        for (int k = 0; k < fix.n; k++)
            fix.val[k] = m >> k & 1;
        trace c = {0};
        int cu = 0;
        fmqa_err e;
        fmqa_status cs = walk(f, head, tail, budget, unit, END_AT_LAST, &fix, &c, &cu, &e);
        int better = cs == FMQA_OK &&
                     (st != FMQA_OK || abs(cu - budget) < abs(*u - budget) ||
                      (abs(cu - budget) == abs(*u - budget) && c.n < t->n));
        if (better) {
            free(t->v);
            *t = c, *u = cu, st = FMQA_OK;
        } else {
            free(c.v);
        }
        if (st != FMQA_OK && err)
            *err = e;
    }
    return st;
}

/* The main loop's figures along the path whose `unit`s come closest to budget. */
static fmqa_status loop_figures(const tun_sass *s, const char *fn, int budget, unit_kind unit,
                                tun_sass_loop *out, fmqa_err *err)
{
    const sfunc *f = find_fn(s, fn, err);
    if (!f)
        return FMQA_ERR_NOT_FOUND;
    int head = 0, tail = main_loop(f, &head);
    if (tail < 0)
        return fmqa_err_set(err, FMQA_ERR_NOT_FOUND, "SASS %s: no loop holds an MMA", fn);
    trace t = {0};
    int u = 0;
    tun_sass_loop o;
    memset(&o, 0, sizeof o);
    char *mark = copy_blocks(f);
    fmqa_status st = mark ? loop_walk(f, head, tail, budget, unit, &t, &u, err)
                          : fmqa_err_set(err, FMQA_ERR_OUT_OF_MEMORY, "out of memory");
    if (st == FMQA_OK) {
        o.found = 1, o.exact = u == budget;
        o.head = f->v[head].addr, o.tail = f->v[tail].addr;
        count(f, &t, mark, &o);
        int n16 = 0;
        for (int j = 0; j < t.n; j++)
            n16 += units_of(&f->v[t.v[j]], U_COPY16);
        o.addr_per_copy = n16 ? o.addr_per_copy / n16 : 0;
        *out = o;
    }
    free(mark);
    free(t.v);
    return st;
}

fmqa_status tun_sass_main_loop(const tun_sass *s, const char *fn, int copies_per_iter,
                               tun_sass_loop *out, fmqa_err *err)
{
    return loop_figures(s, fn, copies_per_iter, U_COPY16, out, err);
}

fmqa_status tun_sass_main_loop_words(const tun_sass *s, const char *fn, int words_per_iter,
                                     tun_sass_loop *out, fmqa_err *err)
{
    return loop_figures(s, fn, words_per_iter, U_COPY_WORDS, out, err);
}

fmqa_status tun_sass_main_loop_mma(const tun_sass *s, const char *fn, int mma_per_iter,
                                   tun_sass_loop *out, fmqa_err *err)
{
    return loop_figures(s, fn, mma_per_iter, U_MMA, out, err);
}

/* The back edge whose range holds the most bulk copies (the innermost on
 * ties), -1 if none: a warp-specialized kernel's producer loop.  The loops
 * ptxas wraps around one copy (BRA.U.ANY back to an ELECT: one lane's operands
 * a trip) are inner loops of it, never it. */
static int bulk_loop(const sfunc *f, int *head)
{
    int best = -1, best_n = 0;
    for (int b = 0; b < f->n; b++) {
        int t = f->v[b].target, n = 0;
        if (!f->v[b].is_bra || t < 0 || t > b || strstr(f->v[b].op, ".U.ANY"))
            continue;
        for (int i = t; i <= b; i++)
            n += units_of(&f->v[i], U_BULK);
        if (n > best_n || (n == best_n && n > 0 && b - t < best - *head))
            best = b, *head = t, best_n = n;
    }
    return best;
}

fmqa_status tun_sass_bulk_loop(const tun_sass *s, const char *fn, int copies_per_iter, double bytes_per_iter,
                               tun_sass_loop *out, fmqa_err *err)
{
    const sfunc *f = find_fn(s, fn, err);
    if (!f)
        return FMQA_ERR_NOT_FOUND;
    int head = 0, tail = bulk_loop(f, &head);
    if (tail < 0)
        return fmqa_err_set(err, FMQA_ERR_NOT_FOUND, "SASS %s: no loop holds a bulk copy", fn);
    trace t = {0};
    int u = 0;
    fmqa_status st = walk(f, head, tail, copies_per_iter, U_BULK, END_AT_LAST, NULL, &t, &u, err);
    if (st == FMQA_OK) {
        tun_sass_loop o;
        memset(&o, 0, sizeof o);
        o.found = 1, o.exact = u == copies_per_iter;
        o.head = f->v[head].addr, o.tail = f->v[tail].addr;
        char *none = calloc((size_t)f->n, 1);
        if (!none)
            st = fmqa_err_set(err, FMQA_ERR_OUT_OF_MEMORY, "out of memory");
        else
            count(f, &t, none, &o);
        free(none);
        o.copy_bytes = bytes_per_iter;
        o.addr_per_copy = bytes_per_iter >= 16 ? o.integer / (bytes_per_iter / 16) : 0;
        *out = o;
    }
    free(t.v);
    return st;
}

/* ---------------------------------------------------------------- round trips */

/* Registers named in text ("R12", "R8.64" = R8 and R9); RZ is none. */
static void regs_in(const char *text, unsigned char *set, int skip_first)
{
    const char *p = text;
    int first = 1;
    while ((p = strchr(p, 'R')) != NULL) {
        int prev_ok = p == text || !isalnum((unsigned char)p[-1]);
        char *end;
        long r = isdigit((unsigned char)p[1]) && prev_ok ? strtol(p + 1, &end, 10) : -1;
        if (r < 0 || r > 255) {
            p++;
            continue;
        }
        int n = !strncmp(end, ".64", 3) ? 2 : 1;
        if (!(skip_first && first))
            for (int k = 0; k < n && r + k < 256; k++)
                set[r + k] = 1;
        first = 0;
        p = end;
    }
}

/* Dependent global round trips along a trace (scoreboard model, see the top). */
static int round_trips(const sfunc *f, const trace *t)
{
    unsigned char pending[256] = {0};
    int trips = 0, any = 0, copies = 0;
    for (int j = 0; j < t->n; j++) {
        const insn *in = &f->v[t->v[j]];
        /* cp.async copies land in shared memory, not registers: the wait for
         * them (cp.async.wait_group, DEPBAR) is the round trip. */
        if (in->kind == K_COPY)
            copies = 1;
        else if (copies && !strncmp(in->op, "DEPBAR", 6))
            trips++, copies = 0;
        unsigned char used[256] = {0};
        regs_in(in->args, used, in->kind == K_LDG);
        int wait = 0;
        for (int r = 0; r < 256 && any; r++)
            wait |= used[r] && pending[r];
        if (wait) {
            trips++;
            memset(pending, 0, sizeof pending);
            any = 0;
        }
        if (in->kind == K_LDG) {
            unsigned char dst[256] = {0};
            char first[32];
            snprintf(first, sizeof first, "%.*s", (int)strcspn(in->args, ","), in->args);
            regs_in(first, dst, 0);
            for (int r = 0, n = 0; r < 256; r++)
                if (dst[r])
                    for (n = 0; n < (in->width + 3) / 4 && r + n < 256; n++)
                        pending[r + n] = 1, any = 1;
        }
    }
    return trips;  /* loads never waited for delay nothing on this path */
}

fmqa_status tun_sass_round_trips(const tun_sass *s, const char *fn, tun_sass_walk how,
                                 int budget, int *trips, fmqa_err *err)
{
    const sfunc *f = find_fn(s, fn, err);
    if (!f)
        return FMQA_ERR_NOT_FOUND;
    int end = f->n - 1;
    if (how == TUN_SASS_TO_FIRST_COPY) {
        for (end = 0; end < f->n && f->v[end].kind != K_COPY; end++)
            ;
        if (end == f->n)
            return fmqa_err_set(err, FMQA_ERR_NOT_FOUND, "SASS %s: no cp.async/TMA copy", fn);
    }
    trace t = {0};
    int u;
    fmqa_status st = walk(f, 0, end, budget,
                          how == TUN_SASS_TO_FIRST_COPY ? U_LDG_BYTES : U_LOAD16,
                          how == TUN_SASS_TO_FIRST_COPY ? END_BEFORE_LAST : END_EXIT, NULL, &t,
                          &u, err);
    if (st == FMQA_OK)
        *trips = round_trips(f, &t);
    free(t.v);
    return st;
}

/* ---------------------------------------------------------------- cuobjdump */

static int on_path(const char *name, char *out, size_t cap)
{
    const char *path = getenv("PATH");
    for (const char *p = path; p && *p;) {
        size_t n = strcspn(p, ":");
        snprintf(out, cap, "%.*s/%s", (int)n, p, name);
        FILE *f = fopen(out, "rb");
        if (f) {
            fclose(f);
            return 1;
        }
        p += n + (p[n] == ':');
    }
    return 0;
}

/* pip's nvidia-cuda-cuobjdump: <site-packages>/nvidia/cu13/bin/cuobjdump. */
static int from_pip(char *out, size_t cap)
{
    FILE *p = popen("python3 -c \"import os, nvidia\n"
                    "for d in nvidia.__path__:\n"
                    "    for v in ('cu13', 'cu12'):\n"
                    "        x = os.path.join(d, v, 'bin', 'cuobjdump')\n"
                    "        if os.access(x, os.X_OK): print(x)\" 2>/dev/null",
                    "r");
    if (!p)
        return 0;
    int ok = fgets(out, (int)cap, p) != NULL;
    pclose(p);
    out[strcspn(out, "\r\n")] = 0;
    return ok && *out;
}

static fmqa_status read_all(FILE *p, char **text, fmqa_err *err)
{
    size_t n = 0, cap = 1 << 16;
    char *buf = malloc(cap);
    for (size_t got; buf && (got = fread(buf + n, 1, cap - n - 1, p)) > 0;) {
        n += got;
        if (cap - n < 4096) {
            char *nb = realloc(buf, cap *= 2);
            if (!nb)
                free(buf);
            buf = nb;
        }
    }
    if (!buf)
        return fmqa_err_set(err, FMQA_ERR_OUT_OF_MEMORY, "out of memory");
    buf[n] = 0;
    *text = buf;
    return FMQA_OK;
}

fmqa_status tun_sass_disassemble(const void *cubin, size_t size, char **text, fmqa_err *err)
{
    char tool[1024] = "", file[] = "/tmp/fastmqa-sass-XXXXXX";
    const char *env = getenv("CUOBJDUMP");
    if (env && *env)
        snprintf(tool, sizeof tool, "%s", env);
    else if (!on_path("cuobjdump", tool, sizeof tool) && !from_pip(tool, sizeof tool))
        return fmqa_err_set(err, FMQA_ERR_NOT_FOUND,
                            "no cuobjdump: set CUOBJDUMP, or pip install nvidia-cuda-cuobjdump "
                            "(scripts/common.sh does)");
    int fd = mkstemp(file);
    FILE *f = fd >= 0 ? fdopen(fd, "wb") : NULL;
    int ok = f && fwrite(cubin, 1, size, f) == size;
    if (f)
        ok &= fclose(f) == 0;
    if (!ok) {
        if (fd >= 0)
            remove(file);
        return fmqa_err_set(err, FMQA_ERR_INTERNAL, "cannot write %s", file);
    }
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "'%s' -sass '%s' 2>/dev/null", tool, file);
    FILE *p = popen(cmd, "r");
    fmqa_status st = p ? read_all(p, text, err)
                       : fmqa_err_set(err, FMQA_ERR_INTERNAL, "cannot run %s", tool);
    int rc = p ? pclose(p) : 0;
    remove(file);
    if (st == FMQA_OK && rc != 0) {
        free(*text);
        st = fmqa_err_set(err, FMQA_ERR_NOT_FOUND, "%s -sass failed (status %d)", tool, rc);
    }
    return st;
}
