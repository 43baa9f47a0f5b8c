/* convtree.h — one conversation's message tree in memory: branches, sibling positions, the
 * chain from the root to a leaf, and the newest leaf under a message.
 *
 * Messages form a tree through parent_id (roots have none); regenerations and edits are
 * siblings. Rather than walking the tree in SQL one level at a time, the history ops load the
 * conversation's messages in one index scan (messages_conv_order: user_id, conversation_id,
 * created_at, id) and work on them here: a conversation of 1,000 messages is one query of a few
 * milliseconds, and every question below is answered in O(n) or O(log n).
 *
 * Ownership: a ct_tree owns copies of everything it was built from; ct_free releases it.
 * Single-threaded (one op at a time owns a tree). */
#ifndef PARLEY_HISTORY_CONVTREE_H
#define PARLEY_HISTORY_CONVTREE_H

#include <stddef.h>
#include <stdint.h>

#include <libpq-fe.h>

#include "ops.h"
#include "parley.pb-c.h"
#include "status.h"

/* One message as stored (strings borrowed from the caller while building). */
typedef struct ct_row {
    const char *id;
    const char *parent_id; /* "" for a root */
    int role;              /* Parley__V1__Role */
    const char *content;
    int status; /* Parley__V1__MessageStatus */
    const char *model;
    const char *request_id;
    const char *error;
    int feedback;
    uint32_t prompt_tokens, completion_tokens;
    int64_t created_ms;
} ct_row;

typedef struct ct_node {
    ct_row row;         /* strings owned by the tree */
    int parent;         /* index, -1 for a root (or a parent that is missing) */
    uint32_t sib_index; /* 1-based position among its siblings, by creation */
    uint32_t sib_count; /* siblings including itself */
    int newest_child;   /* index of its most recent child, -1 for a leaf */
} ct_node;

typedef struct ct_tree ct_tree;

/* Builds a tree from rows in creation order (oldest first). Copies everything. PL_NOMEM on
 * allocation failure (*out untouched). */
pl_status ct_build(const ct_row *rows, size_t n, ct_tree **out);
/* Loads the messages of conversation `conv` of `user` (none when it has no message) and builds
 * the tree. PL_DB on a query failure. */
pl_status ct_load(PGconn *c, const char *user, const char *conv, ct_tree **out);
void ct_free(ct_tree *t); /* accepts NULL */

size_t ct_count(const ct_tree *t);
const ct_node *ct_node_at(const ct_tree *t, int i);
/* The index of message `id`, or -1. O(log n). */
int ct_find(const ct_tree *t, const char *id);
/* Writes the indices of the chain root → `leaf` into out[] (at most `cap`: when the chain is
 * longer, its newest `cap` entries) and returns how many were written; *truncated (optional)
 * says whether older ones were left out. -1 leaf → 0. */
size_t ct_chain(const ct_tree *t, int leaf, int *out, size_t cap, int *truncated);
/* The end of the most recent branch under `i`: follows the newest child down to a leaf
 * (itself when it has no child). */
int ct_newest_below(const ct_tree *t, int i);
/* Whether `i` lies on the chain root → `leaf`. */
int ct_on_chain(const ct_tree *t, int leaf, int i);

/* A Message for node `i` with sibling_index/count filled, allocated in the arena (strings
 * copied). NULL when the arena is out of memory. */
Parley__V1__Message *ct_message(const ct_tree *t, int i, const char *conversation_id, hs_arena *a);

#endif
