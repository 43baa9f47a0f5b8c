/* kv.c — paged KV cache bookkeeping: reference-counted blocks, a block table per sequence, and
 * the content-addressed prefix cache (see kv.h).
 *
 * Block states: free (on the free stack, not hashed, count 0), in use (count ≥ 1, hashed or
 * not) and cached-idle (hashed, count 0, on the LRU list). Allocation pops the free stack and,
 * when it is empty, evicts the LRU head. Hash table: chained through blk_hnext, buckets a power
 * of two ≥ the block count.
 *
 * Threading: none; the owning engine context serialises calls. Ownership: the cache owns its
 * tables; the block storage is borrowed from the caller. Apart from the copy-on-write of a
 * shared block (kv_params.copy, or a memcpy for host storage), this file never touches the K/V
 * bytes (the backend's kv_store/attention do): it only decides where they go. */
#include "kv.h"

#include <stdlib.h>
#include <string.h>

#define KV_ROOT_HASH 0x9e3779b97f4a7c15ull /* the "parent hash" of a first block */

typedef struct kv_seq {
    bool live;
    int32_t len;      /* committed tokens */
    int32_t n_known;  /* leading committed tokens whose ids are in `tokens` (≤ len) */
    int32_t n_blocks; /* blocks in the table (covers len plus any reservation) */
    int32_t *table;   /* [max_blocks_per_seq] */
    uint64_t *hash;   /* [max_blocks_per_seq] chain hash of each full known block */
    int32_t *tokens;  /* [max_blocks_per_seq * BE_KV_BLOCK]; hash and tokens: prefix cache only */
} kv_seq;

struct kv_cache {
    kv_params p;
    uint8_t *storage;
    size_t block_bytes;
    int32_t n_blocks;
    int32_t max_blocks_per_seq;
    int32_t *free_list; /* stack of free block ids */
    int32_t n_free;
    kv_seq *seqs;      /* [max_seqs] */
    int32_t *tables;   /* backing for every seq's table */
    uint64_t *hashes;  /* backing for every seq's hash chain */
    int32_t *seq_toks; /* backing for every seq's token ids */
    int32_t n_live;

    /* per block [n_blocks] */
    int32_t *ref;
    bool *cached;      /* in the hash table */
    uint64_t *bhash;   /* chain hash (cached blocks) */
    uint64_t *bphash;  /* parent's chain hash */
    int32_t *bparent;  /* parent block id, -1 for a first block */
    int32_t *btok;     /* [n_blocks][BE_KV_BLOCK] token ids */
    int32_t *hnext;    /* hash chain */
    int32_t *lru_prev; /* LRU links (cached blocks with count 0) */
    int32_t *lru_next;
    int32_t *buckets; /* [n_buckets] */
    uint32_t bucket_mask;
    int32_t lru_head, lru_tail, n_lru;
    int32_t n_cached;
    uint64_t queries, hits, evictions;
};

size_t kv_block_bytes(int n_layer, int kv_dim)
{
    return (size_t)n_layer * 2 * BE_KV_BLOCK * (size_t)kv_dim * 2;
}

size_t kv_storage_bytes(const kv_params *p)
{
    if (p->n_layer <= 0 || p->kv_dim <= 0)
        return 0;
    size_t bb = kv_block_bytes(p->n_layer, p->kv_dim);
    return p->budget_bytes / bb * bb;
}

static int32_t blocks_for(int32_t tokens)
{
    return (tokens + BE_KV_BLOCK - 1) / BE_KV_BLOCK;
}

/* Chain hash of a block: its parent's chain hash and its 16 token ids (FNV-1a style mixing,
 * then a splitmix64 finaliser). */
static uint64_t block_hash(uint64_t parent, const int32_t *toks)
{
    uint64_t h = parent ^ 0xcbf29ce484222325ull;
    for (int i = 0; i < BE_KV_BLOCK; i++) {
        h ^= (uint32_t)toks[i];
        h *= 0x100000001b3ull;
        h ^= h >> 29;
    }
    h ^= h >> 30;
    h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 27;
    h *= 0x94d049bb133111ebull;
    h ^= h >> 31;
    return h;
}

