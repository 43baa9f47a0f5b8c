/* safetycheck.c — the blocking safety pre-check's client (see safetycheck.h). */
#include "safetycheck.h"

#include <stdio.h>
#include <time.h>

#include "log.h"
#include "parley.pb-c.h"
#include "subjects.h"

static double mono_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

sfc_answer sfc_check(bus *b, const char *rid, const char *user_id, const char *text,
                     int64_t timeout_ms, met_family *latency, char *category, size_t cap)
{
    snprintf(category, cap, "%s", "");
    Parley__V1__SafetyCheckRequest rq = PARLEY__V1__SAFETY_CHECK_REQUEST__INIT;
    rq.request_id = (char *)rid;
    rq.user_id = (char *)user_id;
    rq.text = (char *)text;
    Parley__V1__SafetyCheckReply *rep = NULL;
    double t0 = mono_s();
    pl_status s =
        bus_request_pb(b, SUBJ_SAFETY_CHECK, &rq.base, &parley__v1__safety_check_reply__descriptor,
                       timeout_ms, (ProtobufCMessage **)&rep);
    if (latency)
        met_family_observe(latency, mono_s() - t0);
    sfc_answer a = SFC_ALLOW;
    if (s != PL_OK || (rep->error && rep->error->code != PARLEY__V1__ERROR_CODE__ERROR_CODE_OK)) {
        LOGW(rid, "safety pre-check without an answer: %s",
             s != PL_OK ? pl_err_last() : rep->error->message);
        a = SFC_NO_ANSWER;
    } else if (rep->action == PARLEY__V1__SAFETY_ACTION__SAFETY_ACTION_BLOCK) {
        a = SFC_BLOCK;
        snprintf(category, cap, "%s", "blocked content");
        for (size_t i = 0; i < rep->n_verdicts; i++)
            if (rep->verdicts[i]->action == PARLEY__V1__SAFETY_ACTION__SAFETY_ACTION_BLOCK) {
                snprintf(category, cap, "%s", rep->verdicts[i]->category);
                break;
            }
    }
    if (rep)
        protobuf_c_message_free_unpacked(&rep->base, NULL);
    return a;
}
