/* tok_pre.h — pre-tokenizers for byte-level BPE: split a run of code points into the "words"
 * that BPE then encodes one by one (internal to the tokenizer; see tok_pre.c). */
#ifndef PARLEY_TOK_PRE_H
#define PARLEY_TOK_PRE_H

#include <stddef.h>
#include <stdint.h>

typedef enum tok_pre_kind {
    TOK_PRE_GPT2 =
        1,          /* 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ */
    TOK_PRE_SMOLLM, /* \p{N} split off one by one, then the GPT-2 pattern */
    TOK_PRE_LLAMA3, /* Llama 3 pattern, \p{N}{1,3} */
    TOK_PRE_QWEN2,  /* Llama 3 pattern with single digits */
} tok_pre_kind;

/* Called once per word, in order: the word is cps[start, end). */
typedef void (*tok_pre_emit_fn)(void *ctx, size_t start, size_t end);

/* Splits cps[0, n) into words; every code point lands in exactly one word. No allocation. */
void tok_pre_split(tok_pre_kind kind, const uint32_t *cps, size_t n, tok_pre_emit_fn emit,
                   void *ctx);

#endif
