/* accounts.c — product API routes (see product.h). */
#include "product.h"

const http_route gw_routes_accounts[] = {{"", "", NULL, NULL}};
const size_t gw_n_routes_accounts = 0;

bool gw_auth_user(gw *g, http_req *r, gw_user *u, enum MHD_Result *ret)
{
    (void)g;
    (void)u;
    *ret = http_reply_error(r, 401, "not implemented yet", NULL, "unauthenticated", 0);
    return false;
}
