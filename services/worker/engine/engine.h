/* engine.h — the inference engine's public API: load a model, create a context with a paged KV
 * cache, and run batched forward steps over many sequences at once.
 *
 *   eng_model *m;   eng_model_load(path, &opts, &m);          // mmap, hyper-parameters, tokenizer
 *   eng_ctx *c;     eng_ctx_create(m, &params, &c);           // KV budget, threads, scratch
 *   eng_seq_id s;   eng_seq_add(c, &s);
 *   eng_item it = {.seq = s, .tokens = ids, .n_tokens = n, .want_logits = true};
 *   // or, reusing cached KV of an earlier sequence's identical prefix:
 *   int32_t k;      eng_seq_add_prompt(c, ids, n, &s, &k);   // then step ids + k, n - k tokens
 *   eng_step(c, &it, 1);  const float *logits = eng_logits(c, 0);
 *   ...             eng_seq_remove(c, s);                     // frees its KV blocks at once
 *
 * One step = one forward pass over every token of every item: the tokens of all items are
 * gathered into one activation matrix so each weight matrix is read once per step for the whole
 * batch (prefill chunks and single-token decodes mix freely). Each item appends its tokens to its
 * sequence at the sequence's current length (positions are implicit; use eng_seq_truncate to roll
 * back). A step is all-or-nothing with respect to KV capacity: if any item does not fit, no
 * sequence changes and PL_TOO_LARGE is returned with a message naming the sequence.
 *
 * Threading: an eng_model is immutable after load and may be shared by several contexts. An
 * eng_ctx is used by one thread at a time (the worker's batching loop); internally eng_step uses
 * the context's thread pool. Errors are recorded in pl_err_last() of the calling thread.
 *
 * Prefix caching (on unless eng_ctx_params.no_prefix_cache, and only where the backend's memory
 * is the host's: the CPU backend): every full 16-token KV block whose token ids went through
 * eng_step is kept, content-addressed, after its sequence ends, until the space is needed
 * (least recently used first). eng_seq_add_prompt starts a sequence on the longest cached
 * prefix of its prompt, so only the rest is computed; the logits are bit-identical to computing
 * everything (a block's K/V depend only on the tokens up to it). Cached blocks no sequence uses
 * count as free in eng_kv_get_stats and eng_seq_fits.
 *
 * Memory: the model is the file's mmap plus small owned tables; a context owns its KV storage
 * (exactly kv_budget_bytes, touched lazily) and scratch buffers sized once at creation from
 * max_batch_tokens and max_seqs — eng_step never allocates. */
#ifndef PARLEY_ENGINE_H
#define PARLEY_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gguf.h"
#include "status.h"
#include "tmpl.h"
#include "tok.h"

typedef struct eng_model eng_model;
typedef struct eng_ctx eng_ctx;
typedef int32_t eng_seq_id;

/* --- model ------------------------------------------------------------------------------- */
typedef struct eng_model_opts {
    const char *chat_template; /* family override ("chatml", "llama3", "gemma"); NULL = detect */
} eng_model_opts;

/* Loads a GGUF model: validates the file, reads the architecture's hyper-parameters, finds and
 * shape-checks every tensor (PL_CORRUPT naming the tensor when missing or mis-shaped;
 * PL_UNSUPPORTED for an unknown architecture or tensor type), builds the tokenizer and detects
 * the chat template. `opts` may be NULL. On PL_OK *out is owned by the caller (eng_model_free),
 * and must outlive every context created from it. */
pl_status eng_model_load(const char *path, const eng_model_opts *opts, eng_model **out);
void eng_model_free(eng_model *m); /* accepts NULL */

typedef struct eng_model_info {
    const char *arch; /* "llama", "gemma3" or "qwen2"; borrowed from the model */
    const char *name; /* general.name or the file's base name; borrowed */
    int32_t n_vocab, n_ctx_train, n_embd, n_layer, n_head, n_head_kv, head_dim, n_ff;
    int32_t sliding_window;    /* keys a local (sliding-window) layer sees; 0: no such layers */
    size_t kv_bytes_per_token; /* K+V over all layers at the cache's element type */
    uint64_t file_bytes;
    uint64_t n_params;
} eng_model_info;
void eng_model_get_info(const eng_model *m, eng_model_info *info);

/* The model's tokenizer (borrowed, lives as long as the model; thread-safe). */
const tok *eng_model_tok(const eng_model *m);
/* The chat template family. PL_UNSUPPORTED (message set) when the file's template matches no
 * family and no override was given; *default_system may be NULL (static string otherwise). */
pl_status eng_model_tmpl(const eng_model *m, tmpl_kind *kind, const char **default_system);

