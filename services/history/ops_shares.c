/* ops_shares.c — history operations on share links and uploads (listed in ops_convs.c).
 *
 * Shares: a share is an immutable snapshot (jsonb, built by PostgreSQL from the chain's rows)
 * of a conversation's active branch up to a chosen message, reached by an unguessable token:
 * 256 random bits (libsodium), base64url without padding (43 characters), stored only as its
 * SHA-256 in hex, which also serves as the share's id in the owner's list (a hash cannot be
 * turned back into a working link). Custom instructions are never part of a snapshot (they
 * are not messages), nor are uploads' texts or pending answers. share.get is the one op not
 * scoped to a user: the token is the capability.
 *
 * Uploads: the text extracted by the gateway (plain text as is, PDF through pdftotext) with
 * the file's name and type; attached to a user message by msg.turn.
 *
 * Threading: as every op, on a libnats thread with its own connection and arena. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "ops_convs.h"

#define HSS_TOKEN_BYTES  32
#define HSS_LIST_MAX     200
#define HSS_FILENAME_MAX 255
#define HSS_UPLOAD_MAX   (4u << 20) /* bytes of extracted text */

/* SHA-256 of `s` as 64 hex characters + NUL. */
static void sha256_hex(const char *s, char out[65])
{
    unsigned char h[crypto_hash_sha256_BYTES];
    crypto_hash_sha256(h, (const unsigned char *)s, strlen(s));
    sodium_bin2hex(out, 65, h, sizeof h);
}

/* "share.create": share.conversation_id, share.upto_message_id ("" = the active leaf; it must
 * lie on the active branch) → share (token: the only time it is shown; title, created_ms). */
pl_status hs_op_share_create(hs_env *e, const Parley__V1__HistoryRequest *rq,
                             Parley__V1__HistoryReply *rp, hs_arena *a)
{
    pl_status s = hsc_need_user(rq);
    if (s != PL_OK)
        return s;
    if (sodium_init() < 0)
        return PL_ERRF(PL_ERR, "libsodium cannot start");
    const Parley__V1__Share *in = rq->share;
    const char *conv = in && in->conversation_id ? in->conversation_id : "";
    PGconn *c = NULL;
    if ((s = hs_conn(e, &c)) != PL_OK)
        return s;
    Parley__V1__Conversation *cv = NULL;
    ct_tree *t = NULL;
    int upto = -1;
    s = hsc_conv_get(c, rq->user_id, conv, a, &cv);
    if (s == PL_OK)
        s = ct_load(c, rq->user_id, conv, &t);
    if (s == PL_OK) {
        int leaf = ct_find(t, cv->active_leaf_id);
        upto = in && in->upto_message_id && in->upto_message_id[0] ? ct_find(t, in->upto_message_id)
                                                                   : leaf;
        if (upto < 0 || !ct_on_chain(t, leaf, upto))
            s = PL_ERRF(PL_NOT_FOUND, upto < 0 && leaf < 0 ? "the conversation has no message"
                                                           : "message not found on the active "
                                                             "branch");
    }
    char **ids = NULL;
    size_t k = 0;
    if (s == PL_OK) {
        size_t n = ct_count(t);
        int *chain = hs_alloc(a, n * sizeof *chain);
        ids = hs_alloc(a, n * sizeof *ids);
        if (!chain || !ids)
            s = PL_ERRF(PL_NOMEM, "out of memory");
        else
            k = ct_chain(t, upto, chain, n, NULL);
        for (size_t i = 0; s == PL_OK && i < k; i++)
            if (!(ids[i] = hs_strdup(a, ct_node_at(t, chain[i])->row.id)))
                s = PL_ERRF(PL_NOMEM, "out of memory");
    }
    char
        token[sodium_base64_ENCODED_LEN(HSS_TOKEN_BYTES, sodium_base64_VARIANT_URLSAFE_NO_PADDING)];
    char hash[65];
    const char *arr = s == PL_OK ? hsc_id_array(a, ids, k) : NULL;
    if (s == PL_OK && !arr)
        s = PL_ERRF(PL_NOMEM, "out of memory");
    PGresult *r = NULL;
    if (s == PL_OK) {
        unsigned char raw[HSS_TOKEN_BYTES];
        randombytes_buf(raw, sizeof raw);
        sodium_bin2base64(token, sizeof token, raw, sizeof raw,
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING);
        sodium_memzero(raw, sizeof raw);
        sha256_hex(token, hash);
        const char *p[] = {hash, rq->user_id, conv, ct_node_at(t, upto)->row.id, cv->title, arr};
        s = db_exec(
            c,
            "INSERT INTO shares (token_hash, user_id, conversation_id, upto_message_id, title,"
            " snapshot) SELECT $1, $2, $3, $4, $5, coalesce(jsonb_agg(jsonb_build_object("
            "  'role', m.role, 'content', m.content, 'model', m.model, 'status', m.status,"
            "  'created_ms', (extract(epoch FROM m.created_at) * 1000)::bigint)"
            "  ORDER BY u.ord), '[]'::jsonb)"
            " FROM unnest($6::text[]) WITH ORDINALITY AS u(id, ord)"
            " JOIN messages m ON m.user_id = $2 AND m.id = u.id AND m.status <> 1"
            " RETURNING (extract(epoch FROM created_at) * 1000)::bigint",
            6, p, &r);
    }
    if (s == PL_OK) {
        Parley__V1__Share *sh = hs_alloc(a, sizeof *sh);
        if (!sh) {
            PQclear(r);
            s = PL_ERRF(PL_NOMEM, "out of memory");
        } else {
            parley__v1__share__init(sh);
            sh->token = hs_strdup(a, token);
            sh->conversation_id = hs_strdup(a, conv);
            sh->upto_message_id = hs_strdup(a, ct_node_at(t, upto)->row.id);
            sh->title = hs_strdup(a, cv->title);
            sh->created_ms = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
            PQclear(r);
            rp->share = sh;
        }
    }
    sodium_memzero(token, sizeof token);
    ct_free(t);
    hs_release(e, c);
    return s;
}

