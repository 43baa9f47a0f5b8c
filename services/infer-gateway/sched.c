/* sched.c — admission, dispatch and request tracking for the infer-gateway (see sched.h).
 *
 * Capacity: a model can take as many new jobs as its live workers reported free slots in their
 * last heartbeats, minus the jobs dispatched since that no worker has yet confirmed (JobEvent
 * STARTED). Workers heartbeat at once when their slot count changes, so the estimate lags by
 * milliseconds; an over-estimate only leaves a job waiting in JetStream for the next free slot.
 * With several infer-gateway instances each makes its own estimate, so a burst can put up to
 * instances × free slots in JetStream; workers still fetch only what they can run.
 *
 * Failure handling, per request (checked by the dispatcher every tick):
 *  - waited past the queue timeout or its deadline → error delta (timeout);
 *  - dispatched but not started by any worker within start_timeout → error delta + cancel;
 *  - started on a worker that stopped heartbeating, before any token → back to "dispatched":
 *    JetStream redelivers the unacked job to another worker (transparent retry);
 *  - streaming from a worker that stopped heartbeating → error delta (worker_lost, retryable),
 *    a failed completion record for chat, and a cancel broadcast so that a redelivered copy is
 *    dropped by whichever worker fetches it. */
#include "sched.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "admitq.h"
#include "daemon.h"
#include "log.h"
#include "reqtab.h"
#include "subjects.h"
#include "wire.h"
#include "sync.h"

#define SCHED_TICK_MS    10
#define SCHED_MAX_MODELS 64

typedef struct smodel {
    char name[128];
    char subject[192];
    aq_queue *q;
    int unconfirmed;
    met_child *waiting, *running, *admitted, *queue_time;
} smodel;

/* Something to do outside the lock. */
typedef struct action {
    enum { ACT_PUBLISH, ACT_FAIL } kind;
    aq_job *job;       /* ACT_PUBLISH: owned */
    char subject[192]; /* ACT_PUBLISH: jobs subject */
    rt_entry info;     /* ACT_FAIL: copy of the entry */
    pl_status status;  /* ACT_FAIL */
    char message[160]; /* ACT_FAIL */
    bool cancel;       /* ACT_FAIL: broadcast a cancel too */
    bool record;       /* ACT_FAIL: write a failed completion record */
    struct action *next;
} action;

struct sched {
    sched_cfg cfg;
    bus *b;
    reg_registry *reg;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t thread;
    bool running, stop;
    rt_table *rt;
    smodel models[SCHED_MAX_MODELS];
    size_t n_models;
    met_family *f_waiting, *f_running, *f_admitted, *f_rejected, *f_failed, *f_queue_time;
};

static const char *const model_label[] = {"model", NULL};
static const char *const model_reason[] = {"model", "reason", NULL};

pl_status sched_create(const sched_cfg *cfg, bus *b, reg_registry *reg, met_registry *mr,
                       sched **out)
{
    sched *s = calloc(1, sizeof *s);
    if (!s || !(s->rt = rt_create(4096))) {
        free(s);
        return PL_ERRF(PL_NOMEM, "out of memory");
    }
    s->cfg = *cfg;
    s->b = b;
    s->reg = reg;
    pthread_mutex_init(&s->mu, NULL);
    sync_cond_init(&s->cv);
    s->f_waiting = met_gauge(mr, "parley_infer_num_requests_waiting",
                             "requests queued in the infer-gateway, per model", model_label);
    s->f_running = met_gauge(mr, "parley_infer_num_requests_running",
                             "requests started on a worker and not finished", model_label);
    s->f_admitted = met_counter(mr, "parley_infer_requests_admitted_total",
                                "requests admitted to a queue", model_label);
    s->f_rejected = met_counter(mr, "parley_infer_requests_rejected_total",
                                "requests refused at admission, by reason", model_reason);
    s->f_failed =
        met_counter(mr, "parley_infer_requests_failed_total",
                    "admitted requests the infer-gateway had to fail, by reason", model_reason);
    s->f_queue_time =
        met_histogram(mr, "parley_infer_request_queue_time_seconds", "admission to dispatch",
                      model_label, met_latency_buckets, met_latency_buckets_n);
    *out = s;
    return PL_OK;
}

