/* parley-worker — loads GGUF models and serves inference jobs for them.
 *
 * This file is the daemon's configuration table and wiring: a loader thread loads each model
 * (the admin port answers meanwhile; /readyz is false until every model is loaded and fetching),
 * serve.c runs one batching loop per model, a heartbeat thread announces the models with their
 * free slots and KV room (at once when they change, at most every 50 ms, and every
 * --heartbeat-interval otherwise), and a cancel subscription forwards cancels to the models. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bus.h"
#include "daemon.h"
#include "engine.h"
#include "log.h"
#include "modelspec.h"
#include "parley.pb-c.h"
#include "serve.h"
#include "subjects.h"
#include "sync.h"

typedef struct wk_cfg {
    const char *models;
    uint64_t kv_budget;
    int64_t max_seqs;
    int64_t threads;
    int64_t batch_tokens;
    int64_t heartbeat_interval_ms;
    const char *device;
    const char *chat_template;
    bool prefix_cache;
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
    {"batch-tokens", CFG_INT, offsetof(wk_cfg, batch_tokens), "256", 16, 8192,
     "prompt tokens processed per step next to the decoding sequences (chunked prefill)"},
    {"heartbeat-interval", CFG_DURATION, offsetof(wk_cfg, heartbeat_interval_ms), "1s", 100, 60000,
     "how often the worker announces itself"},
    {"device", CFG_STR, offsetof(wk_cfg, device), "cpu", 0, 0,
     "compute device: cpu, or cuda:N in a `make CUDA=1` build"},
    {"chat-template", CFG_STR, offsetof(wk_cfg, chat_template), "", 0, 0,
     "force a chat template family (chatml, llama3, gemma) instead of detecting it"},
    {"prefix-cache", CFG_BOOL, offsetof(wk_cfg, prefix_cache), "true", 0, 0,
     "reuse the KV blocks of earlier prompts' common prefixes (system prompt, earlier turns)"},
};

typedef struct wk {
    wk_cfg cfg;
    dmn *d;
    ms_model specs[MS_MAX_MODELS];
    srv_model *models[MS_MAX_MODELS];
    size_t n_models;
    atomic_int n_loaded; /* models loaded and fetching */
    atomic_bool load_failed;
    char load_error[256];
    pthread_t loader, hb_thread;
    bool loader_running, hb_running;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stop, draining, beat_now;
    bus_sub *cancel_sub;
    met_family *m_heartbeats;
} wk;

static void send_heartbeat(wk *w, bool draining)
{
    Parley__V1__WorkerHeartbeat hb = PARLEY__V1__WORKER_HEARTBEAT__INIT;
    Parley__V1__ModelStatus ms[MS_MAX_MODELS], *ptrs[MS_MAX_MODELS];
    srv_status st[MS_MAX_MODELS];
    size_t n = 0;
    int loaded = atomic_load(&w->n_loaded);
    for (size_t i = 0; i < (size_t)loaded && i < w->n_models; i++) {
        srv_model_status(w->models[i], &st[i]);
        parley__v1__model_status__init(&ms[n]);
        ms[n].name = w->specs[i].name;
        ms[n].max_slots = st[i].max_slots;
        ms[n].free_slots = st[i].free_slots;
        ms[n].kv_budget_bytes = st[i].kv_budget;
        ms[n].kv_free_bytes = st[i].kv_free;
        ms[n].context_length = st[i].context_length;
        ms[n].loaded = true;
        ms[n].architecture = (char *)st[i].arch;
        ms[n].quantization = (char *)st[i].quant;
        ms[n].queue_subject = st[i].queue_subject;
        ptrs[n] = &ms[n];
        n++;
    }
    hb.worker_id = (char *)dmn_instance(w->d);
    hb.device = (char *)w->cfg.device;
    hb.models = ptrs;
    hb.n_models = n;
    hb.sent_ms = dmn_wall_ms();
    hb.interval_ms = (uint32_t)w->cfg.heartbeat_interval_ms;
    hb.draining = draining;
    hb.version = PARLEY_VERSION;
    if (bus_publish_pb(dmn_bus(w->d), SUBJ_HEARTBEAT, &hb.base) == PL_OK)
        met_family_inc(w->m_heartbeats, 1);
}

