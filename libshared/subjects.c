/* subjects.c — NATS-safe tokens for names that end up inside subjects (model names).
 *
 * Pure functions, no state, thread-safe. The subject constants themselves live in subjects.h. */
#include "subjects.h"

#include <stdbool.h>
#include <string.h>

/* A model name like "llama-3.2:1b" may hold '.', '*', '>' or spaces, which NATS treats as
 * token separators or wildcards; mapping them to '_' keeps the name one token. Distinct names
 * can map to the same token ("a.b" and "a_b"); callers that care keep the original name in the
 * message. */
size_t subj_token(char *out, size_t cap, const char *prefix, const char *name)
{
    if (!out || cap == 0)
        return 0;
    out[0] = '\0';
    if (!prefix)
        prefix = "";
    if (!name || !*name)
        return 0;
    size_t np = strlen(prefix), nn = strlen(name);
    if (np + nn + 1 > cap || np + nn < np)
        return 0;
    memcpy(out, prefix, np);
    for (size_t i = 0; i < nn; i++) {
        char c = name[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '_' || c == '-';
        out[np + i] = ok ? c : '_';
    }
    out[np + nn] = '\0';
    return np + nn;
}
