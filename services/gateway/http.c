/* http.c — libmicrohttpd plumbing for the gateway (see http.h).
 *
 * Threading: MHD's pool threads call on_request / on_completed; an http_req is touched by one
 * thread at a time (MHD serialises callbacks per connection). The server struct is read-only
 * after http_start. Memory: each http_req owns its body buffer and user slot, freed in
 * on_completed, which MHD calls exactly once per request it started. */
#include "http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "daemon.h"
#include "log.h"
#include "utf8.h"
#include "wire.h"

struct http_server {
    http_opts o;
    struct MHD_Daemon *mhd;
    int port;
};

struct http_req {
    http_server *srv;
    struct MHD_Connection *conn;
    const char *method, *path;
    const http_route *route;
    char request_id[33];
    char *body;
    size_t body_len, body_cap;
    bool too_large;
    unsigned status;
    int64_t start_ms;
    void *user;
    void (*user_free)(void *);
    char client_ip[INET6_ADDRSTRLEN];
};

const char *http_method(const http_req *r)
{
    return r->method;
}
const char *http_path(const http_req *r)
{
    return r->path;
}
const char *http_request_id(const http_req *r)
{
    return r->request_id;
}
struct MHD_Connection *http_conn(http_req *r)
{
    return r->conn;
}
void *http_user(const http_req *r)
{
    return r->user;
}
struct MHD_Daemon *http_mhd(http_server *s)
{
    return s->mhd;
}
int http_port(const http_server *s)
{
    return s->port;
}

const char *http_header(const http_req *r, const char *name)
{
    return MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, name);
}

const char *http_query(const http_req *r, const char *name)
{
    return MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, name);
}

const char *http_body(const http_req *r, size_t *len)
{
    if (len)
        *len = r->body_len;
    return r->body ? r->body : "";
}

const char *http_path_rest(const http_req *r)
{
    if (!r->route)
        return "";
    size_t n = strlen(r->route->path);
    if (n == 0 || r->route->path[n - 1] != '*')
        return "";
    return r->path + n - 1;
}

const char *http_client_ip(const http_req *r)
{
    return r->client_ip;
}

void http_set_user(http_req *r, void *user, void (*free_fn)(void *))
{
    if (r->user && r->user_free)
        r->user_free(r->user);
    r->user = user;
    r->user_free = free_fn;
}

enum MHD_Result http_queue(http_req *r, unsigned status, struct MHD_Response *resp)
{
    MHD_add_response_header(resp, "X-Request-Id", r->request_id);
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    r->status = status;
    enum MHD_Result ret = MHD_queue_response(r->conn, status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static enum MHD_Result reply_text(http_req *r, unsigned status, const char *ctype, char *text,
                                  unsigned retry_after_s)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(text);
        return MHD_NO;
    }
    MHD_add_response_header(resp, "Content-Type", ctype);
    MHD_add_response_header(resp, "Cache-Control", "no-store");
    if (retry_after_s) {
        char ra[16];
        snprintf(ra, sizeof ra, "%u", retry_after_s);
        MHD_add_response_header(resp, "Retry-After", ra);
    }
    return http_queue(r, status, resp);
}

enum MHD_Result http_reply_json(http_req *r, unsigned status, const cJSON *json)
{
    char *text = cJSON_PrintUnformatted(json);
    if (!text)
        return MHD_NO;
    return reply_text(r, status, "application/json", text, 0);
}

enum MHD_Result http_reply_error(http_req *r, unsigned status, const char *message,
                                 const char *param, const char *code, unsigned retry_after_s)
{
    cJSON *root = cJSON_CreateObject(), *err = cJSON_AddObjectToObject(root, "error");
    cJSON_AddStringToObject(err, "message", message);
    cJSON_AddStringToObject(err, "type", wire_error_type((int)status));
    if (param)
        cJSON_AddStringToObject(err, "param", param);
    else
        cJSON_AddNullToObject(err, "param");
    if (code)
        cJSON_AddStringToObject(err, "code", code);
    else
        cJSON_AddNullToObject(err, "code");
    char *text = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (!text)
        return MHD_NO;
    return reply_text(r, status, "application/json", text, retry_after_s);
}

