/* openai.c — the OpenAI-compatible API: GET /v1/models and POST /v1/chat/completions.
 *
 * Chat completions: the body is validated here (OpenAI-shaped 400s naming the parameter), turned
 * into an InferRequest, and submitted to the infer-gateway after subscribing to the request's
 * delta subject (so no delta can be missed). The connection is then suspended until the first
 * delta: an error before any token (prompt too long, no worker) still becomes a proper HTTP
 * status. A stream then goes out as SSE chunks exactly as OpenAI shapes them; a non-stream
 * answer is collected and sent as one JSON body. Handlers run on MHD pool threads; only the
 * admission RPC blocks (briefly). With --safety-precheck the last user message is checked
 * first (precheck.c): a blocked prompt is answered by one delta with finish reason
 * "content_filter" and never submitted. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus.h"
#include "gateway.h"
#include "log.h"
#include "parley.pb-c.h"
#include "precheck.h"
#include "stream.h"
#include "subjects.h"
#include "wire.h"

#define OAI_RPC_TIMEOUT_MS 3000
#define OAI_MAX_STOP       4
#define OAI_MAX_MESSAGES   1024

enum MHD_Result oai_models(http_req *r, void *arg)
{
    gw *g = arg;
    enum MHD_Result ret;
    char user_id[64];
    if (!gw_authorize(g, r, user_id, &ret))
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
        cJSON_AddNumberToObject(meta, "queued", m->queued);
        cJSON_AddItemToArray(data, o);
    }
    protobuf_c_message_free_unpacked(&list->base, NULL);
    ret = http_reply_json(r, 200, root);
    cJSON_Delete(root);
    return ret;
}

/* --- request parsing ---------------------------------------------------------------------------
 */

/* A parsed request: everything the InferRequest points to lives here. */
typedef struct oai_req {
    cJSON *json; /* owns the strings below */
    Parley__V1__InferRequest ir;
    Parley__V1__SamplingParams sp;
    Parley__V1__ChatMessage msgs[OAI_MAX_MESSAGES];
    Parley__V1__ChatMessage *msg_ptrs[OAI_MAX_MESSAGES];
    char *contents[OAI_MAX_MESSAGES]; /* joined text parts, owned */
    char *stops[OAI_MAX_STOP];
    char rid[33];
    char user_id[64];
    char delta_subject[128];
    bool stream, include_usage;
} oai_req;

static void oai_req_free(oai_req *q)
{
    if (!q)
        return;
    for (size_t i = 0; i < OAI_MAX_MESSAGES; i++)
        free(q->contents[i]);
    cJSON_Delete(q->json);
    free(q);
}

typedef struct bad {
    char msg[256];
    const char *param;
} bad;

static bool fail(bad *b, const char *param, const char *msg)
{
    snprintf(b->msg, sizeof b->msg, "%s", msg);
    b->param = param;
    return false;
}

/* fail() with "'name' must ..." style messages built from the parameter name. */
static bool fail_named(bad *b, const char *param, const char *name, const char *what)
{
    char msg[200];
    snprintf(msg, sizeof msg, "'%s' %s", name, what);
    return fail(b, param, msg);
}

/* Reads an optional number within [lo, hi]; null means "not given". */
static bool opt_number(cJSON *root, const char *name, double lo, double hi, bool lo_open,
                       double *out, bool *given, bad *b)
{
    cJSON *v = cJSON_GetObjectItemCaseSensitive(root, name);
    *given = false;
    if (!v || cJSON_IsNull(v))
        return true;
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble))
        return fail_named(b, name, name, "must be a number");
    double x = v->valuedouble;
    if (x > hi || x < lo || (lo_open && x == lo)) {
        char buf[160];
        snprintf(buf, sizeof buf, "'%s' must be %s %g and at most %g", name,
                 lo_open ? "greater than" : "at least", lo, hi);
        return fail(b, name, buf);
    }
    *out = x;
    *given = true;
    return true;
}

