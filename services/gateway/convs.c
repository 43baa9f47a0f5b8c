/* convs.c — the product API's conversation routes (see product.h, docs/api-conversations.md).
 *
 *   POST   /api/v1/conversations                         create {title?, model?}
 *   GET    /api/v1/conversations?cursor=&limit=          list, newest first (no bodies)
 *   GET    /api/v1/conversations/search?q=&limit=        full-text search
 *   GET    /api/v1/conversations/{id}                    open: the active branch
 *   PATCH  /api/v1/conversations/{id}                    {title?, model?}
 *   DELETE /api/v1/conversations/{id}
 *   POST   /api/v1/conversations/{id}/messages           a turn → SSE answer
 *   GET    /api/v1/conversations/{id}/messages/{mid}/stream     resume an answer (SSE)
 *   POST   /api/v1/conversations/{id}/messages/{mid}/stop
 *   POST   /api/v1/conversations/{id}/messages/{mid}/regenerate → SSE answer
 *   POST   /api/v1/conversations/{id}/messages/{mid}/switch
 *   POST   /api/v1/conversations/{id}/messages/{mid}/feedback   {value: -1|0|1}
 *   POST   /api/v1/conversations/{id}/shares              (convs_share.c)
 *   GET    /api/v1/models                                the served models the tier allows
 * plus the share and upload routes of convs_share.c, listed in the table at the end.
 *
 * Every route authenticates with gw_auth_user (accounts.c) and passes the caller's id to
 * history, which scopes every lookup to it: another user's ids answer 404 like missing ones.
 * Turns go to parley-chat (ChatTurnRequest); the answer is streamed by convs_stream.c.
 *
 * Threading: handlers run on MHD pool threads and block on one or two RPCs (bounded). */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "bus.h"
#include "convs.h"
#include "convs_stream.h"
#include "log.h"
#include "subjects.h"
#include "wire.h"

#define CV_TURN_TIMEOUT_MS 20000
#define CV_CONTENT_MAX     (256 * 1024)
#define CV_MAX_UPLOADS     16
#define CV_ID_MAX          64

/* --- shared helpers (convs.h) ------------------------------------------------------------- */

enum MHD_Result cv_send_json(http_req *r, unsigned status, cJSON *j, const gw_user *u)
{
    return gw_send_json(r, status, j, u && u->has_quota ? &u->quota : NULL, NULL);
}

/* Adds an integer as raw JSON text: cJSON prints numbers with "%1.15g" and re-parses them to
 * check, which dominated the time to answer a 1,000-message conversation. */
static void add_int(cJSON *o, const char *name, long long v)
{
    char buf[24];
    snprintf(buf, sizeof buf, "%lld", v);
    cJSON_AddRawToObject(o, name, buf);
}

static enum MHD_Result bad(http_req *r, const char *param, const char *message)
{
    return http_reply_error(r, 400, message, param, "invalid_request", 0);
}

static enum MHD_Result not_found(http_req *r)
{
    return http_reply_error(r, 404, "no such route", NULL, "not_found", 0);
}

/* --- JSON of conversations and messages ----------------------------------------------------- */

static cJSON *conv_json(const Parley__V1__Conversation *c)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", c->id);
    cJSON_AddStringToObject(o, "object", "conversation");
    cJSON_AddStringToObject(o, "title", c->title ? c->title : "");
    cJSON_AddStringToObject(o, "model", c->model ? c->model : "");
    gw_add_time(o, "created_at", c->created_ms);
    gw_add_time(o, "updated_at", c->updated_ms);
    return o;
}

static cJSON *conv_list_json(const Parley__V1__HistoryReply *rp, bool with_cursor)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "object", "list");
    cJSON *arr = cJSON_AddArrayToObject(o, "data");
    for (size_t i = 0; i < rp->n_conversations; i++)
        cJSON_AddItemToArray(arr, conv_json(rp->conversations[i]));
    if (with_cursor) {
        if (rp->next_cursor && rp->next_cursor[0])
            cJSON_AddStringToObject(o, "next_cursor", rp->next_cursor);
        else
            cJSON_AddNullToObject(o, "next_cursor");
    }
    return o;
}

/* --- small history calls ------------------------------------------------------------------- */

/* One op about conversation `conv` (and message `mid`, optional) of user `u`. */
static pl_status hist(gw *g, http_req *r, const gw_user *u, const char *op, const char *conv,
                      const char *mid, Parley__V1__HistoryReply **rp)
{
    Parley__V1__HistoryRequest rq = PARLEY__V1__HISTORY_REQUEST__INIT;
    Parley__V1__Conversation c = PARLEY__V1__CONVERSATION__INIT;
    Parley__V1__Message m = PARLEY__V1__MESSAGE__INIT;
    rq.op = (char *)op;
    rq.user_id = (char *)u->id;
    c.id = (char *)conv;
    rq.conversation = &c;
    if (mid) {
        m.id = (char *)mid;
        rq.message = &m;
    }
    return gw_history(g, http_request_id(r), &rq, rp);
}

