/* test_metrics.c — the Prometheus registry: exact text output, escaping, histogram buckets,
 * name validation, and exact totals under concurrent updates. */
#include "../harness.h"

#include <pthread.h>
#include <stdlib.h>

#include "metrics.h"

TEST(metrics_counter_renders_exactly)
{
    met_registry *r = met_registry_create();
    CHECK(r != NULL);
    met_family *f = met_counter(r, "parley_things_total", "Things done.", NULL);
    CHECK(f != NULL);
    met_family_inc(f, 1);
    met_family_inc(f, 2.5);
    met_family_inc(f, -1);  /* counters never go down */
    met_family_set(f, 100); /* and cannot be set */
    CHECK_NEAR(met_value(met_with(f, NULL)), 3.5, 0);
    char *s = met_render(r);
    CHECK_STR(s, "# HELP parley_things_total Things done.\n"
                 "# TYPE parley_things_total counter\n"
                 "parley_things_total 3.5\n");
    free(s);
    met_registry_destroy(r);
}

TEST(metrics_labels_are_escaped_and_children_reused)
{
    met_registry *r = met_registry_create();
    const char *labels[] = {"model", "reason", NULL};
    met_family *f = met_counter(r, "parley_done_total", "Help with \\ and\nnewline.", labels);
    CHECK(f != NULL);
    met_child *a = met_with(f, "a\"b\\c\nd", "stop", NULL);
    met_child *b = met_with(f, "tiny", "length", NULL);
    CHECK(a != NULL && b != NULL && a != b);
    CHECK(met_with(f, "a\"b\\c\nd", "stop", NULL) == a);
    const char *vals[] = {"tiny", "length"};
    CHECK(met_withv(f, vals, 2) == b);
    CHECK(met_withv(f, vals, 1) == NULL);
    CHECK(met_with(f, "only-one", NULL) == NULL);
    CHECK(met_with(f, "1", "2", "3", "4", "5", NULL) == NULL);
    met_inc(a, 1);
    met_inc(b, 2);
    met_inc(b, 3);
    char *s = met_render(r);
    CHECK_STR(s, "# HELP parley_done_total Help with \\\\ and\\nnewline.\n"
                 "# TYPE parley_done_total counter\n"
                 "parley_done_total{model=\"a\\\"b\\\\c\\nd\",reason=\"stop\"} 1\n"
                 "parley_done_total{model=\"tiny\",reason=\"length\"} 5\n");
    free(s);
    met_registry_destroy(r);
}

TEST(metrics_gauge_sets_and_moves_both_ways)
{
    met_registry *r = met_registry_create();
    const char *labels[] = {"model", NULL};
    met_family *g = met_gauge(r, "parley_queue_depth", "Queued jobs.", labels);
    met_family *u = met_gauge(r, "parley_up", "Up.", NULL);
    met_child *c = met_with(g, "m", NULL);
    met_set(c, 10);
    met_inc(c, -2.5);
    CHECK_NEAR(met_value(c), 7.5, 0);
    met_family_set(u, 1);
    met_family_observe(u, 5); /* not a histogram: ignored */
    char *s = met_render(r);
    CHECK_STR(s, "# HELP parley_queue_depth Queued jobs.\n"
                 "# TYPE parley_queue_depth gauge\n"
                 "parley_queue_depth{model=\"m\"} 7.5\n"
                 "# HELP parley_up Up.\n"
                 "# TYPE parley_up gauge\n"
                 "parley_up 1\n");
    free(s);
    met_registry_destroy(r);
}

TEST(metrics_histogram_bucket_math)
{
    met_registry *r = met_registry_create();
    const double bounds[] = {0.1, 0.5, 1};
    const char *labels[] = {"model", NULL};
    met_family *h =
        met_histogram(r, "parley_ttft_seconds", "Time to first token.", labels, bounds, 3);
    CHECK(h != NULL);
    met_child *c = met_with(h, "m", NULL);
    met_observe(c, 0.05);
    met_observe(c, 0.1); /* on a bound: counted in that bucket (le is <=) */
    met_observe(c, 0.3);
    met_observe(c, 2);
    met_observe(c, 7);
    met_observe(c, NAN); /* ignored */
    met_inc(c, 1);       /* not a counter: ignored */
    CHECK_EQ_INT(met_count(c), 5);
    CHECK_NEAR(met_value(c), 9.45, 1e-12);
    char *s = met_render(r);
    CHECK_STR(s, "# HELP parley_ttft_seconds Time to first token.\n"
                 "# TYPE parley_ttft_seconds histogram\n"
                 "parley_ttft_seconds_bucket{model=\"m\",le=\"0.1\"} 2\n"
                 "parley_ttft_seconds_bucket{model=\"m\",le=\"0.5\"} 3\n"
                 "parley_ttft_seconds_bucket{model=\"m\",le=\"1\"} 3\n"
                 "parley_ttft_seconds_bucket{model=\"m\",le=\"+Inf\"} 5\n"
                 "parley_ttft_seconds_sum{model=\"m\"} 9.45\n"
                 "parley_ttft_seconds_count{model=\"m\"} 5\n");
    free(s);
    met_registry_destroy(r);
}

