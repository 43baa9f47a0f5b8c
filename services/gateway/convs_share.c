/* convs_share.c — share links and uploads of the product API (routes listed in convs.c).
 *
 *   POST   /api/v1/conversations/{id}/shares {upto_message_id?} → 201 {id, token, url, …}
 *   GET    /api/v1/shares                    the owner's links (ids, never tokens)
 *   DELETE /api/v1/shares/{token or id}      revoke: the public page then answers 404
 *   GET    /s/{token}                        public, no login: the snapshot as JSON, noindex
 *   POST   /api/v1/uploads                   raw body, Content-Type + X-Filename → 201 {id, …}
 *
 * Uploads accept text (plain, Markdown, CSV, JSON, source code: any text type, the usual
 * application text types, or application/octet-stream with a known source extension) and
 * PDF, whose text layer is extracted by `pdftotext` (poppler-utils) in a child process with a
 * time limit. Images answer 415 with a message saying why; other types 415; more than
 * CV_UPLOAD_MAX bytes 413. Text must be UTF-8 without NUL bytes.
 *
 * Threading: MHD pool threads; the PDF extraction blocks its thread (bounded by
 * CV_PDF_TIMEOUT_MS). */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "convs.h"
#include "log.h"
#include "static.h"
#include "utf8.h"

#define CV_UPLOAD_MAX     (512 * 1024) /* bytes of a file */
#define CV_PDF_TEXT_MAX   (1024 * 1024)
#define CV_PDF_TIMEOUT_MS 15000

/* --- shares -------------------------------------------------------------------------------- */

static cJSON *share_json(const Parley__V1__Share *s, bool created)
{
    cJSON *o = cJSON_CreateObject();
    if (!created)
        cJSON_AddStringToObject(o, "id", s->token); /* in lists the token field holds the id */
    cJSON_AddStringToObject(o, "object", "share");
    cJSON_AddStringToObject(o, "conversation_id", s->conversation_id ? s->conversation_id : "");
    cJSON_AddStringToObject(o, "upto_message_id", s->upto_message_id ? s->upto_message_id : "");
    cJSON_AddStringToObject(o, "title", s->title ? s->title : "");
    gw_add_time(o, "created_at", s->created_ms);
    return o;
}

enum MHD_Result cv_share_create(gw *g, http_req *r, const gw_user *u, const char *conv)
{
    enum MHD_Result ret;
    cJSON *b = gw_body_object(r, true, &ret);
    if (!b)
        return ret;
    const cJSON *upto = cJSON_GetObjectItemCaseSensitive(b, "upto_message_id");
    if (upto && !cJSON_IsNull(upto) && !cJSON_IsString(upto)) {
        cJSON_Delete(b);
        return http_reply_error(r, 400, "upto_message_id is a message id", "upto_message_id",
                                "invalid_request", 0);
    }
    Parley__V1__HistoryRequest rq = PARLEY__V1__HISTORY_REQUEST__INIT;
    Parley__V1__Share sh = PARLEY__V1__SHARE__INIT;
    rq.op = (char *)"share.create";
    rq.user_id = (char *)u->id;
    sh.conversation_id = (char *)conv;
    sh.upto_message_id = cJSON_IsString(upto) ? upto->valuestring : (char *)"";
    rq.share = &sh;
    Parley__V1__HistoryReply *rp = NULL;
    pl_status s = gw_history(g, http_request_id(r), &rq, &rp);
    cJSON_Delete(b);
    if (s != PL_OK)
        return gw_fail(r, s);
    cJSON *o = share_json(rp->share, true);
    char url[128];
    snprintf(url, sizeof url, "/s/%s", rp->share->token);
    cJSON_AddStringToObject(o, "token", rp->share->token);
    cJSON_AddStringToObject(o, "url", url);
    protobuf_c_message_free_unpacked(&rp->base, NULL);
    return cv_send_json(r, 201, o, u);
}

enum MHD_Result cv_route_shares_list(http_req *r, void *arg)
{
    gw *g = arg;
    enum MHD_Result ret;
    gw_user u;
    if (!gw_auth_user(g, r, &u, &ret))
        return ret;
    Parley__V1__HistoryRequest rq = PARLEY__V1__HISTORY_REQUEST__INIT;
    rq.op = (char *)"share.list";
    rq.user_id = u.id;
    Parley__V1__HistoryReply *rp = NULL;
    pl_status s = gw_history(g, http_request_id(r), &rq, &rp);
    if (s != PL_OK)
        return gw_fail(r, s);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "object", "list");
    cJSON *arr = cJSON_AddArrayToObject(o, "data");
    for (size_t i = 0; i < rp->n_shares; i++)
        cJSON_AddItemToArray(arr, share_json(rp->shares[i], false));
    protobuf_c_message_free_unpacked(&rp->base, NULL);
    return cv_send_json(r, 200, o, &u);
}

