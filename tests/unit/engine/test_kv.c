/* test_kv.c — the paged KV cache's prefix cache, as bookkeeping: which blocks a sequence gets
 * (shared by content, reference-counted), what stays cached after a sequence ends, LRU eviction
 * under a small budget, copy-on-write after a truncation into a shared block, and the counters.
 * Each "token" writes a marker into its K row here so the tests can see whose bytes a block
 * holds; the engine-level exactness tests (logits with and without the cache) are in
 * test_engine.c. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../harness.h"
#include "kv.h"

#define KVD 4 /* kv_dim: one layer, 4 halves per row */

typedef struct kvt {
    kv_params p;
    void *storage;
    kv_cache *kv;
} kvt;

static bool kvt_open(kvt *t, int n_blocks, int max_seqs, bool prefix)
{
    t->p = (kv_params){.n_layer = 1,
                       .kv_dim = KVD,
                       .max_seqs = max_seqs,
                       .max_seq_len = 256,
                       .budget_bytes = kv_block_bytes(1, KVD) * (size_t)n_blocks,
                       .prefix_cache = prefix};
    t->storage = calloc(1, kv_storage_bytes(&t->p));
    t->kv = NULL;
    if (!t->storage || kv_create(&t->p, t->storage, &t->kv) != PL_OK) {
        th_fail(__FILE__, __LINE__, "kv_create: %s", pl_err_last());
        free(t->storage);
        return false;
    }
    return true;
}

static void kvt_close(kvt *t)
{
    kv_destroy(t->kv);
    free(t->storage);
}

/* The first half of token position p's K row (what "writing" a token stores here). */
static uint16_t *krow(kvt *t, int32_t seq, int32_t p)
{
    be_kv_view v = kv_layer_view(t->kv, 0);
    const int32_t *bt = kv_seq_blocks(t->kv, seq);
    return (uint16_t *)((uint8_t *)v.base + (size_t)bt[p / BE_KV_BLOCK] * v.block_stride + v.k_off +
                        (size_t)(p % BE_KV_BLOCK) * (size_t)v.kv_dim * 2);
}

/* Appends n tokens the way eng_step does: reserve, write each token's id as its K row, commit
 * with the ids. */
static pl_status kvt_append(kvt *t, int32_t seq, const int32_t *toks, int32_t n)
{
    pl_status st = kv_reserve(t->kv, seq, n);
    if (st != PL_OK)
        return st;
    int32_t len = kv_seq_len(t->kv, seq);
    for (int32_t i = 0; i < n; i++)
        *krow(t, seq, len + i) = (uint16_t)toks[i];
    kv_commit_tokens(t->kv, seq, toks, n);
    return PL_OK;
}

/* Whether every stored K row of seq holds the expected token id. */
static bool kvt_rows_are(kvt *t, int32_t seq, const int32_t *toks, int32_t n)
{
    if (kv_seq_len(t->kv, seq) != n)
        return false;
    for (int32_t i = 0; i < n; i++)
        if (*krow(t, seq, i) != (uint16_t)toks[i])
            return false;
    return true;
}

static void fill(int32_t *t, int n, int32_t base)
{
    for (int i = 0; i < n; i++)
        t[i] = base + i;
}

