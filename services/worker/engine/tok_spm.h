/* tok_spm.h — the SentencePiece-style ("llama" tokenizer model) segmentation used by tok.c.
 * Internal to the engine.
 *
 * Input is one plain fragment of text (special tokens already cut out) whose spaces the caller
 * has already replaced by the whitespace marker U+2581 ("▁"). Output is the token ids of its
 * highest-scoring greedy segmentation, with bytes that no token covers emitted as their byte
 * tokens (<0xNN>). */
#ifndef PARLEY_TOK_SPM_H
#define PARLEY_TOK_SPM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct tok_spm_vocab {
    const void *ctx;
    /* Id of the token whose text is exactly s[0..n), or -1. */
    int32_t (*lookup)(const void *ctx, const char *s, size_t n);
    const float *scores;     /* [n_vocab] */
    const int32_t *byte_tok; /* [256] the <0xNN> token of each byte; -1 when absent */
    int32_t unk;             /* used for a byte without a byte token; -1 = drop it */
} tok_spm_vocab;

/* Segments text[0..len) and calls put(put_ctx, id) for each token in order. Returns false only
 * when out of memory (nothing is guaranteed about what was put then). */
bool tok_spm_encode(const tok_spm_vocab *v, const char *text, size_t len,
                    void (*put)(void *put_ctx, int32_t id), void *put_ctx);

#endif
