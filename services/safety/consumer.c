/* consumer.c — the safety events' durable pull consumer: fetch, judge, store, acknowledge.
 *
 * Instances share the durable consumer CONSUMER_SAFETY on the work-queue stream
 * PARLEY_SAFETY: each fetches batches of up to --batch events. For a batch, every event is
 * judged (the rule set, plus the model classifier when one is configured) and all verdicts go
 * to history in ONE "safety.store" request, which inserts them idempotently (a redelivered
 * event stores nothing twice: the key is user, event, classifier and category). Only then are
 * the events acknowledged, so an event whose verdicts were not stored comes back.
 *
 * Failures:
 *   - history unreachable (no reply, PL_UNAVAILABLE, PL_TIMEOUT): the batch is kept and
 *     retried with a growing pause, the events' ack timers reset meanwhile (in progress), so a
 *     history outage costs no delivery attempts and loses nothing;
 *   - an event that does not decode or lacks its ids, or whose verdicts history refuses (found
 *     by storing the batch's events one by one after the batch was refused): nak'd with a
 *     delay and tried again, up to --max-attempts deliveries; at the last one a "failed"
 *     verdict (classifier "safety") naming the reason is stored and the event acknowledged, so
 *     a poison event never blocks the others.
 * The lag gauges (pending, ack pending) are refreshed every few seconds from the consumer's
 * info.
 *
 * Acknowledgements are sent without waiting for the server's confirmation: the "+ACK" protocol
 * message published to the event's reply subject, which is what natsMsg_Ack does. A lost ack
 * only means a redelivery, which the idempotent store absorbs; waiting for each confirmation
 * (one round trip per event) would cap an instance at a few thousand events a second.
 *
 * Threading: --threads consumer threads per instance, each with its own pull subscription on
 * the shared durable consumer and its own batch, so that one thread's store round trip
 * overlaps another's fetch and judging; a bgtask binds the subscriptions once jsetup has
 * created the consumer. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "safety.h"
#include "subjects.h"
#include "utf8.h"
#include "wire.h"

#define CSM_FETCH_WAIT_MS   1000
#define CSM_LAG_EVERY_MS    2000
#define CSM_RETRY_MIN_MS    200
#define CSM_RETRY_MAX_MS    5000
#define CSM_PROGRESS_MS     5000
#define CSM_NAK_DELAY_MS    1000
#define CSM_MAX_BATCH       256
#define CSM_SLOTS_PER_EVENT (RULES_MAX_CATEGORIES + 2)

/* One fetched event and what became of it. */
typedef struct csm_event {
    bus_msg *msg;
    Parley__V1__SafetyEvent *ev; /* NULL when it does not decode */
    uint64_t deliveries;
    char why[200];   /* why it failed, when bad */
    bool bad;        /* cannot be judged or stored */
    bool final;      /* bad and out of attempts: store the failure record */
    size_t first, n; /* its verdicts: slots[first .. first+n) */
    char id_buf[48]; /* event id of an event that does not decode: "seq-<stream seq>" */
} csm_event;

typedef struct csm {
    safety *s;
    int index; /* which consumer thread */
    csm_event ev[CSM_MAX_BATCH];
    judge_verdict *slots; /* (batch, CSM_SLOTS_PER_EVENT) */
    Parley__V1__SafetyVerdict **ptrs;
    int64_t decided_ms;
} csm;