/* "share.list": flag = include revoked ones → shares, newest first; in a list `token` holds
 * the share's id (the hex SHA-256 of its token), never the token itself. */
pl_status hs_op_share_list(hs_env *e, const Parley__V1__HistoryRequest *rq,
                           Parley__V1__HistoryReply *rp, hs_arena *a)
{
    pl_status s = hsc_need_user(rq);
    if (s != PL_OK)
        return s;
    char lim[24];
    const char *p[] = {rq->user_id, rq->flag ? "t" : "f", hsc_i64(lim, HSS_LIST_MAX)};
    PGresult *r = NULL;
    s = hs_query(e,
                 "SELECT token_hash, conversation_id, upto_message_id, title,"
                 " (extract(epoch FROM created_at) * 1000)::bigint, revoked_at IS NOT NULL"
                 " FROM shares WHERE user_id = $1 AND ($2::boolean OR revoked_at IS NULL)"
                 " ORDER BY created_at DESC LIMIT $3::int",
                 3, p, &r);
    if (s != PL_OK)
        return s;
    int n = PQntuples(r);
    rp->shares = hs_alloc(a, (n ? (size_t)n : 1) * sizeof *rp->shares);
    for (int i = 0; rp->shares && i < n; i++) {
        Parley__V1__Share *sh = hs_alloc(a, sizeof *sh);
        if (!sh)
            break;
        parley__v1__share__init(sh);
        sh->token = hs_strdup(a, PQgetvalue(r, i, 0));
        sh->conversation_id = hs_strdup(a, PQgetvalue(r, i, 1));
        sh->upto_message_id = hs_strdup(a, PQgetvalue(r, i, 2));
        sh->title = hs_strdup(a, PQgetvalue(r, i, 3));
        sh->created_ms = strtoll(PQgetvalue(r, i, 4), NULL, 10);
        sh->revoked = PQgetvalue(r, i, 5)[0] == 't';
        rp->shares[rp->n_shares++] = sh;
    }
    PQclear(r);
    return rp->n_shares == (size_t)n ? PL_OK : PL_ERRF(PL_NOMEM, "out of memory");
}

