/* parley-chat — conversation logic: prompt from history, model choice, tiers, persisted turns.
 *
 * This file is the daemon's configuration table and wiring. At this stage chat owns the
 * completions stream's consumer (it is where finished answers are persisted from) and sets up
 * the JetStream resources it consumes; the turn logic attaches here (issue: product). */
#include <stdlib.h>

#include "bus.h"
#include "daemon.h"
#include "jsetup.h"
#include "subjects.h"

typedef struct chat {
    dmn *d;
    jsetup js;
} chat;

static const char *const completion_subjects[] = {SUBJ_COMPLETIONS, NULL};
static const bus_stream_cfg chat_streams[] = {
    /* Completion records wait here until chat has persisted them (work queue: acked = gone). */
    {.name = STREAM_COMPLETIONS,
     .subjects = completion_subjects,
     .work_queue = true,
     .max_age_ms = 7 * 24 * 3600 * 1000LL},
};
static const int64_t completion_backoff[] = {1000, 5000, 30000};
static const bus_consumer_cfg chat_consumers[] = {
    {.stream = STREAM_COMPLETIONS,
     .durable = CONSUMER_COMPLETIONS,
     .ack_wait_ms = 30000,
     .max_deliver = 10,
     .max_ack_pending = 1000,
     .backoff_ms = completion_backoff,
     .n_backoff = 3},
};
static const jsetup_spec chat_js = {chat_streams, 1, chat_consumers, 1};

static pl_status chat_start(dmn *d, void *ctx)
{
    chat *c = ctx;
    c->d = d;
    return jsetup_start(&c->js, dmn_bus(d), &chat_js);
}

static size_t chat_ready(void *ctx, dmn_check *checks)
{
    chat *c = ctx;
    jsetup_check(&c->js, &checks[0]);
    return 1;
}

static void chat_stop(void *ctx)
{
    chat *c = ctx;
    jsetup_stop(&c->js);
}

int main(int argc, char **argv)
{
    static chat c;
    dmn_spec spec = {
        .name = "chat",
        .summary = "conversation logic: prompts from history, model choice, tiers, turns",
        .ctx = &c,
        .start = chat_start,
        .ready = chat_ready,
        .stop = chat_stop,
        .admin_port_default = 9102,
    };
    return dmn_main(&spec, argc, argv);
}
