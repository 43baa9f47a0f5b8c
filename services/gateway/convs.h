/* convs.h — what the conversation routes (convs.c) share with the share and upload routes
 * (convs_share.c) and the answer streams (convs_stream.c). Private to the gateway. */
#ifndef PARLEY_GW_CONVS_H
#define PARLEY_GW_CONVS_H

#include <stdbool.h>

#include <cjson/cJSON.h>

#include "product.h"

/* Sends `j` (deleted here) with `status`, no-store caching and the caller's quota headers. */
enum MHD_Result cv_send_json(http_req *r, unsigned status, cJSON *j, const gw_user *u);

/* The JSON text of a conversation with its active branch (rp->conversation, rp->messages):
 * owned by the caller (free()), *len its length; NULL when rp has no conversation or memory
 * ran out. convs_json.c. */
char *cv_branch_text(const Parley__V1__HistoryReply *rp, size_t *len);
/* Sends the branch of `rp` (freed here, whatever happens) as 200 with the caller's quota
 * headers; 500 when memory ran out. */
enum MHD_Result cv_send_branch(http_req *r, Parley__V1__HistoryReply *rp, const gw_user *u);

/* GET /api/v1/conversations/{id}: the conversation with its active branch, through the
 * gateway's view cache (viewcache.h) when history confirms the version it holds. */
enum MHD_Result cv_open(gw *g, http_req *r, const gw_user *u, const char *conv);

/* Share and upload routes (convs_share.c). */
enum MHD_Result cv_share_create(gw *g, http_req *r, const gw_user *u, const char *conv);
enum MHD_Result cv_route_shares_list(http_req *r, void *arg);
enum MHD_Result cv_route_share_revoke(http_req *r, void *arg);
enum MHD_Result cv_route_public_share(http_req *r, void *arg);
enum MHD_Result cv_route_upload(http_req *r, void *arg);

#endif
