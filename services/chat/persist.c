/* persist.c — completion records → saved answers, counted usage, generated titles.
 *
 * Workers (and the infer-gateway, for requests it fails) write a CompletionRecord to the
 * PARLEY_COMPLETIONS work queue when a request ends, whatever the reason; it is the truth for
 * the final text. This module pulls them through the durable consumer "chat" and, per record:
 *   - an answer of a turn (conversation_id and message_id set): msg.complete (idempotent by
 *     request id: only a pending answer changes) with complete / stopped / failed, then, when
 *     it changed, usage.add, a safety event for an answer with text (moderate.c), and after
 *     the first complete answer of an untitled conversation a title request;
 *   - a title (message_id "title:<conversation>"): conv.rename, only while it has no title;
 *   - anything else (the OpenAI-compatible API): usage.add for the key's owner when the
 *     gateway authenticated a per-user API key (user_id set), then acked.
 * The record is acked only once that succeeded. When history is unreachable it is nak'd with a
 * growing delay (at most PST_NAK_MAX_MS) and comes back, as often as needed (the consumer has
 * no delivery limit): killing history during a turn delays the answer's saving, never loses it.
 * Errors that another try cannot fix (a deleted conversation, bad input) are logged and acked.
 *
 * Stop: the gateway's stop route broadcasts Cancel and also writes a record of its own
 * (worker_id "", finish CANCELLED, no text) because a request cancelled while still queued is
 * finished by nobody. Such a record is held back once (nak, PST_STOP_GRACE_MS) so that the
 * worker's own record, with the partial text, is saved first; if the answer is still pending
 * after that, it is marked stopped and a terminal delta ends any stream still open.
 *
 * Threading: one thread (the pull loop) handles records one at a time; a binding task retries
 * until the consumer exists (jsetup creates it in the background). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat.h"
#include "log.h"
#include "prompt.h"
#include "subjects.h"
#include "wire.h"

#define PST_BATCH         16
#define PST_NAK_MIN_MS    500
#define PST_NAK_MAX_MS    15000
#define PST_STOP_GRACE_MS 3000
#define PST_TITLE_PREFIX  "title:"
#define PST_TITLE_BYTES   80
#define PST_TITLE_INPUT   1200 /* bytes of the exchange shown to the model */

typedef enum pst_outcome { PST_ACK, PST_NAK, PST_TERM } pst_outcome;

/* Errors worth another try later: history (or its database) unreachable or failing. */
static bool transient(pl_status s)
{
    return !(s == PL_INVALID || s == PL_NOT_FOUND || s == PL_PERMISSION || s == PL_UNSUPPORTED ||
             s == PL_CORRUPT || s == PL_EXISTS);
}

static int64_t nak_delay(uint64_t deliveries)
{
    int64_t d = PST_NAK_MIN_MS;
    for (uint64_t i = 1; i < deliveries && d < PST_NAK_MAX_MS; i++)
        d *= 2;
    return d < PST_NAK_MAX_MS ? d : PST_NAK_MAX_MS;
}

static void add_usage(chat *c, const Parley__V1__CompletionRecord *r)
{
    if (!r->user_id || !r->user_id[0] || !r->usage ||
        r->usage->prompt_tokens + r->usage->completion_tokens == 0)
        return;
    Parley__V1__HistoryRequest hr = PARLEY__V1__HISTORY_REQUEST__INIT;
    hr.op = (char *)"usage.add";
    hr.user_id = r->user_id;
    hr.usage = r->usage;
    Parley__V1__HistoryReply *rp = NULL;
    if (chat_history(c, r->request_id, &hr, &rp) != PL_OK)
        LOGW(r->request_id, "usage not counted: %s", pl_err_last());
    if (rp)
        protobuf_c_message_free_unpacked(&rp->base, NULL);
}

static Parley__V1__MessageStatus status_of(const Parley__V1__CompletionRecord *r)
{
    switch (r->finish_reason) {
    case PARLEY__V1__FINISH_REASON__FINISH_REASON_STOP:
    case PARLEY__V1__FINISH_REASON__FINISH_REASON_LENGTH:
        return r->error ? PARLEY__V1__MESSAGE_STATUS__MESSAGE_STATUS_FAILED
                        : PARLEY__V1__MESSAGE_STATUS__MESSAGE_STATUS_COMPLETE;
    case PARLEY__V1__FINISH_REASON__FINISH_REASON_CANCELLED:
        return PARLEY__V1__MESSAGE_STATUS__MESSAGE_STATUS_STOPPED;
    default:
        return PARLEY__V1__MESSAGE_STATUS__MESSAGE_STATUS_FAILED;
    }
}

