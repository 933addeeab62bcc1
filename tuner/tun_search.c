/*
 * tun_search.c -- the order in which the tuner tries configs: exhaustive (the
 * space in order), random (a seeded shuffle: the same seed gives the same
 * sequence on every machine, so a resumed session continues the same sample),
 * and local search (hill climbing from a warm start).
 *
 * Invariants: every index is handed out at most once; configs already tried
 * (the `done` hash set of a resumed session) are never handed out and do not
 * count against the budget; `handed` never exceeds a positive budget.  A
 * neighbour of config i differs from it in exactly one parameter, and takes
 * the next smaller or next larger value of that parameter among the legal
 * configs that agree with i elsewhere, so illegal holes in the cartesian
 * product are stepped over rather than ending the climb.
 */
#include "tun.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { UNTRIED = 0, HANDED = 1, REPORTED = 2, DONE = 3 };

struct tun_search {
    tun_strategy strategy;
    const gen_config *space;
    size_t n;
    uint8_t *state;
    double *median;          /* reported median, <= 0 failed                   */
    size_t *order;           /* exhaustive / random: the sequence to hand out  */
    size_t n_order, pos;
    int64_t budget, handed;
    size_t pending;          /* handed out, not yet reported                   */
    int64_t start, best;     /* local: warm start and best reported (-1 none)  */
};

static const char *const strategy_names[] = {"exhaustive", "random", "local"};

const char *tun_strategy_name(tun_strategy s)
{
    return (unsigned)s < 3 ? strategy_names[s] : "unknown";
}

fmqa_status tun_strategy_parse(const char *name, tun_strategy *out, fmqa_err *err)
{
    for (int i = 0; i < 3; i++)
        if (name && !strcmp(name, strategy_names[i])) {
            *out = (tun_strategy)i;
            return FMQA_OK;
        }
    return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT,
                        "unknown strategy '%s' (expected exhaustive, random or local)",
                        name ? name : "(null)");
}

/* Parameters of a and b that differ, or -1 if their parameter names differ. */
static int differing(const gen_config *a, const gen_config *b, int *which)
{
    if (a->n != b->n)
        return -1;
    int d = 0;
    for (int k = 0; k < a->n; k++) {
        if (strcmp(a->p[k].name, b->p[k].name))
            return -1;
        if (a->p[k].value != b->p[k].value) {
            d++;
            *which = k;
        }
    }
    return d;
}

static double value_distance(const gen_config *a, const gen_config *b)
{
    double d = 0;
    for (int k = 0; k < a->n && k < b->n; k++) {
        double x = (double)a->p[k].value, y = (double)b->p[k].value;
        d += fabs(x - y) / (fabs(x) + fabs(y) + 1);
    }
    return d;
}

/* The space index equal to start, else the nearest one. */
static size_t nearest(const gen_config *space, size_t n, const gen_config *start)
{
    size_t best = 0;
    int best_diff = 1 << 30;
    double best_dist = INFINITY;
    for (size_t i = 0; i < n; i++) {
        int which, d = differing(&space[i], start, &which);
        if (d < 0)
            d = GEN_MAX_PARAMS + 1;
        double dist = value_distance(&space[i], start);
        if (d < best_diff || (d == best_diff && dist < best_dist)) {
            best = i, best_diff = d, best_dist = dist;
        }
    }
    return best;
}

static int is_done(const gen_config *c, const db_hash_set *done)
{
    char text[GEN_CONFIG_TEXT_CAP], hash[FMQA_HASH_HEX];
    if (!done || !done->count || gen_config_text(c, text, sizeof text))
        return 0;
    db_config_hash(text, hash);
    return db_hash_set_contains(done, hash);
}

/* The order of exhaustive / random: untried indices, shuffled for random. */
static void build_order(tun_search *s, uint64_t seed)
{
    for (size_t i = 0; i < s->n; i++)
        if (s->state[i] == UNTRIED)
            s->order[s->n_order++] = i;
    if (s->strategy != TUN_RANDOM)
        return;
    ref_rng rng;
    ref_rng_seed(&rng, seed);
    for (size_t i = s->n_order; i > 1; i--) {
        size_t j = (size_t)(ref_rng_next(&rng) % i);
        size_t t = s->order[i - 1];
        s->order[i - 1] = s->order[j];
        s->order[j] = t;
    }
}

