/* arena.c — the per-request allocation arena of history operations (see ops.h). A linked list
 * of blocks; freed in one go after the reply is sent. Single-threaded per request. */
#include <stdlib.h>
#include <string.h>

#include "ops.h"

typedef struct hs_block {
    struct hs_block *next;
    max_align_t data[];
} hs_block;

struct hs_arena {
    hs_block *head;
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
    free(a);
}

void *hs_alloc(hs_arena *a, size_t n)
{
    hs_block *b = calloc(1, sizeof *b + (n ? n : 1));
    if (!b)
        return NULL;
    b->next = a->head;
    a->head = b;
    return b->data;
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
