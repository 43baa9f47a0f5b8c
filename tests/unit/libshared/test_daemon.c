/* test_daemon.c — the admin HTTP server (raw sockets against a real MHD daemon) and the
 * daemon lifecycle: configuration errors, --version / --help, a failing start, and a full run
 * against a real nats-server ended by SIGTERM sent to the dmn_main thread (pthread_kill, so
 * the rest of the test process never sees the signal). */
#include "../harness.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "admin.h"
#include "daemon.h"
#include "natsproc.h"

/* --- helpers ------------------------------------------------------------------------------- */

static void nap(int64_t ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

/* Sends one HTTP/1.1 request with Connection: close and reads the whole answer into
 * resp (NUL-terminated). Returns the status code, or -1 when nothing came back. */
static int http_req(int port, const char *method, const char *path, char *resp, size_t cap)
{
    resp[0] = '\0';
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    struct timeval tv = {3, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(fd);
        return -1;
    }
    char req[256];
    int n = snprintf(req, sizeof req,
                     "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n"
                     "Connection: close\r\n\r\n",
                     method, path);
    if (write(fd, req, (size_t)n) != n) {
        close(fd);
        return -1;
    }
    size_t len = 0;
    ssize_t r;
    while (len + 1 < cap && (r = read(fd, resp + len, cap - 1 - len)) > 0)
        len += (size_t)r;
    resp[len] = '\0';
    close(fd);
    int code = -1;
    if (sscanf(resp, "HTTP/1.%*d %d", &code) != 1)
        return -1;
    return code;
}

static int http_get(int port, const char *path, char *resp, size_t cap)
{
    return http_req(port, "GET", path, resp, cap);
}

/* Runs fn with stdout or stderr (fd 1 or 2) captured into buf. */
static int capture(int fd, char *buf, size_t cap, int (*fn)(void *), void *arg)
{
    char path[] = "/tmp/parley-capture-XXXXXX";
    int tmp = mkstemp(path);
    fflush(stdout);
    fflush(stderr);
    int saved = dup(fd);
    dup2(tmp, fd);
    int rc = fn(arg);
    fflush(stdout);
    fflush(stderr);
    dup2(saved, fd);
    close(saved);
    lseek(tmp, 0, SEEK_SET);
    ssize_t n = read(tmp, buf, cap - 1);
    buf[n > 0 ? n : 0] = '\0';
    close(tmp);
    unlink(path);
    return rc;
}

/* --- admin --------------------------------------------------------------------------------- */

static int adm_test_handler(const char *path, char **body, const char **ctype, void *arg)
{
    atomic_int *calls = arg;
    atomic_fetch_add(calls, 1);
    if (strcmp(path, "/healthz") == 0) {
        *body = strdup("{\"status\":\"ok\"}");
        *ctype = "application/json";
        return 200;
    }
    if (strcmp(path, "/empty") == 0)
        return 204;
    *body = strdup("nope");
    return 404;
}

TEST(adm_serves_get_on_a_free_port)
{
    atomic_int calls;
    atomic_init(&calls, 0);
    adm_server *s = NULL;
    CHECK_EQ_INT(adm_start("127.0.0.1", 0, adm_test_handler, &calls, &s), PL_OK);
    if (!s)
        return;
    int port = adm_port(s);
    CHECK(port > 0 && port < 65536);

    char resp[4096];
    CHECK_EQ_INT(http_get(port, "/healthz", resp, sizeof resp), 200);
    CHECK(strstr(resp, "\r\n\r\n{\"status\":\"ok\"}") != NULL);
    CHECK(strcasestr(resp, "Content-Type: application/json") != NULL);
    CHECK_EQ_INT(http_get(port, "/elsewhere", resp, sizeof resp), 404);
    CHECK_EQ_INT(http_get(port, "/empty", resp, sizeof resp), 204);
    CHECK_EQ_INT(http_get(port, "/healthz?verbose=1", resp, sizeof resp), 200);
    int before = atomic_load(&calls);
    CHECK_EQ_INT(http_req(port, "POST", "/healthz", resp, sizeof resp), 405);
    CHECK(strcasestr(resp, "Allow: GET") != NULL);
    CHECK_EQ_INT(http_req(port, "DELETE", "/healthz", resp, sizeof resp), 405);
    CHECK_EQ_INT(atomic_load(&calls), before); /* the handler never sees other methods */

    adm_stop(s);
    adm_stop(NULL);
    /* Stopped: the port no longer answers. */
    CHECK_EQ_INT(http_get(port, "/healthz", resp, sizeof resp), -1);
}

TEST(adm_reports_port_in_use)
{
    atomic_int calls;
    atomic_init(&calls, 0);
    adm_server *a = NULL, *b = NULL;
    CHECK_EQ_INT(adm_start("127.0.0.1", 0, adm_test_handler, &calls, &a), PL_OK);
    if (!a)
        return;
    int port = adm_port(a);
    CHECK_EQ_INT(adm_start("127.0.0.1", port, adm_test_handler, &calls, &b), PL_IO);
    CHECK(b == NULL);
    char want[96];
    snprintf(want, sizeof want, "cannot listen on 127.0.0.1:%d: address already in use", port);
    CHECK(strstr(pl_err_last(), want) != NULL);
    adm_stop(a);

    /* Free again: the same port can be taken. */
    CHECK_EQ_INT(adm_start("127.0.0.1", port, adm_test_handler, &calls, &b), PL_OK);
    CHECK_EQ_INT(adm_port(b), port);
    adm_stop(b);
}

TEST(adm_rejects_bad_address)
{
    adm_server *s = NULL;
    CHECK_EQ_INT(adm_start("not-an-address", 0, adm_test_handler, NULL, &s), PL_INVALID);
    CHECK(s == NULL);
    CHECK(strstr(pl_err_last(), "not-an-address") != NULL);
    CHECK_EQ_INT(adm_start("::1", 0, adm_test_handler, NULL, &s), PL_INVALID);
    CHECK_EQ_INT(adm_start("127.0.0.1", 70000, adm_test_handler, NULL, &s), PL_INVALID);
}

/* --- daemon: small pieces ------------------------------------------------------------------ */

TEST(dmn_random_id_is_32_hex_and_differs)
{
    char a[33], b[33];
    memset(a, 'x', sizeof a);
    dmn_random_id(a);
    dmn_random_id(b);
    CHECK_EQ_INT(strlen(a), 32);
    CHECK(strspn(a, "0123456789abcdef") == 32);
    CHECK(strcmp(a, b) != 0);
}

TEST(dmn_clocks)
{
    int64_t m0 = dmn_now_ms();
    nap(20);
    int64_t m1 = dmn_now_ms();
    CHECK(m1 - m0 >= 15 && m1 - m0 < 1000);
    int64_t w = dmn_wall_ms();
    CHECK(w > 1600000000000LL); /* after 2020 */
    CHECK_NEAR((double)w, (double)time(NULL) * 1000.0, 2000.0);
}

/* --- daemon: configuration paths ----------------------------------------------------------- */

typedef struct test_cfg {
    int64_t workers;
} test_cfg;

static const cfg_opt test_opts[] = {
    {"workers", CFG_INT, offsetof(test_cfg, workers), "4", 1, 64, "number of workers"},
};

typedef struct test_ctx {
    atomic_int starts, stops, drains, readies;
    atomic_bool dep_ok;
    pl_status start_result;
    int admin_port;
    bool saw_bus, saw_metrics, instance_ok;
    int64_t drain_deadline, drain_called_at;
    int readyz_during_drain;
    char readyz_body_during_drain[512];
    int stop_order; /* drains value when stop ran */
} test_ctx;

static pl_status t_start(dmn *d, void *ctx)
{
    test_ctx *t = ctx;
    atomic_fetch_add(&t->starts, 1);
    t->saw_bus = dmn_bus(d) != NULL;
    t->saw_metrics = dmn_metrics(d) != NULL;
    t->instance_ok = strncmp(dmn_instance(d), "test-", 5) == 0 &&
                     strcmp(dmn_common_cfg(d)->log_level, "warn") == 0 && !dmn_stopping(d);
    if (t->start_result != PL_OK)
        return PL_ERRF(t->start_result, "test start refuses");
    met_family *f = met_counter(dmn_metrics(d), "parley_test_things_total", "things", NULL);
    met_family_inc(f, 3);
    return PL_OK;
}

static size_t t_ready(void *ctx, dmn_check *checks)
{
    test_ctx *t = ctx;
    atomic_fetch_add(&t->readies, 1);
    checks[0].name = "dep";
    checks[0].ok = atomic_load(&t->dep_ok);
    snprintf(checks[0].detail, sizeof checks[0].detail, "%s", checks[0].ok ? "" : "dep \"down\"");
    return 1;
}

static void t_drain(void *ctx, int64_t deadline_ms)
{
    test_ctx *t = ctx;
    atomic_fetch_add(&t->drains, 1);
    t->drain_deadline = deadline_ms;
    t->drain_called_at = dmn_now_ms();
    t->readyz_during_drain = http_get(t->admin_port, "/readyz", t->readyz_body_during_drain,
                                      sizeof t->readyz_body_during_drain);
}

static void t_stop(void *ctx)
{
    test_ctx *t = ctx;
    t->stop_order = atomic_load(&t->drains);
    atomic_fetch_add(&t->stops, 1);
}

static void spec_init(dmn_spec *s, test_ctx *t, test_cfg *c)
{
    memset(t, 0, sizeof *t);
    atomic_init(&t->dep_ok, true);
    *s = (dmn_spec){.name = "test",
                    .summary = "a daemon for tests",
                    .opts = test_opts,
                    .n_opts = 1,
                    .cfg = c,
                    .ctx = t,
                    .start = t_start,
                    .ready = t_ready,
                    .drain = t_drain,
                    .stop = t_stop,
                    .admin_port_default = 9199};
}

typedef struct run_args {
    const dmn_spec *spec;
    int argc;
    char **argv;
    int rc;
} run_args;

static int run_main(void *arg)
{
    run_args *r = arg;
    r->rc = dmn_main(r->spec, r->argc, r->argv);
    return r->rc;
}

TEST(dmn_version_prints_and_returns_0)
{
    dmn_spec s;
    test_ctx t;
    test_cfg c;
    spec_init(&s, &t, &c);
    char *argv[] = {"parley-test", "--version", NULL};
    run_args r = {&s, 2, argv, -1};
    char out[256];
    CHECK_EQ_INT(capture(1, out, sizeof out, run_main, &r), 0);
    CHECK_STR(out, "parley-test " PARLEY_VERSION "\n");
    CHECK_EQ_INT(atomic_load(&t.starts), 0);
}

TEST(dmn_help_lists_common_and_own_options)
{
    dmn_spec s;
    test_ctx t;
    test_cfg c;
    spec_init(&s, &t, &c);
    char *argv[] = {"parley-test", "--help", NULL};
    run_args r = {&s, 2, argv, -1};
    char out[8192];
    CHECK_EQ_INT(capture(1, out, sizeof out, run_main, &r), 0);
    CHECK(strstr(out, "--nats-url") != NULL);
    CHECK(strstr(out, "--admin-port") != NULL);
    CHECK(strstr(out, "9199") != NULL); /* the daemon's own default port */
    CHECK(strstr(out, "--drain-timeout") != NULL);
    CHECK(strstr(out, "--workers") != NULL);
}

TEST(dmn_bad_configuration_returns_2)
{
    dmn_spec s;
    test_ctx t;
    test_cfg c;
    spec_init(&s, &t, &c);
    char err[1024];

    char *a1[] = {"parley-test", "--bogus", NULL};
    run_args r = {&s, 2, a1, -1};
    CHECK_EQ_INT(capture(2, err, sizeof err, run_main, &r), 2);
    CHECK(strncmp(err, "parley-test: ", 13) == 0);
    CHECK(strstr(err, "bogus") != NULL);
    CHECK(strstr(err, "--help") != NULL);

    char *a2[] = {"parley-test", "--workers", "100", NULL};
    r = (run_args){&s, 3, a2, -1};
    CHECK_EQ_INT(capture(2, err, sizeof err, run_main, &r), 2);
    CHECK(strstr(err, "workers") != NULL);

    char *a3[] = {"parley-test", "--log-level", "loud", NULL};
    r = (run_args){&s, 3, a3, -1};
    CHECK_EQ_INT(capture(2, err, sizeof err, run_main, &r), 2);
    CHECK(strstr(err, "--log-level") != NULL);

    char *a4[] = {"parley-test", "--admin-addr", "somewhere", NULL};
    r = (run_args){&s, 3, a4, -1};
    CHECK_EQ_INT(capture(2, err, sizeof err, run_main, &r), 2);
    CHECK(strstr(err, "--admin-addr") != NULL);

    char *a5[] = {"parley-test", "--admin-port", "70000", NULL};
    r = (run_args){&s, 3, a5, -1};
    CHECK_EQ_INT(capture(2, err, sizeof err, run_main, &r), 2);

    char *a6[] = {"parley-test", "--nats-url", "nats://127.0.0.1:abc", "--admin-port", "0", NULL};
    r = (run_args){&s, 5, a6, -1};
    CHECK_EQ_INT(capture(2, err, sizeof err, run_main, &r), 2);
    CHECK(strstr(err, "parley-test: option --nats-url: ") != NULL);

    CHECK_EQ_INT(atomic_load(&t.starts), 0);
    CHECK_EQ_INT(atomic_load(&t.stops), 0);
}

TEST(dmn_failed_start_returns_1_after_stop)
{
    /* No server needed: the bus keeps retrying in the background. */
    dmn_spec s;
    test_ctx t;
    test_cfg c;
    spec_init(&s, &t, &c);
    t.start_result = PL_UNAVAILABLE;
    char url[64];
    snprintf(url, sizeof url, "nats://127.0.0.1:%d", natsproc_free_port());
    char *argv[] = {"parley-test", "--nats-url",  url,    "--admin-port",
                    "0",           "--log-level", "warn", NULL};
    run_args r = {&s, 7, argv, -1};
    char err[4096];
    CHECK_EQ_INT(capture(2, err, sizeof err, run_main, &r), 1);
    CHECK_EQ_INT(atomic_load(&t.starts), 1);
    CHECK_EQ_INT(atomic_load(&t.stops), 1);
    CHECK_EQ_INT(atomic_load(&t.drains), 0);
    CHECK(strstr(err, "test start refuses") != NULL); /* logged once, with the reason */
    CHECK(t.instance_ok);
}

TEST(dmn_admin_port_in_use_returns_1)
{
    adm_server *busy = NULL;
    CHECK_EQ_INT(adm_start("127.0.0.1", 0, adm_test_handler, NULL, &busy), PL_OK);
    if (!busy)
        return;
    dmn_spec s;
    test_ctx t;
    test_cfg c;
    spec_init(&s, &t, &c);
    char port[16], url[64];
    snprintf(port, sizeof port, "%d", adm_port(busy));
    snprintf(url, sizeof url, "nats://127.0.0.1:%d", natsproc_free_port());
    char *argv[] = {"parley-test", "--nats-url", url, "--admin-port", port, NULL};
    run_args r = {&s, 5, argv, -1};
    char err[4096];
    CHECK_EQ_INT(capture(2, err, sizeof err, run_main, &r), 1);
    CHECK(strstr(err, "address already in use") != NULL);
    CHECK_EQ_INT(atomic_load(&t.starts), 0);
    adm_stop(busy);
}

/* --- daemon: a full run -------------------------------------------------------------------- */

static void *run_thread(void *arg)
{
    run_args *r = arg;
    r->rc = dmn_main(r->spec, r->argc, r->argv);
    return NULL;
}

/* Polls GET path until it answers `code` (or 5 s pass); returns the last code. */
static int wait_code(int port, const char *path, int code, char *resp, size_t cap)
{
    int got = -1;
    for (int i = 0; i < 250; i++) {
        got = http_get(port, path, resp, cap);
        if (got == code)
            break;
        nap(20);
    }
    return got;
}

TEST(dmn_full_run_ready_metrics_and_sigterm_drain)
{
    if (!natsproc_binary())
        SKIP("nats-server not installed");
    natsproc ns = {0};
    CHECK(natsproc_start(&ns));

    dmn_spec s;
    test_ctx t;
    test_cfg c;
    spec_init(&s, &t, &c);
    t.admin_port = natsproc_free_port();
    char port[16];
    snprintf(port, sizeof port, "%d", t.admin_port);
    char *argv[] = {"parley-test", "--nats-url",  ns.url, "--admin-port", port, "--drain-timeout",
                    "2s",          "--log-level", "warn", "--workers",    "8",  NULL};
    run_args r = {&s, 11, argv, -1};
    pthread_t th;
    CHECK_EQ_INT(pthread_create(&th, NULL, run_thread, &r), 0);

    char resp[8192];
    CHECK_EQ_INT(wait_code(t.admin_port, "/readyz", 200, resp, sizeof resp), 200);
    CHECK(strstr(resp, "{\"ready\":true,\"draining\":false,\"checks\":[") != NULL);
    CHECK(strstr(resp, "{\"name\":\"nats\",\"ok\":true,\"detail\":\"\"}") != NULL);
    CHECK(strstr(resp, "{\"name\":\"dep\",\"ok\":true,\"detail\":\"\"}") != NULL);
    CHECK_EQ_INT(c.workers, 8);
    CHECK(t.saw_bus && t.saw_metrics && t.instance_ok);

    /* A dependency goes down: 503 naming it, with its detail escaped. */
    atomic_store(&t.dep_ok, false);
    CHECK_EQ_INT(http_get(t.admin_port, "/readyz", resp, sizeof resp), 503);
    CHECK(strstr(resp, "\"ready\":false") != NULL);
    CHECK(strstr(resp, "{\"name\":\"dep\",\"ok\":false,\"detail\":\"dep \\\"down\\\"\"}") != NULL);
    atomic_store(&t.dep_ok, true);
    CHECK_EQ_INT(http_get(t.admin_port, "/readyz", resp, sizeof resp), 200);

    CHECK_EQ_INT(http_get(t.admin_port, "/healthz", resp, sizeof resp), 200);
    CHECK(strstr(resp, "{\"status\":\"ok\"}") != NULL);
    CHECK_EQ_INT(http_get(t.admin_port, "/nothing", resp, sizeof resp), 404);

    /* The watch loop sets parley_ready within its period. */
    nap(700);
    CHECK_EQ_INT(http_get(t.admin_port, "/metrics", resp, sizeof resp), 200);
    CHECK(strstr(resp, "parley_up 1") != NULL);
    CHECK(strstr(resp, "parley_bus_connected 1") != NULL);
    CHECK(strstr(resp, "parley_ready 1") != NULL);
    CHECK(strstr(resp, "parley_build_info{service=\"test\",version=\"" PARLEY_VERSION "\"} 1") !=
          NULL);
    CHECK(strstr(resp, "parley_test_things_total 3") != NULL);

    /* NATS goes away: not ready, and back when it returns. */
    natsproc_kill(&ns, true);
    CHECK_EQ_INT(wait_code(t.admin_port, "/readyz", 503, resp, sizeof resp), 503);
    CHECK(strstr(resp, "{\"name\":\"nats\",\"ok\":false") != NULL);
    CHECK(natsproc_start(&ns));
    CHECK_EQ_INT(wait_code(t.admin_port, "/readyz", 200, resp, sizeof resp), 200);

    /* SIGTERM to the dmn_main thread: drain (seeing /readyz 503 draining), then stop. */
    int64_t t_sig = dmn_now_ms();
    pthread_kill(th, SIGTERM);
    pthread_join(th, NULL);
    CHECK_EQ_INT(r.rc, 0);
    CHECK_EQ_INT(atomic_load(&t.starts), 1);
    CHECK_EQ_INT(atomic_load(&t.drains), 1);
    CHECK_EQ_INT(atomic_load(&t.stops), 1);
    CHECK_EQ_INT(t.stop_order, 1); /* stop ran after drain */
    CHECK(t.drain_deadline - t.drain_called_at > 1500 && t.drain_deadline - t_sig <= 2600);
    CHECK_EQ_INT(t.readyz_during_drain, 503);
    CHECK(strstr(t.readyz_body_during_drain, "\"draining\":true") != NULL);
    /* Admin server closed with the process. */
    CHECK_EQ_INT(http_get(t.admin_port, "/healthz", resp, sizeof resp), -1);

    natsproc_stop(&ns);
}
