/* ops.h — history operations: one function per HistoryRequest.op, grouped in tables by module.
 *
 * main.c looks an op up by name in every table and calls it on a libnats thread. An op reads the
 * request fields it needs, scopes every lookup to rq->user_id (another user's object answers
 * PL_NOT_FOUND, exactly like a missing one), fills the reply, and returns a status; main.c turns
 * a non-OK status plus pl_err_last() into the reply's Error. Strings and sub-messages put into
 * the reply must be allocated from the arena (hs_strdup, hs_alloc), which main.c frees after
 * the reply is sent. All SQL is parameterised. */
#ifndef PARLEY_HISTORY_OPS_H
#define PARLEY_HISTORY_OPS_H

#include <stddef.h>

#include "cache.h"
#include "daemon.h"
#include "db.h"
#include "parley.pb-c.h"
#include "status.h"

typedef struct hs_arena hs_arena;

typedef struct hs_env {
    db_pool *db;
    cache *cache;
    dmn *d;
} hs_env;

typedef pl_status (*hs_op_fn)(hs_env *e, const Parley__V1__HistoryRequest *rq,
                              Parley__V1__HistoryReply *rp, hs_arena *a);

typedef struct hs_op {
    const char *name;
    hs_op_fn fn;
} hs_op;

/* Accounts, sessions, API keys, tiers, quotas, usage, admin (ops_accounts.c). */
extern const hs_op hs_ops_accounts[];
extern const size_t hs_n_ops_accounts;
/* Conversations, messages, branches, shares, uploads, search (ops_convs.c). */
extern const hs_op hs_ops_convs[];
extern const size_t hs_n_ops_convs;

/* Safety verdicts: batch store, the administrators' flagged views and review (ops_safety.c). */
extern const hs_op hs_ops_safety[];
extern const size_t hs_n_ops_safety;

/* PL_OK when `user_id` names an enabled administrator; PL_PERMISSION otherwise
 * (ops_accounts.c). */
pl_status hs_require_admin(hs_env *e, const char *user_id);

/* Arena: everything allocated here is freed together by hs_arena_free. Allocation failure
 * returns NULL (the op then returns PL_NOMEM). */
hs_arena *hs_arena_create(void);
void hs_arena_free(hs_arena *a);             /* accepts NULL */
void *hs_alloc(hs_arena *a, size_t n);       /* zeroed */
char *hs_strdup(hs_arena *a, const char *s); /* NULL → "" */
char *hs_strndup(hs_arena *a, const char *s, size_t n);

/* A prefix for the reply: bytes of a packed HistoryReply (malloc'd; the arena owns them from
 * here, even on failure) that main.c sends in front of the packed `rp`. Protobuf merges
 * concatenated messages, so an answer kept packed in a cache goes out without being unpacked
 * and packed again; the op must leave the prefix's fields unset in rp. Dropped when the op
 * fails. */
void hs_reply_prefix(hs_arena *a, char *buf, size_t len);
/* The prefix set for this request (borrowed), or NULL. */
const char *hs_reply_prefix_get(const hs_arena *a, size_t *len);

/* Database access for ops, shared by every op module. hs_conn lends a pooled connection
 * (PL_UNAVAILABLE, "the database is unavailable / busy", when none can be had); hs_release
 * returns it, rolling back a transaction a failure left open; hs_query is the three in one for a
 * single statement (on PL_OK *res is the caller's to PQclear). */
pl_status hs_conn(hs_env *e, PGconn **c);
void hs_release(hs_env *e, PGconn *c);
pl_status hs_query(hs_env *e, const char *sql, int n, const char *const *params, PGresult **res);

/* A fresh id: 32 lowercase hex characters of randomness, in the arena. */
char *hs_new_id(hs_arena *a);

#endif
