/* parley-history — owns PostgreSQL (the system of record) and the Redis cache.
 *
 * This file is the daemon's configuration table and wiring: the connection pool (db.c), the
 * cache (cache.c), migrations applied in the background until they succeed, a monitor thread
 * that checks both stores every second for /readyz, and the RPC subscription
 * (SUBJ_HISTORY_RPC, queue group QUEUE_HISTORY) whose operations are dispatched by name. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bgtask.h"
#include "bus.h"
#include "cache.h"
#include "daemon.h"
#include "db.h"
#include "log.h"
#include "ops.h"
#include "parley.pb-c.h"
#include "subjects.h"
#include "wire.h"

/* Queue-group members subscribed to the RPC subject: libnats delivers each subscription's
 * messages on its own thread, one at a time, so this many operations run at once. */
#define HS_RPC_THREADS 8

typedef struct hs_cfg {
    const char *pg_url;
    const char *redis_url;
    int64_t pg_pool;
} hs_cfg;

static const cfg_opt hs_opts[] = {
    {"pg-url", CFG_STR, offsetof(hs_cfg, pg_url), "postgresql://parley@127.0.0.1:5433/parley", 0, 0,
     "PostgreSQL connection string (libpq URI or key=value)"},
    {"redis-url", CFG_STR, offsetof(hs_cfg, redis_url), "redis://127.0.0.1:6380", 0, 0,
     "Redis address: redis://host:port[/db]"},
    {"pg-pool", CFG_INT, offsetof(hs_cfg, pg_pool), "8", 1, 32, "PostgreSQL connections"},
};

typedef struct hs {
    hs_cfg cfg;
    dmn *d;
    db_pool *db;
    cache *cache;
    bgtask *migrations;
    bus_sub *rpc_subs[HS_RPC_THREADS];
    pthread_t monitor;
    bool monitor_running;
    atomic_bool stop;
    atomic_bool pg_ok, redis_ok;
    pthread_mutex_t why_mu;
    char pg_why[160], redis_why[160];
    met_family *m_rpc;
} hs;

static pl_status run_migrations(void *arg)
{
    hs *h = arg;
    return db_migrate(h->db);
}

static void note(hs *h, atomic_bool *flag, char *why, pl_status s, const char *what)
{
    bool ok = s == PL_OK;
    bool was = atomic_exchange(flag, ok);
    pthread_mutex_lock(&h->why_mu);
    snprintf(why, 160, "%s", ok ? "" : pl_err_last());
    pthread_mutex_unlock(&h->why_mu);
    if (was != ok) {
        if (ok)
            LOGI(NULL, "%s is reachable", what);
        else
            LOGW(NULL, "%s is down: %s", what, why);
    }
}

static void *monitor_main(void *arg)
{
    hs *h = arg;
    while (!atomic_load(&h->stop)) {
        note(h, &h->pg_ok, h->pg_why, db_check(h->db), "PostgreSQL");
        note(h, &h->redis_ok, h->redis_why, cache_check(h->cache), "Redis");
        for (int i = 0; i < 10 && !atomic_load(&h->stop); i++)
            nanosleep(&(struct timespec){0, 100 * 1000000L}, NULL);
    }
    return NULL;
}

/* Sends `rep`, behind the op's reply prefix when it set one and succeeded (see ops.h). */
static void reply(hs *h, bus_msg *m, Parley__V1__HistoryReply *rep, const hs_arena *a)
{
    size_t plen = 0;
    const char *prefix = rep->error ? NULL : hs_reply_prefix_get(a, &plen);
    pl_status s;
    if (!prefix) {
        s = bus_respond_pb(dmn_bus(h->d), m, &rep->base);
    } else {
        size_t n = parley__v1__history_reply__get_packed_size(rep);
        uint8_t *buf = malloc(plen + n + 1);
        if (!buf) {
            s = PL_ERRF(PL_NOMEM, "out of memory for a %zu-byte reply", plen + n);
        } else {
            memcpy(buf, prefix, plen);
            parley__v1__history_reply__pack(rep, buf + plen);
            s = bus_respond(dmn_bus(h->d), m, buf, plen + n);
            free(buf);
        }
    }
    if (s != PL_OK)
        LOGW(NULL, "cannot answer a history request: %s", pl_err_last());
}

static const hs_op *find_op(const char *name)
{
    for (size_t i = 0; i < hs_n_ops_accounts; i++)
        if (strcmp(hs_ops_accounts[i].name, name) == 0)
            return &hs_ops_accounts[i];
    for (size_t i = 0; i < hs_n_ops_convs; i++)
        if (strcmp(hs_ops_convs[i].name, name) == 0)
            return &hs_ops_convs[i];
    for (size_t i = 0; i < hs_n_ops_safety; i++)
        if (strcmp(hs_ops_safety[i].name, name) == 0)
            return &hs_ops_safety[i];
    return NULL;
}

/* "ping": proves the round trip reaches the database (count = schema version). */
static pl_status op_ping(hs_env *e, const Parley__V1__HistoryRequest *rq,
                         Parley__V1__HistoryReply *rp, hs_arena *a)
{
    (void)rq;
    (void)a;
    int v = db_schema_version(e->db);
    if (v < 0)
        return PL_ERRF(PL_UNAVAILABLE, "database unavailable");
    rp->count = (uint64_t)v;
    return PL_OK;
}