/* Whether tier `t` (NULL: unknown, no restriction) allows `model`: an empty list or "*" allows
 * every model. */
static bool tier_allows(const Parley__V1__Tier *t, const char *model)
{
    if (!t || t->n_models == 0)
        return true;
    for (size_t i = 0; i < t->n_models; i++)
        if (strcmp(t->models[i], model) == 0 || strcmp(t->models[i], "*") == 0)
            return true;
    return false;
}

/* Whether `model` may be used by the caller: allowed by their tier (403 otherwise) and served
 * (400 otherwise; not checked when the inference service does not answer). */
static bool model_ok(gw *g, http_req *r, const gw_user *u, const char *model, enum MHD_Result *ret)
{
    if (!model[0] || strlen(model) > 128) {
        *ret = bad(r, "model", "model must be a model name");
        return false;
    }
    Parley__V1__HistoryRequest rq = PARLEY__V1__HISTORY_REQUEST__INIT;
    rq.op = (char *)"quota.get";
    rq.user_id = (char *)u->id;
    Parley__V1__HistoryReply *rp = NULL;
    pl_status s = gw_history(g, http_request_id(r), &rq, &rp);
    if (s != PL_OK) {
        *ret = gw_fail(r, s);
        return false;
    }
    bool allowed = tier_allows(rp->tier, model);
    char tier[64];
    snprintf(tier, sizeof tier, "%s", rp->tier && rp->tier->name ? rp->tier->name : "current");
    protobuf_c_message_free_unpacked(&rp->base, NULL);
    if (!allowed) {
        char msg[256];
        snprintf(msg, sizeof msg, "the model %s is not available on the %s tier", model, tier);
        *ret = http_reply_error(r, 403, msg, "model", "forbidden", 0);
        return false;
    }
    Parley__V1__ModelListRequest lq = PARLEY__V1__MODEL_LIST_REQUEST__INIT;
    Parley__V1__ModelList *list = NULL;
    if (bus_request_pb(dmn_bus(g->d), SUBJ_INFER_MODELS, &lq.base,
                       &parley__v1__model_list__descriptor, 3000,
                       (ProtobufCMessage **)&list) != PL_OK)
        return true; /* cannot tell: the turn will say so if it is not served */
    bool served = false;
    for (size_t i = 0; i < list->n_models && !served; i++)
        served = strcmp(list->models[i]->id, model) == 0;
    protobuf_c_message_free_unpacked(&list->base, NULL);
    if (!served) {
        char msg[256];
        snprintf(msg, sizeof msg, "the model %s is not served here (see GET /v1/models)", model);
        *ret = bad(r, "model", msg);
        return false;
    }
    return true;
}

/* GET /api/v1/models: the served models the caller's tier allows (the web app's model picker;
 * /v1/models lists every served model to API-key holders). The first is the default. */
static enum MHD_Result route_models(http_req *r, void *arg)
{
    gw *g = arg;
    enum MHD_Result ret;
    gw_user u;
    if (!gw_auth_user(g, r, &u, &ret))
        return ret;
    Parley__V1__HistoryRequest rq = PARLEY__V1__HISTORY_REQUEST__INIT;
    rq.op = (char *)"quota.get";
    rq.user_id = u.id;
    Parley__V1__HistoryReply *rp = NULL;
    pl_status s = gw_history(g, http_request_id(r), &rq, &rp);
    if (s != PL_OK)
        return gw_fail(r, s);
    Parley__V1__ModelListRequest lq = PARLEY__V1__MODEL_LIST_REQUEST__INIT;
    lq.request_id = (char *)http_request_id(r);
    Parley__V1__ModelList *list = NULL;
    if (bus_request_pb(dmn_bus(g->d), SUBJ_INFER_MODELS, &lq.base,
                       &parley__v1__model_list__descriptor, 3000,
                       (ProtobufCMessage **)&list) != PL_OK) {
        protobuf_c_message_free_unpacked(&rp->base, NULL);
        return http_reply_error(r, 503, "the inference service is not available right now", NULL,
                                "service_unavailable", 2);
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "object", "list");
    cJSON_AddStringToObject(o, "tier", rp->tier && rp->tier->name ? rp->tier->name : "");
    cJSON *arr = cJSON_AddArrayToObject(o, "data");
    for (size_t i = 0; i < list->n_models; i++) {
        const Parley__V1__ModelInfo *m = list->models[i];
        if (!tier_allows(rp->tier, m->id))
            continue;
        cJSON *x = cJSON_CreateObject();
        cJSON_AddStringToObject(x, "id", m->id);
        cJSON_AddStringToObject(x, "object", "model");
        add_int(x, "context_length", m->context_length);
        cJSON_AddItemToArray(arr, x);
    }
    protobuf_c_message_free_unpacked(&list->base, NULL);
    protobuf_c_message_free_unpacked(&rp->base, NULL);
    return cv_send_json(r, 200, o, &u);
}

