/* convtree.c — a conversation's message tree in memory (see convtree.h).
 *
 * Building: the rows are copied into one array of nodes plus one block for all strings; an
 * index sorted by id resolves parents (so a parent that happens to sort after its child by
 * time is still found). Siblings are numbered in row order, which is creation order. The
 * "newest child" of each node is its child that comes last in row order; following it down
 * from a message reaches the end of that message's most recent branch. */
#include "convtree.h"

#include <stdlib.h>
#include <string.h>

struct ct_tree {
    ct_node *nodes;
    size_t n;
    int *by_id; /* node indices sorted by id */
    char *pool; /* every node's strings, in one block */
};

static char *pool_add(char **w, const char *s)
{
    size_t k = strlen(s ? s : "");
    char *d = *w;
    memcpy(d, s ? s : "", k + 1);
    *w += k + 1;
    return d;
}

static int cmp_ids(const ct_tree *t, int a, int b)
{
    return strcmp(t->nodes[a].row.id, t->nodes[b].row.id);
}

/* A merge sort of node indices by id (qsort has no context argument in C11). */
static void sort_ids(int *v, int *tmp, size_t n, const ct_tree *t)
{
    if (n < 2)
        return;
    size_t h = n / 2;
    sort_ids(v, tmp, h, t);
    sort_ids(v + h, tmp, n - h, t);
    size_t i = 0, j = h, k = 0;
    while (i < h && j < n)
        tmp[k++] = cmp_ids(t, v[i], v[j]) <= 0 ? v[i++] : v[j++];
    while (i < h)
        tmp[k++] = v[i++];
    while (j < n)
        tmp[k++] = v[j++];
    memcpy(v, tmp, n * sizeof *v);
}

