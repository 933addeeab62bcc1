/*
 * test_tune_search.c -- the tuner's pure parts: sample statistics on arrays
 * with hand-computed percentiles, the three search strategies on a small
 * hand-built space, resume bookkeeping against a temporary database (a session
 * with some trials done hands out exactly the rest), the warm start from the
 * nearest tuned problem, and problem sets.
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "test_support.h"
#include "tun.h"

/* ---------------------------------------------------------------- stats */

Test(tune_stats, odd_count_percentiles)
{
    const double x[] = {5, 1, 4, 2, 3}; /* sorted 1..5: rank q*4 */
    tun_stats s;
    cr_assert_eq(tun_stats_compute(x, 5, &s, NULL), FMQA_OK);
    cr_expect_float_eq(s.median, 3.0, 1e-12);
    cr_expect_float_eq(s.p20, 1.8, 1e-12); /* rank 0.8: 1 + 0.8 * (2 - 1) */
    cr_expect_float_eq(s.p80, 4.2, 1e-12); /* rank 3.2: 4 + 0.2 * (5 - 4) */
    cr_expect_float_eq(s.min, 1.0, 0);
    cr_expect_float_eq(s.max, 5.0, 0);
    cr_expect_float_eq(s.mean, 3.0, 1e-12);
    cr_expect_float_eq(s.spread, (4.2 - 1.8) / 3.0, 1e-12);
    cr_expect_eq(x[0], 5, "input must not be reordered");
}

Test(tune_stats, even_count_and_single)
{
    const double x[] = {10, 40, 20, 30};
    tun_stats s;
    cr_assert_eq(tun_stats_compute(x, 4, &s, NULL), FMQA_OK);
    cr_expect_float_eq(s.median, 25.0, 1e-12);
    cr_expect_float_eq(s.p20, 16.0, 1e-12); /* rank 0.6 */
    cr_expect_float_eq(s.p80, 34.0, 1e-12); /* rank 2.4 */
    const double one = 7;
    cr_assert_eq(tun_stats_compute(&one, 1, &s, NULL), FMQA_OK);
    cr_expect(s.median == 7 && s.p20 == 7 && s.p80 == 7 && s.spread == 0);
}

Test(tune_stats, rejects_bad_input)
{
    fmqa_err err;
    tun_stats s;
    const double x[] = {1, NAN};
    cr_expect_eq(tun_stats_compute(x, 0, &s, &err), FMQA_ERR_INVALID_ARGUMENT);
    cr_expect_eq(tun_stats_compute(x, 2, &s, &err), FMQA_ERR_INVALID_ARGUMENT);
    cr_expect(strstr(err.msg, "sample 1") != NULL, "%s", err.msg);
}

/* ---------------------------------------------------------------- search */

/* A in {1,2,4} x B in {16,32} in space order: index = 2 * ia + ib. */
static void make_space(gen_config *s)
{
    const int64_t a[] = {1, 2, 4}, b[] = {16, 32};
    for (int i = 0; i < 6; i++) {
        gen_config_init(&s[i]);
        cr_assert_eq(gen_config_set(&s[i], "A", a[i / 2], NULL), FMQA_OK);
        cr_assert_eq(gen_config_set(&s[i], "B", b[i % 2], NULL), FMQA_OK);
    }
}

static size_t drain(tun_search *s, size_t *out, size_t cap)
{
    size_t n = 0, i;
    while (n < cap && tun_search_next(s, &i)) {
        out[n++] = i;
        tun_search_report(s, i, 1.0 + (double)i);
    }
    return n;
}

Test(tune_search, exhaustive_covers_the_space_in_order)
{
    gen_config space[6];
    make_space(space);
    tun_search *s;
    cr_assert_eq(tun_search_create(TUN_EXHAUSTIVE, space, 6, 0, 0, NULL, NULL, &s, NULL),
                 FMQA_OK);
    size_t got[8];
    cr_assert_eq(drain(s, got, 8), 6);
    for (size_t i = 0; i < 6; i++)
        cr_expect_eq(got[i], i);
    cr_expect(tun_search_finished(s));
    tun_search_destroy(s);
}

