/* convs.h — what the conversation routes (convs.c) share with the share and upload routes
 * (convs_share.c) and the answer streams (convs_stream.c). Private to the gateway. */
#ifndef PARLEY_GW_CONVS_H
#define PARLEY_GW_CONVS_H

#include <stdbool.h>

#include <cjson/cJSON.h>

#include "product.h"

/* `msg` without the "file.c:42: " prefixes recorded errors carry (several when an error was
 * wrapped on its way here): the part meant for a person. Points into `msg`. */
const char *cv_plain(const char *msg);

/* Answers status `s` with the last recorded error's message (prefixes stripped). */
enum MHD_Result cv_fail(http_req *r, pl_status s);

/* Sends `j` (deleted here) with `status`, no-store caching and the caller's quota headers. */
enum MHD_Result cv_send_json(http_req *r, unsigned status, cJSON *j, const gw_user *u);

/* The request body as a JSON object (caller deletes), or NULL after answering 400/415. An
 * empty body is an empty object when `empty_ok`. */
cJSON *cv_body(http_req *r, bool empty_ok, enum MHD_Result *ret);

/* Adds `name`: unix seconds (null for 0). */
void cv_add_time(cJSON *o, const char *name, int64_t ms);

/* Share and upload routes (convs_share.c). */
enum MHD_Result cv_share_create(gw *g, http_req *r, const gw_user *u, const char *conv);
enum MHD_Result cv_route_shares_list(http_req *r, void *arg);
enum MHD_Result cv_route_share_revoke(http_req *r, void *arg);
enum MHD_Result cv_route_public_share(http_req *r, void *arg);
enum MHD_Result cv_route_upload(http_req *r, void *arg);

#endif
