/* ops_convs.c — history operations on conversations and messages (see ops.h, protocol.md).
 *
 * Ops: conv.create, conv.list, conv.get, conv.rename, conv.set_model, conv.delete,
 * conv.search, msg.get, msg.turn, msg.complete, msg.switch, msg.feedback, context.get,
 * sweep.pending; the table at the end also lists the share and upload ops of ops_shares.c.
 *
 * Every query is scoped to rq->user_id (someone else's object answers PL_NOT_FOUND, like a
 * missing one), except sweep.pending, a maintenance op of the chat daemon. Branch questions
 * (the active chain, sibling positions, the newest leaf under a message) are answered by
 * convtree.c on the conversation's rows loaded in one query.
 *
 * The context cache (Redis, through cache.h): context.get reads a conversation's chain from a
 * key named after its leaf message, "parley:ctx:<user>:<conv>:<leaf>", holding a packed
 * HistoryReply (messages root → leaf, at most HSC_CTX_MAX of the newest, and the uploads
 * attached to them). A chain to a given leaf never changes except when a pending message in it
 * is completed, so: msg.turn derives the new leaf's entry from its parent's (append, no
 * database read), msg.complete rewrites the entry of the message it completed, and an entry
 * that still holds a pending message is treated as a miss. Entries expire after an hour.
 * Redis failures are logged at debug level and ignored: every answer can come from PostgreSQL.
 *
 * The view cache (Redis too): conv.get's answer per conversation under a version key that
 * every change to the conversation replaces; see view_get below.
 *
 * Threading: ops run on libnats threads, each with its own pooled connection and arena. */
#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "ops_convs.h"

#define HSC_CTX_MAX        200        /* messages kept in a context entry */
#define HSC_CTX_MAX_BYTES  (2u << 20) /* larger entries are not cached */
#define HSC_CTX_TTL_S      3600
#define HSC_VIEW_TTL_S     600 /* conv.get views (see view_get) */
#define HSC_VIEW_MAX_BYTES (8u << 20)
#define HSC_VER_TTL_S      86400
#define HSC_VER_CAP        40
#define HSC_TITLE_MAX      300        /* bytes */
#define HSC_CONTENT_MAX    (1u << 20) /* bytes of one message */
#define HSC_LIST_DEFAULT   20
#define HSC_LIST_MAX       100
#define HSC_MAX_UPLOADS    16

#define HSC_CONV_COLS                                                                              \
    "id, title, model, coalesce(active_leaf_id, ''),"                                              \
    " (extract(epoch FROM created_at) * 1000)::bigint,"                                            \
    " (extract(epoch FROM updated_at) * 1000)::bigint"

#define HSC_MSG_COLS                                                                               \
    "id, coalesce(parent_id, ''), role, content, status, model, coalesce(request_id, ''),"         \
    " error, feedback, prompt_tokens, completion_tokens,"                                          \
    " (extract(epoch FROM created_at) * 1000)::bigint"

/* --- shared helpers (ops_convs.h) ---------------------------------------------------------- */

pl_status hsc_need_user(const Parley__V1__HistoryRequest *rq)
{
    if (!rq->user_id || !rq->user_id[0])
        return PL_ERRF(PL_INVALID, "%s needs the acting user", rq->op);
    return PL_OK;
}

const char *hsc_i64(char buf[24], int64_t v)
{
    snprintf(buf, 24, "%lld", (long long)v);
    return buf;
}

static bool is_id(const char *s)
{
    if (!s || !*s || strlen(s) > 64)
        return false;
    for (; *s; s++)
        if (!isxdigit((unsigned char)*s))
            return false;
    return true;
}

char *hsc_id_array(hs_arena *a, char *const *ids, size_t n)
{
    size_t need = 3;
    for (size_t i = 0; i < n; i++)
        need += strlen(ids[i] ? ids[i] : "") + 1;
    char *out = hs_alloc(a, need);
    if (!out)
        return NULL;
    char *w = out;
    *w++ = '{';
    bool first = true;
    for (size_t i = 0; i < n; i++) {
        if (!is_id(ids[i]))
            continue;
        if (!first)
            *w++ = ',';
        first = false;
        size_t k = strlen(ids[i]);
        memcpy(w, ids[i], k);
        w += k;
    }
    *w++ = '}';
    *w = '\0';
    return out;
}

static Parley__V1__Conversation *conv_from_row(hs_arena *a, const PGresult *r, int i)
{
    Parley__V1__Conversation *c = hs_alloc(a, sizeof *c);
    if (!c)
        return NULL;
    parley__v1__conversation__init(c);
    c->id = hs_strdup(a, PQgetvalue(r, i, 0));
    c->title = hs_strdup(a, PQgetvalue(r, i, 1));
    c->model = hs_strdup(a, PQgetvalue(r, i, 2));
    c->active_leaf_id = hs_strdup(a, PQgetvalue(r, i, 3));
    c->created_ms = strtoll(PQgetvalue(r, i, 4), NULL, 10);
    c->updated_ms = strtoll(PQgetvalue(r, i, 5), NULL, 10);
    if (!c->id || !c->title || !c->model || !c->active_leaf_id)
        return NULL;
    return c;
}

pl_status hsc_conv_get(PGconn *c, const char *user, const char *id, hs_arena *a,
                       Parley__V1__Conversation **out)
{
    const char *p[] = {user, id ? id : ""};
    PGresult *r = NULL;
    pl_status s = db_exec(
        c, "SELECT " HSC_CONV_COLS " FROM conversations WHERE user_id = $1 AND id = $2", 2, p, &r);
    if (s != PL_OK)
        return s;
    if (PQntuples(r) == 0) {
        PQclear(r);
        return PL_ERRF(PL_NOT_FOUND, "conversation not found");
    }
    *out = conv_from_row(a, r, 0);
    PQclear(r);
    return *out ? PL_OK : PL_ERRF(PL_NOMEM, "out of memory");
}

/* Appends `m` to rp->messages, growing the array in the arena (capacity doubles). */
static pl_status push_message(hs_arena *a, Parley__V1__HistoryReply *rp, size_t *cap,
                              Parley__V1__Message *m)
{
    if (!m)
        return PL_ERRF(PL_NOMEM, "out of memory");
    if (rp->n_messages == *cap) {
        size_t nc = *cap ? *cap * 2 : 16;
        Parley__V1__Message **v = hs_alloc(a, nc * sizeof *v);
        if (!v)
            return PL_ERRF(PL_NOMEM, "out of memory");
        if (rp->n_messages)
            memcpy(v, rp->messages, rp->n_messages * sizeof *v);
        rp->messages = v;
        *cap = nc;
    }
    rp->messages[rp->n_messages++] = m;
    return PL_OK;
}

pl_status hsc_fill_branch(PGconn *c, const char *user, const char *conv, const ct_tree *tree,
                          int leaf, Parley__V1__HistoryReply *rp, hs_arena *a)
{
    size_t n = ct_count(tree);
    int *chain = hs_alloc(a, (n ? n : 1) * sizeof *chain);
    if (!chain)
        return PL_ERRF(PL_NOMEM, "out of memory");
    size_t k = ct_chain(tree, leaf, chain, n, NULL);
    size_t cap = 0, first = rp->n_messages;
    for (size_t i = 0; i < k; i++) {
        pl_status s = push_message(a, rp, &cap, ct_message(tree, chain[i], conv, a));
        if (s != PL_OK)
            return s;
    }
    if (k == 0)
        return PL_OK;
    /* Upload ids per message, in one query over the conversation (joining is cheaper than
     * passing the chain's ids as an array: parsing a 1,000-element array dominated it). */
    const char *p[] = {user, conv};
    PGresult *r = NULL;
    pl_status s = db_exec(c,
                          "SELECT u.message_id, u.id FROM uploads u JOIN messages m"
                          " ON m.user_id = u.user_id AND m.id = u.message_id"
                          " WHERE u.user_id = $1 AND m.conversation_id = $2"
                          " ORDER BY u.created_at, u.id",
                          2, p, &r);
    if (s != PL_OK)
        return s;
    for (int row = 0; row < PQntuples(r); row++) {
        const char *mid = PQgetvalue(r, row, 0);
        for (size_t i = first; i < rp->n_messages; i++) {
            Parley__V1__Message *m = rp->messages[i];
            if (strcmp(m->id, mid) != 0)
                continue;
            char **v = hs_alloc(a, (m->n_upload_ids + 1) * sizeof *v);
            if (!v) {
                PQclear(r);
                return PL_ERRF(PL_NOMEM, "out of memory");
            }
            if (m->n_upload_ids)
                memcpy(v, m->upload_ids, m->n_upload_ids * sizeof *v);
            v[m->n_upload_ids++] = hs_strdup(a, PQgetvalue(r, row, 1));
            m->upload_ids = v;
        }
    }
    PQclear(r);
    return PL_OK;
}