/* "share.revoke": share.token = the token or the share's id → the link stops working. */
pl_status hs_op_share_revoke(hs_env *e, const Parley__V1__HistoryRequest *rq,
                             Parley__V1__HistoryReply *rp, hs_arena *a)
{
    (void)a;
    pl_status s = hsc_need_user(rq);
    if (s != PL_OK)
        return s;
    const char *tok = rq->share && rq->share->token ? rq->share->token : "";
    if (!tok[0] || strlen(tok) > 128)
        return PL_ERRF(PL_NOT_FOUND, "share not found");
    char hash[65];
    sha256_hex(tok, hash);
    const char *p[] = {rq->user_id, tok, hash};
    PGresult *r = NULL;
    s = hs_query(e,
                 "UPDATE shares SET revoked_at = now() WHERE user_id = $1"
                 " AND token_hash IN ($2, $3) AND revoked_at IS NULL RETURNING token_hash",
                 3, p, &r);
    if (s != PL_OK)
        return s;
    rp->count = (uint64_t)PQntuples(r);
    PQclear(r);
    return rp->count ? PL_OK : PL_ERRF(PL_NOT_FOUND, "share not found");
}

/* "share.get": share.token (no user) → share (title, created_ms) and messages (role,
 * content, model, status, created_ms). A revoked or unknown token is PL_NOT_FOUND. */
pl_status hs_op_share_get(hs_env *e, const Parley__V1__HistoryRequest *rq,
                          Parley__V1__HistoryReply *rp, hs_arena *a)
{
    const char *tok = rq->share && rq->share->token ? rq->share->token : "";
    if (!tok[0] || strlen(tok) > 128)
        return PL_ERRF(PL_NOT_FOUND, "share not found");
    char hash[65];
    sha256_hex(tok, hash);
    const char *p[] = {hash};
    PGconn *c = NULL;
    pl_status s = hs_conn(e, &c);
    if (s != PL_OK)
        return s;
    PGresult *r = NULL;
    s = db_exec(c,
                "SELECT s.title, (extract(epoch FROM s.created_at) * 1000)::bigint,"
                " x.e->>'role', x.e->>'content', x.e->>'model', x.e->>'status',"
                " x.e->>'created_ms', x.e IS NULL"
                " FROM shares s LEFT JOIN LATERAL jsonb_array_elements(s.snapshot)"
                "  WITH ORDINALITY AS x(e, ord) ON true"
                " WHERE s.token_hash = $1 AND s.revoked_at IS NULL ORDER BY x.ord",
                1, p, &r);
    hs_release(e, c);
    if (s != PL_OK)
        return s;
    int n = PQntuples(r);
    if (n == 0) {
        PQclear(r);
        return PL_ERRF(PL_NOT_FOUND, "share not found");
    }
    Parley__V1__Share *sh = hs_alloc(a, sizeof *sh);
    rp->messages = hs_alloc(a, (size_t)n * sizeof *rp->messages);
    if (!sh || !rp->messages) {
        PQclear(r);
        return PL_ERRF(PL_NOMEM, "out of memory");
    }
    parley__v1__share__init(sh);
    sh->title = hs_strdup(a, PQgetvalue(r, 0, 0));
    sh->created_ms = strtoll(PQgetvalue(r, 0, 1), NULL, 10);
    rp->share = sh;
    for (int i = 0; i < n; i++) {
        if (PQgetvalue(r, i, 7)[0] == 't')
            break; /* an empty snapshot */
        Parley__V1__Message *m = hs_alloc(a, sizeof *m);
        if (!m) {
            PQclear(r);
            return PL_ERRF(PL_NOMEM, "out of memory");
        }
        parley__v1__message__init(m);
        m->role = (Parley__V1__Role)atoi(PQgetvalue(r, i, 2));
        m->content = hs_strdup(a, PQgetvalue(r, i, 3));
        m->model = hs_strdup(a, PQgetvalue(r, i, 4));
        m->status = (Parley__V1__MessageStatus)atoi(PQgetvalue(r, i, 5));
        m->created_ms = strtoll(PQgetvalue(r, i, 6), NULL, 10);
        rp->messages[rp->n_messages++] = m;
    }
    PQclear(r);
    return PL_OK;
}

