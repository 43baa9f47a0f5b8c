/* daemon.c — the lifecycle every parley daemon shares (see daemon.h for the sequence).
 *
 * Role: parse the common and the daemon's options, set up logging, metrics, the bus and the
 * admin server, call the daemon's start, wait for SIGTERM/SIGINT, drain, stop, tear down.
 * It owns the process-level policy that shared code otherwise never takes: signal handling
 * and the exit status.
 *
 * Threading: before any thread exists dmn_main blocks SIGTERM and SIGINT in the calling
 * thread (threads created later inherit the mask) and ignores SIGPIPE, so libnats' and MHD's
 * threads never take a signal; the calling thread then waits for them with sigtimedwait(),
 * waking twice a second to log readiness changes. The drain callback runs on a helper thread
 * so that a second signal can still be taken while it runs. /readyz and /metrics run on the
 * admin thread; spec->ready is called from there and from the watch loop, never concurrently
 * (ready_mu), and never before start returned or once stop has begun.
 *
 * Ownership: the dmn owns the bus, the registry and the admin server; callbacks borrow them
 * through the accessors until dmn_main returns.
 *
 * What it does not do: no daemonising, pid files, privilege dropping or config files: the
 * supervisor (systemd, Docker) owns those. */
#include "daemon.h"

#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "admin.h"
#include "log.h"

enum dmn_phase { PH_STARTING, PH_RUNNING, PH_DRAINING, PH_STOPPED };

#define DMN_N_COMMON      6
#define DMN_WATCH_MS      500
#define DMN_DRAIN_POLL_MS 200

struct dmn {
    const dmn_spec *spec;
    dmn_common common;
    char prog[96];      /* "parley-<name>" */
    char port_def[16];  /* default of --admin-port, as text for the option table */
    char instance[160]; /* default instance id, when none was given */
    cfg_opt opts[DMN_N_COMMON];

    bus *bus;
    met_registry *met;
    adm_server *adm;
    met_family *f_up, *f_ready, *f_bus, *f_build;

    atomic_bool stopping;
    pthread_mutex_t ready_mu; /* serialises spec->ready; guards phase changes */
    atomic_int phase;
    int last_ready; /* watch loop only: -1 unknown, 0, 1 */

    atomic_bool drain_done;
    int64_t drain_deadline;
};

/* --- time and ids -------------------------------------------------------------------------- */

int64_t dmn_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t dmn_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t dmn_wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

void dmn_random_id(char out[33])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char raw[16];
    size_t got = 0;
    while (got < sizeof raw) {
        ssize_t n = getrandom(raw + got, sizeof raw - got, 0);
        if (n < 0 && errno == EINTR)
            continue;
        /* The kernel's generator failing is not something a daemon can work around. */
        PL_ASSERT(n > 0);
        got += (size_t)n;
    }
    for (size_t i = 0; i < sizeof raw; i++) {
        out[2 * i] = hex[raw[i] >> 4];
        out[2 * i + 1] = hex[raw[i] & 15];
    }
    out[32] = '\0';
}

/* --- accessors ----------------------------------------------------------------------------- */

bus *dmn_bus(dmn *d)
{
    return d->bus;
}

met_registry *dmn_metrics(dmn *d)
{
    return d->met;
}

const dmn_common *dmn_common_cfg(dmn *d)
{
    return &d->common;
}

const char *dmn_instance(dmn *d)
{
    return d->common.instance_id;
}

bool dmn_stopping(dmn *d)
{
    return atomic_load(&d->stopping);
}

/* --- a tiny growable string for JSON bodies ------------------------------------------------ */

typedef struct jbuf {
    char *p;
    size_t len, cap;
    bool oom;
} jbuf;

static void jb_put(jbuf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void jb_puts(jbuf *b, const char *s)
{
    jb_put(b, s, strlen(s));
}

/* A JSON string literal; control characters escaped, other bytes passed through. */
static void jb_str(jbuf *b, const char *s)
{
    jb_put(b, "\"", 1);
    for (; s && *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            jb_put(b, e, 2);
        } else if (c < 0x20) {
            char e[8];
            snprintf(e, sizeof e, "\\u%04x", c);
            jb_puts(b, e);
        } else {
            jb_put(b, (const char *)&c, 1);
        }
    }
    jb_put(b, "\"", 1);
}

