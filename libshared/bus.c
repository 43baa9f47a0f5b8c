/* bus.c — the message bus over libnats 3.4: core NATS, request-reply and JetStream.
 *
 * Role: the one place that talks to libnats. Every natsStatus (and JetStream error code) is
 * turned into a pl_status here, with the library's own text recorded through PL_ERRF, so
 * callers see PL_BUS / PL_TIMEOUT / PL_UNAVAILABLE / PL_NOT_FOUND and pl_err_last().
 *
 * Threading: libnats owns its threads. The connection callbacks (connected, disconnected,
 * reconnected, closed) run on libnats' callback thread and only touch atomics and the
 * caller's on_state, which is called on each change of state but no longer once bus_close
 * has begun. Each core subscription gets libnats' own delivery thread; its handler
 * runs there. A bus_pull_loop owns one thread that fetches and dispatches. Every other
 * function may be called from any thread (libnats connections are thread-safe).
 *
 * Ownership: a bus_msg is a natsMsg in disguise (struct bus_msg is never defined; pointers
 * are cast here), so bus_msg_destroy is natsMsg_Destroy. The bus owns its natsOptions,
 * natsConnection and jsCtx; a bus_sub and a bus_pull are owned by whoever created them and
 * must be destroyed before bus_close.
 *
 * Start-up order: with retry-on-failed-connect the natsConnection exists before the server
 * is reachable, and so does the JetStream context. JetStream calls made before the first
 * connection (or during a reconnect) fail with PL_TIMEOUT or PL_BUS; callers retry them, as
 * they must retry any stream/consumer setup that races a server restart.
 *
 * What it does not do: no logging of connection state (the owner's on_state decides), no
 * retries of failed requests, no asynchronous JetStream publish, no push consumers other than
 * the ordered replay (bus_js_subscribe_ordered). */
#include "bus.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <nats/nats.h>

#include "log.h"

struct bus {
    natsOptions *opts;
    natsConnection *nc;
    jsCtx *js;
    void (*on_state)(bool connected, void *arg);
    void *arg;
    atomic_int state;    /* 1 connected, 0 not; dedupes on_state calls */
    atomic_bool closing; /* bus_close began: on_state is no longer called */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool closed; /* set by the closed callback, under mu */
};

struct bus_sub {
    natsSubscription *sub;
    bus_handler h;
    void *arg;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool complete; /* the last handler call has returned, under mu */
};

struct bus_pull {
    bus *b;
    natsSubscription *sub;
};

struct bus_pull_loop {
    bus_pull *p;
    int batch;
    bus_want_fn want;
    bus_handler h;
    void *arg;
    bus_msg **msgs; /* scratch for one fetch (batch) */
    atomic_bool stop;
    pthread_t thread;
};

#define BUS_RECONNECT_BUF (8 * 1024 * 1024)
#define BUS_JS_WAIT_MS    5000
#define BUS_LOOP_FETCH_MS 500
#define BUS_LOOP_IDLE_MS  50
#define BUS_LOOP_ERROR_MS 250
/* "consumer already exists" from newer servers; libnats 3.4.1's enum predates it. */
#define BUS_JS_CONSUMER_EXISTS 10148

/* --- error conversion ---------------------------------------------------------------------- */

static pl_status bus_map(natsStatus s, jsErrCode jerr)
{
    if (jerr == JSStreamNotFoundErr || jerr == JSConsumerNotFoundErr)
        return PL_NOT_FOUND;
    switch (s) {
    case NATS_OK:
        return PL_OK;
    case NATS_TIMEOUT:
        return PL_TIMEOUT;
    case NATS_NO_RESPONDERS:
        return PL_UNAVAILABLE;
    case NATS_NOT_FOUND:
        return PL_NOT_FOUND;
    case NATS_NO_MEMORY:
        return PL_NOMEM;
    case NATS_INVALID_ARG:
        return PL_INVALID;
    default:
        return PL_BUS;
    }
}

/* Records "<what>: <status text> (<libnats detail>) [jetstream error N]" and returns the
 * mapped status. Must be called on the thread that made the failing libnats call, because
 * the detail comes from libnats' thread-local last error. */
__attribute__((format(printf, 5, 6))) static pl_status
bus_fail(const char *file, int line, natsStatus s, jsErrCode jerr, const char *fmt, ...)
{
    char what[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);

    natsStatus ls = NATS_OK;
    const char *detail = nats_GetLastError(&ls);
    /* libnats prefixes its text with "(file.c:123): "; that location is not ours to show. */
    if (detail && detail[0] == '(') {
        const char *end = strstr(detail, "): ");
        if (end)
            detail = end + 3;
    }
    char jbuf[48] = "";
    if (jerr)
        snprintf(jbuf, sizeof jbuf, " [jetstream error %d]", (int)jerr);
    if (detail && *detail && strcmp(detail, natsStatus_GetText(s)) != 0)
        return pl_err_set(bus_map(s, jerr), file, line, "%s: %s (%s)%s", what,
                          natsStatus_GetText(s), detail, jbuf);
    return pl_err_set(bus_map(s, jerr), file, line, "%s: %s%s", what, natsStatus_GetText(s), jbuf);
}

