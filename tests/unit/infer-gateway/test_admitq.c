/* Unit tests for the infer-gateway's admission queue: bound, priority, fairness, cancel. */
#include "../harness.h"

#include <stdlib.h>

#include "admitq.h"

static aq_job *job(const char *rid, const char *user, int prio, int64_t deadline)
{
    aq_job *j = calloc(1, sizeof *j);
    snprintf(j->request_id, sizeof j->request_id, "%s", rid);
    snprintf(j->user_id, sizeof j->user_id, "%s", user);
    j->priority = prio;
    j->deadline_ms = deadline;
    j->payload = malloc(4);
    return j;
}

static void expect_pop(aq_queue *q, const char *rid)
{
    aq_job *j = aq_pop(q);
    CHECK(j != NULL);
    if (j)
        CHECK_STR(j->request_id, rid);
    aq_job_free(j);
}

TEST(admitq_is_bounded)
{
    aq_queue *q = aq_create(2);
    CHECK_EQ_INT(aq_push(q, job("a", "u", 0, 0)), PL_OK);
    CHECK_EQ_INT(aq_push(q, job("b", "u", 0, 0)), PL_OK);
    aq_job *c = job("c", "u", 0, 0);
    CHECK_EQ_INT(aq_push(q, c), PL_OVERLOADED);
    aq_job_free(c);
    CHECK_EQ_INT(aq_len(q), 2);
    aq_destroy(q);
}

TEST(admitq_paid_before_free)
{
    aq_queue *q = aq_create(10);
    aq_push(q, job("free1", "f", 0, 0));
    aq_push(q, job("paid1", "p", 1, 0));
    aq_push(q, job("free2", "f", 0, 0));
    aq_push(q, job("sys", "s", 2, 0));
    CHECK_EQ_INT(aq_ahead(q, 1), 2); /* paid1 + sys */
    expect_pop(q, "sys");
    expect_pop(q, "paid1");
    expect_pop(q, "free1");
    expect_pop(q, "free2");
    CHECK(aq_pop(q) == NULL);
    aq_destroy(q);
}

TEST(admitq_burst_does_not_starve_others)
{
    aq_queue *q = aq_create(100);
    char rid[32];
    for (int i = 0; i < 20; i++) {
        snprintf(rid, sizeof rid, "burst%d", i);
        aq_push(q, job(rid, "greedy", 0, 0));
    }
    aq_push(q, job("b1", "bob", 0, 0));
    aq_push(q, job("c1", "carol", 0, 0));
    /* Within the first three pops each user gets one turn, in FIFO order per user. */
    int seen_bob = -1, seen_carol = -1;
    for (int i = 0; i < 3; i++) {
        aq_job *j = aq_pop(q);
        if (strcmp(j->request_id, "b1") == 0)
            seen_bob = i;
        if (strcmp(j->request_id, "c1") == 0)
            seen_carol = i;
        if (strncmp(j->request_id, "burst", 5) == 0)
            CHECK_STR(j->request_id, "burst0");
        aq_job_free(j);
    }
    CHECK(seen_bob >= 0);
    CHECK(seen_carol >= 0);
    expect_pop(q, "burst1");
    CHECK_EQ_INT(aq_len(q), 18);
    aq_destroy(q);
}

TEST(admitq_remove_and_expire)
{
    aq_queue *q = aq_create(10);
    aq_push(q, job("a", "u1", 0, 100));
    aq_push(q, job("b", "u2", 0, 0));
    aq_push(q, job("c", "u1", 1, 50));
    aq_job *j = aq_remove(q, "b");
    CHECK(j && strcmp(j->request_id, "b") == 0);
    aq_job_free(j);
    CHECK(aq_remove(q, "b") == NULL);
    CHECK(aq_pop_expired(q, 10) == NULL);
    j = aq_pop_expired(q, 60);
    CHECK(j && strcmp(j->request_id, "c") == 0);
    aq_job_free(j);
    j = aq_pop_expired(q, 100);
    CHECK(j && strcmp(j->request_id, "a") == 0);
    aq_job_free(j);
    CHECK_EQ_INT(aq_len(q), 0);
    CHECK(aq_pop(q) == NULL);
    aq_destroy(q);
}
