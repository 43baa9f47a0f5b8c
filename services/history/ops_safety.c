/* ops_safety.c — history operations on safety verdicts (see ops.h for the calling convention).
 *
 *   safety.store     (parley-safety) verdicts[] → count = rows inserted. Idempotent: the key is
 *                    (user, event, classifier, category), a verdict already stored is skipped,
 *                    so a redelivered event's batch stores nothing twice. One transaction per
 *                    request, multi-row INSERTs of at most HSF_ROWS rows.
 *   safety.flagged   (administrators) limit, flag (only conversations with verdicts not yet
 *                    reviewed) → flagged[]: conversations with flag/block verdicts, most
 *                    recently flagged first.
 *   safety.messages  (administrators) conversation.id → conversation, verdicts[] (flag/block,
 *                    oldest first) and messages[] (the messages they judged).
 *   safety.review    (administrators) verdict.id → the verdict, marked reviewed by the acting
 *                    administrator (the first review's time and reviewer stay).
 * Verdicts are never shown to their users: only administrators' ops read them.
 *
 * Threading: as every op, on a libnats thread with its own connection and arena. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"
#include "utf8.h"

#define HSF_ROWS     400 /* rows per INSERT: 11 parameters each, under libpq's 65535 */
#define HSF_COLS     11
#define HSF_LIST_MAX 200
#define HSF_LIST_DEF 50
#define HSF_MSGS_MAX 500

static const char *val(const PGresult *r, int row, int col)
{
    return PQgetisnull(r, row, col) ? "" : PQgetvalue(r, row, col);
}

static int64_t val_i64(const PGresult *r, int row, int col)
{
    return PQgetisnull(r, row, col) ? 0 : strtoll(PQgetvalue(r, row, col), NULL, 10);
}

static char *num(hs_arena *a, int64_t v)
{
    char buf[24];
    snprintf(buf, sizeof buf, "%lld", (long long)v);
    return hs_strdup(a, buf);
}

static bool empty(const char *s)
{
    return !s || !*s;
}

/* True when `s` is valid UTF-8 of at most `max` bytes. Checked before PostgreSQL sees the
 * text: its refusal would come back as a storage error, which the caller could not tell from
 * a database that is down. */
static bool text_ok(const char *s, size_t max)
{
    size_t n = s ? strlen(s) : 0;
    return n <= max && utf8_valid(s ? s : "", n);
}

