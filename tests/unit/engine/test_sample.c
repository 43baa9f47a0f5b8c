/* test_sample.c — sampler (penalties, temperature, top-k/top-p/min-p, seeded draws) and the
 * stop-string matcher. */
#include "../harness.h"

#include <stdint.h>
#include <stdlib.h>

#include "sample.h"

/* Parameters with every filter off: plain softmax sampling at temperature t. */
static sample_params plain(float t, uint64_t seed)
{
    sample_params p;
    sample_params_default(&p);
    p.temperature = t;
    p.top_k = 0;
    p.top_p = 1.0f;
    p.min_p = 0.0f;
    p.seed = seed;
    p.has_seed = true;
    return p;
}

/* Draws `n` tokens from a fresh copy of `logits` each time and counts them. */
static void draw_counts(sampler *s, const float *logits, int nv, int n, int *counts)
{
    float *tmp = malloc((size_t)nv * sizeof *tmp);
    for (int i = 0; i < nv; i++)
        counts[i] = 0;
    for (int k = 0; k < n; k++) {
        memcpy(tmp, logits, (size_t)nv * sizeof *tmp);
        int32_t t = sampler_sample(s, tmp);
        if (t >= 0 && t < nv)
            counts[t]++;
    }
    free(tmp);
}

/* Deterministic pseudo-random floats for test data. */
static uint32_t lcg(uint32_t *x)
{
    *x = *x * 1664525u + 1013904223u;
    return *x >> 8;
}

typedef struct ref_cand {
    float logit;
    int id;
} ref_cand;

/* Higher logit first, then lower id: the order the sampler promises. */
static int ref_cmp(const void *pa, const void *pb)
{
    const ref_cand *a = pa, *b = pb;
    if (a->logit != b->logit)
        return a->logit > b->logit ? -1 : 1;
    return a->id - b->id;
}

TEST(sample_params_check_ranges)
{
    sample_params p;
    sample_params_default(&p);
    CHECK_EQ_INT(sample_params_check(&p), PL_OK);
    p.temperature = 0.0f;
    CHECK_EQ_INT(sample_params_check(&p), PL_OK);

    sample_params bad = p;
    bad.temperature = -0.1f;
    CHECK_EQ_INT(sample_params_check(&bad), PL_INVALID);
    CHECK(strstr(pl_err_last(), "temperature") != NULL);
    bad = p, bad.temperature = 2.5f;
    CHECK_EQ_INT(sample_params_check(&bad), PL_INVALID);
    bad = p, bad.temperature = NAN;
    CHECK_EQ_INT(sample_params_check(&bad), PL_INVALID);
    bad = p, bad.top_p = 0.0f;
    CHECK_EQ_INT(sample_params_check(&bad), PL_INVALID);
    CHECK(strstr(pl_err_last(), "top_p") != NULL);
    bad = p, bad.top_p = 1.01f;
    CHECK_EQ_INT(sample_params_check(&bad), PL_INVALID);
    bad = p, bad.min_p = -0.01f;
    CHECK_EQ_INT(sample_params_check(&bad), PL_INVALID);
    CHECK(strstr(pl_err_last(), "min_p") != NULL);
    bad = p, bad.repetition_penalty = 0.0f;
    CHECK_EQ_INT(sample_params_check(&bad), PL_INVALID);
    CHECK(strstr(pl_err_last(), "repetition_penalty") != NULL);
    bad = p, bad.repetition_penalty = 2.1f;
    CHECK_EQ_INT(sample_params_check(&bad), PL_INVALID);
    bad = p, bad.presence_penalty = -2.5f;
    CHECK_EQ_INT(sample_params_check(&bad), PL_INVALID);
    CHECK(strstr(pl_err_last(), "presence_penalty") != NULL);
    bad = p, bad.frequency_penalty = 2.5f;
    CHECK_EQ_INT(sample_params_check(&bad), PL_INVALID);
    CHECK(strstr(pl_err_last(), "frequency_penalty") != NULL);
    bad = p, bad.penalty_last_n = -1;
    CHECK_EQ_INT(sample_params_check(&bad), PL_INVALID);

    sampler *s = (sampler *)1;
    bad = p, bad.top_p = 0.0f;
    CHECK_EQ_INT(sampler_create(&bad, 10, &s), PL_INVALID);
    CHECK(s == NULL);
    CHECK_EQ_INT(sampler_create(&p, 0, &s), PL_INVALID);
    sampler_destroy(NULL);
}

