/* ops_accounts.c — history operations for accounts: users, sessions, API keys, tiers, quotas,
 * usage, login rate limits and the admin views (see ops.h for the calling convention).
 *
 * Threading: every op runs on a libnats thread, borrows one pooled PostgreSQL connection for
 * the length of a statement (or of the one transaction in "user.create") and the shared Redis
 * connection (cache.c, behind its own mutex). Nothing here keeps state between requests.
 *
 * Secrets: the gateway hashes everything before it gets here. Passwords arrive as argon2id
 * encoded strings, session tokens and API keys as sha-256 hex; none of them is ever logged or
 * put in a reply except "user.by_email"'s password_hash, which the gateway needs to verify.
 *
 * Quotas (Redis, counters only; PostgreSQL usage_daily is the record):
 *   q:rpm:<user>:<unix minute>  requests in that minute (INCR, expires after two minutes)
 *   q:tok:<user>:<unix day>     tokens used that UTC day (INCRBY, expires after two days);
 *                               rebuilt from usage_daily when missing (Redis flushed or lost)
 *   rl:<name>                   fixed-window counters of "ratelimit.hit" (login failures)
 * When Redis is unreachable the per-minute limit is not enforced (logged) and tokens are read
 * from PostgreSQL: losing the cache degrades limits, it never locks users out.
 *
 * What it does not do: password hashing or verification (the gateway), HTTP semantics,
 * conversations (ops_convs.c). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "ops.h"

#define MINUTE_MS          60000LL
#define DAY_MS             86400000LL
#define DEFAULT_IDLE_MS    (7 * DAY_MS)
#define DEFAULT_SESSION_MS (30 * DAY_MS)
#define MAX_API_KEYS       50
#define MAX_INSTRUCTIONS   8000
/* Names parley's sign-up lock among advisory locks ("parlus"); see op_user_create. */
#define SIGNUP_LOCK "112410425194867"

/* Column lists shared by the queries below; user_from / tier_from read them in this order. */
#define USER_COLS                                                                                  \
    "u.id, u.email, u.tier, u.is_admin, (extract(epoch FROM u.created_at) * 1000)::bigint AS "     \
    "created_ms, u.custom_instructions, u.disabled"
#define USER_NCOLS 7
#define TIER_COLS                                                                                  \
    "t.name AS tier_name, array_to_string(t.models, E'\\n') AS models, t.context_window, "         \
    "t.requests_per_minute, t.tokens_per_day, t.priority, t.max_tokens"
#define TIER_NCOLS 7
#define KEY_COLS                                                                                   \
    "k.id AS key_id, k.name AS key_name, k.prefix, (extract(epoch FROM k.created_at) * "           \
    "1000)::bigint AS key_created_ms, coalesce((extract(epoch FROM k.last_used_at) * "             \
    "1000)::bigint, 0) AS key_used_ms, k.revoked_at IS NOT NULL AS key_revoked"
#define KEY_NCOLS 6

/* --- small helpers ------------------------------------------------------------------------- */

/* One statement on a pooled connection. */
static const char *val(const PGresult *r, int row, int col)
{
    return PQgetvalue(r, row, col);
}

static int64_t val_i64(const PGresult *r, int row, int col)
{
    return PQgetisnull(r, row, col) ? 0 : strtoll(PQgetvalue(r, row, col), NULL, 10);
}

static bool val_bool(const PGresult *r, int row, int col)
{
    return PQgetvalue(r, row, col)[0] == 't';
}

static bool is_hex64(const char *s)
{
    if (!s || strlen(s) != 64)
        return false;
    for (; *s; s++)
        if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f')))
            return false;
    return true;
}

static bool empty(const char *s)
{
    return !s || !*s;
}

/* Decimal text of an integer, in the arena (query parameters). */
static char *num(hs_arena *a, int64_t v)
{
    char *p = hs_alloc(a, 24);
    if (p)
        snprintf(p, 24, "%" PRId64, v);
    return p;
}

static Parley__V1__User *user_from(hs_arena *a, const PGresult *r, int row, int col)
{
    Parley__V1__User *u = hs_alloc(a, sizeof *u);
    if (!u)
        return NULL;
    parley__v1__user__init(u);
    u->id = hs_strdup(a, val(r, row, col));
    u->email = hs_strdup(a, val(r, row, col + 1));
    u->tier = hs_strdup(a, val(r, row, col + 2));
    u->is_admin = val_bool(r, row, col + 3);
    u->created_ms = val_i64(r, row, col + 4);
    u->custom_instructions = hs_strdup(a, val(r, row, col + 5));
    u->disabled = val_bool(r, row, col + 6);
    return u->id && u->email && u->tier && u->custom_instructions ? u : NULL;
}

static Parley__V1__Tier *tier_from(hs_arena *a, const PGresult *r, int row, int col)
{
    Parley__V1__Tier *t = hs_alloc(a, sizeof *t);
    if (!t)
        return NULL;
    parley__v1__tier__init(t);
    t->name = hs_strdup(a, val(r, row, col));
    /* models arrive newline-joined (model ids never contain a newline: tier.set checks). */
    char *models = hs_strdup(a, val(r, row, col + 1));
    if (!t->name || !models)
        return NULL;
    size_t n = *models ? 1 : 0;
    for (const char *p = models; *p; p++)
        n += *p == '\n';
    if (n) {
        t->models = hs_alloc(a, n * sizeof *t->models);
        if (!t->models)
            return NULL;
        for (char *p = models, *nl; p; p = nl ? nl + 1 : NULL) {
            nl = strchr(p, '\n');
            if (nl)
                *nl = '\0';
            t->models[t->n_models++] = p;
        }
    }
    t->context_window = (uint32_t)val_i64(r, row, col + 2);
    t->requests_per_minute = (uint32_t)val_i64(r, row, col + 3);
    t->tokens_per_day = (uint64_t)val_i64(r, row, col + 4);
    t->priority = (Parley__V1__Priority)val_i64(r, row, col + 5);
    t->max_tokens = (uint32_t)val_i64(r, row, col + 6);
    return t;
}

