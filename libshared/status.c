/* status.c — names for pl_status and the per-thread "where did this error come from" slot.
 *
 * Threading: the error slot is _Thread_local, so each thread sees only the messages it recorded;
 * nothing here locks. Ownership: pl_status_str() returns static strings, pl_err_last() a pointer
 * into the calling thread's slot. It deliberately does not log: whoever acts on the error does. */
#include "status.h"

#include <ctype.h>

#include <stdarg.h>
#include <string.h>

/* Short identifiers, the enum names without PL_ in lower case: stable for logs and metrics. */
static const char *const status_names[PL_STATUS_COUNT] = {
    [PL_OK] = "ok",
    [PL_ERR] = "error",
    [PL_NOMEM] = "nomem",
    [PL_INVALID] = "invalid",
    [PL_NOT_FOUND] = "not_found",
    [PL_TIMEOUT] = "timeout",
    [PL_IO] = "io",
    [PL_BUS] = "bus",
    [PL_DB] = "db",
    [PL_UNAVAILABLE] = "unavailable",
    [PL_OVERLOADED] = "overloaded",
    [PL_CANCELLED] = "cancelled",
    [PL_EXISTS] = "exists",
    [PL_PERMISSION] = "permission",
    [PL_UNAUTHENTICATED] = "unauthenticated",
    [PL_TOO_LARGE] = "too_large",
    [PL_UNSUPPORTED] = "unsupported",
    [PL_CORRUPT] = "corrupt",
    [PL_RATE_LIMITED] = "rate_limited",
    [PL_AGAIN] = "again",
};

/* One slot per thread: 512 bytes is enough for "file.c:line: message"; longer messages are
 * truncated by vsnprintf, which is fine for a diagnostic. */
static _Thread_local char err_buf[512];

const char *pl_status_str(pl_status s)
{
    if ((int)s < 0 || s >= PL_STATUS_COUNT || !status_names[s])
        return "unknown";
    return status_names[s];
}

/* Only the file's basename: __FILE__ may carry the build's relative or absolute path. */
static const char *base_name(const char *path)
{
    const char *slash = path ? strrchr(path, '/') : NULL;
    return slash ? slash + 1 : (path ? path : "?");
}

pl_status pl_err_set(pl_status s, const char *file, int line, const char *fmt, ...)
{
    /* Format into a scratch buffer first: callers often wrap the previous error
     * (PL_ERRF(s, "loading x: %s", pl_err_last())), and the arguments then point into err_buf. */
    char tmp[sizeof err_buf];
    int n = snprintf(tmp, sizeof tmp, "%s:%d: ", base_name(file), line);
    if (n < 0)
        n = 0;
    if ((size_t)n < sizeof tmp && fmt) {
        va_list ap;
        va_start(ap, fmt);
        if (vsnprintf(tmp + n, sizeof tmp - (size_t)n, fmt, ap) < 0)
            tmp[n] = '\0';
        va_end(ap);
    }
    memcpy(err_buf, tmp, strlen(tmp) + 1);
    return s;
}

const char *pl_err_last(void)
{
    return err_buf;
}

void pl_err_clear(void)
{
    err_buf[0] = '\0';
}

const char *pl_err_text(const char *msg)
{
    if (!msg)
        return "";
    for (;;) {
        const char *p = msg;
        while (isalnum((unsigned char)*p) || *p == '_' || *p == '-' || *p == '.')
            p++;
        if (p - msg < 3 || p[-2] != '.' || p[-1] != 'c' || *p != ':')
            return msg;
        const char *q = p + 1;
        while (isdigit((unsigned char)*q))
            q++;
        if (q == p + 1 || q[0] != ':' || q[1] != ' ')
            return msg;
        msg = q + 2;
    }
}

const char *pl_err_message(void)
{
    return pl_err_text(pl_err_last());
}