TEST(sample_greedy_argmax_lowest_id_on_tie)
{
    sample_params p = plain(0.0f, 1);
    sampler *s = NULL;
    CHECK_EQ_INT(sampler_create(&p, 6, &s), PL_OK);
    float l1[6] = {0.1f, 3.0f, -1.0f, 3.0f, 2.9f, NAN};
    CHECK_EQ_INT(sampler_sample(s, l1), 1);
    float l2[6] = {-5.0f, -4.0f, -3.0f, -2.0f, -1.0f, -1.5f};
    CHECK_EQ_INT(sampler_sample(s, l2), 4);
    float l3[6] = {NAN, 0.0f, NAN, 0.5f, NAN, 0.5f};
    CHECK_EQ_INT(sampler_sample(s, l3), 3);
    sampler_destroy(s);
}

TEST(sample_top_k_1_is_greedy)
{
    enum { NV = 1000 };
    float logits[NV], tmp[NV];
    uint32_t x = 7;
    sample_params pg = plain(0.0f, 1), pk = plain(1.5f, 1);
    pk.top_k = 1;
    sampler *g = NULL, *k = NULL;
    CHECK_EQ_INT(sampler_create(&pg, NV, &g), PL_OK);
    CHECK_EQ_INT(sampler_create(&pk, NV, &k), PL_OK);
    int agree = 0;
    for (int round = 0; round < 50; round++) {
        for (int i = 0; i < NV; i++)
            logits[i] = (float)(lcg(&x) % 10000) / 1000.0f; /* ties happen */
        memcpy(tmp, logits, sizeof tmp);
        int32_t a = sampler_sample(g, tmp);
        memcpy(tmp, logits, sizeof tmp);
        int32_t b = sampler_sample(k, tmp);
        agree += a == b;
    }
    CHECK_EQ_INT(agree, 50);
    sampler_destroy(g);
    sampler_destroy(k);
}

TEST(sample_seed_reproducible_and_seeds_differ)
{
    enum { NV = 256, N = 200 };
    float flat[NV], tmp[NV];
    for (int i = 0; i < NV; i++)
        flat[i] = 0.0f;
    sample_params p1 = plain(1.0f, 42), p2 = plain(1.0f, 42), p3 = plain(1.0f, 43);
    sampler *a = NULL, *b = NULL, *c = NULL;
    CHECK_EQ_INT(sampler_create(&p1, NV, &a), PL_OK);
    CHECK_EQ_INT(sampler_create(&p2, NV, &b), PL_OK);
    CHECK_EQ_INT(sampler_create(&p3, NV, &c), PL_OK);
    int same_ab = 0, same_ac = 0, distinct = 0;
    int seen[NV] = {0};
    for (int i = 0; i < N; i++) {
        memcpy(tmp, flat, sizeof tmp);
        int32_t ta = sampler_sample(a, tmp);
        memcpy(tmp, flat, sizeof tmp);
        int32_t tb = sampler_sample(b, tmp);
        memcpy(tmp, flat, sizeof tmp);
        int32_t tc = sampler_sample(c, tmp);
        same_ab += ta == tb;
        same_ac += ta == tc;
        if (ta >= 0 && ta < NV && !seen[ta]++)
            distinct++;
    }
    CHECK_EQ_INT(same_ab, N);
    CHECK(same_ac < 10); /* ~N/256 expected by chance */
    CHECK(distinct > 100);
    sampler_destroy(a);
    sampler_destroy(b);
    sampler_destroy(c);

    /* unseeded samplers draw from getrandom: two of them should not agree on 200 draws */
    sample_params u = plain(1.0f, 0);
    u.has_seed = false;
    CHECK_EQ_INT(sampler_create(&u, NV, &a), PL_OK);
    CHECK_EQ_INT(sampler_create(&u, NV, &b), PL_OK);
    same_ab = 0;
    for (int i = 0; i < N; i++) {
        memcpy(tmp, flat, sizeof tmp);
        int32_t ta = sampler_sample(a, tmp);
        memcpy(tmp, flat, sizeof tmp);
        same_ab += ta == sampler_sample(b, tmp);
    }
    CHECK(same_ab < 10);
    sampler_destroy(a);
    sampler_destroy(b);
}