static Parley__V1__ApiKey *key_from(hs_arena *a, const PGresult *r, int row, int col)
{
    Parley__V1__ApiKey *k = hs_alloc(a, sizeof *k);
    if (!k)
        return NULL;
    parley__v1__api_key__init(k);
    k->id = hs_strdup(a, val(r, row, col));
    k->name = hs_strdup(a, val(r, row, col + 1));
    k->prefix = hs_strdup(a, val(r, row, col + 2));
    k->created_ms = val_i64(r, row, col + 3);
    k->last_used_ms = val_i64(r, row, col + 4);
    k->revoked = val_bool(r, row, col + 5);
    return k->id && k->name && k->prefix ? k : NULL;
}

/* PL_OK when `user_id` names an enabled administrator; PL_PERMISSION otherwise. Admin ops
 * check here as well as in the gateway, so no other caller of the bus can skip it. */
pl_status hs_require_admin(hs_env *e, const char *user_id)
{
    if (empty(user_id))
        return PL_ERRF(PL_PERMISSION, "administrators only");
    const char *p[] = {user_id};
    PGresult *r = NULL;
    pl_status s =
        hs_query(e, "SELECT 1 FROM users WHERE id = $1 AND is_admin AND NOT disabled", 1, p, &r);
    if (s != PL_OK)
        return s;
    bool ok = PQntuples(r) == 1;
    PQclear(r);
    return ok ? PL_OK : PL_ERRF(PL_PERMISSION, "administrators only");
}

/* --- quotas -------------------------------------------------------------------------------- */

/* Tokens used today by `uid`: the Redis counter, else usage_daily (seeding the counter back
 * when Redis answered but had lost it). */
static pl_status tokens_today(hs_env *e, hs_arena *a, const char *uid, int64_t day, int64_t *used)
{
    char key[128];
    snprintf(key, sizeof key, "q:tok:%s:%" PRId64, uid, day);
    pl_status cs = cache_counter(e->cache, key, used, NULL);
    if (cs == PL_OK)
        return PL_OK;
    const char *p[] = {uid, num(a, day)};
    PGresult *r = NULL;
    pl_status s = hs_query(e,
                           "SELECT prompt_tokens + completion_tokens FROM usage_daily"
                           " WHERE user_id = $1 AND day = date '1970-01-01' + $2::int",
                           2, p, &r);
    if (s != PL_OK)
        return s;
    *used = PQntuples(r) ? val_i64(r, 0, 0) : 0;
    PQclear(r);
    if (cs == PL_NOT_FOUND) {
        char v[24];
        bool set;
        snprintf(v, sizeof v, "%" PRId64, *used);
        if (cache_set_nx(e->cache, key, v, strlen(v), 2 * DAY_MS / 1000, &set) != PL_OK)
            LOGW(NULL, "quota: cannot seed %s: %s", key, pl_err_last());
    }
    return PL_OK;
}

/* Fills `q` for `uid` under tier `t`. With `take`, counts one request first (only when the
 * tokens of the day are not spent) and answers PL_RATE_LIMITED, with q->exceeded and a
 * message saying what and until when, when the request is over a limit. Without `take`,
 * q->exceeded names a limit that the next request would hit; the status stays PL_OK. */
static pl_status quota_fill(hs_env *e, hs_arena *a, const char *rid, const char *uid,
                            const Parley__V1__Tier *t, bool take, Parley__V1__Quota *q)
{
    int64_t now = dmn_wall_ms(), minute = now / MINUTE_MS, day = now / DAY_MS;
    q->requests_limit = t->requests_per_minute;
    q->tokens_limit = t->tokens_per_day;
    q->minute_reset_ms = (minute + 1) * MINUTE_MS;
    q->day_reset_ms = (day + 1) * DAY_MS;
    int64_t used = 0, count = 0;
    pl_status s = tokens_today(e, a, uid, day, &used);
    if (s != PL_OK)
        return s;
    bool tokens_out = (uint64_t)used >= t->tokens_per_day;
    char key[128];
    snprintf(key, sizeof key, "q:rpm:%s:%" PRId64, uid, minute);
    pl_status cs;
    if (take && !tokens_out)
        cs = cache_incr(e->cache, key, 1, 2 * MINUTE_MS, &count, NULL);
    else
        cs = cache_counter(e->cache, key, &count, NULL);
    if (cs != PL_OK && cs != PL_NOT_FOUND) {
        LOGW(rid, "quota: Redis unavailable, requests per minute not enforced: %s", pl_err_last());
        count = 0;
    }
    bool rpm_out =
        take ? count > (int64_t)t->requests_per_minute : count >= (int64_t)t->requests_per_minute;
    q->requests_left =
        count >= (int64_t)t->requests_per_minute ? 0 : t->requests_per_minute - (uint32_t)count;
    q->tokens_left = tokens_out ? 0 : t->tokens_per_day - (uint64_t)used;
    q->exceeded = tokens_out ? "tokens_per_day" : rpm_out ? "requests_per_minute" : "";
    if (!take)
        return PL_OK;
    if (tokens_out)
        return PL_ERRF(PL_RATE_LIMITED,
                       "tokens per day exceeded: the %s tier allows %" PRIu64
                       " tokens a day; the count resets at 00:00 UTC",
                       t->name, t->tokens_per_day);
    if (rpm_out)
        return PL_ERRF(PL_RATE_LIMITED,
                       "requests per minute exceeded: the %s tier allows %u requests a minute; "
                       "retry in %" PRId64 " s",
                       t->name, t->requests_per_minute, (q->minute_reset_ms - now + 999) / 1000);
    /* The record of requests per day; a failure here does not refuse the request. */
    const char *p[] = {uid, num(a, day)};
    if (hs_query(e,
                 "INSERT INTO usage_daily (user_id, day, requests) VALUES ($1, date '1970-01-01' + "
                 "$2::int, 1) ON CONFLICT (user_id, day) DO UPDATE SET requests = "
                 "usage_daily.requests + 1",
                 2, p, NULL) != PL_OK)
        LOGW(rid, "quota: cannot record the request: %s", pl_err_last());
    return PL_OK;
}