static bool opt_int(cJSON *root, const char *name, double lo, double hi, double *out, bool *given,
                    bad *b)
{
    if (!opt_number(root, name, lo, hi, false, out, given, b))
        return false;
    if (*given && floor(*out) != *out)
        return fail_named(b, name, name, "must be an integer");
    return true;
}

/* Message content: a string, or an array of {"type":"text","text":...} parts. */
static bool message_text(cJSON *content, char **out, bad *b)
{
    if (cJSON_IsString(content)) {
        *out = strdup(content->valuestring);
        return *out != NULL;
    }
    if (!cJSON_IsArray(content))
        return fail(b, "messages", "message content must be a string or an array of parts");
    size_t total = 1;
    cJSON *part;
    cJSON_ArrayForEach(part, content)
    {
        cJSON *type = cJSON_GetObjectItemCaseSensitive(part, "type");
        cJSON *text = cJSON_GetObjectItemCaseSensitive(part, "text");
        if (!cJSON_IsString(type))
            return fail(b, "messages", "each content part needs a 'type'");
        if (strcmp(type->valuestring, "text") != 0)
            return fail_named(b, "messages", type->valuestring,
                              "content parts are not supported: this model reads text only");
        if (!cJSON_IsString(text))
            return fail(b, "messages", "a text part needs a 'text' string");
        total += strlen(text->valuestring);
    }
    char *s = malloc(total);
    if (!s)
        return false;
    s[0] = '\0';
    cJSON_ArrayForEach(part, content)
        strcat(s, cJSON_GetObjectItemCaseSensitive(part, "text")->valuestring);
    *out = s;
    return true;
}

