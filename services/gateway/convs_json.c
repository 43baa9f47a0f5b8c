/* convs_json.c — the JSON text of a conversation opened with its active branch, written
 * straight from the history reply with the streaming writer (jsonw.h) instead of a cJSON tree:
 * opening a 1,000-message conversation spent most of its time in the tree's ~15,000 node and
 * string allocations. The shape is the one docs/api-conversations.md and docs/openapi.json
 * describe (Conversation + active_leaf_id + messages[]). Stateless, thread-safe. */
#include <string.h>

#include "convs.h"
#include "convs_stream.h"
#include "jsonw.h"
#include "viewcache.h"

static const char *role_text(Parley__V1__Role r)
{
    return r == PARLEY__V1__ROLE__ROLE_USER        ? "user"
           : r == PARLEY__V1__ROLE__ROLE_ASSISTANT ? "assistant"
           : r == PARLEY__V1__ROLE__ROLE_SYSTEM    ? "system"
                                                   : "unknown";
}

static const char *or_empty(const char *s)
{
    return s ? s : "";
}

/* One message object. */
static void message(jw *w, const Parley__V1__Message *m)
{
    jw_obj_begin(w);
    jw_kstr(w, "id", m->id);
    jw_kstr(w, "parent_id", m->parent_id && m->parent_id[0] ? m->parent_id : NULL);
    jw_kstr(w, "role", role_text(m->role));
    jw_kstr(w, "content", or_empty(m->content));
    jw_kstr(w, "status", cvs_status_name(m->status));
    jw_kint(w, "sibling_index", m->sibling_index);
    jw_kint(w, "sibling_count", m->sibling_count);
    jw_kstr(w, "model", or_empty(m->model));
    jw_key(w, "created_at");
    jw_time(w, m->created_ms);
    jw_kint(w, "feedback", m->feedback);
    jw_key(w, "sibling_ids");
    jw_arr_begin(w);
    if (m->n_sibling_ids == 0)
        jw_str(w, m->id);
    for (size_t i = 0; i < m->n_sibling_ids; i++)
        jw_str(w, m->sibling_ids[i]);
    jw_arr_end(w);
    jw_key(w, "upload_ids");
    jw_arr_begin(w);
    for (size_t i = 0; i < m->n_upload_ids; i++)
        jw_str(w, m->upload_ids[i]);
    jw_arr_end(w);
    if (m->role == PARLEY__V1__ROLE__ROLE_ASSISTANT) {
        jw_key(w, "usage");
        jw_obj_begin(w);
        jw_kint(w, "prompt_tokens", m->usage ? m->usage->prompt_tokens : 0);
        jw_kint(w, "completion_tokens", m->usage ? m->usage->completion_tokens : 0);
        jw_obj_end(w);
    }
    if (m->error && m->error[0])
        jw_kstr(w, "error", m->error);
    jw_obj_end(w);
}

char *cv_branch_text(const Parley__V1__HistoryReply *rp, size_t *len)
{
    const Parley__V1__Conversation *c = rp->conversation;
    if (!c)
        return NULL;
    size_t hint = 512;
    for (size_t i = 0; i < rp->n_messages; i++)
        hint += 320 + (rp->messages[i]->content ? strlen(rp->messages[i]->content) : 0);
    jw w;
    jw_init(&w, hint + hint / 8);
    jw_obj_begin(&w);
    jw_kstr(&w, "id", c->id);
    jw_kstr(&w, "object", "conversation");
    jw_kstr(&w, "title", or_empty(c->title));
    jw_kstr(&w, "model", or_empty(c->model));
    jw_key(&w, "created_at");
    jw_time(&w, c->created_ms);
    jw_key(&w, "updated_at");
    jw_time(&w, c->updated_ms);
    jw_kstr(&w, "active_leaf_id",
            c->active_leaf_id && c->active_leaf_id[0] ? c->active_leaf_id : NULL);
    jw_key(&w, "messages");
    jw_arr_begin(&w);
    for (size_t i = 0; i < rp->n_messages; i++)
        message(&w, rp->messages[i]);
    jw_arr_end(&w);
    jw_obj_end(&w);
    return jw_finish(&w, len);
}

enum MHD_Result cv_send_branch(http_req *r, Parley__V1__HistoryReply *rp, const gw_user *u)
{
    size_t len = 0;
    char *text = cv_branch_text(rp, &len);
    protobuf_c_message_free_unpacked(&rp->base, NULL);
    if (!text)
        return http_reply_error(r, 500, "out of memory", NULL, "server_error", 0);
    return gw_send_text(r, 200, text, len, u && u->has_quota ? &u->quota : NULL, NULL);
}

enum MHD_Result cv_open(gw *g, http_req *r, const gw_user *u, const char *conv)
{
    char held[72] = "";
    bool have = viewcache_version(g->view_cache, u->id, conv, held, sizeof held);
    Parley__V1__HistoryRequest rq = PARLEY__V1__HISTORY_REQUEST__INIT;
    Parley__V1__Conversation c = PARLEY__V1__CONVERSATION__INIT;
    rq.op = "conv.get";
    rq.user_id = (char *)u->id;
    c.id = (char *)conv;
    rq.conversation = &c;
    rq.if_version = have ? held : NULL;
    Parley__V1__HistoryReply *rp = NULL;
    pl_status s = gw_history(g, http_request_id(r), &rq, &rp);
    if (s != PL_OK)
        return gw_fail(r, s);
    const Parley__V1__Quota *q = u->has_quota ? &u->quota : NULL;
    size_t len = 0;
    char *text = NULL;
    if (rp->not_modified) {
        text = viewcache_take(g->view_cache, u->id, conv, rp->version, &len);
        met_inc(met_with(g->m_view_cache, text ? "hit" : "lost", NULL), 1);
        protobuf_c_message_free_unpacked(&rp->base, NULL);
        if (text)
            return gw_send_text(r, 200, text, len, q, NULL);
        /* Evicted meanwhile: ask again for the whole view. */
        rq.if_version = NULL;
        if ((s = gw_history(g, http_request_id(r), &rq, &rp)) != PL_OK)
            return gw_fail(r, s);
    } else if (g->view_cache) {
        met_inc(met_with(g->m_view_cache, "miss", NULL), 1);
    }
    text = cv_branch_text(rp, &len);
    if (text && rp->version && rp->version[0])
        viewcache_put(g->view_cache, u->id, conv, rp->version, text, len);
    protobuf_c_message_free_unpacked(&rp->base, NULL);
    if (!text)
        return http_reply_error(r, 500, "out of memory", NULL, "server_error", 0);
    return gw_send_text(r, 200, text, len, q, NULL);
}