/* Appends at most `max` bytes of `s` (cut at a code point boundary) to buf. */
static size_t append_cut(char *buf, size_t cap, size_t at, const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n > max) {
        n = max;
        while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
            n--;
    }
    if (at + n + 1 > cap)
        n = at + 1 < cap ? cap - at - 1 : 0;
    memcpy(buf + at, s, n);
    buf[at + n] = '\0';
    return at + n;
}

/* Asks the model for a title for the exchange ending at `answer_id`. Best effort: a failure
 * leaves the conversation untitled. */
static void request_title(chat *c, const Parley__V1__CompletionRecord *r)
{
    Parley__V1__HistoryRequest hr = PARLEY__V1__HISTORY_REQUEST__INIT;
    Parley__V1__Conversation conv = PARLEY__V1__CONVERSATION__INIT;
    Parley__V1__Message leaf = PARLEY__V1__MESSAGE__INIT;
    hr.op = (char *)"context.get";
    hr.user_id = r->user_id;
    conv.id = r->conversation_id;
    leaf.id = r->message_id;
    hr.conversation = &conv;
    hr.message = &leaf;
    hr.limit = 2;
    Parley__V1__HistoryReply *ctx = NULL;
    if (chat_history(c, r->request_id, &hr, &ctx) != PL_OK || ctx->n_messages == 0) {
        LOGW(r->request_id, "no title: cannot read the exchange: %s", pl_err_last());
        if (ctx)
            protobuf_c_message_free_unpacked(&ctx->base, NULL);
        return;
    }
    char exchange[2 * PST_TITLE_INPUT + 64];
    size_t w = 0;
    exchange[0] = '\0';
    for (size_t i = 0; i < ctx->n_messages; i++) {
        const Parley__V1__Message *m = ctx->messages[i];
        w = append_cut(exchange, sizeof exchange, w,
                       m->role == PARLEY__V1__ROLE__ROLE_USER ? "User: " : "Assistant: ", 16);
        w = append_cut(exchange, sizeof exchange, w, m->content ? m->content : "",
                       m->role == PARLEY__V1__ROLE__ROLE_USER ? PST_TITLE_INPUT
                                                              : PST_TITLE_INPUT / 2);
        w = append_cut(exchange, sizeof exchange, w, "\n", 1);
    }
    protobuf_c_message_free_unpacked(&ctx->base, NULL);
    char ask[sizeof exchange + 128];
    snprintf(ask, sizeof ask,
             "%s\nWrite a title of at most six words for this conversation. Reply with the "
             "title only.",
             exchange);

    Parley__V1__ChatMessage sys = PARLEY__V1__CHAT_MESSAGE__INIT,
                            usr = PARLEY__V1__CHAT_MESSAGE__INIT;
    sys.role = PARLEY__V1__ROLE__ROLE_SYSTEM;
    sys.content = (char *)"You name conversations with short, plain titles.";
    usr.role = PARLEY__V1__ROLE__ROLE_USER;
    usr.content = ask;
    Parley__V1__ChatMessage *msgs[] = {&sys, &usr};
    char rid[33], marker[160], subj[96];
    dmn_random_id(rid);
    snprintf(marker, sizeof marker, "%s%s", PST_TITLE_PREFIX, r->conversation_id);
    snprintf(subj, sizeof subj, "%s%s", SUBJ_DELTA_PREFIX, rid);
    Parley__V1__InferRequest ir = PARLEY__V1__INFER_REQUEST__INIT;
    Parley__V1__SamplingParams sp = PARLEY__V1__SAMPLING_PARAMS__INIT;
    ir.request_id = rid;
    ir.user_id = r->user_id;
    ir.priority = PARLEY__V1__PRIORITY__PRIORITY_SYSTEM;
    ir.model = r->model;
    ir.messages = msgs;
    ir.n_messages = 2;
    sp.temperature = 0; /* greedy */
    sp.top_p = 1;
    sp.repetition_penalty = 1.1f;
    ir.sampling = &sp;
    ir.max_tokens = (uint32_t)c->cfg.title_max_tokens;
    ir.created_ms = dmn_wall_ms();
    ir.deadline_ms = ir.created_ms + 60000;
    ir.conversation_id = r->conversation_id;
    ir.message_id = marker;
    ir.delta_subject = subj;
    if (chat_submit(c, &ir, NULL) != PL_OK)
        LOGW(r->request_id, "no title: %s", pl_err_last());
    else
        LOGI(r->request_id, "title requested for conversation %s (request %s)", r->conversation_id,
             rid);
}

