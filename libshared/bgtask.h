/* bgtask.h — retry a setup step in the background until it succeeds.
 *
 * Daemons must start even when NATS or a database is down, and become ready when it returns.
 * Steps such as creating JetStream streams or applying migrations are therefore run by a
 * bgtask: a thread that calls fn(arg) every `period_ms` until it returns PL_OK (logging the
 * first failure and each change of error, not every retry), then exits. bgtask_done() is what a
 * readiness check asks. */
#ifndef PARLEY_BGTASK_H
#define PARLEY_BGTASK_H

#include <stdbool.h>
#include <stdint.h>

#include "status.h"

typedef struct bgtask bgtask;
typedef pl_status (*bgtask_fn)(void *arg);

/* Starts the thread; `name` (copied) appears in logs. *out owned by the caller. */
pl_status bgtask_start(const char *name, bgtask_fn fn, void *arg, int64_t period_ms, bgtask **out);
bool bgtask_done(const bgtask *t);
/* The last error message while not done ("" otherwise), copied into buf. */
void bgtask_error(const bgtask *t, char *buf, size_t cap);
/* Marks the step as needing to run again (e.g. after the server lost its state) and wakes the
 * thread if it had finished. */
void bgtask_rerun(bgtask *t);
/* Stops retrying and joins the thread. Accepts NULL. */
void bgtask_stop(bgtask *t);

#endif
