/* metrics.h — Prometheus text exposition: counters, gauges and histograms with labels.
 *
 * A registry owns its metric families; a family owns its children (one per label-value tuple,
 * created on first use and kept until the registry is destroyed, so label values must have
 * bounded cardinality: model names, finish reasons — never request ids). Updates are lock-free
 * atomics on the child; looking a child up takes the family's mutex, so hot paths look it up
 * once and keep the pointer. Rendering takes each family's mutex in turn. */
#ifndef PARLEY_METRICS_H
#define PARLEY_METRICS_H

#include <stddef.h>

#include "status.h"

#define MET_MAX_LABELS 4

typedef struct met_registry met_registry;
typedef struct met_family met_family;
typedef struct met_child met_child;

typedef enum met_kind { MET_COUNTER, MET_GAUGE, MET_HISTOGRAM } met_kind;

/* NULL when out of memory. */
met_registry *met_registry_create(void);
/* Frees the registry, its families and children. Accepts NULL. */
void met_registry_destroy(met_registry *r);

/* Registers a family. `name` must be a valid Prometheus name ("parley_gateway_requests_total");
 * `labels` is a NULL-terminated list of at most MET_MAX_LABELS label names, or NULL.
 * `buckets` (histograms only) are `n_buckets` strictly increasing upper bounds; +Inf is implied.
 * Returns NULL on bad arguments, a duplicate name or out of memory. The family is owned by `r`. */
met_family *met_counter(met_registry *r, const char *name, const char *help,
                        const char *const *labels);
met_family *met_gauge(met_registry *r, const char *name, const char *help,
                      const char *const *labels);
met_family *met_histogram(met_registry *r, const char *name, const char *help,
                          const char *const *labels, const double *buckets, size_t n_buckets);

/* The child for these label values (as many as the family has labels; none for unlabelled
 * families). Creates it on first use. NULL only when out of memory or the count of values is
 * wrong. The child is owned by the family. */
met_child *met_with(met_family *f, ...); /* values are const char *, then NULL */
met_child *met_withv(met_family *f, const char *const *values, size_t n);

void met_inc(met_child *c, double v);             /* counters and gauges; counters ignore v < 0 */
void met_set(met_child *c, double v);             /* gauges */
void met_observe(met_child *c, double v);         /* histograms */
double met_value(const met_child *c);             /* counter / gauge value, or histogram sum */
unsigned long long met_count(const met_child *c); /* histogram sample count */

/* Shorthands for unlabelled families (the family's single child). NULL-safe. */
void met_family_inc(met_family *f, double v);
void met_family_set(met_family *f, double v);
void met_family_observe(met_family *f, double v);

/* Renders every family in the text exposition format 0.0.4. Returns a malloc'd NUL-terminated
 * string the caller frees, or NULL when out of memory. */
char *met_render(met_registry *r);

/* Latency buckets in seconds suited to token streaming (1 ms … 60 s). */
extern const double met_latency_buckets[];
extern const size_t met_latency_buckets_n;

#endif
