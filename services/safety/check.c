/* check.c — the blocking pre-check: SafetyCheckRequest → SafetyCheckReply, with the rule set.
 *
 * chat asks (request-reply on SUBJ_SAFETY_CHECK, queue group QUEUE_SAFETY, so every instance
 * shares the load) before it queues a prompt, when its pre-check is on. Only the rule set
 * answers here: it takes microseconds, where the model classifier would take the prompt's
 * whole deadline. The reply's action is the strongest of the matching categories' actions
 * (none when nothing matched) and its verdicts say which categories matched. Nothing is stored
 * here: the prompt's safety event, judged by the consumer, is the record.
 *
 * Threading: SAFETY_CHECK_THREADS subscriptions, each answered on its libnats delivery thread;
 * the rule set is read-only. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "safety.h"
#include "subjects.h"
#include "wire.h"

static void on_check(bus_msg *m, void *arg)
{
    safety *s = arg;
    struct timespec a;
    clock_gettime(CLOCK_MONOTONIC, &a);
    Parley__V1__SafetyCheckRequest *rq = (Parley__V1__SafetyCheckRequest *)bus_msg_unpack(
        m, &parley__v1__safety_check_request__descriptor);
    Parley__V1__SafetyCheckReply rep = PARLEY__V1__SAFETY_CHECK_REPLY__INIT;
    Parley__V1__Error err;
    judge_verdict slots[RULES_MAX_CATEGORIES];
    Parley__V1__SafetyVerdict *ptrs[RULES_MAX_CATEGORIES];
    int action = RULES_NONE;
    if (!rq) {
        wire_error_init(&err, PL_INVALID, "the pre-check request does not parse");
        rep.error = &err;
    } else {
        size_t n = judge_rules(s->rules, rq->text, slots, RULES_MAX_CATEGORIES, &action);
        for (size_t i = 0; i < n; i++) {
            if (slots[i].v.action == PARLEY__V1__SAFETY_ACTION__SAFETY_ACTION_NONE)
                continue; /* "none": nothing matched */
            slots[i].v.user_id = rq->user_id;
            slots[i].v.decided_ms = dmn_wall_ms();
            ptrs[rep.n_verdicts++] = &slots[i].v;
        }
        rep.verdicts = ptrs;
        rep.action = (Parley__V1__SafetyAction)action;
    }
    if (bus_respond_pb(dmn_bus(s->d), m, &rep.base) != PL_OK)
        LOGW(rq ? rq->request_id : NULL, "cannot answer a pre-check: %s", pl_err_last());
    struct timespec b;
    clock_gettime(CLOCK_MONOTONIC, &b);
    double secs = (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9;
    met_family_observe(s->m_check_latency, secs);
    met_inc(met_with(s->m_checks, rq ? safety_action_name(action) : "bad", NULL), 1);
    if (action == RULES_BLOCK)
        LOGI(rq->request_id, "pre-check blocks a prompt (%.3f ms)", secs * 1e3);
    if (rq)
        protobuf_c_message_free_unpacked(&rq->base, NULL);
    bus_msg_destroy(m);
}

pl_status check_start(safety *s)
{
    pl_status st = PL_OK;
    for (int i = 0; i < SAFETY_CHECK_THREADS && st == PL_OK; i++)
        st = bus_subscribe(dmn_bus(s->d), SUBJ_SAFETY_CHECK, QUEUE_SAFETY, on_check, s,
                           &s->check_subs[i]);
    return st;
}

void check_stop(safety *s)
{
    for (int i = 0; i < SAFETY_CHECK_THREADS; i++) {
        bus_unsubscribe(s->check_subs[i]);
        s->check_subs[i] = NULL;
    }
}
