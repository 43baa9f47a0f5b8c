/* stream.h — one inference request seen from the gateway: its delta subscription, and the
 * bytes waiting to go to the HTTP client (SSE events, or the final JSON body).
 *
 * A stream is shared by three parties: the MHD thread serving the connection (the access
 * handler and the SSE content reader), the libnats thread delivering deltas, and the keep-alive
 * thread. It is reference-counted; its mutex guards everything below. The connection is
 * suspended whenever there is nothing to send (never a busy-wait) and resumed by whoever adds
 * bytes or ends the stream. Once the request completes (client gone or answer sent), the
 * connection pointer is cleared so nobody resumes it again, a client that left early causes a
 * Cancel broadcast, and the subscription is closed.
 *
 * Formatting is delegated to a `fmt` callback set by the API module (OpenAI chunks here), so the
 * same machinery can serve the product API's events. */
#ifndef PARLEY_GW_STREAM_H
#define PARLEY_GW_STREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <microhttpd.h>

#include "bus.h"
#include "metrics.h"
#include "parley.pb-c.h"
#include "status.h"

typedef struct gws gws;
typedef struct gws_hub gws_hub;

/* Called under the stream's lock for each accepted delta, in order: append output with
 * gws_append / gws_appendf. `user` is the API module's per-request state. */
typedef void (*gws_fmt)(gws *s, const Parley__V1__TokenDelta *d, void *user);

/* The set of live streams and the keep-alive thread. A stream whose first delta has not come
 * within `first_wait_ms` is woken with gws_headers_due() true, so an SSE response (and its
 * keep-alives) can start while the request waits in a queue. */
pl_status gws_hub_create(bus *b, int64_t keepalive_ms, int64_t idle_timeout_ms,
                         int64_t first_wait_ms, gws_hub **out);
/* Ends every stream with an error event (server stopping), resumes their connections and
 * waits up to `wait_ms` for them to finish; then stops the thread. Call before stopping the
 * HTTP server (MHD must not stop with suspended connections). Accepts NULL. */
void gws_hub_stop(gws_hub *h, int64_t wait_ms);
/* Frees the hub; after the HTTP server stopped (streams detach into the hub). Accepts NULL. */
void gws_hub_free(gws_hub *h);
size_t gws_hub_count(gws_hub *h);
/* Histogram (seconds, no labels) observed once per worker-stamped delta: from the worker's
 * publish to the gateway handing the event's bytes to the client's socket. Set before the
 * first stream. The worker's and this host's clocks are compared, so across machines the figure
 * holds only as far as their clocks agree (negative values count as 0). */
void gws_hub_set_delay_metric(gws_hub *h, met_family *f);

/* Creates a stream for `request_id` and subscribes to `delta_subject`. `user` is freed with
 * `user_free` when the stream is freed. The returned stream holds one reference for the caller
 * (released by gws_release). */
pl_status gws_create(gws_hub *h, const char *request_id, const char *delta_subject, gws_fmt fmt,
                     void *user, void (*user_free)(void *), gws **out);
void gws_release(gws *s); /* accepts NULL */

/* Binds the stream to an MHD connection (resumed when output arrives). */
void gws_attach(gws *s, struct MHD_Connection *c);
/* Marks the connection finished: no further resume; if the answer had not ended, a Cancel is
 * broadcast. Then unsubscribes. Idempotent. */
void gws_detach(gws *s);

/* Locks / unlocks the stream (for the API module's own reads). */
void gws_lock(gws *s);
void gws_unlock(gws *s);
/* Under the lock: whether a terminal delta (or error) was seen; whether any delta was seen. */
bool gws_done(const gws *s);
bool gws_started(const gws *s);
/* Under the lock: records progress from a source other than the stream's own subscription (a
 * replayed answer), so the idle timeout does not end a busy stream. */
void gws_touch(gws *s);
/* Under the lock: appends bytes to the output. */
void gws_append(gws *s, const char *data, size_t len);
void gws_appendf(gws *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Under the lock: suspends the connection until output or the end arrives (call from the MHD
 * thread only, inside the access handler or the content reader, and return 0 / MHD_YES). */
void gws_suspend(gws *s);
void *gws_user(gws *s);
/* Under the lock: the first delta is late; start the response without it. */
bool gws_headers_due(const gws *s);
const char *gws_request_id(const gws *s);

/* Under the lock: ends the stream with a local error (no delta will come). */
void gws_fail(gws *s, pl_status st, const char *message);

/* An MHD response that streams the stream's output (SSE). Takes a reference. */
struct MHD_Response *gws_response(gws *s);

#endif
