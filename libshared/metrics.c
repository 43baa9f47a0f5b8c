/* metrics.c — a Prometheus registry: counters, gauges and histograms, rendered as text 0.0.4.
 *
 * Ownership: the registry owns its families (a list in registration order), each family owns
 * its children (a list in creation order) and every string it was given (copied). Nothing is
 * freed before met_registry_destroy, so a met_child pointer stays valid for the registry's life
 * and hot paths may keep it.
 *
 * Threading: updates are lock-free. A value is a double kept as its uint64 bit pattern in an
 * atomic and changed with a compare-and-swap loop; histogram buckets are atomic integer counts.
 * met_withv() takes the family's mutex to find or create a child; registering a family takes the
 * registry's mutex; met_render() takes the registry's mutex, then each family's in turn (always
 * in that order, so the two never deadlock). A render that races with updates may show a
 * histogram whose _sum lags its buckets by a sample; _count is computed from the buckets, so
 * the +Inf bucket and _count always agree.
 *
 * Child lookup is a linear scan: label values have small, bounded cardinality by contract, and
 * callers cache the pointer. It deliberately does not expire children, support summaries or
 * timestamps, or serve HTTP (admin.c does). */
#include "metrics.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct met_child {
    met_family *fam;
    char *values[MET_MAX_LABELS];
    _Atomic uint64_t bits;    /* double: counter / gauge value, or histogram sum */
    _Atomic uint64_t *counts; /* histograms: (n_bounds + 1) per-bucket (not cumulative) counts,
                                 the last one for values above every bound */
    met_child *next;
};

struct met_family {
    char *name, *help;
    met_kind kind;
    char *labels[MET_MAX_LABELS];
    size_t n_labels;
    double *bounds; /* histograms: n_bounds strictly increasing finite upper bounds */
    size_t n_bounds;
    pthread_mutex_t mu; /* guards the children list */
    met_child *children, *last;
    met_child *solo; /* the single child of an unlabelled family, created at registration */
    met_family *next;
};

struct met_registry {
    pthread_mutex_t mu; /* guards the families list */
    met_family *head, *tail;
};

const double met_latency_buckets[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                      0.5,   1,      2.5,   5,    10,    30,   60};
const size_t met_latency_buckets_n = sizeof met_latency_buckets / sizeof met_latency_buckets[0];

/* --- atomic doubles ------------------------------------------------------------------------ */

static uint64_t d2u(double d)
{
    uint64_t u;
    memcpy(&u, &d, sizeof u);
    return u;
}

static double u2d(uint64_t u)
{
    double d;
    memcpy(&d, &u, sizeof d);
    return d;
}

static void atomic_add_double(_Atomic uint64_t *a, double v)
{
    uint64_t old = atomic_load_explicit(a, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(a, &old, d2u(u2d(old) + v), memory_order_relaxed,
                                                  memory_order_relaxed)) {
    }
}

/* --- registry ------------------------------------------------------------------------------ */

met_registry *met_registry_create(void)
{
    met_registry *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    if (pthread_mutex_init(&r->mu, NULL) != 0) {
        free(r);
        return NULL;
    }
    return r;
}

static void child_free(met_child *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < MET_MAX_LABELS; i++)
        free(c->values[i]);
    free(c->counts);
    free(c);
}

static void family_free(met_family *f)
{
    if (!f)
        return;
    for (met_child *c = f->children, *next; c; c = next) {
        next = c->next;
        child_free(c);
    }
    for (size_t i = 0; i < MET_MAX_LABELS; i++)
        free(f->labels[i]);
    free(f->name);
    free(f->help);
    free(f->bounds);
    pthread_mutex_destroy(&f->mu);
    free(f);
}

void met_registry_destroy(met_registry *r)
{
    if (!r)
        return;
    for (met_family *f = r->head, *next; f; f = next) {
        next = f->next;
        family_free(f);
    }
    pthread_mutex_destroy(&r->mu);
    free(r);
}

/* [a-zA-Z_:][a-zA-Z0-9_:]* for metric names; label names the same without ':' and not starting
 * with "__" (reserved by Prometheus). */
