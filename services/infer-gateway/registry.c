/* registry.c — live workers and their models, from heartbeats (see registry.h).
 *
 * A small array of workers, linear scans: a deployment has tens of workers, not thousands, and
 * the scans run per heartbeat (1/s per worker) or per /v1/models call. When that changes, index
 * by id. Model names are remembered with the wall time they were first seen so /v1/models can
 * report a stable "created". */
#include "registry.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define REG_MAX_MODELS_PER_WORKER 8

typedef struct reg_wmodel {
    char name[128];
    uint32_t max_slots, free_slots, context_length;
    uint64_t kv_free;
} reg_wmodel;

typedef struct reg_worker {
    char id[128];
    int64_t last_ms;
    bool draining;
    size_t n_models;
    reg_wmodel models[REG_MAX_MODELS_PER_WORKER];
} reg_worker;

typedef struct reg_seen {
    char name[128];
    int64_t first_wall_ms;
} reg_seen;

struct reg_registry {
    pthread_mutex_t mu;
    int64_t timeout_ms;
    reg_worker *workers;
    size_t n, cap;
    reg_seen *seen;
    size_t n_seen, cap_seen;
};

reg_registry *reg_create(int64_t timeout_ms)
{
    reg_registry *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    pthread_mutex_init(&r->mu, NULL);
    r->timeout_ms = timeout_ms > 0 ? timeout_ms : 5000;
    return r;
}

void reg_destroy(reg_registry *r)
{
    if (!r)
        return;
    pthread_mutex_destroy(&r->mu);
    free(r->workers);
    free(r->seen);
    free(r);
}

static void copy_name(char *dst, size_t cap, const char *src)
{
    size_t n = src ? strlen(src) : 0;
    if (n >= cap)
        n = cap - 1;
    memcpy(dst, src ? src : "", n);
    dst[n] = '\0';
}

/* Remembers when a model name was first seen; called with the mutex held. */
static void note_seen(reg_registry *r, const char *name, int64_t wall_ms)
{
    for (size_t i = 0; i < r->n_seen; i++)
        if (strcmp(r->seen[i].name, name) == 0)
            return;
    if (r->n_seen == r->cap_seen) {
        size_t cap = r->cap_seen ? r->cap_seen * 2 : 8;
        reg_seen *s = realloc(r->seen, cap * sizeof *s);
        if (!s)
            return; /* "created" falls back to now; not worth failing a heartbeat for */
        r->seen = s;
        r->cap_seen = cap;
    }
    copy_name(r->seen[r->n_seen].name, sizeof r->seen[0].name, name);
    r->seen[r->n_seen++].first_wall_ms = wall_ms;
}

static int64_t first_seen(const reg_registry *r, const char *name, int64_t def)
{
    for (size_t i = 0; i < r->n_seen; i++)
        if (strcmp(r->seen[i].name, name) == 0)
            return r->seen[i].first_wall_ms;
    return def;
}

pl_status reg_heartbeat(reg_registry *r, const Parley__V1__WorkerHeartbeat *hb, int64_t now_ms,
                        int64_t wall_ms)
{
    if (!hb->worker_id || !hb->worker_id[0])
        return PL_ERRF(PL_INVALID, "heartbeat without a worker id");
    pthread_mutex_lock(&r->mu);
    reg_worker *w = NULL;
    for (size_t i = 0; i < r->n; i++)
        if (strcmp(r->workers[i].id, hb->worker_id) == 0)
            w = &r->workers[i];
    if (!w) {
        if (r->n == r->cap) {
            size_t cap = r->cap ? r->cap * 2 : 8;
            reg_worker *ws = realloc(r->workers, cap * sizeof *ws);
            if (!ws) {
                pthread_mutex_unlock(&r->mu);
                return PL_ERRF(PL_NOMEM, "registry: out of memory");
            }
            r->workers = ws;
            r->cap = cap;
        }
        w = &r->workers[r->n++];
        memset(w, 0, sizeof *w);
        copy_name(w->id, sizeof w->id, hb->worker_id);
    }
    w->last_ms = now_ms;
    w->draining = hb->draining;
    w->n_models = 0;
    for (size_t i = 0; i < hb->n_models && w->n_models < REG_MAX_MODELS_PER_WORKER; i++) {
        const Parley__V1__ModelStatus *m = hb->models[i];
        if (!m->name || !m->name[0])
            continue;
        reg_wmodel *wm = &w->models[w->n_models++];
        copy_name(wm->name, sizeof wm->name, m->name);
        wm->max_slots = m->max_slots;
        wm->free_slots = m->free_slots;
        wm->context_length = m->context_length;
        wm->kv_free = m->kv_free_bytes;
        note_seen(r, wm->name, wall_ms);
    }
    pthread_mutex_unlock(&r->mu);
    return PL_OK;
}

