/* static.c — serves the web app (web/) and Debian's packaged JavaScript libraries (static.h).
 *
 * Path safety: an app file is named by one path segment checked against a strict character set
 * (gw_static_name_ok), so "..", "/" and encoded separators never reach open(); vendor files come
 * from a fixed table of names, never from the request path. Files are opened with O_NOFOLLOW
 * under the web root (links there are refused), and must be regular files.
 *
 * Threading: handlers run on MHD pool threads; they only read the gateway's configuration and
 * the file system. Each response owns its file descriptor (MHD closes it). */
#include "static.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"

/* Scripts and styles from this origin only; no inline script, no framing. */
#define ST_CSP                                                                                     \
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "        \
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "             \
    "form-action 'self'"

typedef struct st_vendor {
    const char *name; /* /vendor/<name> */
    const char *path; /* the packaged file */
} st_vendor;

/* libjs-marked, libjs-highlight.js, node-dompurify (scripts/apt-packages.txt). */
static const st_vendor st_vendors[] = {
    {"marked.js", "/usr/share/javascript/marked/marked.min.js"},
    {"highlight.js", "/usr/share/javascript/highlight.js/highlight.min.js"},
    {"hljs-light.css", "/usr/share/javascript/highlight.js/styles/github.css"},
    {"hljs-dark.css", "/usr/share/javascript/highlight.js/styles/atom-one-dark.css"},
    {"purify.js", "/usr/share/nodejs/dompurify/dist/purify.min.js"},
};

static bool has_index(const char *dir)
{
    char p[PATH_MAX];
    if (snprintf(p, sizeof p, "%s/index.html", dir) >= (int)sizeof p)
        return false;
    return access(p, R_OK) == 0;
}

bool gw_static_resolve_root(const char *configured, char *out, size_t cap)
{
    if (configured && configured[0]) {
        snprintf(out, cap, "%s", configured);
        return has_index(out);
    }
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = '\0';
        char *slash = strrchr(exe, '/'); /* …/build/bin/parley-gateway → …/build/bin */
        if (slash)
            *slash = '\0';
        char cand[PATH_MAX + 16];
        snprintf(cand, sizeof cand, "%s/../../web", exe);
        char real[PATH_MAX];
        if (realpath(cand, real) && has_index(real)) {
            snprintf(out, cap, "%s", real);
            return true;
        }
    }
    if (has_index("/usr/share/parley/web")) {
        snprintf(out, cap, "%s", "/usr/share/parley/web");
        return true;
    }
    char cwd[PATH_MAX];
    if (getcwd(cwd, sizeof cwd)) {
        snprintf(out, cap, "%s/web", cwd);
        return has_index(out);
    }
    snprintf(out, cap, "%s", "web");
    return false;
}

const char *gw_static_content_type(const char *name)
{
    static const struct {
        const char *ext, *type;
    } types[] = {
        {".html", "text/html; charset=utf-8"},
        {".css", "text/css; charset=utf-8"},
        {".js", "text/javascript; charset=utf-8"},
        {".mjs", "text/javascript; charset=utf-8"},
        {".json", "application/json"},
        {".svg", "image/svg+xml"},
        {".png", "image/png"},
        {".ico", "image/x-icon"},
        {".txt", "text/plain; charset=utf-8"},
        {".webmanifest", "application/manifest+json"},
    };
    const char *dot = name ? strrchr(name, '.') : NULL;
    if (dot)
        for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
            if (strcasecmp(dot, types[i].ext) == 0)
                return types[i].type;
    return "application/octet-stream";
}

bool gw_static_name_ok(const char *name)
{
    size_t n = name ? strlen(name) : 0;
    if (n == 0 || n > 128 || name[0] == '.')
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return false;
    }
    return strstr(name, "..") == NULL;
}

bool gw_static_wants_html(http_req *r)
{
    const char *a = http_header(r, "Accept");
    return a && strstr(a, "text/html") != NULL;
}

static enum MHD_Result not_found(http_req *r)
{
    return http_reply_error(r, 404, "no such file", NULL, "not_found", 0);
}