/* --- conversations ------------------------------------------------------------------------- */

static enum MHD_Result route_create(http_req *r, void *arg)
{
    gw *g = arg;
    enum MHD_Result ret;
    gw_user u;
    if (!gw_auth_user(g, r, &u, &ret))
        return ret;
    cJSON *b = gw_body_object(r, true, &ret);
    if (!b)
        return ret;
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(b, "title");
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(b, "model");
    if ((t && !cJSON_IsString(t) && !cJSON_IsNull(t)) ||
        (m && !cJSON_IsString(m) && !cJSON_IsNull(m))) {
        cJSON_Delete(b);
        return bad(r, t && !cJSON_IsString(t) ? "title" : "model", "title and model are strings");
    }
    const char *model = cJSON_IsString(m) ? m->valuestring : "";
    if (model[0] && !model_ok(g, r, &u, model, &ret)) {
        cJSON_Delete(b);
        return ret;
    }
    Parley__V1__HistoryRequest rq = PARLEY__V1__HISTORY_REQUEST__INIT;
    Parley__V1__Conversation c = PARLEY__V1__CONVERSATION__INIT;
    rq.op = (char *)"conv.create";
    rq.user_id = u.id;
    c.title = cJSON_IsString(t) ? t->valuestring : (char *)"";
    c.model = (char *)model;
    rq.conversation = &c;
    Parley__V1__HistoryReply *rp = NULL;
    pl_status s = gw_history(g, http_request_id(r), &rq, &rp);
    cJSON_Delete(b);
    if (s != PL_OK)
        return gw_fail(r, s);
    cJSON *o = conv_json(rp->conversation);
    protobuf_c_message_free_unpacked(&rp->base, NULL);
    return cv_send_json(r, 201, o, &u);
}

static bool parse_limit(http_req *r, uint32_t *out)
{
    const char *l = http_query(r, "limit");
    *out = 0;
    if (!l)
        return true;
    char *end = NULL;
    long v = strtol(l, &end, 10);
    if (end == l || *end || v < 1 || v > 100)
        return false;
    *out = (uint32_t)v;
    return true;
}

static enum MHD_Result route_list(http_req *r, void *arg)
{
    gw *g = arg;
    enum MHD_Result ret;
    gw_user u;
    if (!gw_auth_user(g, r, &u, &ret))
        return ret;
    Parley__V1__HistoryRequest rq = PARLEY__V1__HISTORY_REQUEST__INIT;
    rq.op = (char *)"conv.list";
    rq.user_id = u.id;
    if (!parse_limit(r, &rq.limit))
        return bad(r, "limit", "limit is a whole number from 1 to 100");
    const char *cur = http_query(r, "cursor");
    rq.cursor = (char *)(cur ? cur : "");
    Parley__V1__HistoryReply *rp = NULL;
    pl_status s = gw_history(g, http_request_id(r), &rq, &rp);
    if (s == PL_INVALID)
        return bad(r, "cursor", "the cursor is not valid");
    if (s != PL_OK)
        return gw_fail(r, s);
    cJSON *o = conv_list_json(rp, true);
    protobuf_c_message_free_unpacked(&rp->base, NULL);
    return cv_send_json(r, 200, o, &u);
}

static enum MHD_Result route_search(http_req *r, void *arg)
{
    gw *g = arg;
    enum MHD_Result ret;
    gw_user u;
    if (!gw_auth_user(g, r, &u, &ret))
        return ret;
    const char *q = http_query(r, "q");
    if (!q || !q[0] || strlen(q) > 500)
        return bad(r, "q", "q is the text to search for (1 to 500 bytes)");
    Parley__V1__HistoryRequest rq = PARLEY__V1__HISTORY_REQUEST__INIT;
    rq.op = (char *)"conv.search";
    rq.user_id = u.id;
    rq.query = (char *)q;
    if (!parse_limit(r, &rq.limit))
        return bad(r, "limit", "limit is a whole number from 1 to 100");
    Parley__V1__HistoryReply *rp = NULL;
    pl_status s = gw_history(g, http_request_id(r), &rq, &rp);
    if (s != PL_OK)
        return gw_fail(r, s);
    cJSON *o = conv_list_json(rp, false);
    protobuf_c_message_free_unpacked(&rp->base, NULL);
    return cv_send_json(r, 200, o, &u);
}