Test(tune_search, random_respects_budget_and_seed)
{
    gen_config space[6];
    make_space(space);
    size_t a[8], b[8], c[8];
    tun_search *s;
    cr_assert_eq(tun_search_create(TUN_RANDOM, space, 6, 42, 4, NULL, NULL, &s, NULL), FMQA_OK);
    cr_assert_eq(drain(s, a, 8), 4, "budget 4 must hand out exactly 4");
    cr_expect(tun_search_finished(s));
    tun_search_destroy(s);
    cr_assert_eq(tun_search_create(TUN_RANDOM, space, 6, 42, 4, NULL, NULL, &s, NULL), FMQA_OK);
    cr_assert_eq(drain(s, b, 8), 4);
    tun_search_destroy(s);
    cr_expect_arr_eq(a, b, sizeof a[0] * 4, "same seed, same sample");
    int seen[6] = {0};
    for (int i = 0; i < 4; i++)
        cr_expect_eq(seen[a[i]]++, 0, "index %zu handed out twice", a[i]);
    /* Without a budget a seed gives a permutation; some seed must differ. */
    int differs = 0;
    for (uint64_t seed = 1; seed < 20 && !differs; seed++) {
        cr_assert_eq(tun_search_create(TUN_RANDOM, space, 6, seed, 0, NULL, NULL, &s, NULL),
                     FMQA_OK);
        cr_assert_eq(drain(s, c, 8), 6);
        tun_search_destroy(s);
        differs = memcmp(c, a, sizeof a[0] * 4) != 0;
    }
    cr_expect(differs, "the seed has no effect");
}

Test(tune_search, local_climbs_from_the_start)
{
    gen_config space[6], start;
    make_space(space);
    start = space[3]; /* A=2,B=32 */
    tun_search *s;
    cr_assert_eq(tun_search_create(TUN_LOCAL, space, 6, 0, 0, &start, NULL, &s, NULL), FMQA_OK);
    cr_expect_eq(tun_search_start(s), 3);
    size_t i;
    /* The start, then its neighbours: A down (1), A up (5), B down (2). */
    const size_t first[] = {3, 1, 5, 2};
    for (int k = 0; k < 4; k++) {
        cr_assert(tun_search_next(s, &i));
        cr_expect_eq(i, first[k], "step %d: got %zu", k, i);
    }
    cr_expect_not(tun_search_next(s, &i), "only neighbours of the start before results");
    cr_expect_not(tun_search_finished(s));
    tun_search_report(s, 3, 10);
    tun_search_report(s, 1, 5); /* the new best: A=1,B=32 */
    tun_search_report(s, 5, 20);
    tun_search_report(s, 2, 0); /* failed */
    cr_assert(tun_search_next(s, &i));
    cr_expect_eq(i, 0, "the best's untried neighbour is A=1,B=16, got %zu", i);
    tun_search_report(s, 0, 50);
    cr_expect_not(tun_search_next(s, &i));
    cr_expect(tun_search_finished(s), "A=2,B=16 is no neighbour of the best");
    tun_search_destroy(s);
}

Test(tune_search, local_start_outside_the_space_uses_the_nearest)
{
    gen_config space[6], start;
    make_space(space);
    gen_config_init(&start);
    gen_config_set(&start, "A", 3, NULL);
    gen_config_set(&start, "B", 32, NULL);
    tun_search *s;
    cr_assert_eq(tun_search_create(TUN_LOCAL, space, 6, 0, 0, &start, NULL, &s, NULL), FMQA_OK);
    cr_expect_eq(tun_search_start(s), 5, "A=3 is nearer 4 than 2 relatively");
    tun_search_destroy(s);
}

Test(tune_search, strategy_names)
{
    tun_strategy t;
    fmqa_err err;
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(tun_strategy_parse(tun_strategy_name((tun_strategy)i), &t, NULL), FMQA_OK);
        cr_expect_eq(t, (tun_strategy)i);
    }
    cr_expect_eq(tun_strategy_parse("anneal", &t, &err), FMQA_ERR_INVALID_ARGUMENT);
    cr_expect(strstr(err.msg, "'anneal'") != NULL, "%s", err.msg);
}

/* ---------------------------------------------------------------- resume */

