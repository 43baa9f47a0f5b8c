/* turn.c — one chat turn: ChatTurnRequest → stored messages → InferRequest → ChatTurnReply.
 *
 * Order, so that nothing is stored for a request that is refused and nothing runs before it is
 * stored:
 *   1. context.get — the conversation (owner's only), the chain the turn continues (the active
 *      leaf, a given parent for an edit, or the user message being regenerated), the custom
 *      instructions, the new message's uploads;
 *   2. quota.take — the user's tier and quota, one request counted (429 names what ran out);
 *   3. the model (request → conversation → default) checked against the tier, and the prompt
 *      built within the tier's window (400 when the new message cannot fit);
 *   4. msg.turn — the user message and the pending answer stored in one transaction;
 *   5. the InferRequest submitted (priority from the tier, deltas on the turn's own subject,
 *      which the PARLEY_DELTAS stream keeps for replays); a refusal marks the answer failed.
 * The reply carries the ids, the delta subject and the quota. When the safety pre-check is on
 * (moderate.c) a new message is checked between 3 and 4: a blocked prompt is still stored, but
 * its answer is the refusal text, completed at once and sent as the turn's only delta with
 * finish reason CONTENT_FILTER, and nothing is submitted; a pre-check without an answer under
 * the "refuse" policy refuses the turn (503, nothing stored). Every stored user message is
 * queued as a safety event (moderate.c), which never delays the turn.
 *
 * Threading: runs on the subscription's libnats delivery thread; each step is a blocking RPC
 * bounded by its timeout. Several chat instances share the queue group. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat.h"
#include "log.h"
#include "prompt.h"
#include "subjects.h"
#include "wire.h"

#define TURN_DEFAULT_MAX_TOKENS 512
#define TURN_DEFAULT_WINDOW     2048

/* Everything a turn allocates, freed in one place. */
typedef struct turn_state {
    char rid[33];
    char delta_subject[96];
    char model[128];
    char why[512];
    uint32_t retry_after_ms;
    Parley__V1__HistoryReply *ctx, *quota, *stored;
    pr_prompt prompt;
} turn_state;

static void state_free(turn_state *t)
{
    if (t->ctx)
        protobuf_c_message_free_unpacked(&t->ctx->base, NULL);
    if (t->quota)
        protobuf_c_message_free_unpacked(&t->quota->base, NULL);
    if (t->stored)
        protobuf_c_message_free_unpacked(&t->stored->base, NULL);
    pr_free(&t->prompt);
}

static bool tier_allows(const Parley__V1__Tier *tier, const char *model)
{
    if (!tier || tier->n_models == 0)
        return true;
    for (size_t i = 0; i < tier->n_models; i++)
        if (strcmp(tier->models[i], model) == 0 || strcmp(tier->models[i], "*") == 0)
            return true;
    return false;
}

/* Answers a blocked prompt: the pending answer becomes the refusal text (complete), and the
 * turn's delta subject gets it as one terminal delta with finish reason CONTENT_FILTER, which
 * the stream of PARLEY_DELTAS keeps for the gateway's reader. Best effort: when history cannot
 * be reached the sweeper fails the answer later. */
static void block_answer(chat *c, const char *rid, const Parley__V1__ChatTurnRequest *rq,
                         const Parley__V1__Message *answer, const char *model,
                         const char *delta_subject, const char *category)
{
    char text[256];
    snprintf(text, sizeof text,
             "This message was not sent to the model: it was blocked by the content policy "
             "(%s).",
             category && category[0] ? category : "blocked content");
    Parley__V1__HistoryRequest hr = PARLEY__V1__HISTORY_REQUEST__INIT;
    Parley__V1__Message m = PARLEY__V1__MESSAGE__INIT;
    hr.op = (char *)"msg.complete";
    hr.user_id = rq->user_id;
    m.id = answer->id;
    m.conversation_id = rq->conversation_id;
    m.request_id = (char *)rid;
    m.content = text;
    m.status = PARLEY__V1__MESSAGE_STATUS__MESSAGE_STATUS_COMPLETE;
    m.error = (char *)"";
    hr.message = &m;
    Parley__V1__HistoryReply *rp = NULL;
    if (chat_history(c, rid, &hr, &rp) != PL_OK)
        LOGW(rid, "cannot store the refusal (the sweeper will fail the answer): %s", pl_err_last());
    if (rp)
        protobuf_c_message_free_unpacked(&rp->base, NULL);
    Parley__V1__TokenDelta d = PARLEY__V1__TOKEN_DELTA__INIT;
    Parley__V1__Usage u = PARLEY__V1__USAGE__INIT;
    d.request_id = (char *)rid;
    d.seq = 0; /* out of band: no worker */
    d.text = text;
    d.finish_reason = PARLEY__V1__FINISH_REASON__FINISH_REASON_CONTENT_FILTER;
    d.usage = &u;
    d.model = (char *)model;
    if (bus_publish_pb(dmn_bus(c->d), delta_subject, &d.base) != PL_OK)
        LOGW(rid, "cannot send the refusal: %s", pl_err_last());
}