/* Splits the path after ".../conversations/" into at most `max` parts; false when a part is
 * empty or too long, or there are more. */
static bool split_path(const char *rest, char parts[][CV_ID_MAX + 1], size_t max, size_t *n)
{
    *n = 0;
    const char *p = rest;
    while (*p) {
        const char *e = strchr(p, '/');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == 0 || len > CV_ID_MAX || *n == max)
            return false;
        memcpy(parts[*n], p, len);
        parts[*n][len] = '\0';
        (*n)++;
        if (!e)
            break;
        p = e + 1;
        if (!*p)
            return false; /* trailing slash */
    }
    return *n > 0;
}

static enum MHD_Result open_conv(gw *g, http_req *r, const gw_user *u, const char *id)
{
    return cv_open(g, r, u, id);
}

static cJSON *start_json(const char *conv, const char *user_mid, const char *asst_mid,
                         const char *rid, const char *model, const char *title)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "type", "start");
    cJSON_AddStringToObject(o, "conversation_id", conv);
    if (user_mid && user_mid[0])
        cJSON_AddStringToObject(o, "user_message_id", user_mid);
    else
        cJSON_AddNullToObject(o, "user_message_id");
    cJSON_AddStringToObject(o, "assistant_message_id", asst_mid);
    cJSON_AddStringToObject(o, "request_id", rid);
    if (model)
        cJSON_AddStringToObject(o, "model", model);
    if (title)
        cJSON_AddStringToObject(o, "title", title);
    return o;
}

/* GET .../messages/{mid}/stream: the rest of an answer, from Last-Event-ID. */
static enum MHD_Result resume_stream(gw *g, http_req *r, const gw_user *u, const char *conv,
                                     const char *mid)
{
    Parley__V1__HistoryReply *rp = NULL;
    pl_status s = hist(g, r, u, "msg.get", conv, mid, &rp);
    if (s != PL_OK)
        return gw_fail(r, s);
    const Parley__V1__Message *m = rp->message;
    if (!m || m->role != PARLEY__V1__ROLE__ROLE_ASSISTANT) {
        protobuf_c_message_free_unpacked(&rp->base, NULL);
        return http_reply_error(r, 404, "answer not found", NULL, "not_found", 0);
    }
    const char *h = http_header(r, "Last-Event-ID");
    if (!h)
        h = http_query(r, "last_event_id");
    cvs_resume from = cvs_parse_last_event_id(h);
    cJSON *start = start_json(conv, m->parent_id, m->id, m->request_id, m->model, NULL);
    enum MHD_Result ret;
    if (m->status == PARLEY__V1__MESSAGE_STATUS__MESSAGE_STATUS_PENDING && m->request_id &&
        m->request_id[0] && !from.finished) {
        char subj[128];
        snprintf(subj, sizeof subj, "%s%s", SUBJ_TURN_DELTA_PREFIX, m->request_id);
        ret = cvs_stream_live(g, r, u, m->request_id, subj, start, from);
    } else {
        ret = cvs_stream_stored(r, u, m, start, from);
    }
    protobuf_c_message_free_unpacked(&rp->base, NULL);
    return ret;
}

static enum MHD_Result route_conv_get(http_req *r, void *arg)
{
    gw *g = arg;
    enum MHD_Result ret;
    gw_user u;
    if (!gw_auth_user(g, r, &u, &ret))
        return ret;
    char parts[4][CV_ID_MAX + 1];
    size_t n;
    if (!split_path(http_path_rest(r), parts, 4, &n))
        return not_found(r);
    if (n == 1)
        return open_conv(g, r, &u, parts[0]);
    if (n == 4 && strcmp(parts[1], "messages") == 0 && strcmp(parts[3], "stream") == 0)
        return resume_stream(g, r, &u, parts[0], parts[2]);
    return not_found(r);
}