#define BUS_FAIL(s, jerr, ...) bus_fail(__FILE__, __LINE__, (s), (jerr), __VA_ARGS__)

static natsMsg *nm(const bus_msg *m)
{
    return (natsMsg *)m;
}

/* Milliseconds to nanoseconds, for JetStream durations. */
static int64_t ms_ns(int64_t ms)
{
    return ms * 1000000;
}

static void sleep_ms(int64_t ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* --- connection ---------------------------------------------------------------------------- */

static void bus_set_state(bus *b, int connected)
{
    int old = atomic_exchange(&b->state, connected);
    if (old != connected && b->on_state && !atomic_load(&b->closing))
        b->on_state(connected != 0, b->arg);
}

static void on_connected(natsConnection *nc, void *closure)
{
    (void)nc;
    bus_set_state(closure, 1);
}

static void on_disconnected(natsConnection *nc, void *closure)
{
    (void)nc;
    bus_set_state(closure, 0);
}

static void on_closed(natsConnection *nc, void *closure)
{
    bus *b = closure;
    (void)nc;
    bus_set_state(b, 0);
    pthread_mutex_lock(&b->mu);
    b->closed = true;
    pthread_cond_broadcast(&b->cv);
    pthread_mutex_unlock(&b->mu);
}

/* Asynchronous errors (slow consumers, permission violations) reach nobody else, so they
 * are logged here. */
static void on_async_error(natsConnection *nc, natsSubscription *sub, natsStatus err, void *closure)
{
    (void)nc;
    (void)closure;
    const char *subj = sub ? natsSubscription_GetSubject(sub) : NULL;
    LOGW(NULL, "nats asynchronous error%s%s: %s", subj ? " on " : "", subj ? subj : "",
         natsStatus_GetText(err));
}

/* Splits a comma-separated URL list into natsOptions_SetServers. */
static natsStatus set_servers(natsOptions *o, const char *url)
{
    if (!strchr(url, ','))
        return natsOptions_SetURL(o, url);

    char *copy = strdup(url);
    size_t n = 1;
    for (const char *p = url; *p; p++)
        n += *p == ',';
    const char **list = calloc(n, sizeof *list);
    if (!copy || !list) {
        free(copy);
        free(list);
        return NATS_NO_MEMORY;
    }
    int count = 0;
    char *save = NULL;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ')
            tok++;
        if (*tok)
            list[count++] = tok;
    }
    natsStatus s = count ? natsOptions_SetServers(o, list, count) : NATS_INVALID_ARG;
    free(list);
    free(copy);
    return s;
}