static bool route_matches(const http_route *rt, const char *path)
{
    size_t n = strlen(rt->path);
    if (n && rt->path[n - 1] == '*')
        return strncmp(rt->path, path, n - 1) == 0;
    return strcmp(rt->path, path) == 0;
}

static http_req *req_new(http_server *s, struct MHD_Connection *c, const char *url,
                         const char *method)
{
    http_req *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->srv = s;
    r->conn = c;
    r->method = method;
    r->path = url;
    r->start_ms = dmn_now_ms();
    dmn_random_id(r->request_id);
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (ci && ci->client_addr) {
        const struct sockaddr *sa = ci->client_addr;
        if (sa->sa_family == AF_INET)
            inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, r->client_ip,
                      sizeof r->client_ip);
        else if (sa->sa_family == AF_INET6)
            inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, r->client_ip,
                      sizeof r->client_ip);
    }
    for (size_t i = 0; i < s->o.n_routes; i++) {
        const http_route *rt = &s->o.routes[i];
        if (route_matches(rt, url) && strcmp(rt->method, method) == 0) {
            r->route = rt;
            break;
        }
    }
    return r;
}

static bool path_known(const http_server *s, const char *path)
{
    for (size_t i = 0; i < s->o.n_routes; i++)
        if (route_matches(&s->o.routes[i], path))
            return true;
    return false;
}

static bool append_body(http_req *r, const char *data, size_t n)
{
    if (r->body_len + n > r->srv->o.max_body) {
        r->too_large = true;
        return true;
    }
    if (r->body_len + n + 1 > r->body_cap) {
        size_t cap = r->body_cap ? r->body_cap : 4096;
        while (cap < r->body_len + n + 1)
            cap *= 2;
        char *b = realloc(r->body, cap);
        if (!b)
            return false;
        r->body = b;
        r->body_cap = cap;
    }
    memcpy(r->body + r->body_len, data, n);
    r->body_len += n;
    r->body[r->body_len] = '\0';
    return true;
}

static enum MHD_Result arg_utf8(void *cls, enum MHD_ValueKind kind, const char *key,
                                const char *value)
{
    bool *ok = cls;
    (void)kind;
    if (!utf8_valid(key, strlen(key)) || (value && !utf8_valid(value, strlen(value)))) {
        *ok = false;
        return MHD_NO;
    }
    return MHD_YES;
}

