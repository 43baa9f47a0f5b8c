/* test_tpool.c — the thread pool runs every share exactly once, on distinct threads with the
 * caller as thread 0, makes workers' writes visible when tpool_run returns, survives workers
 * going to sleep between jobs, and splits ranges evenly. */
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

#include "../harness.h"
#include "tpool.h"

#define MAXT 16

typedef struct job {
    atomic_int calls[MAXT];
    int nth_seen[MAXT];
    pthread_t who[MAXT];
    long long out[MAXT]; /* plain writes, read by the caller after tpool_run */
    long long n;
} job;

static void record(void *arg, int ith, int nth)
{
    job *j = arg;
    atomic_fetch_add(&j->calls[ith], 1);
    j->nth_seen[ith] = nth;
    j->who[ith] = pthread_self();
    long long lo, hi, s = 0;
    tpool_split(j->n, ith, nth, &lo, &hi);
    for (long long i = lo; i < hi; i++)
        s += i;
    j->out[ith] = s;
}

static void check_pool(int n)
{
    tpool *p = NULL;
    CHECK_EQ_INT(tpool_create(n, &p), PL_OK);
    if (!p)
        return;
    CHECK_EQ_INT(tpool_size(p), n);
    for (int round = 0; round < 3; round++) {
        job j;
        memset(&j, 0, sizeof j);
        j.n = 100003 + round;
        tpool_run(p, record, &j);
        long long total = 0;
        for (int i = 0; i < n; i++) {
            CHECK_EQ_INT(atomic_load(&j.calls[i]), 1);
            CHECK_EQ_INT(j.nth_seen[i], n);
            total += j.out[i];
            for (int k = 0; k < i; k++)
                CHECK(!pthread_equal(j.who[i], j.who[k]));
        }
        CHECK(pthread_equal(j.who[0], pthread_self()));
        CHECK_EQ_INT(total, j.n * (j.n - 1) / 2);
        if (round == 1) { /* let the workers fall asleep on the condition variable */
            struct timespec ts = {0, 5 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
    }
    tpool_destroy(p);
}

TEST(tpool_runs_each_share_once)
{
    for (int n = 1; n <= 8; n++)
        check_pool(n);
}

static void add_one(void *arg, int ith, int nth)
{
    (void)ith;
    (void)nth;
    atomic_fetch_add((atomic_long *)arg, 1);
}

TEST(tpool_many_back_to_back_jobs)
{
    tpool *p = NULL;
    CHECK_EQ_INT(tpool_create(4, &p), PL_OK);
    if (!p)
        return;
    atomic_long count = 0;
    for (int i = 0; i < 5000; i++)
        tpool_run(p, add_one, &count);
    CHECK_EQ_INT(atomic_load(&count), 5000LL * 4);
    tpool_destroy(p);
}

TEST(tpool_create_rejects_bad_size)
{
    tpool *p = (tpool *)1;
    CHECK_EQ_INT(tpool_create(0, &p), PL_INVALID);
    CHECK(p == NULL);
    CHECK_EQ_INT(tpool_create(-3, &p), PL_INVALID);
    tpool_destroy(NULL); /* accepted */
}

TEST(tpool_split_is_even_and_covers)
{
    const long long ns[] = {0, 1, 5, 7, 64, 100, 1001};
    for (size_t a = 0; a < sizeof ns / sizeof ns[0]; a++) {
        for (int nth = 1; nth <= 9; nth++) {
            long long expect_lo = 0, lo, hi, mn = ns[a], mx = 0;
            for (int ith = 0; ith < nth; ith++) {
                tpool_split(ns[a], ith, nth, &lo, &hi);
                CHECK_EQ_INT(lo, expect_lo);
                CHECK(hi >= lo);
                mn = hi - lo < mn ? hi - lo : mn;
                mx = hi - lo > mx ? hi - lo : mx;
                expect_lo = hi;
            }
            CHECK_EQ_INT(expect_lo, ns[a]);
            CHECK(mx - mn <= 1);
        }
    }
}