TEST(kv_prefix_shares_full_blocks_and_keeps_them_after_removal)
{
    kvt t;
    if (!kvt_open(&t, 16, 4, true))
        return;
    int32_t a[40], s1, s2, k = -1;
    fill(a, 40, 100);
    CHECK_EQ_INT(kv_seq_add_prefix(t.kv, a, 40, &s1, &k), PL_OK);
    CHECK_EQ_INT(k, 0); /* empty cache */
    CHECK_EQ_INT(kvt_append(&t, s1, a, 40), PL_OK);
    kv_stats st;
    kv_get_stats(t.kv, &st);
    CHECK_EQ_INT(st.cached_blocks, 2); /* two full blocks; the third holds 8 tokens */
    CHECK_EQ_INT(st.free_blocks, 13);

    /* A second prompt with the same 40 tokens and more: both full blocks are adopted. */
    int32_t b[50];
    memcpy(b, a, sizeof a);
    fill(b + 40, 10, 900);
    CHECK_EQ_INT(kv_seq_add_prefix(t.kv, b, 50, &s2, &k), PL_OK);
    CHECK_EQ_INT(k, 32);
    CHECK_EQ_INT(kv_seq_len(t.kv, s2), 32);
    CHECK(kv_seq_blocks(t.kv, s2)[0] == kv_seq_blocks(t.kv, s1)[0]);
    CHECK(kv_seq_blocks(t.kv, s2)[1] == kv_seq_blocks(t.kv, s1)[1]);
    CHECK(kvt_rows_are(&t, s2, b, 32));
    CHECK_EQ_INT(kvt_append(&t, s2, b + 32, 18), PL_OK);
    CHECK(kvt_rows_are(&t, s2, b, 50));
    CHECK(kvt_rows_are(&t, s1, a, 40)); /* the sharer is untouched */
    kv_get_stats(t.kv, &st);
    CHECK_EQ_INT(st.cached_blocks, 3);
    CHECK_EQ_INT(st.free_blocks, 16 - 3 - 2); /* s1: 3 blocks, s2: 2 shared + 2 own */
    CHECK_EQ_INT(st.prefix_queries, 90);
    CHECK_EQ_INT(st.prefix_hits, 32);

    /* Ended sequences leave their full blocks cached (and counted free). */
    CHECK_EQ_INT(kv_seq_remove(t.kv, s1), PL_OK);
    CHECK_EQ_INT(kv_seq_remove(t.kv, s2), PL_OK);
    kv_get_stats(t.kv, &st);
    CHECK_EQ_INT(st.free_blocks, 16);
    CHECK_EQ_INT(st.cached_blocks, 3);
    int32_t s3;
    CHECK_EQ_INT(kv_seq_add_prefix(t.kv, b, 50, &s3, &k), PL_OK);
    CHECK_EQ_INT(k, 48);
    CHECK(kvt_rows_are(&t, s3, b, 48));
    /* A prompt that differs inside the second block reuses only the first. */
    int32_t c[40], s4;
    memcpy(c, a, sizeof c);
    c[20] = 7;
    CHECK_EQ_INT(kv_seq_add_prefix(t.kv, c, 40, &s4, &k), PL_OK);
    CHECK_EQ_INT(k, 16);
    kvt_close(&t);
}

TEST(kv_prefix_never_covers_the_last_token)
{
    kvt t;
    if (!kvt_open(&t, 8, 2, true))
        return;
    int32_t a[32], s, k;
    fill(a, 32, 5);
    CHECK_EQ_INT(kv_seq_add_prefix(t.kv, a, 32, &s, &k), PL_OK);
    CHECK_EQ_INT(kvt_append(&t, s, a, 32), PL_OK);
    CHECK_EQ_INT(kv_seq_remove(t.kv, s), PL_OK);
    /* Both blocks are cached, but a 32-token prompt must still compute its last token. */
    CHECK_EQ_INT(kv_seq_add_prefix(t.kv, a, 32, &s, &k), PL_OK);
    CHECK_EQ_INT(k, 16);
    CHECK_EQ_INT(kv_seq_remove(t.kv, s), PL_OK);
    CHECK_EQ_INT(kv_seq_add_prefix(t.kv, a, 33, &s, &k), PL_OK);
    CHECK_EQ_INT(k, 32);
    CHECK_EQ_INT(kv_seq_remove(t.kv, s), PL_OK);
    CHECK_EQ_INT(kv_seq_add_prefix(t.kv, a, 0, &s, &k), PL_INVALID);
    kvt_close(&t);
}

TEST(kv_prefix_off_shares_nothing)
{
    kvt t;
    if (!kvt_open(&t, 8, 2, false))
        return;
    int32_t a[40], s, k = -1;
    fill(a, 40, 1);
    CHECK_EQ_INT(kv_seq_add_prefix(t.kv, a, 40, &s, &k), PL_OK);
    CHECK_EQ_INT(kvt_append(&t, s, a, 40), PL_OK);
    CHECK_EQ_INT(kv_seq_remove(t.kv, s), PL_OK);
    CHECK_EQ_INT(kv_seq_add_prefix(t.kv, a, 40, &s, &k), PL_OK);
    CHECK_EQ_INT(k, 0);
    kv_stats st;
    kv_get_stats(t.kv, &st);
    CHECK_EQ_INT(st.cached_blocks, 0);
    CHECK_EQ_INT(st.prefix_queries, 0);
    kvt_close(&t);
}

