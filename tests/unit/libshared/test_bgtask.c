/* Unit tests for bgtask (retrying background steps), sync helpers and wire mappings. */
#include "../harness.h"

#include <stdatomic.h>
#include <time.h>

#include "bgtask.h"
#include "sync.h"
#include "wire.h"

static atomic_int calls;
static atomic_int fail_first;

static pl_status flaky(void *arg)
{
    (void)arg;
    int n = atomic_fetch_add(&calls, 1) + 1;
    if (n <= atomic_load(&fail_first))
        return PL_ERRF(PL_UNAVAILABLE, "try %d: not yet", n);
    return PL_OK;
}

static void sleep_ms(int ms)
{
    nanosleep(&(struct timespec){ms / 1000, (ms % 1000) * 1000000L}, NULL);
}

TEST(bgtask_retries_until_done_and_reruns)
{
    atomic_store(&calls, 0);
    atomic_store(&fail_first, 2);
    bgtask *t;
    CHECK_EQ_INT(bgtask_start("flaky", flaky, NULL, 20, &t), PL_OK);
    char why[128];
    for (int i = 0; i < 200 && !bgtask_done(t); i++)
        sleep_ms(5);
    CHECK(bgtask_done(t));
    CHECK_EQ_INT(atomic_load(&calls), 3);
    bgtask_error(t, why, sizeof why);
    CHECK_STR(why, "");
    /* After success the step does not run again until asked. */
    sleep_ms(80);
    CHECK_EQ_INT(atomic_load(&calls), 3);
    atomic_store(&fail_first, 1000);
    bgtask_rerun(t);
    for (int i = 0; i < 200 && bgtask_done(t); i++)
        sleep_ms(5);
    CHECK(!bgtask_done(t));
    bgtask_error(t, why, sizeof why);
    CHECK(strstr(why, "not yet") != NULL);
    bgtask_stop(t);
    bgtask_stop(NULL);
}

TEST(sync_deadline_is_in_the_future)
{
    struct timespec now, d = sync_deadline(1500);
    clock_gettime(CLOCK_MONOTONIC, &now);
    double diff = (double)(d.tv_sec - now.tv_sec) + (double)(d.tv_nsec - now.tv_nsec) * 1e-9;
    CHECK(diff > 1.4 && diff <= 1.5);
    CHECK(d.tv_nsec >= 0 && d.tv_nsec < 1000000000L);
    pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t cv;
    sync_cond_init(&cv);
    struct timespec soon = sync_deadline(30);
    pthread_mutex_lock(&mu);
    CHECK(pthread_cond_timedwait(&cv, &mu, &soon) != 0); /* times out, does not hang */
    pthread_mutex_unlock(&mu);
    pthread_cond_destroy(&cv);
}

TEST(wire_maps_statuses_codes_and_http)
{
    static const struct {
        pl_status s;
        int http;
    } cases[] = {{PL_OK, 200},           {PL_INVALID, 400},
                 {PL_NOT_FOUND, 404},    {PL_UNAUTHENTICATED, 401},
                 {PL_PERMISSION, 403},   {PL_OVERLOADED, 429},
                 {PL_RATE_LIMITED, 429}, {PL_UNAVAILABLE, 503},
                 {PL_TIMEOUT, 504},      {PL_TOO_LARGE, 413},
                 {PL_UNSUPPORTED, 415},  {PL_EXISTS, 409},
                 {PL_ERR, 500}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        Parley__V1__ErrorCode c = wire_code_from_status(cases[i].s);
        CHECK_EQ_INT(wire_http_status(c), cases[i].http);
        if (cases[i].s != PL_ERR)
            CHECK_EQ_INT(wire_status_from_code(c), cases[i].s);
    }
    CHECK_STR(wire_error_type(429), "rate_limit_error");
    CHECK_STR(wire_error_type(401), "authentication_error");
    CHECK_STR(wire_error_type(503), "server_error");
    Parley__V1__Error e;
    wire_error_init(&e, PL_OVERLOADED, "full");
    CHECK(e.retryable);
    CHECK_STR(e.message, "full");
    wire_error_init(&e, PL_NOT_FOUND, "history.c:10: ops.c:3: no such share");
    CHECK_STR(e.message, "no such share"); /* source locations never go on the wire */
    wire_error_init(&e, PL_INVALID, NULL);
    CHECK(!e.retryable);
    CHECK_STR(e.message, "");
}
