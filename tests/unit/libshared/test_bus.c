/* test_bus.c — the bus against a real nats-server -js: core pub/sub and request-reply,
 * JetStream streams, consumers, publish dedup, fetch/ack/nak/term, the pull loop, and
 * connection state across a server restart. Every test starts its own server (natsproc). */
#include "../harness.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bus.h"
#include "natsproc.h"
#include "parley.pb-c.h"

/* --- helpers ------------------------------------------------------------------------------- */

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void nap(int64_t ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

/* Waits up to `ms` for bus_connected(b) == want. */
static bool wait_connected(bus *b, bool want, int64_t ms)
{
    int64_t end = now_ms() + ms;
    while (now_ms() < end) {
        if (bus_connected(b) == want)
            return true;
        nap(20);
    }
    return bus_connected(b) == want;
}

/* Starts a server and a connected bus; false (after SKIP-worthy or failed checks) if not. */
static bool setup(natsproc *ns, bus **b)
{
    *b = NULL;
    if (!natsproc_start(ns)) {
        natsproc_stop(ns);
        return false;
    }
    bus_opts o = {.url = ns->url, .name = "parley-test"};
    if (bus_connect(b, &o) != PL_OK || !wait_connected(*b, true, 5000)) {
        bus_close(*b);
        *b = NULL;
        natsproc_stop(ns);
        return false;
    }
    return true;
}

static void teardown(natsproc *ns, bus *b)
{
    bus_close(b);
    natsproc_stop(ns);
}

#define NEED_NATS(ns, b)                                                                           \
    do {                                                                                           \
        if (!natsproc_binary())                                                                    \
            SKIP("nats-server not installed");                                                     \
        bool up_ = setup((ns), (b));                                                               \
        CHECK(up_);                                                                                \
        if (!up_)                                                                                  \
            return;                                                                                \
    } while (0)

/* A collector for handler calls on libnats threads. */
typedef struct seen {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int count;
    char last[64];
    bool had_reply;
} seen;

static void seen_init(seen *s)
{
    memset(s, 0, sizeof *s);
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
}

static void seen_free(seen *s)
{
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
}

static bool seen_wait(seen *s, int count, int64_t ms)
{
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += ms / 1000;
    dl.tv_nsec += (ms % 1000) * 1000000;
    if (dl.tv_nsec >= 1000000000) {
        dl.tv_sec++;
        dl.tv_nsec -= 1000000000;
    }
    pthread_mutex_lock(&s->mu);
    while (s->count < count && pthread_cond_timedwait(&s->cv, &s->mu, &dl) == 0) {
    }
    bool ok = s->count >= count;
    pthread_mutex_unlock(&s->mu);
    return ok;
}

static int seen_count(seen *s)
{
    pthread_mutex_lock(&s->mu);
    int n = s->count;
    pthread_mutex_unlock(&s->mu);
    return n;
}

static void on_cancel(bus_msg *m, void *arg)
{
    seen *s = arg;
    Parley__V1__Cancel *c =
        (Parley__V1__Cancel *)bus_msg_unpack(m, &parley__v1__cancel__descriptor);
    pthread_mutex_lock(&s->mu);
    if (c)
        snprintf(s->last, sizeof s->last, "%s/%s", c->request_id, c->reason);
    s->had_reply = bus_msg_reply(m) != NULL;
    s->count++;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    if (c)
        protobuf_c_message_free_unpacked(&c->base, NULL);
    bus_msg_destroy(m);
}

/* --- core NATS ----------------------------------------------------------------------------- */

TEST(bus_pubsub_protobuf_round_trip)
{
    natsproc ns = {0};
    bus *b;
    NEED_NATS(&ns, &b);
    seen s;
    seen_init(&s);

    bus_sub *sub = NULL;
    CHECK_EQ_INT(bus_subscribe(b, "t.cancel.*", NULL, on_cancel, &s, &sub), PL_OK);
    Parley__V1__Cancel c = PARLEY__V1__CANCEL__INIT;
    c.request_id = "req-1";
    c.reason = "user";
    CHECK_EQ_INT(bus_publish_pb(b, "t.cancel.a", &c.base), PL_OK);
    CHECK(seen_wait(&s, 1, 3000));
    CHECK_STR(s.last, "req-1/user");
    CHECK(!s.had_reply);

    /* A payload that is not the message: unpack fails, the handler still owns and frees. */
    CHECK_EQ_INT(bus_publish(b, "t.cancel.b", "\xff\xff\xff", 3), PL_OK);
    CHECK(seen_wait(&s, 2, 3000));

    /* After unsubscribe no handler runs. */
    bus_unsubscribe(sub);
    CHECK_EQ_INT(bus_publish_pb(b, "t.cancel.c", &c.base), PL_OK);
    nap(200);
    CHECK_EQ_INT(seen_count(&s), 2);

    bus_unsubscribe(NULL);
    seen_free(&s);
    teardown(&ns, b);
}

typedef struct responder {
    bus *b;
    bool answer;
} responder;

static void on_rpc(bus_msg *m, void *arg)
{
    responder *r = arg;
    if (r->answer) {
        Parley__V1__Cancel *in =
            (Parley__V1__Cancel *)bus_msg_unpack(m, &parley__v1__cancel__descriptor);
        Parley__V1__Cancel out = PARLEY__V1__CANCEL__INIT;
        out.request_id = in ? in->request_id : "?";
        out.reason = "pong";
        bus_respond_pb(r->b, m, &out.base);
        if (in)
            protobuf_c_message_free_unpacked(&in->base, NULL);
    }
    bus_msg_destroy(m);
}

TEST(bus_request_reply_and_errors)
{
    natsproc ns = {0};
    bus *b;
    NEED_NATS(&ns, &b);

    responder r = {b, true};
    bus_sub *sub = NULL;
    CHECK_EQ_INT(bus_subscribe(b, "t.rpc", "grp", on_rpc, &r, &sub), PL_OK);

    Parley__V1__Cancel req = PARLEY__V1__CANCEL__INIT;
    req.request_id = "r-42";
    ProtobufCMessage *out = NULL;
    CHECK_EQ_INT(bus_request_pb(b, "t.rpc", &req.base, &parley__v1__cancel__descriptor, 2000, &out),
                 PL_OK);
    CHECK(out != NULL);
    if (out) {
        Parley__V1__Cancel *rep = (Parley__V1__Cancel *)out;
        CHECK_STR(rep->request_id, "r-42");
        CHECK_STR(rep->reason, "pong");
        protobuf_c_message_free_unpacked(out, NULL);
    }

    /* Raw request: the reply is ours to destroy. */
    bus_msg *reply = NULL;
    CHECK_EQ_INT(bus_request(b, "t.rpc", "", 0, 2000, &reply), PL_OK);
    CHECK(reply != NULL && bus_msg_len(reply) > 0);
    bus_msg_destroy(reply);

    /* Nobody subscribed: the server says so at once. */
    int64_t t0 = now_ms();
    CHECK_EQ_INT(bus_request(b, "t.nobody", "x", 1, 3000, &reply), PL_UNAVAILABLE);
    CHECK(reply == NULL);
    CHECK(now_ms() - t0 < 1500);
    CHECK(strstr(pl_err_last(), "t.nobody") != NULL);

    /* A subscriber that never answers: timeout. */
    r.answer = false;
    t0 = now_ms();
    CHECK_EQ_INT(bus_request(b, "t.rpc", "x", 1, 300, &reply), PL_TIMEOUT);
    CHECK(now_ms() - t0 >= 250);
    CHECK(now_ms() - t0 < 2000);

    bus_unsubscribe(sub);
    teardown(&ns, b);
}

typedef struct respond_probe {
    bus *b;
    seen s;
    pl_status st;
} respond_probe;

static void on_plain(bus_msg *m, void *arg)
{
    respond_probe *p = arg;
    pl_status st = bus_respond(p->b, m, "x", 1);
    pthread_mutex_lock(&p->s.mu);
    p->st = st;
    p->s.count++;
    pthread_cond_broadcast(&p->s.cv);
    pthread_mutex_unlock(&p->s.mu);
    bus_msg_destroy(m);
}

TEST(bus_respond_without_reply_subject_is_invalid)
{
    natsproc ns = {0};
    bus *b;
    NEED_NATS(&ns, &b);
    respond_probe p = {.b = b};
    seen_init(&p.s);
    bus_sub *sub = NULL;
    CHECK_EQ_INT(bus_subscribe(b, "t.plain", NULL, on_plain, &p, &sub), PL_OK);
    CHECK_EQ_INT(bus_publish(b, "t.plain", "a", 1), PL_OK);
    CHECK(seen_wait(&p.s, 1, 3000));
    CHECK_EQ_INT(p.st, PL_INVALID);

    char *inbox = bus_new_inbox(b);
    CHECK(inbox != NULL && strncmp(inbox, "_INBOX.", 7) == 0);
    free(inbox);

    bus_unsubscribe(sub);
    seen_free(&p.s);
    teardown(&ns, b);
}

/* --- JetStream ----------------------------------------------------------------------------- */

static const char *const test_subjects[] = {"t.jobs.>", NULL};

static bus_stream_cfg stream_cfg(void)
{
    return (bus_stream_cfg){.name = "TJOBS",
                            .subjects = test_subjects,
                            .work_queue = true,
                            .max_age_ms = 60000,
                            .duplicate_window_ms = 60000};
}

static bool ensure_jobs(bus *b, int64_t ack_wait_ms, const int64_t *backoff, size_t n_backoff)
{
    bus_stream_cfg sc = stream_cfg();
    bus_consumer_cfg cc = {.stream = "TJOBS",
                           .durable = "workers",
                           .ack_wait_ms = ack_wait_ms,
                           .max_deliver = 5,
                           .backoff_ms = backoff,
                           .n_backoff = n_backoff};
    pl_status a = bus_stream_ensure(b, &sc);
    pl_status c = bus_consumer_ensure(b, &cc);
    if (a != PL_OK || c != PL_OK)
        fprintf(stderr, "  ensure: %s\n", pl_err_last());
    return a == PL_OK && c == PL_OK;
}

TEST(bus_js_stream_and_consumer_ensure_are_idempotent)
{
    natsproc ns = {0};
    bus *b;
    NEED_NATS(&ns, &b);

    bus_stream_cfg sc = stream_cfg();
    CHECK_EQ_INT(bus_stream_ensure(b, &sc), PL_OK);
    CHECK_EQ_INT(bus_stream_ensure(b, &sc), PL_OK);
    sc.max_msgs = 1000; /* a changed limit is applied by update */
    CHECK_EQ_INT(bus_stream_ensure(b, &sc), PL_OK);

    const int64_t backoff[] = {200, 1000};
    bus_consumer_cfg cc = {.stream = "TJOBS",
                           .durable = "workers",
                           .ack_wait_ms = 1000,
                           .max_deliver = 3,
                           .max_ack_pending = 10,
                           .backoff_ms = backoff,
                           .n_backoff = 2};
    CHECK_EQ_INT(bus_consumer_ensure(b, &cc), PL_OK);
    CHECK_EQ_INT(bus_consumer_ensure(b, &cc), PL_OK);
    cc.max_ack_pending = 20;
    cc.backoff_ms = NULL;
    cc.n_backoff = 0;
    CHECK_EQ_INT(bus_consumer_ensure(b, &cc), PL_OK);

    uint64_t pending = 99, ack_pending = 99;
    CHECK_EQ_INT(bus_consumer_lag(b, "TJOBS", "workers", &pending, &ack_pending), PL_OK);
    CHECK_EQ_INT(pending, 0);
    CHECK_EQ_INT(ack_pending, 0);

    /* Missing things are reported as such. */
    CHECK_EQ_INT(bus_consumer_lag(b, "TJOBS", "nobody", &pending, &ack_pending), PL_NOT_FOUND);
    bus_consumer_cfg bad = {.stream = "NOSUCH", .durable = "w"};
    CHECK(bus_consumer_ensure(b, &bad) != PL_OK);
    bus_pull *p = NULL;
    CHECK(bus_pull_create(b, "TJOBS", "nobody", "t.jobs.>", &p) != PL_OK);
    CHECK(p == NULL);

    teardown(&ns, b);
}

TEST(bus_js_publish_deduplicates_by_msg_id)
{
    natsproc ns = {0};
    bus *b;
    NEED_NATS(&ns, &b);
    CHECK(ensure_jobs(b, 5000, NULL, 0));

    CHECK_EQ_INT(bus_js_publish(b, "t.jobs.m", "one", 3, "id-1", 2000), PL_OK);
    CHECK_EQ_INT(bus_js_publish(b, "t.jobs.m", "one", 3, "id-1", 2000), PL_OK);
    uint64_t pending = 0, ack_pending = 0;
    CHECK_EQ_INT(bus_consumer_lag(b, "TJOBS", "workers", &pending, &ack_pending), PL_OK);
    CHECK_EQ_INT(pending, 1);
    CHECK_EQ_INT(bus_js_publish(b, "t.jobs.m", "two", 3, "id-2", 2000), PL_OK);
    CHECK_EQ_INT(bus_js_publish(b, "t.jobs.m", "three", 5, NULL, 0), PL_OK);
    CHECK_EQ_INT(bus_consumer_lag(b, "TJOBS", "workers", &pending, &ack_pending), PL_OK);
    CHECK_EQ_INT(pending, 3);

    /* No stream listens on this subject: a JetStream publish has nobody to ack it. */
    CHECK(bus_js_publish(b, "t.nostream", "x", 1, NULL, 500) != PL_OK);

    teardown(&ns, b);
}

/* Fetches until `want` messages arrived or `ms` passed; returns how many. */
static int fetch_n(bus_pull *p, bus_msg **msgs, int want, int64_t ms)
{
    int got = 0;
    int64_t end = now_ms() + ms;
    while (got < want && now_ms() < end) {
        int n = 0;
        pl_status st = bus_fetch(p, want - got, 500, msgs + got, &n);
        if (st == PL_OK)
            got += n;
        else if (st != PL_TIMEOUT)
            break;
    }
    return got;
}

TEST(bus_js_fetch_ack_in_order)
{
    natsproc ns = {0};
    bus *b;
    NEED_NATS(&ns, &b);
    CHECK(ensure_jobs(b, 5000, NULL, 0));

    for (int i = 0; i < 3; i++) {
        Parley__V1__Cancel c = PARLEY__V1__CANCEL__INIT;
        char id[32];
        snprintf(id, sizeof id, "job-%d", i);
        c.request_id = id;
        CHECK_EQ_INT(bus_js_publish_pb(b, "t.jobs.m", &c.base, id, 2000), PL_OK);
    }
    bus_pull *p = NULL;
    CHECK_EQ_INT(bus_pull_create(b, "TJOBS", "workers", NULL, &p), PL_OK);
    if (!p) {
        teardown(&ns, b);
        return;
    }
    bus_msg *msgs[8] = {0};
    int n = fetch_n(p, msgs, 3, 5000);
    CHECK_EQ_INT(n, 3);
    for (int i = 0; i < n; i++) {
        CHECK_EQ_INT(bus_msg_delivery_count(msgs[i]), 1);
        CHECK_EQ_INT(bus_msg_stream_seq(msgs[i]), i + 1);
        CHECK_STR(bus_msg_subject(msgs[i]), "t.jobs.m");
        Parley__V1__Cancel *c =
            (Parley__V1__Cancel *)bus_msg_unpack(msgs[i], &parley__v1__cancel__descriptor);
        CHECK(c != NULL);
        if (c) {
            char want[16];
            snprintf(want, sizeof want, "job-%d", i);
            CHECK_STR(c->request_id, want);
            protobuf_c_message_free_unpacked(&c->base, NULL);
        }
        CHECK_EQ_INT(bus_in_progress(msgs[i]), PL_OK);
        CHECK_EQ_INT(bus_ack(msgs[i]), PL_OK);
        bus_msg_destroy(msgs[i]);
    }

    /* All acked: nothing more to fetch, and nothing pending. */
    int got = -1;
    CHECK_EQ_INT(bus_fetch(p, 4, 300, msgs, &got), PL_TIMEOUT);
    CHECK_EQ_INT(got, 0);
    uint64_t pending = 9, ack_pending = 9;
    CHECK_EQ_INT(bus_consumer_lag(b, "TJOBS", "workers", &pending, &ack_pending), PL_OK);
    CHECK_EQ_INT(pending, 0);
    CHECK_EQ_INT(ack_pending, 0);

    bus_pull_destroy(p);
    bus_pull_destroy(NULL);
    /* Destroying the subscription leaves the durable consumer on the server. */
    CHECK_EQ_INT(bus_consumer_lag(b, "TJOBS", "workers", &pending, &ack_pending), PL_OK);
    teardown(&ns, b);
}

TEST(bus_js_nak_with_delay_redelivers)
{
    natsproc ns = {0};
    bus *b;
    NEED_NATS(&ns, &b);
    CHECK(ensure_jobs(b, 10000, NULL, 0));
    CHECK_EQ_INT(bus_js_publish(b, "t.jobs.m", "job", 3, "nak-1", 2000), PL_OK);
    bus_pull *p = NULL;
    CHECK_EQ_INT(bus_pull_create(b, "TJOBS", "workers", "t.jobs.>", &p), PL_OK);
    if (!p) {
        teardown(&ns, b);
        return;
    }
    bus_msg *m[2] = {0};
    CHECK_EQ_INT(fetch_n(p, m, 1, 3000), 1);
    int64_t t0 = now_ms();
    CHECK_EQ_INT(bus_nak(m[0], 700), PL_OK);
    bus_msg_destroy(m[0]);

    /* Not before the delay... */
    int n = -1;
    CHECK_EQ_INT(bus_fetch(p, 1, 200, m, &n), PL_TIMEOUT);
    /* ...but after it, with the delivery count raised. */
    CHECK_EQ_INT(fetch_n(p, m, 1, 5000), 1);
    CHECK(now_ms() - t0 >= 600);
    CHECK_EQ_INT(bus_msg_delivery_count(m[0]), 2);
    CHECK_EQ_INT(bus_msg_stream_seq(m[0]), 1);
    CHECK_EQ_INT(bus_ack(m[0]), PL_OK);
    bus_msg_destroy(m[0]);

    bus_pull_destroy(p);
    teardown(&ns, b);
}

TEST(bus_js_term_is_never_redelivered)
{
    natsproc ns = {0};
    bus *b;
    NEED_NATS(&ns, &b);
    CHECK(ensure_jobs(b, 500, NULL, 0));
    CHECK_EQ_INT(bus_js_publish(b, "t.jobs.a", "A", 1, "term-a", 2000), PL_OK);
    CHECK_EQ_INT(bus_js_publish(b, "t.jobs.b", "B", 1, "term-b", 2000), PL_OK);
    bus_pull *p = NULL;
    CHECK_EQ_INT(bus_pull_create(b, "TJOBS", "workers", "t.jobs.>", &p), PL_OK);
    if (!p) {
        teardown(&ns, b);
        return;
    }
    bus_msg *m[4] = {0};
    CHECK_EQ_INT(fetch_n(p, m, 2, 3000), 2);
    /* A is terminated; B is dropped without an answer, so AckWait brings it back. */
    CHECK_STR(bus_msg_subject(m[0]), "t.jobs.a");
    CHECK_EQ_INT(bus_term(m[0]), PL_OK);
    bus_msg_destroy(m[0]);
    bus_msg_destroy(m[1]);

    /* Watch for 2.5 s (five AckWaits), acking whatever comes: only B may come back. */
    int got_a = 0, got_b = 0;
    uint64_t b_count = 0;
    int64_t end = now_ms() + 2500;
    while (now_ms() < end) {
        int n = 0;
        if (bus_fetch(p, 1, 300, m, &n) != PL_OK || n != 1)
            continue;
        if (strcmp(bus_msg_subject(m[0]), "t.jobs.a") == 0) {
            got_a++;
        } else {
            got_b++;
            b_count = bus_msg_delivery_count(m[0]);
        }
        CHECK_EQ_INT(bus_ack(m[0]), PL_OK);
        bus_msg_destroy(m[0]);
    }
    CHECK_EQ_INT(got_a, 0);
    CHECK_EQ_INT(got_b, 1);
    CHECK_EQ_INT(b_count, 2);

    bus_pull_destroy(p);
    teardown(&ns, b);
}

typedef struct loop_state {
    atomic_int limit; /* how many messages the "worker" may take in total */
    atomic_int handled;
    atomic_int max_seen_want;
} loop_state;

static int loop_want(void *arg)
{
    loop_state *s = arg;
    int w = atomic_load(&s->limit) - atomic_load(&s->handled);
    return w > 0 ? w : 0;
}

static void loop_handle(bus_msg *m, void *arg)
{
    loop_state *s = arg;
    bus_ack(m);
    bus_msg_destroy(m);
    atomic_fetch_add(&s->handled, 1);
}

TEST(bus_pull_loop_fetches_only_what_is_wanted)
{
    natsproc ns = {0};
    bus *b;
    NEED_NATS(&ns, &b);
    CHECK(ensure_jobs(b, 5000, NULL, 0));
    for (int i = 0; i < 5; i++) {
        char id[32];
        snprintf(id, sizeof id, "loop-%d", i);
        CHECK_EQ_INT(bus_js_publish(b, "t.jobs.m", id, strlen(id), id, 2000), PL_OK);
    }
    bus_pull *p = NULL;
    CHECK_EQ_INT(bus_pull_create(b, "TJOBS", "workers", NULL, &p), PL_OK);
    if (!p) {
        teardown(&ns, b);
        return;
    }
    loop_state s;
    atomic_init(&s.limit, 0);
    atomic_init(&s.handled, 0);
    atomic_init(&s.max_seen_want, 0);
    bus_pull_loop *l = NULL;
    CHECK_EQ_INT(bus_pull_loop_start(p, 4, loop_want, loop_handle, &s, &l), PL_OK);

    nap(400);
    CHECK_EQ_INT(atomic_load(&s.handled), 0); /* no slots: nothing fetched */
    uint64_t pending = 0, ack_pending = 0;
    CHECK_EQ_INT(bus_consumer_lag(b, "TJOBS", "workers", &pending, &ack_pending), PL_OK);
    CHECK_EQ_INT(pending, 5);

    atomic_store(&s.limit, 2);
    int64_t end = now_ms() + 3000;
    while (atomic_load(&s.handled) < 2 && now_ms() < end)
        nap(20);
    nap(300);
    CHECK_EQ_INT(atomic_load(&s.handled), 2); /* exactly as many as there were slots */
    CHECK_EQ_INT(bus_consumer_lag(b, "TJOBS", "workers", &pending, &ack_pending), PL_OK);
    CHECK_EQ_INT(pending, 3);
    CHECK_EQ_INT(ack_pending, 0);

    atomic_store(&s.limit, 100);
    end = now_ms() + 3000;
    while (atomic_load(&s.handled) < 5 && now_ms() < end)
        nap(20);
    CHECK_EQ_INT(atomic_load(&s.handled), 5);

    int64_t t0 = now_ms();
    bus_pull_loop_stop(l);
    CHECK(now_ms() - t0 < 1500); /* at most one fetch timeout */
    bus_pull_loop_stop(NULL);
    bus_pull_destroy(p);
    teardown(&ns, b);
}

/* --- connection state ---------------------------------------------------------------------- */

typedef struct state_log {
    atomic_int ups, downs;
} state_log;

static void on_state(bool connected, void *arg)
{
    state_log *s = arg;
    atomic_fetch_add(connected ? &s->ups : &s->downs, 1);
}

TEST(bus_reconnects_after_server_restart)
{
    if (!natsproc_binary())
        SKIP("nats-server not installed");
    natsproc ns = {0};
    CHECK(natsproc_start(&ns));
    state_log sl;
    atomic_init(&sl.ups, 0);
    atomic_init(&sl.downs, 0);
    bus *b = NULL;
    bus_opts o = {.url = ns.url,
                  .name = "parley-test",
                  .on_state = on_state,
                  .arg = &sl,
                  .reconnect_wait_ms = 100};
    CHECK_EQ_INT(bus_connect(&b, &o), PL_OK);
    CHECK(wait_connected(b, true, 5000));
    CHECK_EQ_INT(atomic_load(&sl.ups), 1);

    natsproc_kill(&ns, true);
    CHECK(wait_connected(b, false, 5000));
    /* Publishing while down is buffered, not an error. */
    CHECK_EQ_INT(bus_publish(b, "t.buffered", "x", 1), PL_OK);

    CHECK(natsproc_start(&ns));
    CHECK(wait_connected(b, true, 10000));
    int64_t end = now_ms() + 2000;
    while (atomic_load(&sl.ups) < 2 && now_ms() < end)
        nap(20);
    CHECK_EQ_INT(atomic_load(&sl.ups), 2);
    CHECK(atomic_load(&sl.downs) >= 1);

    /* And it works again. */
    bus_msg *reply = NULL;
    CHECK_EQ_INT(bus_request(b, "t.nobody", "x", 1, 2000, &reply), PL_UNAVAILABLE);

    bus_close(b);
    natsproc_stop(&ns);
}

TEST(bus_connect_succeeds_before_server_starts)
{
    if (!natsproc_binary())
        SKIP("nats-server not installed");
    natsproc ns = {0};
    CHECK(natsproc_init(&ns, 0));
    bus *b = NULL;
    bus_opts o = {.url = ns.url, .name = "parley-test", .reconnect_wait_ms = 100};
    CHECK_EQ_INT(bus_connect(&b, &o), PL_OK);
    CHECK(b != NULL);
    if (!b) {
        natsproc_stop(&ns);
        return;
    }
    CHECK(!bus_connected(b));
    nap(300);
    CHECK(!bus_connected(b));

    CHECK(natsproc_start(&ns));
    CHECK(wait_connected(b, true, 10000));
    /* JetStream works on the connection that was created before the server. */
    bus_stream_cfg sc = stream_cfg();
    CHECK_EQ_INT(bus_stream_ensure(b, &sc), PL_OK);

    bus_close(b);
    natsproc_stop(&ns);
}

TEST(bus_connect_rejects_bad_url)
{
    bus *b = NULL;
    bus_opts o = {.url = "", .name = "parley-test"};
    CHECK(bus_connect(&b, &o) != PL_OK);
    CHECK(b == NULL);
    bus_close(NULL);
}

TEST(bus_close_while_never_connected)
{
    /* A port nobody listens on: the bus keeps retrying, and closing it must not hang. */
    int port = natsproc_free_port();
    char url[64];
    snprintf(url, sizeof url, "nats://127.0.0.1:%d,nats://127.0.0.1:%d", port, port);
    bus *b = NULL;
    bus_opts o = {.url = url, .name = "parley-test", .reconnect_wait_ms = 50};
    CHECK_EQ_INT(bus_connect(&b, &o), PL_OK);
    CHECK(!bus_connected(b));
    int64_t t0 = now_ms();
    bus_close(b);
    CHECK(now_ms() - t0 < 3000);
}