static bool valid_name(const char *s, bool label)
{
    if (!s || !*s)
        return false;
    if (label && s[0] == '_' && s[1] == '_')
        return false;
    for (const char *p = s; *p; p++) {
        char c = *p;
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
                  (!label && c == ':') || (p != s && c >= '0' && c <= '9');
        if (!ok)
            return false;
    }
    return true;
}

/* Allocates a child with copies of `values` (n of them; NULL counts as ""). NULL on OOM. */
static met_child *child_new(met_family *f, const char *const *values, size_t n)
{
    met_child *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->fam = f;
    atomic_init(&c->bits, d2u(0.0));
    for (size_t i = 0; i < n; i++) {
        c->values[i] = strdup(values[i] ? values[i] : "");
        if (!c->values[i]) {
            child_free(c);
            return NULL;
        }
    }
    if (f->kind == MET_HISTOGRAM) {
        c->counts = calloc(f->n_bounds + 1, sizeof *c->counts);
        if (!c->counts) {
            child_free(c);
            return NULL;
        }
        for (size_t i = 0; i <= f->n_bounds; i++)
            atomic_init(&c->counts[i], 0);
    }
    return c;
}

static met_family *family_add(met_registry *r, met_kind kind, const char *name, const char *help,
                              const char *const *labels, const double *buckets, size_t n_buckets)
{
    if (!r || !valid_name(name, false))
        return NULL;
    size_t nl = 0;
    if (labels) {
        for (; labels[nl]; nl++) {
            if (nl == MET_MAX_LABELS || !valid_name(labels[nl], true))
                return NULL;
            if (kind == MET_HISTOGRAM && strcmp(labels[nl], "le") == 0)
                return NULL;
            for (size_t k = 0; k < nl; k++)
                if (strcmp(labels[k], labels[nl]) == 0)
                    return NULL;
        }
    }
    if (kind == MET_HISTOGRAM) {
        if (n_buckets && !buckets)
            return NULL;
        for (size_t i = 0; i < n_buckets; i++)
            if (!isfinite(buckets[i]) || (i > 0 && !(buckets[i] > buckets[i - 1])))
                return NULL;
    }

    met_family *f = calloc(1, sizeof *f);
    if (!f)
        return NULL;
    if (pthread_mutex_init(&f->mu, NULL) != 0) {
        free(f);
        return NULL;
    }
    f->kind = kind;
    f->n_labels = nl;
    f->name = strdup(name);
    f->help = strdup(help ? help : "");
    bool ok = f->name && f->help;
    for (size_t i = 0; ok && i < nl; i++)
        ok = (f->labels[i] = strdup(labels[i])) != NULL;
    if (ok && kind == MET_HISTOGRAM && n_buckets) {
        f->bounds = malloc(n_buckets * sizeof *f->bounds);
        if ((ok = f->bounds != NULL)) {
            memcpy(f->bounds, buckets, n_buckets * sizeof *f->bounds);
            f->n_bounds = n_buckets;
        }
    }
    if (ok && nl == 0) {
        f->solo = child_new(f, NULL, 0);
        f->children = f->last = f->solo;
        ok = f->solo != NULL;
    }
    if (!ok) {
        family_free(f);
        return NULL;
    }

    pthread_mutex_lock(&r->mu);
    for (met_family *g = r->head; g; g = g->next) {
        if (strcmp(g->name, name) == 0) {
            pthread_mutex_unlock(&r->mu);
            family_free(f);
            return NULL;
        }
    }
    if (r->tail)
        r->tail->next = f;
    else
        r->head = f;
    r->tail = f;
    pthread_mutex_unlock(&r->mu);
    return f;
}

met_family *met_counter(met_registry *r, const char *name, const char *help,
                        const char *const *labels)
{
    return family_add(r, MET_COUNTER, name, help, labels, NULL, 0);
}

met_family *met_gauge(met_registry *r, const char *name, const char *help,
                      const char *const *labels)
{
    return family_add(r, MET_GAUGE, name, help, labels, NULL, 0);
}

