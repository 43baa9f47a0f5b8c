/* accounts.c — product API routes for accounts: sign-up, log-in/out, the caller's profile and
 * quota, per-user API keys, and the administrators' views (users, tiers, usage). Also the
 * authentication used by every product route (gw_auth_user) and by /v1 for per-user keys.
 *
 * Secrets never leave the gateway in the clear: passwords are hashed here (argon2id through
 * libsodium, 2 passes over 19 MiB: OWASP's minimum) and history stores only that hash; session
 * tokens (256 random bits, base64url) and API keys ("pk-" + 256 random bits) are shown to the
 * client once and stored in history as their sha-256. Every check of a key goes to history
 * (revocation takes effect at once); a session's look-up is remembered for --session-cache
 * (2 s) by authcache.c, evicted at once on every gateway by a log-out or an administrator's
 * change (SUBJ_AUTH_INVALIDATE).
 *
 * Threading: handlers run on the HTTP pool threads. Hashing is the one expensive step (19 MiB
 * and tens of milliseconds per hash), so a counting semaphore (the `gate` below) lets at most
 * HASH_SLOTS run at once; a request that cannot get a slot within HASH_WAIT_MS answers 503.
 * The gate and the one dummy hash (verified for unknown emails so they take as long as a wrong
 * password) are this module's only state, initialised once; they are process-wide because
 * the memory they bound is.
 *
 * Log-in is rate-limited per account (5 failures per 15 minutes) and per client address (20)
 * with history's "ratelimit.*" counters; when those counters are unavailable log-in goes on
 * (logged) rather than locking everyone out.
 *
 * What it does not do: conversations (convs.c), /v1 semantics (openai.c), the per-turn quota
 * (parley-chat asks history for it). */
#include <ctype.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <sodium.h>

#include "authcache.h"
#include "log.h"
#include "product.h"
#include "subjects.h"
#include "sync.h"

#define PW_OPSLIMIT         2ULL
#define PW_MEMLIMIT         (19ULL * 1024 * 1024)
#define PW_MIN              8
#define PW_MAX              1024
#define HASH_SLOTS          2
#define HASH_WAIT_MS        10000
#define LOGIN_WINDOW_MS     (15LL * 60 * 1000)
#define LOGIN_MAX_PER_EMAIL 5
#define LOGIN_MAX_PER_IP    20
#define COOKIE_NAME         "parley_session"
#define SECRET_BYTES        32
/* "pk-" + base64url of 32 bytes (43) + NUL, and the same without the prefix for sessions. */
#define SECRET_CAP     64
#define KEY_PREFIX_LEN 11

/* --- module state: the hashing gate ------------------------------------------------------ */

static struct {
    pthread_once_t once;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int busy;   /* hashes running */
    bool ready; /* libsodium initialised and the dummy hash made */
    char dummy[crypto_pwhash_STRBYTES];
} gate = {.once = PTHREAD_ONCE_INIT, .mu = PTHREAD_MUTEX_INITIALIZER};

static void gate_init(void)
{
    sync_cond_init(&gate.cv);
    if (sodium_init() < 0)
        return;
    char pw[SECRET_BYTES];
    randombytes_buf(pw, sizeof pw);
    gate.ready = crypto_pwhash_str(gate.dummy, pw, sizeof pw, PW_OPSLIMIT, PW_MEMLIMIT) == 0;
}

static bool gate_enter(void)
{
    pthread_once(&gate.once, gate_init);
    struct timespec dl = sync_deadline(HASH_WAIT_MS);
    pthread_mutex_lock(&gate.mu);
    while (gate.busy >= HASH_SLOTS)
        if (pthread_cond_timedwait(&gate.cv, &gate.mu, &dl) != 0)
            break;
    bool ok = gate.busy < HASH_SLOTS && gate.ready;
    if (ok)
        gate.busy++;
    pthread_mutex_unlock(&gate.mu);
    return ok;
}

static void gate_leave(void)
{
    pthread_mutex_lock(&gate.mu);
    gate.busy--;
    pthread_cond_signal(&gate.cv);
    pthread_mutex_unlock(&gate.mu);
}

/* argon2id of `pw` into `out`. PL_OVERLOADED when no slot came free in time, PL_NOMEM when
 * the 19 MiB could not be had. */
static pl_status pw_hash(const char *pw, char out[crypto_pwhash_STRBYTES])
{
    if (!gate_enter())
        return PL_ERRF(PL_OVERLOADED, "the server is busy: retry in a moment");
    int rc = crypto_pwhash_str(out, pw, strlen(pw), PW_OPSLIMIT, PW_MEMLIMIT);
    gate_leave();
    return rc == 0 ? PL_OK : PL_ERRF(PL_NOMEM, "cannot hash the password now");
}

/* Verifies `pw` against `hash` (NULL: against the dummy, always false but as slow). */
static pl_status pw_verify(const char *hash, const char *pw, bool *ok)
{
    if (!gate_enter())
        return PL_ERRF(PL_OVERLOADED, "the server is busy: retry in a moment");
    bool match = crypto_pwhash_str_verify(hash ? hash : gate.dummy, pw, strlen(pw)) == 0;
    gate_leave();
    *ok = hash && match;
    return PL_OK;
}

/* --- small helpers ------------------------------------------------------------------------- */