typedef struct fixture {
    char path[64];
    db_t *db;
    int64_t dev, tmpl, prob;
    fmqa_device_info info;
    fmqa_problem p;
} fixture;

static void open_fixture(fixture *f)
{
    strcpy(f->path, "/tmp/fmqa_tune_XXXXXX");
    int fd = mkstemp(f->path);
    cr_assert(fd >= 0);
    close(fd);
    unlink(f->path);
    cr_assert_eq(db_open(f->path, DB_READ_WRITE, 0, &f->db, NULL), FMQA_OK);
    memset(&f->info, 0, sizeof f->info);
    strcpy(f->info.name, "Test GPU");
    f->info.cc_major = 9, f->info.sm_count = 132, f->info.l2_bytes = 50 << 20;
    strcpy(f->info.arch, "sm_90");
    cr_assert_eq(db_device_upsert(f->db, &f->info, &f->dev, NULL), FMQA_OK);
    cr_assert_eq(db_template_upsert(f->db, "decode", "0123456789abcdef0123456789abcdef",
                                    &f->tmpl, NULL), FMQA_OK);
    cr_assert_eq(gen_problem_parse("op=decode,batch=8,heads=32,kv_len=4096", &f->p, NULL),
                 FMQA_OK);
    cr_assert_eq(db_problem_upsert(f->db, &f->p, &f->prob, NULL), FMQA_OK);
}

static void close_fixture(fixture *f)
{
    char wal[80];
    db_close(f->db);
    unlink(f->path);
    snprintf(wal, sizeof wal, "%s-wal", f->path);
    unlink(wal);
    snprintf(wal, sizeof wal, "%s-shm", f->path);
    unlink(wal);
}

static int64_t add_trial(fixture *f, int64_t session, const gen_config *c, db_trial_status st,
                         double us)
{
    char text[GEN_CONFIG_TEXT_CAP];
    gen_config_text(c, text, sizeof text);
    db_trial t = {.session_id = session, .device_id = f->dev, .template_id = f->tmpl,
                  .problem_id = f->prob, .config = text, .status = st, .median_us = us,
                  .p20_us = us, .p80_us = us, .min_us = us, .runs = us > 0 ? 10 : 0};
    int64_t id;
    cr_assert_eq(db_trial_insert(f->db, &t, &id, NULL), FMQA_OK);
    return id;
}

Test(tune_resume, a_session_resumes_with_exactly_the_rest)
{
    fixture f;
    open_fixture(&f);
    gen_config space[6];
    make_space(space);
    db_session s = {.device_id = f.dev, .strategy = "exhaustive", .seed = 7,
                    .problem_set = "op=decode\n"};
    cr_assert_eq(db_session_create(f.db, &s, NULL), FMQA_OK);
    /* The killed process got through 0, 2 (a timeout) and 5 (wrong). */
    add_trial(&f, s.id, &space[0], DB_TRIAL_OK, 12);
    add_trial(&f, s.id, &space[2], DB_TRIAL_TIMEOUT, 0);
    add_trial(&f, s.id, &space[5], DB_TRIAL_WRONG_RESULT, 0);
    add_trial(&f, 0, &space[1], DB_TRIAL_OK, 9); /* another session's: not skipped */

    db_session r = {0};
    cr_assert_eq(db_session_find_resumable(f.db, f.dev, &r, NULL), FMQA_OK);
    cr_expect_eq(r.id, s.id);
    cr_expect_str_eq(r.strategy, "exhaustive");
    cr_expect_eq(r.seed, 7);
    db_hash_set done;
    cr_assert_eq(db_trials_done(f.db, r.id, f.dev, f.tmpl, f.prob, &done, NULL), FMQA_OK);
    cr_expect_eq(done.count, 3);
    tun_search *ts;
    cr_assert_eq(tun_search_create(TUN_EXHAUSTIVE, space, 6, r.seed, 0, NULL, &done, &ts, NULL),
                 FMQA_OK);
    size_t got[8];
    cr_assert_eq(drain(ts, got, 8), 3);
    cr_expect(got[0] == 1 && got[1] == 3 && got[2] == 4, "got %zu %zu %zu", got[0], got[1],
              got[2]);
    tun_search_destroy(ts);
    /* A budget counts only new trials. */
    cr_assert_eq(tun_search_create(TUN_RANDOM, space, 6, r.seed, 2, NULL, &done, &ts, NULL),
                 FMQA_OK);
    cr_assert_eq(drain(ts, got, 8), 2);
    for (int i = 0; i < 2; i++)
        cr_expect(got[i] == 1 || got[i] == 3 || got[i] == 4, "random handed out %zu", got[i]);
    tun_search_destroy(ts);
    db_hash_set_free(&done);

    cr_assert_eq(db_session_finish(f.db, r.id, DB_SESSION_DONE, NULL), FMQA_OK);
    db_session none = {0};
    cr_expect_eq(db_session_find_resumable(f.db, f.dev, &none, NULL), FMQA_ERR_NOT_FOUND);
    db_session_free(&r);
    close_fixture(&f);
}

