/* parley-worker — loads GGUF models and serves inference jobs for them.
 *
 * This file is the daemon's configuration table and wiring. At this stage the worker opens and
 * validates each configured model file and announces the models by heartbeat, so the
 * infer-gateway's registry (and /v1/models) knows them; the engine's batching loop attaches to
 * the same context (issue: serving). Threads: the heartbeat thread; libnats threads. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bus.h"
#include "daemon.h"
#include "gguf.h"
#include "log.h"
#include "modelspec.h"
#include "parley.pb-c.h"
#include "subjects.h"

typedef struct wk_cfg {
    const char *models;
    uint64_t kv_budget;
    int64_t max_seqs;
    int64_t threads;
    int64_t heartbeat_interval_ms;
    const char *device;
} wk_cfg;

static const cfg_opt wk_opts[] = {
    {"models", CFG_STR, offsetof(wk_cfg, models), "", 0, 0,
     "models to serve: name=path.gguf[,name=path.gguf]"},
    {"kv-budget", CFG_BYTES, offsetof(wk_cfg, kv_budget), "256M", 1 << 20, 1ULL << 40,
     "KV cache memory per model"},
    {"max-seqs", CFG_INT, offsetof(wk_cfg, max_seqs), "16", 1, 1024,
     "sequences decoded together per model"},
    {"threads", CFG_INT, offsetof(wk_cfg, threads), "0", 0, 1024,
     "compute threads (0 = all cores)"},
    {"heartbeat-interval", CFG_DURATION, offsetof(wk_cfg, heartbeat_interval_ms), "1s", 100, 60000,
     "how often the worker announces itself"},
    {"device", CFG_STR, offsetof(wk_cfg, device), "cpu", 0, 0, "compute device: cpu"},
};

typedef struct wk_model {
    ms_model spec;
    gguf_file *file;
    char arch[64];
    char quant[32];
    uint32_t context_length;
    char queue_subject[256];
} wk_model;

typedef struct wk {
    wk_cfg cfg;
    dmn *d;
    wk_model models[MS_MAX_MODELS];
    size_t n_models;
    pthread_t hb_thread;
    bool hb_running;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stop, draining;
    met_family *m_heartbeats;
} wk;

/* The most common weight type among the model's 2-D tensors, as a name ("q4_1"). */
static const char *dominant_type(const gguf_file *f)
{
    uint64_t count[64] = {0};
    for (uint64_t i = 0; i < gguf_n_tensors(f); i++) {
        const gguf_tensor *t = gguf_tensor_at(f, i);
        if (t->n_dims >= 2 && (unsigned)t->type < 64)
            count[t->type]++;
    }
    unsigned best = 0;
    for (unsigned t = 1; t < 64; t++)
        if (count[t] > count[best])
            best = t;
    return gguf_ttype_name((gguf_ttype)best);
}

static pl_status open_model(wk_model *m)
{
    pl_status s = gguf_open(m->spec.path, &m->file);
    if (s != PL_OK)
        return PL_ERRF(s, "model '%s' (%s): %s", m->spec.name, m->spec.path, pl_err_last());
    gguf_str arch;
    if (gguf_get_str(m->file, "general.architecture", &arch) != PL_OK)
        return PL_ERRF(PL_CORRUPT, "model '%s': no general.architecture", m->spec.name);
    snprintf(m->arch, sizeof m->arch, "%.*s", (int)(arch.len < 63 ? arch.len : 63), arch.ptr);
    char key[128];
    snprintf(key, sizeof key, "%s.context_length", m->arch);
    uint32_t ctx = 0;
    if (gguf_get_u32_or(m->file, key, 0, &ctx) != PL_OK)
        return PL_ERRF(PL_CORRUPT, "model '%s': bad %s", m->spec.name, key);
    m->context_length = ctx;
    snprintf(m->quant, sizeof m->quant, "%s", dominant_type(m->file));
    subj_token(m->queue_subject, sizeof m->queue_subject, SUBJ_JOBS_PREFIX, m->spec.name);
    LOGI(NULL, "model '%s': %s, %s, context %u, from %s", m->spec.name, m->arch, m->quant, ctx,
         m->spec.path);
    return PL_OK;
}