/* Puts a fresh Quota (for tier rp->tier) into the reply. */
static pl_status reply_quota(hs_env *e, hs_arena *a, const char *rid, const char *uid,
                             Parley__V1__HistoryReply *rp, bool take)
{
    rp->quota = hs_alloc(a, sizeof *rp->quota);
    if (!rp->quota)
        return PL_ERRF(PL_NOMEM, "out of memory");
    parley__v1__quota__init(rp->quota);
    return quota_fill(e, a, rid, uid, rp->tier, take, rp->quota);
}

/* Loads `uid`'s tier into rp->tier. */
static pl_status load_tier(hs_env *e, hs_arena *a, const char *uid, Parley__V1__HistoryReply *rp)
{
    if (empty(uid))
        return PL_ERRF(PL_INVALID, "user_id is required");
    const char *p[] = {uid};
    PGresult *r = NULL;
    pl_status s = hs_query(e,
                           "SELECT " TIER_COLS " FROM users u JOIN tiers t ON t.name = u.tier"
                           " WHERE u.id = $1",
                           1, p, &r);
    if (s != PL_OK)
        return s;
    if (PQntuples(r) != 1) {
        PQclear(r);
        return PL_ERRF(PL_NOT_FOUND, "no such user");
    }
    rp->tier = tier_from(a, r, 0, 0);
    PQclear(r);
    return rp->tier ? PL_OK : PL_ERRF(PL_NOMEM, "out of memory");
}

/* --- users --------------------------------------------------------------------------------- */

/* "user.create": user.email, password_hash, flag = sign-up open. The first user becomes an
 * administrator: an advisory transaction lock serialises sign-ups so two first sign-ups at
 * once cannot both see an empty table. */
static pl_status op_user_create(hs_env *e, const Parley__V1__HistoryRequest *rq,
                                Parley__V1__HistoryReply *rp, hs_arena *a)
{
    if (!rq->flag)
        return PL_ERRF(PL_PERMISSION, "sign-up is closed");
    const char *email = rq->user ? rq->user->email : NULL;
    if (empty(email) || strlen(email) > 254 || !strchr(email, '@'))
        return PL_ERRF(PL_INVALID, "a valid email address is required");
    if (empty(rq->password_hash) || strncmp(rq->password_hash, "$argon2id$", 10) != 0)
        return PL_ERRF(PL_INVALID, "password_hash must be an argon2id encoded hash");
    const char *p[] = {hs_new_id(a), email, rq->password_hash};
    if (!p[0])
        return PL_ERRF(PL_NOMEM, "out of memory");
    PGconn *c;
    pl_status s = hs_conn(e, &c);
    if (s != PL_OK)
        return s;
    PGresult *r = NULL;
    s = db_exec(c, "BEGIN", 0, NULL, NULL);
    if (s == PL_OK)
        s = db_exec(c, "SELECT pg_advisory_xact_lock(" SIGNUP_LOCK ")", 0, NULL, NULL);
    if (s == PL_OK)
        s = db_exec(c,
                    "INSERT INTO users AS u (id, email, password_hash, is_admin)"
                    " VALUES ($1, lower($2), $3, NOT EXISTS (SELECT 1 FROM users))"
                    " RETURNING " USER_COLS,
                    3, p, &r);
    if (s == PL_OK)
        s = db_exec(c, "COMMIT", 0, NULL, NULL);
    if (s != PL_OK) {
        char why[512];
        snprintf(why, sizeof why, "%s", pl_err_last());
        PQclear(PQexec(c, "ROLLBACK"));
        hs_release(e, c);
        PQclear(r);
        if (s == PL_EXISTS)
            return PL_ERRF(PL_EXISTS, "an account with this email already exists");
        return PL_ERRF(s, "%s", why);
    }
    hs_release(e, c);
    rp->user = user_from(a, r, 0, 0);
    PQclear(r);
    if (!rp->user)
        return PL_ERRF(PL_NOMEM, "out of memory");
    LOGI(rq->request_id, "user %s signed up%s", rp->user->id,
         rp->user->is_admin ? " (first user: administrator)" : "");
    return PL_OK;
}

/* "user.by_email": user.email → reply.user and reply.password_hash (for the gateway's
 * verification only). */
static pl_status op_user_by_email(hs_env *e, const Parley__V1__HistoryRequest *rq,
                                  Parley__V1__HistoryReply *rp, hs_arena *a)
{
    const char *email = rq->user ? rq->user->email : NULL;
    if (empty(email))
        return PL_ERRF(PL_INVALID, "user.email is required");
    const char *p[] = {email};
    PGresult *r = NULL;
    pl_status s = hs_query(e,
                           "SELECT " USER_COLS ", u.password_hash FROM users u"
                           " WHERE lower(u.email) = lower($1)",
                           1, p, &r);
    if (s != PL_OK)
        return s;
    if (PQntuples(r) != 1) {
        PQclear(r);
        return PL_ERRF(PL_NOT_FOUND, "no such user");
    }
    rp->user = user_from(a, r, 0, 0);
    rp->password_hash = hs_strdup(a, val(r, 0, USER_NCOLS));
    PQclear(r);
    return rp->user && rp->password_hash ? PL_OK : PL_ERRF(PL_NOMEM, "out of memory");
}

/* "user.get": user_id → reply.user. */
static pl_status op_user_get(hs_env *e, const Parley__V1__HistoryRequest *rq,
                             Parley__V1__HistoryReply *rp, hs_arena *a)
{
    if (empty(rq->user_id))
        return PL_ERRF(PL_INVALID, "user_id is required");
    const char *p[] = {rq->user_id};
    PGresult *r = NULL;
    pl_status s = hs_query(e, "SELECT " USER_COLS " FROM users u WHERE u.id = $1", 1, p, &r);
    if (s != PL_OK)
        return s;
    if (PQntuples(r) != 1) {
        PQclear(r);
        return PL_ERRF(PL_NOT_FOUND, "no such user");
    }
    rp->user = user_from(a, r, 0, 0);
    PQclear(r);
    return rp->user ? PL_OK : PL_ERRF(PL_NOMEM, "out of memory");
}

/* "user.update": user_id, user.custom_instructions (the only field a user may change here) →
 * reply.user. */