/* Protobuf allocations in the op's arena (unpacking cached entries). */
static void *pb_arena_alloc(void *d, size_t n)
{
    return hs_alloc(d, n);
}

static void pb_arena_free(void *d, void *p)
{
    (void)d;
    (void)p; /* freed with the arena */
}

/* --- the conversation view cache ------------------------------------------------------------ */

/* conv.get's answer (the conversation and its active branch) for one (user, conversation),
 * packed, under "parley:conv:<user>:<conv>:<version>". The version, a random id at
 * "parley:convver:<user>:<conv>", is replaced by every op that changes what conv.get shows
 * (view_bump, after its write is committed), so no entry is ever updated or deleted: readers
 * simply stop finding old versions, which expire. A reader takes the version before it reads
 * PostgreSQL and stores what it read under that version, so a write that lands in between
 * (and bumps afterwards) can never hide behind a stale entry. A view holding a pending answer
 * is not stored (it is about to change). Redis failures make misses, never errors. */

static void view_keys(char *ver_key, char *view_key, size_t cap, const char *user, const char *conv,
                      const char *ver)
{
    snprintf(ver_key, cap, "parley:convver:%s:%s", user, conv);
    if (view_key)
        snprintf(view_key, cap, "parley:conv:%s:%s:%s", user, conv, ver ? ver : "");
}

/* The cached view, packed (malloc'd, *len bytes; the caller frees), or NULL; `ver` receives
 * the current version to store a fresh view under ("" when Redis is unusable: do not store). */
static char *view_get(hs_env *e, const char *user, const char *conv, hs_arena *a,
                      char ver[HSC_VER_CAP], size_t *len)
{
    ver[0] = '\0';
    if (!e->cache || !is_id(conv))
        return NULL;
    char vk[256], key[256];
    view_keys(vk, NULL, sizeof vk, user, conv, NULL);
    char *val = NULL;
    pl_status s = cache_get(e->cache, vk, &val, len);
    if (s == PL_NOT_FOUND) {
        const char *nv = hs_new_id(a);
        if (!nv || cache_set(e->cache, vk, nv, strlen(nv), HSC_VER_TTL_S) != PL_OK)
            return NULL;
        snprintf(ver, HSC_VER_CAP, "%s", nv);
        return NULL;
    }
    if (s != PL_OK || *len >= HSC_VER_CAP) {
        free(val);
        return NULL;
    }
    memcpy(ver, val, *len);
    ver[*len] = '\0';
    free(val);
    val = NULL;
    view_keys(vk, key, sizeof key, user, conv, ver);
    if (cache_get(e->cache, key, &val, len) != PL_OK || *len == 0) {
        free(val);
        return NULL;
    }
    return val;
}

/* Stores the view of `rp` under `ver`; true when it is stored (so `ver` names it). */
static bool view_put(hs_env *e, const char *user, const char *conv, const char *ver,
                     const Parley__V1__HistoryReply *rp)
{
    if (!e->cache || !ver[0])
        return false;
    for (size_t i = 0; i < rp->n_messages; i++)
        if (rp->messages[i]->status == PARLEY__V1__MESSAGE_STATUS__MESSAGE_STATUS_PENDING)
            return false;
    Parley__V1__HistoryReply v = PARLEY__V1__HISTORY_REPLY__INIT;
    v.conversation = rp->conversation;
    v.messages = rp->messages;
    v.n_messages = rp->n_messages;
    size_t len = parley__v1__history_reply__get_packed_size(&v);
    if (len > HSC_VIEW_MAX_BYTES)
        return false;
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf)
        return false;
    parley__v1__history_reply__pack(&v, buf);
    char vk[256], key[256];
    view_keys(vk, key, sizeof key, user, conv, ver);
    bool stored = cache_set(e->cache, key, buf, len, HSC_VIEW_TTL_S) == PL_OK;
    if (!stored)
        LOGD(NULL, "view cache set: %s", pl_err_last());
    free(buf);
    return stored;
}

/* After a committed change to conversation `conv` of `user`: cached views stop being found. */
static void view_bump(hs_env *e, const char *user, const char *conv, hs_arena *a)
{
    if (!e->cache || !conv || !conv[0])
        return;
    char vk[256];
    view_keys(vk, NULL, sizeof vk, user, conv, NULL);
    const char *nv = hs_new_id(a);
    /* Without a new version, at least drop the pointer to the old one. */
    if (!nv || cache_set(e->cache, vk, nv, strlen(nv), HSC_VER_TTL_S) != PL_OK) {
        if (cache_del(e->cache, vk) != PL_OK)
            LOGW(NULL, "view cache: could not retire the cached view of %s: %s", conv,
                 pl_err_last());
    }
}

/* --- conversations --------------------------------------------------------------------------- */

static pl_status check_title(const char *t)
{
    if (t && strlen(t) > HSC_TITLE_MAX)
        return PL_ERRF(PL_INVALID, "the title is longer than %u bytes", HSC_TITLE_MAX);
    return PL_OK;
}

/* "conv.create": conversation.title / .model (both optional) → reply.conversation. */
static pl_status op_conv_create(hs_env *e, const Parley__V1__HistoryRequest *rq,
                                Parley__V1__HistoryReply *rp, hs_arena *a)
{
    pl_status s = hsc_need_user(rq);
    const Parley__V1__Conversation *in = rq->conversation;
    if (s == PL_OK)
        s = check_title(in ? in->title : NULL);
    if (s != PL_OK)
        return s;
    char *id = hs_new_id(a);
    if (!id)
        return PL_ERRF(PL_NOMEM, "out of memory");
    PGconn *c = NULL;
    if ((s = hs_conn(e, &c)) != PL_OK)
        return s;
    const char *p[] = {rq->user_id, id, in && in->title ? in->title : "",
                       in && in->model ? in->model : ""};
    PGresult *r = NULL;
    s = db_exec(c,
                "INSERT INTO conversations (user_id, id, title, model) VALUES ($1, $2, $3, $4)"
                " RETURNING " HSC_CONV_COLS,
                4, p, &r);
    if (s == PL_OK) {
        rp->conversation = conv_from_row(a, r, 0);
        PQclear(r);
        if (!rp->conversation)
            s = PL_ERRF(PL_NOMEM, "out of memory");
    }
    hs_release(e, c);
    return s;
}

/* The list cursor: "<updated_at in unix microseconds>.<id>" of the last row of a page. */
static bool parse_cursor(const char *cur, char *micros, size_t mcap, const char **id)
{
    const char *dot = strchr(cur, '.');
    if (!dot || dot == cur || (size_t)(dot - cur) >= mcap || !is_id(dot + 1))
        return false;
    for (const char *p = cur; p < dot; p++)
        if (!isdigit((unsigned char)*p))
            return false;
    memcpy(micros, cur, (size_t)(dot - cur));
    micros[dot - cur] = '\0';
    *id = dot + 1;
    return true;
}