TEST(sample_statistics_three_tokens)
{
    /* p = (0.5, 0.3, 0.2); 20000 draws: std of a frequency ≤ 0.0036, tolerance ≈ 4 sigma */
    float logits[3] = {logf(0.5f), logf(0.3f), logf(0.2f)};
    int counts[3];
    sample_params p = plain(1.0f, 2024);
    sampler *s = NULL;
    CHECK_EQ_INT(sampler_create(&p, 3, &s), PL_OK);
    draw_counts(s, logits, 3, 20000, counts);
    CHECK_NEAR(counts[0] / 20000.0, 0.5, 0.015);
    CHECK_NEAR(counts[1] / 20000.0, 0.3, 0.015);
    CHECK_NEAR(counts[2] / 20000.0, 0.2, 0.015);
    sampler_destroy(s);

    /* temperature 0.5 squares the probabilities: (0.25, 0.09, 0.04) / 0.38 */
    p = plain(0.5f, 99);
    CHECK_EQ_INT(sampler_create(&p, 3, &s), PL_OK);
    draw_counts(s, logits, 3, 20000, counts);
    CHECK_NEAR(counts[0] / 20000.0, 0.25 / 0.38, 0.015);
    CHECK_NEAR(counts[1] / 20000.0, 0.09 / 0.38, 0.015);
    CHECK_NEAR(counts[2] / 20000.0, 0.04 / 0.38, 0.015);
    sampler_destroy(s);

    /* temperature 2 flattens: p^0.5 normalised */
    p = plain(2.0f, 5);
    CHECK_EQ_INT(sampler_create(&p, 3, &s), PL_OK);
    draw_counts(s, logits, 3, 20000, counts);
    double z = sqrt(0.5) + sqrt(0.3) + sqrt(0.2);
    CHECK_NEAR(counts[0] / 20000.0, sqrt(0.5) / z, 0.015);
    CHECK_NEAR(counts[2] / 20000.0, sqrt(0.2) / z, 0.015);
    sampler_destroy(s);
}

TEST(sample_top_p_keeps_nucleus)
{
    /* probabilities 0.1, 0.4, 0.2, 0.3 on ids 0..3 (shuffled on purpose) */
    float logits[4] = {logf(0.1f), logf(0.4f), logf(0.2f), logf(0.3f)};
    int counts[4];
    sample_params p = plain(1.0f, 11);
    p.top_p = 0.65f; /* 0.4 + 0.3 = 0.7 ≥ 0.65: keeps ids 1 and 3 */
    sampler *s = NULL;
    CHECK_EQ_INT(sampler_create(&p, 4, &s), PL_OK);
    draw_counts(s, logits, 4, 10000, counts);
    CHECK_EQ_INT(counts[0], 0);
    CHECK_EQ_INT(counts[2], 0);
    CHECK_NEAR(counts[1] / 10000.0, 0.4 / 0.7, 0.02);
    sampler_destroy(s);

    p.top_p = 0.75f; /* needs the 0.2 as well */
    CHECK_EQ_INT(sampler_create(&p, 4, &s), PL_OK);
    draw_counts(s, logits, 4, 10000, counts);
    CHECK_EQ_INT(counts[0], 0);
    CHECK(counts[2] > 2000);
    CHECK_NEAR(counts[2] / 10000.0, 0.2 / 0.9, 0.02);
    sampler_destroy(s);

    p.top_p = 0.01f; /* at least one: the most likely */
    CHECK_EQ_INT(sampler_create(&p, 4, &s), PL_OK);
    draw_counts(s, logits, 4, 1000, counts);
    CHECK_EQ_INT(counts[1], 1000);
    sampler_destroy(s);
}