/* Marks the stored answer failed when its request could not be submitted. Best effort. */
static void fail_answer(chat *c, const char *rid, const Parley__V1__ChatTurnRequest *rq,
                        const Parley__V1__Message *answer, const char *why)
{
    Parley__V1__HistoryRequest hr = PARLEY__V1__HISTORY_REQUEST__INIT;
    Parley__V1__Message m = PARLEY__V1__MESSAGE__INIT;
    hr.op = (char *)"msg.complete";
    hr.user_id = rq->user_id;
    m.id = answer->id;
    m.conversation_id = rq->conversation_id;
    m.request_id = (char *)rid;
    m.content = (char *)"";
    m.status = PARLEY__V1__MESSAGE_STATUS__MESSAGE_STATUS_FAILED;
    m.error = (char *)why;
    hr.message = &m;
    Parley__V1__HistoryReply *rp = NULL;
    if (chat_history(c, rid, &hr, &rp) != PL_OK)
        LOGW(rid, "cannot mark the answer failed (the sweeper will): %s", pl_err_last());
    if (rp)
        protobuf_c_message_free_unpacked(&rp->base, NULL);
}

/* The reply of a turn whose messages are stored: ids, delta subject, title. */
static void fill_reply(const Parley__V1__ChatTurnRequest *rq, Parley__V1__ChatTurnReply *rep,
                       turn_state *t, const Parley__V1__Message *answer)
{
    rep->request_id = t->rid;
    rep->conversation_id = rq->conversation_id;
    rep->assistant_message_id = answer->id;
    rep->user_message_id = t->stored->n_messages ? t->stored->messages[0]->id : (char *)"";
    rep->delta_subject = t->delta_subject;
    rep->title = t->stored->conversation && t->stored->conversation->title
                     ? t->stored->conversation->title
                     : (char *)"";
}