met_family *met_histogram(met_registry *r, const char *name, const char *help,
                          const char *const *labels, const double *buckets, size_t n_buckets)
{
    return family_add(r, MET_HISTOGRAM, name, help, labels, buckets, n_buckets);
}

/* --- children ------------------------------------------------------------------------------ */

static bool same_values(const met_child *c, const char *const *values, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(c->values[i], values[i] ? values[i] : "") != 0)
            return false;
    return true;
}

met_child *met_withv(met_family *f, const char *const *values, size_t n)
{
    if (!f || n != f->n_labels || (n && !values))
        return NULL;
    if (n == 0)
        return f->solo;
    pthread_mutex_lock(&f->mu);
    met_child *c = f->children;
    while (c && !same_values(c, values, n))
        c = c->next;
    if (!c && (c = child_new(f, values, n)) != NULL) {
        if (f->last)
            f->last->next = c;
        else
            f->children = c;
        f->last = c;
    }
    pthread_mutex_unlock(&f->mu);
    return c;
}

met_child *met_with(met_family *f, ...)
{
    const char *values[MET_MAX_LABELS];
    size_t n = 0;
    va_list ap;
    va_start(ap, f);
    for (const char *v; (v = va_arg(ap, const char *)) != NULL;) {
        if (n == MET_MAX_LABELS) {
            va_end(ap);
            return NULL;
        }
        values[n++] = v;
    }
    va_end(ap);
    return met_withv(f, values, n);
}

/* --- updates ------------------------------------------------------------------------------- */

void met_inc(met_child *c, double v)
{
    if (!c || c->fam->kind == MET_HISTOGRAM || isnan(v))
        return;
    if (c->fam->kind == MET_COUNTER && v < 0)
        return;
    atomic_add_double(&c->bits, v);
}

void met_set(met_child *c, double v)
{
    if (!c || c->fam->kind != MET_GAUGE)
        return;
    atomic_store_explicit(&c->bits, d2u(v), memory_order_relaxed);
}

void met_observe(met_child *c, double v)
{
    if (!c || c->fam->kind != MET_HISTOGRAM || isnan(v))
        return;
    const met_family *f = c->fam;
    /* The first bound >= v (Prometheus' "le"); n_bounds when v is above all of them. */
    size_t lo = 0, hi = f->n_bounds;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (v <= f->bounds[mid])
            hi = mid;
        else
            lo = mid + 1;
    }
    atomic_fetch_add_explicit(&c->counts[lo], 1, memory_order_relaxed);
    atomic_add_double(&c->bits, v);
}

double met_value(const met_child *c)
{
    if (!c)
        return 0;
    return u2d(atomic_load_explicit(&((met_child *)c)->bits, memory_order_relaxed));
}

unsigned long long met_count(const met_child *c)
{
    if (!c || !c->counts)
        return 0;
    unsigned long long n = 0;
    for (size_t i = 0; i <= c->fam->n_bounds; i++)
        n += atomic_load_explicit(&c->counts[i], memory_order_relaxed);
    return n;
}

void met_family_inc(met_family *f, double v)
{
    if (f)
        met_inc(f->solo, v);
}

void met_family_set(met_family *f, double v)
{
    if (f)
        met_set(f->solo, v);
}

void met_family_observe(met_family *f, double v)
{
    if (f)
        met_observe(f->solo, v);
}

/* --- rendering ----------------------------------------------------------------------------- */