static pl_status fill_conversations(hs_arena *a, PGresult *r, int n, Parley__V1__HistoryReply *rp)
{
    rp->conversations = hs_alloc(a, (n ? (size_t)n : 1) * sizeof *rp->conversations);
    if (!rp->conversations)
        return PL_ERRF(PL_NOMEM, "out of memory");
    for (int i = 0; i < n; i++) {
        if (!(rp->conversations[i] = conv_from_row(a, r, i)))
            return PL_ERRF(PL_NOMEM, "out of memory");
        rp->n_conversations++;
    }
    return PL_OK;
}

/* "conv.list": cursor, limit → conversations (newest activity first; titles and times, never
 * message bodies), next_cursor ("" on the last page). */
static pl_status op_conv_list(hs_env *e, const Parley__V1__HistoryRequest *rq,
                              Parley__V1__HistoryReply *rp, hs_arena *a)
{
    pl_status s = hsc_need_user(rq);
    if (s != PL_OK)
        return s;
    uint32_t limit = rq->limit ? rq->limit : HSC_LIST_DEFAULT;
    if (limit > HSC_LIST_MAX)
        limit = HSC_LIST_MAX;
    char micros[24] = "", lim[24];
    const char *after_id = NULL;
    bool paged = rq->cursor && rq->cursor[0];
    if (paged && !parse_cursor(rq->cursor, micros, sizeof micros, &after_id))
        return PL_ERRF(PL_INVALID, "the cursor is not valid");
    hsc_i64(lim, (int64_t)limit + 1);
    PGconn *c = NULL;
    if ((s = hs_conn(e, &c)) != PL_OK)
        return s;
    PGresult *r = NULL;
    if (paged) {
        const char *p[] = {rq->user_id, micros, after_id, lim};
        s = db_exec(c,
                    "SELECT " HSC_CONV_COLS ", (extract(epoch FROM updated_at) * 1000000)::bigint"
                    " FROM conversations WHERE user_id = $1 AND (updated_at, id) <"
                    " ('epoch'::timestamptz + $2::bigint * interval '1 microsecond', $3)"
                    " ORDER BY updated_at DESC, id DESC LIMIT $4::int",
                    4, p, &r);
    } else {
        const char *p[] = {rq->user_id, lim};
        s = db_exec(c,
                    "SELECT " HSC_CONV_COLS ", (extract(epoch FROM updated_at) * 1000000)::bigint"
                    " FROM conversations WHERE user_id = $1"
                    " ORDER BY updated_at DESC, id DESC LIMIT $2::int",
                    2, p, &r);
    }
    hs_release(e, c);
    if (s != PL_OK)
        return s;
    int n = PQntuples(r);
    bool more = n > (int)limit;
    if (more)
        n = (int)limit;
    s = fill_conversations(a, r, n, rp);
    if (s == PL_OK && more) {
        char cur[128];
        snprintf(cur, sizeof cur, "%s.%s", PQgetvalue(r, n - 1, 6), PQgetvalue(r, n - 1, 0));
        rp->next_cursor = hs_strdup(a, cur);
    }
    PQclear(r);
    return s;
}

/* "conv.search": query, limit → conversations whose title or any message matches (PostgreSQL
 * full text, 'simple' configuration, web-search syntax), or whose title contains the query. */
static pl_status op_conv_search(hs_env *e, const Parley__V1__HistoryRequest *rq,
                                Parley__V1__HistoryReply *rp, hs_arena *a)
{
    pl_status s = hsc_need_user(rq);
    if (s != PL_OK)
        return s;
    if (!rq->query || !rq->query[0] || strlen(rq->query) > 500)
        return PL_ERRF(PL_INVALID, "the search needs a query of 1 to 500 bytes");
    uint32_t limit = rq->limit ? rq->limit : HSC_LIST_DEFAULT;
    if (limit > HSC_LIST_MAX)
        limit = HSC_LIST_MAX;
    char lim[24];
    const char *p[] = {rq->user_id, rq->query, hsc_i64(lim, limit)};
    PGresult *r = NULL;
    s = hs_query(e,
                 "WITH q AS (SELECT websearch_to_tsquery('simple', $2) AS q)"
                 " SELECT c.id, c.title, c.model, coalesce(c.active_leaf_id, ''),"
                 " (extract(epoch FROM c.created_at) * 1000)::bigint,"
                 " (extract(epoch FROM c.updated_at) * 1000)::bigint"
                 " FROM conversations c, q WHERE c.user_id = $1 AND ("
                 "  strpos(lower(c.title), lower($2)) > 0"
                 "  OR to_tsvector('simple', c.title) @@ q.q"
                 "  OR EXISTS (SELECT 1 FROM messages m WHERE m.user_id = $1"
                 "             AND m.conversation_id = c.id AND m.search @@ q.q))"
                 " ORDER BY c.updated_at DESC, c.id DESC LIMIT $3::int",
                 3, p, &r);
    if (s != PL_OK)
        return s;
    s = fill_conversations(a, r, PQntuples(r), rp);
    PQclear(r);
    return s;
}

/* "conv.get": conversation.id → conversation and messages (the active branch, root first,
 * with sibling_index/count and upload_ids). */
static pl_status op_conv_get(hs_env *e, const Parley__V1__HistoryRequest *rq,
                             Parley__V1__HistoryReply *rp, hs_arena *a)
{
    pl_status s = hsc_need_user(rq);
    if (s != PL_OK)
        return s;
    const char *conv = rq->conversation && rq->conversation->id ? rq->conversation->id : "";
    char ver[HSC_VER_CAP];
    size_t len = 0;
    char *hit = view_get(e, rq->user_id, conv, a, ver, &len);
    if (ver[0] && rq->if_version && strcmp(rq->if_version, ver) == 0) {
        /* The caller (a gateway's own cache) already holds this version. */
        free(hit);
        rp->version = hs_strdup(a, ver);
        rp->not_modified = true;
        return rp->version ? PL_OK : PL_ERRF(PL_NOMEM, "out of memory");
    }
    if (hit) {
        /* Sent as it is, in front of the (empty) reply: see hs_reply_prefix. */
        hs_reply_prefix(a, hit, len);
        rp->version = hs_strdup(a, ver);
        return PL_OK;
    }
    PGconn *c = NULL;
    if ((s = hs_conn(e, &c)) != PL_OK)
        return s;
    ct_tree *t = NULL;
    s = hsc_conv_get(c, rq->user_id, conv, a, &rp->conversation);
    if (s == PL_OK)
        s = ct_load(c, rq->user_id, conv, &t);
    if (s == PL_OK)
        s = hsc_fill_branch(c, rq->user_id, conv, t, ct_find(t, rp->conversation->active_leaf_id),
                            rp, a);
    ct_free(t);
    hs_release(e, c);
    if (s == PL_OK && view_put(e, rq->user_id, conv, ver, rp))
        rp->version = hs_strdup(a, ver);
    return s;
}

/* "conv.rename": conversation.id, .title; flag = only when it has no title yet (titles
 * generated after the first exchange never overwrite the user's) → reply.conversation; count
 * 1 when renamed, 0 when (with flag) it already had a title. */
