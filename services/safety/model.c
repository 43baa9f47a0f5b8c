/* model.c — the optional model classifier: asks a model, through the infer-gateway, whether a
 * text is safe, and parses its answer into a verdict.
 *
 * One classification is one InferRequest (system priority, greedy, a few tokens, no user so no
 * quota or usage is charged) whose deltas arrive on a core subject this module subscribes to
 * before submitting; the answer is collected until the terminal delta or the deadline (then a
 * Cancel is broadcast). The prompt lists the rule set's category names and asks for "SAFE" or
 * "UNSAFE: <category>"; model_parse reads that leniently (small models rarely follow a format
 * exactly): the first of "unsafe" / "safe" that appears decides, and the first category name
 * found names the category.
 *
 * Threading: called from the consumer thread; the delta handler runs on a libnats thread and
 * meets it through a mutex and a condition variable (monotonic clock). */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "safety.h"
#include "subjects.h"
#include "sync.h"
#include "wire.h"

#define MDL_MAX_TOKENS 12
#define MDL_ANSWER_CAP 512

typedef struct mdl_wait {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    bool failed;
    char answer[MDL_ANSWER_CAP];
    size_t len;
} mdl_wait;

static void on_delta(bus_msg *m, void *arg)
{
    mdl_wait *w = arg;
    Parley__V1__TokenDelta *d =
        (Parley__V1__TokenDelta *)bus_msg_unpack(m, &parley__v1__token_delta__descriptor);
    if (d) {
        pthread_mutex_lock(&w->mu);
        size_t n = d->text ? strlen(d->text) : 0;
        if (n > sizeof w->answer - 1 - w->len)
            n = sizeof w->answer - 1 - w->len;
        memcpy(w->answer + w->len, d->text ? d->text : "", n);
        w->len += n;
        w->answer[w->len] = '\0';
        if (d->error && d->error->code != PARLEY__V1__ERROR_CODE__ERROR_CODE_OK)
            w->failed = w->done = true;
        if (d->finish_reason != PARLEY__V1__FINISH_REASON__FINISH_REASON_NONE)
            w->done = true;
        if (w->done)
            pthread_cond_signal(&w->cv);
        pthread_mutex_unlock(&w->mu);
        protobuf_c_message_free_unpacked(&d->base, NULL);
    }
    bus_msg_destroy(m);
}

/* Finds `word` in `s` (lower-case) as a whole word; returns its position or NULL. */
static const char *find_word(const char *s, const char *word)
{
    size_t n = strlen(word);
    for (const char *p = strstr(s, word); p; p = strstr(p + 1, word)) {
        bool before = p == s || !(isalnum((unsigned char)p[-1]) || p[-1] == '-' || p[-1] == '_');
        bool after = !(isalnum((unsigned char)p[n]) || p[n] == '-' || p[n] == '_');
        if (before && after)
            return p;
    }
    return NULL;
}

bool model_parse(const rules *r, const char *answer, char *category, size_t cap, int *action)
{
    char low[MDL_ANSWER_CAP];
    size_t n = 0;
    for (; answer[n] && n < sizeof low - 1; n++)
        low[n] = (char)tolower((unsigned char)answer[n]);
    low[n] = '\0';
    const char *unsafe = find_word(low, "unsafe");
    const char *safe = find_word(low, "safe");
    if (!unsafe && !safe)
        return false;
    if (!unsafe || (safe && safe < unsafe)) {
        snprintf(category, cap, "none");
        *action = RULES_NONE;
        return true;
    }
    const char *best = NULL;
    for (size_t i = 0; i < rules_n_categories(r); i++) {
        const rules_category *c = rules_category_at(r, i);
        const char *p = find_word(low, c->name);
        if (p && (!best || p < best)) {
            best = p;
            snprintf(category, cap, "%s", c->name);
            *action = (int)c->action;
        }
    }
    if (!best) {
        snprintf(category, cap, "unsafe");
        *action = RULES_FLAG;
    }
    return true;
}

/* Writes the classification instructions into buf. */
static void build_prompt(const rules *r, char *buf, size_t cap)
{
    size_t w = (size_t)snprintf(buf, cap,
                                "You are a content moderator. Classify the user's text. Answer "
                                "with exactly one line: SAFE, or UNSAFE: <category> where "
                                "<category> is one of:");
    for (size_t i = 0; i < rules_n_categories(r) && w < cap; i++)
        w += (size_t)snprintf(buf + w, cap - w, "%s %s", i ? "," : "",
                              rules_category_at(r, i)->name);
    if (w < cap)
        snprintf(buf + w, cap - w, ".");
}