static void sleep_ms(int64_t ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static bool transient(pl_status st)
{
    /* PL_UNSUPPORTED: a history that does not know "safety.store" yet (an upgrade in progress). */
    return st == PL_UNAVAILABLE || st == PL_TIMEOUT || st == PL_BUS || st == PL_OVERLOADED ||
           st == PL_UNSUPPORTED;
}

/* Fills the verdict slots of one event (which decoded). */
static void judge_event(csm *c, csm_event *e, size_t first)
{
    safety *s = c->s;
    const Parley__V1__SafetyEvent *ev = e->ev;
    judge_verdict *slot = &c->slots[first];
    int max_action;
    size_t n = judge_rules(s->rules, ev->text, slot, CSM_SLOTS_PER_EVENT - 1, &max_action);
    if (s->cfg.model && s->cfg.model[0] && ev->text && ev->text[0]) {
        judge_verdict *m = &slot[n];
        pl_status st = model_classify(s, ev->text, m);
        met_inc(met_with(s->m_model, st == PL_OK ? "ok" : pl_status_str(st), NULL), 1);
        if (st == PL_OK)
            n++;
        else
            LOGW(ev->event_id, "model classifier: %s", pl_err_last());
    }
    for (size_t i = 0; i < n; i++) {
        Parley__V1__SafetyVerdict *v = &slot[i].v;
        v->event_id = ev->event_id;
        v->message_id = ev->message_id;
        v->user_id = ev->user_id;
        v->conversation_id = ev->conversation_id;
        v->decided_ms = c->decided_ms;
    }
    e->first = first;
    e->n = n;
}

/* True when `s` is valid UTF-8 of at most `max` bytes (PostgreSQL refuses anything else). */
static bool storable(const char *s, size_t max)
{
    size_t n = s ? strlen(s) : 0;
    return n <= max && utf8_valid(s ? s : "", n);
}

/* The failure record of a poison event: its own ids when they can be stored, else
 * "seq-<stream sequence>" and no user. */
static void fail_record(csm *c, csm_event *e, size_t first)
{
    judge_verdict *j = &c->slots[first];
    j->v = (Parley__V1__SafetyVerdict)PARLEY__V1__SAFETY_VERDICT__INIT;
    snprintf(j->category, sizeof j->category, "failed");
    snprintf(j->detail, sizeof j->detail, "after %" PRIu64 " attempts: %s", e->deliveries, e->why);
    j->v.category = j->category;
    j->v.detail = j->detail;
    j->v.classifier = (char *)"safety";
    j->v.decided_ms = c->decided_ms;
    const Parley__V1__SafetyEvent *ev = e->ev;
    if (ev && ev->event_id && ev->event_id[0] && storable(ev->event_id, 128) &&
        storable(ev->user_id, 128) && storable(ev->message_id, 128) &&
        storable(ev->conversation_id, 128)) {
        j->v.event_id = ev->event_id;
        j->v.user_id = ev->user_id;
        j->v.message_id = ev->message_id;
        j->v.conversation_id = ev->conversation_id;
    } else {
        snprintf(e->id_buf, sizeof e->id_buf, "seq-%" PRIu64, bus_msg_stream_seq(e->msg));
        j->v.event_id = e->id_buf;
        j->v.user_id = (char *)"";
    }
    e->first = first;
    e->n = 1;
}

/* One "safety.store" of the verdicts of events[from..to) that are to be stored. */
static pl_status store(csm *c, size_t from, size_t to, uint64_t *stored)
{
    size_t n = 0;
    for (size_t i = from; i < to; i++) {
        csm_event *e = &c->ev[i];
        if (e->bad && !e->final)
            continue;
        for (size_t k = 0; k < e->n; k++)
            c->ptrs[n++] = &c->slots[e->first + k].v;
    }
    *stored = 0;
    if (n == 0)
        return PL_OK;
    Parley__V1__HistoryRequest rq = PARLEY__V1__HISTORY_REQUEST__INIT;
    rq.op = (char *)"safety.store";
    rq.request_id = (char *)"safety";
    rq.verdicts = c->ptrs;
    rq.n_verdicts = n;
    Parley__V1__HistoryReply *rp = NULL;
    pl_status st = bus_request_pb(dmn_bus(c->s->d), SUBJ_HISTORY_RPC, &rq.base,
                                  &parley__v1__history_reply__descriptor,
                                  c->s->cfg.history_timeout_ms, (ProtobufCMessage **)&rp);
    if (st != PL_OK)
        return PL_ERRF(st == PL_CORRUPT ? PL_ERR : PL_UNAVAILABLE, "history: %s", pl_err_last());
    if (rp->error && rp->error->code != PARLEY__V1__ERROR_CODE__ERROR_CODE_OK) {
        st = wire_status_from_code(rp->error->code);
        PL_ERRF(st, "history refused the verdicts: %s",
                rp->error->message ? rp->error->message : "");
    } else {
        *stored = rp->count;
    }
    protobuf_c_message_free_unpacked(&rp->base, NULL);
    return st;
}

/* Keeps the events' ack timers from running out while history is retried. */
static void keep_alive(csm *c, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (c->ev[i].msg)
            bus_in_progress(c->ev[i].msg);
}

/* Stores with retries while history is unreachable. PL_CANCELLED when stopping. */
static pl_status store_patiently(csm *c, size_t n, size_t from, size_t to, uint64_t *stored)
{
    int64_t pause = CSM_RETRY_MIN_MS, last_progress = dmn_now_ms();
    bool logged = false;
    for (;;) {
        pl_status st = store(c, from, to, stored);
        if (!transient(st))
            return st;
        met_inc(met_with(c->s->m_store, "retry", NULL), 1);
        if (!logged) {
            LOGW(NULL, "verdicts not stored yet, retrying: %s", pl_err_last());
            logged = true;
        }
        if (atomic_load(&c->s->stop))
            return PL_CANCELLED;
        sleep_ms(pause);
        pause = pause * 2 < CSM_RETRY_MAX_MS ? pause * 2 : CSM_RETRY_MAX_MS;
        if (dmn_now_ms() - last_progress >= CSM_PROGRESS_MS) {
            keep_alive(c, n);
            last_progress = dmn_now_ms();
        }
    }
}

/* Marks event i bad with a reason; final when it has used its attempts. */
static void mark_bad(csm *c, csm_event *e, const char *why)
{
    e->bad = true;
    snprintf(e->why, sizeof e->why, "%s", why);
    e->final = e->deliveries >= (uint64_t)c->s->cfg.max_attempts;
}

static void finish_event(csm *c, csm_event *e, bool stored)
{
    safety *s = c->s;
    const char *result;
    pl_status st;
    if (!stored) {
        st = PL_OK; /* left for redelivery (stopping) */
        result = NULL;
    } else if (e->bad && !e->final) {
        st = bus_nak(e->msg, CSM_NAK_DELAY_MS * (int64_t)e->deliveries);
        result = "retried";
        LOGW(e->ev && e->ev->event_id ? e->ev->event_id : NULL,
             "safety event refused (attempt %" PRIu64 " of %" PRId64 "): %s", e->deliveries,
             s->cfg.max_attempts, e->why);
    } else {
        const char *reply = bus_msg_reply(e->msg);
        st = reply ? bus_publish(dmn_bus(s->d), reply, "+ACK", 4) : bus_ack(e->msg);
        result = e->bad ? "failed" : "stored";
        if (e->bad)
            LOGE(e->ev && e->ev->event_id ? e->ev->event_id : NULL,
                 "safety event recorded as failed after %" PRIu64 " attempts: %s", e->deliveries,
                 e->why);
        else
            for (size_t k = 0; k < e->n; k++) {
                const Parley__V1__SafetyVerdict *v = &c->slots[e->first + k].v;
                met_inc(met_with(s->m_verdicts, v->category, safety_action_name(v->action), NULL),
                        1);
            }
    }
    if (st != PL_OK)
        LOGW(NULL, "safety event not acknowledged: %s", pl_err_last());
    if (result)
        met_inc(met_with(s->m_events, result, NULL), 1);
    if (e->ev)
        protobuf_c_message_free_unpacked(&e->ev->base, NULL);
    bus_msg_destroy(e->msg);
    memset(e, 0, sizeof *e);
}

static void handle_batch(csm *c, bus_msg **msgs, int n)
{
    safety *s = c->s;
    c->decided_ms = dmn_wall_ms();
    int64_t t0 = dmn_now_ms();
    size_t slot = 0;
    for (int i = 0; i < n; i++) {
        csm_event *e = &c->ev[i];
        memset(e, 0, sizeof *e);
        e->msg = msgs[i];
        e->deliveries = bus_msg_delivery_count(msgs[i]);
        if (e->deliveries == 0)
            e->deliveries = 1;
        e->ev = (Parley__V1__SafetyEvent *)bus_msg_unpack(msgs[i],
                                                          &parley__v1__safety_event__descriptor);
        if (!e->ev)
            mark_bad(c, e, "the event does not decode as a SafetyEvent");
        else if (!e->ev->event_id || !e->ev->event_id[0] || !e->ev->user_id || !e->ev->user_id[0])
            mark_bad(c, e, "the event lacks its event_id or user_id");
        if (!e->bad)
            judge_event(c, e, slot);
        else if (e->final)
            fail_record(c, e, slot);
        slot += CSM_SLOTS_PER_EVENT;
        if (s->cfg.model && s->cfg.model[0])
            keep_alive(c, (size_t)n); /* the model takes its time */
    }
    uint64_t stored = 0;
    int64_t t1 = dmn_now_ms();
    pl_status st = store_patiently(c, (size_t)n, 0, (size_t)n, &stored);
    int64_t t2 = dmn_now_ms();
    if (st == PL_OK) {
        met_inc(met_with(s->m_store, "ok", NULL), 1);
    } else if (st != PL_CANCELLED) {
        /* History refused the batch: find the events it refuses by storing them one by one. */
        met_inc(met_with(s->m_store, "refused", NULL), 1);
        LOGW(NULL, "a batch of %d safety events was refused (%s); storing one by one", n,
             pl_err_last());
        for (int i = 0; i < n && st != PL_CANCELLED; i++) {
            csm_event *e = &c->ev[i];
            if (e->bad && !e->final)
                continue;
            st = store_patiently(c, (size_t)n, (size_t)i, (size_t)i + 1, &stored);
            if (st == PL_OK || st == PL_CANCELLED)
                continue;
            if (e->bad) { /* even the failure record was refused: give up on this one */
                LOGE(NULL, "cannot record a failed safety event: %s", pl_err_last());
                bus_term(e->msg);
                finish_event(c, e, false);
                continue;
            }
            mark_bad(c, e, pl_err_message());
            if (e->final) {
                fail_record(c, e, e->first);
                st = store_patiently(c, (size_t)n, (size_t)i, (size_t)i + 1, &stored);
                if (st != PL_OK && st != PL_CANCELLED) {
                    LOGE(NULL, "cannot record a failed safety event: %s", pl_err_last());
                    bus_term(e->msg);
                    finish_event(c, e, false);
                }
            }
        }
        if (st != PL_CANCELLED)
            st = PL_OK;
    }
    for (int i = 0; i < n; i++)
        if (c->ev[i].msg)
            finish_event(c, &c->ev[i], st == PL_OK);
    LOGD(NULL,
         "batch of %d: judged in %" PRId64 " ms, stored (%" PRIu64 " rows) in %" PRId64
         " ms, acknowledged in %" PRId64 " ms",
         n, t1 - t0, stored, t2 - t1, dmn_now_ms() - t2);
}

static void refresh_lag(safety *s)
{
    uint64_t pending = 0, ack_pending = 0;
    if (bus_consumer_lag(dmn_bus(s->d), STREAM_SAFETY, CONSUMER_SAFETY, &pending, &ack_pending) !=
        PL_OK)
        return;
    met_set(met_with(s->m_lag, "pending", NULL), (double)pending);
    met_set(met_with(s->m_lag, "ack_pending", NULL), (double)ack_pending);
}

static void csm_free(csm *c)
{
    if (!c)
        return;
    free(c->slots);
    free(c->ptrs);
    free(c);
}

static void *consumer_main(void *arg)
{
    csm *c = arg;
    safety *s = c->s;
    bus_msg *msgs[CSM_MAX_BATCH];
    int64_t last_lag = 0;
    while (!atomic_load(&s->stop)) {
        if (!bgtask_done(s->bind)) {
            sleep_ms(100);
            continue;
        }
        if (c->index == 0 && dmn_now_ms() - last_lag >= CSM_LAG_EVERY_MS) {
            refresh_lag(s);
            last_lag = dmn_now_ms();
        }
        int n = 0;
        pl_status st =
            bus_fetch(s->pulls[c->index], (int)s->cfg.batch, CSM_FETCH_WAIT_MS, msgs, &n);
        if (st == PL_TIMEOUT || (st == PL_OK && n == 0))
            continue;
        if (st != PL_OK) {
            LOGD(NULL, "fetch: %s", pl_err_last());
            sleep_ms(500);
            continue;
        }
        handle_batch(c, msgs, n);
    }
    csm_free(c);
    return NULL;
}

static pl_status bind_consumer(void *arg)
{
    safety *s = arg;
    for (int i = 0; i < (int)s->cfg.threads; i++) {
        if (s->pulls[i])
            continue;
        pl_status st =
            bus_pull_create(dmn_bus(s->d), STREAM_SAFETY, CONSUMER_SAFETY, NULL, &s->pulls[i]);
        if (st != PL_OK)
            return st;
    }
    return PL_OK;
}

pl_status consumer_start(safety *s)
{
    if (s->cfg.batch > CSM_MAX_BATCH)
        return PL_ERRF(PL_INVALID, "--batch is at most %d", CSM_MAX_BATCH);
    if (s->cfg.threads < 1 || s->cfg.threads > SAFETY_MAX_THREADS)
        return PL_ERRF(PL_INVALID, "--threads is 1 to %d", SAFETY_MAX_THREADS);
    pl_status st = bgtask_start("safety consumer", bind_consumer, s, 1000, &s->bind);
    for (int i = 0; st == PL_OK && i < (int)s->cfg.threads; i++) {
        csm *c = calloc(1, sizeof *c);
        size_t slots = (size_t)s->cfg.batch * CSM_SLOTS_PER_EVENT;
        if (c) {
            c->s = s;
            c->index = i;
            c->slots = calloc(slots, sizeof *c->slots);
            c->ptrs = calloc(slots, sizeof *c->ptrs);
        }
        if (!c || !c->slots || !c->ptrs) {
            csm_free(c);
            return PL_ERRF(PL_NOMEM, "out of memory");
        }
        if (pthread_create(&s->threads[i], NULL, consumer_main, c) != 0) {
            csm_free(c);
            return PL_ERRF(PL_ERR, "cannot start a consumer thread");
        }
        s->n_threads++;
    }
    return st;
}

void consumer_stop(safety *s)
{
    atomic_store(&s->stop, true);
    for (int i = 0; i < s->n_threads; i++)
        pthread_join(s->threads[i], NULL);
    s->n_threads = 0;
    bgtask_stop(s->bind);
    s->bind = NULL;
    for (int i = 0; i < SAFETY_MAX_THREADS; i++) {
        bus_pull_destroy(s->pulls[i]);
        s->pulls[i] = NULL;
    }
}

bool consumer_ready(safety *s, char *why, size_t cap)
{
    if (s->bind && bgtask_done(s->bind))
        return true;
    if (s->bind)
        bgtask_error(s->bind, why, cap);
    return false;
}
