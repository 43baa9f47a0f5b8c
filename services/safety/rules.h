/* rules.h — the rule classifier: categories of phrases and built-in detectors, matched in one
 * pass over a text.
 *
 * A rule set is compiled from configuration files (docs/safety.md has the format): each
 * category has a name, an action (record, flag or block), a score, and any number of
 *   phrase <words>    matched case-insensitively on word boundaries, runs of white space
 *                     counting as one space ("kill  myself" matches "kill myself");
 *   contains <text>   matched case-insensitively anywhere (markers such as "<|im_start|>");
 *   detect <name>     a built-in detector: email, phone, card (13–19 digits passing the Luhn
 *                     check).
 * All phrases of all categories go into one Aho-Corasick automaton (a full transition table
 * over the byte classes the patterns use), and the detectors are small state machines driven
 * by the same loop, so a text is read once whatever the number of patterns.
 *
 * A compiled rule set is immutable: any number of threads may scan with it at once. */
#ifndef PARLEY_SAFETY_RULES_H
#define PARLEY_SAFETY_RULES_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

#define RULES_MAX_CATEGORIES 64
#define RULES_MAX_PATTERN    200 /* bytes of one phrase after normalisation */

/* The same values as parley.v1.SafetyAction. */
typedef enum rules_action {
    RULES_NONE = 0,
    RULES_RECORD = 1,
    RULES_FLAG = 2,
    RULES_BLOCK = 3,
} rules_action;

typedef struct rules rules;

typedef struct rules_category {
    const char *name; /* "self-harm" */
    rules_action action;
    float score; /* 0..1, from the configuration (default 1) */
} rules_category;

/* One category that matched a text. */
typedef struct rules_hit {
    int category;      /* index for rules_category_at */
    uint32_t count;    /* matches in the text */
    const char *first; /* what matched first: the phrase, or "email" / "phone" / "card";
                          borrowed from the rule set */
} rules_hit;

/* Compiles rule files given as texts: texts[i] is the content of a file called names[i] (used
 * in error messages). PL_INVALID with "name:line: why" recorded for a malformed line, an unknown
 * action or detector, a duplicate category, more than RULES_MAX_CATEGORIES categories, or no
 * category at all; PL_NOMEM. On PL_OK *out is owned by the caller (rules_free). */
pl_status rules_compile(const char *const *texts, const char *const *names, size_t n, rules **out);
/* Reads every "*.rules" file of `dir` (in name order) and compiles them. PL_IO when the folder
 * or a file cannot be read, otherwise as rules_compile. */
pl_status rules_load_dir(const char *dir, rules **out);
void rules_free(rules *r); /* accepts NULL */

size_t rules_n_categories(const rules *r);
/* Borrowed; valid while `r` lives. i < rules_n_categories(r). */
const rules_category *rules_category_at(const rules *r, size_t i);
/* Phrases and markers compiled, for logs. */
size_t rules_n_patterns(const rules *r);

/* Scans `len` bytes of `text` (need not be NUL-terminated; any bytes, invalid UTF-8 included)
 * and writes one hit per category that matched, in category order, into out[0..cap). Returns
 * the number of categories that matched (at most cap are written). O(len). */
size_t rules_scan(const rules *r, const char *text, size_t len, rules_hit *out, size_t cap);

/* The Luhn check over `n` decimal digits (values 0..9). Exposed for tests. */
int rules_luhn_ok(const uint8_t *digits, size_t n);

#endif
