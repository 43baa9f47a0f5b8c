/* rules.c — the rule classifier: configuration parsing, the Aho-Corasick automaton, and the
 * one-pass scan with the e-mail / phone / card detectors (see rules.h).
 *
 * Normalisation, the same for patterns and texts: ASCII letters are lower-cased, every ASCII
 * white-space byte becomes ' ' and a run of them counts once; other bytes (UTF-8 included) are
 * kept as they are, so non-ASCII phrases match byte for byte, case-sensitively (a trade-off:
 * Unicode case folding would need tables this module does not carry).
 *
 * The automaton is a full transition table delta[state][class]: bytes that appear in no pattern
 * share class 0, so the table stays small (states × classes int32s, about 40 KB per hundred
 * phrases) and each text byte costs one lookup. Output lists hang off the states; a
 * "dictionary link" per state points at the nearest suffix state that also ends a pattern, so
 * reporting walks only states with output.
 *
 * Word boundaries: a phrase that begins (ends) with a word character — ASCII letter or digit,
 * '_', or any byte >= 0x80 — matches only when the character before (after) it is not one, so
 * "kill" does not match in "skill". A ring buffer of the last 256 normalised bytes gives the
 * character before a match; the next raw byte gives the one after.
 *
 * Thread-safety: a compiled rule set is read-only. Nothing here allocates while scanning. */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rules.h"

enum { DET_EMAIL, DET_PHONE, DET_CARD, DET_COUNT };
static const char *const det_names[DET_COUNT] = {"email", "phone", "card"};

typedef struct rpat {
    int category;
    bool word_start, word_end; /* boundary checks needed at either end */
    uint16_t len;
    char *text; /* normalised */
} rpat;

struct rules {
    rules_category cats[RULES_MAX_CATEGORIES];
    char *cat_names[RULES_MAX_CATEGORIES];
    size_t n_cats;
    rpat *pats;
    size_t n_pats, cap_pats;
    int det_cat[DET_COUNT]; /* category of each detector, -1 when unused */
    /* the automaton */
    uint8_t cls[256]; /* byte → class; 0 = in no pattern */
    int n_cls;
    size_t n_states;
    int32_t *delta;    /* (n_states, n_cls) next state */
    int32_t *out_head; /* (n_states) first output entry of patterns ending here, -1 none */
    int32_t *dict;     /* (n_states) nearest proper suffix state with output, -1 none */
    uint8_t *any_out;  /* (n_states) this state or a suffix of it ends a pattern */
    int32_t *out_pat;  /* (n_pats) output entries: pattern index … */
    int32_t *out_next; /* … and the next entry of the same state, -1 */
};

static inline uint8_t norm(uint8_t c)
{
    if (c >= 'A' && c <= 'Z')
        return (uint8_t)(c + 32);
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v')
        return ' ';
    return c;
}

static inline bool is_word(uint8_t c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c >= 0x80;
}

int rules_luhn_ok(const uint8_t *d, size_t n)
{
    unsigned sum = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned v = d[n - 1 - i];
        if (i & 1) {
            v *= 2;
            if (v > 9)
                v -= 9;
        }
        sum += v;
    }
    return n > 0 && sum % 10 == 0;
}

void rules_free(rules *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->n_cats; i++)
        free(r->cat_names[i]);
    for (size_t i = 0; i < r->n_pats; i++)
        free(r->pats[i].text);
    free(r->pats);
    free(r->delta);
    free(r->out_head);
    free(r->dict);
    free(r->any_out);
    free(r->out_pat);
    free(r->out_next);
    free(r);
}

size_t rules_n_categories(const rules *r)
{
    return r->n_cats;
}

const rules_category *rules_category_at(const rules *r, size_t i)
{
    return &r->cats[i];
}

size_t rules_n_patterns(const rules *r)
{
    return r->n_pats;
}

/* --- parsing ------------------------------------------------------------------------------ */

