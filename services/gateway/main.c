/* parley-gateway — the HTTP(S)/SSE edge: authentication, limits, the OpenAI-compatible API.
 *
 * This file is the daemon's configuration table and wiring: it loads the TLS files, starts the
 * HTTP server (http.c) with the route table, and keeps per-route metrics. Route handlers live
 * in their own files (openai.c, …). It also serves the API's OpenAPI document
 * (docs/openapi.json, embedded at build time by the Makefile) at GET /api/v1/openapi.json.
 * The web app and its libraries (GET /, /static/{name}, /vendor/{name}) are served by static.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon.h"
#include "gateway.h"
#include "log.h"
#include "product.h"
#include "static.h"
#include "viewcache.h"

static const cfg_opt gw_opts[] = {
    {"http-addr", CFG_STR, offsetof(gw_cfg, http_addr), "127.0.0.1", 0, 0,
     "IPv4 address the API listens on"},
    {"http-port", CFG_PORT, offsetof(gw_cfg, http_port), "8080", 0, 0, "API port"},
    {"api-key", CFG_STR, offsetof(gw_cfg, api_key), "", 0, 0,
     "when set, /v1/* requires 'Authorization: Bearer <key>'"},
    {"request-timeout", CFG_DURATION, offsetof(gw_cfg, request_timeout_ms), "10m", 100, 3600000,
     "deadline of an inference request, queueing included"},
    {"tls-cert", CFG_STR, offsetof(gw_cfg, tls_cert), "", 0, 0,
     "PEM certificate file: serve HTTPS (with --tls-key)"},
    {"tls-key", CFG_STR, offsetof(gw_cfg, tls_key), "", 0, 0, "PEM private key file"},
    {"max-body", CFG_BYTES, offsetof(gw_cfg, max_body), "1M", 1024, 1ULL << 30,
     "largest request body (413 beyond)"},
    {"max-conns-per-ip", CFG_INT, offsetof(gw_cfg, max_conns_per_ip), "64", 1, 100000,
     "concurrent connections from one address"},
    {"http-threads", CFG_INT, offsetof(gw_cfg, http_threads), "8", 1, 256, "HTTP worker threads"},
    {"idle-timeout", CFG_DURATION, offsetof(gw_cfg, idle_timeout_ms), "60s", 1000, 3600000,
     "close a connection idle this long (streams send keep-alives)"},
    {"keepalive", CFG_DURATION, offsetof(gw_cfg, keepalive_ms), "10s", 100, 60000,
     "send an SSE keep-alive comment after this long without output"},
    {"stream-idle-timeout", CFG_DURATION, offsetof(gw_cfg, stream_idle_timeout_ms), "5m", 1000,
     3600000, "end a stream that has had no token for this long"},
    {"first-token-wait", CFG_DURATION, offsetof(gw_cfg, first_token_wait_ms), "2s", 0, 600000,
     "begin an SSE response this long after admission even without a token (errors before it "
     "get their own HTTP status)"},
    {"signup-open", CFG_BOOL, offsetof(gw_cfg, signup_open), "true", 0, 0,
     "accept sign-ups on /api/v1/auth/signup (the first user becomes administrator)"},
    {"session-idle", CFG_DURATION, offsetof(gw_cfg, session_idle_ms), "168h", 1000, 31536000000.0,
     "a session unused this long expires"},
    {"session-max", CFG_DURATION, offsetof(gw_cfg, session_max_ms), "720h", 1000, 31536000000.0,
     "a session expires this long after log-in, however much it is used"},
    {"session-cache", CFG_DURATION, offsetof(gw_cfg, session_cache_ms), "2s", 0, 60000,
     "remember a session's look-up this long (0: ask history on every request); log-outs and "
     "administrators' changes evict at once on every gateway"},
    {"view-cache", CFG_BYTES, offsetof(gw_cfg, view_cache_bytes), "64M", 0, 1ULL << 34,
     "memory for opened conversations kept as JSON, served again while history confirms their "
     "version (0: off)"},
    {"safety-precheck", CFG_BOOL, offsetof(gw_cfg, safety_precheck), "false", 0, 0,
     "ask parley-safety to check each /v1 prompt before it is queued (blocking; the product "
     "API's turns are checked by parley-chat's own --safety-precheck)"},
    {"safety-precheck-timeout", CFG_DURATION, offsetof(gw_cfg, safety_precheck_timeout_ms), "300ms",
     1, 10000, "deadline of the /v1 pre-check"},
    {"safety-precheck-on-timeout", CFG_STR, offsetof(gw_cfg, safety_precheck_on_timeout), "allow",
     0, 0, "when the /v1 pre-check does not answer in time: allow or refuse the prompt"},
    {"web-root", CFG_STR, offsetof(gw_cfg, web_root), "", 0, 0,
     "folder of the web app served at / (empty: the repository's web/ next to the build, "
     "then /usr/share/parley/web)"},
};

static const char *const route_labels[] = {"route", "status", NULL};
static const char *const route_only[] = {"route", NULL};

static void on_done(const char *method, const char *path, int status, double seconds, void *arg)
{
    gw *g = arg;
    char st[8];
    (void)method;
    snprintf(st, sizeof st, "%d", status);
    met_inc(met_with(g->m_requests, path, st, NULL), 1);
    met_observe(met_with(g->m_latency, path, NULL), seconds);
}

static char *read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *buf = NULL;
    size_t len = 0;
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
        char *b = realloc(buf, len + n + 1);
        if (!b) {
            free(buf);
            fclose(f);
            return NULL;
        }
        buf = b;
        memcpy(buf + len, chunk, n);
        len += n;
    }
    fclose(f);
    if (buf)
        buf[len] = '\0';
    return buf;
}

/* docs/openapi.json, embedded by the Makefile (build/gen/openapi_json.c). */
extern const char gw_openapi_json[];
extern const size_t gw_openapi_json_len;