static pl_status op_user_update(hs_env *e, const Parley__V1__HistoryRequest *rq,
                                Parley__V1__HistoryReply *rp, hs_arena *a)
{
    if (empty(rq->user_id) || !rq->user)
        return PL_ERRF(PL_INVALID, "user_id and user are required");
    const char *ci = rq->user->custom_instructions ? rq->user->custom_instructions : "";
    if (strlen(ci) > MAX_INSTRUCTIONS)
        return PL_ERRF(PL_INVALID, "custom_instructions is longer than %d bytes", MAX_INSTRUCTIONS);
    const char *p[] = {rq->user_id, ci};
    PGresult *r = NULL;
    pl_status s = hs_query(e,
                           "UPDATE users u SET custom_instructions = $2 WHERE u.id = $1"
                           " RETURNING " USER_COLS,
                           2, p, &r);
    if (s != PL_OK)
        return s;
    if (PQntuples(r) != 1) {
        PQclear(r);
        return PL_ERRF(PL_NOT_FOUND, "no such user");
    }
    rp->user = user_from(a, r, 0, 0);
    PQclear(r);
    return rp->user ? PL_OK : PL_ERRF(PL_NOMEM, "out of memory");
}

/* --- sessions ------------------------------------------------------------------------------ */

/* "session.create": user_id, token_hash, expires_ms (absolute expiry, unix ms; 0 = 30 days).
 * Also drops the user's sessions that have expired. */
static pl_status op_session_create(hs_env *e, const Parley__V1__HistoryRequest *rq,
                                   Parley__V1__HistoryReply *rp, hs_arena *a)
{
    (void)rp;
    if (empty(rq->user_id) || !is_hex64(rq->token_hash))
        return PL_ERRF(PL_INVALID, "user_id and token_hash (sha-256 hex) are required");
    int64_t exp = rq->expires_ms > 0 ? rq->expires_ms : dmn_wall_ms() + DEFAULT_SESSION_MS;
    const char *p[] = {rq->token_hash, rq->user_id, num(a, exp)};
    pl_status s = hs_query(e,
                           "WITH gone AS (DELETE FROM sessions WHERE user_id = $2 AND expires_at <"
                           " now()) INSERT INTO sessions (token_hash, user_id, expires_at)"
                           " VALUES ($1, $2, to_timestamp($3::bigint / 1000.0))",
                           3, p, NULL);
    if (s == PL_DB && strstr(pl_err_last(), "foreign key"))
        return PL_ERRF(PL_NOT_FOUND, "no such user");
    return s;
}

/* "session.lookup": token_hash, expires_ms = the idle window in ms (0 = 7 days) → reply.user,
 * reply.tier, reply.quota. PL_UNAUTHENTICATED when the session is unknown, past its absolute
 * expiry, idle longer than the window, or its user is disabled. last_seen_at is written only
 * when it is older than a quarter of the window (at most a minute), so a busy session does
 * not write on every request. */
static pl_status op_session_lookup(hs_env *e, const Parley__V1__HistoryRequest *rq,
                                   Parley__V1__HistoryReply *rp, hs_arena *a)
{
    if (!is_hex64(rq->token_hash))
        return PL_ERRF(PL_UNAUTHENTICATED, "invalid session");
    int64_t idle = rq->expires_ms > 0 ? rq->expires_ms : DEFAULT_IDLE_MS;
    int64_t touch = idle / 4 < MINUTE_MS ? idle / 4 : MINUTE_MS;
    const char *p[] = {rq->token_hash, num(a, idle), num(a, touch)};
    PGresult *r = NULL;
    pl_status s = hs_query(
        e,
        "WITH s AS (SELECT s.token_hash, s.last_seen_at, " USER_COLS ", " TIER_COLS
        " FROM sessions s JOIN users u ON u.id = s.user_id JOIN tiers t ON t.name = u.tier"
        " WHERE s.token_hash = $1 AND s.expires_at > now()"
        " AND s.last_seen_at > now() - $2::bigint * interval '1 millisecond' AND NOT u.disabled),"
        " touch AS (UPDATE sessions SET last_seen_at = now() FROM s"
        " WHERE sessions.token_hash = s.token_hash"
        " AND s.last_seen_at < now() - $3::bigint * interval '1 millisecond')"
        " SELECT * FROM s",
        3, p, &r);
    if (s != PL_OK)
        return s;
    if (PQntuples(r) != 1) {
        PQclear(r);
        return PL_ERRF(PL_UNAUTHENTICATED, "the session has expired or does not exist");
    }
    rp->user = user_from(a, r, 0, 2);
    rp->tier = tier_from(a, r, 0, 2 + USER_NCOLS);
    PQclear(r);
    if (!rp->user || !rp->tier)
        return PL_ERRF(PL_NOMEM, "out of memory");
    return reply_quota(e, a, rq->request_id, rp->user->id, rp, false);
}

/* "session.delete": token_hash. Deleting a missing session is not an error. */
static pl_status op_session_delete(hs_env *e, const Parley__V1__HistoryRequest *rq,
                                   Parley__V1__HistoryReply *rp, hs_arena *a)
{
    (void)a;
    if (!is_hex64(rq->token_hash))
        return PL_ERRF(PL_INVALID, "token_hash (sha-256 hex) is required");
    const char *p[] = {rq->token_hash};
    PGresult *r = NULL;
    pl_status s = hs_query(e, "DELETE FROM sessions WHERE token_hash = $1", 1, p, &r);
    if (s != PL_OK)
        return s;
    rp->count = strtoull(PQcmdTuples(r), NULL, 10);
    PQclear(r);
    return PL_OK;
}

/* --- API keys ------------------------------------------------------------------------------ */

/* "apikey.create": user_id, token_hash (sha-256 of the key), api_key.name, api_key.prefix →
 * reply.api_key (without the secret, which only the gateway ever sees). At most 50 live keys
 * per user. */