static pst_outcome on_title(chat *c, const Parley__V1__CompletionRecord *r, uint64_t deliveries)
{
    const char *conv_id = r->message_id + strlen(PST_TITLE_PREFIX);
    char title[PST_TITLE_BYTES];
    if (status_of(r) != PARLEY__V1__MESSAGE_STATUS__MESSAGE_STATUS_COMPLETE ||
        pr_clean_title(r->text, title, sizeof title) == 0) {
        LOGI(r->request_id, "no usable title for conversation %s", conv_id);
        return PST_ACK;
    }
    Parley__V1__HistoryRequest hr = PARLEY__V1__HISTORY_REQUEST__INIT;
    Parley__V1__Conversation conv = PARLEY__V1__CONVERSATION__INIT;
    hr.op = (char *)"conv.rename";
    hr.user_id = r->user_id;
    hr.flag = true; /* only while untitled: never over the user's own */
    conv.id = (char *)conv_id;
    conv.title = title;
    hr.conversation = &conv;
    Parley__V1__HistoryReply *rp = NULL;
    pl_status s = chat_history(c, r->request_id, &hr, &rp);
    if (rp)
        protobuf_c_message_free_unpacked(&rp->base, NULL);
    if (s != PL_OK && transient(s)) {
        LOGW(r->request_id, "title not saved yet (try %llu): %s", (unsigned long long)deliveries,
             pl_err_last());
        return PST_NAK;
    }
    if (s == PL_OK)
        LOGI(r->request_id, "conversation %s titled \"%s\"", conv_id, title);
    return PST_ACK;
}

/* Ends streams still open on an answer that the stop fallback closed. */
static void publish_end(chat *c, const Parley__V1__CompletionRecord *r)
{
    char subj[96];
    snprintf(subj, sizeof subj, "%s%s", SUBJ_TURN_DELTA_PREFIX, r->request_id);
    Parley__V1__TokenDelta d = PARLEY__V1__TOKEN_DELTA__INIT;
    d.request_id = r->request_id;
    d.seq = 0; /* out of band */
    d.finish_reason = PARLEY__V1__FINISH_REASON__FINISH_REASON_CANCELLED;
    d.model = r->model;
    if (bus_publish_pb(dmn_bus(c->d), subj, &d.base) != PL_OK)
        LOGW(r->request_id, "cannot end the stream: %s", pl_err_last());
}

