/* stream.c — delta subscription, output buffer and suspend/resume for one request (stream.h).
 *
 * Reference counting: the creator holds one reference, the hub's list one, and the SSE
 * response (if any) one; the libnats handler runs under the stream's lock and is guaranteed
 * finished once bus_unsubscribe returns (gws_detach), so it needs none. The stream is freed when
 * the last reference goes.
 *
 * Ordering: NATS delivers one publisher's messages on one subject in order; seq numbers make a
 * lost delta visible (logged; the completion record keeps the full text). Deltas from a second
 * worker (a redelivered job after the first one died) are ignored once a first worker's deltas
 * were accepted; the infer-gateway ends such a request with an out-of-band error (seq 0). */
#include "stream.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "daemon.h"
#include "log.h"
#include "subjects.h"
#include "wire.h"
#include "sync.h"

#define GWS_STAMPS 32 /* deltas timed per stream while unsent; more are not timed */

struct gws {
    atomic_int refs;
    pthread_mutex_t mu;
    gws_hub *hub;
    char rid[64];
    bus_sub *sub;
    gws_fmt fmt;
    void *user;
    void (*user_free)(void *);
    struct MHD_Connection *conn; /* NULL once detached */
    bool suspended, done, started, detached, sse, headers_due;
    int64_t created_ms;
    uint32_t next_seq;
    char worker[128];
    char *buf;
    size_t len, off, cap;
    int64_t last_out_ms, last_delta_ms;
    /* Worker stamps of the deltas whose bytes are still in buf (a FIFO, by end offset). */
    struct {
        size_t end;
        int64_t sent_us;
    } stamp[GWS_STAMPS];
    int stamp_head, stamp_n;
    gws *prev, *next; /* hub list */
};

struct gws_hub {
    bus *b;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t thread;
    bool stop;
    gws *head;
    size_t count;
    int64_t keepalive_ms, idle_timeout_ms, first_wait_ms;
    met_family *delay; /* worker publish → bytes handed to the socket, seconds; may be NULL */
};