static pl_status op_apikey_create(hs_env *e, const Parley__V1__HistoryRequest *rq,
                                  Parley__V1__HistoryReply *rp, hs_arena *a)
{
    if (empty(rq->user_id) || !is_hex64(rq->token_hash) || !rq->api_key ||
        empty(rq->api_key->prefix))
        return PL_ERRF(PL_INVALID, "user_id, token_hash and api_key.prefix are required");
    const char *name = rq->api_key->name ? rq->api_key->name : "";
    if (strlen(name) > 100)
        return PL_ERRF(PL_INVALID, "the key's name is longer than 100 bytes");
    const char *p[] = {rq->user_id,    hs_new_id(a),        name,
                       rq->token_hash, rq->api_key->prefix, num(a, MAX_API_KEYS)};
    PGresult *r = NULL;
    pl_status s = hs_query(e,
                           "INSERT INTO api_keys AS k (user_id, id, name, key_hash, prefix)"
                           " SELECT $1, $2, $3, $4, $5 WHERE (SELECT count(*) FROM api_keys"
                           " WHERE user_id = $1 AND revoked_at IS NULL) < $6::int"
                           " RETURNING " KEY_COLS,
                           6, p, &r);
    if (s == PL_DB && strstr(pl_err_last(), "foreign key"))
        return PL_ERRF(PL_NOT_FOUND, "no such user");
    if (s != PL_OK)
        return s;
    if (PQntuples(r) != 1) {
        PQclear(r);
        return PL_ERRF(PL_INVALID, "a user may hold at most %d API keys: revoke one first",
                       MAX_API_KEYS);
    }
    rp->api_key = key_from(a, r, 0, 0);
    PQclear(r);
    return rp->api_key ? PL_OK : PL_ERRF(PL_NOMEM, "out of memory");
}

/* "apikey.list": user_id, flag = include revoked keys → reply.api_keys, newest first. */
static pl_status op_apikey_list(hs_env *e, const Parley__V1__HistoryRequest *rq,
                                Parley__V1__HistoryReply *rp, hs_arena *a)
{
    if (empty(rq->user_id))
        return PL_ERRF(PL_INVALID, "user_id is required");
    const char *p[] = {rq->user_id, rq->flag ? "t" : "f"};
    PGresult *r = NULL;
    pl_status s = hs_query(e,
                           "SELECT " KEY_COLS " FROM api_keys k WHERE k.user_id = $1"
                           " AND ($2::boolean OR k.revoked_at IS NULL)"
                           " ORDER BY k.created_at DESC, k.id LIMIT 200",
                           2, p, &r);
    if (s != PL_OK)
        return s;
    int n = PQntuples(r);
    rp->api_keys = n ? hs_alloc(a, (size_t)n * sizeof *rp->api_keys) : NULL;
    for (int i = 0; i < n && rp->api_keys; i++) {
        if (!(rp->api_keys[i] = key_from(a, r, i, 0)))
            break;
        rp->n_api_keys++;
    }
    PQclear(r);
    return rp->n_api_keys == (size_t)n ? PL_OK : PL_ERRF(PL_NOMEM, "out of memory");
}

/* "apikey.revoke": user_id, api_key.id → reply.api_key. Another user's key, or a missing one,
 * is PL_NOT_FOUND; revoking twice is fine. Effective at once: lookups read the row. */
static pl_status op_apikey_revoke(hs_env *e, const Parley__V1__HistoryRequest *rq,
                                  Parley__V1__HistoryReply *rp, hs_arena *a)
{
    if (empty(rq->user_id) || !rq->api_key || empty(rq->api_key->id))
        return PL_ERRF(PL_INVALID, "user_id and api_key.id are required");
    const char *p[] = {rq->user_id, rq->api_key->id};
    PGresult *r = NULL;
    pl_status s = hs_query(e,
                           "UPDATE api_keys k SET revoked_at = coalesce(k.revoked_at, now())"
                           " WHERE k.user_id = $1 AND k.id = $2 RETURNING " KEY_COLS,
                           2, p, &r);
    if (s != PL_OK)
        return s;
    if (PQntuples(r) != 1) {
        PQclear(r);
        return PL_ERRF(PL_NOT_FOUND, "no such API key");
    }
    rp->api_key = key_from(a, r, 0, 0);
    PQclear(r);
    return rp->api_key ? PL_OK : PL_ERRF(PL_NOMEM, "out of memory");
}

/* "apikey.lookup": token_hash → reply.user, reply.api_key, reply.tier, reply.quota.
 * PL_UNAUTHENTICATED for an unknown or revoked key or a disabled user. last_used_at is
 * written at most once a minute. */
static pl_status op_apikey_lookup(hs_env *e, const Parley__V1__HistoryRequest *rq,
                                  Parley__V1__HistoryReply *rp, hs_arena *a)
{
    if (!is_hex64(rq->token_hash))
        return PL_ERRF(PL_UNAUTHENTICATED, "invalid API key");
    const char *p[] = {rq->token_hash};
    PGresult *r = NULL;
    pl_status s =
        hs_query(e,
                 "WITH k AS (SELECT " KEY_COLS ", k.user_id AS key_user, k.last_used_at, " USER_COLS
                 ", " TIER_COLS " FROM api_keys k JOIN users u ON u.id = k.user_id"
                 " JOIN tiers t ON t.name = u.tier"
                 " WHERE k.key_hash = $1 AND k.revoked_at IS NULL AND NOT u.disabled),"
                 " touch AS (UPDATE api_keys SET last_used_at = now() FROM k"
                 " WHERE api_keys.user_id = k.key_user AND api_keys.id = k.key_id"
                 " AND (k.last_used_at IS NULL OR k.last_used_at < now() - interval '1 minute'))"
                 " SELECT * FROM k",
                 1, p, &r);
    if (s != PL_OK)
        return s;
    if (PQntuples(r) != 1) {
        PQclear(r);
        return PL_ERRF(PL_UNAUTHENTICATED, "invalid or revoked API key");
    }
    rp->api_key = key_from(a, r, 0, 0);
    rp->user = user_from(a, r, 0, KEY_NCOLS + 2);
    rp->tier = tier_from(a, r, 0, KEY_NCOLS + 2 + USER_NCOLS);
    PQclear(r);
    if (!rp->api_key || !rp->user || !rp->tier)
        return PL_ERRF(PL_NOMEM, "out of memory");
    return reply_quota(e, a, rq->request_id, rp->user->id, rp, false);
}

/* --- tiers, quotas, usage ------------------------------------------------------------------ */

/* "tier.get": user_id → reply.tier. */
static pl_status op_tier_get(hs_env *e, const Parley__V1__HistoryRequest *rq,
                             Parley__V1__HistoryReply *rp, hs_arena *a)
{
    return load_tier(e, a, rq->user_id, rp);
}

