/* status.h — the project's one status enum, and where an error was born.
 *
 * Every fallible libshared call returns pl_status (out-parameters first). Wrappers around a
 * library (libnats, libpq, hiredis, MHD, CUDA) convert that library's error once, where it
 * happens, and record a message with file:line in a thread-local slot; whoever decides what to
 * do with the failure logs it once (pl_err_last()). Values only grow at the end. */
#ifndef PARLEY_STATUS_H
#define PARLEY_STATUS_H

#include <stdio.h>
#include <stdlib.h>

typedef enum pl_status {
    PL_OK = 0,
    PL_ERR, /* internal error: a bug or an unexpected library failure */
    PL_NOMEM,
    PL_INVALID, /* bad input or argument */
    PL_NOT_FOUND,
    PL_TIMEOUT,
    PL_IO,          /* file or socket I/O */
    PL_BUS,         /* NATS or JetStream failure */
    PL_DB,          /* PostgreSQL or Redis failure */
    PL_UNAVAILABLE, /* a dependency is down or no worker serves the model */
    PL_OVERLOADED,  /* a bounded queue is full */
    PL_CANCELLED,
    PL_EXISTS,
    PL_PERMISSION,
    PL_UNAUTHENTICATED,
    PL_TOO_LARGE,
    PL_UNSUPPORTED,
    PL_CORRUPT, /* a file or message that does not parse */
    PL_RATE_LIMITED,
    PL_AGAIN, /* nothing to do now: try later (streaming) */
    PL_STATUS_COUNT
} pl_status;

/* Returns a static lower-case name ("ok", "invalid", ...); "unknown" for out-of-range values. */
const char *pl_status_str(pl_status s);

/* Records `s` with a printf-style message and the caller's file:line in this thread's error
 * slot, and returns `s` so a call can be `return PL_ERRF(PL_INVALID, "bad port %d", p);`. */
pl_status pl_err_set(pl_status s, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
#define PL_ERRF(s, ...) pl_err_set((s), __FILE__, __LINE__, __VA_ARGS__)

/* The last message recorded by this thread ("file.c:42: bad port 70000"), or "" when none.
 * Borrowed: valid until this thread's next pl_err_set(). */
const char *pl_err_last(void);
/* `msg` without its leading "file.c:NN: " source locations, for text shown to users or sent on
 * the wire (the locations are for logs). Points into `msg`. */
const char *pl_err_text(const char *msg);
/* pl_err_text(pl_err_last()). */
const char *pl_err_message(void);
void pl_err_clear(void);

/* An always-on assertion: prints file:line and the expression to stderr, then aborts. For
 * invariants only, never for input validation. */
#define PL_ASSERT(cond)                                                                            \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: assertion failed: %s\n", __FILE__, __LINE__, #cond);           \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#endif