static bool parse_request(oai_req *q, const char *body, size_t len, bad *b)
{
    q->json = cJSON_ParseWithLength(body, len);
    cJSON *root = q->json;
    if (!root || !cJSON_IsObject(root))
        return fail(b, NULL, "the request body must be a JSON object");
    Parley__V1__InferRequest *ir = &q->ir;
    parley__v1__infer_request__init(ir);
    parley__v1__sampling_params__init(&q->sp);
    ir->sampling = &q->sp;
    q->sp.top_p = 1.0f;
    q->sp.repetition_penalty = 1.0f;
    q->sp.temperature = 1.0f; /* OpenAI's default */

    cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (!cJSON_IsString(model) || !model->valuestring[0])
        return fail(b, "model", "'model' is required and must be a string");
    ir->model = model->valuestring;

    cJSON *msgs = cJSON_GetObjectItemCaseSensitive(root, "messages");
    if (!cJSON_IsArray(msgs) || cJSON_GetArraySize(msgs) == 0)
        return fail(b, "messages", "'messages' must be a non-empty array");
    if (cJSON_GetArraySize(msgs) > OAI_MAX_MESSAGES)
        return fail(b, "messages", "too many messages");
    size_t n = 0;
    cJSON *m;
    cJSON_ArrayForEach(m, msgs)
    {
        cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
        cJSON *content = cJSON_GetObjectItemCaseSensitive(m, "content");
        if (!cJSON_IsObject(m) || !cJSON_IsString(role))
            return fail(b, "messages", "each message needs a 'role' string");
        Parley__V1__Role r;
        if (strcmp(role->valuestring, "system") == 0 || strcmp(role->valuestring, "developer") == 0)
            r = PARLEY__V1__ROLE__ROLE_SYSTEM;
        else if (strcmp(role->valuestring, "user") == 0)
            r = PARLEY__V1__ROLE__ROLE_USER;
        else if (strcmp(role->valuestring, "assistant") == 0)
            r = PARLEY__V1__ROLE__ROLE_ASSISTANT;
        else
            return fail_named(b, "messages", role->valuestring, "is not a supported role");
        if (!content || cJSON_IsNull(content)) {
            if (r != PARLEY__V1__ROLE__ROLE_ASSISTANT)
                return fail(b, "messages", "a message needs 'content'");
            q->contents[n] = strdup("");
        } else if (!message_text(content, &q->contents[n], b)) {
            return false;
        }
        parley__v1__chat_message__init(&q->msgs[n]);
        q->msgs[n].role = r;
        q->msgs[n].content = q->contents[n];
        q->msg_ptrs[n] = &q->msgs[n];
        n++;
    }
    ir->messages = q->msg_ptrs;
    ir->n_messages = n;

    cJSON *stream = cJSON_GetObjectItemCaseSensitive(root, "stream");
    if (stream && !cJSON_IsNull(stream) && !cJSON_IsBool(stream))
        return fail(b, "stream", "'stream' must be a boolean");
    q->stream = cJSON_IsTrue(stream);
    cJSON *so = cJSON_GetObjectItemCaseSensitive(root, "stream_options");
    if (so && !cJSON_IsNull(so)) {
        if (!cJSON_IsObject(so))
            return fail(b, "stream_options", "'stream_options' must be an object");
        if (!q->stream)
            return fail(b, "stream_options",
                        "'stream_options' is only allowed when 'stream' is true");
        cJSON *iu = cJSON_GetObjectItemCaseSensitive(so, "include_usage");
        if (iu && !cJSON_IsNull(iu) && !cJSON_IsBool(iu))
            return fail(b, "stream_options.include_usage", "'include_usage' must be a boolean");
        q->include_usage = cJSON_IsTrue(iu);
    }

    double x;
    bool given;
    if (!opt_int(root, "n", 1, 128, &x, &given, b))
        return false;
    if (given && x != 1)
        return fail(b, "n", "only n=1 is supported");
    cJSON *lp = cJSON_GetObjectItemCaseSensitive(root, "logprobs");
    if (cJSON_IsTrue(lp))
        return fail(b, "logprobs", "logprobs are not supported");
    cJSON *tools = cJSON_GetObjectItemCaseSensitive(root, "tools");
    if (tools && !cJSON_IsNull(tools) && cJSON_GetArraySize(tools) > 0)
        return fail(b, "tools", "tools are not supported by this server");
    if (!opt_int(root, "max_tokens", 1, 1e9, &x, &given, b))
        return false;
    if (given)
        ir->max_tokens = (uint32_t)x;
    if (!opt_int(root, "max_completion_tokens", 1, 1e9, &x, &given, b))
        return false;
    if (given)
        ir->max_tokens = (uint32_t)x;
    if (!opt_number(root, "temperature", 0, 2, false, &x, &given, b))
        return false;
    if (given)
        q->sp.temperature = (float)x;
    if (!opt_number(root, "top_p", 0, 1, true, &x, &given, b))
        return false;
    if (given)
        q->sp.top_p = (float)x;
    if (!opt_int(root, "top_k", 0, 1e6, &x, &given, b))
        return false;
    if (given)
        q->sp.top_k = (int32_t)x;
    if (!opt_number(root, "min_p", 0, 1, false, &x, &given, b))
        return false;
    if (given)
        q->sp.min_p = (float)x;
    if (!opt_number(root, "repetition_penalty", 0, 2, true, &x, &given, b))
        return false;
    if (given)
        q->sp.repetition_penalty = (float)x;
    if (!opt_number(root, "presence_penalty", -2, 2, false, &x, &given, b))
        return false;
    if (given)
        q->sp.presence_penalty = (float)x;
    if (!opt_number(root, "frequency_penalty", -2, 2, false, &x, &given, b))
        return false;
    if (given)
        q->sp.frequency_penalty = (float)x;
    if (!opt_int(root, "seed", -9.2e18, 9.2e18, &x, &given, b))
        return false;
    if (given) {
        q->sp.has_seed = true;
        q->sp.seed = (uint64_t)(int64_t)x;
    }

    cJSON *stop = cJSON_GetObjectItemCaseSensitive(root, "stop");
    if (cJSON_IsString(stop)) {
        q->stops[0] = stop->valuestring;
        ir->n_stop = stop->valuestring[0] ? 1 : 0;
    } else if (cJSON_IsArray(stop)) {
        if (cJSON_GetArraySize(stop) > OAI_MAX_STOP)
            return fail(b, "stop", "at most 4 stop sequences are allowed");
        cJSON *sv;
        cJSON_ArrayForEach(sv, stop)
        {
            if (!cJSON_IsString(sv))
                return fail(b, "stop", "'stop' must be a string or an array of strings");
            if (sv->valuestring[0])
                q->stops[ir->n_stop++] = sv->valuestring;
        }
    } else if (stop && !cJSON_IsNull(stop)) {
        return fail(b, "stop", "'stop' must be a string or an array of strings");
    }
    ir->stop = q->stops;

    cJSON *user = cJSON_GetObjectItemCaseSensitive(root, "user");
    if (user && !cJSON_IsNull(user) && !cJSON_IsString(user))
        return fail(b, "user", "'user' must be a string");
    return true;
}

