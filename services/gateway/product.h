/* product.h — the product API (/api/v1/...): shared pieces used by its route modules.
 *
 * Modules: accounts.c (sign-up, log-in/out, sessions, API keys, tiers, quotas, admin),
 * admin_safety.c (the administrators' safety views) and
 * convs.c (conversations, turns streamed over SSE, stop, regenerate, edit, branches, shares,
 * uploads, search). Each exports a route table that main.c appends to the server's routes; the
 * routes' `arg` is the gateway (gw *). Errors use the same JSON shape as /v1:
 * {"error":{"message","type","param","code"}}. */
#ifndef PARLEY_GW_PRODUCT_H
#define PARLEY_GW_PRODUCT_H

#include <stdbool.h>

#include "gateway.h"
#include "parley.pb-c.h"

/* The authenticated caller of a request. */
typedef struct gw_user {
    char id[64];
    char email[256];
    char tier[32];
    bool is_admin;
    bool via_api_key;
    /* The caller's remaining quota when authenticated (for gw_quota_headers without another
     * round trip); quota.exceeded points to a static string. has_quota is false when the
     * lookup could not tell. */
    bool has_quota;
    Parley__V1__Quota quota;
} gw_user;

/* Authenticates the request: the session cookie "parley_session", or "Authorization: Bearer"
 * with a session token or a per-user API key. On failure it has answered 401 and returns false
 * with the MHD result in *ret. Implemented in accounts.c. */
bool gw_auth_user(gw *g, http_req *r, gw_user *u, enum MHD_Result *ret);

/* The session look-up cache (authcache.h), sized for this many sessions. Started after the
 * bus is up (it subscribes to SUBJ_AUTH_INVALIDATE); a no-op when --session-cache is 0. */
#define GW_SESSION_CACHE_ENTRIES 16384
pl_status gw_auth_cache_start(gw *g);
void gw_auth_cache_stop(gw *g);
/* Forgets `user_id`'s cached sessions here (after a turn, so quota headers are fresh). */
void gw_auth_forget_user(gw *g, const char *user_id);

/* For the /v1 routes: `key` (a Bearer that is not the configured key) is looked up as a per-user
 * API key; a POST also counts one request against the owner's per-minute quota. Returns true when
 * the request may go on; otherwise it has answered 401, 429 (with Retry-After) or 503 and *ret
 * holds the MHD result. Implemented in accounts.c. */
bool gw_authorize_api_key(gw *g, http_req *r, const char *key, char *user_id, enum MHD_Result *ret);

/* One history RPC with the request's id; on PL_OK *rp is owned by the caller
 * (protobuf_c_message_free_unpacked). A reply carrying an Error is returned as that error's
 * status with the message recorded (pl_err_last()), and *rp is freed and NULL. */
pl_status gw_history(gw *g, const char *request_id, Parley__V1__HistoryRequest *rq,
                     Parley__V1__HistoryReply **rp);

/* Answers an error status from a backend with the matching HTTP status and message. */
enum MHD_Result gw_reply_status(http_req *r, pl_status s, const char *message);

/* Answers `s` with pl_err_message() (the last recorded error, without source locations). */
enum MHD_Result gw_fail(http_req *r, pl_status s);
/* Sends `j` (deleted here) as JSON with the standard headers, the quota headers when `q` is set
 * and a Set-Cookie when `cookie` is. */
enum MHD_Result gw_send_json(http_req *r, unsigned status, cJSON *j, const Parley__V1__Quota *q,
                             const char *cookie);
/* The same for JSON text already written: `text` (len bytes, malloc'd) is owned by the response
 * from here on, freed whatever happens. */
enum MHD_Result gw_send_text(http_req *r, unsigned status, char *text, size_t len,
                             const Parley__V1__Quota *q, const char *cookie);
/* The request body as a JSON object (caller deletes), or NULL after answering 400/415. An
 * empty body is an empty object when `empty_ok`. */
cJSON *gw_body_object(http_req *r, bool empty_ok, enum MHD_Result *ret);
/* Unix seconds from unix ms as a JSON integer; null for 0. */
void gw_add_time(cJSON *o, const char *name, int64_t ms);

/* Adds the caller's remaining quota as headers (X-RateLimit-*) to a response. */
void gw_quota_headers(struct MHD_Response *resp, const Parley__V1__Quota *q);

extern const http_route gw_routes_accounts[];
extern const size_t gw_n_routes_accounts;
extern const http_route gw_routes_convs[];
extern const size_t gw_n_routes_convs;
/* The administrators' safety views (admin_safety.c). */
extern const http_route gw_routes_safety[];
extern const size_t gw_n_routes_safety;

#endif