pl_status bus_connect(bus **out, const bus_opts *o)
{
    *out = NULL;
    if (!o || !o->url || !*o->url)
        return PL_ERRF(PL_INVALID, "bus_connect: no NATS URL");

    bus *b = calloc(1, sizeof *b);
    if (!b)
        return PL_ERRF(PL_NOMEM, "bus_connect: out of memory");
    b->on_state = o->on_state;
    b->arg = o->arg;
    atomic_init(&b->state, 0);
    atomic_init(&b->closing, false);
    pthread_mutex_init(&b->mu, NULL);
    pthread_cond_init(&b->cv, NULL);

    natsStatus s = natsOptions_Create(&b->opts);
    pl_status st = PL_OK;
    if (s == NATS_OK)
        s = set_servers(b->opts, o->url);
    if (s == NATS_OK && o->name)
        s = natsOptions_SetName(b->opts, o->name);
    if (s == NATS_OK)
        s = natsOptions_SetRetryOnFailedConnect(b->opts, true, on_connected, b);
    if (s == NATS_OK)
        s = natsOptions_SetMaxReconnect(b->opts, -1);
    if (s == NATS_OK)
        s = natsOptions_SetReconnectWait(b->opts,
                                         o->reconnect_wait_ms > 0 ? o->reconnect_wait_ms : 500);
    if (s == NATS_OK)
        s = natsOptions_SetPingInterval(b->opts,
                                        o->ping_interval_ms > 0 ? o->ping_interval_ms : 5000);
    if (s == NATS_OK)
        s = natsOptions_SetMaxPingsOut(b->opts, o->max_pings_out > 0 ? o->max_pings_out : 2);
    if (s == NATS_OK)
        s = natsOptions_SetReconnectBufSize(b->opts, BUS_RECONNECT_BUF);
    /* Publishes (RPC replies, token deltas) go out at once instead of waiting for libnats'
     * flusher thread, which held each one about a millisecond: every product request paid it
     * once per reply (1.0 / 2.0 ms steps in bench-history). Our publishes are latency-bound,
     * never so many that batching them would matter. */
    if (s == NATS_OK)
        s = natsOptions_SetSendAsap(b->opts, true);
    if (s == NATS_OK)
        s = natsOptions_SetDisconnectedCB(b->opts, on_disconnected, b);
    if (s == NATS_OK)
        s = natsOptions_SetReconnectedCB(b->opts, on_connected, b);
    if (s == NATS_OK)
        s = natsOptions_SetClosedCB(b->opts, on_closed, b);
    if (s == NATS_OK)
        s = natsOptions_SetErrorHandler(b->opts, on_async_error, b);
    if (s != NATS_OK) {
        st = BUS_FAIL(s, 0, "nats options for %s", o->url);
        goto fail;
    }

    s = natsConnection_Connect(&b->nc, b->opts);
    if (s == NATS_OK) {
        bus_set_state(b, 1);
    } else if (s != NATS_NOT_YET_CONNECTED) {
        st = BUS_FAIL(s, 0, "nats connect to %s", o->url);
        goto fail;
    }

    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = BUS_JS_WAIT_MS;
    s = natsConnection_JetStream(&b->js, b->nc, &jo);
    if (s != NATS_OK) {
        st = BUS_FAIL(s, 0, "jetstream context");
        goto fail;
    }
    *out = b;
    return PL_OK;

fail:
    if (b->nc) {
        /* Closing fires on_closed; wait for it so the callback never sees a freed bus. */
        atomic_store(&b->closing, true);
        natsConnection_Close(b->nc);
        pthread_mutex_lock(&b->mu);
        while (!b->closed)
            pthread_cond_wait(&b->cv, &b->mu);
        pthread_mutex_unlock(&b->mu);
        natsConnection_Destroy(b->nc);
    }
    natsOptions_Destroy(b->opts);
    pthread_cond_destroy(&b->cv);
    pthread_mutex_destroy(&b->mu);
    free(b);
    return st;
}

void bus_close(bus *b)
{
    if (!b)
        return;
    /* The owner is tearing down: a "disconnected" now is not news to it. */
    atomic_store(&b->closing, true);
    if (natsConnection_Status(b->nc) == NATS_CONN_STATUS_CONNECTED)
        natsConnection_FlushTimeout(b->nc, 2000);
    jsCtx_Destroy(b->js);
    natsConnection_Close(b->nc);
    /* The closed callback runs on libnats' callback thread and touches `b`: wait for it
     * (bounded, in case a libnats version skips it) before freeing. */
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += 5;
    pthread_mutex_lock(&b->mu);
    while (!b->closed) {
        if (pthread_cond_timedwait(&b->cv, &b->mu, &dl) == ETIMEDOUT)
            break;
    }
    bool closed = b->closed;
    pthread_mutex_unlock(&b->mu);
    natsConnection_Destroy(b->nc);
    natsOptions_Destroy(b->opts);
    if (!closed) {
        /* Leak the small struct rather than risk a late callback writing to freed memory. */
        LOGW(NULL, "nats closed callback did not arrive; leaking the bus handle");
        return;
    }
    pthread_cond_destroy(&b->cv);
    pthread_mutex_destroy(&b->mu);
    free(b);
}

bool bus_connected(bus *b)
{
    return b && natsConnection_Status(b->nc) == NATS_CONN_STATUS_CONNECTED;
}

/* --- protobuf helpers ---------------------------------------------------------------------- */

/* Packs `m` into a malloc'd buffer (at least one byte, so an empty message is not NULL).
 * NULL when out of memory. */
static uint8_t *pb_pack(const ProtobufCMessage *m, size_t *len)
{
    *len = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(*len ? *len : 1);
    if (buf)
        protobuf_c_message_pack(m, buf);
    return buf;
}

static pl_status check_len(size_t len)
{
    if (len > INT32_MAX)
        return PL_ERRF(PL_TOO_LARGE, "message of %zu bytes is too large for NATS", len);
    return PL_OK;
}

/* --- core NATS ----------------------------------------------------------------------------- */

pl_status bus_publish(bus *b, const char *subject, const void *data, size_t len)
{
    pl_status st = check_len(len);
    if (st != PL_OK)
        return st;
    natsStatus s = natsConnection_Publish(b->nc, subject, data, (int)len);
    if (s != NATS_OK)
        return BUS_FAIL(s, 0, "publish to %s", subject);
    return PL_OK;
}