static void on_rpc(bus_msg *m, void *arg)
{
    hs *h = arg;
    Parley__V1__HistoryReply rep = PARLEY__V1__HISTORY_REPLY__INIT;
    Parley__V1__Error err;
    hs_arena *a = hs_arena_create();
    Parley__V1__HistoryRequest *req =
        (Parley__V1__HistoryRequest *)bus_msg_unpack(m, &parley__v1__history_request__descriptor);
    const char *op = req && req->op ? req->op : "";
    const char *result = "ok";
    char why[512];
    if (!req || !a) {
        wire_error_init(&err, req ? PL_NOMEM : PL_INVALID,
                        req ? "out of memory" : "history request does not parse");
        rep.error = &err;
        result = "bad";
    } else {
        hs_env env = {.db = h->db, .cache = h->cache, .d = h->d};
        const hs_op *o = find_op(op);
        hs_op_fn fn = strcmp(op, "ping") == 0 ? op_ping : o ? o->fn : NULL;
        pl_err_clear();
        pl_status s = fn ? fn(&env, req, &rep, a)
                         : PL_ERRF(PL_UNSUPPORTED, "unknown history operation '%s'", op);
        if (s != PL_OK) {
            /* Internal details (SQL errors) stay in the log; callers get the class of error. */
            snprintf(why, sizeof why, "%s", pl_err_last());
            bool internal = s == PL_DB || s == PL_ERR || s == PL_NOMEM;
            if (internal)
                LOGE(req->request_id, "history op %s: %s", op, why);
            wire_error_init(&err, s, internal ? "storage error" : why);
            rep.error = &err;
            result = "error";
        }
    }
    met_inc(met_with(h->m_rpc, result, NULL), 1);
    reply(h, m, &rep, a);
    if (req)
        protobuf_c_message_free_unpacked(&req->base, NULL);
    hs_arena_free(a);
    bus_msg_destroy(m);
}

static pl_status hs_start(dmn *d, void *ctx)
{
    hs *h = ctx;
    h->d = d;
    pthread_mutex_init(&h->why_mu, NULL);
    pl_status s = db_pool_create(h->cfg.pg_url, (int)h->cfg.pg_pool, &h->db);
    if (s == PL_OK)
        s = cache_create(h->cfg.redis_url, &h->cache);
    if (s != PL_OK)
        return s;
    static const char *const labels[] = {"result", NULL};
    h->m_rpc = met_counter(dmn_metrics(d), "parley_history_rpc_total",
                           "history operations answered, by result", labels);
    if ((s = bgtask_start("migrations", run_migrations, h, 1000, &h->migrations)) != PL_OK)
        return s;
    if (pthread_create(&h->monitor, NULL, monitor_main, h) != 0)
        return PL_ERRF(PL_ERR, "cannot start the monitor thread");
    h->monitor_running = true;
    for (int i = 0; i < HS_RPC_THREADS && s == PL_OK; i++)
        s = bus_subscribe(dmn_bus(d), SUBJ_HISTORY_RPC, QUEUE_HISTORY, on_rpc, h, &h->rpc_subs[i]);
    return s;
}

static size_t hs_ready(void *ctx, dmn_check *c)
{
    hs *h = ctx;
    pthread_mutex_lock(&h->why_mu);
    c[0].name = "postgres";
    c[0].ok = atomic_load(&h->pg_ok);
    snprintf(c[0].detail, sizeof c[0].detail, "%s", h->pg_why);
    c[1].name = "redis";
    c[1].ok = atomic_load(&h->redis_ok);
    snprintf(c[1].detail, sizeof c[1].detail, "%s", h->redis_why);
    pthread_mutex_unlock(&h->why_mu);
    c[2].name = "migrations";
    c[2].ok = h->migrations && bgtask_done(h->migrations);
    if (!c[2].ok && h->migrations)
        bgtask_error(h->migrations, c[2].detail, sizeof c[2].detail);
    return 3;
}

static void hs_drain(void *ctx, int64_t deadline_ms)
{
    hs *h = ctx;
    (void)deadline_ms;
    /* Stop taking requests; those in flight finish inside their handlers. */
    for (int i = 0; i < HS_RPC_THREADS; i++) {
        bus_unsubscribe(h->rpc_subs[i]);
        h->rpc_subs[i] = NULL;
    }
}

static void hs_stop(void *ctx)
{
    hs *h = ctx;
    for (int i = 0; i < HS_RPC_THREADS; i++)
        bus_unsubscribe(h->rpc_subs[i]);
    atomic_store(&h->stop, true);
    if (h->monitor_running)
        pthread_join(h->monitor, NULL);
    bgtask_stop(h->migrations);
    cache_destroy(h->cache);
    db_pool_destroy(h->db);
}

int main(int argc, char **argv)
{
    static hs h;
    dmn_spec spec = {
        .name = "history",
        .summary = "owns PostgreSQL and the Redis cache: users, conversations, messages, shares",
        .opts = hs_opts,
        .n_opts = sizeof hs_opts / sizeof hs_opts[0],
        .cfg = &h.cfg,
        .ctx = &h,
        .start = hs_start,
        .ready = hs_ready,
        .drain = hs_drain,
        .stop = hs_stop,
        .admin_port_default = 9105,
    };
    return dmn_main(&spec, argc, argv);
}
