/* kv.h — the paged KV cache: a pool of fixed-size blocks (BE_KV_BLOCK = 16 tokens, all layers'
 * K and V rows for those tokens) carved from a budget given in bytes, and a block table per
 * sequence.
 *
 * Element type: F16. It halves the memory and the bandwidth of attention (decode attention reads
 * the whole cache every step) compared with F32, it is what llama.cpp stores by default (so our
 * logits track the reference), and its rounding (~5e-4 relative) is far below the noise the 4-bit
 * weights already add. Layout of one block: for each layer, K[16][kv_dim] then V[16][kv_dim].
 *
 * Allocation is all-or-nothing per request: kv_reserve either provides room for n more tokens
 * or returns PL_TOO_LARGE (message says how many blocks were needed and free) and changes
 * nothing. Blocks return to the pool when a sequence is removed or truncated.
 *
 * Prefix caching (kv_params.prefix_cache): a FULL block whose token ids are known (committed
 * with kv_commit_tokens) is content-addressed by a hash of (its parent block's hash, its 16
 * token ids) and entered in a hash table. Blocks are reference-counted: a new sequence started
 * with kv_seq_add_prefix adopts the longest chain of cached blocks that matches its prompt and
 * only computes the rest. A block whose count falls to zero stays cached on an LRU list and
 * still counts as free: it is evicted (unhashed and reused) only when an allocation finds the
 * free list empty, the deepest blocks of a released chain first. Cached blocks are immutable:
 * before a sequence writes into a block it shares (after a truncation into it), the block is
 * copied to a private one (copy-on-write in kv_reserve); a cached block only this sequence
 * holds is unhashed instead. A lookup hit is checked against the stored token ids, parent block
 * and parent hash, so a false hit needs a 64-bit hash collision and a reused parent block at
 * once.
 *
 * Not thread-safe: one owner (the engine context). The storage itself is provided by the
 * caller (a backend's memory) and must outlive the cache. */
#ifndef PARLEY_KV_H
#define PARLEY_KV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backend.h"
#include "status.h"

typedef struct kv_cache kv_cache;

typedef struct kv_params {
    int n_layer;
    int kv_dim; /* n_head_kv * head_dim */
    int max_seqs;
    int max_seq_len; /* tokens per sequence */
    size_t budget_bytes;
    bool prefix_cache; /* share full blocks by content (see above) */
    /* Copies n bytes of block storage (the copy-on-write of a shared block); NULL: memcpy, for
     * host storage. A device backend's copy is queued in order with its other work. */
    void (*copy)(void *ctx, void *dst, const void *src, size_t n);
    void *copy_ctx;
} kv_params;

/* Bytes of one block for these parameters. */
size_t kv_block_bytes(int n_layer, int kv_dim);
/* Bytes of storage kv_create needs: the budget rounded down to whole blocks. */
size_t kv_storage_bytes(const kv_params *p);

/* Creates the cache over `storage` (kv_storage_bytes(p) bytes, borrowed). PL_INVALID when the
 * budget holds less than one block or parameters are out of range; PL_NOMEM. */
pl_status kv_create(const kv_params *p, void *storage, kv_cache **out);
void kv_destroy(kv_cache *kv); /* accepts NULL; does not free the storage */

/* Starts an empty sequence in a free slot; PL_OVERLOADED when max_seqs are live. */
pl_status kv_seq_add(kv_cache *kv, int32_t *seq);
/* Starts a sequence for a prompt of n ≥ 1 tokens (borrowed for the call) and adopts the longest
 * chain of cached full blocks matching its start, never covering the last token (so the caller
 * always computes at least one token and gets logits). *n_cached = tokens adopted (a multiple of
 * 16, < n; 0 when prefix caching is off); the sequence's length is *n_cached and the caller
 * appends tokens[*n_cached..n). Counts n queried and *n_cached hit tokens. PL_OVERLOADED when
 * max_seqs are live, PL_INVALID for n < 1. Token ids are not range-checked here. */
pl_status kv_seq_add_prefix(kv_cache *kv, const int32_t *tokens, int32_t n, int32_t *seq,
                            int32_t *n_cached);
/* Frees the sequence's blocks and slot. PL_NOT_FOUND when not live. */
pl_status kv_seq_remove(kv_cache *kv, int32_t seq);
bool kv_seq_live(const kv_cache *kv, int32_t seq);
/* Tokens stored (committed), or -1 when not live. */
int32_t kv_seq_len(const kv_cache *kv, int32_t seq);
/* Blocks that appending n tokens would newly take (including a copy-on-write of a shared
 * partial last block). */
int32_t kv_blocks_needed(const kv_cache *kv, int32_t seq, int32_t n);
/* Makes room for n more tokens after the committed ones (allocating blocks as needed, evicting
 * idle cached ones when none is free, and making a shared partial last block private) without
 * changing the length. PL_TOO_LARGE (over max_seq_len or out of blocks) changes nothing. */
pl_status kv_reserve(kv_cache *kv, int32_t seq, int32_t n);
/* Marks n reserved tokens as stored, their ids unknown: the sequence's blocks from here on are
 * never cached (until a truncation back to known tokens). */
void kv_commit(kv_cache *kv, int32_t seq, int32_t n);
/* Marks n reserved tokens as stored with their ids (borrowed for the call); with prefix caching,
 * every block this fills is entered in the cache (or, when an identical block is already cached,
 * replaced by it and freed). Call only after the K/V rows are written. */
void kv_commit_tokens(kv_cache *kv, int32_t seq, const int32_t *tokens, int32_t n);
/* Keeps the first n tokens (n ≤ length) and drops the sequence's reference to every block not
 * needed for them, including reserved ones. A kept partial block that is shared stays shared
 * until the next kv_reserve copies it. */
pl_status kv_truncate(kv_cache *kv, int32_t seq, int32_t n);

/* The sequence's block table (borrowed; valid until the next reserve/truncate/remove). */
const int32_t *kv_seq_blocks(const kv_cache *kv, int32_t seq);
/* Where layer l's rows live. */
be_kv_view kv_layer_view(const kv_cache *kv, int layer);

typedef struct kv_stats {
    size_t total_bytes, free_bytes, block_bytes; /* free: free_blocks' bytes */
    int32_t total_blocks;
    int32_t free_blocks;   /* unused plus cached-but-unreferenced (evictable) blocks */
    int32_t cached_blocks; /* blocks in the prefix cache (referenced or not) */
    int32_t n_seqs;
    uint64_t prefix_queries; /* prompt tokens looked up by kv_seq_add_prefix */
    uint64_t prefix_hits;    /* of those, tokens found cached */
    uint64_t evictions;      /* cached blocks evicted to make room */
} kv_stats;
void kv_get_stats(const kv_cache *kv, kv_stats *st);

#endif