static void send_heartbeat(wk *w, bool draining)
{
    Parley__V1__WorkerHeartbeat hb = PARLEY__V1__WORKER_HEARTBEAT__INIT;
    Parley__V1__ModelStatus ms[MS_MAX_MODELS], *ptrs[MS_MAX_MODELS];
    for (size_t i = 0; i < w->n_models; i++) {
        wk_model *m = &w->models[i];
        parley__v1__model_status__init(&ms[i]);
        ms[i].name = m->spec.name;
        ms[i].max_slots = (uint32_t)w->cfg.max_seqs;
        ms[i].free_slots = (uint32_t)w->cfg.max_seqs;
        ms[i].kv_budget_bytes = w->cfg.kv_budget;
        ms[i].kv_free_bytes = w->cfg.kv_budget;
        ms[i].context_length = m->context_length;
        ms[i].loaded = false; /* validated, not yet loaded by the engine */
        ms[i].architecture = m->arch;
        ms[i].quantization = m->quant;
        ms[i].queue_subject = m->queue_subject;
        ptrs[i] = &ms[i];
    }
    hb.worker_id = (char *)dmn_instance(w->d);
    hb.device = (char *)w->cfg.device;
    hb.models = ptrs;
    hb.n_models = w->n_models;
    hb.sent_ms = dmn_wall_ms();
    hb.interval_ms = (uint32_t)w->cfg.heartbeat_interval_ms;
    hb.draining = draining;
    hb.version = PARLEY_VERSION;
    if (bus_publish_pb(dmn_bus(w->d), SUBJ_HEARTBEAT, &hb.base) == PL_OK)
        met_family_inc(w->m_heartbeats, 1);
}

static void *heartbeat_main(void *arg)
{
    wk *w = arg;
    pthread_mutex_lock(&w->mu);
    while (!w->stop) {
        bool draining = w->draining;
        pthread_mutex_unlock(&w->mu);
        if (bus_connected(dmn_bus(w->d)))
            send_heartbeat(w, draining);
        pthread_mutex_lock(&w->mu);
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        int64_t ns = ts.tv_nsec + (w->cfg.heartbeat_interval_ms % 1000) * 1000000L;
        ts.tv_sec += w->cfg.heartbeat_interval_ms / 1000 + ns / 1000000000L;
        ts.tv_nsec = ns % 1000000000L;
        if (!w->stop)
            pthread_cond_timedwait(&w->cv, &w->mu, &ts);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

static pl_status wk_start(dmn *d, void *ctx)
{
    wk *w = ctx;
    w->d = d;
    if (strcmp(w->cfg.device, "cpu") != 0)
        return PL_ERRF(PL_UNSUPPORTED, "device '%s' is not supported by this build (cpu only)",
                       w->cfg.device);
    ms_model specs[MS_MAX_MODELS];
    pl_status s = ms_parse(w->cfg.models, specs, &w->n_models);
    if (s != PL_OK)
        return PL_ERRF(s, "option --models: %s", pl_err_last());
    if (w->n_models == 0)
        LOGW(NULL, "no models configured (--models): this worker will serve nothing");
    for (size_t i = 0; i < w->n_models; i++) {
        w->models[i].spec = specs[i];
        if ((s = open_model(&w->models[i])) != PL_OK)
            return s;
    }
    w->m_heartbeats =
        met_counter(dmn_metrics(d), "parley_worker_heartbeats_total", "heartbeats sent", NULL);
    pthread_mutex_init(&w->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&w->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&w->hb_thread, NULL, heartbeat_main, w) != 0)
        return PL_ERRF(PL_ERR, "cannot start the heartbeat thread");
    w->hb_running = true;
    return PL_OK;
}

static void wk_drain(void *ctx, int64_t deadline_ms)
{
    wk *w = ctx;
    (void)deadline_ms;
    if (!w->hb_running)
        return;
    pthread_mutex_lock(&w->mu);
    w->draining = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
    send_heartbeat(w, true); /* tell the registry at once rather than at the next beat */
}

static void wk_stop(void *ctx)
{
    wk *w = ctx;
    if (w->hb_running) {
        pthread_mutex_lock(&w->mu);
        w->stop = true;
        pthread_cond_signal(&w->cv);
        pthread_mutex_unlock(&w->mu);
        pthread_join(w->hb_thread, NULL);
        pthread_cond_destroy(&w->cv);
        pthread_mutex_destroy(&w->mu);
    }
    for (size_t i = 0; i < w->n_models; i++)
        gguf_close(w->models[i].file);
}

int main(int argc, char **argv)
{
    static wk w;
    dmn_spec spec = {
        .name = "worker",
        .summary = "loads GGUF models and serves inference jobs",
        .opts = wk_opts,
        .n_opts = sizeof wk_opts / sizeof wk_opts[0],
        .cfg = &w.cfg,
        .ctx = &w,
        .start = wk_start,
        .drain = wk_drain,
        .stop = wk_stop,
        .admin_port_default = 9104,
    };
    return dmn_main(&spec, argc, argv);
}