TEST(metrics_unlabelled_histogram_and_latency_buckets)
{
    CHECK_EQ_INT(met_latency_buckets_n, 15);
    CHECK_NEAR(met_latency_buckets[0], 0.001, 0);
    CHECK_NEAR(met_latency_buckets[met_latency_buckets_n - 1], 60, 0);
    for (size_t i = 1; i < met_latency_buckets_n; i++)
        CHECK(met_latency_buckets[i] > met_latency_buckets[i - 1]);

    met_registry *r = met_registry_create();
    met_family *h = met_histogram(r, "parley_lat_seconds", "Latency.", NULL, met_latency_buckets,
                                  met_latency_buckets_n);
    CHECK(h != NULL);
    met_family_observe(h, 0.003);
    met_family_observe(h, 100);
    char *s = met_render(r);
    CHECK(strstr(s, "parley_lat_seconds_bucket{le=\"0.001\"} 0\n") != NULL);
    CHECK(strstr(s, "parley_lat_seconds_bucket{le=\"0.0025\"} 0\n") != NULL);
    CHECK(strstr(s, "parley_lat_seconds_bucket{le=\"0.005\"} 1\n") != NULL);
    CHECK(strstr(s, "parley_lat_seconds_bucket{le=\"60\"} 1\n") != NULL);
    CHECK(strstr(s, "parley_lat_seconds_bucket{le=\"+Inf\"} 2\n") != NULL);
    CHECK(strstr(s, "parley_lat_seconds_sum 100.003\n") != NULL);
    CHECK(strstr(s, "parley_lat_seconds_count 2\n") != NULL);
    free(s);
    /* A histogram with no bounds has only +Inf. */
    met_family *h0 = met_histogram(r, "parley_h0", "h0", NULL, NULL, 0);
    CHECK(h0 != NULL);
    met_family_observe(h0, 1);
    s = met_render(r);
    CHECK(strstr(s, "parley_h0_bucket{le=\"+Inf\"} 1\nparley_h0_sum 1\nparley_h0_count 1\n") !=
          NULL);
    free(s);
    met_registry_destroy(r);
}

TEST(metrics_rejects_bad_names_and_arguments)
{
    met_registry *r = met_registry_create();
    const char *bad_label[] = {"a:b", NULL};
    const char *reserved[] = {"__x", NULL};
    const char *le[] = {"le", NULL};
    const char *dup[] = {"a", "a", NULL};
    const char *five[] = {"a", "b", "c", "d", "e", NULL};
    const char *ok4[] = {"a", "b", "c", "d", NULL};
    const double dec[] = {1, 0.5};
    const double same[] = {1, 1};
    const double inf[] = {1, INFINITY};
    const double nan_[] = {NAN};

    CHECK(met_counter(r, "1abc", "", NULL) == NULL);
    CHECK(met_counter(r, "a-b", "", NULL) == NULL);
    CHECK(met_counter(r, "", "", NULL) == NULL);
    CHECK(met_counter(r, NULL, "", NULL) == NULL);
    CHECK(met_counter(NULL, "x", "", NULL) == NULL);
    CHECK(met_counter(r, "ns:sub_total", "", NULL) != NULL);
    CHECK(met_counter(r, "_x9", NULL, NULL) != NULL);
    CHECK(met_counter(r, "c1", "", bad_label) == NULL);
    CHECK(met_counter(r, "c2", "", reserved) == NULL);
    CHECK(met_counter(r, "c3", "", dup) == NULL);
    CHECK(met_counter(r, "c4", "", five) == NULL);
    CHECK(met_counter(r, "c5", "", ok4) != NULL);
    CHECK(met_counter(r, "c6", "", le) != NULL); /* "le" is only reserved for histograms */
    CHECK(met_histogram(r, "h1", "", le, dec + 1, 1) == NULL);
    CHECK(met_histogram(r, "h2", "", NULL, dec, 2) == NULL);
    CHECK(met_histogram(r, "h3", "", NULL, same, 2) == NULL);
    CHECK(met_histogram(r, "h4", "", NULL, inf, 2) == NULL);
    CHECK(met_histogram(r, "h5", "", NULL, nan_, 1) == NULL);
    CHECK(met_histogram(r, "h6", "", NULL, NULL, 3) == NULL);
    /* Duplicate names, across kinds too. */
    CHECK(met_gauge(r, "c5", "", NULL) == NULL);
    CHECK(met_counter(r, "c5", "", ok4) == NULL);
    char *s = met_render(r);
    CHECK(s != NULL && strstr(s, "# TYPE ns:sub_total counter\nns:sub_total 0\n") != NULL);
    CHECK(strstr(s, "# HELP _x9 \n") != NULL);
    CHECK(strstr(s, "h1") == NULL);
    free(s);
    met_registry_destroy(r);
}

