/* sched.h — the infer-gateway's scheduler: admission, per-model queues, dispatch to JetStream,
 * and tracking of every admitted request until a worker reports it done.
 *
 * Threads: NATS handler threads call sched_submit / sched_cancel / sched_job_event; one
 * dispatcher thread (sched_start) moves jobs from the queues to the workers' JetStream queue as
 * capacity appears and enforces deadlines and worker loss. All state is behind one mutex; no
 * NATS call is made while holding it. */
#ifndef PARLEY_IGW_SCHED_H
#define PARLEY_IGW_SCHED_H

#include <stdint.h>

#include "bus.h"
#include "metrics.h"
#include "parley.pb-c.h"
#include "registry.h"
#include "status.h"

typedef struct sched_cfg {
    int64_t queue_size;       /* per model */
    int64_t queue_timeout_ms; /* longest wait in the queue before dispatch */
    int64_t job_timeout_ms;   /* longest life of a request (deadline when none given) */
    int64_t start_timeout_ms; /* dispatched but not started by any worker for this long → fail */
} sched_cfg;

typedef struct sched sched;

/* `b`, `reg` and `mr` are borrowed and must outlive the scheduler. */
pl_status sched_create(const sched_cfg *cfg, bus *b, reg_registry *reg, met_registry *mr,
                       sched **out);
/* Starts the dispatcher thread. */
pl_status sched_start(sched *s);
/* Stops the dispatcher and frees everything (queued requests are answered with an error). */
void sched_destroy(sched *s); /* accepts NULL */

/* Admits a packed InferRequest (`data`/`len` as received): fills `admit` (request_id and error
 * point into `req`/static storage; valid while `req` is). */
void sched_submit(sched *s, const Parley__V1__InferRequest *req, const void *data, size_t len,
                  Parley__V1__InferAdmit *admit, Parley__V1__Error *err);
void sched_cancel(sched *s, const char *request_id);
void sched_job_event(sched *s, const Parley__V1__JobEvent *ev);

/* Requests queued, and started/streaming on workers, for one model (metrics, tests). */
void sched_counts(sched *s, const char *model, uint32_t *queued, uint32_t *running);

#endif
