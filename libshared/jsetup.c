/* jsetup.c — background JetStream setup (see jsetup.h). */
#include "jsetup.h"

#include <string.h>

static pl_status jsetup_step(void *arg)
{
    jsetup *j = arg;
    for (size_t i = 0; i < j->spec->n_streams; i++) {
        pl_status s = bus_stream_ensure(j->b, &j->spec->streams[i]);
        if (s != PL_OK)
            return s;
    }
    for (size_t i = 0; i < j->spec->n_consumers; i++) {
        pl_status s = bus_consumer_ensure(j->b, &j->spec->consumers[i]);
        if (s != PL_OK)
            return s;
    }
    return PL_OK;
}

pl_status jsetup_start(jsetup *j, bus *b, const jsetup_spec *spec)
{
    j->b = b;
    j->spec = spec;
    return bgtask_start("jetstream setup", jsetup_step, j, 1000, &j->task);
}

void jsetup_check(const jsetup *j, dmn_check *c)
{
    c->name = "jetstream";
    c->ok = j->task && bgtask_done(j->task);
    c->detail[0] = '\0';
    if (!c->ok && j->task)
        bgtask_error(j->task, c->detail, sizeof c->detail);
}

void jsetup_stop(jsetup *j)
{
    bgtask_stop(j->task);
    j->task = NULL;
}