/* `prefix` + base64url (no padding) of 256 random bits. */
static void new_secret(const char *prefix, char out[SECRET_CAP])
{
    unsigned char raw[SECRET_BYTES];
    char b64[sodium_base64_ENCODED_LEN(SECRET_BYTES, sodium_base64_VARIANT_URLSAFE_NO_PADDING)];
    pthread_once(&gate.once, gate_init);
    randombytes_buf(raw, sizeof raw);
    sodium_bin2base64(b64, sizeof b64, raw, sizeof raw, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    snprintf(out, SECRET_CAP, "%s%s", prefix, b64);
    sodium_memzero(raw, sizeof raw);
}

/* sha-256 of `s`, lowercase hex: what history stores for tokens and keys. */
static void sha256_hex(const char *s, char out[65])
{
    unsigned char h[crypto_hash_sha256_BYTES];
    crypto_hash_sha256(h, (const unsigned char *)s, strlen(s));
    sodium_bin2hex(out, 65, h, sizeof h);
}

/* The recorded error message without its "file.c:NN: " prefixes (those are for logs). */
static enum MHD_Result bad_request(http_req *r, const char *param, const char *message)
{
    return http_reply_error(r, 400, message, param, "invalid_request", 0);
}

static const char *jstr(const cJSON *o, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* A whole number in [lo, hi] from field `name`; false when absent or out of range. */
static bool jint(const cJSON *o, const char *name, double lo, double hi, double *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    if (!cJSON_IsNumber(v) || v->valuedouble != (double)(long long)v->valuedouble ||
        v->valuedouble < lo || v->valuedouble > hi)
        return false;
    *out = v->valuedouble;
    return true;
}

static cJSON *user_json(const Parley__V1__User *u)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", u->id);
    cJSON_AddStringToObject(o, "object", "user");
    cJSON_AddStringToObject(o, "email", u->email);
    cJSON_AddStringToObject(o, "tier", u->tier);
    cJSON_AddBoolToObject(o, "is_admin", u->is_admin);
    gw_add_time(o, "created_at", u->created_ms);
    cJSON_AddStringToObject(o, "custom_instructions", u->custom_instructions);
    cJSON_AddBoolToObject(o, "disabled", u->disabled);
    return o;
}

static const char *priority_name(Parley__V1__Priority p)
{
    return p == PARLEY__V1__PRIORITY__PRIORITY_PAID     ? "paid"
           : p == PARLEY__V1__PRIORITY__PRIORITY_SYSTEM ? "system"
                                                        : "free";
}

static cJSON *tier_json(const Parley__V1__Tier *t)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "name", t->name);
    cJSON *m = cJSON_AddArrayToObject(o, "models"); /* empty: every served model */
    for (size_t i = 0; i < t->n_models; i++)
        cJSON_AddItemToArray(m, cJSON_CreateString(t->models[i]));
    cJSON_AddNumberToObject(o, "context_window", t->context_window);
    cJSON_AddNumberToObject(o, "requests_per_minute", t->requests_per_minute);
    cJSON_AddNumberToObject(o, "tokens_per_day", (double)t->tokens_per_day);
    cJSON_AddStringToObject(o, "priority", priority_name(t->priority));
    cJSON_AddNumberToObject(o, "max_tokens", t->max_tokens);
    return o;
}

static cJSON *quota_json(const Parley__V1__Quota *q)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "requests_limit", q->requests_limit);
    cJSON_AddNumberToObject(o, "requests_left", q->requests_left);
    gw_add_time(o, "requests_reset_at", q->minute_reset_ms);
    cJSON_AddNumberToObject(o, "tokens_limit", (double)q->tokens_limit);
    cJSON_AddNumberToObject(o, "tokens_left", (double)q->tokens_left);
    gw_add_time(o, "tokens_reset_at", q->day_reset_ms);
    if (q->exceeded && *q->exceeded)
        cJSON_AddStringToObject(o, "exceeded", q->exceeded);
    else
        cJSON_AddNullToObject(o, "exceeded");
    return o;
}

static cJSON *key_json(const Parley__V1__ApiKey *k)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", k->id);
    cJSON_AddStringToObject(o, "object", "api_key");
    cJSON_AddStringToObject(o, "name", k->name);
    cJSON_AddStringToObject(o, "prefix", k->prefix);
    gw_add_time(o, "created_at", k->created_ms);
    gw_add_time(o, "last_used_at", k->last_used_ms);
    cJSON_AddBoolToObject(o, "revoked", k->revoked);
    return o;
}

static cJSON *list_json(cJSON **data)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "object", "list");
    *data = cJSON_AddArrayToObject(o, "data");
    return o;
}

/* --- authentication ------------------------------------------------------------------------ */

/* The presented secret: "Authorization: Bearer …" first, else the session cookie. Borrowed
 * from the request; NULL when neither is there. */
static const char *presented_token(http_req *r)
{
    const char *h = http_header(r, "Authorization");
    if (h && strncasecmp(h, "Bearer ", 7) == 0) {
        h += 7;
        while (*h == ' ')
            h++;
        return h;
    }
    return MHD_lookup_connection_value(http_conn(r), MHD_COOKIE_KIND, COOKIE_NAME);
}

static bool is_api_key(const char *token)
{
    return strncmp(token, "pk-", 3) == 0;
}

/* "session.lookup" or "apikey.lookup" for `token` (whose sha-256 hex is `hash`); *rep owned by
 * the caller on PL_OK. */
static pl_status lookup(gw *g, const char *rid, const char *token, const char *hash,
                        Parley__V1__HistoryReply **rep)
{
    Parley__V1__HistoryRequest rq = PARLEY__V1__HISTORY_REQUEST__INIT;
    rq.op = is_api_key(token) ? "apikey.lookup" : "session.lookup";
    rq.token_hash = (char *)hash;
    rq.expires_ms = g->cfg.session_idle_ms;
    return gw_history(g, rid, &rq, rep);
}

/* --- the session cache (authcache.h) ------------------------------------------------------- */

/* Evicts here and tells every other gateway: a token, every session of a user, or everything. */
static void invalidate(gw *g, const char *rid, const char *token_hash, const char *user_id,
                       bool all)
{
    if (!g->auth_cache)
        return;
    if (all)
        authcache_clear(g->auth_cache);
    if (token_hash)
        authcache_drop_token(g->auth_cache, token_hash);
    if (user_id)
        authcache_drop_user(g->auth_cache, user_id);
    Parley__V1__AuthInvalidate m = PARLEY__V1__AUTH_INVALIDATE__INIT;
    m.token_hash = (char *)(token_hash ? token_hash : "");
    m.user_id = (char *)(user_id ? user_id : "");
    m.all = all;
    if (bus_publish_pb(dmn_bus(g->d), SUBJ_AUTH_INVALIDATE, &m.base) != PL_OK)
        LOGW(rid,
             "session cache: broadcasting an eviction failed (other gateways forget within "
             "the cache TTL): %s",
             pl_err_last());
}

