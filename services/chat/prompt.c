/* prompt.c — a turn's prompt within the context window (see prompt.h). */
#include "prompt.h"

#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define PR_FRAME_TOKENS 4

uint32_t pr_estimate(size_t len)
{
    size_t t = (len + 2) / 3 + PR_FRAME_TOKENS;
    return t > UINT32_MAX ? UINT32_MAX : (uint32_t)t;
}

/* The content of a user message with its attachments after it. Caller frees. */
static char *with_uploads(const char *content, const char *message_id,
                          Parley__V1__Upload *const *ups, size_t n)
{
    static const char open_fmt[] = "\n\n[Attached file: %s (%s)]\n";
    static const char close_txt[] = "\n[End of file]";
    size_t need = strlen(content) + 1;
    for (size_t i = 0; i < n; i++)
        if (strcmp(ups[i]->message_id ? ups[i]->message_id : "", message_id) == 0)
            need += sizeof open_fmt + strlen(ups[i]->filename) + strlen(ups[i]->media_type) +
                    strlen(ups[i]->text) + sizeof close_txt;
    char *out = malloc(need);
    if (!out)
        return NULL;
    size_t w = (size_t)snprintf(out, need, "%s", content);
    for (size_t i = 0; i < n; i++) {
        if (strcmp(ups[i]->message_id ? ups[i]->message_id : "", message_id) != 0)
            continue;
        w += (size_t)snprintf(out + w, need - w, open_fmt, ups[i]->filename, ups[i]->media_type);
        w += (size_t)snprintf(out + w, need - w, "%s%s", ups[i]->text, close_txt);
    }
    return out;
}

static bool usable(const Parley__V1__Message *m)
{
    if (m->role == PARLEY__V1__ROLE__ROLE_USER)
        return true;
    if (m->role != PARLEY__V1__ROLE__ROLE_ASSISTANT)
        return false;
    return (m->status == PARLEY__V1__MESSAGE_STATUS__MESSAGE_STATUS_COMPLETE ||
            m->status == PARLEY__V1__MESSAGE_STATUS__MESSAGE_STATUS_STOPPED) &&
           m->content && m->content[0];
}

void pr_free(pr_prompt *p)
{
    if (!p)
        return;
    for (size_t i = 0; p->texts && i < p->n; i++)
        free(p->texts[i]);
    free(p->texts);
    free(p->items);
    free(p->msgs);
    memset(p, 0, sizeof *p);
}

