/* gateway.h — the gateway daemon's context, shared by its route modules.
 *
 * One gw per process, created in main.c; route handlers get it as their `arg`. Read-only after
 * start except for the metrics (atomic) and the HTTP server pointer. */
#ifndef PARLEY_GW_GATEWAY_H
#define PARLEY_GW_GATEWAY_H

#include <stdbool.h>
#include <stdint.h>

#include "daemon.h"
#include "http.h"
#include "stream.h"

typedef struct gw_cfg {
    const char *http_addr;
    int http_port;
    const char *api_key;
    int64_t request_timeout_ms;
    const char *tls_cert;
    const char *tls_key;
    uint64_t max_body;
    int64_t max_conns_per_ip;
    int64_t http_threads;
    int64_t idle_timeout_ms;
    int64_t keepalive_ms;
    int64_t stream_idle_timeout_ms;
    int64_t first_token_wait_ms;
    bool signup_open;                   /* accounts.c: --signup-open */
    int64_t session_idle_ms;            /* accounts.c: --session-idle */
    int64_t session_max_ms;             /* accounts.c: --session-max */
    int64_t session_cache_ms;           /* accounts.c: --session-cache (0 = off) */
    uint64_t view_cache_bytes;          /* convs_json.c: --view-cache (0 = off) */
    const char *web_root;               /* static.c: --web-root ("" = found next to the binary) */
    bool safety_precheck;               /* precheck.c: --safety-precheck (/v1) */
    int64_t safety_precheck_timeout_ms; /* precheck.c */
    const char *safety_precheck_on_timeout; /* precheck.c: "allow" or "refuse" */
} gw_cfg;

typedef struct gw {
    gw_cfg cfg;
    dmn *d;
    http_server *http;
    gws_hub *streams;
    char *tls_cert_pem, *tls_key_pem;
    char web_dir[4096];             /* static.c: the web app's folder, resolved at start */
    met_family *m_requests;         /* parley_gateway_http_requests_total{route,status} */
    met_family *m_latency;          /* parley_gateway_http_request_duration_seconds{route} */
    met_family *m_precheck;         /* parley_gateway_safety_precheck_total{result} (precheck.c) */
    met_family *m_precheck_latency; /* parley_gateway_safety_precheck_duration_seconds */
    struct authcache *auth_cache;   /* accounts.c: session look-ups; NULL when off */
    bus_sub *auth_sub;              /* accounts.c: SUBJ_AUTH_INVALIDATE */
    met_family *m_session_cache;    /* parley_gateway_session_cache_total{result} */
    struct viewcache *view_cache;   /* convs_json.c: opened conversations; NULL when off */
    met_family *m_view_cache;       /* parley_gateway_view_cache_total{result} */
} gw;

/* Routes of the OpenAI-compatible API (openai.c). */
enum MHD_Result oai_models(http_req *r, void *arg);
enum MHD_Result oai_chat_completions(http_req *r, void *arg);

/* Checks "Authorization: Bearer <key>": the configured key (when one is set) or a per-user API
 * key. Returns true when the request may go on; otherwise it has already answered 401/429 and
 * `*ret` is the MHD result to return. `user_id` (64 bytes) receives the key owner's id for a
 * per-user key, "" otherwise. */
bool gw_authorize(gw *g, http_req *r, char *user_id, enum MHD_Result *ret);

#endif
