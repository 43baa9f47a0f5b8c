/* serve.h — the worker's serving loop for one model: jobs from JetStream, continuous batching
 * over the engine, token deltas and completion records back onto the bus.
 *
 * Threads per model: a fetch thread (bus_pull_loop) that takes jobs only while there are free
 * slots and puts them in the model's inbox, and the batching thread that owns the engine
 * context: between steps it admits jobs from the inbox, ends cancelled ones, then runs one
 * eng_step with a decode token for every generating sequence plus prefill chunks of new prompts
 * within the token budget, samples, and publishes. Cancels (core NATS) and heartbeat queries
 * come from other threads and touch only the mutex-guarded inbox, flags and counters.
 *
 * Exactly-once effects per request id: a job whose id is running, recently finished or
 * cancelled on this worker is acknowledged and dropped; deltas carry (request_id, seq) and the
 * completion record is published with the request id as its JetStream message id. */
#ifndef PARLEY_WORKER_SERVE_H
#define PARLEY_WORKER_SERVE_H

#include <stdbool.h>
#include <stdint.h>

#include "bus.h"
#include "metrics.h"
#include "status.h"

typedef struct srv_model srv_model;

typedef struct srv_opts {
    const char *name;          /* the model's served name */
    const char *path;          /* GGUF file */
    const char *chat_template; /* override, or NULL */
    uint64_t kv_budget;
    int max_seqs;
    int threads;
    int max_batch_tokens; /* token budget per step (decode tokens + prefill chunk) */
    bool no_prefix_cache; /* never reuse KV blocks of earlier prompts (see engine.h) */
    const char *device;   /* "cpu" or "cuda:N" (engine.h eng_ctx_params.device); borrowed */
    const char *worker_id;
    bus *b;
    met_registry *metrics;
    void (*on_slots_changed)(void *arg); /* e.g. send a heartbeat now; any thread */
    void *arg;
} srv_opts;

/* Loads the model and creates its engine context (slow: call from a loader thread). */
pl_status srv_model_load(const srv_opts *o, srv_model **out);
/* Ensures the model's JetStream consumer and starts fetching and batching. */
pl_status srv_model_start(srv_model *m);
/* Stops fetching; running sequences finish (or are cancelled at the deadline). */
void srv_model_drain(srv_model *m, int64_t deadline_ms);
/* Stops everything; unfinished jobs are left unacknowledged for redelivery. Accepts NULL. */
void srv_model_free(srv_model *m);

/* Marks a request cancelled wherever it is on this worker (or remembers it for a job not yet
 * fetched). Any thread. */
void srv_model_cancel(srv_model *m, const char *request_id);

typedef struct srv_status {
    uint32_t max_slots, free_slots, running, waiting;
    uint64_t kv_budget, kv_free;
    uint32_t context_length;
    const char *arch, *quant;
    char queue_subject[192];
} srv_status;
void srv_model_status(srv_model *m, srv_status *st);

#endif