/* SUBJ_AUTH_INVALIDATE from any gateway, this one included (a second eviction is harmless). */
static void on_invalidate(bus_msg *msg, void *arg)
{
    gw *g = arg;
    Parley__V1__AuthInvalidate *m =
        (Parley__V1__AuthInvalidate *)bus_msg_unpack(msg, &parley__v1__auth_invalidate__descriptor);
    if (!m) {
        LOGW(NULL, "session cache: an undecodable eviction message: clearing everything");
        authcache_clear(g->auth_cache);
    } else {
        if (m->all)
            authcache_clear(g->auth_cache);
        if (m->token_hash && m->token_hash[0])
            authcache_drop_token(g->auth_cache, m->token_hash);
        if (m->user_id && m->user_id[0])
            authcache_drop_user(g->auth_cache, m->user_id);
        protobuf_c_message_free_unpacked(&m->base, NULL);
    }
    bus_msg_destroy(msg);
}

pl_status gw_auth_cache_start(gw *g)
{
    if (g->cfg.session_cache_ms <= 0)
        return PL_OK;
    pl_status s =
        authcache_create(GW_SESSION_CACHE_ENTRIES, g->cfg.session_cache_ms, &g->auth_cache);
    if (s != PL_OK)
        return s;
    static const char *const labels[] = {"result", NULL};
    g->m_session_cache = met_counter(dmn_metrics(g->d), "parley_gateway_session_cache_total",
                                     "session look-ups answered from the gateway's cache (hit) "
                                     "or by history (miss)",
                                     labels);
    s = bus_subscribe(dmn_bus(g->d), SUBJ_AUTH_INVALIDATE, NULL, on_invalidate, g, &g->auth_sub);
    if (s != PL_OK) {
        authcache_free(g->auth_cache);
        g->auth_cache = NULL;
    }
    return s;
}

void gw_auth_cache_stop(gw *g)
{
    bus_unsubscribe(g->auth_sub);
    g->auth_sub = NULL;
    authcache_free(g->auth_cache);
    g->auth_cache = NULL;
}

void gw_auth_forget_user(gw *g, const char *user_id)
{
    authcache_drop_user(g->auth_cache, user_id);
}

static const char *static_exceeded(const char *e)
{
    if (e && strcmp(e, "requests_per_minute") == 0)
        return "requests_per_minute";
    if (e && strcmp(e, "tokens_per_day") == 0)
        return "tokens_per_day";
    return "";
}

static void user_fill(gw_user *u, const Parley__V1__HistoryReply *rep, bool via_key)
{
    memset(u, 0, sizeof *u);
    snprintf(u->id, sizeof u->id, "%s", rep->user->id);
    snprintf(u->email, sizeof u->email, "%s", rep->user->email);
    snprintf(u->tier, sizeof u->tier, "%s", rep->user->tier);
    u->is_admin = rep->user->is_admin;
    u->via_api_key = via_key;
    parley__v1__quota__init(&u->quota);
    if (rep->quota) {
        const Parley__V1__Quota *q = rep->quota;
        u->has_quota = true;
        u->quota.requests_left = q->requests_left;
        u->quota.tokens_left = q->tokens_left;
        u->quota.minute_reset_ms = q->minute_reset_ms;
        u->quota.day_reset_ms = q->day_reset_ms;
        u->quota.exceeded = (char *)static_exceeded(q->exceeded);
        u->quota.requests_limit = q->requests_limit;
        u->quota.tokens_limit = q->tokens_limit;
    }
}

/* Authenticates `r`; on success fills `u` and, when `rep` is not NULL, hands over the lookup's
 * reply (user, tier, quota; the caller frees it). Otherwise answers 401/503 into *ret. */
static bool authenticate(gw *g, http_req *r, gw_user *u, Parley__V1__HistoryReply **rep,
                         enum MHD_Result *ret)
{
    const char *token = presented_token(r);
    if (!token || !*token) {
        *ret = http_reply_error(r, 401,
                                "authentication required: log in, or send 'Authorization: "
                                "Bearer <session token or API key>'",
                                NULL, "unauthenticated", 0);
        return false;
    }
    bool key = is_api_key(token);
    if (strlen(token) > 256) {
        *ret = http_reply_error(
            r, 401, key ? "invalid or revoked API key" : "the session has expired: log in", NULL,
            key ? "invalid_api_key" : "unauthenticated", 0);
        return false;
    }
    char hash[65];
    sha256_hex(token, hash);
    /* Sessions only, and only when the caller needs no more than gw_user (see authcache.h). */
    bool cacheable = !key && !rep && g->auth_cache;
    uint64_t epoch = 0;
    if (cacheable) {
        bool hit = authcache_get(g->auth_cache, hash, dmn_now_ms(), u);
        met_inc(met_with(g->m_session_cache, hit ? "hit" : "miss", NULL), 1);
        if (hit)
            return true;
        epoch = authcache_epoch(g->auth_cache);
    }
    Parley__V1__HistoryReply *rp = NULL;
    pl_status s = lookup(g, http_request_id(r), token, hash, &rp);
    if (s == PL_OK && !rp->user) {
        protobuf_c_message_free_unpacked(&rp->base, NULL);
        s = PL_UNAUTHENTICATED;
    }
    if (s != PL_OK) {
        if (s == PL_UNAUTHENTICATED || s == PL_NOT_FOUND || s == PL_INVALID)
            *ret = http_reply_error(
                r, 401, key ? "invalid or revoked API key" : "the session has expired: log in",
                NULL, key ? "invalid_api_key" : "unauthenticated", 0);
        else
            *ret = gw_fail(r, s);
        return false;
    }
    user_fill(u, rp, key);
    if (cacheable)
        authcache_put(g->auth_cache, hash, u, dmn_now_ms(), epoch);
    if (rep)
        *rep = rp;
    else
        protobuf_c_message_free_unpacked(&rp->base, NULL);
    return true;
}

bool gw_auth_user(gw *g, http_req *r, gw_user *u, enum MHD_Result *ret)
{
    return authenticate(g, r, u, NULL, ret);
}

/* Seconds until the limit named in a quota message resets (windows are UTC-aligned). */
static unsigned retry_after(const char *message)
{
    int64_t now = dmn_wall_ms();
    int64_t period = strstr(message, "per day") ? 86400000LL : 60000LL;
    int64_t left = period - now % period;
    return (unsigned)((left + 999) / 1000);
}

