/* auth.c — API-key authentication at the gateway edge.
 *
 * Until accounts exist, the /v1 routes is guarded by one key from configuration; the comparison
 * takes the same time wherever the strings differ. Stateless and thread-safe. */
#include <string.h>
#include <strings.h>

#include "gateway.h"

/* Compares in time independent of where the strings differ. */
static bool same_secret(const char *a, const char *b)
{
    size_t na = strlen(a), nb = strlen(b);
    unsigned char diff = (unsigned char)(na != nb);
    for (size_t i = 0; i < na; i++)
        diff |= (unsigned char)(a[i] ^ b[i % (nb ? nb : 1)]);
    return diff == 0;
}

bool gw_authorize(gw *g, http_req *r, enum MHD_Result *ret)
{
    if (!g->cfg.api_key[0])
        return true;
    const char *h = http_header(r, "Authorization");
    if (h && strncasecmp(h, "Bearer ", 7) == 0 && same_secret(h + 7, g->cfg.api_key))
        return true;
    *ret = http_reply_error(
        r, 401, h ? "invalid API key" : "missing API key: send 'Authorization: Bearer <key>'", NULL,
        "invalid_api_key", 0);
    return false;
}