static Parley__V1__Upload *upload_from_row(hs_arena *a, const PGresult *r, int i)
{
    Parley__V1__Upload *u = hs_alloc(a, sizeof *u);
    if (!u)
        return NULL;
    parley__v1__upload__init(u);
    u->id = hs_strdup(a, PQgetvalue(r, i, 0));
    u->filename = hs_strdup(a, PQgetvalue(r, i, 1));
    u->media_type = hs_strdup(a, PQgetvalue(r, i, 2));
    u->size_bytes = (uint32_t)strtoul(PQgetvalue(r, i, 3), NULL, 10);
    u->text = hs_strdup(a, PQgetvalue(r, i, 4));
    u->message_id = hs_strdup(a, PQgetvalue(r, i, 5));
    u->created_ms = strtoll(PQgetvalue(r, i, 6), NULL, 10);
    return u;
}

#define HSS_UPLOAD_COLS                                                                            \
    "id, filename, media_type, size_bytes, text_content, coalesce(message_id, ''),"                \
    " (extract(epoch FROM created_at) * 1000)::bigint"

/* "upload.create": upload.filename, .media_type, .size_bytes (of the file), .text (extracted)
 * → upload (id, created_ms; the text is not echoed). */
pl_status hs_op_upload_create(hs_env *e, const Parley__V1__HistoryRequest *rq,
                              Parley__V1__HistoryReply *rp, hs_arena *a)
{
    pl_status s = hsc_need_user(rq);
    const Parley__V1__Upload *in = rq->upload;
    if (s == PL_OK && (!in || !in->filename || !in->filename[0] || !in->media_type || !in->text))
        s = PL_ERRF(PL_INVALID, "upload.create needs the file's name, type and text");
    if (s == PL_OK && strlen(in->filename) > HSS_FILENAME_MAX)
        s = PL_ERRF(PL_INVALID, "the file name is longer than %d bytes", HSS_FILENAME_MAX);
    if (s == PL_OK && strlen(in->text) > HSS_UPLOAD_MAX)
        s = PL_ERRF(PL_TOO_LARGE, "the file's text is longer than %u bytes", HSS_UPLOAD_MAX);
    if (s != PL_OK)
        return s;
    char *id = hs_new_id(a);
    char size[24];
    if (!id)
        return PL_ERRF(PL_NOMEM, "out of memory");
    const char *p[] = {rq->user_id, id, in->filename, in->media_type, hsc_i64(size, in->size_bytes),
                       in->text};
    PGresult *r = NULL;
    s = hs_query(e,
                 "INSERT INTO uploads (user_id, id, filename, media_type, size_bytes, text_content)"
                 " VALUES ($1, $2, $3, $4, $5::int, $6) RETURNING " HSS_UPLOAD_COLS,
                 6, p, &r);
    if (s != PL_OK)
        return s;
    rp->upload = upload_from_row(a, r, 0);
    PQclear(r);
    if (!rp->upload)
        return PL_ERRF(PL_NOMEM, "out of memory");
    rp->upload->text = (char *)"";
    return PL_OK;
}

/* "upload.get": upload.id → upload (with its text). */
pl_status hs_op_upload_get(hs_env *e, const Parley__V1__HistoryRequest *rq,
                           Parley__V1__HistoryReply *rp, hs_arena *a)
{
    pl_status s = hsc_need_user(rq);
    if (s != PL_OK)
        return s;
    const char *p[] = {rq->user_id, rq->upload && rq->upload->id ? rq->upload->id : ""};
    PGresult *r = NULL;
    s = hs_query(e, "SELECT " HSS_UPLOAD_COLS " FROM uploads WHERE user_id = $1 AND id = $2", 2, p,
                 &r);
    if (s != PL_OK)
        return s;
    if (PQntuples(r) == 0)
        s = PL_ERRF(PL_NOT_FOUND, "upload not found");
    else if (!(rp->upload = upload_from_row(a, r, 0)))
        s = PL_ERRF(PL_NOMEM, "out of memory");
    PQclear(r);
    return s;
}
