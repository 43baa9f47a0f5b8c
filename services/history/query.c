/* query.c — database access shared by the history op modules (see ops.h). */
#include "ops.h"

#define HS_DB_WAIT_MS 3000 /* longest wait for a pooled connection */

pl_status hs_conn(hs_env *e, PGconn **c)
{
    pl_status s = db_acquire(e->db, HS_DB_WAIT_MS, c);
    if (s == PL_DB)
        return PL_ERRF(PL_UNAVAILABLE, "the database is unavailable");
    if (s == PL_TIMEOUT)
        return PL_ERRF(PL_UNAVAILABLE, "the database is busy");
    return s;
}

void hs_release(hs_env *e, PGconn *c)
{
    if (!c)
        return;
    PGTransactionStatusType ts = PQtransactionStatus(c);
    if (ts == PQTRANS_INTRANS || ts == PQTRANS_INERROR)
        PQclear(PQexec(c, "ROLLBACK"));
    db_release(e->db, c);
}

pl_status hs_query(hs_env *e, const char *sql, int n, const char *const *params, PGresult **res)
{
    PGconn *c = NULL;
    pl_status s = hs_conn(e, &c);
    if (s != PL_OK)
        return s;
    s = db_exec(c, sql, n, params, res);
    hs_release(e, c);
    return s;
}
