/* db.h — parley-history's PostgreSQL access: a small connection pool, health and migrations.
 *
 * The pool holds up to N libpq connections opened lazily; db_acquire hands one out (waiting up
 * to a timeout when all are busy) and db_release returns it, resetting a connection that broke.
 * db_check runs "SELECT 1" on a pooled connection and reconnects when the server came back; the
 * history daemon calls it every second from its monitor thread and reports the result on
 * /readyz. libpq errors are converted to PL_DB here, with PQerrorMessage in the recorded
 * message. Thread-safe. */
#ifndef PARLEY_HISTORY_DB_H
#define PARLEY_HISTORY_DB_H

#include <stdbool.h>
#include <stdint.h>

#include <libpq-fe.h>

#include "status.h"

typedef struct db_pool db_pool;

/* Copies `conninfo`; connects nothing yet. */
pl_status db_pool_create(const char *conninfo, int size, db_pool **out);
void db_pool_destroy(db_pool *p); /* accepts NULL; connections must all be released */

/* A connected connection, or PL_DB (server down / refused) or PL_TIMEOUT (pool exhausted for
 * `wait_ms`). The caller owns it until db_release. */
pl_status db_acquire(db_pool *p, int64_t wait_ms, PGconn **out);
void db_release(db_pool *p, PGconn *c);

/* Pings the server; PL_OK when it answers. */
pl_status db_check(db_pool *p);

/* Applies every migration not yet applied, under an advisory lock so that several instances
 * starting at once apply each exactly once. Safe to run again. */
pl_status db_migrate(db_pool *p);
/* The highest applied migration version (0 when none), or -1 on error. */
int db_schema_version(db_pool *p);

/* Runs `sql` with text parameters; on PL_OK *res is owned by the caller (PQclear). PL_DB with
 * the server's message otherwise (the result is cleared). Expects PGRES_COMMAND_OK or
 * PGRES_TUPLES_OK. */
pl_status db_exec(PGconn *c, const char *sql, int n_params, const char *const *params,
                  PGresult **res);

#endif
