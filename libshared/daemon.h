/* daemon.h — the lifecycle every parley daemon shares.
 *
 * A daemon's main() is a config table plus one call: dmn_main(&spec, argc, argv). dmn_main
 *   1. parses the common options (nats-url, admin-addr, admin-port, log-level, drain-timeout,
 *      instance-id) and the daemon's own table; answers --help / --version; rejects a bad flag
 *      or value with a message naming it and exit status 2;
 *   2. initialises logging, the metrics registry and the bus (which keeps reconnecting);
 *   3. starts the admin HTTP server: GET /healthz (200 while the process runs), GET /readyz
 *      (200 when the bus is connected and spec->ready says so, else 503; JSON body listing each
 *      check), GET /metrics (Prometheus text);
 *   4. calls spec->start, then waits for SIGTERM or SIGINT;
 *   5. on the signal: marks itself not ready (draining), calls spec->drain with the deadline,
 *      then spec->stop, closes the bus and the admin server, and returns 0 (1 when start failed,
 *      2 for bad configuration). A second signal during drain stops at once.
 * Shared code never exits; dmn_main returns and main() returns its value. */
#ifndef PARLEY_DAEMON_H
#define PARLEY_DAEMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bus.h"
#include "cfg.h"
#include "metrics.h"
#include "status.h"

#define PARLEY_VERSION "0.1.0"

/* Options every daemon has; filled by dmn_main before spec->start. */
typedef struct dmn_common {
    const char *nats_url;
    const char *admin_addr;
    int admin_port;
    const char *log_level;
    int64_t drain_timeout_ms;
    const char *instance_id; /* default: <service>-<hostname>-<pid> */
} dmn_common;

typedef struct dmn dmn;

/* One readiness check, reported by /readyz. */
typedef struct dmn_check {
    const char *name; /* "postgres" */
    bool ok;
    char detail[160]; /* why not, when !ok */
} dmn_check;

#define DMN_MAX_CHECKS 8

typedef struct dmn_spec {
    const char *name;    /* "gateway": service name in logs, binary "parley-gateway" */
    const char *summary; /* one line for --help */
    const cfg_opt *opts; /* the daemon's own options (may be NULL) */
    size_t n_opts;
    void *cfg; /* struct the options write into */
    void *ctx; /* the daemon's context, passed to every callback */
    /* Connects to the daemon's own dependencies, subscribes, starts threads. Failing here ends
     * the process with status 1 (after spec->stop). Dependencies that are merely down are not
     * failures: report them through `ready` and recover when they return. */
    pl_status (*start)(dmn *d, void *ctx);
    /* Fills up to DMN_MAX_CHECKS checks of the daemon's own dependencies (the bus is checked by
     * the lifecycle) and returns how many. Called from the admin thread and from the
     * lifecycle's 500 ms readiness loop, never concurrently, never before start returns or
     * after stop begins; must be quick. Optional. */
    size_t (*ready)(void *ctx, dmn_check *checks);
    /* Stop taking new work and finish what is in flight, returning by `deadline_ms`
     * (monotonic, dmn_now_ms()). Optional. */
    void (*drain)(void *ctx, int64_t deadline_ms);
    /* Release everything start made. Called once, also after a failed start. Optional. */
    void (*stop)(void *ctx);
    /* The default of --admin-port for this daemon (9101 …); 0 = pick a free port. */
    int admin_port_default;
} dmn_spec;

int dmn_main(const dmn_spec *spec, int argc, char **argv);

/* Accessors for callbacks. Borrowed, valid until dmn_main returns. */
bus *dmn_bus(dmn *d);
met_registry *dmn_metrics(dmn *d);
const dmn_common *dmn_common_cfg(dmn *d);
const char *dmn_instance(dmn *d);
/* True once SIGTERM/SIGINT arrived. */
bool dmn_stopping(dmn *d);

/* Monotonic milliseconds, and wall-clock unix milliseconds and microseconds. */
int64_t dmn_now_ms(void);
int64_t dmn_wall_ms(void);
int64_t dmn_wall_us(void);

/* Writes 32 lowercase hex characters of randomness (128 bits) and a NUL into out[33]. */
void dmn_random_id(char out[33]);

#endif