pl_status bus_publish_pb(bus *b, const char *subject, const ProtobufCMessage *m)
{
    size_t len;
    uint8_t *buf = pb_pack(m, &len);
    if (!buf)
        return PL_ERRF(PL_NOMEM, "publish to %s: out of memory", subject);
    pl_status st = bus_publish(b, subject, buf, len);
    free(buf);
    return st;
}

static void on_sub_msg(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
    bus_sub *s = closure;
    (void)nc;
    (void)sub;
    s->h((bus_msg *)msg, s->arg);
}

static void on_sub_complete(void *closure)
{
    bus_sub *s = closure;
    pthread_mutex_lock(&s->mu);
    s->complete = true;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

static void sub_free(bus_sub *s)
{
    natsSubscription_Destroy(s->sub);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

pl_status bus_subscribe(bus *b, const char *subject, const char *queue, bus_handler h, void *arg,
                        bus_sub **out)
{
    *out = NULL;
    bus_sub *s = calloc(1, sizeof *s);
    if (!s)
        return PL_ERRF(PL_NOMEM, "subscribe to %s: out of memory", subject);
    s->h = h;
    s->arg = arg;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);

    natsStatus ns;
    if (queue)
        ns = natsConnection_QueueSubscribe(&s->sub, b->nc, subject, queue, on_sub_msg, s);
    else
        ns = natsConnection_Subscribe(&s->sub, b->nc, subject, on_sub_msg, s);
    if (ns == NATS_OK)
        ns = natsSubscription_SetOnCompleteCB(s->sub, on_sub_complete, s);
    if (ns != NATS_OK) {
        pl_status st = BUS_FAIL(ns, 0, "subscribe to %s", subject);
        /* Setting the completion callback fails only on a subscription that is already
         * closed (the connection closed under us), so no handler call can still start. */
        if (s->sub)
            natsSubscription_Unsubscribe(s->sub);
        sub_free(s);
        return st;
    }
    *out = s;
    return PL_OK;
}

/* Waits for the subscription's last handler call to return, so it must not be called from
 * that subscription's own handler (it would wait for itself). */
void bus_unsubscribe(bus_sub *s)
{
    if (!s)
        return;
    natsStatus ns = natsSubscription_Unsubscribe(s->sub);
    /* When the unsubscribe failed the subscription was already closed (connection closed):
     * the completion callback has fired or is about to; bound the wait. */
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += ns == NATS_OK ? 3600 : 2;
    pthread_mutex_lock(&s->mu);
    while (!s->complete) {
        if (pthread_cond_timedwait(&s->cv, &s->mu, &dl) == ETIMEDOUT)
            break;
    }
    pthread_mutex_unlock(&s->mu);
    sub_free(s);
}

pl_status bus_request(bus *b, const char *subject, const void *data, size_t len, int64_t timeout_ms,
                      bus_msg **reply)
{
    *reply = NULL;
    pl_status st = check_len(len);
    if (st != PL_OK)
        return st;
    natsMsg *r = NULL;
    natsStatus s = natsConnection_Request(&r, b->nc, subject, data, (int)len, timeout_ms);
    if (s != NATS_OK)
        return BUS_FAIL(s, 0, "request to %s", subject);
    *reply = (bus_msg *)r;
    return PL_OK;
}

pl_status bus_request_pb(bus *b, const char *subject, const ProtobufCMessage *req,
                         const ProtobufCMessageDescriptor *desc, int64_t timeout_ms,
                         ProtobufCMessage **out)
{
    *out = NULL;
    size_t len;
    uint8_t *buf = pb_pack(req, &len);
    if (!buf)
        return PL_ERRF(PL_NOMEM, "request to %s: out of memory", subject);
    bus_msg *reply = NULL;
    pl_status st = bus_request(b, subject, buf, len, timeout_ms, &reply);
    free(buf);
    if (st != PL_OK)
        return st;
    *out = bus_msg_unpack(reply, desc);
    bus_msg_destroy(reply);
    return *out ? PL_OK : PL_CORRUPT;
}

pl_status bus_respond(bus *b, const bus_msg *m, const void *data, size_t len)
{
    const char *reply = bus_msg_reply(m);
    if (!reply)
        return PL_ERRF(PL_INVALID, "respond: message on %s has no reply subject",
                       bus_msg_subject(m));
    return bus_publish(b, reply, data, len);
}

pl_status bus_respond_pb(bus *b, const bus_msg *m, const ProtobufCMessage *reply)
{
    size_t len;
    uint8_t *buf = pb_pack(reply, &len);
    if (!buf)
        return PL_ERRF(PL_NOMEM, "respond: out of memory");
    pl_status st = bus_respond(b, m, buf, len);
    free(buf);
    return st;
}

char *bus_new_inbox(bus *b)
{
    (void)b;
    natsInbox *in = NULL;
    if (natsInbox_Create(&in) != NATS_OK)
        return NULL;
    char *s = strdup(in);
    natsInbox_Destroy(in);
    return s;
}

/* --- messages ------------------------------------------------------------------------------ */

const char *bus_msg_subject(const bus_msg *m)
{
    return natsMsg_GetSubject(nm(m));
}

const char *bus_msg_reply(const bus_msg *m)
{
    const char *r = natsMsg_GetReply(nm(m));
    return r && *r ? r : NULL;
}

const void *bus_msg_data(const bus_msg *m)
{
    return natsMsg_GetData(nm(m));
}

size_t bus_msg_len(const bus_msg *m)
{
    int n = natsMsg_GetDataLength(nm(m));
    return n > 0 ? (size_t)n : 0;
}

ProtobufCMessage *bus_msg_unpack(const bus_msg *m, const ProtobufCMessageDescriptor *desc)
{
    ProtobufCMessage *x =
        protobuf_c_message_unpack(desc, NULL, bus_msg_len(m), (const uint8_t *)bus_msg_data(m));
    if (!x)
        PL_ERRF(PL_CORRUPT, "message on %s (%zu bytes) is not a valid %s", bus_msg_subject(m),
                bus_msg_len(m), desc->name);
    return x;
}

void bus_msg_destroy(bus_msg *m)
{
    if (m)
        natsMsg_Destroy(nm(m));
}

/* --- JetStream: streams and consumers ------------------------------------------------------ */

pl_status bus_stream_ensure(bus *b, const bus_stream_cfg *c)
{
    jsStreamConfig sc;
    jsStreamConfig_Init(&sc);
    int n = 0;
    while (c->subjects && c->subjects[n])
        n++;
    sc.Name = c->name;
    sc.Subjects = (const char **)c->subjects;
    sc.SubjectsLen = n;
    sc.Retention = c->work_queue ? js_WorkQueuePolicy : js_LimitsPolicy;
    sc.Storage = c->memory ? js_MemoryStorage : js_FileStorage;
    if (c->max_age_ms > 0)
        sc.MaxAge = ms_ns(c->max_age_ms);
    if (c->max_bytes > 0)
        sc.MaxBytes = c->max_bytes;
    if (c->max_msgs > 0)
        sc.MaxMsgs = c->max_msgs;
    if (c->duplicate_window_ms > 0)
        sc.Duplicates = ms_ns(c->duplicate_window_ms);

    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_GetStreamInfo(&si, b->js, c->name, NULL, &jerr);
    if (s == NATS_OK) {
        jsStreamInfo_Destroy(si);
        si = NULL;
        s = js_UpdateStream(&si, b->js, &sc, NULL, &jerr);
        if (s != NATS_OK)
            return BUS_FAIL(s, jerr, "update stream %s", c->name);
    } else if (s == NATS_NOT_FOUND || jerr == JSStreamNotFoundErr) {
        jerr = 0;
        s = js_AddStream(&si, b->js, &sc, NULL, &jerr);
        /* Another process may have created it between our look-up and our add. */
        if (s != NATS_OK && jerr == JSStreamNameExistErr) {
            jerr = 0;
            s = js_UpdateStream(&si, b->js, &sc, NULL, &jerr);
        }
        if (s != NATS_OK)
            return BUS_FAIL(s, jerr, "add stream %s", c->name);
    } else {
        return BUS_FAIL(s, jerr, "look up stream %s", c->name);
    }
    jsStreamInfo_Destroy(si);
    return PL_OK;
}

pl_status bus_consumer_ensure(bus *b, const bus_consumer_cfg *c)
{
    jsConsumerConfig cc;
    jsConsumerConfig_Init(&cc);
    cc.Durable = c->durable;
    cc.AckPolicy = js_AckExplicit;
    cc.DeliverPolicy = js_DeliverAll;
    cc.FilterSubject = c->filter_subject;
    cc.AckWait = ms_ns(c->ack_wait_ms > 0 ? c->ack_wait_ms : 15000);
    cc.MaxDeliver = c->max_deliver == 0 ? 3 : c->max_deliver < 0 ? -1 : c->max_deliver;
    cc.MaxAckPending = c->max_ack_pending > 0 ? c->max_ack_pending : 1000;

    int64_t *backoff = NULL;
    if (c->n_backoff > 0) {
        if (c->n_backoff > INT32_MAX)
            return PL_ERRF(PL_INVALID, "consumer %s: too many backoff values", c->durable);
        backoff = malloc(c->n_backoff * sizeof *backoff);
        if (!backoff)
            return PL_ERRF(PL_NOMEM, "consumer %s: out of memory", c->durable);
        for (size_t i = 0; i < c->n_backoff; i++)
            backoff[i] = ms_ns(c->backoff_ms[i]);
        cc.BackOff = backoff;
        cc.BackOffLen = (int)c->n_backoff;
    }

    pl_status st = PL_OK;
    jsConsumerInfo *ci = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_GetConsumerInfo(&ci, b->js, c->stream, c->durable, NULL, &jerr);
    if (s == NATS_OK) {
        jsConsumerInfo_Destroy(ci);
        ci = NULL;
        s = js_UpdateConsumer(&ci, b->js, c->stream, &cc, NULL, &jerr);
        if (s != NATS_OK)
            st = BUS_FAIL(s, jerr, "update consumer %s on %s", c->durable, c->stream);
    } else if ((s == NATS_NOT_FOUND || jerr == JSConsumerNotFoundErr) &&
               jerr != JSStreamNotFoundErr) {
        jerr = 0;
        s = js_AddConsumer(&ci, b->js, c->stream, &cc, NULL, &jerr);
        /* Lost a race with another process adding the same durable: update instead. */
        if (s != NATS_OK &&
            (jerr == JSConsumerNameExistErr || jerr == JSConsumerExistingActiveErr ||
             (int)jerr == BUS_JS_CONSUMER_EXISTS)) {
            jerr = 0;
            s = js_UpdateConsumer(&ci, b->js, c->stream, &cc, NULL, &jerr);
        }
        if (s != NATS_OK)
            st = BUS_FAIL(s, jerr, "add consumer %s on %s", c->durable, c->stream);
    } else {
        st = BUS_FAIL(s, jerr, "look up consumer %s on %s", c->durable, c->stream);
    }
    jsConsumerInfo_Destroy(ci);
    free(backoff);
    return st;
}

pl_status bus_consumer_lag(bus *b, const char *stream, const char *durable, uint64_t *pending,
                           uint64_t *ack_pending)
{
    *pending = *ack_pending = 0;
    jsConsumerInfo *ci = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_GetConsumerInfo(&ci, b->js, stream, durable, NULL, &jerr);
    if (s != NATS_OK)
        return BUS_FAIL(s, jerr, "consumer info %s on %s", durable, stream);
    *pending = ci->NumPending;
    *ack_pending = ci->NumAckPending > 0 ? (uint64_t)ci->NumAckPending : 0;
    jsConsumerInfo_Destroy(ci);
    return PL_OK;
}

/* --- JetStream: publish -------------------------------------------------------------------- */

pl_status bus_js_publish(bus *b, const char *subject, const void *data, size_t len,
                         const char *msg_id, int64_t timeout_ms)
{
    pl_status st = check_len(len);
    if (st != PL_OK)
        return st;
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MsgId = msg_id;
    if (timeout_ms > 0)
        po.MaxWait = timeout_ms;
    jsPubAck *pa = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_Publish(&pa, b->js, subject, data, (int)len, &po, &jerr);
    jsPubAck_Destroy(pa);
    if (s != NATS_OK)
        return BUS_FAIL(s, jerr, "jetstream publish to %s", subject);
    return PL_OK;
}

pl_status bus_js_publish_pb(bus *b, const char *subject, const ProtobufCMessage *m,
                            const char *msg_id, int64_t timeout_ms)
{
    size_t len;
    uint8_t *buf = pb_pack(m, &len);
    if (!buf)
        return PL_ERRF(PL_NOMEM, "jetstream publish to %s: out of memory", subject);
    pl_status st = bus_js_publish(b, subject, buf, len, msg_id, timeout_ms);
    free(buf);
    return st;
}

/* --- JetStream: pull consumers ------------------------------------------------------------- */

/* The subject a pull subscription must name: the consumer's filter when it has one, else the
 * stream's first subject (libnats wants a subject that the bound consumer accepts). Writes a
 * malloc'd copy into *subj. */
static pl_status pull_subject(bus *b, const char *stream, const char *durable, char **subj)
{
    *subj = NULL;
    jsConsumerInfo *ci = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_GetConsumerInfo(&ci, b->js, stream, durable, NULL, &jerr);
    if (s != NATS_OK)
        return BUS_FAIL(s, jerr, "consumer info %s on %s", durable, stream);
    if (ci->Config && ci->Config->FilterSubject && *ci->Config->FilterSubject) {
        *subj = strdup(ci->Config->FilterSubject);
        jsConsumerInfo_Destroy(ci);
        return *subj ? PL_OK : PL_ERRF(PL_NOMEM, "out of memory");
    }
    jsConsumerInfo_Destroy(ci);

    jsStreamInfo *si = NULL;
    s = js_GetStreamInfo(&si, b->js, stream, NULL, &jerr);
    if (s != NATS_OK)
        return BUS_FAIL(s, jerr, "stream info %s", stream);
    if (si->Config && si->Config->SubjectsLen > 0)
        *subj = strdup(si->Config->Subjects[0]);
    else
        *subj = strdup(">");
    jsStreamInfo_Destroy(si);
    return *subj ? PL_OK : PL_ERRF(PL_NOMEM, "out of memory");
}

pl_status bus_js_subscribe_ordered(bus *b, const char *stream, const char *subject,
                                   uint64_t start_seq, bus_handler h, void *arg, bus_sub **out)
{
    *out = NULL;
    bus_sub *s = calloc(1, sizeof *s);
    if (!s)
        return PL_ERRF(PL_NOMEM, "replay of %s: out of memory", subject);
    s->h = h;
    s->arg = arg;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);

    jsSubOptions so;
    jsSubOptions_Init(&so);
    so.Stream = stream; /* bound by name: no look-up of the stream by subject */
    so.Ordered = true;
    if (start_seq > 0) {
        so.Config.DeliverPolicy = js_DeliverByStartSequence;
        so.Config.OptStartSeq = start_seq;
    } else {
        so.Config.DeliverPolicy = js_DeliverAll;
    }
    jsErrCode jerr = 0;
    natsStatus ns = js_Subscribe(&s->sub, b->js, subject, on_sub_msg, s, NULL, &so, &jerr);
    if (ns == NATS_OK)
        ns = natsSubscription_SetOnCompleteCB(s->sub, on_sub_complete, s);
    if (ns != NATS_OK) {
        pl_status st = BUS_FAIL(ns, jerr, "replay of %s from stream %s", subject, stream);
        if (s->sub)
            natsSubscription_Unsubscribe(s->sub);
        sub_free(s);
        return st;
    }
    *out = s;
    return PL_OK;
}