static enum MHD_Result openapi_doc(http_req *r, void *arg)
{
    (void)arg;
    struct MHD_Response *resp = MHD_create_response_from_buffer(
        gw_openapi_json_len, (void *)gw_openapi_json, MHD_RESPMEM_PERSISTENT);
    if (!resp)
        return MHD_NO;
    MHD_add_response_header(resp, "Content-Type", "application/json");
    MHD_add_response_header(resp, "Cache-Control", "public, max-age=300");
    return http_queue(r, 200, resp);
}

static pl_status gw_start(dmn *d, void *ctx)
{
    gw *g = ctx;
    g->d = d;
    if (!g->cfg.tls_cert[0] != !g->cfg.tls_key[0])
        return PL_ERRF(PL_INVALID, "--tls-cert and --tls-key go together");
    if (g->cfg.tls_cert[0]) {
        if (!(g->tls_cert_pem = read_file(g->cfg.tls_cert)))
            return PL_ERRF(PL_IO, "cannot read --tls-cert %s", g->cfg.tls_cert);
        if (!(g->tls_key_pem = read_file(g->cfg.tls_key)))
            return PL_ERRF(PL_IO, "cannot read --tls-key %s", g->cfg.tls_key);
    }
    if (!gw_static_resolve_root(g->cfg.web_root, g->web_dir, sizeof g->web_dir))
        LOGW(NULL, "no web app in %s (index.html missing): / answers 404 to browsers", g->web_dir);
    met_registry *mr = dmn_metrics(d);
    if (strcmp(g->cfg.safety_precheck_on_timeout, "allow") != 0 &&
        strcmp(g->cfg.safety_precheck_on_timeout, "refuse") != 0)
        return PL_ERRF(PL_INVALID, "--safety-precheck-on-timeout is allow or refuse, not '%s'",
                       g->cfg.safety_precheck_on_timeout);
    static const char *const result[] = {"result", NULL};
    g->m_precheck = met_counter(mr, "parley_gateway_safety_precheck_total",
                                "/v1 safety pre-checks, by result (allow, block, timeout_allow, "
                                "timeout_refuse)",
                                result);
    g->m_precheck_latency =
        met_histogram(mr, "parley_gateway_safety_precheck_duration_seconds",
                      "time from asking the /v1 pre-check to its answer or deadline", NULL,
                      met_latency_buckets, met_latency_buckets_n);
    g->m_requests = met_counter(mr, "parley_gateway_http_requests_total",
                                "HTTP requests answered, by route and status", route_labels);
    g->m_latency = met_histogram(mr, "parley_gateway_http_request_duration_seconds",
                                 "time from request to the end of the response", route_only,
                                 met_latency_buckets, met_latency_buckets_n);

    static const http_route base[] = {
        {"GET", "/v1/models", oai_models, NULL},
        {"POST", "/v1/chat/completions", oai_chat_completions, NULL},
        {"GET", "/api/v1/openapi.json", openapi_doc, NULL},
    };
    static http_route routes[64];
    size_t n_routes = 0;
    const http_route *tables[] = {gw_routes_accounts, gw_routes_convs, gw_routes_safety,
                                  gw_routes_static, base};
    const size_t counts[] = {gw_n_routes_accounts, gw_n_routes_convs, gw_n_routes_safety,
                             gw_n_routes_static, sizeof base / sizeof base[0]};
    for (size_t t = 0; t < sizeof tables / sizeof tables[0]; t++)
        for (size_t i = 0; i < counts[t]; i++) {
            if (n_routes == sizeof routes / sizeof routes[0])
                return PL_ERRF(PL_ERR, "too many routes");
            routes[n_routes] = tables[t][i];
            routes[n_routes++].arg = g;
        }
    http_opts o = {
        .addr = g->cfg.http_addr,
        .port = g->cfg.http_port,
        .threads = (unsigned)g->cfg.http_threads,
        .max_body = g->cfg.max_body,
        .max_header_bytes = 64 * 1024,
        .max_conns = 4096,
        .max_conns_per_ip = (unsigned)g->cfg.max_conns_per_ip,
        .idle_timeout_s = (unsigned)(g->cfg.idle_timeout_ms / 1000),
        .tls_cert_pem = g->tls_cert_pem,
        .tls_key_pem = g->tls_key_pem,
        .routes = routes,
        .n_routes = n_routes,
        .on_done = on_done,
        .arg = g,
    };
    pl_status s = gws_hub_create(dmn_bus(d), g->cfg.keepalive_ms, g->cfg.stream_idle_timeout_ms,
                                 g->cfg.first_token_wait_ms, &g->streams);
    if (s != PL_OK)
        return s;
    static const double delay_buckets[] = {0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005,
                                           0.01,   0.025,   0.05,   0.1,   0.25,  1};
    gws_hub_set_delay_metric(
        g->streams,
        met_histogram(mr, "parley_gateway_token_delivery_seconds",
                      "per streamed token: from the worker publishing it to the gateway handing "
                      "it to the client's socket (the NATS and gateway path)",
                      NULL, delay_buckets, sizeof delay_buckets / sizeof delay_buckets[0]));
    if ((s = gw_auth_cache_start(g)) != PL_OK)
        return s;
    if (g->cfg.view_cache_bytes) {
        if ((s = viewcache_create(g->cfg.view_cache_bytes, &g->view_cache)) != PL_OK)
            return s;
        static const char *const vc_labels[] = {"result", NULL};
        g->m_view_cache =
            met_counter(mr, "parley_gateway_view_cache_total",
                        "conversation opens answered from the gateway's view cache (hit), "
                        "rendered afresh (miss), or confirmed but evicted meanwhile (lost)",
                        vc_labels);
    }
    s = http_start(&o, &g->http);
    if (s != PL_OK)
        return s;
    LOGI(NULL, "serving %s on %s:%d", g->tls_cert_pem ? "HTTPS" : "HTTP", g->cfg.http_addr,
         http_port(g->http));
    return PL_OK;
}