TEST(sample_top_p_large_vocab)
{
    /* A flat 49152-token distribution: top_p 0.5 keeps exactly the 24576 lowest ids (ties go to
     * the lowest id), so the nucleus is half the vocabulary. */
    enum { NV = 49152 };
    float *logits = malloc(NV * sizeof *logits);
    int *counts = malloc(NV * sizeof *counts);
    for (int i = 0; i < NV; i++)
        logits[i] = 1.0f;
    sample_params p = plain(1.0f, 3);
    p.top_p = 0.5f;
    sampler *s = NULL;
    CHECK_EQ_INT(sampler_create(&p, NV, &s), PL_OK);
    draw_counts(s, logits, NV, 2000, counts);
    int above = 0, upper_quarter = 0;
    for (int i = 0; i < NV; i++) {
        if (i > NV / 2 && counts[i])
            above++;
        if (i >= NV / 4 && i < NV / 2)
            upper_quarter += counts[i];
    }
    CHECK_EQ_INT(above, 0);
    CHECK_NEAR(upper_quarter / 2000.0, 0.5, 0.05);
    sampler_destroy(s);

    /* random logits: draws only come from the true nucleus, computed here the slow way */
    uint32_t x = 99;
    for (int i = 0; i < NV; i++)
        logits[i] = (float)(lcg(&x) % 100000) / 5000.0f; /* 0..20 */
    p.top_p = 0.9f;
    CHECK_EQ_INT(sampler_create(&p, NV, &s), PL_OK);
    draw_counts(s, logits, NV, 1000, counts);
    ref_cand *ref = malloc(NV * sizeof *ref);
    double z = 0.0;
    for (int i = 0; i < NV; i++) {
        ref[i] = (ref_cand){logits[i], i};
        z += exp(logits[i] - 20.0);
    }
    qsort(ref, NV, sizeof *ref, ref_cmp);
    double cum = 0.0;
    int keep = 0;
    while (keep < NV && cum < 0.9 * z)
        cum += exp(ref[keep++].logit - 20.0);
    int drawn_in = 0, distinct = 0;
    for (int i = 0; i < keep; i++) {
        drawn_in += counts[ref[i].id];
        distinct += counts[ref[i].id] > 0;
    }
    CHECK_EQ_INT(drawn_in, 1000);
    CHECK(keep > 100 && distinct > 100);
    free(ref);
    free(logits);
    free(counts);
    sampler_destroy(s);
}

/* Top-k on a full-size vocabulary, through both the heap (small k) and the quickselect (large k):
 * every draw is among the true k best by (logit desc, id asc), and with a high temperature all
 * of a small k get drawn. */
TEST(sample_top_k_large_vocab)
{
    enum { NV = 49152 };
    float *logits = malloc(NV * sizeof *logits);
    int *counts = malloc(NV * sizeof *counts);
    ref_cand *ref = malloc(NV * sizeof *ref);
    uint32_t x = 5;
    for (int i = 0; i < NV; i++) {
        logits[i] = (float)(lcg(&x) % 1000) / 100.0f; /* 0..9.99, many ties */
        ref[i] = (ref_cand){logits[i], i};
    }
    logits[77] = NAN; /* never selected */
    ref[77].logit = -INFINITY;
    qsort(ref, NV, sizeof *ref, ref_cmp);
    char *in_top = malloc(NV);
    const int ks[2] = {5, 1000};
    for (int t = 0; t < 2; t++) {
        int k = ks[t];
        memset(in_top, 0, NV);
        for (int i = 0; i < k; i++)
            in_top[ref[i].id] = 1;
        sample_params p = plain(2.0f, 17);
        p.top_k = k;
        sampler *s = NULL;
        CHECK_EQ_INT(sampler_create(&p, NV, &s), PL_OK);
        draw_counts(s, logits, NV, 1000, counts);
        int in_best = 0, distinct = 0;
        for (int i = 0; i < NV; i++) {
            if (in_top[i])
                in_best += counts[i];
            distinct += counts[i] > 0;
        }
        CHECK_EQ_INT(in_best, 1000);
        if (k == 5)
            CHECK_EQ_INT(distinct, 5);
        else
            CHECK(distinct > 300);
        CHECK_EQ_INT(counts[77], 0);
        sampler_destroy(s);
    }
    free(in_top);
    free(ref);
    free(logits);
    free(counts);
}

