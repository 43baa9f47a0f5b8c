/* authcache.c — session look-up cache (see authcache.h).
 *
 * Open addressing over a power-of-two table: the slot is taken from the token hash's first 16
 * hex digits (sha-256 output, so uniform) and a look-up probes at most AC_PROBE slots after it.
 * A put into a full window replaces the oldest entry of the window, so the table never needs
 * resizing or tombstones (a dropped entry is simply marked unused). */
#include "authcache.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define AC_PROBE 8

typedef struct ac_entry {
    bool used;
    char hash[65];
    int64_t at_ms;
    gw_user user;
} ac_entry;

struct authcache {
    pthread_mutex_t mu;
    size_t mask;
    int64_t ttl_ms;
    uint64_t hits, misses;
    uint64_t epoch; /* bumped by every eviction */
    ac_entry *slots;
};

pl_status authcache_create(size_t capacity, int64_t ttl_ms, authcache **out)
{
    *out = NULL;
    if (capacity == 0 || ttl_ms <= 0)
        return PL_ERRF(PL_INVALID, "session cache: capacity and TTL must be positive");
    size_t n = AC_PROBE;
    while (n < capacity)
        n *= 2;
    authcache *c = calloc(1, sizeof *c);
    if (!c || !(c->slots = calloc(n, sizeof *c->slots))) {
        free(c);
        return PL_ERRF(PL_NOMEM, "session cache: out of memory for %zu entries", n);
    }
    pthread_mutex_init(&c->mu, NULL);
    c->mask = n - 1;
    c->ttl_ms = ttl_ms;
    *out = c;
    return PL_OK;
}

void authcache_free(authcache *c)
{
    if (!c)
        return;
    pthread_mutex_destroy(&c->mu);
    free(c->slots);
    free(c);
}

/* The home slot of a hash: its first 16 hex digits as a number (0 for a malformed one, which
 * never matches anything stored since put checks the form too). */
static size_t home(const authcache *c, const char *h)
{
    uint64_t v = 0;
    for (int i = 0; i < 16 && h[i]; i++) {
        char ch = h[i];
        int d = ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : 0;
        v = v << 4 | (uint64_t)d;
    }
    return (size_t)v & c->mask;
}

static bool hash_ok(const char *h)
{
    return h && strlen(h) == 64;
}

bool authcache_get(authcache *c, const char *token_hash, int64_t now_ms, gw_user *u)
{
    if (!c || !hash_ok(token_hash))
        return false;
    bool hit = false;
    pthread_mutex_lock(&c->mu);
    size_t at = home(c, token_hash);
    for (int i = 0; i < AC_PROBE; i++) {
        ac_entry *e = &c->slots[(at + (size_t)i) & c->mask];
        if (e->used && strcmp(e->hash, token_hash) == 0) {
            if (now_ms - e->at_ms < c->ttl_ms) {
                *u = e->user;
                hit = true;
            } else {
                e->used = false;
            }
            break;
        }
    }
    if (hit)
        c->hits++;
    else
        c->misses++;
    pthread_mutex_unlock(&c->mu);
    return hit;
}

uint64_t authcache_epoch(authcache *c)
{
    if (!c)
        return 0;
    pthread_mutex_lock(&c->mu);
    uint64_t e = c->epoch;
    pthread_mutex_unlock(&c->mu);
    return e;
}

void authcache_put(authcache *c, const char *token_hash, const gw_user *u, int64_t now_ms,
                   uint64_t epoch)
{
    if (!c || !hash_ok(token_hash))
        return;
    pthread_mutex_lock(&c->mu);
    if (epoch != c->epoch) {
        pthread_mutex_unlock(&c->mu);
        return;
    }
    size_t at = home(c, token_hash);
    ac_entry *pick = NULL;
    for (int i = 0; i < AC_PROBE; i++) {
        ac_entry *e = &c->slots[(at + (size_t)i) & c->mask];
        if (e->used && strcmp(e->hash, token_hash) == 0) {
            pick = e;
            break;
        }
        if (!e->used) {
            if (!pick || pick->used)
                pick = e;
        } else if (!pick || (pick->used && e->at_ms < pick->at_ms)) {
            pick = e;
        }
    }
    pick->used = true;
    memcpy(pick->hash, token_hash, 65);
    pick->at_ms = now_ms;
    pick->user = *u;
    pthread_mutex_unlock(&c->mu);
}

void authcache_drop_token(authcache *c, const char *token_hash)
{
    if (!c || !hash_ok(token_hash))
        return;
    pthread_mutex_lock(&c->mu);
    c->epoch++;
    size_t at = home(c, token_hash);
    for (int i = 0; i < AC_PROBE; i++) {
        ac_entry *e = &c->slots[(at + (size_t)i) & c->mask];
        if (e->used && strcmp(e->hash, token_hash) == 0)
            e->used = false;
    }
    pthread_mutex_unlock(&c->mu);
}

void authcache_drop_user(authcache *c, const char *user_id)
{
    if (!c || !user_id)
        return;
    pthread_mutex_lock(&c->mu);
    c->epoch++;
    for (size_t i = 0; i <= c->mask; i++)
        if (c->slots[i].used && strcmp(c->slots[i].user.id, user_id) == 0)
            c->slots[i].used = false;
    pthread_mutex_unlock(&c->mu);
}

void authcache_clear(authcache *c)
{
    if (!c)
        return;
    pthread_mutex_lock(&c->mu);
    c->epoch++;
    for (size_t i = 0; i <= c->mask; i++)
        c->slots[i].used = false;
    pthread_mutex_unlock(&c->mu);
}

void authcache_get_stats(authcache *c, authcache_stats *st)
{
    memset(st, 0, sizeof *st);
    if (!c)
        return;
    pthread_mutex_lock(&c->mu);
    st->hits = c->hits;
    st->misses = c->misses;
    for (size_t i = 0; i <= c->mask; i++)
        st->entries += c->slots[i].used;
    pthread_mutex_unlock(&c->mu);
}
