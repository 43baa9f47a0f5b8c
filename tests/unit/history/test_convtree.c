/* test_convtree.c — a conversation's message tree (services/history/convtree.c). */
#include <string.h>

#include "convtree.h"
#include "../harness.h"

/* u1 ─ a1 ─ u2 ─ a2
 *    └ a1b            (regenerated answer to u1)
 * u1b ─ a3            (the first message edited: a second root) */
static const ct_row rows[] = {
    {.id = "u1", .parent_id = "", .role = 2, .content = "hi", .created_ms = 1},
    {.id = "a1", .parent_id = "u1", .role = 3, .content = "hello", .created_ms = 2},
    {.id = "u2", .parent_id = "a1", .role = 2, .content = "more", .created_ms = 3},
    {.id = "a2", .parent_id = "u2", .role = 3, .content = "sure", .created_ms = 4},
    {.id = "a1b", .parent_id = "u1", .role = 3, .content = "hey", .created_ms = 5},
    {.id = "u1b", .parent_id = "", .role = 2, .content = "hi again", .created_ms = 6},
    {.id = "a3", .parent_id = "u1b", .role = 3, .content = "yo", .created_ms = 7},
};

TEST(convtree_chain_siblings_and_newest_branch)
{
    ct_tree *t = NULL;
    CHECK_EQ_INT(ct_build(rows, 7, &t), PL_OK);
    CHECK_EQ_INT(ct_count(t), 7);
    CHECK_EQ_INT(ct_find(t, "a2"), 3);
    CHECK_EQ_INT(ct_find(t, "nope"), -1);
    CHECK_EQ_INT(ct_find(t, ""), -1);

    int chain[8];
    int trunc = 0;
    size_t k = ct_chain(t, ct_find(t, "a2"), chain, 8, &trunc);
    CHECK_EQ_INT(k, 4);
    CHECK_EQ_INT(trunc, 0);
    CHECK_STR(ct_node_at(t, chain[0])->row.id, "u1");
    CHECK_STR(ct_node_at(t, chain[3])->row.id, "a2");
    /* The newest two only. */
    k = ct_chain(t, ct_find(t, "a2"), chain, 2, &trunc);
    CHECK_EQ_INT(k, 2);
    CHECK_EQ_INT(trunc, 1);
    CHECK_STR(ct_node_at(t, chain[0])->row.id, "u2");
    CHECK_STR(ct_node_at(t, chain[1])->row.id, "a2");
    CHECK_EQ_INT(ct_chain(t, -1, chain, 8, NULL), 0);

    const ct_node *a1 = ct_node_at(t, ct_find(t, "a1"));
    const ct_node *a1b = ct_node_at(t, ct_find(t, "a1b"));
    CHECK_EQ_INT(a1->sib_index, 1);
    CHECK_EQ_INT(a1->sib_count, 2);
    CHECK_EQ_INT(a1b->sib_index, 2);
    CHECK_EQ_INT(a1b->sib_count, 2);
    const ct_node *u1b = ct_node_at(t, ct_find(t, "u1b"));
    CHECK_EQ_INT(u1b->sib_index, 2); /* roots are siblings too */
    CHECK_EQ_INT(u1b->sib_count, 2);
    CHECK_EQ_INT(ct_node_at(t, ct_find(t, "a2"))->sib_count, 1);

    /* Switching to u1 lands on its newest branch (a1b, regenerated last); to a1, on a2. */
    CHECK_STR(ct_node_at(t, ct_newest_below(t, ct_find(t, "u1")))->row.id, "a1b");
    CHECK_STR(ct_node_at(t, ct_newest_below(t, ct_find(t, "a1")))->row.id, "a2");
    CHECK_STR(ct_node_at(t, ct_newest_below(t, ct_find(t, "a3")))->row.id, "a3");

    CHECK(ct_on_chain(t, ct_find(t, "a2"), ct_find(t, "a1")));
    CHECK(!ct_on_chain(t, ct_find(t, "a2"), ct_find(t, "a1b")));
    CHECK(!ct_on_chain(t, -1, ct_find(t, "a1")));
    ct_free(t);
    ct_free(NULL);
}

