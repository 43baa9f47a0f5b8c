/* chat.c — the RPCs every chat module makes: history, inference submission, model list.
 *
 * Each call blocks its caller (a libnats delivery thread or the pull loop's thread) for at
 * most its timeout. Replies are unpacked with the default allocator and owned by the caller. */
#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "chat.h"
#include "log.h"
#include "subjects.h"
#include "wire.h"

#define CHAT_INFER_TIMEOUT_MS 5000

pl_status chat_history(chat *c, const char *request_id, Parley__V1__HistoryRequest *rq,
                       Parley__V1__HistoryReply **rp)
{
    rq->request_id = (char *)request_id;
    *rp = NULL;
    Parley__V1__HistoryReply *rep = NULL;
    pl_status s = bus_request_pb(dmn_bus(c->d), SUBJ_HISTORY_RPC, &rq->base,
                                 &parley__v1__history_reply__descriptor, c->cfg.history_timeout_ms,
                                 (ProtobufCMessage **)&rep);
    if (s != PL_OK) {
        LOGW(request_id, "history %s: %s", rq->op, pl_err_last());
        return PL_ERRF(PL_UNAVAILABLE, "the history service is not available right now");
    }
    *rp = rep;
    if (rep->error && rep->error->code != PARLEY__V1__ERROR_CODE__ERROR_CODE_OK) {
        s = wire_status_from_code(rep->error->code);
        return PL_ERRF(s, "%s", rep->error->message ? rep->error->message : "failed");
    }
    return PL_OK;
}

pl_status chat_submit(chat *c, const Parley__V1__InferRequest *ir, uint32_t *retry_after_ms)
{
    if (retry_after_ms)
        *retry_after_ms = 0;
    Parley__V1__InferAdmit *adm = NULL;
    pl_status s = bus_request_pb(dmn_bus(c->d), SUBJ_INFER_SUBMIT, &ir->base,
                                 &parley__v1__infer_admit__descriptor, CHAT_INFER_TIMEOUT_MS,
                                 (ProtobufCMessage **)&adm);
    if (s != PL_OK) {
        LOGW(ir->request_id, "submit: %s", pl_err_last());
        return PL_ERRF(PL_UNAVAILABLE, "the inference service is not available right now");
    }
    if (adm->error && adm->error->code != PARLEY__V1__ERROR_CODE__ERROR_CODE_OK) {
        s = wire_status_from_code(adm->error->code);
        PL_ERRF(s, "%s", adm->error->message ? adm->error->message : "refused");
        if (retry_after_ms)
            *retry_after_ms = adm->error->retry_after_ms;
    }
    protobuf_c_message_free_unpacked(&adm->base, NULL);
    return s;
}

pl_status chat_default_model(chat *c, char *buf, size_t cap)
{
    if (c->cfg.default_model && c->cfg.default_model[0]) {
        snprintf(buf, cap, "%s", c->cfg.default_model);
        return PL_OK;
    }
    Parley__V1__ModelListRequest req = PARLEY__V1__MODEL_LIST_REQUEST__INIT;
    Parley__V1__ModelList *list = NULL;
    pl_status s = bus_request_pb(dmn_bus(c->d), SUBJ_INFER_MODELS, &req.base,
                                 &parley__v1__model_list__descriptor, CHAT_INFER_TIMEOUT_MS,
                                 (ProtobufCMessage **)&list);
    if (s != PL_OK)
        return PL_ERRF(PL_UNAVAILABLE, "the inference service is not available right now");
    s = list->n_models ? PL_OK : PL_ERRF(PL_UNAVAILABLE, "no model is being served right now");
    if (s == PL_OK)
        snprintf(buf, cap, "%s", list->models[0]->id);
    protobuf_c_message_free_unpacked(&list->base, NULL);
    return s;
}

const char *chat_plain_message(const char *msg)
{
    for (;;) {
        const char *p = msg;
        while (isalnum((unsigned char)*p) || *p == '_' || *p == '-' || *p == '.')
            p++;
        if (p - msg < 3 || strncmp(p - 2, ".c", 2) != 0 || *p != ':')
            return msg;
        const char *q = p + 1;
        while (isdigit((unsigned char)*q))
            q++;
        if (q == p + 1 || q[0] != ':' || q[1] != ' ')
            return msg;
        msg = q + 2;
    }
}