static pst_outcome on_answer(chat *c, const Parley__V1__CompletionRecord *r, uint64_t deliveries)
{
    bool fallback = (!r->worker_id || !r->worker_id[0]) &&
                    r->finish_reason == PARLEY__V1__FINISH_REASON__FINISH_REASON_CANCELLED;
    if (fallback && deliveries <= 1)
        return PST_NAK; /* let the worker's own record (with the partial text) come first */
    Parley__V1__HistoryRequest hr = PARLEY__V1__HISTORY_REQUEST__INIT;
    Parley__V1__Message m = PARLEY__V1__MESSAGE__INIT;
    hr.op = (char *)"msg.complete";
    hr.user_id = r->user_id;
    m.id = r->message_id;
    m.conversation_id = r->conversation_id;
    m.request_id = r->request_id;
    m.content = r->text ? r->text : (char *)"";
    m.status = status_of(r);
    m.usage = r->usage;
    m.error =
        r->error && r->error->message ? (char *)chat_plain_message(r->error->message) : (char *)"";
    if (m.status == PARLEY__V1__MESSAGE_STATUS__MESSAGE_STATUS_FAILED && !m.error[0])
        m.error = (char *)"the answer failed";
    hr.message = &m;
    Parley__V1__HistoryReply *rp = NULL;
    pl_status s = chat_history(c, r->request_id, &hr, &rp);
    if (s != PL_OK) {
        if (rp)
            protobuf_c_message_free_unpacked(&rp->base, NULL);
        if (transient(s)) {
            LOGW(r->request_id, "answer not saved yet (try %llu): %s",
                 (unsigned long long)deliveries, pl_err_last());
            return PST_NAK;
        }
        LOGW(r->request_id, "answer dropped: %s", pl_err_last());
        return PST_ACK;
    }
    bool changed = rp->count > 0;
    bool untitled = rp->conversation && (!rp->conversation->title || !rp->conversation->title[0]);
    protobuf_c_message_free_unpacked(&rp->base, NULL);
    if (!changed)
        return PST_ACK; /* already saved (a redelivery, or the worker's record came first) */
    LOGI(r->request_id, "answer %s saved (%s)", r->message_id,
         m.status == PARLEY__V1__MESSAGE_STATUS__MESSAGE_STATUS_COMPLETE  ? "complete"
         : m.status == PARLEY__V1__MESSAGE_STATUS__MESSAGE_STATUS_STOPPED ? "stopped"
                                                                          : "failed");
    add_usage(c, r);
    if (m.status != PARLEY__V1__MESSAGE_STATUS__MESSAGE_STATUS_FAILED && r->text && r->text[0])
        mod_event(c, r->user_id, r->conversation_id, r->message_id,
                  PARLEY__V1__ROLE__ROLE_ASSISTANT, r->model, r->text);
    if (fallback)
        publish_end(c, r);
    if (untitled && m.status == PARLEY__V1__MESSAGE_STATUS__MESSAGE_STATUS_COMPLETE)
        request_title(c, r);
    return PST_ACK;
}

static void on_record(bus_msg *msg, void *arg)
{
    chat *c = arg;
    uint64_t deliveries = bus_msg_delivery_count(msg);
    Parley__V1__CompletionRecord *r = (Parley__V1__CompletionRecord *)bus_msg_unpack(
        msg, &parley__v1__completion_record__descriptor);
    pst_outcome o;
    const char *what;
    if (!r || !r->request_id) {
        LOGW(NULL, "dropping a completion record that does not parse");
        o = PST_TERM;
        what = "bad";
    } else if (r->message_id &&
               strncmp(r->message_id, PST_TITLE_PREFIX, strlen(PST_TITLE_PREFIX)) == 0) {
        o = on_title(c, r, deliveries);
        what = "title";
    } else if (r->conversation_id && r->conversation_id[0] && r->message_id && r->message_id[0] &&
               r->user_id && r->user_id[0]) {
        o = on_answer(c, r, deliveries);
        what = "answer";
    } else {
        /* The OpenAI-compatible API: user_id is the account of the per-user API key the gateway
         * authenticated ("" for the deployment's shared key); its tokens count for that user. */
        add_usage(c, r);
        o = PST_ACK;
        what = "api";
    }
    met_inc(met_with(c->m_records, o == PST_NAK ? "retry" : what, NULL), 1);
    pl_status s = o == PST_ACK ? bus_ack(msg)
                  : o == PST_NAK
                      ? bus_nak(msg, r && (!r->worker_id || !r->worker_id[0]) && deliveries <= 1
                                         ? PST_STOP_GRACE_MS
                                         : nak_delay(deliveries))
                      : bus_term(msg);
    if (s != PL_OK)
        LOGW(r ? r->request_id : NULL, "completion record not acknowledged: %s", pl_err_last());
    if (r)
        protobuf_c_message_free_unpacked(&r->base, NULL);
    bus_msg_destroy(msg);
}

static pl_status bind_consumer(void *arg)
{
    chat *c = arg;
    if (!c->pull) {
        pl_status s = bus_pull_create(dmn_bus(c->d), STREAM_COMPLETIONS, CONSUMER_COMPLETIONS, NULL,
                                      &c->pull);
        if (s != PL_OK)
            return s;
    }
    return bus_pull_loop_start(c->pull, PST_BATCH, NULL, on_record, c, &c->loop);
}

pl_status persist_start(chat *c)
{
    return bgtask_start("completions consumer", bind_consumer, c, 1000, &c->consumer_setup);
}

void persist_stop(chat *c)
{
    bgtask_stop(c->consumer_setup);
    c->consumer_setup = NULL;
    bus_pull_loop_stop(c->loop);
    c->loop = NULL;
    bus_pull_destroy(c->pull);
    c->pull = NULL;
}
