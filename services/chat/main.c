/* parley-chat — conversation logic: turns, prompts from history, tiers, persisted answers.
 *
 * This file is the daemon's configuration table and wiring: the JetStream resources chat
 * owns (the completions work queue it consumes, the short-lived stream of turn deltas that
 * lets a client resume an answer, and the safety events' work queue, which parley-safety also
 * ensures), then the safety event publisher (moderate.c), the turn handler (turn.c), the
 * completion consumer (persist.c) and the sweeper (sweep.c). */
#include <stdlib.h>
#include <string.h>

#include "bus.h"
#include "chat.h"
#include "daemon.h"
#include "jsetup.h"
#include "subjects.h"

static const cfg_opt chat_opts[] = {
    {"default-model", CFG_STR, offsetof(chat_cfg, default_model), "", 0, 0,
     "model of a conversation that names none (empty: the first one served)"},
    {"history-timeout", CFG_DURATION, offsetof(chat_cfg, history_timeout_ms), "5s", 100, 60000,
     "longest wait for one history request"},
    {"turn-deadline", CFG_DURATION, offsetof(chat_cfg, turn_deadline_ms), "4m", 1000, 3600000,
     "an answer's deadline, queueing included"},
    {"sweep-interval", CFG_DURATION, offsetof(chat_cfg, sweep_interval_ms), "30s", 100, 3600000,
     "how often pending answers are checked"},
    {"sweep-age", CFG_DURATION, offsetof(chat_cfg, sweep_age_ms), "5m", 1000, 86400000,
     "a pending answer older than this is failed (must exceed --turn-deadline)"},
    {"title-max-tokens", CFG_INT, offsetof(chat_cfg, title_max_tokens), "16", 1, 256,
     "length cap of a generated title"},
    {"temperature", CFG_DOUBLE, offsetof(chat_cfg, temperature), "0.7", 0, 2,
     "sampling temperature of answers (a request may set its own)"},
    {"safety-queue", CFG_INT, offsetof(chat_cfg, safety_queue), "10000", 16, 1000000,
     "safety events waiting to be published before new ones are dropped"},
    {"safety-precheck", CFG_BOOL, offsetof(chat_cfg, safety_precheck), "false", 0, 0,
     "ask parley-safety to check each prompt before it is queued (blocking)"},
    {"safety-precheck-timeout", CFG_DURATION, offsetof(chat_cfg, safety_precheck_timeout_ms),
     "300ms", 1, 10000, "deadline of the blocking pre-check"},
    {"safety-precheck-on-timeout", CFG_STR, offsetof(chat_cfg, safety_precheck_on_timeout), "allow",
     0, 0, "when the pre-check does not answer in time: allow or refuse the prompt"},
};

static const char *const completion_subjects[] = {SUBJ_COMPLETIONS, NULL};
static const char *const delta_subjects[] = {SUBJ_TURN_DELTAS_ALL, NULL};
static const char *const safety_subjects[] = {SUBJ_SAFETY_EVENTS, NULL};
static const bus_stream_cfg chat_streams[] = {
    /* Completion records wait here until chat has persisted them (work queue: acked = gone). */
    {.name = STREAM_COMPLETIONS,
     .subjects = completion_subjects,
     .work_queue = true,
     .max_age_ms = 7 * 24 * 3600 * 1000LL},
    /* Turn deltas, kept in memory for a while: a reconnecting client replays an answer from
     * here while it is written (a finished one comes from history). */
    {.name = STREAM_DELTAS,
     .subjects = delta_subjects,
     .memory = true,
     .max_age_ms = 15 * 60 * 1000LL,
     .max_bytes = 256LL << 20},
    /* The safety events chat publishes (moderate.c), so that they wait even when no safety
     * instance ever ran yet. The same definition as services/safety/main.c's (both ensure it;
     * a difference would make them undo each other's updates). */
    {.name = STREAM_SAFETY,
     .subjects = safety_subjects,
     .work_queue = true,
     .max_age_ms = 7 * 24 * 3600 * 1000LL},
};
static const bus_consumer_cfg chat_consumers[] = {
    /* No delivery limit: a record waits (nak'd with a growing delay, persist.c) as long as
     * history is down. (JetStream refuses a backoff list without a delivery limit; the delays
     * are the naks'.) */
    {.stream = STREAM_COMPLETIONS,
     .durable = CONSUMER_COMPLETIONS,
     .ack_wait_ms = 30000,
     .max_deliver = -1,
     .max_ack_pending = 1000},
};
static const jsetup_spec chat_js = {chat_streams, 3, chat_consumers, 1};