/* "safety.store" */
static pl_status op_store(hs_env *e, const Parley__V1__HistoryRequest *rq,
                          Parley__V1__HistoryReply *rp, hs_arena *a)
{
    size_t n = rq->n_verdicts;
    if (n == 0)
        return PL_OK;
    for (size_t i = 0; i < n; i++) {
        const Parley__V1__SafetyVerdict *v = rq->verdicts[i];
        if (empty(v->event_id) || empty(v->category) || empty(v->classifier) || !v->user_id)
            return PL_ERRF(PL_INVALID, "a verdict needs its event, category and classifier");
        if (v->action < 0 || v->action > PARLEY__V1__SAFETY_ACTION__SAFETY_ACTION_BLOCK)
            return PL_ERRF(PL_INVALID, "unknown safety action %d", (int)v->action);
        if (!text_ok(v->event_id, 256) || !text_ok(v->user_id, 256) ||
            !text_ok(v->message_id, 256) || !text_ok(v->conversation_id, 256) ||
            !text_ok(v->category, 64) || !text_ok(v->classifier, 160) || !text_ok(v->detail, 1024))
            return PL_ERRF(PL_INVALID, "verdict %zu: a text field is not UTF-8 or too long", i);
    }
    size_t rows = n < HSF_ROWS ? n : HSF_ROWS;
    const char **p = hs_alloc(a, rows * HSF_COLS * sizeof *p);
    char *sql = hs_alloc(a, 256 + rows * 256);
    if (!p || !sql)
        return PL_ERRF(PL_NOMEM, "out of memory");
    PGconn *c = NULL;
    pl_status s = hs_conn(e, &c);
    if (s != PL_OK)
        return s;
    s = n > rows ? db_exec(c, "BEGIN", 0, NULL, NULL) : PL_OK;
    uint64_t inserted = 0;
    for (size_t at = 0; s == PL_OK && at < n; at += rows) {
        size_t k = n - at < rows ? n - at : rows;
        size_t w = (size_t)sprintf(sql, "INSERT INTO safety_verdicts (id, user_id, event_id,"
                                        " classifier, category, message_id, conversation_id,"
                                        " score, action, detail, decided_at) VALUES ");
        for (size_t i = 0; i < k; i++) {
            const Parley__V1__SafetyVerdict *v = rq->verdicts[at + i];
            const char **q = &p[i * HSF_COLS];
            char score[32];
            snprintf(score, sizeof score, "%.4f", (double)v->score);
            q[0] = hs_new_id(a);
            q[1] = v->user_id;
            q[2] = v->event_id;
            q[3] = v->classifier;
            q[4] = v->category;
            q[5] = v->message_id ? v->message_id : "";
            q[6] = v->conversation_id ? v->conversation_id : "";
            q[7] = hs_strdup(a, score);
            q[8] = num(a, v->action);
            q[9] = v->detail ? v->detail : "";
            q[10] = num(a, v->decided_ms > 0 ? v->decided_ms : 0);
            if (!q[0] || !q[7] || !q[8] || !q[10]) {
                s = PL_ERRF(PL_NOMEM, "out of memory");
                break;
            }
            size_t b = i * HSF_COLS;
            w += (size_t)sprintf(sql + w,
                                 "%s($%zu,$%zu,$%zu,$%zu,$%zu,NULLIF($%zu,''),NULLIF($%zu,''),"
                                 "$%zu,$%zu,$%zu,CASE WHEN $%zu::bigint > 0 THEN "
                                 "to_timestamp($%zu::bigint / 1000.0) ELSE now() END)",
                                 i ? "," : "", b + 1, b + 2, b + 3, b + 4, b + 5, b + 6, b + 7,
                                 b + 8, b + 9, b + 10, b + 11, b + 11);
        }
        if (s != PL_OK)
            break;
        sprintf(sql + w, " ON CONFLICT DO NOTHING");
        PGresult *r = NULL;
        s = db_exec(c, sql, (int)(k * HSF_COLS), p, &r);
        if (s == PL_OK) {
            inserted += strtoull(PQcmdTuples(r), NULL, 10);
            PQclear(r);
        }
    }
    if (s == PL_OK && n > rows)
        s = db_exec(c, "COMMIT", 0, NULL, NULL);
    hs_release(e, c);
    if (s == PL_OK)
        rp->count = inserted;
    return s;
}

/* "safety.flagged" */
static pl_status op_flagged(hs_env *e, const Parley__V1__HistoryRequest *rq,
                            Parley__V1__HistoryReply *rp, hs_arena *a)
{
    pl_status s = hs_require_admin(e, rq->user_id);
    if (s != PL_OK)
        return s;
    unsigned limit = rq->limit ? rq->limit : HSF_LIST_DEF;
    if (limit > HSF_LIST_MAX)
        limit = HSF_LIST_MAX;
    char lim[16];
    snprintf(lim, sizeof lim, "%u", limit);
    const char *p[] = {lim, rq->flag ? "true" : "false"};
    PGresult *r = NULL;
    s = hs_query(e,
                 "SELECT v.conversation_id, v.user_id, coalesce(max(c.title), ''), count(*),"
                 " count(*) FILTER (WHERE v.reviewed_at IS NULL),"
                 " (extract(epoch FROM max(v.decided_at)) * 1000)::bigint,"
                 " coalesce(max(u.email), '')"
                 " FROM safety_verdicts v"
                 " LEFT JOIN conversations c ON c.user_id = v.user_id AND c.id = v.conversation_id"
                 " LEFT JOIN users u ON u.id = v.user_id"
                 " WHERE v.action >= 2 AND v.conversation_id IS NOT NULL"
                 " GROUP BY v.conversation_id, v.user_id"
                 " HAVING NOT $2::bool OR count(*) FILTER (WHERE v.reviewed_at IS NULL) > 0"
                 " ORDER BY 6 DESC, 1 LIMIT $1::int",
                 2, p, &r);
    if (s != PL_OK)
        return s;
    int n = PQntuples(r);
    rp->flagged = hs_alloc(a, (size_t)(n ? n : 1) * sizeof *rp->flagged);
    for (int i = 0; rp->flagged && i < n; i++) {
        Parley__V1__SafetyFlagged *f = hs_alloc(a, sizeof *f);
        if (!f)
            break;
        parley__v1__safety_flagged__init(f);
        f->conversation_id = hs_strdup(a, val(r, i, 0));
        f->user_id = hs_strdup(a, val(r, i, 1));
        f->title = hs_strdup(a, val(r, i, 2));
        f->flagged = (uint32_t)val_i64(r, i, 3);
        f->unreviewed = (uint32_t)val_i64(r, i, 4);
        f->last_flagged_ms = val_i64(r, i, 5);
        f->email = hs_strdup(a, val(r, i, 6));
        if (!f->conversation_id || !f->user_id || !f->title || !f->email)
            break;
        rp->flagged[rp->n_flagged++] = f;
    }
    PQclear(r);
    return rp->flagged && rp->n_flagged == (size_t)n ? PL_OK : PL_ERRF(PL_NOMEM, "out of memory");
}

