/* test_log.c — the JSON line format, escaping, truncation, level filter and whole lines under
 * concurrency. stderr is pointed at a temporary file while a test logs, then read back. */
#include "../harness.h"

#include <ctype.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

typedef struct cap {
    int saved, fd;
    char path[64];
} cap;

static bool cap_begin(cap *c)
{
    strcpy(c->path, "/tmp/parley-log-test-XXXXXX");
    c->fd = mkstemp(c->path);
    if (c->fd < 0)
        return false;
    fflush(stderr);
    c->saved = dup(STDERR_FILENO);
    dup2(c->fd, STDERR_FILENO);
    return true;
}

/* Restores stderr and returns what was written (malloc'd, NUL-terminated). */
static char *cap_end(cap *c)
{
    dup2(c->saved, STDERR_FILENO);
    close(c->saved);
    off_t n = lseek(c->fd, 0, SEEK_END);
    char *s = malloc((size_t)n + 1);
    if (!s)
        abort();
    ssize_t got = pread(c->fd, s, (size_t)n, 0);
    s[got > 0 ? got : 0] = '\0';
    close(c->fd);
    unlink(c->path);
    return s;
}

/* The value of a string field as it appears in the line (still escaped), or NULL. */
static bool field(const char *line, const char *name, char *out, size_t cap_)
{
    char key[64];
    snprintf(key, sizeof key, "\"%s\":\"", name);
    const char *p = strstr(line, key);
    if (!p)
        return false;
    p += strlen(key);
    size_t n = 0;
    while (*p && *p != '"' && n + 1 < cap_) {
        if (*p == '\\' && p[1])
            out[n++] = *p++;
        out[n++] = *p++;
    }
    out[n] = '\0';
    return *p == '"';
}

static bool valid_utf8(const unsigned char *s)
{
    while (*s) {
        int n = *s < 0x80             ? 1
                : (*s & 0xE0) == 0xC0 ? 2
                : (*s & 0xF0) == 0xE0 ? 3
                : (*s & 0xF8) == 0xF0 ? 4
                                      : 0;
        if (!n)
            return false;
        for (int i = 1; i < n; i++)
            if ((s[i] & 0xC0) != 0x80)
                return false;
        s += n;
    }
    return true;
}

TEST(log_level_parse_accepts_the_four_names)
{
    CHECK_EQ_INT(log_level_parse("debug"), LOG_DEBUG);
    CHECK_EQ_INT(log_level_parse("info"), LOG_INFO);
    CHECK_EQ_INT(log_level_parse("warn"), LOG_WARN);
    CHECK_EQ_INT(log_level_parse("error"), LOG_ERROR);
    CHECK_EQ_INT(log_level_parse("warning"), -1);
    CHECK_EQ_INT(log_level_parse("INFO"), -1);
    CHECK_EQ_INT(log_level_parse(""), -1);
    CHECK_EQ_INT(log_level_parse(NULL), -1);
}

TEST(log_line_has_every_field_in_order)
{
    cap c;
    char v[256];
    if (!cap_begin(&c))
        SKIP("cannot create a temporary file");
    log_init("gateway", LOG_DEBUG);
    int line = __LINE__ + 1;
    LOGI("req-1", "hello %d", 42);
    char *out = cap_end(&c);

    CHECK(strncmp(out, "{\"ts\":\"", 7) == 0);
    CHECK(field(out, "ts", v, sizeof v));
    /* 2026-11-25T13:13:14.123Z */
    CHECK_EQ_INT(strlen(v), 24);
    const char *shape = "dddd-dd-ddTdd:dd:dd.dddZ";
    for (size_t i = 0; i < 24 && v[i]; i++)
        CHECK(shape[i] == 'd' ? isdigit((unsigned char)v[i]) != 0 : v[i] == shape[i]);
    CHECK(field(out, "level", v, sizeof v));
    CHECK_STR(v, "info");
    CHECK(field(out, "service", v, sizeof v));
    CHECK_STR(v, "gateway");
    CHECK(field(out, "request_id", v, sizeof v));
    CHECK_STR(v, "req-1");
    CHECK(field(out, "msg", v, sizeof v));
    CHECK_STR(v, "hello 42");
    char want[64];
    snprintf(want, sizeof want, "test_log.c:%d", line);
    CHECK(field(out, "src", v, sizeof v));
    CHECK_STR(v, want);
    /* Field order and the line ending. */
    const char *a = strstr(out, "\"level\""), *b = strstr(out, "\"service\""),
               *r = strstr(out, "\"request_id\""), *m = strstr(out, "\"msg\""),
               *s = strstr(out, "\"src\"");
    CHECK(a && b && r && m && s && a < b && b < r && r < m && m < s);
    size_t n = strlen(out);
    CHECK(n > 2 && strcmp(out + n - 2, "}\n") == 0);
    CHECK(strchr(out, '\n') == out + n - 1);
    free(out);
    log_init("unit-tests", LOG_INFO);
}

