/* jsetup.h — create a daemon's JetStream streams and consumers, retrying until NATS is there.
 *
 * A thin layer over bgtask: the step ensures each stream, then each durable consumer
 * (idempotent, so also safe when several instances start at once). The daemon reports
 * jsetup_ready() on /readyz as the "jetstream" check. The spec and everything it points to must
 * outlive the task (static tables). */
#ifndef PARLEY_JSETUP_H
#define PARLEY_JSETUP_H

#include "bgtask.h"
#include "bus.h"
#include "daemon.h"

typedef struct jsetup_spec {
    const bus_stream_cfg *streams;
    size_t n_streams;
    const bus_consumer_cfg *consumers;
    size_t n_consumers;
} jsetup_spec;

typedef struct jsetup {
    bus *b;
    const jsetup_spec *spec;
    bgtask *task;
} jsetup;

/* Starts the background setup; `j` is caller-owned storage that must outlive the task. */
pl_status jsetup_start(jsetup *j, bus *b, const jsetup_spec *spec);
/* Fills one readiness check named "jetstream". */
void jsetup_check(const jsetup *j, dmn_check *c);
void jsetup_stop(jsetup *j); /* accepts a never-started j */

#endif