/* Hands the buffer to the caller (NULL when out of memory). */
static char *jb_take(jbuf *b)
{
    if (b->oom) {
        free(b->p);
        return NULL;
    }
    return b->p;
}

/* --- readiness ----------------------------------------------------------------------------- */

typedef struct dmn_readiness {
    bool ready, draining;
    size_t n;
    dmn_check checks[DMN_MAX_CHECKS + 1];
} dmn_readiness;

static void set_check(dmn_check *c, const char *name, bool ok, const char *detail)
{
    c->name = name;
    c->ok = ok;
    snprintf(c->detail, sizeof c->detail, "%s", detail);
}

/* Evaluates every check: the bus first, then the daemon's own (only while it is running or
 * draining: before start returned or once stop began, its state is not ours to read). */
static void dmn_evaluate(dmn *d, dmn_readiness *r)
{
    memset(r, 0, sizeof *r);
    bool up = bus_connected(d->bus);
    char detail[160];
    snprintf(detail, sizeof detail, "not connected to %s", d->common.nats_url);
    set_check(&r->checks[r->n++], "nats", up, up ? "" : detail);

    pthread_mutex_lock(&d->ready_mu);
    int ph = atomic_load(&d->phase);
    if (ph == PH_STARTING) {
        set_check(&r->checks[r->n++], "start", false, "starting");
    } else if (ph == PH_STOPPED) {
        set_check(&r->checks[r->n++], "stop", false, "stopping");
    } else if (d->spec->ready) {
        size_t k = d->spec->ready(d->spec->ctx, &r->checks[r->n]);
        if (k > DMN_MAX_CHECKS)
            k = DMN_MAX_CHECKS;
        for (size_t i = 0; i < k; i++) {
            dmn_check *c = &r->checks[r->n + i];
            c->detail[sizeof c->detail - 1] = '\0';
            if (!c->name)
                c->name = "unnamed";
        }
        r->n += k;
    }
    pthread_mutex_unlock(&d->ready_mu);

    r->draining = ph >= PH_DRAINING;
    r->ready = ph == PH_RUNNING;
    for (size_t i = 0; i < r->n; i++)
        r->ready = r->ready && r->checks[i].ok;
}

static void set_phase(dmn *d, int ph)
{
    pthread_mutex_lock(&d->ready_mu);
    atomic_store(&d->phase, ph);
    pthread_mutex_unlock(&d->ready_mu);
}

static char *readyz_body(const dmn_readiness *r)
{
    jbuf b = {0};
    jb_puts(&b, r->ready ? "{\"ready\":true" : "{\"ready\":false");
    jb_puts(&b,
            r->draining ? ",\"draining\":true,\"checks\":[" : ",\"draining\":false,\"checks\":[");
    for (size_t i = 0; i < r->n; i++) {
        jb_puts(&b, i ? ",{\"name\":" : "{\"name\":");
        jb_str(&b, r->checks[i].name);
        jb_puts(&b, r->checks[i].ok ? ",\"ok\":true,\"detail\":" : ",\"ok\":false,\"detail\":");
        jb_str(&b, r->checks[i].detail);
        jb_puts(&b, "}");
    }
    jb_puts(&b, "]}\n");
    return jb_take(&b);
}

/* Logs a change of readiness, naming the failing checks, and updates the gauge. Watch loop
 * only. */
static void dmn_watch(dmn *d)
{
    dmn_readiness r;
    dmn_evaluate(d, &r);
    met_family_set(d->f_ready, r.ready ? 1 : 0);
    met_family_set(d->f_bus, bus_connected(d->bus) ? 1 : 0);
    if ((int)r.ready == d->last_ready)
        return;
    d->last_ready = r.ready;
    if (r.ready) {
        LOGI(NULL, "ready");
        return;
    }
    char why[512] = "";
    size_t len = 0;
    for (size_t i = 0; i < r.n && len < sizeof why; i++) {
        if (r.checks[i].ok)
            continue;
        int w = snprintf(why + len, sizeof why - len, "%s%s%s%s%s", len ? "; " : "",
                         r.checks[i].name, r.checks[i].detail[0] ? " (" : "", r.checks[i].detail,
                         r.checks[i].detail[0] ? ")" : "");
        if (w < 0)
            break;
        len += (size_t)w;
    }
    if (r.draining)
        LOGI(NULL, "not ready: draining");
    else
        LOGW(NULL, "not ready: %s", why);
}

