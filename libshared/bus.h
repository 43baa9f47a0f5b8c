/* bus.h — the message bus: NATS core and JetStream over libnats, with protobuf payloads.
 *
 * One bus per process. bus_connect() never fails because the server is down: it retries the
 * first connection in the background and reconnects forever, buffering publishes meanwhile
 * (up to the reconnect buffer; past it a publish fails with PL_BUS). bus_connected() is what
 * /readyz asks. Handlers of bus_subscribe() run on libnats' delivery threads; they must not
 * block for long. JetStream pull consumers are driven by bus_fetch() from a thread the caller
 * owns (libnats 3.4 has no asynchronous pull), or by bus_pull_loop_start(), which owns one.
 *
 * Errors from libnats are converted here, once, to PL_BUS / PL_TIMEOUT / PL_NOT_FOUND with a
 * recorded message (pl_err_last()). */
#ifndef PARLEY_BUS_H
#define PARLEY_BUS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "status.h"

typedef struct bus bus;
typedef struct bus_msg bus_msg;   /* a received message (wraps natsMsg) */
typedef struct bus_sub bus_sub;   /* a core subscription */
typedef struct bus_pull bus_pull; /* a JetStream pull subscription on a durable consumer */

typedef struct bus_opts {
    const char *url;           /* "nats://127.0.0.1:4222"; comma-separated list allowed */
    const char *name;          /* client name shown by the server ("parley-gateway") */
    int64_t ping_interval_ms;  /* 0 = 5000 */
    int64_t reconnect_wait_ms; /* 0 = 500 */
    int max_pings_out;         /* 0 = 2 */
    void (*on_state)(bool connected, void *arg); /* optional; on a libnats thread */
    void *arg;
} bus_opts;

/* Creates the bus and starts connecting. With retry-on-failed-connect, a server that is down
 * at start is not an error: the bus connects when it comes up. Errors: PL_NOMEM, PL_BUS (bad
 * URL). On success *out is owned by the caller (bus_close). */
pl_status bus_connect(bus **out, const bus_opts *o);
/* Flushes (up to 2 s), closes and frees. Accepts NULL. Subscriptions must be destroyed first. */
void bus_close(bus *b);
bool bus_connected(bus *b);

/* --- core NATS ----------------------------------------------------------------------------- */
pl_status bus_publish(bus *b, const char *subject, const void *data, size_t len);
/* Packs `m` and publishes it. */
pl_status bus_publish_pb(bus *b, const char *subject, const ProtobufCMessage *m);

/* Handler for a core subscription: owns `m` (must call bus_msg_destroy). */
typedef void (*bus_handler)(bus_msg *m, void *arg);

/* Subscribes `h` to `subject` (wildcards allowed); `queue` non-NULL joins a queue group so one
 * member gets each message. *out is owned by the caller (bus_unsubscribe). */
pl_status bus_subscribe(bus *b, const char *subject, const char *queue, bus_handler h, void *arg,
                        bus_sub **out);
/* Unsubscribes and frees; after it returns no handler call is running or will start.
 * Accepts NULL. */
void bus_unsubscribe(bus_sub *s);

/* Request-reply: sends `data` and waits up to `timeout_ms` for one reply. On PL_OK *reply is
 * owned by the caller. PL_TIMEOUT when nobody answered in time, PL_UNAVAILABLE when no
 * responder is subscribed (the server says so at once). */
pl_status bus_request(bus *b, const char *subject, const void *data, size_t len, int64_t timeout_ms,
                      bus_msg **reply);
/* Packs `req`, sends it, unpacks the reply with `desc` into *out (free with
 * protobuf_c_message_free_unpacked). PL_CORRUPT when the reply does not unpack. */
pl_status bus_request_pb(bus *b, const char *subject, const ProtobufCMessage *req,
                         const ProtobufCMessageDescriptor *desc, int64_t timeout_ms,
                         ProtobufCMessage **out);
/* Answers a request message (to its reply subject). PL_INVALID when `m` has no reply subject. */
pl_status bus_respond(bus *b, const bus_msg *m, const void *data, size_t len);
pl_status bus_respond_pb(bus *b, const bus_msg *m, const ProtobufCMessage *reply);

/* A fresh unique inbox subject for a subscription that collects replies. Caller frees. */
char *bus_new_inbox(bus *b);

/* --- messages ------------------------------------------------------------------------------ */
const char *bus_msg_subject(const bus_msg *m);
const char *bus_msg_reply(const bus_msg *m); /* NULL when none */
const void *bus_msg_data(const bus_msg *m);
size_t bus_msg_len(const bus_msg *m);
/* Unpacks the payload with `desc`; NULL (and PL_CORRUPT recorded) when it does not parse.
 * Free with protobuf_c_message_free_unpacked(x, NULL). */
ProtobufCMessage *bus_msg_unpack(const bus_msg *m, const ProtobufCMessageDescriptor *desc);
void bus_msg_destroy(bus_msg *m); /* accepts NULL */