static void gws_free(gws *s)
{
    if (s->user && s->user_free)
        s->user_free(s->user);
    free(s->buf);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

void gws_release(gws *s)
{
    if (s && atomic_fetch_sub(&s->refs, 1) == 1)
        gws_free(s);
}

void gws_lock(gws *s)
{
    pthread_mutex_lock(&s->mu);
}

void gws_unlock(gws *s)
{
    pthread_mutex_unlock(&s->mu);
}

bool gws_done(const gws *s)
{
    return s->done;
}

bool gws_started(const gws *s)
{
    return s->started;
}

bool gws_headers_due(const gws *s)
{
    return s->headers_due;
}

void *gws_user(gws *s)
{
    return s->user;
}

const char *gws_request_id(const gws *s)
{
    return s->rid;
}

/* Wakes the connection if we parked it. Lock held. */
static void wake(gws *s)
{
    if (s->suspended && s->conn) {
        s->suspended = false;
        MHD_resume_connection(s->conn);
    }
}

void gws_touch(gws *s)
{
    s->last_delta_ms = dmn_now_ms();
}

void gws_append(gws *s, const char *data, size_t len)
{
    if (s->off == s->len)
        s->off = s->len = 0;
    if (s->len + len > s->cap) {
        size_t cap = s->cap ? s->cap : 4096;
        while (cap < s->len + len)
            cap *= 2;
        char *b = realloc(s->buf, cap);
        if (!b)
            return; /* dropping output beats crashing; the record keeps the text */
        s->buf = b;
        s->cap = cap;
    }
    memcpy(s->buf + s->len, data, len);
    s->len += len;
    s->last_out_ms = dmn_now_ms();
    wake(s);
}

void gws_appendf(gws *s, const char *fmt, ...)
{
    char small[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n < sizeof small) {
        gws_append(s, small, (size_t)n);
        return;
    }
    char *big = malloc((size_t)n + 1);
    if (!big)
        return;
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    gws_append(s, big, (size_t)n);
    free(big);
}

void gws_suspend(gws *s)
{
    if (s->conn && !s->suspended) {
        s->suspended = true;
        MHD_suspend_connection(s->conn);
    }
}

void gws_fail(gws *s, pl_status st, const char *message)
{
    if (s->done)
        return;
    Parley__V1__Error err;
    wire_error_init(&err, st, message);
    Parley__V1__TokenDelta d = PARLEY__V1__TOKEN_DELTA__INIT;
    d.request_id = s->rid;
    d.finish_reason = PARLEY__V1__FINISH_REASON__FINISH_REASON_ERROR;
    d.error = &err;
    s->done = true;
    s->fmt(s, &d, s->user);
    wake(s);
}

static void on_delta(bus_msg *m, void *arg)
{
    gws *s = arg;
    Parley__V1__TokenDelta *d =
        (Parley__V1__TokenDelta *)bus_msg_unpack(m, &parley__v1__token_delta__descriptor);
    bus_msg_destroy(m);
    if (!d)
        return;
    pthread_mutex_lock(&s->mu);
    bool out_of_band = d->seq == 0;
    const char *w = d->worker_id ? d->worker_id : "";
    if (s->done) {
        /* late or duplicate: the answer already ended */
    } else if (!out_of_band && s->worker[0] && strcmp(s->worker, w) != 0) {
        LOGW(s->rid, "ignoring deltas from a second worker %s", w);
    } else {
        if (!out_of_band) {
            if (!s->worker[0])
                snprintf(s->worker, sizeof s->worker, "%s", w);
            if (d->seq != s->next_seq)
                LOGW(s->rid, "delta gap: expected seq %u, got %u", s->next_seq, d->seq);
            s->next_seq = d->seq + 1;
        }
        s->last_delta_ms = dmn_now_ms();
        if (d->finish_reason != PARLEY__V1__FINISH_REASON__FINISH_REASON_NONE || d->error)
            s->done = true;
        s->fmt(s, d, s->user);
        if (d->sent_us > 0 && s->hub->delay && s->stamp_n < GWS_STAMPS) {
            int k = (s->stamp_head + s->stamp_n++) % GWS_STAMPS;
            s->stamp[k].end = s->len;
            s->stamp[k].sent_us = d->sent_us;
        }
        s->started = true;
        wake(s);
    }
    pthread_mutex_unlock(&s->mu);
    protobuf_c_message_free_unpacked(&d->base, NULL);
}

pl_status gws_create(gws_hub *h, const char *request_id, const char *delta_subject, gws_fmt fmt,
                     void *user, void (*user_free)(void *), gws **out)
{
    gws *s = calloc(1, sizeof *s);
    if (!s) {
        if (user_free)
            user_free(user);
        return PL_ERRF(PL_NOMEM, "out of memory");
    }
    atomic_init(&s->refs, 2); /* the caller's and the hub list's */
    pthread_mutex_init(&s->mu, NULL);
    s->hub = h;
    snprintf(s->rid, sizeof s->rid, "%s", request_id);
    s->fmt = fmt;
    s->user = user;
    s->user_free = user_free;
    s->next_seq = 1;
    s->created_ms = s->last_out_ms = s->last_delta_ms = dmn_now_ms();
    pl_status st = bus_subscribe(h->b, delta_subject, NULL, on_delta, s, &s->sub);
    if (st != PL_OK) {
        gws_free(s);
        return st;
    }
    pthread_mutex_lock(&h->mu);
    s->next = h->head;
    if (h->head)
        h->head->prev = s;
    h->head = s;
    h->count++;
    pthread_mutex_unlock(&h->mu);
    *out = s;
    return PL_OK;
}

void gws_attach(gws *s, struct MHD_Connection *c)
{
    pthread_mutex_lock(&s->mu);
    s->conn = c;
    pthread_mutex_unlock(&s->mu);
}

void gws_detach(gws *s)
{
    pthread_mutex_lock(&s->mu);
    bool first = !s->detached;
    s->detached = true;
    s->conn = NULL;
    s->suspended = false;
    bool cancel = first && !s->done;
    s->done = true;
    pthread_mutex_unlock(&s->mu);
    if (!first)
        return;
    gws_hub *h = s->hub;
    if (cancel) {
        Parley__V1__Cancel c = PARLEY__V1__CANCEL__INIT;
        c.request_id = s->rid;
        c.reason = (char *)"client disconnected";
        if (bus_publish_pb(h->b, SUBJ_CANCEL, &c.base) != PL_OK)
            LOGW(s->rid, "cannot publish the cancel: %s", pl_err_last());
        else
            LOGI(s->rid, "client went away; cancel sent");
    }
    bus_unsubscribe(s->sub);
    s->sub = NULL;
    pthread_mutex_lock(&h->mu);
    if (s->prev)
        s->prev->next = s->next;
    else if (h->head == s)
        h->head = s->next;
    if (s->next)
        s->next->prev = s->prev;
    s->prev = s->next = NULL;
    h->count--;
    pthread_cond_signal(&h->cv);
    pthread_mutex_unlock(&h->mu);
    gws_release(s); /* the hub list's reference */
}

/* --- SSE response ---------------------------------------------------------------------------- */

static ssize_t sse_read(void *cls, uint64_t pos, char *out, size_t max)
{
    gws *s = cls;
    (void)pos;
    pthread_mutex_lock(&s->mu);
    ssize_t n;
    if (s->off < s->len) {
        size_t k = s->len - s->off;
        if (k > max)
            k = max;
        memcpy(out, s->buf + s->off, k);
        s->off += k;
        n = (ssize_t)k;
        /* Deltas now wholly handed to MHD, which writes them to the socket on this thread. */
        int64_t now = s->stamp_n ? dmn_wall_us() : 0;
        while (s->stamp_n && s->stamp[s->stamp_head].end <= s->off) {
            int64_t us = now - s->stamp[s->stamp_head].sent_us;
            met_family_observe(s->hub->delay, us > 0 ? (double)us * 1e-6 : 0.0);
            s->stamp_head = (s->stamp_head + 1) % GWS_STAMPS;
            s->stamp_n--;
        }
    } else if (s->done) {
        n = MHD_CONTENT_READER_END_OF_STREAM;
    } else {
        gws_suspend(s); /* nothing yet: park the connection instead of spinning */
        n = 0;
    }
    pthread_mutex_unlock(&s->mu);
    return n;
}

static void sse_free(void *cls)
{
    gws_release(cls);
}

struct MHD_Response *gws_response(gws *s)
{
    atomic_fetch_add(&s->refs, 1);
    pthread_mutex_lock(&s->mu);
    s->sse = true;
    pthread_mutex_unlock(&s->mu);
    struct MHD_Response *r =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024, sse_read, s, sse_free);
    if (!r) {
        gws_release(s);
        return NULL;
    }
    MHD_add_response_header(r, "Content-Type", "text/event-stream; charset=utf-8");
    MHD_add_response_header(r, "Cache-Control", "no-cache");
    MHD_add_response_header(r, "X-Accel-Buffering", "no");
    return r;
}

