/* http.h — the gateway's HTTP(S) server on libmicrohttpd: routing, bodies, limits, replies.
 *
 * One MHD daemon with epoll and an internal thread pool. Each request gets an http_req that
 * lives from the first callback to MHD's completion notice; the body is collected into it up to
 * the configured cap (413 beyond, without reading the rest). Handlers run on a pool thread and
 * answer with http_reply_json / http_reply_error (or, for streams, a response built by the
 * caller and queued with http_queue). Limits applied here: body size, header memory per
 * connection, connections in total and per IP, idle timeout. Every response carries
 * X-Request-Id.
 *
 * What it does not do: authentication and API semantics (the route handlers), TLS policy beyond
 * loading a certificate and key. */
#ifndef PARLEY_GW_HTTP_H
#define PARLEY_GW_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>
#include <microhttpd.h>

#include "status.h"

typedef struct http_server http_server;
typedef struct http_req http_req;

/* A route handler. Returns an MHD_Result (from http_reply_* or http_queue). */
typedef enum MHD_Result (*http_handler)(http_req *r, void *arg);

typedef struct http_route {
    const char *method; /* "GET", "POST", … */
    const char *path;   /* exact path, or a prefix ending in '*' ("/api/v1/conversations/" + "*") */
    http_handler fn;
    void *arg;
} http_route;

typedef struct http_opts {
    const char *addr;        /* IPv4 address to bind */
    int port;                /* 0 = any free port */
    unsigned threads;        /* pool size */
    uint64_t max_body;       /* bytes */
    size_t max_header_bytes; /* MHD connection memory */
    unsigned max_conns;
    unsigned max_conns_per_ip;
    unsigned idle_timeout_s;
    const char *tls_cert_pem; /* contents, not paths; both or neither */
    const char *tls_key_pem;
    const http_route *routes;
    size_t n_routes;
    /* Called for every finished request (for metrics/logs): method, path, status, seconds. */
    void (*on_done)(const char *method, const char *path, int status, double seconds, void *arg);
    void *arg;
} http_opts;

/* Starts listening. PL_IO with "cannot listen on ADDR:PORT: address already in use" when the
 * port is taken. *out owned by the caller (http_stop). */
pl_status http_start(const http_opts *o, http_server **out);
int http_port(const http_server *s);
/* Stops accepting, closes connections, frees. Suspended connections must have been resumed
 * (streams ended) first. Accepts NULL. */
void http_stop(http_server *s);
struct MHD_Daemon *http_mhd(http_server *s);

/* --- request accessors (borrowed, valid during the handler) ---------------------------------- */
const char *http_method(const http_req *r);
const char *http_path(const http_req *r);
const char *http_request_id(const http_req *r);
const char *http_header(const http_req *r, const char *name); /* NULL when absent */
const char *http_query(const http_req *r, const char *name);  /* NULL when absent */
const char *http_body(const http_req *r, size_t *len);        /* NUL-terminated */
struct MHD_Connection *http_conn(http_req *r);
/* The part of the path matched by a route's '*' ("" when none). */
const char *http_path_rest(const http_req *r);
/* The client's IPv4/IPv6 address as text. */
const char *http_client_ip(const http_req *r);
/* Per-request slot for a handler's own state, freed by `free_fn` when the request ends. */
void http_set_user(http_req *r, void *user, void (*free_fn)(void *));
void *http_user(const http_req *r);

/* --- replies ------------------------------------------------------------------------------- */
/* Sends `json` (not freed) with the given status. */
enum MHD_Result http_reply_json(http_req *r, unsigned status, const cJSON *json);
/* Sends an OpenAI-shaped error: {"error":{"message","type","param","code"}}; `param` and
 * `code` may be NULL (→ null). The type follows the status (wire_error_type). For 429 and 503
 * a Retry-After header of `retry_after_s` seconds is added when > 0. */
enum MHD_Result http_reply_error(http_req *r, unsigned status, const char *message,
                                 const char *param, const char *code, unsigned retry_after_s);
/* Adds the standard headers (X-Request-Id, …) to `resp`, queues it and destroys our reference. */
enum MHD_Result http_queue(http_req *r, unsigned status, struct MHD_Response *resp);

#endif
