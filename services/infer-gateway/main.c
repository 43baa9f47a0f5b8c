/* parley-infer-gateway — admission, per-model queues and the registry of workers.
 *
 * This file is the daemon's configuration table and wiring; the registry lives in registry.c.
 * Threads: libnats delivery threads run the handlers; the registry is the only shared state. */
#include <stdlib.h>
#include <string.h>

#include "jsetup.h"
#include "bus.h"
#include "daemon.h"
#include "log.h"
#include "parley.pb-c.h"
#include "registry.h"
#include "sched.h"
#include "subjects.h"
#include "wire.h"

typedef struct igw_cfg {
    int64_t worker_timeout_ms;
    sched_cfg sched;
} igw_cfg;

static const cfg_opt igw_opts[] = {
    {"worker-timeout", CFG_DURATION, offsetof(igw_cfg, worker_timeout_ms), "5s", 100, 600000,
     "drop a worker from the registry after this long without a heartbeat"},
    {"queue-size", CFG_INT, offsetof(igw_cfg, sched.queue_size), "64", 1, 100000,
     "requests waiting per model; beyond it new requests get 'overloaded' (HTTP 429)"},
    {"queue-timeout", CFG_DURATION, offsetof(igw_cfg, sched.queue_timeout_ms), "60s", 100, 3600000,
     "longest wait in the queue before a request fails"},
    {"job-timeout", CFG_DURATION, offsetof(igw_cfg, sched.job_timeout_ms), "10m", 1000, 86400000,
     "longest life of a request when it gives no deadline"},
    {"start-timeout", CFG_DURATION, offsetof(igw_cfg, sched.start_timeout_ms), "30s", 100, 3600000,
     "a dispatched request no worker starts within this fails"},
};

typedef struct igw {
    igw_cfg cfg;
    dmn *d;
    reg_registry *reg;
    bus_sub *hb_sub, *models_sub, *submit_sub, *cancel_sub, *events_sub;
    sched *sched;
    jsetup js;
    met_family *m_workers, *m_heartbeats;
} igw;

static void on_heartbeat(bus_msg *m, void *arg)
{
    igw *g = arg;
    Parley__V1__WorkerHeartbeat *hb =
        (Parley__V1__WorkerHeartbeat *)bus_msg_unpack(m, &parley__v1__worker_heartbeat__descriptor);
    if (!hb) {
        LOGW(NULL, "dropping a heartbeat that does not parse: %s", pl_err_last());
    } else {
        if (reg_heartbeat(g->reg, hb, dmn_now_ms(), dmn_wall_ms()) != PL_OK)
            LOGW(NULL, "bad heartbeat: %s", pl_err_last());
        met_family_inc(g->m_heartbeats, 1);
        protobuf_c_message_free_unpacked(&hb->base, NULL);
    }
    met_family_set(g->m_workers, (double)reg_n_workers(g->reg, dmn_now_ms()));
    bus_msg_destroy(m);
}

#define IGW_MAX_MODELS 64

static void on_models(bus_msg *m, void *arg)
{
    igw *g = arg;
    reg_model models[IGW_MAX_MODELS];
    size_t n = reg_models(g->reg, dmn_now_ms(), models, IGW_MAX_MODELS);

    Parley__V1__ModelList list = PARLEY__V1__MODEL_LIST__INIT;
    Parley__V1__ModelInfo infos[IGW_MAX_MODELS], *ptrs[IGW_MAX_MODELS];
    for (size_t i = 0; i < n; i++) {
        uint32_t queued, running;
        sched_counts(g->sched, models[i].name, &queued, &running);
        parley__v1__model_info__init(&infos[i]);
        infos[i].queued = queued;
        infos[i].id = models[i].name;
        infos[i].created = models[i].first_seen_ms / 1000;
        infos[i].workers = models[i].workers;
        infos[i].context_length = models[i].context_length;
        infos[i].free_slots = models[i].free_slots;
        ptrs[i] = &infos[i];
    }
    list.n_models = n;
    list.models = ptrs;
    if (bus_respond_pb(dmn_bus(g->d), m, &list.base) != PL_OK)
        LOGW(NULL, "cannot answer a model list request: %s", pl_err_last());
    bus_msg_destroy(m);
}

static void on_submit(bus_msg *m, void *arg)
{
    igw *g = arg;
    Parley__V1__InferAdmit admit = PARLEY__V1__INFER_ADMIT__INIT;
    Parley__V1__Error err;
    Parley__V1__InferRequest *req =
        (Parley__V1__InferRequest *)bus_msg_unpack(m, &parley__v1__infer_request__descriptor);
    if (!req) {
        wire_error_init(&err, PL_INVALID, "inference request does not parse");
        admit.error = &err;
    } else {
        sched_submit(g->sched, req, bus_msg_data(m), bus_msg_len(m), &admit, &err);
    }
    if (bus_respond_pb(dmn_bus(g->d), m, &admit.base) != PL_OK)
        LOGW(req ? req->request_id : NULL, "cannot answer a submit: %s", pl_err_last());
    if (req)
        protobuf_c_message_free_unpacked(&req->base, NULL);
    bus_msg_destroy(m);
}