TEST(sample_min_p_drops_tail)
{
    float logits[4] = {logf(0.5f), logf(0.3f), logf(0.15f), logf(0.05f)};
    int counts[4];
    sample_params p = plain(1.0f, 8);
    p.min_p = 0.2f; /* threshold 0.1: drops only the 0.05 */
    sampler *s = NULL;
    CHECK_EQ_INT(sampler_create(&p, 4, &s), PL_OK);
    draw_counts(s, logits, 4, 10000, counts);
    CHECK_EQ_INT(counts[3], 0);
    CHECK(counts[2] > 1000);
    CHECK_NEAR(counts[0] / 10000.0, 0.5 / 0.95, 0.02);
    sampler_destroy(s);

    p.min_p = 1.0f; /* only the maximum */
    CHECK_EQ_INT(sampler_create(&p, 4, &s), PL_OK);
    draw_counts(s, logits, 4, 500, counts);
    CHECK_EQ_INT(counts[0], 500);
    sampler_destroy(s);
}

TEST(sample_repetition_penalty)
{
    sample_params p = plain(0.0f, 1);
    p.repetition_penalty = 1.2f;
    sampler *s = NULL;
    CHECK_EQ_INT(sampler_create(&p, 4, &s), PL_OK);
    float l[4] = {2.0f, 1.9f, -1.0f, -1.1f};
    CHECK_EQ_INT(sampler_sample(s, l), 0); /* no history yet */
    sampler_accept(s, 0);
    sampler_accept(s, 0); /* repeated: penalised once, not twice */
    float l2[4] = {2.0f, 1.9f, -1.0f, -1.1f};
    CHECK_EQ_INT(sampler_sample(s, l2), 1);
    CHECK_NEAR(l2[0], 2.0 / 1.2, 1e-5);
    CHECK_NEAR(l2[1], 1.9, 1e-6);
    sampler_destroy(s);

    /* negative logits are multiplied: -1.0 → -1.2 falls below -1.1 */
    CHECK_EQ_INT(sampler_create(&p, 4, &s), PL_OK);
    sampler_accept(s, 2);
    float l3[4] = {-5.0f, -5.0f, -1.0f, -1.1f};
    CHECK_EQ_INT(sampler_sample(s, l3), 3);
    CHECK_NEAR(l3[2], -1.2, 1e-5);
    sampler_destroy(s);
}

TEST(sample_presence_frequency_penalties)
{
    sample_params p = plain(0.0f, 1);
    p.frequency_penalty = 0.2f;
    sampler *s = NULL;
    CHECK_EQ_INT(sampler_create(&p, 2, &s), PL_OK);
    for (int i = 0; i < 3; i++)
        sampler_accept(s, 0);
    float l[2] = {1.0f, 0.5f};
    CHECK_EQ_INT(sampler_sample(s, l), 1); /* 1.0 - 3 * 0.2 = 0.4 */
    CHECK_NEAR(l[0], 0.4, 1e-6);
    sampler_destroy(s);

    p.frequency_penalty = 0.1f; /* 1.0 - 0.3 = 0.7 still wins */
    CHECK_EQ_INT(sampler_create(&p, 2, &s), PL_OK);
    for (int i = 0; i < 3; i++)
        sampler_accept(s, 0);
    float l2[2] = {1.0f, 0.5f};
    CHECK_EQ_INT(sampler_sample(s, l2), 0);
    CHECK_NEAR(l2[0], 0.7, 1e-6);
    sampler_destroy(s);

    p.frequency_penalty = 0.0f;
    p.presence_penalty = 0.6f; /* once, whatever the count: 0.4 */
    CHECK_EQ_INT(sampler_create(&p, 2, &s), PL_OK);
    for (int i = 0; i < 3; i++)
        sampler_accept(s, 0);
    float l3[2] = {1.0f, 0.5f};
    CHECK_EQ_INT(sampler_sample(s, l3), 1);
    CHECK_NEAR(l3[0], 0.4, 1e-6);
    sampler_destroy(s);

    p.presence_penalty = -1.0f; /* negative: encourages repetition */
    CHECK_EQ_INT(sampler_create(&p, 2, &s), PL_OK);
    sampler_accept(s, 1);
    float l4[2] = {1.0f, 0.5f};
    CHECK_EQ_INT(sampler_sample(s, l4), 1);
    sampler_destroy(s);
}