bool gw_authorize_api_key(gw *g, http_req *r, const char *key, char *user_id, enum MHD_Result *ret)
{
    gw_user u;
    Parley__V1__HistoryReply *rep = NULL;
    if (!authenticate(g, r, &u, &rep, ret))
        return false;
    protobuf_c_message_free_unpacked(&rep->base, NULL);
    (void)key;
    snprintf(user_id, 64, "%s", u.id);
    if (strcmp(http_method(r), "POST") != 0)
        return true;
    Parley__V1__HistoryRequest rq = PARLEY__V1__HISTORY_REQUEST__INIT;
    rq.op = "quota.take";
    rq.user_id = u.id;
    pl_status s = gw_history(g, http_request_id(r), &rq, &rep);
    if (s == PL_OK) {
        protobuf_c_message_free_unpacked(&rep->base, NULL);
        return true;
    }
    if (s == PL_RATE_LIMITED) {
        const char *m = pl_err_message();
        *ret = http_reply_error(r, 429, m, NULL, "rate_limited", retry_after(m));
        return false;
    }
    *ret = gw_fail(r, s);
    return false;
}

/* --- sign-up, log-in, log-out -------------------------------------------------------------- */

/* Lower-cases and checks an email address: one '@', a non-empty local part, a dotted domain,
 * no spaces or control characters, at most 254 bytes. */
static bool email_ok(const char *in, char out[256])
{
    size_t n = in ? strlen(in) : 0;
    if (n < 3 || n > 254)
        return false;
    const char *at = strchr(in, '@');
    if (!at || at == in || strchr(at + 1, '@'))
        return false;
    const char *dot = strrchr(at + 1, '.');
    if (!dot || dot == at + 1 || dot[1] == '\0')
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)in[i];
        if (c <= ' ' || c == 0x7f || c == '"' || c == '<' || c == '>' || c == ',')
            return false;
        out[i] = (char)tolower(c);
    }
    out[n] = '\0';
    return true;
}

static void session_cookie(char *out, size_t cap, const char *token, int64_t max_age_s)
{
    snprintf(out, cap, COOKIE_NAME "=%s; HttpOnly; Secure; SameSite=Lax; Path=/; Max-Age=%lld",
             token, (long long)max_age_s);
}

/* Creates a session for `user` and answers `status` with {user, token, expires_at} and the
 * cookie. */
static enum MHD_Result start_session(gw *g, http_req *r, unsigned status,
                                     const Parley__V1__User *user)
{
    char token[SECRET_CAP], hash[65];
    new_secret("", token);
    sha256_hex(token, hash);
    int64_t expires = dmn_wall_ms() + g->cfg.session_max_ms;
    Parley__V1__HistoryRequest rq = PARLEY__V1__HISTORY_REQUEST__INIT;
    Parley__V1__HistoryReply *rep = NULL;
    rq.op = "session.create";
    rq.user_id = user->id;
    rq.token_hash = hash;
    rq.expires_ms = expires;
    pl_status s = gw_history(g, http_request_id(r), &rq, &rep);
    if (s != PL_OK)
        return gw_fail(r, s);
    protobuf_c_message_free_unpacked(&rep->base, NULL);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddItemToObject(o, "user", user_json(user));
    cJSON_AddStringToObject(o, "token", token);
    gw_add_time(o, "expires_at", expires);
    char cookie[256];
    session_cookie(cookie, sizeof cookie, token, g->cfg.session_max_ms / 1000);
    sodium_memzero(token, sizeof token);
    return gw_send_json(r, status, o, NULL, cookie);
}

static enum MHD_Result route_signup(http_req *r, void *arg)
{
    gw *g = arg;
    enum MHD_Result ret;
    cJSON *b = gw_body_object(r, false, &ret);
    if (!b)
        return ret;
    char email[256], hash[crypto_pwhash_STRBYTES];
    const char *pw = jstr(b, "password");
    if (!email_ok(jstr(b, "email"), email))
        ret = bad_request(r, "email", "a valid email address is required");
    else if (!pw || strlen(pw) < PW_MIN)
        ret = bad_request(r, "password", "the password must have at least 8 characters");
    else if (strlen(pw) > PW_MAX)
        ret = bad_request(r, "password", "the password must have at most 1024 characters");
    else if (!g->cfg.signup_open)
        ret =
            http_reply_error(r, 403, "sign-up is closed on this server", NULL, "signup_closed", 0);
    else {
        pl_status s = pw_hash(pw, hash);
        if (s != PL_OK) {
            ret = gw_fail(r, s);
        } else {
            Parley__V1__HistoryRequest rq = PARLEY__V1__HISTORY_REQUEST__INIT;
            Parley__V1__User u = PARLEY__V1__USER__INIT;
            Parley__V1__HistoryReply *rep = NULL;
            u.email = email;
            rq.op = "user.create";
            rq.user = &u;
            rq.password_hash = hash;
            rq.flag = g->cfg.signup_open;
            s = gw_history(g, http_request_id(r), &rq, &rep);
            if (s == PL_OK) {
                ret = start_session(g, r, 201, rep->user);
                protobuf_c_message_free_unpacked(&rep->base, NULL);
            } else if (s == PL_PERMISSION) {
                ret = http_reply_error(r, 403, pl_err_message(), NULL, "signup_closed", 0);
            } else {
                ret = gw_fail(r, s);
            }
        }
    }
    cJSON_Delete(b);
    return ret;
}

/* One "ratelimit.*" call; *count and *retry_s from the reply (0 when the counters are down,
 * which is logged and lets log-in go on). */
static void ratelimit(gw *g, const char *rid, const char *op, const char *name, int64_t *count,
                      unsigned *retry_s)
{
    Parley__V1__HistoryRequest rq = PARLEY__V1__HISTORY_REQUEST__INIT;
    Parley__V1__HistoryReply *rep = NULL;
    rq.op = (char *)op;
    rq.name = (char *)name;
    rq.expires_ms = LOGIN_WINDOW_MS;
    *count = 0;
    pl_status s = gw_history(g, rid, &rq, &rep);
    if (s != PL_OK) {
        LOGW(rid, "log-in rate limit %s: %s", op, pl_err_last());
        return;
    }
    *count = (int64_t)rep->count;
    if (retry_s && rep->quota && rep->quota->minute_reset_ms) {
        int64_t left = rep->quota->minute_reset_ms - dmn_wall_ms();
        unsigned secs = left > 0 ? (unsigned)((left + 999) / 1000) : 1;
        if (secs > *retry_s)
            *retry_s = secs;
    }
    protobuf_c_message_free_unpacked(&rep->base, NULL);
}