static pl_status op_conv_rename(hs_env *e, const Parley__V1__HistoryRequest *rq,
                                Parley__V1__HistoryReply *rp, hs_arena *a)
{
    pl_status s = hsc_need_user(rq);
    const Parley__V1__Conversation *in = rq->conversation;
    if (s == PL_OK && (!in || !in->title))
        s = PL_ERRF(PL_INVALID, "conv.rename needs the conversation and its title");
    if (s == PL_OK)
        s = check_title(in->title);
    if (s != PL_OK)
        return s;
    PGconn *c = NULL;
    if ((s = hs_conn(e, &c)) != PL_OK)
        return s;
    const char *p[] = {rq->user_id, in->id ? in->id : "", in->title};
    PGresult *r = NULL;
    s = db_exec(c,
                rq->flag ? "UPDATE conversations SET title = $3 WHERE user_id = $1 AND id = $2"
                           " AND title = '' RETURNING " HSC_CONV_COLS
                         : "UPDATE conversations SET title = $3 WHERE user_id = $1 AND id = $2"
                           " RETURNING " HSC_CONV_COLS,
                3, p, &r);
    if (s == PL_OK) {
        rp->count = (uint64_t)PQntuples(r);
        if (rp->count)
            rp->conversation = conv_from_row(a, r, 0);
        PQclear(r);
        if (rp->count == 0 && !rq->flag)
            s = PL_ERRF(PL_NOT_FOUND, "conversation not found");
    }
    hs_release(e, c);
    if (s == PL_OK && rp->count)
        view_bump(e, rq->user_id, in->id, a);
    return s;
}

/* "conv.set_model": conversation.id, .model (checked against the tier by the caller). */
static pl_status op_conv_set_model(hs_env *e, const Parley__V1__HistoryRequest *rq,
                                   Parley__V1__HistoryReply *rp, hs_arena *a)
{
    pl_status s = hsc_need_user(rq);
    const Parley__V1__Conversation *in = rq->conversation;
    if (s == PL_OK && (!in || !in->model || strlen(in->model) > 128))
        s = PL_ERRF(PL_INVALID, "conv.set_model needs the conversation and a model name");
    if (s != PL_OK)
        return s;
    PGconn *c = NULL;
    if ((s = hs_conn(e, &c)) != PL_OK)
        return s;
    const char *p[] = {rq->user_id, in->id ? in->id : "", in->model};
    PGresult *r = NULL;
    s = db_exec(c,
                "UPDATE conversations SET model = $3 WHERE user_id = $1 AND id = $2"
                " RETURNING " HSC_CONV_COLS,
                3, p, &r);
    if (s == PL_OK) {
        if (PQntuples(r) == 0)
            s = PL_ERRF(PL_NOT_FOUND, "conversation not found");
        else if (!(rp->conversation = conv_from_row(a, r, 0)))
            s = PL_ERRF(PL_NOMEM, "out of memory");
        PQclear(r);
    }
    hs_release(e, c);
    if (s == PL_OK)
        view_bump(e, rq->user_id, in->id, a);
    return s;
}

/* "conv.delete": conversation.id. Its messages go with it (cascade); its share links are
 * revoked. */
static pl_status op_conv_delete(hs_env *e, const Parley__V1__HistoryRequest *rq,
                                Parley__V1__HistoryReply *rp, hs_arena *a)
{
    pl_status s = hsc_need_user(rq);
    if (s != PL_OK)
        return s;
    const char *p[] = {rq->user_id,
                       rq->conversation && rq->conversation->id ? rq->conversation->id : ""};
    PGconn *c = NULL;
    if ((s = hs_conn(e, &c)) != PL_OK)
        return s;
    PGresult *r = NULL;
    s = db_exec(c, "BEGIN", 0, NULL, NULL);
    if (s == PL_OK)
        s = db_exec(c, "DELETE FROM conversations WHERE user_id = $1 AND id = $2 RETURNING id", 2,
                    p, &r);
    if (s == PL_OK) {
        rp->count = (uint64_t)PQntuples(r);
        PQclear(r);
        if (rp->count == 0)
            s = PL_ERRF(PL_NOT_FOUND, "conversation not found");
    }
    if (s == PL_OK)
        s = db_exec(c,
                    "UPDATE shares SET revoked_at = now() WHERE user_id = $1"
                    " AND conversation_id = $2 AND revoked_at IS NULL",
                    2, p, NULL);
    if (s == PL_OK)
        s = db_exec(c, "COMMIT", 0, NULL, NULL);
    hs_release(e, c);
    if (s == PL_OK)
        view_bump(e, rq->user_id, p[1], a);
    return s;
}

/* --- the context cache ----------------------------------------------------------------------- */

static void ctx_key(char *buf, size_t cap, const char *user, const char *conv, const char *leaf)
{
    snprintf(buf, cap, "parley:ctx:%s:%s:%s", user, conv, leaf);
}

/* The cached chain ending at `leaf`, unpacked into the arena; NULL on a miss, an entry that
 * does not parse, or a Redis failure (logged at debug level: Redis is optional). */
static Parley__V1__HistoryReply *ctx_cache_get(hs_env *e, const char *user, const char *conv,
                                               const char *leaf, hs_arena *a)
{
    if (!e->cache || !leaf || !leaf[0])
        return NULL;
    char key[256];
    ctx_key(key, sizeof key, user, conv, leaf);
    char *val = NULL;
    size_t len = 0;
    pl_status s = cache_get(e->cache, key, &val, &len);
    if (s != PL_OK) {
        if (s != PL_NOT_FOUND)
            LOGD(NULL, "context cache get: %s", pl_err_last());
        return NULL;
    }
    ProtobufCAllocator al = {pb_arena_alloc, pb_arena_free, a};
    Parley__V1__HistoryReply *c = parley__v1__history_reply__unpack(&al, len, (uint8_t *)val);
    free(val);
    return c;
}

static void ctx_cache_put(hs_env *e, const char *user, const char *conv, const char *leaf,
                          const Parley__V1__HistoryReply *c)
{
    if (!e->cache)
        return;
    char key[256];
    ctx_key(key, sizeof key, user, conv, leaf);
    size_t len = parley__v1__history_reply__get_packed_size(c);
    if (len > HSC_CTX_MAX_BYTES) {
        cache_del(e->cache, key);
        return;
    }
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf)
        return;
    parley__v1__history_reply__pack(c, buf);
    if (cache_set(e->cache, key, buf, len, HSC_CTX_TTL_S) != PL_OK)
        LOGD(NULL, "context cache set: %s", pl_err_last());
    free(buf);
}

static void ctx_cache_del(hs_env *e, const char *user, const char *conv, const char *leaf)
{
    if (!e->cache || !leaf || !leaf[0])
        return;
    char key[256];
    ctx_key(key, sizeof key, user, conv, leaf);
    if (cache_del(e->cache, key) != PL_OK)
        LOGD(NULL, "context cache del: %s", pl_err_last());
}

/* Drops the oldest messages (and their uploads) beyond HSC_CTX_MAX. */
static void ctx_trim(Parley__V1__HistoryReply *c)
{
    if (c->n_messages <= HSC_CTX_MAX)
        return;
    size_t drop = c->n_messages - HSC_CTX_MAX;
    memmove(c->messages, c->messages + drop, HSC_CTX_MAX * sizeof *c->messages);
    c->n_messages = HSC_CTX_MAX;
    size_t k = 0;
    for (size_t i = 0; i < c->n_uploads; i++) {
        bool keep = false;
        for (size_t j = 0; j < c->n_messages && !keep; j++)
            keep = strcmp(c->uploads[i]->message_id, c->messages[j]->id) == 0;
        if (keep)
            c->uploads[k++] = c->uploads[i];
    }
    c->n_uploads = k;
}

/* Appends the uploads (with their text) attached to messages `ids` (by_message) or with ids
 * `ids` to rp->uploads. */