/* --- admin endpoints ----------------------------------------------------------------------- */

static int dmn_http(const char *path, char **body, const char **ctype, void *arg)
{
    dmn *d = arg;
    if (strcmp(path, "/healthz") == 0) {
        *body = strdup("{\"status\":\"ok\"}\n");
        *ctype = "application/json";
        return *body ? 200 : 500;
    }
    if (strcmp(path, "/readyz") == 0) {
        dmn_readiness r;
        dmn_evaluate(d, &r);
        *body = readyz_body(&r);
        *ctype = "application/json";
        if (!*body)
            return 500;
        return r.ready && !r.draining ? 200 : 503;
    }
    if (strcmp(path, "/metrics") == 0) {
        met_family_set(d->f_bus, bus_connected(d->bus) ? 1 : 0);
        *body = met_render(d->met);
        *ctype = "text/plain; version=0.0.4; charset=utf-8";
        return *body ? 200 : 500;
    }
    *body = strdup("not found\n");
    *ctype = "text/plain";
    return 404;
}

/* --- bus state ----------------------------------------------------------------------------- */

static void dmn_on_bus(bool connected, void *arg)
{
    dmn *d = arg;
    met_family_set(d->f_bus, connected ? 1 : 0);
    if (connected)
        LOGI(NULL, "nats connected (%s)", d->common.nats_url);
    else
        LOGW(NULL, "nats disconnected from %s; reconnecting", d->common.nats_url);
}

/* --- configuration ------------------------------------------------------------------------- */

static void build_common_table(dmn *d)
{
    snprintf(d->port_def, sizeof d->port_def, "%d", d->spec->admin_port_default);
    const cfg_opt t[DMN_N_COMMON] = {
        {"nats-url", CFG_STR, offsetof(dmn_common, nats_url), "nats://127.0.0.1:4222", 0, 0,
         "NATS server URL; several may be given, comma-separated"},
        {"admin-addr", CFG_STR, offsetof(dmn_common, admin_addr), "127.0.0.1", 0, 0,
         "IPv4 address of the admin HTTP server (/healthz, /readyz, /metrics)"},
        {"admin-port", CFG_PORT, offsetof(dmn_common, admin_port), d->port_def, 0, 0,
         "port of the admin HTTP server (0 = any free port)"},
        {"log-level", CFG_STR, offsetof(dmn_common, log_level), "info", 0, 0,
         "minimum log level: debug, info, warn or error"},
        {"drain-timeout", CFG_DURATION, offsetof(dmn_common, drain_timeout_ms), "10s", 0, 3600000,
         "time allowed to finish in-flight work after SIGTERM"},
        {"instance-id", CFG_STR, offsetof(dmn_common, instance_id), "", 0, 0,
         "this process's id in logs and heartbeats (default <service>-<host>-<pid>)"},
    };
    memcpy(d->opts, t, sizeof t);
}

static int bad_config(const dmn *d, const char *msg)
{
    fprintf(stderr, "%s: %s\ntry '%s --help'\n", d->prog, msg, d->prog);
    return 2;
}

static bool valid_ipv4(const char *s)
{
    struct in_addr a;
    return strcmp(s, "localhost") == 0 || inet_pton(AF_INET, s, &a) == 1;
}

/* Returns -1 to go on running, else the exit status (0 after --help / --version, 2 when the
 * configuration is bad). */