/* "tier.list" → reply.tiers, by name. */
static pl_status op_tier_list(hs_env *e, const Parley__V1__HistoryRequest *rq,
                              Parley__V1__HistoryReply *rp, hs_arena *a)
{
    (void)rq;
    PGresult *r = NULL;
    pl_status s =
        hs_query(e, "SELECT " TIER_COLS " FROM tiers t ORDER BY t.priority, t.name", 0, NULL, &r);
    if (s != PL_OK)
        return s;
    int n = PQntuples(r);
    rp->tiers = n ? hs_alloc(a, (size_t)n * sizeof *rp->tiers) : NULL;
    for (int i = 0; i < n && rp->tiers; i++) {
        if (!(rp->tiers[i] = tier_from(a, r, i, 0)))
            break;
        rp->n_tiers++;
    }
    PQclear(r);
    return rp->n_tiers == (size_t)n ? PL_OK : PL_ERRF(PL_NOMEM, "out of memory");
}

static bool tier_name_ok(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > 32)
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '-' || *s == '_'))
            return false;
    return true;
}

/* "tier.set" (administrators): tier → creates or replaces that tier → reply.tier. */
static pl_status op_tier_set(hs_env *e, const Parley__V1__HistoryRequest *rq,
                             Parley__V1__HistoryReply *rp, hs_arena *a)
{
    pl_status s = hs_require_admin(e, rq->user_id);
    if (s != PL_OK)
        return s;
    const Parley__V1__Tier *t = rq->tier;
    if (!t || !tier_name_ok(t->name))
        return PL_ERRF(PL_INVALID, "tier.name must be 1-32 characters of a-z, 0-9, '-' or '_'");
    if (t->context_window < 16 || t->max_tokens < 1)
        return PL_ERRF(PL_INVALID, "context_window (>= 16) and max_tokens (>= 1) are required");
    if (t->priority != PARLEY__V1__PRIORITY__PRIORITY_FREE &&
        t->priority != PARLEY__V1__PRIORITY__PRIORITY_PAID)
        return PL_ERRF(PL_INVALID, "priority must be free or paid");
    if (t->tokens_per_day > (uint64_t)INT64_MAX)
        return PL_ERRF(PL_INVALID, "tokens_per_day is too large");
    size_t len = 1;
    for (size_t i = 0; i < t->n_models; i++) {
        const char *m = t->models[i];
        if (empty(m) || strlen(m) > 128 || strchr(m, '\n'))
            return PL_ERRF(PL_INVALID, "model ids are 1-128 characters on one line");
        len += strlen(m) + 1;
    }
    char *models = hs_alloc(a, len);
    if (!models)
        return PL_ERRF(PL_NOMEM, "out of memory");
    for (size_t i = 0; i < t->n_models; i++) {
        if (i)
            strcat(models, "\n");
        strcat(models, t->models[i]);
    }
    const char *p[] = {t->name,
                       models,
                       num(a, t->context_window),
                       num(a, t->requests_per_minute),
                       num(a, (int64_t)t->tokens_per_day),
                       num(a, t->priority),
                       num(a, t->max_tokens)};
    PGresult *r = NULL;
    s = hs_query(e,
                 "INSERT INTO tiers AS t (name, models, context_window, requests_per_minute,"
                 " tokens_per_day, priority, max_tokens) VALUES ($1, CASE WHEN $2 = '' THEN"
                 " '{}'::text[] ELSE string_to_array($2, E'\\n') END, $3, $4, $5, $6, $7)"
                 " ON CONFLICT (name) DO UPDATE SET models = EXCLUDED.models,"
                 " context_window = EXCLUDED.context_window,"
                 " requests_per_minute = EXCLUDED.requests_per_minute,"
                 " tokens_per_day = EXCLUDED.tokens_per_day, priority = EXCLUDED.priority,"
                 " max_tokens = EXCLUDED.max_tokens, updated_at = now()"
                 " RETURNING " TIER_COLS,
                 7, p, &r);
    if (s != PL_OK)
        return s;
    rp->tier = tier_from(a, r, 0, 0);
    PQclear(r);
    return rp->tier ? PL_OK : PL_ERRF(PL_NOMEM, "out of memory");
}

/* "quota.take": user_id → reply.tier and reply.quota after counting one request; or
 * PL_RATE_LIMITED (reply.quota filled, quota.exceeded names the limit). */
static pl_status op_quota_take(hs_env *e, const Parley__V1__HistoryRequest *rq,
                               Parley__V1__HistoryReply *rp, hs_arena *a)
{
    pl_status s = load_tier(e, a, rq->user_id, rp);
    return s == PL_OK ? reply_quota(e, a, rq->request_id, rq->user_id, rp, true) : s;
}

/* "quota.get": user_id → reply.tier and reply.quota, counting nothing. */
static pl_status op_quota_get(hs_env *e, const Parley__V1__HistoryRequest *rq,
                              Parley__V1__HistoryReply *rp, hs_arena *a)
{
    pl_status s = load_tier(e, a, rq->user_id, rp);
    return s == PL_OK ? reply_quota(e, a, rq->request_id, rq->user_id, rp, false) : s;
}

/* "usage.add": user_id, usage → adds the tokens to today's usage_daily row (the record) and to
 * the Redis counter; reply.count = tokens used today. */
