/* moderate.c — chat's side of safety: safety events off the turn's path, and the optional
 * blocking pre-check.
 *
 * Events: every stored user message and every finished answer becomes a SafetyEvent (event id
 * = the message id, which is also the JetStream message id, so a repeated publish within the
 * stream's duplicate window is dropped by the server) on the PARLEY_SAFETY work queue. The
 * caller only packs the event into a bounded in-memory queue (--safety-queue events) and goes
 * on: a publisher thread publishes with JetStream acknowledgement, retrying while NATS is away.
 * A full queue drops the new event (counted in parley_chat_safety_events_total{result=
 * "dropped"} and logged) rather than slow or fail a turn. On stop the thread flushes for up to
 * MOD_FLUSH_MS, then drops the rest (counted).
 *
 * Pre-check (--safety-precheck, off by default): one SafetyCheckRequest to parley-safety with
 * a deadline (--safety-precheck-timeout) before a prompt is queued. Its verdict is "allow" or
 * "block"; when safety does not answer in time (or no instance listens) the policy
 * --safety-precheck-on-timeout decides (allow or refuse), counted as timeout_allow /
 * timeout_refuse. The latency of every pre-check is observed in a histogram.
 *
 * Threading: mod_event and mod_precheck run on turn / record threads; the queue is guarded by
 * one mutex; the publisher thread owns the publishing. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "chat.h"
#include "log.h"
#include "safetycheck.h"
#include "subjects.h"
#include "sync.h"

#define MOD_PUBLISH_TIMEOUT_MS 5000
#define MOD_RETRY_MAX_MS       2000
#define MOD_FLUSH_MS           2000

typedef struct mod_item {
    uint8_t *data; /* a packed SafetyEvent */
    size_t len;
    char id[64]; /* its event id */
} mod_item;

struct mod_pub {
    chat *c;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    mod_item *ring;
    size_t cap, head, n;
    bool stop;
    pthread_t thread;
};

static void count(chat *c, const char *result)
{
    met_inc(met_with(c->m_safety_events, result, NULL), 1);
}

static void *publisher_main(void *arg)
{
    mod_pub *p = arg;
    int64_t retry = 100, stop_at = 0;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (p->n == 0 && !p->stop)
            pthread_cond_wait(&p->cv, &p->mu);
        if (p->n == 0)
            break; /* stopping with nothing left */
        if (p->stop && !stop_at)
            stop_at = dmn_now_ms() + MOD_FLUSH_MS;
        if (stop_at && dmn_now_ms() > stop_at)
            break;
        mod_item it = p->ring[p->head];
        pthread_mutex_unlock(&p->mu);
        pl_status s = bus_js_publish(dmn_bus(p->c->d), SUBJ_SAFETY_EVENTS, it.data, it.len, it.id,
                                     MOD_PUBLISH_TIMEOUT_MS);
        pthread_mutex_lock(&p->mu);
        if (s == PL_OK) {
            free(it.data);
            p->head = (p->head + 1) % p->cap;
            p->n--;
            retry = 100;
            count(p->c, "published");
            continue;
        }
        LOGW(it.id, "safety event not published yet (%zu waiting): %s", p->n, pl_err_last());
        struct timespec until = sync_deadline(retry);
        pthread_cond_timedwait(&p->cv, &p->mu, &until);
        retry = retry * 2 < MOD_RETRY_MAX_MS ? retry * 2 : MOD_RETRY_MAX_MS;
    }
    size_t dropped = p->n;
    while (p->n) {
        free(p->ring[p->head].data);
        p->head = (p->head + 1) % p->cap;
        p->n--;
    }
    pthread_mutex_unlock(&p->mu);
    if (dropped) {
        LOGW(NULL, "%zu safety events dropped at shutdown", dropped);
        met_inc(met_with(p->c->m_safety_events, "dropped", NULL), (double)dropped);
    }
    return NULL;
}

pl_status mod_start(chat *c)
{
    mod_pub *p = calloc(1, sizeof *p);
    if (!p)
        return PL_ERRF(PL_NOMEM, "out of memory");
    p->c = c;
    p->cap = (size_t)c->cfg.safety_queue;
    p->ring = calloc(p->cap, sizeof *p->ring);
    if (!p->ring) {
        free(p);
        return PL_ERRF(PL_NOMEM, "out of memory");
    }
    pthread_mutex_init(&p->mu, NULL);
    sync_cond_init(&p->cv);
    if (pthread_create(&p->thread, NULL, publisher_main, p) != 0) {
        free(p->ring);
        free(p);
        return PL_ERRF(PL_ERR, "cannot start the safety publisher");
    }
    c->mod = p;
    return PL_OK;
}

void mod_stop(chat *c)
{
    mod_pub *p = c->mod;
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    p->stop = true;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    pthread_join(p->thread, NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p->ring);
    free(p);
    c->mod = NULL;
}

void mod_event(chat *c, const char *user_id, const char *conversation_id, const char *message_id,
               Parley__V1__Role role, const char *model, const char *text)
{
    mod_pub *p = c->mod;
    if (!p || !message_id || !message_id[0] || !user_id || !user_id[0])
        return;
    Parley__V1__SafetyEvent ev = PARLEY__V1__SAFETY_EVENT__INIT;
    ev.event_id = (char *)message_id;
    ev.user_id = (char *)user_id;
    ev.conversation_id = (char *)(conversation_id ? conversation_id : "");
    ev.message_id = (char *)message_id;
    ev.role = role;
    ev.model = (char *)(model ? model : "");
    ev.text = (char *)(text ? text : "");
    ev.created_ms = dmn_wall_ms();
    size_t len = parley__v1__safety_event__get_packed_size(&ev);
    uint8_t *data = malloc(len ? len : 1);
    if (!data) {
        count(c, "dropped");
        return;
    }
    parley__v1__safety_event__pack(&ev, data);
    pthread_mutex_lock(&p->mu);
    bool full = p->n == p->cap || p->stop;
    if (!full) {
        mod_item *it = &p->ring[(p->head + p->n) % p->cap];
        it->data = data;
        it->len = len;
        snprintf(it->id, sizeof it->id, "%s", message_id);
        p->n++;
        pthread_cond_signal(&p->cv);
    }
    pthread_mutex_unlock(&p->mu);
    if (full) {
        free(data);
        count(c, "dropped");
        LOGW(message_id, "safety event dropped: the publish queue is full");
    }
}

mod_verdict mod_precheck(chat *c, const char *rid, const char *user_id, const char *text,
                         char *category, size_t cap)
{
    snprintf(category, cap, "%s", "");
    if (!c->cfg.safety_precheck)
        return MOD_ALLOW;
    sfc_answer a = sfc_check(dmn_bus(c->d), rid, user_id, text, c->cfg.safety_precheck_timeout_ms,
                             c->m_precheck_latency, category, cap);
    bool refuse = strcmp(c->cfg.safety_precheck_on_timeout, "refuse") == 0;
    mod_verdict v = a == SFC_BLOCK   ? MOD_BLOCK
                    : a == SFC_ALLOW ? MOD_ALLOW
                    : refuse         ? MOD_REFUSE
                                     : MOD_ALLOW;
    const char *result = a == SFC_BLOCK   ? "block"
                         : a == SFC_ALLOW ? "allow"
                         : refuse         ? "timeout_refuse"
                                          : "timeout_allow";
    met_inc(met_with(c->m_precheck, result, NULL), 1);
    return v;
}