static int dmn_configure(dmn *d, int argc, char **argv)
{
    const dmn_spec *spec = d->spec;
    snprintf(d->prog, sizeof d->prog, "parley-%s", spec->name);
    build_common_table(d);

    const cfg_opt *tables[2] = {d->opts, spec->opts};
    size_t n_opts[2] = {DMN_N_COMMON, spec->n_opts};
    void *outs[2] = {&d->common, spec->cfg};
    size_t n_tables = spec->opts && spec->n_opts ? 2 : 1;
    char err[512];

    switch (cfg_parse(tables, n_opts, outs, n_tables, argc, argv, err, sizeof err)) {
    case CFG_HELP:
        cfg_usage(stdout, d->prog, spec->summary, tables, n_opts, n_tables);
        return 0;
    case CFG_VERSION:
        printf("%s %s\n", d->prog, PARLEY_VERSION);
        return 0;
    case CFG_BAD:
        return bad_config(d, err);
    case CFG_RUN:
        break;
    }

    if (log_level_parse(d->common.log_level) < 0) {
        snprintf(err, sizeof err,
                 "option --log-level: \"%s\" is not one of debug, info, warn, error",
                 d->common.log_level);
        return bad_config(d, err);
    }
    if (!valid_ipv4(d->common.admin_addr)) {
        snprintf(err, sizeof err, "option --admin-addr: \"%s\" is not an IPv4 address",
                 d->common.admin_addr);
        return bad_config(d, err);
    }
    if (!d->common.nats_url || !*d->common.nats_url)
        return bad_config(d, "option --nats-url: must not be empty");
    if (!d->common.instance_id || !*d->common.instance_id) {
        char host[64] = "localhost";
        if (gethostname(host, sizeof host) != 0)
            snprintf(host, sizeof host, "localhost");
        host[sizeof host - 1] = '\0';
        snprintf(d->instance, sizeof d->instance, "%s-%s-%ld", spec->name, host, (long)getpid());
        d->common.instance_id = d->instance;
    }
    return -1;
}

/* --- run ----------------------------------------------------------------------------------- */

static void *drain_main(void *arg)
{
    dmn *d = arg;
    d->spec->drain(d->spec->ctx, d->drain_deadline);
    atomic_store(&d->drain_done, true);
    return NULL;
}

static const char *sig_name(int sig)
{
    return sig == SIGTERM ? "SIGTERM" : sig == SIGINT ? "SIGINT" : "signal";
}

/* Waits up to `ms` for SIGTERM/SIGINT (blocked in this thread); returns it, or 0. */
static int wait_signal(const sigset_t *set, int64_t ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
    int sig = sigtimedwait(set, NULL, &ts);
    return sig > 0 ? sig : 0;
}

/* Drains on a helper thread while this thread keeps listening for a second signal. Returns
 * false when a second signal cut the drain short (the drain thread is then still running). */
static bool dmn_drain(dmn *d, const sigset_t *set)
{
    if (!d->spec->drain)
        return true;
    int64_t t0 = dmn_now_ms();
    d->drain_deadline = t0 + d->common.drain_timeout_ms;
    atomic_store(&d->drain_done, false);
    LOGI(NULL, "draining (deadline %lld ms)", (long long)d->common.drain_timeout_ms);
    pthread_t th;
    if (pthread_create(&th, NULL, drain_main, d) != 0) {
        drain_main(d); /* no thread: drain here, deaf to a second signal */
    } else {
        while (!atomic_load(&d->drain_done)) {
            int sig = wait_signal(set, DMN_DRAIN_POLL_MS);
            if (sig) {
                LOGW(NULL, "received %s while draining: stopping without waiting", sig_name(sig));
                pthread_detach(th);
                return false;
            }
        }
        pthread_join(th, NULL);
    }
    int64_t took = dmn_now_ms() - t0;
    if (took > d->common.drain_timeout_ms + 1000)
        LOGW(NULL, "drain took %lld ms, past its %lld ms deadline", (long long)took,
             (long long)d->common.drain_timeout_ms);
    else
        LOGI(NULL, "drained in %lld ms", (long long)took);
    return true;
}

static pl_status dmn_setup_metrics(dmn *d)
{
    static const char *const build_labels[] = {"service", "version", NULL};
    d->met = met_registry_create();
    if (!d->met)
        return PL_ERRF(PL_NOMEM, "metrics registry: out of memory");
    d->f_up = met_gauge(d->met, "parley_up", "1 while the process runs", NULL);
    d->f_ready = met_gauge(d->met, "parley_ready", "1 while /readyz answers 200", NULL);
    d->f_bus = met_gauge(d->met, "parley_bus_connected", "1 while connected to NATS", NULL);
    d->f_build =
        met_gauge(d->met, "parley_build_info", "service name and version; always 1", build_labels);
    met_child *bi = d->f_build ? met_with(d->f_build, d->spec->name, PARLEY_VERSION, NULL) : NULL;
    if (!d->f_up || !d->f_ready || !d->f_bus || !bi)
        return PL_ERRF(PL_NOMEM, "lifecycle metrics: out of memory");
    met_family_set(d->f_up, 1);
    met_set(bi, 1);
    return PL_OK;
}