static enum MHD_Result route_conv_patch(http_req *r, void *arg)
{
    gw *g = arg;
    enum MHD_Result ret;
    gw_user u;
    if (!gw_auth_user(g, r, &u, &ret))
        return ret;
    char parts[1][CV_ID_MAX + 1];
    size_t n;
    if (!split_path(http_path_rest(r), parts, 1, &n))
        return not_found(r);
    cJSON *b = gw_body_object(r, false, &ret);
    if (!b)
        return ret;
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(b, "title");
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(b, "model");
    if ((!t && !m) || (t && !cJSON_IsString(t)) || (m && !cJSON_IsString(m))) {
        cJSON_Delete(b);
        return bad(r, NULL, "send a title and/or a model (strings)");
    }
    if (m && !model_ok(g, r, &u, m->valuestring, &ret)) {
        cJSON_Delete(b);
        return ret;
    }
    Parley__V1__HistoryRequest rq = PARLEY__V1__HISTORY_REQUEST__INIT;
    Parley__V1__Conversation c = PARLEY__V1__CONVERSATION__INIT;
    Parley__V1__HistoryReply *rp = NULL;
    rq.user_id = u.id;
    c.id = parts[0];
    rq.conversation = &c;
    pl_status s = PL_OK;
    if (t) {
        rq.op = (char *)"conv.rename";
        c.title = t->valuestring;
        s = gw_history(g, http_request_id(r), &rq, &rp);
    }
    if (s == PL_OK && m) {
        if (rp)
            protobuf_c_message_free_unpacked(&rp->base, NULL);
        rp = NULL;
        rq.op = (char *)"conv.set_model";
        c.model = m->valuestring;
        s = gw_history(g, http_request_id(r), &rq, &rp);
    }
    cJSON_Delete(b);
    if (s != PL_OK)
        return gw_fail(r, s);
    cJSON *o = conv_json(rp->conversation);
    protobuf_c_message_free_unpacked(&rp->base, NULL);
    return cv_send_json(r, 200, o, &u);
}

static enum MHD_Result route_conv_delete(http_req *r, void *arg)
{
    gw *g = arg;
    enum MHD_Result ret;
    gw_user u;
    if (!gw_auth_user(g, r, &u, &ret))
        return ret;
    char parts[1][CV_ID_MAX + 1];
    size_t n;
    if (!split_path(http_path_rest(r), parts, 1, &n))
        return not_found(r);
    Parley__V1__HistoryReply *rp = NULL;
    pl_status s = hist(g, r, &u, "conv.delete", parts[0], NULL, &rp);
    if (s != PL_OK)
        return gw_fail(r, s);
    protobuf_c_message_free_unpacked(&rp->base, NULL);
    struct MHD_Response *resp = MHD_create_response_from_buffer(0, "", MHD_RESPMEM_PERSISTENT);
    if (!resp)
        return MHD_NO;
    gw_quota_headers(resp, u.has_quota ? &u.quota : NULL);
    return http_queue(r, 204, resp);
}

/* --- turns ---------------------------------------------------------------------------------- */

/* Sends the turn to parley-chat and answers with the SSE stream, or with the refusal. */
static enum MHD_Result send_turn(gw *g, http_req *r, const gw_user *u,
                                 Parley__V1__ChatTurnRequest *tr)
{
    tr->request_id = (char *)http_request_id(r);
    tr->user_id = (char *)u->id;
    Parley__V1__ChatTurnReply *rep = NULL;
    pl_status s = bus_request_pb(dmn_bus(g->d), SUBJ_CHAT_TURN, &tr->base,
                                 &parley__v1__chat_turn_reply__descriptor, CV_TURN_TIMEOUT_MS,
                                 (ProtobufCMessage **)&rep);
    if (s != PL_OK) {
        LOGW(http_request_id(r), "chat turn: %s", pl_err_last());
        return http_reply_error(r, 503, "the chat service is not available right now", NULL,
                                "service_unavailable", 2);
    }
    /* The turn took from the quota: the next request looks the session up afresh, so its
     * rate-limit headers show what is left. */
    gw_auth_forget_user(g, u->id);
    gw_user uq = *u;
    if (rep->quota) {
        uq.quota = *rep->quota;
        uq.quota.exceeded = NULL;
        uq.has_quota = true;
    }
    if (rep->error && rep->error->code != PARLEY__V1__ERROR_CODE__ERROR_CODE_OK) {
        const Parley__V1__Error *e = rep->error;
        int status = wire_http_status(e->code);
        if (status == 413)
            status = 400; /* "does not fit the context window" is a bad request here */
        const char *code = status == 429   ? "rate_limited"
                           : status == 404 ? "not_found"
                           : status == 403 ? "forbidden"
                           : status == 400 ? "invalid_request"
                           : status >= 500 ? "service_unavailable"
                                           : "error";
        cJSON *root = cJSON_CreateObject(), *err = cJSON_AddObjectToObject(root, "error");
        cJSON_AddStringToObject(err, "message",
                                e->message && e->message[0] ? pl_err_text(e->message) : "refused");
        cJSON_AddStringToObject(err, "type", wire_error_type(status));
        cJSON_AddNullToObject(err, "param");
        cJSON_AddStringToObject(err, "code", code);
        if (rep->quota && rep->quota->exceeded && rep->quota->exceeded[0])
            cJSON_AddStringToObject(err, "exceeded", rep->quota->exceeded);
        char *text = cJSON_PrintUnformatted(root);
        cJSON_Delete(root);
        unsigned retry = e->retry_after_ms ? (e->retry_after_ms + 999) / 1000 : 1;
        protobuf_c_message_free_unpacked(&rep->base, NULL);
        struct MHD_Response *resp =
            text ? MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE)
                 : NULL;
        if (!resp) {
            free(text);
            return MHD_NO;
        }
        MHD_add_response_header(resp, "Content-Type", "application/json");
        if (status == 429 || status == 503) {
            char ra[16];
            snprintf(ra, sizeof ra, "%u", retry);
            MHD_add_response_header(resp, "Retry-After", ra);
        }
        gw_quota_headers(resp, uq.has_quota ? &uq.quota : NULL);
        return http_queue(r, (unsigned)status, resp);
    }
    cJSON *start =
        start_json(rep->conversation_id, rep->user_message_id, rep->assistant_message_id,
                   rep->request_id, NULL, rep->title && rep->title[0] ? rep->title : NULL);
    enum MHD_Result ret =
        cvs_stream_live(g, r, &uq, rep->request_id, rep->delta_subject, start, (cvs_resume){0});
    protobuf_c_message_free_unpacked(&rep->base, NULL);
    return ret;
}