TEST(kv_prefix_evicts_least_recently_used_under_a_small_budget)
{
    kvt t;
    if (!kvt_open(&t, 4, 2, true))
        return;
    int32_t a[33], b[33], s, k;
    fill(a, 33, 1000);
    fill(b, 33, 2000);
    /* a's two full blocks get cached, then b's two: the pool of 4 is then all cached. */
    CHECK_EQ_INT(kv_seq_add_prefix(t.kv, a, 33, &s, &k), PL_OK);
    CHECK_EQ_INT(kvt_append(&t, s, a, 32), PL_OK);
    CHECK_EQ_INT(kv_seq_remove(t.kv, s), PL_OK);
    CHECK_EQ_INT(kv_seq_add_prefix(t.kv, b, 33, &s, &k), PL_OK);
    CHECK_EQ_INT(kvt_append(&t, s, b, 32), PL_OK);
    CHECK_EQ_INT(kv_seq_remove(t.kv, s), PL_OK);
    kv_stats st;
    kv_get_stats(t.kv, &st);
    CHECK_EQ_INT(st.cached_blocks, 4);
    CHECK_EQ_INT(st.free_blocks, 4);
    CHECK_EQ_INT(st.evictions, 0);

    /* Touch a again (it becomes the most recently used), then need one fresh block: b's deepest
     * block goes first. */
    CHECK_EQ_INT(kv_seq_add_prefix(t.kv, a, 33, &s, &k), PL_OK);
    CHECK_EQ_INT(k, 32);
    CHECK_EQ_INT(kv_seq_remove(t.kv, s), PL_OK);
    int32_t c[8], s2;
    fill(c, 8, 3000);
    CHECK_EQ_INT(kv_seq_add_prefix(t.kv, c, 8, &s2, &k), PL_OK);
    CHECK_EQ_INT(kvt_append(&t, s2, c, 8), PL_OK);
    kv_get_stats(t.kv, &st);
    CHECK_EQ_INT(st.evictions, 1);
    CHECK_EQ_INT(st.cached_blocks, 3);
    CHECK_EQ_INT(kv_seq_remove(t.kv, s2), PL_OK);
    CHECK_EQ_INT(kv_seq_add_prefix(t.kv, b, 33, &s, &k), PL_OK);
    CHECK_EQ_INT(k, 16); /* b's first block survived, its second was evicted */
    CHECK(kvt_rows_are(&t, s, b, 16));
    CHECK_EQ_INT(kv_seq_remove(t.kv, s), PL_OK);
    CHECK_EQ_INT(kv_seq_add_prefix(t.kv, a, 33, &s, &k), PL_OK);
    CHECK_EQ_INT(k, 32);
    CHECK(kvt_rows_are(&t, s, a, 32));

    /* A sequence that needs the whole pool evicts everything idle; a shared block in use is
     * never evicted, and a request beyond the pool fails without change. */
    int32_t big[64];
    fill(big, 64, 4000);
    CHECK_EQ_INT(kv_seq_add_prefix(t.kv, big, 64, &s2, &k), PL_OK);
    CHECK_EQ_INT(kv_reserve(t.kv, s2, 64), PL_TOO_LARGE); /* a holds 2 of 4 */
    CHECK_EQ_INT(kvt_append(&t, s2, big, 32), PL_OK);
    CHECK(kvt_rows_are(&t, s, a, 32));
    kv_get_stats(t.kv, &st);
    CHECK_EQ_INT(st.free_blocks, 0);
    kvt_close(&t);
}