/* Normalises `s` (n bytes) into a fresh string: lower-case, white space collapsed, trimmed.
 * NULL when out of memory; *len receives the length. */
static char *norm_pattern(const char *s, size_t n, size_t *len)
{
    char *o = malloc(n + 1);
    if (!o)
        return NULL;
    size_t w = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = norm((uint8_t)s[i]);
        if (c == ' ' && (w == 0 || o[w - 1] == ' '))
            continue;
        o[w++] = (char)c;
    }
    while (w > 0 && o[w - 1] == ' ')
        w--;
    o[w] = '\0';
    *len = w;
    return o;
}

static pl_status add_pattern(rules *r, const char *text, size_t n, bool boundary, const char *where)
{
    size_t len;
    char *p = norm_pattern(text, n, &len);
    if (!p)
        return PL_ERRF(PL_NOMEM, "out of memory");
    if (len == 0 || len > RULES_MAX_PATTERN) {
        free(p);
        return PL_ERRF(PL_INVALID, "%s: a pattern must have 1 to %d bytes", where,
                       RULES_MAX_PATTERN);
    }
    if (r->n_pats == r->cap_pats) {
        size_t cap = r->cap_pats ? r->cap_pats * 2 : 64;
        rpat *np = realloc(r->pats, cap * sizeof *np);
        if (!np) {
            free(p);
            return PL_ERRF(PL_NOMEM, "out of memory");
        }
        r->pats = np;
        r->cap_pats = cap;
    }
    rpat *rp = &r->pats[r->n_pats++];
    rp->category = (int)r->n_cats - 1;
    rp->len = (uint16_t)len;
    rp->text = p;
    rp->word_start = boundary && is_word((uint8_t)p[0]);
    rp->word_end = boundary && is_word((uint8_t)p[len - 1]);
    return PL_OK;
}

static pl_status parse_category(rules *r, char *args, const char *where)
{
    char *save = NULL;
    char *name = strtok_r(args, " \t", &save);
    char *action = strtok_r(NULL, " \t", &save);
    char *score = strtok_r(NULL, " \t", &save);
    if (!name || !action || strtok_r(NULL, " \t", &save))
        return PL_ERRF(PL_INVALID, "%s: expected 'category <name> <record|flag|block> [score]'",
                       where);
    for (const char *c = name; *c; c++)
        if (!(islower((unsigned char)*c) || isdigit((unsigned char)*c) || *c == '-' || *c == '_'))
            return PL_ERRF(PL_INVALID, "%s: a category name uses a-z, 0-9, '-' and '_'", where);
    if (strlen(name) > 48)
        return PL_ERRF(PL_INVALID, "%s: a category name has at most 48 characters", where);
    for (size_t i = 0; i < r->n_cats; i++)
        if (strcmp(r->cat_names[i], name) == 0)
            return PL_ERRF(PL_INVALID, "%s: category '%s' is defined twice", where, name);
    if (r->n_cats == RULES_MAX_CATEGORIES)
        return PL_ERRF(PL_INVALID, "%s: more than %d categories", where, RULES_MAX_CATEGORIES);
    rules_action a;
    if (strcmp(action, "record") == 0)
        a = RULES_RECORD;
    else if (strcmp(action, "flag") == 0)
        a = RULES_FLAG;
    else if (strcmp(action, "block") == 0)
        a = RULES_BLOCK;
    else
        return PL_ERRF(PL_INVALID, "%s: unknown action '%s' (record, flag or block)", where,
                       action);
    float sc = 1.0f;
    if (score) {
        char *end;
        errno = 0;
        double v = strtod(score, &end);
        if (*end || errno || !(v >= 0 && v <= 1))
            return PL_ERRF(PL_INVALID, "%s: the score is a number from 0 to 1", where);
        sc = (float)v;
    }
    char *copy = strdup(name);
    if (!copy)
        return PL_ERRF(PL_NOMEM, "out of memory");
    r->cat_names[r->n_cats] = copy;
    r->cats[r->n_cats] = (rules_category){.name = copy, .action = a, .score = sc};
    r->n_cats++;
    return PL_OK;
}

