/* test_arena.c — the history ops' per-request arena (services/history/arena.c): zeroed,
 * aligned, non-overlapping allocations across block boundaries, large allocations in blocks of
 * their own, strdup helpers, and freeing NULL. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "ops.h"
#include "../harness.h"

static int aligned(const void *p)
{
    return (uintptr_t)p % _Alignof(max_align_t) == 0;
}

TEST(arena_small_allocations_are_zeroed_aligned_and_disjoint)
{
    hs_arena *a = hs_arena_create();
    CHECK(a != NULL);
    enum { N = 5000 };
    static unsigned char *p[N];
    static size_t len[N];
    int ok = 1;
    for (size_t i = 0; i < N; i++) {
        len[i] = 1 + (i * 37) % 300; /* spans many 16 KiB blocks */
        p[i] = hs_alloc(a, len[i]);
        if (!p[i] || !aligned(p[i])) {
            ok = 0;
            break;
        }
        for (size_t k = 0; k < len[i]; k++)
            ok &= p[i][k] == 0;
        memset(p[i], (int)(i % 251) + 1, len[i]);
    }
    CHECK(ok);
    /* Each allocation still holds its own pattern: nothing overlapped. */
    for (size_t i = 0; ok && i < N; i++)
        for (size_t k = 0; k < len[i]; k++)
            ok &= p[i][k] == (unsigned char)((i % 251) + 1);
    CHECK(ok);
    CHECK(hs_alloc(a, 0) != NULL);
    hs_arena_free(a);
}

TEST(arena_large_allocations_keep_the_current_block)
{
    hs_arena *a = hs_arena_create();
    char *big0 = hs_alloc(a, 100000); /* the first allocation is a large one */
    CHECK(big0 != NULL && aligned(big0));
    char *s1 = hs_alloc(a, 16);
    char *big = hs_alloc(a, 1 << 20);
    char *s2 = hs_alloc(a, 16);
    CHECK(s1 && big && s2 && aligned(big));
    CHECK(big[0] == 0 && big[(1 << 20) - 1] == 0);
    memset(big0, 'x', 100000);
    memset(big, 'y', 1 << 20);
    /* The small allocation after the large one comes from the same block as the one before. */
    CHECK(s2 == s1 + 16);
    CHECK(s1[0] == 0 && s2[15] == 0);
    CHECK(hs_alloc(a, SIZE_MAX) == NULL);
    CHECK(hs_alloc(a, SIZE_MAX - 8) == NULL);
    hs_arena_free(a);
}

TEST(arena_strdup_and_ids)
{
    hs_arena *a = hs_arena_create();
    CHECK_STR(hs_strdup(a, "hello"), "hello");
    CHECK_STR(hs_strdup(a, NULL), "");
    CHECK_STR(hs_strndup(a, "abcdef", 3), "abc");
    char *id = hs_new_id(a);
    CHECK(id != NULL && strlen(id) == 32);
    char big[9000];
    memset(big, 'q', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    CHECK_STR(hs_strdup(a, big), big);
    hs_arena_free(a);
    hs_arena_free(NULL);
}

TEST(arena_reply_prefix_is_owned_replaced_and_freed_with_the_arena)
{
    hs_arena *a = hs_arena_create();
    size_t len = 9;
    CHECK(hs_reply_prefix_get(a, &len) == NULL && len == 0);
    char *p1 = malloc(3), *p2 = malloc(5);
    memcpy(p1, "abc", 3);
    memcpy(p2, "hello", 5);
    hs_reply_prefix(a, p1, 3);
    hs_reply_prefix(a, p2, 5); /* frees p1 (ASan would report a leak otherwise) */
    const char *got = hs_reply_prefix_get(a, &len);
    CHECK(got == p2 && len == 5 && memcmp(got, "hello", 5) == 0);
    hs_arena_free(a); /* frees p2 */
}