TEST(metrics_null_safety_and_number_formats)
{
    met_registry_destroy(NULL);
    met_family_inc(NULL, 1);
    met_family_set(NULL, 1);
    met_family_observe(NULL, 1);
    met_inc(NULL, 1);
    met_set(NULL, 1);
    met_observe(NULL, 1);
    CHECK_NEAR(met_value(NULL), 0, 0);
    CHECK_EQ_INT(met_count(NULL), 0);
    CHECK(met_with(NULL, NULL) == NULL);
    CHECK(met_render(NULL) == NULL);

    met_registry *r = met_registry_create();
    char *s = met_render(r);
    CHECK_STR(s, "");
    free(s);
    const char *l[] = {"v", NULL};
    met_family *g = met_gauge(r, "g", "", l);
    met_set(met_with(g, "a", NULL), 0.1);
    met_set(met_with(g, "b", NULL), 1e21);
    met_set(met_with(g, "c", NULL), -INFINITY);
    met_set(met_with(g, "d", NULL), NAN);
    met_set(met_with(g, "e", NULL), 1.0 / 3);
    met_set(met_with(g, "f", NULL), -2);
    s = met_render(r);
    CHECK(strstr(s, "g{v=\"a\"} 0.1\n") != NULL);
    CHECK(strstr(s, "g{v=\"b\"} 1e+21\n") != NULL);
    CHECK(strstr(s, "g{v=\"c\"} -Inf\n") != NULL);
    CHECK(strstr(s, "g{v=\"d\"} NaN\n") != NULL);
    CHECK(strstr(s, "g{v=\"e\"} 0.33333333333333331\n") != NULL);
    CHECK(strstr(s, "g{v=\"f\"} -2\n") != NULL);
    free(s);
    met_registry_destroy(r);
}

typedef struct hammer {
    met_family *counter, *gauge, *hist, *labelled;
    met_child *seen[4];
    int id;
} hammer;

#define HAMMER_N 100000

static void *hammer_run(void *arg)
{
    hammer *h = arg;
    met_child *c = met_with(h->counter, NULL);
    met_child *g = met_with(h->gauge, NULL);
    met_child *x = met_with(h->hist, NULL);
    /* Every thread asks for the same label values at the same time: one child must result. */
    h->seen[h->id] = met_with(h->labelled, "shared", NULL);
    for (int i = 0; i < HAMMER_N; i++) {
        met_inc(c, 1);
        met_inc(g, 0.5);
        met_observe(x, (i % 2) ? 0.25 : 4);
        if (i % 1000 == 0)
            met_inc(met_with(h->labelled, "shared", NULL), 1);
    }
    return NULL;
}

TEST(metrics_concurrent_updates_add_up_exactly)
{
    met_registry *r = met_registry_create();
    const double b[] = {1};
    const char *l[] = {"k", NULL};
    hammer hs[4];
    pthread_t t[4];
    hammer base = {
        .counter = met_counter(r, "hc_total", "", NULL),
        .gauge = met_gauge(r, "hg", "", NULL),
        .hist = met_histogram(r, "hh", "", NULL, b, 1),
        .labelled = met_counter(r, "hl_total", "", l),
    };
    CHECK(base.counter && base.gauge && base.hist && base.labelled);
    for (int i = 0; i < 4; i++) {
        hs[i] = base;
        hs[i].id = i;
        pthread_create(&t[i], NULL, hammer_run, &hs[i]);
    }
    /* Render concurrently too: it must not disturb the totals. */
    for (int i = 0; i < 20; i++)
        free(met_render(r));
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);

    CHECK_NEAR(met_value(met_with(base.counter, NULL)), 4.0 * HAMMER_N, 0);
    CHECK_NEAR(met_value(met_with(base.gauge, NULL)), 2.0 * HAMMER_N, 0);
    met_child *x = met_with(base.hist, NULL);
    CHECK_EQ_INT(met_count(x), 4 * HAMMER_N);
    CHECK_NEAR(met_value(x), 4.0 * (HAMMER_N / 2) * 4.25, 0);
    for (int i = 1; i < 4; i++)
        CHECK(hs[i].seen[i] == hs[0].seen[0]);
    CHECK_NEAR(met_value(hs[0].seen[0]), 4.0 * (HAMMER_N / 1000), 0);
    char *s = met_render(r);
    CHECK(strstr(s, "hh_bucket{le=\"1\"} 200000\nhh_bucket{le=\"+Inf\"} 400000\n") != NULL);
    CHECK(strstr(s, "hc_total 400000\n") != NULL);
    free(s);
    met_registry_destroy(r);
}