static pl_status parse_line(rules *r, char *line, const char *where)
{
    while (*line == ' ' || *line == '\t')
        line++;
    size_t n = strlen(line);
    while (n > 0 && (line[n - 1] == ' ' || line[n - 1] == '\t' || line[n - 1] == '\r'))
        line[--n] = '\0';
    if (n == 0 || line[0] == '#')
        return PL_OK;
    char *sp = line;
    while (*sp && *sp != ' ' && *sp != '\t')
        sp++;
    char *args = sp;
    if (*args) {
        *args++ = '\0';
        while (*args == ' ' || *args == '\t')
            args++;
    }
    if (strcmp(line, "category") == 0)
        return parse_category(r, args, where);
    if (r->n_cats == 0)
        return PL_ERRF(PL_INVALID, "%s: '%s' before any 'category' line", where, line);
    if (strcmp(line, "phrase") == 0 || strcmp(line, "contains") == 0)
        return add_pattern(r, args, strlen(args), line[0] == 'p', where);
    if (strcmp(line, "detect") == 0) {
        for (int d = 0; d < DET_COUNT; d++)
            if (strcmp(args, det_names[d]) == 0) {
                if (r->det_cat[d] >= 0)
                    return PL_ERRF(PL_INVALID, "%s: detector '%s' already belongs to '%s'", where,
                                   args, r->cat_names[r->det_cat[d]]);
                r->det_cat[d] = (int)r->n_cats - 1;
                return PL_OK;
            }
        return PL_ERRF(PL_INVALID, "%s: unknown detector '%s' (email, phone or card)", where, args);
    }
    return PL_ERRF(PL_INVALID, "%s: unknown directive '%s' (category, phrase, contains, detect)",
                   where, line);
}

/* --- the automaton ------------------------------------------------------------------------ */

static pl_status build(rules *r)
{
    memset(r->cls, 0, sizeof r->cls);
    int n_cls = 1;
    size_t max_states = 1;
    for (size_t i = 0; i < r->n_pats; i++) {
        for (size_t k = 0; k < r->pats[i].len; k++) {
            uint8_t c = (uint8_t)r->pats[i].text[k];
            if (!r->cls[c])
                r->cls[c] = (uint8_t)n_cls++;
        }
        max_states += r->pats[i].len;
    }
    r->n_cls = n_cls;
    r->delta = malloc(max_states * (size_t)n_cls * sizeof *r->delta);
    r->out_head = malloc(max_states * sizeof *r->out_head);
    r->dict = malloc(max_states * sizeof *r->dict);
    r->any_out = calloc(max_states, 1);
    r->out_pat = malloc((r->n_pats + 1) * sizeof *r->out_pat);
    r->out_next = malloc((r->n_pats + 1) * sizeof *r->out_next);
    int32_t *fail = malloc(max_states * sizeof *fail);
    int32_t *queue = malloc(max_states * sizeof *queue);
    if (!r->delta || !r->out_head || !r->dict || !r->any_out || !r->out_pat || !r->out_next ||
        !fail || !queue) {
        free(fail);
        free(queue);
        return PL_ERRF(PL_NOMEM, "out of memory");
    }
    for (size_t i = 0; i < max_states * (size_t)n_cls; i++)
        r->delta[i] = -1;
    for (size_t i = 0; i < max_states; i++)
        r->out_head[i] = r->dict[i] = -1;
    /* the trie */
    size_t n_states = 1;
    for (size_t i = 0; i < r->n_pats; i++) {
        int32_t s = 0;
        for (size_t k = 0; k < r->pats[i].len; k++) {
            int c = r->cls[(uint8_t)r->pats[i].text[k]];
            int32_t *t = &r->delta[(size_t)s * n_cls + c];
            if (*t < 0)
                *t = (int32_t)n_states++;
            s = *t;
        }
        r->out_pat[i] = (int32_t)i;
        r->out_next[i] = r->out_head[s];
        r->out_head[s] = (int32_t)i;
        r->any_out[s] = 1;
    }
    /* failure links breadth first, turning the trie into a full transition table */
    size_t qh = 0, qt = 0;
    fail[0] = 0;
    for (int c = 0; c < n_cls; c++) {
        int32_t *t = &r->delta[c];
        if (*t < 0) {
            *t = 0;
        } else {
            fail[*t] = 0;
            queue[qt++] = *t;
        }
    }
    while (qh < qt) {
        int32_t s = queue[qh++];
        int32_t f = fail[s];
        r->dict[s] = r->out_head[f] >= 0 ? f : r->dict[f];
        if (r->dict[s] >= 0)
            r->any_out[s] = 1;
        for (int c = 0; c < n_cls; c++) {
            int32_t *t = &r->delta[(size_t)s * n_cls + c];
            if (*t < 0) {
                *t = r->delta[(size_t)f * n_cls + c];
            } else {
                fail[*t] = r->delta[(size_t)f * n_cls + c];
                queue[qt++] = *t;
            }
        }
    }
    free(fail);
    free(queue);
    r->n_states = n_states;
    return PL_OK;
}

