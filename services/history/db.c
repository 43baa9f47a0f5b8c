/* db.c — libpq connection pool, health check and migrations for parley-history (see db.h).
 *
 * Pool: a fixed array of slots, each NULL (not yet connected), idle, or lent out; one mutex and
 * a condition variable. Connections are opened outside the mutex (connecting can take the
 * whole connect_timeout) with the slot marked lent. A connection returned in a bad state is
 * closed so the next acquire reconnects. */
#include "db.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "migrations.h"
#include "sync.h"

#define DB_MAX_POOL 32
/* An arbitrary constant naming parley's migration lock among advisory locks. */
#define DB_MIGRATION_LOCK 0x7061726c6579LL

typedef struct db_slot {
    PGconn *conn;
    bool lent;
} db_slot;

struct db_pool {
    char *conninfo;
    int size;
    db_slot slots[DB_MAX_POOL];
    pthread_mutex_t mu;
    pthread_cond_t cv;
};

pl_status db_pool_create(const char *conninfo, int size, db_pool **out)
{
    db_pool *p = calloc(1, sizeof *p);
    if (!p || !(p->conninfo = strdup(conninfo))) {
        free(p);
        return PL_ERRF(PL_NOMEM, "out of memory");
    }
    p->size = size < 1 ? 1 : size > DB_MAX_POOL ? DB_MAX_POOL : size;
    pthread_mutex_init(&p->mu, NULL);
    sync_cond_init(&p->cv);
    *out = p;
    return PL_OK;
}

void db_pool_destroy(db_pool *p)
{
    if (!p)
        return;
    for (int i = 0; i < p->size; i++)
        if (p->slots[i].conn)
            PQfinish(p->slots[i].conn);
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    free(p->conninfo);
    free(p);
}