Test(tune_resume, warm_start_is_the_nearest_tuned_config)
{
    fixture f;
    open_fixture(&f);
    gen_config space[6], out;
    make_space(space);
    char key[FMQA_HASH_HEX];
    db_device_key(&f.info, key);
    const char *hash = "0123456789abcdef0123456789abcdef";
    /* Nothing tuned: the fallback. */
    cr_expect_eq(tun_warm_start(f.db, key, "decode", hash, &f.p, &space[0], &out), 0);
    cr_expect(gen_config_equal(&out, &space[0]));
    /* Tuned at kv_len 4096: a problem at kv_len 16384 starts from it. */
    int64_t id = add_trial(&f, 0, &space[4], DB_TRIAL_OK, 20);
    cr_assert_eq(db_best_update(f.db, id, 30, NULL, NULL), FMQA_OK);
    fmqa_problem far = f.p;
    far.kv_len = 16384;
    cr_expect_eq(tun_warm_start(f.db, key, "decode", hash, &far, &space[0], &out), 1);
    cr_expect(gen_config_equal(&out, &space[4]));
    /* Another template version does not count. */
    cr_expect_eq(tun_warm_start(f.db, key, "decode", "ffffffffffffffffffffffffffffffff", &far,
                                &space[0], &out), 0);
    close_fixture(&f);
}

/* ---------------------------------------------------------------- problem sets */

Test(tune_problems, parse_format_round_trip)
{
    const char *text = "# levels\n"
                       "op=decode,batch=3,heads=32,kv_len=4099   # odd length\n"
                       "\n"
                       "  op=append,kv=int8,tq=4\n";
    fmqa_problem *p;
    size_t n;
    cr_assert_eq(tun_problems_parse(text, "set", &p, &n, NULL), FMQA_OK);
    cr_assert_eq(n, 2);
    cr_expect_eq(p[0].batch, 3);
    cr_expect_eq(p[0].kv_len, 4099);
    cr_expect_eq(p[1].op, FMQA_OP_APPEND);
    cr_expect_eq(p[1].kv_dtype, FMQA_DTYPE_INT8);
    char *back;
    cr_assert_eq(tun_problems_format(p, n, &back, NULL), FMQA_OK);
    fmqa_problem *q;
    size_t m;
    cr_assert_eq(tun_problems_parse(back, "back", &q, &m, NULL), FMQA_OK);
    cr_assert_eq(m, 2);
    cr_expect_arr_eq(p, q, sizeof *p * 2);
    free(back);
    free(p);
    free(q);
}

Test(tune_problems, errors_name_the_line)
{
    fmqa_problem *p;
    size_t n;
    fmqa_err err;
    cr_expect_eq(tun_problems_parse("op=decode\nop=decode,batch=-1\n", "f.txt", &p, &n, &err),
                 FMQA_ERR_INVALID_ARGUMENT);
    cr_expect(strncmp(err.msg, "f.txt:2", 7) == 0, "%s", err.msg);
    cr_expect_eq(tun_problems_parse("# nothing\n", "f.txt", &p, &n, &err),
                 FMQA_ERR_INVALID_ARGUMENT);
}