TEST(convtree_messages_carry_sibling_numbers_and_copies)
{
    ct_tree *t = NULL;
    CHECK_EQ_INT(ct_build(rows, 7, &t), PL_OK);
    hs_arena *a = hs_arena_create();
    Parley__V1__Message *m = ct_message(t, ct_find(t, "a1b"), "c1", a);
    ct_free(t); /* the message owns its strings (in the arena) */
    CHECK(m != NULL);
    CHECK_STR(m->id, "a1b");
    CHECK_STR(m->parent_id, "u1");
    CHECK_STR(m->conversation_id, "c1");
    CHECK_STR(m->content, "hey");
    CHECK_EQ_INT(m->sibling_index, 2);
    CHECK_EQ_INT(m->sibling_count, 2);
    CHECK_EQ_INT(m->role, PARLEY__V1__ROLE__ROLE_ASSISTANT);
    hs_arena_free(a);
}

TEST(convtree_survives_a_missing_parent_and_a_cycle)
{
    /* A parent that is not in the conversation makes a root; a cycle cannot loop forever. */
    const ct_row bad[] = {
        {.id = "x", .parent_id = "gone", .role = 2, .content = ""},
        {.id = "p", .parent_id = "q", .role = 2, .content = ""},
        {.id = "q", .parent_id = "p", .role = 3, .content = ""},
    };
    ct_tree *t = NULL;
    CHECK_EQ_INT(ct_build(bad, 3, &t), PL_OK);
    CHECK_EQ_INT(ct_node_at(t, 0)->parent, -1);
    int chain[8];
    size_t k = ct_chain(t, ct_find(t, "q"), chain, 8, NULL);
    CHECK(k <= 8);
    CHECK(ct_newest_below(t, ct_find(t, "p")) >= 0);
    ct_free(t);
    /* An empty conversation. */
    CHECK_EQ_INT(ct_build(NULL, 0, &t), PL_OK);
    CHECK_EQ_INT(ct_count(t), 0);
    CHECK_EQ_INT(ct_find(t, "x"), -1);
    ct_free(t);
}

TEST(convtree_message_lists_its_siblings_in_creation_order)
{
    /* root u1 with answers a1, a2, a3 (regenerated twice); a2 has a follow-up u2. */
    ct_row vrows[] = {
        {.id = "u1", .parent_id = "", .role = 2},   {.id = "a1", .parent_id = "u1", .role = 3},
        {.id = "a2", .parent_id = "u1", .role = 3}, {.id = "u2", .parent_id = "a2", .role = 2},
        {.id = "a3", .parent_id = "u1", .role = 3},
    };
    for (size_t i = 0; i < sizeof vrows / sizeof vrows[0]; i++) {
        vrows[i].content = vrows[i].model = vrows[i].request_id = vrows[i].error = "";
    }
    ct_tree *t = NULL;
    CHECK(ct_build(vrows, 5, &t) == PL_OK);
    hs_arena *a = hs_arena_create();
    Parley__V1__Message *m = ct_message(t, ct_find(t, "a2"), "c", a);
    CHECK(m && m->n_sibling_ids == 3);
    if (m && m->n_sibling_ids == 3) {
        CHECK_STR(m->sibling_ids[0], "a1");
        CHECK_STR(m->sibling_ids[1], "a2");
        CHECK_STR(m->sibling_ids[2], "a3");
        CHECK_EQ_INT(m->sibling_index, 2);
    }
    Parley__V1__Message *only = ct_message(t, ct_find(t, "u2"), "c", a);
    CHECK(only && only->n_sibling_ids == 0 && only->sibling_count == 1);
    hs_arena_free(a);
    ct_free(t);
}
