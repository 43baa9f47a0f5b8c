/* admin_safety.c — the administrators' safety views of the product API:
 *
 *   GET  /api/v1/admin/safety/conversations?limit=&unreviewed=   conversations with flagged
 *        verdicts (action flag or block), most recently flagged first
 *   GET  /api/v1/admin/safety/conversations/{id}   its flagged verdicts and the messages they
 *        judged
 *   POST /api/v1/admin/safety/verdicts/{id}/review   marks a verdict reviewed
 *
 * Every route requires an administrator (403 for everyone else, as history also checks): users
 * never see safety verdicts, their own or anyone else's. The verdicts are stored by
 * parley-safety through history ("safety.*" ops, services/history/ops_safety.c). Handlers run
 * on MHD pool threads and block on one history request each. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "product.h"

static bool safety_admin(gw *g, http_req *r, gw_user *u, enum MHD_Result *ret)
{
    if (!gw_auth_user(g, r, u, ret))
        return false;
    if (u->is_admin)
        return true;
    *ret = http_reply_error(r, 403, "administrators only", NULL, "forbidden", 0);
    return false;
}

static const char *action_name(Parley__V1__SafetyAction a)
{
    switch (a) {
    case PARLEY__V1__SAFETY_ACTION__SAFETY_ACTION_RECORD:
        return "record";
    case PARLEY__V1__SAFETY_ACTION__SAFETY_ACTION_FLAG:
        return "flag";
    case PARLEY__V1__SAFETY_ACTION__SAFETY_ACTION_BLOCK:
        return "block";
    default:
        return "none";
    }
}

static const char *role_name(Parley__V1__Role r)
{
    switch (r) {
    case PARLEY__V1__ROLE__ROLE_USER:
        return "user";
    case PARLEY__V1__ROLE__ROLE_ASSISTANT:
        return "assistant";
    case PARLEY__V1__ROLE__ROLE_SYSTEM:
        return "system";
    default:
        return "unknown";
    }
}

static const char *str(const char *s)
{
    return s ? s : "";
}

static cJSON *verdict_json(const Parley__V1__SafetyVerdict *v)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", str(v->id));
    cJSON_AddStringToObject(o, "object", "safety.verdict");
    cJSON_AddStringToObject(o, "event_id", str(v->event_id));
    if (v->message_id && v->message_id[0])
        cJSON_AddStringToObject(o, "message_id", v->message_id);
    else
        cJSON_AddNullToObject(o, "message_id");
    cJSON_AddStringToObject(o, "conversation_id", str(v->conversation_id));
    cJSON_AddStringToObject(o, "user_id", str(v->user_id));
    cJSON_AddStringToObject(o, "category", str(v->category));
    cJSON_AddNumberToObject(o, "score", (double)(int)(v->score * 1000 + 0.5) / 1000);
    cJSON_AddStringToObject(o, "action", action_name(v->action));
    cJSON_AddStringToObject(o, "classifier", str(v->classifier));
    cJSON_AddStringToObject(o, "detail", str(v->detail));
    gw_add_time(o, "decided_at", v->decided_ms);
    gw_add_time(o, "reviewed_at", v->reviewed_ms);
    if (v->reviewed_by && v->reviewed_by[0])
        cJSON_AddStringToObject(o, "reviewed_by", v->reviewed_by);
    else
        cJSON_AddNullToObject(o, "reviewed_by");
    return o;
}

/* GET /api/v1/admin/safety/conversations */
static enum MHD_Result route_flagged(http_req *r, void *arg)
{
    gw *g = arg;
    gw_user u;
    enum MHD_Result ret;
    if (!safety_admin(g, r, &u, &ret))
        return ret;
    unsigned long limit = 50;
    const char *l = http_query(r, "limit");
    if (l && *l) {
        char *end;
        limit = strtoul(l, &end, 10);
        if (*end || *l < '0' || *l > '9' || limit < 1 || limit > 200)
            return http_reply_error(r, 400, "limit must be a whole number from 1 to 200", "limit",
                                    "invalid_request", 0);
    }
    const char *un = http_query(r, "unreviewed");
    bool unreviewed = false;
    if (un && *un) {
        if (strcmp(un, "true") == 0)
            unreviewed = true;
        else if (strcmp(un, "false") != 0)
            return http_reply_error(r, 400, "unreviewed is true or false", "unreviewed",
                                    "invalid_request", 0);
    }
    Parley__V1__HistoryRequest rq = PARLEY__V1__HISTORY_REQUEST__INIT;
    Parley__V1__HistoryReply *rep = NULL;
    rq.op = "safety.flagged";
    rq.user_id = u.id;
    rq.limit = (uint32_t)limit;
    rq.flag = unreviewed;
    pl_status s = gw_history(g, http_request_id(r), &rq, &rep);
    if (s != PL_OK)
        return gw_fail(r, s);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "object", "list");
    cJSON *data = cJSON_AddArrayToObject(o, "data");
    for (size_t i = 0; i < rep->n_flagged; i++) {
        const Parley__V1__SafetyFlagged *f = rep->flagged[i];
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "conversation_id", str(f->conversation_id));
        cJSON_AddStringToObject(e, "object", "safety.flagged_conversation");
        cJSON_AddStringToObject(e, "user_id", str(f->user_id));
        cJSON_AddStringToObject(e, "email", str(f->email));
        cJSON_AddStringToObject(e, "title", str(f->title));
        cJSON_AddNumberToObject(e, "flagged", f->flagged);
        cJSON_AddNumberToObject(e, "unreviewed", f->unreviewed);
        gw_add_time(e, "last_flagged_at", f->last_flagged_ms);
        cJSON_AddItemToArray(data, e);
    }
    protobuf_c_message_free_unpacked(&rep->base, NULL);
    return gw_send_json(r, 200, o, u.has_quota ? &u.quota : NULL, NULL);
}

