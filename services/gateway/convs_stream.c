/* convs_stream.c — resumable SSE streams of chat answers (see convs_stream.h).
 *
 * Each live stream is a gws (stream.c) whose core subscription listens on a subject nobody
 * publishes to; its output is fed from an ordered JetStream subscription on the turn's delta
 * subject instead (bus_js_subscribe_ordered), whose handler formats events under the gws lock.
 * The gws still gives suspend/resume, keep-alives, the idle timeout and the shutdown path (both
 * end the stream through gws_fail, which reaches fmt_fail below).
 *
 * Closing: when the request ends (client gone or stream finished) the JetStream subscription
 * is removed first (no handler runs after), then the gws is marked done before gws_detach so
 * that no Cancel goes out: leaving the page must not stop an answer another tab may follow.
 *
 * Ownership: the cvs state is the gws's user data (freed with the gws); the request holds the
 * caller's gws reference until it completes (http_set_user). */
#include "convs_stream.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus.h"
#include "convs.h"
#include "log.h"
#include "stream.h"
#include "subjects.h"
#include "wire.h"

typedef struct cvs {
    gws *s;
    bus_sub *js;
    uint64_t sent;     /* answer bytes seen so far, skipped ones included */
    uint64_t skip;     /* bytes the client already has */
    uint32_t next_seq; /* the next worker delta expected */
    char worker[128];  /* the worker whose deltas are followed */
    bool ended;        /* the done event was written */
    bool closing;      /* the request is over: write nothing */
} cvs;

const char *cvs_status_name(Parley__V1__MessageStatus s)
{
    switch (s) {
    case PARLEY__V1__MESSAGE_STATUS__MESSAGE_STATUS_PENDING:
        return "pending";
    case PARLEY__V1__MESSAGE_STATUS__MESSAGE_STATUS_STOPPED:
        return "stopped";
    case PARLEY__V1__MESSAGE_STATUS__MESSAGE_STATUS_FAILED:
        return "failed";
    default:
        return "complete";
    }
}

cvs_resume cvs_parse_last_event_id(const char *h)
{
    cvs_resume r = {0};
    if (!h || !*h)
        return r;
    char *end = NULL;
    unsigned long long n = strtoull(h, &end, 10);
    if (end == h)
        return r; /* not one of ours: from the start */
    r.resumed = true;
    r.from_bytes = n;
    r.finished = strcmp(end, ".done") == 0;
    return r;
}

/* Writes one event (lock held). `o` is deleted. */
static void emit(gws *s, const char *id, cJSON *o)
{
    char *json = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!json)
        return;
    gws_touch(s);
    gws_appendf(s, "id: %s\ndata: %s\n\n", id, json);
    free(json);
}

static cJSON *usage_json(const Parley__V1__Usage *u)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "prompt_tokens", u ? u->prompt_tokens : 0);
    cJSON_AddNumberToObject(o, "completion_tokens", u ? u->completion_tokens : 0);
    cJSON_AddNumberToObject(o, "total_tokens",
                            u ? (double)u->prompt_tokens + u->completion_tokens : 0);
    return o;
}

