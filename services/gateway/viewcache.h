/* viewcache.h — the gateway's cache of opened conversations as JSON text, by view version.
 *
 * history versions each conversation's view (ops_convs.c: a random id replaced by every change).
 * Opening a conversation the gateway rendered before sends that version along (if_version);
 * when it is still current history answers "not modified" in a few bytes and the gateway sends
 * the text it kept, instead of history shipping the whole branch over NATS and the gateway
 * unpacking it and writing the JSON again (a 1,000-message conversation is ~420 KB). Nothing is
 * ever served without history confirming the version for that user, so the cache cannot show
 * a stale or someone else's conversation; a miss only costs the normal path.
 *
 * Bounded by bytes and by a number of entries (least recently used entries go first); an entry
 * larger than a quarter of the budget is not kept. Thread-safe (one mutex; texts are copied in and
 * out). */
#ifndef PARLEY_GW_VIEWCACHE_H
#define PARLEY_GW_VIEWCACHE_H

#include <stdbool.h>
#include <stddef.h>

#include "status.h"

typedef struct viewcache viewcache;

/* A cache holding at most `budget_bytes` of text. PL_INVALID for 0, PL_NOMEM. *out owned by the
 * caller (viewcache_free). */
pl_status viewcache_create(size_t budget_bytes, viewcache **out);
void viewcache_free(viewcache *c); /* accepts NULL */

/* The version kept for (user, conv) into `ver` (cap bytes), or false (also for a NULL cache). */
bool viewcache_version(viewcache *c, const char *user, const char *conv, char *ver, size_t cap);
/* A malloc'd copy of the text kept for (user, conv) at version `ver` (caller frees; *len set),
 * or NULL when it is gone, another version, or memory ran out. Marks it recently used. */
char *viewcache_take(viewcache *c, const char *user, const char *conv, const char *ver,
                     size_t *len);
/* Keeps a copy of `text` as (user, conv) at `ver`, replacing what was there. */
void viewcache_put(viewcache *c, const char *user, const char *conv, const char *ver,
                   const char *text, size_t len);

typedef struct viewcache_stats {
    size_t entries, bytes;
} viewcache_stats;
void viewcache_get_stats(viewcache *c, viewcache_stats *st);

#endif