static enum MHD_Result route_login(http_req *r, void *arg)
{
    gw *g = arg;
    const char *rid = http_request_id(r);
    enum MHD_Result ret;
    cJSON *b = gw_body_object(r, false, &ret);
    if (!b)
        return ret;
    char email[256];
    const char *pw = jstr(b, "password");
    if (!email_ok(jstr(b, "email"), email) || !pw || strlen(pw) > PW_MAX) {
        cJSON_Delete(b);
        return bad_request(r, NULL, "email and password are required");
    }
    /* Counter names: the address as text, the account as a hash of its email (keys stay
     * short and carry no personal data). */
    char by_ip[96], by_email[96], eh[65];
    sha256_hex(email, eh);
    snprintf(by_ip, sizeof by_ip, "login:ip:%s", http_client_ip(r));
    snprintf(by_email, sizeof by_email, "login:email:%.32s", eh);
    int64_t n_ip, n_email;
    unsigned retry = 0;
    ratelimit(g, rid, "ratelimit.get", by_ip, &n_ip, &retry);
    ratelimit(g, rid, "ratelimit.get", by_email, &n_email, &retry);
    if (n_ip >= LOGIN_MAX_PER_IP || n_email >= LOGIN_MAX_PER_EMAIL) {
        cJSON_Delete(b);
        char msg[160];
        snprintf(msg, sizeof msg, "too many failed log-in attempts: retry in %u s", retry);
        return http_reply_error(r, 429, msg, NULL, "rate_limited", retry ? retry : 60);
    }
    Parley__V1__HistoryRequest rq = PARLEY__V1__HISTORY_REQUEST__INIT;
    Parley__V1__User u = PARLEY__V1__USER__INIT;
    Parley__V1__HistoryReply *rep = NULL;
    u.email = email;
    rq.op = "user.by_email";
    rq.user = &u;
    pl_status s = gw_history(g, rid, &rq, &rep);
    if (s != PL_OK && s != PL_NOT_FOUND) {
        cJSON_Delete(b);
        return gw_fail(r, s);
    }
    bool ok = false;
    /* An unknown email is verified against the dummy hash: the answer takes as long. */
    s = pw_verify(rep && rep->password_hash && *rep->password_hash ? rep->password_hash : NULL, pw,
                  &ok);
    cJSON_Delete(b);
    if (s != PL_OK) {
        if (rep)
            protobuf_c_message_free_unpacked(&rep->base, NULL);
        return gw_fail(r, s);
    }
    if (!ok || rep->user->disabled) {
        if (rep)
            protobuf_c_message_free_unpacked(&rep->base, NULL);
        ratelimit(g, rid, "ratelimit.hit", by_ip, &n_ip, NULL);
        ratelimit(g, rid, "ratelimit.hit", by_email, &n_email, NULL);
        return http_reply_error(r, 401, "invalid email or password", NULL, "invalid_credentials",
                                0);
    }
    ratelimit(g, rid, "ratelimit.clear", by_email, &n_email, NULL);
    ret = start_session(g, r, 200, rep->user);
    protobuf_c_message_free_unpacked(&rep->base, NULL);
    return ret;
}