/* Sends the file at `path` (`follow`: symbolic links allowed, for Debian's vendor files) with
 * its content type, `cache` as Cache-Control and an ETag; 304 when If-None-Match matches;
 * `html` adds the page headers (CSP, no framing). `privacy` adds the share page's headers.
 * 404 when it is missing or not a regular file. */
static enum MHD_Result send_file(http_req *r, unsigned status, const char *path, bool follow,
                                 const char *cache, bool html, bool privacy)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | (follow ? 0 : O_NOFOLLOW));
    if (fd < 0) {
        if (errno != ENOENT)
            LOGW(http_request_id(r), "cannot open %s: %s", path, strerror(errno));
        return not_found(r);
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return not_found(r);
    }
    char etag[80];
    snprintf(etag, sizeof etag, "\"%" PRIx64 "-%" PRIx64 "-%lx\"", (uint64_t)st.st_size,
             (uint64_t)st.st_mtim.tv_sec, (unsigned long)st.st_mtim.tv_nsec);
    const char *inm = http_header(r, "If-None-Match");
    struct MHD_Response *resp;
    if (status == 200 && inm && strstr(inm, etag)) {
        close(fd);
        resp = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
        status = 304;
    } else {
        resp = MHD_create_response_from_fd((size_t)st.st_size, fd); /* owns fd from here */
        if (!resp)
            close(fd);
    }
    if (!resp)
        return MHD_NO;
    if (status != 304)
        MHD_add_response_header(resp, "Content-Type", gw_static_content_type(path));
    MHD_add_response_header(resp, "Cache-Control", cache);
    MHD_add_response_header(resp, "ETag", etag);
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    if (html) {
        MHD_add_response_header(resp, "Content-Security-Policy", ST_CSP);
        MHD_add_response_header(resp, "X-Frame-Options", "DENY");
    }
    if (privacy) {
        MHD_add_response_header(resp, "X-Robots-Tag", "noindex, nofollow");
        MHD_add_response_header(resp, "Referrer-Policy", "no-referrer");
    } else if (html) {
        MHD_add_response_header(resp, "Referrer-Policy", "same-origin");
    }
    return http_queue(r, status, resp);
}

/* A file of the web root. */
static enum MHD_Result send_app_file(gw *g, http_req *r, unsigned status, const char *name,
                                     bool privacy)
{
    char path[PATH_MAX];
    if (!gw_static_name_ok(name) ||
        snprintf(path, sizeof path, "%s/%s", g->web_dir, name) >= (int)sizeof path)
        return not_found(r);
    bool html = strcmp(gw_static_content_type(name), "text/html; charset=utf-8") == 0;
    return send_file(r, status, path, false, privacy ? "private, no-store" : "no-cache", html,
                     privacy);
}

static enum MHD_Result route_root(http_req *r, void *arg)
{
    gw *g = arg;
    if (gw_static_wants_html(r))
        return send_app_file(g, r, 200, "index.html", false);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "service", "parley");
    cJSON_AddStringToObject(o, "version", PARLEY_VERSION);
    cJSON_AddStringToObject(o, "api", "/v1");
    cJSON_AddStringToObject(o, "app", "/");
    enum MHD_Result ret = http_reply_json(r, 200, o);
    cJSON_Delete(o);
    return ret;
}

static enum MHD_Result route_static(http_req *r, void *arg)
{
    return send_app_file(arg, r, 200, http_path_rest(r), false);
}

static enum MHD_Result route_vendor(http_req *r, void *arg)
{
    (void)arg;
    const char *name = http_path_rest(r);
    for (size_t i = 0; i < sizeof st_vendors / sizeof st_vendors[0]; i++)
        if (strcmp(name, st_vendors[i].name) == 0)
            return send_file(r, 200, st_vendors[i].path, true, "public, max-age=86400", false,
                             false);
    return not_found(r);
}

enum MHD_Result gw_static_share_page(gw *g, http_req *r, unsigned status)
{
    return send_app_file(g, r, status, "share.html", true);
}

const http_route gw_routes_static[] = {
    {"GET", "/", route_root, NULL},
    {"GET", "/static/*", route_static, NULL},
    {"GET", "/vendor/*", route_vendor, NULL},
};
const size_t gw_n_routes_static = sizeof gw_routes_static / sizeof gw_routes_static[0];