pl_status rules_compile(const char *const *texts, const char *const *names, size_t n, rules **out)
{
    *out = NULL;
    rules *r = calloc(1, sizeof *r);
    if (!r)
        return PL_ERRF(PL_NOMEM, "out of memory");
    for (int d = 0; d < DET_COUNT; d++)
        r->det_cat[d] = -1;
    pl_status s = PL_OK;
    for (size_t f = 0; f < n && s == PL_OK; f++) {
        const char *p = texts[f];
        for (unsigned line = 1; *p && s == PL_OK; line++) {
            const char *e = strchr(p, '\n');
            size_t len = e ? (size_t)(e - p) : strlen(p);
            char *buf = malloc(len + 1);
            if (!buf) {
                s = PL_ERRF(PL_NOMEM, "out of memory");
                break;
            }
            memcpy(buf, p, len);
            buf[len] = '\0';
            char where[300];
            snprintf(where, sizeof where, "%s:%u", names[f], line);
            s = parse_line(r, buf, where);
            free(buf);
            p = e ? e + 1 : p + len;
        }
    }
    if (s == PL_OK && r->n_cats == 0)
        s = PL_ERRF(PL_INVALID, "the safety rules define no category");
    if (s == PL_OK)
        s = build(r);
    if (s != PL_OK) {
        rules_free(r);
        return s;
    }
    *out = r;
    return PL_OK;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

pl_status rules_load_dir(const char *dir, rules **out)
{
    *out = NULL;
    DIR *d = opendir(dir);
    if (!d)
        return PL_ERRF(PL_IO, "cannot open the rules folder %s: %s", dir, strerror(errno));
    char **names = NULL, **texts = NULL;
    size_t n = 0, cap = 0;
    pl_status s = PL_OK;
    struct dirent *e;
    while (s == PL_OK && (e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        if (len < 7 || e->d_name[0] == '.' || strcmp(e->d_name + len - 6, ".rules") != 0)
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 8;
            char **nn = realloc(names, cap * sizeof *nn);
            if (!nn) {
                s = PL_ERRF(PL_NOMEM, "out of memory");
                break;
            }
            names = nn;
        }
        if (asprintf(&names[n], "%s/%s", dir, e->d_name) < 0) {
            s = PL_ERRF(PL_NOMEM, "out of memory");
            break;
        }
        n++;
    }
    closedir(d);
    if (s == PL_OK && n == 0)
        s = PL_ERRF(PL_INVALID, "no *.rules file in %s", dir);
    if (s == PL_OK) {
        qsort(names, n, sizeof *names, cmp_str);
        texts = calloc(n, sizeof *texts);
        if (!texts)
            s = PL_ERRF(PL_NOMEM, "out of memory");
    }
    for (size_t i = 0; s == PL_OK && i < n; i++) {
        FILE *f = fopen(names[i], "rb");
        if (!f) {
            s = PL_ERRF(PL_IO, "cannot read %s: %s", names[i], strerror(errno));
            break;
        }
        size_t cap_t = 4096, len = 0;
        char *t = malloc(cap_t);
        size_t got;
        while (t && (got = fread(t + len, 1, cap_t - len - 1, f)) > 0) {
            len += got;
            if (len + 1 == cap_t) {
                char *nt = cap_t < (64u << 20) ? realloc(t, cap_t * 2) : NULL;
                if (!nt) {
                    free(t);
                    t = NULL;
                }
                t = nt;
                cap_t *= 2;
            }
        }
        bool err = ferror(f);
        fclose(f);
        if (!t) {
            s = PL_ERRF(PL_NOMEM, "%s is too large or memory ran out", names[i]);
            break;
        }
        if (err) {
            free(t);
            s = PL_ERRF(PL_IO, "cannot read %s", names[i]);
            break;
        }
        t[len] = '\0';
        texts[i] = t;
    }
    if (s == PL_OK)
        s = rules_compile((const char *const *)texts, (const char *const *)names, n, out);
    for (size_t i = 0; i < n; i++) {
        free(names[i]);
        if (texts)
            free(texts[i]);
    }
    free(names);
    free(texts);
    return s;
}

/* --- scanning ----------------------------------------------------------------------------- */

typedef struct acc {
    uint32_t count[RULES_MAX_CATEGORIES];
    const char *first[RULES_MAX_CATEGORIES];
} acc;

static inline void hit(acc *a, int cat, const char *what)
{
    if (a->count[cat]++ == 0)
        a->first[cat] = what;
}

/* A run of digits with separators, for the phone and card detectors. */
typedef struct drun {
    bool active, plus, paren, start_ok, after_sep;
    int n;         /* digits */
    int groups;    /* digit groups */
    int cur;       /* digits in the current group */
    int min_later; /* smallest group after the first */
    int sep_run;   /* separator bytes since the last digit */
    uint8_t d[24]; /* the first 24 digits */
} drun;

static void drun_end(const rules *r, acc *a, drun *g, bool end_ok)
{
    g->active = false;
    if (!g->start_ok || !end_ok)
        return;
    if (g->groups > 1 && g->cur < g->min_later)
        g->min_later = g->cur;
    int card = r->det_cat[DET_CARD], phone = r->det_cat[DET_PHONE];
    if (card >= 0 && g->n >= 13 && g->n <= 19 && !g->plus && !g->paren &&
        (g->groups == 1 || g->min_later >= 3) && rules_luhn_ok(g->d, (size_t)g->n)) {
        hit(a, card, det_names[DET_CARD]);
        return;
    }
    if (phone < 0 || g->groups > 6 || (g->groups > 1 && g->min_later < 2))
        return;
    if ((g->plus && g->n >= 8 && g->n <= 15) ||
        ((g->groups >= 3 || (g->paren && g->groups >= 2)) && g->n >= 10 && g->n <= 11))
        hit(a, phone, det_names[DET_PHONE]);
}

static void drun_byte(const rules *r, acc *a, drun *g, const uint8_t *t, size_t i)
{
    uint8_t c = t[i];
    if (c >= '0' && c <= '9') {
        if (!g->active) {
            memset(g, 0, sizeof *g);
            g->active = true;
            g->min_later = 99;
            size_t j = i;
            if (j > 0 && t[j - 1] == '+') {
                g->plus = true;
                j--;
            } else if (j > 0 && t[j - 1] == '(') {
                g->paren = true;
                j--;
            }
            g->start_ok = j == 0 || !is_word(t[j - 1]);
        }
        if (g->sep_run > 0 || g->groups == 0) {
            if (g->groups > 1 && g->cur < g->min_later)
                g->min_later = g->cur;
            g->groups++;
            g->cur = 0;
        }
        if (g->n < (int)sizeof g->d)
            g->d[g->n] = (uint8_t)(c - '0');
        g->n++;
        g->cur++;
        g->sep_run = 0;
        g->after_sep = false;
        return;
    }
    if (!g->active)
        return;
    if ((c == ' ' || c == '-' || c == '(' || c == ')') && g->sep_run < 2) {
        if (c == ')' || c == '(')
            g->paren = true;
        g->sep_run++;
        g->after_sep = true;
        return;
    }
    drun_end(r, a, g, g->after_sep || !is_word(c));
}

static inline bool email_local(uint8_t c)
{
    return isalnum(c) || c == '.' || c == '_' || c == '%' || c == '+' || c == '-';
}

/* At an '@' in t[at]: a local part before it and a domain with a dot and an alphabetic TLD of
 * two or more letters after it. Looks at most 64 bytes back and 255 forward. */
static bool email_at(const uint8_t *t, size_t len, size_t at)
{
    size_t b = at;
    while (b > 0 && at - b < 64 && email_local(t[b - 1]))
        b--;
    if (b == at)
        return false;
    int dots = 0, label = 0;
    bool alpha = true;
    for (size_t j = at + 1; j < len && j - at < 256; j++) {
        uint8_t c = t[j];
        if (isalnum(c) || c == '-') {
            label++;
            if (!isalpha(c))
                alpha = false;
        } else if (c == '.' && label > 0 && j + 1 < len && isalnum(t[j + 1])) {
            dots++;
            label = 0;
            alpha = true;
        } else {
            break;
        }
    }
    return dots > 0 && label >= 2 && alpha;
}

size_t rules_scan(const rules *r, const char *text, size_t len, rules_hit *out, size_t cap)
{
    const uint8_t *t = (const uint8_t *)text;
    acc a;
    memset(a.count, 0, r->n_cats * sizeof a.count[0]);
    uint8_t ring[256];
    size_t npos = 0; /* normalised bytes so far */
    uint8_t prev = ' ';
    int32_t st = 0;
    const int n_cls = r->n_cls;
    const bool use_ac = r->n_pats > 0;
    const bool use_digits = r->det_cat[DET_PHONE] >= 0 || r->det_cat[DET_CARD] >= 0;
    const int email = r->det_cat[DET_EMAIL];
    drun g = {0};
    for (size_t i = 0; i < len; i++) {
        uint8_t c = norm(t[i]);
        if (use_ac && !(c == ' ' && prev == ' ')) {
            ring[npos & 255] = c;
            npos++;
            prev = c;
            st = r->delta[(size_t)st * n_cls + r->cls[c]];
            if (r->any_out[st]) {
                for (int32_t s = r->out_head[st] >= 0 ? st : r->dict[st]; s >= 0; s = r->dict[s])
                    for (int32_t k = r->out_head[s]; k >= 0; k = r->out_next[k]) {
                        const rpat *p = &r->pats[r->out_pat[k]];
                        if (p->word_start && npos > p->len &&
                            is_word(ring[(npos - p->len - 1) & 255]))
                            continue;
                        if (p->word_end && i + 1 < len && is_word(t[i + 1]))
                            continue;
                        hit(&a, p->category, p->text);
                    }
            }
        }
        if (use_digits)
            drun_byte(r, &a, &g, t, i);
        if (email >= 0 && t[i] == '@' && email_at(t, len, i))
            hit(&a, email, det_names[DET_EMAIL]);
    }
    if (g.active)
        drun_end(r, &a, &g, true);
    size_t n = 0;
    for (size_t c = 0; c < r->n_cats; c++) {
        if (!a.count[c])
            continue;
        if (n < cap)
            out[n] = (rules_hit){.category = (int)c, .count = a.count[c], .first = a.first[c]};
        n++;
    }
    return n;
}