#define HSF_VERDICT_COLS                                                                           \
    "v.id, v.event_id, coalesce(v.message_id, ''), v.category, v.score, v.action, v.classifier,"   \
    " (extract(epoch FROM v.decided_at) * 1000)::bigint, v.detail, v.user_id,"                     \
    " coalesce(v.conversation_id, ''),"                                                            \
    " coalesce((extract(epoch FROM v.reviewed_at) * 1000)::bigint, 0), coalesce(v.reviewed_by, "   \
    "'')"

/* A verdict from a row of HSF_VERDICT_COLS, in the arena; NULL when out of memory. */
static Parley__V1__SafetyVerdict *verdict_row(const PGresult *r, int row, hs_arena *a)
{
    Parley__V1__SafetyVerdict *v = hs_alloc(a, sizeof *v);
    if (!v)
        return NULL;
    parley__v1__safety_verdict__init(v);
    v->id = hs_strdup(a, val(r, row, 0));
    v->event_id = hs_strdup(a, val(r, row, 1));
    v->message_id = hs_strdup(a, val(r, row, 2));
    v->category = hs_strdup(a, val(r, row, 3));
    v->score = strtof(val(r, row, 4), NULL);
    v->action = (Parley__V1__SafetyAction)val_i64(r, row, 5);
    v->classifier = hs_strdup(a, val(r, row, 6));
    v->decided_ms = val_i64(r, row, 7);
    v->detail = hs_strdup(a, val(r, row, 8));
    v->user_id = hs_strdup(a, val(r, row, 9));
    v->conversation_id = hs_strdup(a, val(r, row, 10));
    v->reviewed_ms = val_i64(r, row, 11);
    v->reviewed_by = hs_strdup(a, val(r, row, 12));
    return v->id && v->event_id && v->message_id && v->category && v->classifier && v->detail &&
                   v->user_id && v->conversation_id && v->reviewed_by
               ? v
               : NULL;
}

