/* modelspec.c — parse the worker's --models option (see modelspec.h). */
#include "modelspec.h"

#include <string.h>

static int name_char_ok(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-';
}

pl_status ms_parse(const char *spec, ms_model *out, size_t *n)
{
    *n = 0;
    if (!spec)
        return PL_OK;
    const char *p = spec;
    while (*p) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        const char *eq = memchr(p, '=', len);
        if (len == 0) {
            p += end ? 1 : 0;
            if (!end)
                break;
            continue;
        }
        if (!eq)
            return PL_ERRF(PL_INVALID, "model entry '%.*s' is not name=path", (int)len, p);
        size_t nlen = (size_t)(eq - p), plen = len - nlen - 1;
        if (nlen == 0 || nlen > 64)
            return PL_ERRF(PL_INVALID, "model entry '%.*s': the name must be 1..64 characters",
                           (int)len, p);
        for (size_t i = 0; i < nlen; i++)
            if (!name_char_ok(p[i]))
                return PL_ERRF(PL_INVALID,
                               "model entry '%.*s': the name may only hold letters, digits, "
                               "'.', '_' and '-'",
                               (int)len, p);
        if (plen == 0 || plen >= sizeof out[0].path)
            return PL_ERRF(PL_INVALID, "model entry '%.*s': the path is empty or too long",
                           (int)len, p);
        if (*n == MS_MAX_MODELS)
            return PL_ERRF(PL_INVALID, "more than %d models", MS_MAX_MODELS);
        ms_model *m = &out[*n];
        memcpy(m->name, p, nlen);
        m->name[nlen] = '\0';
        memcpy(m->path, eq + 1, plen);
        m->path[plen] = '\0';
        for (size_t i = 0; i < *n; i++)
            if (strcmp(out[i].name, m->name) == 0)
                return PL_ERRF(PL_INVALID, "model name '%s' is given twice", m->name);
        (*n)++;
        if (!end)
            break;
        p = end + 1;
    }
    return PL_OK;
}