/* --- output --------------------------------------------------------------------------------------
 */

/* Per-request state for formatting, owned by the stream. */
typedef struct oai_out {
    oai_req *req;
    char id[48];
    long long created;
    char model[128];
    bool role_sent;
    bool headers_sent_early; /* the SSE response began before the first delta */
    uint32_t events;
    /* non-stream: the collected answer */
    char *text;
    size_t text_len;
    Parley__V1__FinishReason finish;
    uint32_t prompt_tokens, completion_tokens;
    bool failed;
    pl_status fail_status;
    char fail_msg[256];
    char fail_code[32];
} oai_out;

static void oai_out_free(void *p)
{
    oai_out *o = p;
    if (!o)
        return;
    oai_req_free(o->req);
    free(o->text);
    free(o);
}

static const char *finish_str(Parley__V1__FinishReason f)
{
    return f == PARLEY__V1__FINISH_REASON__FINISH_REASON_LENGTH           ? "length"
           : f == PARLEY__V1__FINISH_REASON__FINISH_REASON_CONTENT_FILTER ? "content_filter"
                                                                          : "stop";
}

/* The common chunk skeleton with one choice; returns the choice object. */
static cJSON *chunk_base(oai_out *o, cJSON **root)
{
    *root = cJSON_CreateObject();
    cJSON_AddStringToObject(*root, "id", o->id);
    cJSON_AddStringToObject(*root, "object", "chat.completion.chunk");
    cJSON_AddNumberToObject(*root, "created", (double)o->created);
    cJSON_AddStringToObject(*root, "model", o->model);
    cJSON_AddNullToObject(*root, "system_fingerprint");
    cJSON *choices = cJSON_AddArrayToObject(*root, "choices");
    cJSON *c = cJSON_CreateObject();
    cJSON_AddNumberToObject(c, "index", 0);
    cJSON_AddItemToArray(choices, c);
    if (o->req->include_usage)
        cJSON_AddNullToObject(*root, "usage");
    return c;
}

static void send_event(gws *s, oai_out *o, cJSON *root)
{
    char *json = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (!json)
        return;
    gws_appendf(s, "id: %u\ndata: %s\n\n", ++o->events, json);
    free(json);
}

static void send_chunk(gws *s, oai_out *o, const char *role, const char *content,
                       const char *finish)
{
    cJSON *root, *c = chunk_base(o, &root);
    cJSON *delta = cJSON_AddObjectToObject(c, "delta");
    if (role)
        cJSON_AddStringToObject(delta, "role", role);
    if (content)
        cJSON_AddStringToObject(delta, "content", content);
    cJSON_AddNullToObject(c, "logprobs");
    if (finish)
        cJSON_AddStringToObject(c, "finish_reason", finish);
    else
        cJSON_AddNullToObject(c, "finish_reason");
    send_event(s, o, root);
}