pl_status pr_build(const pr_input *in, pr_prompt *out)
{
    memset(out, 0, sizeof *out);
    size_t cap = in->n_chain + 2;
    out->msgs = calloc(cap, sizeof *out->msgs);
    out->items = calloc(cap, sizeof *out->items);
    out->texts = calloc(cap, sizeof *out->texts);
    /* Contents in reverse (newest first) while choosing; reversed at the end. */
    char **rev = calloc(cap, sizeof *rev);
    Parley__V1__Role *roles = calloc(cap, sizeof *roles);
    if (!out->msgs || !out->items || !out->texts || !rev || !roles) {
        free(rev);
        free(roles);
        pr_free(out);
        return PL_ERRF(PL_NOMEM, "out of memory");
    }
    uint32_t budget = in->window > in->answer ? in->window - in->answer : 0;
    bool has_system = in->system && in->system[0];
    uint32_t used = has_system ? pr_estimate(strlen(in->system)) : 0;
    size_t k = 0;

    /* The required newest user message: the new one, or (regeneration) the chain's last. */
    size_t rest = in->n_chain;
    char *newest = NULL;
    if (in->new_user) {
        newest = with_uploads(in->new_user, "", in->uploads, in->n_uploads);
    } else if (rest > 0 && in->chain[rest - 1]->role == PARLEY__V1__ROLE__ROLE_USER) {
        const Parley__V1__Message *m = in->chain[rest - 1];
        newest = with_uploads(m->content, m->id, in->uploads, in->n_uploads);
        rest--;
    } else {
        free(rev);
        free(roles);
        pr_free(out);
        return PL_ERRF(PL_INVALID, "there is no user message to answer");
    }
    if (!newest) {
        free(rev);
        free(roles);
        pr_free(out);
        return PL_ERRF(PL_NOMEM, "out of memory");
    }
    used += pr_estimate(strlen(newest));
    if (used > budget) {
        free(newest);
        free(rev);
        free(roles);
        pr_free(out);
        return PL_ERRF(PL_INVALID,
                       "the message%s needs about %u tokens, but the context window of %u "
                       "tokens leaves %u once %u are kept for the answer; shorten it or attach "
                       "less",
                       in->n_uploads ? " with its attachments" : "", used, in->window, budget,
                       in->answer);
    }
    rev[k] = newest;
    roles[k++] = PARLEY__V1__ROLE__ROLE_USER;

    /* Earlier messages, newest first, while they fit. */
    size_t i = rest;
    for (; i > 0; i--) {
        const Parley__V1__Message *m = in->chain[i - 1];
        if (!usable(m))
            continue;
        char *text = m->role == PARLEY__V1__ROLE__ROLE_USER
                         ? with_uploads(m->content, m->id, in->uploads, in->n_uploads)
                         : strdup(m->content);
        if (!text) {
            for (size_t j = 0; j < k; j++)
                free(rev[j]);
            free(rev);
            free(roles);
            pr_free(out);
            return PL_ERRF(PL_NOMEM, "out of memory");
        }
        uint32_t t = pr_estimate(strlen(text));
        if (used + t > budget) {
            free(text);
            break;
        }
        used += t;
        rev[k] = text;
        roles[k++] = m->role;
    }
    for (; i > 0; i--)
        out->dropped += usable(in->chain[i - 1]);

    /* System first, then the chosen messages oldest first. */
    size_t n = 0;
    if (has_system) {
        out->texts[n] = strdup(in->system);
        if (!out->texts[n]) {
            for (size_t j = 0; j < k; j++)
                free(rev[j]);
            free(rev);
            free(roles);
            pr_free(out);
            return PL_ERRF(PL_NOMEM, "out of memory");
        }
        parley__v1__chat_message__init(&out->items[n]);
        out->items[n].role = PARLEY__V1__ROLE__ROLE_SYSTEM;
        out->items[n].content = out->texts[n];
        n++;
    }
    for (size_t j = k; j > 0; j--) {
        out->texts[n] = rev[j - 1];
        parley__v1__chat_message__init(&out->items[n]);
        out->items[n].role = roles[j - 1];
        out->items[n].content = out->texts[n];
        n++;
    }
    for (size_t j = 0; j < n; j++)
        out->msgs[j] = &out->items[j];
    out->n = n;
    out->tokens = used;
    free(rev);
    free(roles);
    return PL_OK;
}

size_t pr_clean_title(const char *text, char *out, size_t cap)
{
    if (cap == 0)
        return 0;
    out[0] = '\0';
    if (!text)
        return 0;
    const char *p = text;
    /* Leading blanks, blank lines, quotes and Markdown marks. */
    while (*p && (isspace((unsigned char)*p) || strchr("\"'`*#_", *p)))
        p++;
    if (strncasecmp(p, "title:", 6) == 0) {
        p += 6;
        while (*p && (isspace((unsigned char)*p) || strchr("\"'`*#_", *p)))
            p++;
    }
    size_t n = 0;
    while (p[n] && p[n] != '\n' && p[n] != '\r')
        n++;
    if (n > cap - 1) {
        n = cap - 1;
        while (n > 0 && ((unsigned char)p[n] & 0xC0) == 0x80)
            n--; /* do not split a code point */
    }
    while (n > 0 && (isspace((unsigned char)p[n - 1]) || strchr("\"'`*_.", p[n - 1])))
        n--;
    memcpy(out, p, n);
    out[n] = '\0';
    return n;
}
