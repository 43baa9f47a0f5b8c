/* admitq.h — one model's bounded admission queue, with priority and per-user fairness.
 *
 * Jobs wait here between admission and dispatch to the workers' JetStream queue. The queue is
 * bounded: a push beyond capacity fails at once (PL_OVERLOADED), which the gateway answers with
 * 429 and Retry-After instead of letting waits grow without limit. Pop order: the highest
 * priority class first (system > paid > free); within a class, users take turns (round robin
 * over users that have jobs waiting), and each user's own jobs leave in arrival order, so one
 * user's burst cannot starve the others.
 *
 * Not thread-safe: the infer-gateway guards each queue with its own mutex. A job is owned by the
 * queue while queued; pop/remove/expire hand ownership back to the caller (aq_job_free). */
#ifndef PARLEY_IGW_ADMITQ_H
#define PARLEY_IGW_ADMITQ_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

#define AQ_CLASSES 3 /* Priority enum values 0..2 */

typedef struct aq_job {
    char request_id[64];
    char user_id[128];
    int priority;        /* 0 free, 1 paid, 2 system; out-of-range values clamp */
    int64_t enqueued_ms; /* monotonic */
    int64_t deadline_ms; /* monotonic; 0 = none */
    void *payload;       /* the packed InferRequest; freed by aq_job_free */
    size_t payload_len;
    char delta_subject[192];
    struct aq_job *next; /* within its user's FIFO */
} aq_job;

typedef struct aq_queue aq_queue;

/* NULL when out of memory. */
aq_queue *aq_create(size_t capacity);
void aq_destroy(aq_queue *q); /* frees queued jobs; accepts NULL */
size_t aq_len(const aq_queue *q);
size_t aq_capacity(const aq_queue *q);

/* Takes ownership of `j` on PL_OK only. PL_OVERLOADED when full. */
pl_status aq_push(aq_queue *q, aq_job *j);
/* The next job by priority and fairness, or NULL when empty. Caller owns it. */
aq_job *aq_pop(aq_queue *q);
/* Removes the job with this request id (cancel); NULL when not queued. Caller owns it. */
aq_job *aq_remove(aq_queue *q, const char *request_id);
/* Removes one job whose deadline passed at `now_ms`; NULL when none. Caller owns it. */
aq_job *aq_pop_expired(aq_queue *q, int64_t now_ms);
/* Position (0-based) a new job of this priority would have behind the jobs of higher or equal
 * priority (an estimate for InferAdmit.queue_position). */
size_t aq_ahead(const aq_queue *q, int priority);

void aq_job_free(aq_job *j); /* accepts NULL */

#endif