/* Reads the optional generation settings of a turn body into `tr` (sp is its storage). */
static bool turn_options(http_req *r, const cJSON *b, Parley__V1__ChatTurnRequest *tr,
                         Parley__V1__SamplingParams *sp, enum MHD_Result *ret)
{
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(b, "max_tokens");
    if (mt) {
        if (!cJSON_IsNumber(mt) || mt->valuedouble < 1 || mt->valuedouble > 1000000 ||
            mt->valuedouble != (double)(long)mt->valuedouble) {
            *ret = bad(r, "max_tokens", "max_tokens is a whole number of at least 1");
            return false;
        }
        tr->max_tokens = (uint32_t)mt->valuedouble;
    }
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(b, "model");
    if (model && !cJSON_IsNull(model)) {
        if (!cJSON_IsString(model)) {
            *ret = bad(r, "model", "model is a string");
            return false;
        }
        tr->model = model->valuestring;
    }
    const cJSON *temp = cJSON_GetObjectItemCaseSensitive(b, "temperature");
    const cJSON *seed = cJSON_GetObjectItemCaseSensitive(b, "seed");
    if (temp || seed) {
        if ((temp && (!cJSON_IsNumber(temp) || temp->valuedouble < 0 || temp->valuedouble > 2)) ||
            (seed && (!cJSON_IsNumber(seed) || seed->valuedouble < 0))) {
            *ret =
                bad(r, temp ? "temperature" : "seed", "temperature is 0 to 2; seed a whole number");
            return false;
        }
        sp->temperature = temp ? (float)temp->valuedouble : 0.7f;
        sp->top_p = 0.95f;
        sp->repetition_penalty = 1.1f;
        if (seed) {
            sp->has_seed = true;
            sp->seed = (uint64_t)seed->valuedouble;
        }
        tr->sampling = sp;
    }
    return true;
}

/* POST {id}/messages {content, parent_id?, upload_ids?, max_tokens?, model?, temperature?,
 * seed?}. parent_id absent: continue the active branch; null: a new first message (editing the
 * first message); an id: continue from that answer (editing a later message). */
static enum MHD_Result post_message(gw *g, http_req *r, const gw_user *u, const char *conv)
{
    enum MHD_Result ret;
    cJSON *b = gw_body_object(r, false, &ret);
    if (!b)
        return ret;
    Parley__V1__ChatTurnRequest tr = PARLEY__V1__CHAT_TURN_REQUEST__INIT;
    Parley__V1__SamplingParams sp = PARLEY__V1__SAMPLING_PARAMS__INIT;
    char *ups[CV_MAX_UPLOADS];
    const cJSON *content = cJSON_GetObjectItemCaseSensitive(b, "content");
    const cJSON *parent = cJSON_GetObjectItemCaseSensitive(b, "parent_id");
    const cJSON *uploads = cJSON_GetObjectItemCaseSensitive(b, "upload_ids");
    if (!cJSON_IsString(content) || !content->valuestring[0] ||
        strlen(content->valuestring) > CV_CONTENT_MAX) {
        cJSON_Delete(b);
        return bad(r, "content", "content is the message text (1 byte to 256 KiB)");
    }
    if (parent && !cJSON_IsNull(parent) &&
        (!cJSON_IsString(parent) || strlen(parent->valuestring) > CV_ID_MAX)) {
        cJSON_Delete(b);
        return bad(r, "parent_id", "parent_id is a message id or null");
    }
    if (uploads) {
        int k = cJSON_GetArraySize(uploads);
        if (!cJSON_IsArray(uploads) || k > CV_MAX_UPLOADS) {
            cJSON_Delete(b);
            return bad(r, "upload_ids", "upload_ids is a list of at most 16 upload ids");
        }
        for (int i = 0; i < k; i++) {
            const cJSON *x = cJSON_GetArrayItem(uploads, i);
            if (!cJSON_IsString(x) || !x->valuestring[0] || strlen(x->valuestring) > CV_ID_MAX) {
                cJSON_Delete(b);
                return bad(r, "upload_ids", "upload_ids holds upload ids (strings)");
            }
            ups[i] = x->valuestring;
        }
        tr.upload_ids = ups;
        tr.n_upload_ids = (size_t)k;
    }
    if (!turn_options(r, b, &tr, &sp, &ret)) {
        cJSON_Delete(b);
        return ret;
    }
    tr.conversation_id = (char *)conv;
    tr.content = content->valuestring;
    tr.parent_id = !parent                ? (char *)""
                   : cJSON_IsNull(parent) ? (char *)"root"
                                          : parent->valuestring;
    ret = send_turn(g, r, u, &tr);
    cJSON_Delete(b);
    return ret;
}