/* "safety.messages" */
static pl_status op_messages(hs_env *e, const Parley__V1__HistoryRequest *rq,
                             Parley__V1__HistoryReply *rp, hs_arena *a)
{
    pl_status s = hs_require_admin(e, rq->user_id);
    if (s != PL_OK)
        return s;
    const char *conv = rq->conversation ? rq->conversation->id : NULL;
    if (empty(conv))
        return PL_ERRF(PL_INVALID, "which conversation?");
    const char *p[] = {conv};
    PGresult *r = NULL;
    s = hs_query(e,
                 "SELECT " HSF_VERDICT_COLS " FROM safety_verdicts v"
                 " WHERE v.conversation_id = $1 AND v.action >= 2"
                 " ORDER BY v.decided_at, v.id LIMIT 500",
                 1, p, &r);
    if (s != PL_OK)
        return s;
    int n = PQntuples(r);
    if (n == 0) {
        PQclear(r);
        return PL_ERRF(PL_NOT_FOUND, "no flagged verdict in this conversation");
    }
    rp->verdicts = hs_alloc(a, (size_t)n * sizeof *rp->verdicts);
    for (int i = 0; rp->verdicts && i < n; i++) {
        Parley__V1__SafetyVerdict *v = verdict_row(r, i, a);
        if (!v)
            break;
        rp->verdicts[rp->n_verdicts++] = v;
    }
    PQclear(r);
    if (!rp->verdicts || rp->n_verdicts != (size_t)n)
        return PL_ERRF(PL_NOMEM, "out of memory");
    const char *owner = rp->verdicts[0]->user_id;
    const char *q[] = {owner, conv};
    s = hs_query(e,
                 "SELECT c.id, c.title, m.id, m.role, m.content,"
                 " (extract(epoch FROM m.created_at) * 1000)::bigint, m.status, m.model"
                 " FROM conversations c LEFT JOIN messages m ON m.user_id = c.user_id"
                 "  AND m.conversation_id = c.id AND m.id IN (SELECT message_id FROM"
                 "  safety_verdicts WHERE user_id = $1 AND conversation_id = $2 AND action >= 2)"
                 " WHERE c.user_id = $1 AND c.id = $2 ORDER BY m.created_at, m.id LIMIT 500",
                 2, q, &r);
    if (s != PL_OK)
        return s;
    n = PQntuples(r);
    Parley__V1__Conversation *cv = hs_alloc(a, sizeof *cv);
    rp->messages = hs_alloc(a, (size_t)(n ? n : 1) * sizeof *rp->messages);
    if (!cv || !rp->messages) {
        PQclear(r);
        return PL_ERRF(PL_NOMEM, "out of memory");
    }
    parley__v1__conversation__init(cv);
    cv->id = hs_strdup(a, conv);
    cv->user_id = hs_strdup(a, owner);
    cv->title = hs_strdup(a, n ? val(r, 0, 1) : "");
    rp->conversation = cv;
    for (int i = 0; i < n; i++) {
        if (PQgetisnull(r, i, 2))
            continue; /* the conversation without any judged message left */
        Parley__V1__Message *m = hs_alloc(a, sizeof *m);
        if (!m)
            break;
        parley__v1__message__init(m);
        m->id = hs_strdup(a, val(r, i, 2));
        m->conversation_id = cv->id;
        m->role = (Parley__V1__Role)val_i64(r, i, 3);
        m->content = hs_strdup(a, val(r, i, 4));
        m->created_ms = val_i64(r, i, 5);
        m->status = (Parley__V1__MessageStatus)val_i64(r, i, 6);
        m->model = hs_strdup(a, val(r, i, 7));
        rp->messages[rp->n_messages++] = m;
    }
    PQclear(r);
    return PL_OK;
}

/* "safety.review" */
static pl_status op_review(hs_env *e, const Parley__V1__HistoryRequest *rq,
                           Parley__V1__HistoryReply *rp, hs_arena *a)
{
    pl_status s = hs_require_admin(e, rq->user_id);
    if (s != PL_OK)
        return s;
    const char *id = rq->verdict ? rq->verdict->id : NULL;
    if (empty(id))
        return PL_ERRF(PL_INVALID, "which verdict?");
    const char *p[] = {id, rq->user_id};
    PGresult *r = NULL;
    s = hs_query(e,
                 "UPDATE safety_verdicts v SET reviewed_at = coalesce(reviewed_at, now()),"
                 " reviewed_by = coalesce(reviewed_by, $2) WHERE v.id = $1"
                 " RETURNING " HSF_VERDICT_COLS,
                 2, p, &r);
    if (s != PL_OK)
        return s;
    int n = PQntuples(r);
    if (n == 0) {
        PQclear(r);
        return PL_ERRF(PL_NOT_FOUND, "no such verdict");
    }
    rp->verdicts = hs_alloc(a, sizeof *rp->verdicts);
    Parley__V1__SafetyVerdict *v = rp->verdicts ? verdict_row(r, 0, a) : NULL;
    PQclear(r);
    if (!v)
        return PL_ERRF(PL_NOMEM, "out of memory");
    rp->verdicts[0] = v;
    rp->n_verdicts = 1;
    return PL_OK;
}

const hs_op hs_ops_safety[] = {
    {"safety.store", op_store},
    {"safety.flagged", op_flagged},
    {"safety.messages", op_messages},
    {"safety.review", op_review},
};
const size_t hs_n_ops_safety = sizeof hs_ops_safety / sizeof hs_ops_safety[0];
