/* authcache.h — a small in-process cache of session look-ups, so an authenticated product
 * request costs one round trip to history (its own op), not two (session.lookup first).
 *
 * Entries map a session token's sha-256 (hex) to the caller it resolved to (gw_user: id, email,
 * tier, admin flag, the quota snapshot of the look-up) and live `ttl_ms` at most. Correctness
 * does not rest on the TTL alone: every change that can end or alter a session goes through a
 * gateway, which evicts here at once and broadcasts an AuthInvalidate on SUBJ_AUTH_INVALIDATE
 * so the other gateways evict too (log-out, password change, an administrator changing a
 * user or a tier). What the TTL bounds is what no gateway sees: a session idle-expiring, or the
 * quota headers of a cached entry (X-RateLimit-Remaining-*) lagging by the turns taken since;
 * a gateway evicts a user's entries after each turn it forwards, so that lag is other
 * gateways' turns only.
 *
 * Only sessions are cached: API keys (the /v1 path counts each POST against the key owner's
 * quota there anyway) and look-ups that return the full reply (GET /me, /quota) always go to
 * history.
 *
 * Thread-safe (one mutex; MHD's worker threads and the NATS delivery thread share it). Fixed
 * capacity chosen at creation, no allocation afterwards: a full probe window replaces its
 * oldest entry. */
#ifndef PARLEY_GW_AUTHCACHE_H
#define PARLEY_GW_AUTHCACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "product.h"
#include "status.h"

typedef struct authcache authcache;

/* A cache of `capacity` entries (rounded up to a power of two) living `ttl_ms`. PL_INVALID for
 * a zero capacity or TTL; PL_NOMEM. *out owned by the caller (authcache_free). */
pl_status authcache_create(size_t capacity, int64_t ttl_ms, authcache **out);
void authcache_free(authcache *c); /* accepts NULL */

/* Copies the cached caller for `token_hash` (64 hex digits) into *u when present and younger
 * than the TTL at `now_ms` (monotonic). A NULL cache never hits. */
bool authcache_get(authcache *c, const char *token_hash, int64_t now_ms, gw_user *u);
/* The eviction epoch: taken before a look-up goes to history and given back to put, so that a
 * look-up racing with an eviction (a log-out on another thread) cannot store the session it
 * read before the eviction. 0 for a NULL cache. */
uint64_t authcache_epoch(authcache *c);
/* Remembers `u` for `token_hash` as of `now_ms`, unless an eviction happened since `epoch`.
 * No-op on a NULL cache. */
void authcache_put(authcache *c, const char *token_hash, const gw_user *u, int64_t now_ms,
                   uint64_t epoch);

/* Evictions; each accepts a NULL cache. The user one scans the table (rare events only). */
void authcache_drop_token(authcache *c, const char *token_hash);
void authcache_drop_user(authcache *c, const char *user_id);
void authcache_clear(authcache *c);

typedef struct authcache_stats {
    uint64_t hits, misses, entries;
} authcache_stats;
void authcache_get_stats(authcache *c, authcache_stats *st);

#endif