static const char *error_code_str(const Parley__V1__Error *e)
{
    switch (e->code) {
    case PARLEY__V1__ERROR_CODE__ERROR_CODE_TOO_LARGE:
        return "context_length_exceeded";
    case PARLEY__V1__ERROR_CODE__ERROR_CODE_NOT_FOUND:
        return "model_not_found";
    case PARLEY__V1__ERROR_CODE__ERROR_CODE_OVERLOADED:
        return "overloaded";
    case PARLEY__V1__ERROR_CODE__ERROR_CODE_TIMEOUT:
        return "timeout";
    case PARLEY__V1__ERROR_CODE__ERROR_CODE_WORKER_LOST:
        return "worker_lost";
    case PARLEY__V1__ERROR_CODE__ERROR_CODE_INVALID:
        return "invalid_request";
    default:
        return "server_error";
    }
}

static void on_delta_fmt(gws *s, const Parley__V1__TokenDelta *d, void *user)
{
    oai_out *o = user;
    if (d->error && d->error->code != PARLEY__V1__ERROR_CODE__ERROR_CODE_OK) {
        o->failed = true;
        o->fail_status = wire_status_from_code(d->error->code);
        snprintf(o->fail_msg, sizeof o->fail_msg, "%s",
                 d->error->message && d->error->message[0] ? d->error->message : "failed");
        snprintf(o->fail_code, sizeof o->fail_code, "%s", error_code_str(d->error));
        if (o->req->stream && o->role_sent) {
            /* Mid-stream: an error event the OpenAI clients raise on, then the end marker. */
            int status = wire_http_status(d->error->code);
            cJSON *root = cJSON_CreateObject(), *err = cJSON_AddObjectToObject(root, "error");
            cJSON_AddStringToObject(err, "message", o->fail_msg);
            cJSON_AddStringToObject(err, "type", wire_error_type(status));
            cJSON_AddNullToObject(err, "param");
            cJSON_AddStringToObject(err, "code", o->fail_code);
            send_event(s, o, root);
            gws_appendf(s, "data: [DONE]\n\n");
        }
        return;
    }
    if (!o->req->stream) {
        size_t n = d->text ? strlen(d->text) : 0;
        if (n) {
            char *t = realloc(o->text, o->text_len + n + 1);
            if (t) {
                memcpy(t + o->text_len, d->text, n + 1);
                o->text = t;
                o->text_len += n;
            }
        }
    } else {
        if (!o->role_sent) {
            send_chunk(s, o, "assistant", "", NULL);
            o->role_sent = true;
        }
        if (d->text && d->text[0])
            send_chunk(s, o, NULL, d->text, NULL);
    }
    if (d->finish_reason != PARLEY__V1__FINISH_REASON__FINISH_REASON_NONE) {
        o->finish = d->finish_reason;
        if (d->usage) {
            o->prompt_tokens = d->usage->prompt_tokens;
            o->completion_tokens = d->usage->completion_tokens;
        }
        if (o->req->stream) {
            send_chunk(s, o, NULL, NULL, finish_str(d->finish_reason));
            if (o->req->include_usage) {
                cJSON *root = cJSON_CreateObject();
                cJSON_AddStringToObject(root, "id", o->id);
                cJSON_AddStringToObject(root, "object", "chat.completion.chunk");
                cJSON_AddNumberToObject(root, "created", (double)o->created);
                cJSON_AddStringToObject(root, "model", o->model);
                cJSON_AddNullToObject(root, "system_fingerprint");
                cJSON_AddArrayToObject(root, "choices");
                cJSON *u = cJSON_AddObjectToObject(root, "usage");
                cJSON_AddNumberToObject(u, "prompt_tokens", o->prompt_tokens);
                cJSON_AddNumberToObject(u, "completion_tokens", o->completion_tokens);
                cJSON_AddNumberToObject(u, "total_tokens", o->prompt_tokens + o->completion_tokens);
                send_event(s, o, root);
            }
            gws_appendf(s, "data: [DONE]\n\n");
        }
    }
}

static enum MHD_Result reply_failure(http_req *r, oai_out *o)
{
    Parley__V1__ErrorCode code = wire_code_from_status(o->fail_status);
    int status = wire_http_status(code);
    if (o->fail_status == PL_TOO_LARGE)
        status = 400; /* OpenAI answers a prompt that does not fit with 400 */
    return http_reply_error(r, (unsigned)status, o->fail_msg, NULL, o->fail_code,
                            status == 429 || status == 503 ? 1 : 0);
}

