/* admin.c — the operators' HTTP endpoint of a daemon, over libmicrohttpd.
 *
 * Role: listen on one IPv4 address and port, answer GET (and HEAD) by asking the owner's
 * adm_handler for a status, body and content type; 405 for other methods. The handler knows
 * the paths and answers 404 for the ones it does not serve.
 *
 * Threading: MHD runs one internal polling thread (poll/epoll chosen by MHD_USE_AUTO); the
 * handler is called on it, one request at a time. Signals should be blocked by the caller
 * before adm_start so that thread never takes them (dmn_main does this).
 *
 * Ownership: the adm_server owns the MHD daemon; the handler's body is malloc'd by the
 * handler and freed by MHD once sent.
 *
 * What it does not do: no request bodies, no TLS, no authentication, no keep-alive tuning —
 * it is meant for a loopback or cluster-internal port. */
#include "admin.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <microhttpd.h>

#include "log.h"

struct adm_server {
    struct MHD_Daemon *mhd;
    adm_handler h;
    void *arg;
    int port;
};

/* MHD's own complaints (a connection it could not accept, ...) go to our log. */
static void mhd_logger(void *cls, const char *fmt, va_list ap)
{
    char buf[512];
    (void)cls;
    vsnprintf(buf, sizeof buf, fmt, ap);
    size_t n = strlen(buf);
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        buf[--n] = '\0';
    LOGW(NULL, "admin http: %s", buf);
}

static enum MHD_Result send_text(struct MHD_Connection *c, unsigned code, char *body,
                                 const char *ctype, bool allow_get)
{
    size_t len = body ? strlen(body) : 0;
    struct MHD_Response *r =
        body ? MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE)
             : MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    if (!r) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype ? ctype : "text/plain");
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    if (allow_get)
        MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
    enum MHD_Result ret = MHD_queue_response(c, code, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **req_cls)
{
    adm_server *s = cls;
    (void)version;
    (void)upload_data;
    (void)req_cls;

    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0) {
        /* Answering on the first call means MHD discards any body the client sends. */
        *upload_data_size = 0;
        return send_text(c, MHD_HTTP_METHOD_NOT_ALLOWED, strdup("method not allowed\n"),
                         "text/plain", true);
    }

    char *body = NULL;
    const char *ctype = NULL;
    int code = s->h(url, &body, &ctype, s->arg);
    if (code < 100 || code > 599) {
        free(body);
        return send_text(c, MHD_HTTP_INTERNAL_SERVER_ERROR, strdup("internal error\n"),
                         "text/plain", false);
    }
    return send_text(c, (unsigned)code, body, ctype, false);
}

/* Parses an IPv4 address ("localhost" is taken as 127.0.0.1). */
static bool parse_addr(const char *addr, int port, struct sockaddr_in *sa)
{
    memset(sa, 0, sizeof *sa);
    sa->sin_family = AF_INET;
    sa->sin_port = htons((uint16_t)port);
    if (strcmp(addr, "localhost") == 0)
        addr = "127.0.0.1";
    return inet_pton(AF_INET, addr, &sa->sin_addr) == 1;
}

/* Binds a throw-away socket the way MHD will (SO_REUSEADDR) to learn the precise errno:
 * MHD_start_daemon only says that it failed. Returns 0 or the errno. */
static int probe_bind(const struct sockaddr_in *sa)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return errno;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    int err = 0;
    if (bind(fd, (const struct sockaddr *)sa, sizeof *sa) != 0)
        err = errno;
    close(fd);
    return err;
}

static const char *errno_text(int err)
{
    /* Lower-case wording for the common cases, so messages read as one sentence. */
    switch (err) {
    case EADDRINUSE:
        return "address already in use";
    case EADDRNOTAVAIL:
        return "address not available on this host";
    case EACCES:
        return "permission denied";
    default:
        return strerror(err);
    }
}

pl_status adm_start(const char *addr, int port, adm_handler h, void *arg, adm_server **out)
{
    *out = NULL;
    struct sockaddr_in sa;
    if (!addr || !parse_addr(addr, port, &sa))
        return PL_ERRF(PL_INVALID, "admin address \"%s\" is not an IPv4 address", addr ? addr : "");
    if (port < 0 || port > 65535 || !h)
        return PL_ERRF(PL_INVALID, "admin port %d is out of range 0..65535", port);

    int err = probe_bind(&sa);
    if (err)
        return PL_ERRF(PL_IO, "cannot listen on %s:%d: %s", addr, port, errno_text(err));

    adm_server *s = calloc(1, sizeof *s);
    if (!s)
        return PL_ERRF(PL_NOMEM, "admin server: out of memory");
    s->h = h;
    s->arg = arg;
    s->mhd = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO | MHD_USE_ERROR_LOG,
                              (uint16_t)port, NULL, NULL, on_request, s, MHD_OPTION_EXTERNAL_LOGGER,
                              mhd_logger, NULL, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
                              MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)10,
                              MHD_OPTION_CONNECTION_LIMIT, (unsigned int)64, MHD_OPTION_END);
    if (!s->mhd) {
        err = errno;
        free(s);
        /* Someone may have taken the port between the probe and MHD's own bind. */
        return PL_ERRF(PL_IO, "cannot listen on %s:%d: %s", addr, port,
                       err ? errno_text(err) : "libmicrohttpd failed to start");
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(s->mhd, MHD_DAEMON_INFO_BIND_PORT);
    s->port = info && info->port ? info->port : port;
    *out = s;
    return PL_OK;
}

int adm_port(const adm_server *s)
{
    return s ? s->port : 0;
}

void adm_stop(adm_server *s)
{
    if (!s)
        return;
    MHD_stop_daemon(s->mhd);
    free(s);
}