/* Trims libpq's trailing newline for log-friendly messages. */
static const char *pq_msg(const PGconn *c, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s", c ? PQerrorMessage(c) : "out of memory");
    size_t n = strlen(buf);
    while (n && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
        buf[--n] = '\0';
    return buf;
}

/* libpq prints server notices ("relation ... already exists, skipping") to stderr by default,
 * which would break the one-JSON-object-per-line log; route them through the log instead. */
static void on_notice(void *arg, const char *message)
{
    (void)arg;
    size_t n = strlen(message);
    while (n && (message[n - 1] == '\n' || message[n - 1] == ' '))
        n--;
    LOGD(NULL, "postgres: %.*s", (int)n, message);
}

static pl_status connect_slot(db_pool *p, PGconn **out)
{
    const char *keys[] = {"dbname", "connect_timeout", "application_name", NULL};
    const char *vals[] = {p->conninfo, "3", "parley-history", NULL};
    PGconn *c = PQconnectdbParams(keys, vals, 1);
    if (!c || PQstatus(c) != CONNECTION_OK) {
        char msg[256];
        pq_msg(c, msg, sizeof msg);
        PQfinish(c);
        return PL_ERRF(PL_DB, "cannot connect to PostgreSQL: %s", msg);
    }
    PQsetNoticeProcessor(c, on_notice, NULL);
    *out = c;
    return PL_OK;
}

pl_status db_acquire(db_pool *p, int64_t wait_ms, PGconn **out)
{
    struct timespec dl = sync_deadline(wait_ms);
    pthread_mutex_lock(&p->mu);
    for (;;) {
        int empty = -1;
        for (int i = 0; i < p->size; i++) {
            if (p->slots[i].lent)
                continue;
            if (p->slots[i].conn) {
                p->slots[i].lent = true;
                *out = p->slots[i].conn;
                pthread_mutex_unlock(&p->mu);
                return PL_OK;
            }
            if (empty < 0)
                empty = i;
        }
        if (empty >= 0) {
            p->slots[empty].lent = true;
            pthread_mutex_unlock(&p->mu);
            PGconn *c = NULL;
            pl_status s = connect_slot(p, &c);
            pthread_mutex_lock(&p->mu);
            p->slots[empty].conn = c;
            p->slots[empty].lent = s == PL_OK;
            if (s != PL_OK)
                pthread_cond_signal(&p->cv);
            pthread_mutex_unlock(&p->mu);
            if (s == PL_OK)
                *out = c;
            return s;
        }
        if (pthread_cond_timedwait(&p->cv, &p->mu, &dl) == ETIMEDOUT) {
            pthread_mutex_unlock(&p->mu);
            return PL_ERRF(PL_TIMEOUT, "all %d database connections are busy", p->size);
        }
    }
}

void db_release(db_pool *p, PGconn *c)
{
    if (!c)
        return;
    bool bad = PQstatus(c) != CONNECTION_OK || PQtransactionStatus(c) != PQTRANS_IDLE;
    pthread_mutex_lock(&p->mu);
    for (int i = 0; i < p->size; i++) {
        if (p->slots[i].conn == c) {
            if (bad) {
                PQfinish(c);
                p->slots[i].conn = NULL;
            }
            p->slots[i].lent = false;
            break;
        }
    }
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

pl_status db_exec(PGconn *c, const char *sql, int n_params, const char *const *params,
                  PGresult **res)
{
    /* Without parameters use the simple protocol: migrations are multi-statement scripts,
     * which the extended protocol refuses. */
    PGresult *r = n_params == 0 ? PQexec(c, sql)
                                : PQexecParams(c, sql, n_params, NULL, params, NULL, NULL, 0);
    ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        char msg[512];
        const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
        /* 23505 unique_violation is the caller's business (PL_EXISTS), not an outage. Read it
         * before PQclear frees the result that holds it. */
        bool unique = state && strcmp(state, "23505") == 0;
        pq_msg(c, msg, sizeof msg);
        PQclear(r);
        if (unique)
            return PL_ERRF(PL_EXISTS, "%s", msg);
        return PL_ERRF(PL_DB, "%s", msg);
    }
    if (res)
        *res = r;
    else
        PQclear(r);
    return PL_OK;
}

pl_status db_check(db_pool *p)
{
    PGconn *c;
    pl_status s = db_acquire(p, 1000, &c);
    if (s != PL_OK)
        return s;
    s = db_exec(c, "SELECT 1", 0, NULL, NULL);
    db_release(p, c);
    return s;
}

static pl_status migrate_on(PGconn *c)
{
    pl_status s = db_exec(c, "BEGIN", 0, NULL, NULL);
    if (s != PL_OK)
        return s;
    char lock[96];
    snprintf(lock, sizeof lock, "SELECT pg_advisory_xact_lock(%lld)", (long long)DB_MIGRATION_LOCK);
    s = db_exec(c, lock, 0, NULL, NULL);
    if (s == PL_OK)
        s = db_exec(c,
                    "CREATE TABLE IF NOT EXISTS schema_migrations ("
                    " version integer PRIMARY KEY, name text NOT NULL,"
                    " applied_at timestamptz NOT NULL DEFAULT now())",
                    0, NULL, NULL);
    for (size_t i = 0; s == PL_OK && i < mig_n_steps; i++) {
        char ver[16];
        snprintf(ver, sizeof ver, "%d", mig_steps[i].version);
        const char *params[] = {ver, mig_steps[i].name};
        PGresult *r = NULL;
        s = db_exec(c, "SELECT 1 FROM schema_migrations WHERE version = $1", 1, params, &r);
        if (s != PL_OK)
            break;
        bool applied = PQntuples(r) > 0;
        PQclear(r);
        if (applied)
            continue;
        s = db_exec(c, mig_steps[i].sql, 0, NULL, NULL);
        if (s != PL_OK) {
            s = PL_ERRF(s, "migration %d (%s): %s", mig_steps[i].version, mig_steps[i].name,
                        pl_err_last());
            break;
        }
        s = db_exec(c, "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", 2, params,
                    NULL);
        if (s == PL_OK)
            LOGI(NULL, "applied migration %d: %s", mig_steps[i].version, mig_steps[i].name);
    }
    if (s == PL_OK)
        return db_exec(c, "COMMIT", 0, NULL, NULL);
    char why[512];
    snprintf(why, sizeof why, "%s", pl_err_last());
    PQclear(PQexec(c, "ROLLBACK"));
    return PL_ERRF(s, "%s", why);
}

pl_status db_migrate(db_pool *p)
{
    PGconn *c;
    pl_status s = db_acquire(p, 5000, &c);
    if (s != PL_OK)
        return s;
    s = migrate_on(c);
    db_release(p, c);
    return s;
}

int db_schema_version(db_pool *p)
{
    PGconn *c;
    if (db_acquire(p, 1000, &c) != PL_OK)
        return -1;
    PGresult *r = NULL;
    int v = -1;
    if (db_exec(c, "SELECT coalesce(max(version), 0) FROM schema_migrations", 0, NULL, &r) ==
        PL_OK) {
        v = atoi(PQgetvalue(r, 0, 0));
        PQclear(r);
    }
    db_release(p, c);
    return v;
}
