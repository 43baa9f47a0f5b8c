/* jsonw.h — a streaming JSON writer: appends compact JSON text to one growing buffer.
 *
 * For replies too large to build as a cJSON tree first (a 1,000-message conversation is ~15,000
 * tree nodes, each with its own malloc'd key and value, then printed and freed: most of the time
 * the gateway spent on it). The writer keeps a stack of open containers so commas are placed for
 * the caller; keys and string values are escaped as JSON requires (", \, control characters).
 * Input strings must be valid UTF-8 (everything reaching here came through PostgreSQL or our own
 * validation); bytes >= 0x80 are copied as they are.
 *
 * Errors: allocation failure sets a sticky flag; every later call is a no-op and jw_finish
 * returns NULL, so callers check once at the end. Nesting deeper than JW_MAX_DEPTH or a value
 * where a key is due is a programming error caught by an assert. Not thread-safe (one writer
 * per reply). */
#ifndef PARLEY_GW_JSONW_H
#define PARLEY_GW_JSONW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define JW_MAX_DEPTH 16

typedef struct jw {
    char *buf;
    size_t len, cap;
    bool oom;
    int depth;
    bool first[JW_MAX_DEPTH]; /* no element written yet at this level */
    bool is_obj[JW_MAX_DEPTH];
    bool after_key; /* a key was written; its value comes next */
} jw;

/* Starts an empty writer with room for about `hint` bytes (0: a small default). Never fails:
 * an allocation failure shows at jw_finish. */
void jw_init(jw *w, size_t hint);
/* Frees the buffer of a writer not finished (accepts a finished one: no-op). */
void jw_free(jw *w);
/* The text (NUL-terminated, *len without the NUL) owned by the caller (free()); NULL when an
 * allocation failed or a container is still open. The writer is empty afterwards. */
char *jw_finish(jw *w, size_t *len);

void jw_obj_begin(jw *w);
void jw_obj_end(jw *w);
void jw_arr_begin(jw *w);
void jw_arr_end(jw *w);
/* The next member's name (inside an object). */
void jw_key(jw *w, const char *k);
/* A string value; NULL writes null. */
void jw_str(jw *w, const char *s);
void jw_int(jw *w, long long v);
void jw_bool(jw *w, bool v);
void jw_null(jw *w);
/* Seconds since the epoch from milliseconds, or null for 0 (the product API's time fields). */
void jw_time(jw *w, int64_t ms);

/* Shorthands for a member: key then value. */
static inline void jw_kstr(jw *w, const char *k, const char *s)
{
    jw_key(w, k);
    jw_str(w, s);
}
static inline void jw_kint(jw *w, const char *k, long long v)
{
    jw_key(w, k);
    jw_int(w, v);
}

#endif