TEST(sample_penalty_window)
{
    sample_params p = plain(0.0f, 1);
    p.presence_penalty = 2.0f;
    p.penalty_last_n = 2;
    sampler *s = NULL;
    CHECK_EQ_INT(sampler_create(&p, 8, &s), PL_OK);
    sampler_accept(s, 0);
    float l[8] = {1.0f, 0.5f, 0, 0, 0, 0, 0, 0};
    CHECK_EQ_INT(sampler_sample(s, l), 1); /* 0 is in the window */
    sampler_accept(s, 5);
    sampler_accept(s, 6); /* 0 leaves the window of 2 */
    sampler_accept(s, -3);
    sampler_accept(s, 8); /* out of range: ignored */
    float l2[8] = {1.0f, 0.5f, 0, 0, 0, 0, 0, 0};
    CHECK_EQ_INT(sampler_sample(s, l2), 0);
    CHECK_NEAR(l2[5], -2.0, 1e-6);
    CHECK_NEAR(l2[6], -2.0, 1e-6);
    CHECK_NEAR(l2[0], 1.0, 1e-6);
    sampler_destroy(s);
}

TEST(sample_penalties_then_sampling)
{
    /* penalties also act before temperature sampling: a heavily penalised favourite is rare */
    float logits[2] = {2.0f, 0.0f};
    int counts[2];
    sample_params p = plain(1.0f, 77);
    p.frequency_penalty = 2.0f;
    sampler *s = NULL;
    CHECK_EQ_INT(sampler_create(&p, 2, &s), PL_OK);
    sampler_accept(s, 0);
    sampler_accept(s, 0); /* 2 - 4 = -2 vs 0: p(0) = 1 / (1 + e^2) ≈ 0.119 */
    draw_counts(s, logits, 2, 10000, counts);
    CHECK_NEAR(counts[0] / 10000.0, 1.0 / (1.0 + exp(2.0)), 0.02);
    sampler_destroy(s);
}

/* --- stop matcher --------------------------------------------------------------------------- */

/* Feeds the pieces in order, appending what is emitted to out (cap bytes, NUL-terminated);
 * returns the index of the piece at which the matcher reported a stop, or -1 (then flushes). */
static int run_stop(stop_matcher *m, const char *const *pieces, int n, char *out, size_t cap)
{
    size_t len = 0;
    int stopped_at = -1;
    for (int i = 0; i < n; i++) {
        const char *e;
        size_t el;
        bool stop = stop_feed(m, pieces[i], strlen(pieces[i]), &e, &el);
        if (len + el < cap) {
            memcpy(out + len, e, el);
            len += el;
        }
        if (stop) {
            stopped_at = i;
            break;
        }
    }
    if (stopped_at < 0) {
        const char *e;
        size_t el;
        stop_flush(m, &e, &el);
        if (len + el < cap) {
            memcpy(out + len, e, el);
            len += el;
        }
    }
    out[len] = '\0';
    return stopped_at;
}

TEST(stop_create_limits)
{
    const char *five[5] = {"a", "b", "c", "d", "e"};
    stop_matcher *m = (stop_matcher *)1;
    CHECK_EQ_INT(stop_create(five, 5, &m), PL_INVALID);
    CHECK(m == NULL);
    const char *empties[2] = {"", ""};
    CHECK_EQ_INT(stop_create(empties, 2, &m), PL_OK);
    char out[64];
    const char *pieces[2] = {"hello ", "world"};
    CHECK_EQ_INT(run_stop(m, pieces, 2, out, sizeof out), -1);
    CHECK_STR(out, "hello world");
    stop_destroy(m);
    CHECK_EQ_INT(stop_create(NULL, 0, &m), PL_OK);
    stop_destroy(m);
    stop_destroy(NULL);
}