/* --- JetStream ----------------------------------------------------------------------------- */
typedef struct bus_stream_cfg {
    const char *name;            /* "PARLEY_JOBS" */
    const char *const *subjects; /* NULL-terminated */
    bool work_queue;             /* WorkQueue retention (else Limits) */
    int64_t max_age_ms;          /* 0 = unlimited */
    int64_t max_bytes;           /* 0 = unlimited */
    int64_t max_msgs;            /* 0 = unlimited */
    int64_t duplicate_window_ms; /* 0 = server default (2 min) */
    bool memory;                 /* memory storage (else file) */
} bus_stream_cfg;

/* Creates the stream, or updates it to `c` when it exists. Idempotent; safe from several
 * processes at once. */
pl_status bus_stream_ensure(bus *b, const bus_stream_cfg *c);

typedef struct bus_consumer_cfg {
    const char *stream;
    const char *durable;
    const char *filter_subject; /* NULL = the whole stream */
    int64_t ack_wait_ms;        /* 0 = 15000 */
    int64_t max_deliver;        /* 0 = 3; -1 = unlimited */
    int64_t max_ack_pending;    /* 0 = 1000 */
    const int64_t *backoff_ms;  /* optional list of redelivery delays */
    size_t n_backoff;
} bus_consumer_cfg;

/* Creates the durable pull consumer, or updates it when it exists. Idempotent. */
pl_status bus_consumer_ensure(bus *b, const bus_consumer_cfg *c);

/* Publishes to a stream and waits for the server's ack (up to `timeout_ms`). `msg_id`, when
 * non-NULL, sets Nats-Msg-Id so the server drops duplicates within the window. */
pl_status bus_js_publish(bus *b, const char *subject, const void *data, size_t len,
                         const char *msg_id, int64_t timeout_ms);
pl_status bus_js_publish_pb(bus *b, const char *subject, const ProtobufCMessage *m,
                            const char *msg_id, int64_t timeout_ms);

/* An ordered replay of one subject of a stream: every message of `stream` on `subject` still
 * stored from stream sequence `start_seq` (0 = the first one), in order and without gaps or
 * duplicates, then the live ones as they arrive (an ephemeral ordered push consumer, which
 * libnats re-creates by itself after a gap). The handler runs on the subscription's delivery
 * thread and owns each message (bus_msg_destroy; nothing to ack). Free with bus_unsubscribe,
 * which also deletes the consumer. PL_NOT_FOUND when the stream does not exist. */
pl_status bus_js_subscribe_ordered(bus *b, const char *stream, const char *subject,
                                   uint64_t start_seq, bus_handler h, void *arg, bus_sub **out);

/* Binds a pull subscription to an existing durable consumer. *out owned by the caller
 * (bus_pull_destroy). */
pl_status bus_pull_create(bus *b, const char *stream, const char *durable,
                          const char *filter_subject, bus_pull **out);
void bus_pull_destroy(bus_pull *p); /* accepts NULL */

/* Fetches up to `max` messages, waiting at most `timeout_ms` for the first. On PL_OK,
 * msgs[0..*n) are owned by the caller (each acked/nak'd/termed, then destroyed). Returns
 * PL_TIMEOUT with *n = 0 when nothing came. */
pl_status bus_fetch(bus_pull *p, int max, int64_t timeout_ms, bus_msg **msgs, int *n);

pl_status bus_ack(bus_msg *m);                   /* waits for the server's confirmation */
pl_status bus_in_progress(bus_msg *m);           /* resets the ack timer */
pl_status bus_nak(bus_msg *m, int64_t delay_ms); /* redeliver after delay (0 = now) */
pl_status bus_term(bus_msg *m);                  /* never redeliver */
/* The delivery count of a JetStream message (1 on first delivery), 0 if unknown. */
uint64_t bus_msg_delivery_count(const bus_msg *m);
/* The stream sequence of a JetStream message, 0 if unknown. */
uint64_t bus_msg_stream_seq(const bus_msg *m);

/* Pending (not yet delivered) plus ack-pending count of a durable consumer; for lag metrics. */
pl_status bus_consumer_lag(bus *b, const char *stream, const char *durable, uint64_t *pending,
                           uint64_t *ack_pending);

/* A thread that fetches from `p` in batches of up to `batch` and calls `h` for each message
 * (the handler owns the message and must ack/nak/term and destroy it). `want` (optional) is
 * asked before each fetch how many messages the caller can take now (0 = wait and ask again):
 * workers use it to fetch only as many jobs as they have free slots. */
typedef struct bus_pull_loop bus_pull_loop;
typedef int (*bus_want_fn)(void *arg);
pl_status bus_pull_loop_start(bus_pull *p, int batch, bus_want_fn want, bus_handler h, void *arg,
                              bus_pull_loop **out);
/* Stops fetching, waits for the thread (at most one fetch timeout), frees. Accepts NULL. */
void bus_pull_loop_stop(bus_pull_loop *l);

#endif
