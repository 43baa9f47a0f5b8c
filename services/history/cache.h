/* cache.h — parley-history's Redis connection (hiredis): the conversation-context cache.
 *
 * Redis holds nothing that is not also in PostgreSQL: losing it makes turns slower, never
 * loses data. One connection behind a mutex (commands are sub-millisecond); a broken connection
 * is dropped and re-opened on the next command or health check. hiredis errors become PL_DB
 * here with the server's or the socket's message. */
#ifndef PARLEY_HISTORY_CACHE_H
#define PARLEY_HISTORY_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "status.h"

typedef struct cache cache;

/* `url` is "redis://host:port[/db]" or "host:port". PL_INVALID for a malformed URL; connects
 * nothing yet. */
pl_status cache_create(const char *url, cache **out);
void cache_destroy(cache *c); /* accepts NULL */

/* PING; reconnects first when needed. */
pl_status cache_check(cache *c);

/* GET key: PL_OK with a malloc'd copy in *val (caller frees) and its length, PL_NOT_FOUND when
 * absent, PL_DB when Redis is unreachable. */
pl_status cache_get(cache *c, const char *key, char **val, size_t *len);
/* SET key val EX ttl_s (ttl_s 0 = no expiry). */
pl_status cache_set(cache *c, const char *key, const void *val, size_t len, int64_t ttl_s);
pl_status cache_del(cache *c, const char *key);

/* Counters (rate limits, quotas). Added for accounts; a counter key holds a decimal integer.
 *
 * cache_incr: INCRBY key by, then (ttl_ms > 0) PEXPIRE key ttl_ms NX — so a window's expiry is
 * fixed by its first hit and never pushed back — then PTTL. *value is the new count;
 * *ttl_left_ms (may be NULL) the milliseconds until the key expires (-1 when it has none).
 * PL_DB when Redis is unreachable or the key holds something that is not an integer. */
pl_status cache_incr(cache *c, const char *key, int64_t by, int64_t ttl_ms, int64_t *value,
                     int64_t *ttl_left_ms);
/* GET + PTTL of a counter: PL_NOT_FOUND when absent (*value untouched), PL_DB as above. */
pl_status cache_counter(cache *c, const char *key, int64_t *value, int64_t *ttl_left_ms);
/* SET key val NX EX ttl_s: *was_set tells whether the key was absent (and is now set). */
pl_status cache_set_nx(cache *c, const char *key, const void *val, size_t len, int64_t ttl_s,
                       bool *was_set);

#endif
