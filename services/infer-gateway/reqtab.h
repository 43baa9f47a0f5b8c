/* reqtab.h — the infer-gateway's table of requests it admitted and has not seen finish.
 *
 * Keyed by request id (chained hash table). Each entry records where the request is (queued,
 * dispatched to JetStream, started on a worker, streaming tokens from a worker) so that a
 * worker's death, a deadline or a cancel can be acted on per request. Not thread-safe: the
 * infer-gateway holds its scheduler mutex around every call. Entries are owned by the table;
 * pointers returned stay valid until the entry is removed. */
#ifndef PARLEY_IGW_REQTAB_H
#define PARLEY_IGW_REQTAB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum rt_state { RT_QUEUED = 0, RT_DISPATCHED, RT_STARTED, RT_STREAMING } rt_state;

typedef struct rt_entry {
    char request_id[64];
    char model[128];
    char delta_subject[192];
    char worker_id[128];
    rt_state state;
    char user_id[128];
    char conversation_id[64];
    char message_id[64];
    int64_t state_ms;    /* monotonic time of the last state change */
    int64_t deadline_ms; /* monotonic; 0 = none */
    struct rt_entry *next;
} rt_entry;

typedef struct rt_table rt_table;

rt_table *rt_create(size_t buckets); /* NULL when out of memory */
void rt_destroy(rt_table *t);        /* accepts NULL */
/* A new entry for this id (zeroed but for the id), or NULL when out of memory or present. */
rt_entry *rt_add(rt_table *t, const char *request_id);
rt_entry *rt_find(rt_table *t, const char *request_id);
/* Removes and frees the entry; false when absent. */
bool rt_remove(rt_table *t, const char *request_id);
size_t rt_len(const rt_table *t);
/* Calls fn for every entry; fn returns true to remove (and free) the entry. */
void rt_sweep(rt_table *t, bool (*fn)(rt_entry *e, void *arg), void *arg);

#endif
