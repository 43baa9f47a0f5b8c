/* safety.h — parley-safety's context, shared by its modules.
 *
 * Modules: rules.c (the rule classifier), judge.c (an event's text → verdicts), consumer.c
 * (the durable pull consumer: fetch, judge, store through history, acknowledge), model.c (the
 * optional model classifier, through the infer-gateway), check.c (the blocking pre-check
 * responder). main.c is the configuration table and the wiring.
 *
 * One safety per process, created in main.c; read-only after start except the metrics
 * (atomic) and the handles each module owns. */
#ifndef PARLEY_SAFETY_H
#define PARLEY_SAFETY_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "bgtask.h"
#include "bus.h"
#include "daemon.h"
#include "jsetup.h"
#include "parley.pb-c.h"
#include "rules.h"

#define SAFETY_CHECK_THREADS 2
#define SAFETY_MAX_THREADS   8

typedef struct safety_cfg {
    const char *rules_dir;
    int64_t batch;              /* events fetched and stored together */
    int64_t threads;            /* consumer threads, each with its own batch */
    int64_t max_attempts;       /* deliveries of a failing event before it is recorded failed */
    int64_t history_timeout_ms; /* one history request */
    const char *model;          /* model classifier: "" = off */
    int64_t model_timeout_ms;
    int64_t model_max_bytes; /* text shown to the model */
} safety_cfg;

typedef struct safety {
    safety_cfg cfg;
    dmn *d;
    jsetup js;
    rules *rules;
    char model_classifier[160]; /* "model:<name>" */
    /* consumer.c */
    bgtask *bind;
    bus_pull *pulls[SAFETY_MAX_THREADS];
    pthread_t threads[SAFETY_MAX_THREADS];
    int n_threads;
    atomic_bool stop;
    /* check.c */
    bus_sub *check_subs[SAFETY_CHECK_THREADS];
    /* metrics */
    met_family *m_events;        /* parley_safety_events_total{result} */
    met_family *m_verdicts;      /* parley_safety_verdicts_total{category,action} */
    met_family *m_lag;           /* parley_safety_consumer_lag_messages{kind} */
    met_family *m_store;         /* parley_safety_store_batches_total{result} */
    met_family *m_check_latency; /* parley_safety_precheck_duration_seconds */
    met_family *m_checks;        /* parley_safety_precheck_total{action} */
    met_family *m_model;         /* parley_safety_model_classifications_total{result} */
} safety;

/* The wire name of an action ("none", "record", "flag", "block"). */
const char *safety_action_name(int action);

/* --- judge.c ------------------------------------------------------------------------------ */

/* One verdict being built: the message plus storage for its strings. */
typedef struct judge_verdict {
    Parley__V1__SafetyVerdict v;
    char detail[256];
    char category[64];
} judge_verdict;

/* Classifies `text` with the rule set into out[0..cap): one verdict per matching category (or
 * one "none" verdict when nothing matched), classifier "rules". Strings of the event (ids) are
 * not set here. Returns the number written (>= 1 when cap >= 1) and the strongest action in
 * *max_action. */
size_t judge_rules(const rules *r, const char *text, judge_verdict *out, size_t cap,
                   int *max_action);

/* --- consumer.c --------------------------------------------------------------------------- */
pl_status consumer_start(safety *s);
void consumer_stop(safety *s);
bool consumer_ready(safety *s, char *why, size_t cap);

/* --- model.c ------------------------------------------------------------------------------ */

/* Asks s->cfg.model to classify `text` (blocking, at most model_timeout_ms). On PL_OK fills
 * `out` (category from the rule set's names, "none" when the model says safe, "unsafe" when it
 * says unsafe without a known category; action from the category, flag for "unsafe"; the
 * model's words in detail). PL_TIMEOUT / PL_UNAVAILABLE / PL_ERR otherwise. */
pl_status model_classify(safety *s, const char *text, judge_verdict *out);
/* Parses a model's answer against the rule set's categories (see model_classify). Exposed for
 * tests. Returns false when the answer says neither safe nor unsafe. */
bool model_parse(const rules *r, const char *answer, char *category, size_t cap, int *action);

/* --- check.c ------------------------------------------------------------------------------ */
pl_status check_start(safety *s);
void check_stop(safety *s);

#endif
