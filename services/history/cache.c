/* cache.c — hiredis wrapper for parley-history (see cache.h). */
#include "cache.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <hiredis/hiredis.h>

struct cache {
    char host[256];
    int port;
    int db;
    redisContext *ctx;
    pthread_mutex_t mu;
};

pl_status cache_create(const char *url, cache **out)
{
    cache *c = calloc(1, sizeof *c);
    if (!c)
        return PL_ERRF(PL_NOMEM, "out of memory");
    const char *p = url;
    if (strncmp(p, "redis://", 8) == 0)
        p += 8;
    const char *colon = strrchr(p, ':');
    const char *slash = strchr(p, '/');
    if (!colon || colon == p || (slash && slash < colon) || (size_t)(colon - p) >= sizeof c->host) {
        free(c);
        return PL_ERRF(PL_INVALID, "redis URL '%s' is not redis://host:port[/db]", url);
    }
    memcpy(c->host, p, (size_t)(colon - p));
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (port <= 0 || port > 65535 || (*end && *end != '/')) {
        free(c);
        return PL_ERRF(PL_INVALID, "redis URL '%s': bad port", url);
    }
    c->port = (int)port;
    if (*end == '/') {
        long db = strtol(end + 1, &end, 10);
        if (db < 0 || db > 1024 || *end) {
            free(c);
            return PL_ERRF(PL_INVALID, "redis URL '%s': bad database number", url);
        }
        c->db = (int)db;
    }
    pthread_mutex_init(&c->mu, NULL);
    *out = c;
    return PL_OK;
}