typedef struct sbuf {
    char *p;
    size_t len, cap;
    bool oom;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (b->len + n + 1 > cap)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_puts(sbuf *b, const char *s)
{
    sb_put(b, s, strlen(s));
}

/* A sample value or bucket bound: the shortest of %.15g / %.17g that reads back exactly, and
 * Prometheus' spellings of the special values. */
static void sb_num(sbuf *b, double v)
{
    char tmp[40];
    if (isnan(v))
        snprintf(tmp, sizeof tmp, "NaN");
    else if (isinf(v))
        snprintf(tmp, sizeof tmp, v > 0 ? "+Inf" : "-Inf");
    else {
        snprintf(tmp, sizeof tmp, "%.15g", v);
        if (strtod(tmp, NULL) != v)
            snprintf(tmp, sizeof tmp, "%.17g", v);
    }
    sb_puts(b, tmp);
}

static void sb_u64(sbuf *b, unsigned long long v)
{
    char tmp[24];
    snprintf(tmp, sizeof tmp, "%llu", v);
    sb_puts(b, tmp);
}

/* HELP text escapes backslash and newline; label values also escape the double quote. */
static void sb_escaped(sbuf *b, const char *s, bool quote)
{
    for (const char *p = s; *p; p++) {
        if (*p == '\\')
            sb_put(b, "\\\\", 2);
        else if (*p == '\n')
            sb_put(b, "\\n", 2);
        else if (quote && *p == '"')
            sb_put(b, "\\\"", 2);
        else
            sb_put(b, p, 1);
    }
}

/* `name{l1="v1",...,extra}` where extra (a label already rendered, like `le="0.5"`) may be
 * NULL; no braces when there are no labels at all. */
static void sb_series(sbuf *b, const met_family *f, const met_child *c, const char *suffix,
                      const char *extra)
{
    sb_puts(b, f->name);
    sb_puts(b, suffix);
    if (f->n_labels == 0 && !extra)
        return;
    sb_put(b, "{", 1);
    for (size_t i = 0; i < f->n_labels; i++) {
        if (i)
            sb_put(b, ",", 1);
        sb_puts(b, f->labels[i]);
        sb_put(b, "=\"", 2);
        sb_escaped(b, c->values[i], true);
        sb_put(b, "\"", 1);
    }
    if (extra) {
        if (f->n_labels)
            sb_put(b, ",", 1);
        sb_puts(b, extra);
    }
    sb_put(b, "}", 1);
}

static void render_child(sbuf *b, const met_family *f, const met_child *c)
{
    if (f->kind != MET_HISTOGRAM) {
        sb_series(b, f, c, "", NULL);
        sb_put(b, " ", 1);
        sb_num(b, met_value(c));
        sb_put(b, "\n", 1);
        return;
    }
    unsigned long long cum = 0;
    for (size_t i = 0; i <= f->n_bounds; i++) {
        sbuf le = {0};
        cum += atomic_load_explicit(&c->counts[i], memory_order_relaxed);
        sb_puts(&le, "le=\"");
        sb_num(&le, i < f->n_bounds ? f->bounds[i] : INFINITY);
        sb_puts(&le, "\"");
        if (le.oom) {
            b->oom = true;
            free(le.p);
            return;
        }
        sb_series(b, f, c, "_bucket", le.p);
        free(le.p);
        sb_put(b, " ", 1);
        sb_u64(b, cum);
        sb_put(b, "\n", 1);
    }
    sb_series(b, f, c, "_sum", NULL);
    sb_put(b, " ", 1);
    sb_num(b, met_value(c));
    sb_put(b, "\n", 1);
    sb_series(b, f, c, "_count", NULL);
    sb_put(b, " ", 1);
    sb_u64(b, cum);
    sb_put(b, "\n", 1);
}

char *met_render(met_registry *r)
{
    static const char *const kind_names[] = {"counter", "gauge", "histogram"};
    sbuf b = {0};
    if (!r)
        return NULL;
    sb_puts(&b, ""); /* an empty registry renders as "" rather than NULL */
    pthread_mutex_lock(&r->mu);
    for (met_family *f = r->head; f; f = f->next) {
        sb_puts(&b, "# HELP ");
        sb_puts(&b, f->name);
        sb_put(&b, " ", 1);
        sb_escaped(&b, f->help, false);
        sb_puts(&b, "\n# TYPE ");
        sb_puts(&b, f->name);
        sb_put(&b, " ", 1);
        sb_puts(&b, kind_names[f->kind]);
        sb_put(&b, "\n", 1);
        pthread_mutex_lock(&f->mu);
        for (const met_child *c = f->children; c; c = c->next)
            render_child(&b, f, c);
        pthread_mutex_unlock(&f->mu);
    }
    pthread_mutex_unlock(&r->mu);
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    return b.p;
}