static pl_status chat_start(dmn *d, void *ctx)
{
    chat *c = ctx;
    c->d = d;
    static const char *const result[] = {"result", NULL};
    c->m_turns = met_counter(dmn_metrics(d), "parley_chat_turns_total",
                             "chat turns answered, by result", result);
    c->m_records = met_counter(dmn_metrics(d), "parley_chat_completions_total",
                               "completion records handled, by kind (retry: nak'd)", result);
    c->m_safety_events =
        met_counter(dmn_metrics(d), "parley_chat_safety_events_total",
                    "safety events: published, dropped (queue full or shutdown)", result);
    c->m_precheck = met_counter(dmn_metrics(d), "parley_chat_safety_precheck_total",
                                "blocking pre-checks, by result (allow, block, timeout_allow, "
                                "timeout_refuse)",
                                result);
    c->m_precheck_latency =
        met_histogram(dmn_metrics(d), "parley_chat_safety_precheck_duration_seconds",
                      "time from asking the pre-check to its answer or deadline", NULL,
                      met_latency_buckets, met_latency_buckets_n);
    const char *pol = c->cfg.safety_precheck_on_timeout;
    if (strcmp(pol, "allow") != 0 && strcmp(pol, "refuse") != 0)
        return PL_ERRF(PL_INVALID, "--safety-precheck-on-timeout is allow or refuse, not '%s'",
                       pol);
    pl_status s = mod_start(c);
    if (s == PL_OK)
        s = jsetup_start(&c->js, dmn_bus(d), &chat_js);
    if (s == PL_OK)
        s = persist_start(c);
    if (s == PL_OK)
        s = sweep_start(c);
    if (s == PL_OK)
        s = turn_start(c);
    return s;
}

static size_t chat_ready(void *ctx, dmn_check *checks)
{
    chat *c = ctx;
    jsetup_check(&c->js, &checks[0]);
    checks[1].name = "completions";
    checks[1].ok = c->consumer_setup && bgtask_done(c->consumer_setup);
    if (!checks[1].ok && c->consumer_setup)
        bgtask_error(c->consumer_setup, checks[1].detail, sizeof checks[1].detail);
    return 2;
}

static void chat_drain(void *ctx, int64_t deadline_ms)
{
    chat *c = ctx;
    (void)deadline_ms;
    turn_stop(c); /* no new turns; records in flight finish in the pull loop */
}

static void chat_stop(void *ctx)
{
    chat *c = ctx;
    turn_stop(c);
    sweep_stop(c);
    persist_stop(c);
    mod_stop(c); /* after the record consumer: its last answers' events are queued */
    jsetup_stop(&c->js);
}

int main(int argc, char **argv)
{
    static chat c;
    dmn_spec spec = {
        .name = "chat",
        .summary = "conversation logic: turns, prompts from history, tiers, persisted answers",
        .opts = chat_opts,
        .n_opts = sizeof chat_opts / sizeof chat_opts[0],
        .cfg = &c.cfg,
        .ctx = &c,
        .start = chat_start,
        .ready = chat_ready,
        .drain = chat_drain,
        .stop = chat_stop,
        .admin_port_default = 9102,
    };
    return dmn_main(&spec, argc, argv);
}