static pl_status load_uploads(PGconn *c, const char *user, char *const *ids, size_t n,
                              bool by_message, Parley__V1__HistoryReply *rp, hs_arena *a)
{
    if (n == 0)
        return PL_OK;
    const char *p[] = {user, hsc_id_array(a, ids, n)};
    if (!p[1])
        return PL_ERRF(PL_NOMEM, "out of memory");
    PGresult *r = NULL;
    pl_status s = db_exec(c,
                          by_message ? "SELECT id, filename, media_type, size_bytes, text_content,"
                                       " coalesce(message_id, '') FROM uploads WHERE user_id = $1"
                                       " AND message_id = ANY($2::text[]) ORDER BY created_at, id"
                                     : "SELECT id, filename, media_type, size_bytes, text_content,"
                                       " coalesce(message_id, '') FROM uploads WHERE user_id = $1"
                                       " AND id = ANY($2::text[]) ORDER BY created_at, id",
                          2, p, &r);
    if (s != PL_OK)
        return s;
    int k = PQntuples(r);
    Parley__V1__Upload **v = hs_alloc(a, (rp->n_uploads + (size_t)k + 1) * sizeof *v);
    if (!v) {
        PQclear(r);
        return PL_ERRF(PL_NOMEM, "out of memory");
    }
    if (rp->n_uploads)
        memcpy(v, rp->uploads, rp->n_uploads * sizeof *v);
    rp->uploads = v;
    for (int i = 0; i < k; i++) {
        Parley__V1__Upload *u = hs_alloc(a, sizeof *u);
        if (!u) {
            PQclear(r);
            return PL_ERRF(PL_NOMEM, "out of memory");
        }
        parley__v1__upload__init(u);
        u->id = hs_strdup(a, PQgetvalue(r, i, 0));
        u->filename = hs_strdup(a, PQgetvalue(r, i, 1));
        u->media_type = hs_strdup(a, PQgetvalue(r, i, 2));
        u->size_bytes = (uint32_t)strtoul(PQgetvalue(r, i, 3), NULL, 10);
        u->text = hs_strdup(a, PQgetvalue(r, i, 4));
        u->message_id = hs_strdup(a, by_message ? PQgetvalue(r, i, 5) : "");
        rp->uploads[rp->n_uploads++] = u;
    }
    PQclear(r);
    return PL_OK;
}

static bool ctx_has_pending(const Parley__V1__HistoryReply *c)
{
    for (size_t i = 0; i < c->n_messages; i++)
        if (c->messages[i]->status == PARLEY__V1__MESSAGE_STATUS__MESSAGE_STATUS_PENDING)
            return true;
    return false;
}

/* Reads the chain ending at `leaf` from PostgreSQL into rp (messages, their uploads) and
 * caches it when it holds no pending message. */
static pl_status ctx_read(hs_env *e, PGconn *c, const char *user, const char *conv,
                          const char *leaf, Parley__V1__HistoryReply *rp, hs_arena *a)
{
    ct_tree *t = NULL;
    pl_status s = ct_load(c, user, conv, &t);
    int li = s == PL_OK ? ct_find(t, leaf) : -1;
    if (s == PL_OK && li < 0)
        s = PL_ERRF(PL_NOT_FOUND, "message not found");
    int *chain = NULL;
    size_t k = 0, cap = 0;
    if (s == PL_OK && !(chain = hs_alloc(a, HSC_CTX_MAX * sizeof *chain)))
        s = PL_ERRF(PL_NOMEM, "out of memory");
    if (s == PL_OK)
        k = ct_chain(t, li, chain, HSC_CTX_MAX, NULL);
    for (size_t i = 0; s == PL_OK && i < k; i++)
        s = push_message(a, rp, &cap, ct_message(t, chain[i], conv, a));
    ct_free(t);
    char **ids = s == PL_OK ? hs_alloc(a, (k ? k : 1) * sizeof *ids) : NULL;
    if (s == PL_OK && !ids)
        s = PL_ERRF(PL_NOMEM, "out of memory");
    for (size_t i = 0; s == PL_OK && i < k; i++)
        ids[i] = rp->messages[i]->id;
    if (s == PL_OK)
        s = load_uploads(c, user, ids, k, true, rp, a);
    if (s == PL_OK) {
        Parley__V1__HistoryReply entry = PARLEY__V1__HISTORY_REPLY__INIT;
        entry.messages = rp->messages;
        entry.n_messages = rp->n_messages;
        entry.uploads = rp->uploads;
        entry.n_uploads = rp->n_uploads;
        if (!ctx_has_pending(&entry))
            ctx_cache_put(e, user, conv, leaf, &entry);
    }
    return s;
}

/* "context.get": conversation.id; message.id = the leaf of the chain ("" = the active leaf,
 * "root" = none); message.upload_ids = uploads about to be attached to a new message; limit =
 * most messages (0 = HSC_CTX_MAX) → conversation (active_leaf_id = the resolved leaf), user
 * (custom_instructions only), messages (the chain's newest, root first), uploads (those of the
 * chain's messages, then the requested ones with message_id ""; a requested upload that is
 * missing or someone else's is PL_NOT_FOUND). */
static pl_status op_context_get(hs_env *e, const Parley__V1__HistoryRequest *rq,
                                Parley__V1__HistoryReply *rp, hs_arena *a)
{
    pl_status s = hsc_need_user(rq);
    if (s != PL_OK)
        return s;
    const char *conv = rq->conversation && rq->conversation->id ? rq->conversation->id : "";
    const Parley__V1__Message *mq = rq->message;
    if (mq && mq->n_upload_ids > HSC_MAX_UPLOADS)
        return PL_ERRF(PL_INVALID, "at most %d uploads per message", HSC_MAX_UPLOADS);
    PGconn *c = NULL;
    if ((s = hs_conn(e, &c)) != PL_OK)
        return s;
    const char *p[] = {rq->user_id, conv};
    PGresult *r = NULL;
    s = db_exec(c,
                "SELECT c.id, c.title, c.model, coalesce(c.active_leaf_id, ''),"
                " (extract(epoch FROM c.created_at) * 1000)::bigint,"
                " (extract(epoch FROM c.updated_at) * 1000)::bigint, u.custom_instructions"
                " FROM conversations c JOIN users u ON u.id = c.user_id"
                " WHERE c.user_id = $1 AND c.id = $2",
                2, p, &r);
    if (s == PL_OK && PQntuples(r) == 0) {
        PQclear(r);
        s = PL_ERRF(PL_NOT_FOUND, "conversation not found");
    }
    if (s != PL_OK) {
        hs_release(e, c);
        return s;
    }
    rp->conversation = conv_from_row(a, r, 0);
    rp->user = hs_alloc(a, sizeof *rp->user);
    if (rp->user) {
        parley__v1__user__init(rp->user);
        rp->user->id = hs_strdup(a, rq->user_id);
        rp->user->custom_instructions = hs_strdup(a, PQgetvalue(r, 0, 6));
    }
    PQclear(r);
    if (!rp->conversation || !rp->user) {
        hs_release(e, c);
        return PL_ERRF(PL_NOMEM, "out of memory");
    }

    const char *leaf = mq && mq->id && mq->id[0] ? mq->id : rp->conversation->active_leaf_id;
    if (strcmp(leaf, "root") == 0)
        leaf = "";
    leaf = hs_strdup(a, leaf);
    size_t limit = rq->limit && rq->limit < HSC_CTX_MAX ? rq->limit : HSC_CTX_MAX;

    Parley__V1__HistoryReply *hit = ctx_cache_get(e, rq->user_id, conv, leaf, a);
    if (hit && ctx_has_pending(hit))
        hit = NULL;
    if (hit) {
        rp->messages = hit->messages;
        rp->n_messages = hit->n_messages;
        rp->uploads = hit->uploads;
        rp->n_uploads = hit->n_uploads;
    } else if (leaf[0]) {
        s = ctx_read(e, c, rq->user_id, conv, leaf, rp, a);
    }
    rp->conversation->active_leaf_id = (char *)leaf;
    /* The newest `limit` only (an entry holds up to HSC_CTX_MAX). */
    if (s == PL_OK && rp->n_messages > limit) {
        rp->messages += rp->n_messages - limit;
        rp->n_messages = limit;
    }
    if (s == PL_OK && mq && mq->n_upload_ids) {
        size_t before = rp->n_uploads;
        s = load_uploads(c, rq->user_id, mq->upload_ids, mq->n_upload_ids, false, rp, a);
        if (s == PL_OK && rp->n_uploads - before != mq->n_upload_ids)
            s = PL_ERRF(PL_NOT_FOUND, "upload not found");
    }
    hs_release(e, c);
    return s;
}

