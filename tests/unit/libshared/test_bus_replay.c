/* test_bus_replay.c — bus_js_subscribe_ordered against a real nats-server -js: a reader that
 * subscribes late gets every stored message of its subject from the first, in order, then the
 * live ones; other subjects are not delivered; a missing stream is an error. */
#include "../harness.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bus.h"
#include "natsproc.h"

typedef struct got {
    pthread_mutex_t mu;
    char text[4096];
    int n;
} got;

static void on_msg(bus_msg *m, void *arg)
{
    got *g = arg;
    pthread_mutex_lock(&g->mu);
    size_t len = strlen(g->text), k = bus_msg_len(m);
    if (len + k + 2 < sizeof g->text) {
        memcpy(g->text + len, bus_msg_data(m), k);
        g->text[len + k] = '|';
        g->text[len + k + 1] = '\0';
    }
    g->n++;
    pthread_mutex_unlock(&g->mu);
    bus_msg_destroy(m);
}

static int count(got *g)
{
    pthread_mutex_lock(&g->mu);
    int n = g->n;
    pthread_mutex_unlock(&g->mu);
    return n;
}

static bool wait_count(got *g, int want, int ms)
{
    for (int i = 0; i < ms / 10; i++) {
        if (count(g) >= want)
            return true;
        nanosleep(&(struct timespec){0, 10 * 1000000L}, NULL);
    }
    return count(g) >= want;
}

TEST(bus_replay_delivers_stored_then_live_messages_of_one_subject_in_order)
{
    if (!natsproc_binary())
        SKIP("nats-server not installed");
    natsproc ns = {0};
    bool up = natsproc_start(&ns);
    CHECK(up);
    if (!up) {
        natsproc_stop(&ns);
        return;
    }
    bus *b = NULL;
    bus_opts o = {.url = ns.url, .name = "parley-test"};
    CHECK_EQ_INT(bus_connect(&b, &o), PL_OK);
    for (int i = 0; i < 500 && !bus_connected(b); i++)
        nanosleep(&(struct timespec){0, 10 * 1000000L}, NULL);

    static const char *const subjects[] = {"t.delta.>", NULL};
    bus_stream_cfg sc = {
        .name = "TDELTAS", .subjects = subjects, .memory = true, .max_age_ms = 60000};
    pl_status s = PL_ERR;
    for (int i = 0; i < 50 && s != PL_OK; i++) { /* JetStream may need a moment */
        s = bus_stream_ensure(b, &sc);
        if (s != PL_OK)
            nanosleep(&(struct timespec){0, 100 * 1000000L}, NULL);
    }
    CHECK_EQ_INT(s, PL_OK);

    /* Published before anyone listens (core publishes, captured by the stream). */
    char buf[16];
    for (int i = 1; i <= 5; i++) {
        snprintf(buf, sizeof buf, "a%d", i);
        CHECK_EQ_INT(bus_publish(b, "t.delta.a", buf, strlen(buf)), PL_OK);
        CHECK_EQ_INT(bus_publish(b, "t.delta.b", "other", 5), PL_OK);
    }
    got g1 = {.mu = PTHREAD_MUTEX_INITIALIZER}, g2 = {.mu = PTHREAD_MUTEX_INITIALIZER};
    bus_sub *r1 = NULL, *r2 = NULL;
    CHECK_EQ_INT(bus_js_subscribe_ordered(b, "TDELTAS", "t.delta.a", 0, on_msg, &g1, &r1), PL_OK);
    CHECK(wait_count(&g1, 5, 5000));
    /* Then live ones. */
    CHECK_EQ_INT(bus_publish(b, "t.delta.a", "a6", 2), PL_OK);
    CHECK(wait_count(&g1, 6, 5000));
    /* A second reader of the same subject sees the same sequence from the start. */
    CHECK_EQ_INT(bus_js_subscribe_ordered(b, "TDELTAS", "t.delta.a", 0, on_msg, &g2, &r2), PL_OK);
    CHECK(wait_count(&g2, 6, 5000));
    nanosleep(&(struct timespec){0, 200 * 1000000L}, NULL); /* nothing more should come */
    bus_unsubscribe(r1);
    bus_unsubscribe(r2);
    CHECK_STR(g1.text, "a1|a2|a3|a4|a5|a6|");
    CHECK_STR(g2.text, "a1|a2|a3|a4|a5|a6|");

    bus_sub *r3 = NULL;
    CHECK(bus_js_subscribe_ordered(b, "NOSUCH", "t.none", 0, on_msg, &g1, &r3) != PL_OK);
    CHECK(r3 == NULL);
    bus_unsubscribe(NULL);
    bus_close(b);
    natsproc_stop(&ns);
}