enum MHD_Result cv_route_share_revoke(http_req *r, void *arg)
{
    gw *g = arg;
    enum MHD_Result ret;
    gw_user u;
    if (!gw_auth_user(g, r, &u, &ret))
        return ret;
    const char *tok = http_path_rest(r);
    if (!tok[0] || strchr(tok, '/') || strlen(tok) > 128)
        return http_reply_error(r, 404, "share not found", NULL, "not_found", 0);
    Parley__V1__HistoryRequest rq = PARLEY__V1__HISTORY_REQUEST__INIT;
    Parley__V1__Share sh = PARLEY__V1__SHARE__INIT;
    rq.op = (char *)"share.revoke";
    rq.user_id = u.id;
    sh.token = (char *)tok;
    rq.share = &sh;
    Parley__V1__HistoryReply *rp = NULL;
    pl_status s = gw_history(g, http_request_id(r), &rq, &rp);
    if (s != PL_OK)
        return gw_fail(r, s);
    protobuf_c_message_free_unpacked(&rp->base, NULL);
    struct MHD_Response *resp = MHD_create_response_from_buffer(0, "", MHD_RESPMEM_PERSISTENT);
    if (!resp)
        return MHD_NO;
    gw_quota_headers(resp, u.has_quota ? &u.quota : NULL);
    return http_queue(r, 204, resp);
}

/* The public page: no authentication; the token is the capability. Never indexed, never
 * cached by shared caches, no referrer leaking the token. */
enum MHD_Result cv_route_public_share(http_req *r, void *arg)
{
    gw *g = arg;
    const char *tok = http_path_rest(r);
    struct MHD_Response *resp;
    char *text = NULL;
    unsigned status = 200;
    if (!tok[0] || strchr(tok, '/') || strlen(tok) > 128) {
        status = 404;
    } else {
        Parley__V1__HistoryRequest rq = PARLEY__V1__HISTORY_REQUEST__INIT;
        Parley__V1__Share sh = PARLEY__V1__SHARE__INIT;
        rq.op = (char *)"share.get";
        sh.token = (char *)tok;
        rq.share = &sh;
        Parley__V1__HistoryReply *rp = NULL;
        pl_status s = gw_history(g, http_request_id(r), &rq, &rp);
        if (s == PL_NOT_FOUND) {
            status = 404;
        } else if (s != PL_OK) {
            return gw_fail(r, s);
        } else {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "object", "shared_conversation");
            cJSON_AddStringToObject(o, "title", rp->share->title ? rp->share->title : "");
            gw_add_time(o, "created_at", rp->share->created_ms);
            cJSON *arr = cJSON_AddArrayToObject(o, "messages");
            for (size_t i = 0; i < rp->n_messages; i++) {
                const Parley__V1__Message *m = rp->messages[i];
                cJSON *x = cJSON_CreateObject();
                cJSON_AddStringToObject(
                    x, "role", m->role == PARLEY__V1__ROLE__ROLE_USER ? "user" : "assistant");
                cJSON_AddStringToObject(x, "content", m->content ? m->content : "");
                cJSON_AddStringToObject(x, "model", m->model ? m->model : "");
                gw_add_time(x, "created_at", m->created_ms);
                cJSON_AddItemToArray(arr, x);
            }
            protobuf_c_message_free_unpacked(&rp->base, NULL);
            text = cJSON_PrintUnformatted(o);
            cJSON_Delete(o);
            if (!text)
                return MHD_NO;
        }
    }
    if (gw_static_wants_html(r)) { /* a browser: the page that renders this JSON */
        free(text);
        return gw_static_share_page(g, r, status);
    }
    if (status == 404) {
        static const char nf[] = "{\"error\":{\"message\":\"this shared conversation does not "
                                 "exist or was unshared\",\"type\":\"not_found_error\","
                                 "\"param\":null,\"code\":\"not_found\"}}";
        resp = MHD_create_response_from_buffer(strlen(nf), (void *)nf, MHD_RESPMEM_PERSISTENT);
    } else {
        resp = MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
    }
    if (!resp) {
        free(text);
        return MHD_NO;
    }
    MHD_add_response_header(resp, "Content-Type", "application/json");
    MHD_add_response_header(resp, "X-Robots-Tag", "noindex, nofollow");
    MHD_add_response_header(resp, "Cache-Control", "private, no-store");
    MHD_add_response_header(resp, "Referrer-Policy", "no-referrer");
    return http_queue(r, status, resp);
}

/* --- uploads ------------------------------------------------------------------------------- */