pl_status model_classify(safety *s, const char *text, judge_verdict *out)
{
    char rid[33], subj[96], sys[2048];
    dmn_random_id(rid);
    snprintf(subj, sizeof subj, "%s%s", SUBJ_DELTA_PREFIX, rid);
    build_prompt(s->rules, sys, sizeof sys);
    /* The text, cut at a code point boundary. */
    size_t n = strlen(text), max = (size_t)s->cfg.model_max_bytes;
    if (n > max) {
        n = max;
        while (n > 0 && ((unsigned char)text[n] & 0xC0) == 0x80)
            n--;
    }
    char *cut = strndup(text, n);
    if (!cut)
        return PL_ERRF(PL_NOMEM, "out of memory");

    mdl_wait w = {.done = false};
    pthread_mutex_init(&w.mu, NULL);
    sync_cond_init(&w.cv);
    bus_sub *sub = NULL;
    pl_status st = bus_subscribe(dmn_bus(s->d), subj, NULL, on_delta, &w, &sub);
    if (st == PL_OK) {
        Parley__V1__ChatMessage m_sys = PARLEY__V1__CHAT_MESSAGE__INIT,
                                m_usr = PARLEY__V1__CHAT_MESSAGE__INIT;
        m_sys.role = PARLEY__V1__ROLE__ROLE_SYSTEM;
        m_sys.content = sys;
        m_usr.role = PARLEY__V1__ROLE__ROLE_USER;
        m_usr.content = cut;
        Parley__V1__ChatMessage *msgs[] = {&m_sys, &m_usr};
        Parley__V1__InferRequest ir = PARLEY__V1__INFER_REQUEST__INIT;
        Parley__V1__SamplingParams sp = PARLEY__V1__SAMPLING_PARAMS__INIT;
        ir.request_id = rid;
        ir.user_id = (char *)"";
        ir.priority = PARLEY__V1__PRIORITY__PRIORITY_SYSTEM;
        ir.model = (char *)s->cfg.model;
        ir.messages = msgs;
        ir.n_messages = 2;
        sp.temperature = 0;
        sp.top_p = 1;
        sp.repetition_penalty = 1;
        ir.sampling = &sp;
        ir.max_tokens = MDL_MAX_TOKENS;
        ir.created_ms = dmn_wall_ms();
        ir.deadline_ms = ir.created_ms + s->cfg.model_timeout_ms;
        ir.delta_subject = subj;
        Parley__V1__InferAdmit *adm = NULL;
        st = bus_request_pb(dmn_bus(s->d), SUBJ_INFER_SUBMIT, &ir.base,
                            &parley__v1__infer_admit__descriptor, 5000, (ProtobufCMessage **)&adm);
        if (st != PL_OK) {
            st = PL_ERRF(PL_UNAVAILABLE, "the infer-gateway did not answer: %s", pl_err_last());
        } else {
            if (adm->error && adm->error->code != PARLEY__V1__ERROR_CODE__ERROR_CODE_OK)
                st = PL_ERRF(wire_status_from_code(adm->error->code), "refused: %s",
                             adm->error->message ? adm->error->message : "");
            protobuf_c_message_free_unpacked(&adm->base, NULL);
        }
    }
    if (st == PL_OK) {
        struct timespec until = sync_deadline(s->cfg.model_timeout_ms);
        pthread_mutex_lock(&w.mu);
        int rc = 0;
        while (!w.done && rc == 0)
            rc = pthread_cond_timedwait(&w.cv, &w.mu, &until);
        bool done = w.done, failed = w.failed;
        pthread_mutex_unlock(&w.mu);
        if (!done) {
            Parley__V1__Cancel c = PARLEY__V1__CANCEL__INIT;
            c.request_id = rid;
            c.reason = (char *)"safety classification timed out";
            bus_publish_pb(dmn_bus(s->d), SUBJ_CANCEL, &c.base);
            st = PL_ERRF(PL_TIMEOUT, "no answer from %s within the deadline", s->cfg.model);
        } else if (failed) {
            st = PL_ERRF(PL_UNAVAILABLE, "the model failed to answer");
        }
    }
    bus_unsubscribe(sub); /* no handler runs after this: w may go */
    free(cut);
    if (st == PL_OK) {
        int action = RULES_NONE;
        out->v = (Parley__V1__SafetyVerdict)PARLEY__V1__SAFETY_VERDICT__INIT;
        if (!model_parse(s->rules, w.answer, out->category, sizeof out->category, &action)) {
            snprintf(out->category, sizeof out->category, "unparsed");
            action = RULES_RECORD;
        }
        /* The model's words, cut at a code point boundary. */
        size_t k = w.len < 120 ? w.len : 120;
        while (k > 0 && k < w.len && ((unsigned char)w.answer[k] & 0xC0) == 0x80)
            k--;
        snprintf(out->detail, sizeof out->detail, "model answered \"%.*s\"", (int)k, w.answer);
        out->v.category = out->category;
        out->v.detail = out->detail;
        out->v.classifier = s->model_classifier;
        out->v.action = (Parley__V1__SafetyAction)action;
        out->v.score = action >= RULES_FLAG ? 0.8f : 0.0f;
    }
    pthread_cond_destroy(&w.cv);
    pthread_mutex_destroy(&w.mu);
    return st;
}