TEST(log_omits_a_null_request_id_and_filters_by_level)
{
    cap c;
    char v[64];
    if (!cap_begin(&c))
        SKIP("cannot create a temporary file");
    log_init("chat", LOG_WARN);
    LOGD(NULL, "debug line");
    LOGI(NULL, "info line");
    LOGW(NULL, "warn line");
    LOGE("r", "error line");
    log_set_level(LOG_DEBUG);
    LOGD(NULL, "debug again");
    char *out = cap_end(&c);

    CHECK(strstr(out, "debug line") == NULL);
    CHECK(strstr(out, "info line") == NULL);
    char *l1 = out, *l2 = strchr(l1, '\n');
    CHECK(l2 != NULL);
    if (!l2) {
        free(out);
        return;
    }
    *l2++ = '\0';
    CHECK(strstr(l1, "\"request_id\"") == NULL);
    CHECK(field(l1, "level", v, sizeof v));
    CHECK_STR(v, "warn");
    CHECK(field(l1, "msg", v, sizeof v));
    CHECK_STR(v, "warn line");
    CHECK(field(l2, "level", v, sizeof v));
    CHECK_STR(v, "error");
    CHECK(strstr(l2, "\"request_id\":\"r\"") != NULL);
    CHECK(strstr(l2, "\"msg\":\"debug again\"") != NULL);
    free(out);
    log_init("unit-tests", LOG_INFO);
}

TEST(log_escapes_json_and_passes_utf8_through)
{
    cap c;
    char v[512];
    if (!cap_begin(&c))
        SKIP("cannot create a temporary file");
    log_init("svc \"q\"", LOG_INFO);
    LOGI("id\"1", "q\" b\\ n\n t\t c\x01 d\x7f u:h\xC3\xA9llo \xE2\x9C\x93 bad:\xFF\xC3!");
    char *out = cap_end(&c);

    CHECK(field(out, "msg", v, sizeof v));
    CHECK_STR(v, "q\\\" b\\\\ n\\n t\\t c\\u0001 d\\u007f u:h\xC3\xA9llo \xE2\x9C\x93 "
                 "bad:\\ufffd\\ufffd!");
    CHECK(field(out, "service", v, sizeof v));
    CHECK_STR(v, "svc \\\"q\\\"");
    CHECK(field(out, "request_id", v, sizeof v));
    CHECK_STR(v, "id\\\"1");
    CHECK(valid_utf8((const unsigned char *)out));
    free(out);
    log_init("unit-tests", LOG_INFO);
}

TEST(log_truncates_long_messages_at_a_character_boundary)
{
    cap c;
    if (!cap_begin(&c))
        SKIP("cannot create a temporary file");
    /* Quotes escape to two bytes and 'é' is two bytes: a cut in the middle of either would
     * leave a dangling backslash or a broken character. */
    size_t n = 30000;
    char *big = malloc(n + 1);
    if (!big)
        abort();
    for (size_t i = 0; i + 3 <= n; i += 3) {
        big[i] = '"';
        big[i + 1] = '\xC3';
        big[i + 2] = '\xA9';
    }
    big[n] = '\0';
    LOGI(NULL, "%s", big);
    LOGI(NULL, "after");
    char *out = cap_end(&c);
    free(big);

    char *nl = strchr(out, '\n');
    CHECK(nl != NULL);
    if (!nl) {
        free(out);
        return;
    }
    size_t len = (size_t)(nl - out) + 1;
    CHECK(len <= 8192);
    CHECK(len > 4000);
    *nl = '\0';
    CHECK(valid_utf8((const unsigned char *)out));
    const char *mark = strstr(out, "\xE2\x80\xA6\",\"src\":\"test_log.c:");
    CHECK(mark != NULL);
    if (mark) {
        /* An even run of backslashes before the marker: no escape was split. */
        size_t bs = 0;
        for (const char *p = mark - 1; p > out && *p == '\\'; p--)
            bs++;
        CHECK(bs % 2 == 0);
    }
    CHECK(strstr(nl + 1, "\"msg\":\"after\"") != NULL);
    free(out);
}

static void *log_many(void *arg)
{
    const char *rid = arg;
    for (int i = 0; i < 300; i++)
        LOGI(rid, "line %d from %s with some padding to make it longer than a few bytes", i, rid);
    return NULL;
}

TEST(log_lines_from_threads_do_not_interleave)
{
    cap c;
    pthread_t t[4];
    const char *ids[4] = {"t0", "t1", "t2", "t3"};
    if (!cap_begin(&c))
        SKIP("cannot create a temporary file");
    for (int i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, log_many, (void *)ids[i]);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    char *out = cap_end(&c);

    int lines = 0, bad = 0;
    for (char *p = out, *nl; (nl = strchr(p, '\n')) != NULL; p = nl + 1) {
        *nl = '\0';
        lines++;
        size_t len = strlen(p);
        if (strncmp(p, "{\"ts\":\"", 7) != 0 || len < 2 || p[len - 1] != '}' ||
            strstr(p + 1, "{\"ts\"") != NULL)
            bad++;
    }
    CHECK_EQ_INT(lines, 1200);
    CHECK_EQ_INT(bad, 0);
    free(out);
}
