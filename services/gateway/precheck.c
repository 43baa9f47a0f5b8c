/* precheck.c — the blocking safety pre-check of the OpenAI-compatible API (/v1).
 *
 * The product API's turns are checked by chat (services/chat/moderate.c); /v1 requests go
 * from the gateway straight to the infer-gateway, so the gateway asks parley-safety itself,
 * with the same options and meaning as chat's: off unless --safety-precheck; the last user
 * message is checked with a deadline (--safety-precheck-timeout); a prompt that safety blocks
 * is answered without reaching a model, by one out-of-band delta on the request's own delta
 * subject carrying the refusal text and finish reason CONTENT_FILTER (so the usual /v1
 * formatting answers it: "finish_reason": "content_filter", streamed or not); no answer in time
 * applies --safety-precheck-on-timeout (allow, or refuse: 503).
 *
 * Threading: called on an MHD pool thread; blocks for at most the deadline. */
#include <stdio.h>
#include <string.h>

#include "log.h"
#include "precheck.h"
#include "safetycheck.h"
#include "subjects.h"

gw_precheck_result gw_precheck(gw *g, const char *rid, const char *user_id,
                               const Parley__V1__InferRequest *ir, const char *delta_subject)
{
    if (!g->cfg.safety_precheck)
        return GW_PRECHECK_ALLOW;
    const char *text = NULL;
    for (size_t i = ir->n_messages; i-- > 0;)
        if (ir->messages[i]->role == PARLEY__V1__ROLE__ROLE_USER) {
            text = ir->messages[i]->content;
            break;
        }
    if (!text || !text[0])
        return GW_PRECHECK_ALLOW;
    char category[128];
    sfc_answer ans = sfc_check(dmn_bus(g->d), rid, user_id, text, g->cfg.safety_precheck_timeout_ms,
                               g->m_precheck_latency, category, sizeof category);
    gw_precheck_result res = GW_PRECHECK_ALLOW;
    const char *result = "allow";
    if (ans == SFC_NO_ANSWER) {
        bool refuse = strcmp(g->cfg.safety_precheck_on_timeout, "refuse") == 0;
        res = refuse ? GW_PRECHECK_REFUSED : GW_PRECHECK_ALLOW;
        result = refuse ? "timeout_refuse" : "timeout_allow";
    } else if (ans == SFC_BLOCK) {
        char msg[256];
        snprintf(msg, sizeof msg,
                 "This message was not sent to the model: it was blocked by the content policy "
                 "(%s).",
                 category);
        Parley__V1__TokenDelta d = PARLEY__V1__TOKEN_DELTA__INIT;
        Parley__V1__Usage u = PARLEY__V1__USAGE__INIT;
        d.request_id = (char *)rid;
        d.seq = 0; /* out of band: no worker */
        d.text = msg;
        d.finish_reason = PARLEY__V1__FINISH_REASON__FINISH_REASON_CONTENT_FILTER;
        d.usage = &u;
        d.model = ir->model;
        if (bus_publish_pb(dmn_bus(g->d), delta_subject, &d.base) != PL_OK) {
            LOGW(rid, "cannot send the refusal: %s", pl_err_last());
            res = GW_PRECHECK_REFUSED;
        } else {
            LOGI(rid, "/v1 prompt blocked by the pre-check (%s)", category);
            res = GW_PRECHECK_BLOCKED;
        }
        result = "block";
    }
    met_inc(met_with(g->m_precheck, result, NULL), 1);
    return res;
}