/* The media type without parameters, lower-cased, into out. */
static void media_type(const char *ct, char *out, size_t cap)
{
    size_t n = 0;
    while (ct && ct[n] && ct[n] != ';' && n + 1 < cap) {
        out[n] = (char)(ct[n] >= 'A' && ct[n] <= 'Z' ? ct[n] + 32 : ct[n]);
        n++;
    }
    while (n > 0 && out[n - 1] == ' ')
        n--;
    out[n] = '\0';
}

static bool has_ext(const char *name, const char *const *exts)
{
    const char *dot = strrchr(name, '.');
    if (!dot)
        return false;
    for (size_t i = 0; exts[i]; i++)
        if (strcasecmp(dot + 1, exts[i]) == 0)
            return true;
    return false;
}

static const char *const text_exts[] = {
    "txt",  "md",  "markdown", "csv", "tsv",   "json", "jsonl", "yaml",  "yml",
    "toml", "xml", "html",     "css", "js",    "ts",   "tsx",   "jsx",   "py",
    "c",    "h",   "cc",       "cpp", "hpp",   "rs",   "go",    "java",  "kt",
    "rb",   "php", "sh",       "sql", "swift", "cs",   "scala", "lua",   "r",
    "m",    "pl",  "ini",      "cfg", "conf",  "log",  "tex",   "proto", NULL};

static const char *const text_app_types[] = {
    "application/json", "application/x-ndjson", "application/xml",         "application/javascript",
    "application/x-sh", "application/x-yaml",   "application/yaml",        "application/toml",
    "application/sql",  "application/x-python", "application/x-httpd-php", NULL};

typedef enum up_kind { UP_TEXT, UP_PDF, UP_IMAGE, UP_OTHER } up_kind;

static up_kind classify(const char *type, const char *filename)
{
    if (strncmp(type, "image/", 6) == 0)
        return UP_IMAGE;
    if (strcmp(type, "application/pdf") == 0)
        return UP_PDF;
    if (strncmp(type, "text/", 5) == 0)
        return UP_TEXT;
    for (size_t i = 0; text_app_types[i]; i++)
        if (strcmp(type, text_app_types[i]) == 0)
            return UP_TEXT;
    if ((strcmp(type, "application/octet-stream") == 0 || !type[0]) && has_ext(filename, text_exts))
        return UP_TEXT;
    return UP_OTHER;
}

/* Runs pdftotext on `pdf` (len bytes) and returns its UTF-8 text (caller frees), or NULL with
 * *why set. */
static char *pdf_text(const char *pdf, size_t len, const char **why)
{
    char path[] = "/tmp/parley-upload-XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) {
        *why = "the PDF cannot be stored for reading";
        return NULL;
    }
    size_t off = 0;
    while (off < len) {
        ssize_t w = write(fd, pdf + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break;
        off += (size_t)w;
    }
    close(fd);
    int pipefd[2];
    if (off != len || pipe(pipefd) != 0) {
        unlink(path);
        *why = "the PDF cannot be stored for reading";
        return NULL;
    }
    pid_t pid = fork();
    if (pid == 0) {
        dup2(pipefd[1], 1);
        close(pipefd[0]);
        close(pipefd[1]);
        int devnull = open("/dev/null", O_WRONLY);
        if (devnull >= 0)
            dup2(devnull, 2);
        execlp("pdftotext", "pdftotext", "-q", "-enc", "UTF-8", path, "-", (char *)NULL);
        _exit(127);
    }
    close(pipefd[1]);
    if (pid < 0) {
        close(pipefd[0]);
        unlink(path);
        *why = "the PDF reader cannot be started";
        return NULL;
    }
    char *out = malloc(CV_PDF_TEXT_MAX + 1);
    size_t n = 0;
    bool over = false, timed_out = false;
    int64_t deadline = dmn_now_ms() + CV_PDF_TIMEOUT_MS;
    while (out) {
        int64_t left = deadline - dmn_now_ms();
        if (left <= 0) {
            timed_out = true;
            break;
        }
        struct pollfd pf = {pipefd[0], POLLIN, 0};
        int pr = poll(&pf, 1, (int)left);
        if (pr < 0 && errno == EINTR)
            continue;
        if (pr <= 0) {
            timed_out = pr == 0;
            break;
        }
        char chunk[8192];
        ssize_t k = read(pipefd[0], chunk, sizeof chunk);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            break;
        size_t take = (size_t)k;
        if (n + take > CV_PDF_TEXT_MAX) {
            take = CV_PDF_TEXT_MAX - n;
            over = true;
        }
        memcpy(out + n, chunk, take);
        n += take;
        if (over)
            break;
    }
    close(pipefd[0]);
    if (timed_out || over)
        kill(pid, SIGKILL);
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    unlink(path);
    if (!out) {
        *why = "out of memory";
        return NULL;
    }
    out[n] = '\0';
    if (timed_out) {
        *why = "reading the PDF took too long";
    } else if (WIFEXITED(st) && WEXITSTATUS(st) == 127) {
        *why = "PDF files cannot be read on this server (pdftotext is not installed)";
    } else if (!over && (!WIFEXITED(st) || WEXITSTATUS(st) != 0)) {
        *why = "the file is not a readable PDF";
    } else {
        size_t k = 0;
        while (k < n && (out[k] == ' ' || out[k] == '\n' || out[k] == '\f' || out[k] == '\r' ||
                         out[k] == '\t'))
            k++;
        if (k == n)
            *why = "the PDF has no text layer (scanned pages are images, which are not "
                   "supported yet)";
        else if (!utf8_valid(out, n))
            *why = "the PDF's text could not be decoded";
        else
            return out;
    }
    free(out);
    return NULL;
}