static pl_status op_usage_add(hs_env *e, const Parley__V1__HistoryRequest *rq,
                              Parley__V1__HistoryReply *rp, hs_arena *a)
{
    if (empty(rq->user_id) || !rq->usage)
        return PL_ERRF(PL_INVALID, "user_id and usage are required");
    int64_t add = (int64_t)rq->usage->prompt_tokens + rq->usage->completion_tokens;
    int64_t day = dmn_wall_ms() / DAY_MS;
    const char *p[] = {rq->user_id, num(a, day), num(a, rq->usage->prompt_tokens),
                       num(a, rq->usage->completion_tokens)};
    PGresult *r = NULL;
    pl_status s = hs_query(e,
                           "INSERT INTO usage_daily AS d (user_id, day, prompt_tokens,"
                           " completion_tokens) VALUES ($1, date '1970-01-01' + $2::int, $3, $4)"
                           " ON CONFLICT (user_id, day) DO UPDATE SET"
                           " prompt_tokens = d.prompt_tokens + EXCLUDED.prompt_tokens,"
                           " completion_tokens = d.completion_tokens + EXCLUDED.completion_tokens"
                           " RETURNING d.prompt_tokens + d.completion_tokens",
                           4, p, &r);
    if (s == PL_DB && strstr(pl_err_last(), "foreign key"))
        return PL_ERRF(PL_NOT_FOUND, "no such user");
    if (s != PL_OK)
        return s;
    int64_t total = val_i64(r, 0, 0);
    PQclear(r);
    rp->count = (uint64_t)total;
    if (add == 0)
        return PL_OK;
    char key[128];
    snprintf(key, sizeof key, "q:tok:%s:%" PRId64, rq->user_id, day);
    int64_t v = 0;
    if (cache_incr(e->cache, key, add, 2 * DAY_MS, &v, NULL) != PL_OK) {
        LOGW(rq->request_id, "usage: cannot count tokens in Redis: %s", pl_err_last());
        return PL_OK;
    }
    /* A counter that did not exist (expired, flushed) started from zero: set it to the
     * record, which already includes this addition. */
    if (v == add && total != add) {
        char t[24];
        snprintf(t, sizeof t, "%" PRId64, total);
        if (cache_set(e->cache, key, t, strlen(t), 2 * DAY_MS / 1000) != PL_OK)
            LOGW(rq->request_id, "usage: cannot reset %s: %s", key, pl_err_last());
    }
    return PL_OK;
}

/* --- login rate limits --------------------------------------------------------------------- */

static pl_status ratelimit_key(const Parley__V1__HistoryRequest *rq, char *key, size_t cap)
{
    const char *n = rq->name;
    if (empty(n) || strlen(n) > 200)
        return PL_ERRF(PL_INVALID, "name (1-200 bytes) is required");
    for (const char *c = n; *c; c++)
        if ((unsigned char)*c <= ' ' || *c == 0x7f)
            return PL_ERRF(PL_INVALID, "name must not contain spaces or control characters");
    snprintf(key, cap, "rl:%s", n);
    return PL_OK;
}

static pl_status reply_window(hs_arena *a, Parley__V1__HistoryReply *rp, int64_t count,
                              int64_t ttl_ms)
{
    rp->count = count > 0 ? (uint64_t)count : 0;
    rp->quota = hs_alloc(a, sizeof *rp->quota);
    if (!rp->quota)
        return PL_ERRF(PL_NOMEM, "out of memory");
    parley__v1__quota__init(rp->quota);
    rp->quota->minute_reset_ms = ttl_ms >= 0 ? dmn_wall_ms() + ttl_ms : 0;
    return PL_OK;
}

/* "ratelimit.hit": name, expires_ms = window (0 = 15 minutes) → counts one hit in the fixed
 * window that the first hit opened; reply.count = hits so far, reply.quota.minute_reset_ms =
 * when the window closes. Deciding what is too many is the caller's business. */
static pl_status op_ratelimit_hit(hs_env *e, const Parley__V1__HistoryRequest *rq,
                                  Parley__V1__HistoryReply *rp, hs_arena *a)
{
    char key[256];
    pl_status s = ratelimit_key(rq, key, sizeof key);
    if (s != PL_OK)
        return s;
    int64_t window = rq->expires_ms > 0 ? rq->expires_ms : 15 * MINUTE_MS, count = 0, ttl = -1;
    if ((s = cache_incr(e->cache, key, 1, window, &count, &ttl)) != PL_OK)
        return PL_ERRF(PL_UNAVAILABLE, "rate-limit counters unavailable: %s", pl_err_last());
    return reply_window(a, rp, count, ttl);
}

/* "ratelimit.get": name → reply.count and reply.quota.minute_reset_ms without counting. */
static pl_status op_ratelimit_get(hs_env *e, const Parley__V1__HistoryRequest *rq,
                                  Parley__V1__HistoryReply *rp, hs_arena *a)
{
    char key[256];
    pl_status s = ratelimit_key(rq, key, sizeof key);
    if (s != PL_OK)
        return s;
    int64_t count = 0, ttl = -1;
    s = cache_counter(e->cache, key, &count, &ttl);
    if (s != PL_OK && s != PL_NOT_FOUND)
        return PL_ERRF(PL_UNAVAILABLE, "rate-limit counters unavailable: %s", pl_err_last());
    return reply_window(a, rp, count, ttl);
}

/* "ratelimit.clear": name → forgets the window (a successful login clears its account's). */
static pl_status op_ratelimit_clear(hs_env *e, const Parley__V1__HistoryRequest *rq,
                                    Parley__V1__HistoryReply *rp, hs_arena *a)
{
    (void)rp;
    (void)a;
    char key[256];
    pl_status s = ratelimit_key(rq, key, sizeof key);
    if (s != PL_OK)
        return s;
    if (cache_del(e->cache, key) != PL_OK)
        return PL_ERRF(PL_UNAVAILABLE, "rate-limit counters unavailable: %s", pl_err_last());
    return PL_OK;
}

/* --- administration ------------------------------------------------------------------------ */

/* "admin.users" (administrators): cursor (a user id from next_cursor), limit (default 50, at
 * most 200), query (part of an email) → reply.users in sign-up order, reply.next_cursor. */
static pl_status op_admin_users(hs_env *e, const Parley__V1__HistoryRequest *rq,
                                Parley__V1__HistoryReply *rp, hs_arena *a)
{
    pl_status s = hs_require_admin(e, rq->user_id);
    if (s != PL_OK)
        return s;
    uint32_t limit = rq->limit == 0 ? 50 : rq->limit > 200 ? 200 : rq->limit;
    const char *p[] = {rq->cursor ? rq->cursor : "", rq->query ? rq->query : "", num(a, limit)};
    PGresult *r = NULL;
    s = hs_query(e,
                 "SELECT " USER_COLS " FROM users u WHERE ($1 = '' OR (u.created_at, u.id) >"
                 " (SELECT created_at, id FROM users WHERE id = $1))"
                 " AND ($2 = '' OR strpos(lower(u.email), lower($2)) > 0)"
                 " ORDER BY u.created_at, u.id LIMIT $3::int",
                 3, p, &r);
    if (s != PL_OK)
        return s;
    int n = PQntuples(r);
    rp->users = n ? hs_alloc(a, (size_t)n * sizeof *rp->users) : NULL;
    for (int i = 0; i < n && rp->users; i++) {
        if (!(rp->users[i] = user_from(a, r, i, 0)))
            break;
        rp->n_users++;
    }
    PQclear(r);
    if (rp->n_users != (size_t)n)
        return PL_ERRF(PL_NOMEM, "out of memory");
    if ((uint32_t)n == limit)
        rp->next_cursor = rp->users[n - 1]->id;
    return PL_OK;
}