/* --- messages ------------------------------------------------------------------------------- */

static Parley__V1__Message *msg_from_row(hs_arena *a, const PGresult *r, int i, const char *conv)
{
    ct_row row = {
        .id = PQgetvalue(r, i, 0),
        .parent_id = PQgetvalue(r, i, 1),
        .role = atoi(PQgetvalue(r, i, 2)),
        .content = PQgetvalue(r, i, 3),
        .status = atoi(PQgetvalue(r, i, 4)),
        .model = PQgetvalue(r, i, 5),
        .request_id = PQgetvalue(r, i, 6),
        .error = PQgetvalue(r, i, 7),
        .feedback = atoi(PQgetvalue(r, i, 8)),
        .prompt_tokens = (uint32_t)strtoul(PQgetvalue(r, i, 9), NULL, 10),
        .completion_tokens = (uint32_t)strtoul(PQgetvalue(r, i, 10), NULL, 10),
        .created_ms = strtoll(PQgetvalue(r, i, 11), NULL, 10),
    };
    ct_tree *t = NULL;
    if (ct_build(&row, 1, &t) != PL_OK)
        return NULL;
    Parley__V1__Message *m = ct_message(t, 0, conv, a);
    ct_free(t);
    if (m)
        m->sibling_index = m->sibling_count = 0; /* unknown here */
    return m;
}

/* "msg.get": conversation.id, message.id → reply.message (no sibling numbers). */
static pl_status op_msg_get(hs_env *e, const Parley__V1__HistoryRequest *rq,
                            Parley__V1__HistoryReply *rp, hs_arena *a)
{
    pl_status s = hsc_need_user(rq);
    if (s != PL_OK)
        return s;
    const char *conv = rq->conversation && rq->conversation->id ? rq->conversation->id : "";
    const char *p[] = {rq->user_id, conv, rq->message && rq->message->id ? rq->message->id : ""};
    PGresult *r = NULL;
    s = hs_query(e,
                 "SELECT " HSC_MSG_COLS " FROM messages WHERE user_id = $1"
                 " AND conversation_id = $2 AND id = $3",
                 3, p, &r);
    if (s != PL_OK)
        return s;
    if (PQntuples(r) == 0)
        s = PL_ERRF(PL_NOT_FOUND, "message not found");
    else if (!(rp->message = msg_from_row(a, r, 0, conv)))
        s = PL_ERRF(PL_NOMEM, "out of memory");
    PQclear(r);
    return s;
}

/* Inserts one message; created_at is the statement's clock (not the transaction's) so that
 * the user message and the answer stored in one transaction still order. */
static pl_status insert_message(PGconn *c, const char *user, const char *conv, const char *id,
                                const char *parent, int role, const char *content, int status,
                                const char *model, const char *request_id)
{
    char rb[8], sb[8];
    snprintf(rb, sizeof rb, "%d", role);
    snprintf(sb, sizeof sb, "%d", status);
    const char *p[] = {user,
                       conv,
                       id,
                       parent && parent[0] ? parent : NULL,
                       rb,
                       content,
                       sb,
                       model ? model : "",
                       request_id && request_id[0] ? request_id : NULL};
    return db_exec(c,
                   "INSERT INTO messages (user_id, conversation_id, id, parent_id, role, content,"
                   " status, model, request_id, created_at, updated_at)"
                   " VALUES ($1, $2, $3, $4, $5::smallint, $6, $7::smallint, $8, $9,"
                   " clock_timestamp(), clock_timestamp())",
                   9, p, NULL);
}

static Parley__V1__Message *new_message(hs_arena *a, const char *id, const char *conv,
                                        const char *parent, Parley__V1__Role role,
                                        const char *content, Parley__V1__MessageStatus st,
                                        const char *model, const char *request_id)
{
    Parley__V1__Message *m = hs_alloc(a, sizeof *m);
    if (!m)
        return NULL;
    parley__v1__message__init(m);
    m->id = hs_strdup(a, id);
    m->conversation_id = hs_strdup(a, conv);
    m->parent_id = hs_strdup(a, parent);
    m->role = role;
    m->content = hs_strdup(a, content);
    m->status = st;
    m->model = hs_strdup(a, model);
    m->request_id = hs_strdup(a, request_id);
    m->created_ms = dmn_wall_ms();
    m->sibling_index = m->sibling_count = 1;
    return m;
}

/* After msg.turn: the new leaf's context entry is its parent's plus the new messages. */
static void ctx_derive(hs_env *e, const char *user, const char *conv, const char *parent,
                       Parley__V1__Message *um, Parley__V1__Message *am,
                       const Parley__V1__HistoryReply *linked, hs_arena *a)
{
    Parley__V1__HistoryReply *base = NULL;
    Parley__V1__HistoryReply empty = PARLEY__V1__HISTORY_REPLY__INIT;
    if (parent && parent[0]) {
        if (!(base = ctx_cache_get(e, user, conv, parent, a)))
            return; /* nothing cached: the next context.get reads PostgreSQL */
        ctx_cache_del(e, user, conv, parent);
    } else {
        base = &empty;
    }
    size_t n = base->n_messages + 2, nu = base->n_uploads + linked->n_uploads;
    Parley__V1__Message **ms = hs_alloc(a, n * sizeof *ms);
    Parley__V1__Upload **us = hs_alloc(a, (nu ? nu : 1) * sizeof *us);
    if (!ms || !us)
        return;
    Parley__V1__HistoryReply entry = PARLEY__V1__HISTORY_REPLY__INIT;
    entry.messages = ms;
    entry.uploads = us;
    for (size_t i = 0; i < base->n_messages; i++)
        ms[entry.n_messages++] = base->messages[i];
    if (um)
        ms[entry.n_messages++] = um;
    ms[entry.n_messages++] = am;
    for (size_t i = 0; i < base->n_uploads; i++)
        us[entry.n_uploads++] = base->uploads[i];
    for (size_t i = 0; i < linked->n_uploads; i++)
        us[entry.n_uploads++] = linked->uploads[i];
    ctx_trim(&entry);
    ctx_cache_put(e, user, conv, am->id, &entry);
}

/* Checks, inside msg.turn's transaction, that `parent` is in the conversation and that turns
 * alternate: a user message answers an assistant message (or starts the conversation), an
 * answer follows a user message. */
static pl_status check_parent(PGconn *c, const char *user, const char *conv, const char *parent,
                              bool regen)
{
    const char *p[] = {user, conv, parent};
    PGresult *r = NULL;
    pl_status s = db_exec(
        c, "SELECT role FROM messages WHERE user_id = $1 AND conversation_id = $2 AND id = $3", 3,
        p, &r);
    if (s != PL_OK)
        return s;
    int role = PQntuples(r) ? atoi(PQgetvalue(r, 0, 0)) : -1;
    PQclear(r);
    if (role < 0)
        return PL_ERRF(PL_NOT_FOUND, "message not found");
    if (regen && role != PARLEY__V1__ROLE__ROLE_USER)
        return PL_ERRF(PL_INVALID, "only an answer to a user message can be regenerated");
    if (!regen && role == PARLEY__V1__ROLE__ROLE_USER)
        return PL_ERRF(PL_INVALID, "a new message follows an answer: parent_id names a user "
                                   "message");
    return PL_OK;
}

/* "msg.turn": conversation.id; message.parent_id ("" = the active leaf, "root" = a new first
 * message), .content, .model, .request_id, .upload_ids; flag = regenerate (no user message:
 * a new answer to parent_id, which must be a user message). In one transaction: the user
 * message (complete), the uploads linked to it, the pending assistant message, the active
 * leaf moved, the conversation's model set when it had none. → message (the assistant's),
 * messages[0] (the user's, when stored), conversation. */