fmqa_status tun_search_create(tun_strategy strategy, const gen_config *space, size_t n,
                              uint64_t seed, int64_t budget, const gen_config *start,
                              const db_hash_set *done, tun_search **out, fmqa_err *err)
{
    if ((unsigned)strategy > TUN_LOCAL || (n && !space) || !out || budget < 0)
        return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT,
                            "tun_search_create: bad strategy, space, budget or output");
    tun_search *s = calloc(1, sizeof *s);
    if (s) {
        s->state = calloc(n ? n : 1, 1);
        s->median = calloc(n ? n : 1, sizeof *s->median);
        s->order = calloc(n ? n : 1, sizeof *s->order);
    }
    if (!s || !s->state || !s->median || !s->order) {
        tun_search_destroy(s);
        return fmqa_err_set(err, FMQA_ERR_OUT_OF_MEMORY, "out of memory");
    }
    s->strategy = strategy, s->space = space, s->n = n, s->budget = budget;
    s->start = s->best = -1;
    for (size_t i = 0; i < n; i++)
        if (is_done(&space[i], done))
            s->state[i] = DONE;
    if (strategy == TUN_LOCAL && n)
        s->start = (int64_t)(start ? nearest(space, n, start) : 0);
    else
        build_order(s, seed);
    *out = s;
    return FMQA_OK;
}

void tun_search_destroy(tun_search *s)
{
    if (!s)
        return;
    free(s->state);
    free(s->median);
    free(s->order);
    free(s);
}

/* An untried neighbour of config `base`, or -1. */
static int64_t untried_neighbour(const tun_search *s, size_t base)
{
    const gen_config *b = &s->space[base];
    for (int k = 0; k < b->n; k++) {
        int64_t below = -1, above = -1;
        for (size_t j = 0; j < s->n; j++) {
            int which = -1;
            if (differing(&s->space[j], b, &which) != 1 || which != k)
                continue;
            int64_t v = s->space[j].p[k].value;
            if (v < b->p[k].value && (below < 0 || v > s->space[below].p[k].value))
                below = (int64_t)j;
            if (v > b->p[k].value && (above < 0 || v < s->space[above].p[k].value))
                above = (int64_t)j;
        }
        if (below >= 0 && s->state[below] == UNTRIED)
            return below;
        if (above >= 0 && s->state[above] == UNTRIED)
            return above;
    }
    return -1;
}

static int64_t local_next(const tun_search *s)
{
    if (s->start < 0)
        return -1;
    if (s->state[s->start] == UNTRIED)
        return s->start;
    return untried_neighbour(s, (size_t)(s->best >= 0 ? s->best : s->start));
}

int tun_search_next(tun_search *s, size_t *index)
{
    if (!s || (s->budget > 0 && s->handed >= s->budget))
        return 0;
    int64_t i = -1;
    if (s->strategy == TUN_LOCAL)
        i = local_next(s);
    else if (s->pos < s->n_order)
        i = (int64_t)s->order[s->pos++];
    if (i < 0)
        return 0;
    s->state[i] = HANDED;
    s->handed++;
    s->pending++;
    *index = (size_t)i;
    return 1;
}

void tun_search_report(tun_search *s, size_t index, double median_us)
{
    if (!s || index >= s->n || s->state[index] != HANDED)
        return;
    s->state[index] = REPORTED;
    s->median[index] = median_us;
    s->pending--;
    if (median_us > 0 && (s->best < 0 || median_us < s->median[s->best]))
        s->best = (int64_t)index;
}

int tun_search_finished(const tun_search *s)
{
    if (!s || (s->budget > 0 && s->handed >= s->budget))
        return 1;
    if (s->strategy != TUN_LOCAL)
        return s->pos >= s->n_order;
    return s->pending == 0 && local_next(s) < 0;
}

int64_t tun_search_start(const tun_search *s)
{
    return s ? s->start : -1;
}

int tun_warm_start(db_t *db, const char *device_key, const char *template_name,
                   const char *template_hash, const fmqa_problem *p,
                   const gen_config *fallback, gen_config *out)
{
    db_best_entry *e = NULL;
    size_t n = 0;
    int found = 0;
    if (db && db_best_candidates(db, device_key, template_name, template_hash, p, &e, &n,
                                 NULL) == FMQA_OK)
        for (size_t i = 0; i < n && !found; i++)
            found = gen_config_parse(e[i].config, out, NULL) == FMQA_OK;
    free(e);
    if (!found)
        *out = *fallback;
    return found;
}