TEST(kv_prefix_truncate_into_a_shared_block_copies_it)
{
    kvt t;
    if (!kvt_open(&t, 8, 3, true))
        return;
    int32_t a[40], s1, s2, k;
    fill(a, 40, 10);
    CHECK_EQ_INT(kv_seq_add_prefix(t.kv, a, 40, &s1, &k), PL_OK);
    CHECK_EQ_INT(kvt_append(&t, s1, a, 40), PL_OK);
    CHECK_EQ_INT(kv_seq_add_prefix(t.kv, a, 40, &s2, &k), PL_OK);
    CHECK_EQ_INT(k, 32);
    int32_t shared1 = kv_seq_blocks(t.kv, s2)[1];
    /* s2 rolls back into the shared second block and writes different tokens there. */
    CHECK_EQ_INT(kv_truncate(t.kv, s2, 20), PL_OK);
    CHECK_EQ_INT(kv_blocks_needed(t.kv, s2, 4), 1); /* the copy */
    int32_t other[4] = {77, 78, 79, 80};
    CHECK_EQ_INT(kvt_append(&t, s2, other, 4), PL_OK);
    CHECK(kv_seq_blocks(t.kv, s2)[1] != shared1);
    CHECK(kv_seq_blocks(t.kv, s1)[1] == shared1);
    CHECK(kvt_rows_are(&t, s1, a, 40)); /* the sharer still reads its own tokens */
    int32_t b[24];
    memcpy(b, a, 20 * sizeof *b);
    memcpy(b + 20, other, sizeof other);
    CHECK(kvt_rows_are(&t, s2, b, 24)); /* the copy kept rows 16..19 */

    /* A third sequence still finds the original content, not s2's. */
    int32_t s3;
    CHECK_EQ_INT(kv_seq_add_prefix(t.kv, a, 40, &s3, &k), PL_OK);
    CHECK_EQ_INT(k, 32);
    CHECK(kvt_rows_are(&t, s3, a, 32));
    CHECK_EQ_INT(kv_seq_remove(t.kv, s3), PL_OK);

    /* A cached block held by one sequence alone is unhashed (not copied) before it is
     * overwritten, and the rewritten block is cached under its new content. */
    CHECK_EQ_INT(kv_seq_remove(t.kv, s2), PL_OK);
    CHECK_EQ_INT(kv_truncate(t.kv, s1, 24), PL_OK);
    int32_t own1 = kv_seq_blocks(t.kv, s1)[1];
    CHECK_EQ_INT(kv_blocks_needed(t.kv, s1, 8), 0);
    int32_t c[8];
    fill(c, 8, 500);
    CHECK_EQ_INT(kvt_append(&t, s1, c, 8), PL_OK);
    CHECK(kv_seq_blocks(t.kv, s1)[1] == own1);
    int32_t d[33];
    memcpy(d, a, 24 * sizeof *d);
    memcpy(d + 24, c, sizeof c);
    d[32] = 1;
    CHECK_EQ_INT(kv_seq_add_prefix(t.kv, a, 40, &s3, &k), PL_OK);
    CHECK_EQ_INT(k, 16); /* the old second block is gone */
    CHECK_EQ_INT(kv_seq_remove(t.kv, s3), PL_OK);
    CHECK_EQ_INT(kv_seq_add_prefix(t.kv, d, 33, &s3, &k), PL_OK);
    CHECK_EQ_INT(k, 32);
    CHECK(kvt_rows_are(&t, s3, d, 32));
    kvt_close(&t);
}

TEST(kv_prefix_identical_blocks_computed_twice_are_merged)
{
    kvt t;
    if (!kvt_open(&t, 8, 2, true))
        return;
    int32_t a[20], s1, s2, k;
    fill(a, 20, 300);
    CHECK_EQ_INT(kv_seq_add_prefix(t.kv, a, 20, &s1, &k), PL_OK);
    CHECK_EQ_INT(kv_seq_add_prefix(t.kv, a, 20, &s2, &k), PL_OK);
    CHECK_EQ_INT(k, 0); /* nothing cached yet: both compute */
    CHECK_EQ_INT(kvt_append(&t, s1, a, 20), PL_OK);
    CHECK_EQ_INT(kvt_append(&t, s2, a, 20), PL_OK);
    CHECK(kv_seq_blocks(t.kv, s1)[0] == kv_seq_blocks(t.kv, s2)[0]);
    kv_stats st;
    kv_get_stats(t.kv, &st);
    CHECK_EQ_INT(st.free_blocks, 8 - 3);
    CHECK_EQ_INT(st.cached_blocks, 1);
    CHECK(kvt_rows_are(&t, s2, a, 20));
    kvt_close(&t);
}

TEST(kv_prefix_unknown_tokens_are_never_cached)
{
    kvt t;
    if (!kvt_open(&t, 8, 2, true))
        return;
    int32_t a[40], s, k;
    fill(a, 40, 60);
    CHECK_EQ_INT(kv_seq_add(t.kv, &s), PL_OK);
    CHECK_EQ_INT(kv_reserve(t.kv, s, 16), PL_OK);
    kv_commit(t.kv, s, 16); /* ids not given */
    CHECK_EQ_INT(kvt_append(&t, s, a + 16, 24), PL_OK);
    kv_stats st;
    kv_get_stats(t.kv, &st);
    CHECK_EQ_INT(st.cached_blocks, 0);
    /* Rolled back to nothing, the sequence is cacheable again. */
    CHECK_EQ_INT(kv_truncate(t.kv, s, 0), PL_OK);
    CHECK_EQ_INT(kvt_append(&t, s, a, 40), PL_OK);
    kv_get_stats(t.kv, &st);
    CHECK_EQ_INT(st.cached_blocks, 2);
    CHECK_EQ_INT(kv_seq_remove(t.kv, s), PL_OK);
    CHECK_EQ_INT(kv_seq_add_prefix(t.kv, a, 40, &s, &k), PL_OK);
    CHECK_EQ_INT(k, 32);
    kvt_close(&t);
}
