/* test_authcache.c — the gateway's session look-up cache (services/gateway/authcache.c). */
#include <stdio.h>
#include <string.h>

#include "../harness.h"
#include "authcache.h"

static void hash_of(int i, char out[65])
{
    /* Distinct, and sharing the first 16 digits in groups of 4 to force probing. */
    snprintf(out, 65, "%016x%048d", (unsigned)(i / 4), i);
}

static gw_user user(const char *id)
{
    gw_user u;
    memset(&u, 0, sizeof u);
    snprintf(u.id, sizeof u.id, "%s", id);
    snprintf(u.tier, sizeof u.tier, "free");
    return u;
}

TEST(authcache_hits_until_the_ttl_then_misses)
{
    authcache *c = NULL;
    CHECK(authcache_create(64, 1000, &c) == PL_OK);
    char h[65];
    hash_of(1, h);
    gw_user u = user("u1"), got;
    CHECK(!authcache_get(c, h, 0, &got));
    authcache_put(c, h, &u, 100, authcache_epoch(c));
    CHECK(authcache_get(c, h, 1099, &got));
    CHECK_STR(got.id, "u1");
    CHECK(!authcache_get(c, h, 1100, &got));
    authcache_stats st;
    authcache_get_stats(c, &st);
    CHECK_EQ_INT(st.hits, 1);
    CHECK_EQ_INT(st.misses, 2);
    authcache_free(c);
}

TEST(authcache_drops_by_token_user_and_all)
{
    authcache *c = NULL;
    CHECK(authcache_create(64, 60000, &c) == PL_OK);
    char h[8][65];
    gw_user a = user("alice"), b = user("bob"), got;
    for (int i = 0; i < 8; i++) {
        hash_of(i, h[i]);
        authcache_put(c, h[i], i % 2 ? &b : &a, 0, authcache_epoch(c));
    }
    for (int i = 0; i < 8; i++)
        CHECK(authcache_get(c, h[i], 1, &got));
    authcache_drop_token(c, h[0]);
    CHECK(!authcache_get(c, h[0], 1, &got));
    CHECK(authcache_get(c, h[2], 1, &got));
    authcache_drop_user(c, "bob");
    for (int i = 1; i < 8; i += 2)
        CHECK(!authcache_get(c, h[i], 1, &got));
    CHECK(authcache_get(c, h[4], 1, &got) && strcmp(got.id, "alice") == 0);
    authcache_clear(c);
    CHECK(!authcache_get(c, h[4], 1, &got));
    authcache_free(c);
}

TEST(authcache_refuses_a_put_that_raced_with_an_eviction)
{
    authcache *c = NULL;
    CHECK(authcache_create(16, 60000, &c) == PL_OK);
    char h[65];
    hash_of(7, h);
    gw_user u = user("u"), got;
    uint64_t before = authcache_epoch(c); /* a look-up starts */
    authcache_drop_token(c, h);           /* a log-out on another thread */
    authcache_put(c, h, &u, 0, before);   /* the look-up's stale answer */
    CHECK(!authcache_get(c, h, 1, &got));
    authcache_put(c, h, &u, 0, authcache_epoch(c));
    CHECK(authcache_get(c, h, 1, &got));
    authcache_free(c);
}

TEST(authcache_full_window_replaces_the_oldest_and_stays_bounded)
{
    authcache *c = NULL;
    CHECK(authcache_create(8, 60000, &c) == PL_OK);
    char h[65];
    gw_user u = user("u"), got;
    for (int i = 0; i < 100; i++) {
        hash_of(i, h);
        authcache_put(c, h, &u, i, authcache_epoch(c));
    }
    authcache_stats st;
    authcache_get_stats(c, &st);
    CHECK(st.entries <= 8);
    hash_of(99, h);
    CHECK(authcache_get(c, h, 100, &got)); /* the newest survives */
    hash_of(0, h);
    CHECK(!authcache_get(c, h, 100, &got)); /* the oldest went */
    authcache_free(c);
}

TEST(authcache_off_and_bad_input_never_hit)
{
    authcache *c = NULL;
    CHECK(authcache_create(0, 1000, &c) == PL_INVALID);
    CHECK(authcache_create(16, 0, &c) == PL_INVALID);
    gw_user u = user("u"), got;
    CHECK(!authcache_get(NULL, "x", 0, &got));
    authcache_put(NULL, "x", &u, 0, 0);
    authcache_drop_user(NULL, "u");
    CHECK(authcache_create(16, 1000, &c) == PL_OK);
    authcache_put(c, "short", &u, 0, authcache_epoch(c));
    CHECK(!authcache_get(c, "short", 0, &got));
    authcache_free(c);
}
