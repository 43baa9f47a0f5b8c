/* registry.h — the infer-gateway's view of live workers and the models they serve.
 *
 * Fed by WorkerHeartbeat messages; a worker that has not been heard from for `timeout_ms`
 * (or that announced it is draining) stops counting. Thread-safe: one mutex, held briefly; the
 * heartbeat handler and the RPC handlers run on different libnats threads. The registry copies
 * what it keeps from each heartbeat, so callers free their messages. */
#ifndef PARLEY_IGW_REGISTRY_H
#define PARLEY_IGW_REGISTRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "parley.pb-c.h"
#include "status.h"

typedef struct reg_registry reg_registry;

/* Aggregate over the live workers serving one model. */
typedef struct reg_model {
    char name[128];
    uint32_t workers;
    uint32_t free_slots;
    uint32_t max_slots;
    uint32_t context_length; /* the smallest among its workers */
    uint64_t kv_free_bytes;
    int64_t first_seen_ms; /* unix ms the model first appeared (OpenAI "created") */
} reg_model;

/* NULL when out of memory. */
reg_registry *reg_create(int64_t timeout_ms);
void reg_destroy(reg_registry *r); /* accepts NULL */

/* Records a heartbeat received at `now_ms` (monotonic) / `wall_ms` (unix). PL_INVALID when it has
 * no worker id; PL_NOMEM. */
pl_status reg_heartbeat(reg_registry *r, const Parley__V1__WorkerHeartbeat *hb, int64_t now_ms,
                        int64_t wall_ms);
/* Drops workers silent for longer than the timeout; returns how many were dropped. */
size_t reg_expire(reg_registry *r, int64_t now_ms);
/* Live workers (after expiry at now_ms). */
size_t reg_n_workers(reg_registry *r, int64_t now_ms);
/* True when the worker sent a heartbeat within the timeout (draining or not). */
bool reg_worker_alive(reg_registry *r, const char *worker_id, int64_t now_ms);
/* True when some worker ever announced this model (to tell 'unknown' from 'no worker now'). */
bool reg_model_known(reg_registry *r, const char *name);
/* The model's aggregate (after expiry at now_ms); false when no live worker serves it. */
bool reg_model_get(reg_registry *r, const char *name, int64_t now_ms, reg_model *out);
/* Fills up to `cap` models sorted by name; returns how many were written. */
size_t reg_models(reg_registry *r, int64_t now_ms, reg_model *out, size_t cap);

#endif