pl_status bus_pull_create(bus *b, const char *stream, const char *durable,
                          const char *filter_subject, bus_pull **out)
{
    *out = NULL;
    char *subj = NULL;
    if (!filter_subject) {
        pl_status st = pull_subject(b, stream, durable, &subj);
        if (st != PL_OK)
            return st;
        filter_subject = subj;
    }
    bus_pull *p = calloc(1, sizeof *p);
    if (!p) {
        free(subj);
        return PL_ERRF(PL_NOMEM, "pull subscribe: out of memory");
    }
    p->b = b;
    jsSubOptions so;
    jsSubOptions_Init(&so);
    so.Stream = stream;
    so.Consumer = durable;
    so.ManualAck = true;
    jsErrCode jerr = 0;
    natsStatus s = js_PullSubscribe(&p->sub, b->js, filter_subject, durable, NULL, &so, &jerr);
    if (s != NATS_OK) {
        pl_status st =
            BUS_FAIL(s, jerr, "pull subscribe to %s/%s (%s)", stream, durable, filter_subject);
        free(subj);
        free(p);
        return st;
    }
    free(subj);
    *out = p;
    return PL_OK;
}

void bus_pull_destroy(bus_pull *p)
{
    if (!p)
        return;
    /* Unsubscribe removes only the client-side interest: the durable consumer stays on the
     * server (libnats does not delete a consumer it merely bound to). */
    natsSubscription_Unsubscribe(p->sub);
    natsSubscription_Destroy(p->sub);
    free(p);
}