static void on_cancel(bus_msg *m, void *arg)
{
    igw *g = arg;
    Parley__V1__Cancel *c =
        (Parley__V1__Cancel *)bus_msg_unpack(m, &parley__v1__cancel__descriptor);
    if (c && c->request_id) {
        sched_cancel(g->sched, c->request_id);
        protobuf_c_message_free_unpacked(&c->base, NULL);
    }
    bus_msg_destroy(m);
}

static void on_event(bus_msg *m, void *arg)
{
    igw *g = arg;
    Parley__V1__JobEvent *ev =
        (Parley__V1__JobEvent *)bus_msg_unpack(m, &parley__v1__job_event__descriptor);
    if (ev) {
        sched_job_event(g->sched, ev);
        protobuf_c_message_free_unpacked(&ev->base, NULL);
    }
    bus_msg_destroy(m);
}

/* The jobs stream the infer-gateway publishes admitted requests to; workers consume it. */
static const char *const jobs_subjects[] = {SUBJ_JOBS_ALL, NULL};
static const bus_stream_cfg igw_streams[] = {
    {.name = STREAM_JOBS, .subjects = jobs_subjects, .work_queue = true, .max_age_ms = 3600 * 1000},
};
static const jsetup_spec igw_js = {.streams = igw_streams, .n_streams = 1};

static pl_status igw_start(dmn *d, void *ctx)
{
    igw *g = ctx;
    g->d = d;
    g->reg = reg_create(g->cfg.worker_timeout_ms);
    if (!g->reg)
        return PL_ERRF(PL_NOMEM, "out of memory");
    met_registry *mr = dmn_metrics(d);
    g->m_workers = met_gauge(mr, "parley_infer_workers", "live workers in the registry", NULL);
    g->m_heartbeats =
        met_counter(mr, "parley_infer_heartbeats_total", "worker heartbeats received", NULL);
    pl_status s = sched_create(&g->cfg.sched, dmn_bus(d), g->reg, mr, &g->sched);
    if (s == PL_OK)
        s = bus_subscribe(dmn_bus(d), SUBJ_HEARTBEAT, NULL, on_heartbeat, g, &g->hb_sub);
    if (s == PL_OK)
        s = bus_subscribe(dmn_bus(d), SUBJ_INFER_EVENTS, NULL, on_event, g, &g->events_sub);
    if (s == PL_OK)
        s = bus_subscribe(dmn_bus(d), SUBJ_CANCEL, NULL, on_cancel, g, &g->cancel_sub);
    if (s == PL_OK)
        s = bus_subscribe(dmn_bus(d), SUBJ_INFER_SUBMIT, QUEUE_INFER, on_submit, g, &g->submit_sub);
    if (s == PL_OK)
        s = sched_start(g->sched);
    if (s == PL_OK)
        s = bus_subscribe(dmn_bus(d), SUBJ_INFER_MODELS, QUEUE_INFER, on_models, g, &g->models_sub);
    if (s == PL_OK)
        s = jsetup_start(&g->js, dmn_bus(d), &igw_js);
    return s;
}

static size_t igw_ready(void *ctx, dmn_check *c)
{
    igw *g = ctx;
    jsetup_check(&g->js, &c[0]);
    return 1;
}

static void igw_drain(void *ctx, int64_t deadline_ms)
{
    igw *g = ctx;
    (void)deadline_ms;
    /* Another instance takes new submits; queued requests are failed retryably at stop. */
    bus_unsubscribe(g->submit_sub);
    g->submit_sub = NULL;
}

static void igw_stop(void *ctx)
{
    igw *g = ctx;
    bus_unsubscribe(g->submit_sub);
    bus_unsubscribe(g->cancel_sub);
    bus_unsubscribe(g->events_sub);
    bus_unsubscribe(g->hb_sub);
    bus_unsubscribe(g->models_sub);
    sched_destroy(g->sched);
    jsetup_stop(&g->js);
    reg_destroy(g->reg);
}

int main(int argc, char **argv)
{
    static igw g;
    dmn_spec spec = {
        .name = "infer-gateway",
        .summary = "admission, per-model queues and the registry of workers",
        .opts = igw_opts,
        .n_opts = sizeof igw_opts / sizeof igw_opts[0],
        .cfg = &g.cfg,
        .ctx = &g,
        .start = igw_start,
        .ready = igw_ready,
        .drain = igw_drain,
        .stop = igw_stop,
        .admin_port_default = 9103,
    };
    return dmn_main(&spec, argc, argv);
}
