/* openai.c — the OpenAI-compatible API: GET /v1/models (chat completions join later).
 *
 * Handlers run on MHD pool threads and make blocking NATS requests with a short timeout; only
 * streams (which suspend their connection) may wait longer. */
#include <stdlib.h>
#include <string.h>

#include "bus.h"
#include "gateway.h"
#include "log.h"
#include "parley.pb-c.h"
#include "subjects.h"

#define OAI_RPC_TIMEOUT_MS 3000

enum MHD_Result oai_models(http_req *r, void *arg)
{
    gw *g = arg;
    enum MHD_Result ret;
    if (!gw_authorize(g, r, &ret))
        return ret;

    Parley__V1__ModelListRequest req = PARLEY__V1__MODEL_LIST_REQUEST__INIT;
    req.request_id = (char *)http_request_id(r);
    Parley__V1__ModelList *list = NULL;
    pl_status s = bus_request_pb(dmn_bus(g->d), SUBJ_INFER_MODELS, &req.base,
                                 &parley__v1__model_list__descriptor, OAI_RPC_TIMEOUT_MS,
                                 (ProtobufCMessage **)&list);
    if (s != PL_OK) {
        LOGW(http_request_id(r), "model list: %s: %s", pl_status_str(s), pl_err_last());
        return http_reply_error(r, 503, "the inference service is not available right now", NULL,
                                "service_unavailable", 2);
    }
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "object", "list");
    cJSON *data = cJSON_AddArrayToObject(root, "data");
    for (size_t i = 0; i < list->n_models; i++) {
        const Parley__V1__ModelInfo *m = list->models[i];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "id", m->id);
        cJSON_AddStringToObject(o, "object", "model");
        cJSON_AddNumberToObject(o, "created", (double)m->created);
        cJSON_AddStringToObject(o, "owned_by", "parley");
        cJSON *meta = cJSON_AddObjectToObject(o, "parley");
        cJSON_AddNumberToObject(meta, "workers", m->workers);
        cJSON_AddNumberToObject(meta, "context_length", m->context_length);
        cJSON_AddNumberToObject(meta, "free_slots", m->free_slots);
        cJSON_AddItemToArray(data, o);
    }
    protobuf_c_message_free_unpacked(&list->base, NULL);
    ret = http_reply_json(r, 200, root);
    cJSON_Delete(root);
    return ret;
}
