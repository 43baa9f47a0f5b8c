/* log.c — structured logging: one JSON object per line, written to stderr with one write(2).
 *
 * Threading: log_init() runs once before threads start; afterwards log_write() may be called
 * from any thread. Each line is built in a stack buffer of LOG_LINE_MAX bytes and handed to the
 * kernel in one write(2), so lines from different threads never interleave (for pipes, lines
 * up to PIPE_BUF are atomic; longer ones are still one call). The minimum level is an atomic
 * so log_set_level() is safe at any time. Nothing is allocated.
 *
 * Escaping: quotes, backslash and control characters are escaped for JSON; valid UTF-8 passes
 * through unchanged and each byte of an invalid sequence becomes U+FFFD, so every line is valid
 * JSON whatever the message holds. A message too long for the line is cut at a character
 * boundary and ends with "…".
 *
 * It deliberately does not buffer, rotate files, rate-limit or talk to a log collector: the
 * process supervisor owns stderr. */
#include "log.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* The whole line, fields and newline included. */
#define LOG_LINE_MAX 8192
/* A request id longer than this (escaped) is cut: ids are 32 hex characters in practice. */
#define LOG_RID_MAX 128

static char log_service[64] = "parley";
static atomic_int log_min = LOG_INFO;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void log_init(const char *service, log_level min)
{
    if (service) {
        size_t n = strlen(service);
        if (n >= sizeof log_service)
            n = sizeof log_service - 1;
        memcpy(log_service, service, n);
        log_service[n] = '\0';
    }
    log_set_level(min);
}

int log_level_parse(const char *s)
{
    if (!s)
        return -1;
    for (int i = 0; i < 4; i++)
        if (strcmp(s, level_names[i]) == 0)
            return i;
    return -1;
}

void log_set_level(log_level min)
{
    atomic_store(&log_min, (int)min);
}

/* --- a bounded output buffer ----------------------------------------------------------------- */

typedef struct lbuf {
    char *p;
    size_t len, cap;
} lbuf;

static void lb_put(lbuf *b, const char *s, size_t n)
{
    if (n > b->cap - b->len)
        n = b->cap - b->len;
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

static void lb_puts(lbuf *b, const char *s)
{
    lb_put(b, s, strlen(s));
}

/* Length of the valid UTF-8 sequence starting at s (at most `left` bytes), or 0 when the bytes
 * there are not one: stray continuation bytes, overlong forms, surrogates, > U+10FFFF. */
static size_t utf8_seq_len(const unsigned char *s, size_t left)
{
    unsigned c = s[0];
    size_t n;
    unsigned cp;
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF) {
        n = 2;
        cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (left < n)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) || cp > 0x10FFFF ||
        (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return n;
}

/* Appends `s` (`n` bytes) JSON-escaped, writing at most `budget` bytes and never splitting an
 * escape or a UTF-8 sequence. Returns false when it had to stop early. */
static bool lb_put_json(lbuf *b, const char *s, size_t n, size_t budget)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t used = 0;
    if (budget > b->cap - b->len)
        budget = b->cap - b->len;
    for (size_t i = 0; i < n;) {
        char esc[8];
        const char *piece = esc;
        size_t plen, adv = 1;
        unsigned c = u[i];
        switch (c) {
        case '"':
            piece = "\\\"";
            plen = 2;
            break;
        case '\\':
            piece = "\\\\";
            plen = 2;
            break;
        case '\n':
            piece = "\\n";
            plen = 2;
            break;
        case '\r':
            piece = "\\r";
            plen = 2;
            break;
        case '\t':
            piece = "\\t";
            plen = 2;
            break;
        default:
            if (c < 0x20 || c == 0x7F) {
                snprintf(esc, sizeof esc, "\\u%04x", c);
                plen = 6;
            } else if (c < 0x80) {
                piece = (const char *)u + i;
                plen = 1;
            } else if ((adv = utf8_seq_len(u + i, n - i)) > 0) {
                piece = (const char *)u + i;
                plen = adv;
            } else {
                piece = "\\ufffd";
                plen = 6;
                adv = 1;
            }
        }
        if (used + plen > budget)
            return false;
        lb_put(b, piece, plen);
        used += plen;
        i += adv;
    }
    return true;
}

static const char *base_name(const char *path)
{
    const char *slash = path ? strrchr(path, '/') : NULL;
    return slash ? slash + 1 : (path ? path : "?");
}

/* Writes all of buf to fd 2, retrying on EINTR and short writes. Errors are dropped: there is
 * nowhere left to report them. */
static void write_all(const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(STDERR_FILENO, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return;
        }
        p += w;
        n -= (size_t)w;
    }
}

void log_vwrite(log_level lv, const char *request_id, const char *file, int line, const char *fmt,
                va_list ap)
{
    static const char ellipsis[] = "\xE2\x80\xA6"; /* … */
    char out[LOG_LINE_MAX];
    char msg[LOG_LINE_MAX];
    char tail[300];
    lbuf b = {out, 0, sizeof out};
    bool cut = false;

    if ((int)lv < atomic_load(&log_min))
        return;
    if ((int)lv < LOG_DEBUG || (int)lv > LOG_ERROR)
        lv = LOG_ERROR;

    /* The message first, so a caller's errno-dependent arguments are read before anything here
     * can change errno. */
    int mlen = vsnprintf(msg, sizeof msg, fmt ? fmt : "", ap);
    if (mlen < 0) {
        mlen = 0;
        msg[0] = '\0';
    } else if ((size_t)mlen >= sizeof msg) {
        mlen = (int)sizeof msg - 1;
        cut = true;
    }

    struct timespec ts;
    struct tm tm;
    char tbuf[40];
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t tl = strftime(tbuf, sizeof tbuf, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(tbuf + tl, sizeof tbuf - tl, ".%03dZ", (int)(ts.tv_nsec / 1000000));

    lb_puts(&b, "{\"ts\":\"");
    lb_puts(&b, tbuf);
    lb_puts(&b, "\",\"level\":\"");
    lb_puts(&b, level_names[lv]);
    lb_puts(&b, "\",\"service\":\"");
    lb_put_json(&b, log_service, strlen(log_service), sizeof log_service * 6);
    lb_puts(&b, "\"");
    if (request_id) {
        lb_puts(&b, ",\"request_id\":\"");
        lb_put_json(&b, request_id, strlen(request_id), LOG_RID_MAX);
        lb_puts(&b, "\"");
    }
    lb_puts(&b, ",\"msg\":\"");

    /* The tail is built aside so the message gets whatever room is left before it. */
    lbuf t = {tail, 0, sizeof tail};
    char lnum[16];
    const char *src = base_name(file);
    snprintf(lnum, sizeof lnum, ":%d", line);
    lb_puts(&t, "\",\"src\":\"");
    lb_put_json(&t, src, strlen(src), 200);
    lb_puts(&t, lnum);
    lb_puts(&t, "\"}\n");

    size_t room = b.cap - b.len - t.len - (sizeof ellipsis - 1);
    if (!lb_put_json(&b, msg, (size_t)mlen, room))
        cut = true;
    if (cut)
        lb_put(&b, ellipsis, sizeof ellipsis - 1);
    lb_put(&b, tail, t.len);
    write_all(out, b.len);
}

void log_write(log_level lv, const char *request_id, const char *file, int line, const char *fmt,
               ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_vwrite(lv, request_id, file, line, fmt, ap);
    va_end(ap);
}