pl_status bus_fetch(bus_pull *p, int max, int64_t timeout_ms, bus_msg **msgs, int *n)
{
    *n = 0;
    if (max <= 0)
        return PL_ERRF(PL_INVALID, "fetch: batch %d", max);
    natsMsgList list = {0};
    jsErrCode jerr = 0;
    natsStatus s = natsSubscription_Fetch(&list, p->sub, max, timeout_ms, &jerr);
    if (list.Count > 0) {
        /* Messages that arrived count even when the call ended on an error. */
        int k = 0;
        for (int i = 0; i < list.Count && k < max; i++) {
            if (list.Msgs[i]) {
                msgs[k++] = (bus_msg *)list.Msgs[i];
                list.Msgs[i] = NULL;
            }
        }
        natsMsgList_Destroy(&list);
        *n = k;
        if (k > 0)
            return PL_OK;
    }
    natsMsgList_Destroy(&list);
    if (s == NATS_TIMEOUT)
        return PL_ERRF(PL_TIMEOUT, "fetch: no message within %lld ms", (long long)timeout_ms);
    if (s != NATS_OK)
        return BUS_FAIL(s, jerr, "fetch");
    return PL_ERRF(PL_TIMEOUT, "fetch: no message");
}

pl_status bus_ack(bus_msg *m)
{
    jsErrCode jerr = 0;
    natsStatus s = natsMsg_AckSync(nm(m), NULL, &jerr);
    if (s != NATS_OK)
        return BUS_FAIL(s, jerr, "ack on %s", bus_msg_subject(m));
    return PL_OK;
}

