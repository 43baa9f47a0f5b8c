/* kv.c — paged KV cache bookkeeping: a free list of blocks and a block table per sequence.
 *
 * Threading: none; the owning engine context serialises calls. Ownership: the cache owns its
 * tables; the block storage is borrowed from the caller. This file never touches the K/V bytes
 * themselves (the backend's kv_store/attention do): it only decides where they go. It does not
 * share blocks between sequences (no prefix caching yet) and does not evict. */
#include "kv.h"

#include <stdlib.h>
#include <string.h>

typedef struct kv_seq {
    bool live;
    int32_t len;      /* committed tokens */
    int32_t n_blocks; /* blocks in the table (covers len plus any reservation) */
    int32_t *table;   /* [max_blocks_per_seq] */
} kv_seq;

struct kv_cache {
    kv_params p;
    uint8_t *storage;
    size_t block_bytes;
    int32_t n_blocks;
    int32_t max_blocks_per_seq;
    int32_t *free_list; /* stack of free block ids */
    int32_t n_free;
    kv_seq *seqs;    /* [max_seqs] */
    int32_t *tables; /* backing for every seq's table */
    int32_t n_live;
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
    kv->free_list = malloc((size_t)kv->n_blocks * sizeof *kv->free_list);
    kv->seqs = calloc((size_t)p->max_seqs, sizeof *kv->seqs);
    kv->tables = malloc((size_t)p->max_seqs * (size_t)kv->max_blocks_per_seq * sizeof(int32_t));
    if (!kv->free_list || !kv->seqs || !kv->tables) {
        kv_destroy(kv);
        return PL_ERRF(PL_NOMEM, "kv cache: out of memory for block tables");
    }
    /* Stack with block 0 on top, so a lone sequence gets blocks in address order. */
    for (int32_t i = 0; i < kv->n_blocks; i++)
        kv->free_list[i] = kv->n_blocks - 1 - i;
    kv->n_free = kv->n_blocks;
    for (int32_t s = 0; s < p->max_seqs; s++)
        kv->seqs[s].table = kv->tables + (size_t)s * (size_t)kv->max_blocks_per_seq;
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
    free(kv);
}

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
            kv->seqs[s].n_blocks = 0;
            kv->n_live++;
            *seq = s;
            return PL_OK;
        }
    }
    return PL_ERRF(PL_OVERLOADED, "kv cache: all %d sequence slots are in use", kv->p.max_seqs);
}

/* Returns the blocks of s beyond the first `keep` to the free list. */
static void release_blocks(kv_cache *kv, kv_seq *s, int32_t keep)
{
    while (s->n_blocks > keep)
        kv->free_list[kv->n_free++] = s->table[--s->n_blocks];
}

pl_status kv_seq_remove(kv_cache *kv, int32_t seq)
{
    kv_seq *s = get_seq(kv, seq);
    if (!s)
        return PL_ERRF(PL_NOT_FOUND, "kv cache: no sequence %d", seq);
    release_blocks(kv, s, 0);
    s->live = false;
    s->len = 0;
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

int32_t kv_blocks_needed(const kv_cache *kv, int32_t seq, int32_t n)
{
    const kv_seq *s = get_seq(kv, seq);
    if (!s || n < 0)
        return 0;
    int64_t tokens = (int64_t)s->len + n;
    if (tokens > INT32_MAX / 2)
        tokens = INT32_MAX / 2;
    int32_t need = blocks_for((int32_t)tokens);
    return need > s->n_blocks ? need - s->n_blocks : 0;
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
    int32_t need = blocks_for(s->len + n) - s->n_blocks;
    if (need <= 0)
        return PL_OK;
    if (need > kv->n_free)
        return PL_ERRF(PL_TOO_LARGE,
                       "sequence %d: %d more tokens need %d KV blocks of %d tokens but only %d of "
                       "%d are free (KV budget %zu bytes)",
                       seq, n, need, BE_KV_BLOCK, kv->n_free, kv->n_blocks,
                       (size_t)kv->n_blocks * kv->block_bytes);
    for (int32_t i = 0; i < need; i++)
        s->table[s->n_blocks++] = kv->free_list[--kv->n_free];
    return PL_OK;
}

void kv_commit(kv_cache *kv, int32_t seq, int32_t n)
{
    kv_seq *s = get_seq(kv, seq);
    PL_ASSERT(s && n >= 0 && blocks_for(s->len + n) <= s->n_blocks);
    s->len += n;
}

pl_status kv_truncate(kv_cache *kv, int32_t seq, int32_t n)
{
    kv_seq *s = get_seq(kv, seq);
    if (!s)
        return PL_ERRF(PL_NOT_FOUND, "kv cache: no sequence %d", seq);
    if (n < 0 || n > s->len)
        return PL_ERRF(PL_INVALID, "sequence %d: cannot truncate %d tokens to %d", seq, s->len, n);
    s->len = n;
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
    st->free_blocks = kv->n_free;
    st->total_bytes = (size_t)kv->n_blocks * kv->block_bytes;
    st->free_bytes = (size_t)kv->n_free * kv->block_bytes;
    st->n_seqs = kv->n_live;
}
