/* ops_convs.h — what the conversation ops (ops_convs.c) and the share/upload ops
 * (ops_shares.c) share: connection and transaction helpers, row conversion, and the op
 * functions of ops_shares.c that ops_convs.c lists in hs_ops_convs[]. Private to history. */
#ifndef PARLEY_HISTORY_OPS_CONVS_H
#define PARLEY_HISTORY_OPS_CONVS_H

#include <stdint.h>

#include <libpq-fe.h>

#include "convtree.h"
#include "ops.h"

/* PL_INVALID unless the request names its acting user. */
pl_status hsc_need_user(const Parley__V1__HistoryRequest *rq);
/* The conversation `id` of `user` into *out, arena-allocated; PL_NOT_FOUND for a missing or
 * someone else's conversation. */
pl_status hsc_conv_get(PGconn *c, const char *user, const char *id, hs_arena *a,
                       Parley__V1__Conversation **out);
/* Writes `v` as decimal text into buf (for a query parameter) and returns buf. */
const char *hsc_i64(char buf[24], int64_t v);
/* A text[] literal ("{a,b}") of ids (hex only; anything else is left out), in the arena. */
char *hsc_id_array(hs_arena *a, char *const *ids, size_t n);
/* The messages of the chain root → `leaf` of `tree` (all of it), with their upload ids,
 * appended to rp->messages. */
pl_status hsc_fill_branch(PGconn *c, const char *user, const char *conv, const ct_tree *tree,
                          int leaf, Parley__V1__HistoryReply *rp, hs_arena *a);

/* Shares and uploads (ops_shares.c). */
pl_status hs_op_share_create(hs_env *e, const Parley__V1__HistoryRequest *rq,
                             Parley__V1__HistoryReply *rp, hs_arena *a);
pl_status hs_op_share_list(hs_env *e, const Parley__V1__HistoryRequest *rq,
                           Parley__V1__HistoryReply *rp, hs_arena *a);
pl_status hs_op_share_revoke(hs_env *e, const Parley__V1__HistoryRequest *rq,
                             Parley__V1__HistoryReply *rp, hs_arena *a);
pl_status hs_op_share_get(hs_env *e, const Parley__V1__HistoryRequest *rq,
                          Parley__V1__HistoryReply *rp, hs_arena *a);
pl_status hs_op_upload_create(hs_env *e, const Parley__V1__HistoryRequest *rq,
                              Parley__V1__HistoryReply *rp, hs_arena *a);
pl_status hs_op_upload_get(hs_env *e, const Parley__V1__HistoryRequest *rq,
                           Parley__V1__HistoryReply *rp, hs_arena *a);

#endif
