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
#include "subjects.h"
#include "wire.h"

typedef struct igw_cfg {
    int64_t worker_timeout_ms;
} igw_cfg;

static const cfg_opt igw_opts[] = {
    {"worker-timeout", CFG_DURATION, offsetof(igw_cfg, worker_timeout_ms), "5s", 100, 600000,
     "drop a worker from the registry after this long without a heartbeat"},
};

typedef struct igw {
    igw_cfg cfg;
    dmn *d;
    reg_registry *reg;
    bus_sub *hb_sub, *models_sub;
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
        parley__v1__model_info__init(&infos[i]);
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
    pl_status s = bus_subscribe(dmn_bus(d), SUBJ_HEARTBEAT, NULL, on_heartbeat, g, &g->hb_sub);
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

static void igw_stop(void *ctx)
{
    igw *g = ctx;
    bus_unsubscribe(g->hb_sub);
    bus_unsubscribe(g->models_sub);
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
        .stop = igw_stop,
        .admin_port_default = 9103,
    };
    return dmn_main(&spec, argc, argv);
}