/* One delta in order (lock held). */
static void on_delta_locked(cvs *c, const Parley__V1__TokenDelta *d)
{
    if (c->ended || c->closing)
        return;
    bool oob = d->seq == 0; /* out of band: the infer-gateway's or chat's terminal */
    if (!oob) {
        const char *w = d->worker_id ? d->worker_id : "";
        if (c->worker[0] && strcmp(c->worker, w) != 0)
            return; /* a second worker after a redelivery: the first one's answer stands */
        if (!c->worker[0])
            snprintf(c->worker, sizeof c->worker, "%s", w);
        if (d->seq < c->next_seq)
            return;
        c->next_seq = d->seq + 1;
    }
    size_t len = d->text ? strlen(d->text) : 0;
    if (len) {
        uint64_t end = c->sent + len;
        if (end > c->skip) {
            const char *from = c->sent >= c->skip ? d->text : d->text + (c->skip - c->sent);
            char id[24];
            snprintf(id, sizeof id, "%" PRIu64, end);
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "type", "delta");
            cJSON_AddStringToObject(o, "text", from);
            emit(c->s, id, o);
        }
        c->sent = end;
    }
    if (d->finish_reason == PARLEY__V1__FINISH_REASON__FINISH_REASON_NONE && !d->error)
        return;
    char id[40];
    const char *status = "failed";
    if (d->error) {
        snprintf(id, sizeof id, "%" PRIu64 ".error", c->sent);
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "type", "error");
        cJSON_AddStringToObject(o, "message",
                                d->error->message && d->error->message[0]
                                    ? pl_err_text(d->error->message)
                                    : "the answer failed");
        int http = wire_http_status(d->error->code);
        cJSON_AddStringToObject(o, "code",
                                http == 504 ? "timeout"
                                : d->error->code == PARLEY__V1__ERROR_CODE__ERROR_CODE_WORKER_LOST
                                    ? "worker_lost"
                                : http >= 500 ? "server_error"
                                : http == 429 ? "rate_limited"
                                              : "failed");
        emit(c->s, id, o);
    } else if (d->finish_reason == PARLEY__V1__FINISH_REASON__FINISH_REASON_STOP ||
               d->finish_reason == PARLEY__V1__FINISH_REASON__FINISH_REASON_LENGTH ||
               d->finish_reason == PARLEY__V1__FINISH_REASON__FINISH_REASON_CONTENT_FILTER) {
        /* content_filter: chat's refusal of a blocked prompt, stored as a complete answer */
        status = "complete";
    } else if (d->finish_reason == PARLEY__V1__FINISH_REASON__FINISH_REASON_CANCELLED) {
        status = "stopped";
    }
    snprintf(id, sizeof id, "%" PRIu64 ".done", c->sent);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "type", "done");
    cJSON_AddStringToObject(o, "status", status);
    cJSON_AddStringToObject(o, "finish_reason",
                            d->error ? "error" : wire_finish_name(d->finish_reason));
    cJSON_AddItemToObject(o, "usage", usage_json(d->usage));
    emit(c->s, id, o);
    c->ended = true;
    gws_fail(c->s, PL_OK, ""); /* marks the gws done: the response ends after this output */
}

/* gws's formatter: reached only through gws_fail (idle timeout, shutdown, or ourselves). */
static void fmt_fail(gws *s, const Parley__V1__TokenDelta *d, void *user)
{
    (void)s;
    on_delta_locked(user, d);
}

static void on_js(bus_msg *m, void *arg)
{
    cvs *c = arg;
    Parley__V1__TokenDelta *d =
        (Parley__V1__TokenDelta *)bus_msg_unpack(m, &parley__v1__token_delta__descriptor);
    bus_msg_destroy(m);
    if (!d)
        return;
    gws_lock(c->s);
    on_delta_locked(c, d);
    gws_unlock(c->s);
    protobuf_c_message_free_unpacked(&d->base, NULL);
}

static void cvs_detach(void *p)
{
    cvs *c = p;
    gws *s = c->s;
    bus_unsubscribe(c->js);
    c->js = NULL;
    gws_lock(s);
    c->closing = true;
    gws_fail(s, PL_CANCELLED, ""); /* done, so gws_detach sends no Cancel */
    gws_unlock(s);
    gws_detach(s);
    gws_release(s); /* may free c */
}

enum MHD_Result cvs_stream_live(gw *g, http_req *r, const gw_user *u, const char *request_id,
                                const char *delta_subject, cJSON *start, cvs_resume from)
{
    cvs *c = calloc(1, sizeof *c);
    if (!c) {
        cJSON_Delete(start);
        return MHD_NO;
    }
    c->skip = from.from_bytes;
    c->next_seq = 1;
    char idle[33], dead[96];
    dmn_random_id(idle);
    /* gws wants a core subject; give it one nobody publishes to (we feed it ourselves). */
    snprintf(dead, sizeof dead, "_PARLEY.gw.idle.%s", idle);
    gws *s = NULL;
    if (gws_create(g->streams, request_id, dead, fmt_fail, c, free, &s) != PL_OK) {
        cJSON_Delete(start);
        return http_reply_error(r, 503, "the message bus is unavailable", NULL,
                                "service_unavailable", 1);
    }
    c->s = s;
    gws_attach(s, http_conn(r));
    http_set_user(r, c, cvs_detach);
    if (start && !from.resumed) {
        gws_lock(s);
        emit(s, "0", start);
        gws_unlock(s);
    } else {
        cJSON_Delete(start);
    }
    pl_status st =
        bus_js_subscribe_ordered(dmn_bus(g->d), STREAM_DELTAS, delta_subject, 0, on_js, c, &c->js);
    if (st != PL_OK) {
        LOGW(http_request_id(r), "cannot replay %s: %s", delta_subject, pl_err_last());
        return http_reply_error(r, 503, "the answer cannot be streamed right now; reload later",
                                NULL, "service_unavailable", 1);
    }
    struct MHD_Response *resp = gws_response(s);
    if (!resp)
        return MHD_NO;
    gw_quota_headers(resp, u && u->has_quota ? &u->quota : NULL);
    return http_queue(r, 200, resp);
}