int ct_find(const ct_tree *t, const char *id)
{
    if (!t || !id || !*id)
        return -1;
    size_t lo = 0, hi = t->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(t->nodes[t->by_id[mid]].row.id, id);
        if (c == 0)
            return t->by_id[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -1;
}

void ct_free(ct_tree *t)
{
    if (!t)
        return;
    free(t->pool);
    free(t->nodes);
    free(t->by_id);
    free(t);
}

pl_status ct_build(const ct_row *rows, size_t n, ct_tree **out)
{
    ct_tree *t = calloc(1, sizeof *t);
    if (!t)
        return PL_ERRF(PL_NOMEM, "out of memory");
    size_t cap = n ? n : 1;
    t->nodes = calloc(cap, sizeof *t->nodes);
    t->by_id = calloc(cap, sizeof *t->by_id);
    /* One block for every string (a conversation of 1,000 messages was 1,000 mallocs). */
    size_t need = 1;
    for (size_t i = 0; i < n; i++) {
        const ct_row *r = &rows[i];
        const char *strs[] = {r->id, r->parent_id, r->content, r->model, r->request_id, r->error};
        for (size_t k = 0; k < sizeof strs / sizeof strs[0]; k++)
            need += strlen(strs[k] ? strs[k] : "") + 1;
    }
    t->pool = malloc(need);
    int *tmp = calloc(cap, sizeof *tmp);
    uint32_t *child_count = calloc(cap, sizeof *child_count);
    if (!t->nodes || !t->by_id || !t->pool || !tmp || !child_count) {
        free(tmp);
        free(child_count);
        ct_free(t);
        return PL_ERRF(PL_NOMEM, "out of memory");
    }
    char *w = t->pool;
    for (size_t i = 0; i < n; i++) {
        const ct_row *r = &rows[i];
        ct_node *nd = &t->nodes[i];
        nd->row = *r;
        nd->row.id = pool_add(&w, r->id);
        nd->row.parent_id = pool_add(&w, r->parent_id);
        nd->row.content = pool_add(&w, r->content);
        nd->row.model = pool_add(&w, r->model);
        nd->row.request_id = pool_add(&w, r->request_id);
        nd->row.error = pool_add(&w, r->error);
        nd->newest_child = -1;
        t->by_id[i] = (int)i;
    }
    t->n = n;
    sort_ids(t->by_id, tmp, n, t);
    free(tmp);

    /* Parents, newest children and sibling numbers (row order = creation order); counters per
     * parent, and one for the roots. */
    uint32_t root_count = 0;
    for (size_t i = 0; i < n; i++) {
        ct_node *nd = &t->nodes[i];
        nd->parent = ct_find(t, nd->row.parent_id);
        if (nd->parent == (int)i)
            nd->parent = -1; /* a self-parent would loop; treat it as a root */
        if (nd->parent >= 0) {
            nd->sib_index = ++child_count[nd->parent];
            t->nodes[nd->parent].newest_child = (int)i;
        } else {
            nd->sib_index = ++root_count;
        }
    }
    for (size_t i = 0; i < n; i++) {
        ct_node *nd = &t->nodes[i];
        nd->sib_count = nd->parent >= 0 ? child_count[nd->parent] : root_count;
    }
    free(child_count);
    *out = t;
    return PL_OK;
}

pl_status ct_load(PGconn *c, const char *user, const char *conv, ct_tree **out)
{
    static const char sql[] =
        "SELECT id, coalesce(parent_id, ''), role, content, status, model,"
        " coalesce(request_id, ''), error, feedback, prompt_tokens, completion_tokens,"
        " (extract(epoch FROM created_at) * 1000)::bigint"
        " FROM messages WHERE user_id = $1 AND conversation_id = $2"
        " ORDER BY created_at, id";
    const char *p[] = {user, conv};
    PGresult *res = NULL;
    pl_status s = db_exec(c, sql, 2, p, &res);
    if (s != PL_OK)
        return s;
    int n = PQntuples(res);
    ct_row *rows = calloc(n ? (size_t)n : 1, sizeof *rows);
    if (!rows) {
        PQclear(res);
        return PL_ERRF(PL_NOMEM, "out of memory");
    }
    for (int i = 0; i < n; i++) {
        ct_row *r = &rows[i];
        r->id = PQgetvalue(res, i, 0);
        r->parent_id = PQgetvalue(res, i, 1);
        r->role = atoi(PQgetvalue(res, i, 2));
        r->content = PQgetvalue(res, i, 3);
        r->status = atoi(PQgetvalue(res, i, 4));
        r->model = PQgetvalue(res, i, 5);
        r->request_id = PQgetvalue(res, i, 6);
        r->error = PQgetvalue(res, i, 7);
        r->feedback = atoi(PQgetvalue(res, i, 8));
        r->prompt_tokens = (uint32_t)strtoul(PQgetvalue(res, i, 9), NULL, 10);
        r->completion_tokens = (uint32_t)strtoul(PQgetvalue(res, i, 10), NULL, 10);
        r->created_ms = strtoll(PQgetvalue(res, i, 11), NULL, 10);
    }
    s = ct_build(rows, (size_t)n, out);
    free(rows);
    PQclear(res);
    return s;
}

size_t ct_count(const ct_tree *t)
{
    return t ? t->n : 0;
}

const ct_node *ct_node_at(const ct_tree *t, int i)
{
    return &t->nodes[i];
}

size_t ct_chain(const ct_tree *t, int leaf, int *out, size_t cap, int *truncated)
{
    if (truncated)
        *truncated = 0;
    if (leaf < 0 || cap == 0)
        return 0;
    /* Walk up, filling out[] from its end; the depth is bounded by n, so a corrupt cycle
     * cannot loop forever. */
    size_t total = 0;
    for (int i = leaf; i >= 0 && total <= t->n; i = t->nodes[i].parent) {
        if (total < cap)
            out[cap - 1 - total] = i;
        total++;
    }
    size_t k = total < cap ? total : cap;
    if (truncated)
        *truncated = total > cap;
    if (k < cap)
        memmove(out, out + (cap - k), k * sizeof *out);
    return k;
}

int ct_newest_below(const ct_tree *t, int i)
{
    for (size_t steps = 0; i >= 0 && t->nodes[i].newest_child >= 0 && steps <= t->n; steps++)
        i = t->nodes[i].newest_child;
    return i;
}

int ct_on_chain(const ct_tree *t, int leaf, int i)
{
    size_t steps = 0;
    for (int k = leaf; k >= 0 && steps <= t->n; k = t->nodes[k].parent, steps++)
        if (k == i)
            return 1;
    return 0;
}

Parley__V1__Message *ct_message(const ct_tree *t, int i, const char *conversation_id, hs_arena *a)
{
    const ct_node *nd = &t->nodes[i];
    Parley__V1__Message *m = hs_alloc(a, sizeof *m);
    Parley__V1__Usage *u = hs_alloc(a, sizeof *u);
    if (!m || !u)
        return NULL;
    parley__v1__message__init(m);
    parley__v1__usage__init(u);
    m->id = hs_strdup(a, nd->row.id);
    m->conversation_id = hs_strdup(a, conversation_id);
    m->parent_id = hs_strdup(a, nd->row.parent_id);
    m->role = (Parley__V1__Role)nd->row.role;
    m->content = hs_strdup(a, nd->row.content);
    m->status = (Parley__V1__MessageStatus)nd->row.status;
    m->model = hs_strdup(a, nd->row.model);
    m->request_id = hs_strdup(a, nd->row.request_id);
    m->sibling_index = nd->sib_index;
    m->sibling_count = nd->sib_count;
    m->created_ms = nd->row.created_ms;
    u->prompt_tokens = nd->row.prompt_tokens;
    u->completion_tokens = nd->row.completion_tokens;
    m->usage = u;
    m->error = hs_strdup(a, nd->row.error);
    m->feedback = nd->row.feedback;
    if (nd->sib_count > 1) {
        /* The siblings in row (creation) order: the order sib_index counts in. O(n) per
         * message with versions, which only edited or regenerated messages have. */
        m->sibling_ids = hs_alloc(a, nd->sib_count * sizeof *m->sibling_ids);
        if (!m->sibling_ids)
            return NULL;
        for (size_t j = 0; j < t->n && m->n_sibling_ids < nd->sib_count; j++)
            if (t->nodes[j].parent == nd->parent)
                m->sibling_ids[m->n_sibling_ids++] = hs_strdup(a, t->nodes[j].row.id);
    }
    if (!m->id || !m->conversation_id || !m->parent_id || !m->content || !m->model ||
        !m->request_id || !m->error)
        return NULL;
    return m;
}