static enum MHD_Result reply_complete(http_req *r, oai_out *o)
{
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "id", o->id);
    cJSON_AddStringToObject(root, "object", "chat.completion");
    cJSON_AddNumberToObject(root, "created", (double)o->created);
    cJSON_AddStringToObject(root, "model", o->model);
    cJSON_AddNullToObject(root, "system_fingerprint");
    cJSON *choices = cJSON_AddArrayToObject(root, "choices");
    cJSON *c = cJSON_CreateObject();
    cJSON_AddNumberToObject(c, "index", 0);
    cJSON *msg = cJSON_AddObjectToObject(c, "message");
    cJSON_AddStringToObject(msg, "role", "assistant");
    cJSON_AddStringToObject(msg, "content", o->text ? o->text : "");
    cJSON_AddNullToObject(c, "logprobs");
    cJSON_AddStringToObject(c, "finish_reason", finish_str(o->finish));
    cJSON_AddItemToArray(choices, c);
    cJSON *u = cJSON_AddObjectToObject(root, "usage");
    cJSON_AddNumberToObject(u, "prompt_tokens", o->prompt_tokens);
    cJSON_AddNumberToObject(u, "completion_tokens", o->completion_tokens);
    cJSON_AddNumberToObject(u, "total_tokens", o->prompt_tokens + o->completion_tokens);
    enum MHD_Result ret = http_reply_json(r, 200, root);
    cJSON_Delete(root);
    return ret;
}

static void detach_and_release(void *p)
{
    gws *s = p;
    gws_detach(s);
    gws_release(s);
}

/* Second and later calls for a suspended request: the first delta (or the end) has arrived. */
static enum MHD_Result resume_request(http_req *r, gws *s)
{
    oai_out *o = gws_user(s);
    gws_lock(s);
    bool started = gws_started(s), done = gws_done(s);
    bool begin_early = !started && !done && o->req->stream && gws_headers_due(s);
    if (!started && !done && !begin_early) { /* woken without news: park again */
        gws_suspend(s);
        gws_unlock(s);
        return MHD_YES;
    }
    if (o->failed && (!o->req->stream || !o->role_sent)) {
        gws_unlock(s);
        return reply_failure(r, o);
    }
    if (!o->req->stream) {
        if (!done) {
            gws_suspend(s);
            gws_unlock(s);
            return MHD_YES;
        }
        gws_unlock(s);
        return reply_complete(r, o);
    }
    if (begin_early) {
        /* Still queued: open the stream with the role chunk so keep-alives can flow. */
        send_chunk(s, o, "assistant", "", NULL);
        o->role_sent = o->headers_sent_early = true;
    }
    gws_unlock(s);
    struct MHD_Response *resp = gws_response(s);
    if (!resp)
        return MHD_NO;
    return http_queue(r, 200, resp);
}

/* Admitted (or answered by the pre-check): parks the connection until the first delta (or the
 * end) arrives. */
static enum MHD_Result park(http_req *r, gws *s)
{
    gws_lock(s);
    if (gws_started(s) || gws_done(s)) {
        gws_unlock(s);
        return resume_request(r, s);
    }
    gws_suspend(s);
    gws_unlock(s);
    return MHD_YES;
}

enum MHD_Result oai_chat_completions(http_req *r, void *arg)
{
    gw *g = arg;
    gws *existing = http_user(r);
    if (existing)
        return resume_request(r, existing);
    enum MHD_Result ret;
    char user_id[64];
    if (!gw_authorize(g, r, user_id, &ret))
        return ret;