static enum MHD_Result route_logout(http_req *r, void *arg)
{
    gw *g = arg;
    const char *token = presented_token(r);
    if (token && *token && !is_api_key(token) && strlen(token) <= 256) {
        char hash[65];
        sha256_hex(token, hash);
        Parley__V1__HistoryRequest rq = PARLEY__V1__HISTORY_REQUEST__INIT;
        Parley__V1__HistoryReply *rep = NULL;
        rq.op = "session.delete";
        rq.token_hash = hash;
        pl_status s = gw_history(g, http_request_id(r), &rq, &rep);
        invalidate(g, http_request_id(r), hash, NULL, false);
        if (s != PL_OK)
            return gw_fail(r, s);
        protobuf_c_message_free_unpacked(&rep->base, NULL);
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddBoolToObject(o, "ok", true);
    char cookie[160];
    session_cookie(cookie, sizeof cookie, "", 0);
    return gw_send_json(r, 200, o, NULL, cookie);
}

/* --- the caller: profile, quota ------------------------------------------------------------ */

static enum MHD_Result route_me(http_req *r, void *arg)
{
    gw_user u;
    Parley__V1__HistoryReply *rep = NULL;
    enum MHD_Result ret;
    if (!authenticate(arg, r, &u, &rep, &ret))
        return ret;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddItemToObject(o, "user", user_json(rep->user));
    if (rep->tier)
        cJSON_AddItemToObject(o, "tier", tier_json(rep->tier));
    if (rep->quota)
        cJSON_AddItemToObject(o, "quota", quota_json(rep->quota));
    cJSON_AddStringToObject(o, "auth", u.via_api_key ? "api_key" : "session");
    ret = gw_send_json(r, 200, o, u.has_quota ? &u.quota : NULL, NULL);
    protobuf_c_message_free_unpacked(&rep->base, NULL);
    return ret;
}

/* PATCH /api/v1/me: only the fields listed here may be written. */
static enum MHD_Result route_me_patch(http_req *r, void *arg)
{
    gw *g = arg;
    gw_user u;
    enum MHD_Result ret;
    if (!gw_auth_user(g, r, &u, &ret))
        return ret;
    cJSON *b = gw_body_object(r, false, &ret);
    if (!b)
        return ret;
    const cJSON *f;
    const char *ci = NULL;
    cJSON_ArrayForEach(f, b)
    {
        if (strcmp(f->string, "custom_instructions") != 0) {
            char msg[128];
            snprintf(msg, sizeof msg, "field '%.60s' cannot be changed here", f->string);
            ret = bad_request(r, f->string, msg);
            cJSON_Delete(b);
            return ret;
        }
        if (!cJSON_IsString(f)) {
            cJSON_Delete(b);
            return bad_request(r, "custom_instructions", "custom_instructions must be a string");
        }
        ci = f->valuestring;
    }
    if (!ci) {
        cJSON_Delete(b);
        return bad_request(r, NULL, "nothing to change: send custom_instructions");
    }
    Parley__V1__HistoryRequest rq = PARLEY__V1__HISTORY_REQUEST__INIT;
    Parley__V1__User nu = PARLEY__V1__USER__INIT;
    Parley__V1__HistoryReply *rep = NULL;
    nu.custom_instructions = (char *)ci;
    rq.op = "user.update";
    rq.user_id = u.id;
    rq.user = &nu;
    pl_status s = gw_history(g, http_request_id(r), &rq, &rep);
    cJSON_Delete(b);
    if (s != PL_OK)
        return gw_fail(r, s);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddItemToObject(o, "user", user_json(rep->user));
    protobuf_c_message_free_unpacked(&rep->base, NULL);
    return gw_send_json(r, 200, o, u.has_quota ? &u.quota : NULL, NULL);
}

static enum MHD_Result route_quota(http_req *r, void *arg)
{
    gw_user u;
    Parley__V1__HistoryReply *rep = NULL;
    enum MHD_Result ret;
    if (!authenticate(arg, r, &u, &rep, &ret))
        return ret;
    cJSON *o = cJSON_CreateObject();
    if (rep->tier)
        cJSON_AddItemToObject(o, "tier", tier_json(rep->tier));
    if (rep->quota)
        cJSON_AddItemToObject(o, "quota", quota_json(rep->quota));
    ret = gw_send_json(r, 200, o, u.has_quota ? &u.quota : NULL, NULL);
    protobuf_c_message_free_unpacked(&rep->base, NULL);
    return ret;
}

/* --- API keys ------------------------------------------------------------------------------ */

/* Key management needs a logged-in session: a leaked key must not be able to mint more. */
static bool session_only(http_req *r, const gw_user *u, enum MHD_Result *ret)
{
    if (!u->via_api_key)
        return true;
    *ret =
        http_reply_error(r, 403, "API keys cannot manage API keys: log in", NULL, "forbidden", 0);
    return false;
}

static enum MHD_Result route_keys_list(http_req *r, void *arg)
{
    gw *g = arg;
    gw_user u;
    enum MHD_Result ret;
    if (!gw_auth_user(g, r, &u, &ret))
        return ret;
    const char *all = http_query(r, "include_revoked");
    Parley__V1__HistoryRequest rq = PARLEY__V1__HISTORY_REQUEST__INIT;
    Parley__V1__HistoryReply *rep = NULL;
    rq.op = "apikey.list";
    rq.user_id = u.id;
    rq.flag = all && (strcmp(all, "true") == 0 || strcmp(all, "1") == 0);
    pl_status s = gw_history(g, http_request_id(r), &rq, &rep);
    if (s != PL_OK)
        return gw_fail(r, s);
    cJSON *data, *o = list_json(&data);
    for (size_t i = 0; i < rep->n_api_keys; i++)
        cJSON_AddItemToArray(data, key_json(rep->api_keys[i]));
    protobuf_c_message_free_unpacked(&rep->base, NULL);
    return gw_send_json(r, 200, o, u.has_quota ? &u.quota : NULL, NULL);
}

static enum MHD_Result route_keys_create(http_req *r, void *arg)
{
    gw *g = arg;
    gw_user u;
    enum MHD_Result ret;
    if (!gw_auth_user(g, r, &u, &ret) || !session_only(r, &u, &ret))
        return ret;
    cJSON *b = gw_body_object(r, true, &ret);
    if (!b)
        return ret;
    const cJSON *nv = cJSON_GetObjectItemCaseSensitive(b, "name");
    if (nv && !cJSON_IsString(nv) && !cJSON_IsNull(nv)) {
        cJSON_Delete(b);
        return bad_request(r, "name", "name must be a string");
    }
    const char *name = cJSON_IsString(nv) ? nv->valuestring : "";
    if (strlen(name) > 100) {
        cJSON_Delete(b);
        return bad_request(r, "name", "name must have at most 100 characters");
    }
    char key[SECRET_CAP], hash[65], prefix[KEY_PREFIX_LEN + 1];
    new_secret("pk-", key);
    sha256_hex(key, hash);
    memcpy(prefix, key, KEY_PREFIX_LEN); /* the key is always longer */
    prefix[KEY_PREFIX_LEN] = '\0';
    Parley__V1__HistoryRequest rq = PARLEY__V1__HISTORY_REQUEST__INIT;
    Parley__V1__ApiKey k = PARLEY__V1__API_KEY__INIT;
    Parley__V1__HistoryReply *rep = NULL;
    k.name = (char *)name;
    k.prefix = prefix;
    rq.op = "apikey.create";
    rq.user_id = u.id;
    rq.token_hash = hash;
    rq.api_key = &k;
    pl_status s = gw_history(g, http_request_id(r), &rq, &rep);
    cJSON_Delete(b);
    if (s != PL_OK) {
        sodium_memzero(key, sizeof key);
        return gw_fail(r, s);
    }
    cJSON *o = key_json(rep->api_key);
    protobuf_c_message_free_unpacked(&rep->base, NULL);
    /* The only time the key is ever shown. */
    cJSON_AddStringToObject(o, "key", key);
    sodium_memzero(key, sizeof key);
    return gw_send_json(r, 201, o, u.has_quota ? &u.quota : NULL, NULL);
}

/* The id after a route's '*': non-empty, at most 64 bytes, no '/'. NULL otherwise. */
static const char *path_id(http_req *r)
{
    const char *id = http_path_rest(r);
    size_t n = strlen(id);
    return n == 0 || n > 64 || strchr(id, '/') ? NULL : id;
}

static enum MHD_Result route_keys_revoke(http_req *r, void *arg)
{
    gw *g = arg;
    gw_user u;
    enum MHD_Result ret;
    if (!gw_auth_user(g, r, &u, &ret) || !session_only(r, &u, &ret))
        return ret;
    const char *id = path_id(r);
    if (!id)
        return http_reply_error(r, 404, "no such API key", NULL, "not_found", 0);
    Parley__V1__HistoryRequest rq = PARLEY__V1__HISTORY_REQUEST__INIT;
    Parley__V1__ApiKey k = PARLEY__V1__API_KEY__INIT;
    Parley__V1__HistoryReply *rep = NULL;
    k.id = (char *)id;
    rq.op = "apikey.revoke";
    rq.user_id = u.id;
    rq.api_key = &k;
    pl_status s = gw_history(g, http_request_id(r), &rq, &rep);
    if (s != PL_OK)
        return gw_fail(r, s);
    protobuf_c_message_free_unpacked(&rep->base, NULL);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", id);
    cJSON_AddStringToObject(o, "object", "api_key");
    cJSON_AddBoolToObject(o, "deleted", true);
    return gw_send_json(r, 200, o, u.has_quota ? &u.quota : NULL, NULL);
}

/* --- administration ------------------------------------------------------------------------ */

/* Authenticates and requires an administrator: 403 for everyone else. */
static bool admin_only(gw *g, http_req *r, gw_user *u, enum MHD_Result *ret)
{
    if (!gw_auth_user(g, r, u, ret))
        return false;
    if (u->is_admin)
        return true;
    *ret = http_reply_error(r, 403, "administrators only", NULL, "forbidden", 0);
    return false;
}

/* A query parameter as a whole number in [lo, hi]; `def` when absent; false when malformed. */
static bool query_uint(http_req *r, const char *name, unsigned lo, unsigned hi, unsigned def,
                       unsigned *out)
{
    const char *v = http_query(r, name);
    if (!v || !*v) {
        *out = def;
        return true;
    }
    char *end;
    unsigned long n = strtoul(v, &end, 10);
    if (*end || !isdigit((unsigned char)*v) || n < lo || n > hi)
        return false;
    *out = (unsigned)n;
    return true;
}

static enum MHD_Result route_admin_users(http_req *r, void *arg)
{
    gw *g = arg;
    gw_user u;
    enum MHD_Result ret;
    if (!admin_only(g, r, &u, &ret))
        return ret;
    unsigned limit;
    if (!query_uint(r, "limit", 1, 200, 50, &limit))
        return bad_request(r, "limit", "limit must be a whole number from 1 to 200");
    Parley__V1__HistoryRequest rq = PARLEY__V1__HISTORY_REQUEST__INIT;
    Parley__V1__HistoryReply *rep = NULL;
    rq.op = "admin.users";
    rq.user_id = u.id;
    rq.limit = limit;
    rq.cursor = (char *)(http_query(r, "cursor") ? http_query(r, "cursor") : "");
    rq.query = (char *)(http_query(r, "q") ? http_query(r, "q") : "");
    pl_status s = gw_history(g, http_request_id(r), &rq, &rep);
    if (s != PL_OK)
        return gw_fail(r, s);
    cJSON *data, *o = list_json(&data);
    for (size_t i = 0; i < rep->n_users; i++)
        cJSON_AddItemToArray(data, user_json(rep->users[i]));
    if (rep->next_cursor && *rep->next_cursor)
        cJSON_AddStringToObject(o, "next_cursor", rep->next_cursor);
    else
        cJSON_AddNullToObject(o, "next_cursor");
    protobuf_c_message_free_unpacked(&rep->base, NULL);
    return gw_send_json(r, 200, o, u.has_quota ? &u.quota : NULL, NULL);
}

/* PATCH /api/v1/admin/users/{id} {tier}: the only field an administrator changes here. */
static enum MHD_Result route_admin_user_patch(http_req *r, void *arg)
{
    gw *g = arg;
    gw_user u;
    enum MHD_Result ret;
    if (!admin_only(g, r, &u, &ret))
        return ret;
    const char *id = path_id(r);
    if (!id)
        return http_reply_error(r, 404, "no such user", NULL, "not_found", 0);
    cJSON *b = gw_body_object(r, false, &ret);
    if (!b)
        return ret;
    const cJSON *f;
    cJSON_ArrayForEach(f, b)
    {
        if (strcmp(f->string, "tier") != 0) {
            char msg[128];
            snprintf(msg, sizeof msg, "field '%.60s' cannot be changed here", f->string);
            ret = bad_request(r, f->string, msg);
            cJSON_Delete(b);
            return ret;
        }
    }
    const char *tier = jstr(b, "tier");
    if (!tier || !*tier) {
        cJSON_Delete(b);
        return bad_request(r, "tier", "tier (a tier's name) is required");
    }
    Parley__V1__HistoryRequest rq = PARLEY__V1__HISTORY_REQUEST__INIT;
    Parley__V1__User nu = PARLEY__V1__USER__INIT;
    Parley__V1__HistoryReply *rep = NULL;
    nu.id = (char *)id;
    nu.tier = (char *)tier;
    rq.op = "admin.set_tier";
    rq.user_id = u.id;
    rq.user = &nu;
    pl_status s = gw_history(g, http_request_id(r), &rq, &rep);
    invalidate(g, http_request_id(r), NULL, id, false);
    cJSON_Delete(b);
    if (s != PL_OK)
        return gw_fail(r, s);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddItemToObject(o, "user", user_json(rep->user));
    protobuf_c_message_free_unpacked(&rep->base, NULL);
    return gw_send_json(r, 200, o, u.has_quota ? &u.quota : NULL, NULL);
}

static enum MHD_Result route_admin_usage(http_req *r, void *arg)
{
    gw *g = arg;
    gw_user u;
    enum MHD_Result ret;
    if (!admin_only(g, r, &u, &ret))
        return ret;
    unsigned days;
    if (!query_uint(r, "days", 1, 92, 1, &days))
        return bad_request(r, "days", "days must be a whole number from 1 to 92");
    Parley__V1__HistoryRequest rq = PARLEY__V1__HISTORY_REQUEST__INIT;
    Parley__V1__HistoryReply *rep = NULL;
    rq.op = "admin.usage";
    rq.user_id = u.id;
    rq.limit = days;
    pl_status s = gw_history(g, http_request_id(r), &rq, &rep);
    if (s != PL_OK)
        return gw_fail(r, s);
    cJSON *data, *o = list_json(&data);
    cJSON_AddNumberToObject(o, "days", days);
    for (size_t i = 0; i < rep->n_usage_days; i++) {
        const Parley__V1__UsageDay *d = rep->usage_days[i];
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "user_id", d->user_id);
        cJSON_AddStringToObject(e, "email", d->email);
        cJSON_AddStringToObject(e, "day", d->day);
        cJSON_AddNumberToObject(e, "requests", (double)d->requests);
        cJSON_AddNumberToObject(e, "prompt_tokens", (double)d->prompt_tokens);
        cJSON_AddNumberToObject(e, "completion_tokens", (double)d->completion_tokens);
        cJSON_AddNumberToObject(e, "total_tokens",
                                (double)(d->prompt_tokens + d->completion_tokens));
        cJSON_AddItemToArray(data, e);
    }
    protobuf_c_message_free_unpacked(&rep->base, NULL);
    return gw_send_json(r, 200, o, u.has_quota ? &u.quota : NULL, NULL);
}

