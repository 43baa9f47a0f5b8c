/* product.c — helpers shared by the product API's route modules (see product.h). */
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#include <string.h>

#include "bus.h"
#include "log.h"
#include "product.h"
#include "subjects.h"
#include "wire.h"

#define GW_HISTORY_TIMEOUT_MS 5000

pl_status gw_history(gw *g, const char *request_id, Parley__V1__HistoryRequest *rq,
                     Parley__V1__HistoryReply **rp)
{
    rq->request_id = (char *)request_id;
    *rp = NULL;
    Parley__V1__HistoryReply *rep = NULL;
    pl_status s = bus_request_pb(dmn_bus(g->d), SUBJ_HISTORY_RPC, &rq->base,
                                 &parley__v1__history_reply__descriptor, GW_HISTORY_TIMEOUT_MS,
                                 (ProtobufCMessage **)&rep);
    if (s != PL_OK) {
        LOGW(request_id, "history %s: %s", rq->op, pl_err_last());
        return PL_ERRF(PL_UNAVAILABLE, "the history service is not available right now");
    }
    if (rep->error && rep->error->code != PARLEY__V1__ERROR_CODE__ERROR_CODE_OK) {
        s = wire_status_from_code(rep->error->code);
        PL_ERRF(s, "%s", rep->error->message ? rep->error->message : "failed");
        protobuf_c_message_free_unpacked(&rep->base, NULL);
        return s;
    }
    *rp = rep;
    return PL_OK;
}

enum MHD_Result gw_reply_status(http_req *r, pl_status s, const char *message)
{
    int status = wire_http_status(wire_code_from_status(s));
    const char *code = s == PL_NOT_FOUND         ? "not_found"
                       : s == PL_UNAUTHENTICATED ? "unauthenticated"
                       : s == PL_PERMISSION      ? "forbidden"
                       : s == PL_RATE_LIMITED    ? "rate_limited"
                       : s == PL_EXISTS          ? "conflict"
                       : s == PL_INVALID         ? "invalid_request"
                       : s == PL_TOO_LARGE       ? "too_large"
                       : s == PL_UNSUPPORTED     ? "unsupported"
                       : status >= 500           ? "server_error"
                                                 : "error";
    return http_reply_error(r, (unsigned)status, message, NULL, code,
                            status == 429 || status == 503 ? 1 : 0);
}

void gw_quota_headers(struct MHD_Response *resp, const Parley__V1__Quota *q)
{
    if (!q)
        return;
    char v[32];
    snprintf(v, sizeof v, "%u", q->requests_limit);
    MHD_add_response_header(resp, "X-RateLimit-Limit-Requests", v);
    snprintf(v, sizeof v, "%u", q->requests_left);
    MHD_add_response_header(resp, "X-RateLimit-Remaining-Requests", v);
    snprintf(v, sizeof v, "%llu", (unsigned long long)q->tokens_limit);
    MHD_add_response_header(resp, "X-RateLimit-Limit-Tokens", v);
    snprintf(v, sizeof v, "%llu", (unsigned long long)q->tokens_left);
    MHD_add_response_header(resp, "X-RateLimit-Remaining-Tokens", v);
    snprintf(v, sizeof v, "%lld", (long long)q->day_reset_ms / 1000);
    MHD_add_response_header(resp, "X-RateLimit-Reset-Tokens", v);
}

enum MHD_Result gw_fail(http_req *r, pl_status s)
{
    const char *m = pl_err_message();
    return gw_reply_status(r, s, m[0] ? m : pl_status_str(s));
}

enum MHD_Result gw_send_json(http_req *r, unsigned status, cJSON *j, const Parley__V1__Quota *q,
                             const char *cookie)
{
    char *text = j ? cJSON_PrintUnformatted(j) : NULL;
    cJSON_Delete(j);
    if (!text)
        return http_reply_error(r, 500, "out of memory", NULL, "server_error", 0);
    return gw_send_text(r, status, text, strlen(text), q, cookie);
}

enum MHD_Result gw_send_text(http_req *r, unsigned status, char *text, size_t len,
                             const Parley__V1__Quota *q, const char *cookie)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(text);
        return MHD_NO;
    }
    MHD_add_response_header(resp, "Content-Type", "application/json");
    MHD_add_response_header(resp, "Cache-Control", "no-store");
    if (cookie)
        MHD_add_response_header(resp, "Set-Cookie", cookie);
    gw_quota_headers(resp, q);
    return http_queue(r, status, resp);
}

cJSON *gw_body_object(http_req *r, bool empty_ok, enum MHD_Result *ret)
{
    size_t len = 0;
    const char *body = http_body(r, &len);
    if (len == 0 && empty_ok)
        return cJSON_CreateObject();
    const char *ct = http_header(r, "Content-Type");
    if (!ct || strncasecmp(ct, "application/json", 16) != 0) {
        *ret = http_reply_error(r, 415, "send the body as Content-Type: application/json", NULL,
                                "unsupported_media_type", 0);
        return NULL;
    }
    cJSON *j = cJSON_ParseWithLength(body, len);
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        *ret =
            http_reply_error(r, 400, "the body must be a JSON object", NULL, "invalid_request", 0);
        return NULL;
    }
    return j;
}

void gw_add_time(cJSON *o, const char *name, int64_t ms)
{
    if (ms) {
        /* Raw text: cJSON's number printing ("%1.15g" plus a re-parse) is slow in bulk. */
        char buf[24];
        snprintf(buf, sizeof buf, "%lld", (long long)(ms / 1000));
        cJSON_AddRawToObject(o, name, buf);
    } else {
        cJSON_AddNullToObject(o, name);
    }
}