pl_status kv_create(const kv_params *p, void *storage, kv_cache **out)
{
    *out = NULL;
    if (p->n_layer <= 0 || p->kv_dim <= 0 || p->max_seqs <= 0 || p->max_seq_len <= 0)
        return PL_ERRF(PL_INVALID, "kv cache: invalid parameters");
    size_t bb = kv_block_bytes(p->n_layer, p->kv_dim);
    size_t nb = p->budget_bytes / bb;
    if (nb < 1)
        return PL_ERRF(PL_INVALID,
                       "kv cache: budget of %zu bytes is below one block (%zu bytes = %d tokens)",
                       p->budget_bytes, bb, BE_KV_BLOCK);
    if (nb > INT32_MAX / 2)
        return PL_ERRF(PL_INVALID, "kv cache: budget of %zu bytes is too large", p->budget_bytes);
    if (!storage)
        return PL_ERRF(PL_INVALID, "kv cache: no storage");

    kv_cache *kv = calloc(1, sizeof *kv);
    if (!kv)
        return PL_ERRF(PL_NOMEM, "kv cache: out of memory");
    kv->p = *p;
    kv->storage = storage;
    kv->block_bytes = bb;
    kv->n_blocks = (int32_t)nb;
    kv->max_blocks_per_seq = blocks_for(p->max_seq_len);
    size_t ns = (size_t)p->max_seqs, nbk = (size_t)kv->n_blocks;
    size_t mb = (size_t)kv->max_blocks_per_seq;
    uint32_t n_buckets = 1;
    while (n_buckets < nbk && n_buckets < (1u << 30))
        n_buckets <<= 1;
    kv->bucket_mask = n_buckets - 1;
    kv->free_list = malloc(nbk * sizeof *kv->free_list);
    kv->seqs = calloc(ns, sizeof *kv->seqs);
    kv->tables = malloc(ns * mb * sizeof *kv->tables);
    /* Token ids and hash chains only matter to the prefix cache. */
    size_t nh = p->prefix_cache ? ns * mb : 1;
    kv->hashes = malloc(nh * sizeof *kv->hashes);
    kv->seq_toks = malloc(nh * BE_KV_BLOCK * sizeof *kv->seq_toks);
    kv->ref = calloc(nbk, sizeof *kv->ref);
    kv->cached = calloc(nbk, sizeof *kv->cached);
    kv->bhash = calloc(nbk, sizeof *kv->bhash);
    kv->bphash = calloc(nbk, sizeof *kv->bphash);
    kv->bparent = calloc(nbk, sizeof *kv->bparent);
    kv->btok = calloc(nbk * BE_KV_BLOCK, sizeof *kv->btok);
    kv->hnext = calloc(nbk, sizeof *kv->hnext);
    kv->lru_prev = calloc(nbk, sizeof *kv->lru_prev);
    kv->lru_next = calloc(nbk, sizeof *kv->lru_next);
    kv->buckets = malloc((size_t)n_buckets * sizeof *kv->buckets);
    if (!kv->free_list || !kv->seqs || !kv->tables || !kv->hashes || !kv->seq_toks || !kv->ref ||
        !kv->cached || !kv->bhash || !kv->bphash || !kv->bparent || !kv->btok || !kv->hnext ||
        !kv->lru_prev || !kv->lru_next || !kv->buckets) {
        kv_destroy(kv);
        return PL_ERRF(PL_NOMEM, "kv cache: out of memory for block tables");
    }
    /* Stack with block 0 on top, so a lone sequence gets blocks in address order. */
    for (int32_t i = 0; i < kv->n_blocks; i++)
        kv->free_list[i] = kv->n_blocks - 1 - i;
    kv->n_free = kv->n_blocks;
    for (uint32_t i = 0; i < n_buckets; i++)
        kv->buckets[i] = -1;
    kv->lru_head = kv->lru_tail = -1;
    for (size_t s = 0; s < ns; s++) {
        kv->seqs[s].table = kv->tables + s * mb;
        if (p->prefix_cache) {
            kv->seqs[s].hash = kv->hashes + s * mb;
            kv->seqs[s].tokens = kv->seq_toks + s * mb * BE_KV_BLOCK;
        }
    }
    *out = kv;
    return PL_OK;
}

void kv_destroy(kv_cache *kv)
{
    if (!kv)
        return;
    free(kv->free_list);
    free(kv->seqs);
    free(kv->tables);
    free(kv->hashes);
    free(kv->seq_toks);
    free(kv->ref);
    free(kv->cached);
    free(kv->bhash);
    free(kv->bphash);
    free(kv->bparent);
    free(kv->btok);
    free(kv->hnext);
    free(kv->lru_prev);
    free(kv->lru_next);
    free(kv->buckets);
    free(kv);
}

/* --- blocks: LRU, hash table, allocation ------------------------------------------------------ */