Test(tune_problems, level_presets_map_to_decode_problems)
{
    fmqa_model_config m;
    tun_default_model(&m);
    fmqa_problem c, b, a;
    fmqa_level_policy pc, pb, pa;
    cr_assert_eq(fmqa_level_policy_preset(NULL, FMQA_LEVEL_CONSERVATIVE, &m, &pc), FMQA_OK);
    cr_assert_eq(fmqa_level_policy_preset(NULL, FMQA_LEVEL_BALANCED, &m, &pb), FMQA_OK);
    cr_assert_eq(fmqa_level_policy_preset(NULL, FMQA_LEVEL_AGGRESSIVE, &m, &pa), FMQA_OK);
    cr_assert_eq(fmqa_level_problem(NULL, &m, &pc, 8, &c), FMQA_OK);
    cr_assert_eq(fmqa_level_problem(NULL, &m, &pb, 8, &b), FMQA_OK);
    cr_assert_eq(fmqa_level_problem(NULL, &m, &pa, 8, &a), FMQA_OK);
    cr_expect(c.op == FMQA_OP_DECODE && c.kv_dtype == FMQA_DTYPE_F16 && c.q_tokens == 1 &&
              c.window == 0 && c.flags == FMQA_FLAG_CAUSAL && c.kv_len == 4096 &&
              c.head_dim_qk == 128 && c.num_kv_heads == 1 && c.batch == 8);
    /* compressed: 4 sinks + 512 recent + 1536 heavy + the score schedule's
       slots (MQA, d 128: one score step in 18, f16; in 131 of 4 tokens, int8
       with 4 query tokens), scores on */
    cr_expect(b.window == 0 && b.sink_tokens == 0 && b.kv_len == 2070 &&
              b.flags == (FMQA_FLAG_CAUSAL | FMQA_FLAG_SCORES));
    cr_expect(a.kv_dtype == FMQA_DTYPE_INT8 && a.q_tokens == 4 && a.kv_len == 2576);
    cr_expect_eq(tun_rel_tol(FMQA_DTYPE_F16), 1e-3);
    cr_expect_eq(tun_rel_tol(FMQA_DTYPE_BF16), 1e-2);
}

/* ---------------------------------------------------------------- harness without a GPU */

Test(tune_harness, needs_a_device_and_says_so)
{
    fmqa_ctx_t *ctx = fmqa_test_ctx();
    fmqa_problem p;
    fmqa_err err;
    tun_case *tc = NULL;
    cr_assert_eq(gen_problem_parse("op=decode", &p, NULL), FMQA_OK);
    p.op = (fmqa_op)99;
    cr_expect_eq(tun_case_create(ctx, &p, 1, NULL, 0, &tc, &err), FMQA_ERR_UNSUPPORTED,
                 "an unknown op has no harness");
    cr_expect(strstr(err.msg, "no harness") != NULL, "%s", err.msg);
    tun_case_opts bad = TUN_CASE_OPTS_INIT;
    bad.copies = 9;
    cr_assert_eq(gen_problem_parse("op=decode", &p, NULL), FMQA_OK);
    cr_expect_eq(tun_case_create(ctx, &p, 1, &bad, 0, &tc, &err), FMQA_ERR_INVALID_ARGUMENT);
    cr_expect(strstr(err.msg, "opts.copies") != NULL, "%s", err.msg);
    fmqa_device_info info;
    if (fmqa_device_query(ctx, &info) != FMQA_OK) {
        fmqa_status st = tun_case_create(ctx, &p, 1, NULL, 0, &tc, &err);
        cr_expect(st == FMQA_ERR_NO_DRIVER || st == FMQA_ERR_NO_DEVICE, "%s", err.msg);
        cr_expect_null(tc);
        fmqa_problem pf;
        cr_assert_eq(gen_problem_parse("op=prefill,tq=64,kv_len=64", &pf, NULL), FMQA_OK);
        st = tun_case_create(ctx, &pf, 1, NULL, 0, &tc, &err);
        cr_expect(st == FMQA_ERR_NO_DRIVER || st == FMQA_ERR_NO_DEVICE, "prefill: %s", err.msg);
        cr_expect_null(tc);
        tun_timer *t = NULL;
        st = tun_timer_create(ctx, &t, &err);
        cr_expect(st == FMQA_ERR_NO_DRIVER || st == FMQA_ERR_NO_DEVICE, "%s", err.msg);
        cr_expect_null(t);
    }
    fmqa_ctx_destroy(ctx);
}