void cache_destroy(cache *c)
{
    if (!c)
        return;
    if (c->ctx)
        redisFree(c->ctx);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

/* Drops a broken connection; called with the mutex held. */
static pl_status fail_locked(cache *c, const char *what)
{
    char msg[256];
    snprintf(msg, sizeof msg, "%s", c->ctx && c->ctx->err ? c->ctx->errstr : what);
    if (c->ctx)
        redisFree(c->ctx);
    c->ctx = NULL;
    return PL_ERRF(PL_DB, "redis %s:%d: %s", c->host, c->port, msg);
}

static pl_status ensure_locked(cache *c)
{
    if (c->ctx)
        return PL_OK;
    struct timeval tv = {1, 0};
    c->ctx = redisConnectWithTimeout(c->host, c->port, tv);
    if (!c->ctx)
        return PL_ERRF(PL_NOMEM, "out of memory");
    if (c->ctx->err)
        return fail_locked(c, "cannot connect");
    redisSetTimeout(c->ctx, tv);
    if (c->db) {
        redisReply *r = redisCommand(c->ctx, "SELECT %d", c->db);
        bool ok = r && r->type == REDIS_REPLY_STATUS;
        if (r)
            freeReplyObject(r);
        if (!ok)
            return fail_locked(c, "SELECT failed");
    }
    return PL_OK;
}

/* Runs a command under the mutex; on a transport error the connection is dropped. */
static redisReply *command_locked(cache *c, pl_status *s, const char *fmt, ...)
{
    *s = ensure_locked(c);
    if (*s != PL_OK)
        return NULL;
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(c->ctx, fmt, ap);
    va_end(ap);
    if (!r) {
        *s = fail_locked(c, "connection lost");
        return NULL;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        *s = PL_ERRF(PL_DB, "redis: %s", r->str);
        freeReplyObject(r);
        return NULL;
    }
    return r;
}

pl_status cache_check(cache *c)
{
    pl_status s;
    pthread_mutex_lock(&c->mu);
    redisReply *r = command_locked(c, &s, "PING");
    if (r)
        freeReplyObject(r);
    pthread_mutex_unlock(&c->mu);
    return s;
}

pl_status cache_get(cache *c, const char *key, char **val, size_t *len)
{
    pl_status s;
    pthread_mutex_lock(&c->mu);
    redisReply *r = command_locked(c, &s, "GET %s", key);
    pthread_mutex_unlock(&c->mu);
    if (!r)
        return s;
    if (r->type != REDIS_REPLY_STRING) {
        freeReplyObject(r);
        return PL_NOT_FOUND;
    }
    *val = malloc(r->len + 1);
    if (!*val) {
        freeReplyObject(r);
        return PL_ERRF(PL_NOMEM, "out of memory");
    }
    memcpy(*val, r->str, r->len);
    (*val)[r->len] = '\0';
    *len = r->len;
    freeReplyObject(r);
    return PL_OK;
}

pl_status cache_set(cache *c, const char *key, const void *val, size_t len, int64_t ttl_s)
{
    pl_status s;
    pthread_mutex_lock(&c->mu);
    redisReply *r =
        ttl_s > 0 ? command_locked(c, &s, "SET %s %b EX %lld", key, val, len, (long long)ttl_s)
                  : command_locked(c, &s, "SET %s %b", key, val, len);
    pthread_mutex_unlock(&c->mu);
    if (r)
        freeReplyObject(r);
    return s;
}

pl_status cache_del(cache *c, const char *key)
{
    pl_status s;
    pthread_mutex_lock(&c->mu);
    redisReply *r = command_locked(c, &s, "DEL %s", key);
    pthread_mutex_unlock(&c->mu);
    if (r)
        freeReplyObject(r);
    return s;
}

/* --- counters (added for accounts: rate limits and quotas) ----------------------------------- */

/* PTTL of `key` under the mutex; -1 when it has no expiry or is absent (-2 from Redis). */
static pl_status pttl_locked(cache *c, const char *key, int64_t *ttl_left_ms)
{
    pl_status s;
    redisReply *r = command_locked(c, &s, "PTTL %s", key);
    if (!r)
        return s;
    if (ttl_left_ms)
        *ttl_left_ms = r->type == REDIS_REPLY_INTEGER && r->integer >= 0 ? r->integer : -1;
    freeReplyObject(r);
    return PL_OK;
}

pl_status cache_incr(cache *c, const char *key, int64_t by, int64_t ttl_ms, int64_t *value,
                     int64_t *ttl_left_ms)
{
    pl_status s;
    pthread_mutex_lock(&c->mu);
    redisReply *r = command_locked(c, &s, "INCRBY %s %lld", key, (long long)by);
    if (r) {
        if (r->type == REDIS_REPLY_INTEGER) {
            *value = r->integer;
        } else {
            s = PL_ERRF(PL_DB, "redis: INCRBY %s did not answer an integer", key);
        }
        freeReplyObject(r);
    }
    if (s == PL_OK && ttl_ms > 0) {
        /* Two round trips instead of a script: a crash between them leaves a key without
         * expiry, which the next hit's NX expiry repairs. */
        r = command_locked(c, &s, "PEXPIRE %s %lld NX", key, (long long)ttl_ms);
        if (r)
            freeReplyObject(r);
    }
    if (s == PL_OK && ttl_left_ms)
        s = pttl_locked(c, key, ttl_left_ms);
    pthread_mutex_unlock(&c->mu);
    return s;
}

pl_status cache_counter(cache *c, const char *key, int64_t *value, int64_t *ttl_left_ms)
{
    pl_status s;
    pthread_mutex_lock(&c->mu);
    redisReply *r = command_locked(c, &s, "GET %s", key);
    if (r) {
        if (r->type == REDIS_REPLY_NIL) {
            s = PL_NOT_FOUND;
        } else if (r->type == REDIS_REPLY_STRING) {
            char *end;
            long long v = strtoll(r->str, &end, 10);
            if (end == r->str || *end)
                s = PL_ERRF(PL_DB, "redis: %s is not a counter", key);
            else
                *value = v;
        } else {
            s = PL_ERRF(PL_DB, "redis: GET %s: unexpected reply", key);
        }
        freeReplyObject(r);
    }
    if (s == PL_OK && ttl_left_ms)
        s = pttl_locked(c, key, ttl_left_ms);
    pthread_mutex_unlock(&c->mu);
    return s;
}

pl_status cache_set_nx(cache *c, const char *key, const void *val, size_t len, int64_t ttl_s,
                       bool *was_set)
{
    pl_status s;
    pthread_mutex_lock(&c->mu);
    redisReply *r =
        ttl_s > 0 ? command_locked(c, &s, "SET %s %b NX EX %lld", key, val, len, (long long)ttl_s)
                  : command_locked(c, &s, "SET %s %b NX", key, val, len);
    pthread_mutex_unlock(&c->mu);
    if (r) {
        *was_set = r->type == REDIS_REPLY_STATUS;
        freeReplyObject(r);
    }
    return s;
}