/* --- context ----------------------------------------------------------------------------- */
typedef struct eng_ctx_params {
    size_t kv_budget_bytes;   /* KV cache storage; 0 → 64 MiB */
    int32_t max_seqs;         /* live sequences at once; 0 → 64 */
    int32_t n_threads;        /* 0 → number of online CPUs */
    int32_t max_batch_tokens; /* tokens in one step over all items; 0 → 512 */
    int32_t max_seq_len;      /* per-sequence limit; 0 or > the model's → n_ctx_train */
    bool no_prefix_cache;     /* true: never share KV blocks between sequences */
    const char *device;       /* "cpu" (or NULL) or "cuda:N" (a `make CUDA=1` build); borrowed */
} eng_ctx_params;

/* Checks that a compute device name ("cpu", "cuda", "cuda:N") is usable by this build on this
 * machine and writes a description to desc. PL_INVALID for an unknown name; PL_UNSUPPORTED when
 * CUDA support was not built in or no CUDA device is visible (the message says which). */
pl_status eng_device_check(const char *device, char *desc, size_t desc_len);

/* Creates a context. PL_INVALID for impossible parameters (a budget below one block, negative
 * numbers), PL_NOMEM. On PL_OK *out is owned by the caller (eng_ctx_free). */
pl_status eng_ctx_create(eng_model *m, const eng_ctx_params *p, eng_ctx **out);
void eng_ctx_free(eng_ctx *c); /* accepts NULL */

/* The effective parameters (defaults filled in). */
void eng_ctx_get_params(const eng_ctx *c, eng_ctx_params *p);
/* Bytes of scratch (activations, quantised inputs, attention buffers, logits) the context
 * reserved besides the KV budget; mapped lazily, so resident memory is at most this. About
 * 38 MiB for SmolLM2 with the defaults (512 batch tokens, 64 sequences). */
size_t eng_ctx_scratch_bytes(const eng_ctx *c);

/* Starts an empty sequence. PL_OVERLOADED when max_seqs are live. */
pl_status eng_seq_add(eng_ctx *c, eng_seq_id *out);
/* Starts a sequence for the prompt tokens[0..n) (borrowed for the call) on the longest prefix
 * of it whose KV blocks are cached: *n_cached (a multiple of 16, always < n, 0 with the cache
 * off or on a miss) tokens are already in the sequence, and the caller runs tokens[*n_cached..n)
 * through eng_step. Counts n looked-up and *n_cached hit tokens (eng_kv_stats). PL_INVALID for
 * n < 1 or a token outside the vocabulary, PL_OVERLOADED when max_seqs are live; on error no
 * sequence is started. */
pl_status eng_seq_add_prompt(eng_ctx *c, const int32_t *tokens, int32_t n, eng_seq_id *out,
                             int32_t *n_cached);
/* Ends a sequence and returns its KV blocks to the pool at once. PL_NOT_FOUND for an unknown id. */
pl_status eng_seq_remove(eng_ctx *c, eng_seq_id s);
/* Keeps the first n tokens of a sequence (n ≤ its length) and frees the blocks beyond (a shared
 * block is only released by this sequence; other sequences keep it intact). */
pl_status eng_seq_truncate(eng_ctx *c, eng_seq_id s, int32_t n);
/* Tokens held in the KV cache for the sequence, or -1 for an unknown id. */
int32_t eng_seq_len(const eng_ctx *c, eng_seq_id s);
/* Whether appending n_new tokens to the sequence would fit now (KV blocks and length limit). */
bool eng_seq_fits(const eng_ctx *c, eng_seq_id s, int32_t n_new);

typedef struct eng_kv_stats {
    size_t total_bytes, free_bytes; /* block storage; free includes idle cached blocks */
    int32_t block_tokens;           /* tokens per block (16) */
    int32_t total_blocks, free_blocks;
    int32_t n_seqs; /* live sequences */
    size_t bytes_per_block;
    int32_t cached_blocks;     /* blocks in the prefix cache, in use or idle */
    uint64_t prefix_queries;   /* prompt tokens looked up by eng_seq_add_prompt */
    uint64_t prefix_hits;      /* of those, tokens found cached */
    uint64_t prefix_evictions; /* cached blocks evicted for room */
} eng_kv_stats;
void eng_kv_get_stats(const eng_ctx *c, eng_kv_stats *st);

/* One item of a step: append `n_tokens` tokens to sequence `seq` and run them. */
typedef struct eng_item {
    eng_seq_id seq;
    const int32_t *tokens; /* borrowed for the call */
    int32_t n_tokens;      /* ≥ 1 */
    bool want_logits;      /* logits after the item's last token */
} eng_item;

/* Runs one forward step over all items (each sequence at most once). Errors: PL_INVALID (bad
 * token id, empty item, duplicate sequence, more than max_batch_tokens tokens), PL_NOT_FOUND
 * (unknown sequence), PL_TOO_LARGE (an item does not fit the KV budget or the sequence length
 * limit; nothing is changed). After PL_OK, eng_logits(c, i) gives item i's logits. */
pl_status eng_step(eng_ctx *c, const eng_item *items, int n_items);
/* Logits [n_vocab] of item i of the last successful step, or NULL when it did not want them.
 * Borrowed: valid until the next eng_step on this context. */
const float *eng_logits(const eng_ctx *c, int item);

#endif
