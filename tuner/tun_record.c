/*
 * tun_record.c -- the tuner's writer of results (tun.h, "recording"): a queue
 * of trials not yet stored, written in order whenever the database takes
 * them, so that a lock held past the busy timeout (a vacuum, an import, a
 * second tuner) delays results instead of losing them.
 *
 * Invariant: the queue holds, in order, every result handed over and not yet
 * committed; an entry leaves it only once its trial and (for an ok trial) its
 * best-entry offer are committed.  The trial id is kept once the trial is
 * stored, so a failed offer is retried without storing the trial twice.
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tun.h"

typedef struct pending_result {
    db_trial trial;          /* strings owned                                */
    double default_us;
    int64_t id;              /* 0 until the trial is stored                  */
} pending_result;

struct tun_recorder {
    pthread_mutex_t lock;
    db_t *db;
    int64_t session_id;
    pending_result *q;
    size_t head, n, cap;     /* q[head..n) are pending                        */
    double last_beat_ms;
};

fmqa_status tun_recorder_create(db_t *db, int64_t session_id, tun_recorder **out,
                                fmqa_err *err)
{
    tun_recorder *r = calloc(1, sizeof *r);
    if (!r)
        return fmqa_err_set(err, FMQA_ERR_OUT_OF_MEMORY, "out of memory");
    pthread_mutex_init(&r->lock, NULL);
    r->db = db;
    r->session_id = session_id;
    r->last_beat_ms = fmqa_now_ms();
    *out = r;
    return FMQA_OK;
}

static void result_free(pending_result *p)
{
    free((char *)p->trial.config);
    free((char *)p->trial.tuner_version);
    free((char *)p->trial.message);
}

void tun_recorder_destroy(tun_recorder *r)
{
    if (!r)
        return;
    for (size_t i = r->head; i < r->n; i++)
        result_free(&r->q[i]);
    free(r->q);
    pthread_mutex_destroy(&r->lock);
    free(r);
}

/* A failure worth waiting out: anything but a refusal of the row itself. */
static int retryable(fmqa_status st)
{
    return st != FMQA_OK && st != FMQA_ERR_INVALID_ARGUMENT && st != FMQA_ERR_NOT_FOUND &&
           st != FMQA_ERR_OUT_OF_MEMORY;
}

/* Writes pending results in order until one fails; the lock is held.  A
 * result the database refuses outright is dropped with its error returned
 * (it would block the queue forever). */
static fmqa_status flush(tun_recorder *r, fmqa_err *err)
{
    while (r->head < r->n) {
        pending_result *p = &r->q[r->head];
        fmqa_status st = FMQA_OK;
        if (!p->id)
            st = db_trial_insert(r->db, &p->trial, &p->id, err);
        if (st == FMQA_OK && p->trial.status == DB_TRIAL_OK)
            st = db_best_update(r->db, p->id, p->default_us, NULL, err);
        if (retryable(st))
            return st;
        result_free(p);
        r->head++;
        if (st != FMQA_OK)
            return st;
    }
    r->head = r->n = 0;
    return FMQA_OK;
}

/* Appends a copy of t to the queue; the lock is held. */
static fmqa_status enqueue(tun_recorder *r, const db_trial *t, double default_us,
                           fmqa_err *err)
{
    if (r->n == r->cap) {
        size_t cap = r->cap ? 2 * r->cap : 16;
        pending_result *q = realloc(r->q, cap * sizeof *q);
        if (!q)
            return fmqa_err_set(err, FMQA_ERR_OUT_OF_MEMORY, "out of memory");
        r->q = q;
        r->cap = cap;
    }
    pending_result *p = &r->q[r->n];
    memset(p, 0, sizeof *p);
    p->trial = *t;
    p->default_us = default_us;
    p->trial.config = fmqa_strdup(t->config);
    p->trial.tuner_version = t->tuner_version ? fmqa_strdup(t->tuner_version) : NULL;
    p->trial.message = t->message ? fmqa_strdup(t->message) : NULL;
    if (!p->trial.config || (t->tuner_version && !p->trial.tuner_version) ||
        (t->message && !p->trial.message)) {
        result_free(p);
        return fmqa_err_set(err, FMQA_ERR_OUT_OF_MEMORY, "out of memory");
    }
    r->n++;
    return FMQA_OK;
}

fmqa_status tun_record(tun_recorder *r, const db_trial *t, double default_us, int *stored,
                       fmqa_err *err)
{
    pthread_mutex_lock(&r->lock);
    fmqa_status st = enqueue(r, t, default_us, err);
    if (st == FMQA_OK) {
        st = flush(r, err);
        if (stored)
            *stored = st == FMQA_OK;
        if (retryable(st))
            st = FMQA_OK; /* kept: written at the next call or at the end */
    }
    pthread_mutex_unlock(&r->lock);
    return st;
}

size_t tun_recorder_pending(tun_recorder *r)
{
    pthread_mutex_lock(&r->lock);
    size_t n = r->n - r->head;
    pthread_mutex_unlock(&r->lock);
    return n;
}

fmqa_status tun_recorder_drain(tun_recorder *r, double wait_s, fmqa_err *err)
{
    double deadline = fmqa_now_ms() + 1000 * wait_s;
    for (;;) {
        pthread_mutex_lock(&r->lock);
        fmqa_status st = flush(r, err);
        pthread_mutex_unlock(&r->lock);
        if (!retryable(st) || fmqa_now_ms() >= deadline)
            return st;
        struct timespec ts = {0, 100 * 1000 * 1000}; /* the lock's holder works */
        nanosleep(&ts, NULL);
    }
}

fmqa_status tun_recorder_finish(tun_recorder *r, int interrupted, double wait_s,
                                fmqa_err *err)
{
    fmqa_status st = tun_recorder_drain(r, wait_s, err);
    if (st != FMQA_OK) {
        size_t lost = tun_recorder_pending(r);
        fmqa_err_prefix(err,
                               "session %lld is incomplete: %zu result%s could not be stored "
                               "within %.0f s; it stays resumable (--resume redoes them)",
                               (long long)r->session_id, lost, lost == 1 ? "" : "s", wait_s);
        return FMQA_ERR_DATABASE;
    }
    return db_session_finish(r->db, r->session_id,
                             interrupted ? DB_SESSION_INTERRUPTED : DB_SESSION_DONE, err);
}

void tun_recorder_heartbeat(tun_recorder *r)
{
    double now = fmqa_now_ms();
    pthread_mutex_lock(&r->lock);
    int due = now - r->last_beat_ms >= 1000.0 * TUN_HEARTBEAT_S;
    if (due)
        r->last_beat_ms = now;
    pthread_mutex_unlock(&r->lock);
    if (due)
        db_session_heartbeat(r->db, r->session_id, NULL);
}