TEST(stop_across_boundaries)
{
    const char *stops[1] = {"</s>"};
    stop_matcher *m = NULL;
    CHECK_EQ_INT(stop_create(stops, 1, &m), PL_OK);
    const char *e;
    size_t el;
    CHECK(!stop_feed(m, "hello <", 7, &e, &el));
    CHECK_EQ_INT(el, 6);
    CHECK(memcmp(e, "hello ", 6) == 0);
    CHECK(!stop_feed(m, "/", 1, &e, &el));
    CHECK_EQ_INT(el, 0);
    CHECK(stop_feed(m, "s> more", 7, &e, &el));
    CHECK_EQ_INT(el, 0);
    /* after the stop nothing more comes out */
    CHECK(stop_feed(m, "x", 1, &e, &el));
    CHECK_EQ_INT(el, 0);
    stop_flush(m, &e, &el);
    CHECK_EQ_INT(el, 0);
    stop_destroy(m);

    /* a false start is released once it cannot match */
    CHECK_EQ_INT(stop_create(stops, 1, &m), PL_OK);
    CHECK(!stop_feed(m, "a </", 4, &e, &el));
    CHECK_EQ_INT(el, 2);
    CHECK(!stop_feed(m, "b>", 2, &e, &el));
    CHECK_EQ_INT(el, 4);
    CHECK(memcmp(e, "</b>", 4) == 0);
    CHECK(!stop_feed(m, "<", 1, &e, &el));
    CHECK_EQ_INT(el, 0);
    stop_flush(m, &e, &el);
    CHECK_EQ_INT(el, 1);
    CHECK(el == 1 && e[0] == '<');
    stop_destroy(m);
}

TEST(stop_multiple_earliest_wins)
{
    char out[128];
    const char *stops[3] = {"world", "lo w", "zzz"};
    stop_matcher *m = NULL;
    CHECK_EQ_INT(stop_create(stops, 3, &m), PL_OK);
    const char *p1[3] = {"hel", "lo wo", "rld"};
    CHECK_EQ_INT(run_stop(m, p1, 3, out, sizeof out), 1);
    CHECK_STR(out, "hel");
    stop_destroy(m);

    const char *stops2[2] = {"ND!", "END"};
    CHECK_EQ_INT(stop_create(stops2, 2, &m), PL_OK);
    const char *p2[1] = {"xxEND!yy"};
    CHECK_EQ_INT(run_stop(m, p2, 1, out, sizeof out), 0);
    CHECK_STR(out, "xx");
    stop_destroy(m);
}

TEST(stop_overlapping_prefixes)
{
    char out[128];
    const char *stops[1] = {"abab"};
    stop_matcher *m = NULL;
    CHECK_EQ_INT(stop_create(stops, 1, &m), PL_OK);
    const char *p1[3] = {"aba", "c", "ab"};
    CHECK_EQ_INT(run_stop(m, p1, 3, out, sizeof out), -1);
    CHECK_STR(out, "abacab");
    stop_destroy(m);

    CHECK_EQ_INT(stop_create(stops, 1, &m), PL_OK);
    const char *p2[4] = {"ab", "aab", "ab", "tail"};
    CHECK_EQ_INT(run_stop(m, p2, 4, out, sizeof out), 2);
    CHECK_STR(out, "aba");
    stop_destroy(m);

    CHECK_EQ_INT(stop_create(stops, 1, &m), PL_OK);
    const char *p3[5] = {"a", "b", "a", "b", "!"};
    CHECK_EQ_INT(run_stop(m, p3, 5, out, sizeof out), 3);
    CHECK_STR(out, "");
    stop_destroy(m);
}

TEST(stop_utf8_never_split)
{
    const char *stops[1] = {"\xC3\xA9!"}; /* "é!" */
    stop_matcher *m = NULL;
    CHECK_EQ_INT(stop_create(stops, 1, &m), PL_OK);
    const char *e;
    size_t el;
    CHECK(!stop_feed(m, "caf\xC3\xA9", 5, &e, &el)); /* "café": é might start the stop */
    CHECK_EQ_INT(el, 3);
    CHECK(!stop_feed(m, " ok", 3, &e, &el));
    CHECK_EQ_INT(el, 5);
    CHECK(memcmp(e, "\xC3\xA9 ok", 5) == 0);
    /* an incomplete code point at the end is held until it completes */
    CHECK(!stop_feed(m, "a\xE2\x82", 3, &e, &el));
    CHECK_EQ_INT(el, 1);
    CHECK(!stop_feed(m, "\xAC!", 2, &e, &el)); /* "€!" */
    CHECK_EQ_INT(el, 4);
    CHECK(memcmp(e, "\xE2\x82\xAC!", 4) == 0);
    CHECK(stop_feed(m, "x\xC3\xA9!", 4, &e, &el));
    CHECK_EQ_INT(el, 1);
    stop_destroy(m);
}

/* Random texts cut into random pieces: what comes out is exactly the text before the first stop
 * string, never a byte of it, and no chunk ends inside a UTF-8 sequence. */