static pl_status run_turn(chat *c, const Parley__V1__ChatTurnRequest *rq,
                          Parley__V1__ChatTurnReply *rep, turn_state *t)
{
    const char *rid = t->rid;
    if (!rq->user_id || !rq->user_id[0] || !rq->conversation_id || !rq->conversation_id[0])
        return PL_ERRF(PL_INVALID, "a turn needs its user and conversation");
    if (!rq->regenerate && (!rq->content || !rq->content[0]))
        return PL_ERRF(PL_INVALID, "the message is empty");
    if (rq->regenerate && (!rq->parent_id || !rq->parent_id[0]))
        return PL_ERRF(PL_INVALID, "a regeneration names the user message it answers");

    /* 1. the context */
    Parley__V1__HistoryRequest hr = PARLEY__V1__HISTORY_REQUEST__INIT;
    Parley__V1__Conversation conv = PARLEY__V1__CONVERSATION__INIT;
    Parley__V1__Message msg = PARLEY__V1__MESSAGE__INIT;
    hr.op = (char *)"context.get";
    hr.user_id = rq->user_id;
    conv.id = rq->conversation_id;
    hr.conversation = &conv;
    msg.id = rq->parent_id;
    msg.upload_ids = rq->upload_ids;
    msg.n_upload_ids = rq->n_upload_ids;
    hr.message = &msg;
    pl_status s = chat_history(c, rid, &hr, &t->ctx);
    if (s != PL_OK)
        return s;
    const Parley__V1__Conversation *cv = t->ctx->conversation;
    if (!cv)
        return PL_ERRF(PL_ERR, "context.get answered without the conversation");
    /* A regeneration answers a user message; anything else continues from an answer (or the
     * root). The chain's leaf decides, so a bad parent is refused before anything is stored. */
    if (rq->regenerate &&
        (t->ctx->n_messages == 0 ||
         t->ctx->messages[t->ctx->n_messages - 1]->role != PARLEY__V1__ROLE__ROLE_USER))
        return PL_ERRF(PL_INVALID, "only an answer to a user message can be regenerated");
    if (!rq->regenerate && t->ctx->n_messages > 0 &&
        t->ctx->messages[t->ctx->n_messages - 1]->role == PARLEY__V1__ROLE__ROLE_USER)
        return PL_ERRF(PL_INVALID,
                       "a new message follows an answer: parent_id names a user message");

    /* 2. tier and quota */
    Parley__V1__HistoryRequest qr = PARLEY__V1__HISTORY_REQUEST__INIT;
    qr.op = (char *)"quota.take";
    qr.user_id = rq->user_id;
    s = chat_history(c, rid, &qr, &t->quota);
    if (s != PL_OK) {
        if (s == PL_RATE_LIMITED && t->quota && t->quota->quota) {
            const Parley__V1__Quota *q = t->quota->quota;
            int64_t reset = q->exceeded && strcmp(q->exceeded, "tokens_per_day") == 0
                                ? q->day_reset_ms
                                : q->minute_reset_ms;
            int64_t left = reset - dmn_wall_ms();
            t->retry_after_ms = left > 0 ? (uint32_t)(left < 86400000 ? left : 86400000) : 1000;
            rep->quota = t->quota->quota;
        }
        return s;
    }
    const Parley__V1__Tier *tier = t->quota->tier;
    rep->quota = t->quota->quota;

    /* 3. model and prompt */
    if (rq->model && rq->model[0])
        snprintf(t->model, sizeof t->model, "%s", rq->model);
    else if (cv->model && cv->model[0])
        snprintf(t->model, sizeof t->model, "%s", cv->model);
    else if ((s = chat_default_model(c, t->model, sizeof t->model)) != PL_OK)
        return s;
    if (!tier_allows(tier, t->model))
        return PL_ERRF(PL_PERMISSION, "the model %s is not available on the %s tier", t->model,
                       tier && tier->name ? tier->name : "current");
    uint32_t max_tokens = tier && tier->max_tokens ? tier->max_tokens : TURN_DEFAULT_MAX_TOKENS;
    if (rq->max_tokens && rq->max_tokens < max_tokens)
        max_tokens = rq->max_tokens;
    uint32_t window = tier && tier->context_window ? tier->context_window : TURN_DEFAULT_WINDOW;
    pr_input in = {
        .system = t->ctx->user ? t->ctx->user->custom_instructions : NULL,
        .chain = t->ctx->messages,
        .n_chain = t->ctx->n_messages,
        .uploads = t->ctx->uploads,
        .n_uploads = t->ctx->n_uploads,
        .new_user = rq->regenerate ? NULL : rq->content,
        .window = window,
        .answer = max_tokens < window / 2 ? max_tokens : window / 2,
    };
    if ((s = pr_build(&in, &t->prompt)) != PL_OK)
        return s;
    char blocked[64] = "";
    if (!rq->regenerate) {
        mod_verdict v = mod_precheck(c, rid, rq->user_id, rq->content, blocked, sizeof blocked);
        if (v == MOD_REFUSE) {
            t->retry_after_ms = 2000;
            return PL_ERRF(PL_UNAVAILABLE,
                           "the content check did not answer in time; please try again");
        }
        if (v == MOD_BLOCK && !blocked[0])
            snprintf(blocked, sizeof blocked, "blocked content");
    }

    /* 4. store the user message and the pending answer */
    Parley__V1__HistoryRequest tr = PARLEY__V1__HISTORY_REQUEST__INIT;
    Parley__V1__Message tm = PARLEY__V1__MESSAGE__INIT;
    tr.op = (char *)"msg.turn";
    tr.user_id = rq->user_id;
    tr.conversation = &conv;
    tr.flag = rq->regenerate;
    tm.parent_id =
        cv->active_leaf_id && cv->active_leaf_id[0] ? cv->active_leaf_id : (char *)"root";
    tm.content = rq->regenerate ? (char *)"" : rq->content;
    tm.model = t->model;
    tm.request_id = t->rid;
    tm.upload_ids = rq->upload_ids;
    tm.n_upload_ids = rq->n_upload_ids;
    tr.message = &tm;
    if ((s = chat_history(c, rid, &tr, &t->stored)) != PL_OK)
        return s;
    const Parley__V1__Message *answer = t->stored->message;
    if (!answer)
        return PL_ERRF(PL_ERR, "msg.turn answered without the answer's id");
    if (!rq->regenerate && t->stored->n_messages)
        mod_event(c, rq->user_id, rq->conversation_id, t->stored->messages[0]->id,
                  PARLEY__V1__ROLE__ROLE_USER, t->model, rq->content);
    if (blocked[0]) {
        block_answer(c, rid, rq, answer, t->model, t->delta_subject, blocked);
        LOGI(rid, "turn in conversation %s blocked by the pre-check (%s)", rq->conversation_id,
             blocked);
        fill_reply(rq, rep, t, answer);
        return PL_OK;
    }

    /* 5. submit */
    Parley__V1__InferRequest ir = PARLEY__V1__INFER_REQUEST__INIT;
    Parley__V1__SamplingParams sp = PARLEY__V1__SAMPLING_PARAMS__INIT;
    ir.request_id = t->rid;
    ir.user_id = rq->user_id;
    ir.priority = tier ? tier->priority : PARLEY__V1__PRIORITY__PRIORITY_FREE;
    if (ir.priority == PARLEY__V1__PRIORITY__PRIORITY_SYSTEM)
        ir.priority = PARLEY__V1__PRIORITY__PRIORITY_PAID; /* system is for our own requests */
    ir.model = t->model;
    ir.messages = t->prompt.msgs;
    ir.n_messages = t->prompt.n;
    if (rq->sampling) {
        ir.sampling = rq->sampling;
    } else {
        sp.temperature = (float)c->cfg.temperature;
        sp.top_p = 0.95f;
        sp.repetition_penalty = 1.1f;
        ir.sampling = &sp;
    }
    ir.max_tokens = max_tokens;
    ir.created_ms = dmn_wall_ms();
    ir.deadline_ms = ir.created_ms + c->cfg.turn_deadline_ms;
    ir.conversation_id = rq->conversation_id;
    ir.message_id = answer->id;
    ir.delta_subject = t->delta_subject;
    s = chat_submit(c, &ir, &t->retry_after_ms);
    if (s != PL_OK) {
        snprintf(t->why, sizeof t->why, "%s", pl_err_last());
        fail_answer(c, rid, rq, answer, t->why);
        return PL_ERRF(s, "%s", t->why);
    }
    LOGI(rid, "turn in conversation %s: %zu messages (~%u tokens, %zu dropped) to %s",
         rq->conversation_id, t->prompt.n, t->prompt.tokens, t->prompt.dropped, t->model);
    fill_reply(rq, rep, t, answer);
    return PL_OK;
}