/* An id from the path: 1..64 characters of [A-Za-z0-9_-], copied into out[65]; else false. */
static bool path_word(const char *s, size_t n, char out[65])
{
    if (n == 0 || n > 64)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-'))
            return false;
    }
    memcpy(out, s, n);
    out[n] = '\0';
    return true;
}

/* GET /api/v1/admin/safety/conversations/{id} */
static enum MHD_Result route_conversation(http_req *r, void *arg)
{
    gw *g = arg;
    gw_user u;
    enum MHD_Result ret;
    if (!safety_admin(g, r, &u, &ret))
        return ret;
    const char *rest = http_path_rest(r);
    char id[65];
    if (!path_word(rest, strlen(rest), id))
        return http_reply_error(r, 404, "no flagged verdict in this conversation", NULL,
                                "not_found", 0);
    Parley__V1__HistoryRequest rq = PARLEY__V1__HISTORY_REQUEST__INIT;
    Parley__V1__Conversation cv = PARLEY__V1__CONVERSATION__INIT;
    Parley__V1__HistoryReply *rep = NULL;
    cv.id = id;
    rq.op = "safety.messages";
    rq.user_id = u.id;
    rq.conversation = &cv;
    pl_status s = gw_history(g, http_request_id(r), &rq, &rep);
    if (s != PL_OK)
        return gw_fail(r, s);
    cJSON *o = cJSON_CreateObject();
    cJSON *c = cJSON_AddObjectToObject(o, "conversation");
    cJSON_AddStringToObject(c, "id", id);
    cJSON_AddStringToObject(c, "user_id", rep->conversation ? str(rep->conversation->user_id) : "");
    cJSON_AddStringToObject(c, "title", rep->conversation ? str(rep->conversation->title) : "");
    cJSON *msgs = cJSON_AddArrayToObject(o, "messages");
    for (size_t i = 0; i < rep->n_messages; i++) {
        const Parley__V1__Message *m = rep->messages[i];
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "id", str(m->id));
        cJSON_AddStringToObject(e, "role", role_name(m->role));
        cJSON_AddStringToObject(e, "content", str(m->content));
        cJSON_AddStringToObject(e, "model", str(m->model));
        gw_add_time(e, "created_at", m->created_ms);
        cJSON_AddItemToArray(msgs, e);
    }
    cJSON *vs = cJSON_AddArrayToObject(o, "verdicts");
    for (size_t i = 0; i < rep->n_verdicts; i++)
        cJSON_AddItemToArray(vs, verdict_json(rep->verdicts[i]));
    protobuf_c_message_free_unpacked(&rep->base, NULL);
    return gw_send_json(r, 200, o, u.has_quota ? &u.quota : NULL, NULL);
}

/* POST /api/v1/admin/safety/verdicts/{id}/review */
static enum MHD_Result route_review(http_req *r, void *arg)
{
    gw *g = arg;
    gw_user u;
    enum MHD_Result ret;
    if (!safety_admin(g, r, &u, &ret))
        return ret;
    const char *rest = http_path_rest(r);
    const char *slash = strchr(rest, '/');
    char id[65];
    if (!slash || strcmp(slash, "/review") != 0 || !path_word(rest, (size_t)(slash - rest), id))
        return http_reply_error(r, 404, "no such verdict", NULL, "not_found", 0);
    Parley__V1__HistoryRequest rq = PARLEY__V1__HISTORY_REQUEST__INIT;
    Parley__V1__SafetyVerdict v = PARLEY__V1__SAFETY_VERDICT__INIT;
    Parley__V1__HistoryReply *rep = NULL;
    v.id = id;
    rq.op = "safety.review";
    rq.user_id = u.id;
    rq.verdict = &v;
    pl_status s = gw_history(g, http_request_id(r), &rq, &rep);
    if (s != PL_OK)
        return gw_fail(r, s);
    cJSON *o = cJSON_CreateObject();
    if (rep->n_verdicts)
        cJSON_AddItemToObject(o, "verdict", verdict_json(rep->verdicts[0]));
    protobuf_c_message_free_unpacked(&rep->base, NULL);
    return gw_send_json(r, 200, o, u.has_quota ? &u.quota : NULL, NULL);
}

const http_route gw_routes_safety[] = {
    {"GET", "/api/v1/admin/safety/conversations", route_flagged, NULL},
    {"GET", "/api/v1/admin/safety/conversations/*", route_conversation, NULL},
    {"POST", "/api/v1/admin/safety/verdicts/*", route_review, NULL},
};
const size_t gw_n_routes_safety = sizeof gw_routes_safety / sizeof gw_routes_safety[0];