static void lru_unlink(kv_cache *kv, int32_t b)
{
    int32_t p = kv->lru_prev[b], n = kv->lru_next[b];
    if (p >= 0)
        kv->lru_next[p] = n;
    else
        kv->lru_head = n;
    if (n >= 0)
        kv->lru_prev[n] = p;
    else
        kv->lru_tail = p;
    kv->n_lru--;
}

static void lru_push_tail(kv_cache *kv, int32_t b)
{
    kv->lru_prev[b] = kv->lru_tail;
    kv->lru_next[b] = -1;
    if (kv->lru_tail >= 0)
        kv->lru_next[kv->lru_tail] = b;
    else
        kv->lru_head = b;
    kv->lru_tail = b;
    kv->n_lru++;
}

static void hash_remove(kv_cache *kv, int32_t b)
{
    int32_t *pp = &kv->buckets[kv->bhash[b] & kv->bucket_mask];
    while (*pp != b) {
        PL_ASSERT(*pp >= 0);
        pp = &kv->hnext[*pp];
    }
    *pp = kv->hnext[b];
    kv->cached[b] = false;
    kv->n_cached--;
}

/* The cached block with this content and parent, or -1. */
static int32_t hash_find(const kv_cache *kv, uint64_t h, uint64_t phash, int32_t parent,
                         const int32_t *toks)
{
    for (int32_t b = kv->buckets[h & kv->bucket_mask]; b >= 0; b = kv->hnext[b])
        if (kv->bhash[b] == h && kv->bphash[b] == phash && kv->bparent[b] == parent &&
            memcmp(kv->btok + (size_t)b * BE_KV_BLOCK, toks, BE_KV_BLOCK * sizeof *toks) == 0)
            return b;
    return -1;
}

/* Blocks an allocation can take now: free ones plus evictable cached ones. */
static int32_t n_available(const kv_cache *kv)
{
    return kv->n_free + kv->n_lru;
}

/* A block with count 1, from the free stack or else by evicting the least recently used cached
 * block. The caller has checked n_available(). */
static int32_t alloc_block(kv_cache *kv)
{
    int32_t b;
    if (kv->n_free > 0) {
        b = kv->free_list[--kv->n_free];
    } else {
        b = kv->lru_head;
        PL_ASSERT(b >= 0);
        lru_unlink(kv, b);
        hash_remove(kv, b);
        kv->evictions++;
    }
    kv->ref[b] = 1;
    return b;
}

/* Takes one more reference to block b (which may be idle on the LRU list). */
static void ref_block(kv_cache *kv, int32_t b)
{
    if (kv->ref[b]++ == 0)
        lru_unlink(kv, b);
}

/* Drops one reference; an unreferenced block goes to the LRU tail when cached, else is freed. */
static void unref_block(kv_cache *kv, int32_t b)
{
    PL_ASSERT(kv->ref[b] > 0);
    if (--kv->ref[b] > 0)
        return;
    if (kv->cached[b])
        lru_push_tail(kv, b);
    else
        kv->free_list[kv->n_free++] = b;
}

/* --- sequences -------------------------------------------------------------------------------- */

static kv_seq *get_seq(const kv_cache *kv, int32_t seq)
{
    if (seq < 0 || seq >= kv->p.max_seqs || !kv->seqs[seq].live)
        return NULL;
    return &kv->seqs[seq];
}

pl_status kv_seq_add(kv_cache *kv, int32_t *seq)
{
    for (int32_t s = 0; s < kv->p.max_seqs; s++) {
        if (!kv->seqs[s].live) {
            kv->seqs[s].live = true;
            kv->seqs[s].len = 0;
            kv->seqs[s].n_known = 0;
            kv->seqs[s].n_blocks = 0;
            kv->n_live++;
            *seq = s;
            return PL_OK;
        }
    }
    return PL_ERRF(PL_OVERLOADED, "kv cache: all %d sequence slots are in use", kv->p.max_seqs);
}

