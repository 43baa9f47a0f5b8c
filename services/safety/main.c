/* parley-safety — asynchronous moderation of prompts and answers from a JetStream stream.
 *
 * This file is the daemon's configuration table and wiring. At this stage safety sets up the
 * safety-event stream and its durable consumer, so events published by chat wait there (for
 * ever, until consumed) whether or not a safety instance is running; the classifiers and the
 * fetch loop attach here (issue: safety). */
#include <stdlib.h>

#include "bus.h"
#include "daemon.h"
#include "jsetup.h"
#include "subjects.h"

typedef struct safety {
    dmn *d;
    jsetup js;
} safety;

static const char *const safety_subjects[] = {SUBJ_SAFETY_EVENTS, NULL};
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
    return jsetup_start(&s->js, dmn_bus(d), &safety_js);
}

static size_t safety_ready(void *ctx, dmn_check *checks)
{
    safety *s = ctx;
    jsetup_check(&s->js, &checks[0]);
    return 1;
}

static void safety_stop(void *ctx)
{
    safety *s = ctx;
    jsetup_stop(&s->js);
}

int main(int argc, char **argv)
{
    static safety s;
    dmn_spec spec = {
        .name = "safety",
        .summary = "asynchronous moderation of prompts and answers",
        .ctx = &s,
        .start = safety_start,
        .ready = safety_ready,
        .stop = safety_stop,
        .admin_port_default = 9106,
    };
    return dmn_main(&spec, argc, argv);
}
