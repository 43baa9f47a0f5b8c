/* sweep.c — answers that nothing will finish are failed, never left pending.
 *
 * An answer stays pending until its completion record is saved. Records are written by the
 * worker (any end), by the infer-gateway (deadline, lost worker, queue timeout) and by the
 * gateway's stop route, so a pending answer outlives its request only when all of those were
 * lost (a crash between storing the turn and submitting it, a JetStream outage). Every sweep
 * interval this thread asks history to fail answers pending for longer than the sweep age,
 * which is configured above the requests' deadline (checked at start), so a live request is
 * never swept. With several chat instances each sweeps; the update is idempotent.
 *
 * Threading: one thread, woken early only to stop. */
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

#include "chat.h"
#include "log.h"
#include "sync.h"

struct chat_sweeper {
    chat *c;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stop;
};

static void sweep_once(chat *c)
{
    Parley__V1__HistoryRequest hr = PARLEY__V1__HISTORY_REQUEST__INIT;
    hr.op = (char *)"sweep.pending";
    hr.expires_ms = dmn_wall_ms() - c->cfg.sweep_age_ms;
    Parley__V1__HistoryReply *rp = NULL;
    char rid[33];
    dmn_random_id(rid);
    if (chat_history(c, rid, &hr, &rp) != PL_OK)
        LOGD(rid, "sweep skipped: %s", pl_err_last());
    else if (rp->count)
        LOGW(rid, "failed %llu answers left pending for over %lld s", (unsigned long long)rp->count,
             (long long)(c->cfg.sweep_age_ms / 1000));
    if (rp)
        protobuf_c_message_free_unpacked(&rp->base, NULL);
}

static void *sweep_main(void *arg)
{
    chat_sweeper *w = arg;
    pthread_mutex_lock(&w->mu);
    while (!w->stop) {
        struct timespec ts = sync_deadline(w->c->cfg.sweep_interval_ms);
        pthread_cond_timedwait(&w->cv, &w->mu, &ts);
        if (w->stop)
            break;
        pthread_mutex_unlock(&w->mu);
        sweep_once(w->c);
        pthread_mutex_lock(&w->mu);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

pl_status sweep_start(chat *c)
{
    if (c->cfg.sweep_age_ms <= c->cfg.turn_deadline_ms)
        return PL_ERRF(PL_INVALID, "--sweep-age must be longer than --turn-deadline");
    chat_sweeper *w = calloc(1, sizeof *w);
    if (!w)
        return PL_ERRF(PL_NOMEM, "out of memory");
    w->c = c;
    pthread_mutex_init(&w->mu, NULL);
    sync_cond_init(&w->cv);
    if (pthread_create(&w->thread, NULL, sweep_main, w) != 0) {
        pthread_cond_destroy(&w->cv);
        pthread_mutex_destroy(&w->mu);
        free(w);
        return PL_ERRF(PL_ERR, "cannot start the sweeper thread");
    }
    c->sweeper = w;
    return PL_OK;
}

void sweep_stop(chat *c)
{
    chat_sweeper *w = c->sweeper;
    if (!w)
        return;
    pthread_mutex_lock(&w->mu);
    w->stop = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->thread, NULL);
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
    free(w);
    c->sweeper = NULL;
}