pl_status bus_in_progress(bus_msg *m)
{
    natsStatus s = natsMsg_InProgress(nm(m), NULL);
    if (s != NATS_OK)
        return BUS_FAIL(s, 0, "in-progress on %s", bus_msg_subject(m));
    return PL_OK;
}

pl_status bus_nak(bus_msg *m, int64_t delay_ms)
{
    natsStatus s =
        delay_ms > 0 ? natsMsg_NakWithDelay(nm(m), delay_ms, NULL) : natsMsg_Nak(nm(m), NULL);
    if (s != NATS_OK)
        return BUS_FAIL(s, 0, "nak on %s", bus_msg_subject(m));
    return PL_OK;
}

pl_status bus_term(bus_msg *m)
{
    natsStatus s = natsMsg_Term(nm(m), NULL);
    if (s != NATS_OK)
        return BUS_FAIL(s, 0, "term on %s", bus_msg_subject(m));
    return PL_OK;
}

uint64_t bus_msg_delivery_count(const bus_msg *m)
{
    jsMsgMetaData *md = NULL;
    if (natsMsg_GetMetaData(&md, nm(m)) != NATS_OK)
        return 0;
    uint64_t v = md->NumDelivered;
    jsMsgMetaData_Destroy(md);
    return v;
}

uint64_t bus_msg_stream_seq(const bus_msg *m)
{
    jsMsgMetaData *md = NULL;
    if (natsMsg_GetMetaData(&md, nm(m)) != NATS_OK)
        return 0;
    uint64_t v = md->Sequence.Stream;
    jsMsgMetaData_Destroy(md);
    return v;
}