enum MHD_Result cvs_stream_stored(http_req *r, const gw_user *u, const Parley__V1__Message *m,
                                  cJSON *start, cvs_resume from)
{
    if (from.finished) {
        cJSON_Delete(start);
        struct MHD_Response *resp = MHD_create_response_from_buffer(0, "", MHD_RESPMEM_PERSISTENT);
        if (!resp)
            return MHD_NO;
        return http_queue(r, 204, resp);
    }
    const char *text = m->content ? m->content : "";
    size_t len = strlen(text);
    size_t cap = 1024, w = 0;
    char *buf = malloc(cap);
    if (!buf) {
        cJSON_Delete(start);
        return MHD_NO;
    }
    buf[0] = '\0';
    /* Appends one event; a failed allocation only shortens the output. */
#define CVS_PUT(ID, OBJ)                                                                           \
    do {                                                                                           \
        char *j_ = cJSON_PrintUnformatted(OBJ);                                                    \
        cJSON_Delete(OBJ);                                                                         \
        if (!j_)                                                                                   \
            break;                                                                                 \
        size_t need_ = strlen(ID) + strlen(j_) + 32;                                               \
        if (w + need_ > cap) {                                                                     \
            size_t nc_ = (w + need_) * 2;                                                          \
            char *nb_ = realloc(buf, nc_);                                                         \
            if (!nb_) {                                                                            \
                free(j_);                                                                          \
                break;                                                                             \
            }                                                                                      \
            buf = nb_;                                                                             \
            cap = nc_;                                                                             \
        }                                                                                          \
        w += (size_t)snprintf(buf + w, cap - w, "id: %s\ndata: %s\n\n", ID, j_);                   \
        free(j_);                                                                                  \
    } while (0)
    if (start && !from.resumed)
        CVS_PUT("0", start);
    else
        cJSON_Delete(start);
    char id[40];
    if (from.from_bytes < len) {
        snprintf(id, sizeof id, "%zu", len);
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "type", "delta");
        cJSON_AddStringToObject(o, "text", text + from.from_bytes);
        CVS_PUT(id, o);
    }
    const char *status = cvs_status_name(m->status);
    if (m->status == PARLEY__V1__MESSAGE_STATUS__MESSAGE_STATUS_FAILED) {
        snprintf(id, sizeof id, "%zu.error", len);
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "type", "error");
        cJSON_AddStringToObject(o, "message",
                                m->error && m->error[0] ? m->error : "the answer failed");
        cJSON_AddStringToObject(o, "code", "failed");
        CVS_PUT(id, o);
    }
    snprintf(id, sizeof id, "%zu.done", len);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "type", "done");
    cJSON_AddStringToObject(o, "status", status);
    cJSON_AddStringToObject(
        o, "finish_reason",
        m->status == PARLEY__V1__MESSAGE_STATUS__MESSAGE_STATUS_COMPLETE  ? "stop"
        : m->status == PARLEY__V1__MESSAGE_STATUS__MESSAGE_STATUS_STOPPED ? "cancelled"
                                                                          : "error");
    cJSON_AddItemToObject(o, "usage", usage_json(m->usage));
    CVS_PUT(id, o);
#undef CVS_PUT
    struct MHD_Response *resp = MHD_create_response_from_buffer(w, buf, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(buf);
        return MHD_NO;
    }
    MHD_add_response_header(resp, "Content-Type", "text/event-stream; charset=utf-8");
    MHD_add_response_header(resp, "Cache-Control", "no-cache");
    gw_quota_headers(resp, u && u->has_quota ? &u->quota : NULL);
    return http_queue(r, 200, resp);
}