enum MHD_Result cv_route_upload(http_req *r, void *arg)
{
    gw *g = arg;
    enum MHD_Result ret;
    gw_user u;
    if (!gw_auth_user(g, r, &u, &ret))
        return ret;
    size_t len = 0;
    const char *body = http_body(r, &len);
    char type[128];
    media_type(http_header(r, "Content-Type"), type, sizeof type);
    const char *fname = http_header(r, "X-Filename");
    /* UTF-8 only: the name is stored as PostgreSQL text, which refuses other bytes. */
    if (!fname || !fname[0] || strlen(fname) > 255 || strchr(fname, '/') || strchr(fname, '\\') ||
        !utf8_valid(fname, strlen(fname)))
        return http_reply_error(r, 400,
                                "name the file in the X-Filename header (UTF-8, at most 255 "
                                "bytes, no path)",
                                "X-Filename", "invalid_request", 0);
    up_kind kind = classify(type, fname);
    if (kind == UP_IMAGE)
        return http_reply_error(r, 415,
                                "images are not supported yet: the models served here read text "
                                "only. Attach text, Markdown, CSV, JSON, source code or a PDF "
                                "with a text layer",
                                "Content-Type", "unsupported_media_type", 0);
    if (kind == UP_OTHER) {
        char msg[320];
        snprintf(msg, sizeof msg,
                 "files of type %s cannot be attached: attach text, Markdown, CSV, JSON, source "
                 "code or PDF",
                 type[0] ? type : "(none)");
        return http_reply_error(r, 415, msg, "Content-Type", "unsupported_media_type", 0);
    }
    if (len > CV_UPLOAD_MAX) {
        char msg[128];
        snprintf(msg, sizeof msg, "the file is larger than the limit of %d KiB",
                 CV_UPLOAD_MAX / 1024);
        return http_reply_error(r, 413, msg, NULL, "request_too_large", 0);
    }
    if (len == 0)
        return http_reply_error(r, 400, "the file is empty", NULL, "invalid_request", 0);
    char *text = NULL;
    if (kind == UP_PDF) {
        const char *why = NULL;
        if (!(text = pdf_text(body, len, &why)))
            return http_reply_error(r, 415, why, NULL, "unsupported_media_type", 0);
    } else if (!utf8_valid(body, len)) {
        return http_reply_error(r, 415, "the file is not UTF-8 text", NULL,
                                "unsupported_media_type", 0);
    }
    Parley__V1__HistoryRequest rq = PARLEY__V1__HISTORY_REQUEST__INIT;
    Parley__V1__Upload up = PARLEY__V1__UPLOAD__INIT;
    rq.op = (char *)"upload.create";
    rq.user_id = u.id;
    up.filename = (char *)fname;
    up.media_type = type[0] ? type : (char *)"text/plain";
    up.size_bytes = (uint32_t)len;
    up.text = text ? text : (char *)body;
    rq.upload = &up;
    Parley__V1__HistoryReply *rp = NULL;
    pl_status s = gw_history(g, http_request_id(r), &rq, &rp);
    free(text);
    if (s != PL_OK)
        return gw_fail(r, s);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", rp->upload->id);
    cJSON_AddStringToObject(o, "object", "upload");
    cJSON_AddStringToObject(o, "filename", rp->upload->filename);
    cJSON_AddStringToObject(o, "media_type", rp->upload->media_type);
    cJSON_AddNumberToObject(o, "size_bytes", rp->upload->size_bytes);
    gw_add_time(o, "created_at", rp->upload->created_ms);
    protobuf_c_message_free_unpacked(&rp->base, NULL);
    return cv_send_json(r, 201, o, &u);
}
