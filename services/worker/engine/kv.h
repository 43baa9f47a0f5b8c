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
 * nothing. Blocks return to the free list when a sequence is removed or truncated.
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
/* Frees the sequence's blocks and slot. PL_NOT_FOUND when not live. */
pl_status kv_seq_remove(kv_cache *kv, int32_t seq);
bool kv_seq_live(const kv_cache *kv, int32_t seq);
/* Tokens stored (committed), or -1 when not live. */
int32_t kv_seq_len(const kv_cache *kv, int32_t seq);
/* Blocks that appending n tokens would newly take. */
int32_t kv_blocks_needed(const kv_cache *kv, int32_t seq, int32_t n);
/* Makes room for n more tokens after the committed ones (allocating blocks as needed) without
 * changing the length. PL_TOO_LARGE (over max_seq_len or out of blocks) changes nothing. */
pl_status kv_reserve(kv_cache *kv, int32_t seq, int32_t n);
/* Marks n reserved tokens as stored. */
void kv_commit(kv_cache *kv, int32_t seq, int32_t n);
/* Keeps the first n tokens (n ≤ length) and frees every block not needed for them, including
 * reserved ones. */
pl_status kv_truncate(kv_cache *kv, int32_t seq, int32_t n);

/* The sequence's block table (borrowed; valid until the next reserve/truncate/remove). */
const int32_t *kv_seq_blocks(const kv_cache *kv, int32_t seq);
/* Where layer l's rows live. */
be_kv_view kv_layer_view(const kv_cache *kv, int layer);

typedef struct kv_stats {
    size_t total_bytes, free_bytes, block_bytes;
    int32_t total_blocks, free_blocks, n_seqs;
} kv_stats;
void kv_get_stats(const kv_cache *kv, kv_stats *st);

#endif