/* --- pull loop ----------------------------------------------------------------------------- */

static void *pull_loop_main(void *arg)
{
    bus_pull_loop *l = arg;
    bool failing = false;
    while (!atomic_load(&l->stop)) {
        int want = l->want ? l->want(l->arg) : l->batch;
        if (want <= 0) {
            sleep_ms(BUS_LOOP_IDLE_MS);
            continue;
        }
        if (want > l->batch)
            want = l->batch;
        int n = 0;
        pl_status st = bus_fetch(l->p, want, BUS_LOOP_FETCH_MS, l->msgs, &n);
        if (st == PL_OK || st == PL_TIMEOUT) {
            if (failing)
                LOGI(NULL, "pull loop: fetching again");
            failing = false;
        } else {
            /* Disconnected, consumer deleted, ...: keep trying; log once per outage. */
            if (!failing)
                LOGW(NULL, "pull loop: %s; retrying", pl_err_last());
            failing = true;
            sleep_ms(BUS_LOOP_ERROR_MS);
            continue;
        }
        /* Messages already fetched are handed over even when a stop arrived meanwhile:
         * dropping them would delay them by a full AckWait. */
        for (int i = 0; i < n; i++)
            l->h(l->msgs[i], l->arg);
    }
    return NULL;
}

pl_status bus_pull_loop_start(bus_pull *p, int batch, bus_want_fn want, bus_handler h, void *arg,
                              bus_pull_loop **out)
{
    *out = NULL;
    if (batch <= 0 || !h)
        return PL_ERRF(PL_INVALID, "pull loop: batch %d", batch);
    bus_pull_loop *l = calloc(1, sizeof *l);
    if (!l)
        return PL_ERRF(PL_NOMEM, "pull loop: out of memory");
    l->msgs = calloc((size_t)batch, sizeof *l->msgs);
    if (!l->msgs) {
        free(l);
        return PL_ERRF(PL_NOMEM, "pull loop: out of memory");
    }
    l->p = p;
    l->batch = batch;
    l->want = want;
    l->h = h;
    l->arg = arg;
    atomic_init(&l->stop, false);
    int rc = pthread_create(&l->thread, NULL, pull_loop_main, l);
    if (rc != 0) {
        free(l->msgs);
        free(l);
        return PL_ERRF(PL_ERR, "pull loop: pthread_create: %s", strerror(rc));
    }
    *out = l;
    return PL_OK;
}

void bus_pull_loop_stop(bus_pull_loop *l)
{
    if (!l)
        return;
    atomic_store(&l->stop, true);
    pthread_join(l->thread, NULL);
    free(l->msgs);
    free(l);
}