pl_status kv_seq_add_prefix(kv_cache *kv, const int32_t *tokens, int32_t n, int32_t *seq,
                            int32_t *n_cached)
{
    *n_cached = 0;
    if (n < 1 || !tokens)
        return PL_ERRF(PL_INVALID, "kv cache: a prompt needs at least one token");
    pl_status st = kv_seq_add(kv, seq);
    if (st != PL_OK || !kv->p.prefix_cache)
        return st;
    kv_seq *s = &kv->seqs[*seq];
    kv->queries += (uint64_t)n;
    int32_t max_full = (n - 1) / BE_KV_BLOCK; /* the last token is always computed */
    if (max_full > kv->max_blocks_per_seq)
        max_full = kv->max_blocks_per_seq;
    uint64_t phash = KV_ROOT_HASH;
    int32_t parent = -1;
    for (int32_t i = 0; i < max_full; i++) {
        const int32_t *t = tokens + (size_t)i * BE_KV_BLOCK;
        uint64_t h = block_hash(phash, t);
        int32_t b = hash_find(kv, h, phash, parent, t);
        if (b < 0)
            break;
        ref_block(kv, b);
        s->table[s->n_blocks++] = b;
        s->hash[i] = h;
        phash = h;
        parent = b;
    }
    s->len = s->n_known = s->n_blocks * BE_KV_BLOCK;
    memcpy(s->tokens, tokens, (size_t)s->len * sizeof *tokens);
    kv->hits += (uint64_t)s->len;
    *n_cached = s->len;
    return PL_OK;
}

/* Drops the sequence's references to its blocks beyond the first `keep`, last first (so the
 * deepest blocks of a cached chain are the first evicted). */
static void release_blocks(kv_cache *kv, kv_seq *s, int32_t keep)
{
    while (s->n_blocks > keep)
        unref_block(kv, s->table[--s->n_blocks]);
}

pl_status kv_seq_remove(kv_cache *kv, int32_t seq)
{
    kv_seq *s = get_seq(kv, seq);
    if (!s)
        return PL_ERRF(PL_NOT_FOUND, "kv cache: no sequence %d", seq);
    release_blocks(kv, s, 0);
    s->live = false;
    s->len = s->n_known = 0;
    kv->n_live--;
    return PL_OK;
}

bool kv_seq_live(const kv_cache *kv, int32_t seq)
{
    return get_seq(kv, seq) != NULL;
}

int32_t kv_seq_len(const kv_cache *kv, int32_t seq)
{
    const kv_seq *s = get_seq(kv, seq);
    return s ? s->len : -1;
}

/* Whether appending to s writes into a partial last block that other sequences share (so it
 * must be copied first). */
static bool needs_cow(const kv_cache *kv, const kv_seq *s)
{
    if (s->len % BE_KV_BLOCK == 0)
        return false;
    return kv->ref[s->table[s->len / BE_KV_BLOCK]] > 1;
}

int32_t kv_blocks_needed(const kv_cache *kv, int32_t seq, int32_t n)
{
    const kv_seq *s = get_seq(kv, seq);
    if (!s || n < 0)
        return 0;
    int64_t tokens = (int64_t)s->len + n;
    if (tokens > INT32_MAX / 2)
        tokens = INT32_MAX / 2;
    int32_t need = blocks_for((int32_t)tokens);
    need = need > s->n_blocks ? need - s->n_blocks : 0;
    return need + (n > 0 && needs_cow(kv, s));
}

pl_status kv_reserve(kv_cache *kv, int32_t seq, int32_t n)
{
    kv_seq *s = get_seq(kv, seq);
    if (!s)
        return PL_ERRF(PL_NOT_FOUND, "kv cache: no sequence %d", seq);
    if (n < 0)
        return PL_ERRF(PL_INVALID, "kv cache: negative reservation");
    if ((int64_t)s->len + n > kv->p.max_seq_len)
        return PL_ERRF(PL_TOO_LARGE,
                       "sequence %d: %d tokens + %d new exceed the sequence length limit of %d",
                       seq, s->len, n, kv->p.max_seq_len);
    if (n == 0)
        return PL_OK;
    bool cow = needs_cow(kv, s);
    int32_t grow = blocks_for(s->len + n) - s->n_blocks;
    int32_t need = (grow > 0 ? grow : 0) + cow;
    if (need > n_available(kv))
        return PL_ERRF(PL_TOO_LARGE,
                       "sequence %d: %d more tokens need %d KV blocks of %d tokens but only %d of "
                       "%d are free (KV budget %zu bytes)",
                       seq, n, need, BE_KV_BLOCK, n_available(kv), kv->n_blocks,
                       (size_t)kv->n_blocks * kv->block_bytes);
    if (s->len % BE_KV_BLOCK != 0) {
        /* The rows after len in the last block are about to be overwritten. */
        int32_t i = s->len / BE_KV_BLOCK, old = s->table[i];
        if (cow) {
            int32_t b = alloc_block(kv);
            uint8_t *dst = kv->storage + (size_t)b * kv->block_bytes;
            const uint8_t *src = kv->storage + (size_t)old * kv->block_bytes;
            if (kv->p.copy)
                kv->p.copy(kv->p.copy_ctx, dst, src, kv->block_bytes);
            else
                memcpy(dst, src, kv->block_bytes);
            unref_block(kv, old); /* still referenced by the sharers */
            s->table[i] = b;
        } else if (kv->cached[old]) {
            hash_remove(kv, old); /* ours alone: it stops being the cached content */
        }
    }
    for (int32_t i = 0; i < grow; i++)
        s->table[s->n_blocks++] = alloc_block(kv);
    return PL_OK;
}

