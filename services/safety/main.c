/* parley-safety — asynchronous moderation of prompts and answers from a JetStream stream.
 *
 * This file is the daemon's configuration table and wiring: the PARLEY_SAFETY work queue and
 * its durable consumer (events published by chat wait there, for a week, whether or not a
 * safety instance is running), the rule set loaded from --rules-dir (a start-up error when it
 * does not load: moderation must not silently run without rules), the consumer (consumer.c)
 * and the pre-check responder (check.c). Several instances share the consumer and the
 * pre-check queue group. */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "bus.h"
#include "daemon.h"
#include "jsetup.h"
#include "log.h"
#include "safety.h"
#include "subjects.h"

/* Where packages and the container image install the shipped rule files. */
#define SAFETY_RULES_INSTALLED "/usr/share/parley/safety"

static const cfg_opt safety_opts[] = {
    {"rules-dir", CFG_STR, offsetof(safety_cfg, rules_dir), "", 0, 0,
     "folder of the rule files (*.rules) of the rule classifier (empty: ./config/safety, "
     "else " SAFETY_RULES_INSTALLED ")"},
    {"batch", CFG_INT, offsetof(safety_cfg, batch), "128", 1, 256,
     "events fetched, judged and stored together"},
    {"threads", CFG_INT, offsetof(safety_cfg, threads), "4", 1, 8,
     "consumer threads, each fetching and storing its own batch (so round trips overlap)"},
    {"max-attempts", CFG_INT, offsetof(safety_cfg, max_attempts), "3", 1, 3,
     "deliveries of an event that fails before it is recorded as failed (the consumer "
     "delivers at most 3 times)"},
    {"history-timeout", CFG_DURATION, offsetof(safety_cfg, history_timeout_ms), "5s", 100, 60000,
     "longest wait for one history request"},
    {"model", CFG_STR, offsetof(safety_cfg, model), "", 0, 0,
     "model of the model classifier (empty: off; only the rules judge)"},
    {"model-timeout", CFG_DURATION, offsetof(safety_cfg, model_timeout_ms), "60s", 1000, 600000,
     "longest wait for the model classifier's answer on one event"},
    {"model-max-bytes", CFG_INT, offsetof(safety_cfg, model_max_bytes), "2000", 64, 65536,
     "bytes of an event's text shown to the model classifier"},
};

static const char *const safety_subjects[] = {SUBJ_SAFETY_EVENTS, NULL};
/* chat ensures the same stream (services/chat/main.c): keep the two definitions equal. */
static const bus_stream_cfg safety_streams[] = {
    {.name = STREAM_SAFETY,
     .subjects = safety_subjects,
     .work_queue = true,
     .max_age_ms = 7 * 24 * 3600 * 1000LL},
};
static const int64_t safety_backoff[] = {1000, 5000};
static const bus_consumer_cfg safety_consumers[] = {
    {.stream = STREAM_SAFETY,
     .durable = CONSUMER_SAFETY,
     .ack_wait_ms = 30000,
     .max_deliver = 3,
     .max_ack_pending = 2000,
     .backoff_ms = safety_backoff,
     .n_backoff = 2},
};
static const jsetup_spec safety_js = {safety_streams, 1, safety_consumers, 1};

static pl_status safety_start(dmn *d, void *ctx)
{
    safety *s = ctx;
    s->d = d;
    const char *dir = s->cfg.rules_dir;
    if (!dir || !dir[0])
        dir = access("config/safety", R_OK) == 0 ? "config/safety" : SAFETY_RULES_INSTALLED;
    pl_status st = rules_load_dir(dir, &s->rules);
    if (st != PL_OK) {
        LOGE(NULL, "safety rules: %s", pl_err_last());
        return st;
    }
    LOGI(NULL, "safety rules from %s: %zu categories, %zu phrases", dir,
         rules_n_categories(s->rules), rules_n_patterns(s->rules));
    snprintf(s->model_classifier, sizeof s->model_classifier, "model:%s",
             s->cfg.model ? s->cfg.model : "");
    met_registry *mr = dmn_metrics(d);
    static const char *const result[] = {"result", NULL};
    static const char *const cat_action[] = {"category", "action", NULL};
    static const char *const kind[] = {"kind", NULL};
    static const char *const action[] = {"action", NULL};
    s->m_events =
        met_counter(mr, "parley_safety_events_total",
                    "safety events handled: stored, failed (poison, recorded), retried", result);
    s->m_verdicts = met_counter(mr, "parley_safety_verdicts_total",
                                "verdicts stored, by category and action", cat_action);
    s->m_lag = met_gauge(mr, "parley_safety_consumer_lag_messages",
                         "events waiting for the consumer (pending) and delivered but not yet "
                         "acknowledged (ack_pending)",
                         kind);
    s->m_store =
        met_counter(mr, "parley_safety_store_batches_total",
                    "verdict batches sent to history: ok, retry (unreachable), refused", result);
    s->m_check_latency =
        met_histogram(mr, "parley_safety_precheck_duration_seconds", "time to answer one pre-check",
                      NULL, met_latency_buckets, met_latency_buckets_n);
    s->m_checks =
        met_counter(mr, "parley_safety_precheck_total", "pre-checks answered, by action", action);
    s->m_model = met_counter(mr, "parley_safety_model_classifications_total",
                             "model classifier calls, by result", result);
    st = jsetup_start(&s->js, dmn_bus(d), &safety_js);
    if (st == PL_OK)
        st = consumer_start(s);
    if (st == PL_OK)
        st = check_start(s);
    return st;
}

static size_t safety_ready(void *ctx, dmn_check *checks)
{
    safety *s = ctx;
    jsetup_check(&s->js, &checks[0]);
    checks[1].name = "consumer";
    checks[1].ok = consumer_ready(s, checks[1].detail, sizeof checks[1].detail);
    return 2;
}

static void safety_drain(void *ctx, int64_t deadline_ms)
{
    safety *s = ctx;
    (void)deadline_ms;
    check_stop(s);
    consumer_stop(s); /* the batch in hand is stored and acknowledged first */
}

static void safety_stop(void *ctx)
{
    safety *s = ctx;
    check_stop(s);
    consumer_stop(s);
    jsetup_stop(&s->js);
    rules_free(s->rules);
    s->rules = NULL;
}

int main(int argc, char **argv)
{
    static safety s;
    dmn_spec spec = {
        .name = "safety",
        .summary = "asynchronous moderation of prompts and answers",
        .opts = safety_opts,
        .n_opts = sizeof safety_opts / sizeof safety_opts[0],
        .cfg = &s.cfg,
        .ctx = &s,
        .start = safety_start,
        .ready = safety_ready,
        .drain = safety_drain,
        .stop = safety_stop,
        .admin_port_default = 9106,
    };
    return dmn_main(&spec, argc, argv);
}