/* Whether the path, the query arguments and a JSON body are UTF-8. */
static bool request_utf8(http_req *r, const char *url)
{
    bool ok = utf8_valid(url, strlen(url));
    if (ok)
        MHD_get_connection_values(r->conn, MHD_GET_ARGUMENT_KIND, arg_utf8, &ok);
    const char *ct = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Content-Type");
    if (ok && r->body_len && ct && strncasecmp(ct, "application/json", 16) == 0)
        ok = utf8_valid(r->body, r->body_len); /* a raw NUL is not JSON either */
    return ok;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    http_server *s = cls;
    (void)version;
    http_req *r = *con_cls;
    if (!r) {
        r = req_new(s, c, url, method);
        if (!r)
            return MHD_NO;
        *con_cls = r;
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
        if (cl && strtoull(cl, NULL, 10) > s->o.max_body) {
            char msg[128];
            snprintf(msg, sizeof msg, "request body is larger than the limit of %llu bytes",
                     (unsigned long long)s->o.max_body);
            return http_reply_error(r, 413, msg, NULL, "request_too_large", 0);
        }
        return MHD_YES;
    }
    if (*upload_data_size) {
        if (!r->too_large && !append_body(r, upload_data, *upload_data_size))
            return MHD_NO;
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (r->status) /* already answered (e.g. 413 on Content-Length, or a resumed stream) */
        return MHD_YES;
    if (r->too_large) {
        char msg[128];
        snprintf(msg, sizeof msg, "request body is larger than the limit of %llu bytes",
                 (unsigned long long)s->o.max_body);
        return http_reply_error(r, 413, msg, NULL, "request_too_large", 0);
    }
    if (!r->route) {
        if (path_known(s, url))
            return http_reply_error(r, 405, "method not allowed for this path", NULL,
                                    "method_not_allowed", 0);
        return http_reply_error(r, 404, "no such route", NULL, "not_found", 0);
    }
    if (!request_utf8(r, url))
        return http_reply_error(r, 400, "the path, query and JSON body must be UTF-8 text", NULL,
                                "invalid_request", 0);
    return r->route->fn(r, r->route->arg);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    http_server *s = cls;
    http_req *r = *con_cls;
    (void)c;
    (void)toe;
    if (!r)
        return;
    if (s->o.on_done)
        s->o.on_done(r->method, r->route ? r->route->path : "other", (int)r->status,
                     (double)(dmn_now_ms() - r->start_ms) / 1000.0, s->o.arg);
    if (r->user && r->user_free)
        r->user_free(r->user);
    free(r->body);
    free(r);
    *con_cls = NULL;
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    log_vwrite(LOG_WARN, NULL, __FILE__, __LINE__, fmt, ap);
}

/* Explains a failed start: MHD only says it failed, so try the bind ourselves. */
static pl_status why_not_listening(const char *addr, int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return PL_ERRF(PL_IO, "cannot listen on %s:%d: %s", addr, port, strerror(errno));
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, addr, &sa.sin_addr);
    int rc = bind(fd, (struct sockaddr *)&sa, sizeof sa);
    int e = errno;
    close(fd);
    if (rc != 0)
        return PL_ERRF(PL_IO, "cannot listen on %s:%d: %s", addr, port, strerror(e));
    return PL_ERRF(PL_IO, "cannot start the HTTP server on %s:%d (see the log above)", addr, port);
}

pl_status http_start(const http_opts *o, http_server **out)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)o->port)};
    if (inet_pton(AF_INET, o->addr, &sa.sin_addr) != 1)
        return PL_ERRF(PL_INVALID, "'%s' is not an IPv4 address", o->addr);
    if (!o->tls_cert_pem != !o->tls_key_pem)
        return PL_ERRF(PL_INVALID, "TLS needs both a certificate and a key");
    http_server *s = calloc(1, sizeof *s);
    if (!s)
        return PL_ERRF(PL_NOMEM, "out of memory");
    s->o = *o;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME |
                     MHD_USE_ERROR_LOG;
    if (o->tls_cert_pem)
        flags |= MHD_USE_TLS;
    struct MHD_OptionItem tls[] = {
        {MHD_OPTION_HTTPS_MEM_CERT, 0, (void *)o->tls_cert_pem},
        {MHD_OPTION_HTTPS_MEM_KEY, 0, (void *)o->tls_key_pem},
        {MHD_OPTION_END, 0, NULL},
    };
    s->mhd = MHD_start_daemon(
        flags, (uint16_t)o->port, NULL, NULL, on_request, s, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log,
        NULL, MHD_OPTION_SOCK_ADDR, &sa, MHD_OPTION_THREAD_POOL_SIZE,
        (unsigned)(o->threads ? o->threads : 4), MHD_OPTION_CONNECTION_LIMIT,
        (unsigned)o->max_conns, MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)o->max_conns_per_ip,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)o->idle_timeout_s,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)o->max_header_bytes,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, s, MHD_OPTION_ARRAY,
        o->tls_cert_pem ? tls : tls + 2, MHD_OPTION_END);
    if (!s->mhd) {
        free(s);
        return why_not_listening(o->addr, o->port);
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->mhd, MHD_DAEMON_INFO_BIND_PORT);
    s->port = di ? di->port : o->port;
    *out = s;
    return PL_OK;
}

void http_stop(http_server *s)
{
    if (!s)
        return;
    MHD_stop_daemon(s->mhd);
    free(s);
}