/* Everything after configuration. Returns the exit status; *leak is set when a second signal
 * cut the drain short and nothing may be freed (the drain thread still uses it). */
static int dmn_run(dmn *d, const sigset_t *set, bool *leak)
{
    const dmn_spec *spec = d->spec;
    int rc = 1;
    log_init(spec->name, (log_level)log_level_parse(d->common.log_level));

    if (dmn_setup_metrics(d) != PL_OK) {
        LOGE(NULL, "%s", pl_err_last());
        return 1;
    }
    bus_opts bo = {.url = d->common.nats_url, .name = d->prog, .on_state = dmn_on_bus, .arg = d};
    if (bus_connect(&d->bus, &bo) != PL_OK) {
        /* pl_err_last() is "bus.c:123: text"; the user needs only the text. */
        const char *why = pl_err_last(), *sep = strstr(why, ": ");
        if (sep && !memchr(why, ' ', (size_t)(sep - why)))
            why = sep + 2;
        char msg[512];
        snprintf(msg, sizeof msg, "option --nats-url: %s", why);
        return bad_config(d, msg);
    }
    if (adm_start(d->common.admin_addr, d->common.admin_port, dmn_http, d, &d->adm) != PL_OK) {
        LOGE(NULL, "%s", pl_err_last());
        return 1;
    }
    LOGI(NULL, "listening admin on %s:%d", d->common.admin_addr, adm_port(d->adm));
    LOGI(NULL, "starting %s %s (instance %s, nats %s)", d->prog, PARLEY_VERSION,
         d->common.instance_id, d->common.nats_url);

    if (spec->start && spec->start(d, spec->ctx) != PL_OK) {
        LOGE(NULL, "start failed: %s", pl_err_last());
        set_phase(d, PH_STOPPED);
        if (spec->stop)
            spec->stop(spec->ctx);
        return 1;
    }
    set_phase(d, PH_RUNNING);

    int sig = 0;
    while (!sig) {
        dmn_watch(d);
        sig = wait_signal(set, DMN_WATCH_MS);
    }
    atomic_store(&d->stopping, true);
    set_phase(d, PH_DRAINING);
    met_family_set(d->f_ready, 0);
    LOGI(NULL, "received %s: no longer ready, stopping", sig_name(sig));
    if (!dmn_drain(d, set)) {
        *leak = true;
        return 1;
    }

    set_phase(d, PH_STOPPED);
    if (spec->stop)
        spec->stop(spec->ctx);
    rc = 0;
    return rc;
}

int dmn_main(const dmn_spec *spec, int argc, char **argv)
{
    dmn *d = calloc(1, sizeof *d);
    if (!d) {
        fprintf(stderr, "parley-%s: out of memory\n", spec->name);
        return 1;
    }
    d->spec = spec;
    d->last_ready = -1;
    atomic_init(&d->phase, PH_STARTING);
    atomic_init(&d->stopping, false);
    atomic_init(&d->drain_done, false);
    pthread_mutex_init(&d->ready_mu, NULL);

    int rc = dmn_configure(d, argc, argv);
    if (rc >= 0) {
        pthread_mutex_destroy(&d->ready_mu);
        free(d);
        return rc;
    }

    /* Before any thread exists: SIGTERM/SIGINT are taken only by sigtimedwait here, and a
     * peer closing a socket never kills the process. */
    sigset_t set, old;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, &old);
    struct sigaction ign = {.sa_handler = SIG_IGN};
    sigemptyset(&ign.sa_mask);
    sigaction(SIGPIPE, &ign, NULL);

    bool leak = false;
    rc = dmn_run(d, &set, &leak);
    if (leak)
        return rc; /* the process is ending; the drain thread still holds `d` */

    adm_stop(d->adm);
    bus_close(d->bus);
    met_registry_destroy(d->met);
    LOGI(NULL, "stopped (status %d)", rc);
    pthread_mutex_destroy(&d->ready_mu);
    free(d);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return rc;
}