void kv_commit(kv_cache *kv, int32_t seq, int32_t n)
{
    kv_seq *s = get_seq(kv, seq);
    PL_ASSERT(s && n >= 0 && blocks_for(s->len + n) <= s->n_blocks);
    s->len += n;
}

/* Enters s's full block i (ids known, K/V written) in the prefix cache, or swaps it for an
 * identical cached block. */
static void register_block(kv_cache *kv, kv_seq *s, int32_t i)
{
    const int32_t *t = s->tokens + (size_t)i * BE_KV_BLOCK;
    uint64_t phash = i ? s->hash[i - 1] : KV_ROOT_HASH;
    int32_t parent = i ? s->table[i - 1] : -1;
    uint64_t h = block_hash(phash, t);
    s->hash[i] = h;
    int32_t b = s->table[i];
    if (kv->cached[b])
        return;
    int32_t same = hash_find(kv, h, phash, parent, t);
    if (same >= 0) {
        /* Computed twice (two sequences prefilled the same prefix at once): keep one copy. */
        ref_block(kv, same);
        s->table[i] = same;
        unref_block(kv, b);
        return;
    }
    kv->cached[b] = true;
    kv->n_cached++;
    kv->bhash[b] = h;
    kv->bphash[b] = phash;
    kv->bparent[b] = parent;
    memcpy(kv->btok + (size_t)b * BE_KV_BLOCK, t, BE_KV_BLOCK * sizeof *t);
    int32_t *head = &kv->buckets[h & kv->bucket_mask];
    kv->hnext[b] = *head;
    *head = b;
}

void kv_commit_tokens(kv_cache *kv, int32_t seq, const int32_t *tokens, int32_t n)
{
    kv_seq *s = get_seq(kv, seq);
    PL_ASSERT(s && n >= 0 && blocks_for(s->len + n) <= s->n_blocks);
    int32_t old = s->len;
    s->len += n;
    if (!kv->p.prefix_cache || s->n_known != old)
        return; /* unknown tokens before these: nothing from here on can be cached */
    memcpy(s->tokens + old, tokens, (size_t)n * sizeof *tokens);
    s->n_known = s->len;
    for (int32_t i = old / BE_KV_BLOCK; i < s->len / BE_KV_BLOCK; i++)
        register_block(kv, s, i);
}

pl_status kv_truncate(kv_cache *kv, int32_t seq, int32_t n)
{
    kv_seq *s = get_seq(kv, seq);
    if (!s)
        return PL_ERRF(PL_NOT_FOUND, "kv cache: no sequence %d", seq);
    if (n < 0 || n > s->len)
        return PL_ERRF(PL_INVALID, "sequence %d: cannot truncate %d tokens to %d", seq, s->len, n);
    s->len = n;
    if (s->n_known > n)
        s->n_known = n;
    release_blocks(kv, s, blocks_for(n));
    return PL_OK;
}

const int32_t *kv_seq_blocks(const kv_cache *kv, int32_t seq)
{
    const kv_seq *s = get_seq(kv, seq);
    return s ? s->table : NULL;
}

be_kv_view kv_layer_view(const kv_cache *kv, int layer)
{
    size_t half = (size_t)BE_KV_BLOCK * (size_t)kv->p.kv_dim * 2; /* bytes of K (or V) rows */
    be_kv_view v = {
        .base = kv->storage,
        .block_stride = kv->block_bytes,
        .k_off = (size_t)layer * 2 * half,
        .v_off = (size_t)layer * 2 * half + half,
        .kv_dim = kv->p.kv_dim,
    };
    return v;
}

void kv_get_stats(const kv_cache *kv, kv_stats *st)
{
    st->block_bytes = kv->block_bytes;
    st->total_blocks = kv->n_blocks;
    st->free_blocks = n_available(kv);
    st->cached_blocks = kv->n_cached;
    st->total_bytes = (size_t)kv->n_blocks * kv->block_bytes;
    st->free_bytes = (size_t)st->free_blocks * kv->block_bytes;
    st->n_seqs = kv->n_live;
    st->prefix_queries = kv->queries;
    st->prefix_hits = kv->hits;
    st->evictions = kv->evictions;
}