static size_t gw_ready(void *ctx, dmn_check *c)
{
    gw *g = ctx;
    c[0].name = "http";
    c[0].ok = g->http != NULL;
    return 1;
}

static void gw_drain(void *ctx, int64_t deadline_ms)
{
    gw *g = ctx;
    /* Streams in flight end with a retryable error so clients are never left hanging. */
    int64_t left = deadline_ms - dmn_now_ms();
    gws_hub_stop(g->streams, left > 0 ? left : 0);
}

static void gw_stop(void *ctx)
{
    gw *g = ctx;
    gws_hub_stop(g->streams, 0);
    http_stop(g->http);
    g->http = NULL;
    gws_hub_free(g->streams);
    g->streams = NULL;
    gw_auth_cache_stop(g);
    viewcache_free(g->view_cache);
    g->view_cache = NULL;
    free(g->tls_cert_pem);
    free(g->tls_key_pem);
}

int main(int argc, char **argv)
{
    static gw g;
    dmn_spec spec = {
        .name = "gateway",
        .summary = "the HTTP(S)/SSE edge: auth, limits, OpenAI-compatible API",
        .opts = gw_opts,
        .n_opts = sizeof gw_opts / sizeof gw_opts[0],
        .cfg = &g.cfg,
        .ctx = &g,
        .start = gw_start,
        .ready = gw_ready,
        .drain = gw_drain,
        .stop = gw_stop,
        .admin_port_default = 9101,
    };
    return dmn_main(&spec, argc, argv);
}
