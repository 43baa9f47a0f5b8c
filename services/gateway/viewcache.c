/* viewcache.c — opened conversations as JSON text, by version (see viewcache.h).
 *
 * A doubly linked list in recency order (head = most recent) and a linear search over it, so
 * the number of entries is capped (VC_MAX_ENTRIES) besides the bytes: without the cap 64 MiB of
 * small conversations would be tens of thousands of entries scanned under the mutex on every
 * open. A look-up compares two short ids per entry, a few microseconds at the cap; a hash index
 * is the next step if a gateway should ever keep many more. */
#include "viewcache.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define VC_ID_MAX      64
#define VC_MAX_ENTRIES 2048

typedef struct vc_entry {
    struct vc_entry *prev, *next;
    char user[VC_ID_MAX + 1], conv[VC_ID_MAX + 1], ver[VC_ID_MAX + 1];
    size_t len;
    char *text;
} vc_entry;

struct viewcache {
    pthread_mutex_t mu;
    size_t budget, bytes, entries;
    vc_entry *head, *tail;
};

pl_status viewcache_create(size_t budget_bytes, viewcache **out)
{
    *out = NULL;
    if (budget_bytes == 0)
        return PL_ERRF(PL_INVALID, "view cache: the budget must be positive");
    viewcache *c = calloc(1, sizeof *c);
    if (!c)
        return PL_ERRF(PL_NOMEM, "view cache: out of memory");
    pthread_mutex_init(&c->mu, NULL);
    c->budget = budget_bytes;
    *out = c;
    return PL_OK;
}

static void unlink_entry(viewcache *c, vc_entry *e)
{
    if (e->prev)
        e->prev->next = e->next;
    else
        c->head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        c->tail = e->prev;
    e->prev = e->next = NULL;
}

static void push_front(viewcache *c, vc_entry *e)
{
    e->prev = NULL;
    e->next = c->head;
    if (c->head)
        c->head->prev = e;
    c->head = e;
    if (!c->tail)
        c->tail = e;
}

static void drop(viewcache *c, vc_entry *e)
{
    unlink_entry(c, e);
    c->bytes -= e->len;
    c->entries--;
    free(e->text);
    free(e);
}

void viewcache_free(viewcache *c)
{
    if (!c)
        return;
    while (c->head)
        drop(c, c->head);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

static vc_entry *find(viewcache *c, const char *user, const char *conv)
{
    for (vc_entry *e = c->head; e; e = e->next)
        if (strcmp(e->conv, conv) == 0 && strcmp(e->user, user) == 0)
            return e;
    return NULL;
}

bool viewcache_version(viewcache *c, const char *user, const char *conv, char *ver, size_t cap)
{
    if (!c || !user || !conv)
        return false;
    pthread_mutex_lock(&c->mu);
    vc_entry *e = find(c, user, conv);
    if (e)
        snprintf(ver, cap, "%s", e->ver);
    pthread_mutex_unlock(&c->mu);
    return e != NULL;
}

char *viewcache_take(viewcache *c, const char *user, const char *conv, const char *ver, size_t *len)
{
    if (!c || !user || !conv || !ver)
        return NULL;
    char *out = NULL;
    pthread_mutex_lock(&c->mu);
    vc_entry *e = find(c, user, conv);
    if (e && strcmp(e->ver, ver) == 0 && (out = malloc(e->len + 1))) {
        memcpy(out, e->text, e->len + 1);
        *len = e->len;
        unlink_entry(c, e);
        push_front(c, e);
    }
    pthread_mutex_unlock(&c->mu);
    return out;
}

void viewcache_put(viewcache *c, const char *user, const char *conv, const char *ver,
                   const char *text, size_t len)
{
    if (!c || !user || !conv || !ver || !ver[0] || strlen(user) > VC_ID_MAX ||
        strlen(conv) > VC_ID_MAX || strlen(ver) > VC_ID_MAX || len > c->budget / 4)
        return;
    vc_entry *e = calloc(1, sizeof *e);
    char *copy = malloc(len + 1);
    if (!e || !copy) {
        free(e);
        free(copy);
        return;
    }
    memcpy(copy, text, len);
    copy[len] = '\0';
    snprintf(e->user, sizeof e->user, "%s", user);
    snprintf(e->conv, sizeof e->conv, "%s", conv);
    snprintf(e->ver, sizeof e->ver, "%s", ver);
    e->text = copy;
    e->len = len;
    pthread_mutex_lock(&c->mu);
    vc_entry *old = find(c, user, conv);
    if (old)
        drop(c, old);
    while (c->tail && (c->bytes + len > c->budget || c->entries >= VC_MAX_ENTRIES))
        drop(c, c->tail);
    push_front(c, e);
    c->bytes += len;
    c->entries++;
    pthread_mutex_unlock(&c->mu);
}

void viewcache_get_stats(viewcache *c, viewcache_stats *st)
{
    memset(st, 0, sizeof *st);
    if (!c)
        return;
    pthread_mutex_lock(&c->mu);
    st->entries = c->entries;
    st->bytes = c->bytes;
    pthread_mutex_unlock(&c->mu);
}