static pl_status op_msg_turn(hs_env *e, const Parley__V1__HistoryRequest *rq,
                             Parley__V1__HistoryReply *rp, hs_arena *a)
{
    pl_status s = hsc_need_user(rq);
    const Parley__V1__Message *in = rq->message;
    const char *conv = rq->conversation && rq->conversation->id ? rq->conversation->id : "";
    bool regen = rq->flag;
    if (s == PL_OK && !in)
        s = PL_ERRF(PL_INVALID, "msg.turn needs the message");
    if (s == PL_OK && !regen && (!in->content || !in->content[0]))
        s = PL_ERRF(PL_INVALID, "the message is empty");
    if (s == PL_OK && in->content && strlen(in->content) > HSC_CONTENT_MAX)
        s = PL_ERRF(PL_TOO_LARGE, "the message is longer than %u bytes", HSC_CONTENT_MAX);
    if (s == PL_OK && in->n_upload_ids > HSC_MAX_UPLOADS)
        s = PL_ERRF(PL_INVALID, "at most %d uploads per message", HSC_MAX_UPLOADS);
    if (s == PL_OK && regen && in->n_upload_ids)
        s = PL_ERRF(PL_INVALID, "a regeneration takes no uploads");
    if (s != PL_OK)
        return s;
    char *uid = regen ? NULL : hs_new_id(a), *aid = hs_new_id(a);
    if ((!regen && !uid) || !aid)
        return PL_ERRF(PL_NOMEM, "out of memory");
    const char *model = in->model ? in->model : "";

    PGconn *c = NULL;
    if ((s = hs_conn(e, &c)) != PL_OK)
        return s;
    PGresult *r = NULL;
    const char *p2[] = {rq->user_id, conv};
    char *parent = NULL;
    Parley__V1__HistoryReply linked = PARLEY__V1__HISTORY_REPLY__INIT;
    s = db_exec(c, "BEGIN", 0, NULL, NULL);
    if (s == PL_OK)
        s = db_exec(c,
                    "SELECT coalesce(active_leaf_id, '') FROM conversations"
                    " WHERE user_id = $1 AND id = $2 FOR UPDATE",
                    2, p2, &r);
    if (s == PL_OK) {
        if (PQntuples(r) == 0)
            s = PL_ERRF(PL_NOT_FOUND, "conversation not found");
        else
            parent = hs_strdup(a, PQgetvalue(r, 0, 0));
        PQclear(r);
    }
    if (s == PL_OK && in->parent_id && in->parent_id[0])
        parent = hs_strdup(a, strcmp(in->parent_id, "root") == 0 ? "" : in->parent_id);
    if (s == PL_OK && !parent)
        s = PL_ERRF(PL_NOMEM, "out of memory");
    if (s == PL_OK && regen && !parent[0])
        s = PL_ERRF(PL_INVALID, "a regeneration needs the user message it answers");
    if (s == PL_OK && parent[0])
        s = check_parent(c, rq->user_id, conv, parent, regen);
    if (s == PL_OK && !regen)
        s = insert_message(c, rq->user_id, conv, uid, parent, PARLEY__V1__ROLE__ROLE_USER,
                           in->content, PARLEY__V1__MESSAGE_STATUS__MESSAGE_STATUS_COMPLETE, "",
                           NULL);
    if (s == PL_OK && in->n_upload_ids) {
        const char *p4[] = {rq->user_id, hsc_id_array(a, in->upload_ids, in->n_upload_ids), uid};
        if (!p4[1])
            s = PL_ERRF(PL_NOMEM, "out of memory");
        if (s == PL_OK)
            s = db_exec(c,
                        "UPDATE uploads SET message_id = $3 WHERE user_id = $1"
                        " AND id = ANY($2::text[]) RETURNING id",
                        3, p4, &r);
        if (s == PL_OK) {
            if ((size_t)PQntuples(r) != in->n_upload_ids)
                s = PL_ERRF(PL_NOT_FOUND, "upload not found");
            PQclear(r);
        }
    }
    if (s == PL_OK)
        s = insert_message(
            c, rq->user_id, conv, aid, regen ? parent : uid, PARLEY__V1__ROLE__ROLE_ASSISTANT, "",
            PARLEY__V1__MESSAGE_STATUS__MESSAGE_STATUS_PENDING, model, in->request_id);
    if (s == PL_OK) {
        const char *p5[] = {rq->user_id, conv, aid, model};
        s = db_exec(c,
                    "UPDATE conversations SET active_leaf_id = $3, updated_at = now(),"
                    " model = CASE WHEN model = '' THEN $4 ELSE model END"
                    " WHERE user_id = $1 AND id = $2 RETURNING " HSC_CONV_COLS,
                    4, p5, &r);
        if (s == PL_OK) {
            rp->conversation = conv_from_row(a, r, 0);
            PQclear(r);
        }
    }
    if (s == PL_OK)
        s = db_exec(c, "COMMIT", 0, NULL, NULL);
    bool committed = s == PL_OK;
    if (s == PL_OK && uid && in->n_upload_ids)
        s = load_uploads(c, rq->user_id, &uid, 1, true, &linked, a);
    hs_release(e, c);
    if (committed)
        view_bump(e, rq->user_id, conv, a);
    if (s != PL_OK)
        return s;

    Parley__V1__Message *um = NULL;
    if (!regen) {
        um = new_message(a, uid, conv, parent, PARLEY__V1__ROLE__ROLE_USER, in->content,
                         PARLEY__V1__MESSAGE_STATUS__MESSAGE_STATUS_COMPLETE, "", "");
        rp->messages = hs_alloc(a, sizeof *rp->messages);
        if (!um || !rp->messages)
            return PL_ERRF(PL_NOMEM, "out of memory");
        rp->messages[0] = um;
        rp->n_messages = 1;
    }
    rp->message =
        new_message(a, aid, conv, regen ? parent : uid, PARLEY__V1__ROLE__ROLE_ASSISTANT, "",
                    PARLEY__V1__MESSAGE_STATUS__MESSAGE_STATUS_PENDING, model, in->request_id);
    if (!rp->message)
        return PL_ERRF(PL_NOMEM, "out of memory");
    ctx_derive(e, rq->user_id, conv, parent, um, rp->message, &linked, a);
    return PL_OK;
}

/* "msg.complete": message.id, .conversation_id, .request_id, .content, .status (complete,
 * stopped or failed), .usage, .error; user_id = the owner. Idempotent: only a pending message
 * with that request id changes (count 1), anything else is a no-op (count 0). → message (when
 * changed), conversation (absent when it was deleted meanwhile; its title tells the chat
 * daemon whether to generate one). */