/* --- hub: keep-alives, idle timeouts, shutdown --------------------------------------------------
 */

static void *hub_main(void *arg)
{
    gws_hub *h = arg;
    pthread_mutex_lock(&h->mu);
    while (!h->stop) {
        struct timespec ts = sync_deadline(250);
        pthread_cond_timedwait(&h->cv, &h->mu, &ts);
        int64_t now = dmn_now_ms();
        for (gws *s = h->head; s; s = s->next) {
            pthread_mutex_lock(&s->mu);
            if (!s->done && now - s->last_delta_ms > h->idle_timeout_ms) {
                LOGW(s->rid, "no progress for %lld ms; ending the stream",
                     (long long)h->idle_timeout_ms);
                gws_fail(s, PL_TIMEOUT, "the answer stalled; please retry");
            } else if (!s->sse && !s->started && !s->done && !s->headers_due && s->conn &&
                       now - s->created_ms >= h->first_wait_ms) {
                s->headers_due = true; /* queued for a while: let the response begin */
                wake(s);
            } else if (s->sse && !s->done && now - s->last_out_ms >= h->keepalive_ms) {
                /* A comment line: keeps proxies from timing out and reveals a gone client.
                 * No blank line after it: a blank line ends an event, and some clients
                 * (openai-python) then hand an event with empty data to their JSON parser
                 * once an earlier event carried an id. */
                gws_append(s, ": keepalive\n", 12);
            }
            pthread_mutex_unlock(&s->mu);
        }
    }
    pthread_mutex_unlock(&h->mu);
    return NULL;
}

pl_status gws_hub_create(bus *b, int64_t keepalive_ms, int64_t idle_timeout_ms,
                         int64_t first_wait_ms, gws_hub **out)
{
    gws_hub *h = calloc(1, sizeof *h);
    if (!h)
        return PL_ERRF(PL_NOMEM, "out of memory");
    h->b = b;
    h->keepalive_ms = keepalive_ms;
    h->idle_timeout_ms = idle_timeout_ms;
    h->first_wait_ms = first_wait_ms;
    pthread_mutex_init(&h->mu, NULL);
    sync_cond_init(&h->cv);
    if (pthread_create(&h->thread, NULL, hub_main, h) != 0) {
        free(h);
        return PL_ERRF(PL_ERR, "cannot start the keep-alive thread");
    }
    *out = h;
    return PL_OK;
}

void gws_hub_set_delay_metric(gws_hub *h, met_family *f)
{
    h->delay = f;
}

size_t gws_hub_count(gws_hub *h)
{
    pthread_mutex_lock(&h->mu);
    size_t n = h->count;
    pthread_mutex_unlock(&h->mu);
    return n;
}

void gws_hub_stop(gws_hub *h, int64_t wait_ms)
{
    if (!h || h->stop)
        return;
    pthread_mutex_lock(&h->mu);
    /* First let answers in flight finish on their own, then end the rest. */
    for (int phase = 0; phase < 2; phase++) {
        int64_t deadline = dmn_now_ms() + (phase == 0 ? wait_ms : 1000);
        if (phase == 1)
            for (gws *s = h->head; s; s = s->next) {
                pthread_mutex_lock(&s->mu);
                gws_fail(s, PL_UNAVAILABLE, "the server is shutting down; please retry");
                pthread_mutex_unlock(&s->mu);
            }
        while (h->count > 0 && dmn_now_ms() < deadline) {
            struct timespec ts = sync_deadline(50);
            pthread_cond_timedwait(&h->cv, &h->mu, &ts);
        }
    }
    h->stop = true;
    pthread_cond_signal(&h->cv);
    pthread_mutex_unlock(&h->mu);
    pthread_join(h->thread, NULL);
}

void gws_hub_free(gws_hub *h)
{
    if (!h)
        return;
    gws_hub_stop(h, 0);
    pthread_cond_destroy(&h->cv);
    pthread_mutex_destroy(&h->mu);
    free(h);
}