static void poke_heartbeat(void *arg)
{
    wk *w = arg;
    pthread_mutex_lock(&w->mu);
    w->beat_now = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

static void wait_ms(wk *w, int64_t ms)
{
    struct timespec ts = sync_deadline(ms);
    pthread_cond_timedwait(&w->cv, &w->mu, &ts);
}

static void *heartbeat_main(void *arg)
{
    wk *w = arg;
    int64_t last = 0;
    pthread_mutex_lock(&w->mu);
    while (!w->stop) {
        int64_t now = dmn_now_ms();
        if (now - last < 50) { /* rate limit the on-change beats */
            wait_ms(w, 50 - (now - last));
            continue;
        }
        bool draining = w->draining;
        w->beat_now = false;
        pthread_mutex_unlock(&w->mu);
        if (bus_connected(dmn_bus(w->d)))
            send_heartbeat(w, draining);
        last = dmn_now_ms();
        pthread_mutex_lock(&w->mu);
        if (!w->stop && !w->beat_now)
            wait_ms(w, w->cfg.heartbeat_interval_ms);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

static void *loader_main(void *arg)
{
    wk *w = arg;
    for (size_t i = 0; i < w->n_models; i++) {
        srv_opts o = {
            .name = w->specs[i].name,
            .path = w->specs[i].path,
            .chat_template = w->cfg.chat_template[0] ? w->cfg.chat_template : NULL,
            .kv_budget = w->cfg.kv_budget,
            .max_seqs = (int)w->cfg.max_seqs,
            .threads = (int)w->cfg.threads,
            .max_batch_tokens = (int)w->cfg.batch_tokens,
            .device = w->cfg.device,
            .no_prefix_cache = !w->cfg.prefix_cache,
            .worker_id = dmn_instance(w->d),
            .b = dmn_bus(w->d),
            .metrics = dmn_metrics(w->d),
            .on_slots_changed = poke_heartbeat,
            .arg = w,
        };
        pl_status s = srv_model_load(&o, &w->models[i]);
        /* The consumer needs NATS: retry its setup until it is there. */
        while (s == PL_OK && !dmn_stopping(w->d)) {
            s = srv_model_start(w->models[i]);
            if (s == PL_OK || (s != PL_BUS && s != PL_TIMEOUT))
                break;
            LOGW(NULL, "model '%s': cannot set up its job queue yet (%s); retrying",
                 w->specs[i].name, pl_err_last());
            nanosleep(&(struct timespec){1, 0}, NULL);
        }
        if (s != PL_OK) {
            snprintf(w->load_error, sizeof w->load_error, "%s", pl_err_last());
            LOGE(NULL, "%s", w->load_error);
            atomic_store(&w->load_failed, true);
            return NULL;
        }
        atomic_store(&w->n_loaded, (int)i + 1);
        poke_heartbeat(w);
    }
    return NULL;
}

static void on_cancel(bus_msg *m, void *arg)
{
    wk *w = arg;
    Parley__V1__Cancel *c =
        (Parley__V1__Cancel *)bus_msg_unpack(m, &parley__v1__cancel__descriptor);
    if (c && c->request_id && c->request_id[0]) {
        int loaded = atomic_load(&w->n_loaded);
        for (int i = 0; i < loaded; i++)
            srv_model_cancel(w->models[i], c->request_id);
    }
    if (c)
        protobuf_c_message_free_unpacked(&c->base, NULL);
    bus_msg_destroy(m);
}

static pl_status wk_start(dmn *d, void *ctx)
{
    wk *w = ctx;
    w->d = d;
#if defined(__x86_64__)
    /* The engine is compiled with ARCHFLAGS (AVX2, FMA, F16C: see the Makefile); this file is
     * not, so the check runs before any engine code could execute an unknown instruction. */
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma") ||
        !__builtin_cpu_supports("f16c"))
        return PL_ERRF(PL_UNSUPPORTED, "this CPU lacks AVX2/FMA/F16C, which this build of the "
                                       "engine uses (rebuild on a matching machine)");
#endif
    char dev_desc[160];
    if (eng_device_check(w->cfg.device, dev_desc, sizeof dev_desc) != PL_OK)
        return PL_ERRF(PL_UNSUPPORTED, "option --device: %s", pl_err_last());
    LOGI(NULL, "compute device %s: %s", w->cfg.device, dev_desc);
    pl_status s = ms_parse(w->cfg.models, w->specs, &w->n_models);
    if (s != PL_OK)
        return PL_ERRF(s, "option --models: %s", pl_err_last());
    if (w->n_models == 0)
        LOGW(NULL, "no models configured (--models): this worker will serve nothing");
    w->m_heartbeats =
        met_counter(dmn_metrics(d), "parley_worker_heartbeats_total", "heartbeats sent", NULL);
    pthread_mutex_init(&w->mu, NULL);
    sync_cond_init(&w->cv);
    if ((s = bus_subscribe(dmn_bus(d), SUBJ_CANCEL, NULL, on_cancel, w, &w->cancel_sub)) != PL_OK)
        return s;
    if (pthread_create(&w->loader, NULL, loader_main, w) != 0)
        return PL_ERRF(PL_ERR, "cannot start the model loader");
    w->loader_running = true;
    if (pthread_create(&w->hb_thread, NULL, heartbeat_main, w) != 0)
        return PL_ERRF(PL_ERR, "cannot start the heartbeat thread");
    w->hb_running = true;
    return PL_OK;
}

static size_t wk_ready(void *ctx, dmn_check *c)
{
    wk *w = ctx;
    int loaded = atomic_load(&w->n_loaded);
    c[0].name = "models";
    c[0].ok = loaded == (int)w->n_models;
    if (atomic_load(&w->load_failed))
        snprintf(c[0].detail, sizeof c[0].detail, "%.159s", w->load_error);
    else if (!c[0].ok)
        snprintf(c[0].detail, sizeof c[0].detail, "loading: %d of %zu ready", loaded, w->n_models);
    return 1;
}

static void wk_drain(void *ctx, int64_t deadline_ms)
{
    wk *w = ctx;
    if (!w->hb_running)
        return;
    pthread_mutex_lock(&w->mu);
    w->draining = true;
    pthread_mutex_unlock(&w->mu);
    send_heartbeat(w, true); /* the registry stops counting this worker's slots at once */
    int loaded = atomic_load(&w->n_loaded);
    for (int i = 0; i < loaded; i++)
        srv_model_drain(w->models[i], deadline_ms);
}

static void wk_stop(void *ctx)
{
    wk *w = ctx;
    bus_unsubscribe(w->cancel_sub);
    if (w->loader_running)
        pthread_join(w->loader, NULL);
    if (w->hb_running) {
        pthread_mutex_lock(&w->mu);
        w->stop = true;
        pthread_cond_signal(&w->cv);
        pthread_mutex_unlock(&w->mu);
        pthread_join(w->hb_thread, NULL);
    }
    for (size_t i = 0; i < w->n_models; i++)
        srv_model_free(w->models[i]);
    if (w->hb_running || w->loader_running) {
        pthread_cond_destroy(&w->cv);
        pthread_mutex_destroy(&w->mu);
    }
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
        .ready = wk_ready,
        .drain = wk_drain,
        .stop = wk_stop,
        .admin_port_default = 9104,
    };
    return dmn_main(&spec, argc, argv);
}
