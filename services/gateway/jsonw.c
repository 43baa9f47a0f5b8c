/* jsonw.c — streaming JSON writer (see jsonw.h). One buffer that doubles as it grows; strings
 * are copied in runs between the bytes that need escaping. */
#include "jsonw.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "status.h"

#define JW_DEFAULT_CAP 256

void jw_init(jw *w, size_t hint)
{
    memset(w, 0, sizeof *w);
    w->cap = hint ? hint : JW_DEFAULT_CAP;
    w->buf = malloc(w->cap);
    w->oom = w->buf == NULL;
}

void jw_free(jw *w)
{
    free(w->buf);
    w->buf = NULL;
    w->len = w->cap = 0;
}

/* Room for n more bytes plus a NUL; false (and the sticky flag) when memory ran out. */
static bool room(jw *w, size_t n)
{
    if (w->oom)
        return false;
    if (w->len + n + 1 <= w->cap)
        return true;
    size_t cap = w->cap ? w->cap : JW_DEFAULT_CAP;
    while (cap < w->len + n + 1)
        cap *= 2;
    char *b = realloc(w->buf, cap);
    if (!b) {
        w->oom = true;
        return false;
    }
    w->buf = b;
    w->cap = cap;
    return true;
}

static void put(jw *w, const char *s, size_t n)
{
    if (!room(w, n))
        return;
    memcpy(w->buf + w->len, s, n);
    w->len += n;
}

static void putc1(jw *w, char c)
{
    if (!room(w, 1))
        return;
    w->buf[w->len++] = c;
}

/* Before any value or key: the comma between elements; a value right after its key needs
 * none. */
static void sep(jw *w)
{
    if (w->after_key) {
        w->after_key = false;
        return;
    }
    if (w->depth > 0) {
        PL_ASSERT(!w->is_obj[w->depth - 1] || !"jsonw: a value inside an object needs a key");
        if (!w->first[w->depth - 1])
            putc1(w, ',');
        w->first[w->depth - 1] = false;
    }
}

static void open_container(jw *w, char c, bool obj)
{
    sep(w);
    PL_ASSERT(w->depth < JW_MAX_DEPTH);
    putc1(w, c);
    w->first[w->depth] = true;
    w->is_obj[w->depth] = obj;
    w->depth++;
}

static void close_container(jw *w, char c, bool obj)
{
    PL_ASSERT(w->depth > 0 && w->is_obj[w->depth - 1] == obj && !w->after_key);
    w->depth--;
    putc1(w, c);
}

void jw_obj_begin(jw *w)
{
    open_container(w, '{', true);
}

void jw_obj_end(jw *w)
{
    close_container(w, '}', true);
}

void jw_arr_begin(jw *w)
{
    open_container(w, '[', false);
}

void jw_arr_end(jw *w)
{
    close_container(w, ']', false);
}

/* Appends `s` as a quoted JSON string; room for the plain runs is made once (the string's
 * length plus the quotes), escapes grow the buffer as they come. */
static void quoted(jw *w, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    if (!room(w, strlen(s) + 2))
        return;
    putc1(w, '"');
    const char *run = s;
    for (const char *p = s; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        put(w, run, (size_t)(p - run));
        run = p + 1;
        char e[7] = {'\\', 0};
        size_t n = 2;
        switch (c) {
        case '"':
            e[1] = '"';
            break;
        case '\\':
            e[1] = '\\';
            break;
        case '\n':
            e[1] = 'n';
            break;
        case '\r':
            e[1] = 'r';
            break;
        case '\t':
            e[1] = 't';
            break;
        case '\b':
            e[1] = 'b';
            break;
        case '\f':
            e[1] = 'f';
            break;
        default:
            memcpy(e + 1, "u00", 3);
            e[4] = hex[c >> 4];
            e[5] = hex[c & 15];
            n = 6;
        }
        put(w, e, n);
    }
    put(w, run, strlen(run));
    putc1(w, '"');
}

void jw_key(jw *w, const char *k)
{
    PL_ASSERT(w->depth > 0 && w->is_obj[w->depth - 1] && !w->after_key);
    if (!w->first[w->depth - 1])
        putc1(w, ',');
    w->first[w->depth - 1] = false;
    quoted(w, k);
    putc1(w, ':');
    w->after_key = true;
}

void jw_str(jw *w, const char *s)
{
    sep(w);
    if (s)
        quoted(w, s);
    else
        put(w, "null", 4);
}

void jw_int(jw *w, long long v)
{
    sep(w);
    char b[24];
    int n = snprintf(b, sizeof b, "%lld", v);
    put(w, b, (size_t)n);
}

void jw_bool(jw *w, bool v)
{
    sep(w);
    if (v)
        put(w, "true", 4);
    else
        put(w, "false", 5);
}

void jw_null(jw *w)
{
    sep(w);
    put(w, "null", 4);
}

void jw_time(jw *w, int64_t ms)
{
    if (ms)
        jw_int(w, (long long)(ms / 1000));
    else
        jw_null(w);
}

char *jw_finish(jw *w, size_t *len)
{
    char *out = NULL;
    if (!w->oom && w->depth == 0 && room(w, 0)) {
        w->buf[w->len] = '\0';
        out = w->buf;
        *len = w->len;
        w->buf = NULL;
    }
    jw_free(w);
    memset(w, 0, sizeof *w);
    return out;
}