static pl_status op_msg_complete(hs_env *e, const Parley__V1__HistoryRequest *rq,
                                 Parley__V1__HistoryReply *rp, hs_arena *a)
{
    pl_status s = hsc_need_user(rq);
    const Parley__V1__Message *in = rq->message;
    if (s == PL_OK && (!in || !in->id || !in->conversation_id))
        s = PL_ERRF(PL_INVALID, "msg.complete needs the message and its conversation");
    if (s == PL_OK && in->status == PARLEY__V1__MESSAGE_STATUS__MESSAGE_STATUS_PENDING)
        s = PL_ERRF(PL_INVALID, "msg.complete needs a final status");
    if (s != PL_OK)
        return s;
    char st[8], pt[24], ct[24];
    snprintf(st, sizeof st, "%d", (int)in->status);
    hsc_i64(pt, in->usage ? in->usage->prompt_tokens : 0);
    hsc_i64(ct, in->usage ? in->usage->completion_tokens : 0);
    const char *p[] = {rq->user_id,
                       in->conversation_id,
                       in->id,
                       in->request_id ? in->request_id : "",
                       in->content ? in->content : "",
                       st,
                       pt,
                       ct,
                       in->error ? in->error : ""};
    PGconn *c = NULL;
    if ((s = hs_conn(e, &c)) != PL_OK)
        return s;
    PGresult *r = NULL;
    s = db_exec(c,
                "UPDATE messages SET content = $5, status = $6::smallint,"
                " prompt_tokens = $7::int, completion_tokens = $8::int, error = $9,"
                " updated_at = now() WHERE user_id = $1 AND conversation_id = $2 AND id = $3"
                " AND status = 1 AND ($4 = '' OR request_id = $4) RETURNING " HSC_MSG_COLS,
                9, p, &r);
    if (s == PL_OK) {
        rp->count = (uint64_t)PQntuples(r);
        if (rp->count && !(rp->message = msg_from_row(a, r, 0, in->conversation_id)))
            s = PL_ERRF(PL_NOMEM, "out of memory");
        PQclear(r);
    }
    if (s == PL_OK) {
        s = hsc_conv_get(c, rq->user_id, in->conversation_id, a, &rp->conversation);
        if (s == PL_NOT_FOUND) { /* deleted while the answer was written: nothing to do */
            rp->conversation = NULL;
            s = PL_OK;
        }
    }
    hs_release(e, c);
    if (rp->count)
        view_bump(e, rq->user_id, in->conversation_id, a);
    if (s != PL_OK || rp->count == 0)
        return s;
    /* Rewrite the cached chain that ends at this message, if there is one. */
    Parley__V1__HistoryReply *entry = ctx_cache_get(e, rq->user_id, in->conversation_id, in->id, a);
    if (entry) {
        for (size_t i = 0; i < entry->n_messages; i++) {
            Parley__V1__Message *m = entry->messages[i];
            if (strcmp(m->id, in->id) == 0) {
                m->content = rp->message->content;
                m->status = rp->message->status;
                m->usage = rp->message->usage;
            }
        }
        ctx_cache_put(e, rq->user_id, in->conversation_id, in->id, entry);
    }
    return PL_OK;
}

/* "msg.switch": conversation.id, message.id (usually a sibling of a message on the active
 * branch) → the active leaf moves to the end of the newest branch under it; replies like
 * conv.get. */
static pl_status op_msg_switch(hs_env *e, const Parley__V1__HistoryRequest *rq,
                               Parley__V1__HistoryReply *rp, hs_arena *a)
{
    pl_status s = hsc_need_user(rq);
    if (s != PL_OK)
        return s;
    const char *conv = rq->conversation && rq->conversation->id ? rq->conversation->id : "";
    PGconn *c = NULL;
    if ((s = hs_conn(e, &c)) != PL_OK)
        return s;
    ct_tree *t = NULL;
    int leaf = -1;
    s = hsc_conv_get(c, rq->user_id, conv, a, &rp->conversation);
    if (s == PL_OK)
        s = ct_load(c, rq->user_id, conv, &t);
    if (s == PL_OK) {
        int i = ct_find(t, rq->message ? rq->message->id : NULL);
        if (i < 0)
            s = PL_ERRF(PL_NOT_FOUND, "message not found");
        else
            leaf = ct_newest_below(t, i);
    }
    if (s == PL_OK) {
        const char *p[] = {rq->user_id, conv, ct_node_at(t, leaf)->row.id};
        s = db_exec(c,
                    "UPDATE conversations SET active_leaf_id = $3 WHERE user_id = $1 AND id = $2",
                    3, p, NULL);
    }
    bool changed = s == PL_OK;
    if (s == PL_OK) {
        rp->conversation->active_leaf_id = hs_strdup(a, ct_node_at(t, leaf)->row.id);
        s = hsc_fill_branch(c, rq->user_id, conv, t, leaf, rp, a);
    }
    ct_free(t);
    hs_release(e, c);
    if (changed)
        view_bump(e, rq->user_id, conv, a);
    return s;
}

/* "msg.feedback": conversation.id, message.id, message.feedback (-1, 0, 1) on an answer. */
static pl_status op_msg_feedback(hs_env *e, const Parley__V1__HistoryRequest *rq,
                                 Parley__V1__HistoryReply *rp, hs_arena *a)
{
    pl_status s = hsc_need_user(rq);
    const Parley__V1__Message *in = rq->message;
    if (s == PL_OK && (!in || in->feedback < -1 || in->feedback > 1))
        s = PL_ERRF(PL_INVALID, "feedback is -1, 0 or 1");
    if (s != PL_OK)
        return s;
    char fb[8];
    snprintf(fb, sizeof fb, "%d", (int)in->feedback);
    const char *conv = rq->conversation && rq->conversation->id ? rq->conversation->id : "";
    const char *p[] = {rq->user_id, conv, in->id ? in->id : "", fb};
    PGresult *r = NULL;
    s = hs_query(e,
                 "UPDATE messages SET feedback = $4::smallint WHERE user_id = $1"
                 " AND conversation_id = $2 AND id = $3 AND role = 3 RETURNING id",
                 4, p, &r);
    if (s != PL_OK)
        return s;
    rp->count = (uint64_t)PQntuples(r);
    PQclear(r);
    if (!rp->count)
        return PL_ERRF(PL_NOT_FOUND, "answer not found");
    view_bump(e, rq->user_id, conv, a);
    return PL_OK;
}

/* "sweep.pending": expires_ms = a unix ms cutoff → answers still pending whose last change is
 * older become failed ("interrupted"); count = how many. Not scoped to a user: the chat
 * daemon's sweeper calls it, with a cutoff older than any live request's deadline. */
static pl_status op_sweep_pending(hs_env *e, const Parley__V1__HistoryRequest *rq,
                                  Parley__V1__HistoryReply *rp, hs_arena *a)
{
    (void)a;
    if (rq->expires_ms <= 0)
        return PL_ERRF(PL_INVALID, "sweep.pending needs a cutoff (expires_ms)");
    char cut[24];
    const char *p[] = {hsc_i64(cut, rq->expires_ms)};
    PGconn *c = NULL;
    pl_status s = hs_conn(e, &c);
    if (s != PL_OK)
        return s;
    PGresult *r = NULL;
    s = db_exec(c,
                "UPDATE messages SET status = 3, updated_at = now(),"
                " error = 'the answer was interrupted before it finished; please regenerate'"
                " WHERE status = 1"
                " AND updated_at < 'epoch'::timestamptz + $1::bigint * interval '1 millisecond'"
                " RETURNING id",
                1, p, &r);
    hs_release(e, c);
    if (s != PL_OK)
        return s;
    rp->count = (uint64_t)PQntuples(r);
    PQclear(r);
    if (rp->count)
        LOGI(rq->request_id, "swept %llu pending answers", (unsigned long long)rp->count);
    return PL_OK;
}

const hs_op hs_ops_convs[] = {
    {"conv.create", op_conv_create},
    {"conv.list", op_conv_list},
    {"conv.search", op_conv_search},
    {"conv.get", op_conv_get},
    {"conv.rename", op_conv_rename},
    {"conv.set_model", op_conv_set_model},
    {"conv.delete", op_conv_delete},
    {"msg.get", op_msg_get},
    {"msg.turn", op_msg_turn},
    {"msg.complete", op_msg_complete},
    {"msg.switch", op_msg_switch},
    {"msg.feedback", op_msg_feedback},
    {"context.get", op_context_get},
    {"sweep.pending", op_sweep_pending},
    {"share.create", hs_op_share_create},
    {"share.list", hs_op_share_list},
    {"share.revoke", hs_op_share_revoke},
    {"share.get", hs_op_share_get},
    {"upload.create", hs_op_upload_create},
    {"upload.get", hs_op_upload_get},
};
const size_t hs_n_ops_convs = sizeof hs_ops_convs / sizeof hs_ops_convs[0];
