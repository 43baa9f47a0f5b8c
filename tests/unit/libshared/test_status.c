/* test_status.c — pl_status names and the thread-local error slot. */
#include "../harness.h"

#include <pthread.h>
#include <string.h>

#include "status.h"

TEST(status_names_are_distinct_and_known)
{
    for (int i = 0; i < PL_STATUS_COUNT; i++) {
        const char *a = pl_status_str((pl_status)i);
        CHECK(a != NULL && *a != '\0');
        CHECK(strcmp(a, "unknown") != 0);
        for (int j = 0; j < i; j++)
            CHECK(strcmp(a, pl_status_str((pl_status)j)) != 0);
        for (const char *p = a; *p; p++)
            CHECK(!(*p >= 'A' && *p <= 'Z'));
    }
    CHECK_STR(pl_status_str(PL_OK), "ok");
    CHECK_STR(pl_status_str(PL_INVALID), "invalid");
    CHECK_STR(pl_status_str(PL_NOT_FOUND), "not_found");
    CHECK_STR(pl_status_str(PL_STATUS_COUNT), "unknown");
    CHECK_STR(pl_status_str((pl_status)-1), "unknown");
    CHECK_STR(pl_status_str((pl_status)1000), "unknown");
}

TEST(status_errf_records_file_line_and_message)
{
    char want[128];
    pl_err_clear();
    CHECK_STR(pl_err_last(), "");
    int line = __LINE__ + 1;
    pl_status s = PL_ERRF(PL_INVALID, "bad port %d", 70000);
    CHECK_EQ_INT(s, PL_INVALID);
    snprintf(want, sizeof want, "test_status.c:%d: bad port 70000", line);
    CHECK_STR(pl_err_last(), want);
    pl_err_clear();
    CHECK_STR(pl_err_last(), "");
}

TEST(status_errf_can_wrap_the_previous_message)
{
    char want[256];
    int l1 = __LINE__ + 1;
    PL_ERRF(PL_IO, "open %s: %s", "/x", "No such file");
    int l2 = __LINE__ + 1;
    PL_ERRF(PL_IO, "loading model: %s", pl_err_last());
    snprintf(want, sizeof want,
             "test_status.c:%d: loading model: test_status.c:%d: open /x: No such file", l2, l1);
    CHECK_STR(pl_err_last(), want);
    pl_err_clear();
}

TEST(status_long_message_is_truncated_safely)
{
    char big[2000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    CHECK_EQ_INT(PL_ERRF(PL_TOO_LARGE, "%s", big), PL_TOO_LARGE);
    size_t n = strlen(pl_err_last());
    CHECK(n > 400 && n < 512);
    CHECK(strncmp(pl_err_last(), "test_status.c:", 14) == 0);
    pl_err_clear();
}

static void *other_thread(void *arg)
{
    char *seen = arg;
    /* A fresh thread starts with an empty slot whatever the main thread recorded. */
    strcpy(seen, pl_err_last());
    PL_ERRF(PL_BUS, "from the other thread");
    return NULL;
}

TEST(status_error_slot_is_per_thread)
{
    char seen[512] = "unset";
    pthread_t t;
    PL_ERRF(PL_DB, "main thread message");
    CHECK_EQ_INT(pthread_create(&t, NULL, other_thread, seen), 0);
    pthread_join(t, NULL);
    CHECK_STR(seen, "");
    CHECK(strstr(pl_err_last(), "main thread message") != NULL);
    CHECK(strstr(pl_err_last(), "other thread") == NULL);
    pl_err_clear();
}

TEST(status_err_text_drops_source_locations)
{
    CHECK_STR(pl_err_text("db.c:42: ops.c:7: no such user"), "no such user");
    CHECK_STR(pl_err_text("plain message"), "plain message");
    CHECK_STR(pl_err_text("a.c: not a location"), "a.c: not a location");
    CHECK_STR(pl_err_text("x.c:12:no space"), "x.c:12:no space");
    CHECK_STR(pl_err_text(NULL), "");
    PL_ERRF(PL_INVALID, "bad %s", "thing");
    CHECK_STR(pl_err_message(), "bad thing");
    CHECK(strcmp(pl_err_last(), "bad thing") != 0); /* the log form keeps its location */
}
