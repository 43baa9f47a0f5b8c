/* bgtask.c — a retrying background setup step (see bgtask.h).
 *
 * One thread per task, sleeping on a condition variable between tries and after success (so
 * bgtask_rerun can wake it). `done` and the error text are guarded by the task's mutex. */
#include "bgtask.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "sync.h"

struct bgtask {
    char name[64];
    bgtask_fn fn;
    void *arg;
    int64_t period_ms;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done, stop, rerun;
    char err[256];
};

static void *bgtask_main(void *p)
{
    bgtask *t = p;
    pthread_mutex_lock(&t->mu);
    while (!t->stop) {
        if (t->done && !t->rerun) {
            pthread_cond_wait(&t->cv, &t->mu);
            continue;
        }
        t->rerun = false;
        pthread_mutex_unlock(&t->mu);
        pl_err_clear();
        pl_status s = t->fn(t->arg);
        const char *why = pl_err_last();
        pthread_mutex_lock(&t->mu);
        if (s == PL_OK) {
            if (!t->done)
                LOGI(NULL, "%s: done", t->name);
            t->done = true;
            t->err[0] = '\0';
            continue;
        }
        t->done = false;
        char now[256];
        snprintf(now, sizeof now, "%s: %s", pl_status_str(s), why);
        if (strcmp(now, t->err) != 0) {
            LOGW(NULL, "%s: not done yet (%s); retrying every %lld ms", t->name, now,
                 (long long)t->period_ms);
            snprintf(t->err, sizeof t->err, "%s", now);
        }
        struct timespec ts = sync_deadline(t->period_ms);
        while (!t->stop && !t->rerun && pthread_cond_timedwait(&t->cv, &t->mu, &ts) != ETIMEDOUT)
            ;
    }
    pthread_mutex_unlock(&t->mu);
    return NULL;
}

pl_status bgtask_start(const char *name, bgtask_fn fn, void *arg, int64_t period_ms, bgtask **out)
{
    bgtask *t = calloc(1, sizeof *t);
    if (!t)
        return PL_ERRF(PL_NOMEM, "bgtask %s: out of memory", name);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->fn = fn;
    t->arg = arg;
    t->period_ms = period_ms > 0 ? period_ms : 1000;
    pthread_mutex_init(&t->mu, NULL);
    sync_cond_init(&t->cv);
    if (pthread_create(&t->thread, NULL, bgtask_main, t) != 0) {
        pthread_cond_destroy(&t->cv);
        pthread_mutex_destroy(&t->mu);
        free(t);
        return PL_ERRF(PL_ERR, "bgtask %s: cannot create thread", name);
    }
    *out = t;
    return PL_OK;
}

bool bgtask_done(const bgtask *t)
{
    bgtask *m = (bgtask *)t;
    pthread_mutex_lock(&m->mu);
    bool d = m->done;
    pthread_mutex_unlock(&m->mu);
    return d;
}

void bgtask_error(const bgtask *t, char *buf, size_t cap)
{
    bgtask *m = (bgtask *)t;
    pthread_mutex_lock(&m->mu);
    snprintf(buf, cap, "%s", m->done ? "" : (m->err[0] ? m->err : "pending"));
    pthread_mutex_unlock(&m->mu);
}

void bgtask_rerun(bgtask *t)
{
    pthread_mutex_lock(&t->mu);
    t->rerun = true;
    pthread_cond_signal(&t->cv);
    pthread_mutex_unlock(&t->mu);
}

void bgtask_stop(bgtask *t)
{
    if (!t)
        return;
    pthread_mutex_lock(&t->mu);
    t->stop = true;
    pthread_cond_signal(&t->cv);
    pthread_mutex_unlock(&t->mu);
    pthread_join(t->thread, NULL);
    pthread_cond_destroy(&t->cv);
    pthread_mutex_destroy(&t->mu);
    free(t);
}