/* The model's state, created on first use; NULL when the table is full. Lock held. */
static smodel *model_get(sched *s, const char *name)
{
    for (size_t i = 0; i < s->n_models; i++)
        if (strcmp(s->models[i].name, name) == 0)
            return &s->models[i];
    if (s->n_models == SCHED_MAX_MODELS)
        return NULL;
    smodel *m = &s->models[s->n_models];
    memset(m, 0, sizeof *m);
    snprintf(m->name, sizeof m->name, "%s", name);
    if (!subj_token(m->subject, sizeof m->subject, SUBJ_JOBS_PREFIX, name) ||
        !(m->q = aq_create((size_t)s->cfg.queue_size)))
        return NULL;
    m->waiting = met_with(s->f_waiting, name, NULL);
    m->running = met_with(s->f_running, name, NULL);
    m->admitted = met_with(s->f_admitted, name, NULL);
    m->queue_time = met_with(s->f_queue_time, name, NULL);
    s->n_models++;
    return m;
}

static bool safe_id(const char *id)
{
    size_t n = id ? strlen(id) : 0;
    if (n == 0 || n >= 64)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = id[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              c == '-' || c == '_'))
            return false;
    }
    return true;
}

static void copy(char *dst, size_t cap, const char *src)
{
    snprintf(dst, cap, "%s", src ? src : "");
}

static void reject(sched *s, Parley__V1__InferAdmit *admit, Parley__V1__Error *err, pl_status st,
                   const char *msg, const char *model, const char *reason, const char *param)
{
    wire_error_init(err, st, msg);
    err->param = (char *)(param ? param : "");
    if (st == PL_OVERLOADED || st == PL_UNAVAILABLE)
        err->retry_after_ms = 1000;
    admit->error = err;
    met_inc(met_with(s->f_rejected, model && model[0] ? model : "-", reason, NULL), 1);
}

