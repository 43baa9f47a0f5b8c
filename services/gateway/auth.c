/* auth.c — API-key authentication at the gateway edge.
 *
 * The /v1 routes are guarded by one key from configuration (the comparison takes the same time
 * wherever the strings differ) or by a per-user API key ("pk-…"), which accounts.c looks up in
 * history. Stateless and thread-safe. */
#include <string.h>
#include <strings.h>

#include "gateway.h"
#include "product.h"

/* Compares in time independent of where the strings differ. */
static bool same_secret(const char *a, const char *b)
{
    size_t na = strlen(a), nb = strlen(b);
    unsigned char diff = (unsigned char)(na != nb);
    for (size_t i = 0; i < na; i++)
        diff |= (unsigned char)(a[i] ^ b[i % (nb ? nb : 1)]);
    return diff == 0;
}

bool gw_authorize(gw *g, http_req *r, char *user_id, enum MHD_Result *ret)
{
    user_id[0] = '\0';
    const char *h = http_header(r, "Authorization");
    bool bearer = h && strncasecmp(h, "Bearer ", 7) == 0;
    /* A per-user key is always checked (and counted against its owner's quota), even when
     * /v1 is open: a revoked key must stop working wherever it is presented. */
    if (bearer && strncmp(h + 7, "pk-", 3) == 0 &&
        !(g->cfg.api_key[0] && same_secret(h + 7, g->cfg.api_key)))
        return gw_authorize_api_key(g, r, h + 7, user_id, ret);
    if (!g->cfg.api_key[0])
        return true;
    if (bearer && same_secret(h + 7, g->cfg.api_key))
        return true;
    *ret = http_reply_error(
        r, 401, h ? "invalid API key" : "missing API key: send 'Authorization: Bearer <key>'", NULL,
        "invalid_api_key", 0);
    return false;
}
