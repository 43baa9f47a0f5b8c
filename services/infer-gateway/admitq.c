/* admitq.c — bounded, priority-classed, per-user round-robin queue (see admitq.h).
 *
 * Layout: per class, a circular list of user buckets; each bucket a FIFO of jobs. Popping takes
 * the head job of the class's current bucket and advances the class cursor to the next bucket,
 * so users alternate. Lookups by request id (cancel) and by deadline scan everything: queues
 * hold at most a few hundred jobs, and both events are rare next to push/pop. */
#include "admitq.h"

#include <stdlib.h>
#include <string.h>

typedef struct aq_user {
    char user_id[128];
    aq_job *head, *tail;
    struct aq_user *next; /* circular within the class */
} aq_user;

struct aq_queue {
    size_t capacity, len;
    size_t class_len[AQ_CLASSES];
    aq_user *cursor[AQ_CLASSES]; /* the bucket whose turn it is; NULL when the class is empty */
};

aq_queue *aq_create(size_t capacity)
{
    aq_queue *q = calloc(1, sizeof *q);
    if (q)
        q->capacity = capacity;
    return q;
}

void aq_job_free(aq_job *j)
{
    if (!j)
        return;
    free(j->payload);
    free(j);
}

void aq_destroy(aq_queue *q)
{
    if (!q)
        return;
    aq_job *j;
    while ((j = aq_pop(q)))
        aq_job_free(j);
    free(q);
}

size_t aq_len(const aq_queue *q)
{
    return q->len;
}

size_t aq_capacity(const aq_queue *q)
{
    return q->capacity;
}

static int clamp_class(int p)
{
    return p < 0 ? 0 : p >= AQ_CLASSES ? AQ_CLASSES - 1 : p;
}

pl_status aq_push(aq_queue *q, aq_job *j)
{
    if (q->len >= q->capacity)
        return PL_ERRF(PL_OVERLOADED, "queue full (%zu waiting)", q->len);
    int c = clamp_class(j->priority);
    aq_user *u = q->cursor[c];
    if (u) {
        aq_user *it = u;
        do {
            if (strcmp(it->user_id, j->user_id) == 0)
                break;
            it = it->next;
        } while (it != u);
        u = strcmp(it->user_id, j->user_id) == 0 ? it : NULL;
    }
    if (!u) {
        u = calloc(1, sizeof *u);
        if (!u)
            return PL_ERRF(PL_NOMEM, "out of memory");
        memcpy(u->user_id, j->user_id, sizeof u->user_id);
        if (!q->cursor[c]) {
            u->next = u;
            q->cursor[c] = u;
        } else {
            /* Join just before the cursor: a newcomer waits one full round, like everyone. */
            aq_user *prev = q->cursor[c];
            while (prev->next != q->cursor[c])
                prev = prev->next;
            prev->next = u;
            u->next = q->cursor[c];
        }
    }
    j->next = NULL;
    if (u->tail)
        u->tail->next = j;
    else
        u->head = j;
    u->tail = j;
    q->len++;
    q->class_len[c]++;
    return PL_OK;
}

/* Unlinks bucket `u` from class `c` (it must be empty) and frees it. */
static void drop_user(aq_queue *q, int c, aq_user *u)
{
    if (u->next == u) {
        q->cursor[c] = NULL;
    } else {
        aq_user *prev = u;
        while (prev->next != u)
            prev = prev->next;
        prev->next = u->next;
        if (q->cursor[c] == u)
            q->cursor[c] = u->next;
    }
    free(u);
}

aq_job *aq_pop(aq_queue *q)
{
    for (int c = AQ_CLASSES - 1; c >= 0; c--) {
        aq_user *u = q->cursor[c];
        if (!u)
            continue;
        aq_job *j = u->head;
        u->head = j->next;
        if (!u->head)
            u->tail = NULL;
        q->cursor[c] = u->next;
        if (!u->head)
            drop_user(q, c, u);
        q->len--;
        q->class_len[c]--;
        j->next = NULL;
        return j;
    }
    return NULL;
}

/* Removes the first job for which match() holds; NULL when none. */
static aq_job *remove_if(aq_queue *q, int (*match)(const aq_job *, const void *), const void *arg)
{
    for (int c = 0; c < AQ_CLASSES; c++) {
        aq_user *start = q->cursor[c];
        if (!start)
            continue;
        aq_user *u = start;
        do {
            aq_job *prev = NULL;
            for (aq_job *j = u->head; j; prev = j, j = j->next) {
                if (!match(j, arg))
                    continue;
                if (prev)
                    prev->next = j->next;
                else
                    u->head = j->next;
                if (u->tail == j)
                    u->tail = prev;
                j->next = NULL;
                q->len--;
                q->class_len[c]--;
                if (!u->head)
                    drop_user(q, c, u);
                return j;
            }
            u = u->next;
        } while (u != start);
    }
    return NULL;
}

static int match_id(const aq_job *j, const void *arg)
{
    return strcmp(j->request_id, arg) == 0;
}

static int match_expired(const aq_job *j, const void *arg)
{
    int64_t now = *(const int64_t *)arg;
    return j->deadline_ms > 0 && j->deadline_ms <= now;
}

aq_job *aq_remove(aq_queue *q, const char *request_id)
{
    return remove_if(q, match_id, request_id);
}

aq_job *aq_pop_expired(aq_queue *q, int64_t now_ms)
{
    return remove_if(q, match_expired, &now_ms);
}

size_t aq_ahead(const aq_queue *q, int priority)
{
    size_t n = 0;
    for (int c = clamp_class(priority); c < AQ_CLASSES; c++)
        n += q->class_len[c];
    return n;
}