    oai_req *q = calloc(1, sizeof *q);
    if (!q)
        return MHD_NO;
    size_t len;
    const char *body = http_body(r, &len);
    bad b = {.param = NULL};
    if (!parse_request(q, body, len, &b)) {
        oai_req_free(q);
        return http_reply_error(r, 400, b.msg, b.param, "invalid_request", 0);
    }
    snprintf(q->rid, sizeof q->rid, "%s", http_request_id(r));
    snprintf(q->delta_subject, sizeof q->delta_subject, "%s%s", SUBJ_DELTA_PREFIX, q->rid);
    q->ir.request_id = q->rid;
    q->ir.delta_subject = q->delta_subject;
    q->ir.created_ms = dmn_wall_ms();
    q->ir.deadline_ms = q->ir.created_ms + g->cfg.request_timeout_ms;
    q->ir.priority = PARLEY__V1__PRIORITY__PRIORITY_FREE;
    /* Usage is charged to the authenticated key's owner, never to the client's free-form
     * "user" field (which OpenAI defines as an end-user label, not an identity). */
    snprintf(q->user_id, sizeof q->user_id, "%s", user_id);
    q->ir.user_id = q->user_id;

    oai_out *o = calloc(1, sizeof *o);
    if (!o) {
        oai_req_free(q);
        return MHD_NO;
    }
    o->req = q;
    snprintf(o->id, sizeof o->id, "chatcmpl-%s", q->rid);
    o->created = q->ir.created_ms / 1000;
    snprintf(o->model, sizeof o->model, "%s", q->ir.model);

    gws *s;
    pl_status st =
        gws_create(g->streams, q->rid, q->delta_subject, on_delta_fmt, o, oai_out_free, &s);
    if (st != PL_OK)
        return http_reply_error(r, 503, "the message bus is unavailable", NULL,
                                "service_unavailable", 1);
    gws_attach(s, http_conn(r));
    http_set_user(r, s, detach_and_release);

    gw_precheck_result pc = gw_precheck(g, q->rid, q->user_id, &q->ir, q->delta_subject);
    if (pc == GW_PRECHECK_REFUSED) {
        gws_lock(s);
        gws_fail(s, PL_CANCELLED, ""); /* nothing runs: no cancel needed */
        gws_unlock(s);
        return http_reply_error(r, 503,
                                "the content check did not answer in time; please try "
                                "again",
                                NULL, "service_unavailable", 2);
    }
    if (pc == GW_PRECHECK_BLOCKED)
        return park(r, s); /* the refusal is the only delta */

    Parley__V1__InferAdmit *admit = NULL;
    st = bus_request_pb(dmn_bus(g->d), SUBJ_INFER_SUBMIT, &q->ir.base,
                        &parley__v1__infer_admit__descriptor, OAI_RPC_TIMEOUT_MS,
                        (ProtobufCMessage **)&admit);
    if (st != PL_OK) {
        LOGW(q->rid, "submit: %s: %s", pl_status_str(st), pl_err_last());
        gws_lock(s);
        gws_fail(s, PL_UNAVAILABLE, "");
        gws_unlock(s);
        return http_reply_error(r, 503, "the inference service is not available right now", NULL,
                                "service_unavailable", 2);
    }
    if (admit->error && admit->error->code != PARLEY__V1__ERROR_CODE__ERROR_CODE_OK) {
        const Parley__V1__Error *e = admit->error;
        int status = wire_http_status(e->code);
        unsigned retry = e->retry_after_ms ? (e->retry_after_ms + 999) / 1000 : 0;
        char msg[256], code[32];
        snprintf(msg, sizeof msg, "%s", e->message ? e->message : "refused");
        snprintf(code, sizeof code, "%s", error_code_str(e));
        const char *param = e->param && e->param[0] ? e->param : NULL;
        char pbuf[32];
        if (param)
            param = strncpy(pbuf, param, sizeof pbuf - 1), pbuf[sizeof pbuf - 1] = '\0', pbuf;
        protobuf_c_message_free_unpacked(&admit->base, NULL);
        gws_lock(s);
        gws_fail(s, PL_CANCELLED, ""); /* nothing runs: no cancel needed */
        gws_unlock(s);
        return http_reply_error(r, (unsigned)status, msg, param, code,
                                status == 429 || status == 503 ? (retry ? retry : 1) : 0);
    }
    protobuf_c_message_free_unpacked(&admit->base, NULL);
    return park(r, s);
}
