/* judge.c — an event's text → rule verdicts, shared by the consumer and the pre-check.
 *
 * Pure functions over a compiled rule set: no allocation, no I/O; the verdicts' strings live
 * in the caller's judge_verdict slots or are borrowed from the rule set. */
#include <stdio.h>
#include <string.h>

#include "safety.h"

const char *safety_action_name(int action)
{
    switch (action) {
    case RULES_RECORD:
        return "record";
    case RULES_FLAG:
        return "flag";
    case RULES_BLOCK:
        return "block";
    default:
        return "none";
    }
}

size_t judge_rules(const rules *r, const char *text, judge_verdict *out, size_t cap,
                   int *max_action)
{
    rules_hit hits[RULES_MAX_CATEGORIES];
    size_t n = rules_scan(r, text ? text : "", text ? strlen(text) : 0, hits, RULES_MAX_CATEGORIES);
    *max_action = RULES_NONE;
    if (cap == 0)
        return 0;
    if (n == 0) {
        judge_verdict *j = &out[0];
        j->v = (Parley__V1__SafetyVerdict)PARLEY__V1__SAFETY_VERDICT__INIT;
        snprintf(j->category, sizeof j->category, "none");
        j->detail[0] = '\0';
        j->v.category = j->category;
        j->v.detail = j->detail;
        j->v.classifier = (char *)"rules";
        return 1;
    }
    size_t w = 0;
    for (size_t i = 0; i < n && w < cap; i++) {
        const rules_category *c = rules_category_at(r, (size_t)hits[i].category);
        judge_verdict *j = &out[w++];
        j->v = (Parley__V1__SafetyVerdict)PARLEY__V1__SAFETY_VERDICT__INIT;
        snprintf(j->category, sizeof j->category, "%s", c->name);
        if (hits[i].count > 1)
            snprintf(j->detail, sizeof j->detail, "matched \"%.200s\" (%u matches)", hits[i].first,
                     hits[i].count);
        else
            snprintf(j->detail, sizeof j->detail, "matched \"%.200s\"", hits[i].first);
        j->v.category = j->category;
        j->v.detail = j->detail;
        j->v.classifier = (char *)"rules";
        j->v.score = c->score;
        j->v.action = (Parley__V1__SafetyAction)c->action;
        if ((int)c->action > *max_action)
            *max_action = (int)c->action;
    }
    return w;
}