TEST(stop_randomised_never_leaks)
{
    static const char *alphabet[] = {
        "a", "b", "<", "|", ">", " ", "\xC3\xA9", "\xE2\x82\xAC", "\xF0\x9F\x98\x80", "\n"};
    const char *stops[3] = {"<|im_end|>",
                            "a\xC3\xA9"
                            "b",
                            "\n\n"};
    static const char *inserts[] = {"<|im_end|>",
                                    "a\xC3\xA9"
                                    "b",
                                    "\n\n", "<|im_", "a\xC3\xA9"};
    uint32_t x = 12345;
    int bad_leak = 0, bad_split = 0, bad_total = 0;
    for (int round = 0; round < 2000; round++) {
        char text[512];
        size_t tl = 0;
        int n_tok = 1 + (int)(lcg(&x) % 60);
        for (int i = 0; i < n_tok; i++) {
            const char *tkn = (lcg(&x) % 8 == 0) ? inserts[lcg(&x) % 5] : alphabet[lcg(&x) % 10];
            size_t l = strlen(tkn);
            memcpy(text + tl, tkn, l);
            tl += l;
        }
        text[tl] = '\0';
        /* expected output: text up to the earliest stop */
        size_t expect = tl;
        for (int s = 0; s < 3; s++) {
            const char *h = strstr(text, stops[s]);
            if (h && (size_t)(h - text) < expect)
                expect = (size_t)(h - text);
        }
        stop_matcher *m = NULL;
        if (stop_create(stops, 3, &m) != PL_OK) {
            bad_total++;
            break;
        }
        char out[600];
        size_t ol = 0;
        size_t pos = 0;
        bool stopped = false;
        while (pos < tl && !stopped) {
            size_t piece = 1 + lcg(&x) % 7; /* byte-wise cuts, even inside code points */
            if (piece > tl - pos)
                piece = tl - pos;
            const char *e;
            size_t el;
            stopped = stop_feed(m, text + pos, piece, &e, &el);
            pos += piece;
            if (el > 0 && el < 600 - ol) {
                /* chunk must not end inside a code point */
                size_t k = el;
                int back = 0;
                while (k > 0 && ((unsigned char)e[k - 1] & 0xC0) == 0x80 && back < 4)
                    k--, back++;
                if (k > 0) {
                    unsigned char lead = (unsigned char)e[k - 1];
                    int need = lead >= 0xF0 ? 3 : lead >= 0xE0 ? 2 : lead >= 0xC0 ? 1 : 0;
                    if (need != back)
                        bad_split++;
                }
                memcpy(out + ol, e, el);
                ol += el;
            }
        }
        if (!stopped) {
            const char *e;
            size_t el;
            stop_flush(m, &e, &el);
            memcpy(out + ol, e, el);
            ol += el;
        }
        if (ol > expect)
            bad_leak++;
        else if (ol != expect || memcmp(out, text, ol) != 0 || stopped != (expect < tl))
            bad_total++;
        stop_destroy(m);
    }
    CHECK_EQ_INT(bad_leak, 0);
    CHECK_EQ_INT(bad_split, 0);
    CHECK_EQ_INT(bad_total, 0);
}

TEST(stop_flush_returns_held_and_resets)
{
    const char *stops[1] = {"STOP"};
    stop_matcher *m = NULL;
    CHECK_EQ_INT(stop_create(stops, 1, &m), PL_OK);
    const char *e;
    size_t el;
    CHECK(!stop_feed(m, "abc ST", 6, &e, &el));
    CHECK_EQ_INT(el, 4);
    stop_flush(m, &e, &el);
    CHECK_EQ_INT(el, 2);
    CHECK(el == 2 && memcmp(e, "ST", 2) == 0);
    stop_flush(m, &e, &el);
    CHECK_EQ_INT(el, 0);
    /* a large feed grows the buffer */
    char big[10000];
    memset(big, 'q', sizeof big);
    CHECK(!stop_feed(m, big, sizeof big, &e, &el));
    CHECK_EQ_INT(el, sizeof big);
    CHECK(!stop_feed(m, "", 0, &e, &el));
    CHECK_EQ_INT(el, 0);
    stop_destroy(m);
}