static enum MHD_Result route_admin_tiers(http_req *r, void *arg)
{
    gw *g = arg;
    gw_user u;
    enum MHD_Result ret;
    if (!admin_only(g, r, &u, &ret))
        return ret;
    Parley__V1__HistoryRequest rq = PARLEY__V1__HISTORY_REQUEST__INIT;
    Parley__V1__HistoryReply *rep = NULL;
    rq.op = "tier.list";
    rq.user_id = u.id;
    pl_status s = gw_history(g, http_request_id(r), &rq, &rep);
    if (s != PL_OK)
        return gw_fail(r, s);
    cJSON *data, *o = list_json(&data);
    for (size_t i = 0; i < rep->n_tiers; i++)
        cJSON_AddItemToArray(data, tier_json(rep->tiers[i]));
    protobuf_c_message_free_unpacked(&rep->base, NULL);
    return gw_send_json(r, 200, o, u.has_quota ? &u.quota : NULL, NULL);
}

/* PUT /api/v1/admin/tiers/{name}: creates or replaces a tier. */
static enum MHD_Result route_admin_tier_put(http_req *r, void *arg)
{
    gw *g = arg;
    gw_user u;
    enum MHD_Result ret;
    if (!admin_only(g, r, &u, &ret))
        return ret;
    const char *name = path_id(r);
    if (!name)
        return http_reply_error(r, 404, "no such tier", NULL, "not_found", 0);
    cJSON *b = gw_body_object(r, false, &ret);
    if (!b)
        return ret;
    Parley__V1__Tier t = PARLEY__V1__TIER__INIT;
    double cw, rpm, tpd, mt;
    const char *prio = jstr(b, "priority");
    const cJSON *models = cJSON_GetObjectItemCaseSensitive(b, "models");
    char *model_ptrs[64];
    const char *bad = NULL;
    if (!jint(b, "context_window", 16, 1 << 24, &cw))
        bad = "context_window";
    else if (!jint(b, "requests_per_minute", 0, 1e6, &rpm))
        bad = "requests_per_minute";
    else if (!jint(b, "tokens_per_day", 0, 1e15, &tpd))
        bad = "tokens_per_day";
    else if (!jint(b, "max_tokens", 1, 1 << 20, &mt))
        bad = "max_tokens";
    else if (prio && strcmp(prio, "free") != 0 && strcmp(prio, "paid") != 0)
        bad = "priority";
    else if (models && !cJSON_IsArray(models))
        bad = "models";
    if (!bad && models) {
        const cJSON *m;
        cJSON_ArrayForEach(m, models)
        {
            if (!cJSON_IsString(m) || t.n_models == sizeof model_ptrs / sizeof model_ptrs[0]) {
                bad = "models";
                break;
            }
            model_ptrs[t.n_models++] = m->valuestring;
        }
    }
    if (bad) {
        char msg[160];
        snprintf(msg, sizeof msg,
                 "'%s' is missing or invalid (context_window, requests_per_minute, "
                 "tokens_per_day and max_tokens are whole numbers; priority is free or paid)",
                 bad);
        cJSON_Delete(b);
        return bad_request(r, bad, msg);
    }
    t.name = (char *)name;
    t.models = model_ptrs;
    t.context_window = (uint32_t)cw;
    t.requests_per_minute = (uint32_t)rpm;
    t.tokens_per_day = (uint64_t)tpd;
    t.max_tokens = (uint32_t)mt;
    t.priority = prio && strcmp(prio, "paid") == 0 ? PARLEY__V1__PRIORITY__PRIORITY_PAID
                                                   : PARLEY__V1__PRIORITY__PRIORITY_FREE;
    Parley__V1__HistoryRequest rq = PARLEY__V1__HISTORY_REQUEST__INIT;
    Parley__V1__HistoryReply *rep = NULL;
    rq.op = "tier.set";
    rq.user_id = u.id;
    rq.tier = &t;
    pl_status s = gw_history(g, http_request_id(r), &rq, &rep);
    invalidate(g, http_request_id(r), NULL, NULL, true);
    cJSON_Delete(b);
    if (s != PL_OK)
        return gw_fail(r, s);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddItemToObject(o, "tier", tier_json(rep->tier));
    protobuf_c_message_free_unpacked(&rep->base, NULL);
    return gw_send_json(r, 200, o, u.has_quota ? &u.quota : NULL, NULL);
}

const http_route gw_routes_accounts[] = {
    {"POST", "/api/v1/auth/signup", route_signup, NULL},
    {"POST", "/api/v1/auth/login", route_login, NULL},
    {"POST", "/api/v1/auth/logout", route_logout, NULL},
    {"GET", "/api/v1/me", route_me, NULL},
    {"PATCH", "/api/v1/me", route_me_patch, NULL},
    {"GET", "/api/v1/quota", route_quota, NULL},
    {"GET", "/api/v1/keys", route_keys_list, NULL},
    {"POST", "/api/v1/keys", route_keys_create, NULL},
    {"DELETE", "/api/v1/keys/*", route_keys_revoke, NULL},
    {"GET", "/api/v1/admin/users", route_admin_users, NULL},
    {"PATCH", "/api/v1/admin/users/*", route_admin_user_patch, NULL},
    {"GET", "/api/v1/admin/usage", route_admin_usage, NULL},
    {"GET", "/api/v1/admin/tiers", route_admin_tiers, NULL},
    {"PUT", "/api/v1/admin/tiers/*", route_admin_tier_put, NULL},
};
const size_t gw_n_routes_accounts = sizeof gw_routes_accounts / sizeof gw_routes_accounts[0];