void sched_submit(sched *s, const Parley__V1__InferRequest *req, const void *data, size_t len,
                  Parley__V1__InferAdmit *admit, Parley__V1__Error *err)
{
    static _Thread_local char msg[256];
    admit->request_id = req->request_id;
    if (!safe_id(req->request_id))
        return reject(s, admit, err, PL_INVALID, "request_id must be 1..63 of [A-Za-z0-9_-]",
                      req->model, "invalid", "request_id");
    if (!req->model || !req->model[0])
        return reject(s, admit, err, PL_INVALID, "model is required", "-", "invalid", "model");
    int64_t now = dmn_now_ms();
    reg_model rm;
    if (!reg_model_get(s->reg, req->model, now, &rm)) {
        if (reg_model_known(s->reg, req->model)) {
            snprintf(msg, sizeof msg, "no worker is serving model '%s' right now", req->model);
            return reject(s, admit, err, PL_UNAVAILABLE, msg, req->model, "no_worker", NULL);
        }
        snprintf(msg, sizeof msg, "the model '%s' does not exist", req->model);
        return reject(s, admit, err, PL_NOT_FOUND, msg, "-", "unknown_model", "model");
    }

    pthread_mutex_lock(&s->mu);
    if (rt_find(s->rt, req->request_id)) { /* a duplicate submit: already admitted */
        pthread_mutex_unlock(&s->mu);
        return;
    }
    smodel *m = model_get(s, req->model);
    aq_job *j = calloc(1, sizeof *j);
    void *payload = malloc(len ? len : 1);
    if (!m || !j || !payload) {
        pthread_mutex_unlock(&s->mu);
        free(j);
        free(payload);
        return reject(s, admit, err, PL_NOMEM, "out of memory", req->model, "internal", NULL);
    }
    memcpy(payload, data, len);
    copy(j->request_id, sizeof j->request_id, req->request_id);
    copy(j->user_id, sizeof j->user_id, req->user_id);
    j->priority = (int)req->priority;
    j->enqueued_ms = now;
    int64_t deadline = now + s->cfg.job_timeout_ms;
    if (req->deadline_ms > 0) {
        int64_t d = now + (req->deadline_ms - dmn_wall_ms());
        if (d < deadline)
            deadline = d;
    }
    int64_t qdl = now + s->cfg.queue_timeout_ms;
    j->deadline_ms = qdl < deadline ? qdl : deadline;
    j->payload = payload;
    j->payload_len = len;
    if (req->delta_subject && req->delta_subject[0])
        copy(j->delta_subject, sizeof j->delta_subject, req->delta_subject);
    else
        snprintf(j->delta_subject, sizeof j->delta_subject, "%s%s", SUBJ_DELTA_PREFIX,
                 req->request_id);
    admit->queue_position = (uint32_t)aq_ahead(m->q, j->priority);
    if (aq_push(m->q, j) != PL_OK) {
        pthread_mutex_unlock(&s->mu);
        aq_job_free(j);
        snprintf(msg, sizeof msg, "model '%s' is overloaded: %zu requests are waiting", req->model,
                 aq_capacity(m->q));
        return reject(s, admit, err, PL_OVERLOADED, msg, req->model, "queue_full", NULL);
    }
    rt_entry *e = rt_add(s->rt, req->request_id);
    if (e) {
        copy(e->model, sizeof e->model, req->model);
        copy(e->delta_subject, sizeof e->delta_subject, j->delta_subject);
        copy(e->user_id, sizeof e->user_id, req->user_id);
        copy(e->conversation_id, sizeof e->conversation_id, req->conversation_id);
        copy(e->message_id, sizeof e->message_id, req->message_id);
        e->state = RT_QUEUED;
        e->state_ms = now;
        e->deadline_ms = deadline;
    }
    met_inc(m->admitted, 1);
    met_set(m->waiting, (double)aq_len(m->q));
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

void sched_cancel(sched *s, const char *request_id)
{
    pthread_mutex_lock(&s->mu);
    rt_entry *e = rt_find(s->rt, request_id);
    if (e && e->state == RT_QUEUED) {
        smodel *m = model_get(s, e->model);
        if (m) {
            aq_job_free(aq_remove(m->q, request_id));
            met_set(m->waiting, (double)aq_len(m->q));
        }
        rt_remove(s->rt, request_id);
    }
    /* Dispatched or running: the workers act on the same broadcast and report DONE. */
    pthread_mutex_unlock(&s->mu);
}

void sched_job_event(sched *s, const Parley__V1__JobEvent *ev)
{
    if (!ev->request_id)
        return;
    pthread_mutex_lock(&s->mu);
    rt_entry *e = rt_find(s->rt, ev->request_id);
    if (!e) {
        pthread_mutex_unlock(&s->mu);
        return;
    }
    smodel *m = model_get(s, e->model);
    if (e->state == RT_DISPATCHED && m && m->unconfirmed > 0)
        m->unconfirmed--;
    switch (ev->kind) {
    case PARLEY__V1__JOB_EVENT_KIND__JOB_EVENT_KIND_STARTED:
        if (e->state != RT_STREAMING)
            e->state = RT_STARTED;
        copy(e->worker_id, sizeof e->worker_id, ev->worker_id);
        e->state_ms = dmn_now_ms();
        break;
    case PARLEY__V1__JOB_EVENT_KIND__JOB_EVENT_KIND_FIRST_TOKEN:
        e->state = RT_STREAMING;
        copy(e->worker_id, sizeof e->worker_id, ev->worker_id);
        e->state_ms = dmn_now_ms();
        break;
    case PARLEY__V1__JOB_EVENT_KIND__JOB_EVENT_KIND_DONE:
    default:
        rt_remove(s->rt, ev->request_id);
        break;
    }
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

void sched_counts(sched *s, const char *model, uint32_t *queued, uint32_t *running)
{
    *queued = *running = 0;
    pthread_mutex_lock(&s->mu);
    for (size_t i = 0; i < s->n_models; i++)
        if (strcmp(s->models[i].name, model) == 0) {
            *queued = (uint32_t)aq_len(s->models[i].q);
            *running = (uint32_t)met_value(s->models[i].running);
        }
    pthread_mutex_unlock(&s->mu);
}

/* --- the dispatcher --------------------------------------------------------------------------- */

typedef struct sweep_ctx {
    sched *s;
    int64_t now;
    action **acts;
    uint32_t running[SCHED_MAX_MODELS];
} sweep_ctx;

static void push_fail(action **acts, const rt_entry *e, pl_status st, const char *why, bool cancel,
                      bool record)
{
    action *a = calloc(1, sizeof *a);
    if (!a)
        return;
    a->kind = ACT_FAIL;
    a->info = *e;
    a->status = st;
    copy(a->message, sizeof a->message, why);
    a->cancel = cancel;
    a->record = record;
    a->next = *acts;
    *acts = a;
}

static bool sweep_one(rt_entry *e, void *arg)
{
    sweep_ctx *c = arg;
    sched *s = c->s;
    smodel *m = model_get(s, e->model);
    if (e->state == RT_QUEUED)
        return false; /* the queue's own expiry handles these */
    if (e->deadline_ms && c->now >= e->deadline_ms) {
        push_fail(c->acts, e, PL_TIMEOUT, "the request ran past its deadline", true, true);
        if (e->state == RT_DISPATCHED && m && m->unconfirmed > 0)
            m->unconfirmed--;
        met_inc(met_with(s->f_failed, e->model, "deadline", NULL), 1);
        return true;
    }
    if (e->state == RT_DISPATCHED) {
        if (c->now - e->state_ms > s->cfg.start_timeout_ms) {
            push_fail(c->acts, e, PL_UNAVAILABLE, "no worker started the request in time", true,
                      true);
            if (m && m->unconfirmed > 0)
                m->unconfirmed--;
            met_inc(met_with(s->f_failed, e->model, "not_started", NULL), 1);
            return true;
        }
        return false;
    }
    if (!reg_worker_alive(s->reg, e->worker_id, c->now)) {
        if (e->state == RT_STARTED) {
            /* No token reached anyone: JetStream will redeliver the unacked job. */
            LOGW(e->request_id, "worker %s vanished before the first token; awaiting redelivery",
                 e->worker_id);
            e->state = RT_DISPATCHED;
            e->state_ms = c->now;
            if (m)
                m->unconfirmed++;
            return false;
        }
        LOGW(e->request_id, "worker %s vanished while streaming; failing the request",
             e->worker_id);
        push_fail(c->acts, e, PL_UNAVAILABLE,
                  "the worker generating this answer stopped; please retry", true, true);
        met_inc(met_with(s->f_failed, e->model, "worker_lost", NULL), 1);
        return true;
    }
    if (m)
        c->running[m - s->models]++;
    return false;
}

/* Decides, under the lock, what to publish and what to fail this tick. */
static action *plan_tick(sched *s, int64_t now)
{
    action *acts = NULL;
    for (size_t i = 0; i < s->n_models; i++) {
        smodel *m = &s->models[i];
        aq_job *j;
        while ((j = aq_pop_expired(m->q, now))) {
            rt_entry *e = rt_find(s->rt, j->request_id);
            rt_entry tmp = {0};
            copy(tmp.request_id, sizeof tmp.request_id, j->request_id);
            copy(tmp.model, sizeof tmp.model, m->name);
            copy(tmp.delta_subject, sizeof tmp.delta_subject, j->delta_subject);
            push_fail(&acts, e ? e : &tmp, PL_TIMEOUT,
                      "the request waited too long in the queue; please retry", false, true);
            met_inc(met_with(s->f_failed, m->name, "queue_timeout", NULL), 1);
            rt_remove(s->rt, j->request_id);
            aq_job_free(j);
        }
        reg_model rm;
        int64_t free_slots = 0;
        if (reg_model_get(s->reg, m->name, now, &rm))
            free_slots = (int64_t)rm.free_slots - m->unconfirmed;
        while (free_slots > 0 && (j = aq_pop(m->q))) {
            action *a = calloc(1, sizeof *a);
            if (!a) {
                aq_job_free(j);
                break;
            }
            a->kind = ACT_PUBLISH;
            a->job = j;
            copy(a->subject, sizeof a->subject, m->subject);
            a->next = acts;
            acts = a;
            rt_entry *e = rt_find(s->rt, j->request_id);
            if (e) {
                e->state = RT_DISPATCHED;
                e->state_ms = now;
            }
            m->unconfirmed++;
            free_slots--;
            met_observe(m->queue_time, (double)(now - j->enqueued_ms) / 1000.0);
        }
        met_set(m->waiting, (double)aq_len(m->q));
    }
    sweep_ctx c = {.s = s, .now = now, .acts = &acts};
    rt_sweep(s->rt, sweep_one, &c);
    for (size_t i = 0; i < s->n_models; i++)
        met_set(s->models[i].running, c.running[i]);
    return acts;
}

static void fail_request(sched *s, const action *a)
{
    const rt_entry *e = &a->info;
    Parley__V1__Error err;
    wire_error_init(&err, a->status, a->message);
    if (a->status == PL_UNAVAILABLE && e->state == RT_STREAMING)
        err.code = PARLEY__V1__ERROR_CODE__ERROR_CODE_WORKER_LOST;
    err.retryable = true;
    Parley__V1__TokenDelta d = PARLEY__V1__TOKEN_DELTA__INIT;
    d.request_id = (char *)e->request_id;
    d.seq = 0; /* out of band: a terminal error from the infer-gateway, not from a worker */
    d.finish_reason = PARLEY__V1__FINISH_REASON__FINISH_REASON_ERROR;
    d.error = &err;
    d.model = (char *)e->model;
    if (bus_publish_pb(s->b, e->delta_subject, &d.base) != PL_OK)
        LOGW(e->request_id, "cannot publish the error delta: %s", pl_err_last());
    if (a->cancel) {
        Parley__V1__Cancel c = PARLEY__V1__CANCEL__INIT;
        c.request_id = (char *)e->request_id;
        c.reason = (char *)a->message;
        bus_publish_pb(s->b, SUBJ_CANCEL, &c.base);
    }
    if (a->record) {
        Parley__V1__CompletionRecord r = PARLEY__V1__COMPLETION_RECORD__INIT;
        r.request_id = (char *)e->request_id;
        r.user_id = (char *)e->user_id;
        r.model = (char *)e->model;
        r.text = (char *)"";
        r.finish_reason = PARLEY__V1__FINISH_REASON__FINISH_REASON_ERROR;
        r.error = &err;
        r.conversation_id = (char *)e->conversation_id;
        r.message_id = (char *)e->message_id;
        r.finished_ms = dmn_wall_ms();
        char msgid[96];
        snprintf(msgid, sizeof msgid, "%s:failed", e->request_id);
        if (bus_js_publish_pb(s->b, SUBJ_COMPLETIONS, &r.base, msgid, 2000) != PL_OK)
            LOGW(e->request_id, "cannot record the failure: %s", pl_err_last());
    }
    LOGI(e->request_id, "failed request (%s): %s", pl_status_str(a->status), a->message);
}

static void run_actions(sched *s, action *acts)
{
    while (acts) {
        action *a = acts;
        acts = a->next;
        if (a->kind == ACT_PUBLISH) {
            pl_status st = bus_js_publish(s->b, a->subject, a->job->payload, a->job->payload_len,
                                          a->job->request_id, 2000);
            if (st != PL_OK) {
                LOGW(a->job->request_id, "cannot dispatch to %s: %s", a->subject, pl_err_last());
                action f = {.kind = ACT_FAIL, .status = PL_UNAVAILABLE};
                pthread_mutex_lock(&s->mu);
                rt_entry *e = rt_find(s->rt, a->job->request_id);
                if (e) {
                    f.info = *e;
                    smodel *m = model_get(s, e->model);
                    if (m && m->unconfirmed > 0)
                        m->unconfirmed--;
                    rt_remove(s->rt, a->job->request_id);
                }
                pthread_mutex_unlock(&s->mu);
                copy(f.message, sizeof f.message, "the job queue is unavailable; please retry");
                if (f.info.request_id[0])
                    fail_request(s, &f);
            }
            aq_job_free(a->job);
        } else {
            fail_request(s, a);
        }
        free(a);
    }
}

static void *dispatcher_main(void *arg)
{
    sched *s = arg;
    pthread_mutex_lock(&s->mu);
    while (!s->stop) {
        action *acts = plan_tick(s, dmn_now_ms());
        pthread_mutex_unlock(&s->mu);
        run_actions(s, acts);
        pthread_mutex_lock(&s->mu);
        if (s->stop)
            break;
        struct timespec ts = sync_deadline(SCHED_TICK_MS);
        pthread_cond_timedwait(&s->cv, &s->mu, &ts);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

pl_status sched_start(sched *s)
{
    if (pthread_create(&s->thread, NULL, dispatcher_main, s) != 0)
        return PL_ERRF(PL_ERR, "cannot start the dispatcher");
    s->running = true;
    return PL_OK;
}

void sched_destroy(sched *s)
{
    if (!s)
        return;
    if (s->running) {
        pthread_mutex_lock(&s->mu);
        s->stop = true;
        pthread_cond_signal(&s->cv);
        pthread_mutex_unlock(&s->mu);
        pthread_join(s->thread, NULL);
    }
    /* Whatever is still queued is answered, so no client waits for ever. */
    action *acts = NULL;
    for (size_t i = 0; i < s->n_models; i++) {
        aq_job *j;
        while ((j = aq_pop(s->models[i].q))) {
            rt_entry *e = rt_find(s->rt, j->request_id);
            if (e)
                push_fail(&acts, e, PL_UNAVAILABLE, "the service is restarting; please retry",
                          false, true);
            aq_job_free(j);
        }
        aq_destroy(s->models[i].q);
    }
    run_actions(s, acts);
    rt_destroy(s->rt);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    free(s);
}
