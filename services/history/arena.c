/* arena.c — the per-request allocation arena of history operations (see ops.h).
 *
 * A bump allocator over a linked list of zeroed blocks: small allocations are carved from the
 * current block (HS_BLOCK bytes), one larger than HS_BIG gets a block of its own, kept behind
 * the current one so the current block's free space is not lost. A conversation of 1,000
 * messages makes about ten thousand allocations (bench/bench_history.py), one calloc each
 * before; now a few dozen. Everything is freed in one go after the reply is sent.
 * Single-threaded per request; no allocation is ever freed or reused on its own, so memory
 * handed out is zero as calloc left it. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"

#define HS_BLOCK ((size_t)16384) /* bytes of data in an ordinary block */
#define HS_BIG   ((size_t)4096)  /* larger requests get a block of their own */

typedef struct hs_block {
    struct hs_block *next;
    size_t used, cap; /* bytes of data[] handed out / available */
    max_align_t data[];
} hs_block;

struct hs_arena {
    hs_block *head; /* the block small allocations come from (NULL before the first) */
    char *prefix;   /* hs_reply_prefix: owned, malloc'd */
    size_t prefix_len;
};

hs_arena *hs_arena_create(void)
{
    return calloc(1, sizeof(hs_arena));
}

void hs_arena_free(hs_arena *a)
{
    if (!a)
        return;
    while (a->head) {
        hs_block *b = a->head;
        a->head = b->next;
        free(b);
    }
    free(a->prefix);
    free(a);
}

void hs_reply_prefix(hs_arena *a, char *buf, size_t len)
{
    free(a->prefix);
    a->prefix = buf;
    a->prefix_len = buf ? len : 0;
}

const char *hs_reply_prefix_get(const hs_arena *a, size_t *len)
{
    *len = a ? a->prefix_len : 0;
    return a ? a->prefix : NULL;
}

static hs_block *new_block(size_t cap)
{
    if (cap > SIZE_MAX - sizeof(hs_block))
        return NULL;
    hs_block *b = calloc(1, sizeof *b + cap);
    if (b)
        b->cap = cap;
    return b;
}

void *hs_alloc(hs_arena *a, size_t n)
{
    const size_t align = _Alignof(max_align_t);
    if (n == 0)
        n = 1;
    if (n > SIZE_MAX - align)
        return NULL;
    n = (n + align - 1) / align * align;
    if (n > HS_BIG) {
        hs_block *b = new_block(n);
        if (!b)
            return NULL;
        b->used = n;   /* full: never a current block with room */
        if (a->head) { /* behind the current block, which keeps serving small requests */
            b->next = a->head->next;
            a->head->next = b;
        } else {
            a->head = b;
        }
        return b->data;
    }
    hs_block *h = a->head;
    if (!h || h->cap - h->used < n) {
        if (!(h = new_block(HS_BLOCK)))
            return NULL;
        h->next = a->head;
        a->head = h;
    }
    void *p = (char *)h->data + h->used;
    h->used += n;
    return p;
}

char *hs_strndup(hs_arena *a, const char *s, size_t n)
{
    char *d = hs_alloc(a, n + 1);
    if (d && n)
        memcpy(d, s, n);
    return d;
}

char *hs_strdup(hs_arena *a, const char *s)
{
    return s ? hs_strndup(a, s, strlen(s)) : hs_strndup(a, "", 0);
}

char *hs_new_id(hs_arena *a)
{
    char *id = hs_alloc(a, 33);
    if (id)
        dmn_random_id(id);
    return id;
}