/* Called with the mutex held. */
static size_t expire_locked(reg_registry *r, int64_t now_ms)
{
    size_t dropped = 0;
    for (size_t i = 0; i < r->n;) {
        if (now_ms - r->workers[i].last_ms > r->timeout_ms) {
            r->workers[i] = r->workers[--r->n];
            dropped++;
        } else {
            i++;
        }
    }
    return dropped;
}

size_t reg_expire(reg_registry *r, int64_t now_ms)
{
    pthread_mutex_lock(&r->mu);
    size_t d = expire_locked(r, now_ms);
    pthread_mutex_unlock(&r->mu);
    return d;
}

size_t reg_n_workers(reg_registry *r, int64_t now_ms)
{
    pthread_mutex_lock(&r->mu);
    expire_locked(r, now_ms);
    size_t n = 0;
    for (size_t i = 0; i < r->n; i++)
        n += !r->workers[i].draining;
    pthread_mutex_unlock(&r->mu);
    return n;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(((const reg_model *)a)->name, ((const reg_model *)b)->name);
}

size_t reg_models(reg_registry *r, int64_t now_ms, reg_model *out, size_t cap)
{
    size_t n = 0;
    pthread_mutex_lock(&r->mu);
    expire_locked(r, now_ms);
    for (size_t i = 0; i < r->n; i++) {
        const reg_worker *w = &r->workers[i];
        if (w->draining)
            continue;
        for (size_t j = 0; j < w->n_models; j++) {
            const reg_wmodel *wm = &w->models[j];
            reg_model *m = NULL;
            for (size_t k = 0; k < n; k++)
                if (strcmp(out[k].name, wm->name) == 0)
                    m = &out[k];
            if (!m) {
                if (n == cap)
                    continue; /* more models than the caller has room for */
                m = &out[n++];
                memset(m, 0, sizeof *m);
                copy_name(m->name, sizeof m->name, wm->name);
                m->first_seen_ms = first_seen(r, wm->name, 0);
                m->context_length = wm->context_length;
            }
            m->workers++;
            m->free_slots += wm->free_slots;
            m->max_slots += wm->max_slots;
            m->kv_free_bytes += wm->kv_free;
            if (wm->context_length && wm->context_length < m->context_length)
                m->context_length = wm->context_length;
        }
    }
    pthread_mutex_unlock(&r->mu);
    qsort(out, n, sizeof *out, by_name);
    return n;
}

bool reg_worker_alive(reg_registry *r, const char *worker_id, int64_t now_ms)
{
    bool alive = false;
    pthread_mutex_lock(&r->mu);
    for (size_t i = 0; i < r->n; i++)
        if (strcmp(r->workers[i].id, worker_id) == 0)
            alive = now_ms - r->workers[i].last_ms <= r->timeout_ms;
    pthread_mutex_unlock(&r->mu);
    return alive;
}

bool reg_model_get(reg_registry *r, const char *name, int64_t now_ms, reg_model *out)
{
    reg_model all[64];
    size_t n = reg_models(r, now_ms, all, 64);
    for (size_t i = 0; i < n; i++) {
        if (strcmp(all[i].name, name) == 0) {
            *out = all[i];
            return true;
        }
    }
    return false;
}

bool reg_model_known(reg_registry *r, const char *name)
{
    pthread_mutex_lock(&r->mu);
    bool known = first_seen(r, name, -1) >= 0;
    pthread_mutex_unlock(&r->mu);
    return known;
}