/* "admin.set_tier" (administrators): user.id, user.tier → reply.user. PL_INVALID for a tier
 * that does not exist, PL_NOT_FOUND for a user that does not. */
static pl_status op_admin_set_tier(hs_env *e, const Parley__V1__HistoryRequest *rq,
                                   Parley__V1__HistoryReply *rp, hs_arena *a)
{
    pl_status s = hs_require_admin(e, rq->user_id);
    if (s != PL_OK)
        return s;
    if (!rq->user || empty(rq->user->id) || empty(rq->user->tier))
        return PL_ERRF(PL_INVALID, "user.id and user.tier are required");
    const char *p[] = {rq->user->id, rq->user->tier};
    PGresult *r = NULL;
    s = hs_query(e,
                 "SELECT (SELECT count(*) FROM tiers WHERE name = $2),"
                 " (SELECT count(*) FROM users WHERE id = $1)",
                 2, p, &r);
    if (s != PL_OK)
        return s;
    bool tier_ok = val_i64(r, 0, 0) == 1, user_ok = val_i64(r, 0, 1) == 1;
    PQclear(r);
    if (!tier_ok)
        return PL_ERRF(PL_INVALID, "no tier named '%s'", rq->user->tier);
    if (!user_ok)
        return PL_ERRF(PL_NOT_FOUND, "no such user");
    s = hs_query(e, "UPDATE users u SET tier = $2 WHERE u.id = $1 RETURNING " USER_COLS, 2, p, &r);
    if (s != PL_OK)
        return s;
    rp->user = PQntuples(r) == 1 ? user_from(a, r, 0, 0) : NULL;
    PQclear(r);
    if (!rp->user)
        return PL_ERRF(PL_NOT_FOUND, "no such user");
    LOGI(rq->request_id, "user %s moved to tier %s by %s", rp->user->id, rp->user->tier,
         rq->user_id);
    return PL_OK;
}

/* "admin.usage" (administrators): limit = days back including today (default 1, at most 92)
 * → reply.usage_days (at most 1000 rows: newest day first, biggest users first). */
static pl_status op_admin_usage(hs_env *e, const Parley__V1__HistoryRequest *rq,
                                Parley__V1__HistoryReply *rp, hs_arena *a)
{
    pl_status s = hs_require_admin(e, rq->user_id);
    if (s != PL_OK)
        return s;
    uint32_t days = rq->limit == 0 ? 1 : rq->limit > 92 ? 92 : rq->limit;
    const char *p[] = {num(a, dmn_wall_ms() / DAY_MS), num(a, days)};
    PGresult *r = NULL;
    s = hs_query(e,
                 "SELECT d.user_id, u.email, to_char(d.day, 'YYYY-MM-DD'), d.requests,"
                 " d.prompt_tokens, d.completion_tokens FROM usage_daily d"
                 " JOIN users u ON u.id = d.user_id"
                 " WHERE d.day > date '1970-01-01' + $1::int - $2::int"
                 " ORDER BY d.day DESC, d.prompt_tokens + d.completion_tokens DESC, d.user_id"
                 " LIMIT 1000",
                 2, p, &r);
    if (s != PL_OK)
        return s;
    int n = PQntuples(r);
    rp->usage_days = n ? hs_alloc(a, (size_t)n * sizeof *rp->usage_days) : NULL;
    for (int i = 0; i < n && rp->usage_days; i++) {
        Parley__V1__UsageDay *d = hs_alloc(a, sizeof *d);
        if (!d)
            break;
        parley__v1__usage_day__init(d);
        d->user_id = hs_strdup(a, val(r, i, 0));
        d->email = hs_strdup(a, val(r, i, 1));
        d->day = hs_strdup(a, val(r, i, 2));
        d->requests = (uint64_t)val_i64(r, i, 3);
        d->prompt_tokens = (uint64_t)val_i64(r, i, 4);
        d->completion_tokens = (uint64_t)val_i64(r, i, 5);
        if (!d->user_id || !d->email || !d->day)
            break;
        rp->usage_days[rp->n_usage_days++] = d;
    }
    PQclear(r);
    rp->count = rp->n_usage_days;
    return rp->n_usage_days == (size_t)n ? PL_OK : PL_ERRF(PL_NOMEM, "out of memory");
}

const hs_op hs_ops_accounts[] = {
    {"user.create", op_user_create},
    {"user.by_email", op_user_by_email},
    {"user.get", op_user_get},
    {"user.update", op_user_update},
    {"session.create", op_session_create},
    {"session.lookup", op_session_lookup},
    {"session.delete", op_session_delete},
    {"apikey.create", op_apikey_create},
    {"apikey.list", op_apikey_list},
    {"apikey.revoke", op_apikey_revoke},
    {"apikey.lookup", op_apikey_lookup},
    {"tier.get", op_tier_get},
    {"tier.list", op_tier_list},
    {"tier.set", op_tier_set},
    {"quota.take", op_quota_take},
    {"quota.get", op_quota_get},
    {"usage.add", op_usage_add},
    {"ratelimit.hit", op_ratelimit_hit},
    {"ratelimit.get", op_ratelimit_get},
    {"ratelimit.clear", op_ratelimit_clear},
    {"admin.users", op_admin_users},
    {"admin.set_tier", op_admin_set_tier},
    {"admin.usage", op_admin_usage},
};
const size_t hs_n_ops_accounts = sizeof hs_ops_accounts / sizeof hs_ops_accounts[0];