static enum MHD_Result regenerate(gw *g, http_req *r, const gw_user *u, const char *conv,
                                  const char *mid)
{
    enum MHD_Result ret;
    cJSON *b = gw_body_object(r, true, &ret);
    if (!b)
        return ret;
    Parley__V1__HistoryReply *rp = NULL;
    pl_status s = hist(g, r, u, "msg.get", conv, mid, &rp);
    if (s != PL_OK) {
        cJSON_Delete(b);
        return gw_fail(r, s);
    }
    /* An answer is regenerated as a sibling: a new answer to its user message. */
    char parent[CV_ID_MAX + 1];
    const Parley__V1__Message *m = rp->message;
    snprintf(parent, sizeof parent, "%s",
             m->role == PARLEY__V1__ROLE__ROLE_ASSISTANT ? m->parent_id : m->id);
    protobuf_c_message_free_unpacked(&rp->base, NULL);
    Parley__V1__ChatTurnRequest tr = PARLEY__V1__CHAT_TURN_REQUEST__INIT;
    Parley__V1__SamplingParams sp = PARLEY__V1__SAMPLING_PARAMS__INIT;
    if (!turn_options(r, b, &tr, &sp, &ret)) {
        cJSON_Delete(b);
        return ret;
    }
    tr.conversation_id = (char *)conv;
    tr.parent_id = parent;
    tr.regenerate = true;
    ret = send_turn(g, r, u, &tr);
    cJSON_Delete(b);
    return ret;
}

/* POST .../stop: a Cancel for the answer's request, and a stand-in completion record (see
 * chat/persist.c) so that an answer still queued also ends as stopped. */
