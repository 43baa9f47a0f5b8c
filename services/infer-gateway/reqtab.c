/* reqtab.c — chained hash table of admitted requests (see reqtab.h). FNV-1a over the id. */
#include "reqtab.h"

#include <stdlib.h>
#include <string.h>

struct rt_table {
    rt_entry **b;
    size_t nb, len;
};

static size_t hash(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return (size_t)h;
}

rt_table *rt_create(size_t buckets)
{
    rt_table *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->nb = buckets ? buckets : 1024;
    t->b = calloc(t->nb, sizeof *t->b);
    if (!t->b) {
        free(t);
        return NULL;
    }
    return t;
}

void rt_destroy(rt_table *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->nb; i++) {
        rt_entry *e = t->b[i];
        while (e) {
            rt_entry *n = e->next;
            free(e);
            e = n;
        }
    }
    free(t->b);
    free(t);
}

rt_entry *rt_find(rt_table *t, const char *id)
{
    for (rt_entry *e = t->b[hash(id) % t->nb]; e; e = e->next)
        if (strcmp(e->request_id, id) == 0)
            return e;
    return NULL;
}

rt_entry *rt_add(rt_table *t, const char *id)
{
    if (strlen(id) >= sizeof(((rt_entry *)0)->request_id) || rt_find(t, id))
        return NULL;
    rt_entry *e = calloc(1, sizeof *e);
    if (!e)
        return NULL;
    strcpy(e->request_id, id);
    size_t h = hash(id) % t->nb;
    e->next = t->b[h];
    t->b[h] = e;
    t->len++;
    return e;
}

bool rt_remove(rt_table *t, const char *id)
{
    for (rt_entry **p = &t->b[hash(id) % t->nb]; *p; p = &(*p)->next) {
        if (strcmp((*p)->request_id, id) == 0) {
            rt_entry *e = *p;
            *p = e->next;
            free(e);
            t->len--;
            return true;
        }
    }
    return false;
}

size_t rt_len(const rt_table *t)
{
    return t->len;
}

void rt_sweep(rt_table *t, bool (*fn)(rt_entry *e, void *arg), void *arg)
{
    for (size_t i = 0; i < t->nb; i++) {
        rt_entry **p = &t->b[i];
        while (*p) {
            rt_entry *e = *p;
            if (fn(e, arg)) {
                *p = e->next;
                free(e);
                t->len--;
            } else {
                p = &e->next;
            }
        }
    }
}