static void on_turn(bus_msg *m, void *arg)
{
    chat *c = arg;
    Parley__V1__ChatTurnRequest *rq = (Parley__V1__ChatTurnRequest *)bus_msg_unpack(
        m, &parley__v1__chat_turn_request__descriptor);
    Parley__V1__ChatTurnReply rep = PARLEY__V1__CHAT_TURN_REPLY__INIT;
    Parley__V1__Error err;
    turn_state t = {0};
    dmn_random_id(t.rid);
    snprintf(t.delta_subject, sizeof t.delta_subject, "%s%s", SUBJ_TURN_DELTA_PREFIX, t.rid);
    pl_err_clear();
    pl_status s =
        rq ? run_turn(c, rq, &rep, &t) : PL_ERRF(PL_INVALID, "the turn request does not parse");
    if (s != PL_OK) {
        snprintf(t.why, sizeof t.why, "%s", pl_err_last());
        const char *msg = chat_plain_message(t.why);
        wire_error_init(&err, s, msg);
        err.retry_after_ms = t.retry_after_ms;
        err.retryable = s == PL_RATE_LIMITED || s == PL_OVERLOADED || s == PL_UNAVAILABLE;
        rep.error = &err;
        if (s == PL_ERR || s == PL_NOMEM || s == PL_DB)
            LOGE(t.rid, "turn failed: %s", t.why);
        else
            LOGI(t.rid, "turn refused (%s): %s", pl_status_str(s), msg);
    }
    met_inc(met_with(c->m_turns, s == PL_OK ? "ok" : pl_status_str(s), NULL), 1);
    if (bus_respond_pb(dmn_bus(c->d), m, &rep.base) != PL_OK)
        LOGW(t.rid, "cannot answer the turn: %s", pl_err_last());
    state_free(&t);
    if (rq)
        protobuf_c_message_free_unpacked(&rq->base, NULL);
    bus_msg_destroy(m);
}

pl_status turn_start(chat *c)
{
    pl_status s = PL_OK;
    for (int i = 0; i < CHAT_TURN_THREADS && s == PL_OK; i++)
        s = bus_subscribe(dmn_bus(c->d), SUBJ_CHAT_TURN, QUEUE_CHAT, on_turn, c, &c->turn_subs[i]);
    return s;
}

void turn_stop(chat *c)
{
    for (int i = 0; i < CHAT_TURN_THREADS; i++) {
        bus_unsubscribe(c->turn_subs[i]);
        c->turn_subs[i] = NULL;
    }
}
