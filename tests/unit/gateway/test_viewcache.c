/* test_viewcache.c — the gateway's cache of opened conversations (services/gateway/viewcache.c). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../harness.h"
#include "viewcache.h"

TEST(viewcache_serves_only_the_version_it_holds)
{
    viewcache *c = NULL;
    CHECK(viewcache_create(1 << 20, &c) == PL_OK);
    char ver[72];
    size_t len = 0;
    CHECK(!viewcache_version(c, "u1", "c1", ver, sizeof ver));
    viewcache_put(c, "u1", "c1", "v1", "{\"a\":1}", 7);
    CHECK(viewcache_version(c, "u1", "c1", ver, sizeof ver));
    CHECK_STR(ver, "v1");
    char *t = viewcache_take(c, "u1", "c1", "v1", &len);
    CHECK(t && len == 7 && strcmp(t, "{\"a\":1}") == 0);
    free(t);
    CHECK(viewcache_take(c, "u1", "c1", "v2", &len) == NULL); /* another version */
    CHECK(viewcache_take(c, "u2", "c1", "v1", &len) == NULL); /* another user */
    viewcache_put(c, "u1", "c1", "v2", "{}", 2);              /* replaces */
    viewcache_stats st;
    viewcache_get_stats(c, &st);
    CHECK_EQ_INT(st.entries, 1);
    CHECK_EQ_INT(st.bytes, 2);
    viewcache_free(c);
}

TEST(viewcache_stays_within_its_budget_dropping_the_least_recently_used)
{
    viewcache *c = NULL;
    CHECK(viewcache_create(400, &c) == PL_OK);
    char text[100];
    memset(text, 'x', sizeof text);
    size_t len;
    viewcache_put(c, "u", "a", "1", text, 100);
    viewcache_put(c, "u", "b", "1", text, 100);
    viewcache_put(c, "u", "c", "1", text, 100);
    free(viewcache_take(c, "u", "a", "1", &len)); /* a is now the most recent */
    viewcache_put(c, "u", "d", "1", text, 100);
    viewcache_put(c, "u", "e", "1", text, 100); /* over 400: b goes (least recent) */
    char ver[8];
    CHECK(!viewcache_version(c, "u", "b", ver, sizeof ver));
    CHECK(viewcache_version(c, "u", "a", ver, sizeof ver));
    CHECK(viewcache_version(c, "u", "e", ver, sizeof ver));
    viewcache_stats st;
    viewcache_get_stats(c, &st);
    CHECK(st.bytes <= 400);
    viewcache_put(c, "u", "big", "1", text, 101); /* over a quarter of the budget: not kept */
    CHECK(!viewcache_version(c, "u", "big", ver, sizeof ver));
    viewcache_free(c);
    CHECK(viewcache_create(0, &c) == PL_INVALID);
    CHECK(!viewcache_version(NULL, "u", "a", ver, sizeof ver));
}

TEST(viewcache_caps_the_number_of_entries)
{
    viewcache *c = NULL;
    CHECK(viewcache_create(64u << 20, &c) == PL_OK);
    char conv[16];
    for (int i = 0; i < 5000; i++) {
        snprintf(conv, sizeof conv, "c%d", i);
        viewcache_put(c, "u", conv, "1", "{}", 2);
    }
    viewcache_stats st;
    viewcache_get_stats(c, &st);
    CHECK(st.entries > 0 && st.entries < 5000);
    char ver[8];
    CHECK(viewcache_version(c, "u", "c4999", ver, sizeof ver)); /* the newest stays */
    CHECK(!viewcache_version(c, "u", "c0", ver, sizeof ver));   /* the oldest went */
    viewcache_free(c);
}