static enum MHD_Result stop_answer(gw *g, http_req *r, const gw_user *u, const char *conv,
                                   const char *mid)
{
    Parley__V1__HistoryReply *rp = NULL;
    pl_status s = hist(g, r, u, "msg.get", conv, mid, &rp);
    if (s != PL_OK)
        return gw_fail(r, s);
    const Parley__V1__Message *m = rp->message;
    if (m->role != PARLEY__V1__ROLE__ROLE_ASSISTANT) {
        protobuf_c_message_free_unpacked(&rp->base, NULL);
        return bad(r, NULL, "only an answer can be stopped");
    }
    bool pending = m->status == PARLEY__V1__MESSAGE_STATUS__MESSAGE_STATUS_PENDING;
    if (pending && m->request_id && m->request_id[0]) {
        Parley__V1__Cancel c = PARLEY__V1__CANCEL__INIT;
        c.request_id = m->request_id;
        c.reason = (char *)"stopped by the user";
        bus *b = dmn_bus(g->d);
        if (bus_publish_pb(b, SUBJ_CANCEL, &c.base) != PL_OK)
            LOGW(http_request_id(r), "cannot publish the cancel: %s", pl_err_last());
        Parley__V1__CompletionRecord rec = PARLEY__V1__COMPLETION_RECORD__INIT;
        rec.request_id = m->request_id;
        rec.user_id = (char *)u->id;
        rec.model = m->model;
        rec.text = (char *)"";
        rec.finish_reason = PARLEY__V1__FINISH_REASON__FINISH_REASON_CANCELLED;
        rec.conversation_id = (char *)conv;
        rec.message_id = m->id;
        rec.finished_ms = dmn_wall_ms();
        char msgid[96];
        snprintf(msgid, sizeof msgid, "%s:stop", m->request_id);
        if (bus_js_publish_pb(b, SUBJ_COMPLETIONS, &rec.base, msgid, 2000) != PL_OK)
            LOGW(http_request_id(r), "cannot record the stop: %s", pl_err_last());
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", m->id);
    cJSON_AddStringToObject(o, "status", pending ? "stopping" : cvs_status_name(m->status));
    protobuf_c_message_free_unpacked(&rp->base, NULL);
    return cv_send_json(r, pending ? 202 : 200, o, u);
}

static enum MHD_Result switch_branch(gw *g, http_req *r, const gw_user *u, const char *conv,
                                     const char *mid)
{
    Parley__V1__HistoryReply *rp = NULL;
    pl_status s = hist(g, r, u, "msg.switch", conv, mid, &rp);
    if (s != PL_OK)
        return gw_fail(r, s);
    return cv_send_branch(r, rp, u);
}

static enum MHD_Result feedback(gw *g, http_req *r, const gw_user *u, const char *conv,
                                const char *mid)
{
    enum MHD_Result ret;
    cJSON *b = gw_body_object(r, false, &ret);
    if (!b)
        return ret;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(b, "value");
    if (!cJSON_IsNumber(v) ||
        (v->valuedouble != -1 && v->valuedouble != 0 && v->valuedouble != 1)) {
        cJSON_Delete(b);
        return bad(r, "value", "value is -1, 0 or 1");
    }
    int val = (int)v->valuedouble;
    cJSON_Delete(b);
    Parley__V1__HistoryRequest rq = PARLEY__V1__HISTORY_REQUEST__INIT;
    Parley__V1__Conversation c = PARLEY__V1__CONVERSATION__INIT;
    Parley__V1__Message m = PARLEY__V1__MESSAGE__INIT;
    rq.op = (char *)"msg.feedback";
    rq.user_id = (char *)u->id;
    c.id = (char *)conv;
    m.id = (char *)mid;
    m.feedback = val;
    rq.conversation = &c;
    rq.message = &m;
    Parley__V1__HistoryReply *rp = NULL;
    pl_status s = gw_history(g, http_request_id(r), &rq, &rp);
    if (s != PL_OK)
        return gw_fail(r, s);
    protobuf_c_message_free_unpacked(&rp->base, NULL);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", mid);
    cJSON_AddNumberToObject(o, "feedback", val);
    return cv_send_json(r, 200, o, u);
}

static enum MHD_Result route_conv_post(http_req *r, void *arg)
{
    gw *g = arg;
    enum MHD_Result ret;
    gw_user u;
    if (!gw_auth_user(g, r, &u, &ret))
        return ret;
    char parts[4][CV_ID_MAX + 1];
    size_t n;
    if (!split_path(http_path_rest(r), parts, 4, &n) || n < 2)
        return not_found(r);
    const char *conv = parts[0];
    if (n == 2 && strcmp(parts[1], "messages") == 0)
        return post_message(g, r, &u, conv);
    if (n == 2 && strcmp(parts[1], "shares") == 0)
        return cv_share_create(g, r, &u, conv);
    if (n != 4 || strcmp(parts[1], "messages") != 0)
        return not_found(r);
    const char *mid = parts[2], *action = parts[3];
    if (strcmp(action, "stop") == 0)
        return stop_answer(g, r, &u, conv, mid);
    if (strcmp(action, "regenerate") == 0)
        return regenerate(g, r, &u, conv, mid);
    if (strcmp(action, "switch") == 0)
        return switch_branch(g, r, &u, conv, mid);
    if (strcmp(action, "feedback") == 0)
        return feedback(g, r, &u, conv, mid);
    return not_found(r);
}

const http_route gw_routes_convs[] = {
    {"POST", "/api/v1/conversations", route_create, NULL},
    {"GET", "/api/v1/conversations", route_list, NULL},
    {"GET", "/api/v1/conversations/search", route_search, NULL},
    {"GET", "/api/v1/conversations/*", route_conv_get, NULL},
    {"PATCH", "/api/v1/conversations/*", route_conv_patch, NULL},
    {"DELETE", "/api/v1/conversations/*", route_conv_delete, NULL},
    {"POST", "/api/v1/conversations/*", route_conv_post, NULL},
    {"GET", "/api/v1/shares", cv_route_shares_list, NULL},
    {"DELETE", "/api/v1/shares/*", cv_route_share_revoke, NULL},
    {"GET", "/s/*", cv_route_public_share, NULL},
    {"POST", "/api/v1/uploads", cv_route_upload, NULL},
    {"GET", "/api/v1/models", route_models, NULL},
};
const size_t gw_n_routes_convs = sizeof gw_routes_convs / sizeof gw_routes_convs[0];
